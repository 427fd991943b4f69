// `causeway tenants`: every tenant of infra/tenants.json with its use of its quotas in the current period, as the
// gateway counts it (KV causeway_quotas, one key per tenant and period), its upstreams and its weight under
// backpressure. The count is of flows admitted and cost budgets granted (what the flows may spend), not of what
// they spent: that is lineage's (`causeway lineage trace`).
import {
  DEFAULT_NATS_URL, DEFAULT_TENANTS_PATH, ErrorCode, KvBucket, describePeriod, infraDir, loadTenants, openQuotaCounter, readInfraFile,
  type QuotaPeriod, type Tenant,
} from "../../kit/index.ts";
import { join, resolve } from "node:path";
import { table } from "../table.ts";
import { parseCommand, usageError } from "../usage.ts";
import { connectAsOperator } from "../operator-request.ts";

const USAGE = `usage: causeway tenants [--json] [--server URL]

  Every tenant of infra/tenants.json ($CAUSEWAY_TENANTS) with its use of its quotas in the current period: flows
  admitted and cost units granted (the sum of the admitted flows' cost budgets), against the limits, and when the
  period resets; its upstreams (infra/upstreams.json, $CAUSEWAY_UPSTREAMS) and its weight in the fair share under
  backpressure. The gateway counts both cluster-wide in KV causeway_quotas; a resubmitted duplicate is not counted.

  --json         the same as JSON
  --server URL   NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})

Connects as the operator (<data>/keys/operator.nk; <data> is $CAUSEWAY_DATA_DIR, default <repo>/.data).`;

const options = { json: { type: "boolean", default: false }, server: { type: "string" } } as const;

/** One tenant's use of its quotas now. */
interface TenantUse {
  readonly tenant: string;
  readonly description: string;
  readonly weight: number;
  readonly upstreams: readonly string[];
  /** "day", "3600000 ms"; null without quotas. */
  readonly period: string | null;
  readonly periodStart: string | null;
  readonly resetsAt: string | null;
  readonly flows: { readonly used: number; readonly limit: number | null };
  readonly cost: { readonly used: number; readonly limit: number | null };
}

const text = (name: string, fallback: string) => (process.env[name]?.trim() ? resolve(process.env[name]!.trim()) : fallback);

/** `causeway tenants [--json]`; resolves with the exit code. */
export async function tenants(args: string[]): Promise<number> {
  const parsed = parseCommand("tenants", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  if (parsed.positionals.length > 0) return usageError("tenants", USAGE, "tenants takes no arguments");
  const declared = loadTenants(text("CAUSEWAY_TENANTS", DEFAULT_TENANTS_PATH));
  const upstreams = readInfraFile<{ upstreams: Record<string, { tenant?: string }> }>(text("CAUSEWAY_UPSTREAMS", join(infraDir, "upstreams.json")), "upstreams.schema.json", ErrorCode.UpstreamsInvalid);
  const members = (t: Tenant) => Object.entries(upstreams.upstreams).filter(([name, u]) => (u.tenant ?? name) === t.name).map(([name]) => name);
  const nc = await connectAsOperator(parsed.values.server, "tenants");
  try {
    const counter = await openQuotaCounter(nc, KvBucket.Quotas);
    const now = Date.now();
    const rows: TenantUse[] = [];
    for (const t of Object.values(declared.tenants)) {
      const use = await counter.use(t, now);
      const period: QuotaPeriod | undefined = use.period;
      rows.push({
        tenant: t.name, description: t.description, weight: t.weight, upstreams: members(t),
        period: t.quotas === undefined ? null : describePeriod(t.quotas.period),
        periodStart: period === undefined ? null : new Date(period.start).toISOString(),
        resetsAt: period === undefined ? null : new Date(period.end).toISOString(),
        flows: { used: use.flows, limit: t.quotas?.flows ?? null },
        cost: { used: use.cost, limit: t.quotas?.cost ?? null },
      });
    }
    if (parsed.values.json) {
      console.log(JSON.stringify(rows, null, 2));
      return 0;
    }
    const of = (q: { used: number; limit: number | null }) => (q.limit === null ? `${q.used} (no quota)` : `${q.used} / ${q.limit} (${q.limit === 0 ? 100 : Math.round((q.used / q.limit) * 1000) / 10} %)`);
    const resets = (r: TenantUse) => (r.resetsAt === null ? "-" : `${r.resetsAt} (in ${duration(Date.parse(r.resetsAt) - now)})`);
    console.log(table(["TENANT", "PERIOD", "FLOWS", "COST UNITS", "RESETS", "WEIGHT", "UPSTREAMS"],
      rows.map((r) => [r.tenant, r.period ?? "no quota", of(r.flows), of(r.cost), resets(r), String(r.weight), r.upstreams.join(",") || "-"])));
    return 0;
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 2 * 86400) return `${Math.round(s / 360) / 10} h`;
  return `${Math.round(s / 8640) / 10} d`;
}
