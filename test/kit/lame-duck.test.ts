// A node taken out the operator's way, lame duck mode (`nats-server --signal ldm=<pid>`, the real binary), on a
// real 3-node cluster: a Causeway connection on it moves to another node as soon as the node tells its clients
// (CONNECTION_POLICY, kit watchConnection), long before the node would close it, says so naming the node, and its
// publishes to an R3 stream are acknowledged on the other node, none lost nor stored twice (a publish whose ack
// was lost while a stream leader moved away is retried with the same Nats-Msg-Id, as the mesh does). The grace period here is
// longer than the whole test's wait, so only the client's own move can pass it.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { Writable } from "node:stream";
import { test } from "node:test";
import { promisify } from "node:util";
import { jetstreamManager } from "@nats-io/jetstream";
import { connectWithPolicy, createLogger, createStreamPublisher, watchConnection, type PubAck } from "../../services/kit/index.ts";
import { replicatedInfo, startCluster, toolPath, waitFor } from "../harness/index.ts";

const GRACE_S = 25;

test("lame duck - a client on a node entering lame duck mode moves to another node at once, and none of its publishes is lost", async () => {
  // The node closes its clients only after GRACE_S: a move before that is the client's own.
  await using cluster = await startCluster({ config: `lame_duck_grace_period: "${GRACE_S}s"\nlame_duck_duration: "${GRACE_S + 30}s"` });
  const [a, b, c] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0], typeof cluster.nodes[0]];
  const admin = await connectWithPolicy({ servers: b.url });
  const jsm = await jetstreamManager(admin);
  await jsm.streams.add({ name: "LDM", subjects: ["ldm.>"], num_replicas: 3 });
  await replicatedInfo(jsm, "LDM");

  const lines: string[] = [];
  const log = createLogger({ name: "ldm-test", level: "info", pretty: false, destination: new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }) });
  const hostOf = (url: string) => new URL(url).host;
  const nc = await connectWithPolicy({ servers: [a.url, b.url, c.url], noRandomize: true, name: "ldm-test" });
  try {
    assert.equal(nc.getServer(), hostOf(a.url), "the client starts on the node that goes into lame duck mode");
    const reconnectedTo: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === "reconnect") reconnectedTo.push(s.server);
    })();
    watchConnection(nc, log);
    const publisher = createStreamPublisher(nc, "_INBOX");
    const outcomes: { n: number; ack?: PubAck; err?: Error; retried: boolean }[] = [];
    let n = 0;
    // As the mesh publishes: an unacknowledged publish is retried with the same Nats-Msg-Id (the stream may have
    // stored it). A publish in flight while a stream leader moves away from the node may lose its ack.
    const publish = async (i: number) => {
      const once = () => publisher.publish(`ldm.${i}`, String(i), { msgID: `ldm-${i}` });
      try {
        outcomes.push({ n: i, ack: await once(), retried: false });
      } catch {
        try { outcomes.push({ n: i, ack: await once(), retried: true }); } catch (err) { outcomes.push({ n: i, err: err as Error, retried: true }); }
      }
    };
    // Load, not synchronisation: a publish every 100 ms, as a gateway under traffic; the waits are on outcomes.
    const load = setInterval(() => void publish(n++), 100);
    try {
      await waitFor(() => outcomes.length >= 5, { what: "publishes acknowledged before the lame duck", timeoutMs: 10_000 });
      await promisify(execFile)(toolPath("nats-server"), ["--signal", `ldm=${a.pid}`]);
      const ldmAt = performance.now();
      const moved = await waitFor(() => reconnectedTo[0], { what: "the client to move off the lame duck node", timeoutMs: 15_000 });
      const tookMs = performance.now() - ldmAt;
      assert.notEqual(moved, hostOf(a.url), "moved to another node");
      assert.ok(tookMs < GRACE_S * 1000, `moved ${Math.round(tookMs)} ms after the signal: before the node closes its clients`);
      const after = n;
      await waitFor(() => outcomes.some((o) => o.n > after + 5 && o.ack !== undefined), { what: "publishes acknowledged after the move", timeoutMs: 20_000 });
    } finally {
      clearInterval(load);
    }
    await waitFor(() => outcomes.length === n, { what: "every publish to have an outcome", timeoutMs: 20_000 });
    const failed = outcomes.filter((o) => o.err !== undefined);
    assert.deepEqual(failed.map((o) => `${o.n}: ${o.err!.message}`), [], "every publish acknowledged (after one retry at most)");
    // Every publish is in the stream once: nothing lost, nothing twice.
    const info = await jsm.streams.info("LDM");
    assert.equal(info.state.messages, n, `${outcomes.filter((o) => o.retried).length} of ${n} publishes retried`);
    assert.equal(reconnectedTo.length, 1, `reconnects: ${reconnectedTo.join(", ")}`);
    const logged = lines.map((l) => JSON.parse(l) as { msg: string; server?: string; level: string });
    const ldm = logged.filter((l) => l.msg === "the NATS server is entering lame duck mode: moving to another");
    assert.equal(ldm.length, 1, lines.join(""));
    assert.equal(ldm[0]!.server, hostOf(a.url));
    assert.equal(ldm[0]!.level, "warn");
    const left = logged.filter((l) => l.msg.startsWith("left the NATS server"));
    assert.deepEqual(left.map((l) => [l.server, l.msg]), [[hostOf(a.url), "left the NATS server (it is in lame duck mode); reconnecting to another server of the list"]]);
    publisher.close();
  } finally {
    await nc.close();
    await admin.close();
  }
});
