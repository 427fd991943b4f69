// The control plane's routing by version (issue 15, items 3, 5 and 6): the coordinator is the only writer of the
// route tables (KV causeway_routes, read by every producer and agent through kit routing.ts). It
//
// - starts a rollout on request (`causeway rollout start research.v1 --candidate 1.1.0`): the candidate gets a
//   lane and the first step's share of new flows; every second it judges the candidate against the stable
//   version on the health figures of its window (health.ts), advances a step after each interval while the
//   candidate is healthy, promotes it after the last, and rolls it back on its own when the candidate's failure
//   or quarantine rate exceeds the stable one's by the margin (over at least `minFlows` inputs), its p95 latency
//   exceeds the stable one's times the ratio, or it has no live instance left;
// - runs the stable version's circuit when the capability has a fallback: opened when the stable version has no
//   live instance or fails more than half its inputs, half-open after a cool-down (a probe share of new flows
//   tries it again), closed when the probe succeeds;
// - frees the lane of a retiring version once its durable is drained (and, after a promotion, once the old
//   version's flows that began before had time to end).
//
// Every change is a compare-and-set of the table and a signed decision.rollout carrying the figures it was
// taken on; its id derives from the table revision it replaces, so two coordinator replicas make one decision.
import type { KV } from "@nats-io/kv";
import {
  CausewayError, DecisionKind, ErrorCode, decisionSchema, KvBucket, LANES, StreamName, addControlEndpoint, decisionEvent, ensureConsumer, isWrongRevision,
  MsgIdKind, PRIORITIES, laneDurable, msgId, openMeshBucket, parseRouteTable, publishDecision, routeKey, watchRouteTables, type Lane, type RolloutPlan, type RouteTable,
} from "../kit/index.ts";
import {
  requesterOf, rolloutFallback, rolloutPause, rolloutPromote, rolloutResume, rolloutRollback, rolloutStart, rolloutStatus,
  type FallbackRequest, type RolloutReply, type RolloutRequest, type RolloutStartRequest, type RoutingState, type VersionHealth,
} from "./contract.ts";
import type { HealthView } from "./health.ts";
import type { CoordinatorDeps, CoordinatorModule } from "./module.ts";

/** Defaults of a rollout request (contract.ts RolloutStartRequest). */
export const ROLLOUT_DEFAULTS = Object.freeze({ steps: [5, 25, 50, 100], intervalMs: 60_000, maxRateMargin: 0.1, maxLatencyRatio: 2, minFlows: 20 });

/** The stable version's circuit (with a fallback): when it opens, how long it stays open, how it is probed. */
export const CIRCUIT_DEFAULTS = Object.freeze({
  /** Opened when the stable version fails more than this share of its inputs … */
  maxFailureRate: 0.5,
  /** … over at least this many in the window (or has no live instance at all). */
  minRuns: 10,
  /** Open this long before a probe. */
  coolDownMs: 15_000,
  /** Half-open: this share of new flows (0–100) tries the stable version. */
  probeShare: 10,
  /** Half-open: closed once the stable version handled this many inputs in the window without tripping again. */
  probeRuns: 3,
});

/** The circuit's settings: {@link CIRCUIT_DEFAULTS}'s fields. */
export type CircuitSettings = { readonly [K in keyof typeof CIRCUIT_DEFAULTS]: number };

/** How often the coordinator judges rollouts and circuits. */
const TICK_MS = 1_000;
/** After a promotion the old version keeps the flows that began on it this long before its lane is freed (if drained). */
const RETIRE_PINNED_MS = 10 * 60_000;
const CAS_ATTEMPTS = 5;
/** How long a change waits for the coordinator's own watch of the tables to show it. */
const WATCH_CATCH_UP_MS = 2_000;
/** Inputs moved per judgement when a lane is handed over. */
const HANDOVER_BATCH = 256;

