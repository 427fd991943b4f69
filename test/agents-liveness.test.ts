// Issue 15, item 2: liveness. Every running agent instance heartbeats into causeway_instances (its capability,
// implementation version, instance id, counters); `causeway agents` lists them per capability; an instance that
// stops cleanly is gone at once, one that stops heartbeating (here: its connection cut without a goodbye) is
// gone within seconds, and the coordinator logs both.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import {
  KvBucket, createLogger, defaultLayout, openTrustStore, readSeed, signingKeyFromNkeySeed, startAgent, type AgentDefinition, type InstanceBeat,
} from "../services/kit/index.ts";
import { createPlannerDefinition } from "../services/agents/planner/definition.ts";
import type { CapabilityInstances } from "../services/cli/commands/agents.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { repoRoot, waitFor } from "./harness/index.ts";

const quiet = (name: string) => createLogger({ name, level: process.env.LOG_LEVEL ?? "silent" });

async function agents(mesh: OperatedMesh): Promise<CapabilityInstances[]> {
  const { stdout } = await promisify(execFile)(process.execPath, [join(repoRoot, "services/cli/main.ts"), "agents", "--json", "--server", mesh.server.url], {
    env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir },
  });
  return JSON.parse(stdout) as CapabilityInstances[];
}

async function startPlanner<In>(mesh: OperatedMesh, def: AgentDefinition<In>) {
  const nc = await mesh.as("planner");
  const trust = await openTrustStore(nc);
  const agent = await startAgent(nc, def, { trust, signingKey: signingKeyFromNkeySeed(readSeed("planner", mesh.dataDir)), log: quiet("planner") });
  return { nc, trust, agent };
}

describe("agent liveness", () => {
  test("liveness - causeway agents lists every capability with its live instances; a clean stop and a lost heartbeat each remove the instance, and the coordinator logs both", async () => {
    await using mesh = await startOperatedMesh();
    const coordinator = mesh.spawn("services/coordinator/main.ts", { LOG_LEVEL: "info" });
    await waitFor(() => coordinator.output().includes("coordinator started"), { what: "the coordinator" });
    const def = createPlannerDefinition();

    // Every capability principals.json declares is listed, served or not.
    const before = await agents(mesh);
    assert.deepEqual(before.map((c) => c.capability), Object.keys(defaultLayout().principals.capabilities));
    assert.ok(before.every((c) => c.instances.length === 0));

    const first = await startPlanner(mesh, def);
    const second = await startPlanner(mesh, def);
    const plan = async () => (await agents(mesh)).find((c) => c.capability === `${def.capability}.v${def.major}`)!;
    const up = await waitFor(async () => { const p = await plan(); return p.instances.length === 2 && p; }, { what: "two planner instances" });
    assert.deepEqual(up.agents, ["planner"]);
    assert.deepEqual(up.versions, [def.version]);
    const beat = up.instances[0]!;
    assert.deepEqual([beat.principal, beat.version, beat.pid, typeof beat.stats.processed], ["planner", def.version, process.pid, "number"]);
    await waitFor(() => (coordinator.output().match(/agent instance up/g) ?? []).length === 2, { what: "the coordinator to log both instances" });

    assert.deepEqual(up.instances.map((i) => i.instance).sort(), [first.agent.instance, second.agent.instance].sort());

    // A clean stop deletes the key: gone at once.
    await first.agent.stop();
    assert.deepEqual((await plan()).instances.map((i) => i.instance), [second.agent.instance]);
    await waitFor(() => coordinator.output().includes("agent instance stopped") && coordinator.output().includes(first.agent.instance), { what: "the coordinator to log the clean stop" });

    // The other one's connection is cut without a goodbye: its heartbeats stop and its key expires.
    const lost = second;
    const lastBeat: InstanceBeat = (await plan()).instances[0]!;
    await lost.nc.close();
    const lapseMs = defaultLayout().buckets[KvBucket.Instances].ttlMs;
    await waitFor(async () => (await plan()).instances.length === 0, { what: "the silent instance to drop out", timeoutMs: lapseMs + 6_000 });
    await waitFor(() => coordinator.output().includes("agent instance lost: no heartbeat") && coordinator.output().includes(lastBeat.instance), {
      what: "the coordinator to log the lost instance", timeoutMs: lapseMs + 6_000,
    });
    await lost.agent.stop().catch(() => undefined);
    await first.trust.close().catch(() => undefined);
    await second.trust.close().catch(() => undefined);
  });
});
