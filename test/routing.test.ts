// Issue 15, items 3, 5 and 6: routing a capability by implementation version, sticky per flow; the coordinator's
// rollouts (steps, automatic rollback) and the stable version's circuit with a fallback. The table rules and the
// candidate's judgement are pure and tested directly; the rest on a real server with the rendered accounts, with
// two or three builds of the planner (plan.v1) in-process and the gateway's identity as the producer, routing
// through the kit's Router exactly as the gateway does.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import {
  ErrorCode, NatsBinding, RetryableError, controlRequest, createEvent, createLogger, defaultLayout, newTraceparent, openTrustStore, parseRouteTable,
  continuingVersions, readSeed, signEvent, signingKeyFromNkeySeed, startAgent, startRouter, uuidv7, versionForBucket,
  type Agent, type AgentDefinition, type CausewayError, type RouteTable, type Router,
} from "../services/kit/index.ts";
import { readMessages } from "../services/cli/flow.ts";
import { createPlannerDefinition, type ReportRequested } from "../services/agents/planner/definition.ts";
import {
  rolloutFallback, rolloutPause, rolloutResume, rolloutStart, rolloutStatus, type RolloutStartRequest, type VersionHealth,
} from "../services/coordinator/contract.ts";
import { start as startHealth, type HealthModule } from "../services/coordinator/health.ts";
import { judgeCandidate, start as startRollout } from "../services/coordinator/rollout.ts";
import { startCoordinator } from "./coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { repoRoot, waitFor } from "./harness/index.ts";
import type { CapabilityInstances } from "../services/cli/commands/agents.ts";

const PLAN = "plan.v1";
const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
const quiet = (name: string) => createLogger({ name, level: process.env.LOG_LEVEL ?? "silent" });

const table = (t: Partial<RouteTable> & Pick<RouteTable, "stable" | "lanes">): RouteTable => ({ capability: PLAN, retiring: [], updatedAt: "", reason: "", ...t });

