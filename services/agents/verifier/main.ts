// The verifier's process entry: connect as `verifier`, serve verify.v1, drain on SIGTERM / SIGINT.
import { createModelFromEnv } from "../model.ts";
import { loadVerifierConfig } from "./config.ts";
import { createVerifierDefinition } from "./definition.ts";
import { runAgentProcess } from "../../kit/index.ts";

await runAgentProcess("verifier", async () => createVerifierDefinition({ config: loadVerifierConfig(), model: createModelFromEnv() }));
