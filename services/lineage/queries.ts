// The auditor's questions over a lineage store: `why` (an event's causal ancestry to the upstream root),
// `trace` (a whole flow as a DAG with a timeline and its critical path), `impact` (what an event caused) and
// `listEvents`. Store-agnostic (only the LineageStore interface), so SQLite and PostgreSQL answer the same.
//
// One step per event: an event lineage recorded on several streams (a handoff then its forward on the
// capability subject, a capability message then its quarantine copy) is one step listing its appearances.
// Timings come from signed values only: `startedat` and `emittedat` of records that verified (a verified
// record carries only signed attributes); anything else gives a null timing and says why.
//
// Spend (issue 16): each step reports what the handler run that produced it spent (the signed `spentcost` /
// `spenttokens`), and `trace` totals a flow's spend counting each run once: every output of one run carries the
// same figures, and a run is identified by (producer source, causationid). Only verified records count: an
// unverified record's extensions are not believed. A run that emitted nothing leaves no event, so its spend is in
// the flow ledger (KV causeway_flow_ledger) only; lineage reports what the signed events prove.
//
// Cost: `why` is one indexed lookup per step, `trace` one lookup for the flow (plus one per input recorded
// outside it), `impact` one batched lookup per level. No scans.
import { decodeRecord, type LineageRecord } from "./record.ts";
import { listLimit, type LineageStore, type ListFilter, type StoredRecord } from "./store.ts";
import {
  CausewayError, ContextExtension, ErrorCode, QuarantineHeader, QuarantineReason, budgetOf, flowIdOf, priorityOf, spentOf,
  type CloudEvent, type FlowBudget, type PriorityValue, type Spend,
} from "../kit/index.ts";

/** A duration from signed values, or null and why not. */
export interface Timing {
  /** Milliseconds, or null when it cannot be computed from signed values. */
  readonly ms: number | null;
  /** Why `ms` is null; absent when it is a number. */
  readonly reason?: string;
}

/** Why a message went to quarantine: the reason headers of its MESH_QUARANTINE copy (not signed). */
export interface QuarantineInfo {
  readonly reason: string | null;
  readonly detail: string | null;
  readonly code: string | null;
  readonly detectedBy: string | null;
  /** RFC 3339 as the detecting service wrote it. */
  readonly detectedAt: string | null;
  readonly originalStream: string | null;
  readonly originalSeq: number | null;
  readonly originalSubject: string | null;
}

/** One record of an event: where lineage read it. */
export interface Appearance {
  /** Leaf index in the Merkle log (what `prove` takes). */
  readonly index: number;
  readonly stream: string;
  readonly seq: number;
  readonly subject: string;
  readonly verified: boolean;
  /** The CW_ERR_* code when this copy failed verification. */
  readonly code?: string;
  /** Present when this is a quarantine copy. */
  readonly quarantine?: QuarantineInfo;
}

/** What lineage's verification said about an event (its first verified record, else its first record). */
export interface StepVerification {
  readonly result: "verified" | "failed";
  readonly code?: string;
  readonly detail?: string;
}

/** One event in an answer: who produced it, under which key, from which input, and how long it took. */
export interface EventStep {
  readonly id: string;
  readonly source: string;
  readonly type: string | null;
  /** The agent: the principal the signing key maps to (verified records only). */
  readonly principal: string | null;
  /** The agent's implementation version, from the signed `agentversion` extension (verified records only). */
  readonly version: string | null;
  /** The DSSE key id the envelope named (the principal's NKey public key). */
  readonly keyid: string | null;
  readonly verification: StepVerification;
  /** Its input: the `causationid` (empty for a root). */
  readonly inputs: readonly string[];
  readonly correlationid: string | null;
  /** The `time` attribute (signed to the second when verified). */
  readonly time: string | null;
  /** Signed `startedat` / `emittedat` (null when absent or the record did not verify). */
  readonly startedAt: string | null;
  readonly emittedAt: string | null;
  /** This event's `startedat` − its input's `emittedat`. */
  readonly queueWait: Timing;
  /** This event's `emittedat` − its `startedat`. */
  readonly processing: Timing;
  /**
   * What the handler run that produced this event spent: its signed `spentcost` / `spenttokens` (zeros when it
   * carries none). Null when the record did not verify (its claims are not believed) or the values are malformed.
   * Every output of one run carries the same figures: the flow's totals count the run once.
   */
  readonly spent: Spend | null;
  /** Every record of this event, in index order. */
  readonly appearances: readonly Appearance[];
}

