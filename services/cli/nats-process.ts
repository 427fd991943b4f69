// Runs the pinned nats-server for the CLI (`causeway demo`, `causeway up`): spawn with a config file, learn
// the ports from the ports file, wait for /healthz. Never a system nats-server: Debian's 2.9 is too old.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { ConfigError, ErrorCode } from "../kit/index.ts";

/** The repository root. */
export const repoRoot = resolve(import.meta.dirname, "..", "..");

/** Absolute path of a pinned NATS binary; a ConfigError says to run `make tools` when it is missing. */
export function natsBinary(name: "nats-server" | "nats"): string {
  const path = join(process.env.CAUSEWAY_TOOLS_BIN ?? join(repoRoot, ".tools", "bin"), name);
  if (!existsSync(path)) throw new ConfigError(ErrorCode.Config, `${name} not found at ${path}: run \`make tools\``);
  return path;
}

/** A nats-server started by {@link spawnNatsServer}. */
export interface NatsProcess {
  readonly url: string;
  readonly monitorUrl: string;
  readonly pid: number;
  readonly child: ChildProcess;
  /** stderr lines so far, for error messages. */
  logs(): string;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/** Options for {@link spawnNatsServer}. */
export interface SpawnOptions {
  /** Configuration file. */
  configPath: string;
  /** Where the server writes its ports file (passed as --ports_file_dir), from which the URLs are learnt. */
  portsDir: string;
  /** Let the server outlive this process (`causeway up`). Default false. */
  detached?: boolean;
  /** Where a detached server's log goes. */
  logFile?: string;
  timeoutMs?: number;
  /**
   * Wait for /healthz before resolving. Default true. A cluster node cannot be healthy until enough of its peers
   * run to elect a JetStream meta leader: start every node without waiting, then {@link waitForCluster}.
   */
  waitHealthy?: boolean;
  /**
   * A command the server runs under, which must exec its arguments in place so the pid stays the server's: the
   * chaos suite runs each node in a network namespace of its own with `["ip", "netns", "exec", <namespace>]`.
   */
  runUnder?: readonly string[];
}

/** Starts nats-server and resolves when it reports healthy, with its URLs read from the ports file. */
export async function spawnNatsServer(opts: SpawnOptions): Promise<NatsProcess> {
  mkdirSync(opts.portsDir, { recursive: true });
  for (const f of readdirSync(opts.portsDir)) if (f.endsWith(".ports")) rmSync(join(opts.portsDir, f));
  const args = ["-c", opts.configPath, "--ports_file_dir", opts.portsDir, ...(opts.logFile ? ["-l", opts.logFile] : [])];
  const command = [...(opts.runUnder ?? []), natsBinary("nats-server"), ...args];
  const child = spawn(command[0]!, command.slice(1), { stdio: ["ignore", "ignore", opts.detached ? "ignore" : "pipe"], detached: opts.detached ?? false });
  let log = "";
  child.stderr?.setEncoding("utf8").on("data", (c: string) => { log += c; });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  const failed = () => child.exitCode !== null || child.signalCode !== null;
  const portsFile = join(opts.portsDir, `nats-server_${child.pid}.ports`);
  let ports: { nats?: string[]; monitoring?: string[] } | undefined;
  while (!ports?.nats?.[0] || !ports.monitoring?.[0]) {
    if (failed()) throw new ConfigError(ErrorCode.Config, `nats-server exited at startup (code ${child.exitCode}):\n${log || readLog(opts.logFile)}`);
    if (Date.now() > deadline) throw new ConfigError(ErrorCode.Config, `nats-server wrote no ports file within ${opts.timeoutMs ?? 20_000} ms`);
    try {
      ports = JSON.parse(readFileSync(portsFile, "utf8")) as typeof ports;
    } catch {
      await delay(20);
    }
  }
  const monitorUrl = ports.monitoring[0].replace(/\/$/, "");
  while ((opts.waitHealthy ?? true) && !(await fetch(`${monitorUrl}/healthz`).then((r) => r.ok, () => false))) {
    if (failed() || Date.now() > deadline) throw new ConfigError(ErrorCode.Config, `nats-server did not become healthy:\n${log || readLog(opts.logFile)}`);
    await delay(20);
  }
  if (opts.detached) child.unref();
  return {
    url: ports.nats[0],
    monitorUrl,
    pid: child.pid!,
    child,
    logs: () => log,
    async stop() {
      if (failed()) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

function readLog(file: string | undefined): string {
  try {
    return file ? readFileSync(file, "utf8").split("\n").slice(-20).join("\n") : "";
  } catch {
    return "";
  }
}

/** A formed cluster, as {@link waitForCluster} found it. */
export interface ClusterState {
  /** The JetStream meta leader's server name, the same on every node. */
  readonly leader: string;
  /** Peers of the JetStream meta group. */
  readonly size: number;
}

/**
 * Waits until the nodes behind `monitorUrls` form one JetStream cluster: every node's /healthz is ok, and every
 * node's /jsz names the same meta leader in a meta group of all of them with every peer current. `alive` is
 * asked on every round and ends the wait at once with its problem (a node that exited). ConfigError
 * CW_ERR_UNAVAILABLE after `timeoutMs` (default 30 s), with what each node reported last.
 */
export async function waitForCluster(monitorUrls: readonly string[], opts: { timeoutMs?: number; alive?: () => string | undefined } = {}): Promise<ClusterState> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let last: string[] = [];
  for (;;) {
    const problem = opts.alive?.();
    if (problem !== undefined) throw new ConfigError(ErrorCode.Unavailable, problem);
    const views = await Promise.all(monitorUrls.map((url) => clusterView(url)));
    last = views.map((v, i) => `${monitorUrls[i]}: ${v.state}`);
    const leaders = new Set(views.map((v) => v.leader));
    const first = views[0];
    // Only the leader knows whether every follower is current (a follower reports the others as not current).
    if (first?.leader !== undefined && leaders.size === 1 && views.every((v) => v.healthy && v.size === monitorUrls.length) && views.some((v) => v.current)) {
      return { leader: first.leader, size: first.size! };
    }
    if (Date.now() > deadline) {
      throw new ConfigError(ErrorCode.Unavailable, `the ${monitorUrls.length} nodes did not form a JetStream cluster within ${timeoutMs / 1000} s:\n  ${last.join("\n  ")}`);
    }
    await delay(50);
  }
}

interface NodeView {
  readonly healthy: boolean;
  readonly leader: string | undefined;
  readonly size: number | undefined;
  /** It sees every other peer of the meta group as current: true on the leader once all followers caught up. */
  readonly current: boolean;
  readonly state: string;
}

async function clusterView(monitorUrl: string): Promise<NodeView> {
  const get = (path: string) => fetch(`${monitorUrl}${path}`, { signal: AbortSignal.timeout(1_000) });
  try {
    const healthy = (await get("/healthz")).ok;
    const jsz = await (await get("/jsz")).json() as { meta_cluster?: { leader?: string; cluster_size?: number; replicas?: { name: string; current?: boolean }[] } };
    const meta = jsz.meta_cluster;
    const leader = meta?.leader === "" ? undefined : meta?.leader;
    const peers = meta?.replicas ?? [];
    const current = meta?.cluster_size !== undefined && peers.length === meta.cluster_size - 1 && peers.every((r) => r.current === true);
    return { healthy, leader, size: meta?.cluster_size, current, state: `healthz ${healthy ? "ok" : "not ok"}, meta leader ${leader ?? "none"}, ${meta?.cluster_size ?? 0} peers${current ? ", all current" : ""}` };
  } catch (err) {
    return { healthy: false, leader: undefined, size: undefined, current: false, state: `unreachable (${(err as Error).message})` };
  }
}
