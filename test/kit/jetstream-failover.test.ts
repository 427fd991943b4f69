// Leaving a server whose JetStream stopped answering although the server answers pings (CONNECTION_POLICY
// `jetStreamFailover…`, kit jetStreamHealth): the rules on their own (a slow ack, a leader election, an answer in
// between, a full outage check nobody, or not often; the stay-or-move decision from the server's advertised URLs
// and the meta leader), then on a real 3-node cluster whose node the client is on is cut off from its two peers —
// its routes go through TCP proxies the test cuts, so it stops advertising its peers — while the client still
// reaches it: the client moves to another node, saying so, and its publishes are acknowledged there.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  CONNECTION_POLICY, connectWithPolicy, createLogger, createStreamPublisher, watchConnection, type PubAck,
} from "../../services/kit/index.ts";
import { jetStreamAnswered, jetStreamChecked, jetStreamSilent, failoverDecision, lostMostPeers, type FailoverPacing, type FailureStreak } from "../../services/kit/internal.ts";
import { waitForCluster } from "../../services/cli/nats-process.ts";
import { freePort, replicatedInfo, startServer, startTcpProxy, waitFor, type NatsServer } from "../harness/index.ts";

const P = CONNECTION_POLICY;

describe("jetstream failover - the rules", () => {
  const fresh = (): { streak: FailureStreak; pacing: FailoverPacing } => ({ streak: { since: undefined, failures: 0 }, pacing: { notBefore: 0, interval: P.jetStreamFailoverAfterMs } });

  test("jetstream failover - a single slow ack, or failures spanning less than the threshold (a leader election), move nobody", () => {
    const { streak, pacing } = fresh();
    assert.equal(jetStreamSilent(streak, pacing, 0, 5_000), undefined, "one ack timeout");
    // A busy client during a 5 s election: dozens of failures, all within less than jetStreamFailoverAfterMs.
    for (let t = 100; t < P.jetStreamFailoverAfterMs - 100; t += 100) assert.equal(jetStreamSilent(streak, pacing, t, t + 50), undefined, `failure at ${t} ms`);
  });

  test("jetstream failover - fewer failures than the minimum move nobody, however long they span", () => {
    const { streak, pacing } = fresh();
    for (let i = 1; i < P.jetStreamFailoverMinFailures; i++) assert.equal(jetStreamSilent(streak, pacing, i * 60_000, i * 60_000 + 5_000), undefined);
  });

  test("jetstream failover - enough failures over the threshold fail over once; an answer in between starts the streak over", () => {
    const { streak, pacing } = fresh();
    const after = P.jetStreamFailoverAfterMs;
    // An answer just before the threshold: the failures before it do not count.
    for (let i = 0; i < P.jetStreamFailoverMinFailures; i++) jetStreamSilent(streak, pacing, i * 1_000, i * 1_000 + 5_000);
    jetStreamAnswered(streak, pacing);
    assert.equal(jetStreamSilent(streak, pacing, after, after + 1), undefined, "the streak started over at the answer");
    for (let i = 1; i < P.jetStreamFailoverMinFailures - 1; i++) assert.equal(jetStreamSilent(streak, pacing, after + i, after + i + 1), undefined);
    const due = jetStreamSilent(streak, pacing, 2 * after, 2 * after + 1);
    assert.deepEqual(due, { silentForMs: after + 1 });
    assert.equal(jetStreamChecked(streak, pacing, "moved", 2 * after + 1), after);
    assert.equal(streak.failures, 0, "the streak starts over after a failover");
  });

  test("jetstream failover - a server that stopped advertising most of its peers' URLs has lost its routes to them; one that lost a minority has not", () => {
    // A node of three advertises 3 client URLs; of five, 5; a node listening on two interfaces, twice as many.
    assert.equal(lostMostPeers(3, 1), true, "3 nodes, both routes gone");
    assert.equal(lostMostPeers(3, 2), false, "3 nodes, one route gone: still in the majority");
    assert.equal(lostMostPeers(5, 2), true, "5 nodes, three routes gone");
    assert.equal(lostMostPeers(5, 3), false);
    assert.equal(lostMostPeers(6, 2), true, "3 nodes of two URLs each, both routes gone");
    assert.equal(lostMostPeers(1, 1), false, "a single server");
    assert.equal(lostMostPeers(0, 0), false, "a server that advertises nothing (no_advertise)");
  });

  test("jetstream failover - the decision: a server cut off from most of its peers is left even when it answers as meta leader; an election anywhere is stayed through", async () => {
    const asked: string[] = [];
    const meta = (reached: boolean, what: string) => async () => { asked.push(what); return reached; };
    assert.deepEqual(await failoverDecision(3, 1, meta(true, "cut-off meta leader")), { move: true, why: "lost its routes to most of its peers" }, "a cut-off meta leader answers as one");
    assert.deepEqual(asked, [], "lost routes decide without asking");
    assert.deepEqual(await failoverDecision(3, 3, meta(true, "stream election")), { move: false }, "a stream's or consumer's election");
    assert.deepEqual(await failoverDecision(3, 3, meta(false, "meta election")), { move: false }, "every route up, no meta leader: the whole cluster elects one");
    assert.deepEqual(await failoverDecision(3, 2, meta(false, "one route lost")), { move: true, why: "reaches no JetStream meta leader" }, "a route lost and no meta leader");
    assert.deepEqual(await failoverDecision(3, 2, meta(true, "one route lost, leader reached")), { move: false });
    assert.deepEqual(await failoverDecision(1, 1, meta(false, "advertised nothing of a cluster")), { move: true, why: "reaches no JetStream meta leader" }, "a server that never advertised a peer: the meta leader decides");
    assert.deepEqual(await failoverDecision(0, 0, meta(true, "no_advertise")), { move: false });
  });

  test("jetstream failover - a check that finds the meta leader (an election somewhere) is repeated every recheck interval while the failures go on, and a later check may move", () => {
    const { streak, pacing } = fresh();
    const after = P.jetStreamFailoverAfterMs;
    const checks: number[] = [];
    // A failure every 100 ms; the first three checks find the meta leader (a cut-off meta leader, until it notices
    // it lost its quorum), the fourth does not.
    for (let t = 0; t <= after + 10 * P.jetStreamRecheckMs; t += 100) {
      if (jetStreamSilent(streak, pacing, t, t + 100) === undefined) continue;
      checks.push(t + 100);
      if (jetStreamChecked(streak, pacing, checks.length < 4 ? "stayed" : "moved", t + 100) === after) break;
    }
    assert.equal(checks[0], after, "the first check at the threshold");
    assert.deepEqual(checks.slice(1).map((c, i) => c - checks[i]!), [P.jetStreamRecheckMs, P.jetStreamRecheckMs, P.jetStreamRecheckMs], `checks at ${checks.join(", ")}`);
    assert.deepEqual(streak, { since: undefined, failures: 0 }, "the move starts the streak over");
    assert.equal(pacing.interval, after * 2, "and the next move waits twice as long");
  });

  test("jetstream failover - while nothing answers anywhere, failovers come ever further apart (up to the maximum); an answer resets that", () => {
    const { streak, pacing } = fresh();
    const after = P.jetStreamFailoverAfterMs;
    const failovers: number[] = [];
    // A failure every 500 ms for ten minutes, nothing answering on any server.
    for (let t = 0; t <= 600_000; t += 500) {
      if (jetStreamSilent(streak, pacing, t, t + 500) === undefined) continue;
      failovers.push(t + 500);
      jetStreamChecked(streak, pacing, "moved", t + 500);
    }
    const gaps = failovers.slice(1).map((t, i) => t - failovers[i]!);
    assert.ok(failovers.length >= 5 && failovers.length <= 16, `failovers at ${failovers.join(", ")}`);
    for (const [i, gap] of gaps.entries()) assert.ok(gap >= Math.min(P.jetStreamFailoverMaxIntervalMs, after * 2 ** i), `gap ${i}: ${gap} ms`);
    assert.ok(gaps.at(-1)! >= P.jetStreamFailoverMaxIntervalMs && gaps.at(-1)! <= P.jetStreamFailoverMaxIntervalMs + after + 1_000, `last gap ${gaps.at(-1)} ms`);
    jetStreamAnswered(streak, pacing);
    assert.deepEqual(pacing, { notBefore: 0, interval: after });
  });
});

