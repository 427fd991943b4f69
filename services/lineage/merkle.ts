// The math of lineage's tamper-evident log: a Merkle tree over the leaf hashes of the recorded events, as in
// RFC 9162 (Certificate Transparency v2) §2.1. Pure functions, no I/O: the store hands leaf hashes in through
// `leafAt`, which it backs with SQL and tests back with an array.
//
// Sizes and indices are plain numbers, safe integers (< 2^53). The bit operations of RFC 9162's verifiers are
// written as arithmetic (`% 2`, `Math.floor(x / 2)`) because JavaScript's bitwise operators cut at 32 bits.
import { createHash, hash } from "node:crypto";

/** Bytes in a SHA-256 hash: every leaf hash, node hash, proof node and root. */
export const HASH_BYTES = 32;

/** Reads the leaf hash at `index` (0-based) from the log's store; only ever asked for indices below the size. */
export type LeafAt = (index: number) => Promise<Uint8Array> | Uint8Array;

const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);
const EMPTY_ROOT = hash("sha256", Buffer.alloc(0), "buffer");

/** RFC 9162 §2.1.1: the hash of a leaf, SHA-256(0x00 ‖ record). */
export function leafHash(record: Uint8Array): Buffer {
  return createHash("sha256").update(LEAF_PREFIX).update(record).digest(); // no copy of the record
}

/** RFC 9162 §2.1.1: the hash of an interior node, SHA-256(0x01 ‖ left ‖ right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return hash("sha256", Buffer.concat([NODE_PREFIX, left, right]), "buffer");
}

/** RFC 9162 §2.1.1: the root of the empty tree, SHA-256 of the empty string. */
export function emptyRoot(): Buffer {
  return Buffer.from(EMPTY_ROOT);
}

/** RFC 9162 §2.1.1: MTH(D[n]), the root of the tree over these leaf hashes. */
export function rootOf(leafHashes: readonly Uint8Array[]): Buffer {
  if (leafHashes.length === 0) return emptyRoot();
  const mth = (start: number, end: number): Buffer => {
    if (end - start === 1) return Buffer.from(leafHashes[start]!);
    const k = splitPoint(end - start);
    return nodeHash(mth(start, start + k), mth(start + k, end));
  };
  return mth(0, leafHashes.length);
}

// ---------------------------------------------------------------------------------------------------------
// Proof generation, reading leaf hashes through `leafAt`.
//
// Cost: each proof node is the root of a subtree, recomputed here from its leaves, so a proof reads O(n)
// leaves in the worst case (an inclusion proof reads every leaf but its own). The stores prove from stored
// subtree hashes instead (see "Stored subtree hashes" below); these leaf-reading functions are the reference
// those are tested against, and what tests and small in-memory logs use.

/** RFC 9162 §2.1.3.1: the audit path PATH(index, D[size]) of the leaf at `index` in the tree of `size` leaves. */
export async function inclusionProof(index: number, size: number, leafAt: LeafAt): Promise<Buffer[]> {
  checkSize(size, "size");
  checkSize(index, "index");
  if (index >= size) throw new RangeError(`no leaf ${index} in a tree of ${size}`);
  const path: Buffer[] = [];
  // PATH(m, D[start:end]): the path inside the subtree, then the sibling subtree's root.
  const walk = async (m: number, start: number, end: number): Promise<void> => {
    if (end - start <= 1) return;
    const k = splitPoint(end - start);
    if (m < k) {
      await walk(m, start, start + k);
      path.push(await subtreeRoot(start + k, end, leafAt));
    } else {
      await walk(m - k, start + k, end);
      path.push(await subtreeRoot(start, start + k, leafAt));
    }
  };
  await walk(index, 0, size);
  return path;
}

/**
 * RFC 9162 §2.1.4.1: PROOF(oldSize, D[newSize]), the nodes that prove the tree of `oldSize` leaves is a prefix
 * of the tree of `newSize`. Empty when the sizes are equal or the old tree is empty (nothing to prove).
 */
