// Self-contained proofs an auditor checks offline with nothing but the proof and lineage's public key:
// an inclusion proof for one record (its canonical bytes, leaf hash, audit path, and the signed checkpoint it
// is proved against) and a consistency proof between two signed checkpoints (both notes embedded).
//
// Proving reads the stored hashes of the perfect subtrees the proof's nodes fold from — O(log n) of them, in
// one query (merkle.ts, "Stored subtree hashes") — and checks the proof against the checkpoint before returning
// it, so a store that no longer matches what it signed fails here with CW_ERR_LINEAGE_CHECKPOINT_MISMATCH
// instead of handing out a proof that cannot verify. Verifying is pure and never throws: it returns a verdict.
import { verifyCheckpoint, type Checkpoint } from "./checkpoint.ts";
import {
  HASH_BYTES, leafHash, nodeLeaves, storedConsistencyProof, storedInclusionProofs, verifyConsistency, verifyInclusion, type ReadNodes,
} from "./merkle.ts";
import { findEvent } from "./queries.ts";
import { decodeRecord } from "./record.ts";
import type { LineageStore, StoredCheckpoint, StoredRecord } from "./store.ts";
import { CausewayError, ErrorCode, verificationKeyFromNkey, type VerificationKey } from "../kit/index.ts";

/** An inclusion proof of one record, with everything needed to check it offline. */
export interface EventProof {
  /** The record's leaf index. */
  readonly index: number;
  /** The record's canonical bytes as a UTF-8 string: hash these bytes, never a re-serialization. */
  readonly record: string;
  /** SHA-256(0x00 ‖ record bytes), standard base64. */
  readonly leafHash: string;
  /** The checkpoint's tree size and root hash (base64), as its note signs them. */
  readonly size: number;
  readonly root: string;
  /** The RFC 9162 audit path, leaf to root, standard base64 of 32-byte hashes. */
  readonly proof: readonly string[];
  /** The signed checkpoint note (C2SP signed-note) the proof is against. */
  readonly checkpoint: string;
}

/** One end of a consistency proof: a checkpoint's size, root and signed note. */
export interface ProvenCheckpoint {
  readonly size: number;
  readonly root: string;
  readonly checkpoint: string;
}

/** A consistency proof: the log of `from` is a prefix of the log of `to`. */
export interface ConsistencyProof {
  readonly from: ProvenCheckpoint;
  readonly to: ProvenCheckpoint;
  /** RFC 9162 consistency proof nodes, standard base64. */
  readonly proof: readonly string[];
}

/** Why a proof was rejected. */
export const ProofRejection = {
  /** Not a proof object of the expected shape (missing field, bad base64, wrong hash length). */
  Malformed: "malformed",
  /** The public key given is not a usable Ed25519 key or NKey. */
  BadKey: "bad_key",
  /** A checkpoint note does not verify under the key (bad signature, no signature by this key, not a checkpoint). */
  BadCheckpoint: "bad_checkpoint",
  /** The proof's size or root is not what its signed checkpoint says, or two checkpoints are of different logs. */
  CheckpointMismatch: "checkpoint_mismatch",
  /** The record's bytes do not hash to the proof's leaf hash. */
  LeafMismatch: "leaf_mismatch",
  /** The index is outside the checkpoint, or not the index written inside the record. */
  IndexMismatch: "index_mismatch",
  /** The audit path or consistency nodes do not lead to the signed root(s). */
  BadPath: "bad_path",
} as const;
export type ProofRejectionValue = (typeof ProofRejection)[keyof typeof ProofRejection];

/** The outcome of a proof verification. */
export type ProofVerdict = { readonly ok: true } | { readonly ok: false; readonly reason: ProofRejectionValue; readonly message: string };

/** Lineage's public key: a verification key, or its NKey public key string. */
export type LineagePublicKey = Pick<VerificationKey, "publicKey"> | string;

/** What to prove: an event id (its first record the checkpoint covers), optionally with its source, or a leaf index. */
export type ProofTarget = string | { readonly id: string; readonly source?: string } | { readonly index: number };

