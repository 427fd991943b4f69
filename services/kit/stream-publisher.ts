// Publishing to streams with many acks in flight, cheaply. nats.js's `js.publish` is a full request per
// message: a request object, a timer, a deferred, and an Error built when the request settles (request.js
// `cancel()`), about 30–38 µs of client CPU per publish on our 2-core machines. This publisher sends each
// message with a reply subject under one wildcard inbox subscription and matches PubAcks by their reply token;
// one sweep per second fails the overdue ones. The same publish costs about 12 µs (see docs/benchmarks.md).
//
// The protocol is JetStream's own (ADR-22 publish acks): the stream answers the reply subject with a PubAck
// `{stream, seq, duplicate?}` or `{error: {code, err_code, description}}`; a subject no stream takes gets a
// 503 no-responders status message.
import {
  PermissionViolationError, createInbox, headers as natsHeaders, type MsgHdrs, type NatsConnection, type Subscription,
} from "@nats-io/transport-node";
import { jetStreamHealth } from "./connect.ts";

/** What a stream answers when it has stored (or, for a known Nats-Msg-Id, deduplicated) a message. */
export interface PubAck {
  readonly stream: string;
  readonly seq: number;
  /** True when the stream already held a message with this Nats-Msg-Id within its duplicate window. */
  readonly duplicate: boolean;
}

/** A publish the stream refused, that no stream took, that permissions refused, or that was not acknowledged in time. */
export class StreamPublishError extends Error {
  /** JetStream's error code (e.g. 10071 wrong last sequence), when the stream answered with one. */
  readonly errCode: number | undefined;
  /** No ack in time, or no stream answering (a leader election, a restart): a retry may pass (kit `isTransient`). */
  readonly transient: boolean;
  constructor(message: string, errCode?: number, transient = false) {
    super(message);
    this.name = "StreamPublishError";
    this.errCode = errCode;
    this.transient = transient;
  }
}

/** Options of a publish. */
export interface StreamPublishOptions {
  readonly headers?: MsgHdrs;
  /** Nats-Msg-Id: the stream keeps one message per id within its duplicate window. */
  readonly msgID?: string;
  /** Nats-Expected-Last-Subject-Sequence: 0 stores the message only when the subject holds none (a KV create). */
  readonly expectedLastSubjectSequence?: number;
}

/** Publishes to streams with acks in flight. */
export interface StreamPublisher {
  /** Resolves with the stream's PubAck; rejects with StreamPublishError (refused, no stream, no permission, timeout, closed). */
  publish(subject: string, data: Uint8Array | string, opts?: StreamPublishOptions): Promise<PubAck>;
  /** Stops listening for acks; pending publishes reject. */
  close(): void;
}

interface Pending {
  readonly subject: string;
  readonly resolve: (ack: PubAck) => void;
  readonly reject: (err: StreamPublishError) => void;
  readonly deadline: number;
}

/** How long a publish waits for the stream's ack by default (as nats.js): a consumer's ack_wait must outlast it. */
export const PUBLISH_ACK_TIMEOUT_MS = 5_000;

/**
 * A publisher on `nc` whose acks arrive under `inboxPrefix` (the connection's own inbox prefix, the only one
 * its permissions allow). A publish not acknowledged within `timeoutMs` (default 5 s, as nats.js) rejects;
 * the stream may still have stored it, so a retry must carry the same Nats-Msg-Id. Acks, timeouts and
 * no-responders feed the connection's JetStream failover (kit `jetStreamHealth`).
 */
