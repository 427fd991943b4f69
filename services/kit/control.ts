// The control plane's one contract: every request/reply endpoint on `<prefix>.ctl.<service>.<action>` (the
// coordinator's approvals, quarantine operations and kill switches, lineage's queries, an agent's stats) is
// declared once as a ControlEndpoint — where it is, what it takes, what it answers — in its service's
// contract.ts. The service serves it with addControlEndpoint; a client (the CLI, a test, a script) calls it
// with controlRequest and gets the typed reply or a CausewayError with the service's code.
//
// On the wire: a success is the reply as JSON. A refusal carries the NATS micro error headers
// (`Nats-Service-Error` = the message, `Nats-Service-Error-Code` = the code's HTTP status from errors.ts) and the
// body `{"error":{"code","message","details"?}}`. A reply goes only to the requester's own inbox: a request
// whose reply subject is anything else (a KV key, a decision subject) is not run and not answered.
import type { Service, ServiceMsg } from "@nats-io/services";
import type { MsgHdrs, NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { CausewayError, ErrorCode, isCausewayError, isErrorCode, statusOf, type ErrorCodeValue } from "./errors.ts";
import { loadPrincipals } from "./principals.ts";
import { asUnavailable } from "./transient.ts";
import { inboxPrefix } from "./subjects.ts";
import { subjectsFor, type MeshSubjects } from "./subjects.ts";

/** A control endpoint as its service's contract declares it. Create with {@link controlEndpoint}; frozen. */
export interface ControlEndpoint<Req, Reply> {
  /** The NATS micro service that serves it, as `nats micro ls` shows it (e.g. `coordinator`). */
  readonly service: string;
  /** The endpoint's name in `nats micro info` (e.g. `approve-as`). */
  readonly name: string;
  /** The subject's action token: `<prefix>.ctl.<service>.<action>`. Default: the name. */
  readonly action: string;
  /**
   * The subject has one more token, the caller's principal (`mesh.ctl.coordinator.approve.<approver>`): the
   * server's permissions let only that principal publish there, and the reply goes only to its inbox.
   */
  readonly perCaller: boolean;
  /** One line for `nats micro info`. */
  readonly description: string;
  /** More `nats micro info` metadata (e.g. the parameters). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Validates a request's bytes; throws CausewayError (CW_ERR_USAGE or the endpoint's own code) naming what is wrong. */
  parse(data: Uint8Array, headers: MsgHdrs | undefined): Req;
  /** The bytes (and headers) of a request. Default: the request as JSON. */
  encode(request: Req): { readonly data: Uint8Array | string; readonly headers?: MsgHdrs };
  /** The reply's type, for the compiler only: never set. */
  readonly reply?: Reply;
}

/** What {@link controlEndpoint} needs; `action`, `perCaller`, `metadata` and `encode` have defaults. */
export interface ControlEndpointSpec<Req> {
  readonly service: string;
  readonly name: string;
  readonly action?: string;
  readonly perCaller?: boolean;
  readonly description: string;
  readonly metadata?: Readonly<Record<string, string>>;
  parse(data: Uint8Array, headers: MsgHdrs | undefined): Req;
  encode?(request: Req): { readonly data: Uint8Array | string; readonly headers?: MsgHdrs };
}

/** Declares an endpoint: `controlEndpoint<Request, Reply>({ service, name, description, parse })`. */
export function controlEndpoint<Req, Reply>(spec: ControlEndpointSpec<Req>): ControlEndpoint<Req, Reply> {
  return Object.freeze({
    service: spec.service, name: spec.name, action: spec.action ?? spec.name, perCaller: spec.perCaller ?? false,
    description: spec.description, metadata: Object.freeze({ ...spec.metadata }),
    parse: spec.parse, encode: spec.encode ?? ((request: Req) => ({ data: JSON.stringify(request ?? {}) })),
  });
}

/** The subject an endpoint listens on (`…approve.*` for per-caller endpoints), or a caller sends to. */
export function controlSubjectOf(endpoint: Pick<ControlEndpoint<unknown, unknown>, "service" | "action" | "perCaller">, subjects: MeshSubjects, caller?: string): string {
  const base = subjects.control(endpoint.service, endpoint.action);
  if (!endpoint.perCaller) return base;
  return `${base}.${caller ?? "*"}`;
}

/** The refusal body every control endpoint answers with. */
export interface ControlErrorBody {
  readonly error: { readonly code: ErrorCodeValue; readonly message: string; readonly details?: Readonly<Record<string, unknown>> };
}

// ---------------------------------------------------------------------------------------------------------
// Parsing helpers for contracts.

/**
 * The request body as a JSON object: `{}` when empty. Anything else is CausewayError `code` (default
 * CW_ERR_USAGE); `example` shows the expected form in the message.
 */
export function jsonObjectBody(data: Uint8Array, example: string, code: ErrorCodeValue = ErrorCode.Usage): Record<string, unknown> {
  const text = Buffer.from(data).toString("utf8").trim();
  if (text === "") return {};
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw new CausewayError(code, `the request is not JSON (${(err as Error).message}): send a JSON object like ${example}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new CausewayError(code, `the request must be a JSON object like ${example}`);
  return body as Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------------------
// Serving.

/** How a service answers one endpoint. */
export interface ControlServeOptions<Req, Reply> {
  /** Runs a validated request; rejects with a CausewayError to refuse it (anything else is CW_ERR_INTERNAL). */
  handle(request: Req, msg: ServiceMsg): Promise<Reply>;
  /**
   * The principal a request provably comes from, when the endpoint can tell (the signer of a signed request),
   * so the reply goes only to its inbox; throws CausewayError when it cannot be proved. Per-caller endpoints
   * need not say: the subject's last token is the caller.
   */
  requester?(request: Req, msg: ServiceMsg): string;
  /** The subject builders (the mesh prefix). */
  readonly subjects: MeshSubjects;
  readonly log: Logger;
  /** Principals whose inboxes may receive replies. Default: every principal of infra/principals.json. */
  readonly principals?: readonly string[];
}

/** A served endpoint. */
export interface ServedControlEndpoint {
  /** Refuses new requests (CW_ERR_UNAVAILABLE: another replica answers) and settles when those in progress are answered. */
  stop(): Promise<void>;
}

let knownPrincipals: readonly string[] | undefined;
function defaultPrincipals(): readonly string[] {
  knownPrincipals ??= Object.freeze(Object.keys(loadPrincipals().principals));
  return knownPrincipals;
}

/** True when `reply` is a subject inside `principal`'s private inbox (`_INBOX_<principal>.` and at least one more character). */
export function isInboxOf(principal: string, reply: string): boolean {
  const inbox = `${inboxPrefix(principal)}.`;
  return reply.length > inbox.length && reply.startsWith(inbox);
}

/**
 * Serves `endpoint` on `service`. Each request: the reply subject must be inside a principal's inbox (else
 * nothing runs and nothing is answered: CW_ERR_REPLY_REFUSED in the log); the body is parsed by the contract;
 * for per-caller endpoints and those with `requester`, the reply subject must be that principal's inbox; then
 * `handle` runs. Every outcome is answered in the one shape; nothing rejects unhandled.
 */
export function addControlEndpoint<Req, Reply>(service: Service, endpoint: ControlEndpoint<Req, Reply>, opts: ControlServeOptions<Req, Reply>): ServedControlEndpoint {
  const { log } = opts;
  const principals = opts.principals ?? defaultPrincipals();
  const subject = controlSubjectOf(endpoint, opts.subjects);
  const inFlight = new Set<Promise<void>>();
  let stopping = false;

  const refuseReply = (msg: ServiceMsg, why: string, requester?: string) => {
    log.warn({ code: ErrorCode.ReplyRefused, endpoint: endpoint.name, subject: msg.subject, reply: msg.reply || null, ...(requester !== undefined && { requester }) },
      `control request not answered: ${why}`);
  };

  const answer = async (msg: ServiceMsg): Promise<void> => {
    let request: Req;
    try {
      if (stopping) throw new CausewayError(ErrorCode.Unavailable, `the ${endpoint.service} service is stopping; retry (another replica answers)`);
      request = endpoint.parse(msg.data, msg.headers);
    } catch (err) {
      respondError(msg, err);
      return;
    }
    let requester: string | undefined;
    try {
      requester = endpoint.perCaller ? msg.subject.split(".").at(-1) : opts.requester?.(request, msg);
    } catch (err) {
      respondError(msg, err);
      return;
    }
    if (requester !== undefined && !isInboxOf(requester, msg.reply!)) {
      refuseReply(msg, `the reply subject is not the inbox of ${requester}, who sent it`, requester);
      return;
    }
    let reply: Reply;
    try {
      reply = await opts.handle(request, msg);
    } catch (err) {
      respondError(msg, err);
      return;
    }
    msg.respond(JSON.stringify(reply ?? null));
  };

  const respondError = (msg: ServiceMsg, err: unknown) => {
    // A broker fault that passes by itself (JetStream electing a leader, a timeout) is CW_ERR_UNAVAILABLE: retry.
    const unavailable = asUnavailable(err);
    if (unavailable !== undefined && unavailable !== err) log.warn({ err, endpoint: endpoint.name, subject: msg.subject }, "control request failed on a broker fault; answered CW_ERR_UNAVAILABLE (retry)");
    const known = unavailable ?? (isCausewayError(err) ? err : undefined);
    if (!known) log.error({ err, endpoint: endpoint.name, subject: msg.subject }, "control request failed");
    const code = known?.code ?? ErrorCode.Internal;
    // An error without a code may carry anything (hosts, paths, a driver's text): the log has it, the requester does not.
    const message = known?.message ?? `internal error in ${endpoint.service} ${endpoint.name}; its log has the details`;
    const body: ControlErrorBody = { error: { code, message, ...(known?.details !== undefined && { details: known.details }) } };
    msg.respondError(statusOf(code), headerSafe(message), JSON.stringify(body));
  };

  service.addEndpoint(endpoint.name, {
    subject,
    metadata: { description: endpoint.description, ...endpoint.metadata },
    handler: (err, msg) => {
      if (err) {
        log.error({ err, endpoint: endpoint.name }, "control endpoint stopped");
        return;
      }
      // The reply subject is the requester's to choose: answering anywhere else would publish with this service's
      // permissions (allow_responses) onto a KV key or a stream subject.
      if (!msg.reply) {
        refuseReply(msg, "no reply subject");
        return;
      }
      if (!principals.some((p) => isInboxOf(p, msg.reply!))) {
        refuseReply(msg, "the reply subject is not a principal's inbox (_INBOX_<principal>.…)");
        return;
      }
      const task = answer(msg).catch((e: unknown) => {
        log.warn({ err: e, endpoint: endpoint.name, subject: msg.subject }, "could not answer a control request (connection closing?)");
      });
      inFlight.add(task);
      void task.finally(() => inFlight.delete(task));
    },
  });

  return {
    async stop() {
      stopping = true;
      await Promise.allSettled([...inFlight]);
    },
  };
}

/** A header value is one line. */
function headerSafe(message: string): string {
  const line = message.replace(/[\r\n]+/g, " ");
  return line.length > 1024 ? `${line.slice(0, 1023)}…` : line;
}

// ---------------------------------------------------------------------------------------------------------
// Calling.

/** Options of {@link controlRequest}. */
export interface ControlRequestOptions {
  /** How long to wait for the answer, in ms. Default 10000. */
  readonly timeout?: number;
  /** The mesh subject prefix. Default `mesh`. */
  readonly prefix?: string;
  /** For per-caller endpoints: the caller's principal, the subject's last token (it must be the connection's). */
  readonly caller?: string;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Sends `request` to `endpoint` and resolves with its typed reply. A refusal rejects with a CausewayError
 * carrying the service's code, message and details; no answer (no service running, or none within the
 * timeout) rejects with CW_ERR_UNAVAILABLE naming the service and subject.
 */
export async function controlRequest<Req, Reply>(nc: NatsConnection, endpoint: ControlEndpoint<Req, Reply>, request: Req, opts: ControlRequestOptions = {}): Promise<Reply> {
  if (endpoint.perCaller && opts.caller === undefined) throw new CausewayError(ErrorCode.Usage, `${endpoint.service} ${endpoint.name} is addressed per caller: pass the caller`);
  const subject = controlSubjectOf(endpoint, subjectsFor(opts.prefix), opts.caller);
  const timeout = opts.timeout ?? DEFAULT_TIMEOUT_MS;
  const { data, headers } = endpoint.encode(request);
  let msg;
  try {
    msg = await nc.request(subject, data, { timeout, ...(headers !== undefined && { headers }) });
  } catch (err) {
    const why = isNoResponders(err) ? `no ${endpoint.service} service is answering on ${subject}: is it running?` : isTimeout(err)
      ? `the ${endpoint.service} service did not answer on ${subject} within ${timeout} ms`
      : `${subject}: ${(err as Error).message}`;
    throw new CausewayError(isTimeout(err) || isNoResponders(err) ? ErrorCode.Unavailable : ErrorCode.Internal, why, { cause: err });
  }
  const text = msg.string();
  let body: unknown;
  try {
    body = text === "" ? null : JSON.parse(text);
  } catch {
    throw new CausewayError(ErrorCode.Internal, `${endpoint.service} answered ${subject} with something that is not JSON: ${text.slice(0, 200)}`);
  }
  const refusal = (body as Partial<ControlErrorBody> | null)?.error;
  const status = msg.headers?.get("Nats-Service-Error-Code");
  if (refusal !== undefined || status) {
    const code = isErrorCode(refusal?.code) ? refusal.code : ErrorCode.Internal;
    const message = typeof refusal?.message === "string" ? refusal.message : msg.headers?.get("Nats-Service-Error") || `${endpoint.service} refused the request (status ${status})`;
    const details = refusal?.details !== undefined && typeof refusal.details === "object" ? { details: refusal.details } : {};
    throw new CausewayError(code, isErrorCode(refusal?.code) ? message : `${String(refusal?.code ?? status)}: ${message}`, details);
  }
  return body as Reply;
}

/** True when `err` says no service answered the request's subject (nats.js: a NoRespondersError, maybe as a cause). */
export function isNoResponders(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e.name === "NoResponders" || e.name === "NoRespondersError" || (e as { isNoResponders?: () => boolean }).isNoResponders?.() === true || /^no responders\b/i.test(e.message)) return true;
  }
  return false;
}

function isTimeout(err: unknown): boolean {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e.name === "TimeoutError") return true;
  }
  return false;
}
