// Agent instances and the health of each capability version, as the coordinator sees them. It follows the
// causeway_instances bucket, where every running agent heartbeats its cumulative counters (services/kit/
// heartbeat.ts), and
//  - logs each instance that starts, stops cleanly (its key deleted) or is lost (no heartbeat for longer than the
//    bucket keeps a value: killed, hung, cut off — max_age removes the key without a delete marker, so loss is
//    found by a sweep over the last beat of each instance);
//  - keeps each instance's beats over a sliding window (policy.json `health.windowMs`, default 60 s) and computes
//    per capability and implementation version what happened inside it: live instances, handled, failed,
//    quarantined by reason, the rates, handler latency p50/p95 from the histogram buckets, the last heartbeat.
// The figures come from the agents' own counters, not from logs, and are served three ways: `health()` in-process
// (rollout and circuit decisions), the `health` control endpoint (`causeway agents`), and OpenTelemetry gauges.
//
// Counters are cumulative per instance: a window's figure is, per instance, its newest beat minus its last beat
// at or before the window's start (the coordinator's receive clock; agents' clocks may be off), never negative.
// A restart is a new instance id, so its counters start again from zero on their own key and nothing is
// subtracted across instances. An instance that stopped or was lost still counts for what it did inside the
// window, but not as live.
import { ValueType, metrics, type Attributes, type BatchObservableCallback, type Meter, type ObservableGauge } from "@opentelemetry/api";
import {
  AgentMetricAttribute, HANDLER_DURATION_BOUNDARIES_MS, HEARTBEAT_MS, KvBucket, METER_NAME, STREAMS_APPLY, addControlEndpoint, checkBeat, followBucket,
  type InstanceBeat,
} from "../kit/index.ts";
import { health as healthEndpoint, type VersionHealth } from "./contract.ts";
import type { CoordinatorDeps, CoordinatorModule } from "./module.ts";

export type { VersionHealth } from "./contract.ts";

/** The health figures, computed when asked. */
export interface HealthView {
  /** Every capability+version seen in the window, sorted by capability then version. */
  all(): VersionHealth[];
  /** The versions of one capability ("research.v1"). */
  of(capability: string): VersionHealth[];
}

/** The coordinator's gauges, one point per capability version, with `causeway.capability`, `…major` and `causeway.agent.version`. */
export const HealthMetric = {
  LiveInstances: "causeway.version.live_instances",
  Handled: "causeway.version.handled",
  Failed: "causeway.version.failed",
  Quarantined: "causeway.version.quarantined",
  FailureRate: "causeway.version.failure_rate",
  QuarantineRate: "causeway.version.quarantine_rate",
  LatencyP50: "causeway.version.latency.p50",
  LatencyP95: "causeway.version.latency.p95",
} as const;

/** How often the sweep looks for lost instances and drops what left the window. */
const SWEEP_MS = 1_000;
/**
 * Instances followed at most. Each agent principal may write any number of keys under its capabilities' prefix;
 * past this, new instances are ignored (with a warning) rather than grow the coordinator without bound.
 */
export const MAX_TRACKED_INSTANCES = 10_000;
/** Samples kept per instance over a window: beats closer together than window / this are merged. */
const SAMPLES_PER_WINDOW = 120;

/** An instance's cumulative counters at one moment (coordinator clock). */
interface Sample {
  readonly at: number;
  readonly handled: number;
  readonly failed: number;
  readonly quarantined: number;
  readonly byReason: Readonly<Record<string, number>>;
  /** Empty when the agent does not report them (an older build). */
  readonly buckets: readonly number[];
}

interface Tracked {
  beat: InstanceBeat;
  /** Oldest first; the first may be the synthetic zero at the instance's start. */
  readonly samples: Sample[];
  live: boolean;
  /** When its newest beat arrived (coordinator clock). */
  seenAt: number;
}

const ZERO_BUCKETS: readonly number[] = Object.freeze(new Array<number>(HANDLER_DURATION_BOUNDARIES_MS.length + 1).fill(0));

/**
 * The `q` quantile (0…1) of the values a histogram counted: `counts[i]` values in (bounds[i-1], bounds[i]] (the first
 * bucket from 0, the last above every bound). Interpolated linearly inside the bucket that holds the rank; in the
 * open last bucket, its lower bound (nothing more is known). Null when the histogram counted nothing.
 */
