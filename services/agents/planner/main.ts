// The planner's process entry: connect as `planner`, serve plan.v1, drain on SIGTERM / SIGINT.
import { createModelFromEnv } from "../model.ts";
import { loadPlannerConfig } from "./config.ts";
import { createPlannerDefinition } from "./definition.ts";
import { runAgentProcess } from "../../kit/index.ts";

await runAgentProcess("planner", async () => createPlannerDefinition({ config: loadPlannerConfig(), model: createModelFromEnv() }));
