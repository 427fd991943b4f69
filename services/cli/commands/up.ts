// `causeway up` / `causeway down`: a local mesh in the background on the standard ports (4222 client,
// 8222 monitoring) with the rendered dev config, streams applied; `down` stops it. State lives in
// <data>/nats/ (config, store, log, pid file).
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { jetstreamManager } from "@nats-io/jetstream";
import { applyStreams, connectAs, ensureMeshBuckets, dataDir, defaultStreamsDir, inboxPrefix, loadPrincipals, loadStreamDefinitions, seedPath } from "../../kit/index.ts";
import { renderInfra } from "./infra.ts";
import { createSeed } from "./keys.ts";
import { spawnNatsServer } from "../nats-process.ts";
import { step } from "../progress.ts";

const CLIENT_PORT = 4222;

function pidFile(data: string): string {
  return join(data, "nats", "nats-server.pid");
}

/** Starts the background mesh; refuses when one is already running or the port is taken. */
export async function run(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway up (CW_ERR_USAGE)");
    return 2;
  }
  const data = dataDir();
  const running = runningPid(data);
  if (running !== undefined) {
    console.log(`mesh already running (nats-server pid ${running}); \`make down\` stops it`);
    return 0;
  }
  if (await portInUse(CLIENT_PORT)) {
    console.error(`✗ port ${CLIENT_PORT} is in use by another process: stop it, or use \`make demo\`, which picks a free port`);
    return 1;
  }
  const principals = loadPrincipals();
  await step("identities", () => {
    for (const name of Object.keys(principals.principals)) if (!existsSync(seedPath(name, data))) createSeed(name, { dir: data });
  }, () => `${Object.keys(principals.principals).length} principals`);
  const config = await step("nats-server config", () => renderInfra({ dataDir: data, full: true }), (r) => r.path);
  const natsDir = join(data, "nats");
  mkdirSync(natsDir, { recursive: true });
  const server = await step("nats-server", () => spawnNatsServer({
    configPath: config.path, portsDir: natsDir, detached: true, logFile: join(natsDir, "nats-server.log"),
  }), (s) => `${s.url}, pid ${s.pid}, log ${join(natsDir, "nats-server.log")}`);
  writeFileSync(pidFile(data), `${server.pid}\n`);
  const nc = await connectAs("operator", { servers: server.url });
  try {
    await step("streams", async () => {
      const report = await applyStreams(await jetstreamManager(nc), await loadStreamDefinitions(defaultStreamsDir));
      if (!report.ok) throw new Error("some streams were refused: run `causeway streams apply` for details");
      await ensureMeshBuckets(nc);
      return report;
    }, (r) => `${r.results.length} streams and consumers in place`);
  } finally {
    await nc.close();
  }
  console.log(`\nThe mesh is up. As the operator:\n  nats --server ${server.url} --nkey ${seedPath("operator", data)} --inbox-prefix ${inboxPrefix("operator")} stream ls\n\`make down\` stops it.`);
  return 0;
}

/** Stops the background mesh started by `up`. */
export async function down(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway down (CW_ERR_USAGE)");
    return 2;
  }
  const data = dataDir();
  const pid = runningPid(data);
  if (pid === undefined) {
    console.log("no mesh running");
    rmSync(pidFile(data), { force: true });
    return 0;
  }
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 10_000;
  while (alive(pid)) {
    if (Date.now() > deadline) process.kill(pid, "SIGKILL");
    await delay(50);
  }
  rmSync(pidFile(data), { force: true });
  console.log(`✓ stopped nats-server (pid ${pid}); its store stays in ${join(data, "nats", "store")}`);
  return 0;
}

function runningPid(data: string): number | undefined {
  if (!existsSync(pidFile(data))) return undefined;
  const pid = Number(readFileSync(pidFile(data), "utf8").trim());
  return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function portInUse(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = netConnect({ port, host: "127.0.0.1" });
    socket.once("connect", () => { socket.destroy(); resolve(true); });
    socket.once("error", () => resolve(false));
  });
}
