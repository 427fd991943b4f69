// Issue 15, item 4: health per capability version, computed by the coordinator from the agents' heartbeats
// (cumulative counters, a handler-latency histogram) over a sliding window, and served in-process, on the
// `health` control endpoint, in `causeway agents` and as OpenTelemetry gauges. The percentile computation and the
// tracker's window arithmetic are pure and tested directly; the rest on a real server with the rendered accounts.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import { promisify } from "node:util";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { GaugeMetricData } from "@opentelemetry/sdk-metrics";
import {
  AgentMetricAttribute, CausewayError, ErrorCode, HANDLER_DURATION_BOUNDARIES_MS, KvBucket, MAX_BEAT_BYTES, NatsBinding, QuarantineReason, RetryableError,
  checkBeat, controlRequest, createEvent, createLogger, listInstances, newTraceparent, openTrustStore, readSeed, signEvent, signingKeyFromNkeySeed,
  startAgent, uuidv7, type Agent, type AgentDefinition, type AgentStats, type InstanceBeat,
} from "../services/kit/index.ts";
import { createPlannerDefinition, type ReportRequested } from "../services/agents/planner/definition.ts";
import type { CapabilityInstances } from "../services/cli/commands/agents.ts";
import { health as healthEndpoint, type VersionHealth } from "../services/coordinator/contract.ts";
import { HealthMetric, HealthTracker, percentileFromBuckets, start as startHealth, type HealthModule } from "../services/coordinator/health.ts";
import { start as startRollout } from "../services/coordinator/rollout.ts";
import { startCoordinator } from "./coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { inMemoryMetrics } from "./metrics-fixture.ts";
import { repoRoot, waitFor } from "./harness/index.ts";

const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
const PLAN = "plan.v1";
const quiet = (name: string) => createLogger({ name, level: process.env.LOG_LEVEL ?? "silent" });

// ---------------------------------------------------------------------------------------------------------
// Pure: percentiles and the window arithmetic

