// Lineage at scale (issue 14 item 6): proofs read O(log n) stored subtree hashes instead of every leaf.
//
// merkle.ts, in memory: the proofs from stored subtree hashes are byte for byte the leaf-reading reference's
// (fast-check over random sizes, indices and batch splits), read at most 2·⌈log2 n⌉ hashes, and never one the
// tree of that size has not completed. The stores, on SQLite and PostgreSQL: appends keep every subtree hash,
// also under concurrent writers; proofs equal the leaf-based ones; a store from before them (no nodes table)
// builds them once on open and proves the same; `verify` reports a changed, deleted or inserted subtree hash.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ErrorCode, isCausewayError } from "../services/kit/index.ts";
import { verifyLog } from "../services/lineage/audit.ts";
import {
  consistencyProof, createMerkleLog, extendLog, inclusionProof, leafHash, nodeLeaves, nodesOf, rootOf, storedConsistencyProof, storedInclusionProofs,
  storedRoot, type NodeHash, type NodeId,
} from "../services/lineage/merkle.ts";
import { proveConsistency, proveEvent, storedNodes, verifyConsistencyProof, verifyEventProof } from "../services/lineage/proofs.ts";
import { encodeRecord, type RecordContent } from "../services/lineage/record.ts";
import type { LineageStore, StoredCheckpoint } from "../services/lineage/store.ts";
import { checkpoint, newKey, populate } from "./lineage-flow-fixture.ts";
import { lineageStoreKinds } from "./lineage-stores.ts";

const key = (id: NodeId): string => `${id.level}/${id.index}`;
const bound = (n: number): number => (n <= 1 ? 0 : 2 * Math.ceil(Math.log2(n)));

// ---- merkle.ts, in memory -----------------------------------------------------------------------------------

const MAX = 2_100;
const LEAVES = Array.from({ length: MAX }, (_, i) => leafHash(Buffer.from(`leaf ${i}`)));
const NODES = new Map(extendLog(0, [], LEAVES).completed.map((n) => [key(n), n.hash]));

/** A reader over the first `size` leaves that records each read and refuses a subtree that tree has not completed. */
function readerOf(size: number) {
  const reads: NodeId[][] = [];
  const read = (ids: readonly NodeId[]) => {
    reads.push([...ids]);
    return ids.map((id) => {
      const [from, to] = nodeLeaves(id);
      if (to > size) throw new Error(`read [${from}, ${to}), beyond the tree of ${size}`);
      return id.level === 0 ? LEAVES[id.index]! : NODES.get(key(id))!;
    });
  };
  return { read, reads };
}
const leafAt = (i: number) => LEAVES[i]!;

