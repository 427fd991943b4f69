// The researcher's process entry: connect as `researcher`, serve research.v1, drain on SIGTERM / SIGINT.
import { createModelFromEnv } from "../model.ts";
import { loadResearcherConfig } from "./config.ts";
import { createResearcherDefinition } from "./definition.ts";
import { runAgentProcess } from "../../kit/index.ts";

await runAgentProcess("researcher", async () => createResearcherDefinition({ config: loadResearcherConfig(), model: createModelFromEnv() }));
