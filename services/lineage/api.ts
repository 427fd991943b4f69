// The auditor's API, once: every query lineage answers, as named operations on string parameters. The NATS
// micro-service endpoints (endpoints.ts), the HTTP API (http.ts) and, through NATS, the `causeway lineage`
// CLI all call these, so they answer the same questions with the same results and the same error codes.
import { CausewayError, ErrorCode, isCausewayError, type VerificationKey } from "../kit/index.ts";
import { verifyLog } from "./audit.ts";
import { exportCsv, exportJsonl, exportOpenLineage, exportProv, type ExportSelection } from "./exports.ts";
import { proveConsistency, proveEvent } from "./proofs.ts";
import { impact, listEvents, trace, why } from "./queries.ts";
import type { Ingest } from "./ingest.ts";
import type { LineageStore } from "./store.ts";
import { LINEAGE_OPERATIONS, type ExportDocument, type LineageOperationName, type LineageReplies, type Params } from "./contract.ts";

export type { Params } from "./contract.ts";

/** An operation: its contract's description and parameters, and how it answers. */
export interface LineageOperation<Reply = unknown> {
  readonly description: string;
  /** Parameter names, required ones first, for usage messages. */
  readonly params: readonly string[];
  run(params: Params): Promise<Reply>;
}

/** Every operation of the contract (services/lineage/contract.ts), answering its reply type. */
export type LineageApi = { readonly [K in LineageOperationName]: LineageOperation<LineageReplies[K]> };

/** A result that is a document rather than JSON (exports): HTTP sends `body` as is; NATS sends this object. */
export class Document implements ExportDocument {
  readonly format: string;
  readonly contentType: string;
  readonly body: string;
  constructor(format: string, contentType: string, body: string) {
    this.format = format;
    this.contentType = contentType;
    this.body = body;
  }
}

const EXPORT_FORMATS = ["jsonl", "csv", "prov", "openlineage"] as const;

export interface ApiDeps {
  readonly store: LineageStore;
  readonly publicKey: VerificationKey;
  /** The checkpoint notes published on MESH_AUDIT, read fresh for every verify. */
  readonly published: () => Promise<string[]>;
  readonly ingest?: Ingest;
  /** Publishes a checkpoint now (so `prove` can prove what was just recorded). */
  readonly checkpointNow?: () => Promise<unknown>;
}

/** A required parameter, or CW_ERR_LINEAGE_QUERY naming it. */
export function required(params: Params, name: string): string {
  const v = params[name]?.trim();
  if (!v) throw new CausewayError(ErrorCode.LineageQuery, `missing parameter "${name}"`);
  return v;
}

/** An optional non-negative integer parameter. */
export function integer(params: Params, name: string): number | undefined {
  const v = params[name]?.trim();
  if (v === undefined || v === "") return undefined;
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new CausewayError(ErrorCode.LineageQuery, `parameter "${name}" must be a non-negative integer, not ${JSON.stringify(v)}`);
  return Number(v);
}

/** An optional time parameter (RFC 3339) as epoch ms. */
export function time(params: Params, name: string): number | undefined {
  const v = params[name]?.trim();
  if (v === undefined || v === "") return undefined;
  const ms = Date.parse(v);
  if (!Number.isFinite(ms)) throw new CausewayError(ErrorCode.LineageQuery, `parameter "${name}" must be an RFC 3339 time, not ${JSON.stringify(v)}`);
  return ms;
}

