// The reporter's join state: the verified findings of each request, gathered until all of its tasks have one
// or its deadline passes. It lives in the broker (KV bucket causeway_joins, one key per request) so it survives
// restarts and every replica sees the same joins; writes are compare-and-set on the key's revision, retried on
// conflict, so replicas adding findings of one request at once lose none. The in-memory store has the same
// semantics, for tests. Both share one pure merge function.
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { KvBucket, RetryableError, isWrongRevision, openMeshBucket, type Cause } from "../../kit/index.ts";

/** One verified finding of a request. */
export interface JoinedFinding {
  /** The research.finding.created id: the identity of the finding (a redelivery has the same). */
  readonly findingId: string;
  readonly taskIndex: number;
  readonly verdict: "supported" | "refuted" | "inconclusive";
  /** The verifier's confidence in its verdict. */
  readonly confidence: number;
  /** The finding's claim, when it travelled with the verified finding. */
  readonly claim?: string;
  /** The task's query, when it travelled with the verified finding. */
  readonly query?: string;
}

/** What the first finding of a request fixes for its whole join. */
export interface JoinMeta {
  totalTasks: number;
  /** When the report is due (RFC 3339); past it, the sweep publishes what the join has. */
  deadline: string;
  /** The event that causes a report the sweep publishes (the first verified finding). */
  cause: Cause;
  /** The request's topic: the report's title. */
  topic?: string;
}

/** The join of one request. Immutable: a store returns a fresh copy each time. */
export interface JoinState {
  readonly requestId: string;
  readonly totalTasks: number;
  readonly deadline: string;
  readonly topic?: string;
  readonly cause: Cause;
  /** Distinct by findingId, ordered by task index then finding id. */
  readonly findings: readonly JoinedFinding[];
  /** The report was emitted; findings arriving later are not added. */
  readonly published: boolean;
}

/** Where joins live. */
export interface JoinStore {
  /**
   * Adds `finding` to the join of `requestId` (creating it with `meta`) and returns the join. A finding already
   * there (same findingId) is not added twice; nothing is added to a published join.
   */
  add(requestId: string, finding: JoinedFinding, meta: JoinMeta): Promise<JoinState>;
  /** Unpublished joins whose deadline is at or before `now` (epoch ms), earliest first. */
  due(now?: number): Promise<JoinState[]>;
  /** Marks the join published (idempotent; unknown requests are ignored). */
  markPublished(requestId: string): Promise<void>;
}

/** True when every task of the request has a verified finding. */
export function isComplete(state: Pick<JoinState, "findings" | "totalTasks">): boolean {
  return new Set(state.findings.map((f) => f.taskIndex)).size >= state.totalTasks;
}

/** The join after adding `finding`, and whether it changed (pure). */
export function mergeFinding(current: JoinState | undefined, requestId: string, finding: JoinedFinding, meta: JoinMeta): { state: JoinState; changed: boolean } {
  if (current !== undefined && (current.published || current.findings.some((f) => f.findingId === finding.findingId))) {
    return { state: current, changed: false };
  }
  const base: JoinState = current ?? {
    requestId,
    totalTasks: meta.totalTasks,
    deadline: meta.deadline,
    ...(meta.topic !== undefined && { topic: meta.topic }),
    cause: { ...meta.cause },
    findings: [],
    published: false,
  };
  const findings = [...base.findings, { ...finding }].sort((a, b) => a.taskIndex - b.taskIndex || (a.findingId < b.findingId ? -1 : a.findingId > b.findingId ? 1 : 0));
  return { state: { ...base, findings }, changed: true };
}

/** A store in process memory: the reference semantics, for tests and single-process experiments. */
export function createMemoryJoinStore(): JoinStore {
  const joins = new Map<string, JoinState>();
  // Copies through JSON, as the KV store does, so callers never share (or mutate) stored state.
  const copy = (state: JoinState) => decodeJoin(encodeJoin(state), state.requestId);
  return {
    add(requestId, finding, meta) {
      const { state, changed } = mergeFinding(joins.get(requestId), requestId, finding, meta);
      if (changed) joins.set(requestId, state);
      return Promise.resolve(copy(state));
    },
    due(now = Date.now()) {
      return Promise.resolve(sortByDeadline([...joins.values()].filter((s) => isDue(s, now)).map(copy)));
    },
    markPublished(requestId) {
      const state = joins.get(requestId);
      if (state !== undefined && !state.published) joins.set(requestId, { ...state, published: true });
      return Promise.resolve();
    },
  };
}

/** Options for {@link openKvJoinStore}. */
export interface KvJoinStoreOptions {
  /** The bucket (created by `causeway streams apply` with the settings of the bucket table). Default `causeway_joins`. */
  bucket?: string;
  /** Conflicting writes retried before giving up with a RetryableError. Default 100. */
  maxAttempts?: number;
  /** Told about a corrupt join the sweep skips (the handler of its request fails loudly instead). Default: ignore. */
  onProblem?: (err: Error) => void;
}

/**
 * Opens the existing KV bucket of the joins on `nc` as a join store; never creates it. ConfigError CW_ERR_CONFIG
 * naming the bucket and `causeway streams apply` when it is missing.
 */
export async function openKvJoinStore(nc: NatsConnection, opts: KvJoinStoreOptions = {}): Promise<JoinStore> {
  const kv = await openMeshBucket(nc, opts.bucket ?? KvBucket.Joins, "the reporter's joins");
  return createKvJoinStore(kv, opts);
}

