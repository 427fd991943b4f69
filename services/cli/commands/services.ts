// `causeway ps | start | stop | restart | logs`: the mesh's services as background processes. The services, their
// entry points and replica counts are the layout's (principals with an `entry` in infra/principals.json); each
// replica runs under a supervisor (supervisor.ts) that restarts it when it exits unexpectedly, and is tracked in a
// pid file that records its start time and command line (and its supervisor's, and its restarts), so a stale file
// (its processes gone, or its pid reused by another program) is reported and removed, never signalled.
// `causeway up` and `down` run the same start and stop.
import { closeSync, existsSync, openSync, readSync, rmSync, statSync } from "node:fs";
import { setTimeout as delay } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ConfigError, DEFAULT_NATS_URL, ErrorCode, KvBucket, connectAs, dataDir, loadLayout, openMeshBucket, routeKey, type MeshLayout, type MeshService,
} from "../../kit/index.ts";
import { isRecordedAlive, readPidFile, terminate, type PidFileState } from "../pid-files.ts";
import {
  isNodeName, logDir, logFileOf, nodeLogFile, pidFileOf, readinessProblems, recordedNodes, recordedReplicas, serverLogFile, serverPidFile, serviceEnv, spawnService, waitForServices,
  type RecordedReplica, type ServiceProcess,
} from "../processes.ts";
import { shown, table } from "../table.ts";
import { parseCommand, usageError } from "../usage.ts";

const USAGE = `usage: causeway ps [--json]
       causeway start [<service>] [--replicas N] [--server URL]
       causeway stop [<service>]
       causeway restart [<service>] [--replicas N] [--server URL]
       causeway logs <service> [-f] [-n LINES]

  ps        every service (principals with an entry in infra/principals.json): replica, pid, state, uptime,
            restarts, log; and each version beside one (<principal>@<version>) that has been started
  start     start what is not running, each service with its replicas from infra/principals.json, each under a
            supervisor that restarts it when it exits unexpectedly, and wait until each answers a ping; with
            --replicas N, exactly N replicas of the service (above N drained)
  stop      drain (SIGTERM, up to 10 s, then SIGKILL) and remove the pid files; without a service, every
            process with a pid file
  restart   stop, then start as many replicas as have pid files, a crashed one's included (or --replicas N)
  logs      the last lines of a service's log (its replicas share it; nats-server has one too, and each node
            of \`up --cluster\`: causeway-1, causeway-2, …); -f follows it

  <service>       a principal with an entry, or <principal>@<version>: one of the principal's "versions" in
                  infra/principals.json, run beside its entry under the same key (start never runs one unless
                  named; stop without a service stops them too)
  --replicas N    how many processes of the service (1 to 32); needs a service
  --server URL    the NATS server the services connect to (default: $NATS_URL or ${DEFAULT_NATS_URL})
  -f, --follow    keep printing what is appended, until interrupted
  -n, --lines N   how many lines logs prints first (default 20)
  --json          ps as JSON

Pid files: <data>/nats/services/<service>.<replica>.pid; logs: <data>/nats/logs/<service>.log (<data> is
$CAUSEWAY_DATA_DIR, default <repo>/.data). A pid file whose process is gone, or whose pid another program now
has, is reported as stale and removed; its pid is never signalled.`;

/** How long `stop` lets a process drain before SIGKILL. */
const GRACE_MS = 10_000;

/** Start `replicas` of `service`; `exact` also drains running replicas numbered above it. */
interface StartPlan {
  readonly service: MeshService;
  readonly replicas: number;
  readonly exact: boolean;
}

/** `causeway ps`. */
export function ps(args: string[]): Promise<number> {
  const parsed = parseCommand("ps", USAGE, args, { json: { type: "boolean" } });
  if (parsed.exit !== undefined) return Promise.resolve(parsed.exit);
  if (parsed.positionals.length > 0) return Promise.resolve(usageError("ps", USAGE, `unexpected argument "${parsed.positionals[0]}"`));
  const data = dataDir();
  const rows = psRows(data, loadLayout());
  if (parsed.values.json) {
    console.log(JSON.stringify(rows, null, 2));
    return Promise.resolve(0);
  }
  const cell = (v: string | number | null) => (v === null ? "-" : String(v));
  console.log(table(["SERVICE", "REPLICA", "PID", "STATE", "UPTIME", "RESTARTS", "LOG"],
    rows.map((r) => [r.service, cell(r.replica), cell(r.pid), r.state, r.uptimeSeconds === null ? "-" : uptime(r.uptimeSeconds), cell(r.restarts), shown(r.log)])));
  for (const r of rows.filter((row) => row.problem !== undefined)) console.log(`! ${r.service}${r.replica === null ? "" : `.${r.replica}`}: ${r.problem}`);
  return Promise.resolve(0);
}

