// The live trust store of DESIGN.md: a JetStream KV bucket (causeway_trust) mapping a key id (the signer's
// NKey public key) to its principal, role, the event types it may sign, the capabilities it may address, its
// validity window and its revocation. Every service keeps the whole bucket in memory and watches it, so a
// rotation or a revocation applies to the next message without a restart; `verify` stays synchronous.
//
// Times are compared at second precision: the signature covers an event's `time` truncated to seconds, so a
// finer comparison would trust bytes nobody signed. Entry times are truncated the same way, which makes a
// revocation cover its whole second (fail closed) and a window start at the beginning of its first second.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ValidateFunction } from "ajv/dist/2020.js";
import type { StoredMsg } from "@nats-io/jetstream";
import type { KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { NatsBinding, type DecodeOptions, type NatsMessage } from "./binding.ts";
import { CausewayError, ConfigError, ErrorCode, QuarantineReason, VerificationError } from "./errors.ts";
import { normalizeTime } from "./event.ts";
import type { CloudEvent } from "./event.ts";
import { SignatureAlgorithm, verificationKeyFromNkey } from "./keys.ts";
import type { KeyResolver, VerificationKey } from "./keys.ts";
import { KvBucket, MESH_BUCKETS } from "./buckets.ts";
import { Role, criticalForwardSubjects, loadPrincipals } from "./principals.ts";
import { StreamName } from "./subjects.ts";
import type { RoleValue } from "./principals.ts";
import { followBucket, type Following } from "./kv-follow.ts";
import { verifyEvent } from "./verifiability.ts";
import type { VerifiedEvent, VerifyOptions } from "./verifiability.ts";

/** One trust store entry as stored: the KV value under its key id, in snake_case like the server's own JSON. */
export interface TrustRecord {
  readonly principal: string;
  readonly role: RoleValue;
  readonly algorithm: "ed25519";
  /** The NKey public key (`U…`); always equal to the entry's key. */
  readonly public_key: string;
  /** Event types it may sign: exact, `<prefix>.*` (whole tokens) or `*`. */
  readonly emits: readonly string[];
  /** Capability refs (`research.v1`) it may address. */
  readonly addresses: readonly string[];
  /** RFC 3339; events stamped before it fail with CW_ERR_KEY_NOT_VALID. */
  readonly not_before: string;
  /** RFC 3339 or null (no end); events stamped after it fail with CW_ERR_KEY_NOT_VALID. */
  readonly not_after?: string | null;
  /** RFC 3339 or null; events stamped at or after it fail with CW_ERR_KEY_REVOKED. */
  readonly revoked_at?: string | null;
  /** Why it was revoked (`causeway trust revoke --reason`). */
  readonly revocation_reason?: string | null;
}

/** A validated, frozen trust store entry, with its verification key built once. Times in ms, second precision. */
export interface TrustEntry {
  readonly principal: string;
  readonly role: RoleValue;
  readonly keyid: string;
  readonly emits: readonly string[];
  readonly addresses: readonly string[];
  readonly notBefore: number;
  /** Absent: no end. */
  readonly notAfter?: number;
  /** Absent: not revoked. */
  readonly revokedAt?: number;
  readonly revocationReason?: string;
  readonly key: VerificationKey;
}

/** A verified event, authorized by the trust store entry of its signer. */
export type TrustedEvent = VerifiedEvent & {
  readonly entry: TrustEntry;
  /** The signed `time` in ms (truncated to the second, as the signature covers it); undefined when the event has none. */
  readonly signedAt: number | undefined;
};

/** The live trust store: keys for DSSE verification, and who may sign what, when, and address whom. */
export interface TrustStore extends KeyResolver, AsyncDisposable {
  /** The entry of a key id, revoked or not; undefined when there is none (or it is malformed). */
  entry(keyid: string): TrustEntry | undefined;
  /**
   * Verifies signature and digests, then authorizes the signer at the event's signed `time` (now when absent):
   * revocation (CW_ERR_KEY_REVOKED), validity window (CW_ERR_KEY_NOT_VALID), the types it may emit
   * (CW_ERR_UNAUTHORIZED_EMITTER), and the `source` it may sign under (CW_ERR_SOURCE_MISMATCH: see
   * {@link sourceProblem}). Throws VerificationError with the quarantine reason.
   *
   * The signed time is the signer's claim, and a stolen key can claim any time, so the key must also have
   * been unrevoked and inside its window when the mesh received the message: `receivedAt`, which every caller
   * states. A consumer of a stream never calls this: it calls {@link verifyMessage}, which derives it.
   */
  verify(event: CloudEvent, opts: TrustVerifyOptions): TrustedEvent;
  /**
   * The one entry every stream consumer verifies through: decodes `msg` (or takes `opts.event`, already decoded
   * from it) and verifies it as of when the mesh received it ({@link receivedAt}). Throws DecodeError or
   * VerificationError, each with its quarantine reason.
   */
  verifyMessage(msg: StoredMessage, opts?: VerifyMessageOptions): TrustedEvent;
  /**
   * When the mesh received a stored message, by the mesh's one rule: its stored time, except the coordinator's
   * forwards of critical work on MESH_CAP (`"forwarded"`), which were received, and checked, on their handoff
   * subject, perhaps long before (an approval). A released quarantine entry is checked as of its release, and
   * its republished copy is stored then: its stored time is right as it is.
   */
  receivedAt(msg: StoredMessage): number | "forwarded";
  /** May this entry's principal address capability `<capability>.v<major>`? (false → CW_ERR_UNAUTHORIZED_ADDRESS) */
  mayAddress(entry: TrustEntry, capability: string, major: number): boolean;
  /** Number of valid entries. */
  readonly size: number;
  /** Stops watching; the last known entries stay readable. */
  close(): Promise<void>;
  /**
   * Settles with CW_ERR_CONFIG if the bucket is deleted or replaced: revocations can no longer arrive, so the
   * service must stop (its messages wait in their streams) rather than trust what it loaded. Never rejects.
   */
  readonly lost: Promise<CausewayError>;
}

/** Options of {@link TrustStore.verify}. */
export interface TrustVerifyOptions extends VerifyOptions {
  /**
   * When the mesh received the message, in ms; `"now"` for a message arriving now (an HTTP request, a release
   * or decision being made); `"forwarded"` for the coordinator's forward of critical work. No default: a
   * caller that cannot know says so. Stream consumers use {@link TrustStore.verifyMessage} instead.
   */
  receivedAt: number | "now" | "forwarded";
}

/** Options of {@link TrustStore.verifyMessage}. */
export interface VerifyMessageOptions extends VerifyOptions {
  /** The event already decoded from this message (lineage decodes first, to record what fails). */
  event?: CloudEvent;
  /** Decoding limits, as NatsBinding.toEvent takes them. */
  decode?: DecodeOptions;
}

/** A message as a stream stored it: a JsMsg fits; {@link storedMessage} adapts a direct get's StoredMsg. */
export interface StoredMessage extends NatsMessage {
  readonly subject: string;
  /** Its stream, and when the stream stored it (JetStream's timestamp, ns). */
  readonly info: { readonly stream: string; readonly timestampNanos: number };
}

/** A message read by sequence (direct get), in the shape stream consumers see. */
export function storedMessage(stream: string, m: StoredMsg): StoredMessage & { readonly info: { readonly streamSequence: number } } {
  return { subject: m.subject, headers: m.header, data: m.data, info: { stream, streamSequence: m.seq, timestampNanos: m.time.getTime() * 1e6 } };
}

/** The JetStream stored timestamp of a stored message, in ms. */
function storedAt(msg: StoredMessage): number {
  return Math.floor(msg.info.timestampNanos / 1e6);
}

/** Options for {@link openTrustStore}. */
export interface OpenTrustStoreOptions {
  /** KV bucket. Default `causeway_trust`. */
  bucket?: string;
  /**
   * Called with a CW_ERR_TRUST_ENTRY_INVALID error for each malformed entry (ignored: its key verifies nothing),
   * and with a CW_ERR_CONFIG error if the watch stops while the store is open. Default: process.emitWarning.
   */
  onProblem?: (err: CausewayError) => void;
  /** Milliseconds to wait for the initial state. Default 10000. */
  timeoutMs?: number;
  /** How often to check that the bucket still exists. Default 5000. */
  checkMs?: number;
  /**
   * The coordinator's forward subjects of critical work on MESH_CAP (kit `criticalForwardSubjects`).
   * Default: those of infra/principals.json.
   */
  forwards?: ReadonlySet<string>;
  /**
   * The CloudEvents sources of each upstream principal (infra/upstreams.json `sources`: exact, or a prefix
   * ending in `/`): the only non-mesh sources the store accepts. Default: {@link loadUpstreamSources}.
   */
  upstreamSources?: UpstreamSources;
}

/** Upstream principal → its declared CloudEvents sources (exact, or a prefix when one ends in `/`). */
export type UpstreamSources = ReadonlyMap<string, readonly string[]>;

/** The extension the gateway signs into a notarized event, naming the upstream it came from. */
export const UPSTREAM_EXTENSION = "upstream";
/** The scheme of the mesh's own sources: `causeway://<principal>` (context.ts `principalSource`). */
const MESH_SOURCE = "causeway://";

/**
 * The declared sources of every upstream in `path` (default: `$CAUSEWAY_UPSTREAMS`, else infra/upstreams.json,
 * the file the gateway serves). Only the `sources` are read here; the gateway validates the whole file.
 * ConfigError CW_ERR_UPSTREAMS_INVALID when it cannot be read.
 */
export function loadUpstreamSources(path = process.env.CAUSEWAY_UPSTREAMS ?? join(resolve(import.meta.dirname, "..", ".."), "infra", "upstreams.json")): UpstreamSources {
  let doc: { upstreams?: Record<string, { sources?: unknown }> };
  try {
    doc = JSON.parse(readFileSync(path, "utf8")) as typeof doc;
  } catch (err) {
    throw new ConfigError(ErrorCode.UpstreamsInvalid, `cannot read the upstreams' sources from ${path}: ${(err as Error).message}`, { cause: err });
  }
  const out = new Map<string, readonly string[]>();
  for (const [name, upstream] of Object.entries(doc.upstreams ?? {})) {
    const sources = upstream.sources;
    if (!Array.isArray(sources) || !sources.every((x) => typeof x === "string")) {
      throw new ConfigError(ErrorCode.UpstreamsInvalid, `${path}: /upstreams/${name}/sources is not a list of strings`);
    }
    out.set(name, Object.freeze([...sources as string[]]));
  }
  return out;
}

/** True when `source` is one of `sources` (exact, or under one ending in `/`), as the gateway checks it. */
function sourceListed(sources: readonly string[] | undefined, source: string): boolean {
  return sources !== undefined && sources.some((s) => source === s || (s.endsWith("/") && source.startsWith(s)));
}

/** A key id: an NKey user public key. */
export const KEYID = /^U[A-Z2-7]{55}$/;
const RECORD_SCHEMA = {
  $schema: "https://json-schema.org/draft/2020-12/schema",
  type: "object",
  required: ["principal", "role", "algorithm", "public_key", "emits", "addresses", "not_before"],
  // A misspelt field (say "revokedAt") must not pass as an entry that is simply not revoked.
  additionalProperties: false,
  properties: {
    principal: { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$", maxLength: 64 },
    role: { enum: Object.values(Role) },
    algorithm: { const: SignatureAlgorithm.Ed25519 },
    public_key: { type: "string", pattern: KEYID.source },
    emits: { type: "array", uniqueItems: true, items: { type: "string", pattern: "^(\\*|[a-z0-9][a-z0-9_-]*(\\.[a-z0-9][a-z0-9_-]*)*(\\.\\*)?)$" } },
    addresses: { type: "array", uniqueItems: true, items: { type: "string", pattern: "^[a-z0-9_-]+\\.v(0|[1-9][0-9]*)$" } },
    not_before: { type: "string" },
    not_after: { type: ["string", "null"] },
    revoked_at: { type: ["string", "null"] },
    revocation_reason: { type: ["string", "null"], maxLength: 1000 },
  },
} as const;

// The command that creates and fills the trust bucket, named in the error when it is missing.
export const TRUST_CREATED_BY = MESH_BUCKETS[KvBucket.Trust].createdBy;

let recordValidator: ValidateFunction | undefined;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Opens the trust store bucket, loads every entry and resolves once that initial state is complete; then keeps
 * watching, so puts apply live and deletes make a key unknown. ConfigError CW_ERR_CONFIG when the bucket does
 * not exist (`causeway trust seed` creates it), CW_ERR_PERMISSION_DENIED when the connection may not read it.
 */
export async function openTrustStore(nc: NatsConnection, opts: OpenTrustStoreOptions = {}): Promise<TrustStore> {
  const store = new LiveTrustStore(opts.forwards ?? criticalForwardSubjects(loadPrincipals()), opts.upstreamSources ?? loadUpstreamSources());
  store.following = await followBucket(nc, {
    bucket: opts.bucket ?? KvBucket.Trust, what: "the trust store", createdBy: TRUST_CREATED_BY,
    consequence: "rotations and revocations", apply: (change, report) => store.apply(change, report),
    ...(opts.onProblem && { onProblem: opts.onProblem }), ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }),
    ...(opts.checkMs !== undefined && { checkMs: opts.checkMs }),
  });
  return store;
}

