// Admission (issue 16, items 2 and 4): whether the mesh takes a new flow now. Every way in — HTTP (one event or a
// batch), NATS requests, the MESH_INGEST stream — checks an event (notarize.ts) and then comes here before the
// ledger publishes it, so one check covers them all:
//
// 1. Backpressure. The backlog of the capability the flow's route starts at, as the coordinator measured it
//    (kit pressure.ts), against infra/backpressure.json: above `soft` background flows are shed, and the normal
//    flows of a tenant past its fair share; above `hard` every flow but critical ones. A tenant's fair share of a
//    capability is its weight (infra/tenants.json) over the weights of the tenants admitted there in the last
//    `fairShareWindowMs`; its share is its part of those admissions, measured by this gateway process (connections
//    are spread over workers and replicas, so each sees the same proportions on average). A tenant alone there is
//    never past its share. The priority is the gateway's (the upstream's policy, notarize.ts): an upstream cannot
//    raise it to dodge shedding. Stale or missing pressure data (the coordinator down) admits: fail open, logged
//    once when it goes stale and once when it is fresh again.
// 2. Quotas. The tenant's flows and cost units for the period, counted cluster-wide (kit tenants.ts); the charge
//    is taken back for a flow that turns out to be a resubmission (the ledger answers `duplicate`) or is not
//    published.
//
// A refusal is a 429 — CW_ERR_OVERLOADED or CW_ERR_QUOTA_EXCEEDED — with Retry-After, never kept in quarantine:
// nothing was accepted, and the upstream was told. Before refusing, the ledger's mark is read: a resubmission of
// an event accepted before is answered as then (202, `duplicate`), whatever the load or the quota — nothing
// already accepted is ever shed. Each refusal is logged at info with its cause, and summed up into one signed
// decision.admission per tenant and action per interval (DecisionSummaries).
import { hostname } from "node:os";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import {
  DecisionKind, ErrorCode, Priority, checkTenantMembers, decisionEvent, describePeriod, loadBackpressure, loadTenants, openQuotaCounter, publishDecision, watchInfraFile, watchPressure,
  type Backpressure, type Pressure, type PressureView, type PriorityValue, type QuotaCounter, type QuotaRefusal, type SigningKey, type Tenant, type Tenants,
} from "../kit/index.ts";
import type { IngressDeps } from "./ingress.ts";
import type { Accepted, Rejected } from "./outcome.ts";
import { rejected } from "./outcome.ts";
import type { Checked } from "./notarize.ts";
import type { Upstream, Upstreams } from "./upstreams.ts";

/** What admission decided on the new flows of one request. */
export type Verdict =
  | { readonly admitted: true; /** Takes back the quota charge of flow `i` (not admitted after all). */ release(i: number): Promise<void> }
  | {
    readonly admitted: false;
    readonly refusal: Rejected;
    /** Logs the refusal and counts it in the signed summaries: once it is final (not a resubmission's, see admitAndPublish). */
    report(): void;
  };

/** The gateway's admission of new flows. */
export interface Admission {
  /** Admits every flow of `checked` (one upstream's, one request's) or none: pressure first (nothing counted), then the tenant's quotas. */
  admit(upstream: Upstream, checked: readonly Checked[]): Promise<Verdict>;
  /** The tenants in force (live). */
  tenants(): Tenants;
  /** Stops the watches and signs the last summaries. */
  close(): Promise<void>;
}

/** What admission needs. */
export interface AdmissionDeps {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly upstreams: Upstreams;
  readonly tenantsPath: string;
  readonly backpressurePath: string;
  readonly principal: string;
  readonly key: SigningKey;
  /** The subject prefix decisions are published under. */
  readonly prefix: string;
  readonly buckets: { readonly quotas: string; readonly pressure: string };
  readonly log: Logger;
}