describe("merkle - stored subtree hashes", () => {
  test("merkle - inclusion proofs from stored subtree hashes are the leaf-reading ones, from at most 2·⌈log2 n⌉ hashes read once", async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 1, max: MAX }).chain((size) => fc.tuple(fc.constant(size), fc.uniqueArray(fc.nat({ max: size - 1 }), { minLength: 1, maxLength: 4 }))),
      async ([size, indices]) => {
        const { read, reads } = readerOf(size);
        const proofs = await storedInclusionProofs(indices, size, read);
        assert.equal(reads.length, size === 1 ? 0 : 1, "one read for all the proofs (none when a one-leaf tree needs none)");
        const ids = (reads[0] ?? []).map(key);
        assert.equal(new Set(ids).size, ids.length, "each subtree read once");
        assert.ok(ids.length <= indices.length * bound(size), `${ids.length} hashes read for ${indices.length} proofs in a tree of ${size}`);
        for (const [k, index] of indices.entries()) assert.deepEqual(proofs[k], await inclusionProof(index, size, leafAt), `leaf ${index} of ${size}`);
      },
    ), { numRuns: 150 });
  });

  test("merkle - consistency proofs and roots from stored subtree hashes are the leaf-reading ones", async () => {
    await fc.assert(fc.asyncProperty(
      fc.integer({ min: 0, max: MAX }).chain((size) => fc.tuple(fc.nat({ max: size }), fc.constant(size))),
      async ([oldSize, newSize]) => {
        const { read, reads } = readerOf(newSize);
        assert.deepEqual(await storedConsistencyProof(oldSize, newSize, read), await consistencyProof(oldSize, newSize, leafAt), `${oldSize} → ${newSize}`);
        assert.ok(reads.length <= 1 && (reads[0]?.length ?? 0) <= bound(newSize), `${reads[0]?.length} hashes read for ${oldSize} → ${newSize}`);
        assert.deepEqual(await storedRoot(newSize, readerOf(newSize).read), rootOf(LEAVES.slice(0, newSize)));
      },
    ), { numRuns: 150 });
  });

  test("merkle - the edges: both ends of the log, powers of two and their neighbours", async () => {
    for (const size of [1, 2, 3, 4, 5, 7, 8, 9, 255, 256, 257, 1023, 1024, 1025, 2047, 2048, 2049]) {
      for (const index of new Set([0, 1, size >> 1, size - 2, size - 1].filter((i) => i >= 0 && i < size))) {
        assert.deepEqual((await storedInclusionProofs([index], size, readerOf(size).read))[0], await inclusionProof(index, size, leafAt), `leaf ${index} of ${size}`);
      }
      for (const oldSize of new Set([0, 1, size >> 1, size - 1, size])) {
        assert.deepEqual(await storedConsistencyProof(oldSize, size, readerOf(size).read), await consistencyProof(oldSize, size, leafAt), `${oldSize} → ${size}`);
      }
    }
  });

  test("merkle - extendLog completes each perfect subtree once, with its leaves' root, whatever the batches", () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 30 }), (batches) => {
      let size = 0, frontier: Buffer[] = [];
      const completed: NodeHash[] = [];
      const log = createMerkleLog({ leafAt });
      for (const n of batches) {
        const leaves = LEAVES.slice(size, size + n);
        const after = extendLog(size, frontier, leaves);
        completed.push(...after.completed);
        for (const l of leaves) log.append(l);
        [size, frontier] = [size + leaves.length, after.frontier];
        assert.deepEqual(frontier, log.frontier());
      }
      assert.equal(completed.length, size - [...size.toString(2)].filter((b) => b === "1").length, "n − popcount(n) subtrees of 2+ leaves");
      assert.equal(new Set(completed.map(key)).size, completed.length);
      for (const n of completed) {
        const [from, to] = nodeLeaves(n);
        assert.ok(n.level >= 1 && to <= size);
        assert.deepEqual(n.hash, rootOf(LEAVES.slice(from, to)), key(n));
      }
    }), { numRuns: 200 });
  });

  test("merkle - nodesOf splits an aligned subtree by its width's bits and refuses an unaligned one; a bad read is refused", async () => {
    assert.deepEqual(nodesOf(0, 13), [{ level: 3, index: 0 }, { level: 2, index: 2 }, { level: 0, index: 12 }]);
    assert.deepEqual(nodesOf(8, 12), [{ level: 2, index: 2 }]);
    assert.deepEqual(nodesOf(5, 5), []);
    assert.throws(() => nodesOf(2, 6), /not a subtree/);
    await assert.rejects(storedInclusionProofs([0], 4, (ids) => ids.map(() => Buffer.alloc(31))), /31 bytes, not 32/);
    await assert.rejects(storedInclusionProofs([0], 4, () => []), /asked for 2 subtree hashes, read 0/);
    await assert.rejects(storedInclusionProofs([4], 4, readerOf(4).read), RangeError);
    await assert.rejects(storedConsistencyProof(5, 4, readerOf(4).read), RangeError);
    assert.throws(() => extendLog(3, [], []), /frontier of 2 hashes, not 0/);
  });
});

