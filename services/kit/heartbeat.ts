// Liveness of agent instances. Every running agent announces itself in the causeway_instances bucket: one key per
// instance, `<capability>_v<major>.<instance>`, whose value says what it serves, which implementation version it
// runs and its counters, refreshed every HEARTBEAT_MS. The bucket keeps a value for its max_age (buckets.ts): an
// instance that stops heartbeating (killed, hung, partitioned) is gone within seconds, one that stops cleanly
// deletes its key at once. `causeway agents` lists what is there; the coordinator logs instances coming and going.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { KV, KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { AgentStats } from "./agent-api.ts";
import { KvBucket, openMeshBucket } from "./buckets.ts";
import { QuarantineReason, type QuarantineReasonValue } from "./errors.ts";
import { capabilityKeyPrefix } from "./kv-keys.ts";
import { HANDLER_DURATION_BOUNDARIES_MS } from "./metrics.ts";

/** How often an instance refreshes its key: a third of the bucket's max_age, so one lost beat does not hide it. */
export const HEARTBEAT_MS = 2_000;

/** What an instance announces. */
export interface InstanceBeat {
  readonly principal: string;
  /** `<capability>.v<major>`. */
  readonly capability: string;
  /** The implementation version (semver), as its outputs' signed `agentversion`. */
  readonly version: string;
  readonly instance: string;
  readonly host: string;
  readonly pid: number;
  /** The facts it subscribes to (their subjects). */
  readonly subscribes: readonly string[];
  readonly startedAt: string;
  /** When this beat was sent. */
  readonly at: string;
  readonly stats: AgentStats;
}

/** A running heartbeat. */
export interface Heartbeat {
  readonly instance: string;
  /** Sends one last beat and deletes the key: the instance is gone at once. */
  stop(): Promise<void>;
}

/** What an instance is, besides its counters. */
export interface InstanceIdentity {
  readonly principal: string;
  readonly capability: string;
  readonly major: number;
  readonly version: string;
  readonly subscribes: readonly string[];
}

/**
 * Starts announcing an instance of `who`: one beat now (awaited: a start that cannot announce fails), then every
 * HEARTBEAT_MS. A failed beat is logged once per run of failures and retried on the next tick.
 */
export async function startHeartbeat(nc: NatsConnection, who: InstanceIdentity, stats: () => AgentStats, log: Logger): Promise<Heartbeat> {
  const kv = await openMeshBucket(nc, KvBucket.Instances, "live agent instances");
  const instance = `${who.principal}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const key = `${capabilityKeyPrefix(who.capability, who.major)}.${instance}`;
  const fixed = { principal: who.principal, capability: `${who.capability}.v${who.major}`, version: who.version, instance, host: hostname(), pid: process.pid, subscribes: who.subscribes, startedAt: new Date().toISOString() };
  const beat = () => kv.put(key, JSON.stringify({ ...fixed, at: new Date().toISOString(), stats: stats() } satisfies InstanceBeat));
  await beat();
  let failing = false;
  let pending: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    if (pending) return; // the last beat is still on its way: never pile them up
    pending = beat().then(() => {
      if (failing) log.info({ instance }, "heartbeat restored");
      failing = false;
    }, (err: unknown) => {
      if (!failing) log.warn({ err, instance }, "heartbeat failed; retrying every tick (the instance disappears from causeway agents meanwhile)");
      failing = true;
    }).finally(() => { pending = undefined; });
  }, HEARTBEAT_MS);
  timer.unref();
  return {
    instance,
    async stop() {
      clearInterval(timer);
      await pending;
      // A last beat with the final counters: what the instance did since its previous beat still counts in the
      // coordinator's health figures. Then the key goes (the watch sees both, in order).
      await beat().catch(() => undefined);
      await kv.delete(key).catch((err: unknown) => log.warn({ err, instance }, "could not remove the instance's heartbeat; it expires on its own"));
    },
  };
}

/** Every live instance's last beat. */
export async function listInstances(kv: KV): Promise<InstanceBeat[]> {
  const out: InstanceBeat[] = [];
  for await (const key of await kv.keys()) {
    const entry = await kv.get(key);
    const beat = entry && parseBeat(entry);
    if (beat) out.push(beat);
  }
  return out.sort((a, b) => a.capability.localeCompare(b.capability) || a.instance.localeCompare(b.instance));
}

/**
 * The largest beat read: a real one is well under 2 KiB (its subscriptions are the only list), and a reader —
 * the coordinator keeps beats of every instance for its health window — must not hold what an agent chooses.
 */
export const MAX_BEAT_BYTES = 16 * 1024;
const MAX_SUBSCRIBES = 64;
const MAX_TEXT = 256;
const CAPABILITY_REF = /^([a-z0-9_-]+)\.v(0|[1-9][0-9]*)$/;
const VERSION = /^[0-9A-Za-z][0-9A-Za-z.+-]{0,63}$/;
const KNOWN_REASONS: ReadonlySet<string> = new Set(Object.values(QuarantineReason));

/** What a causeway_instances entry is: a beat, nothing (a delete), or something that is not a beat, and why. */
export type BeatCheck = { readonly beat: InstanceBeat; readonly problem?: undefined } | { readonly beat?: undefined; readonly problem?: string };

/**
 * Reads a causeway_instances entry defensively. An agent writes its own beat, so a beat may lie or be garbage:
 * the server lets a principal write keys only under the prefixes of the capabilities it serves, and a beat whose
 * body names another capability (or another instance) than its key is refused, as is one too large, with a
 * field of the wrong type or out of bounds. The result is rebuilt from the checked fields only; quarantine
 * reasons the mesh does not know are dropped; `quarantinedByReason` and `handlerBuckets`, which older builds do
 * not send, default to none.
 */
export function checkBeat(entry: Pick<KvEntry, "key" | "operation" | "json" | "length">): BeatCheck {
  if (entry.operation !== "PUT") return {};
  if (entry.length > MAX_BEAT_BYTES) return { problem: `${entry.length} bytes, more than ${MAX_BEAT_BYTES}` };
  let v: Record<string, unknown>;
  try {
    v = entry.json<Record<string, unknown>>();
  } catch {
    return { problem: "not JSON" };
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return { problem: "not a JSON object" };
  const problems: string[] = [];
  const text = (name: string, pattern?: RegExp): string => {
    const x = v[name];
    if (typeof x !== "string" || x === "" || x.length > MAX_TEXT || (pattern !== undefined && !pattern.test(x))) {
      problems.push(`${name} is not a valid string`);
      return "";
    }
    return x;
  };
  const time = (name: string): string => {
    const x = text(name);
    if (x !== "" && Number.isNaN(Date.parse(x))) problems.push(`${name} is not a time`);
    return x;
  };
  const capability = text("capability", CAPABILITY_REF);
  const instance = text("instance", /^[^.*>\s]+$/);
  const m = CAPABILITY_REF.exec(capability);
  if (m && instance !== "" && entry.key !== `${capabilityKeyPrefix(m[1]!, Number(m[2]))}.${instance}`) {
    problems.push(`its key ${entry.key.slice(0, MAX_TEXT)} is not ${capability}'s instance ${instance}`);
  }
  const subscribes = v.subscribes;
  if (!Array.isArray(subscribes) || subscribes.length > MAX_SUBSCRIBES || !subscribes.every((x) => typeof x === "string" && x.length <= MAX_TEXT)) problems.push("subscribes is not a list of subjects");
  const stats = statsOf(v.stats, problems);
  const pid = v.pid;
  if (!Number.isSafeInteger(pid) || (pid as number) < 0) problems.push("pid is not a process id");
  const beat: InstanceBeat = {
    principal: text("principal"), capability, version: text("version", VERSION), instance, host: text("host"), pid: pid as number,
    subscribes: subscribes as string[], startedAt: time("startedAt"), at: time("at"), stats: stats!,
  };
  return problems.length > 0 ? { problem: problems.join("; ") } : { beat };
}

