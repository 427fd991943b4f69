// Mesh-wide backpressure (issue 16, item 4). The coordinator measures every second the backlog of each
// capability — the pending and ack-pending messages of its durables on MESH_CAP, the capability's own and its
// lanes' — and how full MESH_CAP is against its limits, and writes one report to KV causeway_pressure (key
// `mesh`), which it alone may write. Whoever reads it follows the key with a watch and judges levels locally
// against infra/backpressure.json: the gateway sheds new flows by them, a handler sees the pressure on the
// capabilities it is about to address (so fan-out can shrink).
//
// A report older than `staleMs` (the coordinator is down or cut off) is not used: every capability reads "ok"
// with `stale: true`, and the gateway admits by quotas alone (fail open: the mesh's own limits still hold, and
// refusing everyone because the measuring service died would turn a control-plane fault into an outage).
import { join } from "node:path";
import type { KvEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KvBucket, openMeshBucket } from "./buckets.ts";
import { ErrorCode } from "./errors.ts";
import { checkInfraDoc, infraDir, invalidFile, readInfraFile } from "./infra-file.ts";
import { watchInfraFile } from "./infra-file.ts";

/** The file the thresholds live in (`CAUSEWAY_BACKPRESSURE` overrides it). */
export const DEFAULT_BACKPRESSURE_PATH = join(infraDir, "backpressure.json");
const SCHEMA_FILE = "backpressure.schema.json";

/** The key of the coordinator's report in causeway_pressure. */
export const PRESSURE_KEY = "mesh";

/** How loaded a capability is. */
export const PressureLevel = { Ok: "ok", Soft: "soft", Hard: "hard" } as const;
export type PressureLevelValue = (typeof PressureLevel)[keyof typeof PressureLevel];

/** A capability's thresholds. */
export interface Thresholds {
  readonly soft: number;
  readonly hard: number;
}

/** infra/backpressure.json, validated. */
export interface Backpressure {
  readonly default: Thresholds;
  readonly capabilities: Readonly<Record<string, Thresholds>>;
  readonly stream?: Thresholds;
  readonly staleMs: number;
  readonly fairShareWindowMs: number;
  readonly summaryIntervalMs: number;
  readonly source: string;
  /** The thresholds of `capability` v`major`. */
  of(capability: string, major: number): Thresholds;
}

interface RawBackpressure {
  default: Thresholds;
  capabilities?: Record<string, Thresholds>;
  stream?: Thresholds;
  staleMs?: number;
  fairShareWindowMs?: number;
  summaryIntervalMs?: number;
}

/** Validates a backpressure document; CW_ERR_BACKPRESSURE_INVALID naming the JSON path. */
export function parseBackpressure(doc: unknown, source = "backpressure.json"): Backpressure {
  const raw = checkInfraDoc<RawBackpressure>(doc, SCHEMA_FILE, ErrorCode.BackpressureInvalid, source);
  const problems: string[] = [];
  const check = (at: string, t: Thresholds | undefined) => {
    if (t !== undefined && t.hard < t.soft) problems.push(`${at}: hard (${t.hard}) is below soft (${t.soft})`);
  };
  check("/default", raw.default);
  for (const [ref, t] of Object.entries(raw.capabilities ?? {})) check(`/capabilities/${ref}`, t);
  check("/stream", raw.stream);
  if (problems.length > 0) throw invalidFile(source, ErrorCode.BackpressureInvalid, problems);
  const capabilities = Object.freeze({ ...(raw.capabilities ?? {}) });
  return Object.freeze({
    default: Object.freeze({ ...raw.default }), capabilities, ...(raw.stream !== undefined && { stream: Object.freeze({ ...raw.stream }) }),
    staleMs: raw.staleMs ?? 5_000, fairShareWindowMs: raw.fairShareWindowMs ?? 10_000, summaryIntervalMs: raw.summaryIntervalMs ?? 10_000, source,
    of: (capability: string, major: number) => (Object.hasOwn(capabilities, `${capability}.v${major}`) ? capabilities[`${capability}.v${major}`]! : raw.default),
  });
}

