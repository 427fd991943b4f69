// What a handler's emits become before they are signed: each checked against the definition's declared outputs
// (type and dataschema, data validated), given its id (derived from the input and its index, or from its key),
// the input's context (correlation, causation, trace, expiry, depth, priority, budget), `startedat`, what the run spent, the signed `agentversion` of the
// implementation that did the work and, in the runtime, the flow's `routeepoch`. One function, so the agent runtime publishes and `causeway replay` compares
// exactly the same events.
import type { AgentDefinition, Emit } from "./agent-api.ts";
import { ContextExtension, deriveEventId, outputEventInit, principalSource, type Spend } from "./context.ts";
import type { CloudEvent, EventInit } from "./event.ts";
import type { DeclaredOutputs } from "./schema-versions.ts";
import type { MeshSubjects } from "./subjects.ts";

/** What one handler run spends: a meter the run's context reports into. */
export interface SpendMeter {
  /** The definition's fixed cost: what the run reserves against the flow's budget before it starts. */
  readonly reserve: Spend;
  /** Adds what the handler reports (HandlerContext.spend); TypeError for anything but non-negative integers. */
  spend(spent: Partial<Spend>): void;
  /** What the run spent: the sum of what the handler reported, or the fixed cost when it reported nothing. */
  spent(): Spend;
}

/** A meter for one run of `def`. */
export function spendMeter(def: Pick<AgentDefinition, "cost">): SpendMeter {
  const reserve: Spend = { cost: def.cost?.cost ?? 0, tokens: def.cost?.tokens ?? 0 };
  let reported: Spend | undefined;
  return {
    reserve,
    spend(s) {
      const cost = s.cost ?? 0, tokens = s.tokens ?? 0;
      if (!Number.isSafeInteger(cost) || cost < 0 || !Number.isSafeInteger(tokens) || tokens < 0) {
        throw new TypeError(`spend: cost ${cost} and tokens ${tokens} must be non-negative integers`);
      }
      reported = { cost: (reported?.cost ?? 0) + cost, tokens: (reported?.tokens ?? 0) + tokens };
    },
    spent: () => reported ?? reserve,
  };
}

/** What the runtime adds to a run's outputs besides the input's context. */
export interface RunContext {
  /** The route tables' revision the flow is routed by (`routeepoch`). */
  readonly epoch?: number | undefined;
  /** What the run spent (`spentcost`, `spenttokens`). */
  readonly spent?: Spend | undefined;
  /** The budget bound that made this run a wrap-up (`wrapup`). */
  readonly wrapUp?: string | undefined;
  /** The flow's unforked chain's spend after this run (`flowcarry`). */
  readonly carry?: { readonly steps: number; readonly cost: number; readonly tokens: number } | undefined;
}

/**
 * Whether a run's `emits` keep its flow unforked: at most one output, and that one work for a capability (one
 * consumer) rather than a fact (any number of subscribers).
 */
export function continuesChain(emits: readonly Emit[], subjects: Pick<MeshSubjects, "parse">): boolean {
  return emits.length === 1 && subjects.parse(emits[0]!.to).kind !== "evt";
}

/** One output, not yet signed: where the handler addressed it (before version routing) and its attributes. */
export interface OutputInit {
  readonly to: string;
  readonly init: EventInit;
}

/**
 * The outputs of `emits` caused by `cause` under `def`. Throws (CW_ERR_UNDECLARED_OUTPUT, CW_ERR_SCHEMA_VIOLATION)
 * for an output the definition does not declare or whose data does not validate: the handler run then failed.
 */
export function outputInits(def: Pick<AgentDefinition, "principal" | "version">, declared: DeclaredOutputs, cause: CloudEvent, emits: readonly Emit[], startedAt: string, run: RunContext = {}): OutputInit[] {
  const { epoch, spent, wrapUp, carry } = run;
  return emits.map((emit, index) => {
    const chosen = declared.choose(emit);
    chosen.validate(emit.data);
    const init = outputEventInit(cause, def.principal, index, {
      type: emit.type, data: emit.data, dataschema: chosen.dataschema, startedAt, ...(spent !== undefined && { spent }), ...(carry !== undefined && { carry }),
      ...(emit.subject !== undefined && { subject: emit.subject }),
      ...(emit.extensions !== undefined && { extensions: emit.extensions }),
    });
    if (emit.key !== undefined) init.id = deriveEventId({ source: principalSource(def.principal), id: emit.key }, def.principal, 0);
    // Which implementation did the work: signed, set after the handler's extensions so it cannot be claimed.
    init.extensions![ContextExtension.AgentVersion] = def.version;
    // The route tables' revision the flow is routed by (routing.ts): the runtime's, after the handler's extensions too.
    if (epoch !== undefined) init.extensions![ContextExtension.RouteEpoch] = String(epoch);
    // A wrap-up's outputs say which budget bound sent the flow there; no handler's output can claim it.
    if (wrapUp !== undefined) init.extensions![ContextExtension.WrapUp] = wrapUp;
    else if (init.extensions![ContextExtension.WrapUp] !== undefined) delete init.extensions![ContextExtension.WrapUp];
    return { to: emit.to, init };
  });
}
