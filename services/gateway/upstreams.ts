// The upstream systems (infra/upstreams.json): who may publish, with which CloudEvents sources, at what rate.
// Over HTTP an upstream proves itself with a bearer token, declared by its SHA-256 (never the token itself);
// over NATS the server has already proved it (its NKey), and the ingest subject's source token names it.
import { readFileSync } from "node:fs";
import type { Logger } from "pino";
import {
  ErrorCode, Priority, Role, bearerMatcher, checkTenantMembers, devTokenPath, invalidFile, readInfraFile, tokenDigestHex, watchInfraFile,
  type FlowBudget, type Principals, type PriorityValue, type Tenants,
} from "../kit/index.ts";

/** One upstream, validated and frozen. */
export interface Upstream {
  /** Its principal name: the `<source>` token of `mesh.ingest.<source>.>`. */
  readonly name: string;
  readonly description: string;
  /** Allowed `source` values: exact, or a prefix when the entry ends in `/`. */
  readonly sources: readonly string[];
  /** Token bucket refill per second. */
  readonly perSecond: number;
  /** Token bucket size. */
  readonly burst: number;
  /** Whether it may publish over HTTP (a bearer token is declared and available). */
  readonly http: boolean;
  /** The tenant its flows count against (infra/tenants.json); its own name unless upstreams.json says otherwise. */
  readonly tenant: string;
  /** The priority of a flow it starts with an event of `type`. */
  priorityOf(type: string): PriorityValue;
  /** The budget (default and cap) of each flow it starts; {} when unbounded. */
  readonly budget: FlowBudget;
  /** The longest a flow it starts may run, in ms (its `expirytime` at most this far after admission); undefined: no bound. */
  readonly deadlineMs: number | undefined;
}

/** The upstream directory the gateway works with. */
export interface Upstreams {
  /** The upstream named by an ingest subject's source token. */
  byName(name: string): Upstream | undefined;
  /** The upstream whose bearer token is in `authorization` (`Bearer <token>`); undefined when none matches. */
  authenticate(authorization: string | undefined): Upstream | undefined;
  /** Every upstream. */
  list(): readonly Upstream[];
  /** Problems that do not stop the gateway (a dev token not generated yet): one line each, for the log. */
  readonly warnings: readonly string[];
}

interface RawUpstream {
  description: string;
  sources: string[];
  bearer?: { sha256: string } | { dev_token: true };
  rate: { per_second: number; burst: number };
  tenant?: string;
  priority?: { default: PriorityValue; types?: Record<string, PriorityValue> };
  budget?: { cost?: number; tokens?: number; steps?: number; deadlineMs?: number };
}

/** True when `source` is one of the upstream's sources (exact, or under one ending in `/`). */
export function sourceAllowed(upstream: Upstream, source: string): boolean {
  return upstream.sources.some((s) => source === s || (s.endsWith("/") && source.startsWith(s)));
}

/**
 * Loads infra/upstreams.json. Every upstream must be a principal of role `upstream` in principals.json.
 * ConfigError CW_ERR_UPSTREAMS_INVALID names the JSON path at fault.
 */
export function loadUpstreams(path: string, principals: Principals, dataDir: string): Upstreams {
  const doc = readInfraFile<{ upstreams: Record<string, RawUpstream> }>(path, "upstreams.schema.json", ErrorCode.UpstreamsInvalid);
  const problems: string[] = [];
  const warnings: string[] = [];
  const byName = new Map<string, Upstream>();
  const byDigest = new Map<string, Upstream>();
  for (const [name, raw] of Object.entries(doc.upstreams)) {
    const principal = Object.hasOwn(principals.principals, name) ? principals.principals[name] : undefined;
    if (principal?.role !== Role.Upstream) {
      problems.push(`/upstreams/${name}: ${principals.source} declares no principal "${name}" of role upstream (its NATS identity)`);
      continue;
    }
    let digest: string | undefined;
    if (raw.bearer && "sha256" in raw.bearer) digest = raw.bearer.sha256;
    else if (raw.bearer) {
      const file = devTokenPath(dataDir, name);
      try {
        digest = tokenDigestHex(readFileSync(file, "utf8").trim());
      } catch {
        warnings.push(`upstream ${name}: no development token at ${file} (\`causeway tokens ensure\` creates it); it can publish over NATS only`);
      }
    }
    const byType = new Map(Object.entries(raw.priority?.types ?? {}));
    const fallback = raw.priority?.default ?? Priority.Normal;
    const { deadlineMs, ...bounds } = raw.budget ?? {};
    const upstream: Upstream = Object.freeze({
      name, description: raw.description, sources: Object.freeze([...raw.sources]),
      perSecond: raw.rate.per_second, burst: raw.rate.burst, http: digest !== undefined,
      tenant: raw.tenant ?? name, priorityOf: (type: string) => byType.get(type) ?? fallback,
      budget: Object.freeze(bounds), deadlineMs,
    });
    if (digest !== undefined) {
      if (byDigest.has(digest)) problems.push(`/upstreams/${name}/bearer: the same token as upstream ${byDigest.get(digest)!.name}`);
      byDigest.set(digest, upstream);
    }
    byName.set(name, upstream);
  }
  if (problems.length > 0) throw invalidFile(path, ErrorCode.UpstreamsInvalid, problems);
  const withTokens = [...byDigest.values()];
  const match = bearerMatcher([...byDigest.keys()]);
  return Object.freeze({
    byName: (name: string) => byName.get(name),
    authenticate(authorization: string | undefined) {
      const i = match(authorization);
      return i === undefined ? undefined : withTokens[i];
    },
    list: () => [...byName.values()],
    warnings: Object.freeze(warnings),
  });
}

/** Loads the upstreams file; every upstream's tenant must be one of `tenants` (CW_ERR_UPSTREAMS_INVALID naming `/upstreams/<name>/tenant`). */
export function loadCheckedUpstreams(path: string, principals: Principals, dataDir: string, tenants: Tenants): Upstreams {
  const upstreams = loadUpstreams(path, principals, dataDir);
  checkTenantMembers(tenants, upstreams.list(), path, ErrorCode.UpstreamsInvalid);
  return upstreams;
}

/**
 * infra/upstreams.json followed live: each upstream's sources, token, rate, tenant, priorities and budget caps apply
 * to the next event after an edit. Every upstream's tenant must be one of `tenants()` — the tenants in force, the
 * ones admission counts quotas by — at start and on every edit; a bad edit keeps the last good upstreams and is
 * logged. The returned directory always answers from the latest good file.
 */
export function watchUpstreams(path: string, principals: Principals, dataDir: string, opts: { tenants: () => Tenants; log?: Logger }): Upstreams & { close(): void } {
  const file = watchInfraFile(path, (p) => loadCheckedUpstreams(p, principals, dataDir, opts.tenants()), { what: "the upstreams", ...(opts.log && { log: opts.log }) });
  return {
    byName: (name) => file.current().byName(name),
    authenticate: (authorization) => file.current().authenticate(authorization),
    list: () => file.current().list(),
    get warnings() { return file.current().warnings; },
    close: () => file.close(),
  };
}