/** One line of `causeway ps`. */
interface PsRow {
  readonly service: string;
  readonly replica: number | null;
  readonly pid: number | null;
  /** `running`; `restarting`: it exited and its supervisor starts it again; `exited`: its pid file is stale; `stopped`: no pid file. */
  readonly state: "running" | "restarting" | "exited" | "stopped";
  readonly uptimeSeconds: number | null;
  readonly startedAt: string | null;
  /** How often its supervisor restarted it (null: not supervised, e.g. the nats-server). */
  readonly restarts: number | null;
  /** Its last unexpected exit, when it had one. */
  readonly lastExit: { readonly at: string; readonly how: string } | null;
  /** Its supervisor's pid (null: none). */
  readonly supervisor: number | null;
  readonly log: string;
  /** A stale pid file, or a service no longer in infra/principals.json. */
  readonly problem?: string;
}

function psRows(data: string, layout: MeshLayout): PsRow[] {
  const row = (service: string, replica: number | null, f: PidFileState | undefined, log: string, note?: string): PsRow => {
    const running = f?.state === "running";
    const record = f?.record;
    const repair = replica === null ? "`causeway up` starts it again, `causeway down` removes it"
      : service === "nats-server" ? "`causeway up --cluster N` starts it again, `causeway down` removes it"
      : `\`causeway restart ${service}\` starts it again, \`causeway stop ${service}\` removes it`;
    const lastExit = record?.lastExit ? `last exit: ${record.lastExit.how} at ${record.lastExit.at}` : "";
    const restarted = record?.restarts ? `restarted ${record.restarts} time${record.restarts === 1 ? "" : "s"} by its supervisor; ${lastExit}` : undefined;
    const unsupervised = running && record?.supervisor !== undefined && !isRecordedAlive(record.supervisor)
      ? `its supervisor (pid ${record.supervisor.pid}) is gone: it is not restarted if it exits; \`causeway restart ${service}\` supervises it again` : undefined;
    const problem = f?.state === "stale" ? `stale pid file ${shown(f.path)}: ${f.why}${record?.lastExit ? ` (last exit: ${record.lastExit.how} at ${record.lastExit.at})` : ""}; ${repair}`
      : f?.state === "restarting" ? `exited (${record?.lastExit?.how ?? "?"}); its supervisor starts it again${record?.restartAt ? ` at ${record.restartAt}` : ""} (restart ${record?.restarts ?? 0})`
        : [restarted, unsupervised, note].filter((x) => x !== undefined).join("; ") || undefined;
    return {
      service, replica, pid: record?.pid ?? null, state: f === undefined ? "stopped" : running ? "running" : f.state === "restarting" ? "restarting" : "exited",
      uptimeSeconds: running ? Math.max(0, Math.round((Date.now() - Date.parse(f.record.startedAt)) / 1000)) : null,
      startedAt: record?.startedAt ?? null, restarts: record?.supervisor !== undefined ? (record.restarts ?? 0) : null,
      lastExit: record?.lastExit ?? null, supervisor: record?.supervisor?.pid ?? null, log, ...(problem !== undefined && { problem }),
    };
  };
  const rows: PsRow[] = [];
  if (existsSync(serverPidFile(data))) rows.push(row("nats-server", null, readPidFile(serverPidFile(data)), serverLogFile(data)));
  // The nodes of `up --cluster`, their index as the replica.
  for (const n of recordedNodes(data)) rows.push(row("nats-server", n.index, n.pidFile, nodeLogFile(data, n.name)));
  const recorded = recordedReplicas(data);
  for (const s of layout.services) {
    const mine = recorded.filter((r) => r.name === s.name);
    const log = logFileOf(logDir(data), s.name);
    if (mine.length === 0) rows.push(row(s.name, null, undefined, log));
    for (const r of mine) rows.push(row(s.name, r.replica, r.pidFile, log));
    // Its versions beside it, once started: a version that never ran is not a service anybody runs.
    for (const v of layout.versions.filter((x) => x.principal === s.principal)) {
      for (const r of recorded.filter((x) => x.name === v.name)) rows.push(row(v.name, r.replica, r.pidFile, logFileOf(logDir(data), v.name)));
    }
  }
  for (const r of recorded.filter((x) => ![...layout.services, ...layout.versions].some((s) => s.name === x.name))) {
    rows.push(row(r.name, r.replica, r.pidFile, logFileOf(logDir(data), r.name), `not a service of ${shown(layout.sources.principals)} any more; \`causeway stop ${r.name}\` stops it`));
  }
  return rows;
}

