// The lineage store's contract, run on SQLite and on PostgreSQL (a throwaway server, test/harness/postgres.ts):
// what append stores and refuses, what each query returns, and that a restart finds it all again.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { createUser } from "@nats-io/nkeys";
import { signingKeyFromNkeySeed, ErrorCode, flowIdOf, isCausewayError } from "../services/kit/index.ts";
import { createMerkleLog, rootOf } from "../services/lineage/merkle.ts";
import { openLineageStore, sqliteStorePath } from "../services/lineage/open-store.ts";
import { columnsOf, dataDigest, decodeRecord, encodeRecord, type RecordContent } from "../services/lineage/record.ts";
import { findEvent } from "../services/lineage/queries.ts";
import { verifyLog } from "../services/lineage/audit.ts";
import { recordKeyString, type LineageStore, type LogState, type StoredRecord } from "../services/lineage/store.ts";
import { lineageStoreKinds } from "./lineage-stores.ts";

interface EventSpec {
  stream?: string;
  seq: number;
  id?: string;
  source?: string;
  type?: string;
  /** RFC 3339 event time. */
  time?: string;
  correlationid?: string;
  causationid?: string;
  principal?: string;
  failed?: boolean;
  /** A message that did not decode: no attributes (so no source, id, type or time), verification failed. */
  undecodable?: boolean;
}

const T0 = Date.parse("2025-06-01T12:00:00Z");
const at = (seconds: number): string => new Date(T0 + seconds * 1000).toISOString().replace(".000Z", "Z");

function content(spec: EventSpec): RecordContent {
  const stream = spec.stream ?? "MESH_EVENTS";
  const data = Buffer.from(JSON.stringify({ seq: spec.seq }));
  const attributes: Record<string, string> = {
    specversion: "1.0",
    id: spec.id ?? `evt-${stream}-${spec.seq}`,
    source: spec.source ?? "causeway://agents/planner",
    type: spec.type ?? "io.causeway.plan.v1",
    time: spec.time ?? at(spec.seq),
  };
  if (spec.correlationid !== undefined) attributes.correlationid = spec.correlationid;
  if (spec.causationid !== undefined) attributes.causationid = spec.causationid;
  return {
    stream,
    seq: spec.seq,
    subject: `mesh.events.${spec.seq}`,
    recorded: new Date(T0).toISOString(),
    verification: spec.failed || spec.undecodable
      ? { result: "failed", keyid: "k-planner", code: ErrorCode.BadSignature, detail: "signature does not verify" }
      : { result: "verified", keyid: "k-planner", principal: spec.principal ?? "planner" },
    attributes: spec.undecodable ? null : attributes,
    headers: {},
    datadigest: dataDigest(data),
    data: data.toString("base64"),
  };
}

/** Encodes `specs` as the records continuing `store`'s log, and the log state after them. */
async function batch(store: LineageStore, specs: readonly EventSpec[]): Promise<{ records: StoredRecord[]; state: LogState }> {
  const current = await store.state();
  const log = createMerkleLog({ leafAt: () => assert.fail("no proofs here"), size: current.size, frontier: current.frontier });
  const records = specs.map((spec, i) => encodeRecord(current.size + i, content(spec)));
  for (const r of records) log.append(r.leafHash);
  return { records, state: { size: log.size, frontier: log.frontier() } };
}

/** Appends `specs` after what `store` holds; returns the records appended. */
async function append(store: LineageStore, specs: readonly EventSpec[]): Promise<StoredRecord[]> {
  const { records, state } = await batch(store, specs);
  await store.append(records, state);
  return records;
}

const seqs = (n: number, from = 1): EventSpec[] => Array.from({ length: n }, (_, i) => ({ seq: from + i }));
const indices = (records: readonly StoredRecord[]): number[] => records.map((r) => r.columns.index);

