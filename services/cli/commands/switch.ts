// `causeway pause|resume <scope> <target>` and `causeway switches`: the kill switches. Each is a request, as the
// operator, to the coordinator's endpoints (mesh.ctl.coordinator.pause|resume|status), which writes the flag
// agents watch, pauses or resumes the JetStream consumers concerned and signs a decision.switch; the same
// requests work with `nats req` (docs/operators.md, "Kill switches").
import { DEFAULT_NATS_URL, MESH_TARGET, PAUSED_UNTIL_RESUMED, SwitchScope, normalizeTime, type SwitchScopeValue } from "../../kit/index.ts";
import {
  pause as pauseEndpoint, resume as resumeEndpoint, status as statusEndpoint, type ConsumerSwitch, type SwitchReply, type SwitchRequest,
} from "../../coordinator/contract.ts";
import { requestAsOperator } from "../operator-request.ts";
import { operatorName, parseCommand, usageError as sharedUsageError } from "../usage.ts";

const USAGE = `usage: causeway pause <capability|principal|mesh> <target> --reason TEXT [--until RFC3339] [--operator NAME]
       causeway resume <capability|principal|mesh> <target> [--reason TEXT] [--operator NAME]
       causeway switches

  pause capability research.v1   stop one capability: its shared consumer, and the flag its agents watch
  pause principal planner        stop every capability the principal serves
  pause mesh                     stop every capability (the target "*" may be left out)
  resume …                       the reverse; a consumer stays paused while another switch still covers it
  switches                       what is paused: scope, target, reason, by, since, expiry, consumers

  --reason TEXT     why (required to pause); kept in the switch and in the signed decision
  --until RFC3339   pause until then, e.g. 2026-11-21T06:41:03Z (default: until resumed)
  --operator NAME   who you are, recorded as "by" (default: $CAUSEWAY_OPERATOR, else your login name)
  --server URL      NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})
  --json            print the coordinator's reply as JSON

Connects as the operator (<data>/keys/operator.nk; <data> is $CAUSEWAY_DATA_DIR, default <repo>/.data) and
sends the request to the coordinator on mesh.ctl.coordinator.<pause|resume|status>.`;

const options = {
  reason: { type: "string" },
  until: { type: "string" },
  operator: { type: "string" },
  server: { type: "string" },
  json: { type: "boolean", default: false },
} as const;

const scopes: readonly string[] = Object.values(SwitchScope);

/** Runs `causeway <pause|resume|switches> <args>` (the command name first); resolves with the exit code. */
export function run(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "pause":
      return pause(rest);
    case "resume":
      return resume(rest);
    case "switches":
      return switches(rest);
    default:
      return Promise.resolve(sharedUsageError("pause", USAGE, command === undefined ? "missing command" : `unknown command "${command}"`));
  }
}

