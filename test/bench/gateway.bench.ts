// Gateway benchmarks (issue 6): accepted events per second through the gateway process, over HTTP (keep-alive,
// the load generator in a second process) and over NATS (raw events on mesh.ingest, counted when routed to
// MESH_CAP), against a hand-written JetStream publisher of the same signed events — sign as the gateway,
// publish to mesh.cap.plan.v1 with a msg id, 256 in flight — in the same second process, same run, alternating.
// For reference it also measures that publisher through the gateway's own publish path (the kit's
// StreamPublisher, no async traces), so the notes say how much of the ratio the client library accounts for.
import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { startGatewayMesh } from "../gateway-fixture.ts";
import { repoRoot, waitFor } from "../harness/index.ts";
import { compare, type Comparison } from "./measure.ts";

const ROUND = 4000;
const WORKERS = Math.min(2, availableParallelism());

export async function gatewayThroughput(): Promise<{ results: Comparison[]; notes: string[] }> {
  // The gateway as it would run on this machine: one worker per core, up to two (CAUSEWAY_GATEWAY_WORKERS). Its
  // tenant's quotas are counted (one compare-and-set in KV causeway_quotas per flow, admission.ts) but never reached.
  const dir = mkdtempSync(join(tmpdir(), "causeway-bench-"));
  await using _dir = { [Symbol.asyncDispose]: () => Promise.resolve(rmSync(dir, { recursive: true, force: true })) }; // after the gateway stops
  const tenants = join(dir, "tenants.json");
  writeFileSync(tenants, JSON.stringify({ tenants: { demo: { description: "bench", quotas: { period: "day", flows: 1e12, cost: 1e15 } }, batch: { description: "bench" } } }));
  await using g = await startGatewayMesh({ rate: { per_second: 1_000_000, burst: 1_000_000 }, env: { LOG_LEVEL: "warn", CAUSEWAY_GATEWAY_WORKERS: String(WORKERS), CAUSEWAY_TENANTS: tenants, ...(process.env.GATEWAY_PROF ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.GATEWAY_PROF}` } : {}) } });
  const load: ChildProcess = fork(join(repoRoot, "test", "bench", "gateway-load.ts"), [], {
    env: { ...process.env, GATEWAY_URL: g.url, GATEWAY_TOKEN: g.token, NATS_URL: g.mesh.server.url, CAUSEWAY_DATA_DIR: g.mesh.dataDir },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      load.once("message", () => resolve());
      load.once("exit", (code) => reject(new Error(`the load generator exited with ${code}`)));
    });
    const ask = (mode: string, n: number) => new Promise<void>((resolve, reject) => {
      load.once("message", (m: { ok: boolean; error?: string }) => (m.ok ? resolve() : reject(new Error(`${mode}: ${m.error}`))));
      load.send({ mode, n });
    });
    const jsm = await jetstreamManager(g.mesh.operator);
    const routed = async () => (await jsm.streams.info("MESH_CAP")).state.messages;
    const http = { name: "gateway HTTP", run: (n: number) => ask("http", n) };
    const nats = {
      name: "gateway NATS",
      async run(n: number) {
        const target = (await routed()) + n;
        await ask("nats", n);
        await waitFor(async () => (await routed()) >= target, { what: `${n} events routed`, intervalMs: 5, timeoutMs: 120_000 });
      },
    };
    const baseline = { name: "hand-written publisher", run: (n: number) => ask("baseline", n) };
    const tuned = { name: "tuned publisher", run: (n: number) => ask("tuned", n) };
    const results = [
      await compare("gateway: HTTP vs hand-written publisher", http, baseline, { ops: ROUND, rounds: 7, goal: 0.6 }),
      await compare("gateway: NATS vs hand-written publisher", nats, baseline, { ops: ROUND, rounds: 7, goal: 0.85 }),
    ];
    const reference = await compare("tuned vs hand-written publisher", tuned, baseline, { ops: ROUND, rounds: 5, goal: 0 });
    const against = (r: Comparison) => (r.ratio / reference.ratio).toFixed(2);
    return {
      results,
      notes: [
        `gateway: rounds of ${ROUND} events of ~1 KiB, HTTP with 64 keep-alive connections; the gateway with ${WORKERS} worker process${WORKERS === 1 ? "" : "es"}; every side in its own process beside the gateway's`,
        `gateway: for reference, the hand-written publisher through the gateway's publish path (kit StreamPublisher, no async traces) runs ${reference.ratio.toFixed(2)}× as fast; against that the ratios would be HTTP ${against(results[0]!)}, NATS ${against(results[1]!)}`,
      ],
    };
  } finally {
    load.send("exit");
    await new Promise((r) => load.once("exit", r));
  }
}

// `node test/bench/gateway.bench.ts` runs this benchmark alone.
if (import.meta.main) {
  const { printTable } = await import("./measure.ts");
  const { results, notes } = await gatewayThroughput();
  printTable(results);
  for (const n of notes) console.log(n);
}
