// Both lineage stores behind one fixture, so a suite runs unchanged on each:
//
//   for (const kind of lineageStoreKinds) describe(kind.name, () => { … await using s = await kind.open(); … });
//
// `sql` reaches the same database behind the store's back (tamper tests: UPDATE / DELETE / INSERT on records
// and checkpoints), through its own connection; write `?` placeholders, they become $1, $2, … on PostgreSQL.
// `reopen` closes the store and opens it again on the same database, as a restart does; `another` opens a
// second store on the same database beside it, as a second process would.
//
// PostgreSQL: one throwaway server per test process (test/harness/postgres.ts), started on the first open()
// and stopped after the file's last test; each open() gets a fresh database, dropped by dispose().
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { after } from "node:test";
import { Client } from "pg";
import { openPostgresStore } from "../services/lineage/store-postgres.ts";
import { openSqliteStore } from "../services/lineage/store-sqlite.ts";
import type { LineageStore, OpenStoreOptions } from "../services/lineage/store.ts";
import { startPostgres, type PostgresServer } from "./harness/index.ts";

/** A store opened on a fresh database, with a side door to that database. */
export interface OpenedLineageStore extends AsyncDisposable {
  /** The store currently open (the latest after {@link reopen}). */
  readonly store: LineageStore;
  /** Closes the store and opens a new one on the same database; returns it (also `store` from now on). */
  reopen(opts?: OpenStoreOptions): Promise<LineageStore>;
  /** Opens a second store on the same database, closed with this one. */
  another(): Promise<LineageStore>;
  /** Runs one raw SQL statement on the same database through a separate connection. */
  sql(text: string, params?: unknown[]): Promise<void>;
  /** Closes the store and the side connection, and removes the database. */
  dispose(): Promise<void>;
}

/** One kind of lineage store. */
export interface LineageStoreKind {
  readonly name: "sqlite" | "postgres";
  open(): Promise<OpenedLineageStore>;
}

const sqlite: LineageStoreKind = {
  name: "sqlite",
  async open() {
    const dir = mkdtempSync(join(tmpdir(), "causeway-lineage-"));
    const path = join(dir, "lineage.db");
    let store = openSqliteStore(path);
    let side: DatabaseSync | undefined;
    const others: LineageStore[] = [];
    const dispose = async () => {
      await store[Symbol.asyncDispose]();
      for (const other of others) await other[Symbol.asyncDispose]();
      if (side?.isOpen) side.close();
      rmSync(dir, { recursive: true, force: true });
    };
    return {
      get store() { return store; },
      async reopen(opts) {
        await store[Symbol.asyncDispose]();
        store = openSqliteStore(path, opts);
        return store;
      },
      async another() {
        const other = openSqliteStore(path);
        others.push(other);
        return other;
      },
      async sql(text, params = []) {
        side ??= new DatabaseSync(path);
        side.exec("PRAGMA busy_timeout = 5000");
        side.prepare(text).run(...(params as SQLInputValue[]));
      },
      dispose,
      [Symbol.asyncDispose]: dispose,
    };
  },
};

let server: Promise<PostgresServer> | undefined;
after(async () => {
  const started = server;
  server = undefined;
  if (started) await (await started).stop();
});

const postgres: LineageStoreKind = {
  name: "postgres",
  async open() {
    server ??= startPostgres();
    const pg = await server;
    const url = await pg.createDatabase();
    const database = new URL(url).pathname.slice(1);
    let store = await openPostgresStore(url);
    let side: Client | undefined;
    const others: LineageStore[] = [];
    const dispose = async () => {
      await store[Symbol.asyncDispose]();
      for (const other of others) await other[Symbol.asyncDispose]();
      await side?.end();
      side = undefined;
      const admin = new Client({ connectionString: new URL("/postgres", url).toString() });
      await admin.connect();
      try {
        await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
      } finally {
        await admin.end();
      }
    };
    return {
      get store() { return store; },
      async reopen(opts) {
        await store[Symbol.asyncDispose]();
        store = await openPostgresStore(url, opts);
        return store;
      },
      async another() {
        const other = await openPostgresStore(url);
        others.push(other);
        return other;
      },
      async sql(text, params = []) {
        if (!side) {
          const client = new Client({ connectionString: url });
          await client.connect();
          side = client;
        }
        await side.query(numberedPlaceholders(text), params);
      },
      dispose,
      [Symbol.asyncDispose]: dispose,
    };
  },
};

/** Both stores: SQLite (the default) and PostgreSQL. */
export const lineageStoreKinds: readonly LineageStoreKind[] = [sqlite, postgres];

/** `?` placeholders (outside quoted literals and identifiers) as PostgreSQL's $1, $2, …. */
export function numberedPlaceholders(text: string): string {
  let n = 0;
  let quote: string | undefined;
  let out = "";
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = undefined;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
    } else if (ch === "?") {
      out += `$${++n}`;
      continue;
    }
    out += ch;
  }
  return out;
}
