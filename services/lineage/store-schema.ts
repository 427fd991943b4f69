// The lineage store's tables, once for both stores: the same names everywhere (tests tamper with both through
// the same SQL), with each database's types filled in. Also the pieces both stores share: the continuity check
// of an append (which also says what subtree hashes it completes), the rebuild of those hashes for a store
// from before they were kept, and the persisted frontier's encoding.
import { extendLog, nodesOf, type NodeHash, type NodeId } from "./merkle.ts";
import type { LogState, StoreLog, StoredCheckpoint, StoredRecord } from "./store.ts";

/** A row of the records table as both drivers return it (SQLite gives Uint8Array, pg gives Buffer). */
export interface RecordRow {
  idx: number; stream: string; stream_seq: number; subject: string; source: string | null; id: string | null; type: string | null;
  time_ms: number | null; correlationid: string | null; causationid: string | null; principal: string | null; verified: number;
  leaf_hash: Uint8Array; record: Uint8Array;
}

/** A row as a stored record. */
export function recordOfRow(r: RecordRow): StoredRecord {
  return {
    columns: {
      index: r.idx, stream: r.stream, seq: r.stream_seq, subject: r.subject, source: r.source, id: r.id, type: r.type, timeMs: r.time_ms,
      correlationid: r.correlationid, causationid: r.causationid, principal: r.principal, verified: r.verified === 1,
    },
    bytes: asBuffer(r.record),
    leafHash: asBuffer(r.leaf_hash),
  };
}

const asBuffer = (b: Uint8Array): Buffer => (Buffer.isBuffer(b) ? b : Buffer.from(b));

/** Each database's names for the column types the schema uses. */
export interface SqlTypes {
  /** The leaf index: SQLite's `INTEGER PRIMARY KEY` (the rowid), PostgreSQL's `BIGINT PRIMARY KEY`. */
  readonly key: string;
  /** A 64-bit integer. */
  readonly integer: string;
  /** A small integer (the 0/1 `verified` flag, so the same raw SQL works on both). */
  readonly small: string;
  /** Bytes. */
  readonly bytes: string;
  /** After the nodes table's definition: SQLite's `WITHOUT ROWID` (the key is the table), nothing on PostgreSQL. */
  readonly clustered: string;
}

/** The DDL of the lineage store, idempotent (IF NOT EXISTS). */
export function schemaSql(t: SqlTypes): string {
  return `
CREATE TABLE IF NOT EXISTS records (
  idx ${t.key},
  stream TEXT NOT NULL,
  stream_seq ${t.integer} NOT NULL,
  subject TEXT NOT NULL,
  source TEXT,
  id TEXT,
  type TEXT,
  time_ms ${t.integer},
  correlationid TEXT,
  causationid TEXT,
  principal TEXT,
  verified ${t.small} NOT NULL,
  leaf_hash ${t.bytes} NOT NULL,
  record ${t.bytes} NOT NULL,
  UNIQUE (stream, stream_seq)
);
-- Only a verified record's (source, id) is authenticated, and only as its signer's: a failed one (a forgery, a
-- tampered copy) must not claim the identity of the event it imitates, so it is told apart by (stream,
-- stream_seq) alone, and a verified one is one per (stream, principal, source, id), so no principal's event
-- takes the place of another's. (records_identity, on (stream, source, id), was the index before.)
DROP INDEX IF EXISTS records_identity;
CREATE UNIQUE INDEX IF NOT EXISTS records_signed_identity ON records (stream, principal, source, id) WHERE verified = 1;
CREATE INDEX IF NOT EXISTS records_id ON records (id);
CREATE INDEX IF NOT EXISTS records_correlation ON records (correlationid);
CREATE INDEX IF NOT EXISTS records_causation ON records (causationid);
CREATE INDEX IF NOT EXISTS records_principal ON records (principal, idx);
CREATE INDEX IF NOT EXISTS records_type ON records (type, idx);
CREATE INDEX IF NOT EXISTS records_time ON records (time_ms);
CREATE TABLE IF NOT EXISTS log_state (
  one ${t.small} PRIMARY KEY CHECK (one = 1),
  size ${t.integer} NOT NULL,
  frontier ${t.bytes} NOT NULL
);
-- The hash of every perfect subtree of two or more leaves: the 2^level records from idx·2^level (level ≥ 1),
-- written in the transaction that appends its last record; proofs read O(log n) of them (merkle.ts).
CREATE TABLE IF NOT EXISTS nodes (
  level ${t.small} NOT NULL,
  idx ${t.integer} NOT NULL,
  hash ${t.bytes} NOT NULL,
  PRIMARY KEY (level, idx)
)${t.clustered};
CREATE TABLE IF NOT EXISTS checkpoints (
  size ${t.integer} PRIMARY KEY,
  root TEXT NOT NULL,
  time TEXT NOT NULL,
  note TEXT NOT NULL,
  audit_seq ${t.integer} NOT NULL
);
`;
}

