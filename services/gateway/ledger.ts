// Dedupe on (source, id) and publish. Within JetStream's duplicate window (2 minutes on MESH_CAP) the msg id
// — the event's dedupe key — keeps one copy; beyond it a create-only mark in KV causeway_processed (7 days)
// remembers what was accepted. The mark is written before the publish, so a resubmission after the window
// finds it; a mark younger than the window is republished on conflict (JetStream absorbs the copy), which
// covers a gateway that died between mark and publish while the upstream or the stream retries. A publish that
// fails forgets its mark, so the upstream's retry is not taken for a duplicate; when the mark cannot be deleted
// either (NATS unreachable), the delete is retried every second until it succeeds, because a mark left behind
// would answer a retry after the window "duplicate" for an event never published. Marks and publishes go
// through the kit's StreamPublisher (acks matched on one inbox subscription: a third of the client CPU of
// nats.js requests) and leave in one socket write per event-loop turn (turnBatcher).
//
// An event the mesh can never store is refused, never retried: over MAX_ATTRIBUTE_BYTES of headers in binary
// mode (checked before the mark), or refused by the stream as too large (its max_msg_size, JetStream's 64 KiB
// header limit). Both throw an IngestError CW_ERR_UNSTORABLE (413, quarantined): a retry would fail again.
import type { KV } from "@nats-io/kv";
import type { MsgHdrs } from "@nats-io/transport-node";
import type { Logger } from "pino";
import {
  type Router,
  ErrorCode, GATEWAY_MARK_PREFIX, MAX_ATTRIBUTE_BYTES, MsgIdKind, NatsBinding, QuarantineReason, StreamPublishError, binaryHeaderBytes, isWrongRevision,
  msgId, type CloudEvent, type MsgIdOwner, type StreamPublisher,
} from "../kit/index.ts";
import { IngestError, type Accepted } from "./outcome.ts";
import { traceIdOf, type Checked } from "./notarize.ts";

/** The KV key prefix of the gateway's marks in causeway_processed (the kit's, which its permissions are scoped to). */
export const MARK_PREFIX = GATEWAY_MARK_PREFIX;

/** Publishes checked events once per (source, id). */
export interface Ledger {
  /** Publishes `event` (the notarized form of `checked`) unless its (source, id) was accepted before. Throws when the mesh cannot take it. */
  publish(checked: Checked, event: CloudEvent): Promise<Accepted>;
  /**
   * True when the gateway accepted this (source, id) before (its mark is there): a resubmission, which `publish`
   * answers as a duplicate. Admission asks before refusing a flow, so a duplicate is answered 202 whatever the load.
   */
  acceptedBefore(checked: Pick<Checked, "key">): Promise<boolean>;
}

/** What the ledger writes to. */
export interface LedgerDeps {
  readonly publisher: StreamPublisher;
  /** The processed-set bucket (KV causeway_processed), for the marks. */
  readonly kv: KV;
  /** Its name: a mark for key k is created by publishing to `$KV.<bucket>.k` (the KV protocol, ADR-8). */
  readonly bucket: string;
  /** The target streams' duplicate window. */
  readonly duplicateWindowMs: number;
  /**
   * The server's max_payload (`nc.info.max_payload`, undefined before the connection knows it): the largest
   * message, headers and data, the server takes from a client.
   */
  readonly maxPayload: () => number | undefined;
  /** The gateway and its signing key: an event's Nats-Msg-Id is `gateway/output/<dedupe key>/<tag>` (msgId). */
  readonly owner: MsgIdOwner;
  /** Routes a flow's first work to a version when its capability is routed (kit routing.ts). */
  readonly router: Router;
  readonly log: Logger;
}

/**
 * The Nats-Msg-Id of a checked event: the kit's tagged id over its dedupe key. Deterministic (a resubmission,
 * from any worker, gets the same id and the duplicate window absorbs it), but only the gateway's key computes
 * it, so no other principal that may publish on the event's subject (the coordinator) can take it first and
 * make the event vanish as a "duplicate" (issue 12, finding 4).
 */
