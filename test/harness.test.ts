// Tests for the test harness itself: if these fail, every other result on real servers is suspect.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { repoRoot, runNats, runNatsJson, startCluster, startServer, waitFor } from "./harness/index.ts";

const enc = new TextEncoder();

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
    throw err;
  }
}

test("harness - a server starts on a random port learnt from the ports file", async () => {
  await using srv = await startServer();
  assert.match(readFileSync(srv.configPath, "utf8"), /listen: "127\.0\.0\.1:-1"/);
  const portsFile = join(dirname(srv.configPath), `nats-server_${srv.pid}.ports`);
  const ports = JSON.parse(readFileSync(portsFile, "utf8")) as { nats: string[]; monitoring: string[] };
  assert.equal(srv.url, ports.nats[0]);
  assert.equal(srv.url, `nats://127.0.0.1:${srv.port}`);
  assert.equal(srv.monitorUrl, ports.monitoring[0]!.replace(/\/$/, ""));
  const varz = (await (await fetch(`${srv.monitorUrl}/varz`)).json()) as { port: number; server_name: string };
  assert.equal(varz.port, srv.port);
  assert.equal(varz.server_name, srv.name);
});

test("harness - JetStream works through the Node client", async () => {
  await using srv = await startServer();
  await using nc = await connect({ servers: srv.url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "ORDERS", subjects: ["orders.>"] });
  const ack = await jetstream(nc).publish("orders.created", enc.encode("order 1"), { msgID: "o-1" });
  assert.deepEqual({ stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate }, { stream: "ORDERS", seq: 1, duplicate: false });
  const again = await jetstream(nc).publish("orders.created", enc.encode("order 1"), { msgID: "o-1" });
  assert.equal(again.duplicate, true);
  const stored = await jsm.streams.getMessage("ORDERS", { seq: 1 });
  assert.equal(stored?.string(), "order 1");
  assert.ok((await jsm.streams.info("ORDERS")).config.storage === "file");
});

test("harness - two servers started in parallel get distinct ports and store dirs", async () => {
  const [a, b] = await Promise.all([startServer(), startServer()]);
  await using first = a;
  await using second = b;
  assert.notEqual(first.port, second.port);
  assert.notEqual(first.monitorUrl, second.monitorUrl);
  assert.notEqual(first.storeDir, second.storeDir);
  assert.notEqual(first.configPath, second.configPath);
  assert.notEqual(first.name, second.name);
  assert.notEqual(first.pid, second.pid);
  for (const srv of [first, second]) {
    const jsz = (await (await fetch(`${srv.monitorUrl}/jsz`)).json()) as { config: { store_dir: string } };
    assert.ok(jsz.config.store_dir.startsWith(srv.storeDir), `${jsz.config.store_dir} is under ${srv.storeDir}`);
  }
});

test("harness - the config option is honoured", async () => {
  await using srv = await startServer({ config: "authorization { user: a, password: b }" });
  await assert.rejects(connect({ servers: srv.url, reconnect: false }), /authorization/i);
  await using nc = await connect({ servers: srv.url, user: "a", pass: "b", reconnect: false });
  await nc.flush();
});

test("harness - await using disposal kills the process and removes its directories even when the test body throws", async () => {
  let pid = 0;
  let dirs: string[] = [];
  const boom = new Error("the test body failed");
  const body = async () => {
    await using srv = await startServer();
    pid = srv.pid;
    dirs = [dirname(srv.configPath), srv.storeDir];
    assert.equal(isRunning(pid), true);
    for (const dir of dirs) assert.equal(existsSync(dir), true, dir);
    throw boom;
  };
  await assert.rejects(body(), (err) => err === boom);
  assert.throws(() => process.kill(pid, 0), { code: "ESRCH" });
  for (const dir of dirs) assert.equal(existsSync(dir), false, `${dir} was removed`);
});

