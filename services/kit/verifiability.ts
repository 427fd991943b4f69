// The CloudEvents Verifiability extension (DSSE, payload type .../dsse/v0.1), implemented to the letter:
// core and ext digests, the VERIFICATION_MATERIAL JSON object, DSSE v1.0.2 PAE signatures, the signedextattrs
// constraints at signing and verification time, and the strict / passthrough / core-only consumer modes.
//
// One deliberate ordering choice: the DSSE signature is checked before the signed payload JSON is parsed
// (the spec parses it first, step 6, then verifies, step 7). Both accept and reject the same events; ours
// never interprets unauthenticated bytes beyond the envelope, and costs no extra work.
import { hash, sign as cryptoSign, verify as cryptoVerify } from "node:crypto";
import { DecodeError, ErrorCode, QuarantineReason, VerificationError } from "./errors.ts";
import { isCoreAttribute, isExtensionName, normalizeTime, type CloudEvent, type ExtensionValue } from "./event.ts";
import { SignatureAlgorithm, type KeyResolver, type SigningKey, type VerificationKey } from "./keys.ts";

/** The DSSE payloadType this extension version defines. */
export const DSSE_PAYLOAD_TYPE = "https://cloudevents.io/verifiability/dsse/v0.1";
/** The extension attribute carrying the verification material. */
export const DSSE_MATERIAL = "dssematerial";
/**
 * The most signatures an envelope may carry (the mesh signs with one). Checked before any signature is decoded
 * or verified: each costs a public-key verification, at the gateway and again at every verifier downstream.
 */
export const DSSE_MAX_SIGNATURES = 4;
/**
 * The largest `dssematerial` (its base64 text) accepted, checked before it is decoded: 32 KiB, the most header
 * bytes any event may take (MAX_ATTRIBUTE_BYTES in binding.ts), so no event the mesh can store is refused.
 */
export const DSSE_MATERIAL_MAX_BYTES = 32 * 1024;

/** CloudEvents attribute types, which decide an extension value's canonical bytes. */
export type AttributeType = "String" | "Boolean" | "Integer" | "Binary" | "URI" | "URI-reference" | "Timestamp";

/** Types of the extensions Causeway knows; any other string-valued extension is a String. */
export const KNOWN_EXTENSION_TYPES: Readonly<Record<string, AttributeType>> = Object.freeze({
  expirytime: "Timestamp",
  correlationid: "String",
  causationid: "String",
  traceparent: "String",
  tracestate: "String",
});

/** How a verified event is presented: the three modes the extension requires SDKs to offer. */
export const ConsumerMode = { Strict: "strict", Passthrough: "passthrough", CoreOnly: "core-only" } as const;
export type ConsumerModeValue = (typeof ConsumerMode)[keyof typeof ConsumerMode];

/** What a successful verification established. */
export interface Verification {
  readonly keyid: string;
  readonly algorithm: VerificationKey["algorithm"];
  /** `verified`: the ext digest matched; `none`: nothing was signed beyond core; `skipped`: core-only mode. */
  readonly extensions: "verified" | "none" | "skipped";
  /** Extension names covered by the signature, in signing order. */
  readonly signedExtensions: readonly string[];
  /** Extensions on the event that the signature does not cover (dropped in strict mode). */
  readonly unsignedExtensions: readonly string[];
  /** SHA-256 of the event data (hex), computed once here so later stages (lineage) need not hash again. */
  readonly dataDigest: string;
  /** CORE_DIGEST (base64), binding grants and audit records to exactly this event. */
  readonly coreDigest: string;
}

/** A verified event and what was verified. In passthrough mode unsigned extensions are kept apart. */
export interface VerifiedEvent {
  readonly event: CloudEvent;
  readonly verification: Verification;
  /** Passthrough mode only: the unsigned extensions, explicitly unverified. */
  readonly unverified?: Readonly<Record<string, ExtensionValue>>;
}

/** Options for {@link signEvent}. */
export interface SignOptions {
  /** Extensions to sign, in order. Default: every extension on the event except `dssematerial`. */
  signedExtensions?: readonly string[];
  /** Types of extensions beyond {@link KNOWN_EXTENSION_TYPES}. */
  extensionTypes?: Readonly<Record<string, AttributeType>>;
}

/** Options for {@link verifyEvent}. */
export interface VerifyOptions {
  /** Default `strict`: unsigned extensions never reach the caller. */
  mode?: ConsumerModeValue;
  extensionTypes?: Readonly<Record<string, AttributeType>>;
}

