// A mesh on a real nats-server for runtime tests: streams applied, a fresh NKey for every principal, the
// trust store seeded and open, and helpers to publish signed events and read what landed in a stream.
import { jetstream, jetstreamManager, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  NatsBinding, createEvent, loadPrincipals, newTraceparent, openTrustStore, signEvent, signingKeyFromNkeySeed, uuidv7, type AgentDefinition, type CloudEvent, type Emit,
  type EventInit, type Principals, type SigningKey, type TrustStore,
} from "../services/kit/index.ts";
import { applyMeshInfra } from "../services/cli/bootstrap.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startServer, type NatsServer } from "./harness/index.ts";
import { seedTrustStore, trustEntriesFromPrincipals } from "../services/kit/ops/index.ts";

/** A running test mesh; dispose it to close the connection and stop the server. */
export interface Mesh extends AsyncDisposable {
  readonly server: NatsServer;
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly trust: TrustStore;
  /** Signing key of each principal of infra/principals.json. */
  readonly keys: Readonly<Record<string, SigningKey>>;
  /** Seeds (NKey text) of each principal, for child processes. */
  readonly seeds: Readonly<Record<string, string>>;
  /** A signed event from `principal` (default: the gateway's report.requested). */
  event(principal: string, init?: Partial<EventInit>): CloudEvent;
  /** Publishes `event` in binary mode on `subject` (msgID = event id unless `msgID` says otherwise). */
  publish(subject: string, event: CloudEvent, msgID?: string): Promise<number>;
  /** Every message currently stored on `subject` (a filter), in order. */
  messages(stream: string, subject: string): Promise<JsMsg[]>;
}

export const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
export const TASK_SCHEMA = "https://causeway.dev/schemas/research.task.created/1.0.0";
export const FINDING_SCHEMA = "https://causeway.dev/schemas/research.finding.created/1.0.0";
/** The researcher's input subject. */
export const RESEARCH = "mesh.cap.research.v1";

/** A header of a stored message, or undefined when absent or empty. */
export function header(m: JsMsg, name: string): string | undefined {
  return m.headers?.get(name) || undefined;
}

/**
 * A test researcher that answers each task with one finding (its derived id: deriveEventId(task, "researcher",
 * 0)) and records the ids of the tasks its handler ran for in `handled`.
 */
export function recordingResearcher(): AgentDefinition & { handled: string[] } {
  const def = {
    principal: "researcher", capability: "research", major: 1, version: "0.0.1-test", description: "test researcher",
    accepts: { "research.task.created": TASK_SCHEMA }, emits: { "research.finding.created": FINDING_SCHEMA },
    handled: [] as string[],
    handler(input: { event: CloudEvent; data: { query: string } }, ctx: { subjects: { capability(c: string, m: number): string } }): Promise<Emit[]> {
      def.handled.push(input.event.id);
      return Promise.resolve([{
        to: ctx.subjects.capability("verify", 1), type: "research.finding.created",
        data: { taskId: input.event.id, claim: `answer to ${input.data.query}`, evidence: [{ source: "urn:causeway:test", quote: "q" }], confidence: 0.9 },
      }]);
    },
  };
  return def as unknown as AgentDefinition & { handled: string[] };
}

/** Starts the mesh. `config` is extra nats-server configuration (the runtime tests need none). */
export async function startMesh(opts: { config?: string; principals?: Principals } = {}): Promise<Mesh> {
  const server = await startServer(opts.config === undefined ? {} : { config: opts.config });
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  await applyMeshInfra(nc);
  // Another principals document only changes what the trust store says (who may emit and address what).
  const principals = opts.principals ?? loadPrincipals();
  const seeds: Record<string, string> = {};
  const keys: Record<string, SigningKey> = {};
  for (const name of Object.keys(principals.principals)) {
    seeds[name] = new TextDecoder().decode(createUser().getSeed());
    keys[name] = signingKeyFromNkeySeed(seeds[name]);
  }
  // Backdate the window by a minute so events stamped "now" are inside it whatever the second boundary.
  const publicKeys = Object.fromEntries(Object.entries(keys).map(([n, k]) => [n, k.keyid]));
  await seedTrustStore(nc, trustEntriesFromPrincipals(principals, publicKeys, { now: Date.now() - 60_000 }));
  const trust = await openTrustStore(nc);
  const js = jetstream(nc);
  return {
    server, nc, jsm, trust, keys, seeds,
    event(principal, init = {}) {
      const e = createEvent({
        id: uuidv7(), source: `causeway://${principal}`, type: "report.requested", time: new Date().toISOString(),
        datacontenttype: "application/json", dataschema: REQUEST_SCHEMA,
        data: JSON.stringify({ topic: "Heat pumps in cold climates", requester: "analyst@example.com", questions: ["How cold is too cold?"] }),
        ...init,
        extensions: { traceparent: newTraceparent(), ...init.extensions },
      });
      return signEvent(e, keys[principal]!);
    },
    async publish(subject, event, msgID) {
      const { headers, data } = NatsBinding.binary(event);
      return (await js.publish(subject, data, { headers, msgID: msgID ?? event.id })).seq;
    },
    messages: (stream, subject) => readMessages(nc, stream, subject),
    async [Symbol.asyncDispose]() {
      await trust.close();
      await nc.close();
      await server[Symbol.asyncDispose]();
    },
  };
}
