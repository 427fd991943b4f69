// The contract agents are written against: a definition (what the agent serves, accepts and emits, and its
// handler) and the context a handler receives. The runtime in agent.ts supplies everything else: the
// consume → verify → dedupe → expiry → schema → policy → handle → publish → ack pipeline, concurrency,
// heartbeats, drain, micro-service registration, spans and logs.
import type { Logger } from "pino";
import { controlEndpoint, type ControlEndpoint } from "./control.ts";
import type { FlowBudget, Spend } from "./context.ts";
import type { CloudEvent, ExtensionValue } from "./event.ts";
import type { FlowTotals, LedgerBound } from "./flow-ledger.ts";
import type { PressureAccessor } from "./pressure.ts";
import type { CausewayError, QuarantineReasonValue } from "./errors.ts";
import type { MeshSubjects } from "./subjects.ts";
import type { Verification } from "./verifiability.ts";

/** What an agent is and does. */
export interface AgentDefinition<In = unknown> {
  /** The principal the agent runs as (infra/principals.json): its NATS identity and its signing key. */
  principal: string;
  /** The capability it serves, e.g. `research`, and the major version, e.g. 1 → `mesh.cap.research.v1`. */
  capability: string;
  major: number;
  /** Version of this implementation (semver), shown by `nats micro ls`. */
  version: string;
  description: string;
  /**
   * Input event types it accepts, each with the `dataschema` ($id) it was written against. It reads that version
   * and every older minor of the same major (`…/1.1.0` accepts 1.0.x and 1.1.x events); each event's data is
   * validated against its own dataschema. Another major or a newer minor is quarantined as `unsupported_version`
   * (services/kit/schema-versions.ts, docs/agents.md).
   */
  accepts: Readonly<Record<string, string>>;
  /**
   * Facts it reacts to, besides the work addressed to its capability: per fact type, the dataschema it was
   * written against (read like `accepts`: that version or an older minor of its major). Each arrives through a
   * durable of its own on MESH_EVT, `<prefix>.evt.<type>.v<major>`, which principals.json declares (`subscribes`:
   * `"<type>.v<major>"`), so every subscribing agent gets each fact once and its replicas share it; the producer
   * never changes. The handler gets facts like any input (`input.event.type` tells them apart). Default: none.
   */
  subscribes?: Readonly<Record<string, string>>;
  /**
   * Output event types it may emit, each with its `dataschema`, or several versions of it during a migration
   * (`["…/1.1.0", "…/2.0.0"]`; {@link Emit.dataschema} chooses). Outputs of other types are refused.
   */
  emits: Readonly<Record<string, string | readonly string[]>>;
  /**
   * Pipeline step 6 beyond the trust store's address check: return a verdict to quarantine the input
   * (e.g. `low_confidence`, `missing_evidence`) instead of handling it. Runs after schema validation.
   */
  policy?: (input: HandlerInput<In>) => PolicyVerdict | undefined;
  /** Does the work; returns the events to emit (possibly none). Throw {@link RetryableError} to retry later. */
  handler: (input: HandlerInput<In>, ctx: HandlerContext) => Promise<readonly Emit[]> | readonly Emit[];
  /**
   * The handler has effects outside the mesh (sends mail, charges a card): a cluster-wide processed-set
   * keeps a replay after JetStream's duplicate window from running it twice. Default false.
   */
  sideEffects?: boolean;
  /** Handlers running at once in this process, per durable it consumes (its capability's, each subscription's). Default 8. */
  concurrency?: number;
  /**
   * What one run costs, when the handler's cost is fixed (a deterministic handler): reserved against the flow's
   * budget before the handler runs, so a run the budget cannot pay for never starts. What the handler reports with
   * {@link HandlerContext.spend} replaces it. Default: nothing (the run still takes one of the flow's steps).
   */
  cost?: Partial<Spend>;
  /**
   * The workflow's wrap-up path when the flow's budget cannot pay for this input (e.g. the reporter publishes the
   * report with what it has): runs instead of the handler, charges nothing, and its outputs are published like the
   * handler's. Without it, such an input is quarantined as `budget_exceeded`. The loop guards are never wrapped up.
   */
  wrapUp?: (input: HandlerInput<In>, ctx: HandlerContext, over: BudgetOver) => Promise<readonly Emit[]> | readonly Emit[];
  /**
   * The capability is critical: work arrives only after the coordinator granted it, and the runtime claims the
   * grant's lease before the handler and consumes it after, so the handler runs at most once per grant even
   * under redelivery or duplicate replicas. The handler gets the fencing token in `ctx.lease`. Default false.
   */
  critical?: boolean;
}

