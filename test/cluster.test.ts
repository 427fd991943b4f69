// A cluster an operator can start (issue 14, item 1), on real nats-servers:
// - `causeway infra render --cluster 3` writes one valid config per node (server_name, client/monitoring/route
//   ports, its own JetStream store with sync_interval: always, routes to every node with the route password, the
//   rendered accounts);
// - those configs, started as `causeway up --cluster` starts them, form one JetStream cluster with a meta leader
//   (waited for on the condition), the principals authenticate on every node, and a server that tries to join
//   without the route password is refused;
// - `causeway up --cluster 3` brings the mesh up on three nodes: every stream, consumer and KV bucket at R3 with
//   two current followers, the services given NATS_URL with all three URLs; `causeway down` stops every process.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { MESH_BUCKETS, STREAMS_APPLY, connectAs, defaultLayout, loadPrincipals } from "../services/kit/index.ts";
import { ensureMeshBuckets } from "../services/kit/ops/index.ts";
import { ensureIdentities } from "../services/cli/bootstrap.ts";
import { renderClusterInfra, type RenderClusterResult } from "../services/cli/commands/infra.ts";
import { spawnNatsServer, waitForCluster, type NatsProcess } from "../services/cli/nats-process.ts";
import { readPidFile } from "../services/cli/pid-files.ts";
import { nodePidFile, pidFileOf } from "../services/cli/processes.ts";
import { freePort, freeRun, portFree, replicatedInfo, repoRoot, startServer, toolPath, waitFor } from "./harness/index.ts";

const cliPath = join(repoRoot, "services", "cli", "main.ts");
const layout = defaultLayout();

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function causeway(args: string[], data: string, timeout = 90_000): Promise<Run> {
  // Services started by `up` take their HTTP ports from these: free ones, so the test never fights for 8480.
  const env = { ...process.env, CAUSEWAY_DATA_DIR: data, LINEAGE_HTTP_PORT: "0", CAUSEWAY_GATEWAY_PORT: "0", LOG_LEVEL: "warn" };
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [cliPath, ...args], { env, timeout }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}

function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });
}