/** A join store over an open KV bucket: one key per request ({@link joinKey}), JSON values, compare-and-set writes. */
export function createKvJoinStore(kv: KV, opts: Pick<KvJoinStoreOptions, "maxAttempts" | "onProblem"> = {}): JoinStore {
  const maxAttempts = opts.maxAttempts ?? 100;
  // Published is terminal: once seen, a key needs no further reads by the sweep of this process.
  const published = new Set<string>();

  const read = async (key: string, requestId: string | undefined) => {
    const entry = await kv.get(key);
    if (entry === null || entry.operation !== "PUT") return undefined;
    return { state: decodeJoin(entry.string(), requestId), revision: entry.revision };
  };

  /** Read, change, compare-and-set; again from the read when another writer got there first. */
  const modify = async (requestId: string, change: (current: JoinState | undefined) => JoinState | undefined): Promise<JoinState | undefined> => {
    const key = joinKey(requestId);
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      const current = await read(key, requestId);
      const next = change(current?.state);
      if (next === undefined) return current?.state;
      try {
        if (current === undefined) await kv.create(key, encodeJoin(next));
        else await kv.update(key, encodeJoin(next), current.revision);
        return next;
      } catch (err) {
        if (!isWrongRevision(err)) throw err;
      }
    }
    throw new RetryableError(`join ${requestId}: still conflicting after ${maxAttempts} attempts`);
  };

  return {
    async add(requestId, finding, meta) {
      const state = await modify(requestId, (current) => {
        const merged = mergeFinding(current, requestId, finding, meta);
        return merged.changed ? merged.state : undefined;
      });
      // mergeFinding always changes a missing join, so once modify returns, the join exists.
      return state!;
    },
    async due(now = Date.now()) {
      const out: JoinState[] = [];
      const seen = new Set<string>();
      for await (const key of await kv.keys()) {
        seen.add(key);
        if (published.has(key)) continue;
        let current: Awaited<ReturnType<typeof read>>;
        try {
          current = await read(key, undefined);
        } catch (err) {
          // One corrupt join must not hold back every other deadline.
          if (!(err instanceof CorruptJoinError)) throw err;
          opts.onProblem?.(err);
          continue;
        }
        if (current === undefined || joinKey(current.state.requestId) !== key) continue;
        if (current.state.published) published.add(key);
        else if (isDue(current.state, now)) out.push(current.state);
      }
      // Keys that expired from the bucket leave the cache too, so it stays as small as the bucket.
      for (const key of published) if (!seen.has(key)) published.delete(key);
      return sortByDeadline(out);
    },
    async markPublished(requestId) {
      await modify(requestId, (current) => (current === undefined || current.published ? undefined : { ...current, published: true }));
      published.add(joinKey(requestId));
    },
  };
}

/**
 * The KV key of a request: `r.<id>` when the id is KV-safe (UUIDs are), else `x.<base64url of the id>`. The
 * prefixes keep the two forms from colliding.
 */
export function joinKey(requestId: string): string {
  return /^[A-Za-z0-9_-]{1,200}$/.test(requestId) ? `r.${requestId}` : `x.${Buffer.from(requestId, "utf8").toString("base64url")}`;
}

function isDue(state: JoinState, now: number): boolean {
  return !state.published && Date.parse(state.deadline) <= now;
}

function sortByDeadline(states: JoinState[]): JoinState[] {
  return states.sort((a, b) => Date.parse(a.deadline) - Date.parse(b.deadline));
}


const VERSION = 1;

function encodeJoin(state: JoinState): string {
  return JSON.stringify({ v: VERSION, ...state });
}

/** A stored join that does not parse as one. */
export class CorruptJoinError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CorruptJoinError";
  }
}

/** Parses a stored join, checking its shape: a corrupt value fails loudly instead of losing findings. */
function decodeJoin(text: string, requestId: string | undefined): JoinState {
  const fail = (why: string): never => {
    throw new CorruptJoinError(`join ${requestId ?? "(found by the sweep)"} in ${KvBucket.Joins} is corrupt: ${why}`);
  };
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return fail("not JSON");
  }
  if (typeof v !== "object" || v === null || v.v !== VERSION) return fail(`expected a version ${VERSION} object`);
  const { requestId: id, totalTasks, deadline, topic, cause, findings, published } = v;
  if (typeof id !== "string" || (requestId !== undefined && id !== requestId)) fail("requestId does not match its key");
  if (typeof totalTasks !== "number" || !Number.isInteger(totalTasks) || totalTasks < 1) fail("totalTasks");
  if (typeof deadline !== "string" || Number.isNaN(Date.parse(deadline))) fail("deadline");
  if (topic !== undefined && typeof topic !== "string") fail("topic");
  const c = cause as Record<string, unknown> | null;
  if (typeof c !== "object" || c === null || typeof c.id !== "string" || typeof c.source !== "string" || typeof c.correlationid !== "string") fail("cause");
  const context = c!.context as Record<string, unknown> | undefined;
  if (context !== undefined && (typeof context !== "object" || context === null || !Object.values(context).every((v) => typeof v === "string"))) fail("cause.context");
  if (!Array.isArray(findings)) fail("findings");
  for (const f of findings as Record<string, unknown>[]) {
    if (typeof f?.findingId !== "string" || typeof f.taskIndex !== "number" || typeof f.verdict !== "string" || typeof f.confidence !== "number") fail("a finding");
  }
  if (typeof published !== "boolean") fail("published");
  const state: JoinState = {
    requestId: id as string,
    totalTasks: totalTasks as number,
    deadline: deadline as string,
    ...(topic !== undefined && { topic: topic as string }),
    cause: c as unknown as Cause,
    findings: findings as JoinedFinding[],
    published: published as boolean,
  };
  return state;
}
