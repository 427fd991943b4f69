// The live trust store of DESIGN.md: a JetStream KV bucket (causeway_trust) mapping a key id (the signer's
// NKey public key) to its principal, role, the event types it may sign, the capabilities it may address, its
// validity window and its revocation. Every service keeps the whole bucket in memory and watches it, so a
// rotation or a revocation applies to the next message without a restart; `verify` stays synchronous.
//
// Times are compared at second precision: the signature covers an event's `time` truncated to seconds, so a
// finer comparison would trust bytes nobody signed. Entry times are truncated the same way, which makes a
// revocation cover its whole second (fail closed) and a window start at the beginning of its first second.
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ValidateFunction } from "ajv/dist/2020.js";
import { StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV, KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { CausewayError, ConfigError, ErrorCode, QuarantineReason, VerificationError, permissionDenied } from "./errors.ts";
import { normalizeTime } from "./event.ts";
import type { CloudEvent } from "./event.ts";
import { SignatureAlgorithm, verificationKeyFromNkey } from "./keys.ts";
import type { KeyResolver, VerificationKey } from "./keys.ts";
import { MESH_BUCKETS } from "./buckets.ts";
import { KvBucket, Role } from "./principals.ts";
import { StreamName } from "./subjects.ts";
import type { Principals, RoleValue } from "./principals.ts";
import { followBucket, openExistingBucket, type Following } from "./kv-follow.ts";
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
export type TrustedEvent = VerifiedEvent & { readonly entry: TrustEntry };

/** The live trust store: keys for DSSE verification, and who may sign what, when, and address whom. */
export interface TrustStore extends KeyResolver, AsyncDisposable {
  /** The entry of a key id, revoked or not; undefined when there is none (or it is malformed). */
  entry(keyid: string): TrustEntry | undefined;
  /**
   * Verifies signature and digests, then authorizes the signer at the event's signed `time` (now when absent):
   * revocation (CW_ERR_KEY_REVOKED), validity window (CW_ERR_KEY_NOT_VALID), the types it may emit
   * (CW_ERR_UNAUTHORIZED_EMITTER). Throws VerificationError with the quarantine reason.
   *
   * The signed time is the signer's claim, and a stolen key can claim any time, so the key must also have
   * been unrevoked and inside its window when the mesh received the message: `receivedAt`, now by default (a
   * message arriving now); a message read from a stream passes its stored time (`receivedAtOf`).
   */
  verify(event: CloudEvent, opts?: TrustVerifyOptions): TrustedEvent;
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
   * When the mesh received the message, in ms (default: now). `"forwarded"`: the coordinator's forward of
   * critical work, stored later than the handoff where the coordinator checked it (see `receivedAtOf`).
   */
  receivedAt?: number | "forwarded";
}

/** The JetStream stored timestamp of a consumed message, in ms. */
export function storedAt(msg: { readonly info: { readonly timestampNanos: number } }): number {
  return Math.floor(msg.info.timestampNanos / 1e6);
}

/**
 * What `receivedAt` takes for a message read from a stream: its stored time, or `"forwarded"` when it is on
 * one of `forwards` in MESH_CAP (kit `criticalForwardSubjects`): a forward was received, and checked, on its
 * handoff subject, perhaps long before (an approval), so its own stored time says nothing about the signer.
 */
export function receivedAtOf(
  msg: { readonly subject: string; readonly info: { readonly stream: string; readonly timestampNanos: number } },
  forwards: ReadonlySet<string>,
): number | "forwarded" {
  return msg.info.stream === StreamName.Cap && forwards.has(msg.subject) ? "forwarded" : storedAt(msg);
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
}

/** Options for {@link seedTrustStore}. */
export interface SeedTrustOptions {
  /** KV bucket. Default `causeway_trust`. */
  bucket?: string;
  /** Replicas of a bucket this call creates (3 in production clusters). Default 1; an existing bucket is kept as it is. */
  replicas?: 1 | 3 | 5;
}

/** What {@link seedTrustStore} did with one record. */
export interface TrustChange {
  readonly principal: string;
  readonly keyid: string;
  /** `invalid`: the stored entry is malformed and was left alone (fix or delete it); see `problem`. */
  readonly status: "created" | "updated" | "unchanged" | "invalid";
  readonly problem?: CausewayError;
}

/** Options for {@link revokeTrust}. */
export interface RevokeOptions {
  /** Revocation time. Default now. Events stamped at or after it (to the second) fail. */
  at?: number | Date;
  /** Why, kept in the entry and shown by `causeway trust ls`. */
  reason?: string;
  /** KV bucket. Default `causeway_trust`. */
  bucket?: string;
}

/** What {@link revokeTrust} did with one key. */
export interface TrustRevocation {
  readonly principal: string;
  readonly keyid: string;
  /** `already revoked`: it was revoked at or before the requested time, which is kept. */
  readonly status: "revoked" | "already revoked";
  /** The revocation time now in effect (ms). */
  readonly revokedAt: number;
}

/** What {@link listTrustEntries} found. */
export interface TrustListing {
  readonly entries: readonly TrustEntry[];
  /** One CW_ERR_TRUST_ENTRY_INVALID error per malformed entry. */
  readonly problems: readonly CausewayError[];
}

const KEYID = /^U[A-Z2-7]{55}$/;
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
const TRUST_CREATED_BY = MESH_BUCKETS[KvBucket.Trust].createdBy;

let recordValidator: ValidateFunction | undefined;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Opens the trust store bucket, loads every entry and resolves once that initial state is complete; then keeps
 * watching, so puts apply live and deletes make a key unknown. ConfigError CW_ERR_CONFIG when the bucket does
 * not exist (`causeway trust seed` creates it), CW_ERR_PERMISSION_DENIED when the connection may not read it.
 */
export async function openTrustStore(nc: NatsConnection, opts: OpenTrustStoreOptions = {}): Promise<TrustStore> {
  const store = new LiveTrustStore();
  store.following = await followBucket(nc, {
    bucket: opts.bucket ?? KvBucket.Trust, what: "the trust store", createdBy: TRUST_CREATED_BY,
    consequence: "rotations and revocations", apply: (change, report) => store.apply(change, report),
    ...(opts.onProblem && { onProblem: opts.onProblem }), ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }),
    ...(opts.checkMs !== undefined && { checkMs: opts.checkMs }),
  });
  return store;
}