/** How a `why` walk ended. */
export type WhyEnd =
  | { readonly kind: "root" }
  /** The input `id` is not recorded (not yet ingested, or lost upstream). */
  | { readonly kind: "missing"; readonly id: string }
  /** The input `id` is recorded under several sources and none matches the flow uniquely. */
  | { readonly kind: "ambiguous"; readonly id: string; readonly sources: readonly string[] }
  /** The causation chain loops back to `id` (only forged or broken records can do this). */
  | { readonly kind: "cycle"; readonly id: string };

/** The answer to `why`: the event first, then its input, and so on up to the root. */
export interface WhyResult {
  readonly eventId: string;
  readonly source: string;
  readonly steps: readonly EventStep[];
  readonly end: WhyEnd;
}

/** A cause → effect edge of a flow (event ids). */
export interface FlowEdge {
  readonly from: string;
  readonly to: string;
}

/** An event on a flow's timeline. */
export interface TimelineEntry {
  /** RFC 3339; null when the event carries no time at all (listed last). */
  readonly at: string | null;
  /** `emittedat` when signed, else the `time` attribute. */
  readonly basis: "emittedat" | "time" | null;
  readonly id: string;
  readonly source: string;
  readonly type: string | null;
  readonly principal: string | null;
  /** The agent's implementation version (signed `agentversion`), when it has one. */
  readonly version: string | null;
  /** The streams it appears on, in index order. */
  readonly streams: readonly string[];
}

/** An edge of the critical path with the time between its two events. */
export interface PathEdge extends FlowEdge {
  /** `to`'s time − `from`'s time (timeline times), ms. */
  readonly ms: number;
  /** True when both times are signed `emittedat` values. */
  readonly signed: boolean;
}

/** The causal chain ending at the flow's last event, root first. */
export interface CriticalPath {
  readonly events: readonly string[];
  readonly edges: readonly PathEdge[];
  /** Last event's time − first event's time, ms. */
  readonly totalMs: number;
  /** True when every time on the path is a signed `emittedat`. */
  readonly signed: boolean;
}

/** The answer to `trace`. */
export interface TraceResult {
  readonly correlationId: string;
  /** Every event of the flow (decisions and quarantine copies included), by first appearance. */
  readonly nodes: readonly EventStep[];
  readonly edges: readonly FlowEdge[];
  readonly timeline: readonly TimelineEntry[];
  /** Null when no event of the flow carries a time. */
  readonly criticalPath: CriticalPath | null;
  /** Inputs named by the flow's events that lineage has not recorded. */
  readonly missingInputs: readonly string[];
  /** What the flow spent, by its signed events, against its budget. */
  readonly spend: FlowSpend;
}

/**
 * A flow's spend as its verified events prove it. A run is one handler run of an agent, identified by (producer
 * source, causationid): its outputs (verified events carrying the runtime's signed `flowdepth`; decisions and the
 * gateway's admitted event are no runs) share its figures, so it is counted once however many it emitted. A run that
 * emitted nothing (refused, failed, or a handler that returned no output) leaves no event: its spend is only in
 * the flow ledger (KV causeway_flow_ledger).
 */
