// The kit's durable-consumer runtime on a real nats-server: bounded concurrency, what a handler leaves
// unsettled, stop mid-batch, and the one loss signal for a deleted consumer, a deleted stream and a closed
// connection.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager, type JsMsg } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { ErrorCode, consumeDurable, createLogger } from "../../services/kit/index.ts";
import { startServer, waitFor, type NatsServer } from "../harness/index.ts";

const STREAM = "RUNTIME";
const DURABLE = "worker";
const quiet = createLogger({ name: "consumer-test", level: "silent" });

interface Bench extends AsyncDisposable {
  readonly server: NatsServer;
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  publish(n: number): Promise<void>;
  /** Stream sequences the durable has acked so far (its ack floor) and how many wait or are pending ack. */
  info(): Promise<{ ackFloor: number; pending: number; ackPending: number; redelivered: number }>;
}

async function bench(opts: { maxAckPending?: number } = {}): Promise<Bench> {
  const server = await startServer();
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: STREAM, subjects: ["runtime.>"] });
  await jsm.consumers.add(STREAM, { durable_name: DURABLE, ack_policy: AckPolicy.Explicit, ack_wait: 30_000_000_000, max_deliver: -1, ...(opts.maxAckPending !== undefined && { max_ack_pending: opts.maxAckPending }) });
  const js = jetstream(nc);
  return {
    server, nc, jsm,
    async publish(n) {
      await Promise.all(Array.from({ length: n }, (_, i) => js.publish(`runtime.${i}`, new TextEncoder().encode(String(i)))));
    },
    async info() {
      const i = await jsm.consumers.info(STREAM, DURABLE);
      return { ackFloor: i.ack_floor.stream_seq, pending: i.num_pending, ackPending: i.num_ack_pending, redelivered: i.num_redelivered };
    },
    async [Symbol.asyncDispose]() {
      await nc.close().catch(() => undefined);
      await server[Symbol.asyncDispose]();
    },
  };
}