type Action = "start" | "step" | "pause" | "resume" | "promote" | "rollback" | "fallback-set" | "fallback-cleared" | "circuit-open" | "circuit-half-open" | "circuit-closed" | "retired" | "handover";

/** What a change records besides the table after it. */
interface Change {
  readonly action: Action;
  readonly reason: string;
  readonly automatic: boolean;
  readonly operator?: string;
  readonly principal?: string;
  readonly version?: string;
  readonly moved?: number;
  readonly figures?: Partial<Record<"candidate" | "stable" | "fallback", VersionHealth>>;
}

export type RolloutModule = CoordinatorModule;

/**
 * Starts the module; `health` is the health module's view (the figures every decision is taken on). `opts.circuit`
 * overrides the circuit's settings (tests shorten the cool-down).
 */
export async function start(deps: CoordinatorDeps & { readonly health: HealthView }, opts: { circuit?: Partial<CircuitSettings> } = {}): Promise<RolloutModule> {
  const CIRCUIT = { ...CIRCUIT_DEFAULTS, ...opts.circuit };
  const log = deps.log.child({ module: "rollout" });
  const { health, layout } = deps;
  const kv: KV = await openMeshBucket(deps.nc, KvBucket.Routes, "version routes");
  const tables = await watchRouteTables(deps.nc, { log });
  // Revisions restart when the bucket is recreated: its creation time keeps decision ids of two incarnations apart.
  const bucketBorn = (await kv.status()).streamInfo.created;
  const requester = requesterOf(layout.principals, rolloutStart);

  const capabilityOf = (ref: string) => {
    const cap = Object.hasOwn(layout.principals.capabilities, ref) ? layout.principals.capabilities[ref] : undefined;
    if (!cap) throw new CausewayError(ErrorCode.RolloutInvalid, `unknown capability ${ref}: ${layout.principals.source} declares ${Object.keys(layout.principals.capabilities).join(", ")}`);
    return cap;
  };
  const stateOf = (ref: string): RoutingState => {
    const cap = capabilityOf(ref);
    return { capability: ref, table: tables.get(cap.name, cap.major) ?? null, health: health.of(ref) };
  };
  const figure = (ref: string, version: string | undefined) => (version === undefined ? undefined : health.of(ref).find((h) => h.version === version));

  /**
   * Applies `decide` to the capability's table by compare-and-set and signs the change. `decide` returns the next
   * table and what the change is, or undefined for no change; it may throw to refuse a request.
   */
  const change = async (ref: string, decide: (current: RouteTable | undefined) => { next: RouteTable; change: Change } | undefined): Promise<string | null> => {
    const cap = capabilityOf(ref);
    const key = routeKey(cap.name, cap.major);
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const entry = await kv.get(key);
      const current = entry && entry.operation === "PUT" ? parseRouteTable(entry.string(), ref) : undefined;
      const decided = decide(current);
      if (decided === undefined) return null;
      const { next, change: c } = decided;
      const replaces = entry?.revision ?? 0;
      const table: RouteTable = { ...next, updatedAt: new Date().toISOString(), reason: c.reason };
      const text = JSON.stringify(table);
      parseRouteTable(text, ref); // never write a table readers would refuse
      const data = {
        action: c.action, capability: ref, stable: table.stable, automatic: c.automatic, reason: c.reason,
        ...(table.candidate && { candidate: table.candidate.version, share: table.candidate.share }),
        ...(c.action === "rollback" && current?.candidate && { candidate: current.candidate.version, share: 0 }),
        ...(table.fallback !== undefined && { fallback: table.fallback }),
        ...(c.version !== undefined && { version: c.version }), ...(c.moved !== undefined && { moved: c.moved }), ...(c.operator !== undefined && { operator: c.operator }),
        ...(c.principal !== undefined && { principal: c.principal }), ...(c.figures && { figures: slimFigures(c.figures) }),
      };
      deps.schemas.validate(decisionSchema(DecisionKind.Rollout), data);
      const decision = decisionEvent(DecisionKind.Rollout, data, { principal: deps.principal, key: deps.key, idKey: `${KvBucket.Routes}/${bucketBorn}/${key}/${replaces}` });
      let revision: number;
      try {
        revision = entry === null ? await kv.create(key, text) : await kv.update(key, text, replaces);
      } catch (err) {
        if (isWrongRevision(err)) continue; // changed meanwhile (a create finds the key too): decide again on what is there
        throw err;
      }
      await publishDecision(deps.js, DecisionKind.Rollout, decision, deps.subjects.prefix, { principal: deps.principal, key: deps.key, jsm: deps.jsm });
      log.info({ capability: ref, action: c.action, automatic: c.automatic, stable: table.stable, candidate: table.candidate, reason: c.reason, decision: decision.id }, "routing changed");
      // Replies and the next judgement read the followed tables: they wait until the watch has this revision.
      await tables.caughtUp(revision, WATCH_CATCH_UP_MS);
      return decision.id;
    }
    throw new CausewayError(ErrorCode.Unavailable, `the route table of ${ref} kept changing under the coordinator; try again`);
  };

  /** The lane of a version: its own in the table, else the first lane neither the table's `kept` versions nor `taken` use. */
  const laneFor = (table: RouteTable | undefined, version: string, kept: readonly string[], taken: readonly Lane[] = []): Lane => {
    const own = table?.lanes[version];
    if (own !== undefined) return own;
    const used = new Set<Lane>([...Object.entries(table?.lanes ?? {}).filter(([v]) => kept.includes(v)).map(([, l]) => l), ...taken]);
    const free = LANES.find((l) => !used.has(l));
    if (free === undefined) throw new CausewayError(ErrorCode.RolloutInvalid, `${table?.capability}: every lane is taken (${Object.entries(table?.lanes ?? {}).map(([v, l]) => `${v} on ${l}`).join(", ")}); wait for a retiring version to drain`);
    return free;
  };
  /** Makes sure a lane's durables (one per priority) exist before anything is routed to it, so nothing published there predates them. */
  const ensureLane = async (ref: string, lane: Lane) => {
    const cap = capabilityOf(ref);
    for (const priority of PRIORITIES) {
      await ensureConsumer(deps.jsm, StreamName.Cap, layout.laneConsumer(cap.name, cap.major, lane, priority));
    }
  };
  const lanesWithout = (table: RouteTable, drop: string) => Object.fromEntries(Object.entries(table.lanes).filter(([v]) => v !== drop));
  const who = (r: { operator?: string }) => ({ ...(r.operator !== undefined && { operator: r.operator }), ...(requester !== undefined && { principal: requester }) });

  const startRollout = async (r: RolloutStartRequest): Promise<RolloutReply> => {
    capabilityOf(r.capability);
    const live = health.of(r.capability).filter((h) => h.liveInstances > 0).map((h) => h.version);
    if (!live.includes(r.candidate)) throw new CausewayError(ErrorCode.RolloutInvalid, `no live instance of ${r.capability} ${r.candidate}: start it first (\`causeway agents\` lists what runs)`);
    // The lanes are made before the table routes anything to them.
    const current = stateOf(r.capability).table ?? undefined;
    const stable = current?.stable ?? r.stable ?? (() => {
      const others = live.filter((v) => v !== r.candidate);
      if (others.length !== 1) throw new CausewayError(ErrorCode.RolloutInvalid, `name the stable version (--stable): live versions of ${r.capability} are ${live.join(", ")}`);
      return others[0]!;
    })();
    if (r.stable !== undefined && current !== undefined && r.stable !== current.stable) throw new CausewayError(ErrorCode.RolloutInvalid, `${r.capability}'s stable version is ${current.stable}, not ${r.stable}`);
    if (stable === r.candidate) throw new CausewayError(ErrorCode.RolloutInvalid, `the candidate ${r.candidate} is the stable version already`);
    const keep = [stable, ...(current?.fallback !== undefined ? [current.fallback] : []), ...(current?.retiring ?? []).filter((x) => x.version !== r.candidate).map((x) => x.version)];
    const stableLane = laneFor(current, stable, keep);
    const candidateLane = laneFor(current, r.candidate, keep, [stableLane]);
    await ensureLane(r.capability, stableLane);
    await ensureLane(r.capability, candidateLane);
    const steps = r.steps ?? ROLLOUT_DEFAULTS.steps;
    const now = new Date().toISOString();
    const id = await change(r.capability, (cur) => {
      if (cur?.rollout !== undefined || cur?.candidate !== undefined) throw new CausewayError(ErrorCode.RolloutConflict, `a rollout of ${r.capability} to ${cur.candidate?.version} is in progress: promote, roll back or wait for it`);
      const plan: RolloutPlan = {
        steps, step: 0, intervalMs: r.intervalMs ?? ROLLOUT_DEFAULTS.intervalMs, stepStartedAt: now, paused: false,
        maxRateMargin: r.maxRateMargin ?? ROLLOUT_DEFAULTS.maxRateMargin, maxLatencyRatio: r.maxLatencyRatio ?? ROLLOUT_DEFAULTS.maxLatencyRatio,
        minFlows: r.minFlows ?? ROLLOUT_DEFAULTS.minFlows, by: r.operator ?? "", id: `${r.capability}@${r.candidate}/${now}`,
      };
      const retiring = (cur?.retiring ?? []).filter((x) => x.version !== r.candidate && x.version !== stable);
      const lanes = { ...Object.fromEntries(Object.entries(cur?.lanes ?? {}).filter(([v]) => retiring.some((x) => x.version === v) || v === cur?.fallback)), [stable]: stableLane, [r.candidate]: candidateLane };
      return {
        next: { capability: r.capability, stable, candidate: { version: r.candidate, share: steps[0]! }, retiring, ...(cur?.fallback !== undefined && { fallback: cur.fallback }), ...(cur?.circuit && { circuit: cur.circuit }), rollout: plan, lanes, updatedAt: now, reason: "" },
        change: { action: "start", automatic: false, reason: r.reason ?? `rollout of ${r.candidate} by steps ${steps.join(", ")} every ${(plan.intervalMs / 1000).toFixed(0)} s`, ...who(r), figures: { candidate: figure(r.capability, r.candidate), stable: figure(r.capability, stable) } as Change["figures"] },
      };
    });
    return { ...stateOf(r.capability), decision_id: id };
  };

  /** The table after the candidate is rolled back: no more work for it, even of flows that began on it; its lane drained. */
  const rolledBack = (cur: RouteTable): RouteTable => {
    const { candidate, rollout: _rollout, ...rest } = cur;
    return { ...rest, retiring: [...cur.retiring.filter((x) => x.version !== candidate!.version), { version: candidate!.version, keepsFlows: false, since: new Date().toISOString() }] };
  };
  /** The table after the candidate becomes the stable version: the old one keeps the flows that began on it for a while. */
  const promoted = (cur: RouteTable): RouteTable => {
    const { candidate, rollout: _rollout, circuit: _circuit, ...rest } = cur;
    return { ...rest, stable: candidate!.version, retiring: [...cur.retiring.filter((x) => x.version !== candidate!.version), { version: cur.stable, keepsFlows: true, since: new Date().toISOString() }] };
  };

  const operate = (action: "promote" | "rollback" | "pause" | "resume") => async (r: RolloutRequest): Promise<RolloutReply> => {
    const id = await change(r.capability, (cur) => {
      if (cur?.candidate === undefined || cur.rollout === undefined) throw new CausewayError(ErrorCode.RolloutConflict, `no rollout of ${r.capability} is in progress`);
      if ((action === "pause" && cur.rollout.paused) || (action === "resume" && !cur.rollout.paused)) return undefined;
      const figures = { candidate: figure(r.capability, cur.candidate.version), stable: figure(r.capability, cur.stable) } as Change["figures"];
      const c: Change = { action, automatic: false, reason: r.reason ?? `${action} by request`, ...who(r), figures };
      switch (action) {
        case "promote": return { next: promoted(cur), change: c };
        case "rollback": return { next: rolledBack(cur), change: c };
        default: return { next: { ...cur, rollout: { ...cur.rollout, paused: action === "pause", ...(action === "resume" && { stepStartedAt: new Date().toISOString() }) } }, change: c };
      }
    });
    return { ...stateOf(r.capability), decision_id: id };
  };

  /** The stable version of a capability not routed yet: named, or the one live version besides `besides`. */
  const impliedStable = (ref: string, named: string | undefined, besides: string): string => {
    if (named !== undefined) return named;
    const others = health.of(ref).filter((h) => h.liveInstances > 0 && h.version !== besides).map((h) => h.version);
    if (others.length !== 1) throw new CausewayError(ErrorCode.RolloutInvalid, `name the stable version (--stable): live versions of ${ref} besides ${besides} are ${others.join(", ") || "none"}`);
    return others[0]!;
  };

  const setFallback = async (r: FallbackRequest): Promise<RolloutReply> => {
    capabilityOf(r.capability);
    const current = stateOf(r.capability).table ?? undefined;
    if (r.version === null && current === undefined) throw new CausewayError(ErrorCode.RolloutConflict, `${r.capability} is not routed by version: it has no fallback`);
    let lanes: Record<string, Lane> = {};
    let stable = current?.stable;
    if (r.version !== null) {
      if (!health.of(r.capability).some((h) => h.version === r.version && h.liveInstances > 0)) {
        throw new CausewayError(ErrorCode.RolloutInvalid, `no live instance of ${r.capability} ${r.version}: start it before naming it the fallback`);
      }
      stable ??= impliedStable(r.capability, r.stable, r.version);
      if (r.version === stable || r.version === current?.candidate?.version) throw new CausewayError(ErrorCode.RolloutInvalid, `${r.version} is ${r.version === stable ? "the stable version" : "the candidate"} of ${r.capability}: a fallback is another version`);
      const kept = Object.keys(current?.lanes ?? {}).filter((v) => v !== current?.fallback);
      const stableLane = laneFor(current, stable, kept);
      const fallbackLane = laneFor(current, r.version, kept, [stableLane]);
      await ensureLane(r.capability, stableLane);
      await ensureLane(r.capability, fallbackLane);
      lanes = { [stable]: stableLane, [r.version]: fallbackLane };
    }
    const id = await change(r.capability, (cur) => {
      if ((cur?.fallback ?? null) === r.version) return undefined;
      const c: Change = { action: r.version === null ? "fallback-cleared" : "fallback-set", automatic: false, reason: r.reason ?? (r.version === null ? "fallback cleared" : `fallback ${r.version}`), ...who(r), ...(r.version !== null && { version: r.version }) };
      if (cur === undefined) {
        return { next: { capability: r.capability, stable: stable!, retiring: [], fallback: r.version!, lanes, updatedAt: "", reason: "" }, change: c };
      }
      const { fallback: old, circuit: _circuit, ...rest } = cur;
      const kept = old === undefined ? { ...cur.lanes } : lanesWithout(cur, old);
      return { next: r.version === null ? { ...rest, lanes: kept } : { ...rest, fallback: r.version, lanes: { ...kept, ...lanes } }, change: c };
    });
    return { ...stateOf(r.capability), decision_id: id };
  };

  /**
   * Moves what waits on `from`'s lane to `to`'s lane: the version that should have run it has no live instance, so
   * it would wait there for good. Each input keeps its bytes and headers (the producer's signature) and is stored
   * on the new lane under the coordinator's message id for its place in the stream before it is acked on the old
   * one, so a coordinator that dies in between stores it once. A copy the old version had half done is absorbed
   * like any redelivery (derived output ids, the processed set).
   */
  const handOver = async (table: RouteTable, from: string, to: string, why: string) => {
    const cap = capabilityOf(table.capability);
    const [fromLane, toLane] = [table.lanes[from], table.lanes[to]];
    if (fromLane === undefined || toLane === undefined) return;
    let moved = 0;
    // Each priority's durable to the same priority's on the new lane (issue 16): the work keeps its place in line.
    for (const priority of PRIORITIES) {
      const durable = laneDurable(cap.name, cap.major, fromLane, priority);
      const info = await deps.jsm.consumers.info(StreamName.Cap, durable).catch(() => undefined);
      if (info === undefined || info.num_pending === 0) continue; // delivered but unacked work comes back after ack_wait
      const target = deps.subjects.lane(cap.name, cap.major, toLane, priority);
      const consumer = await deps.js.consumers.get(StreamName.Cap, durable);
      for await (const m of await consumer.fetch({ max_messages: HANDOVER_BATCH, expires: 2_000 })) {
        await deps.js.publish(target, m.data, { headers: m.headers, msgID: msgId(deps, MsgIdKind.Handover, m.info.stream, m.seq) });
        await m.ackAck();
        moved++;
      }
    }
    if (moved === 0) return;
    await change(table.capability, (cur) => (cur === undefined ? undefined : {
      next: cur, change: { action: "handover", automatic: true, version: from, moved, reason: `${moved} input(s) waiting on ${from}'s lane ${fromLane} moved to ${to}'s lane ${toLane}: ${why}` },
    }));
  };

  /** One judgement of one table: a rollout step, rollback or promotion, a circuit change, a freed lane. */
  const judge = async (table: RouteTable) => {
    const ref = table.capability;
    const now = Date.now();
    const stable = figure(ref, table.stable);
    // The rollout
    if (table.rollout !== undefined && table.candidate !== undefined && !table.rollout.paused) {
      const plan = table.rollout;
      const candidate = figure(ref, table.candidate.version);
      const figures = { candidate, stable } as Change["figures"];
      const verdict = judgeCandidate(plan, candidate, stable, now - Date.parse(plan.stepStartedAt));
      if (verdict.kind === "rollback") {
        await change(ref, (cur) => (cur?.rollout?.id === plan.id && cur.candidate ? { next: rolledBack(cur), change: { action: "rollback", automatic: true, reason: verdict.reason, figures } } : undefined));
        return;
      }
      if (verdict.kind === "advance") {
        await change(ref, (cur) => {
          if (cur?.rollout?.id !== plan.id || cur.rollout.step !== plan.step || !cur.candidate) return undefined;
          if (plan.step === plan.steps.length - 1) return { next: promoted(cur), change: { action: "promote", automatic: true, reason: `healthy through every step (${plan.steps.join(", ")}): ${verdict.reason}`, figures } };
          const step = plan.step + 1;
          return {
            next: { ...cur, candidate: { ...cur.candidate, share: plan.steps[step]! }, rollout: { ...plan, step, stepStartedAt: new Date().toISOString() } },
            change: { action: "step", automatic: true, reason: `${plan.steps[plan.step]} → ${plan.steps[step]} %: ${verdict.reason}`, figures },
          };
        });
        return;
      }
    }
    // The stable version's circuit
    if (table.fallback !== undefined) {
      const fallback = figure(ref, table.fallback);
      const figures = { stable, fallback } as Change["figures"];
      const tripped = stable === undefined || stable.liveInstances === 0
        ? `no live instance of ${table.stable}`
        : stable.handled + stable.failed >= CIRCUIT.minRuns && stable.failureRate > CIRCUIT.maxFailureRate ? `${table.stable} failed ${pct(stable.failureRate)} of ${stable.handled + stable.failed} runs` : undefined;
      const state = table.circuit?.state ?? "closed";
      const since = table.circuit ? now - Date.parse(table.circuit.since) : 0;
      const set = (circuit: RouteTable["circuit"], action: Action, reason: string) => change(ref, (cur) => {
        if (cur === undefined || cur.fallback !== table.fallback || (cur.circuit?.state ?? "closed") !== state) return undefined;
        const { circuit: _old, ...rest } = cur;
        return { next: circuit === undefined ? rest : { ...rest, circuit }, change: { action, automatic: true, reason, figures } };
      });
      const at = new Date().toISOString();
      if (state === "closed" && tripped !== undefined) return void (await set({ state: "open", since: at, probeShare: CIRCUIT.probeShare }, "circuit-open", `new flows go to ${table.fallback}: ${tripped}`));
      if (state === "open" && since >= CIRCUIT.coolDownMs && stable !== undefined && stable.liveInstances > 0) {
        return void (await set({ state: "half-open", since: at, probeShare: CIRCUIT.probeShare, probeBaseline: stable.handled }, "circuit-half-open", `${table.stable} is live again: ${CIRCUIT.probeShare} % of new flows probe it`));
      }
      if (state === "half-open") {
        if (tripped !== undefined) return void (await set({ state: "open", since: at, probeShare: CIRCUIT.probeShare }, "circuit-open", `the probe failed: ${tripped}`));
        const probed = (stable?.handled ?? 0) - (table.circuit?.probeBaseline ?? 0);
        if (probed >= CIRCUIT.probeRuns) return void (await set(undefined, "circuit-closed", `${table.stable} handled ${probed} probe inputs, failing ${pct(stable!.failureRate)} in the window: new flows go to it again`));
      }
    }
    // Work waiting for a version with no live instance goes where that version's flows go now.
    const liveNow = (v: string) => (figure(ref, v)?.liveInstances ?? 0) > 0;
    const heir = table.circuit?.state === "open" && table.fallback !== undefined ? table.fallback : table.stable;
    for (const r of table.retiring) if (!liveNow(r.version) && liveNow(heir)) await handOver(table, r.version, heir, `${r.version} takes no new flows and has no live instance`);
    if (table.circuit?.state === "open" && table.fallback !== undefined && !liveNow(table.stable) && liveNow(table.fallback)) {
      await handOver(table, table.stable, table.fallback, `the circuit of ${table.stable} is open and it has no live instance`);
    }
    // Retiring versions whose lanes have drained
    for (const r of table.retiring) {
      if (r.keepsFlows && now - Date.parse(r.since) < RETIRE_PINNED_MS) continue;
      const lane = table.lanes[r.version];
      if (lane === undefined) continue;
      const cap = capabilityOf(ref);
      // Drained on every priority's durable of the lane.
      const infos = await Promise.all(PRIORITIES.map((p) => deps.jsm.consumers.info(StreamName.Cap, laneDurable(cap.name, cap.major, lane, p)).catch(() => undefined)));
      if (infos.some((info) => info !== undefined && (info.num_pending > 0 || info.num_ack_pending > 0))) continue;
      await change(ref, (cur) => (cur?.retiring.some((x) => x.version === r.version)
        ? { next: { ...cur, retiring: cur.retiring.filter((x) => x.version !== r.version), lanes: lanesWithout(cur, r.version) }, change: { action: "retired", automatic: true, version: r.version, reason: `${r.version}'s lane ${lane} is drained: freed` } }
        : undefined));
    }
  };

  let ticking = false;
  const timer = setInterval(() => {
    if (ticking) return; // one judgement at a time: a slow server must not pile them up
    ticking = true;
    void (async () => {
      for (const table of tables.all()) {
        await judge(table).catch((err: unknown) => log.warn({ err, capability: table.capability }, "routing judgement failed; trying again next tick"));
      }
    })().finally(() => { ticking = false; });
  }, TICK_MS);
  timer.unref();

  const on = { subjects: deps.subjects, log };
  addControlEndpoint(deps.service, rolloutStart, { ...on, handle: startRollout });
  addControlEndpoint(deps.service, rolloutStatus, {
    ...on,
    handle: async (r) => ({ capabilities: r.capability !== undefined ? [stateOf(r.capability)] : tables.all().map((t) => stateOf(t.capability)) }),
  });
  addControlEndpoint(deps.service, rolloutPromote, { ...on, handle: operate("promote") });
  addControlEndpoint(deps.service, rolloutRollback, { ...on, handle: operate("rollback") });
  addControlEndpoint(deps.service, rolloutPause, { ...on, handle: operate("pause") });
  addControlEndpoint(deps.service, rolloutResume, { ...on, handle: operate("resume") });
  addControlEndpoint(deps.service, rolloutFallback, { ...on, handle: setFallback });

  return {
    name: "rollout",
    lost: tables.lost,
    async stop() {
      clearInterval(timer);
      await tables.close();
    },
  };
}

