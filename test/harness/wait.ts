// Waiting on a condition, never on the clock: poll a probe until it holds or a deadline passes.
import { setTimeout as delay } from "node:timers/promises";

/** Options for {@link waitFor}. */
export interface WaitOptions {
  /** Give up after this many milliseconds. Default 10000. */
  timeoutMs?: number;
  /** Pause between probes in milliseconds. Default 20. */
  intervalMs?: number;
  /** Describes the condition in the timeout error. */
  what?: string;
  /** Stops waiting at once, rejecting with the signal's reason (e.g. the process being waited on exited). */
  signal?: AbortSignal;
}

/**
 * Calls `probe` until it returns a value other than `undefined`/`false`, and returns that value.
 * A probe that throws counts as "not yet"; the last error is attached to the timeout error. An aborted
 * `signal` ends the wait immediately with its reason.
 */
export async function waitFor<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, opts: WaitOptions = {}): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 20, what = "condition", signal } = opts;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    signal?.throwIfAborted();
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
    }
    await delay(intervalMs, undefined, signal ? { signal } : undefined).catch(() => signal?.throwIfAborted());
  }
}
