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
import { capabilityKeyPrefix } from "./kv-keys.ts";

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
  /** Stops beating and deletes the key: the instance is gone at once. */
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

/** A beat's value, or undefined for a delete or a value that is not one (reported by the caller's listing as missing). */
export function parseBeat(entry: Pick<KvEntry, "operation" | "json">): InstanceBeat | undefined {
  if (entry.operation !== "PUT") return undefined;
  try {
    const v = entry.json<InstanceBeat>();
    return typeof v.instance === "string" && typeof v.capability === "string" && typeof v.at === "string" ? v : undefined;
  } catch {
    return undefined;
  }
}
