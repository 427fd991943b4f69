// Kill switches: pause a capability, an agent principal or the whole mesh, and resume it. A pause writes the
// flag agents watch (KV causeway_switches), pauses the JetStream consumers concerned until the expiry (so the
// server stops delivering within a pull), and is a signed decision.switch; resume is the reverse. Requests
// arrive on `<prefix>.ctl.coordinator.{pause,resume,status}` from the operator (`causeway pause …`, `nats req`).
//
// A consumer's pause is derived, never toggled: it stays paused while any switch covering it is on (the mesh,
// the capability, or a principal serving the capability), until the latest of their expiries. Writes are
// compare-and-set on the key's revision, and a decision's id is derived from (bucket, key, revision it
// replaces), so two coordinator replicas cannot emit two decisions for one transition. Expiries are enforced
// by a timer in every replica (the loser of the race finds the key changed) and by isPaused ignoring them.
import type { KvEntry } from "@nats-io/kv";
import {
  CausewayError, DecisionKind, ErrorCode, KvBucket, StreamName, addControlEndpoint, capabilityDurable, parseFactRef, subscriptionDurable, isConsumerNotFound, isWrongRevision, decisionEvent, decisionSchema, normalizeTime, openMeshBucket, publishDecision, type Principals, MESH_TARGET, PAUSED_UNTIL_RESUMED, SwitchScope, encodeSwitch, parseSwitch, parseSwitchKey, switchExpiry, switchKey, watchSwitches, type SwitchScopeValue, type SwitchState, type SwitchValue,
} from "../kit/index.ts";
import {
  SwitchAction, requesterOf, pause as pauseEndpoint, resume as resumeEndpoint, status as statusEndpoint,
  type ConsumerSwitch, type SwitchReply, type SwitchRequest, type SwitchStatus, type SwitchStatusReply,
} from "./contract.ts";
import type { CoordinatorDeps, CoordinatorModule, StartModule } from "./module.ts";

const FOREVER = new Date(PAUSED_UNTIL_RESUMED);
/** setTimeout's limit; longer expiries re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_REASON = 2000;
const MAX_OPERATOR = 100;
const CAS_ATTEMPTS = 5;
/** The reason of a resume the coordinator makes when a pause expires. */
export const EXPIRED_REASON = "expired";
const DEFAULT_RESUME_REASON = "resumed";

/** A JetStream consumer a switch may pause. */
interface ConsumerRef {
  readonly stream: string;
  readonly name: string;
  /** The switch keys that pause it. */
  readonly coveredBy: readonly string[];
}

/** A validated switch target. */
interface Target {
  readonly scope: SwitchScopeValue;
  readonly target: string;
  readonly key: string;
  readonly consumers: readonly ConsumerRef[];
}

