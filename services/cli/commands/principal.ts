// `causeway principal add <name>`: a principal of infra/principals.json joins a running development mesh in one
// command — its seed, the server's accounts rendered again and the server reloaded (so its key may connect), the
// trust store seeded (so its signatures verify), its service started. `causeway up` runs the same synchronisation
// when its server is already running, so a principal added to principals.json is picked up there too.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ConfigError, DEFAULT_NATS_URL, ErrorCode, connectAs, dataDir, getPrincipal, loadLayout, publicKeyOf, seedPath, type MeshLayout,
} from "../../kit/index.ts";
import { ensureIdentities, seedTrust } from "../bootstrap.ts";
import { readPidFile } from "../pid-files.ts";
import { runDir, serverPidFile } from "../processes.ts";
import { step } from "../progress.ts";
import { shown } from "../table.ts";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import { renderInfra } from "./infra.ts";
import { startServices } from "./services.ts";

const USAGE = `usage: causeway principal add <name> [--server URL] [--no-start]

Adds a principal declared in infra/principals.json (e.g. one \`causeway new agent\` wrote) to a running
development mesh, in one command:
  1. its NKey seed in <data>/keys, unless it has one (\`causeway keys new <name>\`)
  2. the server's accounts rendered again: <data>/nats/dev.conf for the server of \`causeway up\`, else
     <data>/nats/accounts.conf, which the server's config must include (\`causeway infra render\`)
  3. the server reloaded, as sysadmin ($SYS.REQ.SERVER.<id>.RELOAD; \`nats-server --signal reload=<pid>\` by hand),
     and the new principal's connection accepted
  4. the trust store seeded, as the operator (\`causeway trust seed\`)
  5. its service started when it has an entry (\`causeway start <name>\`), unless --no-start

  --server URL    the NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})
  --no-start      stop after the trust store

It needs every principal's seed in <data> (a development mesh: <data> is $CAUSEWAY_DATA_DIR, default <repo>/.data).`;

/** Runs `causeway principal <args>`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("principal", USAGE, args, { server: { type: "string" }, "no-start": { type: "boolean", default: false } });
  if (parsed.exit !== undefined) return parsed.exit;
  const [sub, name, extra] = parsed.positionals;
  if (sub !== "add") return usageError(sub === undefined ? "missing subcommand: principal add <name>" : `unknown subcommand "${sub}"`);
  if (name === undefined) return usageError("name the principal: principal add <name>");
  if (extra !== undefined) return usageError(`unexpected argument "${extra}"`);
  const server = parsed.values.server ?? (process.env.NATS_URL || DEFAULT_NATS_URL);
  return (await addPrincipal({ name, server, data: dataDir(), start: !parsed.values["no-start"] })) ? 0 : 1;
}

/** Options of {@link addPrincipal}. */
export interface AddPrincipalOptions {
  readonly name: string;
  readonly server: string;
  readonly data: string;
  /** Start its service when it has an entry. */
  readonly start: boolean;
  /** The mesh layout. Default: the repository's. */
  readonly layout?: MeshLayout;
}

/** `principal add`: seed, accounts, reload, connection, trust store, service. False when its service did not start. */
export async function addPrincipal(opts: AddPrincipalOptions): Promise<boolean> {
  const { name, server, data } = opts;
  const layout = opts.layout ?? loadLayout();
  getPrincipal(layout.principals, name); // CW_ERR_UNKNOWN_PRINCIPAL, listing the declared ones, before anything is written
  const hadSeed = existsSync(seedPath(name, data));
  // Every missing seed, not only this one's: the server's accounts are rendered from all of them.
  await step(`${name}'s identity`, () => ensureIdentities(layout.principals, data),
    (created) => `seed ${hadSeed ? "kept" : "created"} in ${shown(seedPath(name, data))}, public key ${publicKeyOf(name, data)}${created > (hadSeed ? 0 : 1) ? `; ${created} seeds created in all` : ""}`);
  const operator = await connectAs("operator", { servers: server, dataDir: data, name: "causeway principal" }).catch((err: unknown) => {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(ErrorCode.Unavailable, `cannot reach the NATS server ${server} as the operator (${(err as Error).message}): \`make up\` starts one, or pass --server`, { cause: err });
  });
  try {
    const synced = await syncServerAccounts(operator, { server, data, layout });
    if (!synced.reloaded) console.log(`= the server's accounts already have ${name}'s key: no reload`);
    await step(`${name} connects`, () => untilAccepted(name, server, data), () => `${server} accepts its key`);
    await step("trust store", () => seedTrust(operator, layout.principals, data), (summary) => summary);
    const service = layout.services.find((s) => s.name === name);
    if (!opts.start || service === undefined) {
      if (service === undefined) console.log(`= ${name} runs no process (no entry in ${shown(layout.sources.principals)})`);
      return true;
    }
    return await startServices(operator, server, data, [{ service, replicas: service.replicas, exact: false }]);
  } finally {
    await operator.close();
  }
}

/** What {@link syncServerAccounts} did. */
export interface SyncedAccounts {
  /** The file rendered. */
  readonly path: string;
  /** False when the file already said the same (no reload was needed). */
  readonly reloaded: boolean;
}

