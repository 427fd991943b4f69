// Lineage proofs and exports on a real SQLite store holding a recorded reference flow: proofs verify offline
// with only the proof and the public key, and every mutation fails; exports pass the offline checker, and a
// changed line is reported by number; PROV-JSON and OpenLineage carry the relations and times they should.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import type { TestContext } from "node:test";
import { ErrorCode, isCausewayError } from "../services/kit/errors.ts";
import { inclusionProof, leafHash, rootOf } from "../services/lineage/merkle.ts";
import {
  createBatchProver, ProofRejection, proveConsistency, proveEvent, verifyConsistencyProof, verifyEventProof,
  type ConsistencyProof, type EventProof,
} from "../services/lineage/proofs.ts";
import type { LineageStore, StoredCheckpoint } from "../services/lineage/store.ts";
import { checkpoint, newKey, populate, referenceFlow, tempStore, type FlowFixture } from "./lineage-flow-fixture.ts";
import type { SigningKey } from "../services/kit/keys.ts";

interface Setup {
  store: LineageStore;
  flow: FlowFixture;
  key: SigningKey;
  /** A checkpoint of the first half of the log, and of all of it. */
  early: StoredCheckpoint;
  latest: StoredCheckpoint;
}

async function setup(t: TestContext): Promise<Setup> {
  const store = tempStore(t);
  const flow = referenceFlow();
  const key = newKey();
  const half = Math.floor(flow.contents.length / 2);
  await populate(store, flow.contents.slice(0, half));
  const early = await checkpoint(store, key, undefined, "2026-05-13T09:30:00Z");
  await populate(store, flow.contents.slice(half));
  const latest = await checkpoint(store, key);
  return { store, flow, key, early, latest };
}

const flipBit = (b64: string, bit = 0): string => {
  const b = Buffer.from(b64, "base64");
  b[bit >> 3]! ^= 1 << (bit & 7);
  return b.toString("base64");
};
const rejectedAs = (verdict: ReturnType<typeof verifyEventProof>, reason: string): void => {
  assert.equal(verdict.ok, false, `expected ${reason}, the proof verified`);
  if (!verdict.ok) assert.equal(verdict.reason, reason, verdict.message);
};

test("proofs - an event's inclusion proof verifies offline with the public key (object or NKey string), after a JSON round trip", async (t) => {
  const { store, flow, key, latest } = await setup(t);
  const proof = await proveEvent(store, flow.released.id, latest);
  assert.deepEqual(Object.keys(proof).sort(), ["checkpoint", "index", "leafHash", "proof", "record", "root", "size"]);
  assert.equal(proof.size, latest.size);
  assert.equal(proof.root, latest.root);
  assert.equal(proof.checkpoint, latest.note);
  assert.equal(JSON.parse(proof.record).attributes.id, flow.released.id);
  assert.deepEqual(verifyEventProof(proof, key), { ok: true });
  assert.deepEqual(verifyEventProof(JSON.parse(JSON.stringify(proof)), key.keyid), { ok: true });
  // Every record of the log, by index.
  for (let index = 0; index < latest.size; index++) {
    assert.deepEqual(verifyEventProof(await proveEvent(store, { index }, latest), key.keyid), { ok: true }, `index ${index}`);
  }
});

test("proofs - an event on several streams is proved at its first record; its other records by index", async (t) => {
  const { store, flow, key, latest } = await setup(t);
  const byId = await proveEvent(store, flow.report.id, latest);
  const report = flow.contents.flatMap((c, i) => (c.attributes?.id === flow.report.id ? [i] : []));
  assert.equal(report.length, 2);
  assert.equal(byId.index, report[0]);
  const forward = await proveEvent(store, { index: report[1]! }, latest);
  assert.equal(JSON.parse(forward.record).stream, "MESH_CAP");
  assert.deepEqual(verifyEventProof(forward, key), { ok: true });
  const explicit = await proveEvent(store, { id: flow.ambiguousId, source: flow.ambiguousSources[0]! }, latest);
  assert.equal(JSON.parse(explicit.record).attributes.source, flow.ambiguousSources[0]);
});

test("proofs - unknown, ambiguous and not-yet-covered events fail with their codes", async (t) => {
  const { store, flow, early, latest } = await setup(t);
  await assert.rejects(proveEvent(store, "nope", latest), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotFound));
  await assert.rejects(proveEvent(store, flow.ambiguousId, latest), (err: unknown) => isCausewayError(err, ErrorCode.LineageAmbiguousId));
  await assert.rejects(proveEvent(store, flow.released.id, early), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotCovered));
  await assert.rejects(proveEvent(store, { index: latest.size }, latest), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotCovered));
  await assert.rejects(proveConsistency(store, latest, early), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotCovered));
});

test("proofs - a checkpoint the store's leaves do not produce fails with CW_ERR_LINEAGE_CHECKPOINT_MISMATCH", async (t) => {
  const { store, flow, key, latest } = await setup(t);
  const other = { ...latest, root: rootOf([leafHash(Buffer.from("another log"))]).toString("base64") };
  await assert.rejects(proveEvent(store, flow.released.id, other), (err: unknown) => isCausewayError(err, ErrorCode.LineageCheckpointMismatch));
  const larger = await checkpoint(store, key, undefined, "2026-05-13T11:00:00Z");
  await assert.rejects(proveEvent(store, { index: 0 }, { ...larger, size: larger.size + 5 }), (err: unknown) => isCausewayError(err, ErrorCode.LineageCheckpointMismatch));
});

