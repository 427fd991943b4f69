// A real nats-server per test: random ports learnt from the ports file, a temporary store directory,
// readiness by probing /healthz, and cleanup (kill + remove) through Symbol.asyncDispose.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { toolPath } from "./binaries.ts";
import { waitFor } from "./wait.ts";

/** Options for {@link startServer}. */
export interface ServerOptions {
  /** Extra nats-server configuration text (accounts, authorization). Default none. */
  config?: string;
  /**
   * Configuration files to include, by absolute path (nats-server resolves an `include` relative to the including
   * file, so the harness writes each relative to its config). A reload re-reads them. Default none.
   */
  include?: readonly string[];
  /** Enable JetStream. Default true. */
  jetstream?: boolean;
  /** server_name; defaults to a unique name. */
  name?: string;
  /**
   * Cluster settings, set by {@link startCluster}. `advertise`: the route address the node tells its peers to
   * reach it at (`host:port`), e.g. a proxy's that a test can cut.
   */
  cluster?: { name: string; routes: string[]; port?: number; advertise?: string };
  /** Reuse these ports (restarts keep their addresses so routes and clients find the node again). */
  ports?: { client?: number; monitor?: number };
  /** Reuse this store directory (restarts keep their data). Default: a new temporary directory. */
  storeDir?: string;
  /** Milliseconds to wait for readiness. Default 20000. */
  readyTimeoutMs?: number;
  /**
   * Wait for /healthz before resolving. Default true. The cluster helper turns it off for the first start,
   * because a lone clustered node cannot be healthy until its peers join and elect a meta leader.
   */
  waitHealthy?: boolean;
}