export interface FlowSpend {
  /** Cost units and model tokens summed over the runs, each run once. */
  readonly cost: number;
  readonly tokens: number;
  /** Handler runs the verified events evidence. */
  readonly runs: number;
  /** The flow's priority, from the signed `priority` of its context event (absent = normal); null without one. */
  readonly priority: PriorityValue | null;
  /** The flow's budget, from the signed `budgetcost` / `budgettokens` / `budgetsteps` of its context event ({} when unbounded); null without one. */
  readonly budget: FlowBudget | null;
  /** What the budget leaves, per bound it has: bound − spent (steps: − runs); negative when a run's reported spend overshot. Null without a budget. */
  readonly remaining: FlowBudget | null;
  /**
   * The event the priority and budget were read from: the flow's admitted root when it verified, else its first
   * verified run output (every output inherits them unchanged). Null when no verified event carries the flow's context.
   */
  readonly contextFrom: string | null;
  /** Events of the flow that failed verification: whatever spend, priority or budget they claim is not counted. */
  readonly unverified: number;
  /**
   * Verified run outputs that carry another priority or budget than the flow's (ids, in the flow's order). Every
   * output inherits them unchanged, so any entry here names a producer that did not: an auditor's lead.
   */
  readonly otherContext: readonly string[];
  /** Inputs quarantined as budget_exceeded (runs the budget refused; their reason headers are not signed). */
  readonly refusedForBudget: number;
  /**
   * Verified run outputs whose signed `spentcost` / `spenttokens` is malformed (ids): their run counts among the
   * runs and steps, its spend as nothing — a producer that did not sign a count, an auditor's lead.
   */
  readonly malformedSpend: readonly string[];
}

/** A descendant of an event, `depth` causation hops below it. */
export interface DescendantStep extends EventStep {
  readonly depth: number;
}

/** The answer to `impact`. */
export interface ImpactResult {
  readonly eventId: string;
  readonly source: string;
  readonly event: EventStep;
  /** Breadth first: depth 1 (caused directly), then 2, …; within a depth in index order. */
  readonly descendants: readonly DescendantStep[];
}

/** One record in a listing. */
export interface EventSummary {
  readonly index: number;
  readonly stream: string;
  readonly seq: number;
  readonly subject: string;
  readonly source: string | null;
  readonly id: string | null;
  readonly type: string | null;
  readonly time: string | null;
  readonly principal: string | null;
  /** The agent's implementation version (signed `agentversion`; verified records only). */
  readonly version: string | null;
  readonly keyid: string | null;
  readonly verified: boolean;
  readonly code: string | null;
  readonly correlationid: string | null;
  readonly causationid: string | null;
  /** The quarantine reason, for a quarantine copy. */
  readonly quarantineReason: string | null;
  /** What the run that produced the event spent (signed `spentcost` / `spenttokens`; verified records only, else null). */
  readonly spent: Spend | null;
}

/** A page of a listing. */
export interface EventList {
  readonly events: readonly EventSummary[];
  /** Pass as `afterIndex` for the next page; null when this page was the last. */
  readonly next: number | null;
}

/** Options of `why` and `impact`. */
export interface EventSelector {
  /** The event's source, needed when its id is recorded under several sources. */
  readonly source?: string;
}

/** A query that cannot be answered: CW_ERR_LINEAGE_NOT_FOUND or CW_ERR_LINEAGE_AMBIGUOUS_ID (with `sources`). */
export class LineageQueryError extends CausewayError {
  /** For an ambiguous id: the sources it is recorded under. */
  readonly sources: readonly string[];
  constructor(code: typeof ErrorCode.LineageNotFound | typeof ErrorCode.LineageAmbiguousId, message: string, sources: readonly string[] = []) {
    super(code, message);
    this.sources = sources;
  }
}

// Longest ancestry `why` follows; a longer chain is a loop that dodged detection or a forgery.
const MAX_DEPTH = 10_000;
// Largest IN list in one byCausation call (SQLite's default limit on parameters is 32,766).
const CAUSATION_BATCH = 500;

/** The causal ancestry of `eventId`, to the upstream root or to the first input lineage has not recorded. */
export async function why(store: LineageStore, eventId: string, opts: EventSelector = {}): Promise<WhyResult> {
  const first = await findEvent(store, eventId, opts.source);
  const chain: EventGroup[] = [first];
  const seen = new Set([first.id]);
  let end: WhyEnd = { kind: "root" };
  for (let current = first; chain.length <= MAX_DEPTH;) {
    const input = current.primary.attributes?.[ContextExtension.CausationId];
    if (input === undefined) break;
    if (seen.has(input)) {
      end = { kind: "cycle", id: input };
      break;
    }
    const candidates = await eventsWithId(store, input);
    const parent = pickInput(candidates, current);
    if (parent === undefined) {
      end = candidates.length === 0 ? { kind: "missing", id: input } : { kind: "ambiguous", id: input, sources: candidates.map((g) => g.source) };
      break;
    }
    chain.push(parent);
    seen.add(parent.id);
    current = parent;
  }
  const steps = chain.map((g, i) => toStep(g, inputOf(chain[i + 1], g, end)));
  return { eventId: first.id, source: first.source, steps, end };
}

