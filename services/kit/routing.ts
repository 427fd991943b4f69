// Routing by implementation version, sticky per flow (issue 15, item 3).
//
// Without a route table a capability works as it always has: producers publish on `<prefix>.cap.<cap>.v<major>`
// and every instance of every version shares the capability's durable. Once the control plane (the coordinator)
// writes a table for the capability in causeway_routes, the kit routes its work by version:
//
// - Each version the table names has a lane, one of LANES: work for it is published on
//   `<prefix>.cap.<cap>.v<major>.<lane>` and consumed through the lane's own durable `cap-<cap>-v<major>-<lane>`
//   by the instances of that version only. The capability's plain durable is then consumed by the stable
//   version alone (it holds only what was published before the table existed).
// - A flow is routed by the tables as they were when it began: every event carries the signed, inherited
//   `routeepoch` — the revision of causeway_routes its first producer had seen (the gateway, or the first agent
//   of a flow an upstream signed itself) — and every producer routes the flow's work in a capability by that
//   capability's table at that revision (the bucket keeps its history) and the flow's share bucket (a hash of the
//   flow id, 0–99): the candidate when the bucket is below its share. So every producer, replica or process,
//   decides the same for one flow without asking anyone, raising a share moves new flows only, and a rollout
//   never mixes versions inside one flow.
// - The table in force still overrules a flow's old route when the version it names no longer takes work (rolled
//   back, circuit open): the flow then goes where new flows go — by design, the point of a rollback is that no
//   more work goes there. Work already on a lane stays there for the instances of that version to finish; the
//   coordinator hands it over when none is left, and frees a retiring lane once it is empty.
//
// Producers never know versions: the kit's publishers (the agent runtime, the gateway, the coordinator's
// forward of granted work) pass every capability subject through a Router, which returns it unchanged unless the
// capability is routed. Routing costs a string test and a map lookup when nothing is routed, and a hash and a
// search of the capability's table history when it is: no request to the server per message.
import { createHash } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { KvBucket, MESH_BUCKETS, STREAMS_APPLY } from "./buckets.ts";
import { ContextExtension, PRIORITIES, Priority, type PriorityValue } from "./context.ts";
import { ConfigError, ErrorCode, type CausewayError } from "./errors.ts";
import type { CloudEvent } from "./event.ts";
import { capabilityKeyPrefix } from "./kv-keys.ts";
import { followBucket, type Following } from "./kv-follow.ts";
import { LANES, priorityTail, type Lane, type MeshSubjects } from "./subjects.ts";

/** A version that still has a lane but takes no new flows: it finishes what it holds. */
export interface RetiringVersion {
  readonly version: string;
  /** Flows routed to it earlier keep going there (after a promotion); false after a rollback. */
  readonly keepsFlows: boolean;
  /** When it stopped taking new flows. */
  readonly since: string;
}

/** The state of a stable version's circuit breaker (issue 15, item 6). */
export interface Circuit {
  readonly state: "open" | "half-open";
  readonly since: string;
  /** Half-open: the share of new flows (0–100) that probe the stable version. */
  readonly probeShare: number;
  /**
   * Half-open: the stable version's handled count in the health window when the probe began. Only inputs handled
   * since count as probes (the window may still hold what it did before it failed).
   */
  readonly probeBaseline?: number;
}

/** A rollout the coordinator drives (issue 15, item 5); the thresholds that roll it back on their own. */
export interface RolloutPlan {
  /** Shares of new flows, ascending, the last 100. */
  readonly steps: readonly number[];
  /** Index in `steps` of the share in force. */
  readonly step: number;
  readonly intervalMs: number;
  /** When the current step began (RFC 3339). */
  readonly stepStartedAt: string;
  readonly paused: boolean;
  /** Roll back when the candidate's failure or quarantine rate exceeds the stable one's by more than this (0–1). */
  readonly maxRateMargin: number;
  /** … or its p95 handler latency exceeds the stable one's times this. */
  readonly maxLatencyRatio: number;
  /** Inputs the candidate must have run in the window before its rates are judged (and before a step advances). */
  readonly minFlows: number;
  /** Who started it (the requester's claim) and the id of the rollout (its decisions' ids derive from it). */
  readonly by: string;
  readonly id: string;
}

