// The mesh's KV buckets, created by the operator's tooling (`causeway streams apply`, `make up`, the demo):
// services read and write them but may not create them, so a typo in a service cannot conjure a bucket.
// The trust bucket is created by `causeway trust seed`, which also fills it.
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KvBucket } from "./principals.ts";

const DAY_MS = 24 * 3600 * 1000;

/** Each bucket and the settings it is created with (history, max age of a key in ms; 0 keeps keys). */
export const MESH_BUCKETS: Readonly<Record<string, { history: number; ttl: number; description: string }>> = Object.freeze({
  [KvBucket.Leases]: { history: 1, ttl: 0, description: "leases of critical work; the revision is the fencing token" },
  [KvBucket.Approvals]: { history: 5, ttl: 0, description: "pending human approvals with their deadline" },
  [KvBucket.Switches]: { history: 10, ttl: 0, description: "kill switches agents watch" },
  [KvBucket.Processed]: { history: 1, ttl: 7 * DAY_MS, description: "processed inputs of agents with side effects" },
  [KvBucket.Joins]: { history: 1, ttl: 7 * DAY_MS, description: "the reporter's joins of verified findings per request" },
});

/** Creates every missing mesh bucket; returns the names of those it created. Existing buckets are left alone. */
export async function ensureMeshBuckets(nc: NatsConnection, opts: { replicas?: number } = {}): Promise<string[]> {
  const kvm = new Kvm(nc);
  const created: string[] = [];
  for (const [name, spec] of Object.entries(MESH_BUCKETS)) {
    const kv = await kvm.open(name);
    const exists = await kv.status().then(() => true, () => false);
    if (exists) continue;
    await kvm.create(name, { history: spec.history, ttl: spec.ttl, description: spec.description, replicas: opts.replicas ?? 1 });
    created.push(name);
  }
  return created;
}