export function eventMsgId(owner: MsgIdOwner, checked: Pick<Checked, "key">): string {
  return msgId(owner, MsgIdKind.Output, checked.key);
}

/**
 * JetStream's err_codes for a message a stream refuses whatever the retry: over the stream's max_msg_size
 * (JSStreamMessageExceedsMaximumErr), headers over the server's 64 KiB (JSStreamHeaderExceedsMaximumErr).
 */
export const PERMANENT_PUBLISH_ERRORS: ReadonlySet<number> = new Set([10054, 10097]);

/** The refusal of an event the mesh cannot store, or undefined when `err` may pass on a retry. */
function unstorable(err: unknown, subject: string): IngestError | undefined {
  if (!(err instanceof StreamPublishError && err.errCode !== undefined && PERMANENT_PUBLISH_ERRORS.has(err.errCode))) return undefined;
  return new IngestError(ErrorCode.Unstorable, `the stream behind ${subject} refuses the event as too large (${err.message}, err_code ${err.errCode}); it is never retried`, {
    reason: QuarantineReason.DecodeError, cause: err,
  });
}

// The parts of an encoded NATS header block besides the `name: value\r\n` lines of the event: `NATS/1.0\r\n`,
// the message id's line (`Nats-Msg-Id: ` + id + CRLF) and the closing CRLF.
const HEADER_PREAMBLE_BYTES = "NATS/1.0\r\n".length;
const MSG_ID_HEADER_BYTES = "Nats-Msg-Id: \r\n".length;
const HEADER_END_BYTES = "\r\n".length;

/** How often a mark that could not be deleted is tried again. */
const FORGET_RETRY_MS = 1_000;

/**
 * A ledger over the publisher and the processed-set bucket. A mark is republished only while it is younger
 * than 80% of the target streams' duplicate window (margin for clocks and latency).
 */
export function createLedger({ publisher, kv, bucket, duplicateWindowMs, maxPayload, owner, router, log }: LedgerDeps): Ledger {
  const republishWithinMs = duplicateWindowMs * 0.8;
  const batch = turnBatcher();
  const forgetter = markForgetter(kv, log, FORGET_RETRY_MS);
  // The notarized event's signed priority picks the subject of its priority (issue 16, priority lanes).
  // The flow's priority as the gateway signed it into the event (notarize.ts): its durables.
  const send = async (checked: Checked, message: OutgoingMessage) => {
    const subject = await router.route(checked.route.subject, checked.flow, checked.epoch, checked.priority);
    return batch(() => publisher.publish(subject, message.data, { headers: message.headers, msgID: message.msgID }));
  };
  return {
    async acceptedBefore(checked) {
      const mark = await kv.get(`${MARK_PREFIX}.${checked.key}`);
      return mark !== null && mark.operation === "PUT";
    },
    async publish(checked, event) {
      const accepted: Accepted = {
        status: 202, id: event.id, source: event.source, type: event.type, correlationid: checked.flow, traceid: traceIdOf(checked.traceparent),
        subject: checked.route.subject, duplicate: false,
      };
      const size = binaryHeaderBytes(event);
      if (size > MAX_ATTRIBUTE_BYTES) {
        throw new IngestError(ErrorCode.Unstorable, `as the gateway publishes it (notarized, binary mode) the event's headers take ${size} bytes; the limit is ${MAX_ATTRIBUTE_BYTES} (MAX_ATTRIBUTE_BYTES): send fewer or smaller extension attributes`, {
          reason: QuarantineReason.DecodeError,
        });
      }
      const message = outgoing(owner, checked, event);
      // What nats.js counts against max_payload: the data and the encoded headers — the preamble, the event's
      // `ce-` headers (`size`), the message id and the blank line — counted without encoding them a second time.
      const payload = message.data.length + HEADER_PREAMBLE_BYTES + size + MSG_ID_HEADER_BYTES + message.msgID.length + HEADER_END_BYTES;
      const max = maxPayload();
      if (max !== undefined && max > 0 && payload > max) {
        // nats.js would refuse it ("max_payload size exceeded") on every retry: refused once, never retried.
        throw new IngestError(ErrorCode.Unstorable, `as the gateway publishes it (notarized, binary mode, with its message id) the event takes ${payload} bytes of headers and data; the server's max_payload is ${max}: send less data`, {
          reason: QuarantineReason.DecodeError,
        });
      }
      const markKey = `${MARK_PREFIX}.${checked.key}`;
      const markBody = JSON.stringify({ ...accepted, upstream: checked.upstream.name });
      try {
        // A KV create: stored only when the key holds nothing.
        await batch(() => publisher.publish(`$KV.${bucket}.${markKey}`, markBody, { expectedLastSubjectSequence: 0 }));
      } catch (err) {
        if (!isWrongRevision(err)) throw err;
        const mark = await kv.get(markKey);
        if (mark === null) throw err;
        if (mark.operation === "PUT") {
          const first = mark.json<Accepted>();
          if (Date.now() - mark.created.getTime() < republishWithinMs) {
            await send(checked, message).catch((e: unknown) => {
              throw unstorable(e, checked.route.subject) ?? e;
            });
            forgetter.keep(markKey); // published now: a pending forget of this mark must not delete it
          }
          return { status: 202, id: first.id, source: first.source, type: first.type, correlationid: checked.flow, traceid: first.traceid, subject: first.subject, duplicate: true };
        }
        // The mark of an earlier attempt whose publish failed was deleted: take the key over. Its revision
        // guards it, so of two gateways racing for it one fails (503, and the upstream retries).
        await kv.update(markKey, markBody, mark.revision);
      }
      try {
        const ack = await send(checked, message);
        return ack.duplicate ? { ...accepted, duplicate: true } : accepted;
      } catch (err) {
        await forgetter.forget(markKey);
        throw unstorable(err, checked.route.subject) ?? err;
      }
    },
  };
}