/** How one capability is routed by version; the value of its key `<cap>_v<major>` in causeway_routes. */
export interface RouteTable {
  /** `research.v1`. */
  readonly capability: string;
  /** The version new flows go to unless they fall in the candidate's share. */
  readonly stable: string;
  /** The version being rolled out and the share of new flows (0–100, by flow) it gets. */
  readonly candidate?: { readonly version: string; readonly share: number };
  readonly retiring: readonly RetiringVersion[];
  /**
   * The version new flows go to while the stable version's circuit is not closed (issue 15, item 6): open, all
   * new flows; half-open, all but a probe share that tries the stable version again.
   */
  readonly fallback?: string;
  /** The stable version's circuit; closed when absent. */
  readonly circuit?: Circuit;
  /** The rollout in progress, if any: the coordinator advances `candidate.share` along `steps`. */
  readonly rollout?: RolloutPlan;
  /** The lane of every version above. */
  readonly lanes: Readonly<Record<string, Lane>>;
  readonly updatedAt: string;
  /** Why the table changed last (a rollout step, a rollback with its figures). */
  readonly reason: string;
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
/** Bounds on a table's text: it is read on every agent, the gateway and the coordinator. */
const MAX_TABLE_BYTES = 4096;

/** The key of `capability` v`major` in causeway_routes. */
export function routeKey(capability: string, major: number): string {
  return capabilityKeyPrefix(capability, major);
}

/**
 * A table from its JSON, checked: versions are semver, every routed version has its own lane of LANES, the share
 * is an integer 0–100. ConfigError CW_ERR_ROUTE_INVALID naming the problem otherwise.
 */
export function parseRouteTable(text: string, capability: string): RouteTable {
  const bad = (why: string) => new ConfigError(ErrorCode.RouteInvalid, `route table of ${capability}: ${why}`);
  if (text.length > MAX_TABLE_BYTES) throw bad(`${text.length} bytes, more than ${MAX_TABLE_BYTES}`);
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw bad(`not JSON (${(err as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("not an object");
  if (raw.capability !== capability) throw bad(`names capability ${String(raw.capability)}`);
  const version = (v: unknown, at: string): string => {
    if (typeof v !== "string" || !SEMVER.test(v) || v.length > 64) throw bad(`${at} "${String(v)}" is not a semver version`);
    return v;
  };
  const stable = version(raw.stable, "stable");
  let candidate: RouteTable["candidate"];
  if (raw.candidate !== undefined) {
    const c = raw.candidate as { version?: unknown; share?: unknown };
    if (typeof c !== "object" || c === null) throw bad("candidate is not an object");
    if (typeof c.share !== "number" || !Number.isInteger(c.share) || c.share < 0 || c.share > 100) throw bad(`candidate share ${String(c.share)} is not an integer 0–100`);
    candidate = { version: version(c.version, "candidate.version"), share: c.share };
  }
  if (!Array.isArray(raw.retiring) || raw.retiring.length > LANES.length) throw bad("retiring is not a list of at most the lanes' count");
  const retiring = (raw.retiring as { version?: unknown; keepsFlows?: unknown; since?: unknown }[]).map((r, i) => {
    if (typeof r?.keepsFlows !== "boolean" || typeof r.since !== "string") throw bad(`retiring[${i}] needs keepsFlows and since`);
    return { version: version(r.version, `retiring[${i}].version`), keepsFlows: r.keepsFlows, since: r.since };
  });
  const fallback = raw.fallback === undefined ? undefined : version(raw.fallback, "fallback");
  let circuit: Circuit | undefined;
  if (raw.circuit !== undefined) {
    const c = raw.circuit as { state?: unknown; since?: unknown; probeShare?: unknown };
    if (fallback === undefined) throw bad("a circuit without a fallback");
    if ((c?.state !== "open" && c?.state !== "half-open") || typeof c.since !== "string") throw bad("circuit needs state open or half-open and since");
    if (typeof c.probeShare !== "number" || !Number.isInteger(c.probeShare) || c.probeShare < 0 || c.probeShare > 100) throw bad("circuit probeShare is not an integer 0–100");
    const baseline = (c as { probeBaseline?: unknown }).probeBaseline;
    if (baseline !== undefined && (typeof baseline !== "number" || !Number.isInteger(baseline) || baseline < 0)) throw bad("circuit probeBaseline is not a non-negative integer");
    circuit = { state: c.state, since: c.since, probeShare: c.probeShare, ...(baseline !== undefined && { probeBaseline: baseline }) };
  }
  let rollout: RolloutPlan | undefined;
  if (raw.rollout !== undefined) {
    const r = raw.rollout as Record<string, unknown>;
    if (candidate === undefined) throw bad("a rollout without a candidate");
    const steps = r.steps;
    if (!Array.isArray(steps) || steps.length === 0 || steps.length > 20 || steps.some((x, i) => typeof x !== "number" || !Number.isInteger(x) || x < 1 || x > 100 || (i > 0 && x <= (steps[i - 1] as number))) || steps.at(-1) !== 100) {
      throw bad("rollout steps must be 1–20 ascending integer shares ending at 100");
    }
    const num = (k: string, ok: (n: number) => boolean) => {
      if (typeof r[k] !== "number" || !ok(r[k])) throw bad(`rollout ${k} ${String(r[k])} is out of range`);
      return r[k];
    };
    rollout = {
      steps: Object.freeze([...steps as number[]]), step: num("step", (n) => Number.isInteger(n) && n >= 0 && n < steps.length),
      intervalMs: num("intervalMs", (n) => n >= 1000), stepStartedAt: String(r.stepStartedAt), paused: r.paused === true,
      maxRateMargin: num("maxRateMargin", (n) => n >= 0 && n <= 1), maxLatencyRatio: num("maxLatencyRatio", (n) => n >= 1),
      minFlows: num("minFlows", (n) => Number.isInteger(n) && n >= 1), by: String(r.by ?? "").slice(0, 100), id: String(r.id ?? "").slice(0, 100),
    };
  }
  const routed = [stable, ...(candidate ? [candidate.version] : []), ...retiring.map((r) => r.version), ...(fallback !== undefined ? [fallback] : [])];
  if (new Set(routed).size !== routed.length) throw bad(`a version appears twice (${routed.join(", ")})`);
  const lanes = raw.lanes as Record<string, unknown>;
  if (typeof lanes !== "object" || lanes === null) throw bad("lanes is not an object");
  const used = new Set<string>();
  for (const v of routed) {
    const lane = lanes[v];
    if (typeof lane !== "string" || !(LANES as readonly string[]).includes(lane)) throw bad(`version ${v} has no lane of ${LANES.join(", ")}`);
    if (used.has(lane)) throw bad(`lane ${lane} is given to two versions`);
    used.add(lane);
  }
  if (Object.keys(lanes).length !== routed.length) throw bad("lanes names a version the table does not route");
  return Object.freeze({
    capability, stable, ...(candidate && { candidate: Object.freeze(candidate) }), retiring: Object.freeze(retiring.map((r) => Object.freeze(r))),
    ...(fallback !== undefined && { fallback }), ...(circuit && { circuit: Object.freeze(circuit) }), ...(rollout && { rollout: Object.freeze(rollout) }),
    lanes: Object.freeze(Object.fromEntries(routed.map((v) => [v, lanes[v] as Lane]))),
    updatedAt: typeof raw.updatedAt === "string" ? raw.updatedAt : "", reason: typeof raw.reason === "string" ? raw.reason.slice(0, 500) : "",
  });
}

/**
 * The versions a flow routed earlier may stay on: the candidate, retiring versions that keep their flows, and the
 * stable version unless its circuit is open (then its flows go on on the fallback, which takes work while the
 * circuit is not closed).
 */
export function continuingVersions(table: RouteTable): ReadonlySet<string> {
  const open = table.circuit?.state === "open";
  return new Set([
    ...(open ? [] : [table.stable]), ...(table.candidate ? [table.candidate.version] : []),
    ...(table.fallback !== undefined && table.circuit !== undefined ? [table.fallback] : []),
    ...table.retiring.filter((r) => r.keepsFlows).map((r) => r.version),
  ]);
}

/** The share bucket of a flow, 0–99 (from a hash of its id): a flow goes to the candidate when this is below the candidate's share. */
export function shareBucket(flow: string): number {
  return createHash("sha256").update(flow).digest().readUInt32BE(0) % 100;
}

/** The version a new flow goes to under `table`, given its share bucket (0–99). */
export function versionForBucket(table: RouteTable, bucket: number): string {
  if (table.circuit !== undefined && table.fallback !== undefined) {
    // The stable version's circuit is open: the fallback, but for a half-open circuit's probe share.
    return table.circuit.state === "half-open" && bucket < table.circuit.probeShare ? table.stable : table.fallback;
  }
  return table.candidate !== undefined && bucket < table.candidate.share ? table.candidate.version : table.stable;
}

/** The route tables, live, with the history the bucket keeps; what agents consume and producers route by. */
export interface RouteTables {
  /** The table of `capability` v`major` in force, if it is routed. */
  get(capability: string, major: number): RouteTable | undefined;
  /** Its table at revision `epoch` of causeway_routes (undefined: not routed then, or older than the history kept). */
  at(capability: string, major: number, epoch: number): RouteTable | undefined;
  /** Every table in force. */
  all(): RouteTable[];
  /** The highest revision of causeway_routes seen: the epoch a new flow is stamped with. */
  revision(): number;
  /** Resolves once revision `epoch` has been seen (true), or after `timeoutMs` (false). */
  caughtUp(epoch: number, timeoutMs: number): Promise<boolean>;
  /** Calls `listener` after every change of a table; returns its removal. */
  onChange(listener: (key: string) => void): () => void;
  readonly lost: Promise<CausewayError>;
  close(): Promise<void>;
}

/** Table revisions kept per capability: as many as the bucket keeps. */
const KEPT = MESH_BUCKETS[KvBucket.Routes].history;

/** Follows causeway_routes with its history. A table that does not parse is reported and ignored (the last good one stays in force). */
export async function watchRouteTables(nc: NatsConnection, opts: { log: Logger }): Promise<RouteTables> {
  /** Per key, each revision's table (null: deleted), ascending. */
  const history = new Map<string, { revision: number; table: RouteTable | null }[]>();
  const listeners = new Set<(key: string) => void>();
  let highest = 0;
  const waiters = new Set<() => void>();
  const following: Following = await followBucket(nc, {
    bucket: KvBucket.Routes, what: "version routes", createdBy: STREAMS_APPLY, consequence: "routing changes", history: true,
    onProblem: (err) => opts.log.warn({ err }, "route table problem"),
    apply(change, report) {
      const key = change.key;
      highest = Math.max(highest, change.revision);
      for (const wake of waiters) wake();
      let table: RouteTable | null = null;
      if (change.operation === "PUT") {
        try {
          table = parseRouteTable(change.string(), key.replace(/_v(\d+)$/, ".v$1"));
        } catch (err) {
          report(err as CausewayError);
          return;
        }
      }
      const list = history.get(key) ?? history.set(key, []).get(key)!;
      list.push({ revision: change.revision, table });
      if (list.length > KEPT) list.shift(); // what the bucket keeps too: a flow older than every kept revision goes to the stable version
      for (const listener of listeners) listener(key);
    },
  });
  const current = (key: string) => history.get(key)?.at(-1)?.table ?? undefined;
  return {
    get: (capability, major) => current(routeKey(capability, major)),
    at(capability, major, epoch) {
      const list = history.get(routeKey(capability, major));
      if (list === undefined) return undefined;
      // The last entry at or before the epoch (binary search: the list is in revision order).
      let lo = 0, hi = list.length - 1, found = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (list[mid]!.revision <= epoch) { found = mid; lo = mid + 1; } else hi = mid - 1;
      }
      return found < 0 ? undefined : (list[found]!.table ?? undefined);
    },
    all: () => [...history.keys()].map(current).filter((t): t is RouteTable => t !== undefined),
    revision: () => highest,
    async caughtUp(epoch, timeoutMs) {
      if (highest >= epoch) return true;
      let wake: () => void = () => undefined;
      let timer: NodeJS.Timeout | undefined;
      const seen = new Promise<void>((resolve) => {
        wake = () => { if (highest >= epoch) resolve(); };
        timer = setTimeout(resolve, timeoutMs);
      });
      waiters.add(wake);
      try {
        await seen;
        return highest >= epoch;
      } finally {
        clearTimeout(timer);
        waiters.delete(wake);
      }
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    lost: following.lost,
    close: () => following.close(),
  };
}

/** The route epoch an event carries (its signed `routeepoch`), or undefined when it has none or a malformed one. */
export function routeEpochOf(event: Pick<CloudEvent, "extensions">): number | undefined {
  const v = event.extensions[ContextExtension.RouteEpoch];
  const n = typeof v === "number" ? v : typeof v === "string" && /^(0|[1-9][0-9]{0,15})$/.test(v) ? Number(v) : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** Routes producers' work: a capability subject in, the subject to publish on out. */
export interface Router {
  /**
   * The subject to publish `flow`'s work for `subject` on: `subject` itself unless it is a capability's and the
   * capability is routed, else the lane of the version the flow goes to — by the capability's table at `epoch`
   * (the flow's `routeepoch`; undefined: the latest), overruled by the table in force when that version no longer
   * takes work. Synchronous unless it must wait (up to a second) for a table revision the router has not seen yet.
   * `priority` (the flow's signed priority, kit `priorityOf`; default normal) adds its token to a capability's
   * subject (issue 16): `….v<major>[.<lane>].<priority>`, nothing for normal. Other subjects (facts) have none.
   */
  route(subject: string, flow: string, epoch: number | undefined, priority?: PriorityValue): string | Promise<string>;
  /** The epoch a flow that has none is stamped with: the latest revision of the tables seen. */
  epoch(): number;
  readonly tables: RouteTables;
  close(): Promise<void>;
}

/** Subjects whose parse a router keeps (a producer addresses a few capabilities and facts). */
const MAX_ADDRESSED = 1_024;

/** How long a producer waits for a table revision a flow carries but it has not seen yet. */
const CATCH_UP_MS = 1_000;

/** A router on `nc`: follows the route tables. */
export async function startRouter(nc: NatsConnection, subjects: MeshSubjects, opts: { log: Logger; tables?: RouteTables }): Promise<Router> {
  const tables = opts.tables ?? (await watchRouteTables(nc, opts));
  const capHead = `${subjects.prefix}.cap.`;
  // The capability a subject addresses, parsed once per subject (producers address a handful), with its subject
  // per priority (index of PRIORITIES): null for a lane, a fact or anything else that is not a capability's plain subject.
  const addressed = new Map<string, { capability: string; major: number; byPriority: readonly string[] } | null>();
  const capabilityOf = (subject: string) => {
    let found = addressed.get(subject);
    if (found !== undefined) return found;
    const rest = subject.startsWith(capHead) ? subject.slice(capHead.length) : "";
    const dot = rest.indexOf(".");
    found = dot < 0 || rest.indexOf(".", dot + 1) >= 0 ? null : {
      capability: rest.slice(0, dot), major: Number(rest.slice(dot + 2)), byPriority: PRIORITIES.map((p) => `${subject}${priorityTail(p)}`),
    };
    if (addressed.size < MAX_ADDRESSED) addressed.set(subject, found);
    return found;
  };
  const tails = PRIORITIES.map(priorityTail);
  // The versions that take work, per table (a table never changes: a change is a new table).
  const continuing = new WeakMap<RouteTable, ReadonlySet<string>>();
  const continuingOf = (t: RouteTable) => continuing.get(t) ?? continuing.set(t, continuingVersions(t)).get(t)!;
  return {
    tables,
    epoch: () => tables.revision(),
    route(subject, flow, epoch, priority = Priority.Normal) {
      const target = capabilityOf(subject);
      if (target === null) return subject;
      const { capability, major } = target;
      const p = PRIORITIES.indexOf(priority);
      if (p < 0) throw new ConfigError(ErrorCode.InvalidAttribute, `priority ${JSON.stringify(priority)} is none of ${PRIORITIES.join(", ")}`);
      const now = tables.get(capability, major);
      if (now === undefined) return target.byPriority[p]!;
      const decide = () => {
        const table = tables.get(capability, major)!;
        const bucket = shareBucket(flow);
        const then = epoch === undefined ? table : tables.at(capability, major, epoch);
        // Not routed when the flow began: its work stays where it went then, with the stable version.
        const planned = then === undefined ? table.stable : versionForBucket(then, bucket);
        const version = continuingOf(table).has(planned) ? planned : versionForBucket(table, bucket);
        return `${subject}.${table.lanes[version]!}${tails[p]!}`;
      };
      if (epoch === undefined || epoch <= tables.revision()) return decide();
      // A flow stamped by a producer ahead of this one: wait for that revision (every producer must decide alike).
      return tables.caughtUp(epoch, CATCH_UP_MS).then((seen) => {
        if (!seen) opts.log.warn({ capability: `${capability}.v${major}`, epoch, seen: tables.revision() }, "a flow carries a route epoch this producer has not seen: routed by the tables it has");
        return decide();
      });
    },
    async close() {
      if (opts.tables === undefined) await tables.close();
    },
  };
}
