// The flow ledger (issue 16): what each flow's handler runs spent, cluster-wide, in KV causeway_flow_ledger. It is
// what the agent runtime checks a flow's budget (the signed `budgetcost`, `budgettokens`, `budgetsteps`) and the
// loop guards' count of events per capability against, before a handler runs.
//
// One key per (capability, flow): `<capability>_v<major>.<sha256 of the flow id>`, in the capability's own key space
// (ops/permissions.ts), so a compromised agent can misstate only what its own capability ran — which it could by
// lying about its spend anyway — and never erase another capability's charges. Its value is
// `{"runs": {"<tag>": [cost, tokens]}}`, one entry per admitted input (a 96-bit tag of its source and id).
//
// Race-free under replicas, redelivery and fan-out:
//  - an input already in its capability's record (a redelivery, a retry after a failed handler, a replica that
//    got it too) is admitted again without a second charge;
//  - a new run is admitted by a compare-and-set over the whole flow, not only its own key: the write carries the
//    last sequence of `$KV.<bucket>.*.<flow>` it decided on (JetStream's Nats-Expected-Last-Subject-Sequence with
//    Nats-Expected-Last-Subject-Sequence-Subject), so two capabilities (or replicas) admitting the flow's last step
//    at once cannot both get it: the second write fails, re-reads and decides on what is there now.
// A flow that has never forked is not in the ledger at all: its spend travels in the signed `flowcarry` of its one
// event in flight (admitUnforked checks it), and the run that forks or ends it writes the chain's spend (flush).
// A run is charged its reservation (the agent's declared fixed cost) when admitted, and settled to what the
// handler reported once it ran. A flow without a budget is charged only when the loop guards' count is on (then
// only its own key is compared); with neither, the ledger is not touched at all.
import { hash } from "node:crypto";
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { KvBucket, openMeshBucket } from "./buckets.ts";
import { isBounded, type FlowBudget, type Spend } from "./context.ts";
import { CausewayError, ErrorCode } from "./errors.ts";
import { isWrongRevision } from "./jetstream-errors.ts";
import type { StreamPublisher } from "./stream-publisher.ts";
import { capabilityKeyPrefix } from "./kv-keys.ts";

/** What a flow's runs spent so far, every capability together. */
export interface FlowTotals {
  readonly steps: number;
  readonly cost: number;
  readonly tokens: number;
}

/** Which bound an input was refused on. */
export type LedgerBound = "steps" | "cost" | "tokens" | "maxEventsPerCapability";

/** What {@link FlowLedger.admit} decided. */
export type LedgerAdmission =
  | {
    readonly admitted: true;
    /** The flow's spend before this run. */
    readonly spent: FlowTotals;
    /** What the budget leaves after this run's reservation (only the bounds the budget has). */
    readonly remaining: FlowBudget;
  }
  | { readonly admitted: false; readonly bound: LedgerBound; readonly detail: string };

/** What one admission asks for. */
export interface AdmitRequest {
  /** The flow's budget, from its signed extensions ({} when unbounded). */
  readonly budget: FlowBudget;
  /** What the run reserves: the agent's declared fixed cost (zeros when it declares none). */
  readonly reserve: Spend;
  /** The loop guards' bound on this capability's inputs per flow; 0: none. */
  readonly maxRuns: number;
  /** The input starts the flow's first run (its causal depth is 0): no record exists yet, so none is read first. */
  readonly first?: boolean;
}

/** One capability's view of the flow ledger. */
export interface FlowLedger {
  /**
   * Admits `input` of `flow` when it was admitted before, or when running it keeps the flow within its budget and
   * this capability within `maxRuns`; charges its reservation. Throws when the bucket cannot be read or written
   * (the input is retried).
   */
  admit(flow: string, input: InputRef, req: AdmitRequest): Promise<LedgerAdmission>;
  /** Records what the admitted run of `input` spent, in place of its reservation. */
  settle(flow: string, input: InputRef, spent: Spend): Promise<void>;
  /**
   * Writes what an unforked chain spent up to and including the run of `input` (its carry and its own run), where
   * that run forks or ends the flow: the first write of the flow, so the runs after it find it. Idempotent: a
   * redelivery writes the same entry.
   */
  flush(flow: string, input: InputRef, spent: FlowTotals): Promise<void>;
  /** The flow's spend so far, every capability together, read now. */
  totals(flow: string): Promise<FlowTotals>;
}

