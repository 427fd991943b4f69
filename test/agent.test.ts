// The agent runtime on a real server: the pipeline's outcomes (the failure table in docs/architecture.md).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Kvm } from "@nats-io/kv";
import {
  ErrorCode, NatsBinding, QuarantineHeader, RetryableError, createEvent, createLogger, deriveEventId, flowIdOf, parseTraceparent, signEvent, startAgent, encodeSwitch, switchKey, verifyEvent, type AgentDefinition, type AgentOptions, type Emit,
} from "../services/kit/index.ts";
import { REQUEST_SCHEMA, TASK_SCHEMA, header, startMesh, type Mesh } from "./mesh-fixture.ts";
import { runNatsJson, waitFor } from "./harness/index.ts";
import { revokeTrust } from "../services/kit/ops/index.ts";

const PLAN = "mesh.cap.plan.v1";
// Fast redelivery for tests: the template's 30 s backoff would make every retry test slow.
const fastConsumer: AgentOptions["consumer"] = { ack_wait: 300_000_000, backoff: [300_000_000, 300_000_000, 300_000_000], max_deliver: 4 };

interface Request { topic: string; questions?: string[] }

/** A planner that emits one task per question; `behave` may throw or wait to script a test. */
function planner(behave: (attempt: number) => Promise<void> | void = () => undefined, extra: Partial<AgentDefinition<Request>> = {}): AgentDefinition<Request> & { calls: number } {
  const def = {
    principal: "planner", capability: "plan", major: 1, version: "0.0.1-test", description: "test planner",
    accepts: { "report.requested": REQUEST_SCHEMA }, emits: { "research.task.created": TASK_SCHEMA },
    calls: 0,
    async handler(input: { data: Request; event: { id: string } }, ctx: { deliveryCount: number; subjects: { capability(c: string, m: number): string } }): Promise<Emit[]> {
      def.calls++;
      await behave(ctx.deliveryCount);
      const questions = input.data.questions ?? [input.data.topic];
      return questions.map((query, taskIndex) => ({
        to: ctx.subjects.capability("research", 1), type: "research.task.created",
        data: { requestId: input.event.id, taskIndex, totalTasks: questions.length, query },
        // A handler cannot claim another implementation version, nor pick the flow's route epoch: the runtime signs its own.
        extensions: { agentversion: "9.9.9", routeepoch: "999999" },
      }));
    },
    ...extra,
  };
  return def as unknown as AgentDefinition<Request> & { calls: number };
}

// Quiet unless LOG_LEVEL asks otherwise: failing-on-purpose handlers would fill the test output with warnings.
const log = createLogger({ name: "planner", level: process.env.LOG_LEVEL ?? "silent" });

async function run(mesh: Mesh, def: AgentDefinition<Request>, consumer = fastConsumer) {
  return startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer, log });
}

