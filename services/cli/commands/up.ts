// `causeway up` / `causeway down`: the mesh in the background on the standard ports (4222 client, 8222
// monitoring) with the rendered dev config — streams, buckets, trust store, and every service of the layout
// (principals with an `entry` in infra/principals.json) as detached processes, each under a supervisor that
// restarts it when it exits unexpectedly, started and tracked as `causeway start` does; `down` drains every
// process with a pid file (replicas added with `causeway start --replicas` included), then stops the server.
// State lives in <data>/nats/ (config, store, logs, pid files). `up` returns once the mesh answers; if its output
// closes before that (`make up | head`), it stops what this run started (output.ts) rather than leave it half up.
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { connectAs, dataDir, inboxPrefix, loadLayout, seedPath, type MeshLayout } from "../../kit/index.ts";
import { applyMeshInfra, ensureIdentities, seedTrust } from "../bootstrap.ts";
import { spawnNatsServer, type NatsProcess } from "../nats-process.ts";
import { readPidFile, terminate, writePidFile, type PidRecord } from "../pid-files.ts";
import { onOutputClosed } from "../output.ts";
import { runDir, serverLogFile, serverPidFile, type ServiceProcess } from "../processes.ts";
import { step } from "../progress.ts";
import { shown } from "../table.ts";
import { renderInfra } from "./infra.ts";
import { syncServerAccounts } from "./principal.ts";
import { startAll, stopAll } from "./services.ts";
import { ensureDevTokens } from "./tokens.ts";

const CLIENT_PORT = 4222;

/** Starts the background mesh; with its server already running, starts the services that are not. */
export async function run(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway up (CW_ERR_USAGE)");
    return 2;
  }
  const data = dataDir();
  const layout = loadLayout();
  // What this run starts, stopped again if the output closes before it is done (`make up | head`).
  const spawned: ServiceProcess[] = [];
  let ownServer: NatsProcess | undefined;
  const unregister = onOutputClosed(async () => {
    await Promise.all(spawned.map((p) => p.stop()));
    if (ownServer) {
      await ownServer.stop();
      rmSync(serverPidFile(data), { force: true });
    }
  });
  try {
    return await bringUp(data, layout, spawned, (s) => { ownServer = s; });
  } finally {
    unregister();
  }
}

async function bringUp(data: string, layout: MeshLayout, spawned: ServiceProcess[], started: (server: NatsProcess) => void): Promise<number> {
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
      return (await startAll(nc, url, data, layout, spawned)) ? 0 : 1;
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
  started(server);
  writePidFile(serverPidFile(data), server.pid);
  const nc = await connectAs("operator", { servers: server.url });
  let ok: boolean;
  try {
    await step("streams and buckets", () => applyMeshInfra(nc, layout), (summary) => summary);
    await step("trust store", () => seedTrust(nc, principals, data), (summary) => summary);
    ok = await startAll(nc, server.url, data, layout, spawned);
  } finally {
    await nc.close();
  }
  const cli = `nats --server ${server.url} --nkey ${seedPath("operator", data)} --inbox-prefix ${inboxPrefix("operator")}`;
  console.log(`\nThe mesh is up${ok ? "" : ", but not every service started (above)"}. \`causeway ps\` lists its processes; as the operator:\n  ${cli} stream ls\n  ${cli} micro ls\n\`make down\` stops it.`);
  return ok ? 0 : 1;
}

/** Drains every service process with a pid file, then stops the server started by `up`. */
export async function down(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway down (CW_ERR_USAGE)");
    return 2;
  }
  const data = dataDir();
  // Services first, so they drain while the server is still there to take their acks; the server last.
  const ok = await stopAll(data);
  const server = runningServer(data);
  if (server === undefined) {
    console.log("no nats-server running");
    return ok ? 0 : 1;
  }
  const t = await terminate(serverPidFile(data), server);
  console.log(`✓ stopped nats-server (pid ${server.pid})${t.killed ? " — killed after 10 s" : ""}; the JetStream store stays in ${shown(join(runDir(data), "store"))}`);
  return ok ? 0 : 1;
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

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ port, host: "127.0.0.1" });
    socket.once("connect", () => { socket.destroy(); resolve(true); });
    socket.once("error", () => resolve(false));
  });
}
