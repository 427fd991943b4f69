// Lineage's signed checkpoints: the size and root of its Merkle log at a time, published on MESH_AUDIT, in the
// C2SP formats the transparency-log ecosystem reads (c2sp.org/tlog-checkpoint inside c2sp.org/signed-note):
//
//   causeway.example/lineage          origin, also the signature's key name
//   42                                tree size, decimal
//   cNr2HZ…Fo=                        root hash, standard base64
//   2026-05-13T09:49:12Z              time: an extension line (tlog-checkpoint allows extra lines after the
//                                     third); ours always has exactly this one, RFC 3339 UTC at seconds
//
//   — causeway.example/lineage q0Lm…  em dash, key name, base64(4-byte key hash ‖ Ed25519 signature)
//
// The signature covers the body (the four lines, final newline included). The key hash is the first four bytes
// of SHA-256(key name ‖ "\n" ‖ 0x01 ‖ public key), as golang.org/x/mod/sumdb/note computes it, so Go's
// note.Open and other C2SP verifiers accept these notes.
//
// Imports come from the kit's files rather than its index: this module is pure and loads in milliseconds.
import { createHash, createPublicKey, sign, verify } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { CausewayError, ErrorCode, type SigningKey, type VerificationKey } from "../kit/index.ts";

/** A checkpoint: the log named `origin` had `size` leaves with this `root` at `time`. Validated, then frozen. */
export interface Checkpoint {
  /** The log's name (a key name: no spaces, no `+`), e.g. `causeway.example/lineage`. */
  readonly origin: string;
  /** Number of leaves. */
  readonly size: number;
  /** The Merkle root (RFC 9162 MTH), standard base64 of 32 bytes. */
  readonly root: string;
  /** RFC 3339 UTC at seconds, as the kit's `formatTime` writes it: `2026-05-13T09:49:12Z`. */
  readonly time: string;
}

/** Why {@link verifyCheckpoint} rejected a note. */
export const CheckpointRejection = {
  /** Not a signed note, or its body is not a checkpoint. */
  Malformed: "malformed",
  /** No signature line by the given key. */
  NoSignature: "no_signature",
  /** A line claims the given key, but its signature does not match the body: changed after signing, or forged. */
  BadSignature: "bad_signature",
} as const;
export type CheckpointRejectionValue = (typeof CheckpointRejection)[keyof typeof CheckpointRejection];

/** The outcome of {@link verifyCheckpoint}. */
export type CheckpointVerdict =
  | { readonly ok: true; readonly checkpoint: Checkpoint }
  | { readonly ok: false; readonly reason: CheckpointRejectionValue; readonly message: string };

const ALG_ED25519 = 0x01;
const SIG_PREFIX = "— "; // em dash U+2014, space
const MAX_SIGNATURES = 100; // Go's note.Open refuses more
const ROOT_BYTES = 32;
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;
const SIZE = /^(0|[1-9][0-9]*)$/;
// Control characters other than newline are not allowed anywhere in a signed note.
const CONTROL = /[\u0000-\u0009\u000b-\u001f]/u;
// Go's unicode.IsSpace, which includes U+0085 where JavaScript's \s does not.
const SPACE = /[\s\u0085]/u;
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** The checkpoint's signed note body, `<origin>\n<size>\n<root>\n<time>\n`. Throws a RangeError on an invalid field. */
export function encodeCheckpoint(c: Checkpoint): string {
  const problem = checkpointProblem(c);
  if (problem !== undefined) throw new RangeError(`invalid checkpoint: ${problem}`);
  return `${c.origin}\n${c.size}\n${c.root}\n${c.time}\n`;
}

/** The signed note of a checkpoint: its body, a blank line, and one Ed25519 signature line named by its origin. */
export function signCheckpoint(c: Checkpoint, key: Pick<SigningKey, "privateKey">): string {
  const body = encodeCheckpoint(c);
  const priv = ed25519(key.privateKey, "sign");
  const sig = sign(null, Buffer.from(body), priv);
  const line = Buffer.concat([keyHash(c.origin, rawPublicKey(priv)), sig]).toString("base64");
  return `${body}\n${SIG_PREFIX}${c.origin} ${line}\n`;
}

/**
 * Checks a signed checkpoint note against a public key: the signature first (lines by other keys are ignored,
 * as signed-note verifiers do), then the body. Never throws for a bad note; throws CW_ERR_KEY_INVALID when the
 * key is not an Ed25519 key.
 */
