// The publisher's process entry: connect as `publisher`, serve the critical publish.v1, drain on SIGTERM.
import { runAgentProcess } from "../../kit/agent-process.ts";
import { loadPublisherConfig } from "./config.ts";
import { createPublisherDefinition } from "./definition.ts";

await runAgentProcess("publisher", () => createPublisherDefinition({ config: loadPublisherConfig() }));
