// The one durable-consumer runtime every Causeway consumer is built on: agents, the gateway's NATS ingress,
// lineage ingest, the coordinator's handoffs and dead letters. A service writes only its handler; the runtime
// pulls, bounds concurrency, settles what a handler leaves unsettled, hands back what it fetched but never
// started, and reports — once, on `lost` — when consumption ended without stop(): the consumer or its stream
// was deleted, pulling failed, or the connection closed. The process then exits non-zero with that reason
// (kit `untilStop`), and its supervisor restarts it.
//
// One runtime may serve several durables of a stream under its one concurrency limit (issue 16, priority lanes:
// an agent's critical, normal and background durables of a capability). Each durable is pulled on its own; the
// next message to run is picked among the durables that have one waiting by weight — stride scheduling: each
// durable advances by 1/weight per message it is given, the one furthest behind goes next — with aging: the
// message at the head of a durable gains weight the longer it has waited since the stream stored it, reaching
// the highest weight after `agingMs`, so under sustained load of the heaviest durable the others still get a
// share that grows with their wait. A durable that was idle comes back at the current pass (no credit for idling).
import { jetstream, type Consumer, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { jetStreamHealth } from "./connect.ts";
import { CausewayError, ErrorCode, NotReadyError } from "./errors.ts";
import { isConsumerNotFound, isStreamNotFound } from "./jetstream-errors.ts";
import { isNotReady, isTransient, transientRetryDelayMs } from "./transient.ts";

/** One of several durables served together, with its weight (read at every pick: a live file may change it). */
export interface WeightedDurable {
  readonly durable: string;
  /** A positive number; the shares of the durables with work waiting are proportional to their weights. */
  readonly weight: () => number;
}

/** How a consumer handles its messages. */
export interface ConsumeOptions {
  /** The stream and the durable pull consumer on it (which must exist: operator tooling creates it). */
  readonly stream: string;
  /** The durable; or several, sharing `concurrency`, served by weight with aging (see above). */
  readonly durable: string | readonly WeightedDurable[];
  /**
   * Most handlers running at once. One durable: also the most messages pulled ahead. Several: each durable has at
   * most this many ahead of the handlers, requested and delivered together: every delivered message goes straight
   * into the runtime's queue, where the pick sees it and working() keeps it alive while it waits, so none outlives
   * its ack_wait there.
   */
  readonly concurrency: number;
  /**
   * Handles one message and settles it (ack, nak, term). A handler that throws leaves its message to the
   * runtime, which naks it and logs the error: the message is redelivered, never lost — after 250 ms–2 s when
   * the error is transient (kit `isTransient`: a timeout, no responders, a 503), else after `retryDelayMs`.
   */
  readonly handler: (msg: JsMsg) => Promise<void>;
  readonly log: Logger;
  /** Delay of the nak after a handler threw. Default 1000 ms. */
  readonly retryDelayMs?: number;
  /** How long a pull waits; a deleted consumer or stream, or a consumer whose leader moved, is noticed within two of it. Default 2000 ms. */
  readonly expiresMs?: number;
  /**
   * Several durables: how long a waiting message takes to reach the highest weight (since the stream stored it);
   * read at every pick. Default (or ≤ 0): no aging.
   */
  readonly agingMs?: () => number;
}

/** A running durable consumer. */
export interface DurableConsumer extends AsyncDisposable {
  /** The consumer's name, as in `nats consumer ls <stream>` (several: the first). */
  readonly durable: string;
  /** Every durable it serves. */
  readonly durables: readonly string[];
  /** Handlers running now. */
  readonly inFlight: number;
  /**
   * Settles (never rejects) with why consumption ended other than by stop(): CW_ERR_CONFIG when the consumer
   * or its stream is gone or pulling failed, CW_ERR_UNAVAILABLE when the connection closed. Never settles after stop().
   */
  readonly lost: Promise<CausewayError>;
  /**
   * Stops pulling; messages fetched but not started are nak'ed (redelivered to a replica still running);
   * resolves once every running handler has finished.
   */
  stop(): Promise<void>;
}

const DEFAULT_RETRY_MS = 1_000;
const DEFAULT_EXPIRES_MS = 2_000;
const ONE = () => 1;
const NO_AGING = () => 0;

/** How long a durable whose pull failed (a leader election, a blip) waits before pulling again. */
const PULL_RETRY_MS = 1_000;

/** One durable being pulled: its messages waiting for a slot, and its place in the weighted order. */
interface Source {
  readonly durable: string;
  readonly weight: () => number;
  readonly consumer: Consumer;
  /** One durable: its continuous pull. Several: undefined (bounded fetches, below). */
  messages: ConsumerMessages | undefined;
  /** Several: the fetches open now, and the messages they may still deliver. */
  readonly fetches: Set<ConsumerMessages>;
  reserved: number;
  readonly queue: JsMsg[];
  /** Its pass: how far it has been served, in 1/weight steps (stride scheduling). */
  pass: number;
  /** Wakes its pump, which waits while its queue is full. */
  wake: (() => void) | undefined;
}

/** Starts consuming `opts.durable` on `opts.stream`; fails fast when a consumer does not exist. */
export async function consumeDurable(nc: NatsConnection, opts: ConsumeOptions): Promise<DurableConsumer> {
  const { stream, concurrency, handler, log } = opts;
  const list: readonly WeightedDurable[] = typeof opts.durable === "string" ? [{ durable: opts.durable, weight: ONE }] : opts.durable;
  const durable = list.map((d) => d.durable).join(", ");
  if (list.length === 0) throw new CausewayError(ErrorCode.Config, `consumer on ${stream}: no durable to consume`);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new CausewayError(ErrorCode.Config, `consumer ${durable} on ${stream}: concurrency ${concurrency} must be a positive integer`);
  }
  const retryMs = opts.retryDelayMs ?? DEFAULT_RETRY_MS;
  const agingMs = opts.agingMs ?? NO_AGING;
  const several = list.length > 1;
  // One durable: the client pulls `concurrency` ahead and the runtime holds one for the next free slot (as ever).
  // Several: per durable at most `concurrency` requested or queued, by bounded fetches drained into the queue.
  const queueCap = several ? concurrency : 1;
  const expires = opts.expiresMs ?? DEFAULT_EXPIRES_MS;
  const js = jetstream(nc);
  const sources: Source[] = [];
  let ackWaitMs = Infinity;
  try {
    for (const d of list) {
      const consumer = await js.consumers.get(stream, d.durable).catch((err: unknown) => {
        // Missing (or JetStream not answering): a starting service waits for it (kit isNotReady); anything else is refused as it is.
        const Missing = isNotReady(err) ? NotReadyError : CausewayError;
        throw new Missing(ErrorCode.Config, `consumer ${d.durable} on ${stream} is missing (${(err as Error).message}): create it with \`causeway streams apply\``, { cause: err });
      });
      if (several) ackWaitMs = Math.min(ackWaitMs, ((await consumer.info(true)).config.ack_wait ?? 30e9) / 1e6);
      // abort_on_missing_resource: a deleted consumer or stream ends the iterator (reported on `lost`) instead of
      // being retried forever in silence.
      const messages = several ? undefined : await consumer.consume({ max_messages: concurrency, expires, abort_on_missing_resource: true });
      sources.push({ durable: d.durable, weight: d.weight, consumer, messages, fetches: new Set(), reserved: 0, queue: [], pass: 0, wake: undefined });
    }
  } catch (err) {
    await Promise.all(sources.map((s) => (s.messages ? s.messages.close().catch(() => undefined) : Promise.resolve())));
    throw err;
  }

  let stopping = false;
  let running = 0;
  const idle: (() => void)[] = [];
  /** The pass of the last message given a slot: where a durable coming back from idle starts. */
  let now = 0;

  /**
   * The durable whose head message runs next: the one least far served (its pass), the heavier on a tie. A pass is
   * never more than one step (1/weight) ahead of the last given slot's, at the weight its head has now: a
   * durable whose head has aged is not held back by the steps it was charged when its weight was lower.
   */
  const pick = (): Source | undefined => {
    if (!several) return sources[0]!.queue.length > 0 ? sources[0] : undefined;
    let top = 0;
    for (const s of sources) top = Math.max(top, s.weight());
    const aging = agingMs();
    const at = aging > 0 ? Date.now() : 0;
    let best: Source | undefined, bestPass = Infinity, bestWeight = 0;
    for (const s of sources) {
      const head = s.queue[0];
      if (head === undefined) continue;
      const w = Math.max(s.weight(), Number.MIN_VALUE);
      // Aging: from its own weight towards the highest as the head waits since it was stored, reached at agingMs.
      const weight = aging > 0 ? w + (top - w) * Math.min(1, Math.max(0, at - head.info.timestampNanos / 1e6) / aging) : w;
      const pass = Math.min(s.pass, now + 1 / weight);
      if (pass < bestPass || (pass === bestPass && weight > bestWeight)) {
        best = s;
        bestPass = pass;
        bestWeight = weight;
      }
    }
    if (best !== undefined) {
      now = Math.max(now, bestPass);
      best.pass = bestPass + 1 / bestWeight;
    }
    return best;
  };
  /** Gives free slots to waiting messages, by weight. */
  const dispatch = () => {
    while (running < concurrency && !stopping) {
      const s = pick();
      if (s === undefined) return;
      const msg = s.queue.shift()!;
      const wake = s.wake;
      s.wake = undefined;
      wake?.();
      start(msg);
      if (several) refill(s);
    }
  };
  const finished = () => {
    running--;
    dispatch();
    if (running === 0) for (const resolve of idle.splice(0)) resolve();
  };
  const failed = (msg: JsMsg, err: unknown) => {
    // A broker fault that passes by itself is retried shortly (kit isTransient); anything else after retryMs.
    const delay = isTransient(err) ? transientRetryDelayMs(msg.info.deliveryCount) : retryMs;
    log.error({ err, stream, consumer: msg.info.consumer, seq: msg.info.streamSequence, retryInMs: delay }, "handler failed; the message is redelivered");
    try {
      msg.nak(delay);
    } catch {
      // The connection is gone: the server redelivers after ack_wait anyway.
    }
  };
  // One reaction per message on the hot path (no catch/finally chain).
  const start = (msg: JsMsg) => {
    running++;
    let task: Promise<void>;
    try {
      task = handler(msg);
    } catch (err) {
      failed(msg, err);
      finished();
      return;
    }
    task.then(finished, (err: unknown) => {
      failed(msg, err);
      finished();
    });
  };

  let markLost: (err: CausewayError) => void = () => undefined;
  const lost = new Promise<CausewayError>((resolve) => { markLost = resolve; });
  /** Reports, once, that consumption of `s` ended other than by stop(). */
  const ended = (s: Source, err: unknown) => {
    if (stopping) return;
    const closed = nc.isClosed();
    const why = err === undefined ? "its message iterator ended" : err instanceof Error ? err.message : String(err);
    const reason = closed
      ? new CausewayError(ErrorCode.Unavailable, `consumer ${s.durable} on ${stream}: the NATS connection closed`, { cause: err })
      : new CausewayError(ErrorCode.Config, `consumer ${s.durable} on ${stream} ended (${why}): was it or its stream deleted? Started again, the service needs it back (\`causeway streams apply\`)`, { cause: err });
    log.error({ err: reason }, "consumption ended");
    markLost(reason);
  };
  const healthOf = new Map(sources.map((s) => [s, jetStreamHealth(nc, `consumer ${s.durable}`)]));
  /** Puts a delivered message in its durable's queue and offers it to a free slot. */
  const arrived = (s: Source, msg: JsMsg) => {
    healthOf.get(s)!.answered();
    if (stopping) {
      msg.nak(); // fetched, never started: back to the stream now, for a replica that is still running
      return;
    }
    if (several && s.queue.length === 0) s.pass = Math.max(s.pass, now); // no credit for the time it was idle
    s.queue.push(msg);
    dispatch();
  };

  /** One durable: its continuous pull, holding one message while every slot is busy (as it always did). */
  const pump = async (s: Source) => {
    // Messages and the server's idle heartbeats show the consumer's leader answers; missed heartbeats and pulls
    // nobody answers feed the connection's JetStream failover (kit jetStreamHealth).
    const health = healthOf.get(s)!;
    const messages = s.messages!;
    void (async () => {
      for await (const st of messages.status()) {
        if (st.type === "heartbeat") health.answered();
        else if (st.type === "heartbeats_missed" || st.type === "no_responders") health.silent(performance.now());
      }
    })().catch(() => undefined); // the notifications end with the consumer
    for await (const msg of messages) {
      arrived(s, msg);
      if (s.queue.length >= queueCap && !stopping) await new Promise<void>((resolve) => { s.wake = resolve; });
    }
  };

  /**
   * Several durables: pulls for `s` as much as its queue has room for, less what open fetches may still deliver —
   * a fetch once a quarter of its room is free, so a busy durable is pulled in batches and an idle one holds one
   * open pull (renewed every `expires`). Every delivered message goes straight into the queue.
   */
  const refill = (s: Source) => {
    if (stopping) return;
    const free = queueCap - s.queue.length - s.reserved;
    if (free <= 0 || (s.reserved > 0 && free < Math.max(1, Math.floor(queueCap / 4)))) return;
    s.reserved += free;
    const loop = fetchInto(s, free);
    loops.add(loop);
    void loop.finally(() => loops.delete(loop));
  };
  const loops = new Set<Promise<void>>();
  /** Why a fetch failed or came back empty at once: gone (reported), or a fault that passes (pulled again shortly). */
  const pullFailed = async (s: Source, err: unknown) => {
    healthOf.get(s)!.silent(performance.now());
    // Gone (the consumer or its stream deleted, the connection closed) is reported; anything else is pulled again shortly.
    const gone = nc.isClosed() || (await s.consumer.info().then(() => false, (e: unknown) => isConsumerNotFound(e) || isStreamNotFound(e)));
    if (stopping) return;
    if (gone) return ended(s, err);
    log.warn({ err, stream, consumer: s.durable, retryInMs: PULL_RETRY_MS }, "pulling failed; pulling again");
    setTimeout(() => refill(s), PULL_RETRY_MS).unref();
  };
  const fetchInto = async (s: Source, n: number) => {
    let got = 0;
    let failed: { err: unknown } | undefined;
    const began = performance.now();
    try {
      const batch = await s.consumer.fetch({ max_messages: n, expires });
      s.fetches.add(batch);
      if (stopping) batch.stop();
      try {
        for await (const msg of batch) {
          got++;
          s.reserved--;
          arrived(s, msg);
        }
      } finally {
        s.fetches.delete(batch);
      }
    } catch (err) {
      failed = { err };
    } finally {
      s.reserved -= n - got; // what was asked for and did not come
    }
    if (stopping) return;
    if (failed !== undefined) return pullFailed(s, failed.err);
    // An empty fetch that ended long before it expired was refused (a missing consumer answers at once): no tight loop.
    if (got === 0 && performance.now() - began < expires / 2) return pullFailed(s, new Error("the pull ended at once with no message"));
    refill(s);
  };

  // Several durables: what waits in the queues is kept alive (its ack_wait restarted) while it waits.
  const keepAlive = several && Number.isFinite(ackWaitMs) ? setInterval(() => {
    for (const s of sources) for (const msg of s.queue) msg.working();
  }, Math.max(100, ackWaitMs / 3)) : undefined;
  keepAlive?.unref();

  // Awaited at stop, so a failing loop is never an unhandled rejection.
  const ends = several ? [] : sources.map((s) => pump(s).then(() => ended(s, undefined), (err: unknown) => ended(s, err)));
  if (several) for (const s of sources) refill(s);

  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= (async () => {
    stopping = true;
    clearInterval(keepAlive);
    for (const s of sources) {
      // What waits for a slot is nak'ed now rather than started.
      for (const msg of s.queue.splice(0)) msg.nak();
      const wake = s.wake;
      s.wake = undefined;
      wake?.();
    }
    await Promise.all(sources.map((s) => (s.messages ? s.messages.close().catch(() => undefined) : Promise.resolve())));
    for (const s of sources) for (const batch of s.fetches) batch.stop();
    await Promise.all([...ends, ...loops]);
    if (running > 0) await new Promise<void>((resolve) => idle.push(resolve));
  })());

  return {
    durable: list[0]!.durable,
    durables: Object.freeze(list.map((d) => d.durable)),
    get inFlight() { return running; },
    lost,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

