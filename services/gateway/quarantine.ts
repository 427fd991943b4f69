// Quarantine at the edge. An input refused with a quarantine reason is kept byte for byte in MESH_QUARANTINE
// on `mesh.quarantine.<reason>.ingest`, its original subject being the upstream's ingest subject, so an
// operator's release sends it back through the gateway. NATS inputs are JetStream messages (the kit's
// quarantine terminates them after the copy); HTTP inputs become a binary-mode copy of the request.
import { hash } from "node:crypto";
import type { JetStreamClient } from "@nats-io/jetstream";
import { MsgIdKind, msgId, quarantineHeaders, type MeshSubjects, type MsgIdOwner, type QuarantineNote, type QuarantineOriginal } from "../kit/index.ts";
import type { Rejected } from "./outcome.ts";

/** The last token of the gateway's quarantine subjects: inputs refused before any capability took them. */
const QUARANTINE_TOKEN = "ingest";

/** The quarantine subject and note of a rejection that keeps its input. */
export function quarantineTarget(subjects: MeshSubjects, rejected: Rejected & { quarantined: NonNullable<Rejected["quarantined"]> }, principal: string): { subject: string; note: QuarantineNote } {
  return {
    subject: subjects.quarantine(rejected.quarantined, QUARANTINE_TOKEN),
    note: { reason: rejected.quarantined, detail: rejected.message, code: rejected.code, detectedBy: principal },
  };
}

/**
 * The Nats-Msg-Id of the edge quarantine copy of `original`: `gateway/quarantine/http/<hash>/<tag>`, the hash over
 * subject, headers and data, the tag computable only with the gateway's key (msgId), so nobody else that may
 * publish on the quarantine subjects can take the id first (issue 12, finding 4).
 */
export function quarantineCopyMsgId(owner: MsgIdOwner, original: Pick<QuarantineOriginal, "subject" | "headers" | "data">): string {
  const h = hash("sha256", `${original.subject}\0${JSON.stringify([...(original.headers ?? [])])}\0${Buffer.from(original.data).toString("base64")}`, "hex");
  return msgId(owner, MsgIdKind.Quarantine, "http", h);
}

/**
 * Publishes the quarantine copy of an input that is not a JetStream message (an HTTP request). Identical inputs
 * make one entry (quarantineCopyMsgId). Throws when the publish fails: the caller then answers 503, so the
 * upstream retries and nothing is lost.
 */
export async function quarantineCopy(js: JetStreamClient, original: QuarantineOriginal, target: { subject: string; note: QuarantineNote }, owner: MsgIdOwner): Promise<void> {
  await js.publish(target.subject, original.data, { headers: quarantineHeaders(original, target.note), msgID: quarantineCopyMsgId(owner, original) });
}