describe("routing rules", () => {
  test("routing - a table is checked before anyone routes by it: semver versions, one lane each, shares 0–100, steps ending at 100, bounded size", () => {
    const good = table({ stable: "1.0.0", candidate: { version: "1.1.0", share: 10 }, lanes: { "1.0.0": "l1", "1.1.0": "l2" } });
    assert.deepEqual(parseRouteTable(JSON.stringify(good), PLAN).candidate, { version: "1.1.0", share: 10 });
    const refused = (t: unknown, why: RegExp, ref = PLAN) => assert.throws(() => parseRouteTable(typeof t === "string" ? t : JSON.stringify(t), ref), (err: CausewayError) => {
      assert.equal(err.code, ErrorCode.RouteInvalid);
      assert.match(err.message, why);
      return true;
    });
    refused(good, /names capability plan\.v1/, "research.v1");
    refused("{", /not JSON/);
    refused({ ...good, stable: "latest" }, /not a semver version/);
    refused({ ...good, candidate: { version: "1.1.0", share: 101 } }, /share 101/);
    refused({ ...good, lanes: { "1.0.0": "l1", "1.1.0": "l1" } }, /lane l1 is given to two versions/);
    refused({ ...good, lanes: { "1.0.0": "l1", "1.1.0": "l9" } }, /has no lane/);
    refused({ ...good, lanes: { ...good.lanes, "2.0.0": "l3" } }, /names a version the table does not route/);
    refused({ ...good, reason: "x".repeat(5000) }, /more than 4096/);
    refused({ ...good, rollout: { steps: [10, 50], step: 0, intervalMs: 1000, stepStartedAt: "", paused: false, maxRateMargin: 0.1, maxLatencyRatio: 2, minFlows: 1 } }, /ending at 100/);
    refused({ ...good, circuit: { state: "open", since: "", probeShare: 10 } }, /circuit without a fallback/);
  });

  test("routing - new flows: the candidate's share by bucket; an open circuit sends every new flow to the fallback, a half-open one lets a probe share try the stable version", () => {
    const t = table({ stable: "1.0.0", candidate: { version: "1.1.0", share: 10 }, lanes: { "1.0.0": "l1", "1.1.0": "l2" } });
    assert.deepEqual([0, 9, 10, 99].map((b) => versionForBucket(t, b)), ["1.1.0", "1.1.0", "1.0.0", "1.0.0"]);
    const withFallback = table({ stable: "1.0.0", fallback: "0.9.0", lanes: { "1.0.0": "l1", "0.9.0": "l3" } });
    assert.deepEqual([0, 50].map((b) => versionForBucket(withFallback, b)), ["1.0.0", "1.0.0"]);
    const open = { ...withFallback, circuit: { state: "open" as const, since: "", probeShare: 10 } };
    assert.deepEqual([0, 50].map((b) => versionForBucket(open, b)), ["0.9.0", "0.9.0"]);
    assert.deepEqual([...continuingVersions(open)], ["0.9.0"], "an open circuit: flows pinned to the stable version go on on the fallback");
    const half = { ...withFallback, circuit: { state: "half-open" as const, since: "", probeShare: 10 } };
    assert.deepEqual([0, 9, 10].map((b) => versionForBucket(half, b)), ["1.0.0", "1.0.0", "0.9.0"]);
    assert.deepEqual([...continuingVersions(table({ stable: "1.1.0", retiring: [{ version: "1.0.0", keepsFlows: true, since: "" }, { version: "0.8.0", keepsFlows: false, since: "" }], lanes: { "1.1.0": "l2", "1.0.0": "l1", "0.8.0": "l3" } }))], ["1.1.0", "1.0.0"]);
  });

  test("routing - the candidate is judged against the stable version: no live instance, rates over the margin or p95 over the ratio roll it back; a healthy interval advances; too few runs wait", () => {
    const plan = { steps: [10, 100], step: 0, intervalMs: 60_000, stepStartedAt: "", paused: false, maxRateMargin: 0.1, maxLatencyRatio: 2, minFlows: 20, by: "", id: "" };
    const h = (o: Partial<VersionHealth>): VersionHealth => ({
      capability: PLAN, version: "1.1.0", windowMs: 60_000, liveInstances: 1, handled: 50, failed: 0, quarantined: 0, quarantinedByReason: {},
      failureRate: 0, quarantineRate: 0, p50Ms: 5, p95Ms: 10, lastHeartbeat: null, ...o,
    });
    const stable = h({ version: "1.0.0", failureRate: 0.02, quarantineRate: 0.01 });
    assert.equal(judgeCandidate(plan, undefined, stable, 0).kind, "rollback");
    assert.equal(judgeCandidate(plan, h({ liveInstances: 0 }), stable, 0).kind, "rollback");
    assert.match((judgeCandidate(plan, h({ failed: 20, failureRate: 0.29 }), stable, 0) as { reason: string }).reason, /failure rate 29\.0 %/);
    assert.equal(judgeCandidate(plan, h({ failed: 5, failureRate: 0.11 }), stable, 0).kind, "wait", "within the margin of the stable one's 2 %");
    assert.match((judgeCandidate(plan, h({ quarantined: 10, quarantineRate: 0.2 }), stable, 0) as { reason: string }).reason, /quarantine rate/);
    assert.match((judgeCandidate(plan, h({ p95Ms: 25 }), stable, 0) as { reason: string }).reason, /p95 latency 25 ms/);
    assert.equal(judgeCandidate(plan, h({ handled: 5, failed: 5, failureRate: 0.5 }), stable, 0).kind, "wait", "10 runs are fewer than minFlows");
    assert.equal(judgeCandidate(plan, h({}), stable, 59_999).kind, "wait");
    assert.equal(judgeCandidate(plan, h({}), stable, 60_000).kind, "advance");
  });
});

/** A planner build that records which version handled each input of each flow, and can fail some inputs once. */
interface Build {
  readonly agent: Agent;
  readonly version: string;
}

interface RoutingMesh {
  readonly mesh: OperatedMesh;
  readonly health: HealthModule["health"];
  /** Per flow, the versions that handled its inputs; per input id, how many times a handler finished it. */
  readonly byFlow: Map<string, Set<string>>;
  readonly handled: Map<string, number>;
  planner(version: string, opts?: { failOncePercent?: number }): Promise<Build>;
  /**
   * Sends one report.requested per input of `flow` as the gateway, through `router`, routed as the gateway routes:
   * each stamped with the flow's route epoch (default: the router's latest, as the gateway stamps a new flow).
   */
  send(router: Router, flow: string, inputs: number, epoch?: number): Promise<string[]>;
  router(): Promise<Router>;
  settled(): Promise<void>;
}

