// Replay protection beyond JetStream's duplicate window, for handlers with effects outside the mesh.
//
// Within the window (2 minutes on the mesh streams) a redelivered or republished input yields outputs with
// the same derived ids, and JetStream keeps one. A replay *after* the window would run the handler again,
// which is harmless for pure handlers (lineage absorbs outputs with the same id) but not for one that sends
// mail or moves money. Such agents declare `sideEffects`, and the runtime records each processed input in a
// KV bucket with create-only writes: a replay finds the mark and is acked without running the handler.
//
// The trade-off: the mark is written after the outputs are published and before the ack, so a crash between
// the handler's effect and the mark can still repeat the effect once on redelivery; exactly-once effects
// need the coordinator's leases (critical capabilities). Marks expire with the bucket's max_age (7 days, in the
// bucket table of buckets.ts), so memory stays bounded and a replay older than that runs again. One bucket
// serves every capability; keys start with the capability and major version.
import { hash } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { KvBucket, openMeshBucket } from "./buckets.ts";
import { capabilityKeyPrefix } from "./kv-keys.ts";

/** A cluster-wide set of processed inputs for one capability. */
export interface ProcessedSet {
  /** True when `event` (by source and id) was processed before. */
  has(event: { source: string; id: string }): Promise<boolean>;
  /** Records `event` as processed; idempotent. */
  mark(event: { source: string; id: string }): Promise<void>;
}

/**
 * Opens the processed-set of `capability` v`major` in the existing bucket (never creates it). ConfigError
 * CW_ERR_CONFIG naming the bucket and `causeway streams apply` when it is missing.
 */
export async function openProcessedSet(nc: NatsConnection, capability: string, major: number, opts: { bucket?: string } = {}): Promise<ProcessedSet> {
  const kv = await openMeshBucket(nc, opts.bucket ?? KvBucket.Processed, "processed inputs of agents with side effects");
  // One key per input: capability, then a digest of (source, id), which may hold any characters.
  const keyOf = (e: { source: string; id: string }) => `${capabilityKeyPrefix(capability, major)}.${hash("sha256", `${e.source}\0${e.id}`, "hex")}`;
  const has = async (e: { source: string; id: string }) => {
    const entry = await kv.get(keyOf(e));
    return entry !== null && entry.operation === "PUT";
  };
  return {
    has,
    async mark(e) {
      try {
        await kv.create(keyOf(e), "1");
      } catch (err) {
        // Already marked (a concurrent replica, or a replay that raced us): the set is what we wanted.
        if (!(await has(e))) throw err;
      }
    },
  };
}
