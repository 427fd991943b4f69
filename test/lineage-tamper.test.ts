// Every way of tampering with the lineage store behind its back — change a field, change a record consistently,
// delete, insert, reorder, truncate the tail, rewrite a checkpoint — is detected by `verify`, on SQLite and on
// PostgreSQL, and the report names the first bad entry.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createUser } from "@nats-io/nkeys";
import { formatTime, signingKeyFromNkeySeed } from "../services/kit/index.ts";
import { verifyLog, type AuditReport } from "../services/lineage/audit.ts";
import { signCheckpoint } from "../services/lineage/checkpoint.ts";
import { createMerkleLog } from "../services/lineage/merkle.ts";
import { encodeRecord, type RecordContent } from "../services/lineage/record.ts";
import type { LineageStore, StoredRecord } from "../services/lineage/store.ts";
import { lineageStoreKinds, type OpenedLineageStore } from "./lineage-stores.ts";

const lineageKey = signingKeyFromNkeySeed(createUser().getSeed());
const otherKey = signingKeyFromNkeySeed(createUser().getSeed());
const ORIGIN = "causeway.test/lineage";
const SIZE = 20;
const CHECKPOINTS = [8, 16];

function content(i: number): RecordContent {
  const id = `event-${i}`;
  const data = Buffer.from(JSON.stringify({ n: i }));
  return {
    stream: "MESH_CAP", seq: i + 1, subject: "mesh.cap.plan.v1", recorded: "2026-11-21T10:00:00.000Z",
    verification: { result: "verified", keyid: "UKEY", principal: i % 2 ? "planner" : "gateway" },
    attributes: {
      id, source: "causeway://gateway", specversion: "1.0", type: "report.requested", time: `2026-11-21T10:00:${String(i).padStart(2, "0")}Z`,
      correlationid: "flow-1", ...(i > 0 && { causationid: `event-${i - 1}` }),
    },
    headers: {}, datadigest: "", data: data.toString("base64"),
  };
}

/** A store of SIZE records with signed checkpoints at CHECKPOINTS; returns the notes "published on MESH_AUDIT". */
async function populate(store: LineageStore): Promise<string[]> {
  const log = createMerkleLog({ leafAt: () => Buffer.alloc(32) });
  const published: string[] = [];
  for (let i = 0; i < SIZE; i++) {
    const r = encodeRecord(i, content(i));
    log.append(r.leafHash);
    await store.append([r], { size: log.size, frontier: log.frontier() });
    if (CHECKPOINTS.includes(log.size)) {
      const c = { origin: ORIGIN, size: log.size, root: log.root().toString("base64"), time: formatTime(Date.parse("2026-11-21T10:01:00Z")) };
      const note = signCheckpoint(c, lineageKey);
      published.push(note);
      await store.saveCheckpoint({ size: c.size, root: c.root, time: c.time, note, auditSeq: published.length });
    }
  }
  return published;
}

const verify = (s: OpenedLineageStore, published?: string[]): Promise<AuditReport> =>
  verifyLog(s.store, { publicKey: lineageKey, ...(published && { published }) });

/** A record rewritten consistently: new bytes, their leaf hash and matching columns (what a careful forger does). */
function forged(i: number): StoredRecord {
  const c = content(i);
  return encodeRecord(i, { ...c, data: Buffer.from(JSON.stringify({ n: -1 })).toString("base64") });
}

