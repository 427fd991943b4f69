// Dead letters: JetStream announces every message a consumer gave up on — `max_deliver` exhausted
// ($JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>) or terminated with `term`
// (…MSG_TERMINATED…) — and MESH_ADVISORY keeps those advisories, so none is missed while the coordinator is
// down. This module reads them through its durable `coordinator-dead-letters`, fetches each failed message by
// stream sequence and quarantines it, byte for byte, as `max_deliveries` or `terminated`. The advisory is acked
// only once the quarantine copy is stored; until then it is redelivered.
//
// The agent runtime quarantines on the last delivery itself and then terminates, which raises a MSG_TERMINATED
// advisory for a message that already has its entry (stored before the term). Such advisories add nothing: an
// existing entry for the same original stream and sequence is looked up first. Only an entry whose claim holds
// counts (issue 12, finding 5): it keeps the original's exact bytes and subject, under a quarantine subject token
// that takes that subject — the server lets only the capability's own agents (the gateway for `ingest`) and the
// coordinator publish there. When the original is gone or unreadable, only the coordinator's own `_unknown` entry
// counts. A forged entry merely claiming the original is ignored and the dead letter quarantined all the same.
// The coordinator's copies carry its own message id (services/kit/msg-ids.ts), confirmed on a duplicate ack.
import type { JsMsg } from "@nats-io/jetstream";
import { QuarantineReason, StreamName, consumeDurable, permissionDenied, publishQuarantineCopy } from "../kit/index.ts";
import type { QuarantineOriginal, QuarantineReasonValue } from "../kit/index.ts";
import type { CoordinatorModule, StartModule } from "./module.ts";
import { QuarantineIndex, capabilityToken, digestOf, quarantineTokensFor, type OriginalClaim } from "./quarantine-ops.ts";


const MAX_DELIVERIES_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.";
const TERMINATED_PREFIX = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.";
// An advisory that cannot be handled now (the stream unreachable, the quarantine publish failing) comes back after this.
const RETRY_MS = 5_000;

/** The fields of the two advisories that matter here (server field names). */
interface DeliveryAdvisory {
  stream: string;
  consumer: string;
  stream_seq: number;
  deliveries?: number;
  /** MSG_TERMINATED: the reason given to `term`, when one was. */
  reason?: string;
}

function parseAdvisory(data: Uint8Array): DeliveryAdvisory | undefined {
  try {
    const a = JSON.parse(Buffer.from(data).toString("utf8")) as Partial<DeliveryAdvisory>;
    if (typeof a.stream !== "string" || typeof a.consumer !== "string" || !Number.isSafeInteger(a.stream_seq) || a.stream_seq! < 1) return undefined;
    return a as DeliveryAdvisory;
  } catch {
    return undefined;
  }
}

