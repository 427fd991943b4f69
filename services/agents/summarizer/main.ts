// The summarizer's process entry: connect as `summarizer`, serve summarize.v1 and its subscription to
// report.published, drain on SIGTERM. Imported rather than run (`causeway replay`), it only exports its
// definition factory.
import { loadSummarizerConfig } from "./config.ts";
import { createSummarizerDefinition } from "./definition.ts";
import { runAgentProcess, type DefinitionFactory } from "../../kit/index.ts";

export const definition = (() => createSummarizerDefinition(loadSummarizerConfig())) satisfies DefinitionFactory;

if (import.meta.main) await runAgentProcess("summarizer", definition);
