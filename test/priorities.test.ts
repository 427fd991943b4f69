// Issue 16, item 3: priority lanes with aging, on a real server. Work of each priority has its own subject and
// durable on MESH_CAP; an output inherits its input's priority and lands on its priority's durable; an agent
// serves the durables of a capability by weight under one concurrency limit, and waiting work ages into a higher
// share; an input whose signed priority is not its subject's is quarantined; a bad edit of the weights keeps the
// last good ones.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import {
  ErrorCode, KvBucket, createEvent, newTraceparent, readSeed, routeKey, signEvent, signingKeyFromNkeySeed, uuidv7, NatsBinding, QuarantineHeader, createLogger, loadPrincipals, startAgent, startRouter, subjectsFor, watchPriorities,
  type AgentDefinition, type CloudEvent, type Emit, type PriorityValue, type PriorityWeights, type WatchedInfraFile,
} from "../services/kit/index.ts";
import { permissionsFor } from "../services/kit/ops/index.ts";
import { REQUEST_SCHEMA, TASK_SCHEMA, header, recordingResearcher, startMesh, type Mesh } from "./mesh-fixture.ts";
import { repoRoot, waitFor } from "./harness/index.ts";
import { start as startHandoffs } from "../services/coordinator/handoffs.ts";
import { createPublisherDefinition } from "../services/agents/publisher/definition.ts";
import { startCoordinator } from "./coordinator-fixture.ts";
import { startOperatedMesh } from "./e2e-fixture.ts";
import { readMessages } from "../services/cli/flow.ts";

const PLAN = "mesh.cap.plan.v1";
const log = createLogger({ name: "priorities", level: process.env.LOG_LEVEL ?? "silent" });
const fastConsumer = { ack_wait: 2_000_000_000, backoff: [300_000_000], max_deliver: 4 };

