// Agent instances coming and going, as the coordinator sees them: it follows the causeway_instances bucket, where
// every running agent heartbeats (services/kit/heartbeat.ts), and logs each instance that starts, stops cleanly
// (its key deleted) or is lost (no heartbeat for longer than the bucket keeps a value: killed, hung, cut off).
// The bucket's max_age removes a lost instance's key without a delete marker, so loss is found by a sweep over
// the last beat of each known instance.
import { KvBucket, STREAMS_APPLY, followBucket, parseBeat, type InstanceBeat } from "../kit/index.ts";
import type { CoordinatorDeps, CoordinatorModule } from "./module.ts";

/** How often the sweep looks for lost instances. */
const SWEEP_MS = 1_000;

/** Starts following the instances. */
export async function start(deps: CoordinatorDeps): Promise<CoordinatorModule> {
  const { log } = deps;
  const lapseMs = deps.layout.buckets[KvBucket.Instances].ttlMs;
  // Each instance's last beat and when the coordinator saw it (its own clock: agents' clocks may be off).
  const known = new Map<string, { beat: InstanceBeat; seenAt: number }>();
  const fields = (b: InstanceBeat) => ({ capability: b.capability, principal: b.principal, version: b.version, instance: b.instance, host: b.host, pid: b.pid });
  const following = await followBucket(deps.nc, {
    bucket: KvBucket.Instances, what: "live agent instances", createdBy: STREAMS_APPLY, consequence: "agent instances coming and going",
    onProblem: (err) => log.warn({ err }, "instances watch problem"),
    apply(change) {
      const key = change.key;
      const beat = parseBeat(change);
      if (beat) {
        if (!known.has(key)) log.info(fields(beat), "agent instance up");
        known.set(key, { beat, seenAt: Date.now() });
        return;
      }
      const gone = known.get(key);
      known.delete(key);
      if (gone) log.info(fields(gone.beat), "agent instance stopped");
    },
  });
  const sweep = setInterval(() => {
    const now = Date.now();
    for (const [key, { beat, seenAt }] of known) {
      const silentMs = now - seenAt;
      if (silentMs <= lapseMs) continue;
      known.delete(key);
      log.warn({ ...fields(beat), lastHeartbeat: beat.at, silentMs }, "agent instance lost: no heartbeat");
    }
  }, SWEEP_MS);
  sweep.unref();
  return {
    name: "instances",
    lost: following.lost,
    async stop() {
      clearInterval(sweep);
      await following.close();
    },
  };
}