/** `causeway pause <scope> <target> --reason … [--until …]` */
export async function pause(args: string[]): Promise<number> {
  const parsed = parseCommand("pause", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const target = scopeAndTarget("pause", positionals);
  if (typeof target === "number") return target;
  if (values.reason === undefined || values.reason.trim() === "") return usageError("pause", "--reason is required: say why, it is kept in the signed decision");
  let expiresAt: string | undefined;
  if (values.until !== undefined) {
    if (!/([Zz]|[+-]\d\d:\d\d)$/.test(values.until)) return usageError("pause", `--until needs an RFC 3339 time with a zone, e.g. 2026-11-21T06:41:03Z, got "${values.until}"`);
    try {
      expiresAt = normalizeTime(values.until, "--until");
    } catch {
      return usageError("pause", `--until must be an RFC 3339 time, e.g. 2026-11-21T06:41:03Z, got "${values.until}"`);
    }
  }
  const body: SwitchRequest = { ...target, reason: values.reason, operator: operatorName(values.operator), ...(expiresAt !== undefined && { expires_at: expiresAt }) };
  const reply = await requestAsOperator(values.server, pauseEndpoint, body);
  if (values.json) console.log(JSON.stringify(reply, null, 2));
  else printSwitch(reply);
  return 0;
}

/** `causeway resume <scope> <target> [--reason …]` */
export async function resume(args: string[]): Promise<number> {
  const parsed = parseCommand("resume", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  if (values.until !== undefined) return usageError("resume", "--until applies to pause only");
  const target = scopeAndTarget("resume", positionals);
  if (typeof target === "number") return target;
  if (values.reason !== undefined && values.reason.trim() === "") return usageError("resume", "--reason must not be empty");
  const body: SwitchRequest = { ...target, operator: operatorName(values.operator), ...(values.reason !== undefined && { reason: values.reason }) };
  const reply = await requestAsOperator(values.server, resumeEndpoint, body);
  if (values.json) console.log(JSON.stringify(reply, null, 2));
  else printSwitch(reply);
  return 0;
}

/** `causeway switches`: everything paused, as a table. */
export async function switches(args: string[]): Promise<number> {
  const parsed = parseCommand("switches", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  if (positionals.length !== 0) return usageError("switches", "switches takes no arguments");
  const extra = (["reason", "until", "operator"] as const).filter((k) => values[k] !== undefined);
  if (extra.length > 0) return usageError("switches", `switches does not take ${extra.map((k) => `--${k}`).join(", ")}`);
  const reply = await requestAsOperator(values.server, statusEndpoint, {});
  if (values.json) {
    console.log(JSON.stringify(reply, null, 2));
    return 0;
  }
  if (reply.switches.length === 0) {
    console.log("no switch is on: every capability runs");
    return 0;
  }
  const rows = reply.switches.map((s) => [
    s.scope, s.target, s.reason, s.by || "-", seconds(s.at), s.expires_at === null ? "until resumed" : seconds(s.expires_at),
    s.consumers.map((c) => `${c.name} ${consumerWord(c, true)}`).join(", ") || "-",
  ]);
  const header = ["SCOPE", "TARGET", "REASON", "BY", "SINCE", "EXPIRES", "CONSUMERS"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: readonly string[]) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ");
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  for (const s of reply.switches.filter((x) => x.unreadable)) {
    const target = s.scope === SwitchScope.Mesh ? "mesh" : `${s.scope} ${s.target}`;
    console.log(`! the switch ${s.key} cannot be read, so agents treat it as paused until it is repaired: bin/causeway resume ${target} --reason "repair an unreadable switch"`);
  }
  return 0;
}

function scopeAndTarget(command: string, positionals: readonly string[]): { scope: SwitchScopeValue; target: string } | number {
  const [scope, target, ...extra] = positionals;
  if (scope === undefined) return usageError(command, `name a scope: ${scopes.join(", ")}`);
  if (!scopes.includes(scope)) return usageError(command, `unknown scope "${scope}": one of ${scopes.join(", ")}`);
  if (extra.length > 0) return usageError(command, `unexpected arguments: ${extra.join(" ")}`);
  if (scope === SwitchScope.Mesh) {
    if (target !== undefined && target !== MESH_TARGET) return usageError(command, `the mesh has no targets: \`causeway ${command} mesh\``);
    return { scope, target: MESH_TARGET };
  }
  if (target === undefined) return usageError(command, scope === SwitchScope.Capability ? "name the capability, e.g. research.v1" : "name the principal, e.g. planner");
  return { scope: scope as SwitchScopeValue, target };
}


function printSwitch(r: SwitchReply): void {
  const what = r.scope === SwitchScope.Mesh ? "the mesh" : `${r.scope} ${r.target}`;
  if (r.paused) {
    const until = r.expires_at === null ? "until resumed" : `until ${seconds(r.expires_at)}`;
    console.log(`✓ paused ${what} ${until}: ${r.reason} (by ${r.by}, since ${seconds(r.at)})`);
  } else if (r.decision_id !== null) {
    console.log(`✓ resumed ${what}: ${r.reason} (by ${r.by})`);
  } else {
    console.log(`✓ ${what} was not paused; its consumers were checked`);
  }
  for (const c of r.consumers) console.log(`  ${c.stream}/${c.name} ${consumerWord(c)}${!r.paused && c.paused ? " (another switch still covers it)" : ""}`);
  if (r.decision_id !== null) console.log(`  decision ${r.decision_id}`);
}

function consumerWord(c: ConsumerSwitch, short = false): string {
  if (c.missing) return short ? "not created yet" : "not created yet (its agents check the flag when they start)";
  if (!c.paused) return "running";
  return c.pause_until === null || c.pause_until === PAUSED_UNTIL_RESUMED ? "paused until resumed" : `paused until ${seconds(c.pause_until)}`;
}

function seconds(time: string): string {
  try {
    return normalizeTime(time);
  } catch {
    return time;
  }
}

function usageError(command: string, problem: string): number {
  return sharedUsageError(command, USAGE, problem);
}
