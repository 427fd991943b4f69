// The mesh the chaos scenarios break: `causeway up --cluster 3` in a temporary data directory on free ports
// (three nodes, every stream and bucket at R3, sync_interval: always, every service a detached process given
// every node's URL in NATS_URL), plus what a scenario needs to break it and to account for it afterwards: node
// and service processes by pid file, the MESH_CAP stream leader, the node the services are connected to, the
// gateway over HTTP, the flows' report.published events and the quarantine. Disposing it runs `causeway down`
// and then SIGKILLs whatever a pid file still names (a stopped node is continued first), even after a failure.
// With `network: true` each node runs in a network namespace of its own (netns.ts) so that a scenario can cut it
// off for real: the operator's way of running nodes that `up` does not start itself — render the configs with
// the nodes' addresses (`infra render --cluster 3 --hosts …`), start each node in its namespace, then `up
// --cluster 3 --hosts …`, which keeps the running nodes and brings the mesh up on them. Where namespaces cannot
// be had, the mesh runs on loopback as usual and says why (`netUnavailable`).
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { NatsBinding, connectAs, devTokenPath } from "../../services/kit/index.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { spawnNatsServer, waitForCluster } from "../../services/cli/nats-process.ts";
import { writePidFile } from "../../services/cli/pid-files.ts";
import { clusterDir, nodeLogFile, nodePidFile, recordedNodes, recordedReplicas } from "../../services/cli/processes.ts";
import { runCli, type CliRun } from "../e2e-fixture.ts";
import { freePort, freeRun, repoRoot, startPostgres, toolPath, waitFor, type PostgresServer } from "../harness/index.ts";
import { createNodeNetwork, type NetnsUnavailable, type NodeNetwork } from "./netns.ts";

export const NODES = 3;
const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
const SOURCE = "https://demo.causeway.dev/requests";

/** One POST /events and what came of it. */
export interface PublishOutcome {
  readonly index: number;
  readonly id: string;
  /** ms since the scenario's start. */
  readonly at: number;
  /** HTTP status, or 0 when the request failed (connection refused, timeout). */
  readonly status: number;
  readonly correlationid?: string;
  readonly error?: string;
  readonly ms: number;
}

/** A report.published as stored: its flow and when the stream stored it (epoch ms). */
export interface Completion {
  readonly correlationid: string;
  readonly id: string;
  readonly storedAt: number;
}

