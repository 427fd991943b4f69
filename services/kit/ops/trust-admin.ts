// Trust administration, for operator tooling (`causeway trust seed|ls|revoke`, the demo, test fixtures): the
// seed records of principals.json, seeding, revoking and listing the trust bucket. The services themselves only
// read the bucket through the live verifier in ../trust.ts.
import { StorageType } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { CausewayError, ConfigError, ErrorCode, permissionDenied } from "../errors.ts";
import { SignatureAlgorithm } from "../keys.ts";
import { openExistingBucket } from "../kv-follow.ts";
import { KvBucket, MESH_BUCKETS } from "../buckets.ts";
import { Role, type Principals } from "../principals.ts";
import {
  KEYID, TRUST_CREATED_BY, decodeTrustRecord, encodeTrustRecord, formatTime, invalidEntry, parseTime, parseTrustEntry, toEntry,
  type TrustEntry, type TrustRecord,
} from "../trust.ts";

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
  readonly problems: readonly { readonly keyid: string; readonly error: CausewayError }[];
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
  // Everyone who signs events, and every agent (it runs with its key in the trust store even when it emits nothing).
  const signers = Object.values(principals.principals).filter((p) => p.emits.length > 0 || p.role === Role.Agent);
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
  const problems: { keyid: string; error: CausewayError }[] = [];
  for (const s of stored) {
    if (s.entry !== undefined) entries.push(s.entry);
    else problems.push(Object.freeze({ keyid: s.keyid, error: s.problem ?? invalidEntry(s.keyid, "unreadable") }));
  }
  return Object.freeze({ entries: Object.freeze(entries), problems: Object.freeze(problems) });
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


function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
