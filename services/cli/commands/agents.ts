// `causeway agents`: every capability the mesh declares, with the agent instances that serve it now — their
// implementation versions, last heartbeat and counters — read from the causeway_instances bucket, where each
// running agent announces itself every HEARTBEAT_MS (services/kit/heartbeat.ts). An instance that stops
// heartbeating drops out within seconds; a capability nobody serves is listed with no instance.
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ConfigError, DEFAULT_NATS_URL, ErrorCode, HEARTBEAT_MS, KvBucket, connectAs, defaultLayout, listInstances, openMeshBucket, type InstanceBeat,
} from "../../kit/index.ts";
import { table } from "../table.ts";
import { parseCommand, usageError } from "../usage.ts";

const USAGE = `usage: causeway agents [--json] [--server URL]

  Every capability of infra/principals.json with its live agent instances: the agent, its implementation
  version, the instance id, when it last heartbeated, and its counters since it started (processed, failed,
  quarantined, in flight). Instances heartbeat every ${HEARTBEAT_MS / 1000} s; one that stops is gone within seconds.

  --json         the capabilities and their instances as JSON
  --server URL   NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})

Connects as the operator (<data>/keys/operator.nk; <data> is $CAUSEWAY_DATA_DIR, default <repo>/.data).`;

const options = { json: { type: "boolean", default: false }, server: { type: "string" } } as const;

/** One capability and what serves it. */
export interface CapabilityInstances {
  readonly capability: string;
  /** The principals infra/principals.json lets serve it. */
  readonly agents: readonly string[];
  readonly versions: readonly string[];
  readonly instances: readonly InstanceBeat[];
}

/** The capabilities of the layout with their live instances, in principals.json order. */
export function byCapability(beats: readonly InstanceBeat[]): CapabilityInstances[] {
  const { principals } = defaultLayout();
  return Object.keys(principals.capabilities).map((ref) => {
    const instances = beats.filter((b) => b.capability === ref);
    return {
      capability: ref,
      agents: Object.values(principals.principals).filter((p) => p.serves.includes(ref)).map((p) => p.name),
      versions: [...new Set(instances.map((i) => i.version))].sort(),
      instances,
    };
  });
}

/** `causeway agents [--json]`; resolves with the exit code. */
export async function agents(args: string[]): Promise<number> {
  const parsed = parseCommand("agents", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  if (parsed.positionals.length > 0) return usageError("agents", USAGE, "agents takes no arguments");
  const server = parsed.values.server;
  const where = server ?? (process.env.NATS_URL || DEFAULT_NATS_URL);
  const nc: NatsConnection = await connectAs("operator", { ...(server !== undefined && { servers: server }), name: "causeway agents" }).catch((err: unknown) => {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(ErrorCode.Unavailable, `cannot connect to ${where} as the operator: ${(err as Error).message}`, { cause: err });
  });
  try {
    const capabilities = byCapability(await listInstances(await openMeshBucket(nc, KvBucket.Instances, "live agent instances")));
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
    return 0;
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}
