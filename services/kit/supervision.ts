// A service process and the supervisor that may run it (`causeway up` / `start`: services/cli/supervisor.ts).
// The supervisor spawns the service with an IPC channel and restarts it when it exits unexpectedly — but only
// once it has started: a service that fails its first start exits with its reason, and the supervisor with it,
// so `causeway start` reports the failure instead of retrying it forever. The kit's service shell says when it
// has started; nothing else travels on the channel, and the channel never keeps the service alive.
import cluster from "node:cluster";

/** The message a service sends its supervisor once it answers (its endpoints subscribed, its consumers running). */
export const STARTED_MESSAGE = "causeway.started";

/** The shape of {@link STARTED_MESSAGE} on the channel. */
export interface StartedMessage {
  readonly type: typeof STARTED_MESSAGE;
  readonly pid: number;
}

/** True when `msg` is a service's {@link StartedMessage}. */
export function isStartedMessage(msg: unknown): msg is StartedMessage {
  return typeof msg === "object" && msg !== null && (msg as { type?: unknown }).type === STARTED_MESSAGE;
}

/**
 * Tells the parent, if it listens on an IPC channel (a supervisor, or the gateway's primary for a worker), that
 * this service has started. Never throws: a parent that is gone is no reason to fail.
 */
export function announceStarted(): void {
  if (typeof process.send !== "function" || !process.connected) return;
  try {
    process.send({ type: STARTED_MESSAGE, pid: process.pid } satisfies StartedMessage, undefined, {}, () => undefined);
  } catch {
    // the channel closed meanwhile
  }
}

/**
 * Makes sure an IPC channel from a supervisor never keeps this process alive (a Node child with a channel lives
 * as long as the channel does). Not for a worker of node:cluster: its channel is the cluster's and is released
 * by its own code.
 */
export function detachFromSupervisor(): void {
  if (!cluster.isWorker) process.channel?.unref();
}
