// The researcher's configuration: environment → typed → validated → frozen. A bad value fails at startup with
// a message naming the variable and the form it expects.
import { envInteger } from "../../kit/index.ts";

/** The environment variables the researcher reads (the model's are in services/agents/model.ts). */
export const ResearcherEnv = {
  /** Tasks researched at once in one process. */
  Concurrency: "CAUSEWAY_RESEARCHER_CONCURRENCY",
  /**
   * Researcher 1.1.0 only (the candidate of the rollout demo and tests): the share of inputs, 0–100, it fails
   * on purpose, chosen by a hash of the input's id — the same inputs on every replica, every delivery and every
   * run, so a test can count them.
   */
  FailPercent: "CAUSEWAY_RESEARCHER_FAIL_PERCENT",
  /**
   * Researcher 1.1.0 only: how many deliveries of a failing input fail (then it succeeds, as a flaky dependency
   * would); 0, the default, fails every delivery, so the runtime quarantines it as max_deliveries.
   */
  FailDeliveries: "CAUSEWAY_RESEARCHER_FAIL_DELIVERIES",
} as const;

/** The researcher's settings. */
export interface ResearcherConfig {
  /** Tasks researched at once in one process. Default 8. */
  readonly concurrency: number;
  /** Researcher 1.1.0: the share of inputs (0–100) it fails on purpose. Default 0. */
  readonly failPercent: number;
  /** Researcher 1.1.0: deliveries of a failing input that fail; 0 (default): all of them. */
  readonly failDeliveries: number;
}

/** Defaults, one literal object. */
export const researcherDefaults: ResearcherConfig = Object.freeze({ concurrency: 8, failPercent: 0, failDeliveries: 0 });

/** Reads, validates and freezes the researcher's configuration. Throws ConfigError CW_ERR_CONFIG. */
export function loadResearcherConfig(env: NodeJS.ProcessEnv = process.env): ResearcherConfig {
  return Object.freeze({
    concurrency: envInteger(env, ResearcherEnv.Concurrency, 1, 1024, researcherDefaults.concurrency),
    failPercent: envInteger(env, ResearcherEnv.FailPercent, 0, 100, researcherDefaults.failPercent, " %"),
    failDeliveries: envInteger(env, ResearcherEnv.FailDeliveries, 0, 1000, researcherDefaults.failDeliveries),
  });
}