/**
 * An inclusion proof of a record against `checkpoint`. For an event id, the proof is of the event's first
 * record (lowest index) the checkpoint covers; its other records (a quarantine copy, a forward) are proved by
 * index. Throws CW_ERR_LINEAGE_NOT_FOUND, CW_ERR_LINEAGE_AMBIGUOUS_ID, CW_ERR_LINEAGE_NOT_COVERED (recorded
 * after the checkpoint) or CW_ERR_LINEAGE_CHECKPOINT_MISMATCH (the store does not match the checkpoint).
 */
export async function proveEvent(store: LineageStore, target: ProofTarget, checkpoint: StoredCheckpoint): Promise<EventProof> {
  const stored = await recordFor(store, target, checkpoint.size);
  const index = stored.columns.index;
  const [path] = await storedInclusionProofs([index], checkpoint.size, storedNodes(store));
  const leaf = leafHash(stored.bytes);
  if (!verifyInclusion(leaf, index, checkpoint.size, path!, Buffer.from(checkpoint.root, "base64"))) {
    throw mismatch(`record ${index} and the stored subtree hashes do not lead to the root of the checkpoint of size ${checkpoint.size}`);
  }
  return {
    index,
    record: stored.bytes.toString("utf8"),
    leafHash: leaf.toString("base64"),
    size: checkpoint.size,
    root: checkpoint.root,
    proof: path!.map((h) => h.toString("base64")),
    checkpoint: checkpoint.note,
  };
}

/** A consistency proof from `from` to `to` (from.size ≤ to.size); throws NOT_COVERED or CHECKPOINT_MISMATCH. */
export async function proveConsistency(store: LineageStore, from: StoredCheckpoint, to: StoredCheckpoint): Promise<ConsistencyProof> {
  if (from.size > to.size) {
    throw new CausewayError(ErrorCode.LineageNotCovered, `a consistency proof goes from a smaller checkpoint to a larger one, not from ${from.size} to ${to.size}`);
  }
  const proof = await storedConsistencyProof(from.size, to.size, storedNodes(store));
  if (!verifyConsistency(from.size, to.size, Buffer.from(from.root, "base64"), Buffer.from(to.root, "base64"), proof)) {
    throw mismatch(`the stored subtree hashes do not lead to the roots of the checkpoints of size ${from.size} and ${to.size}`);
  }
  const end = (c: StoredCheckpoint): ProvenCheckpoint => ({ size: c.size, root: c.root, checkpoint: c.note });
  return { from: end(from), to: end(to), proof: proof.map((h) => h.toString("base64")) };
}

/**
 * Checks an inclusion proof offline: the checkpoint's signature under `publicKey`, the proof's size and root
 * against the signed ones, the record bytes against the leaf hash, the index against the checkpoint and the
 * record, and the audit path. Never throws.
 */
export function verifyEventProof(proof: unknown, publicKey: LineagePublicKey): ProofVerdict {
  const p = proof as Partial<Record<keyof EventProof, unknown>>;
  if (typeof proof !== "object" || proof === null || !isIndex(p.index) || !isIndex(p.size) || typeof p.record !== "string"
    || typeof p.checkpoint !== "string" || !Array.isArray(p.proof)) {
    return reject(ProofRejection.Malformed, "not an inclusion proof: it needs index, record, leafHash, size, root, proof and checkpoint");
  }
  const signed = signedCheckpoint(p.checkpoint, publicKey);
  if (!("checkpoint" in signed)) return signed;
  return verifyInclusionAgainst(proof as EventProof, signed.checkpoint);
}

/**
 * The part of {@link verifyEventProof} after the checkpoint's signature: the proof against an already verified
 * checkpoint (exports verify their one checkpoint once). `proof.checkpoint` is not read. Never throws.
 */
