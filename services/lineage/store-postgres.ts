// The lineage store on PostgreSQL (when LINEAGE_DATABASE_URL is set): the SQLite store's tables, columns and
// indexes with PostgreSQL types, through a small pg pool. Every batch operation is one round trip — `known`
// matches a whole batch of keys through unnest(), `append` inserts a whole batch through unnest() — because
// both sit on the ingest hot path, where a round trip per key would cost more than verifying the signature.
//
// Raw SQL written for one store runs on the other (tamper tests do): same names, integers for indices and
// sequences, and `verified` a SMALLINT 0/1 as in SQLite (a BOOLEAN would reject `SET verified = 0`).
import { DatabaseError, Pool, TypeOverrides, type PoolClient, type QueryConfig } from "pg";
import { columnText } from "./record.ts";
import type { NodeHash, NodeId } from "./merkle.ts";
import {
  CHECKPOINT_COLUMNS, RECORD_COLUMNS, checkContinues, checkpointOfRow, checkpointValues, frontierNodes, nodeRebuild, recordOfRow, recordValues, schemaSql,
  splitFrontier, type CheckpointRow, type RecordRow,
} from "./store-schema.ts";
import {
  listLimit, recordKeyString, type LineageStore, type ListFilter, type LogState, type OpenStoreOptions, type RecordKey, type StoredCheckpoint, type StoredRecord,
} from "./store.ts";
import { CausewayError, ErrorCode } from "../kit/index.ts";

const SCHEMA = schemaSql({ key: "BIGINT PRIMARY KEY", integer: "BIGINT", small: "SMALLINT", bytes: "BYTEA", clustered: "" });

/** Stores created before only verified records claimed their (stream, source, id) have it as a table constraint. */
const UPGRADE = "ALTER TABLE records DROP CONSTRAINT IF EXISTS records_stream_source_id_key";

/** Element type of each column in the unnest() of a batch insert, in RECORD_COLUMNS order. */
const COLUMN_TYPES = ["bigint", "text", "bigint", "text", "text", "text", "text", "bigint", "text", "text", "text", "smallint", "bytea", "bytea"];

/**
 * Transaction-scoped advisory lock keys (any constants, the same in every process): one serializes appends,
 * so two writers cannot interleave between reading the size and storing the batch (log_state has no row to
 * lock before the first append); one serializes schema creation, which CREATE … IF NOT EXISTS alone does not.
 */
const APPEND_LOCK = 0x63_77_6c_61; // "cwla"
const SCHEMA_LOCK = 0x63_77_6c_73; // "cwls"

/** Connections in the pool: one writer plus a few concurrent queries. */
const POOL_SIZE = 4;
/** How long opening a connection may take before the store reports the database unreachable. */
const CONNECT_TIMEOUT_MS = 10_000;

/**
 * Opens (creating the schema if needed) the PostgreSQL store at `url` (`postgres://user:pass@host:port/db`); a
 * store from before subtree hashes were kept gets them now. CausewayError CW_ERR_LINEAGE_STORE when the URL is
 * malformed or the database cannot be reached; neither error message nor `location` carries the password.
 */