describe("kit consumer runtime", () => {
  test("consumer - handles every message once, never more than `concurrency` at a time", async () => {
    await using b = await bench();
    await b.publish(40);
    let running = 0, most = 0;
    const seen = new Set<number>();
    await using c = await consumeDurable(b.nc, {
      stream: STREAM, durable: DURABLE, concurrency: 3, log: quiet,
      handler: async (msg) => {
        running++;
        most = Math.max(most, running);
        await new Promise((resolve) => setImmediate(resolve));
        seen.add(msg.info.streamSequence);
        running--;
        msg.ack();
      },
    });
    await waitFor(async () => (await b.info()).ackFloor === 40, { what: "all 40 acked" });
    assert.equal(seen.size, 40);
    assert.equal(most, 3, "the limit is reached and never exceeded");
    assert.equal(c.inFlight, 0);
  });

  test("consumer - a handler that throws leaves its message to the runtime, which naks it for redelivery", async () => {
    await using b = await bench();
    await b.publish(1);
    const deliveries: number[] = [];
    await using _c = await consumeDurable(b.nc, {
      stream: STREAM, durable: DURABLE, concurrency: 2, log: quiet, retryDelayMs: 10,
      handler: (msg) => {
        deliveries.push(msg.info.deliveryCount);
        if (msg.info.deliveryCount < 3) throw new Error("transient");
        msg.ack();
        return Promise.resolve();
      },
    });
    await waitFor(async () => (await b.info()).ackFloor === 1, { what: "acked on the third delivery" });
    assert.deepEqual(deliveries, [1, 2, 3]);
  });

  test("consumer - stop mid-batch: running handlers finish, what was fetched but not started goes back at once", async () => {
    // The server hands out at most 3 at a time: 2 running and 1 fetched, waiting for a slot. (A pull still on the
    // wire when the subscription closes is the server's to redeliver after ack_wait; that is not this test.)
    await using b = await bench({ maxAckPending: 3 });
    await b.publish(10);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const started: number[] = [];
    const c = await consumeDurable(b.nc, {
      stream: STREAM, durable: DURABLE, concurrency: 2, log: quiet,
      handler: async (msg) => {
        started.push(msg.info.streamSequence);
        await gate;
        msg.ack();
      },
    });
    await waitFor(() => started.length === 2, { what: "two handlers running" });
    let stopped = false;
    const stopping = c.stop().then(() => { stopped = true; });
    // stop() waits for the running handlers.
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(stopped, false);
    release();
    await stopping;
    assert.deepEqual(started.length, 2, "nothing started after stop");
    await waitFor(async () => (await b.info()).ackFloor === 2, { what: "the two handled acked" });
    // Everything else is available again now (nak'ed, not left to the 30 s ack_wait): a new consumer takes the
    // rest at once.
    const rest = new Set<number>();
    await using _next = await consumeDurable(b.nc, {
      stream: STREAM, durable: DURABLE, concurrency: 4, log: quiet,
      handler: (msg) => { rest.add(msg.info.streamSequence); msg.ack(); return Promise.resolve(); },
    });
    await waitFor(async () => (await b.info()).ackFloor === 10, { what: "the rest handled by the next consumer", timeoutMs: 5_000 });
    assert.deepEqual([...rest].sort((x, y) => x - y), [3, 4, 5, 6, 7, 8, 9, 10]);
  });

  test("consumer - a deleted consumer ends consumption and is reported once on `lost` (CW_ERR_CONFIG)", async () => {
    await using b = await bench();
    await using c = await consumeDurable(b.nc, { stream: STREAM, durable: DURABLE, concurrency: 2, log: quiet, expiresMs: 1_000, handler: (m) => { m.ack(); return Promise.resolve(); } });
    await b.jsm.consumers.delete(STREAM, DURABLE);
    const lost = await c.lost;
    assert.equal(lost.code, ErrorCode.Config);
    assert.match(lost.message, /consumer worker on RUNTIME ended/);
  });

  test("consumer - a deleted stream ends consumption and is reported on `lost`", async () => {
    await using b = await bench();
    await using c = await consumeDurable(b.nc, { stream: STREAM, durable: DURABLE, concurrency: 2, log: quiet, expiresMs: 1_000, handler: (m) => { m.ack(); return Promise.resolve(); } });
    await b.jsm.streams.delete(STREAM);
    const lost = await c.lost;
    assert.equal(lost.code, ErrorCode.Config);
    assert.match(lost.message, /RUNTIME/);
  });

  test("consumer - a closed connection is reported on `lost` (CW_ERR_UNAVAILABLE)", async () => {
    await using b = await bench();
    const nc = await connect({ servers: b.server.url, maxReconnectAttempts: 0 });
    await using c = await consumeDurable(nc, { stream: STREAM, durable: DURABLE, concurrency: 2, log: quiet, handler: (m) => { m.ack(); return Promise.resolve(); } });
    await b.server.stop();
    const lost = await c.lost;
    assert.equal(lost.code, ErrorCode.Unavailable);
    assert.match(lost.message, /connection closed/);
  });

  test("consumer - stop() is not a loss, and a missing consumer fails at start with the command that creates it", async () => {
    await using b = await bench();
    const c = await consumeDurable(b.nc, { stream: STREAM, durable: DURABLE, concurrency: 1, log: quiet, handler: (m: JsMsg) => { m.ack(); return Promise.resolve(); } });
    await c[Symbol.asyncDispose]();
    const settled = await Promise.race([c.lost.then(() => "lost"), new Promise((resolve) => setImmediate(() => resolve("quiet")))]);
    assert.equal(settled, "quiet");
    await assert.rejects(consumeDurable(b.nc, { stream: STREAM, durable: "nobody", concurrency: 1, log: quiet, handler: () => Promise.resolve() }), (err: Error & { code?: string }) => {
      assert.equal(err.code, ErrorCode.Config);
      assert.match(err.message, /consumer nobody on RUNTIME is missing .*causeway streams apply/);
      return true;
    });
  });
});

