// The process entry of an agent: the kit's service shell (connect as its principal, trust store, signing key,
// drain on SIGTERM / SIGINT, exit 1 when something it depends on is gone, or when startup fails — with the
// reason on stderr and in the log, never the seed) around startAgent. In-flight work finishes at a drain; the
// rest is redelivered.
import type { NatsConnection } from "@nats-io/transport-node";
import type { Agent, AgentDefinition } from "./agent-api.ts";
import { startAgent, type AgentOptions } from "./agent.ts";
import { runServiceProcess } from "./service-process.ts";

/** Runs the agent built by `build` as `principal` until a termination signal or a loss; resolves when drained. */
export async function runAgentProcess<In>(
  principal: string,
  build: (nc: NatsConnection) => Promise<AgentDefinition<In>> | AgentDefinition<In>,
  opts: Partial<Pick<AgentOptions, "consumer" | "layout">> & {
    /** Runs once the agent consumes (timers such as a deadline sweep); the returned function runs at drain. */
    onStarted?: (agent: Agent, nc: NatsConnection) => (() => void) | void;
  } = {},
): Promise<void> {
  await runServiceProcess(principal, async ({ nc, trust, key, layout, log, defer }) => {
    const definition = await build(nc);
    if (definition.principal !== principal) throw new Error(`definition is for ${definition.principal}, process runs as ${principal}`);
    const { onStarted, ...agentOpts } = opts;
    const agent = await startAgent(nc, definition, { trust, signingKey: key, log, layout, ...agentOpts });
    defer(() => agent.stop());
    const cleanup = onStarted?.(agent, nc);
    if (cleanup) defer(cleanup);
    return { lost: [agent.lost] };
  });
}