export function verifyInclusionAgainst(p: EventProof, checkpoint: Checkpoint): ProofVerdict {
  const leaf = hash32(p.leafHash), root = hash32(p.root), path = p.proof.map(hash32);
  if (!isIndex(p.index) || !isIndex(p.size) || typeof p.record !== "string" || leaf === undefined || root === undefined || !path.every((h) => h !== undefined)) {
    return reject(ProofRejection.Malformed, `index and size must be non-negative integers, leafHash, root and every proof node standard base64 of ${HASH_BYTES} bytes`);
  }
  const mismatched = endMismatch(checkpoint, { size: p.size, root: p.root }, "the proof");
  if (mismatched) return mismatched;
  if (p.index >= p.size) return reject(ProofRejection.IndexMismatch, `index ${p.index} is not in a tree of ${p.size} records`);
  const bytes = Buffer.from(p.record, "utf8");
  if (!leafHash(bytes).equals(leaf)) return reject(ProofRejection.LeafMismatch, "the record's bytes do not hash to the proof's leaf hash");
  let recordIndex: number;
  try {
    recordIndex = decodeRecord(bytes).index;
  } catch (err) {
    return reject(ProofRejection.Malformed, `the record is not a lineage record: ${(err as Error).message}`);
  }
  if (recordIndex !== p.index) return reject(ProofRejection.IndexMismatch, `the proof is for index ${p.index}, the record says it is at ${recordIndex}`);
  if (!verifyInclusion(leaf, p.index, p.size, path, root)) {
    return reject(ProofRejection.BadPath, `the audit path does not lead from record ${p.index} to the signed root of size ${p.size}`);
  }
  return { ok: true };
}

/** Checks a consistency proof offline: both checkpoints signed by `publicKey`, of the same log, and the proof nodes. Never throws. */
export function verifyConsistencyProof(proof: unknown, publicKey: LineagePublicKey): ProofVerdict {
  const p = proof as Partial<Record<keyof ConsistencyProof, unknown>>;
  const from = provenEnd(p?.from), to = provenEnd(p?.to);
  if (typeof proof !== "object" || proof === null || from === undefined || to === undefined || !Array.isArray(p.proof)) {
    return reject(ProofRejection.Malformed, "not a consistency proof: it needs from and to (each size, root, checkpoint) and proof");
  }
  const nodes = p.proof.map(hash32);
  if (!nodes.every((h) => h !== undefined)) return reject(ProofRejection.Malformed, `every proof node must be standard base64 of ${HASH_BYTES} bytes`);
  const signedFrom = signedCheckpoint(from.checkpoint, publicKey);
  if (!("checkpoint" in signedFrom)) return signedFrom;
  const signedTo = signedCheckpoint(to.checkpoint, publicKey);
  if (!("checkpoint" in signedTo)) return signedTo;
  const mismatched = endMismatch(signedFrom.checkpoint, from, "the proof's from") ?? endMismatch(signedTo.checkpoint, to, "the proof's to");
  if (mismatched) return mismatched;
  if (signedFrom.checkpoint.origin !== signedTo.checkpoint.origin) {
    return reject(ProofRejection.CheckpointMismatch, `the checkpoints are of different logs ("${signedFrom.checkpoint.origin}", "${signedTo.checkpoint.origin}")`);
  }
  if (from.size > to.size) return reject(ProofRejection.BadPath, `the proof goes from size ${from.size} down to ${to.size}`);
  if (!verifyConsistency(from.size, to.size, hash32(from.root)!, hash32(to.root)!, nodes)) {
    return reject(ProofRejection.BadPath, `the proof does not show the log of size ${from.size} is a prefix of the log of size ${to.size}`);
  }
  return { ok: true };
}

/**
 * Audit paths of many records in the tree of `checkpoint`, for exports: RFC 9162 PATH(m, D[n]) of each, from
 * one read of the stored subtree hashes they need (O(k log n) for k records, fewer where paths share nodes).
 * Each path is checked from the record's stored leaf hash to the checkpoint's root before it is returned.
 */
export async function auditPaths(store: LineageStore, records: readonly StoredRecord[], checkpoint: Pick<StoredCheckpoint, "size" | "root">): Promise<Buffer[][]> {
  const indices = records.map((r) => r.columns.index);
  const outside = indices.find((i) => i >= checkpoint.size);
  if (outside !== undefined) throw notCovered(`record ${outside}`, checkpoint.size);
  const paths = await storedInclusionProofs(indices, checkpoint.size, storedNodes(store));
  const root = Buffer.from(checkpoint.root, "base64");
  records.forEach((r, k) => {
    if (!verifyInclusion(r.leafHash, indices[k]!, checkpoint.size, paths[k]!, root)) throw mismatch(`record ${indices[k]} and the stored subtree hashes do not lead to the checkpoint's root`);
  });
  return paths;
}

