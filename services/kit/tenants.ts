// Tenants and their quotas (issue 16, item 2). Upstreams belong to tenants (infra/upstreams.json `tenant`); each
// tenant may start so many flows, and grant so many cost units, per period (infra/tenants.json). The gateway counts
// both at admission, cluster-wide, in KV causeway_quotas: one key per tenant and period, `<tenant>.<period start
// in ms>`, whose value `{"flows": n, "cost": c}` is changed by compare-and-set (kv-cas.ts) — so several gateway
// workers and replicas never admit past a limit between them. `causeway tenants` reads the same keys.
//
// Cost is counted as granted, not as spent: a flow's cost budget (`budgetcost`, signed into the flow at the
// gateway) is what it may spend, and it is known at admission; what it does spend is known only later, in lineage.
// A tenant's cost quota is thus a bound on what its flows may spend in the period, never exceeded.
import { join } from "node:path";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KvBucket, openMeshBucket } from "./buckets.ts";
import { ErrorCode } from "./errors.ts";
import { checkInfraDoc, infraDir, invalidFile, readInfraFile } from "./infra-file.ts";
import { casCells, type CasCells } from "./kv-cas.ts";

/** The file the tenants live in (`CAUSEWAY_TENANTS` overrides it for the gateway and `causeway tenants`). */
export const DEFAULT_TENANTS_PATH = join(infraDir, "tenants.json");
const SCHEMA_FILE = "tenants.schema.json";

/** A calendar unit (UTC) or a length in ms. */
export type PeriodSpec = "minute" | "hour" | "day" | "week" | "month" | number;

/** The quotas one tenant's flows count against. */
export interface TenantQuotas {
  readonly period: PeriodSpec;
  /** New flows per period; undefined: no bound. */
  readonly flows?: number;
  /** Cost units granted per period; undefined: no bound. */
  readonly cost?: number;
}

/** One tenant, validated and frozen. */
export interface Tenant {
  readonly name: string;
  readonly description: string;
  /** Undefined: no quota. */
  readonly quotas?: TenantQuotas;
  /** Its weight in the fair share under backpressure. */
  readonly weight: number;
}

/** Every tenant, by name. */
export interface Tenants {
  readonly tenants: Readonly<Record<string, Tenant>>;
  /** Where they were read from. */
  readonly source: string;
  get(name: string): Tenant | undefined;
}

interface RawTenants {
  tenants: Record<string, { description: string; quotas?: TenantQuotas; weight?: number }>;
}

/** Validates a tenants document against infra/tenants.schema.json; CW_ERR_TENANTS_INVALID naming the JSON path. */
export function parseTenants(doc: unknown, source = "tenants.json"): Tenants {
  const raw = checkInfraDoc<RawTenants>(doc, SCHEMA_FILE, ErrorCode.TenantsInvalid, source);
  const tenants: Record<string, Tenant> = {};
  for (const [name, t] of Object.entries(raw.tenants)) {
    tenants[name] = Object.freeze({
      name, description: t.description, weight: t.weight ?? 1,
      ...(t.quotas !== undefined && { quotas: Object.freeze({ ...t.quotas }) }),
    });
  }
  const frozen = Object.freeze(tenants);
  return Object.freeze({ tenants: frozen, source, get: (name: string) => (Object.hasOwn(frozen, name) ? frozen[name] : undefined) });
}

/** Reads and validates the tenants file. */
export function loadTenants(path = DEFAULT_TENANTS_PATH): Tenants {
  return parseTenants(readInfraFile<unknown>(path, SCHEMA_FILE, ErrorCode.TenantsInvalid), path);
}

/** What the tenants check reads of an upstream (the gateway's Upstream). */
export interface TenantMember {
  readonly name: string;
  readonly tenant: string;
  readonly budget: { readonly cost?: number };
}

/**
 * The problems of `upstreams` against `tenants`, one line each naming the upstreams file's JSON path: a tenant that
 * is not declared, or an upstream without a cost budget in a tenant with a cost quota (its flows could not be
 * counted). Empty when they agree.
 */
export function tenantProblems(tenants: Tenants, upstreams: readonly TenantMember[]): string[] {
  const problems: string[] = [];
  for (const u of upstreams) {
    const tenant = tenants.get(u.tenant);
    if (tenant === undefined) {
      problems.push(`/upstreams/${u.name}/tenant: tenant "${u.tenant}" is not declared in ${tenants.source} (an upstream without "tenant" is its own tenant, named like it)`);
    } else if (tenant.quotas?.cost !== undefined && u.budget.cost === undefined) {
      problems.push(`/upstreams/${u.name}/budget/cost: tenant "${u.tenant}" has a cost quota, so its upstreams' flows need a cost budget to be counted`);
    }
  }
  return problems;
}