for (const kind of lineageStoreKinds) {
  describe(`lineage verify on ${kind.name}`, () => {
    const withLog = async (fn: (s: OpenedLineageStore, published: string[]) => Promise<void>) => {
      await using s = await kind.open();
      const published = await populate(s.store);
      await fn(s, published);
    };

    test(`${kind.name} - an untouched log verifies against its published checkpoints`, () => withLog(async (s, published) => {
      const report = await verify(s, published);
      assert.deepEqual(report.problems, []);
      assert.equal(report.ok, true);
      assert.equal(report.records, SIZE);
      assert.equal(report.checkpointsVerified, 2);
      assert.equal(report.latest?.size, 16);
      assert.equal(report.uncheckpointed, SIZE - 16);
    }));

    test(`${kind.name} - a changed column is detected at its record`, () => withLog(async (s, published) => {
      await s.sql("UPDATE records SET type = ? WHERE idx = ?", ["report.forged", 5]);
      const report = await verify(s, published);
      assert.equal(report.ok, false);
      assert.equal(report.firstBad?.index, 5);
      assert.match(report.firstBad!.message, /columns type differ/);
    }));

    test(`${kind.name} - changed record bytes are detected at their record`, () => withLog(async (s, published) => {
      await s.sql("UPDATE records SET record = ? WHERE idx = ?", [forged(6).bytes, 6]);
      const report = await verify(s, published);
      assert.equal(report.firstBad?.index, 6);
      assert.match(report.firstBad!.message, /do not hash to the stored leaf hash/);
    }));

    test(`${kind.name} - a record rewritten consistently (bytes, leaf hash, columns) is caught by the signed checkpoint`, () => withLog(async (s, published) => {
      const f = forged(3);
      await s.sql("UPDATE records SET record = ?, leaf_hash = ? WHERE idx = ?", [f.bytes, f.leafHash, 3]);
      const report = await verify(s, published);
      assert.equal(report.ok, false);
      assert.equal(report.firstBad?.kind, "checkpoint");
      assert.equal(report.firstBad?.size, 8);
      assert.match(report.firstBad!.message, /records in \[0, 8\) were changed consistently/);
    }));

    test(`${kind.name} - a deleted record is detected`, () => withLog(async (s, published) => {
      await s.sql("DELETE FROM records WHERE idx = ?", [11]);
      const report = await verify(s, published);
      assert.equal(report.firstBad?.index, 11);
      assert.match(report.firstBad!.message, /records 11…11 are missing/);
    }));

    test(`${kind.name} - a record inserted in the middle is detected where it was inserted`, () => withLog(async (s, published) => {
      // Shift records 10… up by one (through negative indices, so no primary key collides), then fill the hole.
      await s.sql("UPDATE records SET idx = -idx - 1 WHERE idx >= ?", [10]);
      await s.sql("UPDATE records SET idx = -idx WHERE idx < 0");
      const f = forged(10);
      await s.sql(
        "INSERT INTO records (idx, stream, stream_seq, subject, source, id, type, time_ms, correlationid, causationid, principal, verified, leaf_hash, record) SELECT 10, stream, 999, subject, source, 'inserted', type, time_ms, correlationid, causationid, principal, verified, ?, ? FROM records WHERE idx = 9",
        [f.leafHash, f.bytes],
      );
      const report = await verify(s, published);
      assert.equal(report.ok, false);
      assert.equal(report.firstBad?.index, 10);
    }));

    test(`${kind.name} - a record appended past the log's size is detected`, () => withLog(async (s, published) => {
      const f = forged(SIZE);
      await s.sql(
        "INSERT INTO records (idx, stream, stream_seq, subject, source, id, type, time_ms, correlationid, causationid, principal, verified, leaf_hash, record) VALUES (?, 'MESH_CAP', 999, 'mesh.cap.plan.v1', 'causeway://gateway', 'late', 'report.requested', 0, 'flow-1', NULL, 'gateway', ?, ?, ?)",
        [SIZE, 1, f.leafHash, f.bytes],
      );
      const report = await verify(s, published);
      assert.equal(report.firstBad?.index, SIZE);
      assert.match(report.firstBad!.message, /beyond the log's size/);
    }));

    test(`${kind.name} - two records swapped are detected as reordered`, () => withLog(async (s, published) => {
      await s.sql("UPDATE records SET idx = -1 WHERE idx = 3");
      await s.sql("UPDATE records SET idx = 3 WHERE idx = 4");
      await s.sql("UPDATE records SET idx = 4 WHERE idx = -1");
      const report = await verify(s, published);
      assert.equal(report.firstBad?.index, 3);
      assert.match(report.firstBad!.message, /says it is record 4/);
    }));

    test(`${kind.name} - a truncated tail is detected even when the log's state is rewritten to match`, () => withLog(async (s, published) => {
      await s.sql("DELETE FROM records WHERE idx >= ?", [12]);
      const kept = createMerkleLog({ leafAt: () => Buffer.alloc(32) });
      for (const h of await s.store.leafHashes(0, 12)) kept.append(h);
      await s.sql("UPDATE log_state SET size = ?, frontier = ?", [12, Buffer.concat(kept.frontier())]);
      const report = await verify(s, published);
      assert.equal(report.ok, false);
      assert.match(report.problems.map((p) => p.message).join("\n"), /ends at 12 records but a checkpoint was signed at size 16 \(truncated\)/);
      assert.equal(report.firstBad?.index, 12);
    }));

    test(`${kind.name} - a rewritten stored checkpoint is detected: re-signed by another key, or differing from MESH_AUDIT`, () => withLog(async (s, published) => {
      const c = { origin: ORIGIN, size: 8, root: forged(0).leafHash.toString("base64"), time: "2026-11-21T10:01:00Z" };
      await s.sql("UPDATE checkpoints SET note = ?, root = ? WHERE size = ?", [signCheckpoint(c, otherKey), c.root, 8]);
      const storeOnly = await verify(s);
      assert.equal(storeOnly.ok, false);
      assert.match(storeOnly.problems.map((p) => p.message).join("\n"), /stored checkpoint at size 8: .*no_signature/);
      const againstAudit = await verify(s, published);
      assert.match(againstAudit.problems.map((p) => p.message).join("\n"), /stored checkpoint at size 8 differs from the one published on MESH_AUDIT/);
    }));
  });
}
