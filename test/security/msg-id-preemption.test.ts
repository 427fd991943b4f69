// Issue 12, finding 4: message ids must not be pre-emptable. A stream keeps one message per Nats-Msg-Id within its
// duplicate window and answers a second publish as a duplicate, storing nothing; a principal that publishes
// another's id first (on any subject of the same stream it may publish to) must not make that message vanish.
// On an operated mesh: rendered least-privilege accounts, every attacker a principal that may legitimately
// publish on the subject it uses.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import {
  ErrorCode, NatsBinding, QuarantineHeader, createEvent, createLogger, deriveEventId, isCausewayError, newTraceparent, publishQuarantineCopy, quarantineMsgId,
  readSeed, signEvent, signingKeyFromNkeySeed, startAgent, uuidv7, type CloudEvent, type SigningKey,
} from "../../services/kit/index.ts";
import { createPlannerDefinition } from "../../services/agents/planner/definition.ts";
import { createResearcherDefinition } from "../../services/agents/researcher/definition.ts";
import { createPublisherDefinition } from "../../services/agents/publisher/definition.ts";
import { start as startHandoffs } from "../../services/coordinator/handoffs.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { startCoordinator } from "../coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "../e2e-fixture.ts";
import { waitFor } from "../harness/index.ts";

const quiet = createLogger({ name: "test", level: process.env.LOG_LEVEL ?? "silent" });
const keyOf = (mesh: OperatedMesh, principal: string): SigningKey => signingKeyFromNkeySeed(readSeed(principal, mesh.dataDir));
const TASK_SCHEMA = "https://causeway.dev/schemas/research.task.created/1.0.0";
const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
const REPORT_SCHEMA = "https://causeway.dev/schemas/report.published/1.0.0";

function event(mesh: OperatedMesh, principal: string, type: string, dataschema: string, data: unknown, extra: Record<string, string> = {}): CloudEvent {
  return signEvent(createEvent({
    id: uuidv7(), source: `causeway://${principal}`, type, time: new Date().toISOString(), datacontenttype: "application/json", dataschema,
    extensions: { traceparent: newTraceparent(), ...extra }, data: JSON.stringify(data),
  }), keyOf(mesh, principal));
}

async function publish(nc: NatsConnection, subject: string, e: CloudEvent): Promise<number> {
  const { headers, data } = NatsBinding.binary(e);
  return (await jetstream(nc).publish(subject, data, { headers, msgID: e.id })).seq;
}

/** Publishes junk on `subject` as `nc` under each of `ids` (the pre-emption). */
async function preempt(nc: NatsConnection, subject: string, ids: readonly string[]): Promise<void> {
  for (const id of ids) {
    const h = natsHeaders();
    h.set(QuarantineHeader.DetectedBy, "researcher"); // a forged claim too, for the quarantine case
    const ack = await jetstream(nc).publish(subject, `forged under ${id}`, { headers: h, msgID: id });
    assert.equal(ack.duplicate, false);
  }
}

async function lastSeq(mesh: OperatedMesh, stream: string): Promise<number> {
  return (await (await jetstreamManager(mesh.operator)).streams.info(stream)).state.last_seq;
}

