// Leases of critical work (KV causeway_leases). The coordinator creates one per granted event (create-only:
// one grant per event even with two coordinators); its KV revision is the fencing token. The critical agent
// claims it before the irreversible action (granted → running, compare-and-set on the revision) and consumes it
// after (running → consumed). A redelivery or a second replica finds the lease running or consumed and never
// runs the action again: at most once per grant, exactly once when the holder does not crash mid-action.
import { hash } from "node:crypto";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KvBucket, openMeshBucket } from "./buckets.ts";
import { capabilityKeyPrefix } from "./kv-keys.ts";

/** A lease's life: granted by the coordinator, running while the agent acts, consumed when done. */
export type LeaseState = "granted" | "running" | "consumed";

/** The value of a lease key. */
export interface Lease {
  readonly eventId: string;
  readonly eventSource: string;
  /** The event's CORE_DIGEST: the lease is valid for exactly these bytes. */
  readonly coreDigest: string;
  /** Capability ref, e.g. publish.v1. */
  readonly capability: string;
  readonly state: LeaseState;
  /** The grant decision's event id. */
  readonly grantId: string;
  /** RFC 3339: a granted lease unused by then is void. */
  readonly expiresAt: string;
  readonly holder?: string;
  readonly startedAt?: string;
  readonly consumedAt?: string;
}

/** The lease key of an event addressed to a capability: `<capability>_v<major>.<sha256(source, id)>`. */
export function leaseKey(capability: string, major: number, event: { source: string; id: string }): string {
  return `${capabilityKeyPrefix(capability, major)}.${hash("sha256", `${event.source}\0${event.id}`, "hex")}`;
}

/** Opens the leases bucket (created by operator tooling, never here): CW_ERR_CONFIG naming the command when it is missing. */
export async function openLeases(nc: NatsConnection): Promise<KV> {
  return openMeshBucket(nc, KvBucket.Leases, "leases of critical work");
}

/** Reads a lease and its revision; undefined when there is none. */
export async function readLease(kv: KV, key: string): Promise<{ lease: Lease; revision: number } | undefined> {
  const entry = await kv.get(key);
  if (!entry || entry.operation !== "PUT") return undefined;
  return { lease: entry.json<Lease>(), revision: entry.revision };
}

/** Encodes a lease value. */
export function encodeLease(lease: Lease): string {
  return JSON.stringify(lease);
}
