// Loop guards (issue 16, item 5): two agents delegating one flow back and forth would otherwise run until the
// flow's deadline, or for ever. Two bounds, read from infra/loop-guards.json (the one place they are set), are
// checked by the agent runtime after verification and before the handler:
//  - causal depth: the signed `flowdepth` every output carries (its input's + 1, context.ts), bounded by
//    `maxDepth`: it stops any chain, however many capabilities it cycles through;
//  - events per capability per flow: `maxEventsPerCapability` distinct inputs of one flow per capability (name
//    and major), counted cluster-wide in the flow ledger (KV causeway_flow_ledger). It stops a cycle short of the depth bound, and
//    a fan-in that keeps feeding one capability.
// The count is the flow ledger's (flow-ledger.ts): exact under replicas and redelivery, one record per
// (capability, flow) updated by compare-and-set, so two replicas never both take the last place, and an input
// already admitted (a redelivery, a retry after a failed handler) is admitted again without counting. Its cost on
// the hot path is one KV round trip per input — a create for a flow's first input, an update at the revision this
// process last wrote for the next ones — plus a read when another replica wrote in between; none at all when the
// bound is 0 (off) and the flow has no budget.
import { join } from "node:path";
import { ErrorCode } from "./errors.ts";
import { checkInfraDoc, infraDir, readInfraFile } from "./infra-file.ts";

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
