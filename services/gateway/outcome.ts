// What an upstream gets back, the same over HTTP and NATS: 202 with the accepted event's id, correlation and trace id, or
// an error with a stable code, the attribute or schema paths at fault, and the quarantine reason when the
// input was quarantined. Over HTTP the status is the response status; over NATS it is the `status` member.
import {
  CausewayError, DecodeError, ErrorCode, QuarantineReason, SchemaError, VerificationError, quarantineReasonOf, statusOf,
  type ErrorCodeValue, type QuarantineReasonValue, type SchemaViolation,
} from "../kit/index.ts";
import type { Logger } from "pino";
import type { Upstream } from "./upstreams.ts";

/** An accepted event. */
export interface Accepted {
  readonly status: 202;
  readonly id: string;
  readonly source: string;
  readonly type: string;
  /** The flow the event starts (`causeway lineage trace <correlationid>`): its id and a tag over its source and id. */
  readonly correlationid: string;
  /** The W3C trace id the flow runs under (the upstream's traceparent, or one derived from source and id). */
  readonly traceid: string;
  /** Where it was routed. */
  readonly subject: string;
  /** True when this (source, id) was accepted before: nothing new was published. */
  readonly duplicate: boolean;
}

/** A refused input. */
export interface Rejected {
  readonly status: number;
  readonly code: ErrorCodeValue;
  readonly message: string;
  /** The CloudEvents attribute (or header) at fault. */
  readonly attribute?: string;
  /** Schema violations: JSON pointer into the data and what failed there. */
  readonly violations?: readonly SchemaViolation[];
  /** The quarantine reason, when the input was quarantined. */
  readonly quarantined?: QuarantineReasonValue;
  /** Seconds to wait before retrying (429, 503). */
  readonly retryafter?: number;
}

/** The outcome of one event. */
export type Outcome = Accepted | Rejected;

/** A gateway refusal and, when the input is kept, the quarantine reason; its status is the code's (`statusOf`). */
export class IngestError extends CausewayError {
  readonly reason: QuarantineReasonValue | undefined;
  readonly attribute: string | undefined;
  constructor(code: ErrorCodeValue, message: string, opts: IngestErrorOptions = {}) {
    super(code, message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.reason = opts.reason;
    this.attribute = opts.attribute;
  }
}

/** What an {@link IngestError} carries besides its code and message. */
export interface IngestErrorOptions {
  /** The quarantine reason, when the input is kept. */
  readonly reason?: QuarantineReasonValue;
  /** The CloudEvents attribute (or header) at fault. */
  readonly attribute?: string;
  readonly cause?: unknown;
}

/** A refusal with `code`'s status. */
export function rejected(code: ErrorCodeValue, message: string, extra: Omit<Rejected, "status" | "code" | "message"> = {}): Rejected {
  return { status: statusOf(code), code, message, ...extra };
}

/**
 * The rejection for a failure of an input, and whether it is quarantined (`quarantined` set). Inputs that are
 * too large, unauthenticated or over the rate are refused at the edge, not kept: the sender is told, and
 * keeping them would let anyone fill the quarantine. (Over NATS without a reply nobody is told, so the NATS
 * ingress keeps those: nats-ingress.ts.)
 */
export function rejectionOf(err: unknown): Rejected {
  if (err instanceof IngestError) {
    return rejected(err.code, err.message, {
      ...(err.attribute !== undefined && { attribute: err.attribute }),
      ...(err.reason !== undefined && { quarantined: err.reason }),
    });
  }
  if (err instanceof DecodeError) {
    const attribute = err.attribute !== undefined ? { attribute: err.attribute } : {};
    if (err.code === ErrorCode.PayloadTooLarge || err.code === ErrorCode.AttributesTooLarge) return rejected(err.code, err.message, attribute);
    return rejected(err.code, err.message, { ...attribute, quarantined: QuarantineReason.DecodeError });
  }
  if (err instanceof SchemaError) {
    return rejected(err.code, err.message, {
      attribute: err.code === ErrorCode.UnknownSchema ? "dataschema" : "data",
      ...(err.violations.length > 0 && { violations: err.violations }), quarantined: quarantineReasonOf(err),
    });
  }
  if (err instanceof VerificationError) return rejected(err.code, err.message, { attribute: "dssematerial", quarantined: err.reason });
  return unavailable(err);
}

/** The status of CW_ERR_UNAVAILABLE: retry. */
export const UNAVAILABLE_STATUS = statusOf(ErrorCode.Unavailable);

/** 503: the mesh could not take the event now (JetStream unreachable); nothing was accepted. The message names the cause. */
export function unavailable(err: unknown): Rejected {
  const why = err instanceof Error ? causeChain(err) : String(err);
  return rejected(ErrorCode.Unavailable, `the mesh could not store the event now (${why}); retry`, { retryafter: 1 });
}

/** An error's message and its causes' (`no ack within 5000 ms ← timeout`), at most three. */
function causeChain(err: Error): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error && parts.length < 3; e = e.cause) if (!parts.includes(e.message)) parts.push(e.message);
  return parts.join(" ← ");
}

/**
 * Logs a 503 answer (`via` HTTP or NATS) with its cause: each event's of a batch, the one of a single answer.
 * Every 503 the gateway gives is logged here, so an operator sees why upstreams are told to retry.
 */
export function logUnavailable(log: Logger, via: string, body: { readonly status: number; readonly code?: string; readonly message?: string; readonly results?: readonly Outcome[]; readonly errors?: readonly Rejected[] }, fields: Record<string, unknown> = {}): void {
  const causes = [body, ...(body.results ?? []), ...(body.errors ?? [])]
    .filter((o): o is Rejected => o.status === UNAVAILABLE_STATUS && typeof (o as Rejected).message === "string")
    .map((o) => o.message);
  log.warn({ via, status: body.status, code: ErrorCode.Unavailable, causes: [...new Set(causes)], ...fields }, `answered ${body.status} over ${via}: ${causes[0] ?? "unavailable"}`);
}

/** 429: `upstream` is over its rate; the tokens it needs are `waitMs` away (Retry-After, in whole seconds). */
export function rateLimited(upstream: Pick<Upstream, "name" | "perSecond" | "burst">, waitMs: number): Rejected {
  const retryafter = Math.ceil(waitMs / 1000);
  return rejected(ErrorCode.RateLimited, `upstream ${upstream.name} is over its rate of ${upstream.perSecond}/s (burst ${upstream.burst}); retry after ${retryafter} s`, { retryafter });
}

/** The reply body, as JSON text. */
export function replyBody(outcome: Outcome | { status: number; results: readonly Outcome[] }): string {
  return JSON.stringify(outcome);
}
