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
// - The version of a flow (its correlation id) in that capability is decided once, by the first producer that
//   sends it work there, and pinned in causeway_route_pins with a create (first writer wins, cluster-wide); every
//   later piece of work of the flow in that capability follows the pin, whichever producer sends it. A new flow
//   goes to the candidate when its share bucket (a hash of the flow id, 0–99) is below the candidate's share.
//   So raising the share from 5 to 25 moves new flows only, and a rollout never mixes versions inside one flow.
// - A pin is followed while the table still routes to its version (stable, candidate, or a retiring version
//   kept for its pinned flows after a promotion); after a rollback the candidate's pins are ignored, by design:
//   the point of a rollback is that no more work goes there. Work already on a lane stays there for the instances
//   of that version to finish; the coordinator retires a lane once it is empty.
//
// Producers never know versions: the kit's publishers (the agent runtime, the gateway, the coordinator's
// forward of granted work) pass every capability subject through a Router, which returns it unchanged unless the
// capability is routed. The lookups cost nothing then; during a rollout one KV read (or create) per new flow and
// capability, then a cached pin.
import { createHash } from "node:crypto";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { KvBucket, STREAMS_APPLY, openMeshBucket } from "./buckets.ts";
import { ConfigError, ErrorCode, type CausewayError } from "./errors.ts";
import { capabilityKeyPrefix } from "./kv-keys.ts";
import { followBucket, type Following } from "./kv-follow.ts";
import { LANES, type Lane, type MeshSubjects } from "./subjects.ts";