// ---- the stores --------------------------------------------------------------------------------------------

/** Record `i` of a synthetic log (its stream, sequence and id unique to `i`; `tag` keeps two writers apart). */
function content(i: number, tag = "w"): RecordContent {
  const data = Buffer.from(`{"n":${i}}`);
  return {
    stream: `MESH_${tag.toUpperCase()}`, seq: i + 1, subject: "mesh.evt.n", recorded: "2026-11-21T10:00:00.000Z",
    verification: { result: "verified", keyid: "UKEY", principal: "planner" },
    attributes: { specversion: "1.0", id: `${tag}-${i}`, source: "causeway://planner", type: "n.recorded", time: "2026-11-21T10:00:00Z" },
    headers: {}, datadigest: createHash("sha256").update(data).digest("hex"), data: data.toString("base64"),
  };
}

/** `size` records, appended in batches of 1, 2, … 37 records (so batches end everywhere in the tree). */
async function grow(store: LineageStore, size: number): Promise<void> {
  for (let at = (await store.state()).size, n = 1; at < size; n = (n % 37) + 1) {
    const batch = Array.from({ length: Math.min(n, size - at) }, (_, k) => content(at + k));
    await populate(store, batch);
    at += batch.length;
  }
}

/** Every subtree a log of `size` leaves has completed (level ≥ 1). */
function completedIds(size: number): NodeId[] {
  const ids: NodeId[] = [];
  for (let level = 1; 2 ** level <= size; level++) for (let index = 0; (index + 1) * 2 ** level <= size; index++) ids.push({ level, index });
  return ids;
}

/** Asserts the store holds exactly the subtree hashes of its records' leaves: each its leaves' root, none missing, none beyond. */
async function assertNodesMatchLeaves(store: LineageStore): Promise<void> {
  const { size } = await store.state();
  const leaves = await store.leafHashes(0, size);
  const ids = completedIds(size);
  const stored = await store.nodeHashes(ids);
  ids.forEach((id, i) => {
    const [from, to] = nodeLeaves(id);
    assert.deepEqual(stored[i], rootOf(leaves.slice(from, to)), `the stored hash of [${from}, ${to}) in a log of ${size}`);
  });
  assert.deepEqual(await store.strayNodes(size, 10), [], "no stored subtree beyond the log");
}

/** Leaf-based reference proofs of the store's first `size` records (what proving read before). */
async function referenceProofs(store: LineageStore, size: number, indices: readonly number[], oldSizes: readonly number[]) {
  const leaves = await store.leafHashes(0, size);
  const at = (i: number) => leaves[i]!;
  return {
    inclusion: await Promise.all(indices.map((i) => inclusionProof(i, size, at))),
    consistency: await Promise.all(oldSizes.map((m) => consistencyProof(m, size, at))),
  };
}

const b64 = (proof: readonly Buffer[]): string[] => proof.map((h) => h.toString("base64"));
const lineageKey = newKey();

