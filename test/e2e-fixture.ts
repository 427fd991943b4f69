// A mesh as operators run it, for process-level tests: a nats-server with the rendered least-privilege
// accounts, streams, buckets and trust store applied as the operator, agents as child processes that connect
// with their own identities. Everything lives in a temporary data dir and is removed on dispose.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { Role, connectAs, defaultLayout, loadPrincipals, openTrustStore, type Principals, type TrustStore } from "../services/kit/index.ts";
import { applyMeshInfra, ensureIdentities, seedTrust } from "../services/cli/bootstrap.ts";
import { renderInfra } from "../services/cli/commands/infra.ts";
import { isRecordedAlive } from "../services/cli/pid-files.ts";
import { recordedReplicas } from "../services/cli/processes.ts";
import { startServer, repoRoot, type NatsServer } from "./harness/index.ts";

/**
 * The reference workflow's agents up to the report, in the order work reaches them: the agents serving what the
 * gateway addresses, then what those address, and so on, stopping at critical capabilities (the publisher's work
 * waits for a coordinator grant). Derived from infra/principals.json, so an agent that joins elsewhere (one
 * `causeway new agent` added) is not part of it.
 */
export const REFERENCE_AGENTS: readonly string[] = (() => {
  const { principals, services } = defaultLayout();
  const agents = services.filter((s) => s.role === Role.Agent).map((s) => principals.principals[s.name]!);
  const gateway = Object.values(principals.principals).find((p) => p.role === Role.Gateway)!;
  const chain: string[] = [];
  const seen = new Set<string>();
  for (const frontier = [...gateway.addresses]; frontier.length > 0;) {
    const ref = frontier.shift()!;
    if (seen.has(ref) || principals.capabilities[ref]?.critical) continue;
    seen.add(ref);
    for (const agent of agents.filter((a) => a.serves.includes(ref) && !chain.includes(a.name))) {
      chain.push(agent.name);
      frontier.push(...agent.addresses);
    }
  }
  return chain;
})();

/** An agent's entry point (relative to the repository), from the layout. */
export const agentScript = (name: string): string => defaultLayout().service(name).entry;

export interface OperatedMesh extends AsyncDisposable {
  readonly server: NatsServer;
  readonly dataDir: string;
  /** The operator's connection. */
  readonly operator: NatsConnection;
  readonly trust: TrustStore;
  /** Connects as `principal` with its own seed and inbox. */
  as(principal: string): Promise<NatsConnection>;
  /** Starts `script` (a path under the repo) as a process; stdout lines are collected. */
  spawn(script: string, env?: NodeJS.ProcessEnv): SpawnedProcess;
}

export interface SpawnedProcess {
  readonly child: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  readonly exited: Promise<number | null>;
}

/** Options of {@link startOperatedMesh}. */
export interface OperatedMeshOptions {
  /**
   * Render the accounts where `causeway infra render` writes them, `<data>/nats/accounts.conf`, and have the server
   * include that file (as a mesh whose accounts `causeway principal add` re-renders and reloads); default: inline.
   */
  includeAccounts?: boolean;
  /** Another principals document than infra/principals.json (a test's extra agent). */
  principals?: Principals;
  /** More nats-server configuration, e.g. `feature_flags { js_ack_fc_v2: true }`. */
  serverConfig?: string;
}

export async function startOperatedMesh(opts: OperatedMeshOptions = {}): Promise<OperatedMesh> {
  const dataDir = mkdtempSync(join(tmpdir(), "causeway-e2e-"));
  const principals = opts.principals ?? loadPrincipals();
  ensureIdentities(principals, dataDir);
  const accounts = renderInfra({ dataDir, principals, out: join(dataDir, "nats", "accounts.conf") });
  const config = `max_payload: 2MB\n${opts.serverConfig ?? ""}`;
  const server = await startServer(opts.includeAccounts ? { config, include: [accounts.path] } : { config: `${config}\n${accounts.text}` });
  const children: ChildProcess[] = [];
  const connections: NatsConnection[] = [];
  const as = async (principal: string) => {
    const nc = await connectAs(principal, { servers: server.url, dataDir });
    connections.push(nc);
    return nc;
  };
  const operator = await as("operator");
  await applyMeshInfra(operator);
  await seedTrust(operator, principals, dataDir);
  const trust = await openTrustStore(operator);
  return {
    server, dataDir, operator, trust, as,
    spawn(script, env = {}) {
      const child = spawn(process.execPath, [join(repoRoot, script)], {
        env: { ...process.env, NATS_URL: server.url, CAUSEWAY_DATA_DIR: dataDir, LOG_LEVEL: "warn", ...env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      children.push(child);
      let out = "";
      child.stdout!.setEncoding("utf8").on("data", (c: string) => { out += c; });
      child.stderr!.setEncoding("utf8").on("data", (c: string) => { out += c; });
      const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
      return { child, output: () => out, exited };
    },
    async [Symbol.asyncDispose]() {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      // And what `causeway start` ran detached in this data dir: a failed test must not leak processes.
      // Supervisors first, or they would start again what is killed after them.
      for (const r of recordedReplicas(dataDir)) {
        const { record } = r.pidFile;
        for (const p of [record?.supervisor, r.pidFile.state === "running" ? record : undefined]) if (p && isRecordedAlive(p)) process.kill(p.pid, "SIGKILL");
      }
      await trust.close();
      for (const nc of connections) await nc.close().catch(() => undefined);
      await server[Symbol.asyncDispose]();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** What a run of the `causeway` command printed, and its exit code. */
export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the real `causeway` command (services/cli/main.ts of `root`, default this repository) with `env`. */
export function runCli(args: readonly string[], env: NodeJS.ProcessEnv, root: string = repoRoot): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(root, "services/cli/main.ts"), ...args], { env, cwd: root, timeout: 90_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}