/** A whole flow: its events as a DAG, a timeline and the critical path. */
export async function trace(store: LineageStore, correlationId: string): Promise<TraceResult> {
  const groups = groupEvents(await store.byCorrelation(correlationId));
  if (groups.length === 0) {
    const asEvent = await eventsWithId(store, correlationId);
    const flows = [...new Set(asEvent.map((g) => g.primary.attributes?.[ContextExtension.CorrelationId] ?? flowIdOf(g)))];
    const hint = flows.length > 0 ? `; an event with that id belongs to the flow ${flows.join(", ")}` : "";
    throw new LineageQueryError(ErrorCode.LineageNotFound, `no recorded flow has the correlation id "${correlationId}"${hint}`);
  }
  const byId = indexById(groups);
  // Inputs recorded outside the flow (rare: an event that started a new correlation) are looked up one by one.
  const missingInputs: string[] = [];
  const outside = new Map<string, EventGroup>();
  for (const g of groups) {
    const input = causeOf(g);
    if (input === undefined || byId.has(input) || outside.has(input) || missingInputs.includes(input)) continue;
    const found = pickInput(await eventsWithId(store, input), g);
    if (found) outside.set(input, found);
    else missingInputs.push(input);
  }
  const nodes = stepsOf(groups, outside);
  const edges: FlowEdge[] = [];
  for (const n of nodes) for (const input of n.inputs) edges.push({ from: input, to: n.id });
  const timeline = nodes.map(timelineEntry).sort(byTime);
  return { correlationId, nodes, edges, timeline, criticalPath: criticalPath(nodes, timeline), missingInputs, spend: flowSpend(groups, nodes) };
}

/** Everything `eventId` caused, breadth first, with the depth of each descendant. */
export async function impact(store: LineageStore, eventId: string, opts: EventSelector = {}): Promise<ImpactResult> {
  const root = await findEvent(store, eventId, opts.source);
  const parentOfRoot = causeOf(root);
  const rootInput = parentOfRoot === undefined ? NO_INPUT : pickInput(await eventsWithId(store, parentOfRoot), root) ?? MISSING_INPUT;
  const descendants: DescendantStep[] = [];
  const seen = new Set([root.id]);
  let level = new Map([[root.id, root]]);
  for (let depth = 1; level.size > 0 && depth <= MAX_DEPTH; depth++) {
    const records: StoredRecord[] = [];
    const ids = [...level.keys()];
    for (let i = 0; i < ids.length; i += CAUSATION_BATCH) records.push(...await store.byCausation(ids.slice(i, i + CAUSATION_BATCH)));
    records.sort((a, b) => a.columns.index - b.columns.index);
    const next = new Map<string, EventGroup>();
    for (const g of groupEvents(records)) {
      if (seen.has(g.id)) continue;
      seen.add(g.id);
      next.set(g.id, g);
      descendants.push({ ...toStep(g, level.get(causeOf(g)!) ?? MISSING_INPUT), depth });
    }
    level = next;
  }
  return { eventId: root.id, source: root.source, event: toStep(root, rootInput), descendants };
}

/** Records one listing by version reads at most: it answers with what it found and where to go on. */
const VERSION_SCAN_LIMIT = 10_000;

/**
 * A page of records matching `filter` (see {@link ListFilter}), summarized; with `version`, only events signed by
 * that implementation version (its signed `agentversion`). The version is not a column of the store, so those
 * records are read page by page, at most VERSION_SCAN_LIMIT per request; `next` then says where to go on.
 */