async function routingMesh(mesh: OperatedMesh, health: HealthModule["health"]): Promise<RoutingMesh> {
  const gatewayKey = signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir));
  const plannerKey = signingKeyFromNkeySeed(readSeed("planner", mesh.dataDir));
  const gateway = await mesh.as("gateway");
  const js = jetstream(gateway);
  const jsm = await jetstreamManager(mesh.operator);
  const byFlow = new Map<string, Set<string>>();
  const handled = new Map<string, number>();
  const base = createPlannerDefinition();
  return {
    mesh, health, byFlow, handled,
    async planner(version, opts = {}) {
      const def: AgentDefinition<ReportRequested> = {
        ...base, version,
        async handler(input, ctx) {
          const flow = String(input.event.extensions.correlationid);
          // A failing build: this share of inputs (by id) throws on its first delivery; the retry succeeds.
          const bucket = createHash("sha256").update(input.event.id).digest().readUInt32BE(0) % 100;
          if (opts.failOncePercent !== undefined && bucket < opts.failOncePercent && ctx.deliveryCount === 1) throw new RetryableError(`build ${version} fails this one once`, { delayMs: 10 });
          const emits = await base.handler(input, ctx);
          (byFlow.get(flow) ?? byFlow.set(flow, new Set()).get(flow)!).add(version);
          handled.set(input.event.id, (handled.get(input.event.id) ?? 0) + 1);
          return emits;
        },
      };
      const nc = await mesh.as("planner");
      const trust = await openTrustStore(nc);
      const agent = await startAgent(nc, def, { trust, signingKey: plannerKey, log: quiet(`planner@${version}`), consumer: { ack_wait: 10_000_000_000, backoff: [2_000_000_000], max_deliver: 5 } });
      return { agent, version };
    },
    async router() {
      return startRouter(await mesh.as("gateway"), defaultLayout().subjects, { log: quiet("router") });
    },
    async send(router, flow, inputs, epoch = router.epoch()) {
      const ids: string[] = [];
      for (let i = 0; i < inputs; i++) {
        const event = signEvent(createEvent({
          id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
          datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent(), correlationid: flow, routeepoch: String(epoch) },
          data: JSON.stringify({ topic: `${flow} part ${i}`, requester: "ops@example.com", questions: ["Which version handles it?"] }),
        }), gatewayKey);
        const { headers, data } = NatsBinding.binary(event);
        await js.publish(await router.route("mesh.cap.plan.v1", flow, epoch), data, { headers, msgID: event.id });
        ids.push(event.id);
      }
      return ids;
    },
    async settled() {
      await waitFor(async () => {
        for (const c of await jsm.consumers.list("MESH_CAP").next()) {
          if (c.name.startsWith("cap-plan-v1") && (c.num_pending > 0 || c.num_ack_pending > 0)) return false;
        }
        return true;
      }, { what: "every plan.v1 input settled", timeoutMs: 60_000 });
    },
  };
}

/** The coordinator with its health and rollout modules, as the coordinator process runs them (a short circuit cool-down). */
async function coordinator(mesh: OperatedMesh): Promise<{ disposable: AsyncDisposable; health: HealthModule["health"] }> {
  let health: HealthModule["health"] | undefined;
  const disposable = await startCoordinator(mesh, [async (deps) => {
    const h = await startHealth(deps);
    health = h.health;
    return h;
  }, (deps) => startRollout({ ...deps, health: health! }, { circuit: { coolDownMs: 2_000, probeShare: 50 } })]);
  return { disposable, health: health! };
}

const live = (r: RoutingMesh, ...versions: string[]) => waitFor(() => versions.every((v) => r.health.of(PLAN).some((h) => h.version === v && h.liveInstances > 0)), { what: `live instances of ${versions.join(", ")}`, timeoutMs: 15_000 });

