// Event context that travels from input to output: correlation and causation (Correlation extension),
// W3C trace context (traceparent / tracestate), expiry (Expiry Time extension), and event ids — UUIDv7 for
// new events, derived deterministically for outputs so a redelivered input republishes the same ids and
// JetStream's duplicate window absorbs them.
import { hash, randomFillSync } from "node:crypto";
import { DecodeError, ErrorCode } from "./errors.ts";
import { normalizeTime, type CloudEvent, type EventInit } from "./event.ts";

/** Extension names this module reads and writes. */
export const ContextExtension = {
  CorrelationId: "correlationid",
  CausationId: "causationid",
  TraceParent: "traceparent",
  TraceState: "tracestate",
  ExpiryTime: "expirytime",
  /**
   * When the producer began handling the input this event answers: RFC 3339 UTC with milliseconds. A String
   * extension, signed like every other: the verifiability digest keeps `time` only to the second, and lineage
   * reports queue wait (`startedat` − the input's `emittedat`) from signed values only.
   */
  StartedAt: "startedat",
  /** When the producer created this event, RFC 3339 UTC with milliseconds (String, signed); see `startedat`. */
  EmittedAt: "emittedat",
  /**
   * The implementation version (semver) of the agent that produced this event (String, signed): which build,
   * prompt or model tier did the work. Lineage shows it next to the agent; it does not travel to outputs.
   */
  AgentVersion: "agentversion",
  /**
   * The flow's causal depth (Integer, signed; carried as its decimal string, as binary mode carries every
   * extension): how many handler runs lie between this event and the event the gateway admitted, which has none
   * (absent = 0). Every output has its input's + 1, set by {@link outputEventInit} after the handler's extensions,
   * so no handler can lower it; the runtime's loop guard bounds it (loop-guards.ts).
   */
  FlowDepth: "flowdepth",
  /**
   * The revision of the version route tables (KV causeway_routes) the flow is routed by (Integer, as its decimal
   * string; signed, inherited by every output): stamped by the flow's first producer, so every producer routes the
   * flow's work in a capability to the same version (routing.ts).
   */
  RouteEpoch: "routeepoch",
  /**
   * The flow's priority (String, signed, inherited by every output): `critical`, `normal` or `background`; absent
   * is `normal`. Set by the gateway from the upstream's policy (infra/upstreams.json); it chooses the priority
   * lane the flow's work waits in (issue 16).
   */
  Priority: "priority",
  /**
   * The flow's budget (Integers as decimal strings, signed, inherited by every output; absent = unbounded): cost
   * units, model tokens and handler runs ("steps") the whole flow may spend. Set by the gateway from the upstream's
   * defaults and caps; the agent runtime checks them against the flow's ledger before a handler runs (budgets.ts).
   */
  BudgetCost: "budgetcost",
  BudgetTokens: "budgettokens",
  BudgetSteps: "budgetsteps",
  /**
   * What the handler run that produced this event spent (Integers as decimal strings, signed; not inherited): set
   * by the runtime from what the handler reported, never by the handler's own extensions. Every output of one run
   * carries the same figures; lineage counts each run once.
   */
  SpentCost: "spentcost",
  SpentTokens: "spenttokens",
  /**
   * On the outputs of a wrap-up run (String, signed; not inherited): the budget bound (`steps`, `cost`, `tokens`)
   * the flow could not pay for, so its handler did not run and the workflow's wrap-up path did. Set by the runtime,
   * never by a handler: with the quarantine entries, the record of every budget enforcement.
   */
  WrapUp: "wrapup",
  /**
   * What the flow has spent along its chain so far and not written to the flow ledger ("<steps>,<cost>,<tokens>",
   * signed; recomputed by every run, never a handler's): present only while the flow has never forked — every run
   * emitted at most one piece of work and no fact — so its budget can be checked without the ledger. The run that
   * forks it (or ends it) writes the carry to the ledger, and its outputs carry none (flow-ledger.ts).
   */
  FlowCarry: "flowcarry",
} as const;

/** The priorities a flow may have, highest first. */
export const Priority = { Critical: "critical", Normal: "normal", Background: "background" } as const;
export type PriorityValue = (typeof Priority)[keyof typeof Priority];
export const PRIORITIES: readonly PriorityValue[] = Object.freeze([Priority.Critical, Priority.Normal, Priority.Background]);

/** The flow's priority `event` carries: `normal` when absent; undefined when it is none of {@link PRIORITIES}. */
export function priorityOf(event: Pick<CloudEvent, "extensions">): PriorityValue | undefined {
  const v = event.extensions[ContextExtension.Priority];
  if (v === undefined) return Priority.Normal;
  return PRIORITIES.find((p) => p === v);
}

