// The lineage process: connect as `lineage`, open the store (SQLite under the data directory, or PostgreSQL
// when LINEAGE_DATABASE_URL is set) and the trust store, run the service, drain on SIGTERM / SIGINT. One
// lineage process writes a store at a time.
import type { NatsConnection } from "@nats-io/transport-node";
import { connectAs, createLogger, openTrustStore, readSeed, signingKeyFromNkeySeed, untilStop } from "../kit/index.ts";
import { lineageConfig } from "./config.ts";
import { openLineageStore } from "./open-store.ts";
import { startLineageService } from "./service.ts";
import type { LineageStore } from "./store.ts";

const PRINCIPAL = "lineage";

async function main(): Promise<void> {
  const log = createLogger({ name: PRINCIPAL });
  let nc: NatsConnection | undefined;
  let store: LineageStore | undefined;
  try {
    const config = lineageConfig();
    store = await openLineageStore(config.databaseUrl !== undefined ? { databaseUrl: config.databaseUrl } : {});
    nc = await connectAs(PRINCIPAL);
    const trust = await openTrustStore(nc, { onProblem: (err) => log.warn({ err }, "trust store entry ignored") });
    const service = await startLineageService({ nc, store, trust, key: signingKeyFromNkeySeed(readSeed(PRINCIPAL)), config, log });
    if (service.http) {
      const token = config.httpTokenDigests.length === 0 ? ` (bearer token in ${config.httpTokenFile})` : "";
      console.log(`lineage: HTTP API on ${service.http.url}${token}`);
    }
    const lost = await untilStop(log, nc, [trust.lost, service.lost]);
    await service.stop();
    await trust.close();
    await nc.drain();
    await store[Symbol.asyncDispose]();
    if (lost) console.error(`lineage: ${lost.message}`);
    process.exitCode = lost ? 1 : 0;
  } catch (err) {
    log.error({ err }, "lineage failed");
    console.error(`lineage: ${err instanceof Error ? err.message : String(err)}`);
    await nc?.close().catch(() => undefined);
    await Promise.resolve(store?.[Symbol.asyncDispose]()).catch(() => undefined);
    process.exitCode = 1;
  }
}

await main();
