// The mesh's services as processes, as an operator runs them: one process per replica, each connected as its
// own principal, telemetry loaded first with --import. Which services there are, their entry points and replica
// counts come from the layout (principals with an `entry` in infra/principals.json), never from a list here.
// `causeway demo` spawns them as children; `causeway up|start|stop|restart|ps` run each replica detached under a
// supervisor (supervisor.ts) that restarts it when it exits unexpectedly and tracks it in a pid file under
// <data>/nats/services/, their logs in <data>/nats/logs/<service>.log.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Svcm } from "@nats-io/services";
import type { NatsConnection, RequestManyOptions } from "@nats-io/transport-node";
import { AGENT_VERSION_ENV, defaultLayout, type MeshService } from "../kit/index.ts";
import { repoRoot } from "./nats-process.ts";
import { readPidFile, type PidFileState } from "./pid-files.ts";
import { shown } from "./table.ts";

/** Where `causeway up` and the service commands keep their state: `<data>/nats`. */
export const runDir = (data: string): string => join(data, "nats");
/** The services' log files: `<data>/nats/logs`. */
export const logDir = (data: string): string => join(runDir(data), "logs");
const pidDir = (data: string): string => join(runDir(data), "services");
/** The pid file of one replica: `<data>/nats/services/<service>.<replica>.pid`. */
export const pidFileOf = (data: string, name: string, replica: number): string => join(pidDir(data), `${name}.${replica}.pid`);
/** The pid file of the nats-server `causeway up` runs. */
export const serverPidFile = (data: string): string => join(runDir(data), "nats-server.pid");
/** Its log file. */
export const serverLogFile = (data: string): string => join(runDir(data), "nats-server.log");
/** The cluster's name in every node's `cluster { name }` (`causeway up --cluster`, `infra render --cluster`). */
export const CLUSTER_NAME = "causeway";
/** Node i's server_name: `causeway-<i>`. */
export const nodeName = (index: number): string => `${CLUSTER_NAME}-${index}`;
/** Whether `name` is a node's server_name. */
export const isNodeName = (name: string): boolean => new RegExp(`^${CLUSTER_NAME}-[1-9][0-9]*$`).test(name);
/** Where a cluster's node configs, stores, logs, pid files and route password live: `<data>/nats/cluster`. */
export const clusterDir = (data: string): string => join(runDir(data), "cluster");
/** The pid file of a cluster node `causeway up --cluster` runs: `<data>/nats/cluster/<node>.pid`. */
export const nodePidFile = (data: string, node: string): string => join(clusterDir(data), `${node}.pid`);
/** Its log file. */
export const nodeLogFile = (data: string, node: string): string => join(clusterDir(data), `${node}.log`);
/** A service's log file in `dir`; its replicas share it (each JSON line carries its pid). */
export const logFileOf = (dir: string, name: string): string => join(dir, `${name}.log`);

