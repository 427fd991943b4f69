// The reference agents as child processes, as an operator would run them: one process per agent, each
// connected as its own principal, telemetry loaded first with --import. Used by `causeway demo` and `up`.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, openSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Svcm } from "@nats-io/services";
import type { NatsConnection, RequestManyOptions } from "@nats-io/transport-node";
import { repoRoot } from "./nats-process.ts";

/** The reference workflow's agents, in flow order. */
export const REFERENCE_AGENTS = ["planner", "researcher", "verifier", "reporter"] as const;
/** Every service of the mesh `make demo` and `make up` run: the coordinator, then the agents. */
export const MESH_SERVICES = ["coordinator", "lineage", "gateway", ...REFERENCE_AGENTS, "publisher"] as const;

/** The process entry of a service: the coordinator's, or an agent's under services/agents/. */
function entryOf(name: string): string {
  return MESH_INFRA_SERVICES.has(name) ? join(repoRoot, "services", name, "main.ts") : join(repoRoot, "services", "agents", name, "main.ts");
}

/** Services with their own folder under services/ (the rest are agents under services/agents/). */
const MESH_INFRA_SERVICES: ReadonlySet<string> = new Set(["coordinator", "lineage", "gateway"]);

/** A started agent process. */
export interface AgentProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  /** SIGTERM and wait for the drain (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<number | null>;
}

/** Options for {@link spawnAgents}. */
export interface SpawnAgentsOptions {
  natsUrl: string;
  dataDir: string;
  /** Directory of the agents' log files. */
  logDir: string;
  /** Extra environment for every agent (deadlines, log level). */
  env?: NodeJS.ProcessEnv;
  /** Let the processes outlive this one (`causeway up`). Default false. */
  detached?: boolean;
}

/** Starts `names` as child processes; their JSON logs go to `<logDir>/<name>.log`. */
export function spawnAgents(names: readonly string[], opts: SpawnAgentsOptions): AgentProcess[] {
  mkdirSync(opts.logDir, { recursive: true });
  return names.map((name) => {
    const logFile = join(opts.logDir, `${name}.log`);
    const out = openSync(logFile, "a");
    const child = spawn(process.execPath, ["--import", join(repoRoot, "services", "kit", "telemetry.ts"), entryOf(name)], {
      env: { ...process.env, ...opts.env, NATS_URL: opts.natsUrl, CAUSEWAY_DATA_DIR: opts.dataDir, CAUSEWAY_PRINCIPAL: name },
      stdio: ["ignore", out, out],
      detached: opts.detached ?? false,
    });
    if (opts.detached) child.unref();
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    return {
      name, child, logFile,
      async stop(graceMs = 10_000) {
        if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        const code = await exited;
        clearTimeout(timer);
        return code;
      },
    };
  });
}

/**
 * Resolves once every named agent answers a NATS micro-service ping, i.e. it consumes and is discoverable;
 * rejects naming the agents still missing (and pointing at their logs) after `timeoutMs`, or at once when one
 * of `processes` exits.
 */
export async function waitForAgents(nc: NatsConnection, processes: readonly AgentProcess[], timeoutMs = 20_000): Promise<void> {
  const pingWindow: RequestManyOptions = { strategy: "timer", maxWait: 500 };
  const client = new Svcm(nc).client(pingWindow);
  const deadline = Date.now() + timeoutMs;
  const missing = new Set(processes.map((p) => p.name));
  while (missing.size > 0) {
    const dead = processes.find((p) => p.child.exitCode !== null);
    if (dead) throw new Error(`${dead.name} exited with code ${dead.child.exitCode}; see ${dead.logFile}`);
    if (Date.now() > deadline) {
      throw new Error(`${[...missing].join(", ")} did not start within ${timeoutMs / 1000} s; see ${processes.filter((p) => missing.has(p.name)).map((p) => p.logFile).join(", ")}`);
    }
    try {
      for await (const info of await client.ping()) missing.delete(info.name);
    } catch {
      // No service registered yet: nobody answers the ping. Ask again shortly.
      await delay(100);
    }
  }
}