for (const kind of lineageStoreKinds) {
  describe(`lineage subtree hashes on ${kind.name}`, () => {
    const SIZE = 700;

    test(`${kind.name} - appends keep every subtree hash; proofs at random sizes and indices equal the leaf-based ones`, async () => {
      await using s = await kind.open();
      await grow(s.store, SIZE);
      await assertNodesMatchLeaves(s.store);
      const leaves = await s.store.leafHashes(0, SIZE);
      const checkpoints = new Map<number, StoredCheckpoint>();
      const at = async (size: number) => checkpoints.get(size) ?? checkpoints.set(size, await checkpoint(s.store, lineageKey, size)).get(size)!;
      await fc.assert(fc.asyncProperty(
        fc.integer({ min: 1, max: SIZE }).chain((size) => fc.tuple(fc.constant(size), fc.nat({ max: size - 1 }), fc.nat({ max: size }))),
        async ([size, index, oldSize]) => {
          const reference = await referenceProofs(s.store, size, [index], [oldSize]);
          const proof = await proveEvent(s.store, { index }, await at(size));
          assert.deepEqual(proof.proof, b64(reference.inclusion[0]!), `record ${index} of ${size}`);
          assert.deepEqual(verifyEventProof(proof, lineageKey), { ok: true });
          if (oldSize > 0) {
            const consistency = await proveConsistency(s.store, await at(oldSize), await at(size));
            assert.deepEqual(consistency.proof, b64(reference.consistency[0]!), `${oldSize} → ${size}`);
            assert.deepEqual(verifyConsistencyProof(consistency, lineageKey), { ok: true });
          }
          assert.deepEqual(await storedRoot(size, storedNodes(s.store)), rootOf(leaves.slice(0, size)));
        },
      ), { numRuns: 60 });
    });

    test(`${kind.name} - a store from before subtree hashes (no nodes table) builds them once on open, logged, and proves the same`, async () => {
      await using s = await kind.open();
      await grow(s.store, SIZE);
      const indices = [0, 1, 255, 256, 511, 512, 698, 699], oldSizes = [1, 3, 256, 300, 512, 699];
      const before = await referenceProofs(s.store, SIZE, indices, oldSizes);
      await s.sql("DROP TABLE nodes");
      assert.equal(await s.store.nodeHashes([{ level: 1, index: 3 }]).catch(() => "no table"), "no table", "the old schema: no nodes table");

      const lines: { level: string; fields: { done: number; total: number }; message: string }[] = [];
      const log = {
        info: (fields: object, message: string) => lines.push({ level: "info", fields: fields as { done: number; total: number }, message }),
        warn: (fields: object, message: string) => lines.push({ level: "warn", fields: fields as { done: number; total: number }, message }),
      };
      const store = await s.reopen({ log });
      assert.match(lines[0]!.message, /building the audit log's stored subtree hashes from its records, once/);
      assert.deepEqual(lines.at(-1)!.fields.done, SIZE);
      assert.deepEqual(lines.map((l) => l.level), lines.map(() => "info"));
      await assertNodesMatchLeaves(store);
      const key = newKey();
      const latest = await checkpoint(store, key, SIZE);
      for (const [k, index] of indices.entries()) assert.deepEqual((await proveEvent(store, { index }, latest)).proof, b64(before.inclusion[k]!), `record ${index}`);
      for (const [k, m] of oldSizes.entries()) assert.deepEqual((await proveConsistency(store, await checkpoint(store, key, m), latest)).proof, b64(before.consistency[k]!), `${m} → ${SIZE}`);
      assert.deepEqual((await verifyLog(store, { publicKey: key })).problems, []);

      // Once: the next open finds them all and builds nothing; appends continue to keep them.
      lines.length = 0;
      await grow(await s.reopen({ log }), SIZE + 100);
      assert.deepEqual(lines, []);
      await assertNodesMatchLeaves(s.store);
    });

    test(`${kind.name} - subtree hashes missing after appends that did not keep them are built on open`, async () => {
      await using s = await kind.open();
      await grow(s.store, 300);
      // As if a version without subtree hashes had appended records 200…299 after this one built them.
      const later = completedIds(300).filter((id) => nodeLeaves(id)[1] > 200);
      for (const id of later) await s.sql("DELETE FROM nodes WHERE level = ? AND idx = ?", [id.level, id.index]);
      assert.ok((await s.store.nodeHashes(later)).every((h) => h === undefined));
      await assertNodesMatchLeaves(await s.reopen());
    });

    test(`${kind.name} - verify reports a changed, a deleted and an inserted subtree hash, and proofs through them fail`, async () => {
      await using s = await kind.open();
      await grow(s.store, 64);
      const latest = await checkpoint(s.store, lineageKey, 64);
      const early = await checkpoint(s.store, lineageKey, 4);
      assert.deepEqual((await verifyLog(s.store, { publicKey: lineageKey })).problems, []);
      const mismatch = (err: unknown) => isCausewayError(err, ErrorCode.LineageCheckpointMismatch);

      // Changed: the hash of records [4, 8) (level 2, index 1), on the path of record 0 and in the consistency proof 4 → 64.
      await s.sql("UPDATE nodes SET hash = ? WHERE level = ? AND idx = ?", [Buffer.alloc(32, 1), 2, 1]);
      let report = await verifyLog(s.store, { publicKey: lineageKey });
      assert.equal(report.ok, false);
      assert.deepEqual([report.firstBad?.kind, report.firstBad?.node], ["node", { level: 2, index: 1 }]);
      assert.match(report.firstBad!.message, /the stored hash of records \[4, 8\) \(level 2, index 1\) does not match the records/);
      assert.equal(report.checkpointsVerified, 2, "the records are intact: the checkpoints still match");
      await assert.rejects(proveEvent(s.store, { index: 0 }, latest), mismatch);
      await assert.rejects(proveConsistency(s.store, early, latest), mismatch);
      assert.deepEqual(verifyEventProof(await proveEvent(s.store, { index: 40 }, latest), lineageKey), { ok: true }, "a path that does not pass through it");

      // Deleted: proofs that need it name what the store lacks.
      await s.sql("DELETE FROM nodes WHERE level = ? AND idx = ?", [3, 5]);
      report = await verifyLog(s.store, { publicKey: lineageKey });
      assert.match(report.problems.map((p) => p.message).join("\n"), /the stored hash of records \[40, 48\) \(level 3, index 5\) is missing/);
      await assert.rejects(proveEvent(s.store, { index: 33 }, latest), /lacks the stored hash of records \[40, 48\) \(level 3, index 5\)/);

      // Inserted beyond the log: a subtree a log of 64 records has not completed.
      await s.sql("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", [1, 32, Buffer.alloc(32, 2)]);
      report = await verifyLog(s.store, { publicKey: lineageKey });
      assert.match(report.problems.map((p) => p.message).join("\n"), /the stored hash of records \[64, 66\) \(level 1, index 32\) is beyond the log's 64 records \(inserted\)/);
      assert.deepEqual(report.problems.map((p) => p.kind), ["node", "node", "node"]);
    });

    test(`${kind.name} - concurrent writers on two connections: the losers are refused, and the subtree hashes stay those of the records`, async () => {
      await using s = await kind.open();
      const writers = [s.store, await s.another()];
      let refused = 0;
      const write = async (store: LineageStore, tag: string) => {
        for (let done = 0, batch = 1; done < 120;) {
          const state = await store.state();
          const log = createMerkleLog({ leafAt: () => assert.fail("no proofs here"), size: state.size, frontier: state.frontier });
          const n = Math.min(batch, 120 - done);
          const records = Array.from({ length: n }, (_, k) => encodeRecord(state.size + k, content(done + k, tag)));
          for (const r of records) log.append(r.leafHash);
          try {
            await store.append(records, { size: log.size, frontier: log.frontier() });
            done += n;
            batch = (batch % 7) + 1;
          } catch {
            refused++; // another writer appended first: start again from the state it left
          }
        }
      };
      await Promise.all(writers.map((w, i) => write(w, `w${i}`)));
      assert.ok(refused > 0, "the writers raced");
      assert.equal((await s.store.state()).size, 240);
      await assertNodesMatchLeaves(s.store);
      const indices = [0, 100, 239], oldSizes = [1, 77, 128];
      const reference = await referenceProofs(s.store, 240, indices, oldSizes);
      const read = storedNodes(s.store);
      assert.deepEqual(await storedInclusionProofs(indices, 240, read), reference.inclusion);
      for (const [k, m] of oldSizes.entries()) assert.deepEqual(await storedConsistencyProof(m, 240, read), reference.consistency[k]);
    });
  });
}
