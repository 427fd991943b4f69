// NATS ingress. Upstreams publish on `mesh.ingest.<upstream>.>` — the server lets each publish only under its
// own name — in binary or structured mode (`nats pub` with `-H ce-…` headers). MESH_INGEST stores every such
// message (no_ack: the stream does not answer, the gateway does), so nothing published while the gateway is
// down is lost; the gateway processes them from its durable consumer `gateway`.
//
// An upstream that asks for a reply (`nats req`) gets the same JSON as over HTTP, once the event is processed.
// The request's reply subject is not stored in the stream, so a plain subscription on the ingest subjects
// notes it by the message's content, and the consumer answers when it settles the same message. Every gateway
// replica notes it (no queue group), so whichever replica's consumer takes the message can answer.
import { createHash } from "node:crypto";
import { AckPolicy, DeliverPolicy, jetstreamManager, type Consumer, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { Msg, Subscription } from "@nats-io/transport-node";
import {
  ConfigError, ErrorCode, NatsBinding, QuarantineReason, STRUCTURED_MARGIN_BYTES, StreamName, quarantine, type CausewayError, type CloudEvent,
} from "../kit/index.ts";
import type { IngressDeps } from "./ingress.ts";
import { IngestError, rateLimited, rejectionOf, replyBody, type Outcome, type Rejected } from "./outcome.ts";
import { quarantineTarget } from "./quarantine.ts";

/** How long a first delivery over the rate waits for a late requester note before it is held for the rate. */
const REQUEST_NOTE_GRACE_MS = 250;

/** The gateway's durable consumer on MESH_INGEST. */
const INGEST_DURABLE = "gateway";

/** What the NATS ingress needs. */
export type NatsIngressDeps = IngressDeps;

/** A running NATS ingress. */
export interface NatsIngress {
  /** Stops pulling; messages in progress finish (the rest stay in MESH_INGEST). */
  stop(): Promise<void>;
  /**
   * Settles (never rejects) with CW_ERR_CONFIG when consumption ends other than by stop(): the `gateway`
   * consumer on MESH_INGEST was deleted, or pulling failed. NATS ingress then takes nothing: the process should stop.
   */
  readonly lost: Promise<CausewayError>;
}

/** Creates or updates the durable consumer, then consumes MESH_INGEST and notes requesters. */
export async function startNatsIngress(deps: NatsIngressDeps): Promise<NatsIngress> {
  const jsm = await jetstreamManager(deps.nc);
  // The largest message MESH_INGEST stores (headers and data; -1: no limit of its own). A structured event of
  // the largest data the gateway accepts must fit, or it would be refused unseen.
  const maxMsgSize = (await jsm.streams.info(StreamName.Ingest)).config.max_msg_size ?? -1;
  const largest = deps.config.maxDataBytes + STRUCTURED_MARGIN_BYTES;
  if (maxMsgSize > 0 && largest > maxMsgSize) {
    throw new ConfigError(ErrorCode.Config, `CAUSEWAY_MAX_DATA_BYTES ${deps.config.maxDataBytes} + ${STRUCTURED_MARGIN_BYTES} bytes for a structured event's attributes is ${largest} bytes, more than ${StreamName.Ingest}'s max_msg_size of ${maxMsgSize}: lower CAUSEWAY_MAX_DATA_BYTES or raise max_msg_size in streams/${StreamName.Ingest}.json`);
  }
  await jsm.consumers.add(StreamName.Ingest, {
    durable_name: INGEST_DURABLE, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All,
    ack_wait: 30_000_000_000, max_deliver: -1, max_ack_pending: deps.config.concurrency * 4,
    description: "The gateway: notarizes and routes upstream events",
  });
  const replies = createReplyBook(deps.config.replyTtlMs);
  const sub: Subscription = deps.nc.subscribe(`${deps.subjects.prefix}.ingest.>`, {
    callback: (err, msg) => {
      if (err) return;
      const stored = maxMsgSize > 0 ? storedSize(msg) : 0;
      if (stored > maxMsgSize) {
        // Too large for MESH_INGEST (its max_msg_size counts headers and data): the stream refuses it, so answer
        // now. Published without a reply, nobody can be told (a no_ack stream answers no one): the log is the only trace of it.
        const message = `the message is ${stored} bytes with its headers, more than ${StreamName.Ingest} stores (${maxMsgSize}); the event data limit is ${deps.config.maxDataBytes}`;
        if (msg.reply) msg.respond(replyBody({ status: 413, code: ErrorCode.PayloadTooLarge, message, attribute: "data" }));
        else deps.log.warn({ subject: msg.subject, bytes: stored }, "a message too large for MESH_INGEST was published without a reply; refused, nobody told");
        return;
      }
      if (msg.reply) replies.note(msg);
    },
  });
  const consumer: Consumer = await deps.js.consumers.get(StreamName.Ingest, INGEST_DURABLE);
  // A deleted consumer ends consumption (reported as `lost`: the process exits non-zero and is restarted, which
  // creates the consumer again) instead of retrying forever; pulls expire every 5 s so a deletion is noticed soon.
  const messages: ConsumerMessages = await consumer.consume({ max_messages: deps.config.concurrency, expires: 5_000, abort_on_missing_resource: true });
  const inFlight = new Set<Promise<void>>();
  // At the limit the loop waits for one message to settle. (Promise.race over the in-flight set would hang a
  // reaction on every pending message per message taken: O(concurrency) work per event.)
  let wake: (() => void) | undefined;
  const loop = (async () => {
    for await (const msg of messages) {
      const p = settle(deps, msg, replies).catch((err: unknown) => {
        deps.log.error({ err, seq: msg.seq }, "ingest message failed; redelivered later");
        msg.nak(1_000);
      }).finally(() => {
        inFlight.delete(p);
        const w = wake;
        wake = undefined;
        w?.();
      });
      inFlight.add(p);
      if (inFlight.size >= deps.config.concurrency) await new Promise<void>((resolve) => { wake = resolve; });
    }
  })();
  let stopping = false;
  let markLost: (err: CausewayError) => void = () => undefined;
  const lost = new Promise<CausewayError>((resolve) => { markLost = resolve; });
  // Awaited here, so a failing loop is never an unhandled rejection; a connection that closed is the caller's to see.
  const ended = loop.then(() => undefined, (err: unknown) => err);
  void ended.then((err) => {
    if (stopping || deps.nc.isClosed()) return;
    const why = err === undefined ? "its message iterator ended" : err instanceof Error ? err.message : String(err);
    markLost(new ConfigError(ErrorCode.Config, `the ${INGEST_DURABLE} consumer on ${StreamName.Ingest} ended (${why}): NATS ingress stopped; the gateway stops (started again, it creates the consumer again)`, { cause: err }));
  });
  return {
    lost,
    async stop() {
      stopping = true;
      await messages.close().catch(() => undefined);
      await ended;
      await Promise.all(inFlight);
      sub.unsubscribe();
      replies.close();
    },
  };
}

/**
 * The bytes a stream counts against max_msg_size: headers and data. nats.js's received message (MsgImpl) has
 * size(), its subject, reply, headers and data as received, though the Msg interface does not declare it.
 */
function storedSize(msg: Msg): number {
  const size = (msg as Msg & { size?: () => number }).size;
  if (typeof size !== "function") return msg.data.length;
  return size.call(msg) - Buffer.byteLength(msg.subject) - (msg.reply ? Buffer.byteLength(msg.reply) : 0);
}

async function settle(deps: NatsIngressDeps, msg: JsMsg, replies: ReplyBook): Promise<void> {
  const requesters = replies.lookup(msg);
  const answer = (outcome: Outcome) => {
    const to = requesters.take();
    if (to !== undefined) deps.nc.publish(to, replyBody(outcome));
  };
  const refuse = async (err: unknown) => {
    const rejected = rejectionOf(err);
    if (rejected.quarantined !== undefined) {
      const target = quarantineTarget(deps.subjects, { ...rejected, quarantined: rejected.quarantined }, deps.principal);
      if (!(await quarantine(deps.js, msg, target.subject, target.note))) {
        return; // nak'ed by quarantine(): redelivered, answered then
      }
      answer(rejected);
      return;
    }
    dropOrKeep(rejected);
  };
  // Refused without a quarantine reason (over the rate, too large, an unexpected failure). A requester is told, and the
  // stored copy is dropped, as over HTTP: it retries. With nobody to tell, dropping would lose it silently, so
  // it is terminated instead and the coordinator keeps it in quarantine as `terminated`, with the code.
  const dropOrKeep = (rejected: Rejected) => {
    const to = requesters.take();
    if (to === undefined) {
      msg.term(`${rejected.code}: ${rejected.message}`.slice(0, 256));
      return;
    }
    msg.ack();
    deps.nc.publish(to, replyBody(rejected));
  };

  let upstreamName: string;
  try {
    const parsed = deps.subjects.parse(msg.subject);
    upstreamName = parsed.kind === "ingest" ? parsed.source : "";
  } catch {
    upstreamName = "";
  }
  const upstream = deps.upstreams.byName(upstreamName);
  if (upstream === undefined) {
    return refuse(new IngestError(ErrorCode.UnknownUpstream, 403, `${msg.subject}: no upstream "${upstreamName}" in infra/upstreams.json`, { reason: QuarantineReason.PolicyDenied, attribute: "subject" }));
  }
  const waitMs = deps.limiter.take(upstream, 1);
  if (waitMs > 0) {
    if (!requesters.has()) {
      // Nobody waits for an answer: the stream holds it until the upstream's rate allows it. A request's reply
      // subject is noted by the core subscription, which under load can be a moment behind the stored copy, so
      // the first delivery looks again shortly before deciding nobody waits (else a requester over its rate got
      // a late 202 instead of its 429).
      msg.nak(msg.info.deliveryCount === 1 ? Math.min(waitMs, REQUEST_NOTE_GRACE_MS) : waitMs);
      return;
    }
    dropOrKeep(rateLimited(upstream, waitMs));
    return;
  }
  let event: CloudEvent;
  let checked;
  try {
    event = NatsBinding.toEvent(msg, { maxDataBytes: deps.config.maxDataBytes });
    checked = deps.notary.check(event, upstream, msg);
  } catch (err) {
    return refuse(err);
  }
  let outcome: Outcome;
  try {
    outcome = await deps.ledger.publish(checked, deps.notary.notarize(checked));
  } catch (err) {
    deps.log.warn({ err }, "publish failed; the ingest message is redelivered");
    msg.nak(1_000);
    return;
  }
  msg.ack();
  answer(outcome);
}

/** Reply subjects of requests, by message content, until the consumer settles the same message. */
interface ReplyBook {
  note(msg: Msg): void;
  /** The requesters of `msg`'s content. Its content is hashed at most once, and only when someone waits at all. */
  lookup(msg: JsMsg): Requesters;
  close(): void;
}

/** Who waits for one message's content. */
interface Requesters {
  /** True when a requester waits for the message with this content. */
  has(): boolean;
  /** The reply subject noted for the message with this content (the oldest, when several are identical). */
  take(): string | undefined;
}

/**
 * A message's content as a key: subject, headers (but the server's Nats-*) and data, hashed as they stream in,
 * framed like the wire format (subject, `name:value` lines, a blank line, the data), so no two contents collide.
 */
function contentKey(m: { subject: string; data: Uint8Array; headers?: Msg["headers"] }): string {
  const h = createHash("sha256").update(m.subject).update("\r\n");
  if (m.headers) {
    for (const [name, values] of m.headers) {
      if (name.startsWith("Nats-")) continue;
      for (const value of values) h.update(name).update(":").update(value).update("\r\n");
    }
  }
  return h.update("\r\n").update(m.data).digest("base64");
}

function createReplyBook(ttlMs: number): ReplyBook {
  const waiting = new Map<string, { reply: string; at: number }[]>();
  const sweep = setInterval(() => {
    const old = performance.now() - ttlMs;
    for (const [k, list] of waiting) {
      const kept = list.filter((w) => w.at > old);
      if (kept.length === 0) waiting.delete(k);
      else waiting.set(k, kept);
    }
  }, Math.min(ttlMs, 5_000));
  sweep.unref();
  return {
    note(msg) {
      const k = contentKey(msg);
      const list = waiting.get(k) ?? [];
      list.push({ reply: msg.reply!, at: performance.now() });
      waiting.set(k, list);
    },
    lookup(msg) {
      let key: string | undefined;
      const keyOf = () => (key ??= contentKey(msg));
      return {
        has: () => waiting.size > 0 && waiting.has(keyOf()),
        take() {
          if (waiting.size === 0) return undefined;
          const k = keyOf();
          const list = waiting.get(k);
          const first = list?.shift();
          if (list?.length === 0) waiting.delete(k);
          return first?.reply;
        },
      };
    },
    close: () => clearInterval(sweep),
  };
}
