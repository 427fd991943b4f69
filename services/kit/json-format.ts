// The CloudEvents JSON event format, keeping data bytes exact. Signatures cover the data *bytes*, so a
// structured event must carry the very bytes a binary event carries: JSON data is embedded verbatim on
// encode, and on decode the raw text span of the "data" member is taken as the data bytes (JSON.parse
// alone would lose them). Data that cannot be embedded verbatim travels as data_base64.
import { DecodeError, ErrorCode } from "./errors.ts";
import { createEvent, type CloudEvent, type ExtensionValue } from "./event.ts";

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** True when a media type denotes JSON (absent means JSON in the JSON format). */
export function isJsonContentType(datacontenttype: string | undefined): boolean {
  if (datacontenttype === undefined) return true;
  const base = datacontenttype.split(";", 1)[0]!.trim().toLowerCase();
  return base === "application/json" || base === "text/json" || base.endsWith("+json");
}

/** Serializes `event` in the JSON format; the data bytes survive exactly. */
export function encodeJsonEvent(event: CloudEvent): string {
  const head: Record<string, string | ExtensionValue> = { specversion: event.specversion, id: event.id, source: event.source, type: event.type };
  if (event.datacontenttype !== undefined) head.datacontenttype = event.datacontenttype;
  if (event.dataschema !== undefined) head.dataschema = event.dataschema;
  if (event.subject !== undefined) head.subject = event.subject;
  if (event.time !== undefined) head.time = event.time;
  Object.assign(head, event.extensions);
  const attrs = JSON.stringify(head);
  if (event.data.length === 0) return attrs;
  return `${attrs.slice(0, -1)},${dataMember(event)}}`;
}

function dataMember(event: CloudEvent): string {
  const text = decodeUtf8(event.data);
  if (text !== undefined) {
    if (isJsonContentType(event.datacontenttype) && isVerbatimJson(text)) return `"data":${text}`;
    if (!isJsonContentType(event.datacontenttype)) return `"data":${JSON.stringify(text)}`;
  }
  return `"data_base64":"${Buffer.from(event.data).toString("base64")}"`;
}

// Verbatim embedding must round-trip to the same bytes: a valid JSON value with no surrounding whitespace.
function isVerbatimJson(text: string): boolean {
  if (text.length === 0 || /^\s|\s$/.test(text)) return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses one JSON-format event. For JSON data the exact source text of the "data" value becomes the data
 * bytes; for other media types a string value is UTF-8 encoded; data_base64 is decoded.
 * Throws DecodeError (CW_ERR_DECODE_JSON / CW_ERR_MISSING_ATTRIBUTE / CW_ERR_INVALID_ATTRIBUTE).
 */
export function decodeJsonEvent(text: string): CloudEvent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new DecodeError(ErrorCode.DecodeJson, `structured event is not valid JSON: ${(err as Error).message}`, undefined, { cause: err });
  }
  const span = dataSpan(text);
  return eventFromJsonObject(parsed, () => span);
}

/** Parses a JSON batch (`application/cloudevents-batch+json`): an array of JSON-format events. */
export function decodeJsonBatch(text: string): CloudEvent[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new DecodeError(ErrorCode.DecodeJson, `batch is not valid JSON: ${(err as Error).message}`, undefined, { cause: err });
  }
  if (!Array.isArray(parsed)) throw new DecodeError(ErrorCode.DecodeJson, "a batch must be a JSON array of events");
  const spans = arrayElementSpans(text);
  return parsed.map((item, i) => {
    const span = dataSpan(spans[i]!);
    return eventFromJsonObject(item, () => span);
  });
}

