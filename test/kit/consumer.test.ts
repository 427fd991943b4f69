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
