// The planner's process entry: connect as `planner`, serve plan.v1, drain on SIGTERM / SIGINT. Imported rather
// than run (`causeway replay`), it only exports its definition factory.
import { createModelFromEnv } from "../model.ts";
import { loadPlannerConfig } from "./config.ts";
import { createPlannerDefinition } from "./definition.ts";
import { runAgentProcess, type DefinitionFactory } from "../../kit/index.ts";

export const definition = (() => createPlannerDefinition({ config: loadPlannerConfig(), model: createModelFromEnv() })) satisfies DefinitionFactory;

if (import.meta.main) await runAgentProcess("planner", definition);