/** Reads and validates the backpressure file. */
export function loadBackpressure(path = DEFAULT_BACKPRESSURE_PATH): Backpressure {
  return parseBackpressure(readInfraFile<unknown>(path, SCHEMA_FILE, ErrorCode.BackpressureInvalid), path);
}

/** One capability's backlog as the coordinator measured it. */
export interface CapabilityBacklog {
  /** pending + ack pending over its durables. */
  readonly backlog: number;
  readonly pending: number;
  readonly ackPending: number;
  /** Messages acknowledged per second over its durables since the previous measurement (0 on the first). */
  readonly drainPerSecond: number;
  /** Each durable measured and its backlog; a durable that does not exist (yet) is left out. */
  readonly durables: Readonly<Record<string, number>>;
}

/** The coordinator's report, the value of `mesh` in causeway_pressure. */
export interface PressureReport {
  /** When it was measured (the coordinator's clock). */
  readonly at: string;
  /** How often it is measured. */
  readonly intervalMs: number;
  /** MESH_CAP against its limits: `fill` is the larger of messages / max_msgs and bytes / max_bytes (0 without limits). */
  readonly stream: { readonly name: string; readonly messages: number; readonly bytes: number; readonly maxMsgs: number; readonly maxBytes: number; readonly fill: number };
  /** By capability ref (`plan.v1`). */
  readonly capabilities: Readonly<Record<string, CapabilityBacklog>>;
}

/** What a reader sees of one capability. */
export interface Pressure {
  readonly level: PressureLevelValue;
  /** Its backlog (0 when unknown). */
  readonly backlog: number;
  readonly thresholds: Thresholds;
  /** MESH_CAP's fill (0 … 1). */
  readonly streamFill: number;
  /** Acknowledged per second (0 when unknown). */
  readonly drainPerSecond: number;
  /** True when no fresh report is there: the level is then "ok", whatever the mesh's state. */
  readonly stale: boolean;
  /** The report's age in ms (Infinity when there is none). */
  readonly ageMs: number;
}

/** The level of a capability's backlog and the stream's fill under `thresholds`. */
function pressureLevel(backlog: number, streamFill: number, thresholds: Thresholds, stream: Thresholds | undefined): PressureLevelValue {
  if (backlog >= thresholds.hard || (stream !== undefined && streamFill >= stream.hard)) return PressureLevel.Hard;
  if (backlog >= thresholds.soft || (stream !== undefined && streamFill >= stream.soft)) return PressureLevel.Soft;
  return PressureLevel.Ok;
}

/** A live view of the coordinator's reports. */
export interface PressureView {
  /** The pressure on `capability` v`major` now. */
  of(capability: string, major: number): Pressure;
  close(): Promise<void>;
}

/** Options of {@link watchPressure}. */
export interface WatchPressureOptions {
  /** The thresholds, read on every use (they reload live). */
  readonly thresholds: () => Backpressure;
  /** The bucket's name. Default causeway_pressure. */
  readonly bucket?: string;
  /** Told when the watch fails. */
  readonly onProblem?: (err: Error) => void;
  /** The clock (tests). */
  readonly now?: () => number;
}

/**
 * Follows the coordinator's report in causeway_pressure (which must exist: `causeway streams apply`). A report is
 * fresh while younger than `staleMs`: the first one by the server's time stamp (a report left by a coordinator gone
 * for an hour is stale at once), later ones from when they arrive.
 */