test("harness - stop() and restart() keep the port and the stream's messages", async () => {
  await using srv = await startServer();
  const { port, url, monitorUrl, pid } = srv;
  {
    await using nc = await connect({ servers: url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: "KEEP", subjects: ["keep.>"] });
    const js = jetstream(nc);
    await js.publish("keep.a", enc.encode("first"));
    await js.publish("keep.b", enc.encode("second"));
  }
  await srv.stop();
  assert.equal(isRunning(pid), false);
  await srv.restart();
  assert.notEqual(srv.pid, pid);
  assert.deepEqual({ port: srv.port, url: srv.url, monitorUrl: srv.monitorUrl }, { port, url, monitorUrl });
  await using nc = await connect({ servers: srv.url });
  const jsm = await jetstreamManager(nc);
  assert.equal((await jsm.streams.info("KEEP")).state.messages, 2);
  assert.equal((await jsm.streams.getMessage("KEEP", { seq: 2 }))?.string(), "second");
});

test("harness - a 3-node cluster keeps an R3 stream through the loss of a node", { timeout: 45_000 }, async () => {
  await using cluster = await startCluster();
  assert.equal(cluster.nodes.length, 3);
  assert.equal(new Set(cluster.nodes.map((n) => n.port)).size, 3);
  // Formed when it resolves: one meta leader, named alike by every node, in a group of three.
  const metas = await Promise.all(cluster.nodes.map(async (n) => ((await (await fetch(`${n.monitorUrl}/jsz`)).json()) as { meta_cluster: { leader: string; cluster_size: number } }).meta_cluster));
  assert.equal(new Set(metas.map((m) => m.leader)).size, 1, JSON.stringify(metas));
  assert.ok(cluster.nodes.some((n) => n.name === metas[0]!.leader), metas[0]!.leader);
  assert.deepEqual(metas.map((m) => m.cluster_size), [3, 3, 3]);
  await using nc = await connect({ servers: cluster.urls });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3 });
  // A short publish timeout, retried by waitFor; the message id makes a retry of a stored publish a duplicate.
  const js = jetstream(nc, { timeout: 2_000 });
  const publish = (id: string) =>
    waitFor(() => js.publish(`r3.${id}`, enc.encode(id), { msgID: id }), { timeoutMs: 20_000, what: `publish of ${id}` });
  assert.equal((await publish("m1")).seq, 1);

  // Stop the stream leader: the harder case, the remaining two must elect a new one.
  const info = await jsm.streams.info("R3");
  const lost = cluster.nodes.find((n) => n.name === info.cluster?.leader);
  assert.ok(lost, `leader ${info.cluster?.leader} is one of the nodes`);
  await lost.stop();
  assert.equal((await publish("m2")).seq, 2);
  const read = await waitFor(async () => (await jsm.streams.getMessage("R3", { seq: 2 })) ?? undefined, { timeoutMs: 20_000, what: "reading m2" });
  assert.equal(read.string(), "m2");
  assert.equal((await jsm.streams.getMessage("R3", { seq: 1 }))?.string(), "m1");

  await lost.restart();
  // Rejoined: the node is a current replica again and its own store holds the message it missed.
  await waitFor(async () => {
    const si = await jsm.streams.info("R3");
    const peers = [si.cluster?.leader, ...(si.cluster?.replicas ?? []).filter((r) => r.current && !r.offline).map((r) => r.name)];
    if (!peers.includes(lost.name)) return false;
    const jsz = (await (await fetch(`${lost.monitorUrl}/jsz?streams=true`)).json()) as {
      account_details?: { stream_detail?: { name: string; state: { messages: number } }[] }[];
    };
    const local = jsz.account_details?.flatMap((a) => a.stream_detail ?? []).find((s) => s.name === "R3");
    return local?.state.messages === 2;
  }, { timeoutMs: 20_000, intervalMs: 100, what: `${lost.name} to rejoin R3 with both messages` });
  assert.equal((await publish("m3")).seq, 3);
});

