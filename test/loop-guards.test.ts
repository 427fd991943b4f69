// Loop guards (issue 16, item 5) on a real server: two agents forwarding one flow back and forth are stopped with
// loop_detected by the count per capability per flow, a long chain by the causal depth, neither counts a
// redelivered input twice nor lets replicas overshoot the bound, a handler cannot lower the depth it signs, and a
// malformed depth is refused.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { Kvm } from "@nats-io/kv";
import {
  DEFAULT_LOOP_GUARDS_PATH, ErrorCode, KvBucket, NatsBinding, QuarantineHeader, QuarantineReason, RetryableError, createLogger, flowIdOf, loadLoopGuards, loadPrincipals, parseLoopGuards, startAgent,
  type AgentDefinition, type AgentOptions, type CloudEvent, type Emit, type LoopGuards, type Principals,
} from "../services/kit/index.ts";
import { REQUEST_SCHEMA, TASK_SCHEMA, header, startMesh, type Mesh } from "./mesh-fixture.ts";
import { waitFor } from "./harness/index.ts";

const PLAN = "mesh.cap.plan.v1";
const fastConsumer: AgentOptions["consumer"] = { ack_wait: 2_000_000_000, backoff: [100_000_000, 100_000_000, 100_000_000], max_deliver: 4 };
const log = createLogger({ name: "loop-guards", level: process.env.LOG_LEVEL ?? "silent" });

/** infra/principals.json with the researcher also allowed to hand tasks back to the planner: a cycle the trust store permits. */
function cyclicPrincipals(): Principals {
  const p = loadPrincipals();
  const researcher = p.principals.researcher!;
  return {
    ...p,
    principals: {
      ...p.principals,
      researcher: { ...researcher, emits: [...researcher.emits, "research.task.created"], addresses: [...researcher.addresses, "plan.v1"] },
    },
  };
}

/**
 * One side of the ping-pong: serves `capability`, accepts requests and tasks, and forwards every input as a task
 * to `to`. Each output claims `flowdepth` 0 — the runtime's value must win. `seen` records each run's input depth.
 */
function forwarder(principal: string, capability: string, to: string, behave: (attempt: number) => void = () => undefined) {
  const seen: number[] = [];
  const def: AgentDefinition = {
    principal, capability, major: 1, version: "0.0.1-test", description: `forwards to ${to}`,
    accepts: { "report.requested": REQUEST_SCHEMA, "research.task.created": TASK_SCHEMA },
    emits: { "research.task.created": TASK_SCHEMA },
    handler(input, ctx): Promise<Emit[]> {
      behave(ctx.deliveryCount);
      seen.push(Number(input.event.extensions.flowdepth ?? 0));
      return Promise.resolve([{
        to: ctx.subjects.capability(to, 1), type: "research.task.created",
        data: { requestId: input.event.id, taskIndex: 0, totalTasks: 1, query: "again" },
        extensions: { flowdepth: "0" },
      }]);
    },
  };
  return { def, seen };
}

async function run(mesh: Mesh, def: AgentDefinition, loopGuards: LoopGuards) {
  return startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys[def.principal]!, consumer: fastConsumer, log, loopGuards });
}

/** The planner and the researcher forwarding every input to each other, on a mesh whose trust store permits it. */
async function pingPong(loopGuards: LoopGuards) {
  const mesh = await startMesh({ principals: cyclicPrincipals() });
  const plan = forwarder("planner", "plan", "research");
  const research = forwarder("researcher", "research", "plan");
  const planner = await run(mesh, plan.def, loopGuards);
  const researcher = await run(mesh, research.def, loopGuards);
  return {
    mesh, plan, research, planner, researcher,
    async [Symbol.asyncDispose]() {
      await planner.stop();
      await researcher.stop();
      await mesh[Symbol.asyncDispose]();
    },
  };
}

const guards = (maxDepth: number, maxEventsPerCapability: number) => parseLoopGuards({ maxDepth, maxEventsPerCapability }, "test");