describe("kit consumer runtime, several durables (priority lanes)", () => {
  /** Stream RUNTIME with durables `hi` (subject runtime.hi.>) and `lo` (runtime.lo.>), ack_wait `ackWaitMs`. */
  async function lanes(ackWaitMs: number) {
    const server = await startServer();
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: STREAM, subjects: ["runtime.>"] });
    for (const name of ["hi", "lo"]) {
      await jsm.consumers.add(STREAM, { durable_name: name, filter_subject: `runtime.${name}.>`, ack_policy: AckPolicy.Explicit, ack_wait: ackWaitMs * 1e6, max_deliver: -1 });
    }
    const js = jetstream(nc);
    return {
      nc, jsm,
      async publish(lane: string, n: number) {
        for (let i = 0; i < n; i++) await js.publish(`runtime.${lane}.${i}`, new TextEncoder().encode(`${lane}${i}`));
      },
      async [Symbol.asyncDispose]() {
        await nc.close().catch(() => undefined);
        await server[Symbol.asyncDispose]();
      },
    };
  }

  test("consumer - several durables: one concurrency for all, at most `concurrency` ahead per durable, waiting messages kept alive past ack_wait, every message once", async () => {
    await using b = await lanes(600);
    await b.publish("hi", 12);
    await b.publish("lo", 12);
    let running = 0, most = 0;
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    const seen: string[] = [];
    await using _c = await consumeDurable(b.nc, {
      stream: STREAM, durable: [{ durable: "hi", weight: () => 3 }, { durable: "lo", weight: () => 1 }], concurrency: 2, log: quiet,
      handler: async (msg) => {
        running++;
        most = Math.max(most, running);
        // A running handler keeps its own message alive (as the agent pipeline does); the runtime, those that wait.
        const alive = setInterval(() => msg.working(), 150);
        await gate;
        clearInterval(alive);
        seen.push(new TextDecoder().decode(msg.data));
        running--;
        msg.ack();
      },
    });
    await waitFor(() => running === 2, { what: "both slots taken" });
    // Held past three ack_waits: what waits in the runtime is kept alive; the server redelivers nothing.
    const until = Date.now() + 2_000;
    await waitFor(() => Date.now() >= until, { what: "three ack_waits to pass", timeoutMs: 5_000 });
    for (const name of ["hi", "lo"]) {
      const info = await b.jsm.consumers.info(STREAM, name);
      assert.equal(info.num_redelivered, 0, `${name}: nothing redelivered while it waited`);
      // Delivered and unacked: the running handlers (2 at most, both lanes together) and at most `concurrency` waiting.
      assert.ok(info.num_ack_pending <= 2 + 2, `${name}: ${info.num_ack_pending} delivered ahead`);
    }
    release();
    await waitFor(() => seen.length >= 24, { what: "every message handled" });
    assert.deepEqual([...seen].sort(), [...new Set(seen)].sort(), "each once");
    assert.equal(seen.length, 24);
    assert.equal(most, 2, "one limit for both durables");
  });

  test("consumer - several durables: a deleted one is reported on `lost`; stop() hands back what waits", async () => {
    await using b = await lanes(30_000);
    const c = await consumeDurable(b.nc, {
      stream: STREAM, durable: [{ durable: "hi", weight: () => 3 }, { durable: "lo", weight: () => 1 }], concurrency: 2, log: quiet, expiresMs: 1_000,
      handler: () => new Promise<void>(() => undefined), // never settles: everything else waits
    });
    await b.publish("lo", 6);
    await waitFor(async () => (await b.jsm.consumers.info(STREAM, "lo")).num_ack_pending === 4, { what: "two running, two waiting" });
    await b.jsm.consumers.delete(STREAM, "hi");
    const lost = await c.lost;
    assert.equal(lost.code, ErrorCode.Config);
    assert.match(lost.message, /consumer hi on RUNTIME ended/);
    void c.stop(); // the two running handlers never finish; what waits is nak'ed at once, not left to ack_wait (30 s)
    const next = await (await jetstream(b.nc).consumers.get(STREAM, "lo")).fetch({ max_messages: 4, expires: 3_000 });
    const again: number[] = [];
    for await (const m of next) {
      again.push(m.info.streamSequence);
      m.ack();
      if (again.length === 4) break;
    }
    // The two that waited come back redelivered at once, with the two never delivered: all but the two running.
    assert.equal(again.length, 4, `handed back: ${again.join(", ")}`);
  });
});
