// The CloudEvents NATS protocol binding (1.0.3): emit binary mode (every attribute a `ce-` header,
// percent-encoded; data as the payload), accept binary and structured mode, header names read
// case-insensitively. Shaped like the cloudevents SDK's bindings: binary, structured, toEvent, isEvent.
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import { DecodeError, ErrorCode } from "./errors.ts";
import { createEvent, type CloudEvent, type ExtensionValue } from "./event.ts";
import { decodeJsonEvent, encodeJsonEvent } from "./json-format.ts";
import { decodeHeaderValue, encodeHeaderValue } from "./percent.ts";

/** A NATS message as the binding sees it (a received `Msg` or `JsMsg` fits). */
export interface NatsMessage {
  readonly headers?: MsgHdrs | undefined;
  readonly data: Uint8Array;
}

/** Options for decoding. */
export interface DecodeOptions {
  /** Largest accepted data in bytes; larger messages fail with CW_ERR_PAYLOAD_TOO_LARGE. Default 1 MiB. */
  maxDataBytes?: number;
}

/** The structured-mode media type. */
export const STRUCTURED_CONTENT_TYPE = "application/cloudevents+json";
/** Default largest data size (DESIGN.md: 1 MiB). */
export const DEFAULT_MAX_DATA_BYTES = 1024 * 1024;
/** What a structured-mode message may carry on top of the data limit: its attributes (64 KiB). */
export const STRUCTURED_MARGIN_BYTES = 64 * 1024;
/**
 * The most header bytes an event may take in binary mode (32 KiB): its attributes as `ce-` headers
 * (`name: value\r\n`, values percent-encoded) plus the message's other headers. JetStream refuses a message whose
 * headers exceed 64 KiB, whatever the stream's settings, so an event over this limit could never be stored (or
 * its quarantine copy, which adds reason headers); the other half is the room for what the mesh adds. A
 * structured-mode event is measured as its binary re-encoding. Over it: CW_ERR_ATTRIBUTES_TOO_LARGE.
 */
export const MAX_ATTRIBUTE_BYTES = 32 * 1024;

const HEADER_PREFIX = "ce-";
const CORE_HEADERS = new Set(["specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"]);
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Encodes `event` in binary mode: `ce-` headers plus the exact data bytes. */
function binary(event: CloudEvent): { headers: MsgHdrs; data: Uint8Array } {
  // append, not set: the headers are new and every name is distinct, and set() rescans all keys twice.
  const h = natsHeaders();
  h.append("ce-specversion", event.specversion);
  h.append("ce-id", encodeHeaderValue(event.id));
  h.append("ce-source", encodeHeaderValue(event.source));
  h.append("ce-type", encodeHeaderValue(event.type));
  if (event.datacontenttype !== undefined) h.append("ce-datacontenttype", encodeHeaderValue(event.datacontenttype));
  if (event.dataschema !== undefined) h.append("ce-dataschema", encodeHeaderValue(event.dataschema));
  if (event.subject !== undefined) h.append("ce-subject", encodeHeaderValue(event.subject));
  if (event.time !== undefined) h.append("ce-time", encodeHeaderValue(event.time));
  for (const [name, value] of Object.entries(event.extensions)) {
    h.append(HEADER_PREFIX + name, encodeHeaderValue(String(value)));
  }
  return { headers: h, data: event.data };
}

/** Encodes `event` in structured mode (JSON format); data bytes stay exact, so the signature survives. */
function structured(event: CloudEvent): { headers: MsgHdrs; data: Uint8Array } {
  const h = natsHeaders();
  h.set("Content-Type", STRUCTURED_CONTENT_TYPE);
  return { headers: h, data: Buffer.from(encodeJsonEvent(event), "utf8") };
}

/** True when the message is a structured-mode event (Content-Type application/cloudevents…). */
function isStructured(msg: NatsMessage): boolean {
  const ct = msg.headers ? headerValue(msg.headers, "content-type") : undefined;
  return ct !== undefined && ct.trim().toLowerCase().startsWith("application/cloudevents");
}

/** True when the message looks like a CloudEvent in either mode (binary needs ce-specversion). */
function isEvent(msg: NatsMessage): boolean {
  return isStructured(msg) || (msg.headers !== undefined && headerValue(msg.headers, "ce-specversion") !== undefined);
}

/**
 * Decodes a NATS message into a validated CloudEvent. Throws DecodeError with a stable code naming the
 * header or attribute at fault; the caller quarantines the original message as `decode_error`.
 */
