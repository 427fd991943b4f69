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

/** The quarantine copy of `msg`: the same bytes and headers plus the reason headers. */
export function quarantineHeaders(msg: JsMsg, note: QuarantineNote, now = new Date()): MsgHdrs {
  const h = natsHeaders();
  if (msg.headers) for (const [k, values] of msg.headers) for (const v of values) h.append(k, v);
  h.set(QuarantineHeader.Reason, note.reason);
  // Header values cannot carry line breaks; keep the detail to one line.
  h.set(QuarantineHeader.Detail, note.detail.replace(/[\r\n]+/g, " ").slice(0, 1024));
  if (note.code) h.set(QuarantineHeader.Code, note.code);
  h.set(QuarantineHeader.OriginalSubject, msg.subject);
  h.set(QuarantineHeader.OriginalStream, msg.info.stream);
  h.set(QuarantineHeader.OriginalSequence, String(msg.info.streamSequence));
  h.set(QuarantineHeader.Consumer, msg.info.consumer);
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
    await js.publish(subject, msg.data, {
      headers: quarantineHeaders(msg, note),
      msgID: `quarantine/${msg.info.stream}/${msg.info.streamSequence}`,
    });
  } catch {
    msg.nak(1_000);
    return false;
  }
  msg.term(`${note.reason}: ${note.detail}`.slice(0, 256));
  return true;
}
