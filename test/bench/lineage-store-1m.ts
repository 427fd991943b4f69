// The lineage query benchmark's store: 1,000,000 synthetic records in a SQLite lineage store, built once and
// cached under .data/bench/ (keyed by a version string), so later `make bench` runs reuse it.
//
// The records are what ingest would have written for a busy mesh: flows of 10–100 events, 64 of them in
// flight at a time so each flow's records are spread over the log; roots with UUIDv7 ids, outputs with derived
// (hash-like) ids as the agent runtime makes them; every attribute a verified event carries (correlationid,
// causationid, traceparent, signed startedat / emittedat, a DSSE envelope of real length); ~100 bytes of data,
// so a record is ~1.8 KB and two fit a 4 KiB page. Built through the real code path minus the network:
// encodeRecord → Merkle log append → store.append (which also stores the hash of every perfect subtree the
// batch completes, what proofs read), 20,000 records per transaction. Two flows are planted mid-log: a 20-step
// chain (for `why`) and a 100-event flow (for `trace`).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { randomBytes } from "node:crypto";
import { deriveEventId, flowIdOf, newTraceparent, uuidv7 } from "../../services/kit/index.ts";
import { createMerkleLog } from "../../services/lineage/merkle.ts";
import { RECORD_VERSION, dataDigest, encodeRecord, type RecordContent } from "../../services/lineage/record.ts";
import { openSqliteStore } from "../../services/lineage/store-sqlite.ts";
import type { StoredRecord } from "../../services/lineage/store.ts";

/**
 * Bump when the generator (or the SQLite schema) changes: a new key builds a new store. 2: the nodes table of
 * stored subtree hashes (a g1 store would get it on open, from its leaves), and flows correlated by their
 * root's flowIdOf as the gateway does since issue 12 (in g1 the root's own id: a g1 store built since then has
 * its 100-event flow's root indexed under another correlation, and trace finds 99).
 */
const GENERATOR_VERSION = 2;
export const BENCH_DIR = resolve(import.meta.dirname, "..", "..", ".data", "bench");

export interface BenchStore {
  readonly path: string;
  readonly records: number;
  /** Id of the last event of the 20-step chain (`why` walks 19 inputs back to its root). */
  readonly chainLastId: string;
  readonly chainSteps: number;
  /** Correlation id of the 100-event flow. */
  readonly flowId: string;
  readonly flowEvents: number;
  /** Seconds the build took (when this run built it), else null. */
  readonly builtInSeconds: number | null;
}

interface Meta { records: number; chainLastId: string; chainSteps: number; flowId: string; flowEvents: number; seconds: number }

/** The cached store of `total` records, built first if absent. Prints progress while building. */
export async function benchStore(total = 1_000_000, log: (line: string) => void = console.log): Promise<BenchStore> {
  const key = `lineage-${total}-r${RECORD_VERSION}-g${GENERATOR_VERSION}`;
  const path = join(BENCH_DIR, `${key}.db`);
  const metaPath = join(BENCH_DIR, `${key}.json`);
  if (existsSync(path) && existsSync(metaPath)) {
    const meta = JSON.parse(readFileSync(metaPath, "utf8")) as Meta;
    log(`  reusing ${path} (built in ${meta.seconds.toFixed(0)} s)`);
    return { path, ...meta, builtInSeconds: null };
  }
  mkdirSync(BENCH_DIR, { recursive: true });
  const building = `${path}.building`;
  for (const f of [building, `${building}-wal`, `${building}-shm`]) rmSync(f, { force: true });
  log(`  building ${path} (${total.toLocaleString("en")} records, once; later runs reuse it)`);
  const started = performance.now();
  const meta = await build(building, total, (what) => log(`  … ${what} (${((performance.now() - started) / 1000).toFixed(0)} s)`));
  const seconds = (performance.now() - started) / 1000;
  // The meta file is written first and the database renamed last: a store under its final name is complete.
  writeFileSync(metaPath, JSON.stringify({ ...meta, seconds }));
  renameSync(building, path);
  log(`  built in ${seconds.toFixed(0)} s`);
  return { path, ...meta, builtInSeconds: seconds };
}

const BATCH = 20_000;
const IN_FLIGHT = 64;
const STREAMS = ["MESH_CAP", "MESH_EVT", "MESH_HANDOFF", "MESH_DECISION"] as const;
const PRINCIPALS = Array.from({ length: 24 }, (_, i) => `agent${i}`);
const TYPES = ["report.planned", "research.done", "draft.written", "review.done", "decision.approved", "report.released"];

/** A flow being generated: its root id and the ids (with emit times) of the events so far. */
interface Flow { readonly root: string; readonly correlation: string; readonly size: number; readonly chain: boolean; readonly events: { id: string; source: string; emittedMs: number }[] }