export async function openPostgresStore(url: string, opts: OpenStoreOptions = {}): Promise<LineageStore> {
  const location = redactDatabaseUrl(url);
  if (!/^postgres(ql)?:\/\//.test(url) || !URL.canParse(url)) {
    throw new CausewayError(ErrorCode.LineageStore, `the lineage database URL ${location} is not a postgres://user:password@host:port/database URL`);
  }
  const pool = new Pool({
    connectionString: url,
    max: POOL_SIZE,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    allowExitOnIdle: true,
    types: bigintAsNumber(),
    application_name: "causeway-lineage",
  });
  // An idle connection that breaks (server restart, network) is dropped by the pool and replaced on the next
  // query, which reports any lasting failure; without a listener the 'error' event would crash the process.
  pool.on("error", () => {});
  try {
    await withClient(pool, async (client) => {
      await client.query("BEGIN");
      try {
        await client.query(`SELECT pg_advisory_xact_lock(${SCHEMA_LOCK})`);
        await client.query(SCHEMA);
        await client.query(UPGRADE);
        await upgradeNodes(client, location, opts);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK").catch(() => {});
        throw err;
      }
    });
  } catch (err) {
    await pool.end().catch(() => {});
    throw new CausewayError(ErrorCode.LineageStore, `cannot open the lineage store at ${location}: ${redactSecrets((err as Error).message, url)}`, { cause: err });
  }

  const rows = async (query: QueryConfig): Promise<StoredRecord[]> => (await pool.query<RecordRow>(query)).rows.map(recordOfRow);
  let ended = false;

  const store: LineageStore = {
    kind: "postgres",
    location,
    async state() {
      return stateOf(pool);
    },
    async known(keys: readonly RecordKey[]) {
      const found = new Set<string>();
      if (keys.length === 0) return found;
      const { rows: hits } = await pool.query<{ i: number; by_seq: boolean; by_identity: boolean }>({
        name: "lineage_known_signed",
        text: `SELECT k.i, k.by_seq, k.by_identity FROM (
                 SELECT k.i,
                   EXISTS (SELECT 1 FROM records r WHERE r.stream = k.stream AND r.stream_seq = k.seq) AS by_seq,
                   (k.source IS NOT NULL AND k.id IS NOT NULL AND k.principal IS NOT NULL AND EXISTS (
                     SELECT 1 FROM records r WHERE r.stream = k.stream AND r.principal = k.principal AND r.source = k.source AND r.id = k.id
                       AND r.verified = 1)) AS by_identity
                 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS k (stream, seq, source, id, principal, i)
               ) k WHERE k.by_seq OR k.by_identity`,
        values: [keys.map((k) => columnText(k.stream)), keys.map((k) => k.seq), keys.map((k) => columnText(k.source)), keys.map((k) => columnText(k.id)), keys.map((k) => columnText(k.principal))],
      });
      for (const hit of hits) {
        const [seqKey, identityKey] = recordKeyString(keys[hit.i - 1]!);
        if (hit.by_seq) found.add(seqKey!);
        if (hit.by_identity && identityKey) found.add(identityKey);
      }
      return found;
    },
    async append(records: readonly StoredRecord[], state: LogState) {
      await withClient(pool, async (client) => {
        await client.query("BEGIN");
        try {
          await client.query({ name: "lineage_append_lock", text: `SELECT pg_advisory_xact_lock(${APPEND_LOCK})` });
          const completed = checkContinues(records, await stateOf(client), state);
          if (records.length > 0) {
            const columns = COLUMN_TYPES.map((): unknown[] => []);
            for (const r of records) recordValues(r).forEach((value, i) => columns[i]!.push(value));
            await client.query({
              name: "lineage_insert",
              text: `INSERT INTO records (${RECORD_COLUMNS}) SELECT * FROM unnest(${COLUMN_TYPES.map((t, i) => `$${i + 1}::${t}[]`).join(", ")})`,
              values: columns,
            });
          }
          await insertNodes(client, completed);
          await client.query({
            name: "lineage_save_state",
            text: "INSERT INTO log_state (one, size, frontier) VALUES (1, $1, $2) ON CONFLICT (one) DO UPDATE SET size = excluded.size, frontier = excluded.frontier",
            values: [state.size, Buffer.concat(state.frontier)],
          });
          await client.query("COMMIT");
        } catch (err) {
          await client.query("ROLLBACK").catch(() => {});
          throw err;
        }
      });
    },
    async leafHashes(from: number, to: number) {
      const { rows: found } = await pool.query<{ leaf_hash: Buffer }>({
        name: "lineage_leaf_hashes", text: "SELECT leaf_hash FROM records WHERE idx >= $1 AND idx < $2 ORDER BY idx", values: [from, to],
      });
      return found.map((r) => r.leaf_hash);
    },
    async nodeHashes(ids: readonly NodeId[]) {
      return nodeHashes(pool, ids);
    },
    async strayNodes(size: number, limit: number) {
      // Level l holds size >> l complete subtrees (indices below it); anything else was never written by an append.
      const { rows: found } = await pool.query<{ level: number; idx: number }>({
        name: "lineage_stray_nodes",
        text: "SELECT level, idx FROM nodes WHERE level < 1 OR level > 62 OR idx < 0 OR idx >= ($1::bigint >> level) ORDER BY level, idx LIMIT $2",
        values: [size, limit],
      });
      return found.map((r) => ({ level: r.level, index: r.idx }));
    },
    async range(from: number, to: number) {
      return rows({ name: "lineage_range", text: `SELECT ${RECORD_COLUMNS} FROM records WHERE idx >= $1 AND idx < $2 ORDER BY idx`, values: [from, to] });
    },
    async byId(id: string) {
      return rows({ name: "lineage_by_id", text: `SELECT ${RECORD_COLUMNS} FROM records WHERE id = $1 ORDER BY idx`, values: [columnText(id)] });
    },
    async byCorrelation(correlationid: string) {
      return rows({ name: "lineage_by_correlation", text: `SELECT ${RECORD_COLUMNS} FROM records WHERE correlationid = $1 ORDER BY idx`, values: [columnText(correlationid)] });
    },
    async byCausation(ids: readonly string[]) {
      if (ids.length === 0) return [];
      return rows({ name: "lineage_by_causation", text: `SELECT ${RECORD_COLUMNS} FROM records WHERE causationid = ANY ($1::text[]) ORDER BY idx`, values: [ids.map(columnText)] });
    },
    async list(filter: ListFilter) {
      const where: string[] = [];
      const values: (string | number)[] = [];
      const param = (value: string | number): string => `$${values.push(value)}`;
      if (filter.principal !== undefined) where.push(`principal = ${param(columnText(filter.principal))}`);
      if (filter.type !== undefined) where.push(`type = ${param(columnText(filter.type))}`);
      if (filter.stream !== undefined) where.push(`stream = ${param(columnText(filter.stream))}`);
      if (filter.fromMs !== undefined) where.push(`time_ms >= ${param(filter.fromMs)}`);
      if (filter.toMs !== undefined) where.push(`time_ms < ${param(filter.toMs)}`);
      if (filter.failedOnly) where.push("verified = 0");
      if (filter.afterIndex !== undefined) where.push(`idx > ${param(filter.afterIndex)}`);
      const clause = where.length > 0 ? `WHERE ${where.join(" AND ")}` : "";
      return rows({ text: `SELECT ${RECORD_COLUMNS} FROM records ${clause} ORDER BY idx LIMIT ${listLimit(filter)}`, values });
    },
    async saveCheckpoint(c: StoredCheckpoint) {
      await pool.query({
        name: "lineage_save_checkpoint",
        text: `INSERT INTO checkpoints (${CHECKPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (size) DO NOTHING`,
        values: checkpointValues(c),
      });
    },
    async lastSequences() {
      const { rows: found } = await pool.query<{ stream: string; seq: string }>({
        name: "lineage_last_sequences", text: "SELECT stream, MAX(stream_seq) AS seq FROM records GROUP BY stream",
      });
      return Object.fromEntries(found.map((r) => [r.stream, Number(r.seq)]));
    },
    async checkpoints() {
      const { rows: found } = await pool.query<CheckpointRow>({ name: "lineage_checkpoints", text: `SELECT ${CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY size` });
      return found.map(checkpointOfRow);
    },
    async [Symbol.asyncDispose]() {
      if (ended) return;
      ended = true;
      await pool.end();
    },
  };
  return store;
}

