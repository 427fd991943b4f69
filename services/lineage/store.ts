// The lineage store: the audit log's records in leaf order, the Merkle log's persisted state, and the signed
// checkpoints. Two implementations answer the same interface — SQLite (node:sqlite, a file under the data
// directory, the default) and PostgreSQL (when LINEAGE_DATABASE_URL is set) — and the same conformance suite
// runs on both (test/lineage-store.test.ts).
//
// One writer: the lineage service appends, everyone else reads. Records are never updated or deleted by
// Causeway; `verify` detects anyone who does.
import type { NodeId } from "./merkle.ts";
import { columnText, type RecordColumns, type RecordContent } from "./record.ts";

/** A stored record: its columns, canonical bytes and leaf hash, as the store holds them. */
export interface StoredRecord {
  readonly columns: RecordColumns;
  readonly bytes: Buffer;
  readonly leafHash: Buffer;
}

/** The Merkle log's state, persisted in the same transaction as the records it covers. */
export interface LogState {
  /** Number of records (leaves). */
  readonly size: number;
  /** The log's frontier at `size` (see merkle.ts `MerkleLog.frontier`). */
  readonly frontier: readonly Buffer[];
}

/** Where a store reports long work when it opens (an upgrade of its schema): pino's `info` / `warn` shape. */
export interface StoreLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

/** Options of the stores' open functions. */
export interface OpenStoreOptions {
  /** Progress of an upgrade on open. Default: none. */
  readonly log?: StoreLog;
}

/** A checkpoint lineage signed and published, as it keeps a copy. */
export interface StoredCheckpoint {
  readonly size: number;
  /** Root hash, standard base64. */
  readonly root: string;
  /** RFC 3339 at seconds, as in the note. */
  readonly time: string;
  /** The signed note, verbatim. */
  readonly note: string;
  /** MESH_AUDIT stream sequence it was published at. */
  readonly auditSeq: number;
}

/**
 * What identifies a message already recorded: its place in a stream, or its event identity within that stream
 * — the identity of a verified record only: its signer's principal with the source and id it signed. The
 * signer is part of it, so an event under another principal's (source, id) can never absorb that principal's
 * genuine event, even were verification to let one through.
 */
export interface RecordKey {
  readonly stream: string;
  readonly seq: number;
  /** Null for a message that did not decode or did not verify (it has no authenticated event identity). */
  readonly source: string | null;
  readonly id: string | null;
  /** The signer's principal (null when the message did not verify). */
  readonly principal: string | null;
}

/** Filters for {@link LineageStore.list}; all optional, combined with AND. */
export interface ListFilter {
  /** Principal that signed (verified records only). */
  readonly principal?: string;
  readonly type?: string;
  readonly stream?: string;
  /** Event `time` range, epoch ms, inclusive start, exclusive end. */
  readonly fromMs?: number;
  readonly toMs?: number;
  /** Only records that failed verification. */
  readonly failedOnly?: boolean;
  /** Largest number of records returned (default 100, at most 10,000), oldest first from `afterIndex`. */
  readonly limit?: number;
  /** Continue after this index (paging). */
  readonly afterIndex?: number;
}

export interface LineageStore extends AsyncDisposable {
  /** `sqlite` or `postgres`, and where (a path or a URL without password), for messages. */
  readonly kind: "sqlite" | "postgres";
  readonly location: string;

  /** The persisted log state (size 0 and no frontier for a new store). */
  state(): Promise<LogState>;
  /**
   * Keys (from `keys`) already recorded, matched on (stream, seq) or on the (stream, principal, source, id) of a verified
   * record, as strings made by {@link recordKeyString}. Lets the writer skip redeliveries and replays before it assigns leaf indices.
   */
  known(keys: readonly RecordKey[]): Promise<Set<string>>;
  /**
   * Appends `records` (their indices continue the log: state().size, +1, …) and stores `state` (the log after
   * them), with the hash of every perfect subtree the records complete, in one transaction: either all of it is
   * stored or none. Throws on a duplicate key, a gap, or a state that is not the stored log extended by them.
   */
  append(records: readonly StoredRecord[], state: LogState): Promise<void>;

  /** Leaf hashes of indices [from, to), in order. */
  leafHashes(from: number, to: number): Promise<Buffer[]>;
  /**
   * The stored hashes of perfect subtrees (merkle.ts `NodeId`; level 0 is a record's leaf hash), in the order
   * asked; undefined for one the store does not hold. What proofs read: O(log n) of them each.
   */
  nodeHashes(ids: readonly NodeId[]): Promise<(Buffer | undefined)[]>;
  /** Stored subtree hashes a log of `size` leaves has not completed (there should be none), at most `limit`, by level and index. */
  strayNodes(size: number, limit: number): Promise<NodeId[]>;
  /** Records of indices [from, to), in order (the store's columns as stored, not re-derived). */
  range(from: number, to: number): Promise<StoredRecord[]>;
  /** Records whose event id is `id` (one per stream the event passed through), in index order. */
  byId(id: string): Promise<StoredRecord[]>;
  /** Records whose correlation id is `correlationid` (the root event's id counts as its own), in index order. */
  byCorrelation(correlationid: string): Promise<StoredRecord[]>;
  /** Records caused by any of `ids` (causationid ∈ ids), in index order. */
  byCausation(ids: readonly string[]): Promise<StoredRecord[]>;
  /** Records matching `filter`, in index order. */
  list(filter: ListFilter): Promise<StoredRecord[]>;

  /** The highest stream sequence recorded per stream (streams with no record are absent). */
  lastSequences(): Promise<Record<string, number>>;

  /** Keeps a copy of a published checkpoint (idempotent on size). */
  saveCheckpoint(checkpoint: StoredCheckpoint): Promise<void>;
  /** Stored checkpoints, by size ascending. */
  checkpoints(): Promise<StoredCheckpoint[]>;
}

/** The string form of a key, as {@link LineageStore.known} returns them: both forms are tried. */
export function recordKeyString(key: RecordKey): string[] {
  const bySeq = `${key.stream}#${key.seq}`;
  return key.source === null || key.id === null || key.principal === null ? [bySeq] : [bySeq, `${key.stream}|${key.principal}|${key.source}|${key.id}`];
}

/**
 * The key of a record about to be stored, its values as its columns will hold them (see record.ts `columnText`).
 * A record that failed verification has no event identity: its source and id are whatever a forger wrote, and
 * must neither be absorbed as the genuine event nor keep the genuine event out.
 */
export function recordKeyOf(content: RecordContent): RecordKey {
  const verified = content.verification.result === "verified";
  const a = verified ? content.attributes : null;
  return {
    stream: columnText(content.stream), seq: content.seq, source: columnText(a?.source ?? null), id: columnText(a?.id ?? null),
    principal: columnText((verified ? content.verification.principal : undefined) ?? null),
  };
}

/** Default and largest page size of {@link LineageStore.list}. */
export const DEFAULT_LIST_LIMIT = 100;
export const MAX_LIST_LIMIT = 10_000;

/** The page size a filter asks for, bounded. */
export function listLimit(filter: ListFilter): number {
  const n = filter.limit ?? DEFAULT_LIST_LIMIT;
  return Math.max(1, Math.min(MAX_LIST_LIMIT, Math.floor(n)));
}