export async function consistencyProof(oldSize: number, newSize: number, leafAt: LeafAt): Promise<Buffer[]> {
  checkSize(oldSize, "oldSize");
  checkSize(newSize, "newSize");
  if (oldSize > newSize) throw new RangeError(`oldSize ${oldSize} is larger than newSize ${newSize}`);
  const proof: Buffer[] = [];
  if (oldSize === 0 || oldSize === newSize) return proof;
  // SUBPROOF(m, D[start:end], b); `whole` is b: the subtree is still the old tree itself, whose root the
  // verifier already has, so it is left out.
  const sub = async (m: number, start: number, end: number, whole: boolean): Promise<void> => {
    if (m === end - start) {
      if (!whole) proof.push(await subtreeRoot(start, end, leafAt));
      return;
    }
    const k = splitPoint(end - start);
    if (m <= k) {
      await sub(m, start, start + k, whole);
      proof.push(await subtreeRoot(start + k, end, leafAt));
    } else {
      await sub(m - k, start + k, end, false);
      proof.push(await subtreeRoot(start, start + k, leafAt));
    }
  };
  await sub(oldSize, 0, newSize, true);
  return proof;
}

/** MTH of the first `size` leaves: the root a checkpoint of that size must carry. Reads every leaf. */
export async function rootAt(size: number, leafAt: LeafAt): Promise<Buffer> {
  checkSize(size, "size");
  return size === 0 ? emptyRoot() : subtreeRoot(0, size, leafAt);
}

/** The frontier of the tree of `size` leaves, rebuilt from the leaves: what {@link createMerkleLog} restores from. */
export async function frontierAt(size: number, leafAt: LeafAt): Promise<Buffer[]> {
  checkSize(size, "size");
  const frontier: Buffer[] = [];
  for (let start = 0, rest = size; rest > 0;) {
    const width = largestPowerOfTwoAtMost(rest);
    frontier.push(await subtreeRoot(start, start + width, leafAt));
    start += width;
    rest -= width;
  }
  return frontier;
}

// ---------------------------------------------------------------------------------------------------------
// Verification: only the proof and the roots, no access to the log.

/**
 * RFC 9162 §2.1.3.2: true when `proof` shows the leaf hash at `index` is in the tree of `size` leaves with
 * this root. A proof does not pin `size` by itself (the leftmost leaf's path is the same in trees of 7 and 8);
 * the signed checkpoint binds size and root together.
 */
export function verifyInclusion(
  leafHash: Uint8Array, index: number, size: number, proof: readonly Uint8Array[], root: Uint8Array,
): boolean {
  if (!isSize(index) || !isSize(size) || index >= size) return false;
  if (!isHash(leafHash) || !isHash(root) || !proof.every(isHash)) return false;
  let fn = index, sn = size - 1;
  let r: Uint8Array = leafHash;
  for (const p of proof) {
    if (sn === 0) return false; // more nodes than the path has
    if (isOdd(fn) || fn === sn) {
      r = nodeHash(p, r);
      // A left child with no right sibling (fn === sn) is carried up unchanged: climb to where p is its sibling.
      while (!isOdd(fn) && fn !== 0) [fn, sn] = [half(fn), half(sn)];
    } else {
      r = nodeHash(r, p);
    }
    [fn, sn] = [half(fn), half(sn)];
  }
  return sn === 0 && equal(r, root);
}

/**
 * RFC 9162 §2.1.4.2: true when `proof` shows the tree of `oldSize` leaves with `oldRoot` is a prefix of the
 * tree of `newSize` leaves with `newRoot`. Equal sizes need equal roots and an empty proof; the empty tree is
 * a prefix of every tree (its root must still be the empty root).
 */
export function verifyConsistency(
  oldSize: number, newSize: number, oldRoot: Uint8Array, newRoot: Uint8Array, proof: readonly Uint8Array[],
): boolean {
  if (!isSize(oldSize) || !isSize(newSize) || oldSize > newSize) return false;
  if (!isHash(oldRoot) || !isHash(newRoot) || !proof.every(isHash)) return false;
  if (oldSize === newSize) return proof.length === 0 && equal(oldRoot, newRoot);
  if (oldSize === 0) return proof.length === 0 && equal(oldRoot, EMPTY_ROOT);
  if (proof.length === 0) return false; // step 1
  // Step 2: when the old tree is a perfect subtree of the new one, its root is the first node.
  const path = isPowerOfTwo(oldSize) ? [oldRoot, ...proof] : proof;
  // Steps 3–4.
  let fn = oldSize - 1, sn = newSize - 1;
  while (isOdd(fn)) [fn, sn] = [half(fn), half(sn)];
  // Steps 5–6: fr rebuilds the old root, sr the new one.
  let fr: Uint8Array = path[0]!, sr: Uint8Array = path[0]!;
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (isOdd(fn) || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (!isOdd(fn) && fn !== 0) [fn, sn] = [half(fn), half(sn)];
    } else {
      sr = nodeHash(sr, c);
    }
    [fn, sn] = [half(fn), half(sn)];
  }
  // Step 7.
  return sn === 0 && equal(fr, oldRoot) && equal(sr, newRoot);
}

