// The gateway's configuration: env → typed → validated → frozen. A bad value fails at startup with
// CW_ERR_CONFIG naming the variable. The upstreams and the routing table are files in infra/.
import { join, resolve } from "node:path";
import { DEFAULT_BACKPRESSURE_PATH, DEFAULT_MAX_DATA_BYTES, DEFAULT_TENANTS_PATH, envInteger, infraDir } from "../kit/index.ts";

/** Where the gateway listens and how much it takes. */
export interface GatewayConfig {
  /** HTTP listen address. `CAUSEWAY_GATEWAY_HOST`, default 127.0.0.1. */
  readonly host: string;
  /** HTTP port; 0 picks a free one (published in the micro service's metadata). `CAUSEWAY_GATEWAY_PORT`, default 8480. */
  readonly port: number;
  /** Largest event data in bytes (413 / CW_ERR_PAYLOAD_TOO_LARGE above it). `CAUSEWAY_MAX_DATA_BYTES`, default 1 MiB. */
  readonly maxDataBytes: number;
  /** Largest batch request body in bytes. `CAUSEWAY_GATEWAY_MAX_BATCH_BYTES`, default 4 MiB. */
  readonly maxBatchBytes: number;
  /**
   * Gateway processes: 1 runs in this process; more forks that many workers sharing the HTTP port (node:cluster)
   * and the NATS ingress consumer, each with its share of the rate limits. `CAUSEWAY_GATEWAY_WORKERS`, default 1.
   */
  readonly workers: number;
  /**
   * Open HTTP connections per gateway process; over it a new connection is closed as it arrives, unanswered.
   * `CAUSEWAY_GATEWAY_MAX_CONNECTIONS`, default 1024.
   */
  readonly maxConnections: number;
  /** NATS ingress messages processed at once. `CAUSEWAY_GATEWAY_CONCURRENCY`, default 256. */
  readonly concurrency: number;
  /**
   * The duplicate window of the streams the gateway routes to (ms): within it JetStream absorbs a republished
   * copy, past it only the gateway's marks do. `CAUSEWAY_GATEWAY_DUPLICATE_WINDOW_MS`, default 120000 (MESH_CAP's).
   */
  readonly duplicateWindowMs: number;
  /** `CAUSEWAY_UPSTREAMS`, default infra/upstreams.json. */
  readonly upstreamsPath: string;
  /** `CAUSEWAY_ROUTES`, default infra/routes.json. */
  readonly routesPath: string;
  /** The tenants and their quotas (reloaded live). `CAUSEWAY_TENANTS`, default infra/tenants.json. */
  readonly tenantsPath: string;
  /** The backpressure thresholds (reloaded live). `CAUSEWAY_BACKPRESSURE`, default infra/backpressure.json. */
  readonly backpressurePath: string;
}

/** Reads the configuration from `env`. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const text = (name: string, fallback: string) => (env[name]?.trim() ? env[name]!.trim() : fallback);
  return Object.freeze({
    host: text("CAUSEWAY_GATEWAY_HOST", "127.0.0.1"),
    port: envInteger(env, "CAUSEWAY_GATEWAY_PORT", 0, 65535, 8480),
    maxDataBytes: envInteger(env, "CAUSEWAY_MAX_DATA_BYTES", 1, 64 * 1024 * 1024, DEFAULT_MAX_DATA_BYTES, " bytes"),
    maxBatchBytes: envInteger(env, "CAUSEWAY_GATEWAY_MAX_BATCH_BYTES", 1024, 256 * 1024 * 1024, 4 * 1024 * 1024, " bytes"),
    workers: envInteger(env, "CAUSEWAY_GATEWAY_WORKERS", 1, 64, 1),
    maxConnections: envInteger(env, "CAUSEWAY_GATEWAY_MAX_CONNECTIONS", 1, 1_000_000, 1024),
    concurrency: envInteger(env, "CAUSEWAY_GATEWAY_CONCURRENCY", 1, 4096, 256),
    duplicateWindowMs: envInteger(env, "CAUSEWAY_GATEWAY_DUPLICATE_WINDOW_MS", 1, 24 * 3600 * 1000, 120_000, " ms"),
    upstreamsPath: resolve(text("CAUSEWAY_UPSTREAMS", join(infraDir, "upstreams.json"))),
    routesPath: resolve(text("CAUSEWAY_ROUTES", join(infraDir, "routes.json"))),
    tenantsPath: resolve(text("CAUSEWAY_TENANTS", DEFAULT_TENANTS_PATH)),
    backpressurePath: resolve(text("CAUSEWAY_BACKPRESSURE", DEFAULT_BACKPRESSURE_PATH)),
  });
}
