// The mesh as operators run it: agents as separate processes with their own identities and least-privilege
// permissions, on a real nats-server; crashes and drains under load.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  NatsBinding, createEvent, defaultLayout, deriveEventId, flowIdOf, parseFactRef, subscriptionDurable, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7, type CloudEvent,
} from "../services/kit/index.ts";
import { collectFlow, readMessages } from "../services/cli/flow.ts";
import { REFERENCE_AGENTS, agentScript, startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { runNatsJson, waitFor } from "./harness/index.ts";

const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";

async function request(mesh: OperatedMesh, gateway: NatsConnection, questions: string[]): Promise<CloudEvent> {
  const event = signEvent(createEvent({
    id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
    datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent() },
    data: JSON.stringify({ topic: "Grid-scale battery storage", requester: "analyst@example.com", questions }),
  }), signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir)));
  const { headers, data } = NatsBinding.binary(event);
  await jetstream(gateway).publish("mesh.cap.plan.v1", data, { headers, msgID: event.id });
  return event;
}


describe("end to end, agents as processes", () => {
  test("e2e - a report request flows through the four agent processes to report.published, every event verified", async () => {
    await using mesh = await startOperatedMesh();
    // The chain of agents, and every agent listening to the report (the reference listener: the summarizer).
    const listeners = Object.values(defaultLayout().principals.principals).filter((p) => p.subscribes.includes("report.published.v1"));
    assert.ok(listeners.length > 0);
    const procs = [...REFERENCE_AGENTS, ...listeners.map((p) => p.name)].map((name) => mesh.spawn(agentScript(name)));
    // A subscriber gets the facts published after its durable exists: the request waits until every listener has one.
    const jsm = await jetstreamManager(mesh.operator);
    for (const p of listeners) {
      const durable = subscriptionDurable(p.name, parseFactRef("report.published.v1")!);
      await waitFor(() => jsm.consumers.info("MESH_EVT", durable).then(() => true, () => false), { what: `${durable} to exist`, timeoutMs: 30_000 });
    }
    const gateway = await mesh.as("gateway");
    const req = await request(mesh, gateway, ["Which battery chemistries lead grid-scale storage?", "What does a megawatt-hour of storage cost?"]);
    const report = await waitFor(async () => (await readMessages(mesh.operator, "MESH_EVT", "mesh.evt.report.published.v1"))[0], { what: "report.published", timeoutMs: 30_000 });
    const published = mesh.trust.verify(NatsBinding.toEvent(report), { receivedAt: "now" });
    assert.equal(published.entry.principal, "reporter");
    assert.equal(published.event.extensions.correlationid, flowIdOf(req), "the request started the flow");
    const body = JSON.parse(Buffer.from(published.event.data).toString()) as { complete: boolean; findingsCount: number };
    assert.deepEqual({ complete: body.complete, findingsCount: body.findingsCount }, { complete: true, findingsCount: 2 });

    // Read back once every listener has reacted to the report (the fact reaches them after the reporter stored it).
    const reactions = (n: Awaited<ReturnType<typeof collectFlow>>[number]): string[] => [
      ...(n.event.type === "report.published" && n.stream === "MESH_EVT" ? n.children.map((c) => c.principal!) : []), ...n.children.flatMap(reactions),
    ];
    const flow = await waitFor(async () => {
      const f = await collectFlow(mesh.operator, mesh.trust, flowIdOf(req));
      return f.length === 1 && reactions(f[0]!).length >= listeners.length && f;
    }, { what: "every listener's reaction to the report", timeoutMs: 30_000 });
    const chain: string[] = [];
    const walk = (n: (typeof flow)[number], depth: number) => {
      assert.ok(n.verified, `${n.event.type} ${n.event.id} did not verify: ${n.problem}`);
      chain.push(`${depth}:${n.event.type}:${n.principal}`);
      n.children.forEach((c) => walk(c, depth + 1));
    };
    assert.equal(flow.length, 1);
    walk(flow[0]!, 0);
    assert.deepEqual(chain.filter((c) => !c.includes("report.published") && !c.includes("report.summarized")).sort(), [
      "0:report.requested:gateway",
      "1:research.task.created:planner", "1:research.task.created:planner",
      "2:research.finding.created:researcher", "2:research.finding.created:researcher",
      "3:research.finding.verified:verifier", "3:research.finding.verified:verifier",
    ]);
    // The report as a fact, and the same report handed to the critical publish.v1 (held in MESH_HANDOFF: no coordinator here).
    assert.equal(chain.filter((c) => c.endsWith(":report.published:reporter")).length, 2);
    // Every agent subscribing to the fact reacted once, caused by it.
    assert.deepEqual(reactions(flow[0]!).sort(), listeners.map((p) => p.name).sort(), "each subscriber reacted once to the fact");
    for (const p of procs) p.child.kill("SIGTERM");
    assert.deepEqual(await Promise.all(procs.map((p) => p.exited)), procs.map(() => 0), "every agent drains and exits 0");
  });

  test("e2e - an agent SIGKILLed mid-handler: the input is redelivered and exactly one set of outputs exists", async () => {
    await using mesh = await startOperatedMesh();
    const first = mesh.spawn("test/fixtures/planner-under-test.ts", { PLANNER_MODE: "block-first" });
    const gateway = await mesh.as("gateway");
    await waitFor(async () => (await jetstream(mesh.operator).consumers.get("MESH_CAP", "cap-plan-v1").then(() => true, () => false)), { what: "the planner's consumer" });
    const req = await request(mesh, gateway, ["q one", "q two", "q three"]);
    await waitFor(() => first.output().includes(`handling ${req.id}`), { what: "the first delivery to be in the handler" });
    first.child.kill("SIGKILL");
    assert.equal(await first.exited, null);
    const second = mesh.spawn("test/fixtures/planner-under-test.ts", { PLANNER_MODE: "block-first" });
    const tasks = await waitFor(async () => {
      const m = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.research.v1");
      return m.length >= 3 && m;
    }, { what: "the redelivered input's outputs", timeoutMs: 20_000 });
    assert.deepEqual(tasks.map((m) => NatsBinding.toEvent(m).id).sort(), [0, 1, 2].map((i) => deriveEventId(req, "planner", i)).sort());
    assert.ok(!second.output().includes(`handling ${req.id}`), "the second process saw a redelivery, not a first delivery");
    const info = await jetstream(mesh.operator).consumers.get("MESH_CAP", "cap-plan-v1").then((c) => c.info());
    assert.equal(info.num_ack_pending + info.num_pending, 0);
  });

  test("e2e - SIGTERM under load loses nothing: the drained process exits 0 and a new one finishes the rest", async () => {
    await using mesh = await startOperatedMesh();
    const gateway = await mesh.as("gateway");
    const first = mesh.spawn("test/fixtures/planner-under-test.ts", { PLANNER_MODE: "slow", PLANNER_WORK_MS: "250" });
    await waitFor(async () => (await jetstream(mesh.operator).consumers.get("MESH_CAP", "cap-plan-v1").then(() => true, () => false)), { what: "the planner's consumer" });
    const requests: CloudEvent[] = [];
    for (let i = 0; i < 60; i++) requests.push(await request(mesh, gateway, [`question ${i}`]));
    await waitFor(async () => (await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.research.v1")).length >= 5, { what: "some work done" });
    first.child.kill("SIGTERM");
    assert.equal(await first.exited, 0, first.output());
    const done = (await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.research.v1")).length;
    assert.ok(done < requests.length, `the drain interrupted the load (${done} of ${requests.length} done)`);
    mesh.spawn("test/fixtures/planner-under-test.ts", { PLANNER_MODE: "slow", PLANNER_WORK_MS: "1" });
    const tasks = await waitFor(async () => {
      const m = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.research.v1");
      return m.length >= requests.length && m;
    }, { what: "every request planned", timeoutMs: 30_000 });
    const causes = tasks.map((m) => String(NatsBinding.toEvent(m).extensions.causationid));
    assert.equal(tasks.length, requests.length, "one task per request, none duplicated");
    assert.deepEqual(new Set(causes), new Set(requests.map((r) => r.id)));
  });

  test("e2e - nats micro ls (the real CLI, as the operator) lists every agent with its capability", async () => {
    await using mesh = await startOperatedMesh();
    REFERENCE_AGENTS.forEach((name) => mesh.spawn(agentScript(name)));
    const cli = { server: mesh.server.url, nkey: `${mesh.dataDir}/keys/operator.nk` };
    const services = await waitFor(async () => {
      const list = await runNatsJson<{ name: string; metadata: Record<string, string> }[]>(["--inbox-prefix", "_INBOX_operator", "micro", "ls", "--json"], cli);
      return list.length === REFERENCE_AGENTS.length && list;
    }, { what: `${REFERENCE_AGENTS.length} services`, timeoutMs: 20_000 });
    // Each registers as its principal's micro service, with the capability it serves (infra/principals.json).
    const { principals } = defaultLayout();
    assert.deepEqual(Object.fromEntries(services.map((s) => [s.name, s.metadata.capability])),
      Object.fromEntries(REFERENCE_AGENTS.map((name) => [principals.principals[name]!.service, principals.principals[name]!.serves[0]])));
    assert.ok(REFERENCE_AGENTS.length >= 4, "the reference workflow: plan, research, verify, report");
    for (const s of services) {
      const facts = principals.principals[s.name]!.subscribes.map((ref) => { const f = parseFactRef(ref)!; return `mesh.evt.${f.type}.v${f.major}`; });
      assert.equal(s.metadata.subscribes, facts.length > 0 ? facts.join(",") : undefined, `${s.name}: its subscriptions in the service metadata`);
    }
  });
});