/** A priorities file of its own in a temporary directory, followed live; removed on dispose. */
function prioritiesFile(weights: Record<PriorityValue, number>, agingMs: number, onReload?: (err?: Error) => void): WatchedInfraFile<PriorityWeights> & { path: string; write(doc: unknown): void } & Disposable {
  const dir = mkdtempSync(join(tmpdir(), "causeway-priorities-"));
  const path = join(dir, "priorities.json");
  const write = (doc: unknown) => writeFileSync(path, typeof doc === "string" ? doc : JSON.stringify(doc));
  write({ weights, agingMs });
  const file = watchPriorities({ path, log, ...(onReload && { onReload }) });
  return {
    path, write, current: () => file.current(), close: () => file.close(),
    [Symbol.dispose]() {
      file.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A planner that records the priority of each input it runs, in order, after `workMs` of (simulated) work. */
function recordingPlanner(opts: { workMs: number; concurrency: number; emits?: boolean; onInput?: (priority: string) => void }): AgentDefinition & { order: string[] } {
  const def = {
    principal: "planner", capability: "plan", major: 1, version: "0.0.1-test", description: "priority test planner", concurrency: opts.concurrency,
    accepts: { "report.requested": REQUEST_SCHEMA }, emits: { "research.task.created": TASK_SCHEMA },
    order: [] as string[],
    async handler(input: { event: CloudEvent }, ctx: { subjects: { capability(c: string, m: number): string } }): Promise<Emit[]> {
      const priority = String(input.event.extensions.priority ?? "normal");
      def.order.push(priority);
      opts.onInput?.(priority);
      if (opts.workMs > 0) await new Promise((resolve) => setTimeout(resolve, opts.workMs));
      if (!opts.emits) return [];
      // The handler tries to choose its output's priority: the runtime keeps the input's.
      return [{ to: ctx.subjects.capability("research", 1), type: "research.task.created", data: { requestId: input.event.id, taskIndex: 0, totalTasks: 1, query: "q" }, extensions: { priority: "background" } }];
    },
  };
  return def as unknown as AgentDefinition & { order: string[] };
}

/** Publishes `n` gateway-signed inputs of `priority` on `subject` (its priority's, unless a test says otherwise). */
async function send(mesh: Mesh, priority: PriorityValue | string, n: number, subject = subjectsFor().capability("plan", 1, priority as PriorityValue)): Promise<void> {
  for (let i = 0; i < n; i++) await mesh.publish(subject, mesh.event("gateway", { extensions: { priority } }));
}

const count = (list: readonly string[], what: string) => list.filter((x) => x === what).length;

describe("priority lanes", () => {
  test("priorities - subjects and durables per priority: the plain ones stay normal's, the router addresses the flow's priority, permissions allow exactly the priority subjects", async () => {
    const s = subjectsFor();
    assert.equal(s.capability("plan", 1), PLAN);
    assert.equal(s.capability("plan", 1, "critical"), `${PLAN}.critical`);
    assert.equal(s.lane("plan", 1, "l2", "background"), `${PLAN}.l2.background`);
    assert.deepEqual(s.parse(`${PLAN}.l2.background`), { kind: "cap", prefix: "mesh", capability: "plan", major: 1, lane: "l2", priority: "background" });
    const principals = loadPrincipals();
    const planner = principals.principals.planner!;
    const durables = planner.consumes.filter((c) => c.stream === "MESH_CAP").map((c) => `${c.durable} ${c.filter}`);
    for (const d of ["cap-plan-v1 mesh.cap.plan.v1", "cap-plan-v1-critical mesh.cap.plan.v1.critical", "cap-plan-v1-background mesh.cap.plan.v1.background", "cap-plan-v1-l3-critical mesh.cap.plan.v1.l3.critical"]) {
      assert.ok(durables.includes(d), `${d} among ${durables.join(", ")}`);
    }
    const pub = permissionsFor(principals, "planner").publish.map((g) => g.subject);
    for (const subject of ["mesh.cap.research.v1", "mesh.cap.research.v1.critical", "mesh.cap.research.v1.background", "mesh.cap.research.v1.l4.critical"]) assert.ok(pub.includes(subject), subject);
    assert.ok(!pub.some((g) => g.startsWith("mesh.cap.research.v1.normal") || g === "mesh.cap.research.v1.>" || g.startsWith("mesh.cap.plan.")), "no normal token, no wildcard, nothing of a capability it does not address");
    const createGrants = permissionsFor(principals, "planner").publish.filter((g) => g.subject.startsWith("$JS.API.CONSUMER.CREATE.MESH_CAP.cap-plan-v1-critical.")).map((g) => g.subject);
    assert.deepEqual(createGrants, ["$JS.API.CONSUMER.CREATE.MESH_CAP.cap-plan-v1-critical.mesh.cap.plan.v1.critical"], "its critical durable, pinned to the critical subject");

    await using mesh = await startMesh();
    const router = await startRouter(mesh.nc, s, { log });
    try {
      assert.equal(router.route(PLAN, "flow-1", undefined), PLAN);
      assert.equal(router.route(PLAN, "flow-1", undefined, "normal"), PLAN);
      assert.equal(router.route(PLAN, "flow-1", undefined, "critical"), `${PLAN}.critical`);
      assert.equal(router.route(PLAN, "flow-1", undefined, "background"), `${PLAN}.background`);
      assert.equal(router.route("mesh.evt.report.published.v1", "flow-1", undefined, "critical"), "mesh.evt.report.published.v1", "a fact has no priority subject");
    } finally {
      await router.close();
    }
  });

  test("priorities - an output inherits its input's priority (a handler cannot change it) and lands on its priority's durable, which the next agent serves", async () => {
    await using mesh = await startMesh();
    using weights = prioritiesFile({ critical: 8, normal: 3, background: 1 }, 30_000);
    await using _planner = await startAgent(mesh.nc, recordingPlanner({ workMs: 0, concurrency: 4, emits: true }), { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer: fastConsumer, log, priorities: weights });
    await send(mesh, "critical", 1);
    await waitFor(async () => (await mesh.messages("MESH_CAP", "mesh.cap.research.v1.>")).length === 1, { what: "the planner's output" });
    const [out] = await mesh.messages("MESH_CAP", "mesh.cap.research.v1.>");
    assert.equal(out!.subject, "mesh.cap.research.v1.critical");
    const v = mesh.trust.verify(NatsBinding.toEvent(out!), { receivedAt: "now" });
    assert.equal(v.event.extensions.priority, "critical", "signed, inherited; the handler's background is ignored");
    assert.equal((await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).length, 0, "nothing on the plain (normal) subject");
    const researcher = recordingResearcher();
    await using r = await startAgent(mesh.nc, researcher, { trust: mesh.trust, signingKey: mesh.keys.researcher!, consumer: fastConsumer, log, priorities: weights });
    await waitFor(() => r.stats().processed === 1, { what: "the researcher to run the critical task" });
    assert.equal(r.stats().quarantined, 0);
    const info = await mesh.jsm.consumers.info("MESH_CAP", "cap-research-v1-critical");
    assert.equal(info.delivered.stream_seq, out!.seq, "delivered through the critical durable");
    assert.equal(info.num_ack_pending + info.num_pending, 0);
    const [finding] = await mesh.messages("MESH_CAP", "mesh.cap.verify.v1.>");
    assert.equal(finding?.subject, "mesh.cap.verify.v1.critical", "and on down the flow");
  });

  test("priorities - a routed capability: the router puts the priority after the version's lane, and the version's agent serves that lane's priority durable", async () => {
    await using mesh = await startMesh();
    using weights = prioritiesFile({ critical: 8, normal: 3, background: 1 }, 30_000);
    const def = recordingPlanner({ workMs: 0, concurrency: 2 });
    const routes = await new Kvm(mesh.nc).open(KvBucket.Routes);
    const revision = await routes.put(routeKey("plan", 1), JSON.stringify({ capability: "plan.v1", stable: def.version, retiring: [], lanes: { [def.version]: "l2" }, updatedAt: new Date().toISOString(), reason: "test" }));
    await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer: fastConsumer, log, priorities: weights });
    const router = await startRouter(mesh.nc, subjectsFor(), { log });
    try {
      assert.ok(await router.tables.caughtUp(revision, 5_000));
      assert.equal(router.route(PLAN, "flow-1", revision, "critical"), `${PLAN}.l2.critical`);
      assert.equal(router.route(PLAN, "flow-1", revision, "background"), `${PLAN}.l2.background`);
      assert.equal(router.route(PLAN, "flow-1", revision), `${PLAN}.l2`);
      await send(mesh, "critical", 1, `${PLAN}.l2.critical`);
      await waitFor(() => agent.stats().processed === 1, { what: "the lane's critical input to run" });
      assert.deepEqual(def.order, ["critical"]);
      const info = await mesh.jsm.consumers.info("MESH_CAP", "cap-plan-v1-l2-critical");
      assert.equal(info.num_pending + info.num_ack_pending, 0);
      assert.equal(info.delivered.consumer_seq, 1, "through the lane's critical durable");
    } finally {
      await router.close();
    }
  });

  test("priorities - with a slow handler and a backlog of every priority, critical work is served first by weight (8:3:1), and all of it completes", async () => {
    await using mesh = await startMesh();
    using weights = prioritiesFile({ critical: 8, normal: 3, background: 1 }, 600_000);
    // The backlog is stored before the agent (and its durables) exist: it sees all of it at once.
    await send(mesh, "background", 24);
    await send(mesh, "normal", 24);
    await send(mesh, "critical", 24);
    const def = recordingPlanner({ workMs: 10, concurrency: 1 });
    await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer: { ack_wait: 30_000_000_000 }, log, priorities: weights });
    await waitFor(() => agent.stats().processed === 72, { what: "the whole backlog", timeoutMs: 30_000 });
    const first = def.order.slice(0, 12);
    assert.ok(count(first, "critical") >= 7, `the first 12 by weight: ${first.join(" ")}`);
    assert.ok(count(first, "background") <= 2, `the first 12 by weight: ${first.join(" ")}`);
    const lastCritical = def.order.lastIndexOf("critical");
    assert.ok(count(def.order.slice(0, lastCritical), "background") <= 6, `critical done while most background waits: ${def.order.join(" ")}`);
    assert.deepEqual([count(def.order, "critical"), count(def.order, "normal"), count(def.order, "background")], [24, 24, 24]);
    assert.equal(agent.stats().quarantined, 0);
  });

  test("priorities - under sustained critical load background work still completes by aging; without aging it would wait (weights 1000:10:1)", async () => {
    const run = async (agingMs: number, criticalLimit: number, workMs = 3) => {
      await using mesh = await startMesh();
      using weights = prioritiesFile({ critical: 1000, normal: 10, background: 1 }, agingMs);
      await send(mesh, "background", 4);
      await send(mesh, "critical", 30);
      let sent = 30;
      // Every critical input handled is replaced by a new one: the critical backlog never drains below 30.
      const def = recordingPlanner({
        workMs, concurrency: 1,
        onInput: (p) => {
          if (p === "critical" && sent < criticalLimit) {
            sent++;
            void send(mesh, "critical", 1);
          }
        },
      });
      await using _agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer: { ack_wait: 30_000_000_000 }, log, priorities: weights });
      await waitFor(() => count(def.order, "background") === 4 || count(def.order, "critical") >= criticalLimit - 30, { what: "all background work, or the critical load to end", timeoutMs: 60_000 });
      // Not yet all background work: the last of it is after everything handled so far.
      if (count(def.order, "background") < 4) return { background: count(def.order, "background"), criticalBefore: count(def.order, "critical") };
      return { background: count(def.order, "background"), criticalBefore: count(def.order.slice(0, def.order.lastIndexOf("background") + 1), "critical") };
    };
    const aging = await run(300, 2_000);
    assert.equal(aging.background, 4, "every background input ran while critical work kept coming");
    assert.ok(aging.criticalBefore <= 30, `with aging the last background input ran after ${aging.criticalBefore} critical ones`);
    // The control: the same load without aging (a day). Background then runs only when no critical input is at
    // hand at the moment a slot frees (the scheduler never idles a slot), or once per 1000 critical ones. Its inputs
    // take 20 ms, so the next critical input is fetched long before the slot frees, however loaded the machine.
    const none = await run(86_400_000, 160, 20);
    assert.ok(none.criticalBefore >= 60, `without aging the last background input ran after ${none.criticalBefore} critical ones (${none.background} of 4 ran)`);
  });

  test("priorities - an input whose signed priority is not its subject's is quarantined (policy_denied, CW_ERR_PRIORITY_MISMATCH); a malformed priority is a decode error", async () => {
    await using mesh = await startMesh();
    using weights = prioritiesFile({ critical: 8, normal: 3, background: 1 }, 30_000);
    const def = recordingPlanner({ workMs: 0, concurrency: 4 });
    await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, consumer: fastConsumer, log, priorities: weights });
    // A producer that may address plan.v1 (the gateway's key; a compromised agent alike) jumps the queue: background
    // work on the critical subject, critical-signed work on the plain subject.
    await send(mesh, "background", 1, `${PLAN}.critical`);
    await send(mesh, "critical", 1, PLAN);
    await send(mesh, "urgent", 1, PLAN);
    await send(mesh, "critical", 1); // the honest one
    await waitFor(() => agent.stats().quarantined === 3 && agent.stats().processed === 1, { what: "three refusals and one run" });
    assert.deepEqual(def.order, ["critical"], "the handler ran for the matching input only");
    const refused = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
    const seen = refused.map((m) => [header(m, QuarantineHeader.OriginalSubject), header(m, QuarantineHeader.Reason), header(m, QuarantineHeader.Code)]);
    assert.deepEqual(seen.sort(), [
      [PLAN, "decode_error", ErrorCode.InvalidAttribute],
      [PLAN, "policy_denied", ErrorCode.PriorityMismatch],
      [`${PLAN}.critical`, "policy_denied", ErrorCode.PriorityMismatch],
    ].sort());
  });

  test("priorities - the weights reload live; a bad edit keeps the last good ones and is reported", async () => {
    const reloads: (Error | undefined)[] = [];
    using file = prioritiesFile({ critical: 8, normal: 3, background: 1 }, 30_000, (err) => reloads.push(err));
    assert.deepEqual(file.current().weights, { critical: 8, normal: 3, background: 1 });
    file.write({ weights: { critical: 0, normal: 3, background: 1 }, agingMs: 30_000 });
    await waitFor(() => reloads.some((e) => e !== undefined), { what: "the bad edit to be reported" });
    assert.equal((reloads.find((e) => e !== undefined) as { code?: string }).code, ErrorCode.PrioritiesInvalid);
    assert.match(String(reloads.find((e) => e !== undefined)), /\/weights\/critical/);
    assert.deepEqual(file.current().weights, { critical: 8, normal: 3, background: 1 }, "the last good weights stay");
    reloads.length = 0;
    file.write({ weights: { critical: 8, normal: 3 }, agingMs: 30_000 });
    await waitFor(() => reloads.some((e) => e !== undefined), { what: "a missing priority to be reported" });
    assert.match(String(reloads.find((e) => e !== undefined)), /no weight for background/);
    file.write("{ not json");
    reloads.length = 0;
    await waitFor(() => reloads.some((e) => e !== undefined), { what: "broken JSON to be reported" });
    assert.deepEqual(file.current().weights, { critical: 8, normal: 3, background: 1 });
    reloads.length = 0;
    file.write({ weights: { critical: 20, normal: 5, background: 2 }, agingMs: 5_000 });
    await waitFor(() => file.current().weights.critical === 20, { what: "the good edit to take effect" });
    assert.equal(file.current().agingMs, 5_000);
  });

  test("priorities - critical work of a background flow: the coordinator forwards the granted work on the background subject, and the critical agent runs it there (operated mesh, real permissions)", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], { capabilities: { "publish.v1": { critical: true, approvals: { count: 1, approvers: ["approver-alice"] }, leaseTtlMs: 60_000, approvalDeadlineMs: 60_000, onDeadline: "quarantine" } } });
    const outboxDir = join(mesh.dataDir, "outbox");
    using weights = prioritiesFile({ critical: 8, normal: 3, background: 1 }, 30_000);
    await using pub = await startAgent(await mesh.as("publisher"), createPublisherDefinition({ config: { outboxDir } }), {
      trust: mesh.trust, signingKey: signingKeyFromNkeySeed(readSeed("publisher", mesh.dataDir)), log, priorities: weights,
      consumer: { ack_wait: 2_000_000_000, backoff: [500_000_000], max_deliver: 3 },
    });
    const requestId = `req-${uuidv7()}`;
    const event = signEvent(createEvent({
      id: uuidv7(), source: "causeway://reporter", type: "report.published", time: new Date().toISOString(), subject: requestId,
      datacontenttype: "application/json", dataschema: "https://causeway.dev/schemas/report.published/1.0.0",
      extensions: { traceparent: newTraceparent(), correlationid: requestId, priority: "background" },
      data: JSON.stringify({ requestId, title: "Report: test", complete: true, findingsCount: 1, sections: [{ heading: "Q", body: "A" }] }),
    }), signingKeyFromNkeySeed(readSeed("reporter", mesh.dataDir)));
    const { headers, data } = NatsBinding.binary(event);
    await jetstream(await mesh.as("reporter")).publish("mesh.handoff.publish.v1", data, { headers, msgID: event.id });
    await waitFor(async () => {
      const r = await promisify(execFile)(join(repoRoot, "node_modules", ".bin", "node"), [join(repoRoot, "services", "cli", "main.ts"), "approve", event.id, "--as", "approver-alice", "--server", mesh.server.url], { env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir } }).then(() => true, () => false);
      return r;
    }, { what: "the approval to be accepted", timeoutMs: 20_000 });
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run the granted work" });
    assert.equal(pub.stats().quarantined, 0);
    const forwarded = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.publish.v1.>");
    assert.deepEqual(forwarded.map((m) => m.subject), ["mesh.cap.publish.v1.background"]);
  });
});
