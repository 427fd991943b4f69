// One audit record per message lineage read: what arrived (stream, sequence, subject, every CloudEvents
// attribute, the non-CloudEvents headers, the data), what lineage made of it (verification result, key id,
// principal), and where it sits in the log (index). The record's canonical bytes are the Merkle leaf; the
// store keeps them verbatim next to a few columns copied out for queries, and `verify` checks both.
//
// Canonical bytes: JSON with a fixed member order, written by this module only. Auditors re-hash the bytes as
// they are (they never re-serialize), so the order matters only in that it is stable across versions.
import { hash } from "node:crypto";
import { leafHash } from "./merkle.ts";
import { flowIdOf } from "../kit/index.ts";

/** Record format version, the first member of every record. */
export const RECORD_VERSION = 1;

/** What lineage's verification said about a message. */
export interface RecordVerification {
  /** `verified`: signature, trust window, revocation and emitter checked; `failed`: recorded as such, never skipped. */
  readonly result: "verified" | "failed";
  /** The signer's key id (DSSE keyid), when the envelope named one. */
  readonly keyid?: string;
  /** The principal the trust store maps the key to (verified records only). */
  readonly principal?: string;
  /** Why verification failed: a stable CW_ERR_* code and its message. */
  readonly code?: string;
  readonly detail?: string;
}

/** The content of a record: everything but its position. */
export interface RecordContent {
  /** Stream and stream sequence the message was read from. */
  readonly stream: string;
  readonly seq: number;
  readonly subject: string;
  /** When lineage recorded it (RFC 3339, ms); not a signed value, never used for timings. */
  readonly recorded: string;
  readonly verification: RecordVerification;
  /** Every CloudEvents attribute as a string (dssematerial included); null when the message did not decode. */
  readonly attributes: Readonly<Record<string, string>> | null;
  /** Headers that are not CloudEvents attributes (quarantine reason headers, Nats-Msg-Id), first value each. */
  readonly headers: Readonly<Record<string, string>>;
  /** SHA-256 of the data bytes, hex. */
  readonly datadigest: string;
  /** The data bytes, base64. */
  readonly data: string;
}

/** A record at its place in the log. */
export interface LineageRecord extends RecordContent {
  readonly v: number;
  /** 0-based leaf index in the Merkle log. */
  readonly index: number;
}

/**
 * The columns a store keeps beside the canonical bytes for its indexes. Derived from the record by
 * {@link columnsOf}; `verify` recomputes them, so a changed column is detected like a changed record.
 */
export interface RecordColumns {
  readonly index: number;
  readonly stream: string;
  readonly seq: number;
  readonly subject: string;
  readonly source: string | null;
  readonly id: string | null;
  readonly type: string | null;
  /** The event's `time` as epoch milliseconds, for time-range listings. */
  readonly timeMs: number | null;
  readonly correlationid: string | null;
  readonly causationid: string | null;
  readonly principal: string | null;
  readonly verified: boolean;
}

/** A record ready to store: its columns, canonical bytes and leaf hash. */
export interface EncodedRecord {
  readonly columns: RecordColumns;
  readonly bytes: Buffer;
  readonly leafHash: Buffer;
}

/** Builds the record at `index` and its canonical bytes. */
export function encodeRecord(index: number, content: RecordContent): EncodedRecord {
  // Member order is fixed here and only here.
  const record: LineageRecord = {
    v: RECORD_VERSION,
    index,
    stream: content.stream,
    seq: content.seq,
    subject: content.subject,
    recorded: content.recorded,
    verification: content.verification,
    attributes: content.attributes,
    headers: content.headers,
    datadigest: content.datadigest,
    data: content.data,
  };
  const bytes = Buffer.from(JSON.stringify(record), "utf8");
  return { columns: columnsOf(record), bytes, leafHash: leafHash(bytes) };
}

/** Parses canonical bytes back into a record; throws a RangeError naming what is wrong. */
export function decodeRecord(bytes: Uint8Array): LineageRecord {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw new RangeError(`record is not JSON: ${(err as Error).message}`);
  }
  if (typeof value !== "object" || value === null) throw new RangeError("record is not a JSON object");
  const r = value as Partial<LineageRecord>;
  if (r.v !== RECORD_VERSION) throw new RangeError(`record version ${String(r.v)} is not ${RECORD_VERSION}`);
  if (!Number.isSafeInteger(r.index) || !Number.isSafeInteger(r.seq) || typeof r.stream !== "string" || typeof r.subject !== "string") {
    throw new RangeError("record lacks index, stream, seq or subject");
  }
  if (typeof r.verification !== "object" || r.verification === null || typeof r.data !== "string") {
    throw new RangeError("record lacks verification or data");
  }
  return r as LineageRecord;
}

/** The query columns of a record (text through {@link columnText}). */
export function columnsOf(record: LineageRecord): RecordColumns {
  const a = record.attributes;
  const time = a?.time !== undefined ? Date.parse(a.time) : NaN;
  return {
    index: record.index,
    stream: columnText(record.stream),
    seq: record.seq,
    subject: columnText(record.subject),
    source: columnText(a?.source ?? null),
    id: columnText(a?.id ?? null),
    type: columnText(a?.type ?? null),
    timeMs: Number.isFinite(time) ? time : null,
    correlationid: columnText(a?.correlationid ?? (a?.id !== undefined && a.source !== undefined ? flowIdOf({ source: a.source, id: a.id }) : a?.id ?? null)),
    causationid: columnText(a?.causationid ?? null),
    principal: columnText(record.verification.principal ?? null),
    verified: record.verification.result === "verified",
  };
}

/**
 * A text column's value, and the value to look one up by: U+0000 becomes U+FFFD. PostgreSQL's text refuses
 * U+0000 (22021), and a decoded attribute can hold one (`ce-id: a%00b`); both stores map alike so their
 * columns agree. Only the columns: the record's bytes keep the exact value.
 */
export function columnText<T extends string | null>(value: T): T {
  return (value !== null && value.includes("\u0000") ? value.replaceAll("\u0000", "\uFFFD") : value) as T;
}

/**
 * Which columns of `stored` differ from those the record's bytes imply (empty when they agree). An event without
 * a `correlationid` starts a flow and is indexed under its flow id; stores written before flow ids indexed it
 * under its id, which is accepted too (both are derived from the record's own attributes).
 */
export function columnMismatches(stored: RecordColumns, fromRecord: RecordColumns): string[] {
  const names = Object.keys(fromRecord) as (keyof RecordColumns)[];
  const indexedById = (): boolean => stored.correlationid === fromRecord.id && fromRecord.id !== null && fromRecord.source !== null &&
    fromRecord.correlationid === columnText(flowIdOf({ source: fromRecord.source, id: fromRecord.id }));
  return names.filter((name) => stored[name] !== fromRecord[name] && !(name === "correlationid" && indexedById()));
}

/** SHA-256 hex of data bytes. */
export function dataDigest(data: Uint8Array): string {
  return hash("sha256", data, "hex");
}

/** The data bytes a record carries. */
export function recordData(record: LineageRecord): Buffer {
  return Buffer.from(record.data, "base64");
}