/** An input as the ledger knows it: its CloudEvents source and id. */
export interface InputRef {
  readonly source: string;
  readonly id: string;
}

/** One capability's record of one flow. */
interface CapRecord {
  /** The stream sequence of the record (its KV revision). */
  readonly seq: number;
  /** Per admitted input: [cost, tokens], or [cost, tokens, steps] when it wrote an unforked chain's carry with its own run. */
  readonly runs: Readonly<Record<string, readonly [number, number] | readonly [number, number, number]>>;
}

/** A flow as this process last read or wrote it. */
interface FlowState {
  /**
   * The last sequence of any record of the flow (delete markers included): the compare-and-set's expectation. NaN
   * after a write compared against its own key only, which says nothing of the other records: read them first.
   */
  readonly maxSeq: number;
  /** By capability key prefix; a capability with no record (or a deleted one) is absent. */
  readonly records: ReadonlyMap<string, CapRecord>;
}

/** How many flows one process remembers; past it, it starts over. */
const CACHE_LIMIT = 4096;
/** Compare-and-set attempts before giving up for this delivery (only writers racing on one flow conflict). */
const ATTEMPTS = 8;
const EXPECTED_SEQ = "Nats-Expected-Last-Subject-Sequence";
const EXPECTED_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject";
/** A flow that spent nothing: no step, no cost, no tokens. */
export const NO_TOTALS: FlowTotals = Object.freeze({ steps: 0, cost: 0, tokens: 0 });

/** The tag of an input in a record: 96 bits of SHA-256 over its source and id. */
function tagOf(input: InputRef): string {
  return hash("sha256", `${input.source}\0${input.id}`, "base64url").slice(0, 16);
}

/** The flow's key token: SHA-256 of the flow id (any characters, any length, one token). */
function flowToken(flow: string): string {
  return hash("sha256", flow, "hex");
}

function sum(state: FlowState): FlowTotals {
  let steps = 0, cost = 0, tokens = 0;
  for (const r of state.records.values()) {
    for (const [c, t, n] of Object.values(r.runs)) {
      steps += n ?? 1;
      cost += c;
      tokens += t;
    }
  }
  return steps === 0 ? NO_TOTALS : { steps, cost, tokens };
}

/**
 * The first bound running one more step at `reserve` would pass, or undefined. A bound already reached stops even a
 * run that reserves nothing: its cost is known only once it ran.
 */
function overBudget(budget: FlowBudget, spent: FlowTotals, reserve: Spend): { bound: LedgerBound; detail: string } | undefined {
  if (budget.steps !== undefined && spent.steps + 1 > budget.steps) return { bound: "steps", detail: `the flow has run ${spent.steps} of its ${budget.steps} steps` };
  for (const [bound, unit] of [["cost", "cost units"], ["tokens", "tokens"]] as const) {
    const limit = budget[bound];
    if (limit === undefined) continue;
    if (spent[bound] + reserve[bound] > limit || (limit > 0 && spent[bound] >= limit)) {
      return { bound, detail: `the flow has spent ${spent[bound]} of its ${limit} ${unit}${reserve[bound] > 0 ? ` and this run reserves ${reserve[bound]}` : ""}` };
    }
  }
  return undefined;
}

/**
 * The ledger's decision on a run of an unforked chain, whose spend so far (`spent`, the signed `flowcarry`) is all
 * the flow has spent: no other run can be running, so no read is needed.
 */
export function admitUnforked(budget: FlowBudget, spent: FlowTotals, reserve: Spend): LedgerAdmission {
  const over = overBudget(budget, spent, reserve);
  if (over) return { admitted: false, ...over };
  const after = { steps: spent.steps + 1, cost: spent.cost + reserve.cost, tokens: spent.tokens + reserve.tokens };
  return { admitted: true, spent, remaining: remainingOf(budget, after) };
}

function refusedOver(over: { bound: LedgerBound; detail: string } | undefined): LedgerAdmission | undefined {
  return over && { admitted: false, ...over };
}

