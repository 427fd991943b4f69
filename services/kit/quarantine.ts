// Quarantine: a message that fails pipeline steps 1–6 is republished byte for byte — original payload and
// original headers — on mesh.quarantine.<reason>.<capability>, with reason headers added, and only then is
// the original terminated. If the quarantine publish fails, the original is nak'ed instead: nothing is lost.
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import type { JetStreamClient, JetStreamManager, JsMsg, PubAck, StoredMsg } from "@nats-io/jetstream";
import type { QuarantineReasonValue } from "./errors.ts";
import type { SigningKey } from "./keys.ts";
import { MsgIdKind, confirmDuplicate, msgId } from "./msg-ids.ts";

/** Header names added to a quarantined message (the original headers are kept as they were). */
export const QuarantineHeader = {
  Reason: "Causeway-Quarantine-Reason",
  Detail: "Causeway-Quarantine-Detail",
  Code: "Causeway-Quarantine-Code",
  OriginalSubject: "Causeway-Original-Subject",
  OriginalStream: "Causeway-Original-Stream",
  OriginalSequence: "Causeway-Original-Sequence",
  Consumer: "Causeway-Consumer",
  DetectedBy: "Causeway-Detected-By",
  DetectedAt: "Causeway-Detected-At",
} as const;

/** The most bytes (UTF-8) of `Causeway-Quarantine-Detail` a quarantine copy carries, marker included. */
export const QUARANTINE_DETAIL_MAX_BYTES = 1024;
/** The most bytes (UTF-8) of any other reason header a quarantine copy carries (and the coordinator's index keeps). */
export const QUARANTINE_FIELD_MAX_BYTES = 256;
/** What ends a value that was cut to its limit. */
export const TRUNCATED_MARKER = " [truncated]";

const encoder = new TextEncoder();

/**
 * `text` on one line (header values cannot carry line breaks), cut to at most `maxBytes` of UTF-8 — at a
 * character boundary, ending with {@link TRUNCATED_MARKER} — when it is longer.
 */
export function boundedText(text: string, maxBytes: number): string {
  const line = text.replace(/[\r\n]+/g, " ");
  // Cheap when it fits: a UTF-16 code unit is at most 3 bytes of UTF-8.
  if (line.length * 3 <= maxBytes || encoder.encode(line).length <= maxBytes) return line;
  const room = Math.max(0, maxBytes - TRUNCATED_MARKER.length);
  const bytes = encoder.encode(line.slice(0, room));
  let end = Math.min(room, bytes.length);
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // not inside a character
  return new TextDecoder().decode(bytes.subarray(0, end)) + TRUNCATED_MARKER;
}

/** Why and where a message is quarantined. */
export interface QuarantineNote {
  reason: QuarantineReasonValue;
  /** One line for an operator; the copy keeps at most {@link QUARANTINE_DETAIL_MAX_BYTES} of it. */
  detail: string;
  /** The stable error code, when there is one. */
  code?: string;
  /** Principal that detected the problem. */
  detectedBy: string;
}

/** A message to quarantine, wherever it came from: a live delivery or a copy fetched by sequence. */
export interface QuarantineOriginal {
  readonly subject: string;
  readonly stream: string;
  readonly seq: number;
  /** The consumer that failed it ("" when none did, e.g. an approval that timed out). */
  readonly consumer: string;
  readonly headers?: MsgHdrs | undefined;
  readonly data: Uint8Array;
}

/** The original of a live JetStream delivery. */
export function originalOf(msg: JsMsg): QuarantineOriginal {
  return { subject: msg.subject, stream: msg.info.stream, seq: msg.info.streamSequence, consumer: msg.info.consumer, headers: msg.headers, data: msg.data };
}

