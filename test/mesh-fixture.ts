// A mesh on a real nats-server for runtime tests: streams applied, a fresh NKey for every principal, the
// trust store seeded and open, and helpers to publish signed events and read what landed in a stream.
import { jetstream, jetstreamManager, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  NatsBinding, createEvent, loadPrincipals, newTraceparent, openTrustStore, signEvent, signingKeyFromNkeySeed, uuidv7, type CloudEvent, type EventInit, type SigningKey, type TrustStore,
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

/** Starts the mesh. `config` is extra nats-server configuration (the runtime tests need none). */
export async function startMesh(opts: { config?: string } = {}): Promise<Mesh> {
  const server = await startServer(opts.config === undefined ? {} : { config: opts.config });
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  await applyMeshInfra(nc);
  const principals = loadPrincipals();
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