export function createStreamPublisher(nc: NatsConnection, inboxPrefix: string, opts: { timeoutMs?: number } = {}): StreamPublisher {
  const timeoutMs = opts.timeoutMs ?? PUBLISH_ACK_TIMEOUT_MS;
  const inbox = createInbox(inboxPrefix);
  const tokenAt = inbox.length + 1;
  const pending = new Map<string, Pending>();
  let next = 0;
  let closed = false;
  // Any answer of a stream — an ack, a refusal — shows JetStream works on this server; silence does not.
  const health = jetStreamHealth(nc, "stream publishes");
  const failAll = (why: string) => {
    for (const p of pending.values()) p.reject(new StreamPublishError(why));
    pending.clear();
  };
  const sub: Subscription = nc.subscribe(`${inbox}.*`, {
    callback: (err, msg) => {
      if (err) {
        // The server refused the inbox subscription (permissions): no ack can arrive, now or later.
        closed = true;
        failAll(`acks cannot be received on ${inbox}.*: ${err.message}`);
        return;
      }
      const token = msg.subject.slice(tokenAt);
      const p = pending.get(token);
      if (p === undefined) return; // overdue, already failed
      pending.delete(token);
      if (msg.headers?.hasError) {
        if (msg.headers.code === 503) {
          health.silent(p.deadline - timeoutMs);
          p.reject(new StreamPublishError("no stream takes this subject (or none answered: its leader may be being elected)", undefined, true));
        } else {
          p.reject(new StreamPublishError(`publish failed: ${msg.headers.code} ${msg.headers.description}`));
        }
        return;
      }
      health.answered();
      let ack: { stream?: string; seq?: number; duplicate?: boolean; error?: { err_code?: number; description?: string } };
      try {
        ack = msg.json();
      } catch {
        p.reject(new StreamPublishError("the stream's ack is not JSON"));
        return;
      }
      if (ack.error) p.reject(new StreamPublishError(ack.error.description ?? "the stream refused the message", ack.error.err_code));
      else if (!ack.stream) p.reject(new StreamPublishError("invalid ack response"));
      else p.resolve({ stream: ack.stream, seq: ack.seq ?? 0, duplicate: ack.duplicate === true });
    },
  });
  // Every publish gets the same timeout, so deadlines grow in insertion order: the overdue lead the map.
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [token, p] of pending) {
      if (p.deadline > now) break;
      pending.delete(token);
      health.silent(p.deadline - timeoutMs);
      p.reject(new StreamPublishError(`no ack within ${timeoutMs} ms (the stream may have stored it: retry with the same Nats-Msg-Id)`, undefined, true));
    }
  }, Math.min(1_000, timeoutMs));
  sweep.unref();
  void nc.closed().then(() => {
    clearInterval(sweep);
    failAll("the NATS connection closed");
  });
  // A publish the connection's permissions refuse gets no ack: the server says so on the connection instead,
  // and the oldest pending publish to that subject is the one refused (as nats.js does for its requests).
  const statuses = nc.status();
  void (async () => {
    for await (const s of statuses) {
      if (s.type !== "error" || !(s.error instanceof PermissionViolationError) || s.error.operation !== "publish") continue;
      for (const [token, p] of pending) {
        if (p.subject !== s.error.subject) continue;
        pending.delete(token);
        p.reject(new StreamPublishError(`permission denied: this connection may not publish to ${p.subject}`));
        break;
      }
    }
  })().catch(() => undefined); // the status stream ends with the connection; pending publishes fail then anyway

  return {
    publish(subject, data, o = {}) {
      if (closed) return Promise.reject(new StreamPublishError("the publisher is closed"));
      let h = o.headers;
      if (o.msgID !== undefined || o.expectedLastSubjectSequence !== undefined) {
        h ??= natsHeaders();
        if (o.msgID !== undefined) h.set("Nats-Msg-Id", o.msgID);
        if (o.expectedLastSubjectSequence !== undefined) h.set("Nats-Expected-Last-Subject-Sequence", String(o.expectedLastSubjectSequence));
      }
      const token = (next++).toString(36);
      return new Promise<PubAck>((resolve, reject) => {
        pending.set(token, { subject, resolve, reject, deadline: performance.now() + timeoutMs });
        try {
          nc.publish(subject, data, { reply: `${inbox}.${token}`, ...(h && { headers: h }) });
        } catch (err) {
          pending.delete(token);
          reject(new StreamPublishError(`publish failed: ${(err as Error).message}`));
        }
      });
    },
    close() {
      closed = true;
      clearInterval(sweep);
      (statuses as { stop?: () => void }).stop?.();
      sub.unsubscribe();
      failAll("the publisher is closed");
    },
  };
}