/** The store's subtree hashes as proofs read them; CHECKPOINT_MISMATCH naming the first one it lacks. */
export function storedNodes(store: LineageStore): ReadNodes {
  return async (ids) => {
    const hashes = await store.nodeHashes(ids);
    return hashes.map((h, i) => {
      if (h === undefined) {
        const [from, to] = nodeLeaves(ids[i]!);
        throw mismatch(to - from === 1 ? `it holds no record ${from}` : `it lacks the stored hash of records [${from}, ${to}) (level ${ids[i]!.level}, index ${ids[i]!.index})`);
      }
      return h;
    });
  };
}

/** Lineage's public key as a verification key; throws CW_ERR_KEY_INVALID for a bad NKey. */
export function lineageKey(publicKey: LineagePublicKey): Pick<VerificationKey, "publicKey"> {
  return typeof publicKey === "string" ? verificationKeyFromNkey(publicKey) : publicKey;
}

/** The signed checkpoint of a note, or the verdict rejecting it (a bad key included). Never throws. */
export function signedCheckpoint(note: string, publicKey: LineagePublicKey): { readonly checkpoint: Checkpoint } | Extract<ProofVerdict, { ok: false }> {
  let verdict;
  try {
    verdict = verifyCheckpoint(note, lineageKey(publicKey));
  } catch (err) {
    return reject(ProofRejection.BadKey, `the public key cannot verify checkpoints: ${(err as Error).message}`);
  }
  if (!verdict.ok) return reject(ProofRejection.BadCheckpoint, `the checkpoint does not verify (${verdict.reason}): ${verdict.message}`);
  return { checkpoint: verdict.checkpoint };
}

// ---------------------------------------------------------------------------------------------------------

async function recordFor(store: LineageStore, target: ProofTarget, size: number): Promise<StoredRecord> {
  if (typeof target === "object" && "index" in target) {
    if (!isIndex(target.index)) throw new CausewayError(ErrorCode.LineageNotFound, `no record has the index ${String(target.index)}`);
    if (target.index >= size) throw notCovered(`record ${target.index}`, size);
    const [stored] = await store.range(target.index, target.index + 1);
    if (!stored) throw new CausewayError(ErrorCode.LineageNotFound, `no record has the index ${target.index}`);
    return stored;
  }
  const { id, source } = typeof target === "string" ? { id: target, source: undefined } : target;
  const event = await findEvent(store, id, source);
  const covered = event.records.find((r) => r.stored.columns.index < size);
  if (!covered) throw notCovered(`the event "${id}" (recorded at ${event.records.map((r) => r.stored.columns.index).join(", ")})`, size);
  return covered.stored;
}

function endMismatch(signed: Checkpoint, end: { size: number; root: string }, what: string): ProofVerdict | undefined {
  if (signed.size !== end.size) return reject(ProofRejection.CheckpointMismatch, `${what} says size ${end.size}, its checkpoint signs ${signed.size}`);
  if (signed.root !== end.root) return reject(ProofRejection.CheckpointMismatch, `${what} says root ${end.root}, its checkpoint signs ${signed.root}`);
  return undefined;
}

function provenEnd(value: unknown): ProvenCheckpoint | undefined {
  const v = value as Partial<Record<keyof ProvenCheckpoint, unknown>> | null | undefined;
  if (typeof v !== "object" || v === null || !isIndex(v.size) || typeof v.root !== "string" || typeof v.checkpoint !== "string") return undefined;
  if (hash32(v.root) === undefined) return undefined;
  return { size: v.size, root: v.root, checkpoint: v.checkpoint };
}

// A standard-base64 32-byte hash, or undefined.
function hash32(value: unknown): Buffer | undefined {
  if (typeof value !== "string") return undefined;
  const bytes = Buffer.from(value, "base64");
  return bytes.length === HASH_BYTES && bytes.toString("base64") === value ? bytes : undefined;
}

const isIndex = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;

function reject(reason: ProofRejectionValue, message: string): Extract<ProofVerdict, { ok: false }> {
  return { ok: false, reason, message };
}

function mismatch(message: string): CausewayError {
  return new CausewayError(ErrorCode.LineageCheckpointMismatch, `the store does not match the checkpoint: ${message}`);
}

function notCovered(what: string, size: number): CausewayError {
  return new CausewayError(ErrorCode.LineageNotCovered, `${what} is not covered by the checkpoint of size ${size}; wait for a later checkpoint`);
}