/** The quarantine copy's headers: the original headers, unchanged, plus the reason headers. */
export function quarantineHeaders(msg: JsMsg | QuarantineOriginal, note: QuarantineNote, now = new Date()): MsgHdrs {
  const original = "info" in msg ? originalOf(msg) : msg;
  const h = natsHeaders();
  if (original.headers) for (const [k, values] of original.headers) for (const v of values) h.append(k, v);
  h.set(QuarantineHeader.Reason, note.reason);
  // One line each, bounded: the detail to QUARANTINE_DETAIL_MAX_BYTES, the rest to QUARANTINE_FIELD_MAX_BYTES.
  h.set(QuarantineHeader.Detail, boundedText(note.detail, QUARANTINE_DETAIL_MAX_BYTES));
  if (note.code) h.set(QuarantineHeader.Code, boundedText(note.code, QUARANTINE_FIELD_MAX_BYTES));
  h.set(QuarantineHeader.OriginalSubject, original.subject);
  h.set(QuarantineHeader.OriginalStream, original.stream);
  h.set(QuarantineHeader.OriginalSequence, String(original.seq));
  if (original.consumer) h.set(QuarantineHeader.Consumer, original.consumer);
  h.set(QuarantineHeader.DetectedBy, boundedText(note.detectedBy, QUARANTINE_FIELD_MAX_BYTES));
  h.set(QuarantineHeader.DetectedAt, now.toISOString());
  return h;
}

/** The detecting principal's means to publish a quarantine copy nobody else can pre-empt. */
export interface QuarantinePublisher {
  /** Its signing key: tags the copy's message id (services/kit/msg-ids.ts), so no other principal can publish under it first. */
  readonly key?: SigningKey | undefined;
  /** A publisher that may read MESH_QUARANTINE back (the coordinator): a duplicate ack is confirmed against the stored copy. */
  readonly jsm?: JetStreamManager | undefined;
}

/** The message id of `detectedBy`'s quarantine copy of `original`: one per original, per detecting principal. */
export function quarantineMsgId(original: Pick<QuarantineOriginal, "stream" | "seq">, detectedBy: string, key?: SigningKey): string {
  return msgId({ principal: detectedBy, key }, MsgIdKind.Quarantine, original.stream, original.seq);
}

/**
 * Quarantines `msg` on `subject` and terminates the original. The publish is deduplicated by the original's
 * stream and sequence and the detecting principal, so a redelivered poison message yields one quarantine entry.
 * Returns false (after a nak) when the quarantine publish failed — including a duplicate ack for a copy that is
 * not this principal's (CW_ERR_MSG_ID_TAKEN): the original is never terminated with nothing stored.
 */
export async function quarantine(js: JetStreamClient, msg: JsMsg, subject: string, note: QuarantineNote, by: QuarantinePublisher = {}): Promise<boolean> {
  try {
    await publishQuarantineCopy(js, originalOf(msg), subject, note, by);
  } catch {
    msg.nak(1_000);
    return false;
  }
  msg.term(`${note.reason}: ${note.detail}`.slice(0, 256));
  return true;
}

/** `stored` is `detectedBy`'s copy of `original` on `subject`: same detecting principal, original, subject and bytes. */
export function isQuarantineCopyOf(stored: StoredMsg, subject: string, original: QuarantineOriginal, detectedBy: string): boolean {
  const h = (name: string) => stored.header.get(name);
  return stored.subject === subject && h(QuarantineHeader.DetectedBy) === detectedBy
    && h(QuarantineHeader.OriginalStream) === original.stream && h(QuarantineHeader.OriginalSequence) === String(original.seq)
    && h(QuarantineHeader.OriginalSubject) === original.subject && Buffer.from(stored.data).equals(Buffer.from(original.data));
}

/**
 * Publishes the quarantine copy of `original` (for messages fetched by sequence: dead letters, timed-out
 * approvals). Deduplicated like {@link quarantine}. Throws when the publish fails or a duplicate ack is not
 * confirmed as this principal's copy; the caller keeps whatever it was holding so nothing is lost.
 */
export async function publishQuarantineCopy(js: JetStreamClient, original: QuarantineOriginal, subject: string, note: QuarantineNote, by: QuarantinePublisher = {}): Promise<PubAck> {
  const id = quarantineMsgId(original, note.detectedBy, by.key);
  const ack = await js.publish(subject, original.data, { headers: quarantineHeaders(original, note), msgID: id });
  if (by.jsm) await confirmDuplicate(by.jsm, ack, id, (stored) => isQuarantineCopyOf(stored, subject, original, note.detectedBy));
  return ack;
}
