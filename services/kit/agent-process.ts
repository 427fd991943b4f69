// The process entry of an agent: the kit's service shell (connect as its principal, trust store, signing key,
// drain on SIGTERM / SIGINT, exit 1 when something it depends on is gone, or when startup fails — with the
// reason on stderr and in the log, never the seed) around startAgent. In-flight work finishes at a drain; the
// rest is redelivered.
//
// An agent's entry module (principals.json `entry`, or one of its `versions`) runs the process only as the main
// module, and exports the factory of its definition, so a tool can build the definition without starting
// anything (`causeway replay` runs a candidate version's handler in-process):
//
//   export const definition: DefinitionFactory = () => createResearcherDefinition({ config: loadResearcherConfig() });
//   if (import.meta.main) await runAgentProcess("researcher", definition);
import type { NatsConnection } from "@nats-io/transport-node";
import type { Agent, AgentDefinition } from "./agent-api.ts";
import { startAgent, type AgentOptions } from "./agent.ts";
import { ConfigError, ErrorCode } from "./errors.ts";
import type { MeshLayout } from "./layout.ts";
import { runServiceProcess } from "./service-process.ts";

/**
 * The environment variable naming the implementation version a process must run: set by `causeway start
 * <principal>@<version>` (and its supervisor) for a version of the principal's `versions`, unset for its entry.
 */
export const AGENT_VERSION_ENV = "CAUSEWAY_AGENT_VERSION";

/**
 * What an agent's entry module exports as `definition`: builds the definition from the environment alone, with
 * no connection, so building it has no effect on the mesh. An agent whose definition needs its connection (a
 * store of its own) exports none, and cannot be replayed.
 */
export type DefinitionFactory = () => AgentDefinition<never> | Promise<AgentDefinition<never>>;

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
    checkVersion(definition, layout, process.env[AGENT_VERSION_ENV]);
    const { onStarted, ...agentOpts } = opts;
    const agent = await startAgent(nc, definition, { trust, signingKey: key, log, layout, ...agentOpts });
    defer(() => agent.stop());
    const cleanup = onStarted?.(agent, nc);
    if (cleanup) defer(cleanup);
    return { lost: [agent.lost] };
  });
}

/**
 * Refuses a process whose definition is not the version it was started as: `<principal>@<version>` must run that
 * version, and the principal's own entry one that its `versions` does not declare — otherwise two services would
 * claim one version, and `causeway start` could not tell which processes answer for which. CW_ERR_VERSION_MISMATCH.
 */
export function checkVersion(definition: Pick<AgentDefinition, "principal" | "version">, layout: MeshLayout, expected: string | undefined): void {
  const { principal, version } = definition;
  const declared = layout.principals.principals[principal]?.versions ?? {};
  if (expected !== undefined && expected !== "") {
    if (version === expected) return;
    const entry = declared[expected]?.entry ?? "its entry";
    throw new ConfigError(ErrorCode.VersionMismatch, `started as ${principal}@${expected}, but ${entry} defines version ${version}: make its definition say ${expected}, or declare it in ${layout.sources.principals} under the version it is`);
  }
  if (Object.hasOwn(declared, version)) {
    throw new ConfigError(ErrorCode.VersionMismatch, `${principal}'s entry defines version ${version}, which ${layout.sources.principals} declares under "versions" (${declared[version]!.entry}): start that one as \`causeway start ${principal}@${version}\`, and give the entry's definition the version it runs`);
  }
}
