// Lineage benchmarks (issue 5):
//
// - Ingest: lineage's writer (startIngest: consume → decode + verify → dedupe → Merkle → one SQLite transaction
//   per batch → ack) against a hand-written loop doing only consume → decode → verify → ack with the same trust
//   store. Both read the same pre-published signed events (~1 KiB, flows of 10) from MESH_EVT, each round
//   through a fresh durable consumer with lineage's own consumer configuration; rounds alternate.
// - Queries: `why` of a 20-step chain and `trace` of a 100-event flow in a SQLite store of 1,000,000 records
//   (lineage-store-1m.ts), against a hand-written indexed SQL walk on the same file; samples interleave.
// - Proofs on the same store: `prove` (an inclusion proof of a random record against a checkpoint of the whole
//   log) and a consistency proof from a random earlier size, against a hand-written RFC 9162 recursion reading
//   the stored subtree hashes it needs with one indexed SELECT each; samples interleave. A few proofs the way
//   lineage made them before (every leaf hash read, the tree above them hashed) are timed once, for reference.
import { hash } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { jetstream, type ConsumerConfig } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import {
  NatsBinding, createEvent, createLogger, deriveEventId, newTraceparent, signEvent, signingKeyFromNkeySeed, uuidv7, type CloudEvent,
} from "../../services/kit/index.ts";
import { signCheckpoint } from "../../services/lineage/checkpoint.ts";
import { startIngest } from "../../services/lineage/ingest.ts";
import { createMerkleLog, inclusionProof } from "../../services/lineage/merkle.ts";
import { proveConsistency, proveEvent } from "../../services/lineage/proofs.ts";
import { trace, why } from "../../services/lineage/queries.ts";
import type { LineageStore, StoredCheckpoint } from "../../services/lineage/store.ts";
import { openSqliteStore } from "../../services/lineage/store-sqlite.ts";
import { HOP_SCHEMA, HOP_TYPE, startBenchMesh, type BenchMesh } from "./bench-mesh.ts";
import { BENCH_DIR, benchStore } from "./lineage-store-1m.ts";
import type { Comparison } from "./measure.ts";

const EVENTS = 6_000;
const ROUNDS = 5;
const STREAM = "MESH_EVT";
const SUBJECT = "mesh.evt.bench.lineage";
const BASELINE_DURABLE = "bench-verify";
const quiet = createLogger({ name: "bench", level: process.env.LOG_LEVEL ?? "silent" });

// Lineage's consumer on MESH_EVT as `causeway up` creates it (deliver all, explicit ack, 1024 in flight).
const lineageConsumer = JSON.parse(readFileSync(resolve(import.meta.dirname, "..", "..", "streams", "consumers", `${STREAM}.lineage.json`), "utf8")) as ConsumerConfig;

/** Publishes `count` signed ~1 KiB events in flows of 10 (root, then a chain with correlation and causation). */
async function publishFlows(mesh: BenchMesh, count: number): Promise<void> {
  const js = jetstream(mesh.nc);
  const payload = "x".repeat(900);
  let parent: CloudEvent | undefined;
  let root = "";
  const events: CloudEvent[] = [];
  for (let i = 0; i < count; i++) {
    const now = new Date();
    const extensions: Record<string, string> = { traceparent: newTraceparent() };
    if (i % 10 !== 0 && parent) {
      Object.assign(extensions, { correlationid: root, causationid: parent.id, startedat: new Date(now.getTime() - 2).toISOString(), emittedat: now.toISOString() });
    }
    const id = i % 10 === 0 || !parent ? uuidv7() : deriveEventId(parent, "source", 0);
    if (i % 10 === 0) root = id;
    parent = signEvent(createEvent({
      id, source: "causeway://source", type: HOP_TYPE, time: now.toISOString(), datacontenttype: "application/json", dataschema: HOP_SCHEMA,
      extensions, data: JSON.stringify({ seq: i, payload }),
    }), mesh.keys.source!);
    events.push(parent);
  }
  for (let i = 0; i < events.length; i += 256) {
    await Promise.all(events.slice(i, i + 256).map((e) => {
      const { headers, data } = NatsBinding.binary(e);
      return js.publish(SUBJECT, data, { headers, msgID: e.id });
    }));
  }
}

