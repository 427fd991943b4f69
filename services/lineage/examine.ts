// What lineage makes of one message before recording it: decode, then verify against the live trust store —
// signature, key window, revocation, emitter — and never skip a message that fails: it is recorded with the
// failure's stable code. A quarantined copy is the original's bytes plus reason headers, so it is examined
// like any other message and usually records the failure that put it there.
import type { MsgHdrs } from "@nats-io/transport-node";
import {
  CORE_ATTRIBUTES, DSSE_MATERIAL, ErrorCode, NatsBinding, isCausewayError, openEnvelope, type CloudEvent, type TrustStore,
} from "../kit/index.ts";
import { dataDigest, type RecordContent, type RecordVerification } from "./record.ts";

/** A message as lineage reads it: a JsMsg fits. */
export interface ExaminedMessage {
  readonly subject: string;
  readonly headers?: MsgHdrs | undefined;
  readonly data: Uint8Array;
  /** Where it is stored, and when the stream stored it (JetStream's timestamp). */
  readonly info: { readonly stream: string; readonly streamSequence: number; readonly timestampNanos: number };
}

/** The record content of `msg` (everything but its index). */
export function examine(msg: ExaminedMessage, trust: TrustStore): RecordContent {
  const base = { stream: msg.info.stream, seq: msg.info.streamSequence, subject: msg.subject, recorded: new Date().toISOString(), headers: otherHeaders(msg.headers) };
  let event: CloudEvent;
  try {
    event = NatsBinding.toEvent(msg);
  } catch (err) {
    return { ...base, verification: failure(err), attributes: null, datadigest: dataDigest(msg.data), data: base64(msg.data) };
  }
  let verification: RecordVerification;
  let attributes: Record<string, string>;
  let datadigest: string;
  try {
    // The signer must have been good when the mesh received the message, whatever time the event claims.
    const trusted = trust.verifyMessage(msg, { event });
    const v = trusted.verification;
    verification = {
      result: "verified", keyid: v.keyid, principal: trusted.entry.principal,
      ...(v.unsignedExtensions.length > 0 && { detail: `unsigned extensions not recorded: ${v.unsignedExtensions.join(", ")}` }),
    };
    // Strict mode: only what the signature covers is recorded as the event's attributes (plus the envelope).
    attributes = { ...attributesOf(trusted.event), [DSSE_MATERIAL]: String(event.extensions[DSSE_MATERIAL]) };
    datadigest = v.dataDigest; // verify hashed the data already: once per message is enough
  } catch (err) {
    // Only a failed record reads the key id from the envelope itself (verified ones have it from verify).
    const keyid = keyidOf(event);
    verification = { ...failure(err), ...(keyid !== undefined && { keyid }) };
    attributes = attributesOf(event);
    datadigest = dataDigest(event.data);
  }
  return { ...base, verification, attributes, datadigest, data: base64(event.data) };
}

// Base64 of the bytes, read in place (Buffer.from(bytes) would copy them first).
function base64(d: Uint8Array): string {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString("base64");
}

function failure(err: unknown): RecordVerification {
  const code = isCausewayError(err) ? err.code : ErrorCode.Internal;
  return { result: "failed", code, detail: (err as Error).message };
}

function attributesOf(event: CloudEvent): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of CORE_ATTRIBUTES) {
    const value = event[name];
    if (value !== undefined) out[name] = String(value);
  }
  for (const [name, value] of Object.entries(event.extensions)) out[name] = String(value);
  return out;
}

// The DSSE key id the envelope names, read without verifying: a failed record still says which key it claims.
function keyidOf(event: CloudEvent): string | undefined {
  try {
    return openEnvelope(event.extensions[DSSE_MATERIAL]).signatures[0]?.keyid;
  } catch {
    return undefined; // unsigned or corrupt: the failure code already says so
  }
}

function otherHeaders(headers: MsgHdrs | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!headers) return out;
  for (const name of headers.keys()) {
    if (name.toLowerCase().startsWith("ce-")) continue;
    out[name] = headers.get(name);
  }
  return out;
}
