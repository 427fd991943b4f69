// Which failures pass on their own. A broker that is electing a leader, restarting, or briefly unreachable
// answers with a timeout, "no responders", a 503, or a closed / reconnecting connection; a retry a moment
// later succeeds. Such an error is *transient*: a handler's message is retried after a short jittered delay
// (not the consumer's long failure backoff), a control endpoint answers CW_ERR_UNAVAILABLE (retry), and a
// starting service waits. Everything else — a refusal, a permission, a bad value — is not, and is reported as
// it is. One classification, here, for every call site.
import { CausewayError, ErrorCode, NotReadyError } from "./errors.ts";

// nats.js error names (nats-core errors.ts, jetstream jserrors.ts), matched by name so a second copy of the
// library (a test's, a tool's) classifies the same.
const TRANSIENT_NAMES = new Set([
  "TimeoutError", "NoResponders", "NoRespondersError", "JetStreamNotEnabled", "ClosedConnectionError", "DrainingConnectionError", "ConnectionError",
]);
// Socket errors of a connection that broke or could not be made (yet).
const TRANSIENT_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH"]);
// JetStream API error codes of something that does not exist (yet): streams, KV buckets (streams too), consumers.
const NOT_FOUND_CODES = new Set([10059 /* stream not found */, 10014 /* consumer not found */]);

/** The errors `err` is made of: itself, then each `cause` (at most 10 deep). */
function* chain(err: unknown): Generator<unknown> {
  let e: unknown = err;
  for (let depth = 0; depth < 10 && e !== undefined && e !== null; depth++) {
    yield e;
    e = e instanceof Error ? e.cause : undefined;
  }
}

/** One error's own verdict, ignoring its causes. */
function transientItself(e: unknown): boolean {
  if (e instanceof CausewayError) return e.code === ErrorCode.Unavailable;
  if (!(e instanceof Error)) return false;
  if (TRANSIENT_NAMES.has(e.name)) return true;
  const x = e as Error & { code?: unknown; status?: unknown; transient?: unknown; isNoResponders?: () => boolean; apiError?: () => { code?: number } };
  if (x.transient === true) return true; // the kit's StreamPublishError: no ack in time, no stream answering
  if (typeof x.isNoResponders === "function" && x.isNoResponders()) return true; // RequestError
  if (typeof x.code === "string" && TRANSIENT_ERRNOS.has(x.code)) return true;
  // A JetStream API error with status 503 (JetStream temporarily unavailable, no quorum), a pull's 503 / 408 status.
  if (typeof x.apiError === "function" && x.apiError()?.code === 503) return true;
  if (e.name === "JetStreamStatusError" && (x.code === 503 || x.code === 408)) return true;
  return /^(no responders\b|jetstream is not enabled$)/i.test(e.message);
}

/**
 * True when `err` (or anything it was caused by) is a broker fault that passes by itself: a timeout, no
 * responders, JetStream not answering (503, "jetstream is not enabled" during a leader election), a connection
 * closed, draining, refused or reset, a stream publish without its ack, or CW_ERR_UNAVAILABLE.
 */
export function isTransient(err: unknown): boolean {
  for (const e of chain(err)) if (transientItself(e)) return true;
  return false;
}

/**
 * True when a starting service should wait and try again rather than exit: a transient fault, or something
 * operator tooling creates that is not there yet (a stream, consumer or bucket: NotReadyError, or JetStream's
 * own "not found").
 */
export function isNotReady(err: unknown): boolean {
  for (const e of chain(err)) {
    if (transientItself(e) || e instanceof NotReadyError) return true;
    const x = e as { apiError?: () => { err_code?: number } };
    if (e instanceof Error && typeof x.apiError === "function" && NOT_FOUND_CODES.has(x.apiError()?.err_code ?? 0)) return true;
  }
  return false;
}

/** What the mesh answers when JetStream did not (a leader election, a restart): it passes, so retry. */
export const UNAVAILABLE_RETRY = "JetStream is not available right now (leader election?): retry";

/**
 * CW_ERR_UNAVAILABLE ("JetStream is not available right now (leader election?): retry", after `doing` when
 * given) when `err` is transient, with `err` as its cause; undefined otherwise. Like `permissionDenied`, for a
 * caller to map what it caught: `throw asUnavailable(err, "reading approvals") ?? err`.
 */
export function asUnavailable(err: unknown, doing?: string): CausewayError | undefined {
  if (!isTransient(err)) return undefined;
  if (err instanceof CausewayError && err.code === ErrorCode.Unavailable) return err;
  return new CausewayError(ErrorCode.Unavailable, `${doing ? `${doing}: ` : ""}${UNAVAILABLE_RETRY}`, { cause: err });
}

/** Shortest and longest delay before a transient failure is retried. */
export const TRANSIENT_RETRY_MS = Object.freeze({ min: 250, max: 2_000 });

/**
 * The delay before retrying after a transient failure, for the `attempt`-th delivery (1, 2, …): 250 ms doubling
 * per attempt up to 2 s, each jittered by ±25% (kept within 250 ms–2 s), so replicas that failed together do not
 * retry together.
 */
export function transientRetryDelayMs(attempt = 1): number {
  const base = Math.min(TRANSIENT_RETRY_MS.max, TRANSIENT_RETRY_MS.min * 2 ** Math.max(0, Math.min(attempt - 1, 10)));
  return Math.round(Math.min(TRANSIENT_RETRY_MS.max, Math.max(TRANSIENT_RETRY_MS.min, base * (0.75 + Math.random() * 0.5))));
}

/** `ms` jittered by ±`spread` (0.2: ±20%), at least 0. */
export function jittered(ms: number, spread = 0.2): number {
  return Math.max(0, Math.round(ms * (1 - spread + Math.random() * 2 * spread)));
}
