// Quarantine operations: list, show, release and reject quarantined messages, as endpoints of the coordinator's
// micro service (`mesh.ctl.coordinator.quarantine-list|show|release|reject`, JSON in and out).
//
// MESH_QUARANTINE stays append-only and browsable (`nats stream view MESH_QUARANTINE`): an entry's status is
// not written into it but derived from the signed release and rejection decisions on MESH_DECISION, whose data
// names the quarantine sequence. Both streams are read by sequence (direct get, the coordinator's permissions
// allow nothing else there) into small in-memory indexes that catch up on every request, so any replica answers
// from the broker's state. A release re-verifies the original and refuses when it would fail again; otherwise
// it republishes the original bytes and headers to the original subject, then publishes the signed decision.
import { createHash } from "node:crypto";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { MsgHdrs } from "@nats-io/transport-node";
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";
import type { Logger } from "pino";
import {
  CausewayError, DecisionKind, ErrorCode, NatsBinding, QUARANTINE_DETAIL_MAX_BYTES, QUARANTINE_FIELD_MAX_BYTES, QuarantineHeader, StreamName, boundedText,
  acceptanceOf, dataJson, decisionEvent, decisionSchema, decisionSubjectOf, MsgIdKind, addControlEndpoint, confirmDuplicate, isCausewayError, isExpired,
  msgId, permissionDenied, subscribersOf, publishDecision, readAcceptsDeclaration, readStream, sameBytes, storedMessage,
} from "../kit/index.ts";
import type { DecisionKindValue, EvtSubject, MeshLayout, ParsedSubject, TrustedEvent } from "../kit/index.ts";
import {
  quarantineList, quarantineReject, quarantineRelease, quarantineShow, requesterOf,
  type Check, type ListReply, type ListRequest, type QuarantineDetail, type QuarantineEntry, type RejectReply, type ReleaseReply, type SettleRequest,
} from "./contract.ts";
import type { CoordinatorDeps, CoordinatorModule, StartModule } from "./module.ts";

const REASON_HEADERS = new Set<string>(Object.values(QuarantineHeader).map((h) => h.toLowerCase()));
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 10_000;
const utf8 = new TextDecoder("utf-8", { fatal: true });
/** The most bytes of an original subject the index keeps: a longer one is cut (and so is never a release target). */
const SUBJECT_MAX_BYTES = 1024;
const RFC3339 = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$/i;

/** The headers of the original: the quarantined copy's headers without the reason headers and JetStream's own. */
export function originalHeaders(stored: MsgHdrs | undefined): MsgHdrs {
  const h = natsHeaders();
  if (!stored) return h;
  for (const [name, values] of stored) {
    const lower = name.toLowerCase();
    // Nats-Msg-Id (the quarantine copy's), Nats-Stream, Nats-Sequence, … describe the copy, not the original.
    if (REASON_HEADERS.has(lower) || lower.startsWith("nats-")) continue;
    for (const v of values) h.append(name, v);
  }
  return h;
}

/** The capability token a quarantine subject uses for an original on `subject`. */
export function capabilityToken(parse: (subject: string) => ParsedSubject, subject: string): string {
  try {
    const p = parse(subject);
    return p.kind === "cap" || p.kind === "handoff" ? p.capability : `_${p.kind}`;
  } catch {
    return "_unknown";
  }
}

// Serializes refreshes: each caller gets a scan that started after it asked, so it sees what it just published.
function serialized(fn: () => Promise<void>): () => Promise<void> {
  let chain: Promise<void> = Promise.resolve();
  return () => (chain = chain.catch(() => undefined).then(fn));
}

/**
 * The quarantine subject tokens under which a copy of an original on `subject` may legitimately be stored: its
 * capability's; for an ingest original also `ingest` (the gateway's; the coordinator's is `_ingest`); for a fact,
 * besides the coordinator's `_evt`, the capability of each agent subscribing to it (principals.json `subscribes`),
 * which quarantines under its own capability what it cannot take.
 */