interface Round { opsPerSec: number; cpuUsPerOp: number; transactions?: number }

async function timed(run: () => Promise<void>): Promise<Round> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  await run();
  const s = (performance.now() - start) / 1000;
  const used = process.cpuUsage(cpu);
  return { opsPerSec: EVENTS / s, cpuUsPerOp: (used.user + used.system) / EVENTS };
}

/** One round of lineage's ingest: a fresh `lineage` consumer and a fresh SQLite store, until every event is committed. */
async function ingestRound(mesh: BenchMesh, round: number): Promise<Round> {
  await mesh.jsm.consumers.delete(STREAM, lineageConsumer.durable_name!).catch(() => undefined);
  await mesh.jsm.consumers.add(STREAM, lineageConsumer);
  const path = join(BENCH_DIR, `ingest-${process.pid}-${round}.db`);
  const store = openSqliteStore(path);
  let ingest: Awaited<ReturnType<typeof startIngest>> | undefined;
  const result = await timed(async () => {
    const done = Promise.withResolvers<void>();
    ingest = await startIngest({
      nc: mesh.nc, store, trust: mesh.trust, log: quiet, consumers: [{ stream: STREAM, durable: lineageConsumer.durable_name! }],
      onCommit: (log) => { if (log.size >= EVENTS) done.resolve(); },
    });
    await done.promise;
  });
  await ingest!.stop();
  const stats = ingest!.stats();
  await store[Symbol.asyncDispose]();
  for (const suffix of ["", "-wal", "-shm"]) rmSync(path + suffix, { force: true });
  if (stats.recorded !== EVENTS || stats.failed !== 0) throw new Error(`lineage ingest recorded ${stats.recorded} (${stats.failed} failed), expected ${EVENTS} verified`);
  return { ...result, transactions: stats.batches };
}