/** A flow's budget; an absent bound is unbounded. */
export interface FlowBudget {
  readonly cost?: number;
  readonly tokens?: number;
  readonly steps?: number;
}

/** What one handler run spent. */
export interface Spend {
  readonly cost: number;
  readonly tokens: number;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

// Random bytes for ids come from a pool refilled 4 KiB at a time: one call into OpenSSL per ~250 ids instead of
// one per id (that call showed up at 5% of an agent hop in profiles). Still cryptographically random.
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let poolOffset = POOL_SIZE;

function randomSlice(n: number): Buffer {
  if (poolOffset + n > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const out = Buffer.from(pool.subarray(poolOffset, poolOffset + n));
  poolOffset += n;
  return out;
}

/** A new UUIDv7: 48-bit Unix milliseconds, then random bits (RFC 9562), so ids sort by creation time. */
export function uuidv7(now = Date.now()): string {
  const b = randomSlice(16);
  b.writeUIntBE(now, 0, 6);
  b[6] = (b[6]! & 0x0f) | 0x70;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return formatUuid(b);
}

/**
 * The id of output number `index` that `principal` emits for `input`: a UUIDv8 (RFC 9562, custom) built
 * from SHA-256 over (input source, input id, principal, index). The input's source is included because
 * CloudEvents ids are unique only per source.
 */
export function deriveEventId(input: Pick<CloudEvent, "id" | "source">, principal: string, index: number): string {
  if (!Number.isSafeInteger(index) || index < 0) throw new RangeError("output index must be a non-negative integer");
  const b = hash("sha256", `causeway/output-id/v1\0${input.source}\0${input.id}\0${principal}\0${index}`, "buffer").subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x80;
  b[8] = (b[8]! & 0x3f) | 0x80;
  return formatUuid(b);
}

function formatUuid(b: Buffer): string {
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

/** A parsed W3C traceparent. */
export interface TraceParent {
  readonly version: string;
  readonly traceId: string;
  readonly spanId: string;
  readonly flags: string;
}

/** Parses a traceparent; undefined when absent or malformed (a bad trace header never fails an event). */
export function parseTraceparent(value: unknown): TraceParent | undefined {
  if (typeof value !== "string") return undefined;
  const m = TRACEPARENT.exec(value);
  if (!m || m[1] === "ff" || m[2] === ZERO_TRACE || m[3] === ZERO_SPAN) return undefined;
  return { version: m[1]!, traceId: m[2]!, spanId: m[3]!, flags: m[4]! };
}

/** A traceparent for a new root span (sampled). */
export function newTraceparent(): string {
  return `00-${randomSlice(16).toString("hex")}-${randomSlice(8).toString("hex")}-01`;
}

/** A traceparent continuing `parent`'s trace with a new span id (or a new trace when there is none). */
export function childTraceparent(parent: unknown): string {
  const p = parseTraceparent(parent);
  if (!p) return newTraceparent();
  return `00-${p.traceId}-${randomSlice(8).toString("hex")}-${p.flags}`;
}

/** The longest flow id (report.released allows 200 characters for the request id it is). */
const MAX_FLOW_ID = 200;
/** Characters of a flow id's (source, id) tag: 96 bits of SHA-256, base64url. */
const FLOW_TAG = 16;

/**
 * The id of the flow an event starts: its id, then a tag over (source, id) — `<id>.<tag>`, the id shortened to
 * fit 200 characters. CloudEvents ids are unique per `source` only, so two upstreams (or two sources) using the
 * same id must not share a flow (issue 12, finding 10): not its correlation, its report, nor its approvals.
 */
export function flowIdOf(event: Pick<CloudEvent, "source" | "id">): string {
  const tag = hash("sha256", `causeway/flow/v1\0${event.source}\0${event.id}`, "base64url").slice(0, FLOW_TAG);
  return `${event.id.slice(0, MAX_FLOW_ID - FLOW_TAG - 1)}.${tag}`;
}

/** The correlation id of a flow: the event's own, or {@link flowIdOf} the event when it starts the flow. */
export function correlationIdOf(event: Pick<CloudEvent, "source" | "id" | "extensions">): string {
  const c = event.extensions[ContextExtension.CorrelationId];
  return typeof c === "string" && c.length > 0 ? c : flowIdOf(event);
}

/** True when the event carries an `expirytime` at or before `now`. A malformed expiry counts as expired. */
export function isExpired(event: CloudEvent, now = Date.now()): boolean {
  const e = event.extensions[ContextExtension.ExpiryTime];
  if (e === undefined) return false;
  try {
    return Date.parse(normalizeTime(String(e), ContextExtension.ExpiryTime)) <= now;
  } catch {
    return true;
  }
}

const COUNT = /^(0|[1-9][0-9]{0,15})$/;

/**
 * The non-negative integer extension `name` of `event`: absent when it is absent, undefined when it is anything but
 * an integer from 0 to 2^53 − 1, as a number or its decimal string (-5, 1.5, "07", 2^60, "abc" are refused, never
 * read as some other number).
 */
export function countExtension(event: Pick<CloudEvent, "extensions">, name: string): number | "absent" | undefined {
  const v = event.extensions[name];
  if (v === undefined) return "absent";
  const n = typeof v === "number" ? v : typeof v === "string" && COUNT.test(v) ? Number(v) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/**
 * The flow budget `event` carries ({} when it carries none); undefined when one of its bounds is malformed
 * (see {@link countExtension}).
 */
export function budgetOf(event: Pick<CloudEvent, "extensions">): FlowBudget | undefined {
  const cost = countExtension(event, ContextExtension.BudgetCost);
  const tokens = countExtension(event, ContextExtension.BudgetTokens);
  const steps = countExtension(event, ContextExtension.BudgetSteps);
  if (cost === undefined || tokens === undefined || steps === undefined) return undefined;
  return { ...(cost !== "absent" && { cost }), ...(tokens !== "absent" && { tokens }), ...(steps !== "absent" && { steps }) };
}

/** True when `budget` bounds anything. */
export function isBounded(budget: FlowBudget): boolean {
  return budget.cost !== undefined || budget.tokens !== undefined || budget.steps !== undefined;
}

/** What the run that produced `event` spent (zeros when it says nothing); undefined when malformed. */
export function spentOf(event: Pick<CloudEvent, "extensions">): Spend | undefined {
  const cost = countExtension(event, ContextExtension.SpentCost);
  const tokens = countExtension(event, ContextExtension.SpentTokens);
  if (cost === undefined || tokens === undefined) return undefined;
  return { cost: cost === "absent" ? 0 : cost, tokens: tokens === "absent" ? 0 : tokens };
}

/**
 * The flow context `event` carries that whatever it causes inherits (its priority, budget, deadline, route epoch
 * and causal depth), as the strings binary mode carries: what a {@link Cause} keeps for output emitted later, outside
 * a handler run (a deadline), so that output is in the same flow as any other.
 */
export function flowContextOf(event: Pick<CloudEvent, "extensions">): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of [...INHERITED, ContextExtension.FlowDepth, ContextExtension.FlowCarry]) {
    const v = event.extensions[name];
    if (v !== undefined) out[name] = String(v);
  }
  return out;
}

const CARRY = /^(0|[1-9][0-9]{0,15}),(0|[1-9][0-9]{0,15}),(0|[1-9][0-9]{0,15})$/;

/** What a flow spent along its unforked chain (`flowcarry`): absent, or undefined when malformed. */
export function carryOf(event: Pick<CloudEvent, "extensions">): { steps: number; cost: number; tokens: number } | "absent" | undefined {
  const v = event.extensions[ContextExtension.FlowCarry];
  if (v === undefined) return "absent";
  const m = typeof v === "string" ? CARRY.exec(v) : null;
  if (m === null) return undefined;
  const [steps, cost, tokens] = [Number(m[1]), Number(m[2]), Number(m[3])];
  return Number.isSafeInteger(steps) && Number.isSafeInteger(cost) && Number.isSafeInteger(tokens) ? { steps, cost, tokens } : undefined;
}

/** A `flowcarry` value. */
function formatCarry(c: { readonly steps: number; readonly cost: number; readonly tokens: number }): string {
  return `${c.steps},${c.cost},${c.tokens}`;
}

/** The context extensions every output inherits from its input, unchanged. */
const INHERITED = [
  ContextExtension.RouteEpoch, ContextExtension.ExpiryTime, ContextExtension.Priority,
  ContextExtension.BudgetCost, ContextExtension.BudgetTokens, ContextExtension.BudgetSteps,
] as const;

/**
 * The causal depth `event` carries: 0 when absent (the gateway's root event), otherwise its `flowdepth` when that
 * is a non-negative integer no larger than 2^53 − 1, as a number or its decimal string. Undefined for anything
 * else (-5, 1.5, "07", 2^60, "abc"): a malformed depth is refused, never read as some other number — reading it
 * as 0 would let a producer restart the count.
 */
export function flowDepthOf(event: Pick<CloudEvent, "extensions">): number | undefined {
  const depth = countExtension(event, ContextExtension.FlowDepth);
  return depth === "absent" ? 0 : depth;
}

/** An `expirytime` value `ms` milliseconds from `now`. */
export function expiryIn(ms: number, now = Date.now()): string {
  return new Date(now + ms).toISOString();
}

/** What the producer of an output says about it; context comes from the input. */
export interface OutputSpec {
  type: string;
  data?: EventInit["data"];
  datacontenttype?: string;
  dataschema?: string;
  subject?: string;
  /** Extra extensions (signed like every other). */
  extensions?: EventInit["extensions"];
  /** When handling of the input began (RFC 3339 with milliseconds); becomes the signed `startedat`. */
  startedAt?: string;
  /** What the run spent; becomes the signed `spentcost` / `spenttokens` (omitted when both are 0). */
  spent?: Spend;
  /** The flow's unforked chain's spend after this run; becomes the signed `flowcarry` (omitted: none). */
  carry?: { readonly steps: number; readonly cost: number; readonly tokens: number };
}

/**
 * The attributes of output `index` that `principal` emits in response to `input`: a derived id,
 * `causationid` = input id, the input's `correlationid`, the trace continued, `expirytime` inherited and
 * `flowdepth` one more than the input's. The context is set after `spec.extensions`: a producer cannot move it.
 * DecodeError CW_ERR_INVALID_ATTRIBUTE when the input's `flowdepth` is malformed (see {@link flowDepthOf}).
 */
export function outputEventInit(input: CloudEvent, principal: string, index: number, spec: OutputSpec, now = new Date()): EventInit {
  const ext = input.extensions;
  const depth = flowDepthOf(input);
  if (depth === undefined) throw new DecodeError(ErrorCode.InvalidAttribute, `flowdepth ${JSON.stringify(ext[ContextExtension.FlowDepth])} is not a non-negative integer`, ContextExtension.FlowDepth);
  const time = now.toISOString();
  const extensions: NonNullable<EventInit["extensions"]> = {
    ...spec.extensions,
    ...(spec.startedAt !== undefined && { [ContextExtension.StartedAt]: spec.startedAt }),
    [ContextExtension.EmittedAt]: time,
    [ContextExtension.CorrelationId]: correlationIdOf(input),
    [ContextExtension.CausationId]: input.id,
    [ContextExtension.TraceParent]: childTraceparent(ext[ContextExtension.TraceParent]),
    [ContextExtension.FlowDepth]: String(depth + 1),
  };
  if (typeof ext[ContextExtension.TraceState] === "string") extensions[ContextExtension.TraceState] = ext[ContextExtension.TraceState];
  // Inherited as the input has them, and never as a handler set them: a handler cannot move its flow's budget,
  // priority, routing or deadline, nor say what it spent.
  for (const name of INHERITED) {
    if (ext[name] !== undefined) extensions[name] = String(ext[name]);
    else if (extensions[name] !== undefined) delete extensions[name];
  }
  if (spec.spent !== undefined && (spec.spent.cost > 0 || spec.spent.tokens > 0)) {
    extensions[ContextExtension.SpentCost] = String(spec.spent.cost);
    extensions[ContextExtension.SpentTokens] = String(spec.spent.tokens);
  } else {
    if (extensions[ContextExtension.SpentCost] !== undefined) delete extensions[ContextExtension.SpentCost];
    if (extensions[ContextExtension.SpentTokens] !== undefined) delete extensions[ContextExtension.SpentTokens];
  }
  if (spec.carry !== undefined) extensions[ContextExtension.FlowCarry] = formatCarry(spec.carry);
  else if (extensions[ContextExtension.FlowCarry] !== undefined) delete extensions[ContextExtension.FlowCarry];
  return {
    id: deriveEventId(input, principal, index),
    source: principalSource(principal),
    type: spec.type,
    time,
    datacontenttype: spec.datacontenttype ?? "application/json",
    ...(spec.dataschema !== undefined && { dataschema: spec.dataschema }),
    ...(spec.subject !== undefined && { subject: spec.subject }),
    extensions,
    data: spec.data,
  };
}

/** The `source` of events a mesh principal produces. */
export function principalSource(principal: string): string {
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(principal)) {
    throw new DecodeError(ErrorCode.InvalidAttribute, `principal "${principal}" must be lowercase [a-z0-9_-]`, "source");
  }
  return `causeway://${principal}`;
}