/** {@link tenantProblems} as a ConfigError `code` naming `path`, or nothing. */
export function checkTenantMembers(tenants: Tenants, upstreams: readonly TenantMember[], path: string, code: typeof ErrorCode.UpstreamsInvalid | typeof ErrorCode.TenantsInvalid): void {
  const problems = tenantProblems(tenants, upstreams);
  if (problems.length > 0) throw invalidFile(path, code, problems);
}

/** One period of a quota: [start, end) in ms since the epoch. */
export interface QuotaPeriod {
  readonly start: number;
  readonly end: number;
}

const MINUTE_MS = 60_000;
const FIXED: Readonly<Record<string, number>> = { minute: MINUTE_MS, hour: 60 * MINUTE_MS, day: 24 * 60 * MINUTE_MS };

/** The period of `spec` that holds `now`. */
export function periodOf(spec: PeriodSpec, now: number): QuotaPeriod {
  if (typeof spec === "number" || spec in FIXED) {
    const length = typeof spec === "number" ? spec : FIXED[spec]!;
    const start = Math.floor(now / length) * length;
    return { start, end: start + length };
  }
  const d = new Date(now);
  if (spec === "week") {
    const day = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
    const start = day - ((d.getUTCDay() + 6) % 7) * FIXED.day!; // back to Monday
    return { start, end: start + 7 * FIXED.day! };
  }
  return { start: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), end: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) };
}

/** How a period spec reads: "day", "90000 ms". */
export function describePeriod(spec: PeriodSpec): string {
  return typeof spec === "number" ? `${spec} ms` : spec;
}

/** The KV key of `tenant`'s use in the period starting at `start`. */
export function quotaKey(tenant: string, start: number): string {
  return `${tenant}.${start}`;
}

/** What a tenant used in one period. */
export interface QuotaUse {
  readonly flows: number;
  readonly cost: number;
}

/** The quota a charge would exceed. */
export interface QuotaRefusal {
  readonly admitted: false;
  /** Which quota: `flows` or `cost`. */
  readonly quota: "flows" | "cost";
  readonly use: number;
  readonly limit: number;
  /** What the charge asked for. */
  readonly asked: number;
  readonly period: QuotaPeriod;
}

/** A charge that was counted; refund() takes it back (a flow that was not admitted after all). */
export interface QuotaGrant {
  readonly admitted: true;
  readonly use: QuotaUse;
  readonly period: QuotaPeriod;
  /** Takes the charge back, or `part` of it, from the period it was counted in (a flow that was not admitted after all). */
  refund(part?: QuotaUse): Promise<void>;
}

/** The quota counters of every tenant. */
export interface QuotaCounter {
  /**
   * Counts `charge` against `tenant`'s quotas for the period holding `now`, all or nothing: refused when either
   * quota would be exceeded (nothing is counted). A tenant without quotas is admitted without a KV round trip.
   * Throws when the bucket cannot be read or written, CW_ERR_UNAVAILABLE when the key kept changing.
   */
  charge(tenant: Tenant, charge: QuotaUse, now?: number): Promise<QuotaGrant | QuotaRefusal>;
  /** What `tenant` used in the period holding `now`. */
  use(tenant: Tenant, now?: number): Promise<QuotaUse & { readonly period: QuotaPeriod | undefined }>;
}

const ZERO: QuotaUse = Object.freeze({ flows: 0, cost: 0 });
/**
 * How much of what a quota has left one process charges ahead with each counted charge: a sixteenth, at most
 * {@link AHEAD_MAX_FLOWS} flows. The next charges are then taken from that allowance without a KV round trip (one
 * compare-and-set per up to 65 flows instead of per flow), so a quota costs the gateway almost nothing on its hot
 * path. Never more than the quota is admitted: the allowance is counted before it is used. Near the limit (less
 * than 16 left) nothing is charged ahead and every charge is exact. What a process holds unused stays counted until
 * the period ends (`causeway tenants` shows it as used), at most a sixteenth of what was left.
 */
const AHEAD_SHARE = 16;
const AHEAD_MAX_FLOWS = 64;

