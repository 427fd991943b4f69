// `causeway rollout start|status|promote|rollback|pause|resume|fallback`: routing a capability by implementation
// version (issue 15). Each is a request, as the operator, to the coordinator's endpoints
// (mesh.ctl.coordinator.rollout-<action>), which writes the route table producers and agents follow
// (services/kit/routing.ts) and signs a decision.rollout; the same requests work with `nats req`.
import { DEFAULT_NATS_URL, type RouteTable } from "../../kit/index.ts";
import {
  rolloutFallback, rolloutPause, rolloutPromote, rolloutResume, rolloutRollback, rolloutStart, rolloutStatus,
  type RolloutReply, type RolloutStartRequest, type RoutingState, type VersionHealth,
} from "../../coordinator/contract.ts";
import { requestAsOperator } from "../operator-request.ts";
import { table } from "../table.ts";
import { operatorName, parseCommand, usageError as sharedUsageError } from "../usage.ts";

const USAGE = `usage: causeway rollout start <capability> --candidate VERSION [--stable VERSION] [--steps 5,25,50,100] [--interval 60s]
                              [--max-rate-margin 0.1] [--max-latency-ratio 2] [--min-flows 20]
       causeway rollout status [<capability>]
       causeway rollout promote|rollback|pause|resume <capability> [--reason TEXT]
       causeway rollout fallback <capability> <VERSION|--clear> [--stable VERSION]

  start      route the first step's share of new flows (by flow: a flow stays on one version) to the candidate;
             the coordinator raises the share every interval while the candidate is healthy, promotes it after
             the last step, and rolls it back on its own when its failure or quarantine rate exceeds the stable
             version's by the margin (over at least --min-flows inputs), its p95 latency the stable one's times
             the ratio, or it has no live instance left
  status     each routed capability: stable, candidate and share, step, fallback and circuit, and the versions'
             health over the coordinator's window
  promote    make the candidate the stable version now (flows that began on the old one finish there)
  rollback   no more new flows to the candidate; what it holds it finishes, the rest of its flows go to stable
  pause      hold the share where it is (automatic rollback still applies); resume lets it advance again
  fallback   the version new flows go to while the stable version's circuit is open (no live instance, or
             failing more than half its inputs); --clear removes it

  --reason TEXT     why; kept in the signed decision.rollout
  --operator NAME   who you are (default: $CAUSEWAY_OPERATOR, else your login name)
  --server URL      NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})
  --json            print the coordinator's reply as JSON

Connects as the operator and sends the request to mesh.ctl.coordinator.rollout-<action>.`;

const options = {
  candidate: { type: "string" },
  stable: { type: "string" },
  steps: { type: "string" },
  interval: { type: "string" },
  "max-rate-margin": { type: "string" },
  "max-latency-ratio": { type: "string" },
  "min-flows": { type: "string" },
  clear: { type: "boolean", default: false },
  reason: { type: "string" },
  operator: { type: "string" },
  server: { type: "string" },
  json: { type: "boolean", default: false },
} as const;

const changes = { promote: rolloutPromote, rollback: rolloutRollback, pause: rolloutPause, resume: rolloutResume } as const;

