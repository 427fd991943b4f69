// The default lineage store: one SQLite file (node:sqlite) under the data directory, WAL mode, one writer.
// node:sqlite is synchronous; its calls are short (indexed lookups, one transaction per batch), so the async
// interface simply wraps them.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DatabaseSync, type StatementSync } from "node:sqlite";
import { columnText } from "./record.ts";
import type { NodeId } from "./merkle.ts";
import {
  CHECKPOINT_COLUMNS, RECORD_COLUMNS, checkContinues, checkpointOfRow, checkpointValues, frontierNodes, nodeRebuild, recordOfRow, recordValues, schemaSql,
  splitFrontier, type CheckpointRow, type RecordRow,
} from "./store-schema.ts";
import {
  listLimit, recordKeyString, type LineageStore, type ListFilter, type LogState, type OpenStoreOptions, type RecordKey, type StoredCheckpoint, type StoredRecord,
} from "./store.ts";

const SCHEMA = schemaSql({ key: "INTEGER PRIMARY KEY", integer: "INTEGER", small: "INTEGER", bytes: "BLOB", clustered: " WITHOUT ROWID" });

/** Opens (creating if needed) the SQLite store at `path`; a store from before subtree hashes were kept gets them now. */
export function openSqliteStore(path: string, opts: OpenStoreOptions = {}): LineageStore {
  mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  db.exec("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;");
  db.exec(SCHEMA);
  upgradeIdentityConstraint(db);
  upgradeNodes(db, path, opts);
  const statements = new Map<string, StatementSync>();
  const prepared = (sql: string): StatementSync => {
    let s = statements.get(sql);
    if (!s) statements.set(sql, (s = db.prepare(sql)));
    return s;
  };
  const rows = (sql: string, ...params: (string | number | null)[]): StoredRecord[] =>
    (prepared(sql).all(...params) as unknown as RecordRow[]).map(recordOfRow);

  const insert = prepared(`INSERT INTO records (${RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
  const insertNode = prepared("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)");
  const saveState = prepared("INSERT INTO log_state (one, size, frontier) VALUES (1, ?, ?) ON CONFLICT (one) DO UPDATE SET size = excluded.size, frontier = excluded.frontier");
  const readState = (): LogState => stateOf(db);

  const store: LineageStore = {
    kind: "sqlite",
    location: path,
    async state() {
      return readState();
    },
    async known(keys: readonly RecordKey[]) {
      const found = new Set<string>();
      const bySeq = prepared("SELECT 1 FROM records WHERE stream = ? AND stream_seq = ?");
      const byIdentity = prepared("SELECT 1 FROM records WHERE stream = ? AND principal = ? AND source = ? AND id = ? AND verified = 1");
      for (const key of keys) {
        const [seqKey, identityKey] = recordKeyString(key);
        const stream = columnText(key.stream);
        if (bySeq.get(stream, key.seq)) found.add(seqKey!);
        if (identityKey && byIdentity.get(stream, columnText(key.principal), columnText(key.source), columnText(key.id))) found.add(identityKey);
      }
      return found;
    },
    async append(records: readonly StoredRecord[], state: LogState) {
      db.exec("BEGIN IMMEDIATE");
      try {
        const completed = checkContinues(records, readState(), state);
        for (const r of records) insert.run(...recordValues(r));
        for (const n of completed) insertNode.run(n.level, n.index, n.hash);
        saveState.run(state.size, Buffer.concat(state.frontier));
        db.exec("COMMIT");
      } catch (err) {
        db.exec("ROLLBACK");
        throw err;
      }
    },
    async leafHashes(from: number, to: number) {
      return (prepared("SELECT leaf_hash FROM records WHERE idx >= ? AND idx < ? ORDER BY idx").all(from, to) as { leaf_hash: Uint8Array }[])
        .map((r) => Buffer.from(r.leaf_hash));
    },
    async nodeHashes(ids: readonly NodeId[]) {
      return nodeHashes(db, ids);
    },
    async strayNodes(size: number, limit: number) {
      // Level l holds size >> l complete subtrees (indices below it); anything else was never written by an append.
      return (prepared("SELECT level, idx FROM nodes WHERE level < 1 OR level > 62 OR idx < 0 OR idx >= (? >> level) ORDER BY level, idx LIMIT ?")
        .all(size, limit) as { level: number; idx: number }[]).map((r) => ({ level: r.level, index: r.idx }));
    },
    async range(from: number, to: number) {
      return rows(`SELECT ${RECORD_COLUMNS} FROM records WHERE idx >= ? AND idx < ? ORDER BY idx`, from, to);
    },
    async byId(id: string) {
      return rows(`SELECT ${RECORD_COLUMNS} FROM records WHERE id = ? ORDER BY idx`, columnText(id));
    },
    async byCorrelation(correlationid: string) {
      return rows(`SELECT ${RECORD_COLUMNS} FROM records WHERE correlationid = ? ORDER BY idx`, columnText(correlationid));
    },
    async byCausation(ids: readonly string[]) {
      if (ids.length === 0) return [];
      return rows(`SELECT ${RECORD_COLUMNS} FROM records WHERE causationid IN (${ids.map(() => "?").join(", ")}) ORDER BY idx`, ...ids.map(columnText));
    },
    async list(filter: ListFilter) {
      const where: string[] = [];
      const params: (string | number)[] = [];
      if (filter.principal !== undefined) { where.push("principal = ?"); params.push(columnText(filter.principal)); }
      if (filter.type !== undefined) { where.push("type = ?"); params.push(columnText(filter.type)); }
      if (filter.stream !== undefined) { where.push("stream = ?"); params.push(columnText(filter.stream)); }
      if (filter.fromMs !== undefined) { where.push("time_ms >= ?"); params.push(filter.fromMs); }
      if (filter.toMs !== undefined) { where.push("time_ms < ?"); params.push(filter.toMs); }
      if (filter.failedOnly) where.push("verified = 0");
      if (filter.afterIndex !== undefined) { where.push("idx > ?"); params.push(filter.afterIndex); }
      const clause = where.length > 0 ? `WHERE ${where.join(" AND ")}` : "";
      return rows(`SELECT ${RECORD_COLUMNS} FROM records ${clause} ORDER BY idx LIMIT ${listLimit(filter)}`, ...params);
    },
    async lastSequences() {
      const found = prepared("SELECT stream, MAX(stream_seq) AS seq FROM records GROUP BY stream").all() as { stream: string; seq: number }[];
      return Object.fromEntries(found.map((r) => [r.stream, r.seq]));
    },
    async saveCheckpoint(c: StoredCheckpoint) {
      prepared(`INSERT INTO checkpoints (${CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (size) DO NOTHING`).run(...checkpointValues(c));
    },
    async checkpoints() {
      return (prepared(`SELECT ${CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY size`).all() as unknown as CheckpointRow[]).map(checkpointOfRow);
    },
    async [Symbol.asyncDispose]() {
      if (db.isOpen) db.close();
    },
  };
  return store;
}

function stateOf(db: DatabaseSync): LogState {
  const row = db.prepare("SELECT size, frontier FROM log_state WHERE one = 1").get() as { size: number; frontier: Uint8Array } | undefined;
  return row ? { size: row.size, frontier: splitFrontier(row.frontier) } : { size: 0, frontier: [] };
}

function nodeHashes(db: DatabaseSync, ids: readonly NodeId[]): (Buffer | undefined)[] {
  const leaf = db.prepare("SELECT leaf_hash AS hash FROM records WHERE idx = ?");
  const node = db.prepare("SELECT hash FROM nodes WHERE level = ? AND idx = ?");
  return ids.map(({ level, index }) => {
    const row = (level === 0 ? leaf.get(index) : node.get(level, index)) as { hash: Uint8Array } | undefined;
    return row ? Buffer.from(row.hash) : undefined;
  });
}

// A store created before subtree hashes were kept (or appended to by a version that did not keep them) lacks
// some: they are built once from the leaf hashes, in one transaction that holds appends off.
function upgradeNodes(db: DatabaseSync, path: string, opts: OpenStoreOptions): void {
  const lacking = () => nodeHashes(db, frontierNodes(stateOf(db).size)).includes(undefined);
  if (!lacking()) return;
  db.exec("BEGIN IMMEDIATE");
  try {
    if (lacking()) {
      const rebuild = nodeRebuild(stateOf(db).size, path, opts.log);
      const leaves = db.prepare("SELECT leaf_hash FROM records WHERE idx >= ? AND idx < ? ORDER BY idx");
      const insert = db.prepare("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?) ON CONFLICT DO NOTHING");
      for (let range = rebuild.next(); range; range = rebuild.next()) {
        const found = (leaves.all(...range) as { leaf_hash: Uint8Array }[]).map((r) => Buffer.from(r.leaf_hash));
        for (const n of rebuild.add(found)) insert.run(n.level, n.index, n.hash);
      }
    }
    db.exec("COMMIT");
  } catch (err) {
    db.exec("ROLLBACK");
    throw err;
  }
}

// A store created before only verified records claimed their (stream, source, id) has that constraint in the
// table itself, where SQLite cannot drop it: its records move once into a table created by SCHEMA.
function upgradeIdentityConstraint(db: DatabaseSync): void {
  const old = () => (db.prepare("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'records'").get() as { sql: string } | undefined)
    ?.sql.includes("UNIQUE (stream, source, id)") === true;
  if (!old()) return;
  db.exec("BEGIN IMMEDIATE");
  try {
    if (old()) {
      db.exec("ALTER TABLE records RENAME TO records_old");
      const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records_old' AND sql IS NOT NULL").all() as { name: string }[];
      for (const { name } of indexes) db.exec(`DROP INDEX "${name}"`);
      db.exec(SCHEMA);
      db.exec(`INSERT INTO records (${RECORD_COLUMNS}) SELECT ${RECORD_COLUMNS} FROM records_old; DROP TABLE records_old`);
    }
    db.exec("COMMIT");
  } catch (err) {
    db.exec("ROLLBACK");
    throw err;
  }
}
