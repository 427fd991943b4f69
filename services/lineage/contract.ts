// Lineage's control contract: the auditor's questions as endpoints of the `lineage` micro service
// (`mesh.ctl.lineage.<operation>`; `GET /v1/<operation>` over HTTP), each with its parameters and its reply,
// and the offline checks of the proofs and exports those replies carry. The `causeway lineage` CLI imports
// this file and nothing else of lineage.
import { CausewayError, ErrorCode, StreamName, controlEndpoint, jsonObjectBody, type ControlEndpoint } from "../kit/index.ts";
import type { AuditReport } from "./audit.ts";
import type { ConsistencyProof, EventProof } from "./proofs.ts";
import type { EventList, ImpactResult, TraceResult, WhyResult } from "./queries.ts";
import type { StoredCheckpoint } from "./store.ts";

export type { AuditProblem, AuditReport } from "./audit.ts";
export type { ExportCheck } from "./exports.ts";
export type { ConsistencyProof, EventProof, ProofVerdict } from "./proofs.ts";
export type {
  Appearance, CriticalPath, DescendantStep, EventList, EventStep, EventSummary, FlowEdge, FlowSpend, ImpactResult, PathEdge, QuarantineInfo, StepVerification,
  TimelineEntry, Timing, TraceResult, WhyEnd, WhyResult,
} from "./queries.ts";
export type { StoredCheckpoint } from "./store.ts";

/** Lineage's micro service name and principal. */
export const LINEAGE = "lineage";

/** The streams lineage records, each through its durable consumer `lineage`: a flow is complete in lineage once all are recorded. */
export const RECORDED_STREAMS = [StreamName.Ingest, StreamName.Cap, StreamName.Handoff, StreamName.Evt, StreamName.Decision, StreamName.Quarantine] as const;

/** The parameters of every operation: names to strings (NATS: a JSON object; HTTP: the query string). */
export type Params = Readonly<Record<string, string | undefined>>;

/** A document answer (an export): over HTTP the body is sent as is with its content type. */
export interface ExportDocument {
  readonly format: string;
  readonly contentType: string;
  readonly body: string;
}

/** What `stats` answers. */
export interface LineageStats {
  /** `sqlite` or `postgres`. */
  readonly store: string;
  /** The file path, or the URL without its password. */
  readonly location: string;
  /** Records in the log. */
  readonly size: number;
  /** Since start: recorded, absorbed as already recorded, failed verification, read back at start, batches. */
  readonly recorded?: number;
  readonly absorbed?: number;
  readonly failed?: number;
  readonly rebuilt?: number;
  readonly batches?: number;
  /** While audit batches cannot be stored: since when, and the last error. */
  readonly failing?: { readonly since: string; readonly error: string };
}

/** Each operation's reply. */
export interface LineageReplies {
  why: WhyResult;
  trace: TraceResult;
  impact: ImpactResult;
  events: EventList;
  prove: EventProof;
  export: ExportDocument;
  consistency: ConsistencyProof;
  verify: AuditReport;
  checkpoints: StoredCheckpoint[];
  stats: LineageStats;
}

/** One of the operations. */
export type LineageOperationName = keyof LineageReplies;

/** Each operation's description and parameter names (required ones first), for `nats micro info` and usage messages. */
export const LINEAGE_OPERATIONS: { readonly [K in LineageOperationName]: { readonly description: string; readonly params: readonly string[] } } = {
  why: {
    description: "the causal ancestry of an event to the upstream root: agent, key id, verification, inputs, queue wait and processing time per step",
    params: ["id", "source"],
  },
  trace: { description: "a whole flow by correlation id: the DAG, its timeline, its critical path, and what it spent (each run once, signed values only) against its budget and priority", params: ["correlation"] },
  impact: { description: "every event an event caused, by depth", params: ["id", "source"] },
  events: {
    description: "records by agent, implementation version, type, stream and time range, oldest first, in pages (next → after)",
    params: ["agent", "version", "type", "stream", "from", "to", "failed", "limit", "after"],
  },
  prove: {
    description: "an inclusion proof of an event (or a leaf index) against a signed checkpoint, checkable offline with the lineage public key",
    params: ["id", "source", "index", "size"],
  },
  export: {
    description: "evidence of a flow (correlation) or an event-time range (from, to): format jsonl or csv (records, leaf hashes, inclusion proofs, the signed checkpoint; checkable offline), prov (W3C PROV-JSON) or openlineage (run events)",
    params: ["correlation", "format", "from", "to"],
  },
  consistency: { description: "a consistency proof between two signed checkpoints (sizes from and to; to defaults to the newest)", params: ["from", "to"] },
  verify: { description: "whole-log integrity: every record re-hashed, every signed checkpoint's root recomputed; names the first bad entry", params: [] },
  checkpoints: { description: "the signed checkpoints lineage published (size, root, time, note)", params: [] },
  stats: { description: "records in the log, recorded and absorbed since start, store kind", params: [] },
};

/** The request body: a JSON object of parameters, or empty. Values are read as strings; null means absent. */
export function parseParams(data: Uint8Array): Params {
  let body: Record<string, unknown>;
  try {
    body = jsonObjectBody(data, '{"id":"…"}', ErrorCode.LineageQuery);
  } catch {
    throw new CausewayError(ErrorCode.LineageQuery, 'the request body must be a JSON object of parameters, e.g. {"id":"…"}');
  }
  return Object.fromEntries(Object.entries(body).map(([k, v]) => [k, v === undefined || v === null ? undefined : String(v)]));
}

const endpoints = Object.fromEntries((Object.keys(LINEAGE_OPERATIONS) as LineageOperationName[]).map((name) => [name, controlEndpoint<Params, unknown>({
  service: LINEAGE, name, description: LINEAGE_OPERATIONS[name].description, metadata: { params: LINEAGE_OPERATIONS[name].params.join(",") }, parse: parseParams,
})]));

/** The endpoint of an operation: `controlRequest(nc, lineageEndpoint("why"), { id })` answers a WhyResult. */
export function lineageEndpoint<K extends LineageOperationName>(name: K): ControlEndpoint<Params, LineageReplies[K]> {
  return endpoints[name] as ControlEndpoint<Params, LineageReplies[K]>;
}

// ---------------------------------------------------------------------------------------------------------
// Offline checks: what an auditor runs on evidence handed to them, with nothing but lineage's public key.

export { verifyConsistencyProof, verifyEventProof } from "./proofs.ts";
export { checkExport } from "./exports.ts";
