// Mesh-wide backpressure, the measuring half (issue 16, item 4; the kit's pressure.ts is the reading half). Every
// second the coordinator lists the consumers of MESH_CAP in one request and sums, per capability, the pending
// and ack-pending messages of its durables: every durable on MESH_CAP some principal of infra/principals.json
// consumes with a filter on the capability's subject or under it — its shared consumer `cap-<cap>-v<major>`, its
// lanes' (routing by version), any further per-priority consumer a principal declares — derived from the
// principals, never listed here; a consumer of the whole stream (lineage's) is no capability's backlog. With
// MESH_CAP's fill against its limits and each capability's drain (acknowledged per second), that is one report,
// written to KV causeway_pressure under `mesh`. Only the coordinator may write that bucket (its server
// permissions, principals.json's check), so no agent can fake calm or panic. Two coordinator replicas both write
// it: each report is a whole measurement, and the later one wins.
import type { ConsumerInfo } from "@nats-io/jetstream";
import {
  KvBucket, PRESSURE_KEY, StreamName, openMeshBucket, type CapabilityBacklog, type PressureReport,
} from "../kit/index.ts";
import type { CoordinatorDeps, CoordinatorModule } from "./module.ts";

/** How often the backlog is measured. */
const PRESSURE_INTERVAL_MS = 1_000;

/** The durables of each capability (ref → durable names), from the principals' consumers on MESH_CAP. */
export function capabilityDurables(deps: Pick<CoordinatorDeps, "layout">): ReadonlyMap<string, ReadonlySet<string>> {
  const { principals, subjects } = deps.layout;
  const rebase = (s: string) => (s === principals.prefix || s.startsWith(`${principals.prefix}.`) ? `${deps.layout.prefix}${s.slice(principals.prefix.length)}` : s);
  const out = new Map<string, Set<string>>();
  for (const cap of Object.values(principals.capabilities)) {
    const subject = subjects.capability(cap.name, cap.major);
    const durables = new Set<string>();
    for (const p of Object.values(principals.principals)) {
      for (const c of p.consumes) {
        if (c.stream !== StreamName.Cap || c.filter === undefined) continue;
        const filter = rebase(c.filter);
        if (filter === subject || filter.startsWith(`${subject}.`)) durables.add(c.durable);
      }
    }
    out.set(cap.ref, durables);
  }
  return out;
}

/** Measures and publishes the backlog every second. */
export async function start(deps: CoordinatorDeps, opts: { intervalMs?: number } = {}): Promise<CoordinatorModule> {
  const log = deps.log.child({ module: "pressure" });
  const intervalMs = opts.intervalMs ?? PRESSURE_INTERVAL_MS;
  const kv = await openMeshBucket(deps.nc, deps.layout.buckets[KvBucket.Pressure].name, "the mesh's backlog per capability");
  const byCapability = capabilityDurables(deps);
  let previous: { at: number; acked: Map<string, number> } | undefined;
  let failing = false;

  const measure = async (): Promise<PressureReport> => {
    const infos = new Map<string, ConsumerInfo>();
    for await (const ci of deps.jsm.consumers.list(StreamName.Cap)) infos.set(ci.name, ci);
    const stream = await deps.jsm.streams.info(StreamName.Cap);
    const now = Date.now();
    const acked = new Map<string, number>();
    const capabilities: Record<string, CapabilityBacklog> = {};
    for (const [ref, names] of byCapability) {
      let pending = 0;
      let ackPending = 0;
      let drained = 0;
      const durables: Record<string, number> = {};
      for (const name of names) {
        const ci = infos.get(name);
        if (ci === undefined) continue;
        pending += ci.num_pending;
        ackPending += ci.num_ack_pending;
        durables[name] = ci.num_pending + ci.num_ack_pending;
        acked.set(name, ci.ack_floor.consumer_seq);
        const before = previous?.acked.get(name);
        if (before !== undefined && ci.ack_floor.consumer_seq > before) drained += ci.ack_floor.consumer_seq - before;
      }
      const seconds = previous === undefined ? 0 : (now - previous.at) / 1000;
      capabilities[ref] = { backlog: pending + ackPending, pending, ackPending, drainPerSecond: seconds > 0 ? Math.round((drained / seconds) * 10) / 10 : 0, durables };
    }
    previous = { at: now, acked };
    const { messages, bytes } = stream.state;
    const maxMsgs = stream.config.max_msgs ?? -1;
    const maxBytes = stream.config.max_bytes ?? -1;
    const fill = Math.max(maxMsgs > 0 ? messages / maxMsgs : 0, maxBytes > 0 ? bytes / maxBytes : 0);
    return { at: new Date(now).toISOString(), intervalMs, stream: { name: StreamName.Cap, messages, bytes, maxMsgs, maxBytes, fill }, capabilities };
  };

  let running: Promise<void> | undefined;
  const tick = () => {
    if (running !== undefined) return; // a slow server must not pile measurements up
    running = (async () => {
      try {
        await kv.put(PRESSURE_KEY, JSON.stringify(await measure()));
        if (failing) log.info("backlog measured and published again");
        failing = false;
      } catch (err) {
        // Readers see the report age and fail open: say so once, not every second.
        if (!failing) log.warn({ err }, "could not measure or publish the backlog; gateways admit without backpressure once the last report is stale");
        failing = true;
      }
    })().finally(() => { running = undefined; });
  };
  tick();
  const timer = setInterval(tick, intervalMs);
  return {
    name: "pressure",
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