// ---------------------------------------------------------------------------------------------------------
// The incremental log.

/** Where a log starts: empty, or a persisted `size` with the `frontier` that {@link MerkleLog.frontier} gave. */
export interface MerkleLogOptions {
  /** Reads stored leaf hashes, for proofs. It must answer for every index below the current size. */
  readonly leafAt: LeafAt;
  /** Leaves already in the log. Default 0. */
  readonly size?: number;
  /** The frontier persisted with `size`; required when `size` > 0. */
  readonly frontier?: readonly Uint8Array[];
  /** Told of each perfect subtree of two or more leaves an append completes (what a store keeps: see {@link extendLog}). */
  readonly onComplete?: (node: NodeHash) => void;
}

/**
 * An append-only Merkle log that keeps only its frontier (the compact range of RFC 9162-style logs): the
 * roots of the perfect subtrees the leaves split into, largest first, one per 1-bit of the size. Appending
 * and the root are O(log n); proofs read leaves through `leafAt`.
 */
export interface MerkleLog {
  /** Number of leaves. */
  readonly size: number;
  /** Appends a leaf hash (see {@link leafHash}); the store must already answer `leafAt` for it. */
  append(leafHash: Uint8Array): void;
  /** MTH of all leaves. */
  root(): Buffer;
  /** A copy of the frontier, to persist next to `size`. */
  frontier(): Buffer[];
  /** {@link inclusionProof} in this log; `size` defaults to the current size. */
  inclusionProof(index: number, size?: number): Promise<Buffer[]>;
  /** {@link consistencyProof} in this log; `newSize` defaults to the current size. */
  consistencyProof(oldSize: number, newSize?: number): Promise<Buffer[]>;
}

