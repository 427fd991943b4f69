// The one durable-consumer runtime every Causeway consumer is built on: agents, the gateway's NATS ingress,
// lineage ingest, the coordinator's handoffs and dead letters. A service writes only its handler; the runtime
// pulls, bounds concurrency, settles what a handler leaves unsettled, hands back what it fetched but never
// started, and reports — once, on `lost` — when consumption ended without stop(): the consumer or its stream
// was deleted, pulling failed, or the connection closed. The process then exits non-zero with that reason
// (kit `untilStop`), and its supervisor restarts it.
import { jetstream, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { jetStreamHealth } from "./connect.ts";
import { CausewayError, ErrorCode, NotReadyError } from "./errors.ts";
import { isNotReady, isTransient, transientRetryDelayMs } from "./transient.ts";

/** How a consumer handles its messages. */
export interface ConsumeOptions {
  /** The stream and the durable pull consumer on it (which must exist: operator tooling creates it). */
  readonly stream: string;
  readonly durable: string;
  /** Most handlers running at once; also the most messages pulled ahead. */
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
}

/** A running durable consumer. */
export interface DurableConsumer extends AsyncDisposable {
  /** The consumer's name, as in `nats consumer ls <stream>`. */
  readonly durable: string;
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

/** Starts consuming `opts.durable` on `opts.stream`; fails fast when the consumer does not exist. */
export async function consumeDurable(nc: NatsConnection, opts: ConsumeOptions): Promise<DurableConsumer> {
  const { stream, durable, concurrency, handler, log } = opts;
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new CausewayError(ErrorCode.Config, `consumer ${durable} on ${stream}: concurrency ${concurrency} must be a positive integer`);
  }
  const retryMs = opts.retryDelayMs ?? DEFAULT_RETRY_MS;
  const consumer = await jetstream(nc).consumers.get(stream, durable).catch((err: unknown) => {
    // Missing (or JetStream not answering): a starting service waits for it (kit isNotReady); anything else is refused as it is.
    const Missing = isNotReady(err) ? NotReadyError : CausewayError;
    throw new Missing(ErrorCode.Config, `consumer ${durable} on ${stream} is missing (${(err as Error).message}): create it with \`causeway streams apply\``, { cause: err });
  });
  // abort_on_missing_resource: a deleted consumer or stream ends the iterator (reported on `lost`) instead of
  // being retried forever in silence.
  const messages: ConsumerMessages = await consumer.consume({ max_messages: concurrency, expires: opts.expiresMs ?? DEFAULT_EXPIRES_MS, abort_on_missing_resource: true });
  // Messages and the server's idle heartbeats show the consumer's leader answers; missed heartbeats and pulls
  // nobody answers feed the connection's JetStream failover (kit jetStreamHealth).
  const health = jetStreamHealth(nc, `consumer ${durable}`);
  void (async () => {
    for await (const s of messages.status()) {
      if (s.type === "heartbeat") health.answered();
      else if (s.type === "heartbeats_missed" || s.type === "no_responders") health.silent(performance.now());
    }
  })().catch(() => undefined); // the notifications end with the consumer

  let stopping = false;
  let running = 0;
  // At the limit the loop waits for one slot: a counter and one waiter, O(1) per message.
  let slotFree: (() => void) | undefined;
  const idle: (() => void)[] = [];
  const finished = () => {
    running--;
    const wake = slotFree;
    slotFree = undefined;
    wake?.();
    if (running === 0) for (const resolve of idle.splice(0)) resolve();
  };
  const failed = (msg: JsMsg, err: unknown) => {
    // A broker fault that passes by itself is retried shortly (kit isTransient); anything else after retryMs.
    const delay = isTransient(err) ? transientRetryDelayMs(msg.info.deliveryCount) : retryMs;
    log.error({ err, stream, consumer: durable, seq: msg.info.streamSequence, retryInMs: delay }, "handler failed; the message is redelivered");
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

  const loop = (async () => {
    for await (const msg of messages) {
      health.answered();
      if (running >= concurrency) await new Promise<void>((resolve) => { slotFree = resolve; });
      if (stopping) {
        msg.nak(); // fetched, never started: back to the stream now, for a replica that is still running
        continue;
      }
      start(msg);
    }
  })();

  let markLost: (err: CausewayError) => void = () => undefined;
  const lost = new Promise<CausewayError>((resolve) => { markLost = resolve; });
  // Awaited here, so a failing loop is never an unhandled rejection.
  const ended = loop.then(() => undefined, (err: unknown) => err);
  void ended.then((err) => {
    if (stopping) return;
    const closed = nc.isClosed();
    const why = err === undefined ? "its message iterator ended" : err instanceof Error ? err.message : String(err);
    const reason = closed
      ? new CausewayError(ErrorCode.Unavailable, `consumer ${durable} on ${stream}: the NATS connection closed`, { cause: err })
      : new CausewayError(ErrorCode.Config, `consumer ${durable} on ${stream} ended (${why}): was it or its stream deleted? Started again, the service needs it back (\`causeway streams apply\`)`, { cause: err });
    log.error({ err: reason }, "consumption ended");
    markLost(reason);
  });

  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= (async () => {
    stopping = true;
    slotFree?.(); // a message held for a slot is nak'ed now rather than started
    slotFree = undefined;
    await messages.close().catch(() => undefined);
    await ended;
    if (running > 0) await new Promise<void>((resolve) => idle.push(resolve));
  })());

  return {
    durable,
    get inFlight() { return running; },
    lost,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