function toEvent(msg: NatsMessage, opts: DecodeOptions = {}): CloudEvent {
  const max = opts.maxDataBytes ?? DEFAULT_MAX_DATA_BYTES;
  if (isStructured(msg)) {
    // Structured payloads carry attributes too; allow for them on top of the data limit.
    if (msg.data.length > max + STRUCTURED_MARGIN_BYTES) tooLarge(msg.data.length, max);
    let text: string;
    try {
      text = strictUtf8.decode(msg.data);
    } catch (err) {
      throw new DecodeError(ErrorCode.DecodeJson, "structured event is not valid UTF-8", undefined, { cause: err });
    }
    const event = decodeJsonEvent(text);
    if (event.data.length > max) tooLarge(event.data.length, max);
    const size = headerBytes(msg.headers) + attributeBytes(event);
    if (size > MAX_ATTRIBUTE_BYTES) attributesTooLarge(size, "as binary-mode headers, the event's attributes and the message's headers");
    return event;
  }
  if (msg.data.length > max) tooLarge(msg.data.length, max);
  if (!msg.headers) throw new DecodeError(ErrorCode.MissingAttribute, "message has no headers: not a binary-mode CloudEvent", "specversion");
  // Bounded before any value is decoded: the whole header block, as JetStream counts it.
  const size = headerBytes(msg.headers);
  if (size > MAX_ATTRIBUTE_BYTES) attributesTooLarge(size, "the message's headers");
  const attrs: Record<string, string> = {};
  const extensions: Record<string, ExtensionValue> = {};
  for (const [rawName, values] of msg.headers) {
    const name = rawName.toLowerCase();
    if (!name.startsWith(HEADER_PREFIX)) continue;
    const attribute = name.slice(HEADER_PREFIX.length);
    if (values.length !== 1 || attribute in attrs || attribute in extensions) {
      throw new DecodeError(ErrorCode.DecodeHeader, `header ${name} appears more than once`, attribute);
    }
    const value = decodeHeaderValue(values[0]!, rawName);
    if (CORE_HEADERS.has(attribute)) attrs[attribute] = value;
    else extensions[attribute] = value;
  }
  if (attrs.specversion === undefined) {
    throw new DecodeError(ErrorCode.MissingAttribute, `required header ce-specversion is missing`, "specversion");
  }
  return createEvent({ ...(attrs as { id: string; source: string; type: string }), extensions, data: msg.data });
}

/** The bytes of `headers` as the NATS protocol carries them (`name: value\r\n` per value). */
export function headerBytes(headers: MsgHdrs | undefined): number {
  let n = 0;
  if (headers) for (const [name, values] of headers) for (const v of values) n += Buffer.byteLength(name) + Buffer.byteLength(v) + 4;
  return n;
}

/** The bytes of `event`'s attributes as binary-mode `ce-` headers ({@link binary}'s encoding, without building it). */
function attributeBytes(event: CloudEvent): number {
  let n = 0;
  const add = (name: string, value: string | undefined) => {
    // Percent-encoded values are ASCII: their length is their size.
    if (value !== undefined) n += HEADER_PREFIX.length + name.length + encodeHeaderValue(value).length + 4;
  };
  add("specversion", event.specversion);
  add("id", event.id);
  add("source", event.source);
  add("type", event.type);
  add("datacontenttype", event.datacontenttype);
  add("dataschema", event.dataschema);
  add("subject", event.subject);
  add("time", event.time);
  for (const [name, value] of Object.entries(event.extensions)) add(name, String(value));
  return n;
}

function attributesTooLarge(size: number, what: string): never {
  throw new DecodeError(ErrorCode.AttributesTooLarge, `${what} take ${size} bytes; the limit is ${MAX_ATTRIBUTE_BYTES} (MAX_ATTRIBUTE_BYTES, under JetStream's 64 KiB header limit): send large values in the data`);
}

function headerValue(h: MsgHdrs, lowerName: string): string | undefined {
  for (const [k, v] of h) if (k.toLowerCase() === lowerName) return v[0];
  return undefined;
}

function tooLarge(size: number, max: number): never {
  throw new DecodeError(ErrorCode.PayloadTooLarge, `event data is ${size} bytes; the limit is ${max}`, "data");
}

/** The NATS binding as one immutable object of four functions, like the cloudevents SDK's HTTP binding. */
export const NatsBinding = Object.freeze({ binary, structured, toEvent, isEvent });

/** The header bytes of `event` in binary mode, as {@link MAX_ATTRIBUTE_BYTES} counts them (e.g. before publishing an event the mesh made). */
export function binaryHeaderBytes(event: CloudEvent): number {
  return attributeBytes(event);
}
