// A 3-node JetStream cluster on loopback for replication and failover tests.
import { createServer } from "node:net";
import type { JetStreamManager, StreamInfo } from "@nats-io/jetstream";
import { waitForCluster } from "../../services/cli/nats-process.ts";
import { startServer, type NatsServer, type ServerOptions } from "./server.ts";
import { waitFor } from "./wait.ts";

/** A running cluster. Dispose it to stop every node and remove every directory. */
export interface NatsCluster extends AsyncDisposable {
  readonly nodes: readonly NatsServer[];
  /** Client URLs of all nodes, for `servers:` in connection options. */
  readonly urls: string[];
}

/** Options for {@link startCluster}. */
export interface ClusterOptions {
  /** Number of nodes. Default 3. */
  size?: number;
  /** Extra configuration for every node (accounts, authorization). */
  config?: ServerOptions["config"];
}

/**
 * Starts `size` nodes with a full route mesh. JetStream clustering refuses to start without configured
 * routes, so the route ports are allocated by the OS up front (bind port 0, read it, release it); client
 * and monitoring ports still come from each node's ports file. Resolves when every node's /healthz is ok and
 * the nodes have formed one JetStream meta group: the same leader on every node, every peer current (the wait
 * `causeway up --cluster` does, `waitForCluster`).
 */
export async function startCluster(opts: ClusterOptions = {}): Promise<NatsCluster> {
  const size = opts.size ?? 3;
  const clusterName = `causeway_c${process.pid}_${Date.now().toString(36)}`;
  const nodes: NatsServer[] = [];
  const dispose = async () => {
    await Promise.all(nodes.map((n) => n[Symbol.asyncDispose]()));
  };
  try {
    const routePorts = await Promise.all(Array.from({ length: size }, freePort));
    const routes = routePorts.map((p) => `nats-route://127.0.0.1:${p}`);
    for (const [i, port] of routePorts.entries()) {
      nodes.push(await startServer({ cluster: { name: clusterName, routes, port }, config: opts.config, name: `${clusterName}_n${i + 1}`, waitHealthy: false }));
    }
    await Promise.all(nodes.map((n) => n.healthy(30_000)));
    await waitForCluster(nodes.map((n) => n.monitorUrl), { timeoutMs: 30_000 });
  } catch (err) {
    await dispose();
    throw err;
  }
  return { nodes, urls: nodes.map((n) => n.url), [Symbol.asyncDispose]: dispose };
}

/** A port the OS reports free on 127.0.0.1 (bound to 0, read, released): for ports a config must name up front. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Whether nothing listens on 127.0.0.1:`port` (bound and released). */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** A first port of `count` consecutive free ones (node i of a cluster uses base + i - 1). */
export async function freeRun(count: number): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await portFree(base + i);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

/** Stream info of an R3 stream once it has a leader and both followers are current, with its config and cluster view. */
export async function replicatedInfo(jsm: JetStreamManager, name: string): Promise<StreamInfo> {
  return waitFor(async () => {
    const info = await jsm.streams.info(name);
    const replicas = info.cluster?.replicas ?? [];
    return info.cluster?.leader !== undefined && replicas.length === 2 && replicas.every((r) => r.current) ? info : undefined;
  }, { what: `${name} to have a leader and two current followers`, timeoutMs: 20_000 });
}
