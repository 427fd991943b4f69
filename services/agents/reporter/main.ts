// The reporter's process entry: connect as `reporter`, open the join store (KV bucket causeway_joins), serve
// report.v1, run the deadline sweep every CAUSEWAY_REPORT_SWEEP_MS once the agent consumes, and drain on
// SIGTERM / SIGINT. It exports no definition factory: its definition needs the join store on its connection, so
// `causeway replay` cannot run it in-process without writing to the mesh, and says so.
import { loadReporterConfig } from "./config.ts";
import { createReporterDefinition } from "./definition.ts";
import { openKvJoinStore, type JoinStore } from "./joins.ts";
import { startDeadlineSweep } from "./sweep.ts";
import { KvBucket, createLogger, defaultLayout, runAgentProcess } from "../../kit/index.ts";

if (import.meta.main) {
  const config = loadReporterConfig();
  const log = createLogger({ name: "reporter-joins" });
  const layout = defaultLayout();
  let store: JoinStore | undefined;
  await runAgentProcess("reporter", async (nc) => {
    store = await openKvJoinStore(nc, { bucket: layout.buckets[KvBucket.Joins].name, onProblem: (err) => log.error({ err }, "corrupt join skipped by the deadline sweep") });
    return createReporterDefinition({ store, config });
  }, {
    onStarted: (agent) => store && startDeadlineSweep(agent, store, { intervalMs: config.sweepMs, log, subjects: layout.subjects }),
  });
}