export async function watchPressure(nc: NatsConnection, opts: WatchPressureOptions): Promise<PressureView> {
  const now = opts.now ?? Date.now;
  const kv = await openMeshBucket(nc, opts.bucket ?? KvBucket.Pressure, "the mesh's backlog per capability");
  let latest: { report: PressureReport; receivedAt: number } | undefined;
  const apply = (entry: KvEntry, initial: boolean) => {
    if (entry.key !== PRESSURE_KEY || entry.operation !== "PUT") return;
    try {
      const report = entry.json<PressureReport>();
      if (typeof report.capabilities !== "object" || report.capabilities === null) throw new Error("no capabilities");
      latest = { report, receivedAt: initial ? Math.min(now(), entry.created.getTime()) : now() };
    } catch (err) {
      opts.onProblem?.(new Error(`causeway_pressure ${entry.key} revision ${entry.revision} is not a pressure report: ${(err as Error).message}`));
    }
  };
  const first = await kv.get(PRESSURE_KEY);
  if (first !== null) apply(first, true);
  const watch = await kv.watch({ key: PRESSURE_KEY });
  const done = (async () => {
    try {
      for await (const entry of watch) if (first === null || entry.revision > first.revision) apply(entry, false);
    } catch (err) {
      opts.onProblem?.(new Error(`the watch on causeway_pressure failed: ${(err as Error).message}`));
    }
  })();
  return {
    of(capability, major) {
      const bp = opts.thresholds();
      const thresholds = bp.of(capability, major);
      const ageMs = latest === undefined ? Infinity : Math.max(0, now() - latest.receivedAt);
      if (latest === undefined || ageMs > bp.staleMs) {
        return { level: PressureLevel.Ok, backlog: 0, thresholds, streamFill: 0, drainPerSecond: 0, stale: true, ageMs };
      }
      const cap = latest.report.capabilities[`${capability}.v${major}`];
      const backlog = cap?.backlog ?? 0;
      const streamFill = latest.report.stream.fill;
      return { level: pressureLevel(backlog, streamFill, thresholds, bp.stream), backlog, thresholds, streamFill, drainPerSecond: cap?.drainPerSecond ?? 0, stale: false, ageMs };
    },
    async close() {
      watch.stop();
      await done;
    },
  };
}

/**
 * What a handler sees of a capability it is about to address: its level and backlog ("ok" and 0 when unknown or
 * stale, `stale` then true), so fan-out can shrink (a planner plans fewer tasks when research is at "soft").
 */
export type PressureAccessor = (capability: string, major: number) => { readonly level: PressureLevelValue; readonly backlog: number; readonly stale: boolean };

/** The accessor where no pressure is known (no report followed, a replay): every capability ok, stale. */
export const unknownPressure: PressureAccessor = (() => {
  const unknown = Object.freeze({ level: PressureLevel.Ok, backlog: 0, stale: true });
  return () => unknown;
})();

/** The handler's accessor over a view (for HandlerContext: `ctx.pressure("research", 1)`). */
function pressureAccessor(view: Pick<PressureView, "of">): PressureAccessor {
  return (capability, major) => {
    const p = view.of(capability, major);
    return { level: p.level, backlog: p.backlog, stale: p.stale };
  };
}

/** A followed pressure report with its thresholds file: what an agent runtime opens once (see {@link followPressure}). */
export interface FollowedPressure {
  readonly view: PressureView;
  /** For HandlerContext. */
  readonly pressure: PressureAccessor;
  close(): Promise<void>;
}

/**
 * Follows causeway_pressure with the thresholds of `backpressurePath` (reloaded live; a bad edit keeps the last good
 * and is reported through `onProblem`). For an agent runtime: `const p = await followPressure(nc)`, then
 * `ctx.pressure = p.pressure` in each HandlerContext and `await p.close()` at stop. Throws what opening the bucket
 * throws (NotReadyError when it does not exist, CW_ERR_PERMISSION_DENIED when the principal may not read it) or a
 * bad thresholds file.
 */
export async function followPressure(nc: NatsConnection, opts: { bucket?: string; backpressurePath?: string; onProblem?: (err: Error) => void } = {}): Promise<FollowedPressure> {
  const thresholds = watchInfraFile(opts.backpressurePath ?? DEFAULT_BACKPRESSURE_PATH, loadBackpressure, { what: "the backpressure thresholds", onReload: (err) => { if (err) opts.onProblem?.(err); } });
  try {
    const view = await watchPressure(nc, { thresholds: thresholds.current, ...(opts.bucket !== undefined && { bucket: opts.bucket }), ...(opts.onProblem && { onProblem: opts.onProblem }) });
    return {
      view, pressure: pressureAccessor(view),
      async close() {
        thresholds.close();
        await view.close();
      },
    };
  } catch (err) {
    thresholds.close();
    throw err;
  }
}
