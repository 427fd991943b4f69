// The summarizer's process entry: connect as `summarizer`, serve summarize.v1 and its subscription to
// report.published, drain on SIGTERM.
import { loadSummarizerConfig } from "./config.ts";
import { createSummarizerDefinition } from "./definition.ts";
import { runAgentProcess } from "../../kit/index.ts";

await runAgentProcess("summarizer", () => createSummarizerDefinition(loadSummarizerConfig()));
