// Draining on SIGTERM / SIGINT, the same way in every process entry. The first signal starts the drain; later
// ones are absorbed, because one stop often brings two (Ctrl-C reaches a whole process group, and a
// supervisor such as the gateway's primary then sends its own SIGTERM to the workers).
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { CausewayError, ErrorCode } from "./errors.ts";

let draining: Promise<NodeJS.Signals> | undefined;

/**
 * Resolves with the first SIGTERM or SIGINT, logged as "draining" with `fields`. The handlers are installed by
 * the first call in the process, and every call shares them: a service shell calls it before it starts, so a
 * signal that arrives while the service is still starting is not the default kill but a drain once it has started.
 */
export function drainSignal(log: Logger, fields: Record<string, unknown> = {}): Promise<NodeJS.Signals> {
  draining ??= new Promise((resolve) => {
    let first: NodeJS.Signals | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      if (first !== undefined) return;
      first = signal;
      log.info({ signal, ...fields }, "draining");
      resolve(signal);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
  return draining;
}

/**
 * Waits until the process should stop: a signal (undefined: a normal stop), or the connection closing, or one of
 * `lost` settling (a followed bucket such as the trust store, or a consumer, is gone): that error, logged, and
 * the caller exits non-zero with it. The one way every Causeway process learns it must stop.
 */
export async function untilStop(log: Logger, nc: NatsConnection, lost: readonly Promise<CausewayError>[] = []): Promise<CausewayError | undefined> {
  const closed = nc.closed().then((err) => new CausewayError(ErrorCode.Unavailable, `the NATS connection closed${err ? `: ${err.message}` : ""}`, err ? { cause: err } : {}));
  const reason = await Promise.race([drainSignal(log).then(() => undefined), closed, ...lost]);
  if (reason !== undefined) log.error({ err: reason }, "stopping: something this service depends on is gone (its connection, a followed bucket, its consumer)");
  return reason;
}
