// Where a Causeway connection goes when it loses its server (kit connectWithPolicy): on a real 3-node cluster, a
// client whose node hangs (SIGSTOP: the kernel still accepts TCP connections for it, so a dial to it waits out the
// whole dial timeout) notices through its pings and reconnects to another node at once — its first dial skips
// the node it lost — then publishes there.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { CONNECTION_POLICY, connectWithPolicy, createLogger, createStreamPublisher, watchConnection } from "../../services/kit/index.ts";
import { startCluster, waitFor } from "../harness/index.ts";

test("reconnect - a client whose node hangs reconnects to another node without dialling the hung one first", async () => {
  await using cluster = await startCluster();
  const [a, b, c] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0], typeof cluster.nodes[0]];
  const admin = await connectWithPolicy({ servers: b.url });
  const jsm = await jetstreamManager(admin);
  await jsm.streams.add({ name: "HANG", subjects: ["hang.>"], num_replicas: 3 });
  const lines: string[] = [];
  const log = createLogger({ name: "reconnect-test", level: "info", pretty: false, destination: new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }) });
  const hostOf = (url: string) => new URL(url).host;
  // A first, then the others in order (no shuffling), so the client starts on the node that will hang.
  const nc = await connectWithPolicy({ servers: [a.url, b.url, c.url], noRandomize: true, name: "reconnect-test" });
  const publisher = createStreamPublisher(nc, "_INBOX");
  try {
    assert.equal(nc.getServer(), hostOf(a.url));
    watchConnection(nc, log);
    process.kill(a.pid, "SIGSTOP");
    try {
      const reconnected = await waitFor(() => lines.map((l) => JSON.parse(l) as { msg: string; server: string; downMs?: number }).find((l) => l.msg === "reconnected to NATS"),
        { what: "the client to reconnect to another node", timeoutMs: 30_000 });
      assert.notEqual(reconnected.server, hostOf(a.url), "reconnected to another node");
      // Down from the stale ping to the reconnect: a dial or two to live nodes (with their reconnect wait), never
      // the dial timeout a dial to the hung node waits out.
      assert.ok(reconnected.downMs! < CONNECTION_POLICY.dialTimeoutMs, `down ${reconnected.downMs} ms (a dial to the hung node waits ${CONNECTION_POLICY.dialTimeoutMs} ms)`);
      const ack = await waitFor(() => publisher.publish("hang.after", "x").catch(() => undefined), { what: "a publish acknowledged after the move", timeoutMs: 20_000 });
      assert.equal(ack.stream, "HANG");
    } finally {
      process.kill(a.pid, "SIGCONT");
    }
  } finally {
    publisher.close();
    await nc.close();
    await admin.close();
  }
});
