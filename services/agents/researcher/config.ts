// The researcher's configuration: environment → typed → validated → frozen. A bad value fails at startup with
// a message naming the variable and the form it expects.
import { envInteger } from "../../kit/index.ts";

/** The environment variables the researcher reads (the model's are in services/agents/model.ts). */
export const ResearcherEnv = {
  /** Tasks researched at once in one process. */
  Concurrency: "CAUSEWAY_RESEARCHER_CONCURRENCY",
} as const;

/** The researcher's settings. */
export interface ResearcherConfig {
  /** Tasks researched at once in one process. Default 8. */
  readonly concurrency: number;
}

/** Defaults, one literal object. */
export const researcherDefaults: ResearcherConfig = Object.freeze({ concurrency: 8 });

/** Reads, validates and freezes the researcher's configuration. Throws ConfigError CW_ERR_CONFIG. */
export function loadResearcherConfig(env: NodeJS.ProcessEnv = process.env): ResearcherConfig {
  return Object.freeze({
    concurrency: envInteger(env, ResearcherEnv.Concurrency, 1, 1024, researcherDefaults.concurrency),
  });
}