describe("health arithmetic", () => {
  test("health - percentiles from histogram buckets: linear inside the bucket holding the rank, the open last bucket gives its lower bound, null when empty", () => {
    const bounds = [10, 20, 50];
    assert.equal(percentileFromBuckets(bounds, [0, 0, 0, 0], 0.5), null);
    assert.equal(percentileFromBuckets(bounds, [0, 10, 0, 0], 0.5), 15); // rank 5 of 10 in (10, 20]
    assert.equal(percentileFromBuckets(bounds, [0, 10, 0, 0], 0.95), 19.5);
    assert.equal(percentileFromBuckets(bounds, [4, 0, 0, 0], 0.5), 5); // the first bucket starts at 0
    assert.equal(percentileFromBuckets(bounds, [5, 0, 5, 0], 0.5), 10); // rank 5 is the first bucket's top
    assert.equal(percentileFromBuckets(bounds, [5, 0, 5, 0], 0.6), 20 + 30 * (1 / 5));
    assert.equal(percentileFromBuckets(bounds, [1, 0, 0, 1], 0.95), 50); // above every bound: only its lower bound is known
    // The agents' own bounds: 100 runs in (50, 100] ms.
    const counts = HANDLER_DURATION_BOUNDARIES_MS.map((b) => (b === 100 ? 100 : 0)).concat(0);
    assert.equal(percentileFromBuckets(HANDLER_DURATION_BOUNDARIES_MS, counts, 0.5), 75);
    assert.equal(percentileFromBuckets(HANDLER_DURATION_BOUNDARIES_MS, counts, 0.95), 97.5);
  });

  test("health - tracker: per-instance deltas inside the window, a fresh instance from zero, a restart neither negative nor doubled, a stopped instance counted but not live, old activity leaves", () => {
    let windowMs = 10_000;
    const t = new HealthTracker({ windowMs: () => windowMs, lapseMs: 6_000 });
    const T0 = Date.parse("2030-01-01T00:00:00Z");
    const buckets = (fast: number, slow: number) => HANDLER_DURATION_BOUNDARIES_MS.map((b) => (b === 5 ? fast : b === 500 ? slow : 0)).concat(0);
    const stats = (processed: number, failed: number, quarantined: number, byReason: Partial<Record<string, number>>, b: readonly number[]): AgentStats =>
      ({ processed, failed, quarantined, replays: 0, inFlight: 0, handlerMeanMs: 0, handlerMaxMs: 0, quarantinedByReason: byReason, handlerBuckets: b });
    const beat = (instance: string, version: string, startedAt: number, at: number, s: AgentStats): InstanceBeat => ({
      principal: "planner", capability: PLAN, version, instance, host: "h", pid: 1, subscribes: [],
      startedAt: new Date(startedAt).toISOString(), at: new Date(at).toISOString(), stats: s,
    });
    const key = (instance: string) => `plan_v1.${instance}`;

    // A instance running long before the coordinator saw it: its first beat is only a baseline.
    assert.equal(t.beat(key("a"), beat("a", "1.0.0", T0 - 3_600_000, T0, stats(1000, 50, 7, { low_confidence: 7 }, buckets(900, 0))), T0), "up");
    // B started just now: everything it counted happened inside the window.
    assert.equal(t.beat(key("b"), beat("b", "1.1.0", T0 - 500, T0, stats(3, 1, 1, { low_confidence: 1 }, buckets(0, 4))), T0), "up");
    assert.equal(t.beat(key("a"), beat("a", "1.0.0", T0 - 3_600_000, T0 + 2_000, stats(1010, 50, 7, { low_confidence: 7 }, buckets(910, 0))), T0 + 2_000), undefined);
    t.beat(key("b"), beat("b", "1.1.0", T0 - 500, T0 + 2_000, stats(6, 3, 2, { low_confidence: 1, max_deliveries: 1 }, buckets(0, 9))), T0 + 2_000);
    let [a, b] = t.view(T0 + 2_000);
    assert.deepEqual([a!.version, a!.handled, a!.failed, a!.quarantined, a!.liveInstances, a!.failureRate], ["1.0.0", 10, 0, 0, 1, 0]);
    assert.equal(a!.p50Ms, 2.5 + 2.5 * 0.5); // 10 runs in (2.5, 5]
    assert.deepEqual([b!.version, b!.handled, b!.failed, b!.quarantined, b!.quarantinedByReason], ["1.1.0", 6, 3, 2, { low_confidence: 1, max_deliveries: 1 }]);
    assert.equal(b!.failureRate, 3 / 9);
    assert.equal(b!.quarantineRate, 2 / 8);
    assert.ok(b!.p50Ms! > 250 && b!.p95Ms! <= 500, String(b!.p95Ms));
    assert.equal(b!.lastHeartbeat, new Date(T0 + 2_000).toISOString());

    // B restarts: the old instance stops (its final beat counts), a new one starts from zero on its own key.
    t.beat(key("b"), beat("b", "1.1.0", T0 - 500, T0 + 3_000, stats(7, 3, 2, { low_confidence: 1, max_deliveries: 1 }, buckets(0, 10))), T0 + 3_000);
    assert.equal(t.gone(key("b"))?.instance, "b");
    assert.equal(t.gone(key("b")), undefined); // said once
    t.beat(key("b2"), beat("b2", "1.1.0", T0 + 3_500, T0 + 3_600, stats(2, 0, 0, {}, buckets(0, 2))), T0 + 3_600);
    [, b] = t.view(T0 + 4_000);
    assert.deepEqual([b!.handled, b!.failed, b!.quarantined, b!.liveInstances], [7 + 2, 3, 2, 1]);

    // A counter that goes backwards under one key adds nothing rather than something negative.
    t.beat(key("a"), beat("a", "1.0.0", T0 - 3_600_000, T0 + 4_000, stats(5, 0, 0, {}, buckets(0, 0))), T0 + 4_000);
    [a] = t.view(T0 + 4_000);
    assert.deepEqual([a!.handled, a!.failed, a!.quarantined, a!.p50Ms], [0, 0, 0, null]);

    // Nothing new for longer than the window: the counts leave it; a silent instance is lost, and forgotten once
    // nothing of it is inside the window.
    t.beat(key("b2"), beat("b2", "1.1.0", T0 + 3_500, T0 + 15_000, stats(2, 0, 0, {}, buckets(0, 2))), T0 + 15_000);
    assert.deepEqual(t.sweep(T0 + 15_000).map((l) => l.beat.instance), ["a"]); // silent since T0 + 4 s
    assert.deepEqual(t.view(T0 + 15_000).map((v) => [v.version, v.liveInstances, v.handled]), [["1.1.0", 1, 0]]);
    // A lost instance still counts for what it did inside the window, but not as live.
    t.beat(key("c"), beat("c", "1.2.0", T0 + 11_000, T0 + 12_000, stats(4, 0, 0, {}, buckets(4, 0))), T0 + 12_000);
    t.beat(key("b2"), beat("b2", "1.1.0", T0 + 3_500, T0 + 17_000, stats(2, 0, 0, {}, buckets(0, 2))), T0 + 17_000);
    assert.deepEqual(t.sweep(T0 + 19_000).map((l) => l.beat.instance), ["c"]);
    assert.deepEqual(t.view(T0 + 19_000).map((v) => [v.version, v.liveInstances, v.handled]), [["1.1.0", 1, 0], ["1.2.0", 0, 4]]);
    t.sweep(T0 + 23_000);
    assert.deepEqual(t.view(T0 + 23_000).map((v) => v.version), ["1.1.0"]);
    // The window is read on every use (the policy reloads): a shorter one takes effect at once.
    windowMs = 5_000;
    assert.equal(t.view(T0 + 23_000)[0]!.windowMs, 5_000);
  });

  test("health - a beat is read defensively: another capability's body under a key, a mismatched instance, garbage, oversize, bad counters are refused; unknown reasons dropped", () => {
    const good = {
      principal: "planner", capability: PLAN, version: "1.0.0", instance: "planner-1-abc", host: "h", pid: 7, subscribes: [],
      startedAt: "2030-01-01T00:00:00Z", at: "2030-01-01T00:00:02Z",
      stats: { processed: 1, failed: 0, quarantined: 2, replays: 0, inFlight: 0, handlerMeanMs: 1, handlerMaxMs: 1, quarantinedByReason: { low_confidence: 1, made_up: 1 }, handlerBuckets: HANDLER_DURATION_BOUNDARIES_MS.map(() => 0).concat(1) },
    };
    const entry = (key: string, body: unknown) => {
      const text = typeof body === "string" ? body : JSON.stringify(body);
      return { key, operation: "PUT" as const, length: Buffer.byteLength(text), json: <T>() => JSON.parse(text) as T };
    };
    const ok = checkBeat(entry("plan_v1.planner-1-abc", good));
    assert.ok(ok.beat, ok.problem);
    assert.deepEqual(ok.beat.stats.quarantinedByReason, { low_confidence: 1 });
    // Older builds send neither field.
    const { quarantinedByReason: _r, handlerBuckets: _b, ...oldStats } = good.stats;
    assert.deepEqual(checkBeat(entry("plan_v1.planner-1-abc", { ...good, stats: oldStats })).beat?.stats.handlerBuckets, []);
    const refused = (key: string, body: unknown, problem: RegExp) => {
      const r = checkBeat(entry(key, body));
      assert.equal(r.beat, undefined, key);
      assert.match(r.problem ?? "", problem);
    };
    refused("plan_v1.planner-1-abc", { ...good, capability: "research.v1" }, /is not research\.v1's instance/);
    refused("plan_v1.someone-else", good, /is not plan\.v1's instance planner-1-abc/);
    refused("plan_v1.planner-1-abc", "{not json", /not JSON/);
    refused("plan_v1.planner-1-abc", [1, 2], /not a JSON object/);
    refused("plan_v1.planner-1-abc", { ...good, host: "x".repeat(MAX_BEAT_BYTES) }, /more than/);
    refused("plan_v1.planner-1-abc", { ...good, stats: { ...good.stats, processed: -1 } }, /stats\.processed/);
    refused("plan_v1.planner-1-abc", { ...good, stats: { ...good.stats, failed: 1e300 } }, /stats\.failed/);
    refused("plan_v1.planner-1-abc", { ...good, stats: { ...good.stats, handlerBuckets: [1, 2, 3] } }, /handlerBuckets/);
    refused("plan_v1.planner-1-abc", { ...good, stats: { ...good.stats, quarantinedByReason: { low_confidence: "many" } } }, /quarantinedByReason/);
    refused("plan_v1.planner-1-abc", { ...good, version: "1.0.0 <script>" }, /version/);
    refused("plan_v1.planner-1-abc", { ...good, subscribes: new Array(100).fill("mesh.evt.x.v1") }, /subscribes/);
    assert.deepEqual(checkBeat({ ...entry("plan_v1.planner-1-abc", good), operation: "DEL" }), {});
  });
});

// ---------------------------------------------------------------------------------------------------------
// On a real server, with the coordinator's health module and the rollout module that reads it (as the
// coordinator process runs them: `causeway agents` asks both)

/** The shipped policy with another health window. */
const policyWith = (windowMs: number) => ({ ...JSON.parse(readFileSync(join(repoRoot, "infra", "policy.json"), "utf8")) as object, health: { windowMs } });

interface HealthMesh {
  readonly mesh: OperatedMesh;
  readonly view: HealthModule["health"];
  /** Publishes signed report.requested inputs to plan.v1 as the gateway, one per topic. */
  request(topics: readonly string[]): Promise<void>;
  /** Starts `def` as the planner principal, in-process. */
  planner(def: AgentDefinition<ReportRequested>): Promise<Agent>;
  /** Every input on cap-plan-v1 settled: nothing pending, nothing in flight. */
  settled(): Promise<void>;
}

async function healthMesh(mesh: OperatedMesh, view: HealthModule["health"]): Promise<HealthMesh> {
  const gateway = await mesh.as("gateway");
  const gatewayKey = signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir));
  const js = jetstream(gateway);
  const jsm = await jetstreamManager(mesh.operator);
  const plannerKey = signingKeyFromNkeySeed(readSeed("planner", mesh.dataDir));
  return {
    mesh, view,
    async request(topics) {
      for (const topic of topics) {
        const event = signEvent(createEvent({
          id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
          datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent() },
          data: JSON.stringify({ topic, requester: "ops@example.com", questions: ["Which version is healthy?"] }),
        }), gatewayKey);
        const { headers, data } = NatsBinding.binary(event);
        await js.publish("mesh.cap.plan.v1", data, { headers, msgID: event.id });
      }
    },
    async planner(def) {
      const nc = await mesh.as("planner");
      const trust = await openTrustStore(nc);
      return startAgent(nc, def, { trust, signingKey: plannerKey, log: quiet(`planner@${def.version}`) });
    },
    async settled() {
      await waitFor(async () => {
        const info = await jsm.consumers.info("MESH_CAP", "cap-plan-v1");
        return info.num_pending === 0 && info.num_ack_pending === 0;
      }, { what: "every plan.v1 input settled", timeoutMs: 30_000 });
    },
  };
}

