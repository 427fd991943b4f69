// `causeway up` / `causeway down`: the mesh in the background on the standard ports (4222 client, 8222
// monitoring) with the rendered dev config — streams, buckets, trust store, and every service of the layout
// (principals with an `entry` in infra/principals.json) as detached processes, started and tracked as
// `causeway start` does; `down` drains every process with a pid file (replicas added with `causeway start
// --replicas` included), then stops the server. State lives in <data>/nats/ (config, store, logs, pid files).
// `causeway up --cluster N` runs N local nodes of a JetStream cluster instead (configs from `infra render
// --cluster`, state in <data>/nats/cluster/), every stream and KV bucket at R3, the services given every node's URL.
// Each service replica runs under a supervisor that restarts it when it exits unexpectedly (supervisor.ts). `up`
// returns once the mesh answers; if its output closes before that (`make up | head`), it stops what this run
// started (output.ts) rather than leave it half up.
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { dirname, join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { connectAs, dataDir, inboxPrefix, loadLayout, seedPath, type MeshLayout } from "../../kit/index.ts";
import { applyMeshInfra, ensureIdentities, seedTrust } from "../bootstrap.ts";
import { spawnNatsServer, waitForCluster, type NatsProcess } from "../nats-process.ts";
import { readPidFile, terminate, writePidFile, type PidRecord } from "../pid-files.ts";
import { onOutputClosed } from "../output.ts";
import { clusterDir, nodeLogFile, nodePidFile, recordedNodes, runDir, serverLogFile, serverPidFile, type ServiceProcess } from "../processes.ts";
import { step } from "../progress.ts";
import { shown } from "../table.ts";
import { syncServerAccounts } from "./principal.ts";
import { parseCommand, usageError } from "../usage.ts";
import { parseBasePorts, parseClusterSize, parseHosts, renderClusterInfra, renderInfra, type RenderClusterOptions, type RenderedNode } from "./infra.ts";
import { startAll, stopAll } from "./services.ts";
import { ensureDevTokens } from "./tokens.ts";

const CLIENT_PORT = 4222;

/** Replicas of every stream and bucket on a cluster: the mesh survives the loss of any one node. */
export const CLUSTER_REPLICAS = 3;

const USAGE = `usage: causeway up [--cluster N [--client-port P] [--monitor-port P] [--cluster-port P] [--hosts H1,…,HN]]
       causeway down

  up             one nats-server on 127.0.0.1:${CLIENT_PORT} (monitoring 8222) with the rendered dev config, streams and
                 buckets as their files say (R1), then every service; with the server already running, the services
                 that are not
  --cluster N    N local nodes of one JetStream cluster instead (3 to 7; the configs of \`causeway infra render
                 --cluster N\`), every stream and KV bucket at R${CLUSTER_REPLICAS}, every service given the URLs of all nodes;
                 nodes already running are kept, the others started
  --client-port P, --monitor-port P, --cluster-port P
                 the first node's ports with --cluster (default 4222, 8222, 6222; node i has each + i - 1)
  --hosts H1,…,HN
                 with --cluster, the address each node listens on, one per node (default 127.0.0.1 for all); a
                 node already running on its address is kept (one started elsewhere, e.g. in a network namespace)
  down           drain every service with a pid file, then stop the server or every node`;

/** What this run of `up` started: stopped again if its output closes before it is done (`make up | head`). */
const thisRun = { services: [] as ServiceProcess[], servers: [] as { readonly process: NatsProcess; readonly pidFile: string }[] };

/** Starts the background mesh; with its server already running, starts the services that are not. */
export async function run(args: string[]): Promise<number> {
  const unregister = onOutputClosed(async () => {
    await Promise.all(thisRun.services.map((p) => p.stop()));
    await Promise.all(thisRun.servers.map(async ({ process, pidFile }) => {
      await process.stop();
      rmSync(pidFile, { force: true });
    }));
  });
  try {
    return await runUp(args);
  } finally {
    unregister();
  }
}

async function runUp(args: string[]): Promise<number> {
  const parsed = parseCommand("up", USAGE, args, {
    cluster: { type: "string" }, "client-port": { type: "string" }, "monitor-port": { type: "string" }, "cluster-port": { type: "string" },
    hosts: { type: "string" },
  });
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  if (positionals.length > 0) return usageError("up", USAGE, `unexpected argument "${positionals[0]}"`);
  if (values.cluster !== undefined) {
    const size = parseClusterSize(values.cluster);
    if (typeof size === "string") return usageError("up", USAGE, size);
    const ports = parseBasePorts(values);
    if (typeof ports === "string") return usageError("up", USAGE, ports);
    const hosts = parseHosts(values.hosts, size);
    if (typeof hosts === "string") return usageError("up", USAGE, hosts);
    return upCluster(size, ports, hosts);
  }
  if (values["client-port"] !== undefined || values["monitor-port"] !== undefined || values["cluster-port"] !== undefined || values.hosts !== undefined) {
    return usageError("up", USAGE, "--client-port, --monitor-port, --cluster-port and --hosts go with --cluster");
  }
  return upSingle();
}

async function upSingle(): Promise<number> {
  const data = dataDir();
  const layout = loadLayout();
  if (runningNodes(data).length > 0) {
    console.error(`✗ a cluster started by \`causeway up --cluster\` is running (${shown(clusterDir(data))}): \`causeway down\` stops it`);
    return 1;
  }
  const running = runningServer(data);
  if (running !== undefined) {
    const url = `nats://127.0.0.1:${CLIENT_PORT}`;
    console.log(`= nats-server already running (pid ${running.pid}) on ${url}`);
    // What infra/principals.json gained since it started (a principal `causeway new agent` wrote) joins now.
    const created = ensureIdentities(layout.principals, data);
    if (created > 0) console.log(`✓ identities — ${created} new NKey seeds in ${shown(join(data, "keys"))}`);
    const nc = await connectAs("operator", { servers: url, dataDir: data });
    try {
      await syncServerAccounts(nc, { server: url, data, layout });
      await step("trust store", () => seedTrust(nc, layout.principals, data), (summary) => summary);
      return (await startAll(nc, url, data, layout, thisRun.services)) ? 0 : 1;
    } finally {
      await nc.close();
    }
  }
  if (await portInUse(CLIENT_PORT)) {
    console.error(`✗ port ${CLIENT_PORT} is in use by another process: stop it, or use \`make demo\`, which picks a free port`);
    return 1;
  }
  const principals = layout.principals;
  await step("identities", () => ensureIdentities(principals, data), () => `${Object.keys(principals.principals).length} principals`);
  await step("upstream tokens", () => ensureDevTokens(data), (created) => `${created.length} new in ${join(data, "tokens")}`);
  const config = await step("nats-server config", () => renderInfra({ dataDir: data, full: true, principals, prefix: layout.prefix }), (r) => r.path);
  mkdirSync(runDir(data), { recursive: true });
  const server = await step("nats-server", () => spawnNatsServer({
    configPath: config.path, portsDir: runDir(data), detached: true, logFile: serverLogFile(data),
  }), (s) => `${s.url}, pid ${s.pid}`);
  thisRun.servers.push({ process: server, pidFile: serverPidFile(data) });
  writePidFile(serverPidFile(data), server.pid);
  return bootstrap(layout, data, [server.url], {});
}

/**
 * `up --cluster N`: renders the node configs, starts the nodes that are not running, waits until they form one
 * JetStream cluster, then brings the mesh up on it at R3.
 */
async function upCluster(size: number, ports: RenderClusterOptions["ports"], hosts: RenderClusterOptions["hosts"]): Promise<number> {
  const data = dataDir();
  const layout = loadLayout();
  if (runningServer(data) !== undefined) {
    console.error(`✗ the single nats-server of \`causeway up\` is running (${shown(serverPidFile(data))}): \`causeway down\` stops it first`);
    return 1;
  }
  const principals = layout.principals;
  await step("identities", () => ensureIdentities(principals, data), () => `${Object.keys(principals.principals).length} principals`);
  await step("upstream tokens", () => ensureDevTokens(data), (created) => `${created.length} new in ${join(data, "tokens")}`);
  const rendered = await step("nats-server configs", () => renderClusterInfra({ size, ports, ...(hosts ? { hosts } : {}), dataDir: data, principals, prefix: layout.prefix }),
    (r) => `${r.nodes.length} nodes: ${r.nodes.map((n) => shown(n.path)).join(", ")}; routes authenticated (${shown(r.passwordFile)})`);
  const alive = new Map(runningNodes(data).map((n) => [n.name, n.record]));
  const missing = rendered.nodes.filter((n) => !alive.has(n.name));
  for (const node of missing) {
    for (const [what, port] of [["client", node.ports.client], ["monitoring", node.ports.monitor], ["route", node.routePort]] as const) {
      if (await portInUse(port, node.host)) {
        console.error(`✗ ${node.name}: ${what} port ${port} is in use by another process: stop it, or pick other ports (--client-port, --monitor-port, --cluster-port)`);
        return 1;
      }
    }
  }
  const started: NatsProcess[] = [];
  await step("nats-server nodes", async () => {
    for (const node of missing) {
      // Not waiting for health: a node is healthy only once a quorum of its peers runs.
      const p = await spawnNatsServer({ configPath: node.path, portsDir: dirname(node.storeDir), detached: true, logFile: nodeLogFile(data, node.name), waitHealthy: false });
      thisRun.servers.push({ process: p, pidFile: nodePidFile(data, node.name) });
      writePidFile(nodePidFile(data, node.name), p.pid);
      started.push(p);
    }
  }, () => rendered.nodes.map((n) => {
    const p = started[missing.indexOf(n)];
    return p === undefined ? `${n.name} (pid ${alive.get(n.name)!.pid}, already running)` : `${n.name} on ${n.clientUrl} (pid ${p.pid})`;
  }).join(", "));
  await step("cluster", () => waitForCluster(rendered.nodes.map((n) => n.monitorUrl), { alive: () => exitedNode(rendered.nodes, data) }),
    (c) => `${c.size} nodes in JetStream's meta group, leader ${c.leader}`);
  return bootstrap(layout, data, rendered.nodes.map((n) => n.clientUrl), { replicas: CLUSTER_REPLICAS });
}

/** Streams, buckets and trust store as the operator, then every service; the closing hint. */
async function bootstrap(layout: MeshLayout, data: string, urls: readonly string[], opts: { replicas?: typeof CLUSTER_REPLICAS }): Promise<number> {
  const nc = await connectAs("operator", { servers: [...urls], dataDir: data });
  let ok: boolean;
  try {
    await step("streams and buckets", () => applyMeshInfra(nc, layout, opts), (summary) => summary);
    await step("trust store", () => seedTrust(nc, layout.principals, data, opts), (summary) => summary);
    if (opts.replicas !== undefined) {
      // Buckets that existed before are left as they were: say so rather than claim R3.
      const below = await belowReplicas(nc, opts.replicas);
      if (below.length === 0) console.log(`✓ replicas — every stream and KV bucket at R${opts.replicas}`);
      else console.log(`! replicas — below R${opts.replicas}: ${below.join(", ")} (existing before; raise with \`nats stream edit <name> --replicas ${opts.replicas}\`)`);
    }
    // The services take every node's URL, comma-separated, as NATS_URL.
    ok = await startAll(nc, urls.join(","), data, layout, thisRun.services);
  } finally {
    await nc.close();
  }
  const server = urls.join(",");
  const cli = `nats --server ${server} --nkey ${seedPath("operator", data)} --inbox-prefix ${inboxPrefix("operator")}`;
  const env = urls.length > 1 ? `\nThe services were given NATS_URL=${server}; for the CLI: export NATS_URL=${server}` : "";
  console.log(`\nThe mesh is up${urls.length > 1 ? ` on a ${urls.length}-node cluster` : ""}${ok ? "" : ", but not every service started (above)"}. \`causeway ps\` lists its processes; as the operator:\n  ${cli} stream ls\n  ${cli} micro ls${env}\n\`make down\` stops it.`);
  return ok ? 0 : 1;
}

/** The streams (KV buckets included) of the account with fewer than `replicas` replicas, as `NAME (Rn)`. */
async function belowReplicas(nc: NatsConnection, replicas: number): Promise<string[]> {
  const below: string[] = [];
  for await (const info of (await jetstreamManager(nc)).streams.list()) {
    if ((info.config.num_replicas ?? 1) < replicas) below.push(`${info.config.name} (R${info.config.num_replicas ?? 1})`);
  }
  return below;
}

/** The first started node whose process is gone, as a problem for {@link waitForCluster}. */
function exitedNode(nodes: readonly RenderedNode[], data: string): string | undefined {
  for (const node of nodes) {
    const f = existsSync(nodePidFile(data, node.name)) ? readPidFile(nodePidFile(data, node.name)) : undefined;
    if (f?.state === "stale") return `${node.name} exited: see ${shown(nodeLogFile(data, node.name))}; \`causeway down\` stops the other nodes`;
  }
  return undefined;
}

/** Drains every service process with a pid file, then stops the server started by `up`, or every cluster node. */
export async function down(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway down (CW_ERR_USAGE)");
    return 2;
  }
  const data = dataDir();
  // Services first, so they drain while the server is still there to take their acks; the server last.
  const ok = await stopAll(data);
  const server = runningServer(data);
  const nodes = runningNodes(data);
  if (server === undefined && nodes.length === 0) {
    console.log("no nats-server running");
    return ok ? 0 : 1;
  }
  if (server !== undefined) {
    const t = await terminate(serverPidFile(data), server);
    console.log(`✓ stopped nats-server (pid ${server.pid})${t.killed ? " — killed after 10 s" : ""}; the JetStream store stays in ${shown(join(runDir(data), "store"))}`);
  }
  // Every node at once: stopped one by one, the last ones would keep losing their meta leader.
  await Promise.all(nodes.map(async (n) => {
    const t = await terminate(nodePidFile(data, n.name), n.record);
    console.log(`✓ stopped nats-server ${n.name} (pid ${n.record.pid})${t.killed ? " — killed after 10 s" : ""}; its JetStream store stays in ${shown(join(clusterDir(data), n.name, "store"))}`);
  }));
  return ok ? 0 : 1;
}

/** The cluster nodes `up --cluster` started that still run; stale pid files are reported and removed. */
function runningNodes(data: string): { name: string; record: PidRecord }[] {
  return recordedNodes(data).flatMap((n) => {
    if (n.pidFile.state !== "stale") return [{ name: n.name, record: n.pidFile.record }];
    console.log(`! nats-server ${n.name}: stale pid file — ${n.pidFile.why}; removed`);
    rmSync(n.pidFile.path, { force: true });
    return [];
  });
}

/** The nats-server `up` started, while its pid file still names it; a stale pid file is reported and removed. */
function runningServer(data: string): PidRecord | undefined {
  if (!existsSync(serverPidFile(data))) return undefined;
  const f = readPidFile(serverPidFile(data));
  if (f.state !== "stale") return f.record;
  console.log(`! nats-server: stale pid file — ${f.why}; removed`);
  rmSync(f.path, { force: true });
  return undefined;
}

function portInUse(port: number, host = "127.0.0.1"): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ port, host });
    socket.once("connect", () => { socket.destroy(); resolve(true); });
    socket.once("error", () => resolve(false));
  });
}