/** `causeway start [<service>] [--replicas N]`. */
export async function start(args: string[]): Promise<number> {
  const parsed = parseLifecycle("start", args);
  if (typeof parsed === "number") return parsed;
  const { services, replicas, server } = parsed;
  const data = dataDir();
  return withOperator(server, data, async (nc) => {
    const ok = await startServices(nc, server, data, services.map((s) => ({ service: s, replicas: replicas ?? s.replicas, exact: replicas !== undefined })));
    for (const s of services) if (s.version !== undefined) await warnUnrouted(nc, s);
    return ok ? 0 : 1;
  });
}

/**
 * Says so when `service`, a version beside its principal's entry, serves a capability that no route table routes:
 * it then shares the capability's durable with every other version (services/kit/routing.ts) and takes work in
 * proportion to its replicas, unwatched — which a rollout (a route table with a lane per version) is for.
 */
async function warnUnrouted(nc: NatsConnection, service: MeshService): Promise<void> {
  const layout = loadLayout();
  const routes = await openMeshBucket(nc, KvBucket.Routes, "version routes");
  for (const ref of layout.principals.principals[service.principal]!.serves) {
    const cap = layout.principals.capabilities[ref]!;
    if ((await routes.get(routeKey(cap.name, cap.major)))?.operation === "PUT") continue;
    console.log(`! ${service.name} serves ${ref}, which no route table routes yet: until a rollout gives ${service.version} a lane (\`causeway rollout start ${ref} --candidate ${service.version} …\`), it shares ${ref}'s durable with the other versions and takes work in proportion to its replicas`);
  }
}

/** `causeway stop [<service>]`. */
export async function stop(args: string[]): Promise<number> {
  const parsed = parseCommand("stop", USAGE, args, {});
  if (parsed.exit !== undefined) return parsed.exit;
  const [name, extra] = parsed.positionals;
  if (extra !== undefined) return usageError("stop", USAGE, `unexpected argument "${extra}"`);
  const data = dataDir();
  if (name === undefined) return (await stopAll(data)) ? 0 : 1;
  const replicas = recordedReplicas(data, name);
  if (replicas.length === 0) {
    loadLayout().service(name); // an unknown name is an error, a known one is just not running
    console.log(`${name} is not running`);
    return 0;
  }
  return (await stopReplicas(replicas)) ? 0 : 1;
}

/** `causeway restart [<service>] [--replicas N]`: stop, then start as many as have pid files (a crashed replica's included), or N. */
export async function restart(args: string[]): Promise<number> {
  const parsed = parseLifecycle("restart", args);
  if (typeof parsed === "number") return parsed;
  const { services, replicas, server } = parsed;
  const data = dataDir();
  // Connected first: a restart that could not start again stops nothing.
  return withOperator(server, data, async (nc) => {
    const plans: StartPlan[] = services.map((s) => ({ service: s, replicas: replicas ?? (recordedReplicas(data, s.name).length || s.replicas), exact: true }));
    const stopped = await stopReplicas(services.flatMap((s) => recordedReplicas(data, s.name)));
    return stopped && (await startServices(nc, server, data, plans)) ? 0 : 1;
  });
}

/** `causeway logs <service> [-f] [-n LINES]`. */
export async function logs(args: string[]): Promise<number> {
  const parsed = parseCommand("logs", USAGE, args, { follow: { type: "boolean", short: "f" }, lines: { type: "string", short: "n" } });
  if (parsed.exit !== undefined) return parsed.exit;
  const [name, extra] = parsed.positionals;
  if (name === undefined) return usageError("logs", USAGE, "name the service, e.g. one `causeway ps` lists");
  if (extra !== undefined) return usageError("logs", USAGE, `unexpected argument "${extra}"`);
  const lines = parsed.values.lines === undefined ? 20 : Number(parsed.values.lines);
  if (!Number.isInteger(lines) || lines < 0) return usageError("logs", USAGE, `--lines ${parsed.values.lines} is not a whole number`);
  const data = dataDir();
  const node = isNodeName(name);
  const path = name === "nats-server" ? serverLogFile(data) : node ? nodeLogFile(data, name) : logFileOf(logDir(data), name);
  if (name !== "nats-server" && !node && !existsSync(path)) loadLayout().service(name); // unknown names are refused; a service that never ran has no log yet
  if (!existsSync(path) && !parsed.values.follow) {
    console.error(`${name} has no log yet (${shown(path)}): it has not run in this data directory`);
    return 0;
  }
  let offset = existsSync(path) ? printTail(path, lines) : 0;
  if (!parsed.values.follow) return 0;
  const stopped = new AbortController();
  const onSignal = () => stopped.abort();
  process.once("SIGINT", onSignal).once("SIGTERM", onSignal);
  while (!stopped.signal.aborted) {
    const size = existsSync(path) ? statSync(path).size : 0;
    if (size < offset) offset = 0; // truncated or replaced: from its start
    if (size > offset) offset = copyRange(path, offset, size);
    await delay(200, undefined, { signal: stopped.signal }).catch(() => undefined);
  }
  return 0;
}