/** A running nats-server. Dispose it (`await using`) to kill it and remove its directories. */
export interface NatsServer extends AsyncDisposable {
  /** Client URL, e.g. nats://127.0.0.1:41234. */
  readonly url: string;
  readonly port: number;
  /** Monitoring base URL (http://127.0.0.1:port). */
  readonly monitorUrl: string;
  /** Cluster route URL when clustered. */
  readonly clusterUrl: string | undefined;
  readonly name: string;
  readonly storeDir: string;
  /** The generated configuration file. */
  readonly configPath: string;
  readonly pid: number;
  /** Resolves once /healthz reports the server (and its JetStream) ready. */
  healthy(timeoutMs?: number): Promise<void>;
  /** Stops the process (SIGTERM, then SIGKILL); keeps the store directory. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Starts the process again on the same ports with the same store. */
  restart(): Promise<void>;
  /** Lines the server logged (stderr), for diagnosing a failed test. */
  logs(): string;
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

let counter = 0;

/** Starts a nats-server and resolves once its /healthz reports ready. */
export async function startServer(opts: ServerOptions = {}): Promise<NatsServer> {
  const workDir = mkdtempSync(join(tmpdir(), "causeway-nats-"));
  const storeDir = opts.storeDir ?? join(workDir, "store");
  const name = opts.name ?? `causeway_test_${process.pid}_${++counter}`;
  const configPath = join(workDir, "server.conf");
  const jetstream = opts.jetstream ?? true;
  let ports = { client: opts.ports?.client ?? -1, monitor: opts.ports?.monitor ?? -1, cluster: opts.cluster?.port ?? -1 };

  const writeConfig = () => {
    const lines = [
      `server_name: "${name}"`,
      `listen: "127.0.0.1:${ports.client}"`,
      `http: "127.0.0.1:${ports.monitor}"`,
      `ports_file_dir: "${workDir}"`,
      jetstream ? `jetstream { store_dir: "${storeDir}", max_memory_store: 256MB, max_file_store: 2GB }` : "",
      opts.cluster
        ? `cluster { name: "${opts.cluster.name}", listen: "127.0.0.1:${ports.cluster}", routes: [${opts.cluster.routes.map((r) => `"${r}"`).join(", ")}]` +
          `${opts.cluster.advertise ? `, advertise: "${opts.cluster.advertise}"` : ""} }`
        : "",
      opts.config ?? "",
      ...(opts.include ?? []).map((file) => `include ${JSON.stringify(relative(workDir, file))}`),
    ];
    writeFileSync(configPath, lines.join("\n") + "\n");
  };

  let child: ChildProcess;
  let log = "";
  let exited: Promise<void>;
  // Aborted when the current process exits, so every wait on it ends at once instead of timing out.
  let gone: AbortController;
  let current: { url: string; port: number; monitorUrl: string; clusterUrl: string | undefined };

  const launch = async () => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) {
      throw new Error(`${name} is still running: stop() it before restart()`);
    }
    for (const f of readdirSync(workDir)) if (f.endsWith(".ports")) rmSync(join(workDir, f));
    writeConfig();
    child = spawn(toolPath("nats-server"), ["-c", configPath], { stdio: ["ignore", "ignore", "pipe"] });
    live.add(child);
    child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      log += chunk;
    });
    const proc = child;
    const controller = new AbortController();
    gone = controller;
    exited = new Promise((resolve) => proc.once("exit", () => {
      live.delete(proc);
      controller.abort(new Error(`nats-server ${name} exited (code ${proc.exitCode}, signal ${proc.signalCode}):\n${log}`));
      resolve();
    }));
    const portsFile = join(workDir, `nats-server_${proc.pid}.ports`);
    const found = await waitFor(() => readPorts(portsFile), {
      timeoutMs: opts.readyTimeoutMs ?? 20_000, what: `ports file of ${name}`, signal: controller.signal,
    });
    const port = Number(new URL(found.client).port);
    const monitorUrl = found.monitoring.replace(/\/$/, "");
    current = { url: found.client, port, monitorUrl, clusterUrl: found.cluster };
    ports = { client: port, monitor: Number(new URL(monitorUrl).port), cluster: found.cluster ? Number(new URL(found.cluster).port) : -1 };
  };

  // Clustered nodes report healthy only once the JetStream meta group has a leader.
  const healthy = async (timeoutMs = opts.readyTimeoutMs ?? 20_000) => {
    await waitFor(async () => {
      const res = await fetch(`${current.monitorUrl}/healthz`, { signal: AbortSignal.timeout(1_000) }).catch(() => undefined);
      return res?.ok === true;
    }, { timeoutMs, what: `/healthz of ${name}`, signal: gone.signal }).catch((err: Error) => {
      throw new Error(`${err.message}\n${log}`, { cause: err });
    });
  };

  const stop = async (signal: NodeJS.Signals = "SIGTERM") => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(timer);
  };

  const removeDirs = () => {
    rmSync(workDir, { recursive: true, force: true });
    if (opts.storeDir === undefined) rmSync(storeDir, { recursive: true, force: true });
  };
  try {
    await launch();
    if (opts.waitHealthy ?? true) await healthy();
  } catch (err) {
    // A failed start leaves nothing behind: no process, no directories.
    if (child! !== undefined) await stop("SIGKILL");
    removeDirs();
    throw err;
  }

  return {
    get url() { return current.url; },
    get port() { return current.port; },
    get monitorUrl() { return current.monitorUrl; },
    get clusterUrl() { return current.clusterUrl; },
    get pid() { return child.pid!; },
    name,
    storeDir,
    configPath,
    stop,
    healthy,
    async restart() {
      await launch();
      await healthy();
    },
    logs: () => log,
    async [Symbol.asyncDispose]() {
      await stop("SIGKILL");
      removeDirs();
    },
  };
}

interface PortsFile {
  client: string;
  monitoring: string;
  cluster: string | undefined;
}

function readPorts(path: string): PortsFile | undefined {
  let raw: string;
  try {
    raw = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  const parsed = JSON.parse(raw) as { nats?: string[]; monitoring?: string[]; cluster?: string[] };
  const client = parsed.nats?.[0];
  const monitoring = parsed.monitoring?.[0];
  if (!client || !monitoring) return undefined;
  return { client, monitoring, cluster: parsed.cluster?.[0] };
}