/** `causeway rollout <action> …`; resolves with the exit code. */
export async function rollout(args: string[]): Promise<number> {
  const parsed = parseCommand("rollout", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const [action, capability, ...rest] = positionals;
  const server = values.server;
  const print = (reply: RolloutReply | { capabilities: readonly RoutingState[] }) => {
    if (values.json) console.log(JSON.stringify(reply, null, 2));
    else for (const state of "capabilities" in reply ? reply.capabilities : [reply]) printState(state, "decision_id" in reply ? reply.decision_id : undefined);
  };
  const who = { operator: operatorName(values.operator), ...(values.reason !== undefined && { reason: values.reason }) };
  switch (action) {
    case "start": {
      if (capability === undefined || rest.length > 0) return usageError("name one capability, e.g. causeway rollout start research.v1 --candidate 1.1.0");
      if (values.candidate === undefined) return usageError("--candidate VERSION is required");
      const body = startRequest(capability, values);
      if (typeof body === "string") return usageError(body);
      print(await requestAsOperator(server, rolloutStart, { ...body, ...who }));
      return 0;
    }
    case "status":
      if (rest.length > 0) return usageError(`unexpected arguments: ${rest.join(" ")}`);
      print(await requestAsOperator(server, rolloutStatus, capability === undefined ? {} : { capability }));
      return 0;
    case "promote":
    case "rollback":
    case "pause":
    case "resume":
      if (capability === undefined || rest.length > 0) return usageError(`name one capability, e.g. causeway rollout ${action} research.v1`);
      print(await requestAsOperator(server, changes[action], { capability, ...who }));
      return 0;
    case "fallback": {
      const [version, ...extra] = rest;
      if (capability === undefined || extra.length > 0 || (version === undefined) === !values.clear) return usageError("name the capability and a version, or --clear: causeway rollout fallback research.v1 1.0.0");
      print(await requestAsOperator(server, rolloutFallback, { capability, version: version ?? null, ...(values.stable !== undefined && { stable: values.stable }), ...who }));
      return 0;
    }
    default:
      return usageError(action === undefined ? "missing action" : `unknown action "${action}"`);
  }
}

/** The start request from the options, or what is wrong with them. */
function startRequest(capability: string, v: { candidate?: string; stable?: string; steps?: string; interval?: string; "max-rate-margin"?: string; "max-latency-ratio"?: string; "min-flows"?: string }): Omit<RolloutStartRequest, "operator" | "reason"> | string {
  const num = (text: string | undefined) => (text === undefined ? undefined : Number(text));
  const steps = v.steps?.split(",").map((s) => Number(s.trim()));
  if (steps?.some((s) => !Number.isInteger(s))) return `--steps ${v.steps}: comma-separated integer shares, e.g. 5,25,50,100`;
  let intervalMs: number | undefined;
  if (v.interval !== undefined) {
    const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(v.interval.trim());
    if (!m) return `--interval ${v.interval}: a duration like 30s, 5m or 60000ms`;
    intervalMs = Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "ms") as "ms" | "s" | "m" | "h"]);
  }
  const numbers = { maxRateMargin: num(v["max-rate-margin"]), maxLatencyRatio: num(v["max-latency-ratio"]), minFlows: num(v["min-flows"]) };
  const nan = Object.entries(numbers).find(([, n]) => n !== undefined && Number.isNaN(n));
  if (nan) return `--${nan[0].replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must be a number`;
  // The coordinator checks ranges and says what is wrong (CW_ERR_ROLLOUT_INVALID).
  return {
    capability, candidate: v.candidate!, ...(v.stable !== undefined && { stable: v.stable }), ...(steps !== undefined && { steps }), ...(intervalMs !== undefined && { intervalMs }),
    ...Object.fromEntries(Object.entries(numbers).filter(([, n]) => n !== undefined)),
  };
}

function printState(s: RoutingState, decision: string | null | undefined): void {
  const t = s.table;
  console.log(`${s.capability}: ${t === null ? "not routed by version (every instance shares its durable)" : describeRouting(t)}`);
  if (t?.reason) console.log(`  last change: ${t.reason} (${t.updatedAt})`);
  if (decision) console.log(`  decision ${decision}`);
  if (s.health.length > 0) {
    const role = (v: string) => (t === null ? "-" : v === t.stable ? "stable" : v === t.candidate?.version ? "candidate" : v === t.fallback ? "fallback" : t.retiring.some((r) => r.version === v) ? "retiring" : "-");
    const rows = s.health.map((h: VersionHealth) => [
      h.version, role(h.version), t?.lanes[h.version] ?? "-", String(h.liveInstances), String(h.handled), String(h.failed), String(h.quarantined),
      `${(h.failureRate * 100).toFixed(1)} %`, h.p95Ms === null ? "-" : `${h.p95Ms.toFixed(0)} ms`,
    ]);
    console.log(table(["  VERSION", "ROLE", "LANE", "LIVE", "HANDLED", "FAILED", "QUARANTINED", "FAILURE", "P95"], rows.map(([first, ...r]) => [`  ${first}`, ...r])));
  }
}

/** A route table in one line: stable, candidate and share, step, fallback and circuit, retiring versions. */
export function describeRouting(t: RouteTable): string {
  const parts = [`stable ${t.stable}`];
  if (t.candidate) parts.push(`candidate ${t.candidate.version} at ${t.candidate.share} %`);
  if (t.rollout) parts.push(`step ${t.rollout.step + 1}/${t.rollout.steps.length} (${t.rollout.steps.join(", ")}) every ${(t.rollout.intervalMs / 1000).toFixed(0)} s${t.rollout.paused ? ", paused" : ""}`);
  if (t.fallback !== undefined) parts.push(`fallback ${t.fallback}, circuit ${t.circuit?.state ?? "closed"}`);
  if (t.retiring.length > 0) parts.push(`retiring ${t.retiring.map((r) => r.version).join(", ")}`);
  return parts.join("; ");
}

function usageError(problem: string): number {
  return sharedUsageError("rollout", USAGE, problem);
}