/** An event as the ledger publishes it: binary mode, its Nats-Msg-Id among the headers (as the publisher sends them). */
interface OutgoingMessage {
  readonly headers: MsgHdrs;
  readonly data: Uint8Array;
  readonly msgID: string;
}

function outgoing(owner: MsgIdOwner, checked: Checked, event: CloudEvent): OutgoingMessage {
  const { headers, data } = NatsBinding.binary(event);
  const msgID = eventMsgId(owner, checked);
  headers.set("Nats-Msg-Id", msgID); // the publisher sets it too; here so the size check counts it
  return { headers, data, msgID };
}

/** Deletes the marks of events that were not published, retrying the deletes that fail. */
function markForgetter(kv: KV, log: Logger, retryMs: number): { forget(key: string): Promise<void>; keep(key: string): void } {
  const pending = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  let retrying = false;
  const retry = async () => {
    if (retrying) return; // a round still waits on its deletes
    retrying = true;
    for (const key of [...pending]) {
      try {
        await kv.delete(key);
        if (pending.delete(key)) log.info({ key }, "mark of an unpublished event deleted on retry");
      } catch {
        // still unreachable: next round
      }
    }
    retrying = false;
    if (pending.size === 0) {
      clearInterval(timer);
      timer = undefined;
    }
  };
  return {
    async forget(key) {
      try {
        await kv.delete(key);
      } catch (err) {
        log.warn({ err, key }, "the mark of an unpublished event could not be deleted; retrying every second");
        pending.add(key);
        timer ??= setInterval(() => void retry(), retryMs);
        timer.unref();
      }
    },
    keep: (key) => void pending.delete(key),
  };
}

/**
 * Defers calls to the end of the event-loop turn and runs them together, so the NATS client sends their
 * requests in one socket write (it flushes once per microtask checkpoint, else once per request).
 */
function turnBatcher(): <T>(fn: () => Promise<T>) => Promise<T> {
  let queue: (() => void)[] = [];
  const run = () => {
    const q = queue;
    queue = [];
    for (const f of q) f();
  };
  return <T>(fn: () => Promise<T>) => new Promise<T>((resolve, reject) => {
    if (queue.length === 0) setImmediate(run);
    queue.push(() => {
      try {
        fn().then(resolve, reject);
      } catch (err) {
        reject(err);
      }
    });
  });
}