/** A beat's value, or undefined for a delete or a value that is not one (see checkBeat). */
export function parseBeat(entry: Pick<KvEntry, "key" | "operation" | "json" | "length">): InstanceBeat | undefined {
  return checkBeat(entry).beat;
}

const count = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;

function statsOf(raw: unknown, problems: string[]): AgentStats | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    problems.push("stats is not an object");
    return undefined;
  }
  const s = raw as Record<string, unknown>;
  const counters = ["processed", "failed", "quarantined", "replays", "inFlight"] as const;
  for (const name of counters) if (!count(s[name])) problems.push(`stats.${name} is not a count`);
  for (const name of ["handlerMeanMs", "handlerMaxMs"] as const) {
    if (typeof s[name] !== "number" || !Number.isFinite(s[name]) || s[name] < 0) problems.push(`stats.${name} is not a duration`);
  }
  const byReason: Partial<Record<QuarantineReasonValue, number>> = {};
  const reasons = s.quarantinedByReason ?? {};
  if (typeof reasons !== "object" || reasons === null || Array.isArray(reasons)) problems.push("stats.quarantinedByReason is not an object");
  else {
    for (const [reason, n] of Object.entries(reasons)) {
      if (!count(n)) problems.push(`stats.quarantinedByReason.${reason.slice(0, 64)} is not a count`);
      else if (KNOWN_REASONS.has(reason)) byReason[reason as QuarantineReasonValue] = n;
      if (problems.length > 0) break;
    }
  }
  const buckets = s.handlerBuckets ?? [];
  const bucketCount = HANDLER_DURATION_BOUNDARIES_MS.length + 1;
  if (!Array.isArray(buckets) || (buckets.length !== 0 && buckets.length !== bucketCount) || !buckets.every(count)) {
    problems.push(`stats.handlerBuckets is not ${bucketCount} counts`);
  }
  return {
    processed: s.processed as number, failed: s.failed as number, quarantined: s.quarantined as number, replays: s.replays as number,
    inFlight: s.inFlight as number, handlerMeanMs: s.handlerMeanMs as number, handlerMaxMs: s.handlerMaxMs as number,
    quarantinedByReason: byReason, handlerBuckets: Array.isArray(buckets) ? buckets as number[] : [],
  };
}