/** One round of the hand-written loop: consume → decode → verify (same trust store) → ack, nothing else. */
async function verifyLoopRound(mesh: BenchMesh): Promise<Round> {
  await mesh.jsm.consumers.add(STREAM, { ...lineageConsumer, durable_name: BASELINE_DURABLE, description: "bench: consume + verify" });
  let failed = 0;
  const result = await timed(async () => {
    const messages = await (await jetstream(mesh.nc).consumers.get(STREAM, BASELINE_DURABLE)).consume({ max_messages: 512, expires: 5_000 });
    let n = 0;
    for await (const m of messages) {
      try {
        mesh.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" });
      } catch {
        failed++;
      }
      m.ack();
      if (++n === EVENTS) break;
    }
  });
  await mesh.jsm.consumers.delete(STREAM, BASELINE_DURABLE);
  if (failed !== 0) throw new Error(`${failed} events failed verification in the hand-written loop`);
  return result;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Ingest throughput, lineage vs consume + verify, medians of alternating rounds. */
export async function lineageIngest(): Promise<{ results: Comparison[]; notes: string[] }> {
  await using mesh = await startBenchMesh(1);
  await publishFlows(mesh, EVENTS);
  await ingestRound(mesh, 0); // warm-up
  await verifyLoopRound(mesh);
  const lineage: Round[] = [], loop: Round[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    if (r % 2 === 1) { lineage.push(await ingestRound(mesh, r)); loop.push(await verifyLoopRound(mesh)); }
    else { loop.push(await verifyLoopRound(mesh)); lineage.push(await ingestRound(mesh, r)); }
  }
  const a = median(lineage.map((x) => x.opsPerSec)), b = median(loop.map((x) => x.opsPerSec));
  const cpuA = median(lineage.map((x) => x.cpuUsPerOp)), cpuB = median(loop.map((x) => x.cpuUsPerOp));
  return {
    results: [{ name: "lineage ingest vs consume + verify", candidate: "startIngest (SQLite)", baseline: "hand-written", candidateOpsPerSec: a, baselineOpsPerSec: b, ratio: a / b, goal: 0.7 }],
    notes: [
      `lineage ingest (${EVENTS} signed ~1 KiB events, ${ROUNDS} rounds): per-round ratios ${lineage.map((x, i) => (x.opsPerSec / loop[i]!.opsPerSec).toFixed(2)).join(", ")}; ` +
        `CPU per event in this process: lineage ${cpuA.toFixed(0)} µs, consume + verify ${cpuB.toFixed(0)} µs; ${median(lineage.map((x) => x.transactions!))} store transactions per round`,
    ],
  };
}

// The columns the SQLite store selects, as the hand-written walk selects them.
const COLUMNS = "idx, stream, stream_seq, subject, source, id, type, time_ms, correlationid, causationid, principal, verified, leaf_hash, record";
const WARMUP = 50;
const SAMPLES = 500;
const GOAL_MS = 20;

/** `why`, `trace`, `prove` and consistency latency on the 1,000,000-record store, against hand-written SQL. */
export async function lineageQueries(): Promise<{ notes: string[]; met: boolean }> {
  const started = performance.now();
  const built = await benchStore();
  await using store = openSqliteStore(built.path);
  const db = new DatabaseSync(built.path, { readOnly: true });
  const byId = db.prepare(`SELECT ${COLUMNS} FROM records WHERE id = ? ORDER BY idx`);
  const byCorrelation = db.prepare(`SELECT ${COLUMNS} FROM records WHERE correlationid = ? ORDER BY idx`);
  // The walk: the event, then its input by causationid, to the root.
  const handWhy = () => {
    let steps = 0;
    for (let id: string | null = built.chainLastId; id !== null; steps++) id = (byId.all(id)[0] as { causationid: string | null } | undefined)?.causationid ?? null;
    return steps;
  };
  const handTrace = () => byCorrelation.all(built.flowId).length;

  // Check that both sides answer what the benchmark says they do before timing them.
  const w = await why(store, built.chainLastId), t = await trace(store, built.flowId);
  if (w.steps.length !== built.chainSteps || w.end.kind !== "root" || handWhy() !== built.chainSteps) throw new Error(`why walked ${w.steps.length} steps (${w.end.kind}), expected ${built.chainSteps}`);
  if (t.nodes.length !== built.flowEvents || handTrace() !== built.flowEvents) throw new Error(`trace found ${t.nodes.length} events, expected ${built.flowEvents}`);

  const samples = { why: [] as number[], handWhy: [] as number[], trace: [] as number[], handTrace: [] as number[] };
  const ops: [keyof typeof samples, () => unknown][] = [
    ["why", () => why(store, built.chainLastId)], ["handWhy", handWhy], ["trace", () => trace(store, built.flowId)], ["handTrace", handTrace],
  ];
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    // Interleaved, the order rotating, so every kind of sample sees the same machine noise.
    for (let k = 0; k < ops.length; k++) {
      const [name, op] = ops[(i + k) % ops.length]!;
      const t0 = performance.now();
      await op();
      if (i >= WARMUP) samples[name].push(performance.now() - t0);
    }
  }
  const whyLine = latencyLine(`why of a ${built.chainSteps}-step chain`, samples.why, samples.handWhy);
  const traceLine = latencyLine(`trace of a ${built.flowEvents}-event flow`, samples.trace, samples.handTrace);
  const proofs = await lineageProofs(store, db);
  db.close();
  const seconds = (performance.now() - started) / 1000;
  return {
    met: whyLine.met && traceLine.met && proofs.met,
    notes: [
      `lineage queries on ${built.records.toLocaleString("en")} records (SQLite, ${SAMPLES} samples each after ${WARMUP} warm-up; ` +
        `${built.builtInSeconds === null ? "cached store" : `store built in ${built.builtInSeconds.toFixed(0)} s`}, ${seconds.toFixed(0)} s in all):`,
      `  ${whyLine.text}`,
      `  ${traceLine.text}`,
      ...proofs.notes.map((n) => `  ${n}`),
    ],
  };
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

function latencyLine(what: string, mine: number[], hand: number[]): { met: boolean; text: string } {
  const p50 = pct(mine, 0.5), p99 = pct(mine, 0.99), h50 = pct(hand, 0.5), h99 = pct(hand, 0.99);
  return {
    met: p99 < GOAL_MS,
    text: `${what}: lineage p50 ${p50.toFixed(2)} ms / p99 ${p99.toFixed(2)} ms (goal p99 < ${GOAL_MS} ms ${p99 < GOAL_MS ? "✓" : "✗"}); ` +
      `hand-written SQL p50 ${h50.toFixed(2)} ms / p99 ${h99.toFixed(2)} ms; lineage ÷ hand-written p50 ${(p50 / h50).toFixed(1)}×, p99 ${(p99 / h99).toFixed(1)}×`,
  };
}

// ---- proofs ------------------------------------------------------------------------------------------------

/** Proofs made the way lineage made them before stored subtree hashes (every leaf read and hashed up), timed once. */
const LEAF_BASED_SAMPLES = 3;

/**
 * `prove` and consistency proofs of random records and sizes against a checkpoint of the whole store, against
 * the hand-written recursion over `db` (a second, read-only connection to the same file).
 */
async function lineageProofs(store: LineageStore, db: DatabaseSync): Promise<{ notes: string[]; met: boolean }> {
  const { size, frontier } = await store.state();
  // Hand-written RFC 9162 (§2.1.1, §2.1.3.1, §2.1.4.1) on the stored hashes: MTH of a perfect subtree is its
  // stored hash (a leaf's in records), any other splits at the largest power of two below its width.
  const leafRow = db.prepare("SELECT leaf_hash FROM records WHERE idx = ?");
  const nodeRow = db.prepare("SELECT hash FROM nodes WHERE level = ? AND idx = ?");
  const recordRow = db.prepare("SELECT record FROM records WHERE idx = ?");
  const prefix = Buffer.from([1]);
  const mth = (start: number, end: number): Uint8Array => {
    const width = end - start;
    if (Number.isInteger(Math.log2(width))) {
      return width === 1 ? (leafRow.get(start) as { leaf_hash: Uint8Array }).leaf_hash : (nodeRow.get(Math.log2(width), start / width) as { hash: Uint8Array }).hash;
    }
    let k = 1;
    while (k * 2 < width) k *= 2;
    return hash("sha256", Buffer.concat([prefix, mth(start, start + k), mth(start + k, end)]), "buffer");
  };
  const path = (m: number, start: number, end: number, out: Uint8Array[]): Uint8Array[] => {
    if (end - start <= 1) return out;
    let k = 1;
    while (k * 2 < end - start) k *= 2;
    if (m < k) out.push(...path(m, start, start + k, []), mth(start + k, end));
    else out.push(...path(m - k, start + k, end, []), mth(start, start + k));
    return out;
  };
  const subproof = (m: number, start: number, end: number, whole: boolean): Uint8Array[] => {
    if (m === end - start) return whole ? [] : [mth(start, end)];
    let k = 1;
    while (k * 2 < end - start) k *= 2;
    return m <= k ? [...subproof(m, start, start + k, whole), mth(start + k, end)] : [...subproof(m - k, start + k, end, false), mth(start, start + k)];
  };
  const handProve = (index: number) => ({ record: (recordRow.get(index) as { record: Uint8Array }).record, proof: path(index, 0, size, []) });
  const handConsistency = (oldSize: number) => subproof(oldSize, 0, size, true);

  // Checkpoints signed by a throwaway key: the whole log (root from the store's frontier), and earlier sizes
  // (roots from the hand-written recursion, so lineage's proofs are checked against roots it did not compute).
  const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
  const signed = (n: number, root: string): StoredCheckpoint => {
    const c = { origin: "causeway.bench/lineage", size: n, root, time: "2026-05-13T10:00:00Z" };
    return { ...c, note: signCheckpoint(c, key), auditSeq: 0 };
  };
  const latest = signed(size, createMerkleLog({ leafAt: () => Buffer.alloc(0), size, frontier }).root().toString("base64"));
  if (Buffer.from(mth(0, size)).toString("base64") !== latest.root) throw new Error("the hand-written root of the stored hashes is not the log's root");
  // A fixed pseudo-random sequence (xorshift), so every run proves the same records.
  let seed = 0x2545f491;
  const random = (below: number) => {
    seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5;
    return (seed >>> 0) % below;
  };
  const n = WARMUP + SAMPLES;
  const indices = Array.from({ length: n }, () => random(size));
  const older = Array.from({ length: n }, () => {
    const m = 1 + random(size - 1);
    return signed(m, Buffer.from(mth(0, m)).toString("base64"));
  });
  const b64 = (hs: readonly Uint8Array[]) => hs.map((h) => Buffer.from(h).toString("base64"));
  for (let i = 0; i < 5; i++) {
    const mine = await proveEvent(store, { index: indices[i]! }, latest), hand = handProve(indices[i]!);
    if (JSON.stringify(mine.proof) !== JSON.stringify(b64(hand.proof)) || mine.record !== Buffer.from(hand.record).toString("utf8")) throw new Error(`prove ${indices[i]}: lineage and the hand-written proof differ`);
    if (JSON.stringify((await proveConsistency(store, older[i]!, latest)).proof) !== JSON.stringify(b64(handConsistency(older[i]!.size)))) throw new Error(`consistency ${older[i]!.size} → ${size}: lineage and the hand-written proof differ`);
  }

  const samples = { prove: [] as number[], handProve: [] as number[], consistency: [] as number[], handConsistency: [] as number[] };
  let i = 0;
  const ops: [keyof typeof samples, () => unknown][] = [
    ["prove", () => proveEvent(store, { index: indices[i]! }, latest)], ["handProve", () => handProve(indices[i]!)],
    ["consistency", () => proveConsistency(store, older[i]!, latest)], ["handConsistency", () => handConsistency(older[i]!.size)],
  ];
  for (; i < n; i++) {
    for (let k = 0; k < ops.length; k++) {
      const [name, op] = ops[(i + k) % ops.length]!;
      const t0 = performance.now();
      await op();
      if (i >= WARMUP) samples[name].push(performance.now() - t0);
    }
  }
  const proveLine = latencyLine(`prove (inclusion proof of a random record, checkpoint of ${size.toLocaleString("en")})`, samples.prove, samples.handProve);
  const consistencyLine = latencyLine("consistency proof from a random earlier size", samples.consistency, samples.handConsistency);

  // For reference: the proof as lineage made it before, from every leaf hash (one query) hashed up the tree.
  const before: number[] = [];
  for (let k = 0; k < LEAF_BASED_SAMPLES; k++) {
    const t0 = performance.now();
    const leaves = await store.leafHashes(0, size);
    const proof = await inclusionProof(indices[k]!, size, (x) => leaves[x]!);
    before.push(performance.now() - t0);
    if (JSON.stringify(b64(proof)) !== JSON.stringify(b64(handProve(indices[k]!).proof))) throw new Error("the leaf-based proof differs");
  }
  const median = [...before].sort((a, b) => a - b)[Math.floor(before.length / 2)]!;
  return {
    met: proveLine.met && consistencyLine.met,
    notes: [
      proveLine.text,
      consistencyLine.text,
      `before stored subtree hashes (every leaf hash read, the tree hashed up; ${LEAF_BASED_SAMPLES} proofs): ${(median / 1000).toFixed(2)} s a proof (median), ` +
        `${(median / pct(samples.prove, 0.5)).toFixed(0)}× lineage's p50 now`,
    ],
  };
}

// `node test/bench/lineage.bench.ts` runs the lineage benchmarks alone.
if (import.meta.main) {
  const { printTable } = await import("./measure.ts");
  const ingest = await lineageIngest();
  const queries = await lineageQueries();
  printTable(ingest.results);
  for (const n of [...ingest.notes, ...queries.notes]) console.log(n);
}
