// NATS ingress, the stream path. Upstreams publish on `mesh.ingest.<upstream>.>` — the server lets each publish
// only under its own name — in binary or structured mode (`nats pub` with `-H ce-…` headers). MESH_INGEST stores
// every such message (no_ack: nobody is answered), so nothing published while the gateway is down is lost; the
// gateway processes them from its durable consumer `gateway`. Nobody waits for them: what is refused is kept
// (quarantined, or terminated for the coordinator to keep), what is over the rate or shed by backpressure waits in
// the stream, what is over its tenant's quota is kept in quarantine (admission.ts).
// Requests, answered synchronously and not stored, take the gateway's request endpoint instead (nats-requests.ts).
import { jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import {
  ConfigError, ErrorCode, NatsBinding, QuarantineReason, STRUCTURED_MARGIN_BYTES, StreamName, consumeDurable, ensureConsumer, quarantine, type CloudEvent,
  type DurableConsumer, type MeshLayout,
} from "../kit/index.ts";
import type { IngressDeps } from "./ingress.ts";
import { admitAndPublish } from "./admission.ts";
import { IngestError, rejectionOf } from "./outcome.ts";
import { quarantineTarget } from "./quarantine.ts";

/** What the NATS ingress needs: the ingress deps and the mesh layout its durable comes from. */
export type NatsIngressDeps = IngressDeps & { readonly layout: MeshLayout };

/** A running NATS ingress: the kit's durable consumer (stop(), lost) over MESH_INGEST. */
export type NatsIngress = DurableConsumer;

/**
 * Checks MESH_INGEST's max_msg_size, creates the durable consumer from its file if it is missing (the gateway's
 * own, as agents create theirs; `causeway streams apply` creates it too), then consumes MESH_INGEST.
 */
export async function startNatsIngress(deps: NatsIngressDeps): Promise<NatsIngress> {
  const jsm = await jetstreamManager(deps.nc);
  // The largest message MESH_INGEST stores (headers and data; -1: no limit of its own). A structured event of
  // the largest data the gateway accepts must fit, or it would be refused unseen.
  const maxMsgSize = (await jsm.streams.info(StreamName.Ingest)).config.max_msg_size ?? -1;
  const largest = deps.config.maxDataBytes + STRUCTURED_MARGIN_BYTES;
  if (maxMsgSize > 0 && largest > maxMsgSize) {
    throw new ConfigError(ErrorCode.Config, `CAUSEWAY_MAX_DATA_BYTES ${deps.config.maxDataBytes} + ${STRUCTURED_MARGIN_BYTES} bytes for a structured event's attributes is ${largest} bytes, more than ${StreamName.Ingest}'s max_msg_size of ${maxMsgSize}: lower CAUSEWAY_MAX_DATA_BYTES or raise max_msg_size in streams/${StreamName.Ingest}.json`);
  }
  const durable = deps.layout.durableOf(deps.principal, StreamName.Ingest);
  await ensureConsumer(jsm, StreamName.Ingest, deps.layout.durable(StreamName.Ingest, durable));
  return consumeDurable(deps.nc, {
    stream: StreamName.Ingest, durable, concurrency: deps.config.concurrency, log: deps.log,
    handler: (msg) => settle(deps, msg),
  });
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
    // The copy's msg id is tagged with the gateway's key: nobody else can take it first.
    await quarantine(deps.js, msg, target.subject, target.note, { key: deps.key }); // on failure nak'ed by quarantine(): redelivered
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
    return refuse(new IngestError(ErrorCode.UnknownUpstream, `${msg.subject}: no upstream "${upstreamName}" in infra/upstreams.json`, { reason: QuarantineReason.PolicyDenied, attribute: "subject" }));
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
    checked = deps.notary.check(event, upstream, msg);
  } catch (err) {
    return refuse(err);
  }
  let publishing;
  try {
    publishing = await admitAndPublish(deps, upstream, [checked]);
  } catch (err) {
    deps.log.warn({ err }, "admission failed; the ingest message is redelivered");
    msg.nak(1_000);
    return;
  }
  if (!Array.isArray(publishing)) {
    // Not admitted. Shed (the mesh is overloaded): it waits in MESH_INGEST for the Retry-After, as an event over
    // its upstream's rate does. Over the tenant's quota, which may last until the period ends: kept in quarantine
    // (policy_denied, with the code) for an operator to release later, so it neither holds the ingest consumer's
    // acks for hours nor is dropped.
    if (publishing.code === ErrorCode.Overloaded) {
      msg.nak((publishing.retryafter ?? 1) * 1000);
      return;
    }
    return refuse(new IngestError(publishing.code, publishing.message, { reason: QuarantineReason.PolicyDenied }));
  }
  try {
    await publishing[0];
  } catch (err) {
    // An event the mesh can never store (CW_ERR_UNSTORABLE) is quarantined: redelivering it would fail forever.
    if (err instanceof IngestError) return refuse(err);
    deps.log.warn({ err }, "publish failed; the ingest message is redelivered");
    msg.nak(1_000);
    return;
  }
  msg.ack();
}