describe("agent pipeline", () => {
  test("agent - a signed input yields signed outputs with derived ids, causation, correlation and the trace continued; then ack", async () => {
    await using mesh = await startMesh();
    const def = planner();
    await using agent = await run(mesh, def);
    const input = mesh.event("gateway", { data: JSON.stringify({ topic: "t", requester: "a@example.com", questions: ["q1", "q2", "q3"] }) });
    await mesh.publish(PLAN, input);
    await waitFor(() => agent.stats().processed === 1, { what: "the input to be processed" });
    const outputs = await mesh.messages("MESH_CAP", "mesh.cap.research.v1");
    assert.equal(outputs.length, 3);
    const inputTrace = parseTraceparent(input.extensions.traceparent)!.traceId;
    outputs.forEach((m, i) => {
      const v = mesh.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" });
      assert.equal(v.entry.principal, "planner");
      assert.equal(v.event.id, deriveEventId(input, "planner", i));
      assert.equal(v.event.source, "causeway://planner");
      assert.equal(v.event.extensions.causationid, input.id);
      assert.equal(v.event.extensions.correlationid, flowIdOf(input), "the input starts the flow");
      assert.equal(parseTraceparent(v.event.extensions.traceparent)!.traceId, inputTrace);
      assert.equal(v.event.dataschema, TASK_SCHEMA);
      assert.equal(v.event.extensions.agentversion, def.version, "the implementation version, signed");
      // The input has no route epoch (its flow's first agent): the runtime stamps the tables' latest it has seen.
      assert.match(String(v.event.extensions.routeepoch), /^\d+$/);
      assert.notEqual(v.event.extensions.routeepoch, "999999", "the runtime's epoch, not the handler's");
    });
    const info = await mesh.jsm.consumers.info("MESH_CAP", "cap-plan-v1");
    assert.equal(info.num_ack_pending, 0);
    assert.equal(info.num_pending, 0);
  });

  test("agent - transient errors are retried with backoff, then the handler succeeds and publishes once", async () => {
    await using mesh = await startMesh();
    const attempts: number[] = [];
    const def = planner((attempt) => {
      attempts.push(attempt);
      if (attempt < 3) throw new RetryableError("upstream rate limit", { delayMs: 50 });
    });
    await using agent = await run(mesh, def);
    await mesh.publish(PLAN, mesh.event("gateway"));
    await waitFor(() => agent.stats().processed === 1, { what: "success on the third attempt" });
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.equal(agent.stats().failed, 2);
    assert.equal((await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).length, 1);
  });

  test("agent - a transient broker error in the handler (no responders) is retried within 2 s, not after the consumer's long backoff", async () => {
    await using mesh = await startMesh();
    // A 30 s backoff: what a handler failure waits for. A broker fault that passes by itself must not.
    const slowBackoff: AgentOptions["consumer"] = { ack_wait: 60_000_000_000, backoff: [30_000_000_000, 30_000_000_000], max_deliver: 4 };
    const at: number[] = [];
    const def = planner(async (attempt) => {
      at.push(Date.now());
      // A real broker error: a request nobody answers (as JetStream during a leader election).
      if (attempt === 1) await mesh.nc.request("nobody.answers.here", "", { timeout: 1_000 });
    });
    await using agent = await run(mesh, def, slowBackoff);
    await mesh.publish(PLAN, mesh.event("gateway"));
    await waitFor(() => agent.stats().processed === 1, { what: "the retry to succeed", timeoutMs: 8_000 });
    assert.equal(at.length, 2);
    const waited = at[1]! - at[0]!;
    assert.ok(waited >= 200 && waited < 4_000, `retried after ${waited} ms`);
    assert.equal(agent.stats().failed, 1);
  });

  test("agent - a poison input is quarantined as max_deliveries after its last delivery, bytes and headers intact", async () => {
    await using mesh = await startMesh();
    const def = planner(() => { throw new Error("cannot plan this"); });
    await using agent = await run(mesh, def);
    const input = mesh.event("gateway");
    const seq = await mesh.publish(PLAN, input);
    await waitFor(() => agent.stats().quarantined === 1, { what: "the poison input to be quarantined", timeoutMs: 15_000 });
    assert.equal(def.calls, 4);
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.max_deliveries.plan");
    assert.ok(q);
    assert.equal(header(q, QuarantineHeader.Reason), "max_deliveries");
    assert.match(header(q, QuarantineHeader.Detail)!, /failed 4 times; last: cannot plan this/);
    assert.equal(header(q, QuarantineHeader.OriginalSubject), PLAN);
    assert.equal(header(q, QuarantineHeader.OriginalSequence), String(seq));
    const original = NatsBinding.binary(input);
    assert.deepEqual(Buffer.from(q.data), Buffer.from(original.data));
    for (const name of original.headers.keys()) assert.equal(q.headers?.get(name), original.headers.get(name), name);
    // The quarantined copy still verifies: it is the producer's event, byte for byte.
    assert.equal(mesh.trust.verify(NatsBinding.toEvent(q), { receivedAt: "now" }).event.id, input.id);
  });

  test("agent - bad inputs are quarantined with their reason and never reach the handler", async () => {
    await using mesh = await startMesh();
    const def = planner();
    await using agent = await run(mesh, def);
    const ok = () => mesh.event("gateway");
    const tampered = NatsBinding.binary(ok());
    await revokeTrust(mesh.nc, "upstream-demo", { at: Date.now() - 30_000 });
    await waitFor(() => mesh.trust.entry(mesh.keys["upstream-demo"]!.keyid)?.revokedAt !== undefined, { what: "revocation to reach the store" });
    const stranger = signEvent(createEvent({ ...ok(), extensions: {} }), { ...mesh.keys.gateway!, keyid: "UNKNOWNKEY" });
    const cases: [string, () => Promise<unknown>][] = [
      ["decode_error", () => mesh.nc.publish(PLAN, "not an event") as unknown as Promise<unknown>],
      ["bad_signature", async () => {
        const data = Buffer.from(tampered.data); data[5]! ^= 1;
        return mesh.publish(PLAN, NatsBinding.toEvent({ headers: tampered.headers, data }));
      }],
      ["bad_signature", () => mesh.publish(PLAN, createEvent({ ...ok(), extensions: {} }))],
      ["unknown_key", () => mesh.publish(PLAN, stranger)],
      ["revoked_key", () => mesh.publish(PLAN, mesh.event("upstream-demo"))],
      // Stamped before the revocation by the stolen key, but it reaches the mesh after it.
      ["revoked_key", () => mesh.publish(PLAN, mesh.event("upstream-demo", { time: new Date(Date.now() - 60_000).toISOString() }))],
      ["unauthorized_emitter", () => mesh.publish(PLAN, mesh.event("researcher"))],
      ["expired", () => mesh.publish(PLAN, mesh.event("gateway", { extensions: { expirytime: new Date(Date.now() - 1000).toISOString() } }))],
      ["schema_violation", () => mesh.publish(PLAN, mesh.event("gateway", { data: JSON.stringify({ topic: 42 }) }))],
      // An accepted type in another major (test/schema-versions.test.ts has the version rule in full).
      ["unsupported_version", () => mesh.publish(PLAN, mesh.event("gateway", { dataschema: "https://causeway.dev/schemas/report.requested/2.0.0" }))],
    ];
    for (const [, send] of cases) await send();
    await waitFor(() => agent.stats().quarantined === cases.length, { what: `${cases.length} quarantines`, timeoutMs: 15_000 });
    assert.equal(def.calls, 0, "no bad input reached the handler");
    const reasons = (await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>")).map((m) => header(m, QuarantineHeader.Reason));
    assert.deepEqual(reasons.sort(), cases.map(([r]) => r).sort());
    const info = await mesh.jsm.consumers.info("MESH_CAP", "cap-plan-v1");
    assert.equal(info.num_ack_pending + info.num_pending, 0, "every original was terminated");
  });

  test("agent - a principal that may not address the capability is refused by policy", async () => {
    await using mesh = await startMesh();
    const def = planner();
    await using agent = await run(mesh, def);
    // The reporter may sign report.published, but it neither serves nor addresses plan.v1.
    await mesh.publish(PLAN, mesh.event("reporter", { type: "report.published" }));
    await waitFor(() => agent.stats().quarantined === 1, { what: "a quarantine" });
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
    assert.equal(header(q!, QuarantineHeader.Reason), "policy_denied");
    assert.equal(header(q!, QuarantineHeader.Code), "CW_ERR_UNAUTHORIZED_ADDRESS");
    assert.equal(def.calls, 0);
  });

  test("agent - a replay with a new message id reruns a pure handler but JetStream keeps one set of outputs", async () => {
    await using mesh = await startMesh();
    const def = planner();
    await using agent = await run(mesh, def);
    const input = mesh.event("gateway");
    await mesh.publish(PLAN, input);
    await mesh.publish(PLAN, input, `${input.id}-replayed`);
    await waitFor(() => agent.stats().processed === 2, { what: "both deliveries" });
    assert.equal(def.calls, 2);
    assert.equal((await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).length, 1);
  });

  test("agent - with side effects declared, a replay after the duplicate window does not run the handler again", async () => {
    await using mesh = await startMesh();
    const def = planner(() => undefined, { sideEffects: true });
    await using agent = await run(mesh, def);
    const input = mesh.event("gateway");
    await mesh.publish(PLAN, input);
    await waitFor(() => agent.stats().processed === 1, { what: "the first run" });
    await mesh.publish(PLAN, input, `${input.id}-after-the-window`);
    await waitFor(() => agent.stats().replays === 1, { what: "the replay to be absorbed" });
    assert.equal(def.calls, 1);
  });

  test("agent - outputs of undeclared types are refused and the input retried, never published", async () => {
    await using mesh = await startMesh();
    const def = planner(() => undefined, {
      handler: (_i, ctx) => [{ to: ctx.subjects.event("report.published", 1), type: "report.published", data: {} }],
    });
    await using agent = await run(mesh, def, { ...fastConsumer, backoff: [300_000_000], max_deliver: 2 });
    await mesh.publish(PLAN, mesh.event("gateway"));
    await waitFor(() => agent.stats().quarantined === 1, { what: "max_deliveries" });
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
    assert.equal(header(q!, QuarantineHeader.Code), "CW_ERR_UNDECLARED_OUTPUT");
    assert.equal((await mesh.messages("MESH_EVT", "mesh.evt.>")).length, 0);
  });

  test("agent - replicas started at the same moment all start: the durables one creates, the others use", async () => {
    await using mesh = await startMesh();
    const def = planner();
    const replicas = await Promise.all(Array.from({ length: 4 }, () => run(mesh, def)));
    try {
      assert.equal(new Set(replicas.map((r) => r.instance)).size, 4);
      await mesh.publish(PLAN, mesh.event("gateway"));
      await waitFor(() => replicas.reduce((n, r) => n + r.stats().processed, 0) === 1, { what: "one replica to handle the request" });
    } finally {
      await Promise.all(replicas.map((r) => r.stop()));
    }
  });

  test("agent - the concurrency limit holds", async () => {
    await using mesh = await startMesh();
    let running = 0, peak = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const def = planner(async () => {
      running++;
      peak = Math.max(peak, running);
      await gate;
      running--;
    }, { concurrency: 3 });
    await using agent = await run(mesh, def);
    for (let i = 0; i < 10; i++) await mesh.publish(PLAN, mesh.event("gateway"));
    await waitFor(() => running === 3, { what: "three handlers running" });
    assert.equal(agent.stats().inFlight, 3);
    release();
    await waitFor(() => agent.stats().processed === 10, { what: "all ten" });
    assert.equal(peak, 3);
    assert.equal(def.calls, 10);
  });

  test("agent - a handler working for four ack_wait periods keeps its delivery (heartbeats)", async () => {
    await using mesh = await startMesh();
    const deliveries: number[] = [];
    // The work itself is what takes time here: 1.2 s against a 300 ms ack_wait.
    const def = planner(async (attempt) => {
      deliveries.push(attempt);
      await new Promise((r) => setTimeout(r, 1_200));
    });
    await using agent = await run(mesh, def);
    await mesh.publish(PLAN, mesh.event("gateway"));
    await waitFor(() => agent.stats().processed === 1, { what: "the long handler to finish" });
    assert.deepEqual(deliveries, [1]);
    assert.equal((await mesh.jsm.consumers.info("MESH_CAP", "cap-plan-v1")).num_redelivered, 0);
  });

  test("agent - stop drains: in-flight work finishes, nothing is lost, a new replica takes the rest", async () => {
    await using mesh = await startMesh();
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const first = planner(() => gate, { concurrency: 2 });
    const agent = await run(mesh, first);
    const inputs = Array.from({ length: 6 }, () => mesh.event("gateway"));
    for (const e of inputs) await mesh.publish(PLAN, e);
    await waitFor(() => agent.stats().inFlight === 2, { what: "two in flight" });
    const stopping = agent.stop();
    release();
    await stopping;
    await using second = await run(mesh, planner());
    await waitFor(async () => (await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).length === inputs.length, { what: "an output per input", timeoutMs: 15_000 });
    const ids = (await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).map((m) => verifyEvent(NatsBinding.toEvent(m), mesh.trust).event.extensions.causationid);
    assert.deepEqual(new Set(ids), new Set(inputs.map((e) => e.id)));
    assert.ok(second.stats().processed + agent.stats().processed >= inputs.length);
  });

  test("agent - when its consumer is deleted the agent stops and reports the failure instead of idling", async () => {
    await using mesh = await startMesh();
    const agent = await run(mesh, planner());
    await mesh.jsm.consumers.delete("MESH_CAP", "cap-plan-v1");
    const lost = await agent.lost;
    assert.equal(lost.code, ErrorCode.Config);
    assert.match(lost.message, /consumer cap-plan-v1 on MESH_CAP ended/);
  });

  test("agent - under a kill switch the agent creates its consumer paused and runs nothing until resumed", async () => {
    await using mesh = await startMesh();
    const kv = await new Kvm(mesh.nc).open("causeway_switches");
    const key = switchKey("capability", "plan.v1");
    await kv.put(key, encodeSwitch({ paused: true, reason: "bad model release", by: "operator", at: new Date().toISOString(), expires_at: null, decision_id: "test" }));
    const def = planner();
    await using agent = await run(mesh, def);
    const info = await mesh.jsm.consumers.info("MESH_CAP", "cap-plan-v1");
    assert.equal(info.paused, true, "created paused");
    await mesh.publish(PLAN, mesh.event("gateway"));
    await waitFor(async () => (await mesh.jsm.consumers.info("MESH_CAP", "cap-plan-v1")).num_pending === 1, { what: "the input to wait" });
    assert.equal(def.calls, 0);
    // What the coordinator's resume does: clear the flag, resume the consumer.
    await kv.delete(key);
    await mesh.jsm.consumers.resume("MESH_CAP", "cap-plan-v1");
    await waitFor(() => agent.stats().processed === 1, { what: "the input after the resume", timeoutMs: 15_000 });
  });

  test("agent - registers as a micro service that nats micro ls shows with its capability", async () => {
    await using mesh = await startMesh();
    await using _agent = await run(mesh, planner());
    const list = await runNatsJson<{ name: string; metadata: Record<string, string> }[]>(["micro", "ls", "--json"], { server: mesh.server.url });
    const found = list.find((s) => s.name === "planner");
    assert.ok(found, JSON.stringify(list));
    assert.equal(found.metadata.capability, "plan.v1");
    assert.equal(found.metadata.consumer, "cap-plan-v1");
  });
});
