// The lineage service's configuration, from the environment (see docs/auditors.md). Frozen once built.
import { join } from "node:path";
import { ConfigError, ErrorCode, dataDir, envInteger, isTokenDigest } from "../kit/index.ts";

export interface LineageConfig {
  /** PostgreSQL URL; unset → SQLite under the data directory. */
  readonly databaseUrl?: string;
  /** Publish a checkpoint after this many new records… */
  readonly checkpointEvery: number;
  /** …or after this long, when the log grew at all. */
  readonly checkpointIntervalMs: number;
  /** The log's name in its checkpoints (a C2SP key name: no spaces, no `+`). */
  readonly origin: string;
  /** HTTP API: host and port; port 0 picks a free one, -1 turns HTTP off. */
  readonly httpHost: string;
  readonly httpPort: number;
  /**
   * Who may use the HTTP API: the SHA-256 (hex) of each accepted bearer token (LINEAGE_HTTP_TOKEN_SHA256,
   * comma-separated). Empty: one development token, created on first start in `httpTokenFile`.
   */
  readonly httpTokenDigests: readonly string[];
  /** The development token's file (LINEAGE_HTTP_TOKEN_FILE, default `<data>/tokens/lineage-http.token`). */
  readonly httpTokenFile: string;
  /** Most messages per store transaction. */
  readonly batchSize: number;
}

export function lineageConfig(env: NodeJS.ProcessEnv = process.env): LineageConfig {
  const origin = env.LINEAGE_ORIGIN?.trim() || "causeway.local/lineage";
  if (/[\s+]/.test(origin)) throw new ConfigError(ErrorCode.Config, `LINEAGE_ORIGIN=${JSON.stringify(origin)} is invalid: a key name has no spaces and no "+"`);
  const databaseUrl = env.LINEAGE_DATABASE_URL?.trim();
  const httpTokenDigests = (env.LINEAGE_HTTP_TOKEN_SHA256 ?? "").split(",").map((d) => d.trim().toLowerCase()).filter((d) => d !== "");
  const bad = httpTokenDigests.find((d) => !isTokenDigest(d));
  if (bad !== undefined) {
    throw new ConfigError(ErrorCode.Config, `LINEAGE_HTTP_TOKEN_SHA256: "${bad}" is not a SHA-256 digest (64 hex digits; e.g. printf %s "$TOKEN" | sha256sum)`);
  }
  return Object.freeze({
    ...(databaseUrl && { databaseUrl }),
    checkpointEvery: envInteger(env, "LINEAGE_CHECKPOINT_EVERY", 1, 10_000_000, 1_000, " records"),
    checkpointIntervalMs: envInteger(env, "LINEAGE_CHECKPOINT_INTERVAL_MS", 100, 86_400_000, 10_000, " ms"),
    origin,
    httpHost: env.LINEAGE_HTTP_HOST?.trim() || "127.0.0.1",
    httpPort: envInteger(env, "LINEAGE_HTTP_PORT", -1, 65_535, 7480),
    httpTokenDigests: Object.freeze(httpTokenDigests),
    httpTokenFile: env.LINEAGE_HTTP_TOKEN_FILE?.trim() || join(dataDir(), "tokens", "lineage-http.token"),
    batchSize: envInteger(env, "LINEAGE_BATCH", 1, 10_000, 512, " messages"),
  });
}