for (const kind of lineageStoreKinds) {
  describe(`lineage store (${kind.name})`, () => {
    test(`${kind.name} - an empty store has no state, records or checkpoints`, async () => {
      await using s = await kind.open();
      assert.equal(s.store.kind, kind.name);
      assert.deepEqual(await s.store.state(), { size: 0, frontier: [] });
      assert.deepEqual(await s.store.range(0, 10), []);
      assert.deepEqual(await s.store.leafHashes(0, 10), []);
      assert.deepEqual(await s.store.list({}), []);
      assert.deepEqual(await s.store.byId("evt-MESH_EVENTS-1"), []);
      assert.deepEqual(await s.store.byCorrelation("c"), []);
      assert.deepEqual(await s.store.byCausation(["c"]), []);
      assert.deepEqual(await s.store.checkpoints(), []);
      assert.deepEqual(await s.store.known([{ stream: "MESH_EVENTS", seq: 1, source: "s", id: "i", principal: "planner" }]), new Set());
    });

    test(`${kind.name} - lastSequences gives the highest recorded sequence per stream`, async () => {
      await using s = await kind.open();
      assert.deepEqual(await s.store.lastSequences(), {});
      await append(s.store, [...seqs(3), { seq: 7, stream: "MESH_CAP" }, { seq: 2, stream: "MESH_CAP" }]);
      assert.deepEqual(await s.store.lastSequences(), { MESH_EVENTS: 3, MESH_CAP: 7 });
    });

    test(`${kind.name} - append stores records and state as given, and reads them back byte for byte`, async () => {
      await using s = await kind.open();
      const first = await append(s.store, seqs(3));
      const second = await append(s.store, seqs(2, 4));
      const all = [...first, ...second];
      const state = await s.store.state();
      assert.equal(state.size, 5);
      const log = createMerkleLog({ leafAt: () => assert.fail(), size: 0 });
      for (const r of all) log.append(r.leafHash);
      assert.deepEqual(state.frontier, log.frontier());
      assert.deepEqual(await s.store.range(0, 5), all);
      assert.deepEqual(await s.store.range(1, 3), all.slice(1, 3));
      assert.deepEqual(await s.store.range(4, 100), all.slice(4));
      assert.deepEqual(await s.store.leafHashes(0, 5), all.map((r) => r.leafHash));
      assert.deepEqual(await s.store.leafHashes(2, 4), all.slice(2, 4).map((r) => r.leafHash));
      assert.deepEqual(rootOf(await s.store.leafHashes(0, 5)), log.root());
    });

    test(`${kind.name} - an empty batch that keeps the size is accepted and changes nothing`, async () => {
      await using s = await kind.open();
      await append(s.store, seqs(2));
      const before = await s.store.state();
      await s.store.append([], before);
      assert.deepEqual(await s.store.state(), before);
    });

    test(`${kind.name} - state, records and checkpoints survive a reopen, and the log continues from them`, async () => {
      await using s = await kind.open();
      const written = await append(s.store, seqs(7));
      await s.store.saveCheckpoint({ size: 7, root: "cm9vdA==", time: at(10), note: "note", auditSeq: 3 });
      const before = await s.store.state();
      const store = await s.reopen();
      assert.equal(s.store, store);
      assert.deepEqual(await store.state(), before);
      assert.deepEqual(await store.range(0, 7), written);
      assert.deepEqual(await store.checkpoints(), [{ size: 7, root: "cm9vdA==", time: at(10), note: "note", auditSeq: 3 }]);
      const restored = createMerkleLog({ leafAt: () => assert.fail(), size: before.size, frontier: before.frontier });
      assert.deepEqual(restored.root(), rootOf(written.map((r) => r.leafHash)));
      await append(store, seqs(2, 8));
      assert.equal((await store.state()).size, 9);
    });

    test(`${kind.name} - known matches keys by stream sequence and by (stream, source, id)`, async () => {
      await using s = await kind.open();
      await append(s.store, [
        { seq: 1, id: "a", source: "src" },
        { seq: 2, id: "b", source: "src" },
        { seq: 5, undecodable: true },
        { seq: 3, id: "forged", source: "src", failed: true },
      ]);
      const keys = [
        { stream: "MESH_EVENTS", seq: 1, source: "src", id: "a", principal: "planner" }, // both
        { stream: "MESH_EVENTS", seq: 9, source: "src", id: "b", principal: "planner" }, // redelivered under a new sequence: identity only
        { stream: "MESH_EVENTS", seq: 2, source: "src", id: "zzz", principal: "planner" }, // sequence only
        { stream: "MESH_EVENTS", seq: 5, source: null, id: null, principal: null }, // undecodable, recorded: sequence only
        { stream: "MESH_EVENTS", seq: 6, source: null, id: null, principal: null }, // undecodable, new
        { stream: "MESH_HANDOFF", seq: 1, source: "src", id: "a", principal: "planner" }, // another stream
        { stream: "MESH_EVENTS", seq: 10, source: "other", id: "a", principal: "planner" }, // same id, other source
        { stream: "MESH_EVENTS", seq: 12, source: "src", id: "forged", principal: "planner" }, // the identity a failed record claims is none
        { stream: "MESH_EVENTS", seq: 13, source: "src", id: "a", principal: "researcher" }, // the same (source, id) signed by another principal
      ];
      const found = await s.store.known(keys);
      assert.deepEqual([...found].sort(), [
        recordKeyString(keys[0]!)[0], recordKeyString(keys[0]!)[1], recordKeyString(keys[1]!)[1],
        recordKeyString(keys[2]!)[0], recordKeyString(keys[3]!)[0],
      ].sort());
      assert.deepEqual(await s.store.known([]), new Set());
    });

    test(`${kind.name} - only verified records claim their (stream, source, id): a failed one shares it either way`, async () => {
      await using s = await kind.open();
      await append(s.store, [{ seq: 1, id: "e", failed: true }, { seq: 2, id: "e" }, { seq: 3, id: "e", failed: true }]);
      assert.deepEqual(indices(await s.store.byId("e")), [0, 1, 2]);
      const { records, state } = await batch(s.store, [{ seq: 4, id: "e" }]);
      await assert.rejects(s.store.append(records, state), "a second verified record of the same event");
    });

    test(`${kind.name} - a verified record's identity is its signer's: another principal's event under the same (source, id) is its own record`, async () => {
      await using s = await kind.open();
      await append(s.store, [{ seq: 1, id: "e", source: "causeway://researcher", principal: "planner" }]);
      const genuine = { stream: "MESH_EVENTS", seq: 2, source: "causeway://researcher", id: "e", principal: "researcher" };
      assert.deepEqual(await s.store.known([genuine]), new Set(), "the genuine event is not taken for the other signer's");
      await append(s.store, [{ seq: 2, id: "e", source: "causeway://researcher", principal: "researcher" }]);
      assert.deepEqual((await s.store.byId("e")).map((r) => r.columns.principal), ["planner", "researcher"]);
      const { records, state } = await batch(s.store, [{ seq: 3, id: "e", source: "causeway://researcher", principal: "researcher" }]);
      await assert.rejects(s.store.append(records, state), "a second verified record of the same signer's event");
    });

    test(`${kind.name} - a store whose table has the former UNIQUE (stream, source, id) is upgraded on open, its records kept`, async () => {
      await using s = await kind.open();
      const written = await append(s.store, [{ seq: 1, id: "e" }, { seq: 2, id: "f", failed: true }]);
      // The table as stores created it before: the identity constraint on every record.
      const t = kind.name === "sqlite"
        ? { key: "INTEGER PRIMARY KEY", integer: "INTEGER", small: "INTEGER", bytes: "BLOB" }
        : { key: "BIGINT PRIMARY KEY", integer: "BIGINT", small: "SMALLINT", bytes: "BYTEA" };
      await s.sql("CREATE TABLE records_saved AS SELECT * FROM records");
      await s.sql("DROP TABLE records");
      await s.sql(`CREATE TABLE records (idx ${t.key}, stream TEXT NOT NULL, stream_seq ${t.integer} NOT NULL, subject TEXT NOT NULL,
        source TEXT, id TEXT, type TEXT, time_ms ${t.integer}, correlationid TEXT, causationid TEXT, principal TEXT, verified ${t.small} NOT NULL,
        leaf_hash ${t.bytes} NOT NULL, record ${t.bytes} NOT NULL, UNIQUE (stream, stream_seq), UNIQUE (stream, source, id))`);
      await s.sql("INSERT INTO records SELECT * FROM records_saved");
      await s.sql("DROP TABLE records_saved");
      const store = await s.reopen();
      assert.deepEqual(await store.range(0, 10), written);
      await append(store, [{ seq: 3, id: "e", failed: true }]);
      const { records, state } = await batch(store, [{ seq: 4, id: "e" }]);
      await assert.rejects(store.append(records, state), "a second verified record of the same event");
      assert.deepEqual(indices(await (await s.reopen()).byId("e")), [0, 2]);
    });

    test(`${kind.name} - known answers a large batch`, async () => {
      await using s = await kind.open();
      await append(s.store, seqs(300));
      const keys = Array.from({ length: 600 }, (_, i) => ({ stream: "MESH_EVENTS", seq: i + 1, source: "x", id: `new-${i}`, principal: "planner" }));
      const found = await s.store.known(keys);
      assert.equal(found.size, 300);
      assert.ok(found.has("MESH_EVENTS#300") && !found.has("MESH_EVENTS#301"));
    });

    describe(`${kind.name} - append refuses and stores nothing`, () => {
      const refusals: { name: string; make(store: LineageStore): Promise<{ records: StoredRecord[]; state: LogState }> }[] = [
        {
          name: "a gap before the batch",
          async make(store) {
            const { records, state } = await batch(store, [{ seq: 10 }]);
            return { records: [encodeRecord(records[0]!.columns.index + 1, content({ seq: 10 }))], state: { ...state, size: state.size + 1 } };
          },
        },
        {
          name: "an index out of order within the batch",
          async make(store) {
            const { records, state } = await batch(store, [{ seq: 10 }, { seq: 11 }, { seq: 12 }]);
            return { records: [records[0]!, records[2]!, records[1]!], state };
          },
        },
        {
          name: "a state whose size is not the log after the batch",
          async make(store) {
            const { records, state } = await batch(store, [{ seq: 10 }, { seq: 11 }]);
            return { records, state: { ...state, size: state.size + 1 } };
          },
        },
        {
          name: "a state whose frontier is not the stored one extended by the batch's leaf hashes",
          async make(store) {
            const { records, state } = await batch(store, [{ seq: 10 }, { seq: 11 }]);
            return { records, state: { ...state, frontier: state.frontier.map((h, i) => (i === 0 ? records[0]!.leafHash : h)) } };
          },
        },
        {
          name: "a stream sequence already recorded (after a new one in the same batch)",
          async make(store) {
            return batch(store, [{ seq: 10 }, { seq: 2, id: "fresh-id" }]);
          },
        },
        {
          name: "an event identity already recorded (after a new one in the same batch)",
          async make(store) {
            return batch(store, [{ seq: 10 }, { seq: 11, id: "evt-MESH_EVENTS-1" }]);
          },
        },
        {
          name: "two records with the same identity in one batch",
          async make(store) {
            return batch(store, [{ seq: 10, id: "twice" }, { seq: 11, id: "twice" }]);
          },
        },
      ];
      for (const refusal of refusals) {
        test(`${kind.name} - ${refusal.name}`, async () => {
          await using s = await kind.open();
          const stored = await append(s.store, seqs(3));
          const before = await s.store.state();
          const { records, state } = await refusal.make(s.store);
          await assert.rejects(s.store.append(records, state));
          assert.deepEqual(await s.store.state(), before);
          assert.deepEqual(await s.store.range(0, 100), stored);
          assert.deepEqual(await s.store.known([{ stream: "MESH_EVENTS", seq: 10, source: null, id: null, principal: null }]), new Set());
          assert.deepEqual(await s.store.strayNodes(before.size, 10), [], "no subtree hash of the refused batch");
          // The store is still usable: the next correct batch goes in.
          await append(s.store, [{ seq: 20 }]);
          assert.deepEqual(indices(await s.store.range(0, 100)), [0, 1, 2, 3]);
        });
      }
    });

    test(`${kind.name} - concurrent appends at the same index: one is stored, the other refused`, async () => {
      await using s = await kind.open();
      await append(s.store, seqs(2));
      const a = await batch(s.store, [{ seq: 10 }, { seq: 11 }]);
      const b = await batch(s.store, [{ seq: 20 }, { seq: 21 }, { seq: 22 }]);
      const results = await Promise.allSettled([s.store.append(a.records, a.state), s.store.append(b.records, b.state)]);
      assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
      const winner = results[0]!.status === "fulfilled" ? a : b;
      assert.deepEqual(await s.store.state(), winner.state);
      assert.deepEqual(await s.store.range(2, 100), winner.records);
    });

    test(`${kind.name} - byId, byCorrelation and byCausation return matching records in index order`, async () => {
      await using s = await kind.open();
      const rootFlow = flowIdOf({ source: "causeway://agents/planner", id: "root" });
      await append(s.store, [
        { stream: "MESH_INGEST", seq: 1, id: "root" }, // a root: indexed under the flow it starts
        { stream: "MESH_CAPABILITY", seq: 1, id: "root" }, // the same event in another stream
        { seq: 1, id: "step-1", correlationid: rootFlow, causationid: "root" },
        { seq: 2, id: "other", correlationid: "flow-2" },
        { seq: 3, id: "step-2", correlationid: rootFlow, causationid: "step-1" },
        { seq: 4, id: "step-3", correlationid: rootFlow, causationid: "root" },
      ]);
      assert.deepEqual(indices(await s.store.byId("root")), [0, 1]);
      assert.deepEqual(indices(await s.store.byId("step-2")), [4]);
      assert.deepEqual(indices(await s.store.byId("nope")), []);
      assert.deepEqual(indices(await s.store.byCorrelation(rootFlow)), [0, 1, 2, 4, 5]);
      assert.deepEqual(indices(await s.store.byCorrelation("flow-2")), [3]);
      assert.deepEqual(indices(await s.store.byCausation(["root"])), [2, 5]);
      assert.deepEqual(indices(await s.store.byCausation(["step-1", "root", "nope"])), [2, 4, 5]);
      assert.deepEqual(await s.store.byCausation([]), []);
      const [record] = await s.store.byId("step-1");
      assert.deepEqual(record!.columns, {
        index: 2, stream: "MESH_EVENTS", seq: 1, subject: "mesh.events.1", source: "causeway://agents/planner", id: "step-1",
        type: "io.causeway.plan.v1", timeMs: T0 + 1000, correlationid: rootFlow, causationid: "root", principal: "planner", verified: true,
      });
    });

    test(`${kind.name} - an event whose attributes hold U+0000 is recorded and found by them; its bytes keep them exactly`, async () => {
      await using s = await kind.open();
      // PostgreSQL's text refuses U+0000: the columns hold U+FFFD instead, and lookups map the same way.
      const nul = { id: "a\u0000b", source: "src\u0000", type: "t\u0000", correlationid: "flow\u0000", causationid: "cause\u0000" };
      const [stored] = await append(s.store, [
        { seq: 1, ...nul, principal: "planner\u0000" },
        { seq: 2, id: "a\uFFFDb", source: "other" }, // the same id as the columns hold it, under another source
      ]);
      assert.deepEqual(stored!.columns, {
        index: 0, stream: "MESH_EVENTS", seq: 1, subject: "mesh.events.1", source: "src\uFFFD", id: "a\uFFFDb", type: "t\uFFFD",
        timeMs: T0 + 1000, correlationid: "flow\uFFFD", causationid: "cause\uFFFD", principal: "planner\uFFFD", verified: true,
      });
      const [found] = await s.store.range(0, 1);
      assert.deepEqual(found, stored);
      assert.deepEqual(found!.columns, columnsOf(decodeRecord(found!.bytes)), "verify recomputes the same columns");
      assert.equal(decodeRecord(found!.bytes).attributes?.id, "a\u0000b");
      assert.deepEqual(indices(await s.store.byId("a\u0000b")), [0, 1]);
      assert.deepEqual(indices(await s.store.byCorrelation("flow\u0000")), [0]);
      assert.deepEqual(indices(await s.store.byCausation(["cause\u0000"])), [0]);
      assert.deepEqual(indices(await s.store.list({ type: "t\u0000", principal: "planner\u0000" })), [0]);
      const key = { stream: "MESH_EVENTS", seq: 9, source: "src\u0000", id: "a\u0000b", principal: "planner\u0000" };
      assert.deepEqual(await s.store.known([key]), new Set([recordKeyString(key)[1]]));
      const event = await findEvent(s.store, "a\u0000b");
      assert.deepEqual([event.id, event.source, indices(event.records.map((r) => r.stored))], ["a\u0000b", "src\u0000", [0]]);
      assert.equal((await findEvent(s.store, "a\uFFFDb")).source, "other");
      const report = await verifyLog(s.store, { publicKey: signingKeyFromNkeySeed(createUser().getSeed()) });
      assert.deepEqual(report.problems, []);
    });

    test(`${kind.name} - list filters by principal, type, stream, time range and failure, combined with AND`, async () => {
      await using s = await kind.open();
      await append(s.store, [
        { seq: 1, principal: "planner", type: "t.plan", time: at(10) },
        { seq: 2, principal: "writer", type: "t.draft", time: at(20) },
        { stream: "MESH_DECISIONS", seq: 1, principal: "coordinator", type: "t.decision", time: at(30) },
        { seq: 3, failed: true, type: "t.draft", time: at(40) },
        { seq: 4, undecodable: true },
        { seq: 5, principal: "writer", type: "t.draft", time: at(50) },
      ]);
      assert.deepEqual(indices(await s.store.list({})), [0, 1, 2, 3, 4, 5]);
      assert.deepEqual(indices(await s.store.list({ principal: "writer" })), [1, 5]);
      assert.deepEqual(indices(await s.store.list({ type: "t.draft" })), [1, 3, 5]);
      assert.deepEqual(indices(await s.store.list({ stream: "MESH_DECISIONS" })), [2]);
      assert.deepEqual(indices(await s.store.list({ fromMs: T0 + 20_000 })), [1, 2, 3, 5]); // no time, no match
      assert.deepEqual(indices(await s.store.list({ toMs: T0 + 30_000 })), [0, 1]);
      assert.deepEqual(indices(await s.store.list({ fromMs: T0 + 20_000, toMs: T0 + 40_001 })), [1, 2, 3]);
      assert.deepEqual(indices(await s.store.list({ failedOnly: true })), [3, 4]);
      assert.deepEqual(indices(await s.store.list({ failedOnly: false })), [0, 1, 2, 3, 4, 5]);
      assert.deepEqual(indices(await s.store.list({ type: "t.draft", failedOnly: true })), [3]);
      assert.deepEqual(indices(await s.store.list({ type: "t.draft", principal: "writer", fromMs: T0 + 30_000 })), [5]);
      assert.deepEqual(indices(await s.store.list({ principal: "nobody" })), []);
    });

    test(`${kind.name} - list pages after an index, 100 by default, the limit bounded to [1, 10000]`, async () => {
      await using s = await kind.open();
      await append(s.store, seqs(150));
      const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);
      assert.deepEqual(indices(await s.store.list({})), range(0, 100));
      assert.deepEqual(indices(await s.store.list({ afterIndex: 99 })), range(100, 150));
      assert.deepEqual(indices(await s.store.list({ afterIndex: 10, limit: 5 })), range(11, 16));
      assert.deepEqual(indices(await s.store.list({ afterIndex: 149 })), []);
      assert.deepEqual(indices(await s.store.list({ limit: 0 })), [0]);
      assert.deepEqual(indices(await s.store.list({ limit: -5 })), [0]);
      assert.deepEqual(indices(await s.store.list({ limit: 2.9 })), [0, 1]);
      assert.deepEqual(indices(await s.store.list({ limit: 1_000_000 })), range(0, 150));
      // Paging through a filter visits each match once.
      const pages: number[] = [];
      for (let after = -1; ;) {
        const page = await s.store.list({ fromMs: T0 + 50_000, limit: 40, afterIndex: after });
        if (page.length === 0) break;
        pages.push(...indices(page));
        after = page.at(-1)!.columns.index;
      }
      assert.deepEqual(pages, range(49, 150));
    });

    test(`${kind.name} - checkpoints are kept once per size and listed by size`, async () => {
      await using s = await kind.open();
      const cp = (size: number, root = `root-${size}`) => ({ size, root, time: at(size), note: `note ${size}\n— sig`, auditSeq: size * 10 });
      await s.store.saveCheckpoint(cp(8));
      await s.store.saveCheckpoint(cp(2));
      await s.store.saveCheckpoint(cp(5));
      await s.store.saveCheckpoint(cp(5, "a different root"));
      assert.deepEqual(await s.store.checkpoints(), [cp(2), cp(5), cp(8)]);
    });

    test(`${kind.name} - raw SQL through the fixture reaches the same tables and columns`, async () => {
      await using s = await kind.open();
      const written = await append(s.store, seqs(3));
      await s.store.saveCheckpoint({ size: 3, root: "r", time: at(3), note: "n", auditSeq: 1 });
      await s.sql("UPDATE records SET verified = 0, principal = NULL, stream_seq = ? WHERE idx = ?", [99, 1]);
      await s.sql("UPDATE records SET record = ?, leaf_hash = ? WHERE idx = ?", [Buffer.from("changed"), Buffer.alloc(32, 7), 2]);
      const [, changed, bytes] = await s.store.range(0, 3);
      assert.deepEqual(changed!.columns, { ...written[1]!.columns, verified: false, principal: null, seq: 99 });
      assert.deepEqual(bytes!.bytes, Buffer.from("changed"));
      assert.deepEqual(bytes!.leafHash, Buffer.alloc(32, 7));
      await s.sql("DELETE FROM records WHERE idx = ?", [0]);
      assert.deepEqual(indices(await s.store.range(0, 3)), [1, 2]);
      await s.sql("UPDATE checkpoints SET root = 'x' WHERE size = 3");
      assert.equal((await s.store.checkpoints())[0]!.root, "x");
      await s.sql("DELETE FROM log_state");
      assert.deepEqual(await s.store.state(), { size: 0, frontier: [] });
    });
  });
}

