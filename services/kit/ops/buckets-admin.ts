// Creating the mesh's KV buckets from the one bucket table (`causeway streams apply`, the demo, test fixtures).
// Services never create buckets: they open them (openMeshBucket in ../buckets.ts) and say which command creates
// a missing one.
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { MESH_BUCKETS, STREAMS_APPLY, type BucketSpec } from "../buckets.ts";
import { isStreamNotFound } from "../jetstream-errors.ts";

/** Options for {@link ensureMeshBuckets}. */
export interface EnsureBucketsOptions {
  /**
   * Replicas of the buckets (3 in production). Default 1. An existing bucket with fewer is raised to it (a mesh moved
   * from one node to a cluster); one with more is left alone — lowering replicas is never done for you.
   */
  replicas?: number;
  /** The bucket table (a layout's `buckets`). Default: {@link MESH_BUCKETS}. */
  buckets?: Readonly<Record<string, BucketSpec>>;
}

/**
 * Creates every missing bucket of the table that `causeway streams apply` creates (all but the trust store,
 * which `causeway trust seed` creates and fills) and raises the replicas of existing ones below `opts.replicas`;
 * returns the names of those it created and of those it raised. Their other settings are left as they are.
 */
export async function ensureMeshBuckets(nc: NatsConnection, opts: EnsureBucketsOptions = {}): Promise<{ created: string[]; raised: string[] }> {
  const kvm = new Kvm(nc);
  const jsm = await jetstreamManager(nc);
  const replicas = opts.replicas ?? 1;
  const created: string[] = [], raised: string[] = [];
  for (const b of Object.values(opts.buckets ?? MESH_BUCKETS).filter((b) => b.createdBy === STREAMS_APPLY)) {
    const kv = await kvm.open(b.name);
    // Only a bucket that does not exist is created: any other failure (permissions, a timeout) is the answer.
    const status = await kv.status().catch((err: unknown) => {
      if (isStreamNotFound(err)) return undefined;
      throw err;
    });
    if (status === undefined) {
      await createMeshBucket(kvm, b, replicas);
      created.push(b.name);
      continue;
    }
    const config = status.streamInfo.config;
    if ((config.num_replicas ?? 1) < replicas) {
      await jsm.streams.update(config.name, { ...config, num_replicas: replicas });
      raised.push(b.name);
    }
  }
  return { created, raised };
}

/** Creates (or, when it exists with the same settings, opens) one bucket of the table. */
export async function createMeshBucket(kvm: Kvm, b: BucketSpec, replicas = 1): Promise<KV> {
  return kvm.create(b.name, {
    history: b.history, ttl: b.ttlMs, description: b.description, replicas,
    ...(b.markerTtlMs > 0 && { markerTTL: b.markerTtlMs }),
  });
}
