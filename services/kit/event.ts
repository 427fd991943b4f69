// The CloudEvent as Causeway holds it: validated once at construction, frozen, data kept as the exact
// bytes the producer signed (bytes are sacred: never re-serialized between producer and consumer).
import { DecodeError, ErrorCode } from "./errors.ts";

/** A value of an extension attribute. CloudEvents' Integer, Boolean and String types; others travel as strings. */
export type ExtensionValue = string | number | boolean;

/** A validated, immutable CloudEvent 1.0. Change one by copying ({@link withAttributes}). */
export interface CloudEvent {
  readonly specversion: "1.0";
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly datacontenttype?: string;
  readonly dataschema?: string;
  readonly subject?: string;
  /** RFC 3339 timestamp exactly as the producer wrote it (the signature covers it truncated to seconds). */
  readonly time?: string;
  /** Extension attributes by lowercase name, including `dssematerial` when signed. */
  readonly extensions: Readonly<Record<string, ExtensionValue>>;
  /** The event data as exact bytes; empty when the event has none. */
  readonly data: Uint8Array;
}

/** The attributes a caller provides; `specversion` defaults to 1.0 and `data` may be bytes, a string or JSON. */
export interface EventInit {
  id: string;
  source: string;
  type: string;
  specversion?: string;
  datacontenttype?: string;
  dataschema?: string;
  subject?: string;
  time?: string;
  extensions?: Record<string, ExtensionValue>;
  /** Bytes are kept as they are; a string is UTF-8 encoded; anything else is JSON-serialized once. */
  data?: Uint8Array | string | unknown;
}

/** The context attributes CloudEvents defines (never extension names). */
export const CORE_ATTRIBUTES = ["id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time"] as const;
const CORE_SET: ReadonlySet<string> = new Set(CORE_ATTRIBUTES);

/** Extension names: lowercase alphanumeric, at most 20 characters (DESIGN.md, CloudEvents naming rule). */
const EXTENSION_NAME = /^[a-z0-9]{1,20}$/;
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:([Zz])|([+-])(\d{2}):(\d{2}))?$/;
const ISO_UTC_MS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const MEDIA_TYPE = /^[A-Za-z0-9!#$&^_.+-]+\/[A-Za-z0-9!#$&^_.+-]+(\s*;.*)?$/;
const URI_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:/;
const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);

/** True for a name CloudEvents reserves for context attributes. */
export function isCoreAttribute(name: string): boolean {
  return CORE_SET.has(name);
}

/** True for a valid extension attribute name. */
export function isExtensionName(name: string): boolean {
  return EXTENSION_NAME.test(name) && !CORE_SET.has(name) && name !== "data" && name !== "data_base64";
}

/** Builds and validates an event; throws DecodeError naming the attribute at fault. */
export function createEvent(init: EventInit): CloudEvent {
  const specversion = init.specversion ?? "1.0";
  if (specversion !== "1.0") {
    throw new DecodeError(ErrorCode.UnsupportedSpecVersion, `specversion "${specversion}" is not supported (expected "1.0")`, "specversion");
  }
  requireString("id", init.id);
  requireString("source", init.source);
  requireString("type", init.type);
  if (init.source.trim() !== init.source || /\s/.test(init.source)) invalid("source", "must be a URI-reference without whitespace");
  optionalString("subject", init.subject);
  if (init.datacontenttype !== undefined) {
    optionalString("datacontenttype", init.datacontenttype);
    if (!MEDIA_TYPE.test(init.datacontenttype)) invalid("datacontenttype", `"${init.datacontenttype}" is not an RFC 2046 media type`);
  }
  if (init.dataschema !== undefined) {
    optionalString("dataschema", init.dataschema);
    if (!URI_SCHEME.test(init.dataschema)) invalid("dataschema", `"${init.dataschema}" is not an absolute URI`);
  }
  if (init.time !== undefined) {
    optionalString("time", init.time);
    normalizeTime(init.time, "time");
  }
  const extensions: Record<string, ExtensionValue> = {};
  for (const [name, value] of Object.entries(init.extensions ?? {})) {
    if (!isExtensionName(name)) invalid(name, `extension name "${name}" must be 1-20 lowercase letters or digits and not a context attribute`);
    if (typeof value === "number" && !Number.isSafeInteger(value)) invalid(name, "an Integer extension must be a safe integer");
    if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") {
      invalid(name, "an extension value must be a string, integer or boolean");
    }
    extensions[name] = value;
  }
  const event: CloudEvent = {
    specversion: "1.0",
    id: init.id,
    source: init.source,
    type: init.type,
    ...(init.datacontenttype !== undefined && { datacontenttype: init.datacontenttype }),
    ...(init.dataschema !== undefined && { dataschema: init.dataschema }),
    ...(init.subject !== undefined && { subject: init.subject }),
    ...(init.time !== undefined && { time: init.time }),
    extensions: Object.freeze(extensions),
    data: toBytes(init.data),
  };
  return Object.freeze(event);
}

