// Quarantine: a message that fails pipeline steps 1–6 is republished byte for byte — original payload and
// original headers — on mesh.quarantine.<reason>.<capability>, with reason headers added, and only then is
// the original terminated. If the quarantine publish fails, the original is nak'ed instead: nothing is lost.
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { QuarantineReasonValue } from "./errors.ts";

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

/** Why and where a message is quarantined. */
export interface QuarantineNote {
  reason: QuarantineReasonValue;
  /** One line for an operator. */
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
  // Header values cannot carry line breaks; keep the detail to one line.
  h.set(QuarantineHeader.Detail, note.detail.replace(/[\r\n]+/g, " ").slice(0, 1024));
  if (note.code) h.set(QuarantineHeader.Code, note.code);
  h.set(QuarantineHeader.OriginalSubject, original.subject);
  h.set(QuarantineHeader.OriginalStream, original.stream);
  h.set(QuarantineHeader.OriginalSequence, String(original.seq));
  if (original.consumer) h.set(QuarantineHeader.Consumer, original.consumer);
  h.set(QuarantineHeader.DetectedBy, note.detectedBy);
  h.set(QuarantineHeader.DetectedAt, now.toISOString());
  return h;
}

/**
 * Quarantines `msg` on `subject` and terminates the original. The publish is deduplicated by the original's
 * stream and sequence, so a redelivered poison message yields one quarantine entry. Returns false (after a
 * nak) when the quarantine publish failed.
 */
export async function quarantine(js: JetStreamClient, msg: JsMsg, subject: string, note: QuarantineNote): Promise<boolean> {
  try {
    await publishQuarantineCopy(js, originalOf(msg), subject, note);
  } catch {
    msg.nak(1_000);
    return false;
  }
  msg.term(`${note.reason}: ${note.detail}`.slice(0, 256));
  return true;
}

/**
 * Publishes the quarantine copy of `original` (for messages fetched by sequence: dead letters, timed-out
 * approvals). Deduplicated by the original's stream and sequence, like {@link quarantine}. Throws when the
 * publish fails; the caller keeps whatever it was holding so nothing is lost.
 */
export async function publishQuarantineCopy(js: JetStreamClient, original: QuarantineOriginal, subject: string, note: QuarantineNote): Promise<void> {
  await js.publish(subject, original.data, {
    headers: quarantineHeaders(original, note),
    msgID: `quarantine/${original.stream}/${original.seq}`,
  });
}
