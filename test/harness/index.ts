// The test harness: real nats-server processes and the real nats CLI, nothing mocked.
export { repoRoot, toolPath, toolsBin } from "./binaries.ts";
export { startServer } from "./server.ts";
export { freePort, freeRun, portFree, replicatedInfo, startCluster } from "./cluster.ts";
export { runNats, runNatsJson } from "./nats-cli.ts";
export { waitFor } from "./wait.ts";
export { startPostgres, postgresBin } from "./postgres.ts";
export { startTcpProxy } from "./proxy.ts";
export type { NatsServer, ServerOptions } from "./server.ts";
export type { NatsCluster, ClusterOptions } from "./cluster.ts";
export type { CliConnection, CliResult } from "./nats-cli.ts";
export type { WaitOptions } from "./wait.ts";
export type { PostgresServer, PostgresOptions } from "./postgres.ts";
export type { TcpProxy } from "./proxy.ts";