/** A version that still has a lane but takes no new flows: it finishes what it holds. */
export interface RetiringVersion {
  readonly version: string;
  /** Flows pinned to it keep going there (after a promotion); false after a rollback. */
  readonly keepsPinned: boolean;
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
  const retiring = (raw.retiring as { version?: unknown; keepsPinned?: unknown; since?: unknown }[]).map((r, i) => {
    if (typeof r?.keepsPinned !== "boolean" || typeof r.since !== "string") throw bad(`retiring[${i}] needs keepsPinned and since`);
    return { version: version(r.version, `retiring[${i}].version`), keepsPinned: r.keepsPinned, since: r.since };
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
 * The versions whose pins are followed: the candidate, retiring versions that keep their flows, and the stable
 * version unless its circuit is open (then its flows go on on the fallback, which is followed while the circuit
 * is not closed).
 */
export function pinnableVersions(table: RouteTable): ReadonlySet<string> {
  const open = table.circuit?.state === "open";
  return new Set([
    ...(open ? [] : [table.stable]), ...(table.candidate ? [table.candidate.version] : []),
    ...(table.fallback !== undefined && table.circuit !== undefined ? [table.fallback] : []),
    ...table.retiring.filter((r) => r.keepsPinned).map((r) => r.version),
  ]);
}

/** A flow's digest: its pin key's last token and, from its first bytes, its share bucket. */
function flowDigest(flow: string): Buffer {
  return createHash("sha256").update(flow).digest();
}

/** The share bucket of a flow, 0–99: a flow goes to the candidate when this is below the candidate's share. */
export function shareBucket(flow: string): number {
  return flowDigest(flow).readUInt32BE(0) % 100;
}

/** The version a new flow goes to under `table`, given its share bucket (0–99). */
export function versionForBucket(table: RouteTable, bucket: number): string {
  if (table.circuit !== undefined && table.fallback !== undefined) {
    // The stable version's circuit is open: the fallback, but for a half-open circuit's probe share.
    return table.circuit.state === "half-open" && bucket < table.circuit.probeShare ? table.stable : table.fallback;
  }
  return table.candidate !== undefined && bucket < table.candidate.share ? table.candidate.version : table.stable;
}

/** The version a new flow goes to under `table`. */
export function versionForNewFlow(table: RouteTable, flow: string): string {
  return versionForBucket(table, shareBucket(flow));
}

/** The route tables in force, live; what the agent runtime consumes and the producers route by. */
export interface RouteTables {
  /** The table of `capability` v`major`, if it is routed. */
  get(capability: string, major: number): RouteTable | undefined;
  /** Every table in force. */
  all(): RouteTable[];
  /** Calls `listener` after every change of a table; returns its removal. */
  onChange(listener: (capability: string) => void): () => void;
  readonly lost: Promise<CausewayError>;
  close(): Promise<void>;
}

/** Follows causeway_routes. A table that does not parse is reported and the last good one kept. */
export async function watchRouteTables(nc: NatsConnection, opts: { log: Logger }): Promise<RouteTables> {
  const tables = new Map<string, RouteTable>();
  const listeners = new Set<(capability: string) => void>();
  const following: Following = await followBucket(nc, {
    bucket: KvBucket.Routes, what: "version routes", createdBy: STREAMS_APPLY, consequence: "routing changes",
    onProblem: (err) => opts.log.warn({ err }, "route table problem"),
    apply(change, report) {
      const key = change.key;
      if (change.operation !== "PUT") tables.delete(key);
      else {
        const ref = key.replace(/_v(\d+)$/, ".v$1");
        try {
          tables.set(key, parseRouteTable(change.string(), ref));
        } catch (err) {
          report(err as CausewayError);
          return;
        }
      }
      for (const listener of listeners) listener(key);
    },
  });
  return {
    get: (capability, major) => tables.get(routeKey(capability, major)),
    all: () => [...tables.values()],
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    lost: following.lost,
    close: () => following.close(),
  };
}

/** Routes producers' work: a capability subject in, the subject to publish on out. */
export interface Router {
  /**
   * The subject to publish `flow`'s work for `subject` on: `subject` itself unless it is a capability's and the
   * capability is routed, else its lane for the flow's pinned (or newly chosen) version.
   */
  route(subject: string, flow: string): Promise<string>;
  readonly tables: RouteTables;
  close(): Promise<void>;
}

/** Pins cached per router: a pin never changes once created, so a cached one is always right. */
const PIN_CACHE_SIZE = 10_000;

/** A router on `nc`: follows the route tables and reads and creates pins. */
export async function startRouter(nc: NatsConnection, subjects: MeshSubjects, opts: { log: Logger; tables?: RouteTables }): Promise<Router> {
  const tables = opts.tables ?? (await watchRouteTables(nc, opts));
  const pins: KV = await openMeshBucket(nc, KvBucket.RoutePins, "flow pins");
  const cache = new Map<string, string>();
  const capHead = `${subjects.prefix}.cap.`;
  const remember = (key: string, version: string) => {
    if (cache.size >= PIN_CACHE_SIZE) cache.delete(cache.keys().next().value!);
    cache.set(key, version);
  };
  const versionFor = async (table: RouteTable, keyPrefix: string, flow: string): Promise<string> => {
    const pinnable = pinnableVersions(table);
    if (pinnable.size === 1) return pinnable.values().next().value!; // one place to go (stable, or the fallback): nothing to pin
    const digest = flowDigest(flow);
    const key = `${keyPrefix}.${digest.toString("base64url").slice(0, 22)}`;
    const known = cache.get(key) ?? (await pins.get(key))?.string();
    const chosen = versionForBucket(table, digest.readUInt32BE(0) % 100);
    if (known !== undefined && known !== "") {
      remember(key, known);
      // A version that no longer takes this work (rolled back, circuit open): the flow goes on where new flows go.
      return pinnable.has(known) ? known : chosen;
    }
    try {
      await pins.create(key, chosen);
      remember(key, chosen);
      return chosen;
    } catch {
      // Another producer pinned the flow first: follow its pin.
      const first = (await pins.get(key))?.string();
      if (first === undefined || first === "") throw new ConfigError(ErrorCode.Unavailable, `flow pin ${key} could neither be created nor read`);
      remember(key, first);
      return pinnable.has(first) ? first : chosen;
    }
  };
  return {
    tables,
    async route(subject, flow) {
      if (!subject.startsWith(capHead)) return subject;
      const rest = subject.slice(capHead.length);
      const dot = rest.indexOf(".");
      if (dot < 0 || rest.indexOf(".", dot + 1) >= 0) return subject; // already a lane, or not a capability's subject
      const capability = rest.slice(0, dot);
      const major = Number(rest.slice(dot + 2));
      const table = tables.get(capability, major);
      if (table === undefined) return subject;
      const version = await versionFor(table, routeKey(capability, major), flow);
      return `${subject}.${table.lanes[version]!}`;
    },
    async close() {
      if (opts.tables === undefined) await tables.close();
    },
  };
}
