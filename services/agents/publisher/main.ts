// The publisher's process entry: connect as `publisher`, serve the critical publish.v1, drain on SIGTERM.
// Imported rather than run, it only exports its definition factory (which `causeway replay` still refuses to
// run: the capability is critical, its handler acts outside the mesh).
import { loadPublisherConfig } from "./config.ts";
import { createPublisherDefinition } from "./definition.ts";
import { runAgentProcess, type DefinitionFactory } from "../../kit/index.ts";

export const definition = (() => createPublisherDefinition({ config: loadPublisherConfig() })) satisfies DefinitionFactory;

if (import.meta.main) await runAgentProcess("publisher", definition);
