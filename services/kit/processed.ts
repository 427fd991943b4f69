// Replay protection beyond JetStream's duplicate window, for every agent.
//
// Within the window (2 minutes on the mesh streams) a redelivered or republished input yields outputs with
// the same derived ids, and JetStream keeps one. A replay *after* the window would run the handler again and
// store its outputs a second time. So the runtime records each handled input in a KV bucket, and an input
// that could be such a replay — stored later than its signed time plus the stream's duplicate window, see
// agent.ts `lateBy` — is looked up first: a replay finds the mark and is acked without running the handler.
// Timely inputs (nearly all) are never looked up, so the hot path has no KV read, and their mark is a core
// publish after their outputs are stored, not awaited (`note`). Agents that declare `sideEffects` look up
// every input and await its mark.
//
// The trade-off: the mark is written with the outputs and before the ack, so a crash between the handler's
// effect and the mark can still repeat the effect once on redelivery; exactly-once effects
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
  /**
   * Records `event` as processed without waiting for the stream's acknowledgement (a core publish on the KV
   * subject): the hot path's mark, best effort — a mark lost to a server fault lets one late replay run again.
   */
  note(event: { source: string; id: string }): void;
}

/**
 * Opens the processed-set of `capability` v`major` in the existing bucket (never creates it). ConfigError
 * CW_ERR_CONFIG naming the bucket and `causeway streams apply` when it is missing.
 */
export async function openProcessedSet(nc: NatsConnection, capability: string, major: number, opts: { bucket?: string } = {}): Promise<ProcessedSet> {
  const bucket = opts.bucket ?? KvBucket.Processed;
  const kv = await openMeshBucket(nc, bucket, "processed inputs of agents");
  // One key per input: capability, then a digest of (source, id), which may hold any characters.
  const prefix = capabilityKeyPrefix(capability, major);
  const keyOf = (e: { source: string; id: string }) => `${prefix}.${hash("sha256", `${e.source}\0${e.id}`, "hex")}`;
  const has = async (e: { source: string; id: string }) => {
    const entry = await kv.get(keyOf(e));
    return entry !== null && entry.operation === "PUT";
  };
  return {
    has,
    async mark(e) {
      const key = keyOf(e);
      try {
        await kv.create(key, "1");
      } catch (err) {
        // Already marked: the set is what we wanted.
        if (!(await has(e))) throw err;
      }
    },
    note(e) {
      nc.publish(`$KV.${bucket}.${keyOf(e)}`, "1");
    },
  };
}