/**
 * Starts what `plans` asks for that is not running, detached, each replica with its pid file, and waits until
 * every service answers; prints a line per service. False when a process exited or a service did not answer.
 */
export async function startServices(nc: NatsConnection, natsUrl: string, data: string, plans: readonly StartPlan[], spawned?: ServiceProcess[]): Promise<boolean> {
  const started: ServiceProcess[] = spawned ?? [];
  const running = new Map<string, number>();
  const already: string[] = [];
  for (const { service, replicas, exact } of plans) {
    const alive = dropStale(recordedReplicas(data, service.name));
    const extras = exact ? alive.filter((r) => r.replica > replicas) : [];
    if (extras.length > 0 && !(await stopReplicas(extras))) return false;
    const kept = alive.filter((r) => !extras.includes(r));
    running.set(service.name, kept.length);
    const missing = Array.from({ length: replicas }, (_, i) => i + 1).filter((n) => !kept.some((r) => r.replica === n));
    if (missing.length === 0) {
      already.push(`${service.name} (${kept.length === 1 ? "pid" : "pids"} ${kept.map((r) => r.pidFile.record?.pid).join(", ")})`);
      continue;
    }
    // Each replica under its supervisor, which writes the pid file and restarts the service if it exits unexpectedly.
    for (const n of missing) {
      started.push(spawnService(service, n, { natsUrl, dataDir: data, logDir: logDir(data), detached: true, env: serviceEnv(data), supervise: { pidFile: pidFileOf(data, service.name, n) } }));
    }
  }
  if (already.length > 0) console.log(`= already running: ${already.join(", ")}`);
  if (started.length === 0) return true;
  console.log(`… started ${started.map((p) => `${p.service.name}.${p.replica}`).join(", ")}; waiting until each answers (logs in ${shown(logDir(data))})`);
  const readiness = await waitForServices(nc, started, {
    running,
    onReady: (s, processes, seconds) => {
      const before = running.get(s.name) ?? 0;
      console.log(`✓ ${s.name} — started ${processes.map((p) => `replica ${p.replica} (pid ${p.servicePid() ?? "?"})`).join(", ")}${before > 0 ? `, ${before} already running` : ""} (${seconds.toFixed(2)} s)`);
    },
  });
  for (const { process: p } of readiness.failed) rmSync(pidFileOf(data, p.service.name, p.replica), { force: true });
  for (const line of readinessProblems(readiness)) console.log(`✗ ${line} (${ErrorCode.Unavailable})`);
  return readiness.failed.length === 0 && readiness.late.length === 0;
}

/**
 * Starts every service of the layout with its replica count, leaving running replicas as they are (`causeway up`);
 * what it spawns (the replicas' supervisors) is added to `spawned` as it goes.
 */
export function startAll(nc: NatsConnection, natsUrl: string, data: string, layout: MeshLayout, spawned?: ServiceProcess[]): Promise<boolean> {
  return startServices(nc, natsUrl, data, layout.services.map((s) => ({ service: s, replicas: s.replicas, exact: false })), spawned);
}

/** Drains every process with a pid file (`causeway down`); false when one could not be stopped. */
export async function stopAll(data: string): Promise<boolean> {
  const replicas = recordedReplicas(data);
  if (replicas.length === 0) console.log("no service is running");
  return stopReplicas(replicas);
}