/** Starts consuming MESH_ADVISORY. */
export const start: StartModule = async (deps): Promise<CoordinatorModule> => {
  const log = deps.log.child({ module: "dead-letters" });
  const durable = deps.layout.durableOf(deps.principal, StreamName.Advisory);
  const index = new QuarantineIndex(deps);
  await index.refresh();

  /** Keeps `original` in quarantine as `reason`; throws when the publish fails. */
  const keep = async (original: QuarantineOriginal, reason: QuarantineReasonValue, capability: string, detail: string) => {
    await publishQuarantineCopy(deps.js, original, deps.subjects.quarantine(reason, capability), { reason, detail, detectedBy: deps.principal }, deps);
  };

  const handle = async (m: JsMsg): Promise<void> => {
    const kind = m.subject.startsWith(MAX_DELIVERIES_PREFIX) ? QuarantineReason.MaxDeliveries
      : m.subject.startsWith(TERMINATED_PREFIX) ? QuarantineReason.Terminated : undefined;
    const advisory = parseAdvisory(m.data);
    // The advisory as an original of its own: what is kept when the failed message cannot be.
    const itself: QuarantineOriginal = { subject: m.subject, stream: m.info.stream, seq: m.info.streamSequence, consumer: durable, headers: m.headers, data: m.data };
    if (!kind || !advisory) {
      await keep(itself, QuarantineReason.DecodeError, "_advisory", `not a delivery advisory this coordinator understands (${m.subject})`);
      log.warn({ subject: m.subject, seq: m.info.streamSequence }, "unexpected advisory quarantined");
      return;
    }
    const what = `${advisory.stream} #${advisory.stream_seq}`;
    const deliveries = advisory.deliveries === undefined ? "" : ` after ${advisory.deliveries} deliver${advisory.deliveries === 1 ? "y" : "ies"}`;
    const why = kind === QuarantineReason.MaxDeliveries
      ? `consumer ${advisory.consumer} gave up${deliveries} (max_deliver)`
      : `consumer ${advisory.consumer} terminated it${deliveries}: ${advisory.reason || "no reason given"}`;

    /** True (and logged) when an entry whose claim `accept` trusts already keeps this original. */
    const kept = async (accept: (claim: OriginalClaim) => boolean) => {
      await index.refresh();
      const existing = index.findOriginal(advisory.stream, advisory.stream_seq, accept);
      if (existing !== undefined) log.debug({ original: what, entry: existing, kind }, "already quarantined; advisory absorbed");
      return existing !== undefined;
    };
    // Without the original, only the coordinator's own advisory entry (`_unknown`, where nobody else may publish) counts.
    const keptAdvisory = () => kept((c) => c.token === "_unknown" && c.detectedBy === deps.principal);

    let original;
    try {
      original = await deps.jsm.streams.getMessage(advisory.stream, { seq: advisory.stream_seq });
    } catch (err) {
      const denied = permissionDenied(err, `the coordinator reading ${advisory.stream}`);
      if (!denied) throw err; // unreachable for now: redelivered later
      if (await keptAdvisory()) return;
      // Not a stream the coordinator may read: keep the advisory itself rather than lose the failure.
      await keep({ ...itself, stream: advisory.stream, seq: advisory.stream_seq, consumer: advisory.consumer }, kind, "_unknown",
        `${why}; the coordinator may not read ${what} (${denied.message}), so this entry keeps the advisory`);
      return;
    }
    if (!original) {
      if (await keptAdvisory()) return;
      // Gone (stream limits, or deleted): the advisory is all that is left of it. It is recorded under the
      // original's stream and sequence, so a later advisory for the same message is recognized.
      await keep({ ...itself, stream: advisory.stream, seq: advisory.stream_seq, consumer: advisory.consumer }, kind, "_unknown",
        `${why}; the original ${what} is gone (stream limits or deleted), so this entry keeps the advisory`);
      log.warn({ original: what, kind }, "dead letter gone before it could be quarantined; advisory kept");
      return;
    }
    const digest = digestOf(original.data), tokens = quarantineTokensFor(deps.layout, original.subject);
    if (await kept((c) => c.dataDigest === digest && c.originalSubject === original.subject && tokens.includes(c.token))) return;
    await keep(
      { subject: original.subject, stream: advisory.stream, seq: advisory.stream_seq, consumer: advisory.consumer, headers: original.header, data: original.data },
      kind, capabilityToken((s) => deps.subjects.parse(s), original.subject), why,
    );
    log.info({ original: what, consumer: advisory.consumer, reason: kind }, "dead letter quarantined");
  };

  // One advisory at a time: each looks up the quarantine index the one before may have just extended.
  const consumer = await consumeDurable(deps.nc, {
    stream: StreamName.Advisory, durable, concurrency: 1, log, retryDelayMs: RETRY_MS,
    handler: async (m) => {
      await handle(m);
      // Acked only now that the quarantine copy is stored (or it already was).
      await m.ackAck().catch((err: unknown) => log.warn({ err, seq: m.info.streamSequence }, "advisory ack not confirmed; it will be redelivered and absorbed"));
    },
  });

  return {
    name: "dead-letters",
    lost: consumer.lost,
    stop: () => consumer.stop(),
  };
};
