#!/usr/bin/env node
// The `causeway` command: one module per command group under commands/, loaded on demand so a
// command never pays for another's imports.
import { CausewayError, asUnavailable } from "../kit/index.ts";
import { outputClosed } from "./output.ts";

/** A command group: receives the arguments after its name, returns the process exit code. */
export type Command = (args: string[]) => Promise<number>;

const commands: Record<string, { summary: string; load: () => Promise<{ run: Command }> }> = {
  keys: { summary: "keys new <principal>          create a principal's NKey seed (0600) and print its public key", load: () => import("./commands/keys.ts") },
  tokens: { summary: "tokens ensure                 create the upstreams' development bearer tokens (0600) for the gateway", load: () => import("./commands/tokens.ts") },
  infra: { summary: "infra render [--cluster N]    render the nats-server config (one per node) from infra/principals.json", load: () => import("./commands/infra.ts") },
  trust: { summary: "trust seed|ls|revoke          seed, list and revoke the keys services trust (KV causeway_trust)", load: () => import("./commands/trust.ts") },
  schemas: { summary: "schemas check|lock            published schemas never change: check them against schemas/schemas.lock.json, lock new ones", load: () => import("./commands/schemas.ts") },
  streams: { summary: "streams apply [--force]       create or update streams/*.json idempotently", load: () => import("./commands/streams.ts") },
  approve: { summary: "approve <event-id> --as <approver>  approve pending critical work (signed with the approver's key)", load: () => import("./commands/approve.ts") },
  deny: { summary: "deny <event-id> --as <approver>     deny pending critical work; it is quarantined", load: () => import("./commands/approve.ts").then((m) => ({ run: m.deny })) },
  approvals: { summary: "approvals --as <approver>          list pending approvals with their deadlines", load: () => import("./commands/approve.ts").then((m) => ({ run: m.list })) },
  quarantine: { summary: "quarantine ls|show|release|reject   inspect and settle quarantined messages (as the operator)", load: () => import("./commands/quarantine.ts") },
  pause: { summary: "pause <capability|principal|mesh> <target> --reason …   kill switch: stop consumption", load: () => import("./commands/switch.ts").then((m) => ({ run: m.pause })) },
  resume: { summary: "resume <capability|principal|mesh> <target>          lift a kill switch", load: () => import("./commands/switch.ts").then((m) => ({ run: m.resume })) },
  switches: { summary: "switches                                  what is paused, why, by whom, until when", load: () => import("./commands/switch.ts").then((m) => ({ run: m.switches })) },
  agents: { summary: "agents [--json]                            every capability with its live instances: version, heartbeat, counters", load: () => import("./commands/agents.ts").then((m) => ({ run: m.agents })) },
  tenants: { summary: "tenants [--json]                           each tenant's use of its quotas this period: flows, cost units, reset", load: () => import("./commands/tenants.ts").then((m) => ({ run: m.tenants })) },
  rollout: { summary: "rollout start|status|promote|rollback|pause|resume|fallback   route a capability by version: canary, rollback, failover", load: () => import("./commands/rollout.ts").then((m) => ({ run: m.rollout })) },
  replay: { summary: "replay <capability> --version V (--flows … | --since …)   re-run recorded inputs through a version, compare, publish nothing", load: () => import("./commands/replay.ts") },
  lineage: { summary: "lineage why|trace|impact|events|verify|prove|export   ask the audit log (as the auditor)", load: () => import("./commands/lineage.ts") },
  new: { summary: "new agent <name> --capability <c>.v<m> --emits <type> [--subscribes <type>.v<m>]   scaffold an agent: folder, test, schemas, principal", load: () => import("./commands/new.ts") },
  principal: { summary: "principal add <name>          add a principal to a running mesh: seed, server config, reload, trust store, start", load: () => import("./commands/principal.ts") },
  event: { summary: "event send --as <p> --type <t> --data <json|@file>   sign, validate and send an event (development meshes), then follow it", load: () => import("./commands/event.ts") },
  demo: { summary: "demo                          run the mesh end to end with embedded defaults, then stop", load: () => import("./commands/demo.ts") },
  up: { summary: "up [--cluster N]              run a local mesh in the background (on N cluster nodes at R3)", load: () => import("./commands/up.ts") },
  down: { summary: "down                          stop every service process, then the server (or nodes) `up` started", load: () => import("./commands/up.ts").then((m) => ({ run: m.down })) },
  ps: { summary: "ps                            the services' processes: replica, pid, state, uptime, log file", load: () => import("./commands/services.ts").then((m) => ({ run: m.ps })) },
  start: { summary: "start [<service>] [--replicas N]    start services (all, from infra/principals.json) in the background", load: () => import("./commands/services.ts").then((m) => ({ run: m.start })) },
  stop: { summary: "stop [<service>]              drain a service's processes (all without a service)", load: () => import("./commands/services.ts").then((m) => ({ run: m.stop })) },
  restart: { summary: "restart [<service>] [--replicas N]  stop, then start again", load: () => import("./commands/services.ts").then((m) => ({ run: m.restart })) },
  logs: { summary: "logs <service> [-f]           a service's log file, -f to follow it", load: () => import("./commands/services.ts").then((m) => ({ run: m.logs })) },
};

function usage(): string {
  return ["usage: causeway <command> [options]", "", ...Object.values(commands).map((c) => `  ${c.summary}`)].join("\n");
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "help" || name === "--help" || name === "-h") {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`causeway: unknown command "${name}" (CW_ERR_USAGE)\n\n${usage()}`);
    return 2;
  }
  const { run } = await command.load();
  return run(rest);
}

// `causeway … | head` closes stdout early; that is the reader's choice, not an error. What the command started for
// its run (the demo's server and services) is stopped first (output.ts).
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") return void outputClosed(process.argv[2] ?? "");
  throw err;
});

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (caught: unknown) => {
    // Known errors print their code and message only; a broker fault that passes by itself (a leader election)
    // is CW_ERR_UNAVAILABLE, retry; anything else is a bug and keeps its stack.
    const err = asUnavailable(caught) ?? caught;
    if (err instanceof CausewayError) console.error(`causeway: ${err.message} (${err.code})`);
    else console.error("causeway: unexpected error", err);
    process.exitCode = 1;
  },
);