/** Drains `replicas` at once (a supervised one through its supervisor), a line each as it ends; stale pid files are reported and removed. */
async function stopReplicas(replicas: readonly RecordedReplica[]): Promise<boolean> {
  const results = await Promise.allSettled(dropStale(replicas).map(async (r) => {
    const f = r.pidFile as Extract<PidFileState, { state: "running" | "restarting" }>;
    const t = await terminate(f.path, f.record, GRACE_MS);
    console.log(t.killed
      ? `! ${r.name}.${r.replica} (pid ${f.record.pid}) did not drain within ${GRACE_MS / 1000} s: killed`
      : `✓ stopped ${r.name}.${r.replica} (pid ${f.record.pid}) — drained in ${(t.ms / 1000).toFixed(2)} s`);
  }));
  for (const r of results) if (r.status === "rejected") console.log(`✗ ${(r.reason as Error).message}`);
  return results.every((r) => r.status === "fulfilled");
}

/** The replicas whose process (or its supervisor, restarting it) is running; each stale pid file is reported and removed. */
function dropStale(replicas: readonly RecordedReplica[]): RecordedReplica[] {
  return replicas.filter((r) => {
    if (r.pidFile.state !== "stale") return true;
    console.log(`! ${r.name}.${r.replica}: stale pid file — ${r.pidFile.why}; removed`);
    rmSync(r.pidFile.path, { force: true });
    return false;
  });
}

/** The arguments of `start` and `restart`, or the exit code of a usage error. */
function parseLifecycle(command: string, args: string[]): { services: readonly MeshService[]; replicas: number | undefined; server: string } | number {
  const parsed = parseCommand(command, USAGE, args, { replicas: { type: "string" }, server: { type: "string" } });
  if (parsed.exit !== undefined) return parsed.exit;
  const [name, extra] = parsed.positionals;
  if (extra !== undefined) return usageError(command, USAGE, `unexpected argument "${extra}"`);
  let replicas: number | undefined;
  if (parsed.values.replicas !== undefined) {
    if (name === undefined) return usageError(command, USAGE, "--replicas needs a service: the others keep their own count");
    replicas = Number(parsed.values.replicas);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 32) return usageError(command, USAGE, `--replicas ${parsed.values.replicas} is not a whole number from 1 to 32`);
  }
  const layout = loadLayout();
  const services = name === undefined ? layout.services : [layout.service(name)];
  return { services, replicas, server: parsed.values.server ?? (process.env.NATS_URL || DEFAULT_NATS_URL) };
}

/** Runs `action` connected as the operator (the readiness pings); the server being unreachable is CW_ERR_UNAVAILABLE. */
async function withOperator(server: string, data: string, action: (nc: NatsConnection) => Promise<number>): Promise<number> {
  const nc = await connectAs("operator", { servers: server, dataDir: data, name: "causeway services" }).catch((err: unknown) => {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(ErrorCode.Unavailable, `cannot reach the NATS server ${server} as the operator (${(err as Error).message}): \`make up\` starts one, or pass --server`, { cause: err });
  });
  try {
    return await action(nc);
  } finally {
    await nc.close();
  }
}

/** Prints the last `lines` lines of `path`; returns the offset it read up to. */
function printTail(path: string, lines: number): number {
  const size = statSync(path).size;
  const fd = openSync(path, "r");
  try {
    // Read backwards in blocks until enough line ends are in: a long log is never read whole.
    let from = size;
    let tail = Buffer.alloc(0);
    const newlines = (b: Buffer) => b.reduce((n, byte) => n + (byte === 0x0a ? 1 : 0), 0);
    while (from > 0 && newlines(tail) <= lines) {
      const length = Math.min(65_536, from);
      from -= length;
      const block = Buffer.alloc(length);
      readSync(fd, block, 0, length, from);
      tail = Buffer.concat([block, tail]);
    }
    const all = tail.toString("utf8").split("\n");
    if (all.at(-1) === "") all.pop();
    if (lines > 0) process.stdout.write(`${all.slice(-lines).join("\n")}\n`);
  } finally {
    closeSync(fd);
  }
  return size;
}

/** Writes bytes `from`..`to` of `path` to stdout; returns `to`. */
function copyRange(path: string, from: number, to: number): number {
  const fd = openSync(path, "r");
  try {
    const block = Buffer.alloc(to - from);
    readSync(fd, block, 0, block.length, from);
    process.stdout.write(block);
  } finally {
    closeSync(fd);
  }
  return to;
}

/** `42s`, `5m07s`, `3h02m`, `2d04h`. */
function uptime(seconds: number): string {
  const two = (n: number) => String(n).padStart(2, "0");
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${two(seconds % 60)}s`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${two(Math.floor(seconds / 60) % 60)}m`;
  return `${Math.floor(seconds / 86_400)}d${two(Math.floor(seconds / 3600) % 24)}h`;
}
