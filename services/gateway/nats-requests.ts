// NATS requests: an endpoint of the gateway's micro service on `<prefix>.ctl.gateway.publish.<upstream>`, a
// per-caller control subject like the coordinator's `approve.<approver>`. The server lets only <upstream>
// publish there (its rendered permissions; no other principal's grant covers it), so the last token names the
// caller as surely as the source token of `<prefix>.ingest.<upstream>.>` does. A request runs the same
// synchronous path as an HTTP event (ingest-one.ts) and is answered with the same JSON; MESH_INGEST does not
// capture control subjects, so nothing of a request is stored there (plain publishes on `<prefix>.ingest…`
// are: nats-ingress.ts). The endpoint is in the service's queue group: of several gateway workers or replicas,
// one answers each request.
import type { Service, ServiceMsg } from "@nats-io/services";
import { ErrorCode, QuarantineReason, STRUCTURED_MARGIN_BYTES, headerBytes, isInboxOf, type QuarantineOriginal } from "../kit/index.ts";
import { ingestOne, refuse } from "./ingest-one.ts";
import type { IngressDeps } from "./ingress.ts";
import { IngestError, UNAVAILABLE_STATUS, logUnavailable, rejected, rejectionOf, replyBody, unavailable, type Outcome, type Rejected } from "./outcome.ts";

/** The endpoint's name in `nats micro info gateway`, and the action token of its subject. */
const PUBLISH_ACTION = "publish";

/** The NATS request endpoint, registered on the gateway's micro service. */
export interface NatsRequests {
  /** `<prefix>.ctl.<service>.publish.*` */
  readonly subject: string;
  /** Waits for the requests in progress (call after the service stopped taking new ones). */
  settled(): Promise<void>;
}

/** Adds the `publish` endpoint to `service` (named `serviceName` in subjects). */
export function startNatsRequests(deps: IngressDeps, service: Service, serviceName: string): NatsRequests {
  const subject = `${deps.subjects.control(serviceName, PUBLISH_ACTION)}.*`;
  const inFlight = new Set<Promise<void>>();
  service.addEndpoint(PUBLISH_ACTION, {
    subject,
    metadata: {
      description: `publish one event and get the gateway's answer (the same JSON as HTTP); only <upstream> may request on ${PUBLISH_ACTION}.<upstream>, answered on its own inbox; not stored in MESH_INGEST`,
    },
    handler: (err, msg) => {
      if (err) return;
      const task = serve(deps, msg).catch((e: unknown) => {
        deps.log.error({ err: e, subject: msg.subject }, "NATS request failed");
        answer(deps, msg, unavailable(e));
      });
      inFlight.add(task);
      void task.finally(() => inFlight.delete(task));
    },
  });
  return { subject, settled: async () => void (await Promise.allSettled([...inFlight])) };
}

async function serve(deps: IngressDeps, msg: ServiceMsg): Promise<void> {
  // The upstream, from the last token, exactly as the stream path takes it from the ingest subject's source token.
  const name = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
  if (!isInboxOf(name, msg.reply ?? "")) {
    // The gateway may answer any request (allow_responses): answering on a subject outside the caller's own inbox
    // would let a caller make the gateway publish there (a KV key, another principal's inbox). Nothing runs.
    deps.log.warn({ code: ErrorCode.ReplyRefused, subject: msg.subject, reply: msg.reply || null, requester: name }, "request not answered: its reply subject is not the requester's own inbox; nothing done");
    return;
  }
  const tooLarge = sizeRefusal(deps, msg);
  if (tooLarge) {
    answer(deps, msg, tooLarge);
    return;
  }
  const original: QuarantineOriginal = {
    // Kept in quarantine under the upstream's ingest subject, as an HTTP input is: a release goes through the gateway.
    subject: deps.subjects.ingest(/^[a-z0-9_-]+$/.test(name) ? name : "unknown", "request"), stream: "", seq: 0, consumer: "",
    headers: msg.headers, data: msg.data,
  };
  const upstream = deps.upstreams.byName(name);
  if (upstream === undefined) {
    const unknown = new IngestError(ErrorCode.UnknownUpstream, `${msg.subject}: no upstream "${name}" in infra/upstreams.json`, { reason: QuarantineReason.PolicyDenied, attribute: "subject" });
    answer(deps, msg, await refuse(deps, original, rejectionOf(unknown)));
    return;
  }
  answer(deps, msg, await ingestOne(deps, upstream, original));
}

/**
 * 413 before any work, as over HTTP: data over the event data limit (plus 64 KiB in structured mode, for the
 * attributes), or headers and data together over the data limit + 64 KiB. Whatever the endpoint takes thus
 * also fits MESH_INGEST (the gateway checks at start that data limit + 64 KiB fits its max_msg_size), where a
 * release of its quarantine copy goes.
 */
function sizeRefusal(deps: IngressDeps, msg: ServiceMsg): Rejected | undefined {
  const { maxDataBytes } = deps.config;
  // Structured mode as the kit's binding tells it: a Content-Type (any case) of application/cloudevents….
  const structured = [...(msg.headers ?? [])].some(([k, v]) => k.toLowerCase() === "content-type" && (v[0] ?? "").trim().toLowerCase().startsWith("application/cloudevents"));
  const dataLimit = maxDataBytes + (structured ? STRUCTURED_MARGIN_BYTES : 0);
  const limit = maxDataBytes + STRUCTURED_MARGIN_BYTES;
  const size = msg.data.length + headerBytes(msg.headers);
  if (msg.data.length <= dataLimit && size <= limit) return undefined;
  return rejected(ErrorCode.PayloadTooLarge, msg.data.length > dataLimit
    ? `the request's data is ${msg.data.length} bytes, over ${dataLimit} bytes (event data limit ${maxDataBytes} bytes); send large content by reference`
    : `the request is ${size} bytes with its headers, over ${limit} bytes (event data limit ${maxDataBytes} bytes + ${STRUCTURED_MARGIN_BYTES} for attributes); send large content by reference`,
  { attribute: "data" });
}

function answer(deps: IngressDeps, msg: ServiceMsg, outcome: Outcome): void {
  // Every 503 is logged with its cause, as over HTTP.
  if (outcome.status === UNAVAILABLE_STATUS) logUnavailable(deps.log, "NATS", outcome, { subject: msg.subject });
  if (!msg.respond(replyBody(outcome))) deps.log.warn({ subject: msg.subject }, "could not answer a NATS request (connection closing?)");
}