test("harness - runNats runs the pinned nats CLI against a server", async () => {
  await using srv = await startServer();
  await using nc = await connect({ servers: srv.url });
  await (await jetstreamManager(nc)).streams.add({ name: "LISTED", subjects: ["listed.>"] });
  const res = await runNats(["stream", "ls", "--json"], { server: srv.url });
  assert.equal(res.code, 0, res.stderr);
  assert.deepEqual(JSON.parse(res.stdout), ["LISTED"]);
  assert.deepEqual(await runNatsJson<string[]>(["stream", "ls", "--json"], { server: srv.url }), ["LISTED"]);
});

test("harness - runNats reports a failing command by its exit code; runNatsJson throws naming it", async () => {
  await using srv = await startServer();
  const res = await runNats(["stream", "info", "MISSING", "--json"], { server: srv.url });
  assert.notEqual(res.code, 0);
  await assert.rejects(runNatsJson(["stream", "info", "MISSING", "--json"], { server: srv.url }), /nats stream info MISSING --json exited/);
});

test("harness - waitFor returns the probe's value", async () => {
  let calls = 0;
  const value = await waitFor(() => (++calls < 3 ? undefined : { ready: calls }), { intervalMs: 1 });
  assert.deepEqual(value, { ready: 3 });
  let attempts = 0;
  const later = await waitFor(async () => {
    if (++attempts < 3) throw new Error("not yet");
    return "done";
  }, { intervalMs: 1 });
  assert.equal(later, "done");
  assert.equal(await waitFor(() => 0), 0, "0 is a value, not a miss");
});

test("harness - waitFor times out with a message naming what", async () => {
  const last = new Error("still red");
  await assert.rejects(
    waitFor(() => false, { timeoutMs: 30, intervalMs: 5, what: "the light to turn green" }),
    (err: Error) => {
      assert.match(err.message, /^timed out after 30 ms waiting for the light to turn green$/);
      return true;
    },
  );
  await assert.rejects(
    waitFor(() => {
      throw last;
    }, { timeoutMs: 30, intervalMs: 5, what: "a probe that throws" }),
    (err: Error) => err.message.includes("a probe that throws") && err.cause === last,
  );
});

// Failure paths of the harness itself: a broken start must fail fast and leave nothing behind.

test("harness - a server that exits during startup fails fast", async () => {
  const started = performance.now();
  await assert.rejects(startServer({ config: "this is { not valid", readyTimeoutMs: 3_000 }), /Parse error/);
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 1_500, `rejected after ${Math.round(elapsed)} ms; nats-server exits within milliseconds`);
});

test("harness - a failed start leaves no process or directory behind", async (t) => {
  const tmp = mkdtempSync(join(tmpdir(), "causeway-harness-test-"));
  const serversUnder = () =>
    readdirSync("/proc")
      .filter((p) => /^\d+$/.test(p))
      .filter((p) => {
        try {
          return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(tmp);
        } catch {
          return false;
        }
      })
      .map(Number);
  t.after(() => {
    // Only the nats-servers this test started (their config lives under its private tmp dir).
    for (const pid of serversUnder()) process.kill(pid, "SIGKILL");
    rmSync(tmp, { recursive: true, force: true });
  });
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = tmp; // os.tmpdir() reads it on each call; tests in a file run one at a time
  try {
    await assert.rejects(startServer({ config: "this is { not valid", readyTimeoutMs: 500 }), /Parse error/);
    await assert.rejects(startServer({ cluster: { name: "alone", routes: ["nats-route://127.0.0.1:9"] }, readyTimeoutMs: 1_000 }), /healthz/);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
  assert.deepEqual({ running: serversUnder(), dirs: readdirSync(tmp) }, { running: [], dirs: [] }, "no nats-server running and no directory left");
});

test("harness - importing the harness leaves no directory behind", (t) => {
  const tmp = mkdtempSync(join(tmpdir(), "causeway-harness-test-"));
  t.after(() => rmSync(tmp, { recursive: true, force: true }));
  const harness = join(repoRoot, "test", "harness", "index.ts");
  execFileSync(process.execPath, ["--input-type=module", "-e", `await import(${JSON.stringify(harness)});`], { env: { ...process.env, TMPDIR: tmp } });
  assert.deepEqual(readdirSync(tmp), []);
});