export interface ChaosMesh extends AsyncDisposable {
  readonly dataDir: string;
  /** Client URLs of node 1..3. */
  readonly urls: readonly string[];
  readonly monitorUrls: readonly string[];
  readonly gatewayUrl: string;
  /** Lineage's store when the mesh was started with `postgres: true` (else lineage keeps SQLite). */
  readonly postgres?: PostgresServer;
  /** The environment the CLI and the services run with (NATS_URL lists every node). */
  readonly env: NodeJS.ProcessEnv;
  /** The nodes' own network, when the mesh was started with `network: true` and the machine allows namespaces. */
  readonly net?: NodeNetwork;
  /** Why the nodes run on loopback although `network: true` asked for namespaces. */
  readonly netUnavailable?: string;
  /** The pid of node i (1-based) while its pid file names a running process. */
  nodePid(i: number): number | undefined;
  /** `nats-server --signal <signal>=<pid>` for node i (the operator's way to put a node in lame duck mode). */
  signalNode(i: number, signal: "ldm"): Promise<{ code: number; stderr: string }>;
  /** Starts node i again from its config and store (as `up --cluster` does), without waiting for the cluster. */
  startNode(i: number): Promise<void>;
  /** Resolves once the nodes form one JetStream cluster again. */
  waitForCluster(timeoutMs?: number): Promise<string>;
  /** The node index leading `stream` now. */
  streamLeader(stream: string): Promise<number>;
  /** The node index most service connections are on (from each node's /connz). */
  servicesNode(): Promise<{ node: number; counts: number[] }>;
  /** Running pids of a service's replicas. */
  servicePids(name: string): number[];
  /** Services with a pid file whose process is gone. */
  deadServices(): string[];
  cli(args: string[]): Promise<CliRun>;
  post(index: number, startedAt: number): Promise<PublishOutcome>;
  /** Every report.published stored on MESH_EVT. */
  completions(): Promise<Completion[]>;
  /** Quarantine entries: reason and correlation id (when the original carried one). */
  quarantined(): Promise<{ reason: string; correlationid?: string }[]>;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * `causeway up --cluster 3` in a new data directory; throws (after cleaning up) if it does not come up. With
 * `postgres`, lineage's store is a PostgreSQL of its own (LINEAGE_DATABASE_URL), as production runs it.
 */
export async function startChaosMesh(opts: { postgres?: boolean; network?: boolean } = {}): Promise<ChaosMesh> {
  const dataDir = mkdtempSync(join(tmpdir(), "causeway-chaos-"));
  const postgres = opts.postgres ? await startPostgres({ database: "causeway_lineage", durable: true }) : undefined;
  const ports = { client: await freeRun(NODES), monitor: await freeRun(NODES), cluster: await freeRun(NODES) };
  const gatewayPort = await freePort();
  let net: NodeNetwork | undefined;
  let netUnavailable: string | undefined;
  // createNodeNetwork deletes what it made when it fails, and fails with NetnsUnavailable only.
  if (opts.network) net = await createNodeNetwork(NODES).catch((err: NetnsUnavailable) => { netUnavailable = err.message; return undefined; });
  const hostOf = (i: number) => net?.hosts[i] ?? "127.0.0.1";
  const urls = Array.from({ length: NODES }, (_, i) => `nats://${hostOf(i)}:${ports.client + i}`);
  const monitorUrls = Array.from({ length: NODES }, (_, i) => `http://${hostOf(i)}:${ports.monitor + i}`);
  // The demo upstream's rate limit out of the way: the scenarios measure faults, not the limiter.
  const upstreams = JSON.parse(readFileSync(join(repoRoot, "infra", "upstreams.json"), "utf8")) as { upstreams: Record<string, { rate: unknown }> };
  upstreams.upstreams["upstream-demo"]!.rate = { per_second: 1000, burst: 1000 };
  const upstreamsPath = join(dataDir, "upstreams.json");
  writeFileSync(upstreamsPath, JSON.stringify(upstreams));
  const env: NodeJS.ProcessEnv = {
    ...process.env, CAUSEWAY_DATA_DIR: dataDir, NATS_URL: urls.join(","), LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? "warn",
    CAUSEWAY_GATEWAY_PORT: String(gatewayPort), CAUSEWAY_UPSTREAMS: upstreamsPath, LINEAGE_HTTP_PORT: "0",
    LINEAGE_CHECKPOINT_INTERVAL_MS: "1000", CAUSEWAY_OUTBOX_DIR: join(dataDir, "outbox"),
    ...(postgres ? { LINEAGE_DATABASE_URL: postgres.url } : {}),
  };
  const cli = (args: string[]) => runCli(args, env);
  let operator: NatsConnection | undefined;
  const dispose = async () => {
    try {
      for (const n of recordedNodes(dataDir)) if (n.pidFile.state === "running") try { process.kill(n.pidFile.record.pid, "SIGCONT"); } catch { /* gone */ }
      // Healed first, so that the services drain through nodes they can reach.
      await net?.heal().catch(() => undefined);
      await operator?.close().catch(() => undefined);
      await cli(["down"]).catch(() => undefined);
      for (const r of [...recordedReplicas(dataDir), ...recordedNodes(dataDir)]) {
        if (r.pidFile.state === "running") try { process.kill(r.pidFile.record.pid, "SIGKILL"); } catch { /* gone */ }
      }
      await postgres?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    } finally {
      await net?.[Symbol.asyncDispose]();
    }
  };
  const startNode = async (i: number) => {
    const name = `causeway-${i}`;
    const p = await spawnNatsServer({
      configPath: join(clusterDir(dataDir), `${name}.conf`), portsDir: join(clusterDir(dataDir), name), detached: true,
      logFile: nodeLogFile(dataDir, name), waitHealthy: false, ...(net ? { runUnder: net.runUnder(i) } : {}),
    });
    writePidFile(nodePidFile(dataDir, name), p.pid);
  };
  try {
    const portArgs = ["--client-port", String(ports.client), "--monitor-port", String(ports.monitor), "--cluster-port", String(ports.cluster), ...(net ? ["--hosts", net.hosts.join(",")] : [])];
    if (net) {
      // `up` cannot start a node inside a namespace: the nodes it finds running on their addresses it keeps.
      for (const args of [["keys", "ensure"], ["infra", "render", "--cluster", String(NODES), ...portArgs]]) {
        const res = await cli(args);
        if (res.code !== 0) throw new Error(`causeway ${args.join(" ")} failed (${res.code}):\n${res.stdout}\n${res.stderr}`);
      }
      for (let i = 1; i <= NODES; i++) await startNode(i);
    }
    const up = await cli(["up", "--cluster", String(NODES), ...portArgs]);
    if (up.code !== 0) throw new Error(`causeway up --cluster 3 failed (${up.code}):\n${up.stdout}\n${up.stderr}`);
    const gatewayUrl = `http://127.0.0.1:${gatewayPort}`;
    await waitFor(async () => (await fetch(`${gatewayUrl}/health`)).ok, { what: "the gateway's /health", timeoutMs: 30_000 });
    operator = await connectAs("operator", { servers: [...urls], dataDir });
    const op = operator;
    const token = readFileSync(devTokenPath(dataDir, "upstream-demo"), "utf8").trim();
    const nodePid = (i: number) => {
      const n = recordedNodes(dataDir).find((r) => r.index === i);
      return n?.pidFile.state === "running" ? n.pidFile.record.pid : undefined;
    };
    return {
      dataDir, urls, monitorUrls, gatewayUrl, env, cli, nodePid, startNode,
      signalNode: (i, signal) => new Promise((done) => {
        const pid = nodePid(i);
        if (pid === undefined) return done({ code: 1, stderr: `causeway-${i} is not running` });
        execFile(toolPath("nats-server"), ["--signal", `${signal}=${pid}`], (err, _stdout, stderr) => {
          done({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stderr: stderr || (err?.message ?? "") });
        });
      }),
      ...(postgres ? { postgres } : {}), ...(net ? { net } : {}), ...(netUnavailable === undefined ? {} : { netUnavailable }),
      async waitForCluster(timeoutMs = 60_000) {
        return (await waitForCluster(monitorUrls, { timeoutMs })).leader;
      },
      async streamLeader(stream) {
        const jsm = await jetstreamManager(op);
        const leader = await waitFor(async () => (await jsm.streams.info(stream)).cluster?.leader, { what: `${stream}'s leader`, timeoutMs: 20_000 });
        return Number(leader.slice("causeway-".length));
      },
      async servicesNode() {
        const names = new Set(recordedReplicas(dataDir).map((r) => r.name));
        const counts = await Promise.all(monitorUrls.map(async (m) => {
          const connz = await (await fetch(`${m}/connz?limit=4096`)).json() as { connections?: { name?: string }[] };
          return (connz.connections ?? []).filter((c) => c.name !== undefined && names.has(c.name)).length;
        }));
        return { node: counts.indexOf(Math.max(...counts)) + 1, counts };
      },
      servicePids: (name) => recordedReplicas(dataDir, name).flatMap((r) => (r.pidFile.state === "running" && alive(r.pidFile.record.pid) ? [r.pidFile.record.pid] : [])),
      deadServices: () => recordedReplicas(dataDir).filter((r) => r.pidFile.state !== "running").map((r) => `${r.name}.${r.replica}`),
      async post(index, startedAt) {
        const id = `chaos-${index}-${Date.now().toString(36)}`;
        const sent = Date.now();
        const at = sent - startedAt;
        try {
          const res = await fetch(`${gatewayUrl}/events`, {
            method: "POST", signal: AbortSignal.timeout(15_000),
            headers: {
              authorization: `Bearer ${token}`, "content-type": "application/json",
              "ce-specversion": "1.0", "ce-id": id, "ce-source": SOURCE, "ce-type": "report.requested", "ce-dataschema": REQUEST_SCHEMA,
            },
            body: JSON.stringify({ topic: `Chaos flow ${index}: grid-scale battery storage`, requester: "analyst@example.com", questions: ["Which chemistries lead?", "What does a MWh cost?"] }),
          });
          const text = await res.text();
          let correlationid: string | undefined;
          try { correlationid = (JSON.parse(text) as { correlationid?: string }).correlationid; } catch { /* not JSON */ }
          return { index, id, at, status: res.status, correlationid, ms: Date.now() - sent, ...(res.status === 202 ? {} : { error: text.slice(0, 200) }) };
        } catch (err) {
          return { index, id, at, status: 0, error: (err as Error).message, ms: Date.now() - sent };
        }
      },
      async completions() {
        const msgs = await readMessages(op, "MESH_EVT", "mesh.evt.report.published.v1");
        return msgs.map((m) => {
          const e = NatsBinding.toEvent(m);
          return { correlationid: String(e.extensions.correlationid ?? ""), id: e.id, storedAt: m.info.timestampNanos / 1e6 };
        });
      },
      async quarantined() {
        return (await readMessages(op, "MESH_QUARANTINE")).map((m) => ({
          reason: m.headers?.get("Causeway-Quarantine-Reason") ?? "?", correlationid: m.headers?.get("ce-correlationid") || undefined,
        }));
      },
      [Symbol.asyncDispose]: dispose,
    };
  } catch (err) {
    await dispose();
    throw err;
  }
}
