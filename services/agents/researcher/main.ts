// The researcher's process entry (version 1.0.0, the stable one): connect as `researcher`, serve research.v1,
// drain on SIGTERM / SIGINT. Imported rather than run (`causeway replay`), it only exports its definition factory.
import { createModelFromEnv } from "../model.ts";
import { loadResearcherConfig } from "./config.ts";
import { createResearcherDefinition } from "./definition.ts";
import { runAgentProcess, type DefinitionFactory } from "../../kit/index.ts";

export const definition = (() => createResearcherDefinition({ config: loadResearcherConfig(), model: createModelFromEnv() })) satisfies DefinitionFactory;

if (import.meta.main) await runAgentProcess("researcher", definition);