/**
 * Validates a stored value for key `keyid` and builds its frozen entry (the KeyObject is created here, or
 * `key` is reused when given). Throws CausewayError CW_ERR_TRUST_ENTRY_INVALID naming the key and the fault.
 */
export function parseTrustEntry(keyid: string, value: Uint8Array | string, key?: VerificationKey): TrustEntry {
  return toEntry(keyid, decodeTrustRecord(keyid, value), key);
}

/** The stored form of a record: fixed field order, explicit nulls, so equal records are equal bytes. */
export function encodeTrustRecord(record: TrustRecord): string {
  return JSON.stringify({
    principal: record.principal,
    role: record.role,
    algorithm: record.algorithm,
    public_key: record.public_key,
    emits: record.emits,
    addresses: record.addresses,
    not_before: record.not_before,
    not_after: record.not_after ?? null,
    revoked_at: record.revoked_at ?? null,
    ...(record.revocation_reason != null && { revocation_reason: record.revocation_reason }),
  });
}

/** RFC 3339 at second precision (the precision the signature covers), e.g. `2026-11-21T06:41:03Z`. */
export function formatTime(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().slice(0, 19) + "Z";
}

// ---------------------------------------------------------------------------------------------------------

// The entry plus what verify() needs per message, precomputed once per entry.
interface Compiled {
  readonly entry: TrustEntry;
  readonly anyType: boolean;
  readonly exactTypes: ReadonlySet<string>;
  /** `decision.*` is kept as `decision.`: a type matches when it starts with it (so at least one more token). */
  readonly typePrefixes: readonly string[];
}