describe("cluster - the rendered node configs", () => {
  test("cluster - infra render --cluster 3 writes one valid config per node", async (t) => {
    const data = mkdtempSync(join(tmpdir(), "causeway-cluster-"));
    t.after(() => rmSync(data, { recursive: true, force: true }));
    assert.equal((await causeway(["keys", "ensure"], data)).code, 0);
    const res = await causeway(["infra", "render", "--cluster", "3", "--client-port", "14222", "--monitor-port", "18222", "--cluster-port", "16222"], data);
    assert.equal(res.code, 0, res.stderr);
    const dir = join(data, "nats", "cluster");
    const password = readFileSync(join(dir, "route-password"), "utf8").trim();
    assert.match(password, /^[0-9a-f]{64}$/);
    for (const i of [1, 2, 3]) {
      const path = join(dir, `causeway-${i}.conf`);
      assert.match(res.stdout, new RegExp(`wrote ${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
      const text = readFileSync(path, "utf8");
      assert.match(text, new RegExp(`^server_name: "causeway-${i}"$`, "m"));
      assert.match(text, new RegExp(`^listen: "127\\.0\\.0\\.1:${14221 + i}"$`, "m"));
      assert.match(text, new RegExp(`^http: "127\\.0\\.0\\.1:${18221 + i}"$`, "m"));
      assert.match(text, new RegExp(`^  store_dir: "${join(dir, `causeway-${i}`, "store").replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}"$`, "m"));
      assert.match(text, /^\s*sync_interval: always$/m);
      assert.match(text, /^  name: "causeway"$/m);
      assert.match(text, new RegExp(`^  listen: "127\\.0\\.0\\.1:${16221 + i}"$`, "m"));
      assert.match(text, new RegExp(`authorization \\{ user: "causeway-route", password: "${password}" \\}`));
      for (const j of [1, 2, 3]) assert.ok(text.includes(`"nats-route://causeway-route:${password}@127.0.0.1:${16221 + j}"`), `node ${i} routes to node ${j}`);
      for (const name of Object.keys(loadPrincipals().principals)) assert.ok(text.includes(`# ${name} (`), `node ${i} has ${name}`);
      const check = await run(toolPath("nats-server"), ["-t", "-c", path]);
      assert.equal(check.code, 0, check.stderr);
    }
    // A second render keeps the password: nodes started from the first render still route to each other.
    assert.equal((await causeway(["infra", "render", "--cluster", "3"], data)).code, 0);
    assert.equal(readFileSync(join(dir, "route-password"), "utf8").trim(), password);
    const tooSmall = await causeway(["infra", "render", "--cluster", "2"], data);
    assert.equal(tooSmall.code, 2);
    assert.match(tooSmall.stderr, /3 to 7 nodes/);
  });

  test("cluster - infra render --cluster 3 --hosts puts each node on an address of its own", async (t) => {
    const data = mkdtempSync(join(tmpdir(), "causeway-cluster-"));
    t.after(() => rmSync(data, { recursive: true, force: true }));
    assert.equal((await causeway(["keys", "ensure"], data)).code, 0);
    const hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    const res = await causeway(["infra", "render", "--cluster", "3", "--cluster-port", "16222", "--hosts", hosts.join(",")], data);
    assert.equal(res.code, 0, res.stderr);
    const dir = join(data, "nats", "cluster");
    const password = readFileSync(join(dir, "route-password"), "utf8").trim();
    for (const [i, host] of hosts.entries()) {
      const path = join(dir, `causeway-${i + 1}.conf`);
      const text = readFileSync(path, "utf8");
      assert.match(text, new RegExp(`^listen: "${host.replace(/\./g, "\\.")}:${4222 + i}"$`, "m"));
      assert.match(text, new RegExp(`^  listen: "${host.replace(/\./g, "\\.")}:${16222 + i}"$`, "m"));
      for (const [j, peer] of hosts.entries()) assert.ok(text.includes(`"nats-route://causeway-route:${password}@${peer}:${16222 + j}"`), `node ${i + 1} routes to node ${j + 1} on ${peer}`);
      const check = await run(toolPath("nats-server"), ["-t", "-c", path]);
      assert.equal(check.code, 0, check.stderr);
    }
    const short = await causeway(["infra", "render", "--cluster", "3", "--hosts", "127.0.0.1,127.0.0.2"], data);
    assert.equal(short.code, 2);
    assert.match(short.stderr, /2 hosts for 3 nodes/);
    const alone = await causeway(["infra", "render", "--hosts", "127.0.0.1"], data);
    assert.equal(alone.code, 2);
    assert.match(alone.stderr, /go with --cluster/);
  });

  describe("cluster - started as `causeway up --cluster` starts them", () => {
    let data: string;
    let rendered: RenderClusterResult;
    const nodes: NatsProcess[] = [];
    before(async () => {
      data = mkdtempSync(join(tmpdir(), "causeway-cluster-"));
      ensureIdentities(loadPrincipals(), data);
      // Free route ports up front (routes name them); client and monitoring ports the servers pick.
      const ports = await Promise.all([1, 2, 3].map(async () => ({ client: -1, monitor: -1, cluster: await freePort() })));
      rendered = renderClusterInfra({ size: 3, ports, dataDir: data });
      for (const node of rendered.nodes) {
        nodes.push(await spawnNatsServer({ configPath: node.path, portsDir: join(data, "nats", "cluster", node.name), waitHealthy: false }));
      }
    });
    after(async () => {
      await Promise.all(nodes.map((n) => n.stop()));
      rmSync(data, { recursive: true, force: true });
    });

    test("cluster - the three nodes form one JetStream cluster; principals authenticate on every node", async () => {
      const formed = await waitForCluster(nodes.map((n) => n.monitorUrl));
      assert.equal(formed.size, 3);
      assert.ok(rendered.nodes.some((n) => n.name === formed.leader), formed.leader);
      for (const [i, node] of nodes.entries()) {
        const jsz = await (await fetch(`${node.monitorUrl}/jsz`)).json() as { meta_cluster: { leader: string; cluster_size: number } };
        assert.equal(jsz.meta_cluster.leader, formed.leader, `${rendered.nodes[i]!.name} agrees on the leader`);
        const routez = await (await fetch(`${node.monitorUrl}/routez`)).json() as { routes: { remote_name: string }[] };
        const peers = new Set(routez.routes.map((r) => r.remote_name));
        assert.deepEqual([...peers].sort(), rendered.nodes.filter((_, j) => j !== i).map((n) => n.name), `${rendered.nodes[i]!.name}'s routes`);
      }
      // Each principal's NKey on each node; an R3 stream has a leader and two followers.
      for (const node of nodes) {
        const nc = await connectAs("operator", { servers: node.url, dataDir: data });
        try {
          const jsm = await jetstreamManager(nc);
          const name = `PROBE_${node.pid}`;
          await jsm.streams.add({ name, subjects: [`probe.${node.pid}`], num_replicas: 3 });
          const info = await replicatedInfo(jsm, name);
          assert.equal(info.config.num_replicas, 3);
        } finally {
          await nc.close();
        }
      }
      await assert.rejects(connectAs("operator", { servers: nodes[0]!.url, dataDir: mkdtempSync(join(tmpdir(), "causeway-nokey-")) }), "a principal without its seed is refused");
    });

    test("cluster - buckets made on one node's mesh (R1) are raised to R3 when the mesh is applied with 3 replicas; never lowered", async () => {
      await waitForCluster(nodes.map((n) => n.monitorUrl));
      const nc = await connectAs("operator", { servers: nodes.map((n) => n.url), dataDir: data });
      try {
        const jsm = await jetstreamManager(nc);
        const applied = Object.values(MESH_BUCKETS).filter((b) => b.createdBy === STREAMS_APPLY).map((b) => b.name).sort();
        assert.deepEqual((await ensureMeshBuckets(nc, { replicas: 1 })).created.sort(), applied);
        const { created, raised } = await ensureMeshBuckets(nc, { replicas: 3 });
        assert.deepEqual(created, []);
        assert.deepEqual(raised.sort(), applied);
        for (const name of applied) assert.equal((await replicatedInfo(jsm, `KV_${name}`)).config.num_replicas, 3, name);
        assert.deepEqual(await ensureMeshBuckets(nc, { replicas: 1 }), { created: [], raised: [] }, "applying with fewer replicas lowers nothing");
        for (const name of applied) assert.equal((await jsm.streams.info(`KV_${name}`)).config.num_replicas, 3, name);
      } finally {
        await nc.close();
      }
    });

    test("cluster - a server without the route password cannot join", async () => {
      await waitForCluster(nodes.map((n) => n.monitorUrl));
      const target = rendered.nodes[0]!;
      await using rogue = await startServer({
        jetstream: false, waitHealthy: false,
        cluster: { name: "causeway", routes: [`nats-route://127.0.0.1:${target.routePort}`] },
      });
      await waitFor(() => /authoriz/i.test(rogue.logs()), { what: `the rogue's route to be refused:\n${rogue.logs()}`, timeoutMs: 15_000 });
      const routez = await (await fetch(`${nodes[0]!.monitorUrl}/routez`)).json() as { routes: { remote_name: string }[] };
      assert.ok(!routez.routes.some((r) => r.remote_name === rogue.name), "the rogue is no route of the cluster");
      const jsz = await (await fetch(`${nodes[0]!.monitorUrl}/jsz`)).json() as { meta_cluster: { cluster_size: number } };
      assert.equal(jsz.meta_cluster.cluster_size, 3);
    });
  });
});

describe("cluster - causeway up --cluster 3", () => {
  let data: string;
  before(() => {
    data = mkdtempSync(join(tmpdir(), "causeway-up-cluster-"));
  });
  after(async () => {
    // Whatever a failed test left running: down, then any node or service still recorded.
    await causeway(["down"], data).catch(() => undefined);
    rmSync(data, { recursive: true, force: true });
  });

  test("cluster - up --cluster 3: every stream, consumer and bucket at R3, the services given every node; down stops it all", async () => {
    const ports = { client: await freeRun(3), monitor: await freeRun(3), cluster: await freeRun(3) };
    const up = await causeway(["up", "--cluster", "3", "--client-port", String(ports.client), "--monitor-port", String(ports.monitor), "--cluster-port", String(ports.cluster)], data);
    assert.equal(up.code, 0, `${up.stdout}\n${up.stderr}`);
    assert.match(up.stdout, /✓ cluster — 3 nodes in JetStream's meta group, leader causeway-[123]/);
    assert.match(up.stdout, /✓ replicas — every stream and KV bucket at R3/);
    const urls = [0, 1, 2].map((i) => `nats://127.0.0.1:${ports.client + i}`);

    const nc = await connectAs("operator", { servers: urls, dataDir: data });
    try {
      const jsm = await jetstreamManager(nc);
      const names = [...Object.keys(layout.streams), ...Object.values(MESH_BUCKETS).map((b) => `KV_${b.name}`)];
      for (const name of names) {
        const info = await replicatedInfo(jsm, name);
        assert.equal(info.config.num_replicas, 3, `${name} config.num_replicas`);
        assert.ok(info.cluster!.replicas!.every((r) => r.current), `${name}'s followers are current`);
      }
      // Consumers take their stream's replicas: the files' and those the services created (capability durables).
      let consumers = 0;
      for (const stream of Object.keys(layout.streams)) {
        for await (const c of jsm.consumers.list(stream)) {
          const replicas = c.cluster?.replicas ?? [];
          assert.equal(replicas.length, 2, `${stream}/${c.name}: ${JSON.stringify(c.cluster)}`);
          consumers++;
        }
      }
      const capabilityDurables = Object.values(loadPrincipals().capabilities).map((c) => layout.capabilityConsumer(c.name, c.major).durable_name);
      for (const durable of capabilityDurables) assert.equal((await jsm.consumers.info("MESH_CAP", durable)).cluster?.replicas?.length, 2, durable);
      assert.ok(consumers >= layout.consumers.length + capabilityDurables.length, `${consumers} consumers`);
    } finally {
      await nc.close();
    }

    // Every service process was given all three URLs.
    for (const service of layout.services) {
      const f = readPidFile(pidFileOf(data, service.name, 1));
      assert.equal(f.state, "running", `${service.name}: ${JSON.stringify(f)}`);
      const environ = readFileSync(`/proc/${f.record!.pid}/environ`, "utf8").split("\0");
      assert.ok(environ.includes(`NATS_URL=${urls.join(",")}`), `${service.name}'s NATS_URL`);
      // Lineage indexes the cluster's streams in a store of their own, not the single server's.
      if (service.name === "lineage") assert.ok(environ.includes(`LINEAGE_SQLITE_PATH=${join(data, "nats", "cluster", "lineage", "lineage.db")}`), environ.filter((e) => e.startsWith("LINEAGE_")).join(" "));
    }
    assert.ok(existsSync(join(data, "nats", "cluster", "lineage", "lineage.db")), "lineage's cluster store");
    assert.ok(!existsSync(join(data, "lineage", "lineage.db")), "the single server's store is untouched");
    const ps = await causeway(["ps"], data);
    for (const i of [1, 2, 3]) assert.match(ps.stdout, new RegExp(`^nats-server\\s+${i}\\s+\\d+\\s+running`, "m"));
    const nodePids = [1, 2, 3].map((i) => readPidFile(nodePidFile(data, `causeway-${i}`)).record!.pid);

    // Again: the running nodes are kept, nothing is created, nothing lowered.
    const again = await causeway(["up", "--cluster", "3", "--client-port", String(ports.client), "--monitor-port", String(ports.monitor), "--cluster-port", String(ports.cluster)], data);
    assert.equal(again.code, 0, `${again.stdout}\n${again.stderr}`);
    assert.match(again.stdout, /causeway-1 \(pid \d+, already running\)/);
    assert.match(again.stdout, /0 streams, 0 consumers, 0 KV buckets created/);
    assert.match(again.stdout, /every stream and KV bucket at R3/);
    // The single-node `up` refuses while the cluster runs.
    const single = await causeway(["up"], data);
    assert.equal(single.code, 1);
    assert.match(single.stderr, /a cluster started by `causeway up --cluster` is running/);

    const down = await causeway(["down"], data);
    assert.equal(down.code, 0, down.stdout);
    for (const i of [1, 2, 3]) assert.match(down.stdout, new RegExp(`✓ stopped nats-server causeway-${i} \\(pid \\d+\\)`));
    for (const pid of nodePids) assert.ok(!existsSync(`/proc/${pid}`) || readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[2] === "Z", `node pid ${pid} is gone`);
    for (const i of [0, 1, 2]) assert.ok(await portFree(ports.client + i), `client port ${ports.client + i} is free again`);
    assert.doesNotMatch((await causeway(["ps"], data)).stdout, /^nats-server/m, "no node is left in ps");
  });
});