/** The parsed VERIFICATION_MATERIAL object. */
export interface VerificationMaterial {
  /** CORE_DIGEST, re-encoded as canonical base64. */
  core: string;
  /** EXT_DIGEST, re-encoded as canonical base64. */
  ext?: string;
  signedextattrs?: string[];
}

/** A DSSE JSON envelope as carried in `dssematerial`. */
export interface DsseEnvelope {
  payloadType: string;
  /** The decoded payload bytes (the SERIALIZED_BODY the signature covers). */
  payload: Uint8Array;
  signatures: { keyid: string; sig: Uint8Array }[];
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const STANDARD_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const ANY_BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

// The digest chain runs on hex strings: node's one-shot hash() with "hex" output costs a third of its
// "buffer" output, and the chain is a dozen small hashes per event. Only the final digest of each chain is
// produced in base64, the form the VERIFICATION_MATERIAL carries.
const EMPTY_HEX = sha256Hex("");

// Digests of low-cardinality attributes (source, type, datacontenttype, dataschema, specversion) repeat on
// every event of a producer; caching them keeps hashing off the per-message budget. Bounded, so an attacker
// sending unique values cannot grow it.
const digestCache = new Map<string, string>();
const DIGEST_CACHE_LIMIT = 4096;

function sha256Hex(bytes: Uint8Array | string): string {
  return hash("sha256", bytes, "hex");
}

function cachedDigest(value: string | undefined): string {
  if (value === undefined) return EMPTY_HEX;
  let d = digestCache.get(value);
  if (d === undefined) {
    if (digestCache.size >= DIGEST_CACHE_LIMIT) digestCache.clear();
    d = sha256Hex(value);
    digestCache.set(value, d);
  }
  return d;
}

/** SHA-256 over the concatenation of hex-encoded digests, in base64. */
function chainDigest(hexDigests: string): string {
  return hash("sha256", Buffer.from(hexDigests, "hex"), "base64");
}

/** DSSE v1.0.2 pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body. */
export function pae(payloadType: string, payload: Uint8Array): Buffer {
  const head = `DSSEv1 ${Buffer.byteLength(payloadType)} ${payloadType} ${payload.length} `;
  const out = Buffer.allocUnsafe(Buffer.byteLength(head) + payload.length);
  const n = out.write(head, 0, "utf8");
  out.set(payload, n);
  return out;
}

/** CORE_DIGEST (base64) of the extension, plus the SHA-256 of the data (hex) that it includes. */
export function coreDigest(event: CloudEvent): { core: string; dataHex: string } {
  const dataHex = event.data.length === 0 ? EMPTY_HEX : sha256Hex(event.data);
  const core = chainDigest(
    sha256Hex(event.id) +
      cachedDigest(event.source) +
      cachedDigest(event.specversion) +
      cachedDigest(event.type) +
      cachedDigest(event.datacontenttype) +
      cachedDigest(event.dataschema) +
      (event.subject === undefined ? EMPTY_HEX : sha256Hex(event.subject)) +
      (event.time === undefined ? EMPTY_HEX : sha256Hex(normalizeTime(event.time))) +
      dataHex,
  );
  return { core, dataHex };
}

/** EXT_DIGEST (base64) over the named extensions, in the given order; an absent one hashes as empty bytes. */
export function extDigest(event: CloudEvent, names: readonly string[], types?: Readonly<Record<string, AttributeType>>): string {
  let chain = "";
  for (const name of names) {
    const value = event.extensions[name];
    chain += value === undefined ? EMPTY_HEX : sha256Hex(canonicalValue(name, value, types));
  }
  return chainDigest(chain);
}

/**
 * Canonical Value Serialization. Throws (case 8f) for a value without a canonical CloudEvents form, such as
 * a boolean-typed attribute holding "yes" or an object that slipped past construction.
 */
export function canonicalValue(name: string, value: unknown, types?: Readonly<Record<string, AttributeType>>): Uint8Array | string {
  const type = types?.[name] ?? KNOWN_EXTENSION_TYPES[name] ?? inferType(value);
  switch (type) {
    case "Boolean":
      if (value === true || value === "true") return "true";
      if (value === false || value === "false") return "false";
      break;
    case "Integer":
      if (typeof value === "number" && Number.isSafeInteger(value)) return String(value);
      if (typeof value === "string" && /^-?(0|[1-9]\d*)$/.test(value)) return value;
      break;
    case "Timestamp":
      if (typeof value === "string") return normalizeTime(value, name);
      break;
    case "Binary":
      if (typeof value === "string" && STANDARD_BASE64.test(value)) return Buffer.from(value, "base64");
      break;
    case "String":
    case "URI":
    case "URI-reference":
      if (typeof value === "string") return value; // hashed as UTF-8
      break;
  }
  throw new DecodeError(ErrorCode.InvalidAttribute, `extension "${name}" has no canonical ${type} form`, name);
}

function inferType(value: unknown): AttributeType | "unknown" {
  if (typeof value === "string") return "String";
  if (typeof value === "boolean") return "Boolean";
  if (typeof value === "number") return "Integer";
  return "unknown";
}

/** Checks a signedextattrs list against the extension's constraints; returns the problem or undefined. */
export function signedExtAttrsProblem(names: readonly unknown[]): string | undefined {
  const seen = new Set<string>();
  for (const name of names) {
    if (typeof name !== "string") return "signedextattrs entries must be strings";
    if (seen.has(name)) return `"${name}" appears twice`;
    seen.add(name);
    if (isCoreAttribute(name)) return `"${name}" is a core context attribute`;
    if (name === DSSE_MATERIAL) return `"${DSSE_MATERIAL}" cannot sign itself`;
    if (!isExtensionName(name)) return `"${name}" is not a valid extension attribute name`;
  }
  return undefined;
}

/**
 * Signs `event` as `key` and returns a copy carrying `dssematerial`. By default every extension present
 * (but `dssematerial`) is signed, so strict consumers see the whole event. Refuses (CW_ERR_SIGN_REFUSED)
 * an invalid signedextattrs list or a value with no canonical form.
 */
export function signEvent(event: CloudEvent, key: SigningKey, opts: SignOptions = {}): CloudEvent {
  const names = opts.signedExtensions ?? Object.keys(event.extensions).filter((n) => n !== DSSE_MATERIAL);
  const problem = signedExtAttrsProblem(names);
  if (problem) throw new VerificationError(ErrorCode.SignRefused, `refusing to sign: ${problem}`);
  const { core } = coreDigest(event);
  let payloadJson = `{"core":"${core}"`;
  if (names.length > 0) {
    let ext: string;
    try {
      ext = extDigest(event, names, opts.extensionTypes);
    } catch (err) {
      throw new VerificationError(ErrorCode.SignRefused, `refusing to sign: ${(err as Error).message}`, QuarantineReason.BadSignature, { cause: err });
    }
    // Names are validated as [a-z0-9]{1,20}, so they need no JSON escaping.
    payloadJson += `,"ext":"${ext}","signedextattrs":["${names.join('","')}"]`;
  }
  const payload = utf8.encode(payloadJson + "}");
  const sig = signBytes(key, pae(DSSE_PAYLOAD_TYPE, payload));
  const envelope = `{"payloadType":"${DSSE_PAYLOAD_TYPE}","payload":"${Buffer.from(payload).toString("base64")}","signatures":[{"keyid":${JSON.stringify(key.keyid)},"sig":"${sig.toString("base64")}"}]}`;
  const material = Buffer.from(envelope, "utf8").toString("base64");
  return Object.freeze({ ...event, extensions: Object.freeze({ ...event.extensions, [DSSE_MATERIAL]: material }) });
}

/** Signs bytes with the key's algorithm (ECDSA signatures in IEEE P1363 r||s form, as DSSE tools expect). */
export function signBytes(key: SigningKey, bytes: Uint8Array): Buffer {
  return key.algorithm === SignatureAlgorithm.Ed25519
    ? cryptoSign(null, bytes, key.privateKey)
    : cryptoSign("sha256", bytes, { key: key.privateKey, dsaEncoding: "ieee-p1363" });
}

/** Verifies a signature made by {@link signBytes}. */
export function verifyBytes(key: VerificationKey, bytes: Uint8Array, sig: Uint8Array): boolean {
  return key.algorithm === SignatureAlgorithm.Ed25519
    ? cryptoVerify(null, bytes, key.publicKey, sig)
    : cryptoVerify("sha256", bytes, { key: key.publicKey, dsaEncoding: "ieee-p1363" }, sig);
}

/**
 * Verification protocol steps 2–5: decode `dssematerial` (base64 of the UTF-8 envelope JSON), parse the
 * DSSE envelope and check its payloadType. Throws VerificationError: CW_ERR_UNSIGNED, CW_ERR_MATERIAL_CORRUPT,
 * CW_ERR_UNKNOWN_PAYLOAD_TYPE.
 */
export function openEnvelope(material: ExtensionValue | undefined): DsseEnvelope {
  if (material === undefined || material === "") {
    throw new VerificationError(ErrorCode.Unsigned, "event is not signed (no dssematerial)");
  }
  if (typeof material !== "string") corrupt("dssematerial is not base64");
  if (material.length > DSSE_MATERIAL_MAX_BYTES) {
    envelopeTooLarge(`dssematerial is ${material.length} bytes; the limit is ${DSSE_MATERIAL_MAX_BYTES} (DSSE_MATERIAL_MAX_BYTES)`);
  }
  const bytes = Buffer.from(material, "base64");
  // Node's decoder skips characters outside the alphabet; re-encoding must give the input back exactly.
  if (bytes.toString("base64") !== material) corrupt("dssematerial is not canonical base64");
  let parsed: unknown;
  try {
    parsed = JSON.parse(strictUtf8.decode(bytes));
  } catch (err) {
    corrupt("dssematerial is not a UTF-8 JSON DSSE envelope", err);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) corrupt("the DSSE envelope is not a JSON object");
  const { payloadType, payload, signatures } = parsed as Record<string, unknown>;
  if (typeof payloadType !== "string" || typeof payload !== "string" || !Array.isArray(signatures) || signatures.length === 0) {
    corrupt("the DSSE envelope needs payloadType, payload and at least one signature");
  }
  if (signatures.length > DSSE_MAX_SIGNATURES) {
    envelopeTooLarge(`the DSSE envelope carries ${signatures.length} signatures; the limit is ${DSSE_MAX_SIGNATURES} (DSSE_MAX_SIGNATURES)`);
  }
  if (payloadType !== DSSE_PAYLOAD_TYPE) {
    throw new VerificationError(ErrorCode.UnknownPayloadType, `unknown DSSE payloadType "${payloadType}"`);
  }
  return { payloadType, payload: decodeDsseBase64(payload, "payload"), signatures: signatures.map(parseSignature) };
}

/**
 * Step 6 on authenticated bytes: parse the VERIFICATION_MATERIAL object and enforce its constraints
 * (core and ext are 32 bytes, ext and signedextattrs together, signedextattrs rules). Unknown fields are ignored.
 */
export function parseVerificationMaterial(payload: Uint8Array): VerificationMaterial {
  let parsed: unknown;
  try {
    parsed = JSON.parse(strictUtf8.decode(payload));
  } catch (err) {
    corrupt("the verification material is not a JSON object", err);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) corrupt("the verification material is not a JSON object");
  const { core, ext, signedextattrs } = parsed as Record<string, unknown>;
  const result: VerificationMaterial = { core: digestField(core, "core") };
  if ((ext === undefined) !== (signedextattrs === undefined)) {
    throw new VerificationError(ErrorCode.SignedExtAttrsInvalid, "ext and signedextattrs must both be present or both be absent");
  }
  if (ext !== undefined) {
    result.ext = digestField(ext, "ext");
    if (!Array.isArray(signedextattrs)) throw new VerificationError(ErrorCode.SignedExtAttrsInvalid, "signedextattrs must be a JSON array");
    const problem = signedExtAttrsProblem(signedextattrs);
    if (problem) throw new VerificationError(ErrorCode.SignedExtAttrsInvalid, `invalid signedextattrs: ${problem}`);
    result.signedextattrs = signedextattrs as string[];
  }
  return result;
}

/**
 * Verifies `event` against the acceptable keys and returns the verified event in the requested mode.
 * Throws VerificationError with a stable code and the quarantine reason it maps to.
 */
export function verifyEvent(event: CloudEvent, keys: KeyResolver, opts: VerifyOptions = {}): VerifiedEvent {
  const mode = opts.mode ?? ConsumerMode.Strict;
  const envelope = openEnvelope(event.extensions[DSSE_MATERIAL]);
  const signed = pae(envelope.payloadType, envelope.payload);
  let signer: VerificationKey | undefined;
  let acceptable = false;
  // At most one verification per keyid: a second signature under a key already tried proves nothing new.
  const tried: string[] = [];
  for (const s of envelope.signatures) {
    if (tried.includes(s.keyid)) continue;
    tried.push(s.keyid);
    const key = keys.key(s.keyid);
    if (key === undefined) continue;
    acceptable = true;
    if (verifyBytes(key, signed, s.sig)) {
      signer = key;
      break;
    }
  }
  if (!acceptable) {
    const ids = envelope.signatures.map((s) => s.keyid).join(", ");
    throw new VerificationError(ErrorCode.UnknownKey, `no acceptable key among signature keyids [${ids}]`, QuarantineReason.UnknownKey);
  }
  if (signer === undefined) throw new VerificationError(ErrorCode.BadSignature, "DSSE signature does not verify");

  const material = parseVerificationMaterial(envelope.payload);
  const { core, dataHex } = coreDigest(event);
  if (core !== material.core) {
    throw new VerificationError(ErrorCode.CoreDigestMismatch, "core digest mismatch: data or a context attribute was modified");
  }
  const signedNames = material.signedextattrs ?? [];
  let extensions: Verification["extensions"] = "none";
  if (material.ext && mode !== ConsumerMode.CoreOnly) {
    let recomputed: string;
    try {
      recomputed = extDigest(event, signedNames, opts.extensionTypes);
    } catch (err) {
      throw new VerificationError(ErrorCode.ExtDigestMismatch, `signed extension cannot be canonicalized: ${(err as Error).message}`, QuarantineReason.BadSignature, { cause: err });
    }
    if (recomputed !== material.ext) {
      throw new VerificationError(ErrorCode.ExtDigestMismatch, "ext digest mismatch: a signed extension attribute was modified");
    }
    extensions = "verified";
  } else if (material.ext) {
    extensions = "skipped";
  }

  const signedSet = new Set(signedNames);
  const kept: Record<string, ExtensionValue> = {};
  const unverified: Record<string, ExtensionValue> = {};
  const unsigned: string[] = [];
  for (const [name, value] of Object.entries(event.extensions)) {
    if (name === DSSE_MATERIAL) continue;
    if (signedSet.has(name) && extensions === "verified") kept[name] = value;
    else {
      if (!signedSet.has(name)) unsigned.push(name);
      unverified[name] = value;
    }
  }
  const verification: Verification = Object.freeze({
    keyid: signer.keyid,
    algorithm: signer.algorithm,
    extensions,
    signedExtensions: Object.freeze([...signedNames]),
    unsignedExtensions: Object.freeze(unsigned),
    dataDigest: dataHex,
    coreDigest: core,
  });
  const verifiedEvent: CloudEvent = Object.freeze({ ...event, extensions: Object.freeze(kept) });
  if (mode === ConsumerMode.Passthrough) {
    return Object.freeze({ event: verifiedEvent, verification, unverified: Object.freeze(unverified) });
  }
  return Object.freeze({ event: verifiedEvent, verification });
}

function parseSignature(value: unknown): { keyid: string; sig: Uint8Array } {
  if (typeof value !== "object" || value === null) corrupt("a DSSE signature must be an object");
  const { keyid, sig } = value as Record<string, unknown>;
  if (typeof sig !== "string") corrupt("a DSSE signature needs a sig");
  // DSSE allows an empty or absent keyid; such a signature can never match an acceptable key.
  return { keyid: typeof keyid === "string" ? keyid : "", sig: decodeDsseBase64(sig, "sig") };
}

// DSSE envelope fields may use standard or URL-safe base64, with or without padding.
function decodeDsseBase64(value: string, field: string): Buffer {
  if (!ANY_BASE64.test(value) || value.length % 4 === 1) corrupt(`DSSE ${field} is not base64`);
  return Buffer.from(value.replace(/-/g, "+").replace(/_/g, "/"), "base64");
}

function digestField(value: unknown, field: string): string {
  if (typeof value !== "string") corrupt(`verification material "${field}" is not base64`);
  const bytes = Buffer.from(value, "base64");
  if (bytes.length !== 32) corrupt(`verification material "${field}" is ${bytes.length} bytes, not a 32-byte SHA-256 digest`);
  // Canonical base64 only, so comparing strings compares bytes and no stray character slips through.
  if (bytes.toString("base64") !== value) corrupt(`verification material "${field}" is not canonical base64`);
  return value;
}

function envelopeTooLarge(message: string): never {
  throw new VerificationError(ErrorCode.EnvelopeTooLarge, message, QuarantineReason.BadSignature);
}

function corrupt(message: string, cause?: unknown): never {
  throw new VerificationError(ErrorCode.MaterialCorrupt, message, QuarantineReason.BadSignature, cause === undefined ? undefined : { cause });
}