test("proofs - every mutation of an inclusion proof fails with its reason", async (t) => {
  const { store, flow, key, early, latest } = await setup(t);
  const proof = await proveEvent(store, flow.tasks[1]!.id, latest);
  assert.ok(proof.proof.length >= 3);
  const mutate = (change: Partial<EventProof>): EventProof => ({ ...proof, ...change });
  for (let node = 0; node < proof.proof.length; node++) {
    rejectedAs(verifyEventProof(mutate({ proof: proof.proof.map((h, i) => (i === node ? flipBit(h, 77) : h)) }), key), ProofRejection.BadPath);
  }
  rejectedAs(verifyEventProof(mutate({ proof: proof.proof.slice(1) }), key), ProofRejection.BadPath);
  rejectedAs(verifyEventProof(mutate({ index: proof.index + 1 }), key), ProofRejection.IndexMismatch);
  rejectedAs(verifyEventProof(mutate({ index: latest.size }), key), ProofRejection.IndexMismatch);
  rejectedAs(verifyEventProof(mutate({ size: proof.size - 1 }), key), ProofRejection.CheckpointMismatch);
  rejectedAs(verifyEventProof(mutate({ root: early.root }), key), ProofRejection.CheckpointMismatch);
  // Swapped roots and checkpoint: the older checkpoint signs a smaller tree the path does not lead to.
  rejectedAs(verifyEventProof(mutate({ root: early.root, size: early.size, checkpoint: early.note }), key), ProofRejection.BadPath);
  // A byte of the record changed: it no longer hashes to the leaf hash; with the leaf hash recomputed, the path fails.
  const changed = proof.record.replace("planner", "plannex");
  assert.notEqual(changed, proof.record);
  rejectedAs(verifyEventProof(mutate({ record: changed }), key), ProofRejection.LeafMismatch);
  rejectedAs(verifyEventProof(mutate({ record: changed, leafHash: leafHash(Buffer.from(changed)).toString("base64") }), key), ProofRejection.BadPath);
  rejectedAs(verifyEventProof(mutate({ leafHash: flipBit(proof.leafHash) }), key), ProofRejection.LeafMismatch);
  // Signed by another key, or the note changed after signing.
  const stranger = newKey();
  const forgedNote = (await checkpoint(store, stranger)).note;
  rejectedAs(verifyEventProof(mutate({ checkpoint: forgedNote }), key), ProofRejection.BadCheckpoint);
  rejectedAs(verifyEventProof(proof, stranger.keyid), ProofRejection.BadCheckpoint);
  rejectedAs(verifyEventProof(mutate({ checkpoint: proof.checkpoint.replace(`\n${proof.size}\n`, `\n${proof.size + 1}\n`) }), key), ProofRejection.BadCheckpoint);
  // Garbage never throws.
  rejectedAs(verifyEventProof(mutate({ leafHash: "not base64!" }), key), ProofRejection.Malformed);
  for (const junk of [null, 42, "proof", {}, { ...proof, proof: "x" }, { ...proof, index: -1 }]) rejectedAs(verifyEventProof(junk, key), ProofRejection.Malformed);
  rejectedAs(verifyEventProof(proof, "not an nkey"), ProofRejection.BadKey);
});

test("proofs - a consistency proof between two checkpoints verifies offline; mutations fail", async (t) => {
  const { store, key, early, latest } = await setup(t);
  const proof = await proveConsistency(store, early, latest);
  assert.deepEqual(proof.from, { size: early.size, root: early.root, checkpoint: early.note });
  assert.deepEqual(verifyConsistencyProof(proof, key), { ok: true });
  assert.deepEqual(verifyConsistencyProof(JSON.parse(JSON.stringify(proof)), key.keyid), { ok: true });
  assert.deepEqual(verifyConsistencyProof(await proveConsistency(store, latest, latest), key), { ok: true });
  const mutate = (change: Partial<ConsistencyProof>): ConsistencyProof => ({ ...proof, ...change });
  for (let node = 0; node < proof.proof.length; node++) {
    rejectedAs(verifyConsistencyProof(mutate({ proof: proof.proof.map((h, i) => (i === node ? flipBit(h, 3) : h)) }), key), ProofRejection.BadPath);
  }
  rejectedAs(verifyConsistencyProof(mutate({ from: { ...proof.from, root: proof.to.root }, to: { ...proof.to, root: proof.from.root } }), key), ProofRejection.CheckpointMismatch);
  rejectedAs(verifyConsistencyProof(mutate({ from: proof.to, to: proof.from }), key), ProofRejection.BadPath);
  rejectedAs(verifyConsistencyProof(mutate({ from: { ...proof.from, size: proof.from.size + 1 } }), key), ProofRejection.CheckpointMismatch);
  const stranger = newKey();
  rejectedAs(verifyConsistencyProof(proof, stranger), ProofRejection.BadCheckpoint);
  rejectedAs(verifyConsistencyProof({ from: proof.from }, key), ProofRejection.Malformed);
  // A checkpoint of a log that is not an extension of the early one.
  const { note, root } = await checkpoint(store, key, early.size + 1, "2026-05-13T12:00:00Z");
  const forked = { size: early.size + 1, root: flipBit(root), checkpoint: note };
  rejectedAs(verifyConsistencyProof(mutate({ to: forked }), key), ProofRejection.CheckpointMismatch);
});

test("proofs - the batch prover gives merkle.ts's audit paths for every index of trees of many sizes", async () => {
  for (const size of [1, 2, 3, 5, 8, 13, 255, 256, 257, 600, 1025]) {
    const leaves = Array.from({ length: size }, () => leafHash(randomBytes(8)));
    const prove = createBatchProver(leaves, rootOf(leaves));
    const indices = size > 64 ? [0, 1, size >> 1, size - 2, size - 1, 255 % size, 256 % size] : [...Array(size).keys()];
    for (const index of indices) assert.deepEqual(prove(index), await inclusionProof(index, size, (i) => leaves[i]!), `${index} of ${size}`);
  }
});