export function percentileFromBuckets(bounds: readonly number[], counts: readonly number[], q: number): number | null {
  let total = 0;
  for (const c of counts) total += c;
  if (total === 0) return null;
  const rank = q * total;
  let below = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (c === 0) continue;
    if (below + c >= rank) {
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      if (i >= bounds.length) return lower;
      return lower + (bounds[i]! - lower) * ((rank - below) / c);
    }
    below += c;
  }
  return bounds.at(-1) ?? 0; // unreachable: the ranks add up to the total
}

/** Follows instances and computes health; pure of I/O (times are passed in), so it is tested directly. */
export class HealthTracker {
  readonly #instances = new Map<string, Tracked>();
  readonly #windowMs: () => number;
  readonly #lapseMs: number;

  /** `windowMs` is read on every use (the policy reloads); `lapseMs`: silence after which a live instance is lost. */
  constructor(opts: { windowMs: () => number; lapseMs: number }) {
    this.#windowMs = opts.windowMs;
    this.#lapseMs = opts.lapseMs;
  }

  /**
   * A checked beat under `key`, received at `now`. "up" for an instance not seen before (or seen again after it
   * was lost or stopped), "full" when it is new but MAX_TRACKED_INSTANCES are followed, else undefined.
   */
  beat(key: string, beat: InstanceBeat, now: number): "up" | "full" | undefined {
    const windowMs = this.#windowMs();
    const sample: Sample = {
      at: now, handled: beat.stats.processed, failed: beat.stats.failed, quarantined: beat.stats.quarantined,
      byReason: beat.stats.quarantinedByReason, buckets: beat.stats.handlerBuckets,
    };
    const known = this.#instances.get(key);
    if (known === undefined) {
      if (this.#instances.size >= MAX_TRACKED_INSTANCES) return "full";
      const samples: Sample[] = [];
      // Its counters started at zero when it started. If that was inside the window (by its own clock: how long
      // before this beat it started), the counts happened inside it: a zero sample at the start says so. An
      // instance running for longer (the coordinator just started, or the instance comes back after a lapse)
      // counts only from this beat on.
      const ranForMs = Date.parse(beat.at) - Date.parse(beat.startedAt);
      if (ranForMs >= 0 && ranForMs <= windowMs) samples.push({ at: now - ranForMs, handled: 0, failed: 0, quarantined: 0, byReason: {}, buckets: ZERO_BUCKETS });
      samples.push(sample);
      this.#instances.set(key, { beat, samples, live: true, seenAt: now });
      return "up";
    }
    const wasLive = known.live;
    known.beat = beat;
    known.live = true;
    known.seenAt = now;
    const { samples } = known;
    // Beats closer together than the window's resolution replace the newest (the first sample stays: it may be the
    // zero): an agent that writes its key in a loop costs no memory.
    if (samples.length >= 2 && now - samples.at(-1)!.at < Math.max(HEARTBEAT_MS / 2, windowMs / SAMPLES_PER_WINDOW)) samples[samples.length - 1] = sample;
    else samples.push(sample);
    this.#prune(known, now - windowMs);
    return wasLive ? undefined : "up";
  }

  /** `key` was deleted (a clean stop): the instance it was, if it was live. */
  gone(key: string): InstanceBeat | undefined {
    const known = this.#instances.get(key);
    if (known === undefined || !known.live) return undefined;
    known.live = false;
    return known.beat;
  }

  /** Marks instances silent for longer than the lapse as lost (returned with how long they were silent); forgets what left the window. */
  sweep(now: number): { beat: InstanceBeat; silentMs: number }[] {
    const lost: { beat: InstanceBeat; silentMs: number }[] = [];
    const start = now - this.#windowMs();
    for (const [key, t] of this.#instances) {
      const silentMs = now - t.seenAt;
      if (t.live && silentMs > this.#lapseMs) {
        t.live = false;
        lost.push({ beat: t.beat, silentMs });
      }
      if (!t.live && t.seenAt < start) this.#instances.delete(key);
      else this.#prune(t, start);
    }
    return lost;
  }

  /** The figures per capability version over the window ending at `now`, sorted by capability then version. */
  view(now: number, capability?: string): VersionHealth[] {
    const windowMs = this.#windowMs();
    const start = now - windowMs;
    const versions = new Map<string, Acc>();
    for (const t of this.#instances.values()) {
      if (capability !== undefined && t.beat.capability !== capability) continue;
      if (!t.live && t.seenAt < start) continue; // nothing of it inside the window (the sweep forgets it)
      const id = `${t.beat.capability}\u0000${t.beat.version}`;
      let acc = versions.get(id);
      if (acc === undefined) versions.set(id, (acc = newAcc(t.beat.capability, t.beat.version)));
      if (t.live) acc.live++;
      if (acc.lastSeen < t.seenAt) acc.lastSeen = t.seenAt;
      addDelta(acc, t.samples, start);
    }
    return [...versions.values()]
      .sort((a, b) => a.capability.localeCompare(b.capability) || a.version.localeCompare(b.version, "en", { numeric: true }))
      .map((a) => finish(a, windowMs));
  }

  /** Drops samples before the newest one at or before `start` (the baseline of the window). */
  #prune(t: Tracked, start: number): void {
    let baseline = -1;
    for (let i = 0; i < t.samples.length && t.samples[i]!.at <= start; i++) baseline = i;
    if (baseline > 0) t.samples.splice(0, baseline);
  }
}