class LiveTrustStore implements TrustStore {
  readonly #byKeyid = new Map<string, Compiled>();
  readonly #forwards: ReadonlySet<string>;
  readonly #upstreams: UpstreamSources;

  constructor(forwards: ReadonlySet<string>, upstreams: UpstreamSources) {
    this.#forwards = forwards;
    this.#upstreams = upstreams;
  }
  /** Set by openTrustStore once the bucket's initial state is applied. */
  following: Following | undefined;

  get size(): number {
    return this.#byKeyid.size;
  }

  get lost(): Promise<CausewayError> {
    return this.following?.lost ?? new Promise<never>(() => undefined);
  }

  key(keyid: string): VerificationKey | undefined {
    return this.#byKeyid.get(keyid)?.entry.key;
  }

  entry(keyid: string): TrustEntry | undefined {
    return this.#byKeyid.get(keyid)?.entry;
  }

  verifyMessage(msg: StoredMessage, opts: VerifyMessageOptions = {}): TrustedEvent {
    const { event, decode, ...verifyOptions } = opts;
    return this.verify(event ?? NatsBinding.toEvent(msg, decode), { ...verifyOptions, receivedAt: this.receivedAt(msg) });
  }

  receivedAt(msg: StoredMessage): number | "forwarded" {
    return msg.info.stream === StreamName.Cap && this.#forwards.has(msg.subject) ? "forwarded" : storedAt(msg);
  }

