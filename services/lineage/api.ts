// The auditor's API, once: every query lineage answers, as named operations on string parameters. The NATS
// micro-service endpoints (endpoints.ts), the HTTP API (http.ts) and, through NATS, the `causeway lineage`
// CLI all call these, so they answer the same questions with the same results and the same error codes.
import { CausewayError, ErrorCode, type VerificationKey } from "../kit/index.ts";
import { verifyLog } from "./audit.ts";
import type { Ingest } from "./ingest.ts";
import type { LineageStore } from "./store.ts";

export type Params = Readonly<Record<string, string | undefined>>;

export interface LineageOperation {
  readonly description: string;
  /** Parameter names, required ones first, for usage messages. */
  readonly params: readonly string[];
  run(params: Params): Promise<unknown>;
}

export type LineageApi = Readonly<Record<string, LineageOperation>>;

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
  return {
    verify: {
      description: "whole-log integrity: every record re-hashed, every signed checkpoint's root recomputed; names the first bad entry",
      params: [],
      run: async () => verifyLog(store, { publicKey: deps.publicKey, published: await deps.published() }),
    },
    checkpoints: {
      description: "the signed checkpoints lineage published (size, root, time, note)",
      params: [],
      run: async () => store.checkpoints(),
    },
    stats: {
      description: "records in the log, recorded and absorbed since start, store kind",
      params: [],
      run: async () => ({ store: store.kind, location: store.location, ...(deps.ingest ? deps.ingest.stats() : { size: (await store.state()).size }) }),
    },
  };
}
