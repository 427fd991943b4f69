// Loop guards (issue 16, item 5): two agents delegating one flow back and forth would otherwise run until the
// flow's deadline, or for ever. Two bounds, read from infra/loop-guards.json (the one place they are set), are
// checked by the agent runtime after verification and before the handler:
//  - causal depth: the signed `flowdepth` every output carries (its input's + 1, context.ts), bounded by
//    `maxDepth`: it stops any chain, however many capabilities it cycles through;
//  - events per capability per flow: `maxEventsPerCapability` distinct inputs of one flow per capability (name
//    and major), counted cluster-wide in KV causeway_flow_counts. It stops a cycle short of the depth bound, and
//    a fan-in that keeps feeding one capability.
// The count is exact under replicas and redelivery: one key per (capability, flow) holds the ids of the inputs
// it admitted, updated by compare-and-set on the key's revision (kv-cas.ts, shared with the tenants' quotas), so
// two replicas never both take the last place, and an input already admitted (a redelivery, a retry after a failed
// handler) is admitted again without counting. Its cost on the hot path is one KV round trip per input — a create
// for a flow's first input, an update at the revision this process last wrote for the next ones — plus a read
// when another replica wrote in between; none at all when the bound is 0 (off).
import { hash } from "node:crypto";
import { join } from "node:path";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KvBucket, openMeshBucket } from "./buckets.ts";
import { ErrorCode } from "./errors.ts";
import { checkInfraDoc, infraDir, readInfraFile } from "./infra-file.ts";
import { casCells } from "./kv-cas.ts";
import { capabilityKeyPrefix } from "./kv-keys.ts";

/** The bounds; 0 turns one off. */
export interface LoopGuards {
  /** The deepest `flowdepth` a handler runs on. */
  readonly maxDepth: number;
  /** How many distinct inputs of one flow each capability handles. */
  readonly maxEventsPerCapability: number;
  /** Where they were read from, named in quarantine details. */
  readonly source: string;
}

/** The file the mesh's loop guards live in. */
export const DEFAULT_LOOP_GUARDS_PATH = join(infraDir, "loop-guards.json");
const SCHEMA_FILE = "loop-guards.schema.json";

/** Validates a loop-guards document against infra/loop-guards.schema.json; CW_ERR_CONFIG naming the JSON path. */
export function parseLoopGuards(doc: unknown, source = "loop-guards.json"): LoopGuards {
  const { maxDepth, maxEventsPerCapability } = checkInfraDoc<{ maxDepth: number; maxEventsPerCapability: number }>(doc, SCHEMA_FILE, ErrorCode.Config, source);
  return Object.freeze({ maxDepth, maxEventsPerCapability, source });
}

/** Reads and validates the loop-guards file. */
export function loadLoopGuards(path = DEFAULT_LOOP_GUARDS_PATH): LoopGuards {
  const { maxDepth, maxEventsPerCapability } = readInfraFile<{ maxDepth: number; maxEventsPerCapability: number }>(path, SCHEMA_FILE, ErrorCode.Config);
  return Object.freeze({ maxDepth, maxEventsPerCapability, source: path });
}

/** What {@link FlowCounter.admit} decided. */
export type Admission = { readonly admitted: true; readonly count: number } | { readonly admitted: false; readonly count: number };

/** The per-flow count of one capability's inputs. */
export interface FlowCounter {
  /**
   * Admits `input` of `flow` when it was admitted before (its count unchanged) or when fewer than the bound were;
   * otherwise refuses it with the count. Throws when the bucket cannot be read or written (the input is retried).
   */
  admit(flow: string, input: { readonly source: string; readonly id: string }): Promise<Admission>;
}

/**
 * Opens the counter of `capability` v`major` bounded at `max` in the existing bucket (never creates it). One key per
 * flow: `<capability>_v<major>.<sha256 of the flow id>` (the agent's own key space, see ops/permissions.ts),
 * whose value is `{"ids": [...]}`, a 96-bit tag of each admitted input's (source, id), changed by compare-and-set
 * (kv-cas.ts).
 */
export async function openFlowCounter(nc: NatsConnection, capability: string, major: number, max: number, opts: { bucket?: string } = {}): Promise<FlowCounter> {
  const kv: KV = await openMeshBucket(nc, opts.bucket ?? KvBucket.FlowCounts, "the loop guards' counts per flow");
  const prefix = capabilityKeyPrefix(capability, major);
  const cells = casCells<{ readonly ids: readonly string[] }>(kv, {
    decode: (entry) => ({ ids: (entry.json() as { ids: string[] }).ids }),
    encode: (value) => JSON.stringify(value),
    describe: (key) => `the count of one flow's inputs of ${prefix} (key ${key})`,
  });
  return {
    admit(flow, input) {
      const key = `${prefix}.${hash("sha256", flow, "hex")}`;
      const tag = hash("sha256", `${input.source}\0${input.id}`, "base64url").slice(0, 16);
      return cells.update(key, (current): { next?: { ids: string[] }; result: Admission } => {
        const ids = current?.ids ?? [];
        if (ids.includes(tag)) return { result: { admitted: true, count: ids.length } };
        if (ids.length >= max) return { result: { admitted: false, count: ids.length } };
        return { next: { ids: [...ids, tag] }, result: { admitted: true, count: ids.length + 1 } };
      });
    },
  };
}
