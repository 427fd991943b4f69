// Draining on SIGTERM / SIGINT, the same way in every process entry. The first signal starts the drain; later
// ones are absorbed, because one stop often brings two (Ctrl-C reaches a whole process group, and a
// supervisor such as the gateway's primary then sends its own SIGTERM to the workers).
import type { Logger } from "pino";

/** Resolves with the first SIGTERM or SIGINT, logged as "draining" with `fields`. */
export function drainSignal(log: Logger, fields: Record<string, unknown> = {}): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
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
}