/** Loads the tenants (checked against the upstreams) and the thresholds, opens the quota counter, follows the pressure. */
export async function startAdmission(deps: AdmissionDeps): Promise<Admission> {
  const log = deps.log.child({ module: "admission" });

  const tenants = watchInfraFile(deps.tenantsPath, (path) => {
    const t = loadTenants(path);
    // A tenant an upstream belongs to cannot go: the reload is refused, the last good tenants stay.
    checkTenantMembers(t, deps.upstreams.list(), path, ErrorCode.TenantsInvalid);
    return t;
  }, { what: "the tenants", log });
  const backpressure = watchInfraFile(deps.backpressurePath, loadBackpressure, { what: "the backpressure thresholds", log });
  try {
    const quotas = await openQuotaCounter(deps.nc, deps.buckets.quotas);
    const pressure = await watchPressure(deps.nc, {
      thresholds: backpressure.current, bucket: deps.buckets.pressure, onProblem: (err) => log.warn({ err }, "pressure watch problem"),
    });
    return createAdmission({ ...deps, log, tenants: tenants.current, backpressure: backpressure.current, quotas, pressure, close: async () => {
      tenants.close();
      backpressure.close();
      await pressure.close();
    } });
  } catch (err) {
    tenants.close();
    backpressure.close();
    throw err;
  }
}

/** What {@link createAdmission} works from (each a live getter where the file reloads). */
export interface AdmissionParts {
  readonly tenants: () => Tenants;
  readonly backpressure: () => Backpressure;
  readonly quotas: QuotaCounter;
  readonly pressure: Pick<PressureView, "of">;
  readonly js: JetStreamClient;
  readonly principal: string;
  readonly key: SigningKey;
  readonly prefix: string;
  readonly log: Logger;
  readonly close?: () => Promise<void>;
  readonly now?: () => number;
}

/** Admission over its parts. */
export function createAdmission(parts: AdmissionParts): Admission {
  const now = parts.now ?? Date.now;
  const shares = new FairShares(() => parts.backpressure().fairShareWindowMs, now);
  const summaries = new DecisionSummaries(parts, now);
  let stale = false;

  const shed = (upstream: Upstream, tenant: Tenant | undefined, c: Checked): Verdict | undefined => {
    const { capability, major } = c.route;
    const p = parts.pressure.of(capability, major);
    if (p.stale) {
      if (!stale) parts.log.warn({ capability: `${capability}.v${major}`, ageMs: Number.isFinite(p.ageMs) ? p.ageMs : null }, "no fresh backlog report from the coordinator: admitting new flows without backpressure (fail open) until one arrives");
      stale = true;
      return undefined;
    }
    if (stale) parts.log.info("backlog reports from the coordinator are fresh again: backpressure applies");
    stale = false;
    const ref = `${capability}.v${major}`;
    const priority = c.priority;
    let why: string | undefined;
    let unfair = false;
    if (p.level === "hard" && priority !== Priority.Critical) why = `above its hard threshold only critical flows are admitted`;
    else if (p.level === "soft" && priority === Priority.Background) why = `above its soft threshold background flows are shed`;
    else if (p.level === "soft" && priority === Priority.Normal && tenant !== undefined) {
      const share = shares.of(ref, tenant.name, (name) => parts.tenants().get(name)?.weight ?? 1);
      if (share !== undefined && share.used > share.fair) {
        unfair = true;
        why = `above its soft threshold a tenant past its fair share has its normal flows shed too: tenant ${tenant.name} took ${percent(share.used)} of ${ref}'s recent admissions, its share is ${percent(share.fair)}`;
      }
    }
    if (why === undefined) return undefined;
    const retryafter = retryAfterSeconds(p, priority);
    const backlog = `${p.backlog} waiting (soft ${p.thresholds.soft}, hard ${p.thresholds.hard}${p.streamFill > 0 ? `, MESH_CAP ${percent(p.streamFill)} full` : ""})`;
    const refusal = rejected(ErrorCode.Overloaded, `the mesh is overloaded: ${ref}, where this flow would start, has ${backlog}; ${why}. This ${priority} flow of upstream ${upstream.name} (tenant ${tenant?.name ?? upstream.tenant}) was not admitted; retry after ${retryafter} s`, { retryafter });
    return {
      admitted: false, refusal,
      report() {
        parts.log.info({ code: ErrorCode.Overloaded, upstream: upstream.name, tenant: tenant?.name ?? upstream.tenant, priority, capability: ref, level: p.level, backlog: p.backlog, unfair, id: c.event.id }, `flow shed: ${why}`);
        summaries.shed(tenant?.name ?? upstream.tenant, upstream.name, priority, ref, p, unfair);
      },
    };
  };

  return {
    async admit(upstream, checked) {
      const tenant = parts.tenants().get(upstream.tenant);
      for (const c of checked) {
        const refused = shed(upstream, tenant, c);
        if (refused) return refused;
      }
      if (tenant?.quotas === undefined) {
        for (const c of checked) shares.admitted(`${c.route.capability}.v${c.route.major}`, upstream.tenant);
        return { admitted: true, release: () => Promise.resolve() };
      }
      const costs = checked.map((c) => c.budget.cost ?? 0);
      const grant = await parts.quotas.charge(tenant, { flows: checked.length, cost: costs.reduce((a, b) => a + b, 0) }, now());
      if (!grant.admitted) {
        return {
          admitted: false, refusal: overQuota(upstream, tenant, grant, checked.length, now()),
          report() {
            parts.log.info({ code: ErrorCode.QuotaExceeded, upstream: upstream.name, tenant: tenant.name, quota: grant.quota, use: grant.use, limit: grant.limit, asked: grant.asked }, `flow refused: tenant ${tenant.name} is over its ${grant.quota} quota`);
            summaries.quota(tenant.name, upstream.name, checked, grant);
          },
        };
      }
      for (const c of checked) shares.admitted(`${c.route.capability}.v${c.route.major}`, upstream.tenant);
      const released = new Set<number>();
      return {
        admitted: true,
        async release(i) {
          if (released.has(i) || i < 0 || i >= checked.length) return;
          released.add(i);
          await grant.refund({ flows: 1, cost: costs[i]! }).catch((err: unknown) => {
            // The tenant is counted one flow too many this period: never more than it was granted.
            parts.log.warn({ err, tenant: tenant.name }, "could not take back the quota charge of a flow that was not admitted");
          });
        },
      };
    },
    tenants: parts.tenants,
    async close() {
      await summaries.close();
      await parts.close?.();
    },
  };
}

