// The lineage store's tables, once for both stores: the same names everywhere (tests tamper with both through
// the same SQL), with each database's types filled in. Also the pieces both stores share: the continuity check
// of an append and the persisted frontier's encoding.
import type { LogState, StoredCheckpoint, StoredRecord } from "./store.ts";

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

/** Throws unless `records` continue a log of `current` leaves and `state` is the log after them. */
export function checkContinues(records: readonly StoredRecord[], current: number, state: LogState): void {
  records.forEach((r, i) => {
    if (r.columns.index !== current + i) throw new RangeError(`record index ${r.columns.index} does not continue the log at ${current + i}`);
  });
  if (state.size !== current + records.length) throw new RangeError(`log state size ${state.size} is not ${current + records.length}`);
}

/** The persisted frontier: concatenated 32-byte hashes. */
export function splitFrontier(bytes: Uint8Array): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 32) out.push(Buffer.from(bytes.subarray(i, i + 32)));
  return out;
}
