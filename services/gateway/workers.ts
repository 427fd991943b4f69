// Several gateway processes on one machine: the gateway's work per event (HTTP parsing, validation, signing)
// keeps one core busy long before NATS is, so CAUSEWAY_GATEWAY_WORKERS > 1 forks that many workers with
// node:cluster. They share the HTTP port (the primary hands connections round-robin) and the NATS ingress's
// durable consumer (queue semantics); dedupe marks live in KV, so any worker sees any other's. The primary only
// supervises: it forwards SIGTERM / SIGINT, and when a worker dies unasked it stops the rest and exits 1, so
// the process supervisor restarts the whole gateway rather than running it short-handed without saying so.
import cluster, { type Worker } from "node:cluster";
import type { Logger } from "pino";
import { announceStarted, detachFromSupervisor, drainSignal, isStartedMessage } from "../kit/index.ts";

/** True in a forked worker. */
export function isWorker(): boolean {
  return cluster.isWorker;
}

/** Lets a worker that finished exit: its IPC channel to the primary would keep it alive otherwise. */
export function releaseWorker(): void {
  if (cluster.isWorker) cluster.worker?.disconnect();
}

/** Forks `count` workers and waits until all have exited; resolves with the process exit code. */
export async function superviseWorkers(count: number, log: Logger): Promise<number> {
  let stopping = false;
  let failed = false;
  detachFromSupervisor();
  const workers: Worker[] = Array.from({ length: count }, () => cluster.fork());
  // The gateway has started once every worker has: then its supervisor (if any) is told (kit supervision.ts).
  const started = new Set<number>();
  for (const w of workers) {
    w.on("message", (msg: unknown) => {
      if (!isStartedMessage(msg) || started.has(w.id)) return;
      started.add(w.id);
      if (started.size === count) announceStarted();
    });
  }
  const exited = workers.map((w) => new Promise<void>((resolve) => w.once("exit", (code: number | null, signal: string | null) => {
    if (!stopping) {
      failed = true;
      log.error({ worker: w.process.pid, code, signal }, "a gateway worker exited unasked; stopping the others");
      stopAll();
    } else if (code !== 0 && code !== null) {
      failed = true; // a drain that failed (a worker still starting may die of the SIGTERM itself: that is fine)
      log.error({ worker: w.process.pid, code }, "a gateway worker failed to drain");
    }
    resolve();
  })));
  const stopAll = () => {
    stopping = true;
    for (const w of workers) if (!w.isDead()) w.process.kill("SIGTERM");
  };
  void drainSignal(log, { workers: count }).then(stopAll);
  log.info({ workers: count }, "gateway workers started");
  await Promise.all(exited);
  return failed ? 1 : 0;
}
