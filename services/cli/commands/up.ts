// `causeway up` / `causeway down`: the mesh in the background on the standard ports (4222 client, 8222
// monitoring) with the rendered dev config — streams, buckets, trust store, and the reference agents as
// detached processes; `down` drains the agents and stops the server. State lives in <data>/nats/ (config,
// store, logs, pid files).
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { connectAs, dataDir, inboxPrefix, loadLayout, seedPath } from "../../kit/index.ts";
import { MESH_SERVICES, spawnAgents, waitForAgents } from "../agent-processes.ts";
import { applyMeshInfra, ensureIdentities, seedTrust } from "../bootstrap.ts";
import { spawnNatsServer } from "../nats-process.ts";
import { step } from "../progress.ts";
import { renderInfra } from "./infra.ts";
import { ensureDevTokens } from "./tokens.ts";

const CLIENT_PORT = 4222;

const runDir = (data: string) => join(data, "nats");
const pidFile = (data: string, name: string) => join(runDir(data), `${name}.pid`);

/** Starts the background mesh; refuses when one is already running or the port is taken. */
export async function run(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway up (CW_ERR_USAGE)");
    return 2;
  }
  const data = dataDir();
  const running = runningPid(data, "nats-server");
  if (running !== undefined) {
    console.log(`mesh already running (nats-server pid ${running}); \`make down\` stops it`);
    return 0;
  }
  if (await portInUse(CLIENT_PORT)) {
    console.error(`✗ port ${CLIENT_PORT} is in use by another process: stop it, or use \`make demo\`, which picks a free port`);
    return 1;
  }
  const layout = loadLayout();
  const principals = layout.principals;
  await step("identities", () => ensureIdentities(principals, data), () => `${Object.keys(principals.principals).length} principals`);
  await step("upstream tokens", () => ensureDevTokens(data), (created) => `${created.length} new in ${join(data, "tokens")}`);
  const config = await step("nats-server config", () => renderInfra({ dataDir: data, full: true, principals, prefix: layout.prefix }), (r) => r.path);
  mkdirSync(runDir(data), { recursive: true });
  const server = await step("nats-server", () => spawnNatsServer({
    configPath: config.path, portsDir: runDir(data), detached: true, logFile: join(runDir(data), "nats-server.log"),
  }), (s) => `${s.url}, pid ${s.pid}`);
  writeFileSync(pidFile(data, "nats-server"), `${server.pid}\n`);
  const nc = await connectAs("operator", { servers: server.url });
  try {
    await step("streams and buckets", () => applyMeshInfra(nc, layout), (summary) => summary);
    await step("trust store", () => seedTrust(nc, principals, data), (summary) => summary);
    const agents = spawnAgents(MESH_SERVICES, { natsUrl: server.url, dataDir: data, logDir: join(runDir(data), "logs"), detached: true });
    for (const a of agents) writeFileSync(pidFile(data, a.name), `${a.child.pid}\n`);
    await step("services", () => waitForAgents(nc, agents), () => `${agents.map((a) => a.name).join(", ")}; logs in ${join(runDir(data), "logs")}`);
  } finally {
    await nc.close();
  }
  const cli = `nats --server ${server.url} --nkey ${seedPath("operator", data)} --inbox-prefix ${inboxPrefix("operator")}`;
  console.log(`\nThe mesh is up. As the operator:\n  ${cli} stream ls\n  ${cli} micro ls\n\`make down\` stops it.`);
  return 0;
}

/** Drains the agents, then stops the server started by `up`. */
export async function down(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway down (CW_ERR_USAGE)");
    return 2;
  }
  const data = dataDir();
  const names = existsSync(runDir(data)) ? readdirSync(runDir(data)).filter((f) => f.endsWith(".pid")).map((f) => f.slice(0, -4)) : [];
  if (names.length === 0) {
    console.log("no mesh running");
    return 0;
  }
  // Agents first, so they drain while the server is still there to take their acks; the server last.
  const order = [...names.filter((n) => n !== "nats-server"), ...names.filter((n) => n === "nats-server")];
  for (const name of order) {
    const pid = runningPid(data, name);
    if (pid !== undefined) {
      await terminate(pid);
      console.log(`✓ stopped ${name} (pid ${pid})`);
    }
    rmSync(pidFile(data, name), { force: true });
  }
  console.log(`the JetStream store stays in ${join(runDir(data), "store")}`);
  return 0;
}

async function terminate(pid: number): Promise<void> {
  process.kill(pid, "SIGTERM");
  const deadline = Date.now() + 10_000;
  while (alive(pid)) {
    if (Date.now() > deadline) process.kill(pid, "SIGKILL");
    await delay(50);
  }
}

function runningPid(data: string, name: string): number | undefined {
  if (!existsSync(pidFile(data, name))) return undefined;
  const pid = Number(readFileSync(pidFile(data, name), "utf8").trim());
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
