// Lineage proofs and exports on a real SQLite store holding a recorded reference flow: proofs verify offline
// with only the proof and the public key, and every mutation fails; exports pass the offline checker, and a
// changed line is reported by number; PROV-JSON and OpenLineage carry the relations and times they should.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { inclusionProof, leafHash, rootOf } from "../services/lineage/merkle.ts";
import {
  auditPaths, ProofRejection, proveConsistency, proveEvent, verifyConsistencyProof, verifyEventProof,
  type ConsistencyProof, type EventProof,
} from "../services/lineage/proofs.ts";
import type { LineageStore, StoredCheckpoint } from "../services/lineage/store.ts";
import { checkExport, CSV_COLUMNS, exportCsv, exportJsonl, exportOpenLineage, exportProv, ExportRejection } from "../services/lineage/exports.ts";
import { PRINCIPALS, checkpoint, ms, newKey, populate, referenceFlow, T0, tempStore, type FlowFixture } from "./lineage-flow-fixture.ts";
import { lineageStoreKinds, type LineageStoreKind } from "./lineage-stores.ts";
import { ErrorCode, flowIdOf, isCausewayError, type SigningKey } from "../services/kit/index.ts";

interface Setup {
  store: LineageStore;
  flow: FlowFixture;
  key: SigningKey;
  /** A checkpoint of the first half of the log, and of all of it. */
  early: StoredCheckpoint;
  latest: StoredCheckpoint;
}