/** The verified, validated input of one handler run. */
export interface HandlerInput<In = unknown> {
  /** The verified event (strict mode: only signed extensions). */
  readonly event: CloudEvent;
  /** The event data, parsed once and validated against the accepted schema. */
  readonly data: In;
  readonly verification: Verification;
  /** The principal that signed the input (from the trust store). */
  readonly signer: string;
}

/** What the runtime gives a handler besides its input. */
export interface HandlerContext {
  /** A child logger carrying event id, correlation id, trace id and span id. */
  readonly log: Logger;
  /** Subject builders for the mesh's prefix: `ctx.subjects.capability("verify", 1)`, `ctx.subjects.event("report.published", 1)`. */
  readonly subjects: MeshSubjects;
  /** Delivery attempt of this input, from 1. */
  readonly deliveryCount: number;
  /** Aborted when the agent shuts down: long handlers should stop and let the input be redelivered. */
  readonly signal: AbortSignal;
  /** Tells JetStream the handler is still working, so the input is not redelivered (sent automatically too). */
  working(): void;
  /** Critical agents only: the lease this run holds; pass `revision` as the fencing token to external systems. */
  readonly lease?: { readonly key: string; readonly revision: number };
  /**
   * The flow's budget, when it has one (the signed `budgetcost`, `budgettokens`, `budgetsteps`): its bounds, what the
   * flow spent before this run, and what remains after this run's reservation — so a planner can plan fewer tasks
   * and a researcher pick a cheaper tier.
   */
  readonly budget?: { readonly limit: FlowBudget; readonly spent: FlowTotals; readonly remaining: FlowBudget };
  /**
   * Reports what this run spent (adds up over calls; the model adapter's usage, a priced API call). Once called,
   * the sum replaces the definition's fixed `cost`. It is charged to the flow's ledger and signed into every output
   * as `spentcost` / `spenttokens`.
   */
  spend(spent: Partial<Spend>): void;
  /**
   * The pressure on a capability this handler is about to address: `level` (`ok`, `soft`, `hard`, by the thresholds
   * of infra/backpressure.json), its `backlog` and whether the coordinator's report is `stale` — so a fan-out can
   * shrink when the mesh is near saturation (`ctx.pressure("research", 1).level !== "ok"`). From KV
   * causeway_pressure, followed in the background: a call costs no round trip.
   */
  readonly pressure: PressureAccessor;
}

/** Why a flow's budget cannot pay for an input: the bound and a sentence for logs and quarantine. */
export interface BudgetOver {
  readonly bound: Exclude<LedgerBound, "maxEventsPerCapability">;
  readonly detail: string;
}

/** One event a handler emits; id, source, time, correlation, causation, trace and expiry come from the input. */
export interface Emit {
  /** Subject to publish on, from `ctx.subjects`. */
  to: string;
  /** Event type; must be one of the definition's `emits`. */
  type: string;
  /**
   * Which declared dataschema of `type` the output is (and is validated against), when the definition declares
   * several. Default: the only one; else, on a `<prefix>.cap` or `<prefix>.handoff` subject, the newest declared
   * version with that subject's major; else the newest declared version.
   */
  dataschema?: string;
  /** JSON-serializable data (serialized once, then signed as bytes). */
  data: unknown;
  /** CloudEvents `subject`. */
  subject?: string;
  /** Further extensions to sign. */
  extensions?: Record<string, ExtensionValue>;
  /**
   * A stable key for the output's id instead of (input, index): outputs with the same key get the same id
   * whichever input or timer produced them, so JetStream's duplicate window keeps exactly one (e.g. a report
   * that a last finding or a deadline may both complete: `key: "report/" + requestId`).
   */
  key?: string;
}