function remainingOf(budget: FlowBudget, spent: FlowTotals): FlowBudget {
  return {
    ...(budget.steps !== undefined && { steps: Math.max(0, budget.steps - spent.steps) }),
    ...(budget.cost !== undefined && { cost: Math.max(0, budget.cost - spent.cost) }),
    ...(budget.tokens !== undefined && { tokens: Math.max(0, budget.tokens - spent.tokens) }),
  };
}

function parseRecord(seq: number, data: Uint8Array, key: string): CapRecord {
  const doc = JSON.parse(Buffer.from(data).toString("utf8")) as { runs?: unknown };
  const runs = doc.runs;
  if (typeof runs !== "object" || runs === null) throw new CausewayError(ErrorCode.Internal, `flow ledger record ${key} has no runs`);
  for (const v of Object.values(runs)) {
    if (!Array.isArray(v) || (v.length !== 2 && v.length !== 3) || !v.every((n) => Number.isSafeInteger(n) && (n as number) >= 0)) {
      throw new CausewayError(ErrorCode.Internal, `flow ledger record ${key} has a malformed run`);
    }
  }
  return { seq, runs: runs as CapRecord["runs"] };
}

/**
 * Opens `capability` v`major`'s view of the ledger in the existing bucket (never creates it). Writes go through
 * `publisher` when given (the agent's own: a third of js.publish's client CPU), else through nats.js.
 */
