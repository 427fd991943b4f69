// Lineage's Merkle log (RFC 9162 §2.1) and signed checkpoints (C2SP signed-note / tlog-checkpoint).
//
// Known answers: the RFC 6962 reference tree of the Certificate Transparency implementations (8 leaves, the
// roots of sizes 1–8, and the inclusion and consistency proofs checked in transparency-dev/merkle's
// proof/verify_test.go), and the signed-note reference key and sum.golang.org checkpoint of golang.org/x/mod's
// sumdb/note. Then properties over random trees of up to 70 leaves (MERKLE_SEED=<hex> replays a run).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createPrivateKey, createPublicKey, generateKeyPairSync, hash, randomBytes, sign } from "node:crypto";
import type { KeyObject } from "node:crypto";
import { createUser } from "@nats-io/nkeys";
import {
  CheckpointRejection, encodeCheckpoint, signCheckpoint, verifyCheckpoint,
} from "../services/lineage/checkpoint.ts";
import type { Checkpoint, CheckpointVerdict } from "../services/lineage/checkpoint.ts";
import {
  consistencyProof, createMerkleLog, emptyRoot, frontierAt, inclusionProof, leafHash, nodeHash, rootAt, rootOf, verifyConsistency,
  verifyInclusion,
} from "../services/lineage/merkle.ts";
import { ErrorCode, isCausewayError, signingKeyFromNkeySeed, verificationKeyFromNkey } from "../services/kit/index.ts";

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");
const unhex = (s: string): Buffer => Buffer.from(s, "hex");
const sha256 = (data: string | Uint8Array): Buffer => hash("sha256", data, "buffer");

// ---- the RFC 6962 reference tree ---------------------------------------------------------------------------

const EMPTY_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const REF_LEAVES = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
  .map((d) => leafHash(unhex(d)));