export const start: StartModule = async (deps: CoordinatorDeps): Promise<CoordinatorModule> => {
  const log = deps.log.child({ module: "switches" });
  const principals = deps.layout.principals;
  const consumers = consumerMap(principals);
  // Missing, it is named with the command that creates it (and a starting coordinator waits for it).
  const kv = await openMeshBucket(deps.nc, KvBucket.Switches, "kill switches");
  // Revisions restart when the bucket is recreated; its creation time keeps decision ids of one incarnation
  // from colliding with an earlier one's (lineage keeps one event per id).
  const bucketBorn = (await kv.status()).streamInfo.created;
  const watcher = await watchSwitches(deps.nc, { onProblem: (err) => log.warn({ err }, "kill switch problem") });
  // Who the server lets ask (the claimed `operator` name is free text): recorded in each decision as `principal`.
  const pausedBy = requesterOf(principals, pauseEndpoint);
  const resumedBy = requesterOf(principals, resumeEndpoint);
  for (const [e, who] of [[pauseEndpoint, pausedBy], [resumeEndpoint, resumedBy]] as const) {
    if (who === undefined) log.warn({ endpoint: e.action }, "several principals (or none) may request this endpoint: its decisions record only the claimed operator name");
  }
  const timers = new Map<string, NodeJS.Timeout>();
  let stopped = false;

  // One switch operation at a time in this process; replicas are kept apart by compare-and-set.
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(op: () => Promise<T>): Promise<T> => {
    const next = chain.then(op);
    chain = next.catch(() => undefined);
    return next;
  };

  /** The pause recorded under `key`, or undefined; an unreadable value counts as a pause without end (`unreadable` says why). */
  const read = async (key: string): Promise<{ entry: KvEntry | null; state: SwitchState | undefined; until: number; unreadable?: string }> => {
    const entry = await kv.get(key);
    if (entry === null || entry.operation !== "PUT") return { entry, state: undefined, until: 0 };
    try {
      const state = parseSwitch(key, entry.value);
      return { entry, state, until: state ? switchExpiry(state) : 0 };
    } catch (err) {
      return { entry, state: undefined, until: Infinity, unreadable: (err as Error).message };
    }
  };

  /** Pauses each consumer until the latest expiry of the switches on it, or resumes it when none is on. */
  const reconcile = async (refs: readonly ConsumerRef[]): Promise<ConsumerSwitch[]> => {
    const untilOf = new Map<string, Promise<number>>();
    const now = Date.now();
    const out: ConsumerSwitch[] = [];
    for (const ref of refs) {
      const untils = await Promise.all(ref.coveredBy.map((key) => {
        let p = untilOf.get(key);
        if (p === undefined) untilOf.set(key, (p = read(key).then((r) => r.until)));
        return p;
      }));
      const until = Math.max(0, ...untils);
      try {
        if (until > now) {
          const date = until === Infinity ? FOREVER : new Date(until);
          const r = await deps.jsm.consumers.pause(ref.stream, ref.name, date);
          out.push({ stream: ref.stream, name: ref.name, paused: r.paused, pause_until: r.paused ? (r.pause_until ?? date.toISOString()) : null });
        } else {
          const r = await deps.jsm.consumers.resume(ref.stream, ref.name);
          out.push({ stream: ref.stream, name: ref.name, paused: r.paused, pause_until: r.paused ? (r.pause_until ?? null) : null });
        }
      } catch (err) {
        if (!isConsumerNotFound(err)) throw err;
        out.push({ stream: ref.stream, name: ref.name, paused: false, pause_until: null, missing: true });
      }
    }
    return out;
  };

  const pause = async (req: SwitchRequest): Promise<SwitchReply> => {
    const t = resolveTarget(principals, consumers, req);
    const reason = text(req.reason, "reason", MAX_REASON);
    const operator = text(req.operator, "operator", MAX_OPERATOR);
    const now = new Date();
    let expiresAt: string | null = null;
    if (req.expires_at !== undefined) {
      expiresAt = rfc3339(req.expires_at, "expires_at");
      if (Date.parse(expiresAt) <= now.getTime()) throw invalid(`expires_at ${req.expires_at} is not in the future`);
      if (expiresAt > PAUSED_UNTIL_RESUMED) throw invalid(`expires_at ${req.expires_at} is later than ${PAUSED_UNTIL_RESUMED}: leave it out to pause until resumed`);
    }
    for (let attempt = 1; ; attempt++) {
      const { entry, state: previous, until } = await read(t.key);
      const revision = entry?.revision ?? 0;
      const data = {
        action: SwitchAction.Pause, scope: t.scope, target: t.target, reason, operator, ...(pausedBy !== undefined && { principal: pausedBy }), ...(expiresAt !== null && { expiresAt }),
      };
      deps.schemas.validate(decisionSchema(DecisionKind.Switch), data);
      const decision = decisionEvent(DecisionKind.Switch, data, { principal: deps.principal, key: deps.key, idKey: `${bucketBorn}/${t.key}/${revision}`, now });
      // Pausing what is already paused changes the reason, operator and expiry; it has been paused since then.
      const since = previous !== undefined && until > now.getTime() ? previous.at : now.toISOString();
      const value: SwitchValue = { paused: true, reason, by: operator, at: since, expires_at: expiresAt, decision_id: decision.id };
      try {
        await kv.put(t.key, encodeSwitch(value), { previousSeq: revision });
      } catch (err) {
        if (isWrongRevision(err) && attempt < CAS_ATTEMPTS) continue;
        throw err;
      }
      const paused = await reconcile(t.consumers);
      await publishDecision(deps.js, DecisionKind.Switch, decision, deps.subjects.prefix, deps);
      log.info({ scope: t.scope, target: t.target, reason, operator, expiresAt, decision: decision.id }, "paused");
      return { key: t.key, scope: t.scope, target: t.target, ...value, consumers: paused };
    }
  };

  /** Resumes `req`'s target. With `onlyIfExpired`, only a pause whose expiry has passed (the expiry timer). */
  const resume = async (req: SwitchRequest, onlyIfExpired = false): Promise<SwitchReply | undefined> => {
    const t = resolveTarget(principals, consumers, req);
    const reason = req.reason === undefined ? DEFAULT_RESUME_REASON : text(req.reason, "reason", MAX_REASON);
    const operator = text(req.operator, "operator", MAX_OPERATOR);
    if (req.expires_at !== undefined) throw invalid("expires_at applies to pause only");
    for (let attempt = 1; ; attempt++) {
      const now = new Date();
      const { entry, state, until } = await read(t.key);
      const recorded = entry !== null && entry.operation === "PUT" && (state !== undefined || until === Infinity);
      if (onlyIfExpired && (!recorded || until > now.getTime())) return undefined;
      if (!recorded) {
        // Nothing to resume: still bring the consumers in line, which repairs one paused by hand.
        const running = await reconcile(t.consumers);
        return { key: t.key, scope: t.scope, target: t.target, paused: false, reason, by: operator, at: now.toISOString(), expires_at: null, decision_id: null, consumers: running };
      }
      // An expired pause is resumed by the coordinator itself.
      const principal = onlyIfExpired ? deps.principal : resumedBy;
      const data = { action: SwitchAction.Resume, scope: t.scope, target: t.target, reason, operator, ...(principal !== undefined && { principal }) };
      deps.schemas.validate(decisionSchema(DecisionKind.Switch), data);
      const decision = decisionEvent(DecisionKind.Switch, data, { principal: deps.principal, key: deps.key, idKey: `${bucketBorn}/${t.key}/${entry.revision}`, now });
      try {
        await kv.delete(t.key, { previousSeq: entry.revision });
      } catch (err) {
        if (isWrongRevision(err) && attempt < CAS_ATTEMPTS) continue;
        throw err;
      }
      const running = await reconcile(t.consumers);
      await publishDecision(deps.js, DecisionKind.Switch, decision, deps.subjects.prefix, deps);
      log.info({ scope: t.scope, target: t.target, reason, operator, decision: decision.id }, "resumed");
      return { key: t.key, scope: t.scope, target: t.target, paused: false, reason, by: operator, at: now.toISOString(), expires_at: null, decision_id: decision.id, consumers: running };
    }
  };

  const status = async (): Promise<SwitchStatusReply> => {
    const now = Date.now();
    const keys: string[] = [];
    for await (const key of await kv.keys()) keys.push(key);
    const switches: SwitchStatus[] = [];
    for (const key of keys.sort(byScope)) {
      const { entry, state, until, unreadable } = await read(key);
      if (unreadable !== undefined && entry !== null) {
        // What agents see as a pause without end must show here too, with the repair.
        let where: { scope: SwitchScopeValue; target: string };
        try {
          where = parseSwitchKey(key);
        } catch {
          continue; // a key that is no switch pauses nothing
        }
        const refs = consumersOf(principals, consumers, where.scope, where.target);
        switches.push({
          key, ...where, paused: true, reason: `unreadable switch value (agents treat it as paused until it is repaired with \`causeway resume\`): ${unreadable}`,
          by: "", at: entry.created.toISOString(), expires_at: null, decision_id: "", unreadable: true,
          consumers: await Promise.all(refs.map((ref) => consumerState(deps, ref))),
        });
        continue;
      }
      if (state === undefined || until <= now) continue;
      const refs = consumersOf(principals, consumers, state.scope, state.target);
      switches.push({ ...state, consumers: await Promise.all(refs.map((ref) => consumerState(deps, ref))) });
    }
    return { switches };
  };

  // Expiry timers, armed from the watched bucket so every replica (and a restarted one) enforces them.
  const arm = (key: string, state: SwitchState | undefined): void => {
    clearTimeout(timers.get(key));
    timers.delete(key);
    if (stopped || state === undefined || state.expires_at === null) return;
    const remaining = switchExpiry(state) - Date.now();
    const timer = setTimeout(() => {
      timers.delete(key);
      if (switchExpiry(state) > Date.now()) return arm(key, state); // a long expiry, or a timer that fired early
      const { scope, target } = parseSwitchKey(key);
      serial(() => resume({ scope, target, reason: EXPIRED_REASON, operator: deps.principal }, true)).then(
        (r) => {
          if (r) log.info({ scope, target, decision: r.decision_id }, "pause expired; resumed");
          else log.debug({ scope, target }, "pause expired; already resumed (by another replica or an operator)");
        },
        (err: unknown) => {
          log.error({ err, key }, "could not resume an expired pause; retrying in a second");
          if (stopped || timers.has(key)) return; // a newer change has armed its own timer
          const retry = setTimeout(() => {
            timers.delete(key);
            arm(key, watcher.recorded().find((s) => s.key === key));
          }, 1_000);
          retry.unref();
          timers.set(key, retry);
        },
      );
    }, Math.min(Math.max(0, remaining), MAX_TIMER_MS));
    timer.unref();
    timers.set(key, timer);
  };
  const unsubscribe = watcher.onChange((change) => arm(change.key, change.state));
  for (const state of watcher.recorded()) arm(state.key, state);

  // Consumers created while the coordinator was down (or before it paused them) get their pause now.
  const inEffect = watcher.list();
  if (inEffect.length > 0) {
    const refs = uniqueRefs(inEffect.flatMap((s) => consumersOf(principals, consumers, s.scope, s.target)));
    await serial(() => reconcile(refs)).catch((err: unknown) => log.error({ err }, "could not re-apply the consumer pauses of the switches in effect"));
  }

  // Pause and resume run one at a time; a refusal (CW_ERR_SWITCH_INVALID) is the requester's mistake, anything else is logged.
  const serve = { subjects: deps.subjects, log };
  const endpoints = [
    addControlEndpoint(deps.service, pauseEndpoint, { ...serve, handle: (req) => serial(() => pause(req)) }),
    addControlEndpoint(deps.service, resumeEndpoint, { ...serve, handle: async (req) => (await serial(() => resume(req)))! }),
    addControlEndpoint(deps.service, statusEndpoint, { ...serve, handle: () => status() }),
  ];
  log.info({ inEffect: inEffect.length }, "kill switches ready");

  return {
    name: "switches",
    lost: watcher.lost,
    async stop() {
      stopped = true;
      await Promise.all(endpoints.map((e) => e.stop()));
      unsubscribe();
      for (const timer of timers.values()) clearTimeout(timer);
      timers.clear();
      await chain;
      await watcher.close();
    },
  };
};