export async function openFlowLedger(nc: NatsConnection, capability: string, major: number, opts: { bucket?: string; publisher?: StreamPublisher } = {}): Promise<FlowLedger> {
  const bucket = opts.bucket ?? KvBucket.FlowLedger;
  await openMeshBucket(nc, bucket, "the flow ledger");
  const js: JetStreamClient = jetstream(nc);
  const jsm: JetStreamManager = await jetstreamManager(nc);
  const stream = `KV_${bucket}`;
  const prefix = capabilityKeyPrefix(capability, major);
  const known = new Map<string, FlowState>();
  // One admission or settlement per flow at a time in this process: a fan-out's inputs handled here at once take
  // turns on what the last one wrote instead of racing each other (and re-reading) on the server; only other
  // processes' writes can make a compare-and-set lose.
  const turns = new Map<string, Promise<unknown>>();
  const inTurn = <T>(token: string, work: () => Promise<T>): Promise<T> => {
    const previous = turns.get(token) ?? Promise.resolve();
    const mine = previous.then(work, work);
    const settled = mine.then(() => undefined, () => undefined);
    turns.set(token, settled);
    void settled.then(() => {
      if (turns.get(token) === settled) turns.delete(token);
    });
    return mine;
  };
  const remember = (token: string, state: FlowState) => {
    if (known.size >= CACHE_LIMIT && !known.has(token)) known.clear();
    known.set(token, state);
  };

  /** Every capability's record of the flow, in one request (the last message of each `$KV.<bucket>.*.<flow>`). */
  const readFlow = async (token: string): Promise<FlowState> => {
    const records = new Map<string, CapRecord>();
    let maxSeq = 0;
    const iter = await jsm.direct.getLastMessagesFor(stream, { multi_last: [`$KV.${bucket}.*.${token}`] });
    for await (const m of iter) {
      maxSeq = Math.max(maxSeq, m.seq);
      const op = m.header?.get("KV-Operation");
      if (op === "DEL" || op === "PURGE") continue; // an operator reset that capability's record
      const key = m.subject.slice(`$KV.${bucket}.`.length);
      records.set(key.slice(0, key.indexOf(".")), parseRecord(m.seq, m.data, key));
    }
    return { maxSeq, records };
  };

  /** Writes this capability's record of the flow, compared against the whole flow's last sequence or its own. */
  const write = async (token: string, runs: CapRecord["runs"], expect: { seq: number; flowWide: boolean }): Promise<number> => {
    const h = natsHeaders();
    h.set(EXPECTED_SEQ, String(expect.seq));
    if (expect.flowWide) h.set(EXPECTED_SEQ_SUBJECT, `$KV.${bucket}.*.${token}`);
    const subject = `$KV.${bucket}.${prefix}.${token}`, body = JSON.stringify({ runs });
    return (await (opts.publisher ? opts.publisher.publish(subject, body, { headers: h }) : js.publish(subject, body, { headers: h }))).seq;
  };

  return {
    admit(flow, input, req) {
      const token = flowToken(flow);
      return inTurn(token, () => admitNow(token, flow, input, req));
    },

    settle(flow, input, spent) {
      const token = flowToken(flow);
      return inTurn(token, () => settleNow(token, flow, input, [spent.cost, spent.tokens]));
    },

    flush(flow, input, spent) {
      const token = flowToken(flow);
      return inTurn(token, () => settleNow(token, flow, input, [spent.cost, spent.tokens, spent.steps], true));
    },

    async totals(flow) {
      return sum(await readFlow(flowToken(flow)));
    },
  };

  async function admitNow(token: string, flow: string, input: InputRef, req: AdmitRequest): Promise<LedgerAdmission> {
    const tag = tagOf(input);
    const budgeted = isBounded(req.budget);
    // First run of the flow: nothing to read, the write expects nothing there.
    let state: FlowState | undefined = known.get(token) ?? (req.first ? { maxSeq: 0, records: new Map() } : undefined);
    // A refusal is decided on what the ledger holds now, never on a remembered state: a settlement (a run that
    // spent less than it reserved) or an operator's reset may have lowered it since, which no write of ours sees.
    let fresh = false;
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      if (state === undefined || (budgeted && Number.isNaN(state.maxSeq))) {
        state = await readFlow(token);
        fresh = true;
      }
      const own = state.records.get(prefix);
      const spent = sum(state);
      if (own?.runs[tag] !== undefined) return { admitted: true, spent, remaining: remainingOf(req.budget, spent) };
      const ownRuns = own === undefined ? 0 : Object.keys(own.runs).length;
      const refusal: LedgerAdmission | undefined = req.maxRuns > 0 && ownRuns >= req.maxRuns
        ? { admitted: false, bound: "maxEventsPerCapability", detail: `already had ${ownRuns} events handled by ${capability}.v${major}` }
        : budgeted ? refusedOver(overBudget(req.budget, spent, req.reserve)) : undefined;
      if (refusal !== undefined) {
        if (fresh) return refusal;
        state = undefined;
        continue;
      }
      const runs = { ...own?.runs, [tag]: [req.reserve.cost, req.reserve.tokens] as const };
      try {
        // With a budget the whole flow is compared (no two runs take its last step); for the loop count alone, this key.
        const seq = await write(token, runs, budgeted ? { seq: state.maxSeq, flowWide: true } : { seq: own?.seq ?? 0, flowWide: false });
        remember(token, { maxSeq: budgeted ? seq : NaN, records: new Map(state.records).set(prefix, { seq, runs }) });
        const after = { steps: spent.steps + 1, cost: spent.cost + req.reserve.cost, tokens: spent.tokens + req.reserve.tokens };
        return { admitted: true, spent, remaining: remainingOf(req.budget, after) };
      } catch (err) {
        // Anything but a lost compare-and-set fails this delivery (retried); a lost one: decide on what is there now.
        if (!isWrongRevision(err)) throw err;
        state = undefined;
      }
    }
    // Writers racing on one flow: a contention that passes, retried shortly like any transient fault.
    throw new CausewayError(ErrorCode.Unavailable, `the ledger of flow ${flow} kept changing under ${ATTEMPTS} attempts by ${prefix}`);
  }

  /** Sets the entry of `input` to `entry`; `create`: also when there is none yet (a flush), else only an admitted one. */
  async function settleNow(token: string, flow: string, input: InputRef, entry: readonly [number, number] | readonly [number, number, number], create = false): Promise<void> {
    const tag = tagOf(input);
    let state = known.get(token);
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      state ??= await readFlow(token);
      const own = state.records.get(prefix);
      const current = own?.runs[tag];
      // Not admitted here (an operator reset the record since): nothing to settle against.
      if (!create && current === undefined) return;
      if (current !== undefined && current.length === entry.length && current.every((n, i) => n === entry[i])) return;
      const runs = { ...own?.runs, [tag]: entry };
      try {
        const seq = await write(token, runs, { seq: own?.seq ?? 0, flowWide: false });
        remember(token, { maxSeq: NaN, records: new Map(state.records).set(prefix, { seq, runs }) });
        return;
      } catch (err) {
        if (!isWrongRevision(err)) throw err;
        state = undefined;
      }
    }
    throw new CausewayError(ErrorCode.Unavailable, `the ledger of flow ${flow} kept changing under ${ATTEMPTS} attempts to settle a run of ${prefix}`);
  }
}