interface Acc {
  readonly capability: string;
  readonly version: string;
  live: number;
  lastSeen: number;
  handled: number;
  failed: number;
  quarantined: number;
  readonly byReason: Record<string, number>;
  readonly buckets: number[];
}

const newAcc = (capability: string, version: string): Acc => ({
  capability, version, live: 0, lastSeen: -Infinity, handled: 0, failed: 0, quarantined: 0, byReason: {}, buckets: [...ZERO_BUCKETS],
});

/** Adds one instance's counts inside the window: its newest sample minus the newest at or before `start` (else its oldest). */
function addDelta(acc: Acc, samples: readonly Sample[], start: number): void {
  const last = samples.at(-1)!;
  let base = samples[0]!;
  for (const s of samples) {
    if (s.at > start) break;
    base = s;
  }
  if (base === last) return;
  // Never negative: counters only grow within an instance; one that says otherwise adds nothing.
  const delta = (now: number, then: number) => Math.max(0, now - then);
  acc.handled += delta(last.handled, base.handled);
  acc.failed += delta(last.failed, base.failed);
  acc.quarantined += delta(last.quarantined, base.quarantined);
  for (const [reason, n] of Object.entries(last.byReason)) {
    const d = delta(n, base.byReason[reason] ?? 0);
    if (d > 0) acc.byReason[reason] = (acc.byReason[reason] ?? 0) + d;
  }
  // Latency only from two samples that both have buckets (an older build reports none).
  if (last.buckets.length === acc.buckets.length && base.buckets.length === acc.buckets.length) {
    for (let i = 0; i < acc.buckets.length; i++) acc.buckets[i]! += delta(last.buckets[i]!, base.buckets[i]!);
  }
}

function finish(a: Acc, windowMs: number): VersionHealth {
  const rate = (part: number, whole: number) => (whole === 0 ? 0 : part / whole);
  return {
    capability: a.capability, version: a.version, windowMs, liveInstances: a.live,
    handled: a.handled, failed: a.failed, quarantined: a.quarantined,
    quarantinedByReason: Object.fromEntries(Object.entries(a.byReason).sort(([x], [y]) => x.localeCompare(y))),
    failureRate: rate(a.failed, a.handled + a.failed),
    quarantineRate: rate(a.quarantined, a.handled + a.quarantined),
    p50Ms: percentileFromBuckets(HANDLER_DURATION_BOUNDARIES_MS, a.buckets, 0.5),
    p95Ms: percentileFromBuckets(HANDLER_DURATION_BOUNDARIES_MS, a.buckets, 0.95),
    lastHeartbeat: Number.isFinite(a.lastSeen) ? new Date(a.lastSeen).toISOString() : null,
  };
}

/** The started module: the coordinator's modules list, plus the health figures for in-process callers. */
export type HealthModule = CoordinatorModule & { readonly health: HealthView };