/** An incremental log, empty or restored from a persisted size and frontier. */
export function createMerkleLog(opts: MerkleLogOptions): MerkleLog {
  const { leafAt } = opts;
  let size = opts.size ?? 0;
  checkSize(size, "size");
  const given = opts.frontier ?? [];
  if (given.length !== popCount(size)) {
    throw new RangeError(`a log of ${size} leaves has a frontier of ${popCount(size)} hashes, not ${given.length}`);
  }
  if (!given.every(isHash)) throw new RangeError(`every frontier hash must be ${HASH_BYTES} bytes`);
  const frontier: Buffer[] = given.map((h) => Buffer.from(h));

  const within = (n: number, name: string): number => {
    checkSize(n, name);
    if (n > size) throw new RangeError(`${name} ${n} is beyond the log's size ${size}`);
    return n;
  };
  return {
    get size() {
      return size;
    },
    append(h) {
      if (!isHash(h)) throw new RangeError(`a leaf hash must be ${HASH_BYTES} bytes`);
      if (size === Number.MAX_SAFE_INTEGER) throw new RangeError("the log is full");
      pushLeaf(frontier, size, h, opts.onComplete);
      size += 1;
    },
    root() {
      // MTH splits at the largest power of two below n, which is the first frontier subtree: fold right to left.
      if (frontier.length === 0) return emptyRoot();
      let r: Buffer = frontier[frontier.length - 1]!;
      for (let i = frontier.length - 2; i >= 0; i--) r = nodeHash(frontier[i]!, r);
      return Buffer.from(r);
    },
    frontier() {
      return frontier.map((h) => Buffer.from(h));
    },
    async inclusionProof(index, atSize = size) {
      return inclusionProof(index, within(atSize, "size"), leafAt);
    },
    async consistencyProof(oldSize, newSize = size) {
      return consistencyProof(oldSize, within(newSize, "newSize"), leafAt);
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Stored subtree hashes: proofs from O(log n) reads.
//
// A perfect subtree — the 2^level leaves from index·2^level — never changes once its last leaf is in the log.
// The stores keep the hash of each one of two or more leaves (level ≥ 1, an interior node of every later
// tree), written in the transaction that appends its last leaf ({@link extendLog} says which); level 0 is a
// leaf hash. Every node of an RFC 9162 proof is the root of a subtree [start, end) whose start is a multiple of
// the power of two at or above its width, so it is the fold of the perfect subtrees its width splits into, one
// per 1-bit: a proof needs O(log n) stored hashes, read at once. Certificate Transparency logs and C2SP
// tlog-tiles prove the same way (tiles group 256 hashes a read; here a hash is a row).

/** A perfect subtree of the log: the 2^level leaves from index·2^level. Level 0 is one leaf. */
export interface NodeId {
  readonly level: number;
  readonly index: number;
}

/** A perfect subtree and its hash (MTH of its leaves). */
export interface NodeHash extends NodeId {
  readonly hash: Buffer;
}

/**
 * Reads the hashes of perfect subtrees (level 0: leaf hashes) in the order asked, each {@link HASH_BYTES}
 * bytes. A store's reader throws when it holds one not (it can name what is missing).
 */
export type ReadNodes = (ids: readonly NodeId[]) => Promise<readonly Uint8Array[]> | readonly Uint8Array[];

/** The leaves [start, end) a perfect subtree covers. */
export function nodeLeaves(id: NodeId): [number, number] {
  const width = 2 ** id.level;
  return [id.index * width, (id.index + 1) * width];
}

/**
 * Appends `leaves` to a log of `size` leaves with `frontier` (neither argument changes): the frontier after
 * them, and every perfect subtree of two or more leaves they complete, in the order they complete.
 */
export function extendLog(size: number, frontier: readonly Uint8Array[], leaves: readonly Uint8Array[]): { frontier: Buffer[]; completed: NodeHash[] } {
  checkSize(size, "size");
  if (frontier.length !== popCount(size)) throw new RangeError(`a log of ${size} leaves has a frontier of ${popCount(size)} hashes, not ${frontier.length}`);
  if (!frontier.every(isHash) || !leaves.every(isHash)) throw new RangeError(`every frontier and leaf hash must be ${HASH_BYTES} bytes`);
  if (size + leaves.length > Number.MAX_SAFE_INTEGER) throw new RangeError("the log is full");
  const next = frontier.map((h) => Buffer.from(h));
  const completed: NodeHash[] = [];
  leaves.forEach((leaf, i) => pushLeaf(next, size + i, leaf, (node) => completed.push(node)));
  return { frontier: next, completed };
}

/**
 * The perfect subtrees the subtree [start, end) of a proof splits into, largest first: its width's binary
 * digits from the highest. Throws a RangeError when `start` is not aligned (no RFC 9162 subtree is so).
 */
export function nodesOf(start: number, end: number): NodeId[] {
  const pieces: NodeId[] = [];
  for (let at = start; at < end;) {
    let width = 1, level = 0;
    while (width * 2 <= end - at) [width, level] = [width * 2, level + 1];
    if (at % width !== 0) throw new RangeError(`[${start}, ${end}) is not a subtree of a Merkle tree: ${at} is not a multiple of ${width}`);
    pieces.push({ level, index: at / width });
    at += width;
  }
  return pieces;
}

/**
 * {@link inclusionProof} of each of `indices` in the tree of `size` leaves, from stored subtree hashes: one
 * read of at most 2·log2(size) hashes a proof (fewer when proofs share nodes), byte for byte the same paths.
 */
export async function storedInclusionProofs(indices: readonly number[], size: number, read: ReadNodes): Promise<Buffer[][]> {
  checkSize(size, "size");
  const paths = indices.map((index) => {
    checkSize(index, "index");
    if (index >= size) throw new RangeError(`no leaf ${index} in a tree of ${size}`);
    // PATH(m, D[start:end]) top down: the sibling subtree at each split; the proof lists them leaf to root.
    const path: [number, number][] = [];
    for (let m = index, start = 0, end = size; end - start > 1;) {
      const k = splitPoint(end - start);
      if (m < k) {
        path.push([start + k, end]);
        end = start + k;
      } else {
        path.push([start, start + k]);
        start += k;
        m -= k;
      }
    }
    return path.reverse();
  });
  const roots = await rootsOfSubtrees(paths.flat(), read);
  let at = 0;
  return paths.map((path) => roots.slice(at, (at += path.length)));
}

/** {@link consistencyProof} from stored subtree hashes: one read of O(log newSize) hashes, the same nodes. */
export async function storedConsistencyProof(oldSize: number, newSize: number, read: ReadNodes): Promise<Buffer[]> {
  checkSize(oldSize, "oldSize");
  checkSize(newSize, "newSize");
  if (oldSize > newSize) throw new RangeError(`oldSize ${oldSize} is larger than newSize ${newSize}`);
  if (oldSize === 0 || oldSize === newSize) return [];
  // SUBPROOF(m, D[start:end], b) top down: each step's other subtree, then where it ends — the old tree's last
  // subtree itself, left out while it is still the whole old tree (b), whose root the verifier has.
  const outer: [number, number][] = [];
  let m = oldSize, start = 0, end = newSize, whole = true;
  while (m !== end - start) {
    const k = splitPoint(end - start);
    if (m <= k) {
      outer.push([start + k, end]);
      end = start + k;
    } else {
      outer.push([start, start + k]);
      start += k;
      m -= k;
      whole = false;
    }
  }
  return rootsOfSubtrees([...(whole ? [] : [[start, end] as [number, number]]), ...outer.reverse()], read);
}

/** MTH of the first `size` leaves from stored subtree hashes: the fold of at most log2(size) + 1 of them. */
export async function storedRoot(size: number, read: ReadNodes): Promise<Buffer> {
  checkSize(size, "size");
  return size === 0 ? emptyRoot() : (await rootsOfSubtrees([[0, size]], read))[0]!;
}

// Roots of the subtrees `ranges` from one read of the perfect subtrees they split into (each read once).
async function rootsOfSubtrees(ranges: readonly (readonly [number, number])[], read: ReadNodes): Promise<Buffer[]> {
  const pieces = ranges.map(([start, end]) => nodesOf(start, end));
  const key = (id: NodeId): string => `${id.level}/${id.index}`;
  const wanted = new Map<string, NodeId>();
  for (const id of pieces.flat()) wanted.set(key(id), id);
  const ids = [...wanted.values()];
  const hashes = ids.length === 0 ? [] : await read(ids);
  if (hashes.length !== ids.length) throw new RangeError(`asked for ${ids.length} subtree hashes, read ${hashes.length}`);
  const known = new Map<string, Uint8Array>();
  ids.forEach((id, i) => {
    const h = hashes[i];
    if (!h || !isHash(h)) throw new RangeError(`the stored hash of leaves [${nodeLeaves(id).join(", ")}) is ${h?.length ?? "no"} bytes, not ${HASH_BYTES}`);
    known.set(key(id), h);
  });
  // MTH splits at the largest power of two below the width, which is the first piece: fold right to left.
  return pieces.map((list) => {
    let r: Buffer = Buffer.from(known.get(key(list.at(-1)!))!);
    for (let i = list.length - 2; i >= 0; i--) r = nodeHash(known.get(key(list[i]!))!, r);
    return r;
  });
}

// Adds the leaf at index `at` to `frontier`, in place: a size ending in j 1-bits completes j subtrees, merged
// right to left, each reported to `completed` when given.
function pushLeaf(frontier: Buffer[], at: number, leaf: Uint8Array, completed?: (node: NodeHash) => void): void {
  let node: Buffer = Buffer.from(leaf);
  let width = 1;
  for (let s = at, level = 1; isOdd(s); s = half(s), level++) {
    node = nodeHash(frontier.pop()!, node);
    width *= 2;
    completed?.({ level, index: (at + 1) / width - 1, hash: node });
  }
  frontier.push(node);
}

// ---------------------------------------------------------------------------------------------------------

// MTH(D[start:end]) from the stored leaf hashes; end > start.
async function subtreeRoot(start: number, end: number, leafAt: LeafAt): Promise<Buffer> {
  if (end - start === 1) {
    const h = await leafAt(start);
    if (!isHash(h)) throw new RangeError(`the leaf hash at ${start} is ${h.length} bytes, not ${HASH_BYTES}`);
    return Buffer.from(h);
  }
  const k = splitPoint(end - start);
  return nodeHash(await subtreeRoot(start, start + k, leafAt), await subtreeRoot(start + k, end, leafAt));
}

// RFC 9162 §2.1.1: k, the largest power of two smaller than n (n > 1).
function splitPoint(n: number): number {
  return largestPowerOfTwoAtMost(n - 1);
}

function largestPowerOfTwoAtMost(n: number): number {
  let p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && largestPowerOfTwoAtMost(n) === n;
}

function popCount(n: number): number {
  let c = 0;
  for (let s = n; s > 0; s = half(s)) c += s % 2;
  return c;
}

const isOdd = (n: number): boolean => n % 2 === 1;
const half = (n: number): number => Math.floor(n / 2);
const isSize = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;
const isHash = (h: Uint8Array): boolean => h instanceof Uint8Array && h.length === HASH_BYTES;
const equal = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(a, b) === 0;

function checkSize(n: number, name: string): void {
  if (!isSize(n)) throw new RangeError(`${name} must be a non-negative safe integer, not ${n}`);
}
