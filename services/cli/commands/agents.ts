// `causeway agents`: every capability the mesh declares, with the agent instances that serve it now — their
// implementation versions, last heartbeat and counters — read from the causeway_instances bucket, where each
// running agent announces itself every HEARTBEAT_MS (services/kit/heartbeat.ts), and the health of each version
// over the coordinator's window (its `health` endpoint: services/coordinator/health.ts). An instance that stops
// heartbeating drops out within seconds; a capability nobody serves is listed with no instance. Without a
// coordinator the instances are still listed, and the command says the health figures are missing.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  DEFAULT_NATS_URL, ErrorCode, HEARTBEAT_MS, KvBucket, controlRequest, defaultLayout, isCausewayError, listInstances, openMeshBucket,
  type ControlEndpoint, type InstanceBeat, type RouteTable,
} from "../../kit/index.ts";
import { health as healthEndpoint, rolloutStatus, type HealthReply, type RolloutStatusReply, type VersionHealth } from "../../coordinator/contract.ts";
import { describeRouting } from "./rollout.ts";
import { table } from "../table.ts";
import { parseCommand, usageError } from "../usage.ts";
import { connectAsOperator } from "../operator-request.ts";

const USAGE = `usage: causeway agents [--json] [--server URL]

  Every capability of infra/principals.json with its live agent instances: the agent, its implementation
  version, the instance id, when it last heartbeated, and its counters since it started (processed, failed,
  quarantined, in flight). Instances heartbeat every ${HEARTBEAT_MS / 1000} s; one that stops is gone within seconds.
  Then, from the coordinator, each capability version's health over its sliding window (infra/policy.json
  health.windowMs, default 60 s): live instances, handled, failed (each retry), quarantined and by reason,
  failure and quarantine rates, handler latency p50 and p95, last heartbeat. Without a coordinator the
  instances are listed and the health figures are left out, with a line on stderr saying so. Last, each
  capability routed by version: stable, candidate and share, fallback and the stable version's circuit.

  --json         the capabilities, their instances and their versions' health ("health": null without a coordinator)
  --server URL   NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})

Connects as the operator (<data>/keys/operator.nk; <data> is $CAUSEWAY_DATA_DIR, default <repo>/.data).`;

/** How long the coordinator has to answer before the health figures are left out. */
const HEALTH_TIMEOUT_MS = 5_000;

const options = { json: { type: "boolean", default: false }, server: { type: "string" } } as const;

/** One capability and what serves it. */
export interface CapabilityInstances {
  readonly capability: string;
  /** The principals infra/principals.json lets serve it. */
  readonly agents: readonly string[];
  readonly versions: readonly string[];
  readonly instances: readonly InstanceBeat[];
  /** Each version seen in the coordinator's window (VersionHealth); null when no coordinator answered. */
  readonly health: readonly VersionHealth[] | null;
  /** How the capability is routed by version (its route table: stable, candidate, fallback and circuit); null when it is not, or no coordinator answered. */
  readonly routing: RouteTable | null;
}

/** The capabilities of the layout with their live instances and their versions' health, in principals.json order. */
export function byCapability(beats: readonly InstanceBeat[], health: HealthReply | null, routing: RolloutStatusReply | null = null): CapabilityInstances[] {
  const { principals } = defaultLayout();
  return Object.keys(principals.capabilities).map((ref) => {
    const instances = beats.filter((b) => b.capability === ref);
    return {
      capability: ref,
      agents: Object.values(principals.principals).filter((p) => p.serves.includes(ref)).map((p) => p.name),
      versions: [...new Set(instances.map((i) => i.version))].sort(),
      instances,
      health: health === null ? null : health.versions.filter((v) => v.capability === ref),
      routing: routing?.capabilities.find((c) => c.capability === ref)?.table ?? null,
    };
  });
}

