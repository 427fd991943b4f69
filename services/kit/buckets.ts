// The mesh's KV buckets: one table of names and settings. Operator tooling creates them (`causeway streams
// apply`, `causeway up`, the demo, test fixtures: all through ensureMeshBuckets; the trust bucket through
// `causeway trust seed`, which also fills it). Services open them with openMeshBucket and never create one,
// so a typo or a missing step fails loudly instead of conjuring a bucket with the wrong settings.
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { ConfigError, ErrorCode, NotReadyError, permissionDenied } from "./errors.ts";
import { isStreamNotFound } from "./jetstream-errors.ts";

/** The KV buckets of the mesh, by name. */
export const KvBucket = {
  /** Key id → principal, role, validity; everyone reads it, only the operator writes it. */
  Trust: "causeway_trust",
  /** Leases of critical work (create-only; the revision is the fencing token). */
  Leases: "causeway_leases",
  /** Pending human approvals with their deadline. */
  Approvals: "causeway_approvals",
  /** Kill switches agents watch. */
  Switches: "causeway_switches",
  /** Processed inputs of agents with side effects (replay protection past the duplicate window). */
  Processed: "causeway_processed",
  /** The reporter's joins: verified findings per request, until the report is published. */
  Joins: "causeway_joins",
  /** Live agent instances: one key per instance, refreshed by its heartbeat, gone seconds after the last one. */
  Instances: "causeway_instances",
  /** Version routing per capability (routing.ts): which version is stable, which the candidate and its share; the coordinator writes it. */
  Routes: "causeway_routes",
  /** What each flow's inputs spent, per capability (flow-ledger.ts): the flow budgets' ledger and the loop guards' count. */
  FlowLedger: "causeway_flow_ledger",
  /** Each tenant's use of its quotas per period (tenants.ts): flows admitted and cost units granted; the gateway writes it. */
  Quotas: "causeway_quotas",
  /** The backlog of every capability (pressure.ts), measured every second by the coordinator, its only writer. */
  Pressure: "causeway_pressure",
} as const;

/** One of the KV bucket names. */
export type KvBucketValue = (typeof KvBucket)[keyof typeof KvBucket];

/** The command that creates most buckets; named in the error a service gives when one is missing. */
export const STREAMS_APPLY = "causeway streams apply";
/** The command that creates and fills the trust bucket. */
export const TRUST_SEED = "causeway trust seed";

/** How a bucket is created. Frozen. */
export interface BucketSpec {
  readonly name: KvBucketValue;
  readonly description: string;
  /** Values kept per key. */
  readonly history: number;
  /** Max age of a value in ms (the bucket's `max_age`); 0 keeps values until deleted. */
  readonly ttlMs: number;
  /**
   * Per-key TTLs (`allow_msg_ttl`, the bucket's delete markers kept this many ms); 0 means off. The server cannot
   * turn it off once on, so it stays 0 unless a bucket's keys really expire one by one (heartbeats).
   */
  readonly markerTtlMs: number;
  /** The operator command that creates it. */
  readonly createdBy: string;
}

const DAY_MS = 24 * 3600 * 1000;

const spec = (name: KvBucketValue, s: Omit<BucketSpec, "name" | "markerTtlMs" | "createdBy"> & Partial<BucketSpec>): BucketSpec =>
  Object.freeze({ name, markerTtlMs: 0, createdBy: STREAMS_APPLY, ...s });

