// Researcher 1.1.0's process entry (infra/principals.json: researcher `versions` 1.1.0): connect as
// `researcher`, serve research.v1 as version 1.1.0, drain on SIGTERM / SIGINT. `causeway start researcher@1.1.0`
// runs it beside 1.0.0; imported rather than run (`causeway replay`), it only exports its definition factory.
import { loadResearcherConfig } from "../config.ts";
import { createResearcher11Definition } from "./definition.ts";
import { runAgentProcess, type DefinitionFactory } from "../../../kit/index.ts";

export const definition = (() => createResearcher11Definition({ config: loadResearcherConfig() })) satisfies DefinitionFactory;

if (import.meta.main) await runAgentProcess("researcher", definition);