/** Counters over an open causeway_quotas bucket. */
export function quotaCounter(kv: KV): QuotaCounter {
  // What this process counted ahead and has not used yet, by tenant: for its quota key (the tenant and period) —
  // one entry per tenant, replaced when a period ends.
  const allowances = new Map<string, QuotaUse & { readonly key: string }>();
  // Quota keys with a charge under way that may count ahead: one at a time per key, so charges batched on one
  // compare-and-set do not each count a share ahead (together far more than a sixteenth of what was left).
  const reserving = new Set<string>();
  const cells: CasCells<QuotaUse> = casCells<QuotaUse>(kv, {
    decode: (entry) => {
      const v = entry.json() as Partial<QuotaUse>;
      return { flows: Number(v.flows ?? 0), cost: Number(v.cost ?? 0) };
    },
    encode: (v) => JSON.stringify(v),
    attempts: 16,
    describe: (key) => `the quota use ${key}`,
  });
  return {
    async charge(tenant, charge, now = Date.now()) {
      const quotas = tenant.quotas;
      if (quotas === undefined) return { admitted: true, use: ZERO, period: { start: now, end: now }, refund: () => Promise.resolve() };
      const period = periodOf(quotas.period, now);
      const key = quotaKey(tenant.name, period.start);
      const heldNow = () => {
        const held = allowances.get(tenant.name);
        return held?.key === key ? held : ZERO;
      };
      // A refund (a flow that turned out a duplicate, or failed to publish) is taken back in the bucket, where every
      // process sees it.
      const refundTo = (part: QuotaUse) => cells.update(key, (current) => {
        const use = current ?? ZERO;
        return { next: { flows: Math.max(0, use.flows - part.flows), cost: Math.max(0, use.cost - part.cost) }, result: undefined };
      });
      const held = heldNow();
      if (held.flows >= charge.flows && held.cost >= charge.cost) {
        allowances.set(tenant.name, { key, flows: held.flows - charge.flows, cost: held.cost - charge.cost });
        return { admitted: true, use: charge, period, refund: (part = charge) => refundTo(part) };
      }
      const mayCountAhead = !reserving.has(key);
      if (mayCountAhead) reserving.add(key);
      type Decided = { readonly admitted: true; readonly use: QuotaUse; readonly ahead: QuotaUse } | QuotaRefusal;
      const outcome = await cells.update<Decided>(key, (current) => {
        const use = current ?? ZERO;
        if (quotas.flows !== undefined && use.flows + charge.flows > quotas.flows) {
          return { result: { admitted: false, quota: "flows", use: use.flows, limit: quotas.flows, asked: charge.flows, period } };
        }
        if (quotas.cost !== undefined && use.cost + charge.cost > quotas.cost) {
          return { result: { admitted: false, quota: "cost", use: use.cost, limit: quotas.cost, asked: charge.cost, period } };
        }
        // Charged ahead: a share of what the flows quota leaves, and the cost those flows would take at this charge's
        // cost per flow, within a share of what the cost quota leaves.
        const leftFlows = quotas.flows === undefined ? Infinity : quotas.flows - use.flows - charge.flows;
        const flows = Math.min(AHEAD_MAX_FLOWS, Math.floor(leftFlows / AHEAD_SHARE));
        const perFlow = charge.flows > 0 ? Math.ceil(charge.cost / charge.flows) : 0;
        const leftCost = quotas.cost === undefined ? Infinity : quotas.cost - use.cost - charge.cost;
        const cost = Math.min(flows * perFlow, Math.floor(leftCost / AHEAD_SHARE));
        const ahead = mayCountAhead && flows > 0 && (perFlow === 0 || cost >= perFlow) ? { flows, cost } : ZERO;
        const next = { flows: use.flows + charge.flows + ahead.flows, cost: use.cost + charge.cost + ahead.cost };
        return { next, result: { admitted: true, use: next, ahead } };
      }).finally(() => {
        if (mayCountAhead) reserving.delete(key);
      });
      if (!outcome.admitted) return outcome;
      if (outcome.ahead.flows > 0) {
        const now = heldNow();
        allowances.set(tenant.name, { key, flows: now.flows + outcome.ahead.flows, cost: now.cost + outcome.ahead.cost });
      }
      return { admitted: true, use: outcome.use, period, refund: (part = charge) => refundTo(part) };
    },
    async use(tenant, now = Date.now()) {
      if (tenant.quotas === undefined) return { ...ZERO, period: undefined };
      const period = periodOf(tenant.quotas.period, now);
      return { ...((await cells.read(quotaKey(tenant.name, period.start))) ?? ZERO), period };
    },
  };
}

/** Opens causeway_quotas (it must exist: `causeway streams apply`) and counts in it. */
export async function openQuotaCounter(nc: NatsConnection, bucket: string = KvBucket.Quotas): Promise<QuotaCounter> {
  return quotaCounter(await openMeshBucket(nc, bucket, "the tenants' quota use"));
}