/**
 * `url` without its password (in the authority or a `password` / `sslpassword` parameter), for messages and
 * `location`. A string that is not a URL is not shown at all: it may be a key=value string holding one.
 */
export function redactDatabaseUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "(a database URL that does not parse)";
  }
  if (parsed.password !== "") parsed.password = "";
  for (const name of ["password", "sslpassword"]) if (parsed.searchParams.has(name)) parsed.searchParams.set(name, "redacted");
  return parsed.toString();
}

/** `message` with every occurrence of the password `url` carries replaced (drivers may echo their options). */
function redactSecrets(message: string, url: string): string {
  let secrets: string[] = [];
  try {
    const parsed = new URL(url);
    secrets = [decodeURIComponent(parsed.password), parsed.password, parsed.searchParams.get("password") ?? "", parsed.searchParams.get("sslpassword") ?? ""];
  } catch {
    return message.split(url).join("(the database URL)");
  }
  return secrets.filter((s) => s !== "").reduce((text, secret) => text.split(secret).join("***"), message);
}

type Queryable = Pick<Pool | PoolClient, "query">;

async function stateOf(db: Queryable): Promise<LogState> {
  const { rows: found } = await db.query<{ size: number; frontier: Buffer }>({ name: "lineage_state", text: "SELECT size, frontier FROM log_state WHERE one = 1" });
  const row = found[0];
  return row ? { size: row.size, frontier: splitFrontier(row.frontier) } : { size: 0, frontier: [] };
}