/** A worse build of the planner: slower, quarantines some inputs, fails others once. */
function worsePlanner(base: AgentDefinition<ReportRequested>): AgentDefinition<ReportRequested> {
  return {
    ...base, version: "1.1.0",
    policy: (input) => (input.data.topic.startsWith("quarantine") ? { reason: QuarantineReason.LowConfidence, detail: "the worse build doubts it" } : undefined),
    async handler(input, ctx) {
      // Slower: every run, failed or not, lands in the (250, 500] ms bucket (a run that throws is a run too).
      await delay(300);
      if (input.data.topic.startsWith("fail") && ctx.deliveryCount === 1) throw new RetryableError("the worse build fails on the first try", { delayMs: 10 });
      return base.handler(input, ctx);
    },
  };
}

/** The health figures that must equal an agent's own counters. */
const counts = (v: VersionHealth | undefined) => v && { handled: v.handled, failed: v.failed, quarantined: v.quarantined, byReason: v.quarantinedByReason };
const statsCounts = (...s: AgentStats[]) => ({
  handled: s.reduce((n, x) => n + x.processed, 0), failed: s.reduce((n, x) => n + x.failed, 0), quarantined: s.reduce((n, x) => n + x.quarantined, 0),
  byReason: s.reduce<Record<string, number>>((acc, x) => {
    for (const [r, n] of Object.entries(x.quarantinedByReason)) acc[r] = (acc[r] ?? 0) + n!;
    return acc;
  }, {}),
});