describe("message ids cannot be pre-empted", () => {
  test("quarantine - the planner publishes the researcher's quarantine id first: the researcher's entry is still stored, and the forged one is not taken for it", async () => {
    await using mesh = await startOperatedMesh();
    const planner = await mesh.as("planner");
    // A task the researcher refuses at the schema step (step 5), on the sequence it will get.
    const task = event(mesh, "planner", "research.task.created", TASK_SCHEMA, { requestId: uuidv7(), taskIndex: 0, totalTasks: 1, query: 7 });
    const seq = (await lastSeq(mesh, "MESH_CAP")) + 1;
    // Every id the researcher's copy could be predicted to use, published first on the planner's own quarantine subject.
    await preempt(planner, "mesh.quarantine.schema_violation.plan", [`quarantine/MESH_CAP/${seq}`, `researcher/quarantine/MESH_CAP/${seq}`]);
    assert.equal(await publish(planner, "mesh.cap.research.v1", task), seq);

    await using researcher = await startAgent(await mesh.as("researcher"), createResearcherDefinition(), {
      trust: mesh.trust, signingKey: keyOf(mesh, "researcher"), log: quiet,
    });
    await waitFor(() => researcher.stats().quarantined === 1, { what: "the researcher to quarantine the task" });

    const entries = await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.>");
    const mine = entries.filter((m) => m.subject === "mesh.quarantine.schema_violation.research");
    assert.equal(mine.length, 1, "the researcher's entry is stored");
    assert.equal(mine[0]!.headers?.get(QuarantineHeader.DetectedBy), "researcher");
    assert.equal(mine[0]!.headers?.get(QuarantineHeader.OriginalSequence), String(seq));
    assert.deepEqual(Buffer.from(mine[0]!.data), Buffer.from(NatsBinding.binary(task).data), "the original bytes");
    assert.equal(entries.length, 3, "the two forged entries stay what they are, beside it");
  });

  test("output - the researcher publishes the planner's derived output id first: the planner's task still reaches research.v1", async () => {
    await using mesh = await startOperatedMesh();
    const request = event(mesh, "gateway", "report.requested", REQUEST_SCHEMA, { topic: "Heat pumps", requester: "analyst@example.com", questions: ["How cold is too cold?"] });
    const outputId = deriveEventId(request, "planner", 0);
    // The researcher may publish on mesh.cap.verify.v1, in the same stream (MESH_CAP) as the planner's output.
    await preempt(await mesh.as("researcher"), "mesh.cap.verify.v1", [outputId, `planner/output/${outputId}`]);

    await using planner = await startAgent(await mesh.as("planner"), createPlannerDefinition(), { trust: mesh.trust, signingKey: keyOf(mesh, "planner"), log: quiet });
    await publish(await mesh.as("gateway"), "mesh.cap.plan.v1", request);
    await waitFor(() => planner.stats().processed === 1, { what: "the planner to handle the request" });

    const tasks = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.research.v1");
    assert.deepEqual(tasks.map((m) => m.headers?.get("ce-id")), [outputId], "the task is stored under its derived id");
    assert.equal(mesh.trust.verify(NatsBinding.toEvent(tasks[0]!), { receivedAt: "now" }).entry.principal, "planner");
  });

  test("grant - the planner publishes the coordinator's forward id first: granted work still reaches the critical capability", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], { capabilities: { "publish.v1": { critical: true, leaseTtlMs: 60_000 } } });
    const requestId = `req-${uuidv7()}`;
    const report = event(mesh, "reporter", "report.published", REPORT_SCHEMA,
      { requestId, title: "Report: test", complete: true, findingsCount: 1, sections: [{ heading: "Q", body: "A" }] }, { correlationid: requestId });
    // The planner may publish on mesh.cap.research.v1, in the same stream as the critical mesh.cap.publish.v1.
    await preempt(await mesh.as("planner"), "mesh.cap.research.v1", [`grant/${report.id}`, `coordinator/grant/${report.id}`]);

    await using publisher = await startAgent(await mesh.as("publisher"), createPublisherDefinition({ config: { outboxDir: `${mesh.dataDir}/outbox` } }), {
      trust: mesh.trust, signingKey: keyOf(mesh, "publisher"), log: quiet,
    });
    await publish(await mesh.as("reporter"), "mesh.handoff.publish.v1", report);
    await waitFor(() => publisher.stats().processed === 1, { what: "the granted work to run" });
    const forwarded = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.publish.v1");
    assert.deepEqual(forwarded.map((m) => m.headers?.get("ce-id")), [report.id]);
  });

  test("confirmation - a duplicate ack for an id someone else used is CW_ERR_MSG_ID_TAKEN, never success; one's own retry is confirmed", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, []);
    const { deps } = coordinator;
    const gateway = await mesh.as("gateway");
    const request = event(mesh, "gateway", "report.requested", REQUEST_SCHEMA, { topic: "t", requester: "a@example.com" });
    const seq = await publish(gateway, "mesh.cap.plan.v1", request);
    const { headers, data } = NatsBinding.binary(request);
    const original = { subject: "mesh.cap.plan.v1", stream: "MESH_CAP", seq, consumer: "", headers, data };
    const note = { reason: "terminated" as const, detail: "test", detectedBy: "coordinator" };

    // The id leaked (as if predictable): the planner stores junk under it first.
    await preempt(await mesh.as("planner"), "mesh.quarantine.terminated.plan", [quarantineMsgId(original, "coordinator", deps.key)]);
    await assert.rejects(publishQuarantineCopy(deps.js, original, "mesh.quarantine.terminated.plan", note, deps),
      (err: unknown) => isCausewayError(err) && err.code === ErrorCode.MsgIdTaken);

    // Its own copy, published twice: the second is a duplicate of its own and counts as stored.
    const other = { ...original, seq: seq + 1000 };
    const first = await publishQuarantineCopy(deps.js, other, "mesh.quarantine.terminated.plan", note, deps);
    const again = await publishQuarantineCopy(deps.js, other, "mesh.quarantine.terminated.plan", note, deps);
    assert.deepEqual([first.duplicate, again.duplicate, again.seq], [false, true, first.seq]);
  });
});
