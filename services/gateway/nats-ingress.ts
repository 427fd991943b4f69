// NATS ingress, the stream path. Upstreams publish on `mesh.ingest.<upstream>.>` — the server lets each publish
// only under its own name — in binary or structured mode (`nats pub` with `-H ce-…` headers). MESH_INGEST stores
// every such message (no_ack: nobody is answered), so nothing published while the gateway is down is lost; the
// gateway processes them from its durable consumer `gateway`. Nobody waits for them: what is refused is kept
// (quarantined, or terminated for the coordinator to keep), what is over the rate waits in the stream.
// Requests, answered synchronously and not stored, take the gateway's request endpoint instead (nats-requests.ts).
import { AckPolicy, DeliverPolicy, jetstreamManager, type Consumer, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import {
  ConfigError, ErrorCode, NatsBinding, QuarantineReason, STRUCTURED_MARGIN_BYTES, StreamName, quarantine, storedAt, type CausewayError, type CloudEvent,
} from "../kit/index.ts";
import type { IngressDeps } from "./ingress.ts";
import { IngestError, rejectionOf } from "./outcome.ts";
import { quarantineTarget } from "./quarantine.ts";

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

/** Checks MESH_INGEST's max_msg_size, creates or updates the durable consumer, then consumes MESH_INGEST. */
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
      const p = settle(deps, msg).catch((err: unknown) => {
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
    },
  };
}

async function settle(deps: NatsIngressDeps, msg: JsMsg): Promise<void> {
  // Refused with a quarantine reason: kept in quarantine. Refused without one (too large, an unexpected
  // failure): nobody waits for an answer, so dropping it would lose it silently; it is terminated instead and
  // the coordinator keeps it in quarantine as `terminated`, with the code.
  const refuse = async (err: unknown) => {
    const rejected = rejectionOf(err);
    if (rejected.quarantined === undefined) {
      msg.term(`${rejected.code}: ${rejected.message}`.slice(0, 256));
      return;
    }
    const target = quarantineTarget(deps.subjects, { ...rejected, quarantined: rejected.quarantined }, deps.principal);
    await quarantine(deps.js, msg, target.subject, target.note); // on failure nak'ed by quarantine(): redelivered
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
    // The stream holds it until the upstream's rate allows it.
    msg.nak(waitMs);
    return;
  }
  let event: CloudEvent;
  let checked;
  try {
    event = NatsBinding.toEvent(msg, { maxDataBytes: deps.config.maxDataBytes });
    checked = deps.notary.check(event, upstream, storedAt(msg));
  } catch (err) {
    return refuse(err);
  }
  try {
    await deps.ledger.publish(checked, deps.notary.notarize(checked));
  } catch (err) {
    deps.log.warn({ err }, "publish failed; the ingest message is redelivered");
    msg.nak(1_000);
    return;
  }
  msg.ack();
}