async function agentsJson(mesh: OperatedMesh): Promise<{ capabilities: CapabilityInstances[]; stderr: string }> {
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [join(repoRoot, "services/cli/main.ts"), "agents", "--json", "--server", mesh.server.url], {
    env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir },
  });
  return { capabilities: JSON.parse(stdout) as CapabilityInstances[], stderr };
}

describe("health per version", () => {
  test("health - two versions side by side: the worse one's failures, quarantines and latency show against its version only, in-process, on the endpoint, in causeway agents and as gauges; a restart adds up; without a coordinator causeway agents still lists the instances", async (t) => {
    // Gauges are registered on the global meter when the module starts: an in-memory SDK first.
    const sdk = inMemoryMetrics(t);

    await using mesh = await startOperatedMesh();
    let module: HealthModule | undefined;
    const coordinator = await startCoordinator(mesh, [async (deps) => (module = await startHealth(deps)), (deps) => startRollout({ ...deps, health: module!.health })], policyWith(60_000));
    const h = await healthMesh(mesh, module!.health);
    const base = createPlannerDefinition();
    const stable = await h.planner(base);
    const worse = await h.planner(worsePlanner(base));

    // Batches until both versions did some of everything (which replica takes an input is the server's choice).
    let batch = 0;
    const topics = (n: number) => Array.from({ length: n }, (_, i) => `${["quarantine", "fail", "plain"][i % 3]} ${batch}.${i}`);
    while (!(stable.stats().processed > 0 && worse.stats().processed > 0 && worse.stats().failed > 0 && worse.stats().quarantined > 0)) {
      assert.ok(batch < 10, `after ${batch} batches: stable ${JSON.stringify(stable.stats())}, worse ${JSON.stringify(worse.stats())}`);
      await h.request(topics(12));
      batch++;
      await h.settled();
    }
    // The heartbeats (every 2 s) bring the final counters; the health figures then equal each agent's own.
    const of = (version: string) => h.view.of(PLAN).find((v) => v.version === version);
    await waitFor(() => {
      const [s, w] = [counts(of(base.version)), counts(of("1.1.0"))];
      return JSON.stringify(s) === JSON.stringify(statsCounts(stable.stats())) && JSON.stringify(w) === JSON.stringify(statsCounts(worse.stats()));
    }, { what: "the health figures to reach each agent's counters", timeoutMs: 15_000 });
    const [s, w] = [of(base.version)!, of("1.1.0")!];
    assert.deepEqual(h.view.of(PLAN).map((v) => v.version), [base.version, "1.1.0"]);
    assert.deepEqual(h.view.all().filter((v) => v.capability === PLAN).map(counts), [counts(s), counts(w)]);
    assert.deepEqual([s.liveInstances, s.failed, s.quarantined, s.failureRate, s.quarantineRate, s.windowMs], [1, 0, 0, 0, 0, 60_000]);
    assert.deepEqual([w.liveInstances, w.quarantinedByReason], [1, { low_confidence: w.quarantined }]);
    assert.equal(w.failureRate, w.failed / (w.handled + w.failed));
    assert.equal(w.quarantineRate, w.quarantined / (w.handled + w.quarantined));
    assert.ok(w.failureRate > 0 && w.quarantineRate > 0);
    assert.ok(w.p50Ms !== null && w.p50Ms > 250 && w.p95Ms! <= 1_000, `worse p50 ${w.p50Ms} p95 ${w.p95Ms}`);
    assert.ok(s.p95Ms !== null && s.p95Ms < w.p50Ms, `stable p95 ${s.p95Ms} against worse p50 ${w.p50Ms}`);
    assert.ok(Date.now() - Date.parse(s.lastHeartbeat!) < 10_000);

    // The endpoint: the same figures, for one capability or all; a malformed request is refused.
    const reply = await controlRequest(mesh.operator, healthEndpoint, { capability: PLAN });
    assert.equal(reply.windowMs, 60_000);
    assert.deepEqual(reply.versions.map(counts), [counts(s), counts(w)]);
    assert.deepEqual((await controlRequest(mesh.operator, healthEndpoint, {})).versions.map((v) => `${v.capability}@${v.version}`), [`${PLAN}@${base.version}`, `${PLAN}@1.1.0`]);
    assert.deepEqual((await controlRequest(mesh.operator, healthEndpoint, { capability: "research.v1" })).versions, []);
    for (const bad of [{ capability: "plan" }, { capability: 7 }, { capabilty: PLAN }]) {
      const err = await controlRequest(mesh.operator, healthEndpoint, bad as never).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof CausewayError && err.code === ErrorCode.Usage, `${JSON.stringify(bad)}: ${String(err)}`);
    }

    // causeway agents --json: the instances and, per capability, its versions' figures.
    const listed = (await agentsJson(mesh)).capabilities.find((c) => c.capability === PLAN)!;
    assert.deepEqual(listed.instances.map((i) => i.version).sort(), [base.version, "1.1.0"]);
    assert.deepEqual(listed.health!.map(counts), [counts(s), counts(w)]);
    assert.deepEqual(listed.health!.map((v) => v.p95Ms === null), [false, false]);

    // The gauges carry the version as an attribute.
    const collected = await sdk.collect();
    const gauge = (name: string) => (collected.find((m) => m.descriptor.name === name) as GaugeMetricData | undefined)?.dataPoints ?? [];
    const failureRates = Object.fromEntries(gauge(HealthMetric.FailureRate).map((p) => [p.attributes[AgentMetricAttribute.Version], [p.attributes[AgentMetricAttribute.Capability], p.attributes[AgentMetricAttribute.Major], p.value]]));
    assert.deepEqual(failureRates[base.version], ["plan", 1, 0]);
    assert.deepEqual(failureRates["1.1.0"]!.slice(0, 2), ["plan", 1]);
    assert.ok((failureRates["1.1.0"]![2] as number) > 0);
    assert.deepEqual(gauge(HealthMetric.LiveInstances).map((p) => p.value), [1, 1]);
    assert.ok((gauge(HealthMetric.LatencyP95).find((p) => p.attributes[AgentMetricAttribute.Version] === "1.1.0")?.value ?? 0) > 250);

    // The stable version restarts: a new instance id counts from zero, the old one's final beat still counts.
    await stable.stop();
    const before = stable.stats();
    await waitFor(() => of(base.version)?.liveInstances === 0, { what: "the stopped instance to be no longer live" });
    assert.deepEqual(counts(of(base.version)), statsCounts(before));
    const restarted = await h.planner(base);
    await worse.stop(); // the restarted instance takes the rest
    await h.request(Array.from({ length: 6 }, (_, i) => `plain after restart ${i}`));
    await h.settled();
    await waitFor(() => JSON.stringify(counts(of(base.version))) === JSON.stringify(statsCounts(before, restarted.stats())) && of(base.version)!.liveInstances === 1,
      { what: "the version's figures to add the restarted instance's to the stopped one's", timeoutMs: 15_000 });
    assert.equal(restarted.stats().processed, 6);
    assert.equal(of(base.version)!.handled, before.processed + 6);
    assert.deepEqual([of("1.1.0")!.liveInstances, counts(of("1.1.0"))], [0, statsCounts(worse.stats())]);

    // No coordinator: the instances are still listed, the health figures are null, and stderr says why.
    await coordinator[Symbol.asyncDispose]();
    const alone = await agentsJson(mesh);
    assert.match(alone.stderr, /no coordinator answered: .*CW_ERR_UNAVAILABLE.*listed without health figures/);
    const plan = alone.capabilities.find((c) => c.capability === PLAN)!;
    assert.deepEqual([plan.instances.map((i) => i.instance), plan.health], [[restarted.instance], null]);
    await restarted.stop();
  });

  test("health - the window slides: activity leaves it while the instance stays live; a stopped instance counts until its activity leaves too", async () => {
    await using mesh = await startOperatedMesh();
    let module: HealthModule | undefined;
    await using _coordinator = await startCoordinator(mesh, [async (deps) => (module = await startHealth(deps)), (deps) => startRollout({ ...deps, health: module!.health })], policyWith(5_000));
    const h = await healthMesh(mesh, module!.health);
    const planner = await h.planner(createPlannerDefinition());
    const of = () => h.view.of(PLAN)[0];

    await h.request(["one", "two", "three"]);
    await h.settled();
    await waitFor(() => of()?.handled === 3, { what: "three handled in the window" });
    assert.equal(of()!.windowMs, 5_000);
    // Nothing new: after the window (5 s) the counts are gone, the instance still live, its latency unknown.
    await waitFor(() => of()?.handled === 0, { what: "the activity to leave the window", timeoutMs: 15_000 });
    assert.deepEqual([of()!.liveInstances, of()!.p50Ms, of()!.p95Ms, of()!.failureRate], [1, null, null, 0]);
    assert.equal(planner.stats().processed, 3);

    await h.request(["four", "five"]);
    await h.settled();
    await waitFor(() => of()?.handled === 2, { what: "two more handled in the window" });
    await planner.stop();
    await waitFor(() => of()?.liveInstances === 0, { what: "the stopped instance to be no longer live" });
    assert.equal(of()!.handled, 2);
    await waitFor(() => h.view.of(PLAN).length === 0, { what: "the stopped instance to leave the window", timeoutMs: 15_000 });
  });

  test("health - beats are bounded and checked: a forged capability, a mismatched instance, garbage and oversize beats are ignored, by the coordinator and by causeway agents", async () => {
    await using mesh = await startOperatedMesh();
    let module: HealthModule | undefined;
    await using _coordinator = await startCoordinator(mesh, [async (deps) => (module = await startHealth(deps)), (deps) => startRollout({ ...deps, health: module!.health })], policyWith(60_000));
    const view = module!.health;
    const planner = await mesh.as("planner");
    const kv = await new Kvm(planner).open(KvBucket.Instances);
    const now = new Date().toISOString();
    const body = (instance: string, over: Record<string, unknown> = {}) => JSON.stringify({
      principal: "planner", capability: PLAN, version: "9.9.9", instance, host: "attacker", pid: 1, subscribes: [], startedAt: now, at: now,
      stats: { processed: 7, failed: 0, quarantined: 1, replays: 0, inFlight: 0, handlerMeanMs: 1, handlerMaxMs: 1, quarantinedByReason: { low_confidence: 1, made_up: 99 }, handlerBuckets: HANDLER_DURATION_BOUNDARIES_MS.map(() => 0).concat(0) },
      ...over,
    });
    // The server keeps the planner to its own capability's keys.
    await assert.rejects(kv.put("research_v1.forged", body("forged", { capability: "research.v1" })));
    // Under its own prefix it can write anything; none of these is a beat.
    await kv.put("plan_v1.forged", body("forged", { capability: "research.v1" }));
    await kv.put("plan_v1.mismatch", body("someone-else"));
    await kv.put("plan_v1.garbage", "{{{ not json");
    await kv.put("plan_v1.huge", body("huge", { host: "x".repeat(MAX_BEAT_BYTES) }));
    await kv.put("plan_v1.negative", body("negative", { stats: { processed: -100 } }));
    // One well-formed beat, last: an agent may lie about its own counters, but only for its own capability, and
    // only in the mesh's quarantine reasons.
    await kv.put("plan_v1.liar", body("liar"));
    const seen = await waitFor(() => view.all().length > 0 && view.all(), { what: "the coordinator to take the one valid beat" });
    assert.deepEqual(seen.map((v) => [v.capability, v.version, v.liveInstances, v.handled, v.quarantinedByReason]), [[PLAN, "9.9.9", 1, 7, { low_confidence: 1 }]]);
    assert.deepEqual((await listInstances(kv)).map((b) => b.instance), ["liar"]);
    const listed = await agentsJson(mesh);
    assert.deepEqual(listed.capabilities.flatMap((c) => c.instances.map((i) => `${c.capability}/${i.instance}`)), [`${PLAN}/liar`]);
    assert.equal(listed.stderr, "");
  });
});
