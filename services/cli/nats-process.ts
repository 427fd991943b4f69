// Runs the pinned nats-server for the CLI (`causeway demo`, `causeway up`): spawn with a config file, learn
// the ports from the ports file, wait for /healthz. Never a system nats-server: Debian's 2.9 is too old.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
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
}

/** Starts nats-server and resolves when it reports healthy, with its URLs read from the ports file. */
export async function spawnNatsServer(opts: SpawnOptions): Promise<NatsProcess> {
  for (const f of readdirSync(opts.portsDir)) if (f.endsWith(".ports")) rmSync(join(opts.portsDir, f));
  const args = ["-c", opts.configPath, "--ports_file_dir", opts.portsDir, ...(opts.logFile ? ["-l", opts.logFile] : [])];
  const child = spawn(natsBinary("nats-server"), args, { stdio: ["ignore", "ignore", opts.detached ? "ignore" : "pipe"], detached: opts.detached ?? false });
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
  while (!(await fetch(`${monitorUrl}/healthz`).then((r) => r.ok, () => false))) {
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