/**
 * Renders the running server's accounts from principals.json — its own config when it is `causeway up`'s
 * (<data>/nats/dev.conf), else <data>/nats/accounts.conf, which its config must include — and reloads it when they
 * changed: as sysadmin through `$SYS.REQ.SERVER.<id>.RELOAD`, else (up's server, without a sysadmin seed) with SIGHUP.
 */
export async function syncServerAccounts(operator: NatsConnection, opts: { server: string; data: string; layout: MeshLayout }): Promise<SyncedAccounts> {
  const { data, layout } = opts;
  const upConfig = join(runDir(data), "dev.conf");
  const serverId = operator.info?.server_id;
  if (serverId === undefined) throw new ConfigError(ErrorCode.Unavailable, `the server at ${opts.server} sent no server id`);
  const configFile = await serverConfigFile(opts.server, data, serverId);
  const full = configFile !== undefined ? resolve(configFile) === resolve(upConfig) : existsSync(upConfig) && upServerRunning(data) !== undefined;
  const target = full ? upConfig : join(runDir(data), "accounts.conf");
  if (!full && configFile !== undefined && !includes(configFile, target)) {
    throw new ConfigError(ErrorCode.Config, `the server at ${opts.server} runs ${configFile}, which neither is ${shown(upConfig)} nor includes ${shown(target)}: render its accounts where it reads them (\`causeway infra render --out <file>\`), reload it (\`nats-server --signal reload=<pid>\`), then \`causeway trust seed\``);
  }
  const before = existsSync(target) ? readFileSync(target, "utf8") : undefined;
  const rendered = await step("server accounts", () => renderInfra({ dataDir: data, full, principals: layout.principals, prefix: layout.prefix, out: target }),
    (r) => `${shown(r.path)}${r.text === before ? ", unchanged" : ""}`);
  if (rendered.text === before) return { path: rendered.path, reloaded: false };
  await step("server reload", () => reloadServer(opts.server, data, serverId), (how) => how);
  return { path: rendered.path, reloaded: true };
}

/** Reloads the server's configuration; says how. */
async function reloadServer(server: string, data: string, serverId: string): Promise<string> {
  if (existsSync(seedPath("sysadmin", data))) {
    const sys = await connectAs("sysadmin", { servers: server, dataDir: data, name: "causeway principal" });
    try {
      const reply = await sys.request(`$SYS.REQ.SERVER.${serverId}.RELOAD`, "", { timeout: 10_000 });
      const answer = reply.json<{ error?: { description?: string } }>();
      if (answer.error) throw new ConfigError(ErrorCode.Config, `the server refused to reload: ${answer.error.description ?? JSON.stringify(answer.error)}`);
      return `$SYS.REQ.SERVER.${serverId}.RELOAD as sysadmin`;
    } finally {
      await sys.close();
    }
  }
  const up = upServerRunning(data);
  if (up === undefined) throw new ConfigError(ErrorCode.SeedMissing, `cannot reload the server: no sysadmin seed in ${shown(join(data, "keys"))} and no server of \`causeway up\`; reload it yourself (\`nats-server --signal reload=<pid>\`)`);
  process.kill(up.pid, "SIGHUP"); // what `nats-server --signal reload=<pid>` sends
  return `SIGHUP to nats-server pid ${up.pid}`;
}

/** The running `causeway up` server's pid record, when its pid file names a running process. */
function upServerRunning(data: string): { pid: number } | undefined {
  const path = serverPidFile(data);
  if (!existsSync(path)) return undefined;
  const f = readPidFile(path);
  return f.state === "running" ? f.record : undefined;
}

/** The server's config file, from its VARZ (as sysadmin); undefined when it cannot be asked. */
async function serverConfigFile(server: string, data: string, serverId: string): Promise<string | undefined> {
  if (!existsSync(seedPath("sysadmin", data))) return undefined;
  const sys = await connectAs("sysadmin", { servers: server, dataDir: data, name: "causeway principal" });
  try {
    const reply = await sys.request(`$SYS.REQ.SERVER.${serverId}.VARZ`, "", { timeout: 5_000 });
    const file = reply.json<{ data?: { config_file?: string } }>().data?.config_file;
    return file === undefined || file === "" ? undefined : file;
  } finally {
    await sys.close();
  }
}

/** True when `config` includes `file` (nats-server resolves an include relative to the including file). */
function includes(config: string, file: string): boolean {
  let text: string;
  try {
    text = readFileSync(config, "utf8");
  } catch {
    return false;
  }
  return [...text.matchAll(/^\s*include\s+["']?([^"'\s;]+)["']?/gm)].some((m) => resolve(dirname(config), m[1]!) === resolve(file));
}

/** Connects as `name` until the server accepts its key (a reload applies within moments), at most 10 s. */
async function untilAccepted(name: string, server: string, data: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const nc = await connectAs(name, { servers: server, dataDir: data, name: "causeway principal", options: { reconnect: false } });
      await nc.close();
      return;
    } catch (err) {
      if (!(err instanceof ConfigError && err.code === ErrorCode.NotAuthorized) || Date.now() > deadline) throw err;
      await delay(100);
    }
  }
}

function usageError(problem: string): number {
  return sharedUsageError("principal", USAGE, problem);
}