// One round trip for any number of ids: level 0 from the records' leaf hashes, the others from nodes.
async function nodeHashes(db: Queryable, ids: readonly NodeId[]): Promise<(Buffer | undefined)[]> {
  if (ids.length === 0) return [];
  const { rows: found } = await db.query<{ i: number; hash: Buffer }>({
    name: "lineage_node_hashes",
    text: `SELECT k.i, CASE WHEN k.level = 0 THEN (SELECT r.leaf_hash FROM records r WHERE r.idx = k.idx)
                            ELSE (SELECT n.hash FROM nodes n WHERE n.level = k.level AND n.idx = k.idx) END AS hash
           FROM unnest($1::smallint[], $2::bigint[]) WITH ORDINALITY AS k (level, idx, i)`,
    values: [ids.map((id) => id.level), ids.map((id) => id.index)],
  });
  const hashes: (Buffer | undefined)[] = ids.map(() => undefined);
  for (const r of found) if (r.hash !== null) hashes[r.i - 1] = r.hash;
  return hashes;
}

async function insertNodes(client: PoolClient, nodes: readonly NodeHash[], keepStored = false): Promise<void> {
  if (nodes.length === 0) return;
  await client.query({
    name: keepStored ? "lineage_insert_nodes_missing" : "lineage_insert_nodes",
    text: `INSERT INTO nodes (level, idx, hash) SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])${keepStored ? " ON CONFLICT DO NOTHING" : ""}`,
    values: [nodes.map((n) => n.level), nodes.map((n) => n.index), nodes.map((n) => n.hash)],
  });
}

// A store created before subtree hashes were kept (or appended to by a version that did not keep them) lacks
// some: they are built once from the leaf hashes, in the schema transaction, holding appends off.
async function upgradeNodes(client: PoolClient, location: string, opts: OpenStoreOptions): Promise<void> {
  const lacking = async () => (await nodeHashes(client, frontierNodes((await stateOf(client)).size))).includes(undefined);
  if (!(await lacking())) return;
  await client.query(`SELECT pg_advisory_xact_lock(${APPEND_LOCK})`);
  if (!(await lacking())) return;
  const rebuild = nodeRebuild((await stateOf(client)).size, location, opts.log);
  for (let range = rebuild.next(); range; range = rebuild.next()) {
    const { rows: found } = await client.query<{ leaf_hash: Buffer }>({
      name: "lineage_leaf_hashes", text: "SELECT leaf_hash FROM records WHERE idx >= $1 AND idx < $2 ORDER BY idx", values: range,
    });
    await insertNodes(client, rebuild.add(found.map((r) => r.leaf_hash)), true);
  }
}

/** Runs `fn` on one pooled connection; a connection that failed mid-way is destroyed, not reused. */
async function withClient<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let failed: Error | undefined;
  try {
    return await fn(client);
  } catch (err) {
    // A DatabaseError (constraint, gap) leaves the connection usable; anything else may not.
    if (!(err instanceof DatabaseError) && !(err instanceof RangeError)) failed = err as Error;
    throw err;
  } finally {
    client.release(failed);
  }
}

/** int8 (BIGINT, and count(*)) as a JavaScript number: indices and sequences are safe integers by design. */
function bigintAsNumber(): TypeOverrides {
  const types = new TypeOverrides();
  types.setTypeParser(20, (text: string) => {
    const n = Number(text);
    if (!Number.isSafeInteger(n)) throw new RangeError(`BIGINT ${text} is beyond JavaScript's safe integers`);
    return n;
  });
  return types;
}