function eventFromJsonObject(parsed: unknown, rawData: () => string | undefined): CloudEvent {
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new DecodeError(ErrorCode.DecodeJson, "a structured event must be a JSON object");
  }
  // The JSON format treats a member whose value is null as absent.
  const members = Object.fromEntries(Object.entries(parsed).filter(([, v]) => v !== null));
  const { specversion, id, source, type, datacontenttype, dataschema, subject, time, data, data_base64, ...rest } = members;
  for (const [name, value] of Object.entries({ specversion, id, source, type, datacontenttype, dataschema, subject, time })) {
    if (value !== undefined && typeof value !== "string") {
      throw new DecodeError(ErrorCode.InvalidAttribute, `attribute "${name}" must be a string`, name);
    }
  }
  if (specversion === undefined) throw new DecodeError(ErrorCode.MissingAttribute, `required attribute "specversion" is missing`, "specversion");
  if (data !== undefined && data_base64 !== undefined) {
    throw new DecodeError(ErrorCode.InvalidAttribute, `"data" and "data_base64" are mutually exclusive`, "data");
  }
  let bytes: Uint8Array | undefined;
  if (data_base64 !== undefined) {
    if (typeof data_base64 !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(data_base64) || data_base64.length % 4 !== 0) {
      throw new DecodeError(ErrorCode.InvalidAttribute, `"data_base64" is not base64`, "data_base64");
    }
    bytes = Buffer.from(data_base64, "base64");
  } else if (data !== undefined) {
    if (isJsonContentType(datacontenttype as string | undefined)) bytes = utf8.encode(rawData()!);
    else if (typeof data === "string") bytes = utf8.encode(data);
    else throw new DecodeError(ErrorCode.InvalidAttribute, `"data" of media type ${String(datacontenttype)} must be a string`, "data");
  }
  const extensions: Record<string, ExtensionValue> = {};
  for (const [name, value] of Object.entries(rest)) {
    if (typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean") {
      throw new DecodeError(ErrorCode.InvalidAttribute, `extension "${name}" must be a string, integer or boolean`, name);
    }
    extensions[name] = value;
  }
  return createEvent({
    specversion: specversion as string, id: id as string, source: source as string, type: type as string,
    datacontenttype: datacontenttype as string | undefined, dataschema: dataschema as string | undefined,
    subject: subject as string | undefined, time: time as string | undefined,
    extensions, data: bytes,
  });
}

function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

// --- a minimal scanner over already-validated JSON text, to find raw value spans ---

/**
 * The exact source text of the top-level object's "data" member value, if any. Rejects duplicate member
 * names: JSON.parse keeps the last one, so a duplicate could make the parsed attributes and the signed data
 * bytes disagree.
 */
function dataSpan(objectText: string): string | undefined {
  const seen = new Set<string>();
  let span: string | undefined;
  let i = skipWs(objectText, 0);
  if (objectText[i] !== "{") return undefined;
  i = skipWs(objectText, i + 1);
  while (i < objectText.length && objectText[i] !== "}") {
    const keyEnd = skipString(objectText, i);
    const key = JSON.parse(objectText.slice(i, keyEnd)) as string;
    if (seen.has(key)) throw new DecodeError(ErrorCode.DecodeJson, `member "${key}" appears twice in the structured event`, key);
    seen.add(key);
    i = skipWs(objectText, keyEnd);
    i = skipWs(objectText, i + 1); // the ':'
    const valueEnd = skipValue(objectText, i);
    if (key === "data") span = objectText.slice(i, valueEnd);
    i = skipWs(objectText, valueEnd);
    if (objectText[i] === ",") i = skipWs(objectText, i + 1);
  }
  return span;
}

function arrayElementSpans(arrayText: string): string[] {
  const spans: string[] = [];
  let i = skipWs(arrayText, 0) + 1;
  i = skipWs(arrayText, i);
  while (i < arrayText.length && arrayText[i] !== "]") {
    const end = skipValue(arrayText, i);
    spans.push(arrayText.slice(i, end));
    i = skipWs(arrayText, end);
    if (arrayText[i] === ",") i = skipWs(arrayText, i + 1);
  }
  return spans;
}

function skipWs(s: string, i: number): number {
  while (i < s.length && (s[i] === " " || s[i] === "\n" || s[i] === "\r" || s[i] === "\t")) i++;
  return i;
}

function skipString(s: string, i: number): number {
  for (i++; i < s.length; i++) {
    if (s[i] === "\\") i++;
    else if (s[i] === '"') return i + 1;
  }
  return i;
}

function skipValue(s: string, i: number): number {
  const c = s[i];
  if (c === '"') return skipString(s, i);
  if (c === "{" || c === "[") {
    let depth = 0;
    for (; i < s.length; i++) {
      const ch = s[i];
      if (ch === '"') i = skipString(s, i) - 1;
      else if (ch === "{" || ch === "[") depth++;
      else if (ch === "}" || ch === "]") {
        depth--;
        if (depth === 0) return i + 1;
      }
    }
    return i;
  }
  while (i < s.length && !",}] \n\r\t".includes(s[i]!)) i++;
  return i;
}
