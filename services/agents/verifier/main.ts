// The verifier's process entry: connect as `verifier`, serve verify.v1, drain on SIGTERM / SIGINT. Imported
// rather than run (`causeway replay`), it only exports its definition factory.
import { createModelFromEnv } from "../model.ts";
import { loadVerifierConfig } from "./config.ts";
import { createVerifierDefinition } from "./definition.ts";
import { runAgentProcess, type DefinitionFactory } from "../../kit/index.ts";

export const definition = (() => createVerifierDefinition({ config: loadVerifierConfig(), model: createModelFromEnv() })) satisfies DefinitionFactory;

if (import.meta.main) await runAgentProcess("verifier", definition);