async function build(path: string, total: number, progress: (what: string) => void): Promise<Omit<Meta, "seconds">> {
  // Bulk load: the query indexes are dropped while loading and made again by the store's own schema when it
  // is reopened (one sort per index instead of a million random B-tree inserts each: about twice as fast).
  // The UNIQUE constraints' indexes stay, so the load is checked for duplicates as ingest's would be.
  await using store = openSqliteStore(path);
  const side = new DatabaseSync(path);
  const indexes = side.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'records' AND sql IS NOT NULL").all() as { name: string }[];
  for (const { name } of indexes) side.exec(`DROP INDEX "${name}"`);
  side.close();
  const merkle = createMerkleLog({ leafAt: () => { throw new Error("not needed while appending"); } });
  // Random material comes from one pool: a per-record randomBytes call would cost more than the record.
  const pool = randomBytes(1 << 20);
  let poolAt = 0;
  const random = (n: number) => {
    if (poolAt + n > pool.length) { pool.set(randomBytes(pool.length)); poolAt = 0; }
    return pool.subarray(poolAt, (poolAt += n));
  };
  const keyids = PRINCIPALS.map(() => `SHA256:${random(32).toString("base64").replace(/=+$/, "")}`);
  const seqs = new Map<string, number>();
  let clock = Date.UTC(2025, 0, 1);
  let chainLastId = "", flowId = "", flowDone = false, planted = { chain: false, hundred: false };
  let flowsStarted = 0;
  const active: Flow[] = [];
  const startFlow = (): Flow => {
    flowsStarted++;
    const atMiddle = merkle.size + BATCH >= total / 2;
    // The planted flows start mid-log, so both live among a full index's worth of other records.
    const chain = atMiddle && !planted.chain;
    const hundred = atMiddle && !chain && !planted.hundred;
    planted = { chain: planted.chain || chain, hundred: planted.hundred || hundred };
    const size = chain ? 20 : hundred ? 100 : 10 + ((flowsStarted * 7919) % 91);
    const root = uuidv7(clock);
    // The flow's correlation id is the one the gateway gives the flow its root starts (kit flowIdOf).
    const correlation = flowIdOf({ source: "causeway://gateway", id: root });
    if (hundred) flowId = correlation;
    return { root, correlation, size, chain, events: [] };
  };
  let batch: StoredRecord[] = [];
  while (merkle.size + batch.length < total) {
    while (active.length < IN_FLIGHT) active.push(startFlow());
    const slot = random(1)[0]! % active.length;
    const flow = active[slot]!;
    clock += 10 + (random(1)[0]! % 200);
    const n = flow.events.length;
    const principal = PRINCIPALS[random(1)[0]! % PRINCIPALS.length]!;
    const k = PRINCIPALS.indexOf(principal);
    // The chain is linear; other flows branch: an event answers one of the last few events of its flow.
    const parent = n === 0 ? undefined : flow.chain ? flow.events[n - 1]! : flow.events[Math.max(0, n - 1 - (random(1)[0]! % 4))]!;
    const id = parent === undefined ? flow.root : deriveEventId(parent, principal, n);
    const source = parent === undefined ? "causeway://gateway" : `causeway://${principal}`;
    const type = parent === undefined ? "report.requested" : TYPES[n % TYPES.length]!;
    const stream = parent === undefined ? "MESH_INGEST" : STREAMS[n % STREAMS.length]!;
    const seq = (seqs.get(stream) ?? 0) + 1;
    seqs.set(stream, seq);
    const emittedMs = clock;
    const data = Buffer.from(JSON.stringify({ step: n, status: "done", artifact: `s3://reports/${id}.md`, score: Math.round((1000 * n) / flow.size) }));
    const envelope = random(519).toString("base64"); // 692 characters, as a real envelope of these attributes
    const content: RecordContent = {
      stream, seq, subject: stream === "MESH_EVT" ? `mesh.evt.${type}` : `mesh.cap.${type.split(".")[0]}.v1`,
      recorded: new Date(emittedMs + 3).toISOString(),
      verification: { result: "verified", keyid: parent === undefined ? keyids[0]! : keyids[k]!, principal: parent === undefined ? "gateway" : principal },
      attributes: {
        specversion: "1.0", id, source, type, time: new Date(emittedMs).toISOString(), datacontenttype: "application/json",
        dataschema: `https://causeway.dev/schemas/${type}/1.0.0`,
        ...(parent !== undefined && {
          correlationid: flow.correlation, causationid: parent.id,
          startedat: new Date(Math.max(parent.emittedMs + 1, emittedMs - 40)).toISOString(), emittedat: new Date(emittedMs).toISOString(),
        }),
        traceparent: newTraceparent(),
        dssematerial: envelope,
      },
      headers: { "Nats-Msg-Id": id },
      datadigest: dataDigest(data),
      data: data.toString("base64"),
    };
    const encoded = encodeRecord(merkle.size + batch.length, content);
    batch.push(encoded);
    flow.events.push({ id, source, emittedMs });
    if (flow.events.length === flow.size) {
      if (flow.chain) chainLastId = id;
      if (flow.correlation === flowId) flowDone = true;
      active.splice(slot, 1);
    }
    if (batch.length === BATCH || merkle.size + batch.length === total) {
      for (const r of batch) merkle.append(r.leafHash);
      await store.append(batch, { size: merkle.size, frontier: merkle.frontier() });
      batch = [];
      if (merkle.size % 100_000 === 0 || merkle.size === total) progress(`${merkle.size.toLocaleString("en")} / ${total.toLocaleString("en")} records`);
    }
  }
  // Flows still open at the end are simply shorter: the log ends mid-flight, as a live one does.
  if (chainLastId === "" || !flowDone) throw new Error("the planted flows did not complete: raise the record count");
  await store[Symbol.asyncDispose]();
  const indexing = performance.now();
  await openSqliteStore(path)[Symbol.asyncDispose]();
  progress(`indexes (${indexes.map((i) => i.name).join(", ")}) made again in ${((performance.now() - indexing) / 1000).toFixed(0)} s`);
  return { records: total, chainLastId, chainSteps: 20, flowId, flowEvents: 100 };
}
