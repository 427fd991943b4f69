// The synchronous path of one event, shared by HTTP (binary and structured mode) and NATS requests
// (nats-requests.ts): decode, rate limit, check, admit (admission.ts), notarize, publish through the ledger, and the
// answer. What it refuses with a quarantine reason is kept in quarantine first; a refusal the quarantine cannot take
// is a 503; a flow not admitted (429) is not kept.
import { ErrorCode, NatsBinding, type CloudEvent, type QuarantineOriginal } from "../kit/index.ts";
import { admitAndPublish } from "./admission.ts";
import type { IngressDeps } from "./ingress.ts";
import { IngestError, rateLimited, rejected, rejectionOf, unavailable, type Outcome, type Rejected } from "./outcome.ts";
import { quarantineCopy, quarantineTarget } from "./quarantine.ts";
import type { Upstream } from "./upstreams.ts";

/**
 * The outcome of one event from an authenticated `upstream`, `original` being its input as received (its
 * headers and data as a NATS message would carry them, on the upstream's ingest subject). Rejects only on an
 * unexpected failure (the caller answers 503).
 */
export async function ingestOne(deps: IngressDeps, upstream: Upstream, original: QuarantineOriginal): Promise<Outcome> {
  let event: CloudEvent;
  try {
    event = NatsBinding.toEvent(original, { maxDataBytes: deps.config.maxDataBytes });
  } catch (err) {
    return limited(deps, upstream, 1) ?? (await refuse(deps, original, rejectionOf(err)));
  }
  const over = limited(deps, upstream, 1);
  if (over) return over;
  let checked;
  try {
    checked = deps.notary.check(event, upstream, "now");
  } catch (err) {
    return refuse(deps, original, rejectionOf(err));
  }
  // A new flow is admitted, or refused 429 (overloaded, over quota) and not kept: the upstream is told.
  const publishing = await admitAndPublish(deps, upstream, [checked]);
  if (!Array.isArray(publishing)) return publishing;
  return publishOutcome(deps, original, publishing[0]!);
}

/**
 * The outcome of a ledger publish: an event the mesh can never store (CW_ERR_UNSTORABLE) is refused and kept in
 * quarantine, as the refusals before it are — a 503 would have the upstream retry it forever; any other failure
 * is a 503 (retry).
 */
export function publishOutcome(deps: IngressDeps, original: QuarantineOriginal, publishing: Promise<Outcome>): Promise<Outcome> {
  return publishing.catch((err: unknown) => err instanceof IngestError ? refuse(deps, original, rejectionOf(err)) : unavailable(err));
}

/**
 * 429 when the upstream is over its rate for `n` more events, else undefined (the tokens are taken). A batch
 * larger than the bucket ever holds gets a 429 without Retry-After: waiting would not help.
 */
export function limited(deps: IngressDeps, upstream: Upstream, n: number): Rejected | undefined {
  const waitMs = deps.limiter.take(upstream, n);
  if (waitMs === 0) return undefined;
  if (waitMs === Infinity) {
    const burst = deps.limiter.capacity(upstream);
    const shared = burst < upstream.burst ? ` (its burst of ${upstream.burst} shared out over the gateway's ${deps.config.workers} workers)` : "";
    return rejected(ErrorCode.RateLimited, `a batch of ${n} events is more than upstream ${upstream.name}'s burst of ${burst}${shared}: send smaller batches`);
  }
  return rateLimited(upstream, waitMs);
}

/** Quarantines the input when the rejection keeps it; 503 instead when the quarantine cannot take it. */
export async function refuse(deps: IngressDeps, original: QuarantineOriginal, refusal: Rejected): Promise<Rejected> {
  if (refusal.quarantined === undefined) return refusal;
  try {
    await quarantineCopy(deps.js, original, quarantineTarget(deps.subjects, { ...refusal, quarantined: refusal.quarantined }, deps.principal), { principal: deps.principal, key: deps.key });
  } catch (err) {
    deps.log.warn({ err, code: refusal.code }, "quarantine copy failed");
    return unavailable(err);
  }
  deps.log.debug({ code: refusal.code, reason: refusal.quarantined }, "input quarantined");
  return refusal;
}
