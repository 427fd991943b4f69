// The planner's configuration: environment → typed → validated → frozen. A bad value fails at startup with a
// message naming the variable and the form it expects.
import { envInteger } from "../../kit/index.ts";

/** The environment variables the planner reads (the model's are in services/agents/model.ts). */
export const PlannerEnv = {
  /** Requests planned at once in one process. */
  Concurrency: "CAUSEWAY_PLANNER_CONCURRENCY",
} as const;

/** The planner's settings. */
export interface PlannerConfig {
  /** Requests planned at once in one process. Default 8. */
  readonly concurrency: number;
}

/** Defaults, one literal object. */
export const plannerDefaults: PlannerConfig = Object.freeze({ concurrency: 8 });

/** Reads, validates and freezes the planner's configuration. Throws ConfigError CW_ERR_CONFIG. */
export function loadPlannerConfig(env: NodeJS.ProcessEnv = process.env): PlannerConfig {
  return Object.freeze({
    concurrency: envInteger(env, PlannerEnv.Concurrency, 1, 1024, plannerDefaults.concurrency),
  });
}