describe("routing on a real mesh", () => {
  test("routing - at a 10 % step the candidate gets 10 ± 5 % of 400 flows; raising the share moves new flows only: a flow's later work, sent by another producer, runs on the version its first ran on; nothing runs twice or is lost", async () => {
    await using mesh = await startOperatedMesh();
    const c = await coordinator(mesh);
    await using _c = c.disposable;
    const r = await routingMesh(mesh, c.health);
    const stable = await r.planner("1.0.0");
    const candidate = await r.planner("1.1.0");
    await live(r, "1.0.0", "1.1.0");
    const started = await controlRequest(mesh.operator, rolloutStart, { capability: PLAN, candidate: "1.1.0", steps: [10, 50, 100], intervalMs: 1_000, minFlows: 20, operator: "test" } satisfies RolloutStartRequest);
    assert.deepEqual([started.table?.stable, started.table?.candidate], ["1.0.0", { version: "1.1.0", share: 10 }]);
    await controlRequest(mesh.operator, rolloutPause, { capability: PLAN, operator: "test" }); // held at 10 % while the flows start
    // Two producers, each with its own router and its own view of the tables.
    const [a, b] = [await r.router(), await r.router()];
    await waitFor(() => a.tables.get("plan", 1)?.rollout?.paused === true && b.tables.get("plan", 1)?.rollout?.paused === true, { what: "both routers to see the rollout" });
    const flows = Array.from({ length: 400 }, (_, i) => ({ flow: `flow-${i}-${uuidv7()}`, epoch: a.epoch() }));
    const sent: string[] = [];
    for (const { flow, epoch } of flows) sent.push(...await r.send(a, flow, 1, epoch));
    await r.settled();
    const onCandidate = flows.filter(({ flow }) => r.byFlow.get(flow)!.has("1.1.0")).length / flows.length;
    assert.ok(onCandidate >= 0.05 && onCandidate <= 0.15, `the candidate's share of flows: ${(onCandidate * 100).toFixed(1)} %`);
    // The next step: 50 %. The old flows' later work (their epoch) stays where it went; new flows see the new share.
    await controlRequest(mesh.operator, rolloutResume, { capability: PLAN, operator: "test" });
    await waitFor(() => b.tables.get("plan", 1)?.candidate?.share === 50, { what: "the rollout to step to 50 %", timeoutMs: 20_000 });
    for (const { flow, epoch } of flows) sent.push(...await r.send(b, flow, 1, epoch));
    const fresh = Array.from({ length: 100 }, (_, i) => `fresh-${i}-${uuidv7()}`);
    for (const flow of fresh) sent.push(...await r.send(b, flow, 1));
    await r.settled();
    assert.deepEqual(sent.filter((id) => r.handled.get(id) !== 1), [], "every input handled exactly once");
    assert.deepEqual(flows.filter(({ flow }) => r.byFlow.get(flow)!.size !== 1).map(({ flow }) => flow), [], "no flow ran on two versions");
    const freshShare = fresh.filter((f) => r.byFlow.get(f)!.has("1.1.0")).length / fresh.length;
    assert.ok(freshShare >= 0.3 && freshShare <= 0.7, `new flows at 50 %: ${(freshShare * 100).toFixed(0)} % on the candidate`);
    assert.ok(stable.agent.stats().processed > 0 && candidate.agent.stats().processed > 0);
    await Promise.all([a.close(), b.close(), stable.agent.stop(), candidate.agent.stop()]);
  });

  test("routing - a candidate that fails 30 % of its inputs is rolled back on its own with the figures in a signed decision; every flow completes, on the candidate before or on stable after, nothing lost or run twice", async () => {
    await using mesh = await startOperatedMesh();
    const c = await coordinator(mesh);
    await using _c = c.disposable;
    const r = await routingMesh(mesh, c.health);
    const stable = await r.planner("1.0.0");
    const candidate = await r.planner("1.1.0", { failOncePercent: 30 });
    await live(r, "1.0.0", "1.1.0");
    await controlRequest(mesh.operator, rolloutStart, { capability: PLAN, candidate: "1.1.0", steps: [50, 100], intervalMs: 3_600_000, minFlows: 20, operator: "test" } satisfies RolloutStartRequest);
    const router = await r.router();
    await waitFor(() => router.tables.get("plan", 1)?.candidate !== undefined, { what: "the router to see the rollout" });
    const sent: string[] = [];
    let batch = 0;
    // Flows until the coordinator rolls the candidate back (its heartbeats bring the figures every 2 s).
    while (router.tables.get("plan", 1)?.candidate !== undefined) {
      assert.ok(batch < 40, `not rolled back after ${batch} batches: ${JSON.stringify(c.health.of(PLAN))}`);
      for (let i = 0; i < 10; i++) sent.push(...await r.send(router, `flow-${batch}-${i}-${uuidv7()}`, 1));
      batch++;
      await r.settled();
      await waitFor(() => c.health.of(PLAN).reduce((n, h) => n + h.handled, 0) >= sent.length || router.tables.get("plan", 1)?.candidate === undefined, { what: "the figures to catch up", timeoutMs: 10_000 });
    }
    const afterRollback = Array.from({ length: 20 }, (_, i) => `after-${i}-${uuidv7()}`);
    for (const flow of afterRollback) sent.push(...await r.send(router, flow, 1));
    await r.settled();
    assert.deepEqual(sent.filter((id) => r.handled.get(id) !== 1), [], "every input handled exactly once");
    assert.deepEqual(afterRollback.filter((f) => !r.byFlow.get(f)?.has("1.0.0") || r.byFlow.get(f)!.size !== 1), [], "new flows after the rollback run on stable only");
    assert.ok(candidate.agent.stats().failed > 0 && candidate.agent.stats().processed > 0);
    // The decision: signed, automatic, with the candidate's figures over the margin.
    const decisions = (await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.rollout")).map((m) => NatsBinding.toEvent(m));
    const rollback = decisions.map((d) => JSON.parse(String(d.data)) as { action: string; automatic: boolean; figures?: { candidate?: VersionHealth } }).find((d) => d.action === "rollback");
    assert.ok(rollback, `decisions: ${decisions.map((d) => String(d.data)).join("\n")}`);
    assert.equal(rollback.automatic, true);
    assert.ok(rollback.figures!.candidate!.failureRate > 0.1, JSON.stringify(rollback.figures));
    const status = await controlRequest(mesh.operator, rolloutStatus, { capability: PLAN });
    assert.deepEqual(status.capabilities[0]!.table?.retiring.map((x) => [x.version, x.keepsFlows]) ?? [], status.capabilities[0]!.table?.retiring.length ? [["1.1.0", false]] : [], "the candidate drains, then its lane is freed");
    await Promise.all([router.close(), stable.agent.stop(), candidate.agent.stop()]);
  });

  test("routing - with every instance of the stable version gone the circuit opens (a signed decision), new flows and the waiting work complete on the fallback, and a half-open probe closes it again", async () => {
    await using mesh = await startOperatedMesh();
    const c = await coordinator(mesh);
    await using _c = c.disposable;
    const r = await routingMesh(mesh, c.health);
    const stable = await r.planner("1.0.0");
    const fallback = await r.planner("0.9.0");
    await live(r, "1.0.0", "0.9.0");
    const set = await controlRequest(mesh.operator, rolloutFallback, { capability: PLAN, version: "0.9.0", stable: "1.0.0", operator: "test" });
    assert.deepEqual([set.table?.stable, set.table?.fallback, set.table?.circuit], ["1.0.0", "0.9.0", undefined]);
    const router = await r.router();
    await waitFor(() => router.tables.get("plan", 1)?.fallback === "0.9.0", { what: "the router to see the fallback" });
    const before = `before-${uuidv7()}`;
    await r.send(router, before, 1);
    await r.settled();
    assert.deepEqual([...r.byFlow.get(before)!], ["1.0.0"], "a closed circuit: new flows on stable");
    await stable.agent.stop();
    await waitFor(() => router.tables.get("plan", 1)?.circuit?.state === "open", { what: "the circuit to open", timeoutMs: 15_000 });
    const flows = Array.from({ length: 20 }, (_, i) => `open-${i}-${uuidv7()}`);
    const sent: string[] = [];
    for (const flow of flows) sent.push(...await r.send(router, flow, 1));
    await r.settled();
    assert.deepEqual(flows.filter((f) => [...(r.byFlow.get(f) ?? [])].join() !== "0.9.0"), [], "every new flow completed on the fallback");
    assert.deepEqual(sent.filter((id) => r.handled.get(id) !== 1), []);
    const decisions = async () => (await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.rollout")).map((m) => JSON.parse(String(NatsBinding.toEvent(m).data)) as { action: string; reason: string; moved?: number });
    assert.match((await decisions()).find((d) => d.action === "circuit-open")?.reason ?? "", /no live instance of 1\.0\.0/);
    // `causeway agents` shows the circuit with the capability's versions.
    const { stdout } = await promisify(execFile)(process.execPath, [join(repoRoot, "services/cli/main.ts"), "agents", "--json", "--server", mesh.server.url], { env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir } });
    const listed = (JSON.parse(stdout) as CapabilityInstances[]).find((x) => x.capability === PLAN)!;
    assert.deepEqual([listed.routing?.stable, listed.routing?.fallback, listed.routing?.circuit?.state], ["1.0.0", "0.9.0", "open"]);
    // Work already on the dead stable version's lane (a producer that routed it there before the circuit opened)
    // is handed over to the fallback explicitly, not left waiting.
    const stableLane = router.tables.get("plan", 1)!.lanes["1.0.0"]!;
    const stranded = [`stranded-${uuidv7()}`, `stranded-${uuidv7()}`];
    const onLane = { route: () => Promise.resolve(defaultLayout().subjects.lane("plan", 1, stableLane)), epoch: () => router.epoch() } as unknown as Router;
    for (const flow of stranded) sent.push(...await r.send(onLane, flow, 1));
    await waitFor(() => stranded.every((f) => r.byFlow.get(f)?.has("0.9.0")), { what: "the stranded inputs to run on the fallback", timeoutMs: 20_000 });
    // The decision follows the move (signed once the inputs are on the fallback's lane).
    const moved = async () => (await decisions()).filter((d) => d.action === "handover").reduce((n, d) => n + d.moved!, 0);
    await waitFor(async () => (await moved()) >= stranded.length, { what: "the handover decision" });
    assert.equal(await moved(), stranded.length);
    assert.deepEqual(sent.filter((id) => r.handled.get(id) !== 1), []);
    // The stable version back: after the cool-down the circuit is half-open, a probe share of new flows tries it,
    // and once enough probes ran since (not what it did before it died) the circuit closes.
    const back = await r.planner("1.0.0");
    await waitFor(() => router.tables.get("plan", 1)?.circuit?.state === "half-open", { what: "the circuit to half-open", timeoutMs: 15_000 });
    const probes: string[] = [];
    for (let i = 0; router.tables.get("plan", 1)?.circuit !== undefined; i++) {
      assert.ok(i < 200, `still ${router.tables.get("plan", 1)?.circuit?.state} after ${i} flows: ${JSON.stringify(c.health.of(PLAN))}`);
      const flow = `probe-${i}-${uuidv7()}`;
      probes.push(flow);
      sent.push(...await r.send(router, flow, 1));
      await r.settled();
      await waitFor(() => c.health.of(PLAN).reduce((n, h) => n + h.handled, 0) >= 1 || router.tables.get("plan", 1)?.circuit === undefined, { what: "the figures" });
    }
    assert.ok(probes.some((f) => r.byFlow.get(f)?.has("1.0.0")), "probes ran on the stable version");
    assert.deepEqual(sent.filter((id) => r.handled.get(id) !== 1), []);
    assert.match((await decisions()).find((d) => d.action === "circuit-closed")?.reason ?? "", /handled \d+ probe inputs/);
    await Promise.all([router.close(), fallback.agent.stop(), back.agent.stop()]);
  });

  test("routing - rollout requests are checked: an unknown capability, a candidate with no live instance, a second rollout, a bad step list are refused with their codes and change nothing", async () => {
    await using mesh = await startOperatedMesh();
    const c = await coordinator(mesh);
    await using _c = c.disposable;
    const r = await routingMesh(mesh, c.health);
    const stable = await r.planner("1.0.0");
    await live(r, "1.0.0");
    const refused = async (body: unknown, code: string, why: RegExp) => {
      await assert.rejects(controlRequest(mesh.operator, rolloutStart, body as RolloutStartRequest), (err: CausewayError) => {
        assert.equal(err.code, code);
        assert.match(err.message, why);
        return true;
      });
    };
    await refused({ capability: "nothing.v1", candidate: "1.1.0" }, ErrorCode.RolloutInvalid, /unknown capability nothing\.v1/);
    await refused({ capability: PLAN, candidate: "1.1.0" }, ErrorCode.RolloutInvalid, /no live instance of plan\.v1 1\.1\.0/);
    await refused({ capability: PLAN, candidate: "latest" }, ErrorCode.RolloutInvalid, /semver/);
    await refused({ capability: PLAN, candidate: "1.1.0", steps: [50, 20, 100] }, ErrorCode.RolloutInvalid, /ascending/);
    await refused({ capability: PLAN, candidate: "1.1.0", surprise: true }, ErrorCode.RolloutInvalid, /unknown field surprise/);
    assert.equal((await controlRequest(mesh.operator, rolloutStatus, { capability: PLAN })).capabilities[0]!.table, null, "nothing was routed");
    const candidate = await r.planner("1.1.0");
    await live(r, "1.1.0");
    await controlRequest(mesh.operator, rolloutStart, { capability: PLAN, candidate: "1.1.0", intervalMs: 3_600_000 });
    await refused({ capability: PLAN, candidate: "1.1.0" }, ErrorCode.RolloutConflict, /in progress/);
    await Promise.all([stable.agent.stop(), candidate.agent.stop()]);
  });
});
