// The process entry of an agent: connect as its principal, open the trust store, load its signing key, start
// the agent, and drain on SIGTERM / SIGINT (in-flight work finishes, the rest is redelivered). Exits 0 after
// a clean drain, 1 when startup fails — with the reason on stderr and in the log, never the seed.
import type { NatsConnection } from "@nats-io/transport-node";
import type { Agent, AgentDefinition } from "./agent-api.ts";
import { startAgent, type AgentOptions } from "./agent.ts";
import { connectAs, readSeed } from "./connect.ts";
import { signingKeyFromNkeySeed } from "./keys.ts";
import { untilStop } from "./signals.ts";
import { createLogger } from "./log.ts";
import { openTrustStore } from "./trust.ts";

/** Runs the agent built by `build` as `principal` until a termination signal; resolves when drained. */
export async function runAgentProcess<In>(
  principal: string,
  build: (nc: NatsConnection) => Promise<AgentDefinition<In>> | AgentDefinition<In>,
  opts: Partial<Pick<AgentOptions, "consumer" | "layout">> & {
    /** Runs once the agent consumes (timers such as a deadline sweep); the returned function runs at drain. */
    onStarted?: (agent: Agent, nc: NatsConnection) => (() => void) | void;
  } = {},
): Promise<void> {
  const log = createLogger({ name: principal });
  let nc: NatsConnection | undefined;
  try {
    nc = await connectAs(principal);
    const trust = await openTrustStore(nc, { onProblem: (err) => log.warn({ err }, "trust store entry ignored") });
    const signingKey = signingKeyFromNkeySeed(readSeed(principal));
    const definition = await build(nc);
    if (definition.principal !== principal) throw new Error(`definition is for ${definition.principal}, process runs as ${principal}`);
    const { onStarted, ...agentOpts } = opts;
    const agent = await startAgent(nc, definition, { trust, signingKey, log, ...agentOpts });
    const cleanup = onStarted?.(agent, nc);
    const lost = await untilStop(log, nc, [agent.lost]);
    await agent.stop();
    cleanup?.();
    await trust.close();
    await nc.drain().catch(() => undefined);
    if (lost) console.error(`${principal}: ${lost.message}`);
    process.exitCode = lost ? 1 : 0;
  } catch (err) {
    log.error({ err }, "agent failed");
    console.error(`${principal}: ${err instanceof Error ? err.message : String(err)}`);
    await nc?.close().catch(() => undefined);
    process.exitCode = 1;
  }
}