type Verdict = { kind: "rollback"; reason: string } | { kind: "advance"; reason: string } | { kind: "wait" };

/**
 * Judges a candidate against the stable version (pure): roll back when it has no live instance, or — over at
 * least `minFlows` inputs — its failure or quarantine rate exceeds the stable one's by more than the margin, or
 * its p95 latency exceeds the stable one's times the ratio; advance when the step's interval has passed and it
 * ran at least `minFlows` inputs without any of that; otherwise wait.
 */
export function judgeCandidate(plan: RolloutPlan, candidate: VersionHealth | undefined, stable: VersionHealth | undefined, stepAgeMs: number): Verdict {
  if (candidate === undefined || candidate.liveInstances === 0) return { kind: "rollback", reason: "the candidate has no live instance" };
  const runs = candidate.handled + candidate.failed + candidate.quarantined;
  if (runs >= plan.minFlows) {
    const base = { failureRate: stable?.failureRate ?? 0, quarantineRate: stable?.quarantineRate ?? 0 };
    if (candidate.failureRate > base.failureRate + plan.maxRateMargin) {
      return { kind: "rollback", reason: `failure rate ${pct(candidate.failureRate)} over ${runs} runs against the stable version's ${pct(base.failureRate)} (margin ${pct(plan.maxRateMargin)})` };
    }
    if (candidate.quarantineRate > base.quarantineRate + plan.maxRateMargin) {
      return { kind: "rollback", reason: `quarantine rate ${pct(candidate.quarantineRate)} over ${runs} runs against the stable version's ${pct(base.quarantineRate)} (margin ${pct(plan.maxRateMargin)})` };
    }
    if (candidate.p95Ms !== null && stable?.p95Ms != null && stable.p95Ms > 0 && candidate.p95Ms > stable.p95Ms * plan.maxLatencyRatio) {
      return { kind: "rollback", reason: `p95 latency ${candidate.p95Ms.toFixed(0)} ms against the stable version's ${stable.p95Ms.toFixed(0)} ms (ratio ${plan.maxLatencyRatio})` };
    }
    if (stepAgeMs >= plan.intervalMs) {
      return { kind: "advance", reason: `${runs} runs, failure ${pct(candidate.failureRate)}, quarantine ${pct(candidate.quarantineRate)}, p95 ${candidate.p95Ms?.toFixed(0) ?? "-"} ms` };
    }
  }
  return { kind: "wait" };
}

function pct(rate: number): string {
  return `${(rate * 100).toFixed(1)} %`;
}

/** The figures a decision carries: the fields its schema names. */
function slimFigures(f: NonNullable<Change["figures"]>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(f).filter(([, h]) => h !== undefined).map(([k, h]) => [k, {
    version: h!.version, windowMs: h!.windowMs, liveInstances: h!.liveInstances, handled: h!.handled, failed: h!.failed, quarantined: h!.quarantined,
    failureRate: h!.failureRate, quarantineRate: h!.quarantineRate, p50Ms: h!.p50Ms, p95Ms: h!.p95Ms,
  }]));
}