/** What admitting and publishing needs of the ingress deps. */
export type AdmittedPublish = Pick<IngressDeps, "admission" | "ledger" | "notary">;

/**
 * Admits the flows of `checked` and publishes them through the ledger: the refusal (429) when they are not
 * admitted, else each flow's publish, which rejects as the ledger's does. A refusal of flows the gateway accepted
 * before (each one a resubmission) is no refusal: they are published (the ledger answers `duplicate`). A refusal
 * is reported (logged, summed up) only once final. A quota charge is taken back for each flow that turns out a
 * duplicate or fails to publish.
 */
export async function admitAndPublish(deps: AdmittedPublish, upstream: Upstream, checked: readonly Checked[]): Promise<Rejected | Promise<Accepted>[]> {
  let verdict = await deps.admission.admit(upstream, checked);
  let admitted = checked;
  if (!verdict.admitted) {
    const before = await Promise.all(checked.map((c) => deps.ledger.acceptedBefore(c)));
    if (!before.some(Boolean)) {
      verdict.report();
      return verdict.refusal;
    }
    // Only the new ones need admitting; the resubmitted ones are answered as they were then.
    admitted = checked.filter((_, i) => !before[i]);
    if (admitted.length > 0) {
      verdict = await deps.admission.admit(upstream, admitted);
      if (!verdict.admitted) {
        verdict.report();
        return verdict.refusal;
      }
    } else verdict = { admitted: true, release: () => Promise.resolve() };
  }
  const release = verdict.release;
  // Each flow's index among the admitted ones (-1: a resubmission, charged nothing now).
  const indexOf = new Map(admitted.map((c, i) => [c, i]));
  return checked.map((c) => {
    const i = indexOf.get(c) ?? -1;
    const publishing = deps.ledger.publish(c, deps.notary.notarize(c));
    if (i < 0) return publishing;
    return publishing.then(async (accepted) => {
      if (accepted.duplicate) await release(i);
      return accepted;
    }, async (err: unknown) => {
      await release(i);
      throw err;
    });
  });
}

/** 429 CW_ERR_QUOTA_EXCEEDED: which quota, its use and limit, when the period resets. */
function overQuota(upstream: Upstream, tenant: Tenant, r: QuotaRefusal, flows: number, now: number): Rejected {
  const resets = new Date(r.period.end).toISOString();
  const unit = r.quota === "flows" ? "flows" : "cost units";
  const asked = r.quota === "flows" ? (flows === 1 ? "a new flow" : `${flows} new flows`) : `${r.asked} cost units (the cost budget of ${flows === 1 ? "the flow" : `${flows} flows`})`;
  const period = describePeriod(tenant.quotas!.period);
  const head = `tenant ${tenant.name} (upstream ${upstream.name}) is over its ${r.quota} quota: ${r.use} of ${r.limit} ${unit} used this period (${period}, ${new Date(r.period.start).toISOString()} to ${resets})`;
  if (r.asked > r.limit) return rejected(ErrorCode.QuotaExceeded, `${head}; ${asked} is more than the whole quota: no period will admit it`);
  const retryafter = Math.max(1, Math.ceil((r.period.end - now) / 1000));
  return rejected(ErrorCode.QuotaExceeded, `${head}; ${asked} would exceed it. The quota resets at ${resets}: retry after ${retryafter} s`, { retryafter });
}

