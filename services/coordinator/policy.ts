// The coordinator's policy (infra/policy.json): which capabilities are critical and what each requires —
// approvals, confidence and evidence gates, a lease TTL, an approval deadline — and the window of the health
// figures per capability version. Validated against its schema at load and checked against infra/principals.json
// (a capability critical in one must be critical in the other, since the server permissions come from
// principals.json). Reloadable: `policy()` always returns the latest.
import { join } from "node:path";
import { ErrorCode, checkInfraDoc, infraDir, invalidFile, readInfraFile, watchInfraFile, type Principals } from "../kit/index.ts";
import type { Logger } from "pino";

/** One capability's rules. */
export interface CapabilityPolicy {
  readonly ref: string;
  readonly capability: string;
  readonly major: number;
  readonly critical: boolean;
  readonly approvals?: { readonly count: number; readonly approvers: readonly string[] };
  readonly gates?: { readonly minConfidence?: number; readonly requireEvidence?: boolean };
  readonly leaseTtlMs: number;
  readonly approvalDeadlineMs: number;
  readonly onDeadline: "quarantine" | "escalate";
  /** With onDeadline "escalate": who else may approve after the first deadline, and the new deadline. */
  readonly escalation?: { readonly approvers: readonly string[]; readonly deadlineMs: number };
}

/** How the coordinator computes the health of each capability version (health.ts). */
export interface HealthPolicy {
  /** The sliding window of the figures, in ms. Default 60 s. */
  readonly windowMs: number;
}

/** The whole policy, by capability ref (`publish.v1`). */
export interface Policy {
  readonly capabilities: Readonly<Record<string, CapabilityPolicy>>;
  readonly health: HealthPolicy;
  /** The rules of capability `name` v`major`, or undefined when it has none (not critical). */
  of(capability: string, major: number): CapabilityPolicy | undefined;
}

export const DEFAULT_POLICY_PATH = join(infraDir, "policy.json");
const SCHEMA_FILE = "policy.schema.json";
const DEFAULT_DEADLINE_MS = 600_000;
const DEFAULT_HEALTH_WINDOW_MS = 60_000;

/** Parses and validates a policy document; errors name the JSON path. */
export function parsePolicy(doc: unknown, principals: Principals, source = "policy.json"): Policy {
  return policyOf(checkInfraDoc(doc, SCHEMA_FILE, ErrorCode.PolicyInvalid, source), principals, source);
}

/** The policy of a document its schema accepted: what the schema cannot check (against principals.json), then frozen. */
function policyOf(doc: unknown, principals: Principals, source: string): Policy {
  const raw = (doc as { capabilities: Record<string, Omit<CapabilityPolicy, "ref" | "capability" | "major" | "approvalDeadlineMs" | "onDeadline"> & { approvalDeadlineMs?: number; onDeadline?: "quarantine" | "escalate" }> }).capabilities;
  const capabilities: Record<string, CapabilityPolicy> = {};
  const problems: string[] = [];
  for (const [ref, c] of Object.entries(raw)) {
    const [capability, v] = ref.split(".") as [string, string];
    const declared = principals.capabilities[ref];
    if (!declared) problems.push(`/capabilities/${ref}: no such capability in principals.json`);
    else if (declared.critical !== c.critical) problems.push(`/capabilities/${ref}: critical is ${c.critical} here but ${declared.critical} in principals.json (server permissions follow principals.json)`);
    for (const approver of [...(c.approvals?.approvers ?? []), ...(c.escalation?.approvers ?? [])]) {
      if (principals.principals[approver]?.role !== "approver") problems.push(`/capabilities/${ref}/approvals: ${approver} is not an approver principal`);
    }
    if (c.onDeadline === "escalate" && (!c.escalation || !c.approvals)) problems.push(`/capabilities/${ref}: onDeadline "escalate" needs approvals and an escalation`);
    if (c.approvals && c.approvals.count > c.approvals.approvers.length) problems.push(`/capabilities/${ref}/approvals: needs ${c.approvals.count} approvals from ${c.approvals.approvers.length} approvers`);
    capabilities[ref] = Object.freeze({ ...c, ref, capability, major: Number(v.slice(1)), approvalDeadlineMs: c.approvalDeadlineMs ?? DEFAULT_DEADLINE_MS, onDeadline: c.onDeadline ?? "quarantine" });
  }
  for (const cap of Object.values(principals.capabilities)) {
    if (cap.critical && !capabilities[cap.ref]) problems.push(`/capabilities: ${cap.ref} is critical in principals.json but has no policy here`);
  }
  if (problems.length > 0) throw invalidFile(source, ErrorCode.PolicyInvalid, problems);
  const frozen = Object.freeze(capabilities);
  const health = Object.freeze({ windowMs: (doc as { health?: { windowMs?: number } }).health?.windowMs ?? DEFAULT_HEALTH_WINDOW_MS });
  return Object.freeze({ capabilities: frozen, health, of: (capability: string, major: number) => frozen[`${capability}.v${major}`] });
}

/** Loads the policy file: CW_ERR_POLICY_INVALID naming the file when it cannot be read, parsed or accepted. */
export function loadPolicy(principals: Principals, path = DEFAULT_POLICY_PATH): Policy {
  return policyOf(readInfraFile(path, SCHEMA_FILE, ErrorCode.PolicyInvalid), principals, path);
}

/** The live policy: reloaded when the file changes; a bad edit keeps the last good policy and is reported. */
export interface PolicyStore {
  policy(): Policy;
  close(): void;
}

export function watchPolicy(principals: Principals, opts: { path?: string; log?: Logger; onReload?: (err?: Error) => void } = {}): PolicyStore {
  const file = watchInfraFile(opts.path ?? DEFAULT_POLICY_PATH, (path) => loadPolicy(principals, path), { what: "the coordinator's policy", ...(opts.log && { log: opts.log }), ...(opts.onReload && { onReload: opts.onReload }) });
  return { policy: () => file.current(), close: () => file.close() };
}
