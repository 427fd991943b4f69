// Which lineage store to open: PostgreSQL when a database URL is configured (LINEAGE_DATABASE_URL), else the
// default SQLite file under the data directory. Both fail the same way, CW_ERR_LINEAGE_STORE, so the service
// and the CLI report a bad URL, an unreachable server or an unwritable data directory alike.
import { join } from "node:path";
import { openPostgresStore } from "./store-postgres.ts";
import { openSqliteStore } from "./store-sqlite.ts";
import type { LineageStore, StoreLog } from "./store.ts";
import { CausewayError, ErrorCode, dataDir, isCausewayError } from "../kit/index.ts";

/** Options for {@link openLineageStore}. */
export interface OpenLineageStoreOptions {
  /** PostgreSQL URL. Default: env LINEAGE_DATABASE_URL; unset or empty means SQLite. */
  readonly databaseUrl?: string;
  /** Data directory of the SQLite store (`<dataDir>/lineage/lineage.db`). Default: the kit's `dataDir()`. */
  readonly dataDir?: string;
  /** The SQLite file itself, overriding `dataDir`. Default: env LINEAGE_SQLITE_PATH. */
  readonly sqlitePath?: string;
  /** Progress of a schema upgrade on open (building the stored subtree hashes of a store from before them). */
  readonly log?: StoreLog;
}

/** The SQLite store's file under a data directory. */
export function sqliteStorePath(dir: string = dataDir()): string {
  return join(dir, "lineage", "lineage.db");
}

/** Opens the configured lineage store; CausewayError CW_ERR_LINEAGE_STORE when it cannot. */
export async function openLineageStore(opts: OpenLineageStoreOptions = {}): Promise<LineageStore> {
  const url = opts.databaseUrl ?? process.env.LINEAGE_DATABASE_URL;
  const options = opts.log ? { log: opts.log } : {};
  if (url !== undefined && url !== "") return openPostgresStore(url, options);
  const path = opts.sqlitePath || process.env.LINEAGE_SQLITE_PATH || sqliteStorePath(opts.dataDir ?? dataDir());
  try {
    return openSqliteStore(path, options);
  } catch (err) {
    if (isCausewayError(err)) throw err;
    throw new CausewayError(ErrorCode.LineageStore, `cannot open the lineage store at ${path}: ${(err as Error).message}`, { cause: err });
  }
}
