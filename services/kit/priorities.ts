// Priority lanes (issue 16, item 3): how an agent shares its one concurrency limit among the priority durables of
// each capability durable it consumes — the weight of each priority and how fast waiting work ages — read from
// infra/priorities.json (the one place they are set, against infra/priorities.schema.json) and followed live:
// a bad edit keeps the last good weights and is logged (kit watchInfraFile).
import { join } from "node:path";
import type { Logger } from "pino";
import { PRIORITIES, type PriorityValue } from "./context.ts";
import { ErrorCode } from "./errors.ts";
import { checkInfraDoc, infraDir, invalidFile, readInfraFile, watchInfraFile, type WatchedInfraFile } from "./infra-file.ts";

/** The weights and aging, as loaded. */
export interface PriorityWeights {
  /** The weight of each of PRIORITIES (positive integers). */
  readonly weights: Readonly<Record<PriorityValue, number>>;
  /** How long (since stored) a waiting message takes to reach the highest weight. */
  readonly agingMs: number;
  /** Where they were read from. */
  readonly source: string;
}

/** The file the mesh's priority weights live in. */
const DEFAULT_PRIORITIES_PATH = join(infraDir, "priorities.json");
const SCHEMA_FILE = "priorities.schema.json";

/**
 * Validates a priorities document against infra/priorities.schema.json, and that it weighs exactly the kit's
 * PRIORITIES (the schema does not repeat their names). CW_ERR_PRIORITIES_INVALID naming the JSON path.
 */
function parsePriorities(doc: unknown, source = "priorities.json"): PriorityWeights {
  const raw = checkInfraDoc<{ weights: Record<string, number>; agingMs: number }>(doc, SCHEMA_FILE, ErrorCode.PrioritiesInvalid, source);
  const problems = [
    ...PRIORITIES.filter((p) => !Object.hasOwn(raw.weights, p)).map((p) => `/weights: no weight for ${p}`),
    ...Object.keys(raw.weights).filter((k) => !(PRIORITIES as readonly string[]).includes(k)).map((k) => `/weights/${k}: no such priority (${PRIORITIES.join(", ")})`),
  ];
  if (problems.length > 0) throw invalidFile(source, ErrorCode.PrioritiesInvalid, problems);
  const weights = Object.freeze(Object.fromEntries(PRIORITIES.map((p) => [p, raw.weights[p]!]))) as Record<PriorityValue, number>;
  return Object.freeze({ weights, agingMs: raw.agingMs, source });
}

/** Reads and validates `path` (default infra/priorities.json). */
export function loadPriorities(path = DEFAULT_PRIORITIES_PATH): PriorityWeights {
  return parsePriorities(readInfraFile<unknown>(path, SCHEMA_FILE, ErrorCode.PrioritiesInvalid), path);
}

/** Loads `path` and follows it: a bad edit keeps the last good weights, logged and reported to `onReload(err)`. */
export function watchPriorities(opts: { path?: string; log?: Logger; onReload?: (err?: Error) => void } = {}): WatchedInfraFile<PriorityWeights> {
  return watchInfraFile(opts.path ?? DEFAULT_PRIORITIES_PATH, loadPriorities, { what: "the priority weights", ...(opts.log && { log: opts.log }), ...(opts.onReload && { onReload: opts.onReload }) });
}
