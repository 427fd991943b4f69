// Riding out faults (issue 14 item 2), on real nats-servers and real service processes: a service started before
// the mesh is applied waits for it, a bad configuration still fails at once, a start that cannot succeed exits
// (no zombie), a server that restarts or hangs is noticed and left or rejoined within seconds, a server list
// reaches the live server, and `causeway approve` during a JetStream outage says to retry.
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import type { NatsConnection, Status } from "@nats-io/transport-node";
import {
  CONNECTION_POLICY, ErrorCode, NatsBinding, START_TIMEOUT_ENV, connectAs, createEvent, loadPrincipals, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7,
} from "../services/kit/index.ts";
import { applyMeshInfra, ensureIdentities, seedTrust } from "../services/cli/bootstrap.ts";
import { readMessages } from "../services/cli/flow.ts";
import { renderInfra } from "../services/cli/commands/infra.ts";
import { agentScript, startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { repoRoot, startServer, waitFor, type NatsServer } from "./harness/index.ts";
import { REQUEST_SCHEMA } from "./mesh-fixture.ts";

/** A process of the mesh, its output collected. */
interface Proc {
  readonly child: ChildProcess;
  output(): string;
  readonly exited: Promise<number | null>;
}

function spawnProc(script: string, env: NodeJS.ProcessEnv): Proc {
  const child = spawn(process.execPath, [join(repoRoot, script)], { env: { ...process.env, LOG_LEVEL: "info", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (c: string) => { out += c; });
  child.stderr!.setEncoding("utf8").on("data", (c: string) => { out += c; });
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return { child, output: () => out, exited };
}

/** A server with the rendered accounts and every principal's seed, but nothing applied: no streams, buckets or trust store. */
async function bareMesh(): Promise<{ server: NatsServer; dataDir: string; env: NodeJS.ProcessEnv; apply(): Promise<void> } & AsyncDisposable> {
  const dataDir = mkdtempSync(join(tmpdir(), "causeway-bare-"));
  const principals = loadPrincipals();
  ensureIdentities(principals, dataDir);
  const accounts = renderInfra({ dataDir, principals, out: join(dataDir, "accounts.conf") });
  const server = await startServer({ config: `max_payload: 2MB\n${accounts.text}` });
  return {
    server, dataDir,
    env: { NATS_URL: server.url, CAUSEWAY_DATA_DIR: dataDir, CAUSEWAY_GATEWAY_PORT: "0", LINEAGE_HTTP_PORT: "0" },
    async apply() {
      const operator = await connectAs("operator", { servers: server.url, dataDir });
      try {
        await applyMeshInfra(operator);
        await seedTrust(operator, principals, dataDir);
      } finally {
        await operator.close();
      }
    },
    async [Symbol.asyncDispose]() {
      await server[Symbol.asyncDispose]();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The environment of a service process on `mesh`. */
const envOf = (mesh: OperatedMesh): NodeJS.ProcessEnv => ({ NATS_URL: mesh.server.url, CAUSEWAY_DATA_DIR: mesh.dataDir, CAUSEWAY_GATEWAY_PORT: "0", LINEAGE_HTTP_PORT: "0" });

/** A TCP port nothing listens on (taken, then freed). */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const { port } = s.address() as { port: number };
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Publishes a report request signed by the gateway on plan.v1, as the gateway would route it; its id. */
async function requestPlan(mesh: OperatedMesh, gateway: NatsConnection): Promise<string> {
  const key = signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir));
  const event = signEvent(createEvent({
    id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(), datacontenttype: "application/json", dataschema: REQUEST_SCHEMA,
    data: JSON.stringify({ topic: "Heat pumps in cold climates", requester: "analyst@example.com", questions: ["How cold is too cold?"] }),
    extensions: { traceparent: newTraceparent() },
  }), key);
  const { headers, data } = NatsBinding.binary(event);
  await jetstream(gateway).publish("mesh.cap.plan.v1", data, { headers });
  return event.id;
}

/** The planner's tasks for request `id` now in MESH_CAP. */
async function tasksFor(mesh: OperatedMesh, id: string): Promise<number> {
  const tasks = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.research.v1");
  return tasks.filter((m) => NatsBinding.toEvent(m).extensions.causationid === id).length;
}

/** Services answering a micro ping by `name`. */
async function answering(nc: NatsConnection, name: string): Promise<number> {
  let n = 0;
  try {
    for await (const _ of await new Svcm(nc).client({ strategy: "timer", maxWait: 300 }).ping(name)) n++;
  } catch {
    return 0;
  }
  return n;
}

describe("resilience: starting", () => {
  test("resilience - a service started before its streams, buckets and trust store exist waits, logging each attempt, and runs once they are applied", async () => {
    await using mesh = await bareMesh();
    const planner = spawnProc(agentScript("planner"), { ...mesh.env, [START_TIMEOUT_ENV]: "60000" });
    try {
      // Two attempts logged, each with the reason and the command that creates what is missing.
      await waitFor(() => (planner.output().match(/planner cannot start yet, the mesh is not ready: .*causeway trust seed.*; retrying in/g)?.length ?? 0) >= 2,
        { what: "two start attempts logged", timeoutMs: 20_000 });
      assert.equal(planner.child.exitCode, null, `the planner waits:\n${planner.output()}`);
      await mesh.apply();
      await waitFor(() => planner.output().includes("\"msg\":\"planner started once the mesh was ready\""), { what: "the planner to start once the mesh is applied", timeoutMs: 30_000 });
      assert.match(planner.output(), /"msg":"agent started"/);
      const operator = await connectAs("operator", { servers: mesh.server.url, dataDir: mesh.dataDir });
      try {
        await waitFor(async () => (await answering(operator, "planner")) === 1, { what: "the planner to answer" });
      } finally {
        await operator.close();
      }
      planner.child.kill("SIGTERM");
      assert.equal(await planner.exited, 0, planner.output());
    } finally {
      planner.child.kill("SIGKILL");
    }
  });

  test("resilience - a service whose configuration is invalid exits non-zero at once, without waiting for the mesh", async () => {
    await using mesh = await bareMesh();
    const began = Date.now();
    const lineage = spawnProc("services/lineage/main.ts", { ...mesh.env, LINEAGE_ORIGIN: "not a name", [START_TIMEOUT_ENV]: "60000" });
    const code = await lineage.exited;
    assert.equal(code, 1, lineage.output());
    assert.ok(Date.now() - began < 10_000, `exited after ${Date.now() - began} ms`);
    assert.match(lineage.output(), /^lineage: LINEAGE_ORIGIN="not a name" is invalid/m);
    assert.doesNotMatch(lineage.output(), /cannot start yet/, "a configuration error is not waited on");
  });

  test("resilience - a coordinator whose start cannot succeed exits non-zero: after its start budget when the mesh never gets ready; at once when a failed start left a watcher behind", async () => {
    await using mesh = await bareMesh();
    const began = Date.now();
    const coordinator = spawnProc("services/coordinator/main.ts", { ...mesh.env, [START_TIMEOUT_ENV]: "3000" });
    assert.equal(await coordinator.exited, 1, coordinator.output());
    const took = Date.now() - began;
    assert.ok(took < 15_000, `the coordinator exited after ${took} ms`);
    assert.match(coordinator.output(), /coordinator cannot start yet, the mesh is not ready/);
    assert.match(coordinator.output(), /^coordinator: the mesh was not ready within \d+ s \(\d+ attempts, CAUSEWAY_START_TIMEOUT_MS=3000\): .*causeway trust seed/m);

    // What a failed start leaves open (a file watcher like the coordinator's policy watcher, a timer) cannot keep
    // the process alive: it exits 1 with the reason, and its log names what was still open.
    await mesh.apply();
    const leaky = spawnProc("test/fixtures/leaky-service.ts", mesh.env);
    const exit = await Promise.race([leaky.exited, new Promise<"alive">((r) => setTimeout(() => r("alive"), 15_000).unref())]);
    if (exit === "alive") leaky.child.kill("SIGKILL");
    assert.equal(exit, 1, `the failed service exits 1:\n${leaky.output()}`);
    assert.match(leaky.output(), /^planner: the leaky service's own configuration is refused \(test\)$/m);
    assert.match(leaky.output(), /still running 2000 ms after it stopped: exiting/);
  });
});

describe("resilience: connections", () => {
  test("resilience - a nats-server stopped and started again (same port and store): services log the disconnect and the reconnect, and work continues", async () => {
    await using mesh = await startOperatedMesh();
    const planner = spawnProc(agentScript("planner"), envOf(mesh));
    try {
      await waitFor(() => planner.output().includes("\"msg\":\"agent started\""), { what: "the planner to start", timeoutMs: 20_000 });
      assert.match(planner.output(), new RegExp(`"server":"[^"]*${mesh.server.port}","msg":"connected to NATS"`));
      const gateway = await mesh.as("gateway");
      const before = await requestPlan(mesh, gateway);
      await waitFor(async () => (await tasksFor(mesh, before)) === 1, { what: "a task before the restart" });

      await mesh.server.stop();
      await waitFor(() => planner.output().includes("disconnected from NATS"), { what: "the planner to log the disconnect" });
      await mesh.server.restart();
      await waitFor(() => planner.output().includes("\"msg\":\"reconnected to NATS\""), { what: "the planner to log the reconnect", timeoutMs: 20_000 });
      assert.match(planner.output(), new RegExp(`"server":"[^"]*${mesh.server.port}","attempts":\\d+,"downMs":\\d+,"msg":"reconnected to NATS"`));
      assert.equal(planner.child.exitCode, null, "the planner rode out the restart");

      // Work continues: a request published after the restart is planned.
      const after = await waitFor(async () => requestPlan(mesh, gateway), { what: "JetStream back after the restart", timeoutMs: 20_000 });
      await waitFor(async () => (await tasksFor(mesh, after)) === 1, { what: "a task after the restart", timeoutMs: 20_000 });
    } finally {
      planner.child.kill("SIGKILL");
    }
  });

  test("resilience - a hung nats-server (SIGSTOP) is noticed within seconds through the kit's pings, and rejoined after SIGCONT", async () => {
    await using mesh = await startOperatedMesh();
    const planner = spawnProc(agentScript("planner"), envOf(mesh));
    const nc = await connectAs("operator", { servers: mesh.server.url, dataDir: mesh.dataDir });
    const events: { type: Status["type"]; at: number }[] = [];
    void (async () => {
      for await (const s of nc.status()) events.push({ type: s.type, at: Date.now() });
    })();
    try {
      await waitFor(() => planner.output().includes("\"msg\":\"agent started\""), { what: "the planner to start", timeoutMs: 20_000 });
      const stoppedAt = Date.now();
      process.kill(mesh.server.pid, "SIGSTOP");
      try {
        // 2–3 unanswered pings 2 s apart: well under ten seconds (nats.js's defaults: four minutes).
        const noticed = await waitFor(() => events.find((e) => e.type === "staleConnection" || e.type === "disconnect"), { what: "the client to notice the hung server", timeoutMs: 12_000 });
        const ms = noticed.at - stoppedAt;
        const bound = CONNECTION_POLICY.pingIntervalMs * (CONNECTION_POLICY.maxPingOut + 2);
        assert.ok(ms <= bound, `noticed after ${ms} ms (bound ${bound} ms)`);
        await waitFor(() => /the NATS server stopped answering pings: leaving it/.test(planner.output()), { what: "the planner to log the hung server", timeoutMs: 12_000 });
      } finally {
        process.kill(mesh.server.pid, "SIGCONT");
      }
      await waitFor(() => events.some((e) => e.type === "reconnect"), { what: "the client to reconnect", timeoutMs: 20_000 });
      await waitFor(() => planner.output().includes("\"msg\":\"reconnected to NATS\""), { what: "the planner to reconnect", timeoutMs: 20_000 });
      assert.equal(planner.child.exitCode, null);
    } finally {
      planner.child.kill("SIGKILL");
      await nc.close();
    }
  });

  test("resilience - NATS_URL with two servers connects to the live one whichever is listed first; a service starts on such a list", async () => {
    await using mesh = await startOperatedMesh();
    const dead = `nats://127.0.0.1:${await deadPort()}`;
    for (const servers of [`${dead},${mesh.server.url}`, `${mesh.server.url}, ${dead}`]) {
      const nc = await connectAs("operator", { servers, dataDir: mesh.dataDir });
      try {
        assert.equal(nc.getServer(), mesh.server.url.replace("nats://", ""), servers);
      } finally {
        await nc.close();
      }
    }
    const planner = spawnProc(agentScript("planner"), { ...envOf(mesh), NATS_URL: `${dead},${mesh.server.url}` });
    try {
      await waitFor(() => planner.output().includes("\"msg\":\"agent started\""), { what: "the planner to start on the list", timeoutMs: 20_000 });
    } finally {
      planner.child.kill("SIGKILL");
    }
    // A list that names no server is a configuration error.
    await assert.rejects(connectAs("operator", { servers: " , ", dataDir: mesh.dataDir }), (err: Error & { code?: string }) => err.code === ErrorCode.Config && /names no server/.test(err.message));
  });

  test("resilience - `causeway approve` while JetStream does not answer says to retry (CW_ERR_UNAVAILABLE), not a configuration error", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "causeway-nojs-"));
    const principals = loadPrincipals();
    ensureIdentities(principals, dataDir);
    const accounts = renderInfra({ dataDir, principals, out: join(dataDir, "accounts.conf") });
    // JetStream off: every JetStream request meets no responders, as during a leader election.
    await using server = await startServer({ config: `max_payload: 2MB\n${accounts.text}`, jetstream: false });
    try {
      const run = await new Promise<{ code: number; stderr: string }>((resolve, reject) => {
        execFile(process.execPath, [join(repoRoot, "services/cli/main.ts"), "approve", uuidv7(), "--as", "approver-alice", "--server", server.url],
          { env: { ...process.env, CAUSEWAY_DATA_DIR: dataDir }, timeout: 60_000 }, (err, _stdout, stderr) => {
            if (err && typeof err.code !== "number") return reject(err);
            resolve({ code: err ? Number(err.code) : 0, stderr });
          });
      });
      assert.equal(run.code, 1, run.stderr);
      assert.match(run.stderr, /^causeway: JetStream is not available right now \(leader election\?\): retry \(CW_ERR_UNAVAILABLE\)$/m);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
