// A mesh as operators run it, for process-level tests: a nats-server with the rendered least-privilege
// accounts, streams, buckets and trust store applied as the operator, agents as child processes that connect
// with their own identities. Everything lives in a temporary data dir and is removed on dispose.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { Role, connectAs, defaultLayout, loadPrincipals, openTrustStore, type Principals, type TrustStore } from "../services/kit/index.ts";
import { applyMeshInfra, ensureIdentities, seedTrust } from "../services/cli/bootstrap.ts";
import { renderInfra } from "../services/cli/commands/infra.ts";
import { startServer, repoRoot, type NatsServer } from "./harness/index.ts";

/**
 * The reference workflow's agents up to the report, in principals.json order: every agent service of the layout
 * that serves no critical capability (the publisher's work waits for a coordinator grant).
 */
export const REFERENCE_AGENTS: readonly string[] = (() => {
  const { principals, services } = defaultLayout();
  const critical = (ref: string) => principals.capabilities[ref]?.critical === true;
  return services.filter((s) => s.role === Role.Agent && !principals.principals[s.name]!.serves.some(critical)).map((s) => s.name);
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

/**
 * `principals`: another principals document than infra/principals.json (a test's extra agent). `serverConfig`:
 * more nats-server configuration, e.g. `feature_flags { js_ack_fc_v2: true }`.
 */
export async function startOperatedMesh(opts: { principals?: Principals; serverConfig?: string } = {}): Promise<OperatedMesh> {
  const dataDir = mkdtempSync(join(tmpdir(), "causeway-e2e-"));
  const principals = opts.principals ?? loadPrincipals();
  ensureIdentities(principals, dataDir);
  const accounts = renderInfra({ dataDir, principals, out: join(dataDir, "accounts.conf") });
  const server = await startServer({ config: `max_payload: 2MB\n${opts.serverConfig ?? ""}\n${accounts.text}` });
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
      await trust.close();
      for (const nc of connections) await nc.close().catch(() => undefined);
      await server[Symbol.asyncDispose]();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
