// The lineage process: the kit's service shell (connect as `lineage`, trust store, drain on SIGTERM / SIGINT,
// exit 1 when something it depends on is gone) around lineage's own start: open the store (SQLite under the
// data directory, or PostgreSQL when LINEAGE_DATABASE_URL is set) and run the service. One lineage process
// writes a store at a time.
import { runServiceProcess } from "../kit/index.ts";
import { lineageConfig } from "./config.ts";
import { openLineageStore } from "./open-store.ts";
import { startLineageService } from "./service.ts";

await runServiceProcess("lineage", async ({ nc, trust, key, layout, log, defer }) => {
  const config = lineageConfig();
  const store = await openLineageStore({ ...(config.databaseUrl !== undefined && { databaseUrl: config.databaseUrl }), log });
  defer(() => store[Symbol.asyncDispose]());
  const service = await startLineageService({ nc, store, trust, key, config, log, layout });
  defer(() => service.stop());
  if (service.http) {
    const token = config.httpTokenDigests.length === 0 ? ` (bearer token in ${config.httpTokenFile})` : "";
    console.log(`lineage: HTTP API on ${service.http.url}${token}`);
  }
  return { lost: [service.lost] };
}, {
  // A bad LINEAGE_* setting is refused at once, before lineage waits for the mesh.
  check: () => void lineageConfig(),
});