describe("openLineageStore", () => {
  test("openLineageStore - without a database URL, SQLite under the data directory", async () => {
    const dir = mkdtempSync(join(tmpdir(), "causeway-open-store-"));
    try {
      await using store = await openLineageStore({ databaseUrl: "", dataDir: dir });
      assert.equal(store.kind, "sqlite");
      assert.equal(store.location, join(dir, "lineage", "lineage.db"));
      assert.equal(sqliteStorePath(dir), store.location);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("openLineageStore - with a database URL, PostgreSQL, shown without its password", async () => {
    await using s = await lineageStoreKinds.find((k) => k.name === "postgres")!.open();
    const url = new URL(s.store.location);
    url.username = "postgres";
    url.password = "s3cret-pw";
    await using store = await openLineageStore({ databaseUrl: url.toString() });
    assert.equal(store.kind, "postgres");
    assert.equal(store.location, s.store.location);
    assert.ok(!store.location.includes("s3cret-pw"));
  });

  test("openLineageStore - a malformed URL fails with CW_ERR_LINEAGE_STORE and hides the password", async () => {
    for (const databaseUrl of ["mysql://u:s3cret-pw@h/db", "postgres://u:s3cret-pw@[bad/db", "host=h password=s3cret-pw"]) {
      await assert.rejects(openLineageStore({ databaseUrl }), (err: unknown) => {
        assert.ok(isCausewayError(err, ErrorCode.LineageStore), String(err));
        assert.ok(!err.message.includes("s3cret-pw"), err.message);
        return true;
      });
    }
  });

  test("openLineageStore - an unreachable database fails with CW_ERR_LINEAGE_STORE naming it without the password", async () => {
    const port = await closedPort();
    await assert.rejects(openLineageStore({ databaseUrl: `postgres://lineage:s3cret-pw@127.0.0.1:${port}/audit` }), (err: unknown) => {
      assert.ok(isCausewayError(err, ErrorCode.LineageStore), String(err));
      assert.match(err.message, new RegExp(`postgres://lineage@127\\.0\\.0\\.1:${port}/audit`));
      assert.ok(!err.message.includes("s3cret-pw"), err.message);
      return true;
    });
  });

  test("openLineageStore - an unwritable data directory fails with CW_ERR_LINEAGE_STORE", async () => {
    const dir = mkdtempSync(join(tmpdir(), "causeway-open-store-"));
    try {
      // A file where the lineage directory should be: no user, root included, can create a file beneath it.
      const blocker = join(dir, "lineage");
      writeFileSync(blocker, "");
      await assert.rejects(openLineageStore({ databaseUrl: "", dataDir: dir }), (err: unknown) => {
        assert.ok(isCausewayError(err, ErrorCode.LineageStore), String(err));
        assert.ok(err.message.includes(dir), err.message);
        return true;
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A port on 127.0.0.1 that nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  assert.ok(address !== null && typeof address === "object");
  return address.port;
}