/**
 * Each capability's consumer on MESH_CAP, each agent's subscription consumers on MESH_EVT, and the coordinator's
 * handoff consumer, with the keys covering each. An agent paused (by its principal, a capability it serves or the
 * mesh) stops taking facts too, so its subscriptions are covered by the same keys as its capability's consumer.
 */
function consumerMap(principals: Principals): { byCapability: Map<string, ConsumerRef>; byPrincipal: Map<string, ConsumerRef[]>; handoff: ConsumerRef } {
  const byCapability = new Map<string, ConsumerRef>();
  for (const cap of Object.values(principals.capabilities)) {
    const servers = Object.values(principals.principals).filter((p) => p.serves.includes(cap.ref)).map((p) => switchKey(SwitchScope.Principal, p.name));
    byCapability.set(cap.ref, Object.freeze({
      stream: StreamName.Cap, name: capabilityDurable(cap.name, cap.major),
      coveredBy: Object.freeze(["mesh", switchKey(SwitchScope.Capability, cap.ref), ...servers]),
    }));
  }
  const byPrincipal = new Map<string, ConsumerRef[]>();
  for (const p of Object.values(principals.principals)) {
    const coveredBy = Object.freeze(["mesh", switchKey(SwitchScope.Principal, p.name), ...p.serves.map((ref) => switchKey(SwitchScope.Capability, ref))]);
    byPrincipal.set(p.name, p.subscribes.map((ref) => Object.freeze({ stream: StreamName.Evt, name: subscriptionDurable(p.name, parseFactRef(ref)!), coveredBy })));
  }
  // The whole mesh paused holds critical work before a grant, too; a single capability is held by its consumer.
  const handoff = Object.freeze({ stream: StreamName.Handoff, name: handoffDurable(principals), coveredBy: Object.freeze(["mesh"]) });
  return { byCapability, byPrincipal, handoff };
}

