// The publisher's process entry: connect as `publisher`, serve the critical publish.v1, drain on SIGTERM.
import { loadPublisherConfig } from "./config.ts";
import { createPublisherDefinition } from "./definition.ts";
import { runAgentProcess } from "../../kit/index.ts";

await runAgentProcess("publisher", () => createPublisherDefinition({ config: loadPublisherConfig() }));