/** A copy of `event` with attributes and extensions replaced (`undefined` removes an extension). */
export function withAttributes(
  event: CloudEvent,
  changes: Partial<Omit<EventInit, "extensions">> & { extensions?: Record<string, ExtensionValue | undefined> },
): CloudEvent {
  const extensions: Record<string, ExtensionValue> = { ...event.extensions };
  for (const [name, value] of Object.entries(changes.extensions ?? {})) {
    if (value === undefined) delete extensions[name];
    else extensions[name] = value;
  }
  return createEvent({ ...event, ...changes, extensions, data: changes.data ?? event.data });
}

/**
 * Normalizes an RFC 3339 timestamp to Zulu time with second precision, as the Verifiability extension
 * hashes it: `2026-05-13T10:49:12.123456+01:00` → `2026-05-13T09:49:12Z`; a value without offset is UTC.
 * Computed from the fields, not Date.parse, which would read an offset-less value as local time.
 */
export function normalizeTime(value: string, attribute = "time"): string {
  // Fast path for what mesh producers emit (Date.toISOString(): Zulu, milliseconds): validate, truncate.
  if (value.length === 24 && ISO_UTC_MS.test(value)) {
    const truncated = value.slice(0, 19) + "Z";
    if (Date.parse(truncated) === Date.parse(value) - Number(value.slice(20, 23))) return truncated;
  }
  const m = RFC3339.exec(value);
  if (!m) invalid(attribute, `"${value}" is not an RFC 3339 timestamp`);
  const [, y, mo, d, h, mi, s, , , sign, oh, om] = m;
  const month = Number(mo), day = Number(d), hour = Number(h), minute = Number(mi), second = Number(s);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
    invalid(attribute, `"${value}" is not a valid date and time`);
  }
  let ms = Date.UTC(Number(y), month - 1, day, hour, minute, second);
  if (new Date(ms).getUTCDate() !== day && second !== 60) invalid(attribute, `"${value}" names a day the month does not have`);
  if (sign) ms -= (sign === "-" ? -1 : 1) * (Number(oh) * 60 + Number(om)) * 60_000;
  return new Date(ms).toISOString().slice(0, 19) + "Z";
}

const utf8Text = new TextDecoder();

/** The data as a string (UTF-8). */
export function dataText(event: Pick<CloudEvent, "data">): string {
  return utf8Text.decode(event.data);
}

/** The data parsed as JSON (after verification, never before: the signature covers the bytes). Throws on invalid JSON. */
export function dataJson<T = unknown>(event: Pick<CloudEvent, "data">): T {
  return JSON.parse(utf8Text.decode(event.data)) as T;
}

function toBytes(data: unknown): Uint8Array {
  if (data === undefined || data === null) return EMPTY;
  if (data instanceof Uint8Array) return data;
  if (typeof data === "string") return utf8.encode(data);
  return utf8.encode(JSON.stringify(data));
}

function requireString(name: string, value: unknown): asserts value is string {
  if (value === undefined || value === null) {
    throw new DecodeError(ErrorCode.MissingAttribute, `required attribute "${name}" is missing`, name);
  }
  if (typeof value !== "string" || value.length === 0) invalid(name, "must be a non-empty string");
}

function optionalString(name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== "string" || value.length === 0)) invalid(name, "must be a non-empty string when present");
}

function invalid(attribute: string, why: string): never {
  throw new DecodeError(ErrorCode.InvalidAttribute, `attribute "${attribute}" ${why}`, attribute);
}