async function setup(t: TestContext, kind: LineageStoreKind): Promise<Setup> {
  const store = await tempStore(t, kind);
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

for (const kind of lineageStoreKinds) {
  describe(`on ${kind.name}`, () => {
    test("proofs - an event's inclusion proof verifies offline with the public key (object or NKey string), after a JSON round trip", async (t) => {
      const { store, flow, key, latest } = await setup(t, kind);
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
      const { store, flow, key, latest } = await setup(t, kind);
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
      const { store, flow, early, latest } = await setup(t, kind);
      await assert.rejects(proveEvent(store, "nope", latest), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotFound));
      await assert.rejects(proveEvent(store, flow.ambiguousId, latest), (err: unknown) => isCausewayError(err, ErrorCode.LineageAmbiguousId));
      await assert.rejects(proveEvent(store, flow.released.id, early), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotCovered));
      await assert.rejects(proveEvent(store, { index: latest.size }, latest), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotCovered));
      await assert.rejects(proveConsistency(store, latest, early), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotCovered));
    });

    test("proofs - a checkpoint the store's leaves do not produce fails with CW_ERR_LINEAGE_CHECKPOINT_MISMATCH", async (t) => {
      const { store, flow, key, latest } = await setup(t, kind);
      const other = { ...latest, root: rootOf([leafHash(Buffer.from("another log"))]).toString("base64") };
      await assert.rejects(proveEvent(store, flow.released.id, other), (err: unknown) => isCausewayError(err, ErrorCode.LineageCheckpointMismatch));
      const larger = await checkpoint(store, key, undefined, "2026-05-13T11:00:00Z");
      await assert.rejects(proveEvent(store, { index: 0 }, { ...larger, size: larger.size + 5 }), (err: unknown) => isCausewayError(err, ErrorCode.LineageCheckpointMismatch));
    });

    test("proofs - every mutation of an inclusion proof fails with its reason", async (t) => {
      const { store, flow, key, early, latest } = await setup(t, kind);
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
      const { store, key, early, latest } = await setup(t, kind);
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

    test("proofs - the audit paths of an export are merkle.ts's leaf-based paths, for every record of both checkpoints", async (t) => {
      const { store, early, latest } = await setup(t, kind);
      for (const c of [early, latest]) {
        const leaves = await store.leafHashes(0, c.size);
        const records = await store.range(0, c.size);
        const paths = await auditPaths(store, records, c);
        assert.equal(paths.length, c.size);
        for (const [index, path] of paths.entries()) assert.deepEqual(path, await inclusionProof(index, c.size, (i) => leaves[i]!), `${index} of ${c.size}`);
        await assert.rejects(auditPaths(store, records, { size: c.size, root: rootOf(leaves.slice(1)).toString("base64") }), (err: unknown) => isCausewayError(err, ErrorCode.LineageCheckpointMismatch));
      }
      await assert.rejects(auditPaths(store, await store.range(0, early.size + 1), early), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotCovered));
    });

    // ---- exports -------------------------------------------------------------------------------------------------

    // An event without a correlationid (the raw request on MESH_INGEST) is indexed under the flow it starts.
    const flowIndices = (flow: FlowFixture): number[] => flow.contents.flatMap((c, i) => {
      const a = c.attributes;
      return a && (a.correlationid ?? flowIdOf({ source: a.source!, id: a.id! })) === flow.correlationId ? [i] : [];
    });
    const failedAt = (check: ReturnType<typeof checkExport>, line: number, reason: string): void => {
      assert.equal(check.ok, false, `expected line ${line} to fail with ${reason}`);
      if (!check.ok) assert.deepEqual([check.line, check.reason], [line, reason], check.message);
    };

    test("exports - a flow's JSONL carries the checkpoint, leaf hashes, canonical records and proofs, and passes the offline check", async (t) => {
      const { store, flow, key, latest } = await setup(t, kind);
      const text = await exportJsonl(store, { correlationId: flow.correlationId }, latest, { publicKey: key.keyid });
      const [header, ...lines] = text.trimEnd().split("\n").map((l) => JSON.parse(l));
      assert.deepEqual(Object.keys(header).slice(0, 2), ["checkpoint", "publicKey"]);
      assert.equal(header.checkpoint, latest.note);
      assert.equal(header.publicKey, key.keyid);
      assert.deepEqual([header.size, header.root, header.records, header.omitted], [latest.size, latest.root, lines.length, 0]);
      assert.deepEqual(lines.map((l) => l.index), flowIndices(flow));
      for (const l of lines) {
        assert.equal(leafHash(Buffer.from(l.record, "utf8")).toString("base64"), l.leafHash);
        assert.deepEqual(verifyEventProof({ ...l, size: latest.size, root: latest.root, checkpoint: latest.note }, key), { ok: true });
      }
      const check = checkExport(text, key.keyid);
      assert.equal(check.ok, true, check.ok ? "" : check.message);
      assert.deepEqual(check.ok && [check.format, check.records, check.checkpoint.size], ["jsonl", lines.length, latest.size]);
    });

    test("exports - a changed, moved or removed JSONL line, and another key, are reported with the line number", async (t) => {
      const { store, flow, key, latest } = await setup(t, kind);
      const text = await exportJsonl(store, { correlationId: flow.correlationId }, latest);
      const lines = text.trimEnd().split("\n");
      const edit = (n: number, change: (line: string) => string): string => lines.map((l, i) => (i === n - 1 ? change(l) : l)).join("\n") + "\n";
      const changed = checkExport(edit(5, (l) => l.replace("researcher", "researchex").replace("planner", "plannex")), key);
      failedAt(changed, 5, ExportRejection.LeafMismatch);
      assert.equal(!changed.ok && changed.records, 3);
      failedAt(checkExport(edit(4, (l) => l.replace(/"proof":\["(.)/, (_m, c: string) => `"proof":["${c === "A" ? "B" : "A"}`)), key), 4, ExportRejection.BadPath);
      const swapped = [...lines];
      [swapped[3], swapped[4]] = [swapped[4]!, swapped[3]!];
      failedAt(checkExport(swapped.join("\n"), key), 5, ExportRejection.Count);
      failedAt(checkExport(lines.filter((_l, i) => i !== 6).join("\n"), key), 1, ExportRejection.Count);
      failedAt(checkExport(text, newKey()), 1, ExportRejection.BadCheckpoint);
      failedAt(checkExport(edit(7, () => "{not json"), key), 7, ExportRejection.Malformed);
      failedAt(checkExport("hello\n", key), 1, ExportRejection.Malformed);
    });

    test("exports - CSV has the documented columns and comment header, passes the offline check, and a changed cell is reported", async (t) => {
      const { store, flow, key, latest } = await setup(t, kind);
      const text = await exportCsv(store, { correlationId: flow.correlationId }, latest, { publicKey: key.keyid });
      const lines = text.trimEnd().split("\n");
      assert.equal(lines[0], "# causeway-lineage-export/1 csv");
      assert.equal(lines[1], `# publicKey: ${key.keyid}`);
      assert.equal(Buffer.from(lines[2]!.slice("# checkpoint: ".length), "base64").toString("utf8"), latest.note);
      assert.equal(lines[4], CSV_COLUMNS.join(","));
      const rows = lines.slice(5);
      assert.equal(rows.length, flowIndices(flow).length);
      const released = rows.find((r) => r.includes(flow.released.id))!.split(",");
      assert.deepEqual(released.slice(1, 10), [
        "MESH_EVT", "1", "causeway://publisher", flow.released.id, "report.released", flow.released.attributes.time, "publisher", flow.keyids.publisher, "true",
      ]);
      const record = Buffer.from(released[11]!, "base64");
      assert.equal(leafHash(record).toString("base64"), released[10]);
      assert.equal(JSON.parse(record.toString("utf8")).attributes.id, flow.released.id);
      const check = checkExport(text, key);
      assert.equal(check.ok, true, check.ok ? "" : check.message);
      assert.equal(check.ok && check.format, "csv");
      const n = lines.findIndex((l) => l.includes(flow.released.id)) + 1;
      const edit = (change: (line: string) => string): string => lines.map((l, i) => (i === n - 1 ? change(l) : l)).join("\n");
      failedAt(checkExport(edit((l) => l.replace(",publisher,", ",reporter,")), key), n, ExportRejection.ColumnMismatch);
      failedAt(checkExport(edit((l) => l.replace(released[11]!, flipBit(released[11]!, 900))), key), n, ExportRejection.LeafMismatch);
      failedAt(checkExport(edit((l) => l.replace(`${released[0]},`, `${Number(released[0]) + 1},`)), key), n, ExportRejection.IndexMismatch);
    });

    test("exports - records after the checkpoint are omitted and counted; index and time ranges select their records", async (t) => {
      const { store, flow, key, early, latest } = await setup(t, kind);
      const text = await exportJsonl(store, { correlationId: flow.correlationId }, early);
      const header = JSON.parse(text.split("\n", 1)[0]!);
      const covered = flowIndices(flow).filter((i) => i < early.size);
      assert.deepEqual([header.records, header.omitted], [covered.length, flowIndices(flow).length - covered.length]);
      assert.equal(checkExport(text, key).ok, true);
      const range = await exportCsv(store, { fromIndex: 3, toIndex: 9 }, latest);
      assert.deepEqual(range.trimEnd().split("\n").slice(5).map((r) => Number(r.split(",")[0])), [3, 4, 5, 6, 7, 8]);
      assert.equal(checkExport(range, key).ok, true);
      const timed = await exportJsonl(store, { fromMs: T0 + 9000, toMs: T0 + 10_000 }, latest);
      assert.deepEqual(timed.trimEnd().split("\n").slice(1).map((l) => JSON.parse(JSON.parse(l).record).attributes.id), [flow.ambiguousId, flow.ambiguousId]);
      await assert.rejects(exportJsonl(store, { correlationId: "nope" }, latest), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotFound));
    });

    test("exports - PROV-JSON declares its prefixes and has used, wasGeneratedBy, wasDerivedFrom and wasAssociatedWith for each step", async (t) => {
      const { store, flow } = await setup(t, kind);
      const prov = await exportProv(store, { correlationId: flow.correlationId });
      assert.equal(prov.prefix.prov, "http://www.w3.org/ns/prov#");
      for (const p of ["cw", "event", "step", "principal"]) assert.ok(prov.prefix[p], p);
      const has = (relation: Record<string, Record<string, unknown>>, attrs: Record<string, unknown>): boolean =>
        Object.values(relation).some((r) => Object.entries(attrs).every(([k, v]) => r[k] === v));
      const ev = (id: string) => `event:${id}`, step = (id: string) => `step:${id}`;
      assert.equal(Object.keys(prov.entity).length, 15);
      assert.equal(prov.entity[ev(flow.released.id)]!["cw:type"], "report.released");
      assert.deepEqual(prov.activity[step(flow.released.id)], {
        "prov:type": "cw:Step", "prov:startTime": flow.released.attributes.startedat, "prov:endTime": flow.released.attributes.emittedat,
      });
      assert.ok(has(prov.wasGeneratedBy, { "prov:entity": ev(flow.released.id), "prov:activity": step(flow.released.id), "prov:time": flow.released.attributes.emittedat }));
      assert.ok(has(prov.used, { "prov:activity": step(flow.released.id), "prov:entity": ev(flow.report.id) }));
      assert.ok(has(prov.wasDerivedFrom, { "prov:generatedEntity": ev(flow.released.id), "prov:usedEntity": ev(flow.report.id) }));
      assert.ok(has(prov.wasAssociatedWith, { "prov:activity": step(flow.released.id), "prov:agent": "principal:publisher" }));
      assert.ok(has(prov.wasAssociatedWith, { "prov:activity": step(flow.approval.id), "prov:agent": "principal:approver" }));
      for (const p of PRINCIPALS) {
        assert.equal(prov.agent[`principal:${p}`]?.["prov:type"], "prov:SoftwareAgent", p);
      }
      // Every non-root event is derived from its input; the forged finding has no agent (it did not verify).
      assert.equal(Object.keys(prov.wasDerivedFrom).length, 14);
      assert.ok(!has(prov.wasAssociatedWith, { "prov:activity": step(flow.forged.id) }));
      assert.equal(prov.entity[ev(flow.forged.id)]!["cw:verified"], false);
      // The low-confidence quarantine: an activity of the verifier that used the finding.
      const [q] = Object.entries(prov.activity).filter(([, a]) => a["cw:reason"] === "low_confidence");
      assert.ok(q);
      assert.ok(has(prov.used, { "prov:activity": q[0], "prov:entity": ev(flow.findings[2]!.id) }));
      assert.ok(has(prov.wasAssociatedWith, { "prov:activity": q[0], "prov:agent": "principal:verifier" }));
    });

    test("exports - OpenLineage has START at startedat and COMPLETE at emittedat per step, FAIL for failed and quarantined steps", async (t) => {
      const { store, flow } = await setup(t, kind);
      const events = await exportOpenLineage(store, { correlationId: flow.correlationId });
      assert.ok(events.every((e) => e.producer === "https://causeway.dev/lineage" && e.schemaURL.startsWith("https://openlineage.io/spec/") && e.job.namespace === "causeway"));
      const times = events.map((e) => Date.parse(e.eventTime));
      assert.deepEqual(times, [...times].sort((a, b) => a - b));
      const released = events.filter((e) => e.run.runId === flow.released.id);
      assert.deepEqual(released.map((e) => [e.eventType, e.eventTime]), [["START", flow.released.attributes.startedat], ["COMPLETE", flow.released.attributes.emittedat]]);
      assert.deepEqual(released[0]!.job, { namespace: "causeway", name: "publisher/publish.v1" });
      assert.deepEqual(released[0]!.inputs, [{ namespace: "causeway", name: "report.published" }]);
      assert.deepEqual(released[0]!.outputs, [{ namespace: "causeway", name: "report.released" }]);
      const task = events.filter((e) => e.run.runId === flow.tasks[0]!.id);
      assert.deepEqual(task.map((e) => [e.eventType, Date.parse(e.eventTime)]), [["START", ms(flow.tasks[0]!, "startedat")], ["COMPLETE", ms(flow.tasks[0]!, "emittedat")]]);
      assert.equal(task[0]!.job.name, "planner/plan.v1");
      // A decision has no startedat: COMPLETE only.
      assert.deepEqual(events.filter((e) => e.run.runId === flow.grant.id).map((e) => e.eventType), ["COMPLETE"]);
      // The forged finding failed verification.
      const forged = events.filter((e) => e.run.runId === flow.forged.id);
      assert.deepEqual(forged.map((e) => [e.eventType, e.eventTime, e.job.name]), [["FAIL", flow.forged.attributes.time, "unverified/research.v1"]]);
      // The low-confidence finding completed, then the verifier's run on it failed at detection.
      const low = flow.findings[2]!;
      const quarantined = events.filter((e) => e.eventType === "FAIL" && e.inputs.some((i) => i.name === "research.finding.created") && e.job.name === "verifier/verify.v1");
      assert.equal(quarantined.length, 2);
      const lowFail = quarantined.find((e) => (e.run.facets?.errorMessage as { message: string }).message.startsWith("low_confidence"))!;
      assert.equal(Date.parse(lowFail.eventTime), ms(low, "emittedat") + 45);
      assert.deepEqual(events.filter((e) => e.run.runId === low.id).map((e) => e.eventType), ["START", "COMPLETE"]);
    });
  });
}