/** A started replica of a service. */
export interface ServiceProcess {
  readonly service: MeshService;
  /** 1, 2, …: which of the service's replicas. */
  readonly replica: number;
  /** The process spawned: the service itself, or its supervisor (`supervise`). */
  readonly child: ChildProcess;
  /** The service's own pid: the child's, or the one its supervisor recorded (undefined until it has). */
  servicePid(): number | undefined;
  readonly logFile: string;
  /** The log file's size when the process started: what it wrote is after this offset. */
  readonly logOffset: number;
  /** SIGTERM and wait for the drain (SIGKILL after `graceMs`); the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

/** Options for {@link spawnService}. */
export interface SpawnServiceOptions {
  natsUrl: string;
  dataDir: string;
  /** Directory of the log files. */
  logDir: string;
  /** Extra environment (deadlines, ports, log level). */
  env?: NodeJS.ProcessEnv;
  /** Let the process outlive this one, in its own process group (`causeway up`, `start`). Default false. */
  detached?: boolean;
  /**
   * Run the replica under a supervisor that restarts it when it exits unexpectedly and writes its pid file here
   * (`causeway up`, `start`). Default: the service is spawned directly, with no pid file (`causeway demo`).
   */
  supervise?: { readonly pidFile: string };
}

/** Starts replica `replica` of `service`; stdout and stderr are appended to its log file. */
export function spawnService(service: MeshService, replica: number, opts: SpawnServiceOptions): ServiceProcess {
  mkdirSync(opts.logDir, { recursive: true });
  const logFile = logFileOf(opts.logDir, service.name);
  const out = openSync(logFile, "a");
  const logOffset = statSync(logFile).size;
  let child: ChildProcess;
  const args = opts.supervise
    ? [join(repoRoot, "services", "cli", "supervisor.ts"), service.name, String(replica), opts.supervise.pidFile]
    : ["--import", join(repoRoot, "services", "kit", "telemetry.ts"), service.entryPath];
  try {
    child = spawn(process.execPath, args, {
      env: serviceProcessEnv(service, { ...process.env, ...opts.env, NATS_URL: opts.natsUrl, CAUSEWAY_DATA_DIR: opts.dataDir }),
      stdio: ["ignore", out, out],
      detached: opts.detached ?? false,
    });
  } finally {
    closeSync(out);
  }
  if (opts.detached) child.unref();
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  const pidFile = opts.supervise?.pidFile;
  return {
    service, replica, child, logFile, logOffset,
    servicePid() {
      if (pidFile === undefined) return child.pid;
      const f = existsSync(pidFile) ? readPidFile(pidFile) : undefined;
      return f?.record !== undefined && f.record.supervisor?.pid === child.pid ? f.record.pid : undefined;
    },
    async stop(graceMs = 10_000) {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/**
 * `env` for a process of `service` (the service itself, or its supervisor): the principal it runs as, and the
 * version it must run when it is one of the principal's `versions` (the agent refuses to start with another,
 * CW_ERR_VERSION_MISMATCH). An inherited version is dropped for the principal's own entry.
 */
export function serviceProcessEnv(service: MeshService, env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = { ...env, CAUSEWAY_PRINCIPAL: service.principal };
  if (service.version === undefined) delete out[AGENT_VERSION_ENV];
  else out[AGENT_VERSION_ENV] = service.version;
  return out;
}

/** Starts every service of `services` with its replica count (the demo's mesh). */
export function spawnServices(services: readonly MeshService[], opts: SpawnServiceOptions): ServiceProcess[] {
  return services.flatMap((s) => Array.from({ length: s.replicas }, (_, i) => spawnService(s, i + 1, opts)));
}

/** What {@link waitForServices} found. */
export interface Readiness {
  /** Started processes that exited before their service answered, with how: `code 1`, `SIGKILL`. */
  readonly failed: readonly { readonly process: ServiceProcess; readonly exit: string }[];
  /** Services that did not answer with all their replicas within `timeoutMs`, with their log file. */
  readonly late: readonly { readonly service: MeshService; readonly logFile: string }[];
  readonly timeoutMs: number;
}

/** Options for {@link waitForServices}. */
export interface WaitOptions {
  /** Replicas of a service (by name) that were running before, which answer the ping too. */
  running?: ReadonlyMap<string, number>;
  timeoutMs?: number;
  /** Called once per service when every replica of it answers, with the seconds since the wait began. */
  onReady?: (service: MeshService, processes: readonly ServiceProcess[], seconds: number) => void;
}

/**
 * Waits until every service of `started` answers a NATS micro-service ping with as many instances as it has
 * replicas running, i.e. it consumes and is discoverable. A started process that exits first fails its service
 * at once; the others are still waited for, up to `timeoutMs`.
 */
export async function waitForServices(nc: NatsConnection, started: readonly ServiceProcess[], opts: WaitOptions = {}): Promise<Readiness> {
  const pingWindow: RequestManyOptions = { strategy: "timer", maxWait: 500 };
  const client = new Svcm(nc).client(pingWindow);
  const begun = performance.now();
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  const waiting = new Map<string, ServiceProcess[]>();
  for (const p of started) waiting.set(p.service.name, [...(waiting.get(p.service.name) ?? []), p]);
  const failed: { process: ServiceProcess; exit: string }[] = [];
  while (waiting.size > 0 && Date.now() <= deadline) {
    for (const [name, processes] of waiting) {
      const dead = processes.filter((p) => p.child.exitCode !== null || p.child.signalCode !== null);
      if (dead.length === 0) continue;
      failed.push(...dead.map((p) => ({ process: p, exit: p.child.signalCode ?? `code ${p.child.exitCode}` })));
      waiting.delete(name);
    }
    // Counted per micro-service name and version: a principal's versions side by side register under one name
    // (researcher 1.0.0 and researcher 1.1.0), and each is ready only when its own processes answer.
    const answers: { name: string; version: string }[] = [];
    try {
      for await (const info of await client.ping()) answers.push({ name: info.name, version: info.version });
    } catch {
      // No service registered yet: nobody answers the ping. Ask again shortly.
      await delay(100);
    }
    for (const [name, processes] of waiting) {
      const service = processes[0]!.service;
      if (answering(service, answers) < processes.length + (opts.running?.get(name) ?? 0)) continue;
      waiting.delete(name);
      opts.onReady?.(service, processes, (performance.now() - begun) / 1000);
    }
  }
  return { failed, late: [...waiting.values()].map(([p]) => ({ service: p!.service, logFile: p!.logFile })), timeoutMs };
}

/**
 * How many of `answers` are processes of `service`: of its micro service and, for a version of `versions`, that
 * version; for the principal's own entry, any version its `versions` does not declare (an agent's definition
 * says its version: services/kit/agent-process.ts refuses an entry that runs a declared one).
 */
function answering(service: MeshService, answers: readonly { name: string; version: string }[]): number {
  const declared = new Set(Object.keys(defaultLayout().principals.principals[service.principal]?.versions ?? {}));
  return answers.filter((a) => a.name === service.service && (service.version !== undefined ? a.version === service.version : !declared.has(a.version))).length;
}

/** Why `readiness` is not all ready, one line per process or service, each naming its log; empty when all are. */
export function readinessProblems(readiness: Readiness): string[] {
  return [
    ...readiness.failed.map(({ process: p, exit }) => `${p.service.name}.${p.replica} exited (${exit}) before it answered${lastLine(p) ? `: ${lastLine(p)}` : ""}; log ${shown(p.logFile)}`),
    ...readiness.late.map((l) => `${l.service.name} did not answer within ${readiness.timeoutMs / 1000} s; log ${shown(l.logFile)}`),
  ];
}

/** How much of a log's last line {@link lastLine} shows when the process printed no reason of its own. */
const OTHER_LINE_MAX = 300;

/**
 * Why `process` stopped, from what it wrote to its log: the line a failed start prints on stderr
 * (`<principal>: <reason>`), whole — its hint is the fix, a cut one is no use — else its last line (a stack
 * trace's, a JSON log line), cut after {@link OTHER_LINE_MAX} characters with "…".
 */
function lastLine(process: ServiceProcess): string {
  try {
    const lines = readFileSync(process.logFile).subarray(process.logOffset).toString("utf8").trimEnd().split("\n");
    const reason = lines.findLast((l) => l.startsWith(`${process.service.principal}: `));
    if (reason !== undefined) return reason;
    const last = lines.at(-1) ?? "";
    return last.length > OTHER_LINE_MAX ? `${last.slice(0, OTHER_LINE_MAX)}…` : last;
  } catch {
    return "";
  }
}

/** A replica recorded in a pid file, checked against the process table. */
export interface RecordedReplica {
  readonly name: string;
  readonly replica: number;
  readonly pidFile: PidFileState;
}

/** Every replica with a pid file (of `name`, or of every service, whether infra still declares it or not), by name and replica. */
export function recordedReplicas(data: string, name?: string): RecordedReplica[] {
  const dir = pidDir(data);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((file) => {
    // `<service>.<replica>.pid`, the service `<principal>` or `<principal>@<version>` (a version has dots of its own).
    const m = /^([a-z0-9][a-z0-9_-]*(?:@[0-9A-Za-z.-]+)?)\.([1-9][0-9]*)\.pid$/.exec(file);
    if (!m || (name !== undefined && m[1] !== name)) return [];
    return [{ name: m[1]!, replica: Number(m[2]), pidFile: readPidFile(join(dir, file)) }];
  }).sort((a, b) => a.name.localeCompare(b.name) || a.replica - b.replica);
}

/** A cluster node recorded in a pid file, checked against the process table. */
export interface RecordedNode {
  /** Its server_name, `causeway-<i>`. */
  readonly name: string;
  /** i. */
  readonly index: number;
  readonly pidFile: PidFileState;
}

/** Every cluster node with a pid file, in node order. */
export function recordedNodes(data: string): RecordedNode[] {
  const dir = clusterDir(data);
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((file) => {
    const name = file.endsWith(".pid") ? file.slice(0, -4) : "";
    if (!isNodeName(name)) return [];
    return [{ name, index: Number(name.slice(CLUSTER_NAME.length + 1)), pidFile: readPidFile(join(dir, file)) }];
  }).sort((a, b) => a.index - b.index);
}

/**
 * Environment the services of `causeway up|start|restart` get beyond their URL and data directory. While the
 * nodes of `up --cluster` run, lineage's SQLite store is `<data>/nats/cluster/lineage/lineage.db`: a store indexes
 * one set of streams, and the cluster's are not the single server's (lineage refuses a store that recorded more
 * than the streams hold). An explicit LINEAGE_SQLITE_PATH or LINEAGE_DATABASE_URL is kept.
 */
export function serviceEnv(data: string): NodeJS.ProcessEnv {
  const clustered = recordedNodes(data).some((n) => n.pidFile.state === "running");
  const chosen = Boolean(process.env.LINEAGE_SQLITE_PATH) || Boolean(process.env.LINEAGE_DATABASE_URL);
  return clustered && !chosen ? { LINEAGE_SQLITE_PATH: join(clusterDir(data), "lineage", "lineage.db") } : {};
}