export async function listEvents(store: LineageStore, filter: ListFilter = {}, version?: string): Promise<EventList> {
  if (version === undefined) {
    const records = await store.list(filter);
    const events = records.map((r) => summarize(r, decodeRecord(r.bytes)));
    const full = records.length === listLimit(filter);
    return { events, next: full && records.length > 0 ? records[records.length - 1]!.columns.index : null };
  }
  const limit = listLimit(filter);
  const events: EventSummary[] = [];
  let after = filter.afterIndex;
  for (let scanned = 0; scanned < VERSION_SCAN_LIMIT;) {
    const records = await store.list({ ...filter, limit: 1_000, ...(after !== undefined && { afterIndex: after }) });
    for (const r of records) {
      after = r.columns.index;
      scanned++;
      const summary = summarize(r, decodeRecord(r.bytes));
      if (summary.version !== version) continue;
      events.push(summary);
      if (events.length === limit) return { events, next: after };
    }
    if (records.length < 1_000) return { events, next: null };
  }
  return { events, next: after ?? null };
}

/** The summary of one record (listings and exports). */
export function summarize(stored: StoredRecord, record: LineageRecord): EventSummary {
  const a = record.attributes;
  const v = record.verification;
  return {
    index: stored.columns.index,
    stream: record.stream,
    seq: record.seq,
    subject: record.subject,
    source: a?.source ?? null,
    id: a?.id ?? null,
    type: a?.type ?? null,
    time: a?.time ?? null,
    principal: v.principal ?? null,
    version: v.result === "verified" ? (a?.[ContextExtension.AgentVersion] ?? null) : null,
    keyid: v.keyid ?? null,
    verified: v.result === "verified",
    code: v.code ?? null,
    correlationid: a?.[ContextExtension.CorrelationId] ?? null,
    causationid: a?.[ContextExtension.CausationId] ?? null,
    quarantineReason: header(record, QuarantineHeader.Reason),
    spent: signedSpend(record),
  };
}

// ---------------------------------------------------------------------------------------------------------

/** The records of one event (one source, one id), decoded. */
export interface EventGroup {
  readonly id: string;
  readonly source: string;
  /** The first verified record, else the first record: what the step reports. */
  readonly primary: LineageRecord;
  readonly records: readonly { readonly stored: StoredRecord; readonly record: LineageRecord }[];
}

// Stand-ins for an input that has none, or that lineage has not recorded; they only shape the timing reasons.
const NO_INPUT = Symbol("no input");
const MISSING_INPUT = Symbol("missing input");
type InputOf = EventGroup | typeof NO_INPUT | typeof MISSING_INPUT;

