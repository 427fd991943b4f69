// A control endpoint answers only the requester's own inbox. The coordinator and lineage run as processes on
// the operated mesh; a principal that may ask them sets the reply subject of its request to a KV key or a
// decision subject, which the service could publish to (its permissions allow responses). Nothing may land
// there: the services log CW_ERR_REPLY_REFUSED and answer nothing.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { readMessages } from "../services/cli/flow.ts";
import { startOperatedMesh, type OperatedMesh, type SpawnedProcess } from "./e2e-fixture.ts";
import { waitFor } from "./harness/index.ts";

const SWITCH_KEY = "$KV.causeway_switches.mesh";
const DECISION = "mesh.decision.switch";

/**
 * Starts `script` and resolves once each of `subjects` answers a plain request from `nc`: a service registers its
 * endpoints module by module, and a request to one not yet registered would go nowhere (nothing to refuse).
 */
async function started(mesh: OperatedMesh, script: string, nc: NatsConnection, subjects: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<SpawnedProcess> {
  const proc = mesh.spawn(script, env);
  const failed = new AbortController();
  void proc.exited.then((code) => failed.abort(new Error(`${script} exited ${code}: ${proc.output()}`)));
  for (const subject of subjects) {
    await waitFor(async () => (await nc.request(subject, "{}", { timeout: 1_000 })).data.length > 0, { what: `${script} to answer on ${subject}`, timeoutMs: 20_000, signal: failed.signal });
  }
  return proc;
}

/**
 * Sends each request with its reply subject set to a KV key or a decision subject, then waits until the service
 * has either refused each (its log says so) or answered onto one; resolves with what is on those subjects.
 */
async function attack(mesh: OperatedMesh, proc: SpawnedProcess, nc: NatsConnection, requests: readonly { subject: string; reply: string }[]) {
  const kv = await new Kvm(mesh.operator).open("causeway_switches");
  const jsm = await jetstreamManager(mesh.operator);
  const before = (await jsm.streams.info("MESH_DECISION")).state.messages;
  for (const { subject, reply } of requests) nc.publish(subject, "{}", { reply });
  await nc.flush();
  const refused = () => proc.output().split("\n").filter((l) => l.includes("CW_ERR_REPLY_REFUSED")).length;
  const written = async () => (await kv.get("mesh")) !== null || (await jsm.streams.info("MESH_DECISION")).state.messages > before;
  await waitFor(async () => refused() >= requests.length || (await written()), { what: "the service to refuse (or answer) every request", timeoutMs: 15_000 });
  return { switchValue: (await kv.get("mesh"))?.string() ?? null, decisions: await readMessages(mesh.operator, "MESH_DECISION", DECISION), refused: refused() };
}

describe("control endpoints reply only to the requester's inbox", () => {
  test("control - a coordinator endpoint asked to reply onto a KV key or a decision subject publishes nothing there", async () => {
    await using mesh = await startOperatedMesh();
    const requests = [
      { subject: "mesh.ctl.coordinator.status", reply: SWITCH_KEY },
      { subject: "mesh.ctl.coordinator.quarantine-list", reply: DECISION },
    ];
    const coordinator = await started(mesh, "services/coordinator/main.ts", mesh.operator, requests.map((r) => r.subject));
    const outcome = await attack(mesh, coordinator, mesh.operator, requests);
    assert.equal(outcome.switchValue, null, "no kill switch value was written (an unreadable one pauses the whole mesh)");
    assert.deepEqual(outcome.decisions, [], "nothing was published as a decision");
    assert.equal(outcome.refused, 2);
    assert.match(coordinator.output(), /"code":"CW_ERR_REPLY_REFUSED".*"reply":"\$KV\.causeway_switches\.mesh"/);
  });

  test("control - a lineage endpoint asked by the auditor to reply onto a KV key or a decision subject publishes nothing there", async () => {
    await using mesh = await startOperatedMesh();
    const auditor = await mesh.as("auditor");
    const requests = [
      { subject: "mesh.ctl.lineage.stats", reply: SWITCH_KEY },
      { subject: "mesh.ctl.lineage.checkpoints", reply: DECISION },
    ];
    const lineage = await started(mesh, "services/lineage/main.ts", auditor, requests.map((r) => r.subject), { LINEAGE_HTTP_PORT: "-1" });
    const outcome = await attack(mesh, lineage, auditor, requests);
    assert.equal(outcome.switchValue, null, "no kill switch value was written");
    assert.deepEqual(outcome.decisions, [], "nothing was published as a decision");
    assert.equal(outcome.refused, 2);
  });
});