/** The records table's columns, in the order both stores insert and select them. */
export const RECORD_COLUMNS = "idx, stream, stream_seq, subject, source, id, type, time_ms, correlationid, causationid, principal, verified, leaf_hash, record";

/** A stored record's values in {@link RECORD_COLUMNS} order (`verified` as 0/1). */
export function recordValues(r: StoredRecord): (string | number | null | Buffer)[] {
  const c = r.columns;
  return [c.index, c.stream, c.seq, c.subject, c.source, c.id, c.type, c.timeMs, c.correlationid, c.causationid, c.principal, c.verified ? 1 : 0, r.leafHash, r.bytes];
}

/** The checkpoints table's columns, in the order both stores insert and select them. */
export const CHECKPOINT_COLUMNS = "size, root, time, note, audit_seq";

/** A row of the checkpoints table. */
export interface CheckpointRow { size: number; root: string; time: string; note: string; audit_seq: number }

/** A checkpoint's values in {@link CHECKPOINT_COLUMNS} order. */
export function checkpointValues(c: StoredCheckpoint): (string | number)[] {
  return [c.size, c.root, c.time, c.note, c.auditSeq];
}

/** A row as a stored checkpoint. */
export function checkpointOfRow(r: CheckpointRow): StoredCheckpoint {
  return { size: r.size, root: r.root, time: r.time, note: r.note, auditSeq: r.audit_seq };
}

/**
 * Throws unless `records` continue the stored log `current` and `state` is the log after them (its size, and
 * the frontier their leaf hashes make of the stored one); returns the perfect subtrees of two or more leaves they
 * complete, which the append stores in the same transaction.
 */
export function checkContinues(records: readonly StoredRecord[], current: LogState, state: LogState): NodeHash[] {
  records.forEach((r, i) => {
    if (r.columns.index !== current.size + i) throw new RangeError(`record index ${r.columns.index} does not continue the log at ${current.size + i}`);
  });
  if (state.size !== current.size + records.length) throw new RangeError(`log state size ${state.size} is not ${current.size + records.length}`);
  const after = extendLog(current.size, current.frontier, records.map((r) => r.leafHash));
  if (after.frontier.length !== state.frontier.length || after.frontier.some((h, i) => !h.equals(state.frontier[i]!))) {
    throw new RangeError(`log state frontier at size ${state.size} is not the stored frontier at ${current.size} extended by these records' leaf hashes`);
  }
  return after.completed;
}

/**
 * The stored subtrees a log of `size` leaves must hold, if it kept its subtree hashes from its first record:
 * those of its frontier (level ≥ 1). A store from before they were kept lacks them, and any append it took
 * without keeping them left one missing (each completed subtree lies under a frontier one completed later).
 */
export function frontierNodes(size: number): NodeId[] {
  return size === 0 ? [] : nodesOf(0, size).filter((id) => id.level > 0);
}

/** Leaves read per step of {@link nodeRebuild}. */
const REBUILD_CHUNK = 50_000;

/**
 * The rebuild of every stored subtree hash of a log of `size` leaves from its leaf hashes, once, for a store
 * from before they were kept. The store reads the leaves of each range `next` gives, in order, hands them to
 * `add` and inserts the subtrees it returns (keeping any already stored), all in one transaction that
 * excludes appends. Progress goes to `log`. Leaves missing from a range (records deleted behind the store's
 * back) end the rebuild early with a warning: proofs that need what is missing fail, and `verify` says why.
 */
export function nodeRebuild(size: number, location: string, log?: StoreLog): { next(): [number, number] | undefined; add(leaves: readonly Buffer[]): NodeHash[] } {
  const started = performance.now();
  let frontier: Buffer[] = [];
  let done = 0;
  let stopped = false;
  const fields = () => ({ location, done, total: size, seconds: Math.round((performance.now() - started) / 100) / 10 });
  log?.info(fields(), "building the audit log's stored subtree hashes from its records, once (a store from before they were kept)");
  return {
    next() {
      if (stopped || done >= size) return undefined;
      return [done, Math.min(size, done + REBUILD_CHUNK)];
    },
    add(leaves) {
      const to = Math.min(size, done + REBUILD_CHUNK);
      if (leaves.length !== to - done) {
        stopped = true;
        log?.warn({ ...fields(), found: leaves.length, expected: to - done }, `records in [${done}, ${to}) are missing: stored subtree hashes end at ${done}; run verify`);
        return [];
      }
      const after = extendLog(done, frontier, leaves);
      frontier = after.frontier;
      done = to;
      log?.info(fields(), done === size ? "stored subtree hashes built" : "building stored subtree hashes");
      return after.completed;
    },
  };
}

/** The persisted frontier: concatenated 32-byte hashes. */
export function splitFrontier(bytes: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 32) out.push(Buffer.from(bytes.subarray(i, i + 32)));
  return out;
}