/** The events of `flow` stored on MESH_CAP, in order. */
async function flowEvents(mesh: Mesh, flow: string): Promise<CloudEvent[]> {
  return (await mesh.messages("MESH_CAP", "mesh.cap.>")).map((m) => NatsBinding.toEvent(m)).filter((e) => e.extensions.correlationid === flow || flowIdOf(e) === flow);
}

async function settled(mesh: Mesh, durables: readonly string[]): Promise<void> {
  await waitFor(async () => {
    for (const d of durables) {
      const info = await mesh.jsm.consumers.info("MESH_CAP", d);
      if (info.num_pending + info.num_ack_pending > 0) return false;
    }
    return true;
  }, { what: `${durables.join(", ")} to have nothing pending` });
}

describe("loop guards", () => {
  test("loop guards - two agents forwarding one flow back and forth are stopped with loop_detected, and nothing runs after", async () => {
    // Depth off: the count per capability per flow alone stops the cycle.
    await using loop = await pingPong(guards(0, 3));
    const { mesh, plan, research, planner, researcher } = loop;
    const root = mesh.event("gateway");
    await mesh.publish(PLAN, root);

    await waitFor(() => planner.stats().quarantined === 1, { what: "the planner to refuse the flow's fourth event" });
    await settled(mesh, ["cap-plan-v1", "cap-research-v1"]);
    assert.deepEqual(plan.seen, [0, 2, 4], "three runs each, then the guard");
    assert.deepEqual(research.seen, [1, 3, 5]);
    assert.equal(researcher.stats().quarantined, 0);
    assert.equal(planner.stats().processed + researcher.stats().processed, 6);

    const [q, ...more] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.loop_detected.>");
    assert.equal(more.length, 0);
    assert.equal(q!.subject, "mesh.quarantine.loop_detected.plan");
    assert.equal(header(q!, QuarantineHeader.Reason), QuarantineReason.LoopDetected);
    assert.equal(header(q!, QuarantineHeader.Code), ErrorCode.LoopDetected);
    const flow = flowIdOf(root);
    assert.equal(header(q!, QuarantineHeader.Detail), `flow ${flow} already had 3 events handled by plan.v1, maxEventsPerCapability 3 (test)`);
    const refused = NatsBinding.toEvent(q!);
    assert.equal(refused.extensions.flowdepth, "6", "the refused input is the researcher's third task, bytes kept");
    // Every event of the flow carries the depth the runtime set, not the "0" each handler claimed.
    assert.deepEqual((await flowEvents(mesh, flow)).map((e) => e.extensions.flowdepth ?? "0"), ["0", "1", "2", "3", "4", "5", "6"]);
  });

  test("loop guards - the causal depth stops a long chain; with the count off nothing is counted", async () => {
    await using loop = await pingPong(guards(4, 0));
    const { mesh, plan, research, planner, researcher } = loop;
    await mesh.publish(PLAN, mesh.event("gateway"));

    await waitFor(() => researcher.stats().quarantined === 1, { what: "the researcher to refuse depth 5" });
    await settled(mesh, ["cap-plan-v1", "cap-research-v1"]);
    assert.deepEqual(plan.seen, [0, 2, 4]);
    assert.deepEqual(research.seen, [1, 3], "depth 5 never reaches a handler");
    assert.equal(planner.stats().quarantined, 0);
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.loop_detected.research");
    assert.equal(header(q!, QuarantineHeader.Detail), "causal depth 5 exceeds maxDepth 4 (test)");
    const counts = await new Kvm(mesh.nc).open(KvBucket.FlowLedger);
    const keys: string[] = [];
    for await (const k of await counts.keys()) keys.push(k);
    assert.deepEqual(keys, [], "no count was kept");
  });

  test("loop guards - a redelivered input is counted once; a second event of the flow is over a bound of one", async () => {
    await using mesh = await startMesh();
    const plan = forwarder("planner", "plan", "research", (attempt) => {
      if (attempt === 1) throw new RetryableError("fail the first delivery", { delayMs: 50 });
    });
    await using planner = await run(mesh, plan.def, guards(32, 1));
    const root = mesh.event("gateway");
    await mesh.publish(PLAN, root);
    await waitFor(() => planner.stats().processed === 1, { what: "the redelivery to run" });
    assert.equal(planner.stats().failed, 1, "the first delivery failed after it was counted");
    assert.equal(planner.stats().quarantined, 0, "its redelivery was admitted, not counted again");

    // Another event of the same flow is the capability's second: refused.
    await mesh.publish(PLAN, mesh.event("gateway", { extensions: { correlationid: flowIdOf(root) } }));
    await waitFor(() => planner.stats().quarantined === 1, { what: "the second event to be refused" });
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.loop_detected.plan");
    assert.match(header(q!, QuarantineHeader.Detail)!, /already had 1 events handled by plan\.v1, maxEventsPerCapability 1/);
    assert.deepEqual(plan.seen, [0], "the handler ran for the first input only (its failed delivery threw before recording)");
  });

  test("loop guards - two replicas admit exactly the bound of one flow's events between them", async () => {
    await using mesh = await startMesh();
    const plan = forwarder("planner", "plan", "research");
    await using a = await run(mesh, plan.def, guards(32, 5));
    await using b = await run(mesh, plan.def, guards(32, 5));
    const root = mesh.event("gateway");
    const flow = flowIdOf(root);
    await Promise.all([root, ...Array.from({ length: 11 }, () => mesh.event("gateway", { extensions: { correlationid: flow } }))].map((e) => mesh.publish(PLAN, e)));
    await waitFor(() => a.stats().processed + b.stats().processed + a.stats().quarantined + b.stats().quarantined === 12, { what: "all twelve inputs decided" });
    assert.equal(a.stats().processed + b.stats().processed, 5);
    assert.equal(a.stats().quarantined + b.stats().quarantined, 7);
  });

  test("loop guards - a malformed depth (negative, fractional, beyond 2^53, not a number) is refused before the handler", async () => {
    await using mesh = await startMesh();
    const plan = forwarder("planner", "plan", "research");
    await using planner = await run(mesh, plan.def, guards(32, 100));
    const bad = ["-5", "2.5", "1152921504606846976", "07", "deep"];
    for (const flowdepth of bad) await mesh.publish(PLAN, mesh.event("gateway", { extensions: { flowdepth } }));
    await waitFor(() => planner.stats().quarantined === bad.length, { what: "every malformed depth refused" });
    assert.deepEqual(plan.seen, []);
    const refused = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.decode_error.plan");
    assert.deepEqual(refused.map((q) => header(q, QuarantineHeader.Code)), bad.map(() => ErrorCode.InvalidAttribute));
    assert.deepEqual(refused.map((q) => NatsBinding.toEvent(q).extensions.flowdepth), bad);
  });

  test("loop guards - the defaults live in infra/loop-guards.json and its schema refuses a bad bound", () => {
    const file = JSON.parse(readFileSync(DEFAULT_LOOP_GUARDS_PATH, "utf8")) as { maxDepth: number; maxEventsPerCapability: number };
    assert.deepEqual({ ...loadLoopGuards() }, { maxDepth: file.maxDepth, maxEventsPerCapability: file.maxEventsPerCapability, source: DEFAULT_LOOP_GUARDS_PATH });
    // Safe by default: the depth bound (free: a signed extension) is on; the per-capability count (a KV write per
    // input) is the operator's choice.
    assert.ok(file.maxDepth > 0, "the depth bound is on by default");
    assert.throws(() => parseLoopGuards({ maxDepth: -1, maxEventsPerCapability: 100 }), (err: Error & { code?: string }) => err.code === ErrorCode.Config && /maxDepth/.test(err.message));
    assert.throws(() => parseLoopGuards({ maxDepth: 32 }), /maxEventsPerCapability/);
  });
});