function handoffDurable(principals: Principals): string {
  const c = Object.values(principals.principals).flatMap((p) => p.consumes).find((c) => c.stream === StreamName.Handoff && c.filter !== undefined);
  return c?.durable ?? "coordinator-handoff";
}

function consumersOf(principals: Principals, map: ReturnType<typeof consumerMap>, scope: SwitchScopeValue, target: string): ConsumerRef[] {
  switch (scope) {
    case SwitchScope.Capability: {
      const servers = Object.values(principals.principals).filter((p) => p.serves.includes(target));
      return [map.byCapability.get(target), ...servers.flatMap((p) => map.byPrincipal.get(p.name) ?? [])].filter((r) => r !== undefined);
    }
    case SwitchScope.Principal:
      return [...(principals.principals[target]?.serves ?? []).map((ref) => map.byCapability.get(ref)), ...(map.byPrincipal.get(target) ?? [])].filter((r) => r !== undefined);
    case SwitchScope.Mesh:
      return [...map.byCapability.values(), ...[...map.byPrincipal.values()].flat(), map.handoff];
  }
}

function uniqueRefs(refs: readonly ConsumerRef[]): ConsumerRef[] {
  return [...new Map(refs.map((r) => [`${r.stream}/${r.name}`, r])).values()];
}