export function createLineageApi(deps: ApiDeps): LineageApi {
  const { store } = deps;
  const source = (params: Params) => (params.source?.trim() ? { source: params.source.trim() } : {});
  // The checkpoint a proof is against: the one of the given size, else the newest one there is. A checkpoint is
  // permanent (MESH_AUDIT denies deletes), so a question never publishes one (a read-only auditor could otherwise
  // write one per question): only when none exists yet, or — `fresh` — when the newest does not cover the record
  // asked about (see prove), is one published now.
  const checkpointFor = async (size: number | undefined, fresh = false) => {
    if (size === undefined && deps.checkpointNow && (fresh || (await store.checkpoints()).length === 0)) await deps.checkpointNow();
    const all = await store.checkpoints();
    const chosen = size === undefined ? all.at(-1) : all.find((c) => c.size === size);
    if (!chosen) {
      throw new CausewayError(ErrorCode.LineageNotCovered, size === undefined ? "no checkpoint has been published yet" : `no checkpoint of size ${size}; sizes: ${all.map((c) => c.size).join(", ") || "none"}`);
    }
    return chosen;
  };
  return {
    why: {
      ...LINEAGE_OPERATIONS.why,
      run: (p) => why(store, required(p, "id"), source(p)),
    },
    trace: {
      ...LINEAGE_OPERATIONS.trace,
      run: (p) => trace(store, required(p, "correlation")),
    },
    impact: {
      ...LINEAGE_OPERATIONS.impact,
      run: (p) => impact(store, required(p, "id"), source(p)),
    },
    events: {
      ...LINEAGE_OPERATIONS.events,
      run: async (p) => {
        const fromMs = time(p, "from");
        const toMs = time(p, "to");
        const limit = integer(p, "limit");
        const afterIndex = integer(p, "after");
        return listEvents(store, {
          ...(p.agent?.trim() && { principal: p.agent.trim() }), ...(p.type?.trim() && { type: p.type.trim() }),
          ...(p.stream?.trim() && { stream: p.stream.trim() }), ...(fromMs !== undefined && { fromMs }), ...(toMs !== undefined && { toMs }),
          ...(p.failed === "true" && { failedOnly: true }), ...(limit !== undefined && { limit }), ...(afterIndex !== undefined && { afterIndex }),
        }, p.version?.trim() || undefined);
      },
    },
    prove: {
      ...LINEAGE_OPERATIONS.prove,
      run: async (p) => {
        const index = integer(p, "index");
        const target = index !== undefined ? { index } : { id: required(p, "id"), ...source(p) };
        const size = integer(p, "size");
        try {
          return await proveEvent(store, target, await checkpointFor(size));
        } catch (err) {
          // Recorded after the newest checkpoint: publish one that covers it (once per growth of the log), then prove.
          if (size !== undefined || !isCausewayError(err, ErrorCode.LineageNotCovered)) throw err;
          return proveEvent(store, target, await checkpointFor(undefined, true));
        }
      },
    },
    export: {
      ...LINEAGE_OPERATIONS.export,
      run: async (p) => {
        const format = required(p, "format");
        if (!(EXPORT_FORMATS as readonly string[]).includes(format)) throw new CausewayError(ErrorCode.LineageQuery, `format must be one of ${EXPORT_FORMATS.join(", ")}, not ${JSON.stringify(format)}`);
        const fromMs = time(p, "from");
        const correlation = p.correlation?.trim();
        if (!correlation && fromMs === undefined) throw new CausewayError(ErrorCode.LineageQuery, 'export needs "correlation" or "from" (and optionally "to")');
        const selection: ExportSelection = correlation ? { correlationId: correlation } : { fromMs: fromMs!, toMs: time(p, "to") ?? Date.now() + 1 };
        const publicKey = { publicKey: deps.publicKey.keyid };
        switch (format) {
          case "jsonl": return new Document(format, "application/x-ndjson", await exportJsonl(store, selection, await checkpointFor(undefined), publicKey));
          case "csv": return new Document(format, "text/csv; charset=utf-8", await exportCsv(store, selection, await checkpointFor(undefined), publicKey));
          case "prov": return new Document(format, "application/json", JSON.stringify(await exportProv(store, selection), null, 2) + "\n");
          default: return new Document(format, "application/x-ndjson", (await exportOpenLineage(store, selection)).map((e) => JSON.stringify(e)).join("\n") + "\n");
        }
      },
    },
    consistency: {
      ...LINEAGE_OPERATIONS.consistency,
      run: async (p) => {
        const from = integer(p, "from");
        if (from === undefined) throw new CausewayError(ErrorCode.LineageQuery, 'missing parameter "from"');
        return proveConsistency(store, await checkpointFor(from), await checkpointFor(integer(p, "to")));
      },
    },
    verify: {
      ...LINEAGE_OPERATIONS.verify,
      run: async () => verifyLog(store, { publicKey: deps.publicKey, published: await deps.published() }),
    },
    checkpoints: {
      ...LINEAGE_OPERATIONS.checkpoints,
      run: async () => store.checkpoints(),
    },
    stats: {
      ...LINEAGE_OPERATIONS.stats,
      run: async () => ({ store: store.kind, location: store.location, ...(deps.ingest ? deps.ingest.stats() : { size: (await store.state()).size }) }),
    },
  };
}