const percent = (x: number) => `${Math.round(x * 1000) / 10} %`;

/** Bounds of a shed flow's Retry-After, in seconds. */
const RETRY_MIN_S = 1;
const RETRY_MAX_S = 60;
/** Retry-After when the capability drains nothing measurable. */
const RETRY_UNKNOWN_S = 10;

/**
 * Seconds until the backlog is likely below the threshold under which a flow of `priority` is admitted again, at
 * the capability's measured drain rate; bounded to 1 … 60 s, 10 s when nothing drains.
 */
export function retryAfterSeconds(p: Pick<Pressure, "backlog" | "thresholds" | "drainPerSecond">, priority: PriorityValue): number {
  const target = priority === Priority.Background ? p.thresholds.soft : p.thresholds.hard;
  const excess = Math.max(1, p.backlog - target + 1);
  if (p.drainPerSecond <= 0) return RETRY_UNKNOWN_S;
  return Math.min(RETRY_MAX_S, Math.max(RETRY_MIN_S, Math.ceil(excess / p.drainPerSecond)));
}

/** Each tenant's recent admissions per capability, by second, over a sliding window (this process's). */
export class FairShares {
  readonly #window: () => number;
  readonly #now: () => number;
  /** capability → its admissions by second (oldest first, each second's counts by tenant) and their running totals. */
  readonly #capabilities = new Map<string, { seconds: { second: number; counts: Map<string, number> }[]; totals: Map<string, number>; total: number }>();

  constructor(windowMs: () => number, now: () => number) {
    this.#window = windowMs;
    this.#now = now;
  }

