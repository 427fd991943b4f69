// The agent runtime: one durable pull consumer per capability shared by every replica (and one per subscribed
// fact, on MESH_EVT, shared the same way), and per message the
// pipeline of DESIGN.md in its order — decode, verify, dedupe, expiry, schema, policy, handler, publish, ack.
// Steps 1–6 fail into quarantine (original bytes kept, then the original is terminated); handler failures are
// retried with the consumer's backoff (a transient broker fault after 250 ms–2 s) and, on the last allowed
// delivery, quarantined as max_deliveries.
// Outputs are signed with derived ids and published concurrently; the input is acked only after JetStream
// acknowledged every output. Nothing is dropped: each message is acked, terminated after a quarantine copy
// exists, or left pending for redelivery.
import { jetstream, jetstreamManager, type ConsumerConfig, type ConsumerInfo, type JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { Svcm, type Service } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { Agent, AgentDefinition, AgentStats, BudgetOver, Cause, Emit, HandlerContext, HandlerInput } from "./agent-api.ts";
import { RetryableError, agentStatsEndpoint } from "./agent-api.ts";
import { NatsBinding } from "./binding.ts";
import {
  ContextExtension, PRIORITIES, Priority, budgetOf, carryOf, childTraceparent, correlationIdOf, flowDepthOf, flowIdOf, isBounded, isExpired, parseTraceparent, priorityOf, type PriorityValue,
} from "./context.ts";
import { addControlEndpoint } from "./control.ts";
import { CausewayError, ConfigError, ErrorCode, QuarantineReason, SchemaError, quarantineReasonOf } from "./errors.ts";
import type { QuarantineReasonValue } from "./errors.ts";
import { createEvent, dataJson, type CloudEvent } from "./event.ts";
import type { SigningKey } from "./keys.ts";
import { createLogger, eventLogger } from "./log.ts";
import { KvBucket } from "./buckets.ts";
import { consumeDurable, type DurableConsumer } from "./consumer.ts";
import { ensureConsumer } from "./jetstream-errors.ts";
import { defaultLayout, type MeshLayout } from "./layout.ts";
import type { FactRef } from "./principals.ts";
import { HANDLER_DURATION_BOUNDARIES_MS, createAgentMetrics, handlerDurationBucket } from "./metrics.ts";
import { startHeartbeat, type Heartbeat } from "./heartbeat.ts";
import { encodeLease, leaseKey, openLeases, readLease, type Lease } from "./leases.ts";
import { openProcessedSet, type ProcessedSet } from "./processed.ts";
import { watchLoopGuards, type LoopGuards } from "./loop-guards.ts";
import { NO_TOTALS, admitUnforked, openFlowLedger, type FlowLedger, type FlowTotals, type LedgerAdmission } from "./flow-ledger.ts";
import { followPressure, unknownPressure, type FollowedPressure, type PressureAccessor } from "./pressure.ts";
import { quarantine } from "./quarantine.ts";
import { createSchemaRegistry, type SchemaRegistry } from "./schemas.ts";
import { compileAccepts, compileEmits, declareAccepts, parseSchemaVersion, type AcceptedInputs } from "./schema-versions.ts";
import { continuesChain, outputInits, spendMeter, type RunContext } from "./outputs.ts";
import { createStreamPublisher } from "./stream-publisher.ts";
import { MsgIdKind, msgId } from "./msg-ids.ts";
import { PRIORITY_TOKENS, StreamName, inboxPrefix, type MeshSubjects } from "./subjects.ts";
import { watchPriorities, type PriorityWeights } from "./priorities.ts";
import type { WatchedInfraFile } from "./infra-file.ts";
import { isTransient, transientRetryDelayMs } from "./transient.ts";
import { PAUSED_UNTIL_RESUMED, watchSwitches, type SwitchWatcher } from "./switches.ts";
import { routeEpochOf, routeKey, startRouter, watchRouteTables, type RouteTables } from "./routing.ts";
import { endSpan, startProcessSpan, startSendSpan, traceparentOf } from "./tracing.ts";
import type { TrustStore, TrustedEvent } from "./trust.ts";
import { signEvent } from "./verifiability.ts";

/** What the runtime needs besides the definition. */
export interface AgentOptions {
  /** The live trust store (verification, windows, revocation, who may emit and address what). */
  trust: TrustStore;
  /** The principal's signing key (its NKey). */
  signingKey: SigningKey;
  /** Compiled schemas. Default: every schema in schemas/. */
  schemas?: SchemaRegistry;
  /** The mesh's names (prefix, the capability consumer template, buckets). Default: the repository's (infra/, streams/). */
  layout?: MeshLayout;
  log?: Logger;
  /** Overrides of the capability consumer template (tests shorten ack_wait and backoff). */
  consumer?: Partial<ConsumerConfig>;
  /** The kill switches (KV causeway_switches). Default: watched on the agent's connection while it runs. */
  switches?: SwitchWatcher;
  /** The version route tables (KV causeway_routes). Default: watched on the agent's connection while it runs. */
  routes?: RouteTables;
  /** The loop guards' bounds. Default: infra/loop-guards.json (tests set their own). */
  loopGuards?: LoopGuards;
  /** The priority weights and aging (issue 16). Default: infra/priorities.json, followed live while the agent runs. */
  priorities?: WatchedInfraFile<PriorityWeights>;
}

const DEFAULT_CONCURRENCY = 8;
/**
 * How long a paused input waits before it is offered again. The coordinator pauses the consumer server-side,
 * which holds the redelivery until the resume anyway; this only bounds the wait after it.
 */
const PAUSED_RETRY_MS = 5_000;
/** How soon a route table change the agent could not follow is tried again. */
const FOLLOW_RETRY_MS = 1_000;

/**
 * Starts `definition` on `nc`: makes sure the capability's durable consumer exists, registers the agent as a
 * NATS micro service, and consumes until stopped. Fails fast when JetStream, the stream, a schema or the
 * principal's permissions are missing.
 */
export async function startAgent<In>(nc: NatsConnection, definition: AgentDefinition<In>, opts: AgentOptions): Promise<Agent> {
  const def = definition as AgentDefinition;
  checkDefinition(def);
  const layout = opts.layout ?? defaultLayout();
  const subjects = layout.subjects;
  if (opts.signingKey.keyid !== opts.trust.entry(opts.signingKey.keyid)?.keyid) {
    throw new CausewayError(ErrorCode.UnknownKey, `${def.principal}'s key ${opts.signingKey.keyid} is not in the trust store: run \`causeway trust seed\``);
  }
  const schemas = opts.schemas ?? createSchemaRegistry();
  // Step 5's rule (schema-versions.ts): each accepted type in the declared version or an older minor of its major.
  const acceptedInputs = compileAccepts(schemas, def.accepts, `${def.capability}.v${def.major}`);
  const declaredOutputs = compileEmits(schemas, def.emits, def.principal, subjects);
  const baseLog = (opts.log ?? createLogger({ name: def.principal })).child({ capability: `${def.capability}.v${def.major}` });
  // Per-message lines are debug; checking the level once keeps their cost off the hot path when off.
  const debugOn = baseLog.isLevelEnabled("debug");
  const metrics = createAgentMetrics({ principal: def.principal, capability: def.capability, major: def.major, version: def.version });
  // Every agent marks what it handled, so a replay after the duplicate window is absorbed (processed.ts).
  // Who publishes the outputs: their message ids are namespaced and tagged with this (msg-ids.ts).
  const idOwner = Object.freeze({ principal: def.principal, key: opts.signingKey });
  const processed: ProcessedSet = await openProcessedSet(nc, def.capability, def.major, { bucket: layout.buckets[KvBucket.Processed].name });
  const leases = def.critical ? await openLeases(nc) : undefined;
  // The loop guards: infra/loop-guards.json, followed live (a bad edit keeps the last good bounds), unless given.
  const watchedGuards = opts.loopGuards === undefined ? watchLoopGuards({ log: baseLog }) : undefined;
  // Priority lanes (issue 16): each capability durable (plain or a version's lane) comes with one durable per
  // priority token; the three share one concurrency limit, served by these weights with aging (kit consumer.ts).
  // infra/priorities.json, followed live like the loop guards, unless given.
  let watchedPriorities: WatchedInfraFile<PriorityWeights> | undefined;
  try {
    watchedPriorities = opts.priorities === undefined ? watchPriorities({ log: baseLog }) : undefined;
  } catch (err) {
    watchedGuards?.close();
    throw err;
  }
  const priorities = opts.priorities ?? watchedPriorities!;
  // The flow ledger (flow-ledger.ts): a flow's budget and the loop guards' count per capability. Opened when a flow
  // first needs it: an agent whose inputs carry no budget, with the count off, never touches it.
  let ledgerOpening: Promise<FlowLedger> | undefined;
  const ledger = () => (ledgerOpening ??= openFlowLedger(nc, def.capability, def.major, { bucket: layout.buckets[KvBucket.FlowLedger].name, publisher }).catch((err: unknown) => {
    ledgerOpening = undefined;
    throw err;
  }));
  const reserve = spendMeter(def).reserve;

  // Kill switches: watched before the consumer exists, so a consumer created during a pause is created paused.
  const switches = opts.switches ?? (await watchSwitches(nc, { onProblem: (err) => baseLog.warn({ err }, "kill switch problem") }));
  const switchSubject = Object.freeze({ capability: def.capability, major: def.major, principal: def.principal });

  // Version routing (routing.ts): which lane this version consumes, and where outputs for routed capabilities go.
  const routeTables = opts.routes ?? (await watchRouteTables(nc, { log: baseLog }).catch(async (err: unknown) => {
    if (opts.switches === undefined) await switches.close().catch(() => undefined);
    throw err;
  }));
  let followed: FollowedPressure | undefined;
  const closeWatchers = async () => {
    watchedGuards?.close();
    watchedPriorities?.close();
    await followed?.close().catch(() => undefined);
    if (opts.switches === undefined) await switches.close().catch(() => undefined);
    if (opts.routes === undefined) await routeTables.close().catch(() => undefined);
  };
  const router = await startRouter(nc, subjects, { log: baseLog, tables: routeTables }).catch(async (err: unknown) => {
    await closeWatchers();
    throw err;
  });
  // The mesh's backpressure (pressure.ts), for handlers that shrink their fan-out under load. Advisory: when it cannot
  // be followed (no bucket, no permission) the agent runs without it, says so once, and every capability reads as
  // unknown (ok, stale).
  followed = await followPressure(nc, { bucket: layout.buckets[KvBucket.Pressure].name, onProblem: (err) => baseLog.warn({ err }, "backpressure problem") })
    .catch((err: unknown) => {
      baseLog.warn({ err }, "backpressure cannot be followed: handlers see every capability as ok, stale");
      return undefined;
    });
  const pressure: PressureAccessor = followed?.pressure ?? unknownPressure;

  // A start that fails from here on closes the watchers it opened: nothing of a failed start stays behind.
  const { capabilityInlet, inlets, openInlet } = await (async () => {
    const jsm = await jetstreamManager(nc);
    /** Binds to (or creates, paused during a pause) one durable of this agent, and reads what its deliveries follow. */
    const openInlet = async (stream: string, config: ConsumerConfig, inputs: AcceptedInputs, fact?: FactRef): Promise<Inlet> => {
      const pausedNow = switches.isPaused(switchSubject);
      const info = await ensureConsumer(jsm, stream, config, pausedNow ? { ...config, pause_until: pausedNow.expires_at ?? PAUSED_UNTIL_RESUMED } : config);
      return {
        stream, durable: config.durable_name!, subject: config.filter_subject!, inputs, info, ...(fact && { fact }),
        // The stream's duplicate window: an input stored later than its signed time plus this may be a replay that
        // JetStream no longer recognizes, and only such an input is looked up in the processed set.
        duplicateWindowMs: ((await jsm.streams.info(stream)).config.duplicate_window ?? 120e9) / 1e6,
        maxDeliver: info.config.max_deliver ?? -1,
        backoffMs: (info.config.backoff ?? []).map((ns) => ns / 1e6),
        ackWaitMs: (info.config.ack_wait ?? 30e9) / 1e6,
      };
    };
    // The capability's shared durable, then one durable per subscribed fact (principals.json `subscribes`).
    const capabilityInlet = await openInlet(StreamName.Cap, { ...layout.capabilityConsumer(def.capability, def.major), ...opts.consumer } as ConsumerConfig, acceptedInputs);
    // What this agent accepts, on the durable, for the coordinator's release pre-check (schema-versions.ts).
    await declareAccepts(jsm, capabilityInlet.info, { accepts: def.accepts, by: def.principal, version: def.version });
    const inlets: Inlet[] = [capabilityInlet];
    for (const { type, major, config } of subscriptionsOf(def, layout, schemas)) {
      const inputs = compileAccepts(schemas, { [type]: def.subscribes![type]! }, `${def.principal}'s subscription to ${type}.v${major}`);
      inlets.push(await openInlet(StreamName.Evt, { ...config, ...opts.consumer } as ConsumerConfig, inputs, { type, major }));
    }
    return { capabilityInlet, inlets, openInlet };
  })().catch(async (err: unknown) => {
    await closeWatchers();
    throw err;
  });
  const inputSubject = capabilityInlet.subject;
  const durable = capabilityInlet.durable;
  const js = jetstream(nc);

  const counters = { processed: 0, failed: 0, quarantined: 0, replays: 0, inFlight: 0, handlerTotalMs: 0, handlerRuns: 0, handlerMaxMs: 0 };
  // Counted in place (no allocation per input); copied only when stats are read (a heartbeat, `nats micro stats`).
  const quarantinedByReason = Object.fromEntries(Object.values(QuarantineReason).map((r) => [r, 0])) as Record<QuarantineReasonValue, number>;
  const handlerBuckets = new Array<number>(HANDLER_DURATION_BOUNDARIES_MS.length + 1).fill(0);
  const stats = (): AgentStats => ({
    processed: counters.processed, failed: counters.failed, quarantined: counters.quarantined, replays: counters.replays,
    inFlight: counters.inFlight, handlerMeanMs: counters.handlerRuns ? counters.handlerTotalMs / counters.handlerRuns : 0,
    handlerMaxMs: counters.handlerMaxMs,
    quarantinedByReason: Object.fromEntries(Object.entries(quarantinedByReason).filter(([, n]) => n > 0)),
    handlerBuckets: [...handlerBuckets],
  });
  const shutdown = new AbortController();

  // --- publishing outputs -------------------------------------------------------------------------

  /** Signs and publishes `emits` caused by `cause`; resolves once JetStream acknowledged every one. */
  const publishOutputs = async (cause: CloudEvent, emits: readonly Emit[], startedAt: string, parentSpan?: ReturnType<typeof startProcessSpan>, run: Omit<RunContext, "epoch"> = {}) => {
    const flow = correlationIdOf(cause); // every output carries the cause's flow (outputEventInit)
    // The route tables' revision the flow is routed by: the cause's, or — the flow's first agent — the latest seen.
    const epoch = routeEpochOf(cause) ?? router.epoch();
    const events = outputInits(def, declaredOutputs, cause, emits, startedAt, { ...run, epoch });
    // Every output inherits its cause's priority (outputEventInit) and goes to the durables of that priority.
    const priority = priorityOf(cause) ?? Priority.Normal;
    await Promise.all(events.map(async ({ to: addressed, init }) => {
      const routed = router.route(addressed, flow, epoch, priority);
      const to = typeof routed === "string" ? routed : await routed;
      const span = startSendSpan(to, { id: init.id, type: init.type, source: init.source, extensions: init.extensions ?? {} }, parentSpan);
      try {
        init.extensions!.traceparent = traceparentOf(span) ?? childTraceparent(cause.extensions.traceparent);
        const signed = signEvent(createEvent(init), opts.signingKey);
        const { headers, data } = NatsBinding.binary(signed);
        // The derived id, in this principal's own message id (msg-ids.ts): a redelivered input republishes the
        // same ids and JetStream keeps one; nobody without the key can publish under it first.
        await publisher.publish(to, data, { headers, msgID: msgId(idOwner, MsgIdKind.Output, signed.id) });
        endSpan(span);
      } catch (err) {
        endSpan(span, err);
        throw err;
      }
    }));
  };

  // --- the pipeline -----------------------------------------------------------------------------------

  const toQuarantine = async (msg: JsMsg, reason: QuarantineReasonValue, detail: string, code: string | undefined, log: Logger) => {
    const ok = await quarantine(js, msg, subjects.quarantine(reason, def.capability), { reason, detail, code, detectedBy: def.principal }, { key: opts.signingKey });
    if (ok) {
      counters.quarantined++;
      quarantinedByReason[reason]++;
      metrics.quarantined(reason);
      log.warn({ reason, code, detail, seq: msg.info.streamSequence }, "input quarantined");
    } else {
      log.error({ reason, seq: msg.info.streamSequence }, "quarantine publish failed; input left for redelivery");
    }
  };

  const handle = async (inlet: Inlet, msg: JsMsg) => {
    const { ackWaitMs, backoffMs, maxDeliver } = inlet;
    // Signed into every output as `startedat`: lineage's queue wait and processing time come from it.
    const startedAt = new Date().toISOString();
    // The per-event child logger is built on first use: most inputs never log, and building one costs µs.
    let eventLog: Logger | undefined;
    let logFields: (() => Parameters<typeof eventLogger>[1]) | undefined;
    const log = (): Logger => (eventLog ??= logFields ? eventLogger(baseLog, logFields()) : baseLog);
    // 1. decode — 2. verify (signature, trust window, revocation, emitter) — before any data is parsed.
    let trusted: TrustedEvent;
    try {
      trusted = opts.trust.verifyMessage(msg);
    } catch (err) {
      const e = err as CausewayError;
      return toQuarantine(msg, quarantineReasonOf(err), e.message, e.code, log());
    }
    const verified = trusted.event;
    const span = startProcessSpan(msg.subject, verified, { consumer: inlet.durable, deliveryCount: msg.info.deliveryCount });
    // Tells JetStream the input is being worked on, from the first step that may wait on the server (the processed
    // set's lookup, the flow ledger) to the end of the handler, so a slow step never gets it redelivered to a
    // second replica meanwhile.
    let keepAlive: NodeJS.Timeout | undefined;
    const keepAliveFrom = () => (keepAlive ??= setInterval(() => msg.working(), Math.max(50, ackWaitMs / 3)));
    logFields = () => ({ eventId: verified.id, correlationId: correlationIdOf(verified), ...spanIds(span, verified) });
    try {
      // 2b. policy: may this principal address this capability at all? (A fact addresses nobody: its signer may
      // emit its type — the trust store checked that — and the server let it publish on the fact's subject.)
      if (inlet.fact === undefined && !opts.trust.mayAddress(trusted.entry, def.capability, def.major)) {
        return await toQuarantine(msg, QuarantineReason.PolicyDenied, `${trusted.entry.principal} may not address ${def.capability}.v${def.major}`, ErrorCode.UnauthorizedAddress, log());
      }
      // 2c. priority lanes (issue 16): the subject, and so the durable and its weight, must be the input's signed
      // priority's. Anyone who may send the capability work may publish on each of its priority subjects: this
      // stops a producer from putting background-signed work on the critical durable to jump the queue.
      if (inlet.fact === undefined) {
        const priority = priorityOf(verified);
        const lane = inlet.priority ?? Priority.Normal;
        if (priority === undefined) {
          return await toQuarantine(msg, QuarantineReason.DecodeError, `priority ${JSON.stringify(verified.extensions[ContextExtension.Priority])} is none of ${PRIORITIES.join(", ")}`, ErrorCode.InvalidAttribute, log());
        }
        if (priority !== lane) {
          return await toQuarantine(msg, QuarantineReason.PolicyDenied, `signed priority ${priority} arrived on ${msg.subject}, the subject of ${lane} work: a producer may not choose another priority's durable`, ErrorCode.PriorityMismatch, log());
        }
      }
      // 3. dedupe: a replay of an input already handled is absorbed. Within the duplicate window JetStream
      // recognizes republished outputs; past it (a late input) or for side effects, the processed set decides.
      const late = lateBy(msg, trusted.signedAt, inlet.duplicateWindowMs) > 0;
      if (late || def.sideEffects) keepAliveFrom(); // the processed set's lookup waits on the server
      if ((late || def.sideEffects) && (await processed.has(verified))) {
        counters.replays++;
        if (debugOn) log().debug("replay absorbed");
        msg.ack();
        return;
      }
      // 4. expiry
      if (isExpired(verified)) {
        return await toQuarantine(msg, QuarantineReason.Expired, `expired at ${String(verified.extensions.expirytime)}`, ErrorCode.Expired, log());
      }
      // 4b. loop guard, causal depth: the signed depth is checked before anything else is spent on the input.
      const guards = opts.loopGuards ?? watchedGuards!.current();
      const depth = flowDepthOf(verified);
      if (depth === undefined) {
        return await toQuarantine(msg, QuarantineReason.DecodeError, `flowdepth ${JSON.stringify(verified.extensions[ContextExtension.FlowDepth])} is not a non-negative integer`, ErrorCode.InvalidAttribute, log());
      }
      if (guards.maxDepth > 0 && depth > guards.maxDepth) {
        return await toQuarantine(msg, QuarantineReason.LoopDetected, `causal depth ${depth} exceeds maxDepth ${guards.maxDepth} (${guards.source})`, ErrorCode.LoopDetected, log());
      }
      // 5. schema: only accepted types, in a version the capability reads, each validated against its own dataschema.
      const accepted = inlet.inputs.check(verified);
      if (!accepted.ok) return await toQuarantine(msg, accepted.reason, accepted.detail, accepted.code, log());
      let data: unknown;
      try {
        data = dataJson(verified);
      } catch (err) {
        // JSON data that does not parse is a decoding failure, as at the gateway (CW_ERR_DECODE_JSON).
        return await toQuarantine(msg, QuarantineReason.DecodeError, `data is not JSON: ${(err as Error).message}`, ErrorCode.DecodeJson, log());
      }
      try {
        accepted.validate(data);
      } catch (err) {
        const detail = err instanceof SchemaError ? err.message : (err as Error).message;
        return await toQuarantine(msg, QuarantineReason.SchemaViolation, detail, ErrorCode.SchemaViolation, log());
      }
      const input: HandlerInput = { event: verified, data, verification: trusted.verification, signer: trusted.entry.principal };
      // 6. policy verdicts of the agent itself (confidence, evidence)
      const verdict = def.policy?.(input);
      if (verdict) return await toQuarantine(msg, verdict.reason, verdict.detail, ErrorCode.PolicyVerdict, log());
      // 6a. the flow's budget and the loop guards' count per capability, in the flow ledger: checked for an input
      // about to run (a refused one takes nothing), charged once however often it is delivered.
      const budget = budgetOf(verified);
      if (budget === undefined) {
        return await toQuarantine(msg, QuarantineReason.DecodeError, "a budget extension (budgetcost, budgettokens, budgetsteps) is not a non-negative integer", ErrorCode.InvalidAttribute, log());
      }
      const flow = correlationIdOf(verified);
      const carried = carryOf(verified);
      if (carried === undefined) {
        return await toQuarantine(msg, QuarantineReason.DecodeError, `flowcarry ${JSON.stringify(verified.extensions[ContextExtension.FlowCarry])} is not <steps>,<cost>,<tokens>`, ErrorCode.InvalidAttribute, log());
      }
      // A flow that never forked (its first run, or a run whose input carries the chain's spend) is checked against
      // what it carries, with no ledger round trip: no other run of it can exist. The loop guards' count needs the
      // ledger, so with it on every flow is charged there.
      const unforked = isBounded(budget) && guards.maxEventsPerCapability === 0 && (carried !== "absent" || (depth === 0 && flowIdOf(verified) === flow));
      const carry = carried === "absent" ? NO_TOTALS : carried;
      let admission: LedgerAdmission | undefined;
      let wrapUp: BudgetOver | undefined;
      if (unforked) admission = admitUnforked(budget, carry, reserve);
      else if (isBounded(budget) || guards.maxEventsPerCapability > 0) {
        keepAliveFrom();
        const l = await ledger();
        // A chain's carry reaching a run that charges the ledger (the count turned on since) is written first.
        if (carry.steps > 0) await l.flush(flow, { source: verified.source, id: `${verified.id}#carry` }, carry);
        admission = await l.admit(flow, verified, { budget, reserve, maxRuns: guards.maxEventsPerCapability, first: depth === 0 });
      }
      if (admission?.admitted === false) {
        if (admission.bound === "maxEventsPerCapability") {
          return await toQuarantine(msg, QuarantineReason.LoopDetected, `flow ${flow} ${admission.detail}, maxEventsPerCapability ${guards.maxEventsPerCapability} (${guards.source})`, ErrorCode.LoopDetected, log());
        }
        wrapUp = { bound: admission.bound, detail: admission.detail };
        if (!def.wrapUp) {
          return await toQuarantine(msg, QuarantineReason.BudgetExceeded, `flow ${flow} at ${def.capability}.v${def.major}: ${wrapUp.detail}`, ErrorCode.BudgetExceeded, log());
        }
        if (debugOn) log().debug({ bound: wrapUp.bound }, "over budget: wrapping up");
      }
      // 6b. critical work: only under the coordinator's grant for exactly this event, at most once per grant.
      let claim: { key: string; revision: number; lease: Lease } | undefined;
      if (leases && inlet.fact === undefined) {
        const outcome = await claimLease(leases, def, verified, trusted.verification.coreDigest);
        if (outcome.kind === "done") {
          counters.replays++;
          msg.ack();
          return;
        }
        if (outcome.kind === "refuse") return await toQuarantine(msg, outcome.reason, outcome.detail, outcome.code, log());
        claim = outcome.claim;
      }
      // 7. handler, with heartbeats so a long handler keeps its delivery
      const started = performance.now();
      keepAliveFrom();
      let emits: readonly Emit[];
      try {
        // What the run spent: what the handler reports, else the definition's fixed cost; a wrap-up charges nothing.
        const meter = spendMeter(def);
        const ctx: HandlerContext = {
          get log() { return log(); }, subjects, deliveryCount: msg.info.deliveryCount, signal: shutdown.signal, working: () => msg.working(),
          ...(claim && { lease: { key: claim.key, revision: claim.revision } }),
          ...(admission?.admitted && isBounded(budget) && { budget: { limit: budget, spent: admission.spent, remaining: admission.remaining } }),
          ...(wrapUp && { budget: { limit: budget, spent: NO_TOTALS, remaining: {} } }),
          spend: meter.spend, pressure,
        };
        try {
          emits = wrapUp ? await def.wrapUp!(input, ctx, wrapUp) : await def.handler(input, ctx);
          const spent = wrapUp ? undefined : meter.spent();
          // An unforked chain goes on in the one output's signed carry; a run that forks or ends it writes the chain's
          // spend to the ledger first, so the runs after it find it there (flow-ledger.ts).
          let nextCarry: FlowTotals | undefined;
          if (unforked) {
            const total = { steps: carry.steps + (spent ? 1 : 0), cost: carry.cost + (spent?.cost ?? 0), tokens: carry.tokens + (spent?.tokens ?? 0) };
            if (continuesChain(emits, subjects)) nextCarry = total;
            else if (total.steps > 0) await (await ledger()).flush(flow, verified, total);
          }
          // 8. publish every output and wait for JetStream's acknowledgements; a ledger-charged run's spend is settled
          // meanwhile (a write only when it differs from the reservation). A settlement that fails does not fail the
          // run: a retry would run the handler (and spend) again; the reservation stays charged instead.
          await Promise.all([
            publishOutputs(verified, emits, startedAt, span, { spent, wrapUp: wrapUp?.bound, carry: nextCarry }),
            !unforked && admission?.admitted && spent !== undefined
              ? ledger().then((l) => l.settle(flow, verified, spent)).catch((err: unknown) => {
                log().warn({ err, reserved: reserve, spent }, "the run's spend could not be settled in the flow ledger: its reservation stays charged");
              })
              : undefined,
          ]);
        } catch (err) {
          // A handler that throws reports it did not complete: the claim goes back so a retry may run it.
          if (claim) {
            await leases!.update(claim.key, encodeLease({ ...claim.lease, state: "granted" }), claim.revision).catch((e: unknown) => {
              // The lease stays "running": every retry is then refused as CW_ERR_LEASE_HELD, and an operator decides.
              log().error({ err: e, lease: claim.key }, "lease could not be given back after a failed handler");
            });
          }
          throw err;
        }
        if (claim) {
          const consumedAt = new Date().toISOString();
          await leases!.update(claim.key, encodeLease({ ...claim.lease, state: "consumed", consumedAt }), claim.revision).catch((err: unknown) => {
            // The action ran; acking is right. The lease stays "running", so no redelivery can run it again.
            log().error({ err, lease: claim.key }, "lease could not be marked consumed");
          });
        }
        // Marked only once its outputs are stored, so a later copy of an input that never completed still runs.
        // A late or side-effecting input's mark is awaited (its redeliveries are looked up); a timely one's is
        // not (nothing looks this message up again: its redeliveries are timely too), which keeps it off the
        // hot path — best effort, see processed.ts.
        if (late || def.sideEffects) {
          await processed.mark(verified).catch((err: unknown) => {
            // The outputs are stored and the handler ran: acking is right (a nak would run a side effect again).
            // Without the mark, a copy arriving after the duplicate window would run once more; say so.
            log().error({ err }, "input handled but could not be marked processed: a late replay of it would run again");
          });
        } else processed.note(verified);
      } finally {
        clearInterval(keepAlive);
        const ms = performance.now() - started;
        counters.handlerRuns++;
        counters.handlerTotalMs += ms;
        counters.handlerMaxMs = Math.max(counters.handlerMaxMs, ms);
        handlerBuckets[handlerDurationBucket(ms)]!++;
        metrics.handlerDuration(ms);
      }
      // 9. ack, only now
      msg.ack();
      counters.processed++;
      metrics.processed();
      if (debugOn) log().debug({ outputs: emits.length }, "processed");
      endSpan(span);
    } catch (err) {
      endSpan(span, err);
      counters.failed++;
      metrics.failed();
      const attempt = msg.info.deliveryCount;
      if (maxDeliver > 0 && attempt >= maxDeliver) {
        // The last allowed delivery failed too: keep the input, byte for byte, with the reason.
        await toQuarantine(msg, QuarantineReason.MaxDeliveries, `handler failed ${attempt} times; last: ${(err as Error).message}`, (err as CausewayError).code, log());
        return;
      }
      // The handler's own delay first; a broker fault that passes by itself (a timeout, no responders, a 503 during
      // a leader election: kit isTransient) after 250 ms–2 s; any other failure after the consumer's backoff.
      const transient = isTransient(err);
      const delay = err instanceof RetryableError && err.delayMs !== undefined ? err.delayMs
        : transient ? transientRetryDelayMs(attempt) : backoffMs[Math.min(attempt - 1, backoffMs.length - 1)] ?? ackWaitMs;
      log().warn({ err, attempt, retryInMs: delay, transient }, "handler failed; will retry");
      msg.nak(delay);
    } finally {
      clearInterval(keepAlive);
    }
  };

  // --- consuming: the kit's durable-consumer runtime, with the pipeline as its handler -------------------

  // Registered before consuming, so a failure here leaves nothing running.
  const service = await registerService(nc, def, inlets, stats, { subjects, log: baseLog }).catch(async (err: unknown) => {
    await closeWatchers();
    throw err;
  });
  // Say so once when a switch pauses or resumes this agent (the check per message allocates nothing).
  let pausedBy = switches.isPaused(switchSubject);
  if (pausedBy) baseLog.warn({ scope: pausedBy.scope, target: pausedBy.target, reason: pausedBy.reason, by: pausedBy.by, until: pausedBy.expires_at }, "paused by a kill switch");
  const unwatchSwitches = switches.onChange(() => {
    const now = switches.isPaused(switchSubject);
    if ((now === undefined) === (pausedBy === undefined)) return;
    pausedBy = now;
    if (now) baseLog.warn({ scope: now.scope, target: now.target, reason: now.reason, by: now.by, until: now.expires_at }, "paused by a kill switch");
    else baseLog.info("kill switch lifted; consuming again");
  });
  // Outputs go through a StreamPublisher (acks matched on one inbox subscription): a third of the client CPU of
  // js.publish per output. Agents connect as their principal, whose inbox prefix their permissions allow.
  const publisher = createStreamPublisher(nc, inboxPrefix(def.principal));
  const concurrency = def.concurrency ?? DEFAULT_CONCURRENCY;
  const agingMs = () => priorities.current().agingMs;
  /** Consumes a group of durables under one concurrency: a capability's per-priority durables, or one subscription. */
  const consume = (group: readonly Inlet[]) => {
    // Which durable of the group a message arrived through (the consumer runtime serves only these).
    const byDurable = new Map(group.map((inlet) => [inlet.durable, inlet]));
    const only = group.length === 1 ? group[0] : undefined;
    return consumeDurable(nc, {
      stream: group[0]!.stream, concurrency, log: baseLog, agingMs,
      durable: only !== undefined ? only.durable : group.map((inlet) => {
        const priority = inlet.priority ?? Priority.Normal;
        return { durable: inlet.durable, weight: () => priorities.current().weights[priority] };
      }),
      handler: async (msg) => {
        const inlet = only ?? byDurable.get(msg.info.consumer) ?? group[0]!;
        // Kill switch: the server stops delivering once the coordinator pauses the consumer; what was already
        // pulled is handed back untouched (no verify, no handler) and waits for the resume.
        if (switches.isPaused(switchSubject) !== undefined) {
          msg.nak(PAUSED_RETRY_MS);
          return;
        }
        counters.inFlight++;
        metrics.inFlight(1);
        try {
          await handle(inlet, msg);
        } finally {
          counters.inFlight--;
          metrics.inFlight(-1);
        }
      },
    });
  };
  // Consumption ends on its own only when something it depends on is gone: reported once, on `lost` below.
  let markLost: (err: CausewayError) => void = () => undefined;
  const consumerLost = new Promise<CausewayError>((resolve) => { markLost = resolve; });
  /** What runs, by its first durable: the subscriptions, and on the capability's side what the route table gives this version. */
  const running = new Map<string, DurableConsumer>();
  const run = async (group: readonly Inlet[]) => {
    const consumer = await consume(group);
    running.set(group[0]!.durable, consumer);
    void consumer.lost.then(markLost);
  };
  /** Opened capability inlets by durable, each priority's once. */
  const opened = new Map<string, Inlet>();
  /** A capability durable (normal) with the durables of the other priorities beside it, each made if missing. */
  const withPriorities = async (normal: Inlet, config: (priority: PriorityValue) => ConsumerConfig): Promise<Inlet[]> => {
    const group = [normal];
    for (const priority of PRIORITY_TOKENS) {
      const c = config(priority);
      const inlet = opened.get(c.durable_name!) ?? { ...(await openInlet(StreamName.Cap, c, acceptedInputs)), priority };
      opened.set(inlet.durable, inlet);
      group.push(inlet);
    }
    return group;
  };
  /**
   * The capability's durables this version consumes (routing.ts): the plain one unless the capability is routed
   * to another version as stable (it then holds only work published before routing began), and its own lane
   * when the table gives it one — each with its priorities' durables.
   */
  const capabilityDurables = async (): Promise<Inlet[][]> => {
    const table = routeTables.get(def.capability, def.major);
    const lane = table?.lanes[def.version];
    const wanted: Inlet[][] = [];
    if (table === undefined || table.stable === def.version) {
      wanted.push(await withPriorities(capabilityInlet, (p) => ({ ...layout.capabilityConsumer(def.capability, def.major, p), ...opts.consumer } as ConsumerConfig)));
    }
    if (lane !== undefined) {
      const laneConfig = (p: PriorityValue) => ({ ...layout.laneConsumer(def.capability, def.major, lane, p), ...opts.consumer } as ConsumerConfig);
      const existing = opened.get(laneConfig(Priority.Normal).durable_name!) ?? (await openInlet(StreamName.Cap, laneConfig(Priority.Normal), acceptedInputs));
      opened.set(existing.durable, existing);
      wanted.push(await withPriorities(existing, laneConfig));
    }
    return wanted;
  };
  let routed: string[] = [];
  /** Starts and stops the capability's durables to match the route table; one change at a time. */
  const followRoutes = async () => {
    const wanted = await capabilityDurables();
    const names = wanted.map((g) => g[0]!.durable);
    for (const group of wanted) if (!running.has(group[0]!.durable)) await run(group);
    for (const durable of routed) {
      if (names.includes(durable)) continue;
      const consumer = running.get(durable);
      running.delete(durable);
      await consumer?.stop(); // what it fetched but did not start goes back to the durable for the version routed there
    }
    if (names.join() !== routed.join()) baseLog.info({ consumers: names, version: def.version }, "consuming by the version route table");
    routed = names;
  };
  let heartbeat: Heartbeat;
  let routing: Promise<void> = Promise.resolve();
  let refollowTimer: NodeJS.Timeout | undefined;
  let unwatchRoutes: () => void = () => undefined;
  try {
    for (const inlet of inlets.slice(1)) await run([inlet]);
    await followRoutes();
    const ownKey = routeKey(def.capability, def.major);
    // A change that could not be followed (a lane's durable not reachable during a broker fault) is tried again:
    // until it is, this version's lane has no consumer here and its work waits.
    const refollow = () => {
      clearTimeout(refollowTimer);
      routing = routing.then(followRoutes).catch((err: unknown) => {
        baseLog.error({ err, retryInMs: FOLLOW_RETRY_MS }, "could not follow the version route table; trying again");
        if (!shutdown.signal.aborted) refollowTimer = setTimeout(refollow, FOLLOW_RETRY_MS);
      });
    };
    unwatchRoutes = routeTables.onChange((key) => {
      if (key === ownKey) refollow();
    });
    // Announced once it consumes: `causeway agents` lists it, the coordinator sees it come and go (heartbeat.ts).
    heartbeat = await startHeartbeat(nc, { principal: def.principal, capability: def.capability, major: def.major, version: def.version, subscribes: inlets.slice(1).map((i) => i.subject) }, stats, baseLog);
  } catch (err) {
    unwatchRoutes();
    await Promise.all([...running.values()].map((c) => c.stop()));
    unwatchSwitches();
    publisher.close();
    await service.stop().catch(() => undefined);
    await closeWatchers();
    throw err;
  }
  // Started means answering: the server has the endpoints' subscriptions before anyone is told the agent runs.
  await nc.flush();
  baseLog.info({ subject: inputSubject, consumer: durable, consumers: routed, subscriptions: inlets.slice(1).map((i) => i.subject), concurrency }, "agent started");

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      shutdown.abort();
      unwatchSwitches();
      unwatchRoutes();
      clearTimeout(refollowTimer);
      await routing;
      // The heartbeat stops last: the instance is live while it drains, and its final beat counts what it finished.
      await Promise.all([...running.values()].map((c) => c.stop()));
      await heartbeat.stop();
      await service.stop().catch(() => undefined);
      publisher.close();
      await closeWatchers();
      baseLog.info(stats(), "agent stopped");
    })();
    return stopping;
  };
  // One loss signal: a consumer gone (or its connection closed), or a trust store, switch or route bucket deleted —
  // which can deliver no more revocations, pauses or routes. The agent stops rather than act on what was loaded;
  // the inputs wait in the stream for a restart.
  const lost = Promise.race([consumerLost, opts.trust.lost, switches.lost, routeTables.lost]).then((err) => {
    baseLog.error({ err }, "the agent stops: something it depends on is gone");
    void stop();
    return err;
  });

  return {
    definition: def,
    instance: heartbeat.instance,
    stats,
    stop,
    lost,
    async emit(cause: Cause, emits: readonly Emit[]) {
      const { correlationid, traceparent, tracestate, expirytime, context } = cause;
      const extensions = { ...context, correlationid, ...(traceparent && { traceparent }), ...(tracestate && { tracestate }), ...(expirytime && { expirytime }) };
      const event = createEvent({ id: cause.id, source: cause.source, type: "causeway.cause", extensions });
      // No run: an unforked chain's carry passes through one output unchanged, and is written first otherwise.
      const carried = carryOf(event);
      const carry = carried === "absent" || carried === undefined ? undefined : carried;
      if (carry !== undefined && carry.steps > 0 && !continuesChain(emits, subjects)) {
        await (await ledger()).flush(correlationid, { source: cause.source, id: `${cause.id}#emit` }, carry);
      }
      await publishOutputs(event, emits, new Date().toISOString(), undefined, { carry: carry !== undefined && continuesChain(emits, subjects) ? carry : undefined });
    },
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * By how many ms the stream stored `msg` later than its signed `time` plus the duplicate window (> 0: late).
 * A late input may be a replay JetStream no longer recognizes — or a legitimate late copy (a quarantine
 * release, the coordinator's forward of approved critical work): the processed set tells them apart. The
 * signed time (the trust store parsed it once, TrustedEvent.signedAt) is truncated to the second, which errs
 * towards late. No signed time: late (unknown).
 */
function lateBy(msg: { readonly info: { readonly timestampNanos: number } }, signedAt: number | undefined, duplicateWindowMs: number): number {
  if (signedAt === undefined) return Infinity;
  return msg.info.timestampNanos / 1e6 - (signedAt + duplicateWindowMs);
}

type ClaimOutcome =
  | { kind: "claimed"; claim: { key: string; revision: number; lease: Lease } }
  | { kind: "done" }
  | { kind: "refuse"; reason: QuarantineReasonValue; code: string; detail: string };

/** Claims the grant's lease for `event` (granted → running, compare-and-set), or says why not. */
async function claimLease(kv: KV, def: AgentDefinition, event: CloudEvent, coreDigest: string): Promise<ClaimOutcome> {
  const key = leaseKey(def.capability, def.major, event);
  const refuse = (code: string, detail: string, reason: QuarantineReasonValue = QuarantineReason.PolicyDenied): ClaimOutcome => ({ kind: "refuse", reason, code, detail });
  for (let attempt = 0; attempt < 3; attempt++) {
    const found = await readLease(kv, key);
    if (!found || found.lease.eventId !== event.id || found.lease.coreDigest !== coreDigest) {
      return refuse(ErrorCode.NoGrant, `no grant for event ${event.id} with this core digest: critical work runs only after the coordinator grants it`);
    }
    const { lease, revision } = found;
    if (lease.state === "consumed") return { kind: "done" };
    if (lease.state === "running") {
      return refuse(ErrorCode.LeaseHeld, `lease ${key} is held by ${lease.holder ?? "?"} since ${lease.startedAt ?? "?"}: an earlier delivery started the action and did not finish; an operator decides`);
    }
    if (Date.parse(lease.expiresAt) <= Date.now()) return refuse(ErrorCode.LeaseExpired, `grant expired at ${lease.expiresAt}`, QuarantineReason.Expired);
    const running: Lease = { ...lease, state: "running", holder: `${def.principal}/${process.pid}`, startedAt: new Date().toISOString() };
    try {
      const next = await kv.update(key, encodeLease(running), revision);
      return { kind: "claimed", claim: { key, revision: next, lease: running } };
    } catch {
      // Someone changed it between read and claim: read again and decide on what is there now.
    }
  }
  return refuse(ErrorCode.LeaseHeld, `lease ${key} keeps changing under us: another holder is active`);
}

/** One durable the agent consumes, with what its deliveries follow and what arrives through it. */
interface Inlet {
  readonly stream: string;
  readonly durable: string;
  /** Its filter subject: the capability's, or the subscribed fact's. */
  readonly subject: string;
  /** Step 5 for what arrives here: the capability's `accepts`, or the subscribed fact type alone. */
  readonly inputs: AcceptedInputs;
  /** The subscribed fact; undefined for the capability's durable. */
  readonly fact?: FactRef;
  readonly info: ConsumerInfo;
  readonly duplicateWindowMs: number;
  readonly maxDeliver: number;
  readonly backoffMs: readonly number[];
  readonly ackWaitMs: number;
  /** A capability durable's priority (issue 16): what its inputs' signed priority must be. Undefined: normal (or a fact's). */
  readonly priority?: PriorityValue;
}

/**
 * The agent's subscriptions with their consumers: `def.subscribes` (type → the dataschema it reads) must name
 * exactly the facts its principal `subscribes` to in principals.json, each with the major of its dataschema —
 * the durables and permissions are rendered from there. CW_ERR_CONFIG naming the difference otherwise.
 */
function subscriptionsOf(def: AgentDefinition, layout: MeshLayout, schemas: SchemaRegistry): ReturnType<MeshLayout["subscriptionConsumers"]> {
  // A principal principals.json does not know (a benchmark's, on an open server) subscribes to nothing there.
  const declared = Object.hasOwn(layout.principals.principals, def.principal) ? layout.subscriptionConsumers(def.principal) : [];
  const wanted = Object.entries(def.subscribes ?? {}).map(([type, dataschema]) => {
    if (!schemas.has(dataschema)) throw new SchemaError(ErrorCode.UnknownSchema, `subscribes: no schema has $id ${dataschema} (for ${type})`);
    const major = parseSchemaVersion(dataschema)?.major;
    if (major === undefined) throw new ConfigError(ErrorCode.Config, `subscribes: ${type}'s dataschema ${dataschema} has no <major>.<minor>.<patch> version, so its fact subject has no major`);
    return `${type}.v${major}`;
  });
  const have = declared.map((d) => `${d.type}.v${d.major}`);
  const missing = wanted.filter((ref) => !have.includes(ref)), extra = have.filter((ref) => !wanted.includes(ref));
  if (missing.length > 0 || extra.length > 0) {
    throw new ConfigError(ErrorCode.Config, `agent ${def.principal}: its definition subscribes to ${wanted.join(", ") || "nothing"}, ${layout.sources.principals} to ${have.join(", ") || "nothing"}${missing.length > 0 ? `; add ${missing.map((r) => `"${r}"`).join(", ")} to its "subscribes"` : ""}${extra.length > 0 ? `; ${extra.join(", ")} would have a durable nobody consumes: remove it there or subscribe to it here` : ""}`);
  }
  return declared;
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;

/** Refuses a definition that could only fail later, with the field named. */
function checkDefinition(def: AgentDefinition): void {
  const problems: string[] = [];
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(def.principal)) problems.push(`principal "${def.principal}" is not a lowercase [a-z0-9_-] name`);
  if (!/^[a-z0-9_-]+$/.test(def.capability)) problems.push(`capability "${def.capability}" is not a lowercase [a-z0-9_-] token`);
  if (!Number.isSafeInteger(def.major) || def.major < 0) problems.push(`major ${def.major} is not a non-negative integer`);
  if (!SEMVER.test(def.version)) problems.push(`version "${def.version}" is not semver (e.g. 1.0.0)`);
  if (def.concurrency !== undefined && (!Number.isSafeInteger(def.concurrency) || def.concurrency < 1)) problems.push(`concurrency ${def.concurrency} must be a positive integer`);
  if (Object.keys(def.accepts).length === 0) problems.push("accepts names no event type");
  if (problems.length > 0) throw new ConfigError(ErrorCode.Config, `agent definition: ${problems.join("; ")}`);
}

/** Trace and span ids for log lines: the process span's, or the event's own traceparent when telemetry is off. */
function spanIds(span: ReturnType<typeof startProcessSpan>, event: CloudEvent): { traceId?: string; spanId?: string } {
  const c = span.spanContext();
  if (c.traceId && !/^0+$/.test(c.traceId)) return { traceId: c.traceId, spanId: c.spanId };
  const p = parseTraceparent(event.extensions.traceparent);
  return p ? { traceId: p.traceId, spanId: p.spanId } : {};
}

/** Registers the agent as a NATS micro service: `nats micro ls` lists it, `nats micro stats` shows its counters. */
async function registerService(nc: NatsConnection, def: AgentDefinition, inlets: readonly Inlet[], stats: () => AgentStats, on: { subjects: MeshSubjects; log: Logger }): Promise<Service> {
  const [capability, ...subscriptions] = inlets;
  const service = await new Svcm(nc).add({
    name: def.principal,
    version: def.version,
    description: def.description,
    metadata: {
      capability: `${def.capability}.v${def.major}`, subject: capability!.subject, consumer: capability!.durable, accepts: Object.keys(def.accepts).join(","),
      emits: Object.keys(def.emits).join(","), ...(subscriptions.length > 0 && { subscribes: subscriptions.map((i) => i.subject).join(",") }),
    },
    statsHandler: () => Promise.resolve(stats()),
  });
  // The stats endpoint on the agent's control subject: `nats req mesh.ctl.<principal>.stats ''`.
  addControlEndpoint(service, agentStatsEndpoint(def.principal), { ...on, handle: () => Promise.resolve(stats()) });
  return service;
}