/** Route ports of the nodes' /routez as `name → ports of the connections' other ends`. */
async function routePeerPorts(node: NatsServer): Promise<number[]> {
  const res = await fetch(`${node.monitorUrl}/routez`);
  const body = await res.json() as { routes?: { port: number }[] };
  return (body.routes ?? []).map((r) => r.port);
}

describe("jetstream failover - on a real cluster", () => {
  test("jetstream failover - a client whose node is cut off from its peers (pings answered, JetStream silent) moves to another node, and its publishes are acknowledged there", async () => {
    const cluster = `causeway_fo_${process.pid}_${Date.now().toString(36)}`;
    const [portA, portB, portC] = await Promise.all([freePort(), freePort(), freePort()]);
    const route = (port: number) => `nats-route://127.0.0.1:${port}`;
    // Every route connection of node A, both ways, passes through a proxy; B and C talk directly. A advertises
    // its proxy, so B and C learn no other way to reach it; A is configured with proxies to B and C.
    await using toA = await startTcpProxy(portA);
    await using aToB = await startTcpProxy(portB);
    await using aToC = await startTcpProxy(portC);
    const nodes: NatsServer[] = [];
    try {
      nodes.push(await startServer({ name: `${cluster}_b`, cluster: { name: cluster, port: portB, routes: [route(portC), route(toA.port)] }, waitHealthy: false }));
      nodes.push(await startServer({ name: `${cluster}_c`, cluster: { name: cluster, port: portC, routes: [route(portB), route(toA.port)] }, waitHealthy: false }));
      nodes.push(await startServer({
        name: `${cluster}_a`, cluster: { name: cluster, port: portA, routes: [route(aToB.port), route(aToC.port)], advertise: `127.0.0.1:${toA.port}` }, waitHealthy: false,
      }));
      const [b, c, a] = nodes as [NatsServer, NatsServer, NatsServer];
      await waitForCluster(nodes.map((n) => n.monitorUrl), { timeoutMs: 30_000 });
      // The cut is only a cut if every route of A runs through the proxies.
      await waitFor(async () => {
        const through = new Set([aToB.port, aToC.port, ...toA.upstreamPorts()]);
        const ports = await routePeerPorts(a);
        return ports.length > 0 && ports.every((p) => through.has(p)) ? true : undefined;
      }, { what: "node A's routes all to run through the proxies", timeoutMs: 10_000 });

      const admin = await connectWithPolicy({ servers: b.url });
      const jsm = await jetstreamManager(admin);
      await jsm.streams.add({ name: "FAILOVER", subjects: ["failover.>"], num_replicas: 3 });
      await replicatedInfo(jsm, "FAILOVER");
      await admin.close();

      const lines: string[] = [];
      const log = createLogger({ name: "failover-test", level: "info", pretty: false, destination: new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }) });
      const serverOf = (n: NatsServer) => new URL(n.url).host;
      // A first, then the others in order (no shuffling), so the client starts on the node that will be cut off.
      const nc: NatsConnection = await connectWithPolicy({ servers: [a.url, b.url, c.url], noRandomize: true, name: "failover-test" });
      try {
        assert.equal(nc.getServer(), serverOf(a));
        const reconnectedTo: string[] = [];
        void (async () => {
          for await (const s of nc.status()) if (s.type === "reconnect") reconnectedTo.push(s.server);
        })();
        watchConnection(nc, log);
        const publisher = createStreamPublisher(nc, "_INBOX");
        assert.equal((await publisher.publish("failover.before", "x")).stream, "FAILOVER");

        toA.cut();
        aToB.cut();
        aToC.cut();
        const cutAt = performance.now();
        // Load, not synchronisation: a publish every 200 ms, as a gateway under traffic; the wait is on the outcome.
        const acked: { sentAt: number; ack: PubAck; server: string }[] = [];
        let n = 0;
        const load = setInterval(() => {
          const sentAt = performance.now();
          publisher.publish(`failover.after.${n++}`, "x").then((ack) => acked.push({ sentAt, ack, server: nc.getServer() }), () => undefined);
        }, 200);
        try {
          const first = await waitFor(() => acked.find((x) => x.sentAt > cutAt), { what: "a publish sent after the cut to be acknowledged", timeoutMs: 50_000 });
          const tookMs = performance.now() - cutAt;
          assert.notEqual(first.server, serverOf(a), "acknowledged on another node");
          assert.equal(first.ack.stream, "FAILOVER");
          // Moved once, straight to another node (not redialling the cut-off one first), not before the threshold.
          assert.deepEqual(reconnectedTo.length, 1, `reconnects: ${reconnectedTo.join(", ")}`);
          assert.notEqual(reconnectedTo[0], serverOf(a));
          // One move, at the first check, with a warning naming the cut-off node and why: the cut closed its route
          // connections, so it stopped advertising its peers' URLs (whether or not it led the meta group, whose
          // cut-off leader would go on answering as one).
          const silent = lines.map((l) => JSON.parse(l) as { msg: string; server?: string; silentForMs?: number; level: string; advertisedUrls?: { peak: number; now: number } }).filter((l) => l.msg.startsWith("JetStream has not answered"));
          assert.equal(silent.length, 1, lines.join(""));
          assert.equal(silent[0]!.level, "warn");
          assert.equal(silent[0]!.server, serverOf(a));
          assert.deepEqual(silent[0]!.advertisedUrls, { peak: 3, now: 1 });
          assert.match(silent[0]!.msg, new RegExp(`on ${serverOf(a).replace(/\./g, "\\.")}, which answers pings but lost its routes to most of its peers \\(cut off from its cluster\\?\\): moving to another server`));
          assert.ok(silent[0]!.silentForMs! >= P.jetStreamFailoverAfterMs, `silent for ${silent[0]!.silentForMs} ms`);
          assert.ok(tookMs < P.jetStreamFailoverAfterMs * 2 + 5_000, `took ${Math.round(tookMs)} ms from the cut`);
        } finally {
          clearInterval(load);
        }
        publisher.close();
      } finally {
        await nc.close();
      }
    } finally {
      await Promise.all(nodes.map((node) => node[Symbol.asyncDispose]()));
    }
  });
});