export function verifyCheckpoint(note: string | Uint8Array, key: Pick<VerificationKey, "publicKey">): CheckpointVerdict {
  const pub = rawPublicKey(ed25519(key.publicKey, "verify"));
  let text: string;
  try {
    text = typeof note === "string" ? note : strictUtf8.decode(note);
  } catch {
    return malformed("the note is not UTF-8");
  }
  if (!text.isWellFormed()) return malformed("the note is not UTF-8");
  if (CONTROL.test(text)) return malformed("the note has a control character other than newline");
  // signed-note: the text, a blank line, the signature lines. The text has no blank line, so the last one splits.
  const split = text.lastIndexOf("\n\n");
  if (split < 0) return malformed("the note has no blank line before its signatures");
  const body = text.slice(0, split + 1);
  const sigText = text.slice(split + 2);
  if (sigText === "" || !sigText.endsWith("\n")) return malformed("the note's signature lines must end with a newline");
  const lines = sigText.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) return malformed(`the note has more than ${MAX_SIGNATURES} signatures`);

  let signedAs: string | undefined;
  for (const line of lines) {
    const notALine = (): CheckpointVerdict => malformed(`"${line.slice(0, 80)}" is not a signature line (— <name> <base64>)`);
    if (!line.startsWith(SIG_PREFIX)) return notALine();
    const rest = line.slice(SIG_PREFIX.length);
    const space = rest.indexOf(" ");
    const name = rest.slice(0, space);
    const bytes = Buffer.from(rest.slice(space + 1), "base64");
    if (space < 0 || !isKeyName(name) || bytes.length < 5 || bytes.toString("base64") !== rest.slice(space + 1)) {
      return notALine();
    }
    // A line whose key hash is not ours is another witness's or another log's: skip it.
    if (!bytes.subarray(0, 4).equals(keyHash(name, pub))) continue;
    if (!verify(null, Buffer.from(body), key.publicKey, bytes.subarray(4))) {
      return {
        ok: false,
        reason: CheckpointRejection.BadSignature,
        message: `the signature by "${name}" does not match the checkpoint: it was changed after signing, or forged`,
      };
    }
    signedAs = name;
    break;
  }
  if (signedAs === undefined) {
    return { ok: false, reason: CheckpointRejection.NoSignature, message: "the checkpoint has no signature by this key" };
  }

  const parts = body.split("\n");
  if (parts.length !== 5) return malformed(`the checkpoint has ${parts.length - 1} lines, not 4 (origin, size, root, time)`);
  const [origin, size, root, time] = parts as [string, string, string, string];
  if (!SIZE.test(size)) return malformed(`the size "${size}" is not a decimal number`);
  const checkpoint = Object.freeze({ origin, size: Number(size), root, time });
  const problem = checkpointProblem(checkpoint);
  if (problem !== undefined) return malformed(problem);
  if (origin !== signedAs) return malformed(`the checkpoint of "${origin}" is signed as "${signedAs}"`);
  return { ok: true, checkpoint };
}

// What is wrong with a checkpoint, or undefined.
function checkpointProblem(c: Checkpoint): string | undefined {
  if (typeof c.origin !== "string" || !isKeyName(c.origin) || CONTROL.test(c.origin)) {
    return `the origin "${String(c.origin)}" must be a non-empty name without spaces, "+" or control characters`;
  }
  if (!Number.isSafeInteger(c.size) || c.size < 0) return `the size ${String(c.size)} is not a non-negative safe integer`;
  if (typeof c.root !== "string" || Buffer.from(c.root, "base64").length !== ROOT_BYTES
    || Buffer.from(c.root, "base64").toString("base64") !== c.root) {
    return `the root "${String(c.root)}" is not the standard base64 of ${ROOT_BYTES} bytes`;
  }
  // Exactly one spelling per instant, so equal checkpoints have equal bodies; the round trip rejects Feb 30.
  const ms = typeof c.time === "string" && TIME.test(c.time) ? Date.parse(c.time) : NaN;
  if (Number.isNaN(ms) || new Date(ms).toISOString().slice(0, 19) + "Z" !== c.time) {
    return `the time "${String(c.time)}" is not RFC 3339 UTC at seconds (YYYY-MM-DDTHH:MM:SSZ)`;
  }
  return undefined;
}

// signed-note key names: non-empty, well-formed, no Unicode spaces, no "+".
function isKeyName(name: string): boolean {
  return name !== "" && name.isWellFormed() && !SPACE.test(name) && !name.includes("+");
}

// signed-note key hash for Ed25519: SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)[:4].
function keyHash(name: string, rawPublic: Buffer): Buffer {
  return createHash("sha256").update(`${name}\n`).update(Buffer.from([ALG_ED25519])).update(rawPublic).digest().subarray(0, 4);
}

function rawPublicKey(key: KeyObject): Buffer {
  const { x } = (key.type === "public" ? key : createPublicKey(key)).export({ format: "jwk" });
  return Buffer.from(x!, "base64url");
}

function ed25519(key: KeyObject, use: "sign" | "verify"): KeyObject {
  if (key.asymmetricKeyType !== "ed25519" || (use === "sign" && key.type !== "private")) {
    throw new CausewayError(ErrorCode.KeyInvalid, `checkpoints are signed with Ed25519 keys; cannot ${use} with a ${key.asymmetricKeyType ?? key.type} key`);
  }
  return key;
}

function malformed(message: string): CheckpointVerdict {
  return { ok: false, reason: CheckpointRejection.Malformed, message };
}