/**
 * The seed records of every principal that declares `emits` in principals.json: its key from `publicKeys`
 * (principal → `U…`), the types it may emit, the capabilities it serves and addresses, valid from `now` with
 * no end. ConfigError CW_ERR_SEED_MISSING names the signers without a public key.
 */
export function trustEntriesFromPrincipals(
  principals: Principals,
  publicKeys: Readonly<Record<string, string>>,
  opts: { now?: number | Date } = {},
): readonly TrustRecord[] {
  const notBefore = formatTime(Number(opts.now ?? Date.now()));
  const signers = Object.values(principals.principals).filter((p) => p.emits.length > 0);
  const missing = signers.filter((p) => !Object.hasOwn(publicKeys, p.name)).map((p) => p.name);
  if (missing.length > 0) {
    throw new ConfigError(ErrorCode.SeedMissing, `no public key for ${missing.join(", ")}: run \`causeway keys ensure\``);
  }
  return Object.freeze(signers.map((p) => {
    const record: TrustRecord = {
      principal: p.name,
      role: p.role,
      algorithm: SignatureAlgorithm.Ed25519,
      public_key: publicKeys[p.name]!,
      emits: [...p.emits],
      addresses: [...new Set([...p.serves, ...p.addresses])],
      not_before: notBefore,
      not_after: null,
      revoked_at: null,
    };
    parseTrustEntry(record.public_key, encodeTrustRecord(record)); // refuses a bad key before anything is written
    return deepFreeze(record);
  }));
}

/**
 * Creates the bucket if missing (the trust store's settings in the bucket table, file storage) and writes each record whose stored entry differs,
 * compare-and-set, so a concurrent change is never overwritten. An existing entry keeps its window and its
 * revocation: seeding again never un-revokes a key. Resolves with what happened to each record.
 */
