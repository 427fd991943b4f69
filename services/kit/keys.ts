// Signing and verification keys as node:crypto KeyObjects, created once per key and cached by the caller.
// A principal's DSSE keyid is its NKey public key, so its NATS identity and signing identity are one key:
// an NKey seed is an Ed25519 seed, which becomes a KeyObject here (nkeys.js signing is ~200x slower).
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { fromPublic, fromSeed } from "@nats-io/nkeys";
import { CausewayError, ErrorCode } from "./errors.ts";

/** Signature algorithms the mesh accepts. */
export const SignatureAlgorithm = { Ed25519: "ed25519", EcdsaP256: "ecdsa-p256" } as const;
export type SignatureAlgorithmValue = (typeof SignatureAlgorithm)[keyof typeof SignatureAlgorithm];

/** A public key that may verify signatures, identified by its DSSE keyid. */
export interface VerificationKey {
  readonly keyid: string;
  readonly algorithm: SignatureAlgorithmValue;
  readonly publicKey: KeyObject;
}

/** A private key that signs as `keyid`. Never log it; it has no JSON form on purpose. */
export interface SigningKey extends VerificationKey {
  readonly privateKey: KeyObject;
}

/** Finds the acceptable verification key for a keyid; `undefined` means "not acceptable". */
export interface KeyResolver {
  key(keyid: string): VerificationKey | undefined;
}

// DER prefixes that wrap a raw 32-byte Ed25519 seed (PKCS#8) and public key (SPKI).
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/** The signing key of an NKey seed (`SU…` for a user); keyid = its public key (`U…`). */
export function signingKeyFromNkeySeed(seed: string | Uint8Array): SigningKey {
  const text = typeof seed === "string" ? seed.trim() : new TextDecoder().decode(seed).trim();
  let publicNkey: string;
  try {
    publicNkey = fromSeed(new TextEncoder().encode(text)).getPublicKey();
  } catch (err) {
    // The seed itself must never reach a message or a log.
    throw new CausewayError(ErrorCode.KeyInvalid, "not a valid NKey seed", { cause: err instanceof Error ? new Error(err.message) : undefined });
  }
  // Seed layout after base32: 2 prefix bytes, 32-byte Ed25519 seed, 2-byte CRC (checked by fromSeed).
  const raw = base32Decode(text).subarray(2, 34);
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, raw]), format: "der", type: "pkcs8" });
  raw.fill(0);
  return Object.freeze({ keyid: publicNkey, algorithm: SignatureAlgorithm.Ed25519, privateKey, publicKey: createPublicKey(privateKey) });
}

/** The verification key of an NKey public key (`U…`, `A…`, …). */
export function verificationKeyFromNkey(publicNkey: string): VerificationKey {
  try {
    fromPublic(publicNkey); // validates prefix and CRC
  } catch (err) {
    throw new CausewayError(ErrorCode.KeyInvalid, `"${publicNkey}" is not a valid NKey public key`, { cause: err });
  }
  // Public key layout after base32: 1 prefix byte, 32-byte Ed25519 key, 2-byte CRC.
  const x = base32Decode(publicNkey).subarray(1, 33).toString("base64url");
  const publicKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
  return Object.freeze({ keyid: publicNkey, algorithm: SignatureAlgorithm.Ed25519, publicKey });
}

/** An ECDSA P-256 key from its coordinates and (for signing) private scalar, as decimal or bytes. */
export function p256Key(keyid: string, point: { x: bigint | string; y: bigint | string; d: bigint | string }): SigningKey;
export function p256Key(keyid: string, point: { x: bigint | string; y: bigint | string }): VerificationKey;
export function p256Key(keyid: string, point: { x: bigint | string; y: bigint | string; d?: bigint | string }): VerificationKey | SigningKey {
  const jwk = { kty: "EC", crv: "P-256", x: scalar(point.x), y: scalar(point.y) };
  const publicKey = createPublicKey({ key: jwk, format: "jwk" });
  if (point.d === undefined) return Object.freeze({ keyid, algorithm: SignatureAlgorithm.EcdsaP256, publicKey });
  const privateKey = createPrivateKey({ key: { ...jwk, d: scalar(point.d) }, format: "jwk" });
  return Object.freeze({ keyid, algorithm: SignatureAlgorithm.EcdsaP256, publicKey, privateKey });
}

/** A fixed set of acceptable keys (the live, KV-backed trust store builds on the same interface). */
export function createKeyring(keys: Iterable<VerificationKey>): KeyResolver {
  const byId = new Map<string, VerificationKey>();
  for (const k of keys) byId.set(k.keyid, k);
  return { key: (keyid) => byId.get(keyid) };
}

function scalar(value: bigint | string): string {
  const hex = BigInt(value).toString(16).padStart(64, "0");
  if (hex.length !== 64) throw new CausewayError(ErrorCode.KeyInvalid, "a P-256 coordinate must fit in 32 bytes");
  return Buffer.from(hex, "hex").toString("base64url");
}

function base32Decode(text: string): Buffer {
  const out: number[] = [];
  let bits = 0, value = 0;
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) throw new CausewayError(ErrorCode.KeyInvalid, "an NKey must be base32 text");
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}