/** REF_ROOTS[n - 1] is the root of the first n reference leaves. */
const REF_ROOTS = [
  "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
  "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
  "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
  "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
  "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
  "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
  "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];
const refRoot = (n: number): Buffer => unhex(REF_ROOTS[n - 1]!);
// Indices are 0-based here (the Go vectors number leaves from 1).
const REF_INCLUSION = [
  { index: 0, size: 1, proof: [] },
  { index: 0, size: 8, proof: [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
  ] },
  { index: 5, size: 8, proof: [
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  ] },
  { index: 2, size: 3, proof: ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"] },
  { index: 1, size: 5, proof: [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
  ] },
];
const REF_CONSISTENCY = [
  { oldSize: 1, newSize: 1, proof: [] },
  { oldSize: 1, newSize: 8, proof: [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
  ] },
  { oldSize: 6, newSize: 8, proof: [
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  ] },
  { oldSize: 2, newSize: 5, proof: [
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
  ] },
  { oldSize: 6, newSize: 7, proof: [
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
  ] },
];
// A hash in no tree, as transparency-dev uses for "some hash".
const SOME_HASH = unhex("abacaba000000000000000000000000000000000000000000060061e00123456");

// ---- random trees ------------------------------------------------------------------------------------------

const SEED = process.env.MERKLE_SEED ?? randomBytes(8).toString("hex");
const MAX = 70;
// Twice MAX, so "the wrong size" can be larger than any tested size and still have a root.
const LEAVES = Array.from({ length: 2 * MAX }, (_, i) => leafHash(sha256(`${SEED}/${i}`)));
const ROOTS = Array.from({ length: 2 * MAX + 1 }, (_, n) => rootOf(LEAVES.slice(0, n)));
const leafAt = (i: number): Buffer => {
  assert.ok(i >= 0 && i < LEAVES.length, `leafAt(${i}) out of range`);
  return LEAVES[i]!;
};
const at = (what: string): string => `${what} (MERKLE_SEED=${SEED})`;

function flipBit(b: Uint8Array, bit: number): Buffer {
  const copy = Buffer.from(b);
  copy[bit >> 3]! ^= 1 << (bit & 7);
  return copy;
}

/** Every way a proof is damaged that a verifier must notice: a flipped bit per node, nodes missing, nodes added. */
function damagedProofs(proof: readonly Buffer[], extras: readonly Buffer[]): { what: string; proof: Buffer[] }[] {
  const out: { what: string; proof: Buffer[] }[] = [];
  proof.forEach((_, i) => {
    const flipped = [...proof];
    flipped[i] = flipBit(proof[i]!, (i * 53 + 7) % 256);
    out.push({ what: `bit flipped in node ${i}`, proof: flipped });
  });
  if (proof.length > 0) {
    out.push({ what: "last node missing", proof: proof.slice(0, -1) });
    out.push({ what: "first node missing", proof: proof.slice(1) });
  }
  for (const [k, extra] of extras.entries()) {
    out.push({ what: `extra node ${k} appended`, proof: [...proof, extra] });
    out.push({ what: `extra node ${k} prepended`, proof: [extra, ...proof] });
    if (proof.length > 1) out.push({ what: `extra node ${k} inserted`, proof: [proof[0]!, extra, ...proof.slice(1)] });
  }
  if (proof.length > 1) out.push({ what: "nodes swapped", proof: [proof[1]!, proof[0]!, ...proof.slice(2)] });
  return out;
}

// ---- known answers -----------------------------------------------------------------------------------------

test("merkle - the empty tree's root is SHA-256 of the empty string", async () => {
  assert.equal(hex(emptyRoot()), EMPTY_ROOT);
  assert.equal(hex(rootOf([])), EMPTY_ROOT);
  assert.equal(hex(createMerkleLog({ leafAt }).root()), EMPTY_ROOT);
  assert.equal(hex(await rootAt(0, leafAt)), EMPTY_ROOT);
});

test("merkle - leaf and node hashes carry the RFC 9162 prefixes 0x00 and 0x01", () => {
  assert.equal(hex(leafHash(new Uint8Array())), REF_ROOTS[0]); // the tree of the one empty record
  assert.equal(hex(leafHash(unhex("00"))), hex(sha256(unhex("0000"))));
  assert.equal(hex(nodeHash(REF_LEAVES[0]!, REF_LEAVES[1]!)), REF_ROOTS[1]);
  assert.equal(hex(nodeHash(REF_LEAVES[0]!, REF_LEAVES[1]!)), hex(sha256(Buffer.concat([unhex("01"), REF_LEAVES[0]!, REF_LEAVES[1]!]))));
});

test("merkle - the roots of the RFC 6962 reference tree match for sizes 1 to 8", async () => {
  const log = createMerkleLog({ leafAt: (i) => REF_LEAVES[i]! });
  for (let n = 1; n <= 8; n++) {
    log.append(REF_LEAVES[n - 1]!);
    assert.equal(hex(rootOf(REF_LEAVES.slice(0, n))), REF_ROOTS[n - 1], `rootOf, size ${n}`);
    assert.equal(hex(log.root()), REF_ROOTS[n - 1], `incremental log, size ${n}`);
    assert.equal(hex(await rootAt(n, (i) => REF_LEAVES[i]!)), REF_ROOTS[n - 1], `rootAt, size ${n}`);
  }
});

test("merkle - inclusion proofs of the reference tree match the published ones and verify", async () => {
  for (const { index, size, proof } of REF_INCLUSION) {
    const got = await inclusionProof(index, size, (i) => REF_LEAVES[i]!);
    assert.deepEqual(got.map(hex), proof, `proof of ${index} in ${size}`);
    assert.ok(verifyInclusion(REF_LEAVES[index]!, index, size, proof.map(unhex), refRoot(size)), `verify ${index} in ${size}`);
  }
});

test("merkle - the reference inclusion proofs fail transparency-dev's corruption probes", () => {
  for (const { index, size, proof: text } of REF_INCLUSION.filter((v) => v.proof.length > 0)) {
    const proof = text.map(unhex), root = refRoot(size), leaf = REF_LEAVES[index]!;
    const probes: [string, Uint8Array, number, number, Buffer[], Uint8Array][] = [
      ["index - 1", leaf, index - 1, size, proof, root],
      ["index + 1", leaf, index + 1, size, proof, root],
      ["index ^ 2", leaf, index ^ 2, size, proof, root],
      ["size * 2", leaf, index, size * 2, proof, root],
      ["size / 2", leaf, index, size >> 1, proof, root],
      ["wrong leaf", Buffer.from("WrongLeaf"), index, size, proof, root],
      ["empty root", leaf, index, size, proof, unhex(EMPTY_ROOT)],
      ["some root", leaf, index, size, proof, SOME_HASH],
      ...damagedProofs(proof, [Buffer.alloc(0), root, SOME_HASH])
        .map(({ what, proof: p }): [string, Uint8Array, number, number, Buffer[], Uint8Array] => [what, leaf, index, size, p, root]),
    ];
    for (const [what, l, i, n, p, r] of probes) {
      assert.equal(verifyInclusion(l, i, n, p, r), false, `${index} in ${size}: ${what}`);
    }
  }
});

test("merkle - consistency proofs of the reference tree match the published ones and verify", async () => {
  for (const { oldSize, newSize, proof } of REF_CONSISTENCY) {
    const got = await consistencyProof(oldSize, newSize, (i) => REF_LEAVES[i]!);
    assert.deepEqual(got.map(hex), proof, `proof ${oldSize} → ${newSize}`);
    assert.ok(verifyConsistency(oldSize, newSize, refRoot(oldSize), refRoot(newSize), proof.map(unhex)), `verify ${oldSize} → ${newSize}`);
  }
});

test("merkle - the reference consistency proofs fail transparency-dev's corruption probes", () => {
  for (const { oldSize: m, newSize: n, proof: text } of REF_CONSISTENCY.filter((v) => v.proof.length > 0)) {
    const proof = text.map(unhex), r1 = refRoot(m), r2 = refRoot(n);
    const probes: [string, number, number, Uint8Array, Uint8Array, Buffer[]][] = [
      ["oldSize - 1", m - 1, n, r1, r2, proof],
      ["oldSize + 1", m + 1, n, r1, r2, proof],
      ["oldSize ^ 2", m ^ 2, n, r1, r2, proof],
      ["newSize * 2", m, n * 2, r1, r2, proof],
      ["newSize / 2", m, n >> 1, r1, r2, proof],
      ["wrong old root", m, n, Buffer.from("WrongRoot"), r2, proof],
      ["wrong new root", m, n, r1, Buffer.from("WrongRoot"), proof],
      ["swapped roots", m, n, r2, r1, proof],
      ["empty proof", m, n, r1, r2, []],
      ...damagedProofs(proof, [Buffer.alloc(0), r1, r2, proof[0]!])
        .map(({ what, proof: p }): [string, number, number, Uint8Array, Uint8Array, Buffer[]] => [what, m, n, r1, r2, p]),
    ];
    for (const [what, s1, s2, a, b, p] of probes) {
      assert.equal(verifyConsistency(s1, s2, a, b, p), false, `${m} → ${n}: ${what}`);
    }
  }
});

test("merkle - the degenerate consistency cases follow RFC 9162", () => {
  const r = refRoot(3);
  assert.ok(verifyConsistency(3, 3, r, r, []), "equal sizes, equal roots, empty proof");
  assert.equal(verifyConsistency(3, 3, r, refRoot(4), []), false, "equal sizes, different roots");
  assert.equal(verifyConsistency(3, 3, r, r, [r]), false, "equal sizes, a proof node too many");
  assert.ok(verifyConsistency(0, 3, unhex(EMPTY_ROOT), r, []), "the empty tree is a prefix of every tree");
  assert.equal(verifyConsistency(0, 3, SOME_HASH, r, []), false, "…but only with the empty root");
  assert.equal(verifyConsistency(0, 3, unhex(EMPTY_ROOT), r, [r]), false, "…and an empty proof");
  assert.equal(verifyConsistency(4, 3, refRoot(4), r, []), false, "oldSize > newSize");
  assert.equal(verifyConsistency(1, 2, refRoot(1), refRoot(2), []), false, "a real step with an empty proof");
  assert.equal(verifyConsistency(-1, 3, r, r, []), false, "a negative size");
  assert.equal(verifyConsistency(1.5, 3, r, r, []), false, "a fractional size");
});

test("merkle - an index at or beyond the size never verifies", () => {
  const leaf = REF_LEAVES[0]!;
  assert.equal(verifyInclusion(leaf, 0, 0, [], unhex(EMPTY_ROOT)), false);
  assert.equal(verifyInclusion(leaf, 1, 1, [], leaf), false);
  assert.equal(verifyInclusion(leaf, 2, 1, [], leaf), false);
  assert.equal(verifyInclusion(leaf, -1, 1, [], leaf), false);
  assert.ok(verifyInclusion(leaf, 0, 1, [], leaf), "a one-leaf tree's root is its leaf");
  assert.equal(verifyInclusion(Buffer.alloc(0), 0, 1, [], Buffer.alloc(0)), false, "hashes must be 32 bytes");
});

test("merkle - a proof pins the size only through the root it is checked against", async () => {
  // The leftmost leaf's path in a tree of 7 and of 8 takes the same turns, so the verifier cannot tell the sizes
  // apart from the proof alone: it is the signed checkpoint that binds a size to its root.
  const proof8 = await inclusionProof(0, 8, (i) => REF_LEAVES[i]!);
  assert.ok(verifyInclusion(REF_LEAVES[0]!, 0, 7, proof8, refRoot(8)));
  assert.equal(verifyInclusion(REF_LEAVES[0]!, 0, 7, proof8, refRoot(7)), false);
});

// ---- properties over random trees --------------------------------------------------------------------------

test("merkle - every inclusion proof verifies, for every index of every size up to 70, and no damaged one does", async () => {
  for (let n = 1; n <= MAX; n++) {
    const root = ROOTS[n]!;
    for (let i = 0; i < n; i++) {
      const where = at(`leaf ${i} of ${n}`);
      const leaf = LEAVES[i]!;
      const proof = await inclusionProof(i, n, leafAt);
      assert.ok(verifyInclusion(leaf, i, n, proof, root), where);
      for (const { what, proof: p } of damagedProofs(proof, [SOME_HASH, root])) {
        assert.equal(verifyInclusion(leaf, i, n, p, root), false, `${where}: ${what}`);
      }
      for (const j of new Set([i - 1, i + 1, i ^ 2, n - 1 - i])) {
        if (j !== i && j >= 0 && j < n) assert.equal(verifyInclusion(leaf, j, n, proof, root), false, `${where}: index ${j}`);
      }
      if (n > 1) assert.equal(verifyInclusion(LEAVES[(i + 1) % n]!, i, n, proof, root), false, `${where}: another leaf`);
      // Another size, checked against that size's root (against this root it can pass: see the test above).
      for (const s of new Set([n - 1, n + 1, n * 2, n >> 1])) {
        if (s !== n && s > i) assert.equal(verifyInclusion(leaf, i, s, proof, ROOTS[s]!), false, `${where}: size ${s}`);
      }
      assert.equal(verifyInclusion(leaf, i, n, proof, ROOTS[n - 1]!), false, `${where}: the previous root`);
      assert.equal(verifyInclusion(leaf, n, n, proof, root), false, `${where}: index = size`);
    }
  }
});

test("merkle - every consistency proof verifies, for every pair of sizes up to 70, and no damaged one does", async () => {
  for (let n = 1; n <= MAX; n++) {
    for (let m = 0; m <= n; m++) {
      const where = at(`${m} → ${n}`);
      const [r1, r2] = [ROOTS[m]!, ROOTS[n]!];
      const proof = await consistencyProof(m, n, leafAt);
      assert.ok(verifyConsistency(m, n, r1, r2, proof), where);
      if (m === 0 || m === n) {
        assert.equal(proof.length, 0, where);
        continue;
      }
      for (const { what, proof: p } of damagedProofs(proof, [SOME_HASH, r2])) {
        assert.equal(verifyConsistency(m, n, r1, r2, p), false, `${where}: ${what}`);
      }
      assert.equal(verifyConsistency(m, n, r2, r1, proof), false, `${where}: swapped roots`);
      assert.equal(verifyConsistency(n, m, r2, r1, proof), false, `${where}: swapped sizes and roots`);
      assert.equal(verifyConsistency(m, n, flipBit(r1, 100), r2, proof), false, `${where}: old root`);
      assert.equal(verifyConsistency(m, n, r1, flipBit(r2, 100), proof), false, `${where}: new root`);
      // Other sizes, each checked against its own root.
      for (const s of new Set([m - 1, m + 1, m * 2, m >> 1, 0])) {
        if (s !== m && s <= n) assert.equal(verifyConsistency(s, n, ROOTS[s]!, r2, proof), false, `${where}: old size ${s}`);
      }
      for (const s of new Set([n - 1, n + 1, n * 2])) {
        if (s !== n && s >= m) assert.equal(verifyConsistency(m, s, r1, ROOTS[s]!, proof), false, `${where}: new size ${s}`);
      }
    }
  }
});

test("merkle - a flipped bit anywhere in a proof, a leaf or a root is caught", async () => {
  for (const [i, n] of [[0, 1], [13, 70], [69, 70], [31, 64], [64, 65]] as const) {
    const proof = await inclusionProof(i, n, leafAt);
    for (let bit = 0; bit < 256; bit++) {
      assert.equal(verifyInclusion(flipBit(LEAVES[i]!, bit), i, n, proof, ROOTS[n]!), false, at(`leaf ${i} of ${n}, leaf bit ${bit}`));
      assert.equal(verifyInclusion(LEAVES[i]!, i, n, proof, flipBit(ROOTS[n]!, bit)), false, at(`leaf ${i} of ${n}, root bit ${bit}`));
      for (let k = 0; k < proof.length; k++) {
        const p = proof.map((h, x) => (x === k ? flipBit(h, bit) : h));
        assert.equal(verifyInclusion(LEAVES[i]!, i, n, p, ROOTS[n]!), false, at(`leaf ${i} of ${n}, node ${k} bit ${bit}`));
      }
    }
  }
  for (const [m, n] of [[1, 2], [37, 70], [32, 64], [63, 64], [6, 7]] as const) {
    const proof = await consistencyProof(m, n, leafAt);
    for (let bit = 0; bit < 256; bit++) {
      assert.equal(verifyConsistency(m, n, flipBit(ROOTS[m]!, bit), ROOTS[n]!, proof), false, at(`${m} → ${n}, old root bit ${bit}`));
      assert.equal(verifyConsistency(m, n, ROOTS[m]!, flipBit(ROOTS[n]!, bit), proof), false, at(`${m} → ${n}, new root bit ${bit}`));
      for (let k = 0; k < proof.length; k++) {
        const p = proof.map((h, x) => (x === k ? flipBit(h, bit) : h));
        assert.equal(verifyConsistency(m, n, ROOTS[m]!, ROOTS[n]!, p), false, at(`${m} → ${n}, node ${k} bit ${bit}`));
      }
    }
  }
});

test("merkle - the incremental log's root equals rootOf at every size", async () => {
  const log = createMerkleLog({ leafAt });
  for (let n = 1; n <= LEAVES.length; n++) {
    log.append(LEAVES[n - 1]!);
    assert.equal(log.size, n);
    assert.equal(hex(log.root()), hex(ROOTS[n]!), at(`size ${n}`));
    const frontier = log.frontier();
    assert.equal(frontier.length, n.toString(2).replaceAll("0", "").length, at(`frontier size at ${n}: one hash per 1-bit`));
    assert.deepEqual(frontier.map(hex), (await frontierAt(n, leafAt)).map(hex), at(`frontier at ${n}`));
  }
});

test("merkle - a log restored from a persisted size and frontier continues like the original", async () => {
  for (let cut = 0; cut <= MAX; cut++) {
    const first = createMerkleLog({ leafAt });
    for (let i = 0; i < cut; i++) first.append(LEAVES[i]!);
    // Persisted as text, as a store would.
    const saved = JSON.stringify({ size: first.size, frontier: first.frontier().map((h) => h.toString("base64")) });
    const state = JSON.parse(saved) as { size: number; frontier: string[] };
    const log = createMerkleLog({ leafAt, size: state.size, frontier: state.frontier.map((h) => Buffer.from(h, "base64")) });
    assert.equal(hex(log.root()), hex(ROOTS[cut]!), at(`restored at ${cut}`));
    for (let n = cut + 1; n <= MAX; n++) {
      log.append(LEAVES[n - 1]!);
      assert.equal(hex(log.root()), hex(ROOTS[n]!), at(`restored at ${cut}, size ${n}`));
    }
  }
});

test("merkle - the log's proofs come from its store and match the standalone functions", async () => {
  const reads: number[] = [];
  // A store answers asynchronously, as SQL does.
  const log = createMerkleLog({ leafAt: async (i) => (reads.push(i), LEAVES[i]!) });
  for (let i = 0; i < 21; i++) log.append(LEAVES[i]!);
  assert.equal(reads.length, 0, "appending and the root read no leaves");
  assert.deepEqual((await log.inclusionProof(7)).map(hex), (await inclusionProof(7, 21, leafAt)).map(hex));
  assert.deepEqual((await log.inclusionProof(7, 9)).map(hex), (await inclusionProof(7, 9, leafAt)).map(hex));
  assert.deepEqual((await log.consistencyProof(13)).map(hex), (await consistencyProof(13, 21, leafAt)).map(hex));
  assert.deepEqual((await log.consistencyProof(3, 17)).map(hex), (await consistencyProof(3, 17, leafAt)).map(hex));
  assert.ok(reads.every((i) => i < 21), "only leaves in the log are read");
  assert.ok(verifyInclusion(LEAVES[7]!, 7, 21, await log.inclusionProof(7), log.root()));
  assert.ok(verifyConsistency(13, 21, ROOTS[13]!, log.root(), await log.consistencyProof(13)));
});

test("merkle - proofs outside the log are refused", async () => {
  const log = createMerkleLog({ leafAt });
  for (let i = 0; i < 5; i++) log.append(LEAVES[i]!);
  await assert.rejects(inclusionProof(5, 5, leafAt), RangeError);
  await assert.rejects(inclusionProof(0, 0, leafAt), RangeError);
  await assert.rejects(inclusionProof(-1, 5, leafAt), RangeError);
  await assert.rejects(consistencyProof(6, 5, leafAt), RangeError);
  await assert.rejects(log.inclusionProof(0, 6), RangeError);
  await assert.rejects(log.consistencyProof(2, 6), RangeError);
  await assert.rejects(inclusionProof(0, 2, () => Buffer.alloc(31)), /31 bytes/);
});

test("merkle - a log refuses a persisted frontier that does not fit its size", () => {
  const frontier = [LEAVES[0]!, LEAVES[1]!];
  assert.throws(() => createMerkleLog({ leafAt, size: 3 }), /frontier of 2 hashes, not 0/);
  assert.throws(() => createMerkleLog({ leafAt, size: 4, frontier }), /frontier of 1 hashes, not 2/);
  assert.throws(() => createMerkleLog({ leafAt, size: 3, frontier: [LEAVES[0]!, Buffer.alloc(31)] }), /32 bytes/);
  assert.throws(() => createMerkleLog({ leafAt, size: -1 }), RangeError);
  assert.throws(() => createMerkleLog({ leafAt }).append(Buffer.alloc(33)), /32 bytes/);
  assert.equal(createMerkleLog({ leafAt, size: 3, frontier }).size, 3);
});

// ---- checkpoints -------------------------------------------------------------------------------------------

const CHECKPOINT: Checkpoint = Object.freeze({
  origin: "causeway.example/lineage",
  size: 8,
  root: refRoot(8).toString("base64"),
  time: "2026-05-13T09:49:12Z",
});
const nkeyPair = (): { privateKey: KeyObject; publicKey: KeyObject } => {
  const user = createUser();
  const signing = signingKeyFromNkeySeed(user.getSeed());
  return { privateKey: signing.privateKey, publicKey: verificationKeyFromNkey(user.getPublicKey()).publicKey };
};
const KEY = nkeyPair();
const rejected = (v: CheckpointVerdict): { reason: string; message: string } => {
  assert.equal(v.ok, false, "expected a rejection");
  return v as { reason: string; message: string };
};
// An Ed25519 signed-note line over any body, to build notes signCheckpoint would never write.
const noteLine = (body: string, name: string, key: KeyObject, hashOf: KeyObject = createPublicKey(key)): string => {
  const pub = Buffer.from(hashOf.export({ format: "jwk" }).x!, "base64url");
  const keyHash = sha256(Buffer.concat([Buffer.from(`${name}\n`), Buffer.from([1]), pub])).subarray(0, 4);
  return `— ${name} ${Buffer.concat([keyHash, sign(null, Buffer.from(body), key)]).toString("base64")}\n`;
};

test("checkpoint - the body is the C2SP checkpoint text with the time as a fourth line", () => {
  assert.equal(
    encodeCheckpoint(CHECKPOINT),
    "causeway.example/lineage\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n2026-05-13T09:49:12Z\n",
  );
  assert.equal(encodeCheckpoint({ ...CHECKPOINT, size: 0, root: emptyRoot().toString("base64") }).split("\n")[1], "0");
});

test("checkpoint - a signed checkpoint verifies with the kit's keys and gives the checkpoint back", () => {
  const note = signCheckpoint(CHECKPOINT, KEY);
  assert.ok(note.startsWith(`${encodeCheckpoint(CHECKPOINT)}\n— causeway.example/lineage `), note);
  assert.deepEqual(verifyCheckpoint(note, KEY), { ok: true, checkpoint: CHECKPOINT });
  assert.deepEqual(verifyCheckpoint(Buffer.from(note), KEY), { ok: true, checkpoint: CHECKPOINT });
  const verdict = verifyCheckpoint(note, KEY);
  assert.ok(verdict.ok && Object.isFrozen(verdict.checkpoint));
});

test("checkpoint - the key hash is the signed-note one (Go sumdb/note's reference key)", () => {
  // golang.org/x/mod/sumdb/note: PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALV… and PeterNeumann+c74f20a3+ARpc2Qc….
  const seed = Buffer.from("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz", "base64").subarray(1);
  const privateKey = createPrivateKey({ key: Buffer.concat([unhex("302e020100300506032b657004220420"), seed]), format: "der", type: "pkcs8" });
  const x = Buffer.from("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "base64").subarray(1).toString("base64url");
  const publicKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
  const note = signCheckpoint({ ...CHECKPOINT, origin: "PeterNeumann" }, { privateKey });
  const signature = Buffer.from(note.trimEnd().split(" ").at(-1)!, "base64");
  assert.equal(hex(signature.subarray(0, 4)), "c74f20a3");
  assert.equal(signature.length, 4 + 64);
  assert.ok(verifyCheckpoint(note, { publicKey }).ok);
});

test("checkpoint - a real sum.golang.org checkpoint passes the signature check and fails only for its missing time line", () => {
  // From google/trillian-examples (gossip client test): sum.golang.org's key and a checkpoint it signed.
  const x = Buffer.from("Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8", "base64").subarray(1).toString("base64url");
  const publicKey = createPublicKey({ key: { kty: "OKP", crv: "Ed25519", x }, format: "jwk" });
  const body = "go.sum database tree\n13485\n/ZWur4obeiqK+ASdnPK+/Rmz6LPQMUeSmHh0+UkL54Y=\n";
  const line = "— sum.golang.org Az3grnQReYTvpCrRxT+w50vixbqBlB/aPS8bL8f8KW4HHP+UjLSXOJgCh4f54n8hO6lrESglzyRXMXnhaWzaeY3zqw8=\n";
  const { reason, message } = rejected(verifyCheckpoint(`${body}\n${line}`, { publicKey }));
  assert.equal(reason, CheckpointRejection.Malformed);
  assert.match(message, /3 lines, not 4/);
  assert.equal(rejected(verifyCheckpoint(`${body.replace("13485", "13486")}\n${line}`, { publicKey })).reason, CheckpointRejection.BadSignature);
});

test("checkpoint - a changed body is rejected as bad_signature", () => {
  const note = signCheckpoint(CHECKPOINT, KEY);
  const changes: [string, string][] = [
    ["size", note.replace("\n8\n", "\n9\n")],
    ["root", note.replace(CHECKPOINT.root, refRoot(7).toString("base64"))],
    ["time", note.replace("09:49:12Z", "09:49:13Z")],
    ["origin", note.replace("causeway.example/lineage\n", "causeway.example/lineage2\n")],
  ];
  for (const [what, changed] of changes) {
    assert.notEqual(changed, note, what);
    const { reason, message } = rejected(verifyCheckpoint(changed, KEY));
    assert.equal(reason, CheckpointRejection.BadSignature, what);
    assert.match(message, /changed after signing, or forged/);
  }
});

test("checkpoint - a checkpoint signed by another key is rejected", () => {
  const other = generateKeyPairSync("ed25519");
  const byOther = signCheckpoint(CHECKPOINT, other);
  assert.equal(rejected(verifyCheckpoint(byOther, KEY)).reason, CheckpointRejection.NoSignature);
  // Another key's signature under our key hash: the line claims our key, so the note is refused outright.
  const body = encodeCheckpoint(CHECKPOINT);
  const forged = `${body}\n${noteLine(body, CHECKPOINT.origin, other.privateKey, KEY.publicKey)}`;
  assert.equal(rejected(verifyCheckpoint(forged, KEY)).reason, CheckpointRejection.BadSignature);
  // A cosigned note: lines by keys we do not hold are skipped, ours decides.
  const witness = noteLine(body, "witness.example", other.privateKey);
  assert.ok(verifyCheckpoint(`${body}\n${witness}${signCheckpoint(CHECKPOINT, KEY).slice(body.length + 1)}`, KEY).ok);
});

test("checkpoint - malformed notes are rejected with a reason", () => {
  const body = encodeCheckpoint(CHECKPOINT);
  const note = signCheckpoint(CHECKPOINT, KEY);
  const signed = (b: string, name = CHECKPOINT.origin): string => `${b}\n${noteLine(b, name, KEY.privateKey)}`;
  const cases: [string, string | Uint8Array, RegExp][] = [
    ["no signature block", body, /no blank line/],
    ["no signature line", `${body}\n`, /must end with a newline/],
    ["no final newline", note.slice(0, -1), /must end with a newline/],
    ["a line without the em dash", note.replace("— ", "- "), /not a signature line/],
    ["a line without base64", `${body}\n— ${CHECKPOINT.origin} !!!\n`, /not a signature line/],
    ["a signature too short", `${body}\n— ${CHECKPOINT.origin} AQID\n`, /not a signature line/],
    ["a carriage return", note.replace("\n8\n", "\r\n8\n"), /control character/],
    ["bytes that are not UTF-8", Buffer.concat([Buffer.from([0xff]), Buffer.from(note)]), /not UTF-8/],
    ["too many signatures", `${body}\n${`— other AAAAAAAA\n`.repeat(101)}`, /more than 100/],
    ["three body lines", signed(body.split("\n").slice(0, 3).join("\n") + "\n"), /3 lines, not 4/],
    ["five body lines", signed(`${body}extra\n`), /5 lines, not 4/],
    ["a size with a leading zero", signed(body.replace("\n8\n", "\n08\n")), /not a decimal number/],
    ["a root of 31 bytes", signed(body.replace(CHECKPOINT.root, Buffer.alloc(31).toString("base64"))), /standard base64 of 32 bytes/],
    ["a time with milliseconds", signed(body.replace("12Z", "12.000Z")), /RFC 3339 UTC at seconds/],
    ["an origin the signer is not named after", signed(body, "someone.else"), /signed as "someone.else"/],
  ];
  for (const [what, n, message] of cases) {
    const verdict = rejected(verifyCheckpoint(n, KEY));
    assert.equal(verdict.reason, CheckpointRejection.Malformed, what);
    assert.match(verdict.message, message, what);
  }
});

test("checkpoint - encoding refuses a checkpoint it could not sign faithfully", () => {
  const bad: Partial<Checkpoint>[] = [
    { origin: "" }, { origin: "two words" }, { origin: "a+b" }, { origin: "tab\there" }, { origin: "nel\u0085" },
    { size: -1 }, { size: 1.5 }, { size: Number.MAX_SAFE_INTEGER + 1 },
    { root: "not base64" }, { root: Buffer.alloc(31).toString("base64") }, { root: Buffer.alloc(32).toString("base64url") },
    { time: "2026-05-13T09:49:12.123Z" }, { time: "2026-05-13T10:49:12+01:00" }, { time: "2026-02-30T00:00:00Z" },
    { time: "2026-13-01T00:00:00Z" }, { time: "yesterday" },
  ];
  for (const change of bad) {
    assert.throws(() => encodeCheckpoint({ ...CHECKPOINT, ...change }), RangeError, JSON.stringify(change));
    assert.throws(() => signCheckpoint({ ...CHECKPOINT, ...change }, KEY), RangeError, JSON.stringify(change));
  }
});

test("checkpoint - a key that is not Ed25519 is refused with CW_ERR_KEY_INVALID", () => {
  const p256 = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const note = signCheckpoint(CHECKPOINT, KEY);
  assert.throws(() => signCheckpoint(CHECKPOINT, p256), (err) => isCausewayError(err, ErrorCode.KeyInvalid));
  assert.throws(() => verifyCheckpoint(note, p256), (err) => isCausewayError(err, ErrorCode.KeyInvalid));
  assert.throws(() => signCheckpoint(CHECKPOINT, { privateKey: KEY.publicKey }), (err) => isCausewayError(err, ErrorCode.KeyInvalid));
});