export async function seedTrustStore(nc: NatsConnection, records: readonly TrustRecord[], opts: SeedTrustOptions = {}): Promise<readonly TrustChange[]> {
  const bucket = opts.bucket ?? KvBucket.Trust;
  const who = `writing the trust store ${bucket}`;
  const denied = (err: unknown) => permissionDenied(err, who) ?? err;
  const table = MESH_BUCKETS[KvBucket.Trust];
  const kv = await new Kvm(nc)
    .create(bucket, {
      history: table.history,
      storage: StorageType.File,
      replicas: opts.replicas ?? 1,
      description: table.description,
    })
    .catch((err: unknown) => {
      throw denied(err);
    });
  const changes: TrustChange[] = [];
  for (const record of records) {
    const keyid = record.public_key;
    const base = { principal: record.principal, keyid };
    try {
      const current = await kv.get(keyid);
      if (current === null || current.operation !== "PUT") {
        await kv.create(keyid, encodeTrustRecord(record));
        changes.push({ ...base, status: "created" });
        continue;
      }
      let stored: TrustRecord;
      try {
        stored = decodeTrustRecord(keyid, current.value);
      } catch (err) {
        changes.push({ ...base, status: "invalid", problem: err as CausewayError });
        continue;
      }
      const merged: TrustRecord = {
        ...record,
        not_before: stored.not_before,
        not_after: stored.not_after ?? null,
        revoked_at: stored.revoked_at ?? null,
        ...(stored.revocation_reason != null && { revocation_reason: stored.revocation_reason }),
      };
      const text = encodeTrustRecord(merged);
      if (text === encodeTrustRecord(stored)) {
        changes.push({ ...base, status: "unchanged" });
      } else {
        await kv.update(keyid, text, current.revision);
        changes.push({ ...base, status: "updated" });
      }
    } catch (err) {
      throw denied(err);
    }
  }
  return Object.freeze(changes);
}

/**
 * Revokes the key `target` (a key id), or every key of the principal `target`, at `at` (default now). A key
 * revoked earlier keeps its earlier time; one revoked later is moved back to `at`. CW_ERR_UNKNOWN_KEY or
 * CW_ERR_UNKNOWN_PRINCIPAL when nothing matches; CW_ERR_TRUST_ENTRY_INVALID when the key's entry is malformed.
 */
export async function revokeTrust(nc: NatsConnection, target: string, opts: RevokeOptions = {}): Promise<readonly TrustRevocation[]> {
  const bucket = opts.bucket ?? KvBucket.Trust;
  const who = `writing the trust store ${bucket}`;
  const at = formatTime(Number(opts.at ?? Date.now()));
  const atMs = Date.parse(at);
  const kv = await openExisting(nc, bucket);
  const stored = await readAll(kv).catch((err: unknown) => {
    throw permissionDenied(err, who) ?? err;
  });
  const byKey = KEYID.test(target);
  const matches = stored.filter((s) => (byKey ? s.keyid === target : s.record?.principal === target));
  if (matches.length === 0) {
    throw byKey
      ? new CausewayError(ErrorCode.UnknownKey, `no trust store entry for key ${target} in ${bucket}`)
      : new ConfigError(ErrorCode.UnknownPrincipal, `no trust store entry for principal "${target}" in ${bucket}: \`causeway trust ls\` lists them`);
  }
  const results: TrustRevocation[] = [];
  for (const s of matches) {
    if (s.problem !== undefined || s.record === undefined) throw s.problem ?? invalidEntry(s.keyid, "unreadable");
    const previous = s.record.revoked_at == null ? undefined : parseTime(s.record.revoked_at, "revoked_at", s.keyid);
    if (previous !== undefined && previous <= atMs) {
      results.push({ principal: s.record.principal, keyid: s.keyid, status: "already revoked", revokedAt: previous });
      continue;
    }
    const next: TrustRecord = { ...s.record, revoked_at: at, revocation_reason: opts.reason ?? s.record.revocation_reason ?? null };
    await kv.update(s.keyid, encodeTrustRecord(next), s.revision).catch((err: unknown) => {
      throw permissionDenied(err, who) ?? err;
    });
    results.push({ principal: s.record.principal, keyid: s.keyid, status: "revoked", revokedAt: atMs });
  }
  return Object.freeze(results);
}