/** Validates scope and target against principals.json: CW_ERR_SWITCH_INVALID naming what exists. */
function resolveTarget(principals: Principals, map: ReturnType<typeof consumerMap>, req: SwitchRequest): Target {
  const scope = req.scope;
  const target = scope === SwitchScope.Mesh && req.target === undefined ? MESH_TARGET : req.target;
  if (target === undefined || target === "") throw invalid(`target is required for scope ${scope}: ${scope === SwitchScope.Capability ? "<capability>.v<major>, e.g. research.v1" : "a principal, e.g. planner"}`);
  const key = switchKey(scope, target);
  if (scope === SwitchScope.Capability && !Object.hasOwn(principals.capabilities, target)) {
    throw invalid(`unknown capability "${target}": the mesh declares ${Object.keys(principals.capabilities).join(", ")}`);
  }
  if (scope === SwitchScope.Principal) {
    if (!Object.hasOwn(principals.principals, target)) {
      throw invalid(`unknown principal "${target}": the mesh declares ${Object.keys(principals.principals).join(", ")}`);
    }
    const serving = Object.values(principals.principals).filter((p) => p.serves.length > 0).map((p) => p.name);
    if (principals.principals[target]!.serves.length === 0) {
      throw invalid(`principal "${target}" serves no capability, so there is nothing of it to pause; principals that serve one: ${serving.join(", ")}`);
    }
  }
  return { scope, target, key, consumers: consumersOf(principals, map, scope, target) };
}

function text(value: string | undefined, field: string, max: number): string {
  if (value === undefined || value.trim() === "") throw invalid(`${field} is required`);
  if (value.length > max) throw invalid(`${field} is longer than ${max} characters`);
  return value;
}

/** An RFC 3339 time with a zone, normalized to Zulu seconds; CW_ERR_SWITCH_INVALID otherwise. */
function rfc3339(value: string, field: string): string {
  // Without a zone the time would be read as UTC, which is rarely what the person typing it meant.
  if (!/([Zz]|[+-]\d\d:\d\d)$/.test(value)) throw invalid(`${field} needs an RFC 3339 time with a zone, e.g. 2026-11-21T06:41:03Z, got "${value}"`);
  try {
    return normalizeTime(value, field);
  } catch {
    throw invalid(`${field} is not an RFC 3339 time, e.g. 2026-11-21T06:41:03Z: "${value}"`);
  }
}

async function consumerState(deps: CoordinatorDeps, ref: ConsumerRef): Promise<ConsumerSwitch> {
  try {
    const info = await deps.jsm.consumers.info(ref.stream, ref.name);
    const paused = info.paused === true;
    return { stream: ref.stream, name: ref.name, paused, pause_until: paused ? (info.config.pause_until ?? null) : null };
  } catch (err) {
    if (!isConsumerNotFound(err)) throw err;
    return { stream: ref.stream, name: ref.name, paused: false, pause_until: null, missing: true };
  }
}

const scopeRank = (key: string) => (key === "mesh" ? 0 : key.startsWith("principal.") ? 1 : 2);
function byScope(a: string, b: string): number {
  return scopeRank(a) - scopeRank(b) || a.localeCompare(b);
}



function invalid(message: string): CausewayError {
  return new CausewayError(ErrorCode.SwitchInvalid, message);
}