/** Starts following the instances and serving their health. */
export async function start(deps: CoordinatorDeps): Promise<HealthModule> {
  const log = deps.log.child({ module: "health" });
  const tracker = new HealthTracker({ windowMs: () => deps.policy.policy().health.windowMs, lapseMs: deps.layout.buckets[KvBucket.Instances].ttlMs });
  const fields = (b: InstanceBeat) => ({ capability: b.capability, principal: b.principal, version: b.version, instance: b.instance, host: b.host, pid: b.pid });
  // A refused beat is written by an agent that lies or is broken: say so, but at most once a minute per key (and
  // for at most 1000 keys a minute), so a flood of bad beats cannot flood the log.
  const warned = new Set<string>();
  let warnedSince = Date.now();
  const following = await followBucket(deps.nc, {
    bucket: KvBucket.Instances, what: "live agent instances", createdBy: STREAMS_APPLY, consequence: "agent instances coming and going, and their health",
    onProblem: (err) => log.warn({ err }, "instances watch problem"),
    apply(change) {
      const checked = checkBeat(change);
      if (checked.beat !== undefined) {
        const outcome = tracker.beat(change.key, checked.beat, Date.now());
        if (outcome === "up") log.info(fields(checked.beat), "agent instance up");
        else if (outcome === "full" && warnOnce("full")) log.warn({ ...fields(checked.beat), max: MAX_TRACKED_INSTANCES }, "agent instance ignored: the coordinator already follows the most instances it will");
        return;
      }
      if (checked.problem !== undefined) {
        if (warnOnce(change.key)) log.warn({ key: change.key.slice(0, 256), problem: checked.problem }, "agent heartbeat ignored: not a valid beat for its key");
        return;
      }
      const gone = tracker.gone(change.key);
      if (gone) log.info(fields(gone), "agent instance stopped");
    },
  });
  function warnOnce(key: string): boolean {
    if (warned.has(key) || warned.size >= 1_000) return false;
    warned.add(key);
    return true;
  }
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const { beat, silentMs } of tracker.sweep(now)) log.warn({ ...fields(beat), lastHeartbeat: beat.at, silentMs }, "agent instance lost: no heartbeat");
    if (now - warnedSince > 60_000) {
      warned.clear();
      warnedSince = now;
    }
  }, SWEEP_MS);
  sweep.unref();

  const health: HealthView = Object.freeze({
    all: () => tracker.view(Date.now()),
    of: (capability: string) => tracker.view(Date.now(), capability),
  });
  const served = addControlEndpoint(deps.service, healthEndpoint, {
    subjects: deps.subjects, log,
    handle: (request) => Promise.resolve({
      windowMs: deps.policy.policy().health.windowMs,
      versions: request.capability === undefined ? health.all() : health.of(request.capability),
    }),
  });
  const gauges = observeHealth(health, metrics.getMeter(METER_NAME));
  return {
    name: "health",
    health,
    lost: following.lost,
    async stop() {
      clearInterval(sweep);
      gauges.stop();
      await served.stop();
      await following.close();
    },
  };
}

/** Registers the gauges of HealthMetric, observed together from one computation of the figures per collection. */
function observeHealth(view: HealthView, meter: Meter): { stop(): void } {
  const gauge = (name: string, description: string, unit: string, valueType = ValueType.DOUBLE) => meter.createObservableGauge(name, { description, unit, valueType });
  const g = {
    live: gauge(HealthMetric.LiveInstances, "Instances of the version heartbeating now", "{instance}", ValueType.INT),
    handled: gauge(HealthMetric.Handled, "Inputs the version handled over the health window", "{event}", ValueType.INT),
    failed: gauge(HealthMetric.Failed, "Handler runs of the version that threw over the health window", "{event}", ValueType.INT),
    quarantined: gauge(HealthMetric.Quarantined, "Inputs the version quarantined over the health window", "{event}", ValueType.INT),
    failureRate: gauge(HealthMetric.FailureRate, "failed / (handled + failed) over the health window", "1"),
    quarantineRate: gauge(HealthMetric.QuarantineRate, "quarantined / (handled + quarantined) over the health window", "1"),
    p50: gauge(HealthMetric.LatencyP50, "Median handler duration over the health window", "ms"),
    p95: gauge(HealthMetric.LatencyP95, "95th percentile handler duration over the health window", "ms"),
  } satisfies Record<string, ObservableGauge>;
  const callback: BatchObservableCallback = (observer) => {
    for (const v of view.all()) {
      const [name, major] = v.capability.split(".v") as [string, string];
      const attrs: Attributes = { [AgentMetricAttribute.Capability]: name, [AgentMetricAttribute.Major]: Number(major), [AgentMetricAttribute.Version]: v.version };
      observer.observe(g.live, v.liveInstances, attrs);
      observer.observe(g.handled, v.handled, attrs);
      observer.observe(g.failed, v.failed, attrs);
      observer.observe(g.quarantined, v.quarantined, attrs);
      observer.observe(g.failureRate, v.failureRate, attrs);
      observer.observe(g.quarantineRate, v.quarantineRate, attrs);
      // No latency point when nothing ran: a gauge of 0 would read as "fast".
      if (v.p50Ms !== null) observer.observe(g.p50, v.p50Ms, attrs);
      if (v.p95Ms !== null) observer.observe(g.p95, v.p95Ms, attrs);
    }
  };
  const observables = Object.values(g);
  meter.addBatchObservableCallback(callback, observables);
  return { stop: () => meter.removeBatchObservableCallback(callback, observables) };
}