/** Reads every entry of the bucket once (what `causeway trust ls` prints), malformed ones as problems. */
export async function listTrustEntries(nc: NatsConnection, opts: { bucket?: string } = {}): Promise<TrustListing> {
  const bucket = opts.bucket ?? KvBucket.Trust;
  const who = `reading the trust store ${bucket}`;
  const kv = await openExisting(nc, bucket);
  const stored = await readAll(kv).catch((err: unknown) => {
    throw permissionDenied(err, who) ?? err;
  });
  const entries: TrustEntry[] = [];
  const problems: CausewayError[] = [];
  for (const s of stored) {
    if (s.entry !== undefined) entries.push(s.entry);
    else problems.push(s.problem ?? invalidEntry(s.keyid, "unreadable"));
  }
  return Object.freeze({ entries: Object.freeze(entries), problems: Object.freeze(problems) });
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

  verify(event: CloudEvent, opts?: TrustVerifyOptions): TrustedEvent {
    const verified = verifyEvent(event, this, opts);
    // verifyEvent resolved the key through this store a moment ago, synchronously: the entry is still there.
    const compiled = this.#byKeyid.get(verified.verification.keyid);
    if (compiled === undefined) {
      throw new VerificationError(ErrorCode.UnknownKey, `key ${verified.verification.keyid} is not in the trust store`, QuarantineReason.UnknownKey);
    }
    authorize(compiled, event, opts?.receivedAt);
    return Object.freeze({ ...verified, entry: compiled.entry });
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

function authorize(c: Compiled, event: CloudEvent, receivedAt: number | "forwarded" | undefined): void {
  const e = c.entry;
  // The signed time: `time` truncated to seconds (verifyEvent has validated it through the core digest).
  const at = event.time === undefined ? Math.floor(Date.now() / 1000) * 1000 : Date.parse(normalizeTime(event.time));
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
  if (receivedAt !== "forwarded") checkReceived(e, receivedAt ?? Date.now());
  if (!c.anyType && !c.exactTypes.has(event.type) && !matchesPrefix(c.typePrefixes, event.type)) {
    throw new VerificationError(
      ErrorCode.UnauthorizedEmitter,
      `${e.principal} may not emit "${event.type}" (it may emit ${e.emits.length === 0 ? "nothing" : e.emits.join(", ")})`,
      QuarantineReason.UnauthorizedEmitter,
    );
  }
}

// A key must also have been usable when the mesh received the message: a stolen, revoked key signing events
// stamped before its revocation is refused by when they arrived, not by when they claim to be from. (Not
// before its window starts: a key is seeded with the seeding machine's clock, and a server clock a little
// behind would refuse the first events of a rotation; the claimed time is checked against the whole window.)
function checkReceived(e: TrustEntry, receivedAt: number): void {
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

function matchesPrefix(prefixes: readonly string[], type: string): boolean {
  for (const p of prefixes) if (type.length > p.length && type.startsWith(p)) return true;
  return false;
}

function compile(entry: TrustEntry): Compiled {
  const exactTypes = new Set<string>();
  const typePrefixes: string[] = [];
  let anyType = false;
  for (const pattern of entry.emits) {
    if (pattern === "*") anyType = true;
    else if (pattern.endsWith(".*")) typePrefixes.push(pattern.slice(0, -1));
    else exactTypes.add(pattern);
  }
  return { entry, anyType, exactTypes, typePrefixes };
}

function decodeTrustRecord(keyid: string, value: Uint8Array | string): TrustRecord {
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

function toEntry(keyid: string, record: TrustRecord, key?: VerificationKey): TrustEntry {
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

// RFC 3339 → ms, truncated to the second like the signed event time.
function parseTime(value: string, field: string, keyid: string): number {
  try {
    return Date.parse(normalizeTime(value, field));
  } catch (err) {
    throw invalidEntry(keyid, `${field}: ${(err as Error).message}`, err);
  }
}

interface StoredEntry {
  readonly keyid: string;
  readonly revision: number;
  readonly record?: TrustRecord;
  readonly entry?: TrustEntry;
  readonly problem?: CausewayError;
}

async function readAll(kv: KV): Promise<StoredEntry[]> {
  const keys: string[] = [];
  for await (const k of await kv.keys()) keys.push(k);
  const out: StoredEntry[] = [];
  for (const keyid of keys.sort()) {
    const current = await kv.get(keyid);
    if (current === null || current.operation !== "PUT") continue;
    try {
      const record = decodeTrustRecord(keyid, current.value);
      out.push({ keyid, revision: current.revision, record, entry: toEntry(keyid, record) });
    } catch (err) {
      out.push({ keyid, revision: current.revision, problem: err as CausewayError });
    }
  }
  return out;
}

async function openExisting(nc: NatsConnection, bucket: string): Promise<KV> {
  return (await openExistingBucket(nc, bucket, "the trust store", TRUST_CREATED_BY)).kv;
}


function invalidEntry(keyid: string, problem: string, cause?: unknown): CausewayError {
  return new CausewayError(ErrorCode.TrustEntryInvalid, `trust store entry ${keyid} is invalid and ignored: ${problem}`, cause === undefined ? undefined : { cause });
}


function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