/** Every bucket of the mesh and how it is created: the one table. */
export const MESH_BUCKETS: Readonly<Record<KvBucketValue, BucketSpec>> = Object.freeze({
  [KvBucket.Trust]: spec(KvBucket.Trust, {
    history: 5, ttlMs: 0, createdBy: TRUST_SEED,
    description: "Causeway trust store: key id -> principal, emits, addresses, validity window, revocation",
  }),
  [KvBucket.Leases]: spec(KvBucket.Leases, { history: 1, ttlMs: 0, description: "leases of critical work; the revision is the fencing token" }),
  [KvBucket.Approvals]: spec(KvBucket.Approvals, { history: 5, ttlMs: 0, description: "pending human approvals with their deadline" }),
  [KvBucket.Switches]: spec(KvBucket.Switches, { history: 10, ttlMs: 0, description: "kill switches agents watch" }),
  // Marks outlive any replay the duplicate window misses; a replay older than this runs again (processed.ts).
  [KvBucket.Processed]: spec(KvBucket.Processed, { history: 1, ttlMs: 7 * DAY_MS, description: "handled inputs: late replays and side effects run once" }),
  // Longer than any join deadline and any redelivery of a finding (reporter/joins.ts).
  [KvBucket.Joins]: spec(KvBucket.Joins, { history: 1, ttlMs: 7 * DAY_MS, description: "the reporter's joins of verified findings per request" }),
  // A value older than this is gone: an instance whose heartbeats (every HEARTBEAT_MS) stop disappears (heartbeat.ts).
  [KvBucket.Instances]: spec(KvBucket.Instances, { history: 1, ttlMs: 6_000, description: "live agent instances: capability, version, instance id, counters" }),
  // History: `causeway rollout status` shows the last changes of a capability's table.
  [KvBucket.Routes]: spec(KvBucket.Routes, { history: 20, ttlMs: 0, description: "version routing per capability: stable, candidate and its share of flows, lanes" }),
  // A ledger outlives any flow (its deadline is hours at most), so a live flow's spend and count never start over.
  [KvBucket.FlowLedger]: spec(KvBucket.FlowLedger, { history: 1, ttlMs: 7 * DAY_MS, description: "each flow's runs per capability and what they spent: the budgets' ledger and the loop guards' count" }),
  // A period's count outlives the longest period a tenant may have (a calendar month), so `causeway tenants` still
  // shows the last one; one key per tenant and period.
  [KvBucket.Quotas]: spec(KvBucket.Quotas, { history: 1, ttlMs: 40 * DAY_MS, description: "each tenant's flows and cost units admitted per quota period" }),
  // Rewritten every second; readers judge its age, so nothing needs to expire.
  [KvBucket.Pressure]: spec(KvBucket.Pressure, { history: 1, ttlMs: 0, description: "the backlog of each capability, measured every second by the coordinator" }),
});

/** The table entry of `name`; CW_ERR_CONFIG for a bucket the mesh does not have. */
export function bucketSpec(name: string): BucketSpec {
  const found = Object.hasOwn(MESH_BUCKETS, name) ? MESH_BUCKETS[name as KvBucketValue] : undefined;
  if (!found) throw new ConfigError(ErrorCode.Config, `unknown KV bucket ${name}: the mesh's buckets are ${Object.keys(MESH_BUCKETS).join(", ")}`);
  return found;
}

/**
 * Opens a bucket of the mesh that must already exist; never creates it. NotReadyError CW_ERR_CONFIG naming the
 * bucket and the command that creates it when it is missing (a starting service waits for it), CW_ERR_PERMISSION_DENIED when the connection may
 * not read it. `what` names its use in the message ("the processed set").
 */
export async function openMeshBucket(nc: NatsConnection, name: KvBucketValue | string, what = "the"): Promise<KV> {
  const createdBy = Object.hasOwn(MESH_BUCKETS, name) ? MESH_BUCKETS[name as KvBucketValue].createdBy : STREAMS_APPLY;
  const kv = await new Kvm(nc).open(name);
  await kv.status().catch((err: unknown) => {
    if (isStreamNotFound(err)) {
      throw new NotReadyError(ErrorCode.Config, `KV bucket ${name} (${what}) does not exist: services never create buckets; run \`${createdBy}\` to create it`, { cause: err });
    }
    throw permissionDenied(err, `opening KV bucket ${name}`) ?? err;
  });
  return kv;
}
