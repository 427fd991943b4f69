// Header value encoding of the CloudEvents NATS binding (1.0.3): space, double quote, percent and every
// character outside printable ASCII are percent-encoded as UTF-8 bytes; decoding first unescapes a
// double-quoted value (older producers), then performs exactly one round of percent-decoding and rejects
// byte sequences that are not valid UTF-8 (overlong forms included).
import { DecodeError, ErrorCode } from "./errors.ts";

// Characters that may stand unencoded: U+0021..U+007E except '"' (U+0022) and '%' (U+0025).
const NEEDS_ENCODING = /[^\x21\x23\x24\x26-\x7e]/;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const HEX = "0123456789ABCDEF";

/** Percent-encodes an attribute's canonical string for a NATS header value. */
export function encodeHeaderValue(value: string): string {
  if (!NEEDS_ENCODING.test(value)) return value; // the common case: ids, URIs, timestamps
  let out = "";
  for (const ch of value) {
    // for…of walks code points, so a surrogate pair is one character, as the binding requires.
    if (ch.length === 1 && !NEEDS_ENCODING.test(ch)) {
      out += ch;
      continue;
    }
    for (const byte of utf8.encode(ch)) out += "%" + HEX[byte >> 4] + HEX[byte & 15];
  }
  return out;
}

/**
 * Decodes a NATS header value into the attribute's string: unquote, then one round of percent-decoding.
 * Throws DecodeError (CW_ERR_DECODE_HEADER) naming `header` on a malformed escape or invalid UTF-8.
 */
export function decodeHeaderValue(raw: string, header: string): string {
  const value = raw.length >= 2 && raw.startsWith('"') && raw.endsWith('"') ? unquote(raw, header) : raw;
  if (!value.includes("%")) return value;
  const bytes: number[] = [];
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code === 0x25) {
      const hi = hexValue(value.charCodeAt(i + 1));
      const lo = hexValue(value.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) {
        throw new DecodeError(ErrorCode.DecodeHeader, `header ${header}: malformed percent-encoding at offset ${i}`, header);
      }
      bytes.push((hi << 4) | lo);
      i += 2;
    } else if (code > 0x7f) {
      // A raw non-ASCII character cannot come from a conforming encoder; keep its UTF-8 bytes anyway.
      const cp = value.codePointAt(i)!;
      for (const b of utf8.encode(String.fromCodePoint(cp))) bytes.push(b);
      if (cp > 0xffff) i++;
    } else {
      bytes.push(code);
    }
  }
  try {
    return strictUtf8.decode(new Uint8Array(bytes));
  } catch (err) {
    throw new DecodeError(ErrorCode.DecodeHeader, `header ${header}: percent-decoded bytes are not valid UTF-8`, header, { cause: err });
  }
}

function unquote(raw: string, header: string): string {
  // RFC 7230 quoted-string: backslash escapes the next character; an unescaped quote inside is an error.
  let out = "";
  for (let i = 1; i < raw.length - 1; i++) {
    const ch = raw[i]!;
    if (ch === "\\") {
      if (i + 1 >= raw.length - 1) throw new DecodeError(ErrorCode.DecodeHeader, `header ${header}: dangling escape in quoted value`, header);
      out += raw[++i];
    } else if (ch === '"') {
      throw new DecodeError(ErrorCode.DecodeHeader, `header ${header}: unescaped quote inside quoted value`, header);
    } else {
      out += ch;
    }
  }
  return out;
}

function hexValue(code: number): number {
  if (code >= 0x30 && code <= 0x39) return code - 0x30;
  if (code >= 0x41 && code <= 0x46) return code - 0x37;
  if (code >= 0x61 && code <= 0x66) return code - 0x57;
  return -1;
}