  admitted(capability: string, tenant: string): void {
    const second = Math.floor(this.#now() / 1000);
    let c = this.#capabilities.get(capability);
    if (c === undefined) this.#capabilities.set(capability, (c = { seconds: [], totals: new Map(), total: 0 }));
    this.#trim(c);
    let last = c.seconds.at(-1);
    if (last?.second !== second) c.seconds.push((last = { second, counts: new Map() }));
    last.counts.set(tenant, (last.counts.get(tenant) ?? 0) + 1);
    c.totals.set(tenant, (c.totals.get(tenant) ?? 0) + 1);
    c.total++;
  }

  /**
   * `tenant`'s share of the capability's admissions in the window and its fair share (its weight over the weights of
   * the tenants admitted there, itself included); undefined when it is alone there (then it may use it all).
   * O(tenants admitted there): the totals are kept as seconds come and go.
   */
  of(capability: string, tenant: string, weightOf: (tenant: string) => number): { used: number; fair: number } | undefined {
    const c = this.#capabilities.get(capability);
    if (c === undefined) return undefined;
    this.#trim(c);
    if (c.total === 0 || (c.totals.size === 1 && c.totals.has(tenant))) return undefined;
    let weights = c.totals.has(tenant) ? 0 : weightOf(tenant);
    for (const t of c.totals.keys()) weights += weightOf(t);
    return { used: (c.totals.get(tenant) ?? 0) / c.total, fair: weightOf(tenant) / weights };
  }

  /** Takes the seconds that left the window out of the totals. */
  #trim(c: { seconds: { second: number; counts: Map<string, number> }[]; totals: Map<string, number>; total: number }): void {
    const oldest = Math.floor((this.#now() - this.#window()) / 1000);
    let drop = 0;
    for (; drop < c.seconds.length && c.seconds[drop]!.second <= oldest; drop++) {
      for (const [t, n] of c.seconds[drop]!.counts) {
        const left = c.totals.get(t)! - n;
        if (left === 0) c.totals.delete(t);
        else c.totals.set(t, left);
        c.total -= n;
      }
    }
    if (drop > 0) c.seconds.splice(0, drop);
  }
}

/** One tenant's refusals of one action since the last summary. */
interface Summary {
  action: "shed" | "quota";
  tenant: string;
  count: number;
  from: number;
  to: number;
  upstreams: Record<string, number>;
  priorities: Record<string, number>;
  capabilities: Record<string, { count: number; levels: Record<string, number>; unfair: number; backlog: { min: number; max: number }; thresholds: { soft: number; hard: number } }>;
  quotas: Partial<Record<"flows" | "cost", { count: number; limit: number; use: number; periodStart: string; periodEnd: string }>>;
}

/**
 * Sums up refusals into one signed decision.admission per tenant and action per interval (infra/backpressure.json
 * `summaryIntervalMs`), so an auditor reads "gateway g shed 40 background flows of tenant t between t1 and t2 at a
 * backlog of 220…240" in lineage without one decision per refusal (a flood would otherwise flood MESH_DECISION).
 * Several gateway processes each sign their own: the decision names the process.
 */
export class DecisionSummaries {
  readonly #parts: AdmissionParts;
  readonly #now: () => number;
  readonly #open = new Map<string, Summary>();
  readonly #gateway = `${hostname()}:${process.pid}`;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();

  constructor(parts: AdmissionParts, now: () => number) {
    this.#parts = parts;
    this.#now = now;
  }

  shed(tenant: string, upstream: string, priority: string, capability: string, p: Pressure, unfair: boolean): void {
    const s = this.#summary("shed", tenant, upstream, priority);
    const c = (s.capabilities[capability] ??= { count: 0, levels: {}, unfair: 0, backlog: { min: p.backlog, max: p.backlog }, thresholds: { ...p.thresholds } });
    c.count++;
    c.levels[p.level] = (c.levels[p.level] ?? 0) + 1;
    if (unfair) c.unfair++;
    c.backlog.min = Math.min(c.backlog.min, p.backlog);
    c.backlog.max = Math.max(c.backlog.max, p.backlog);
    c.thresholds = { ...p.thresholds };
  }

  quota(tenant: string, upstream: string, checked: readonly Checked[], r: QuotaRefusal): void {
    for (const c of checked) {
      const s = this.#summary("quota", tenant, upstream, c.priority);
      const q = (s.quotas[r.quota] ??= { count: 0, limit: r.limit, use: r.use, periodStart: new Date(r.period.start).toISOString(), periodEnd: new Date(r.period.end).toISOString() });
      q.count++;
      q.limit = r.limit;
      q.use = Math.max(q.use, r.use);
      q.periodEnd = new Date(r.period.end).toISOString();
    }
  }

  #summary(action: "shed" | "quota", tenant: string, upstream: string, priority: string): Summary {
    const at = this.#now();
    const key = `${action}\0${tenant}`;
    let s = this.#open.get(key);
    if (s === undefined) {
      s = { action, tenant, count: 0, from: at, to: at, upstreams: {}, priorities: {}, capabilities: {}, quotas: {} };
      this.#open.set(key, s);
    }
    s.count++;
    s.to = at;
    s.upstreams[upstream] = (s.upstreams[upstream] ?? 0) + 1;
    s.priorities[priority] = (s.priorities[priority] ?? 0) + 1;
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      void this.flush();
    }, this.#parts.backpressure().summaryIntervalMs);
    this.#timer.unref();
    return s;
  }

  /** Signs and publishes what is open now. */
  flush(): Promise<void> {
    const open = [...this.#open.values()];
    this.#open.clear();
    this.#flushing = this.#flushing.then(async () => {
      for (const s of open) {
        const data = {
          action: s.action, code: s.action === "shed" ? ErrorCode.Overloaded : ErrorCode.QuotaExceeded, tenant: s.tenant, count: s.count,
          from: new Date(s.from).toISOString(), to: new Date(s.to).toISOString(), gateway: this.#gateway, upstreams: s.upstreams, priorities: s.priorities,
          ...(s.action === "shed" ? { capabilities: s.capabilities } : { quotas: s.quotas }),
        };
        const { principal, key } = this.#parts;
        try {
          const event = decisionEvent(DecisionKind.Admission, data, { principal, key, idKey: `${this.#gateway}/${s.action}/${s.tenant}/${s.from}` });
          await publishDecision(this.#parts.js, DecisionKind.Admission, event, this.#parts.prefix, { principal, key });
        } catch (err) {
          this.#parts.log.warn({ err, tenant: s.tenant, action: s.action, count: s.count }, "could not publish the admission summary decision");
        }
      }
    });
    return this.#flushing;
  }

  async close(): Promise<void> {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.flush();
  }
}