/** What the coordinator answers on `endpoint`, or null (and why on stderr, naming what is left out) when it does not. */
async function askCoordinator<Req, Reply>(nc: NatsConnection, endpoint: ControlEndpoint<Req, Reply>, body: Req, leftOut: string): Promise<Reply | null> {
  try {
    return await controlRequest(nc, endpoint, body, { timeout: HEALTH_TIMEOUT_MS });
  } catch (err) {
    if (!isCausewayError(err)) throw err;
    const why = err.code === ErrorCode.Unavailable ? "no coordinator answered" : `the coordinator refused the ${endpoint.name} request`;
    console.error(`causeway agents: ${why}: ${err.message} (${err.code}); ${leftOut}`);
    return null;
  }
}

const percent = (rate: number) => `${(rate * 100).toFixed(1)} %`;
const ms = (v: number | null) => (v === null ? "-" : v < 10 ? `${v.toFixed(1)} ms` : `${Math.round(v)} ms`);

/** `causeway agents [--json]`; resolves with the exit code. */
export async function agents(args: string[]): Promise<number> {
  const parsed = parseCommand("agents", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  if (parsed.positionals.length > 0) return usageError("agents", USAGE, "agents takes no arguments");
  const nc = await connectAsOperator(parsed.values.server, "agents");
  try {
    const beats = await listInstances(await openMeshBucket(nc, KvBucket.Instances, "live agent instances"));
    const health = await askCoordinator(nc, healthEndpoint, {}, "the instances are listed without health figures");
    // The route tables come from the same coordinator: asked only when it answered.
    const routing = health === null ? null : await askCoordinator(nc, rolloutStatus, {}, "the capabilities are listed without their routing by version");
    const capabilities = byCapability(beats, health, routing);
    if (parsed.values.json) {
      console.log(JSON.stringify(capabilities, null, 2));
      return 0;
    }
    const now = Date.now();
    const rows = capabilities.flatMap((c) => (c.instances.length === 0
      ? [[c.capability, c.agents.join(",") || "-", "-", "no live instance", "-", "-", "-", "-", "-"]]
      : c.instances.map((i) => [
        c.capability, i.principal, i.version, i.instance, `${((now - Date.parse(i.at)) / 1000).toFixed(1)} s ago`,
        String(i.stats.processed), String(i.stats.failed), String(i.stats.quarantined), String(i.stats.inFlight),
      ])));
    console.log(table(["CAPABILITY", "AGENT", "VERSION", "INSTANCE", "HEARTBEAT", "PROCESSED", "FAILED", "QUARANTINED", "IN FLIGHT"], rows));
    if (health === null) return 0;
    const versions = capabilities.flatMap((c) => c.health ?? []);
    console.log(`\nhealth per version over the last ${health.windowMs / 1000} s (coordinator):`);
    if (versions.length === 0) {
      console.log("no agent version heartbeated in the window");
      return 0;
    }
    console.log(table(["CAPABILITY", "VERSION", "LIVE", "HANDLED", "FAILED", "QUARANTINED", "FAILURE RATE", "QUARANTINE RATE", "P50", "P95", "LAST HEARTBEAT", "QUARANTINED BY REASON"],
      versions.map((v) => [
        v.capability, v.version, String(v.liveInstances), String(v.handled), String(v.failed), String(v.quarantined), percent(v.failureRate), percent(v.quarantineRate),
        ms(v.p50Ms), ms(v.p95Ms), v.lastHeartbeat === null ? "-" : `${((now - Date.parse(v.lastHeartbeat)) / 1000).toFixed(1)} s ago`,
        Object.entries(v.quarantinedByReason).map(([reason, n]) => `${reason}=${n}`).join(",") || "-",
      ])));
    const routed = capabilities.filter((c) => c.routing !== null);
    if (routed.length > 0) {
      console.log("\nrouting by version (causeway rollout status):");
      for (const c of routed) console.log(`${c.capability}: ${describeRouting(c.routing!)}`);
    }
    return 0;
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}