  verify(event: CloudEvent, opts: TrustVerifyOptions): TrustedEvent {
    const verified = verifyEvent(event, this, opts);
    // verifyEvent resolved the key through this store a moment ago, synchronously: the entry is still there.
    const compiled = this.#byKeyid.get(verified.verification.keyid);
    if (compiled === undefined) {
      throw new VerificationError(ErrorCode.UnknownKey, `key ${verified.verification.keyid} is not in the trust store`, QuarantineReason.UnknownKey);
    }
    const signedAt = authorize(compiled, event, opts.receivedAt);
    const problem = sourceProblem(compiled.entry, verified, this.#upstreams);
    if (problem !== undefined) throw new VerificationError(ErrorCode.SourceMismatch, problem, QuarantineReason.UnauthorizedEmitter);
    return Object.freeze({ ...verified, entry: compiled.entry, signedAt });
  }

  mayAddress(entry: TrustEntry, capability: string, major: number): boolean {
    return entry.addresses.includes(`${capability}.v${major}`);
  }

  async close(): Promise<void> {
    await this.following?.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** One change of the bucket: a put compiles the entry, a delete or purge makes the key unknown. */
  apply(change: KvWatchEntry, report: (err: CausewayError) => void): void {
    const keyid = change.key;
    if (change.operation !== "PUT") {
      this.#byKeyid.delete(keyid);
      return;
    }
    try {
      const entry = parseTrustEntry(keyid, change.value, this.#byKeyid.get(keyid)?.entry.key);
      this.#byKeyid.set(keyid, compile(entry));
    } catch (err) {
      // A malformed entry verifies nothing, including the key's previous, valid value: fail closed.
      this.#byKeyid.delete(keyid);
      report(err instanceof CausewayError ? err : invalidEntry(keyid, (err as Error).message, err));
    }
  }
}

/** Authorizes the signer of `event`; returns the signed time (ms), parsed once here for every caller. */
function authorize(c: Compiled, event: CloudEvent, receivedAt: TrustVerifyOptions["receivedAt"]): number | undefined {
  const e = c.entry;
  // The signed time: `time` truncated to seconds (verifyEvent has validated it through the core digest).
  const signedAt = event.time === undefined ? undefined : Date.parse(normalizeTime(event.time));
  const at = signedAt ?? Math.floor(Date.now() / 1000) * 1000;
  if (e.revokedAt !== undefined && e.revokedAt <= at) {
    const why = e.revocationReason === undefined ? "" : ` (${e.revocationReason})`;
    throw new VerificationError(
      ErrorCode.KeyRevoked,
      `key ${e.keyid} of ${e.principal} was revoked at ${formatTime(e.revokedAt)}${why}; the event is stamped ${formatTime(at)}`,
      QuarantineReason.RevokedKey,
    );
  }
  if (at < e.notBefore || (e.notAfter !== undefined && at > e.notAfter)) {
    throw new VerificationError(
      ErrorCode.KeyNotValid,
      `key ${e.keyid} of ${e.principal} is valid from ${formatTime(e.notBefore)} to ${e.notAfter === undefined ? "no end" : formatTime(e.notAfter)}; the event is stamped ${formatTime(at)}`,
      QuarantineReason.UnknownKey,
    );
  }
  // Then as of when the mesh received it, which a stolen key cannot choose.
  if (receivedAt !== "forwarded") checkReceived(e, receivedAt === "now" ? Date.now() : receivedAt);
  if (!c.anyType && !c.exactTypes.has(event.type) && !matchesPrefix(c.typePrefixes, event.type)) {
    throw new VerificationError(
      ErrorCode.UnauthorizedEmitter,
      `${e.principal} may not emit "${event.type}" (it may emit ${e.emits.length === 0 ? "nothing" : e.emits.join(", ")})`,
      QuarantineReason.UnauthorizedEmitter,
    );
  }
  return signedAt;
}

/**
 * Why the signer may not sign under the event's `source`, or undefined when it may. A principal signs only in
 * its own name: a mesh source `causeway://<principal>` must name the signer's principal, so nobody's key
 * can put words in another principal's mouth (and collide with its derived ids). Any other source is an
 * upstream system's: accepted from that upstream's own key when the source is one it declares, or from the
 * gateway when its signed `upstream` extension names an upstream that declares it (how the gateway notarizes).
 */
export function sourceProblem(e: TrustEntry, verified: VerifiedEvent, upstreams: UpstreamSources): string | undefined {
  const source = verified.event.source;
  if (source.startsWith(MESH_SOURCE)) {
    return source === MESH_SOURCE + e.principal ? undefined : `source "${source}" is not the signer's: ${e.principal} signs as "${MESH_SOURCE}${e.principal}"`;
  }
  if (e.role === Role.Upstream) {
    return sourceListed(upstreams.get(e.principal), source) ? undefined : `source "${source}" is not one of upstream ${e.principal}'s declared sources`;
  }
  if (e.role === Role.Gateway) {
    const named = verified.verification.signedExtensions.includes(UPSTREAM_EXTENSION) ? verified.event.extensions[UPSTREAM_EXTENSION] : undefined;
    if (typeof named !== "string") return `the gateway signed source "${source}" without a signed "${UPSTREAM_EXTENSION}" extension naming the upstream it came from`;
    return sourceListed(upstreams.get(named), source) ? undefined : `source "${source}" is not one of upstream ${named}'s declared sources, which the gateway notarized it for`;
  }
  return `source "${source}" is not a mesh source: ${e.principal} (${e.role}) signs only as "${MESH_SOURCE}${e.principal}"; other sources come from upstreams through the gateway`;
}

/**
 * How far before a key's `not_before` the mesh may receive its messages: a key is seeded with the seeding
 * machine's clock, and a server clock a little behind it must not refuse the first events of a rotation.
 */
export const KEY_NOT_BEFORE_SKEW_MS = 60_000;

// A key must also have been usable when the mesh received the message: a stolen, revoked key signing events
// stamped before its revocation is refused by when they arrived, not by when they claim to be from; a stolen
// pre-staged key (seeded with a window that starts later) cannot sign events stamped inside its future window
// and have them accepted now. Before the window starts, KEY_NOT_BEFORE_SKEW_MS of clock skew is allowed.
function checkReceived(e: TrustEntry, receivedAt: number): void {
  if (receivedAt < e.notBefore - KEY_NOT_BEFORE_SKEW_MS) {
    throw new VerificationError(
      ErrorCode.KeyNotValid,
      `key ${e.keyid} of ${e.principal} is valid from ${formatTime(e.notBefore)}; the message reached the mesh at ${formatTime(receivedAt)}, more than ${KEY_NOT_BEFORE_SKEW_MS / 1000} s before, whatever time it claims`,
      QuarantineReason.UnknownKey,
    );
  }
  if (e.revokedAt !== undefined && e.revokedAt <= receivedAt) {
    const why = e.revocationReason === undefined ? "" : ` (${e.revocationReason})`;
    throw new VerificationError(
      ErrorCode.KeyRevoked,
      `key ${e.keyid} of ${e.principal} was revoked at ${formatTime(e.revokedAt)}${why}; the message reached the mesh at ${formatTime(receivedAt)}, whatever time it claims`,
      QuarantineReason.RevokedKey,
    );
  }
  // notAfter is truncated to its second and covers all of it, as for the signed time.
  if (e.notAfter !== undefined && receivedAt >= e.notAfter + 1000) {
    throw new VerificationError(
      ErrorCode.KeyNotValid,
      `key ${e.keyid} of ${e.principal} was valid to ${formatTime(e.notAfter)}; the message reached the mesh at ${formatTime(receivedAt)}, whatever time it claims`,
      QuarantineReason.UnknownKey,
    );
  }
}

/**
 * True when `emits` — a principal's or a trust entry's patterns: exact types, `<prefix>.*` (whole tokens) or `*` —
 * covers event type `type`, as the trust store decides it.
 */
export function emitsCover(emits: readonly string[], type: string): boolean {
  const { anyType, exactTypes, typePrefixes } = compilePatterns(emits);
  return anyType || exactTypes.has(type) || matchesPrefix(typePrefixes, type);
}

function matchesPrefix(prefixes: readonly string[], type: string): boolean {
  for (const p of prefixes) if (type.length > p.length && type.startsWith(p)) return true;
  return false;
}

function compile(entry: TrustEntry): Compiled {
  return { entry, ...compilePatterns(entry.emits) };
}

function compilePatterns(emits: readonly string[]): Omit<Compiled, "entry"> {
  const exactTypes = new Set<string>();
  const typePrefixes: string[] = [];
  let anyType = false;
  for (const pattern of emits) {
    if (pattern === "*") anyType = true;
    else if (pattern.endsWith(".*")) typePrefixes.push(pattern.slice(0, -1));
    else exactTypes.add(pattern);
  }
  return { anyType, exactTypes, typePrefixes };
}

/** Parses and validates a stored record (CW_ERR_TRUST_ENTRY_INVALID naming the key and the fault). */
export function decodeTrustRecord(keyid: string, value: Uint8Array | string): TrustRecord {
  let doc: unknown;
  try {
    doc = JSON.parse(typeof value === "string" ? value : utf8.decode(value));
  } catch (err) {
    throw invalidEntry(keyid, `not UTF-8 JSON: ${(err as Error).message}`, err);
  }
  const validate = (recordValidator ??= new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true }).compile(RECORD_SCHEMA));
  if (!validate(doc)) {
    const problems = (validate.errors ?? []).map((e) => {
      const path = e.keyword === "additionalProperties" ? `/${String((e.params as { additionalProperty: string }).additionalProperty)}` : e.instancePath || "/";
      return `${path}: ${e.keyword === "additionalProperties" ? "unknown field" : (e.message ?? e.keyword)}`;
    });
    throw invalidEntry(keyid, problems.join("; "));
  }
  const record = doc as TrustRecord;
  if (record.public_key !== keyid) throw invalidEntry(keyid, `public_key ${record.public_key} differs from the entry's key`);
  const notBefore = parseTime(record.not_before, "not_before", keyid);
  if (record.not_after != null && parseTime(record.not_after, "not_after", keyid) < notBefore) {
    throw invalidEntry(keyid, `not_after ${record.not_after} is before not_before ${record.not_before}`);
  }
  if (record.revoked_at != null) parseTime(record.revoked_at, "revoked_at", keyid);
  return record;
}

/** The frozen entry of a validated record. */
export function toEntry(keyid: string, record: TrustRecord, key?: VerificationKey): TrustEntry {
  let verificationKey = key;
  if (verificationKey === undefined || verificationKey.keyid !== keyid) {
    try {
      verificationKey = verificationKeyFromNkey(keyid);
    } catch (err) {
      throw invalidEntry(keyid, `not a valid NKey public key: ${(err as Error).message}`, err);
    }
  }
  return Object.freeze({
    principal: record.principal,
    role: record.role,
    keyid,
    emits: Object.freeze([...record.emits]),
    addresses: Object.freeze([...record.addresses]),
    notBefore: parseTime(record.not_before, "not_before", keyid),
    ...(record.not_after != null && { notAfter: parseTime(record.not_after, "not_after", keyid) }),
    ...(record.revoked_at != null && { revokedAt: parseTime(record.revoked_at, "revoked_at", keyid) }),
    ...(record.revocation_reason != null && { revocationReason: record.revocation_reason }),
    key: verificationKey,
  });
}

/** RFC 3339 → ms, truncated to the second like the signed event time. */
export function parseTime(value: string, field: string, keyid: string): number {
  try {
    return Date.parse(normalizeTime(value, field));
  } catch (err) {
    throw invalidEntry(keyid, `${field}: ${(err as Error).message}`, err);
  }
}

/** CW_ERR_TRUST_ENTRY_INVALID for the entry `keyid`. */
export function invalidEntry(keyid: string, problem: string, cause?: unknown): CausewayError {
  return new CausewayError(ErrorCode.TrustEntryInvalid, `trust store entry ${keyid} is invalid and ignored: ${problem}`, cause === undefined ? undefined : { cause });
}