export function quarantineTokensFor(layout: Pick<MeshLayout, "subjects" | "principals">, subject: string): readonly string[] {
  const parse = (s: string) => layout.subjects.parse(s);
  const token = capabilityToken(parse, subject);
  if (token === "_ingest") return [token, "ingest"];
  if (token !== "_evt") return [token];
  const fact = parse(subject) as EvtSubject;
  return [token, ...subscribersOf(layout.principals, fact).flatMap((p) => p.serves.map((ref) => layout.principals.capabilities[ref]!.name))];
}

/** SHA-256 of a quarantined original's bytes (hex). */
export function digestOf(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** An entry of the index: what the reason headers say, without the data. */
interface Indexed extends Omit<QuarantineEntry, "status" | "decision"> {
  readonly storedAt: string;
}

/**
 * What an entry claims about the original it keeps, with what the claim can be checked against: the entry's
 * own subject token (the server lets only a capability's agents, the gateway for `ingest`, and the coordinator
 * publish under a token) and the digest of the bytes it keeps.
 */
export interface OriginalClaim {
  readonly seq: number;
  /** The capability token of the entry's own subject (`mesh.quarantine.<reason>.<token>`). */
  readonly token: string;
  readonly detectedBy: string;
  readonly originalSubject: string;
  readonly dataDigest: string;
}

/**
 * The entries of MESH_QUARANTINE, by sequence and by original (stream + sequence), read by direct get and kept
 * in memory without their data. `refresh()` reads what was appended since the last call.
 *
 * Anyone who may publish under a quarantine subject writes the reason headers, so what an entry keeps is bounded:
 * the detail to QUARANTINE_DETAIL_MAX_BYTES, the original subject to SUBJECT_MAX_BYTES, every other field to
 * QUARANTINE_FIELD_MAX_BYTES (cut values end with " [truncated]"), about 3 KiB at most. The number of entries is
 * the stream's: MESH_QUARANTINE's max_msgs (streams/MESH_QUARANTINE.json, discard new) bounds it.
 */
export class QuarantineIndex {
  readonly #jsm: JetStreamManager;
  readonly #parse: (subject: string) => ParsedSubject;
  readonly #entries = new Map<number, Indexed>();
  readonly #byOriginal = new Map<string, OriginalClaim[]>();
  #next = 1;
  readonly refresh: () => Promise<void>;

  constructor(deps: Pick<CoordinatorDeps, "jsm" | "subjects">) {
    this.#jsm = deps.jsm;
    this.#parse = (s) => deps.subjects.parse(s);
    this.refresh = serialized(async () => {
      for await (const m of readStream(this.#jsm, StreamName.Quarantine, this.#next)) {
        this.#next = m.seq + 1;
        const e = this.#index(m);
        this.#entries.set(e.seq, e);
        if (e.originalSeq !== undefined) {
          const key = `${e.originalStream}/${e.originalSeq}`;
          const claims = this.#byOriginal.get(key) ?? [];
          claims.push({ seq: e.seq, token: e.capability, detectedBy: e.detectedBy, originalSubject: e.originalSubject, dataDigest: digestOf(m.data) });
          this.#byOriginal.set(key, claims);
        }
      }
    });
  }

  get(seq: number): Indexed | undefined {
    return this.#entries.get(seq);
  }

  /**
   * The first entry that claims to keep `stream` #`seq` and whose claim `accept` trusts, if any. A claim is only
   * headers anyone allowed to publish on MESH_QUARANTINE can write: the caller checks it against the original.
   */
  findOriginal(stream: string, seq: number, accept: (claim: OriginalClaim) => boolean): number | undefined {
    return this.#byOriginal.get(`${stream}/${seq}`)?.find(accept)?.seq;
  }

  entries(): IterableIterator<Indexed> {
    return this.#entries.values();
  }

  #index(m: StoredMsg): Indexed {
    const header = (name: string) => m.header.get(name) || undefined;
    const h = (name: string, max = QUARANTINE_FIELD_MAX_BYTES) => {
      const v = header(name);
      return v === undefined ? undefined : boundedText(v, max);
    };
    let reason = h(QuarantineHeader.Reason), capability = "_unknown";
    try {
      const p = this.#parse(m.subject);
      if (p.kind === "quarantine") {
        reason ??= p.reason;
        capability = p.capability;
      }
    } catch {
      // not a mesh quarantine subject: keep what the headers say
    }
    let eventId: string | undefined, eventType: string | undefined;
    try {
      const e = NatsBinding.toEvent({ headers: originalHeaders(m.header), data: m.data });
      eventId = boundedText(e.id, QUARANTINE_FIELD_MAX_BYTES);
      eventType = boundedText(e.type, QUARANTINE_FIELD_MAX_BYTES);
    } catch {
      // an original that does not decode (decode_error) has no id to show
    }
    const originalSeq = Number(header(QuarantineHeader.OriginalSequence));
    const storedAt = m.time.toISOString();
    return {
      seq: m.seq, reason: reason ?? "unknown", detail: h(QuarantineHeader.Detail, QUARANTINE_DETAIL_MAX_BYTES) ?? "", capability: boundedText(capability, QUARANTINE_FIELD_MAX_BYTES),
      ...(h(QuarantineHeader.Code) && { code: h(QuarantineHeader.Code) }),
      originalSubject: h(QuarantineHeader.OriginalSubject, SUBJECT_MAX_BYTES) ?? "", originalStream: h(QuarantineHeader.OriginalStream) ?? "",
      ...(Number.isSafeInteger(originalSeq) && originalSeq > 0 && { originalSeq }),
      ...(h(QuarantineHeader.Consumer) && { consumer: h(QuarantineHeader.Consumer) }),
      ...(eventId !== undefined && { eventId }), ...(eventType !== undefined && { eventType }),
      detectedBy: h(QuarantineHeader.DetectedBy) ?? "", detectedAt: h(QuarantineHeader.DetectedAt) ?? storedAt, storedAt,
    };
  }
}

interface Settlement {
  readonly status: "released" | "rejected";
  readonly id: string;
  readonly operator: string;
  readonly at: string;
  readonly note?: string;
  /** Its sequence in MESH_DECISION. */
  readonly decisionSeq: number;
  /** What the decision says it is about, checked against the entry. */
  readonly originalSubject?: string;
  readonly eventId?: string;
}

/**
 * The release and rejection decisions of MESH_DECISION, by quarantine sequence. Only decisions that verify and
 * were signed by the coordinator count, and only for the entry they describe (same original subject and event
 * id: a recreated quarantine stream reuses sequences); the first such decision is the one that settled it.
 */
class SettlementIndex {
  readonly #settled = new Map<number, Settlement[]>();
  readonly #next = { release: 1, rejection: 1 };
  readonly refresh: () => Promise<void>;

  constructor(deps: Pick<CoordinatorDeps, "jsm" | "trust" | "principal" | "subjects">, log: Logger) {
    const read = async (kind: "release" | "rejection") => {
      const subject = decisionSubjectOf(kind === "release" ? DecisionKind.Release : DecisionKind.Rejection, deps.subjects.prefix);
      for await (const m of readStream(deps.jsm, StreamName.Decision, this.#next[kind], subject)) {
        this.#next[kind] = m.seq + 1;
        let verified: TrustedEvent;
        try {
          verified = deps.trust.verifyMessage(storedMessage(StreamName.Decision, m));
        } catch (err) {
          log.warn({ err, seq: m.seq }, "a quarantine decision does not verify; ignored");
          continue;
        }
        if (verified.entry.principal !== deps.principal) {
          log.warn({ seq: m.seq, signer: verified.entry.principal }, "a quarantine decision not signed by the coordinator; ignored");
          continue;
        }
        let data: { quarantineSeq?: unknown; operator?: unknown; note?: unknown; originalSubject?: unknown; eventId?: unknown };
        try {
          data = dataJson<typeof data>(verified.event);
        } catch {
          continue;
        }
        const seq = data.quarantineSeq;
        if (typeof seq !== "number") continue;
        const list = this.#settled.get(seq) ?? [];
        list.push({
          status: kind === "release" ? "released" : "rejected", id: verified.event.id, operator: String(data.operator ?? ""),
          at: verified.event.time ?? m.time.toISOString(), ...(typeof data.note === "string" && { note: data.note }), decisionSeq: m.seq,
          ...(typeof data.originalSubject === "string" && { originalSubject: data.originalSubject }),
          ...(typeof data.eventId === "string" && { eventId: data.eventId }),
        });
        this.#settled.set(seq, list);
      }
    };
    this.refresh = serialized(async () => {
      await read("release");
      await read("rejection");
    });
  }

  /** The decision that settled `entry`: releases and rejections are read subject by subject, the lower stream sequence came first. */
  get(entry: Pick<Indexed, "seq" | "originalSubject" | "eventId">): Settlement | undefined {
    let first: Settlement | undefined;
    for (const s of this.#settled.get(entry.seq) ?? []) {
      const sameSubject = s.originalSubject === undefined || s.originalSubject === (entry.originalSubject || "(unknown)");
      const sameEvent = s.eventId === undefined || entry.eventId === undefined || s.eventId === entry.eventId.slice(0, 200);
      if (sameSubject && sameEvent && (!first || s.decisionSeq < first.decisionSeq)) first = s;
    }
    return first;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The operations, without I/O of their own beyond deps: testable in-process.

const usage = (message: string) => new CausewayError(ErrorCode.Usage, message);

/** The four operations; each resolves with the reply body or rejects with a CausewayError. */
export interface QuarantineOps {
  list(req: ListRequest): Promise<ListReply>;
  show(seq: number): Promise<QuarantineDetail>;
  release(req: SettleRequest): Promise<ReleaseReply>;
  reject(req: SettleRequest): Promise<RejectReply>;
}

/** Builds the operations over `deps`. */
export function createQuarantineOps(deps: CoordinatorDeps, log: Logger = deps.log): QuarantineOps {
  const index = new QuarantineIndex(deps);
  const settlements = new SettlementIndex(deps, log);
  const refresh = async () => {
    await index.refresh();
    await settlements.refresh();
  };
  // One operation at a time per entry, so a release and a reject racing in this process settle it once.
  const locks = new Map<number, Promise<unknown>>();
  const exclusive = async <T>(seq: number, fn: () => Promise<T>): Promise<T> => {
    const previous = locks.get(seq) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(fn);
    locks.set(seq, run);
    try {
      return await run;
    } finally {
      if (locks.get(seq) === run) locks.delete(seq);
    }
  };

  const entryOf = (e: Indexed): QuarantineEntry => {
    const s = settlements.get(e);
    const { storedAt: _storedAt, ...rest } = e;
    return { ...rest, status: s?.status ?? "open", ...(s && { decision: { id: s.id, operator: s.operator, at: s.at, ...(s.note !== undefined && { note: s.note }) } }) };
  };

  const load = async (seq: number) => {
    await refresh();
    const indexed = index.get(seq);
    const stored = indexed && (await deps.jsm.streams.getMessage(StreamName.Quarantine, { seq }));
    if (!indexed || !stored) throw new CausewayError(ErrorCode.QuarantineNotFound, `no quarantine entry at sequence ${seq} of ${StreamName.Quarantine}`);
    return { indexed, stored, headers: originalHeaders(stored.header) };
  };

  /** Decodes and verifies the original now. */
  const verify = (headers: MsgHdrs, data: Uint8Array): { check: Check; trusted?: TrustedEvent } => {
    try {
      // A release publishes the original again now: the signer's key must be good now.
      const trusted = deps.trust.verify(NatsBinding.toEvent({ headers, data }), { receivedAt: "now" });
      return { trusted, check: { ok: true, principal: trusted.entry.principal, keyid: trusted.entry.keyid, eventId: trusted.event.id, eventType: trusted.event.type } };
    } catch (err) {
      return { check: { ok: false, ...(isCausewayError(err) && { code: err.code }), message: (err as Error).message } };
    }
  };

  /** Would the pipeline accept the original again? The checks a release requires, in pipeline order. */
  const releaseCheck = async (indexed: Indexed, verification: Check, trusted: TrustedEvent | undefined): Promise<QuarantineDetail["release"]> => {
    if (indexed.originalSubject.startsWith("$JS.EVENT.ADVISORY.")) {
      return { ok: false, message: `the original ${indexed.originalStream} #${indexed.originalSeq ?? "?"} is gone: this entry keeps only its delivery advisory` };
    }
    let target: ParsedSubject;
    try {
      target = deps.subjects.parse(indexed.originalSubject);
    } catch (err) {
      return { ok: false, code: (err as CausewayError).code, message: `the original subject cannot be published to: ${(err as Error).message}` };
    }
    const refusedTarget = targetProblem(indexed, target);
    if (refusedTarget) return { ok: false, code: ErrorCode.ReleaseTarget, message: refusedTarget };
    if (!verification.ok || !trusted) return { ok: false, ...(verification.ok ? {} : { code: verification.code }), message: verification.ok ? "not verified" : verification.message };
    if (target.kind === "ingest" && target.source !== trusted.entry.principal) {
      return { ok: false, code: ErrorCode.ReleaseTarget, message: `an ingest original goes back only to its own upstream's subject: ${indexed.originalSubject} is ${target.source}'s, the original is signed by ${trusted.entry.principal}` };
    }
    const event = trusted.event;
    if (isExpired(event)) return { ok: false, code: ErrorCode.Expired, message: `the event expired at ${String(event.extensions.expirytime)}` };
    if (target.kind === "cap" || target.kind === "handoff") {
      if (!deps.trust.mayAddress(trusted.entry, target.capability, target.major)) {
        return { ok: false, code: ErrorCode.UnauthorizedAddress, message: `${trusted.entry.principal} may not address ${target.capability}.v${target.major}` };
      }
      if (event.dataschema === undefined || !deps.schemas.has(event.dataschema)) {
        return { ok: false, code: ErrorCode.UnknownSchema, message: `no schema ${String(event.dataschema)} is registered` };
      }
      const refused = await consumerRefusal(target.capability, target.major, event);
      if (refused) return refused;
      try {
        deps.schemas.validate(event.dataschema, dataJson(event));
      } catch (err) {
        return { ok: false, code: isCausewayError(err) ? err.code : ErrorCode.SchemaViolation, message: isCausewayError(err) ? err.message : `data is not JSON: ${(err as Error).message}` };
      }
    }
    return { ok: true };
  };

  /**
   * Does the consumer the original goes to accept its type and version? Asked of what the agents on the
   * capability's durable declare (they write it when they start), with the agents' own rule (acceptanceOf), so
   * a release is not promised to a consumer that would quarantine it again. A handoff's consumer is the critical
   * capability's agent, which the coordinator forwards it to once granted. Nothing declared: not promised either.
   */
  const consumerRefusal = async (capability: string, major: number, event: TrustedEvent["event"]): Promise<QuarantineDetail["release"] | undefined> => {
    const durable = deps.layout.capabilityConsumer(capability, major).durable_name;
    const declared = await readAcceptsDeclaration(deps.jsm, StreamName.Cap, durable);
    if (!declared) {
      return {
        ok: false, code: ErrorCode.ReleaseTarget,
        message: `consumer ${durable} of ${capability}.v${major} declares no accepted versions (no agent of ${capability}.v${major} has started on it): start the agent, then release`,
      };
    }
    const verdict = acceptanceOf(declared.accepts, event, deps.schemas, `${capability}.v${major} (${declared.by} ${declared.version}, consumer ${durable})`);
    return verdict.ok ? undefined : { ok: false, code: verdict.code, message: verdict.detail };
  };

  /**
   * Where a release may go, from what the entry's subject and the target imply (the headers naming the target are
   * the detecting principal's word): a capability or handoff subject of the entry's own capability, or an ingest
   * subject for an entry quarantined at ingest; never a decision, audit, quarantine, event or control subject,
   * and never a critical capability's mesh.cap subject, which only a grant forwards to.
   */
  const targetProblem = (indexed: Indexed, target: ParsedSubject): string | undefined => {
    const subject = indexed.originalSubject;
    if (target.kind !== "cap" && target.kind !== "handoff" && target.kind !== "ingest") {
      return `a release goes back only to a capability, handoff or ingest subject, not to ${subject} (${target.kind})`;
    }
    if (target.kind === "cap" && deps.policy.policy().of(target.capability, target.major)?.critical) {
      return `${subject} is a critical capability: work reaches it only through a grant, so the producer must hand it off again`;
    }
    const tokens = quarantineTokensFor(deps.layout, subject);
    if (!tokens.includes(indexed.capability)) {
      return `the entry was quarantined under ${indexed.capability}, which does not take ${subject}`;
    }
    return undefined;
  };

  const refuseSettled = (entry: Indexed) => {
    const s = settlements.get(entry);
    const seq = entry.seq;
    if (s) {
      throw new CausewayError(ErrorCode.AlreadySettled, `quarantine entry ${seq} was already ${s.status} by ${s.operator || "an operator"} at ${s.at} (decision ${s.id})`, { details: { status: s.status, decisionId: s.id } });
    }
  };

  const checkSettle = (req: SettleRequest) => {
    if (typeof req.operator !== "string" || req.operator.trim() === "" || req.operator.length > 100) {
      throw usage("operator (who asks, 1 to 100 characters) is required");
    }
    if (req.note !== undefined && (typeof req.note !== "string" || req.note.length > 2000)) throw usage("note must be a string of at most 2000 characters");
  };

  // Who the server lets ask (requesterOf), recorded as `principal` next to the claimed operator name.
  const principals = deps.layout.principals;
  const requesters = new Map<DecisionKindValue, string | undefined>([[DecisionKind.Release, requesterOf(principals, quarantineRelease)], [DecisionKind.Rejection, requesterOf(principals, quarantineReject)]]);
  const decide = async (kind: DecisionKindValue, claimed: Record<string, unknown>, entry: Indexed, about: TrustedEvent | undefined) => {
    const principal = requesters.get(kind);
    const data = principal === undefined ? claimed : { ...claimed, principal };
    deps.schemas.validate(decisionSchema(kind), data);
    const event = decisionEvent(kind, data, {
      // Stable for the entry (a retry is the same event), distinct for another entry at a reused sequence.
      principal: deps.principal, key: deps.key, idKey: `quarantine/${entry.seq}/${entry.storedAt}`,
      ...(about && { about: { id: about.event.id, source: about.event.source, extensions: about.event.extensions } }),
    });
    await publishDecision(deps.js, kind, event, deps.subjects.prefix, deps);
    await settlements.refresh();
    return event.id;
  };

  return {
    async list(req) {
      const since = req.since === undefined ? undefined : parseTime("since", req.since);
      const until = req.until === undefined ? undefined : parseTime("until", req.until);
      const limit = req.limit ?? DEFAULT_LIMIT;
      if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw usage(`limit must be an integer from 1 to ${MAX_LIMIT}`);
      if (req.status !== undefined && !["open", "released", "rejected"].includes(req.status)) throw usage("status must be open, released or rejected");
      await refresh();
      const matched: QuarantineEntry[] = [];
      for (const e of index.entries()) {
        if (req.reason !== undefined && e.reason !== req.reason) continue;
        if (req.capability !== undefined && e.capability !== req.capability) continue;
        const at = Date.parse(e.detectedAt);
        if (since !== undefined && !(at >= since)) continue;
        if (until !== undefined && !(at < until)) continue;
        const entry = entryOf(e);
        if (req.status !== undefined && entry.status !== req.status) continue;
        matched.push(entry);
      }
      return { entries: matched.slice(-limit), matched: matched.length };
    },

    async show(seq) {
      const { indexed, stored, headers } = await load(seq);
      const { check, trusted } = verify(headers, stored.data);
      const reasonHeaders: Record<string, string> = {};
      const original: Record<string, string[]> = {};
      for (const [name, values] of stored.header) {
        if (REASON_HEADERS.has(name.toLowerCase())) reasonHeaders[name] = values.join(", ");
      }
      for (const [name, values] of headers) original[name] = [...values];
      let data: string, dataEncoding: "utf8" | "base64";
      try {
        data = utf8.decode(stored.data);
        dataEncoding = "utf8";
      } catch {
        data = Buffer.from(stored.data).toString("base64");
        dataEncoding = "base64";
      }
      return {
        entry: entryOf(indexed), storedAt: indexed.storedAt, headers: original, reasonHeaders, data, dataEncoding, dataBytes: stored.data.length,
        verification: check, release: await releaseCheck(indexed, check, trusted),
      };
    },

    release(req) {
      checkSettle(req);
      return exclusive(req.seq, async () => {
        const { indexed, stored, headers } = await load(req.seq);
        refuseSettled(indexed);
        const { check, trusted } = verify(headers, stored.data);
        const verdict = await releaseCheck(indexed, check, trusted);
        if (!verdict.ok || !trusted) {
          const why = verdict.ok ? "it does not verify" : `${verdict.code ? `${verdict.code}: ` : ""}${verdict.message}`;
          throw new CausewayError(ErrorCode.ReleaseRefused, `release of quarantine entry ${req.seq} refused: it would fail again (${why})`, { details: { check: verdict } });
        }
        // The original bytes and headers, under a msgID of their own: the original's msgID must not absorb the
        // redelivery, and a second release within the duplicate window is absorbed. The id is the coordinator's
        // (msg-ids.ts), and a duplicate ack counts only when the stream holds these bytes on this subject.
        const id = msgId(deps, MsgIdKind.Release, req.seq, indexed.storedAt);
        const ack = await deps.js.publish(indexed.originalSubject, stored.data, { headers, msgID: id }).catch((err: unknown) => {
          throw permissionDenied(err, `the coordinator republishing on ${indexed.originalSubject}`) ?? err;
        });
        await confirmDuplicate(deps.jsm, ack, id, (m) => sameBytes(m, indexed.originalSubject, stored.data));
        const decisionId = await decide(DecisionKind.Release, {
          quarantineSeq: req.seq, originalSubject: indexed.originalSubject, reason: indexed.reason.slice(0, 100), operator: req.operator,
          ...(indexed.originalStream && { originalStream: indexed.originalStream }),
          ...(indexed.originalSeq !== undefined && { originalSeq: indexed.originalSeq }),
          ...(req.note !== undefined && { note: req.note }), eventId: trusted.event.id,
        }, indexed, trusted);
        log.info({ seq: req.seq, subject: indexed.originalSubject, operator: req.operator, decisionId, republishedSeq: ack.seq }, "quarantine entry released");
        return { released: true as const, seq: req.seq, decisionId, subject: indexed.originalSubject, republished: { stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate } };
      });
    },

    reject(req) {
      checkSettle(req);
      return exclusive(req.seq, async () => {
        const { indexed, stored, headers } = await load(req.seq);
        refuseSettled(indexed);
        // A rejected original that verifies continues its flow's correlation; one that does not is named only by its claimed id.
        const { trusted } = verify(headers, stored.data);
        const decisionId = await decide(DecisionKind.Rejection, {
          quarantineSeq: req.seq, originalSubject: indexed.originalSubject || "(unknown)", reason: indexed.reason.slice(0, 100), operator: req.operator,
          ...(req.note !== undefined && { note: req.note }), ...(indexed.eventId !== undefined && { eventId: indexed.eventId.slice(0, 200) }),
        }, indexed, trusted);
        log.info({ seq: req.seq, operator: req.operator, decisionId }, "quarantine entry rejected");
        return { rejected: true as const, seq: req.seq, decisionId };
      });
    },
  };
}

function parseTime(name: string, value: unknown): number {
  const ms = typeof value === "string" && RFC3339.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) throw usage(`${name} must be an RFC 3339 time (e.g. 2026-11-21T07:00:00Z) or a date, got ${JSON.stringify(value)}`);
  return ms;
}

// ---------------------------------------------------------------------------------------------------------
// The endpoints.

/** Starts the quarantine endpoints on the coordinator's micro service. */
export const start: StartModule = async (deps): Promise<CoordinatorModule> => {
  const log = deps.log.child({ module: "quarantine" });
  const ops = createQuarantineOps(deps, log);
  const serve = { subjects: deps.subjects, log };
  const endpoints = [
    addControlEndpoint(deps.service, quarantineList, { ...serve, handle: (req) => ops.list(req) }),
    addControlEndpoint(deps.service, quarantineShow, { ...serve, handle: (req) => ops.show(req.seq) }),
    addControlEndpoint(deps.service, quarantineRelease, { ...serve, handle: (req) => ops.release(req) }),
    addControlEndpoint(deps.service, quarantineReject, { ...serve, handle: (req) => ops.reject(req) }),
  ];
  log.debug("quarantine endpoints registered");

  return {
    name: "quarantine",
    async stop() {
      await Promise.all(endpoints.map((e) => e.stop()));
    },
  };
};
