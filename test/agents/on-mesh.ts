// One agent on a real nats-server, as the mesh runs it: streams and buckets applied, the trust store seeded from
// infra/principals.json, the agent started with its principal's own key. The tests `causeway new agent` writes
// (test/agents/<name>.test.ts) are written against this: they send an input the way the mesh would — a fact from a
// principal that emits it, work from a caller the trust store lets address the capability — and read back what the
// input caused, verified.
import { createUser } from "@nats-io/nkeys";
import {
  NatsBinding, QuarantineHeader, Role, StreamName, createEvent, createLogger, createSchemaRegistry, defaultLayout, emitsCover, formatTime, newTraceparent,
  newestSchemaOf, principalSource, signEvent, signingKeyFromNkeySeed, startAgent, uuidv7,
  type Agent, type AgentDefinition, type CloudEvent, type MeshSubjects, type SigningKey,
} from "../../services/kit/index.ts";
import { seedTrustStore } from "../../services/kit/ops/index.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { waitFor } from "../harness/index.ts";
import { startMesh, type Mesh } from "../mesh-fixture.ts";

/** An event an input caused, as a consumer reads it. */
export interface CausedEvent {
  readonly event: CloudEvent;
  readonly subject: string;
  /** The principal whose key signed it, from the trust store. */
  readonly signer: string;
  /** Its data, parsed. */
  readonly data: unknown;
}

/** A running agent on its own server. Dispose it to stop both. */
export interface AgentOnMesh extends AsyncDisposable {
  readonly mesh: Mesh;
  readonly agent: Agent;
  /** The mesh's subjects (its prefix from infra/principals.json). */
  readonly subjects: MeshSubjects;
  /** A fact of `type`, major `major`, signed by a principal of principals.json that emits it, on `<prefix>.evt.<type>.v<major>`. */
  publishFact(type: string, major: number, data: unknown): Promise<CloudEvent>;
  /** Work of `type` on the agent's capability subject, signed by a test caller the trust store lets emit it and address the capability. */
  sendWork(type: string, data: unknown): Promise<CloudEvent>;
  /**
   * Waits until at least `count` events caused by `input` are stored (MESH_CAP, MESH_HANDOFF, MESH_EVT) and the agent
   * handled it, then returns every one of them, verified, sorted by type and subject. Fails at once, with the reason,
   * when the input was quarantined.
   */
  outputsOf(input: CloudEvent, count: number): Promise<CausedEvent[]>;
}

const TEST_CALLER = "test-caller";
const OUTPUT_STREAMS = [StreamName.Cap, StreamName.Handoff, StreamName.Evt] as const;

/** Starts a mesh and `definition` on it, as its principal. */
export async function startAgentOnMesh(definition: AgentDefinition): Promise<AgentOnMesh> {
  const mesh = await startMesh();
  try {
    const { subjects, principals } = defaultLayout();
    const schemas = createSchemaRegistry();
    const log = createLogger({ name: definition.principal, level: process.env.LOG_LEVEL ?? "silent" });
    const agent = await startAgent(mesh.nc, definition, { trust: mesh.trust, signingKey: mesh.keys[definition.principal]!, log });
    let caller: SigningKey | undefined;

    const dataschemaOf = (type: string, major?: number) => {
      const id = newestSchemaOf(schemas.list(), type, major);
      if (id === undefined) throw new Error(`no schema for ${type}${major === undefined ? "" : ` v${major}`} in schemas/`);
      return id;
    };
    const signed = (principal: string, key: SigningKey, type: string, dataschema: string, data: unknown) => signEvent(createEvent({
      id: uuidv7(), source: principalSource(principal), type, time: new Date().toISOString(), datacontenttype: "application/json", dataschema,
      data: JSON.stringify(data), extensions: { traceparent: newTraceparent() },
    }), key);

    return {
      mesh, agent, subjects,
      async publishFact(type, major, data) {
        const producer = Object.values(principals.principals).find((p) => p.name !== definition.principal && p.role !== Role.Upstream && emitsCover(p.emits, type));
        if (!producer) throw new Error(`no principal of infra/principals.json emits ${type}: nobody could publish this fact`);
        const event = signed(producer.name, mesh.keys[producer.name]!, type, dataschemaOf(type, major), data);
        await mesh.publish(subjects.event(type, major), event);
        return event;
      },
      async sendWork(type, data) {
        if (caller === undefined) {
          const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
          await seedTrustStore(mesh.nc, [{
            principal: TEST_CALLER, role: Role.Agent, algorithm: "ed25519", public_key: key.keyid, emits: ["*"],
            addresses: [`${definition.capability}.v${definition.major}`], not_before: formatTime(Date.now() - 60_000), not_after: null, revoked_at: null,
          }]);
          await waitFor(() => mesh.trust.entry(key.keyid), { what: `the trust store to know ${TEST_CALLER}` });
          caller = key;
        }
        const event = signed(TEST_CALLER, caller, type, dataschemaOf(type), data);
        await mesh.publish(subjects.capability(definition.capability, definition.major), event);
        return event;
      },
      async outputsOf(input, count) {
        const caused = async (): Promise<CausedEvent[]> => {
          const quarantined = (await mesh.messages(StreamName.Quarantine, `${subjects.prefix}.quarantine.>`))
            .find((m) => m.headers?.get("ce-id") === input.id && m.headers.get("ce-source") === input.source);
          if (quarantined) {
            const h = (name: string) => quarantined.headers?.get(name) ?? "";
            throw new QuarantinedInput(`${input.type} ${input.id} was quarantined by ${h(QuarantineHeader.DetectedBy)}: ${h(QuarantineHeader.Reason)} — ${h(QuarantineHeader.Detail)}`);
          }
          const out: CausedEvent[] = [];
          for (const stream of OUTPUT_STREAMS) {
            for (const m of await readMessages(mesh.nc, stream)) {
              if (m.headers?.get("ce-causationid") !== input.id) continue;
              const { event, entry } = mesh.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" });
              out.push({ event, subject: m.subject, signer: entry.principal, data: JSON.parse(Buffer.from(event.data).toString("utf8")) });
            }
          }
          return out.sort((a, b) => a.event.type.localeCompare(b.event.type) || a.subject.localeCompare(b.subject));
        };
        let last: CausedEvent[] = [];
        let quarantined: QuarantinedInput | undefined;
        await waitFor(async () => {
          try {
            last = await caused();
          } catch (err) {
            if (!(err instanceof QuarantinedInput)) throw err;
            quarantined = err;
            return true;
          }
          return last.length >= count && agent.stats().processed > 0;
        }, { what: `${count} event(s) caused by ${input.type} ${input.id} and the agent to have handled it` });
        if (quarantined) throw quarantined;
        return caused();
      },
      async [Symbol.asyncDispose]() {
        await agent.stop();
        await mesh[Symbol.asyncDispose]();
      },
    };
  } catch (err) {
    await mesh[Symbol.asyncDispose]();
    throw err;
  }
}

/** The input the test sent was quarantined: the message says by whom and why. */
class QuarantinedInput extends Error {}
