// The reporter's configuration: environment → typed → validated → frozen. A bad value fails at startup with a
// message naming the variable and the form it expects.
import { envInteger } from "../../kit/index.ts";

/** The environment variables the reporter reads. */
export const ReporterEnv = {
  /** Deadline of a request that has none, in milliseconds after the request's time. */
  DeadlineMs: "CAUSEWAY_REPORT_DEADLINE_MS",
  /** How often the deadline sweep looks for expired joins, in milliseconds. */
  SweepMs: "CAUSEWAY_REPORT_SWEEP_MS",
  /** Verified findings joined at once in one process. */
  Concurrency: "CAUSEWAY_REPORTER_CONCURRENCY",
} as const;

/** The reporter's settings. */
export interface ReporterConfig {
  /** A request without a deadline is due this long after its time. Default 10 000 ms. */
  readonly deadlineMs: number;
  /** Interval of the deadline sweep. Default 500 ms. */
  readonly sweepMs: number;
  /** Verified findings joined at once in one process. Default 8. */
  readonly concurrency: number;
}

/** Defaults, one literal object. */
export const reporterDefaults: ReporterConfig = Object.freeze({ deadlineMs: 10_000, sweepMs: 500, concurrency: 8 });

const WEEK_MS = 7 * 24 * 3600 * 1000;

/** Reads, validates and freezes the reporter's configuration. Throws ConfigError CW_ERR_CONFIG. */
export function loadReporterConfig(env: NodeJS.ProcessEnv = process.env): ReporterConfig {
  return Object.freeze({
    deadlineMs: envInteger(env, ReporterEnv.DeadlineMs, 1, WEEK_MS, reporterDefaults.deadlineMs, " milliseconds"),
    sweepMs: envInteger(env, ReporterEnv.SweepMs, 10, 3_600_000, reporterDefaults.sweepMs, " milliseconds"),
    concurrency: envInteger(env, ReporterEnv.Concurrency, 1, 1024, reporterDefaults.concurrency, ""),
  });
}