/** Groups records (in index order) into events by (source, id); records without an event identity are dropped. */
export function groupEvents(records: readonly StoredRecord[]): EventGroup[] {
  const groups = new Map<string, { id: string; source: string; records: { stored: StoredRecord; record: LineageRecord }[] }>();
  for (const stored of records) {
    const record = decodeRecord(stored.bytes);
    const id = record.attributes?.id;
    const source = record.attributes?.source;
    if (id === undefined || source === undefined) continue;
    const key = `${source}\u0000${id}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { id, source, records: [] }));
    g.records.push({ stored, record });
  }
  return [...groups.values()].map((g) => ({
    ...g,
    primary: (g.records.find((r) => r.record.verification.result === "verified") ?? g.records[0]!).record,
  }));
}

/** The steps of `groups` (a flow, an export), each input found among them, else in `outside` (by id). */
export function stepsOf(groups: readonly EventGroup[], outside: ReadonlyMap<string, EventGroup> = new Map()): EventStep[] {
  const byId = indexById(groups);
  return groups.map((g) => {
    const input = causeOf(g);
    const parent = input === undefined ? undefined : (pickFrom(byId.get(input), g) ?? outside.get(input));
    return toStep(g, parent === undefined ? (input === undefined ? NO_INPUT : MISSING_INPUT) : parent);
  });
}

/** The step of an event whose input is `input`. */
export function toStep(g: EventGroup, input: InputOf): EventStep {
  const p = g.primary;
  const a = p.attributes ?? {};
  const v = p.verification;
  const verified = v.result === "verified";
  const startedAt = verified ? (a[ContextExtension.StartedAt] ?? null) : null;
  const emittedAt = verified ? (a[ContextExtension.EmittedAt] ?? null) : null;
  return {
    id: g.id,
    source: g.source,
    type: a.type ?? null,
    principal: v.principal ?? null,
    version: verified ? (a[ContextExtension.AgentVersion] ?? null) : null,
    keyid: v.keyid ?? null,
    verification: { result: v.result, ...(v.code !== undefined && { code: v.code }), ...(v.detail !== undefined && { detail: v.detail }) },
    inputs: a[ContextExtension.CausationId] !== undefined ? [a[ContextExtension.CausationId]] : [],
    correlationid: a[ContextExtension.CorrelationId] ?? null,
    time: a.time ?? null,
    startedAt,
    emittedAt,
    queueWait: queueWait(p, input),
    processing: processing(p),
    spent: signedSpend(p),
    appearances: g.records.map(({ stored, record }) => appearance(stored, record)),
  };
}

// The extensions of a record as the kit's readers take them (only the attributes it holds).
function asEvent(r: LineageRecord): Pick<CloudEvent, "extensions"> {
  return { extensions: r.attributes ?? {} };
}

/** What the run that produced `r` spent, from its signed extensions; null when it did not verify or they are malformed. */
function signedSpend(r: LineageRecord): Spend | null {
  if (r.verification.result !== "verified") return null;
  return spentOf(asEvent(r)) ?? null;
}

/** A flow's spend, counting each run (producer source, causationid) once; verified records only. */
function flowSpend(groups: readonly EventGroup[], nodes: readonly EventStep[]): FlowSpend {
  const verified = groups.filter((g) => g.primary.verification.result === "verified");
  // A run's outputs: verified events the agent runtime produced (it signs `flowdepth` into every output, never a
  // decision nor the gateway). The first output recorded speaks for the run.
  const runs = new Map<string, Spend>();
  const malformedSpend: string[] = [];
  for (const g of verified) {
    const a = g.primary.attributes ?? {};
    const cause = a[ContextExtension.CausationId];
    if (cause === undefined || a[ContextExtension.FlowDepth] === undefined) continue;
    const key = `${g.source}\u0000${cause}`;
    if (runs.has(key)) continue;
    const spent = signedSpend(g.primary);
    if (spent === null) malformedSpend.push(g.id);
    runs.set(key, spent ?? { cost: 0, tokens: 0 });
  }
  let cost = 0, tokens = 0;
  for (const s of runs.values()) {
    cost += s.cost;
    tokens += s.tokens;
  }
  // The flow's context (priority, budget): its admitted root when it verified, else its first verified run output.
  const root = verified.find((g) => g.primary.attributes?.[ContextExtension.CausationId] === undefined);
  const context = root ?? verified.find((g) => g.primary.attributes?.[ContextExtension.FlowDepth] !== undefined);
  const budget = context ? (budgetOf(asEvent(context.primary)) ?? null) : null;
  const priority = context ? (priorityOf(asEvent(context.primary)) ?? null) : null;
  const remaining: FlowBudget | null = budget === null ? null : {
    ...(budget.cost !== undefined && { cost: budget.cost - cost }),
    ...(budget.tokens !== undefined && { tokens: budget.tokens - tokens }),
    ...(budget.steps !== undefined && { steps: budget.steps - runs.size }),
  };
  const same = (a: FlowBudget | undefined, b: FlowBudget | null) =>
    a !== undefined && b !== null && a.cost === b.cost && a.tokens === b.tokens && a.steps === b.steps;
  const otherContext = context === undefined ? [] : verified
    .filter((g) => g !== context && g.primary.attributes?.[ContextExtension.FlowDepth] !== undefined)
    .filter((g) => priorityOf(asEvent(g.primary)) !== priority || !same(budgetOf(asEvent(g.primary)), budget))
    .map((g) => g.id);
  return {
    cost, tokens, runs: runs.size, priority, budget, remaining,
    contextFrom: context?.id ?? null,
    unverified: groups.length - verified.length,
    otherContext,
    refusedForBudget: nodes.filter((n) => n.appearances.some((x) => x.quarantine?.reason === QuarantineReason.BudgetExceeded)).length,
    malformedSpend,
  };
}

function appearance(stored: StoredRecord, record: LineageRecord): Appearance {
  const quarantined = header(record, QuarantineHeader.Reason) !== null;
  const seq = header(record, QuarantineHeader.OriginalSequence);
  return {
    index: stored.columns.index,
    stream: record.stream,
    seq: record.seq,
    subject: record.subject,
    verified: record.verification.result === "verified",
    ...(record.verification.code !== undefined && { code: record.verification.code }),
    ...(quarantined && {
      quarantine: {
        reason: header(record, QuarantineHeader.Reason),
        detail: header(record, QuarantineHeader.Detail),
        code: header(record, QuarantineHeader.Code),
        detectedBy: header(record, QuarantineHeader.DetectedBy),
        detectedAt: header(record, QuarantineHeader.DetectedAt),
        originalStream: header(record, QuarantineHeader.OriginalStream),
        originalSeq: seq !== null && /^\d+$/.test(seq) ? Number(seq) : null,
        originalSubject: header(record, QuarantineHeader.OriginalSubject),
      },
    }),
  };
}

/** A non-CloudEvents header of a record, matched case-insensitively (NATS header names are). */
export function header(record: LineageRecord, name: string): string | null {
  const exact = record.headers[name];
  if (exact !== undefined) return exact;
  const lower = name.toLowerCase();
  for (const [k, v] of Object.entries(record.headers)) if (k.toLowerCase() === lower) return v;
  return null;
}

// A signed millisecond time of a record: the value and its epoch ms, or why there is none.
type SignedTime = { readonly ms: number } | { readonly reason: string };

function signedTime(r: LineageRecord, name: string, whose: string): SignedTime {
  if (r.verification.result !== "verified") return { reason: `${whose} did not verify, so its ${name} is not a signed value` };
  const value = r.attributes?.[name];
  if (value === undefined) return { reason: `${whose} carries no signed ${name}` };
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? { ms } : { reason: `${whose} ${name} "${value}" is not an RFC 3339 time` };
}

function queueWait(r: LineageRecord, input: InputOf): Timing {
  const started = signedTime(r, ContextExtension.StartedAt, "the event");
  if ("reason" in started) return { ms: null, reason: started.reason };
  if (input === NO_INPUT) return { ms: null, reason: "the event has no input (causationid)" };
  if (input === MISSING_INPUT) return { ms: null, reason: "the event's input is not recorded (or not uniquely identified)" };
  const emitted = signedTime(input.primary, ContextExtension.EmittedAt, "the input");
  if ("reason" in emitted) return { ms: null, reason: emitted.reason };
  return { ms: started.ms - emitted.ms };
}

function processing(r: LineageRecord): Timing {
  const started = signedTime(r, ContextExtension.StartedAt, "the event");
  if ("reason" in started) return { ms: null, reason: started.reason };
  const emitted = signedTime(r, ContextExtension.EmittedAt, "the event");
  if ("reason" in emitted) return { ms: null, reason: emitted.reason };
  return { ms: emitted.ms - started.ms };
}

/** The event `id` (under `source` when given); throws not-found or ambiguous. */
export async function findEvent(store: LineageStore, id: string, source?: string): Promise<EventGroup> {
  const all = await eventsWithId(store, id);
  const groups = source === undefined ? all : all.filter((g) => g.source === source);
  if (groups.length === 0) {
    const under = source === undefined ? "" : ` under the source "${source}"`;
    const others = all.length > 0 ? ` (it is recorded under ${all.map((g) => `"${g.source}"`).join(", ")})` : "";
    throw new LineageQueryError(ErrorCode.LineageNotFound, `no recorded event has the id "${id}"${under}${others}`);
  }
  if (groups.length > 1) {
    const sources = groups.map((g) => g.source);
    throw new LineageQueryError(
      ErrorCode.LineageAmbiguousId,
      `the event id "${id}" is recorded under ${sources.length} sources (${sources.map((s) => `"${s}"`).join(", ")}); pass the source`,
      sources,
    );
  }
  return groups[0]!;
}

// The events whose id is exactly `id`: the store matches ids as its columns hold them (U+0000 as U+FFFD, see
// record.ts `columnText`), so its answer may include ids that differ from `id` only there.
async function eventsWithId(store: LineageStore, id: string): Promise<EventGroup[]> {
  return groupEvents(await store.byId(id)).filter((g) => g.id === id);
}

function causeOf(g: EventGroup): string | undefined {
  return g.primary.attributes?.[ContextExtension.CausationId];
}

// The input of `child` among `candidates` (events with the input's id): the only one, else the only one in the
// child's flow; undefined when there is none or no unique one.
function pickInput(candidates: readonly EventGroup[], child: EventGroup): EventGroup | undefined {
  if (candidates.length <= 1) return candidates[0];
  const flow = child.primary.attributes?.[ContextExtension.CorrelationId];
  const same = candidates.filter((c) => (c.primary.attributes?.[ContextExtension.CorrelationId] ?? flowIdOf(c)) === flow);
  return same.length === 1 ? same[0] : undefined;
}

function pickFrom(candidates: readonly EventGroup[] | undefined, child: EventGroup): EventGroup | undefined {
  return candidates === undefined ? undefined : (pickInput(candidates, child) ?? candidates[0]);
}

function inputOf(next: EventGroup | undefined, g: EventGroup, end: WhyEnd): InputOf {
  if (next !== undefined) return next;
  return causeOf(g) === undefined || end.kind === "root" ? NO_INPUT : MISSING_INPUT;
}

function indexById(groups: readonly EventGroup[]): Map<string, EventGroup[]> {
  const map = new Map<string, EventGroup[]>();
  for (const g of groups) {
    const list = map.get(g.id);
    if (list) list.push(g);
    else map.set(g.id, [g]);
  }
  return map;
}

function timelineEntry(step: EventStep): TimelineEntry {
  const basis = step.emittedAt !== null && Number.isFinite(Date.parse(step.emittedAt)) ? "emittedat"
    : step.time !== null && Number.isFinite(Date.parse(step.time)) ? "time" : null;
  return {
    at: basis === "emittedat" ? step.emittedAt : basis === "time" ? step.time : null,
    basis,
    id: step.id,
    source: step.source,
    type: step.type,
    principal: step.principal,
    version: step.version,
    streams: step.appearances.map((a) => a.stream),
  };
}

// Earliest first, timeless last; ties keep index order (Array.prototype.sort is stable).
function byTime(a: TimelineEntry, b: TimelineEntry): number {
  if (a.at === null || b.at === null) return (a.at === null ? 1 : 0) - (b.at === null ? 1 : 0);
  return Date.parse(a.at) - Date.parse(b.at);
}

function criticalPath(nodes: readonly EventStep[], timeline: readonly TimelineEntry[]): CriticalPath | null {
  const timed = timeline.filter((t) => t.at !== null);
  const last = timed[timed.length - 1];
  if (last === undefined) return null;
  const entries = new Map(timeline.map((t) => [`${t.source}\u0000${t.id}`, t]));
  const steps = new Map<string, EventStep>();
  for (const n of nodes) if (!steps.has(n.id)) steps.set(n.id, n);
  // Walk back from the last event through inputs inside the flow.
  const chain: TimelineEntry[] = [last];
  const seen = new Set([last.id]);
  for (let step = steps.get(last.id); step !== undefined;) {
    const input = step.inputs[0];
    const parent = input === undefined || seen.has(input) ? undefined : steps.get(input);
    const entry = parent && entries.get(`${parent.source}\u0000${parent.id}`);
    if (!parent || !entry || entry.at === null) break;
    chain.unshift(entry);
    seen.add(parent.id);
    step = parent;
  }
  const edges: PathEdge[] = [];
  for (let i = 1; i < chain.length; i++) {
    const from = chain[i - 1]!, to = chain[i]!;
    edges.push({ from: from.id, to: to.id, ms: Date.parse(to.at!) - Date.parse(from.at!), signed: from.basis === "emittedat" && to.basis === "emittedat" });
  }
  return {
    events: chain.map((e) => e.id),
    edges,
    totalMs: Date.parse(last.at!) - Date.parse(chain[0]!.at!),
    signed: chain.every((e) => e.basis === "emittedat"),
  };
}
