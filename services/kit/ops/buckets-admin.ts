// Creating the mesh's KV buckets from the one bucket table (`causeway streams apply`, the demo, test fixtures).
// Services never create buckets: they open them (openMeshBucket in ../buckets.ts) and say which command creates
// a missing one.
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { MESH_BUCKETS, STREAMS_APPLY, type BucketSpec } from "../buckets.ts";

/** Options for {@link ensureMeshBuckets}. */
export interface EnsureBucketsOptions {
  /** Replicas of the buckets it creates (3 in production). Default 1; existing buckets are left as they are. */
  replicas?: number;
  /** The bucket table (a layout's `buckets`). Default: {@link MESH_BUCKETS}. */
  buckets?: Readonly<Record<string, BucketSpec>>;
}

/**
 * Creates every missing bucket of the table that `causeway streams apply` creates (all but the trust store,
 * which `causeway trust seed` creates and fills); returns the names of those it created. Existing buckets are
 * left alone.
 */
export async function ensureMeshBuckets(nc: NatsConnection, opts: EnsureBucketsOptions = {}): Promise<string[]> {
  const kvm = new Kvm(nc);
  const created: string[] = [];
  for (const b of Object.values(opts.buckets ?? MESH_BUCKETS).filter((b) => b.createdBy === STREAMS_APPLY)) {
    const kv = await kvm.open(b.name);
    const exists = await kv.status().then(() => true, () => false);
    if (exists) continue;
    await createMeshBucket(kvm, b, opts.replicas);
    created.push(b.name);
  }
  return created;
}

/** Creates (or, when it exists with the same settings, opens) one bucket of the table. */
export async function createMeshBucket(kvm: Kvm, b: BucketSpec, replicas = 1): Promise<KV> {
  return kvm.create(b.name, {
    history: b.history, ttl: b.ttlMs, description: b.description, replicas,
    ...(b.markerTtlMs > 0 && { markerTTL: b.markerTtlMs }),
  });
}