/** The event that causes an output emitted outside a handler run (a timer, a deadline). */
export interface Cause {
  readonly id: string;
  readonly source: string;
  /** The flow's correlation id. */
  readonly correlationid: string;
  readonly traceparent?: string;
  readonly tracestate?: string;
  readonly expirytime?: string;
  /**
   * The rest of the flow context the cause carried — priority, budget, route epoch, causal depth (kit
   * `flowContextOf(event)`) — inherited by what is emitted as by any output. Without it, what is emitted starts
   * over: no budget, normal priority, depth 1.
   */
  readonly context?: Readonly<Record<string, string>>;
}

/** Counters of a running agent (also in `nats micro stats` and OpenTelemetry metrics). */
export interface AgentStats {
  readonly processed: number;
  readonly failed: number;
  readonly quarantined: number;
  /** Inputs absorbed as replays (processed-set hits). */
  readonly replays: number;
  readonly inFlight: number;
  /** Mean and maximum handler time in milliseconds. */
  readonly handlerMeanMs: number;
  readonly handlerMaxMs: number;
  /** `quarantined` by reason (the reasons with at least one). */
  readonly quarantinedByReason: Readonly<Partial<Record<QuarantineReasonValue, number>>>;
  /**
   * Handler runs by duration: element i counts the runs of at most HANDLER_DURATION_BOUNDARIES_MS[i] ms (and more
   * than the bound before), the last element those above every bound. Cumulative since the agent started, like
   * every counter here, so the coordinator computes percentiles over a window from the difference of two beats.
   */
  readonly handlerBuckets: readonly number[];
}

/**
 * The agent's `stats` control endpoint (`<prefix>.ctl.<principal>.stats`, no parameters): its {@link AgentStats}.
 * `nats req --inbox-prefix _INBOX_operator mesh.ctl.planner.stats ''` or `controlRequest(nc, agentStatsEndpoint("planner"), {})`.
 */
export function agentStatsEndpoint(principal: string): ControlEndpoint<Record<string, never>, AgentStats> {
  return controlEndpoint<Record<string, never>, AgentStats>({
    service: principal, name: "stats", description: "processed, failed, quarantined (by reason), replays, in-flight, handler latency (mean, max, histogram)",
    // No parameters: whatever the body says (`''`, `{}`), the answer is the counters.
    parse: () => ({}),
  });
}

/** A running agent. Dispose it (or call stop) to drain: in-flight work finishes, the rest is redelivered. */
export interface Agent extends AsyncDisposable {
  readonly definition: AgentDefinition;
  /** This instance's id, as it heartbeats in causeway_instances and `causeway agents` lists it. */
  readonly instance: string;
  /** Emit outside a handler run, signed and published like handler outputs, caused by an earlier event. */
  emit(cause: Cause, emits: readonly Emit[]): Promise<void>;
  stats(): AgentStats;
  /** Stops consuming, waits for in-flight handlers, naks what was fetched but not started. */
  stop(): Promise<void>;
  /**
   * Settles (never rejects) when the agent stopped on its own: its consumer or stream deleted, its connection
   * closed, or the trust store or switch bucket deleted. The process should exit non-zero with this reason.
   */
  readonly lost: Promise<CausewayError>;
}

/** A policy decision to quarantine the input rather than handle it. */
export interface PolicyVerdict {
  reason: QuarantineReasonValue;
  detail: string;
}

/** A failure worth retrying (a timeout, a rate limit): the input is nak'ed with the consumer's backoff. */
export class RetryableError extends Error {
  /** Milliseconds to wait before redelivery; default: the consumer's backoff for this attempt. */
  readonly delayMs: number | undefined;
  constructor(message: string, options?: ErrorOptions & { delayMs?: number }) {
    super(message, options);
    this.name = "RetryableError";
    this.delayMs = options?.delayMs;
  }
}
