// The summarizer's configuration: environment → typed → validated → frozen. A bad value fails at startup with a
// message naming the variable and the form it expects.
import { envInteger } from "../../kit/index.ts";

/** The environment variables the summarizer reads. */
export const SummarizerEnv = {
  /** Reports summarized at once in one process, per durable. */
  Concurrency: "CAUSEWAY_SUMMARIZER_CONCURRENCY",
} as const;

/** The summarizer's settings. */
export interface SummarizerConfig {
  /** Reports summarized at once in one process, per durable. Default 8. */
  readonly concurrency: number;
}

/** Defaults, one literal object. */
export const summarizerDefaults: SummarizerConfig = Object.freeze({ concurrency: 8 });

/** Reads, validates and freezes the summarizer's configuration. Throws ConfigError CW_ERR_CONFIG. */
export function loadSummarizerConfig(env: NodeJS.ProcessEnv = process.env): SummarizerConfig {
  return Object.freeze({ concurrency: envInteger(env, SummarizerEnv.Concurrency, 1, 1024, summarizerDefaults.concurrency) });
}
