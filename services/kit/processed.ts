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
// need the coordinator's leases (critical capabilities). Marks expire with the bucket's max_age (7 days), so
// memory stays bounded and a replay older than that runs again.
import { hash } from "node:crypto";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";

/** The processed-set bucket. */
export const PROCESSED_BUCKET = "causeway_processed";
/** How long a processed mark is kept. */
export const PROCESSED_TTL_MS = 7 * 24 * 3600 * 1000;

/** A cluster-wide set of processed inputs for one capability. */
export interface ProcessedSet {
  /** True when `event` (by source and id) was processed before. */
  has(event: { source: string; id: string }): Promise<boolean>;
  /** Records `event` as processed; idempotent. */
  mark(event: { source: string; id: string }): Promise<void>;
}

/** Opens (creating if needed) the processed-set of `capability` v`major`. */
export async function openProcessedSet(nc: NatsConnection, capability: string, major: number, opts: { bucket?: string } = {}): Promise<ProcessedSet> {
  const kvm = new Kvm(nc);
  const bucket = opts.bucket ?? PROCESSED_BUCKET;
  let kv: KV;
  try {
    kv = await kvm.open(bucket);
    await kv.status();
  } catch {
    kv = await kvm.create(bucket, { history: 1, ttl: PROCESSED_TTL_MS });
  }
  // One key per input: capability, then a digest of (source, id), which may hold any characters.
  const keyOf = (e: { source: string; id: string }) => `${capability}_v${major}.${hash("sha256", `${e.source}\0${e.id}`, "hex")}`;
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
