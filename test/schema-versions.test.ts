// Schema evolution on a real server (issue 13, item 4): a consumer reads its declared version and older minors of
// its major, each event validated against its own dataschema; another major or a newer minor is quarantined as
// unsupported_version; an agent emits two versions of a type side by side; the coordinator's release pre-check
// asks the target consumer's declaration with the agents' own rule. Fixture schemas: research.task.created 1.1.0
// (a minor: optional `priority`) and 2.0.0 (a major: `query` became `question`), in test/fixtures/schemas.
import assert from "node:assert/strict";
import { join } from "node:path";
import { describe, test } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ACCEPTS_METADATA, ErrorCode, NatsBinding, QuarantineHeader, createEvent, createLogger, createSchemaRegistry, defaultSchemaDir, isCausewayError, newTraceparent,
  readSeed, signEvent, signingKeyFromNkeySeed, startAgent, uuidv7, type AgentDefinition, type AgentOptions, type CloudEvent, type Emit, type SigningKey,
} from "../services/kit/index.ts";
import { createQuarantineOps } from "../services/coordinator/quarantine-ops.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startCoordinator } from "./coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { REQUEST_SCHEMA, RESEARCH, header, recordingResearcher, startMesh } from "./mesh-fixture.ts";
import { repoRoot, waitFor } from "./harness/index.ts";

const TASK = "https://causeway.dev/schemas/research.task.created";
const [V100, V110, V200] = [`${TASK}/1.0.0`, `${TASK}/1.1.0`, `${TASK}/2.0.0`];
/** What every process of these tests loads: the repository's schemas and the fixtures' 1.1.0 and 2.0.0. */
const schemas = createSchemaRegistry({ dir: [defaultSchemaDir, join(repoRoot, "test", "fixtures", "schemas")] });
const log = createLogger({ name: "schema-versions", level: process.env.LOG_LEVEL ?? "silent" });
const fastConsumer: AgentOptions["consumer"] = { ack_wait: 300_000_000, backoff: [300_000_000], max_deliver: 2 };

const taskV1 = (query: string, extra: Record<string, unknown> = {}) => ({ requestId: "req-1", taskIndex: 0, totalTasks: 1, query, ...extra });
const taskV2 = (text: string) => ({ requestId: "req-1", taskIndex: 0, totalTasks: 1, question: { text, language: "en" } });

/** A planner-signed research.task.created of `dataschema`. */
function task(key: SigningKey, dataschema: string, data: unknown): CloudEvent {
  return signEvent(createEvent({
    id: uuidv7(), source: "causeway://planner", type: "research.task.created", time: new Date().toISOString(), datacontenttype: "application/json",
    dataschema, extensions: { traceparent: newTraceparent() }, data: JSON.stringify(data),
  }), key);
}

/** The test researcher, written against `accepts` (a research.task.created version); `seen` records what its handler got. */
function researcher(accepts: string): AgentDefinition & { handled: string[]; seen: { dataschema: string | undefined; data: unknown }[] } {
  const base = recordingResearcher();
  const answer = base.handler;
  const seen: { dataschema: string | undefined; data: unknown }[] = [];
  return Object.assign(base, {
    version: `0.0.1-test+${accepts.split("/").pop()}`, accepts: { "research.task.created": accepts }, seen,
    handler: (input: Parameters<AgentDefinition["handler"]>[0], ctx: Parameters<AgentDefinition["handler"]>[1]) => {
      seen.push({ dataschema: input.event.dataschema, data: input.data });
      return answer(input, ctx);
    },
  });
}

describe("schema versions in the agent pipeline", () => {
  test("versions - a consumer of 1.1.0 handles 1.0.0 and 1.1.0 events, each validated against its own dataschema", async () => {
    await using mesh = await startMesh();
    const def = researcher(V110);
    await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.researcher!, schemas, consumer: fastConsumer, log });
    const old = task(mesh.keys.planner!, V100, taskV1("in flight since before the minor"));
    const current = task(mesh.keys.planner!, V110, taskV1("with a priority", { priority: "high" }));
    // A 1.0.0 event carrying 1.1.0's property is not a 1.0.0 event: validated against its own schema, it fails.
    const mislabelled = task(mesh.keys.planner!, V100, taskV1("mislabelled", { priority: "high" }));
    for (const e of [old, current, mislabelled]) await mesh.publish(RESEARCH, e);
    await waitFor(() => agent.stats().processed === 2 && agent.stats().quarantined === 1, { what: "two handled, one quarantined" });
    assert.deepEqual(def.handled.sort(), [old.id, current.id].sort());
    assert.deepEqual(def.seen.map((s) => s.dataschema).sort(), [V100, V110]);
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
    assert.equal(header(q!, QuarantineHeader.Reason), "schema_violation");
    assert.match(header(q!, QuarantineHeader.Detail)!, /does not match https:\/\/causeway\.dev\/schemas\/research\.task\.created\/1\.0\.0: \/priority/);
    assert.equal(NatsBinding.toEvent(q!).id, mislabelled.id);
  });

  test("versions - another major or a newer minor than the consumer knows is quarantined as unsupported_version, never handled", async () => {
    await using mesh = await startMesh();
    const def = researcher(V100);
    await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.researcher!, schemas, consumer: fastConsumer, log });
    const newerMinor = task(mesh.keys.planner!, V110, taskV1("q", { priority: "low" }));
    const otherMajor = task(mesh.keys.planner!, V200, taskV2("q"));
    await mesh.publish(RESEARCH, newerMinor);
    await mesh.publish(RESEARCH, otherMajor);
    await waitFor(() => agent.stats().quarantined === 2, { what: "two quarantines" });
    assert.deepEqual(def.handled, []);
    const entries = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
    assert.deepEqual(entries.map((m) => m.subject), ["mesh.quarantine.unsupported_version.research", "mesh.quarantine.unsupported_version.research"]);
    for (const m of entries) {
      assert.equal(header(m, QuarantineHeader.Code), ErrorCode.UnsupportedVersion);
      assert.match(header(m, QuarantineHeader.Detail)!, /is not a version it reads: research\.v1 accepts research\.task\.created https:\/\/causeway\.dev\/schemas\/research\.task\.created 1\.0\.0 to 1\.0\.x$/);
    }
    assert.deepEqual(entries.map((m) => NatsBinding.toEvent(m).id), [newerMinor.id, otherMajor.id]);
    // What the agents on the durable accept is written on it, for the release pre-check.
    const declared = (await mesh.jsm.consumers.info("MESH_CAP", "cap-research-v1")).config.metadata?.[ACCEPTS_METADATA];
    assert.deepEqual(JSON.parse(declared!), { accepts: { "research.task.created": V100 }, by: "researcher", version: "0.0.1-test+1.0.0" });
  });

  test("versions - an agent emits v1 and v2 of a type side by side, each validated against the version it chose", async () => {
    await using mesh = await startMesh();
    let broken = false;
    const def: AgentDefinition = {
      principal: "planner", capability: "plan", major: 1, version: "0.0.1-test", description: "migrating planner",
      accepts: { "report.requested": REQUEST_SCHEMA }, emits: { "research.task.created": [V110, V200] },
      handler(_input, ctx): Emit[] {
        if (broken) return [{ to: ctx.subjects.capability("research", 2), type: "research.task.created", data: taskV1("v1 data on the v2 subject") }];
        return [
          // No dataschema: the newest declared version with the subject's major.
          { to: ctx.subjects.capability("research", 1), type: "research.task.created", data: taskV1("for the 1.x consumers") },
          { to: ctx.subjects.capability("research", 2), type: "research.task.created", data: taskV2("for the 2.x consumers") },
          // Named: this one says it is 1.1.0 wherever it goes.
          { to: ctx.subjects.event("research.task.created", 1), type: "research.task.created", dataschema: V110, data: taskV1("a fact", { priority: "low" }) },
        ];
      },
    };
    await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.planner!, schemas, consumer: { ...fastConsumer, max_deliver: 1 }, log });
    await mesh.publish("mesh.cap.plan.v1", mesh.event("gateway"));
    await waitFor(() => agent.stats().processed === 1, { what: "the request to be planned" });
    const stored = async (subject: string) => (await mesh.messages(subject.startsWith("mesh.evt") ? "MESH_EVT" : "MESH_CAP", subject)).map((m) => mesh.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" }).event);
    const byVersion = [[RESEARCH, V110], ["mesh.cap.research.v2", V200], ["mesh.evt.research.task.created.v1", V110]] as const;
    for (const [subject, dataschema] of byVersion) {
      const [e, ...more] = await stored(subject);
      assert.equal(more.length, 0, subject);
      assert.equal(e!.dataschema, dataschema, subject);
      schemas.validate(dataschema, JSON.parse(Buffer.from(e!.data).toString("utf8")));
    }

    // Data that is not the chosen version's is refused before anything is published.
    broken = true;
    await mesh.publish("mesh.cap.plan.v1", mesh.event("gateway"));
    await waitFor(() => agent.stats().quarantined === 1, { what: "the refused output's input to be quarantined" });
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
    assert.equal(header(q!, QuarantineHeader.Code), ErrorCode.SchemaViolation);
    assert.match(header(q!, QuarantineHeader.Detail)!, /research\.task\.created\/2\.0\.0/);
    assert.equal((await stored("mesh.cap.research.v2")).length, 1, "nothing more on the v2 subject");
  });
});

describe("the release pre-check asks the target consumer", () => {
  const keyOf = (mesh: OperatedMesh, principal: string) => signingKeyFromNkeySeed(readSeed(principal, mesh.dataDir));
  const publish = async (nc: NatsConnection, subject: string, e: CloudEvent) => {
    const { headers, data } = NatsBinding.binary(e);
    return (await jetstream(nc).publish(subject, data, { headers, msgID: e.id })).seq;
  };

  test("versions - a release of a version the consumer does not read is refused; once it reads it, the release is handled", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, []);
    const ops = createQuarantineOps({ ...coordinator.deps, schemas });
    const agentOpts = async () => ({ trust: mesh.trust, signingKey: keyOf(mesh, "researcher"), schemas, consumer: fastConsumer, log });
    const oldResearcher = researcher(V100);
    const first = await startAgent(await mesh.as("researcher"), oldResearcher, await agentOpts());
    const input = task(keyOf(mesh, "planner"), V110, taskV1("sent before the consumer was upgraded", { priority: "high" }));
    await publish(await mesh.as("planner"), RESEARCH, input);
    await waitFor(() => first.stats().quarantined === 1, { what: "the 1.1.0 task to be quarantined" });
    const [entry] = (await ops.list({})).entries;
    assert.equal(entry!.reason, "unsupported_version");

    // The consumer on cap-research-v1 reads 1.0.x only: the pre-check says so, and a release is refused.
    const refusedShow = (await ops.show(entry!.seq)).release;
    assert.deepEqual(refusedShow.ok ? undefined : refusedShow.code, ErrorCode.UnsupportedVersion);
    assert.match(refusedShow.ok ? "" : refusedShow.message, /research\.v1 \(researcher 0\.0\.1-test\+1\.0\.0, consumer cap-research-v1\) accepts research\.task\.created .* 1\.0\.0 to 1\.0\.x/);
    await assert.rejects(ops.release({ seq: entry!.seq, operator: "alice" }), (err: unknown) => {
      assert.ok(isCausewayError(err, ErrorCode.ReleaseRefused), String(err));
      assert.equal((err.details?.check as { code?: string }).code, ErrorCode.UnsupportedVersion);
      return true;
    });
    assert.equal((await readMessages(mesh.operator, "MESH_CAP", RESEARCH)).length, 1, "nothing republished");

    // The consumer is upgraded to 1.1.0: its agents declare it on the durable, and the release goes through.
    await first.stop();
    const newResearcher = researcher(V110);
    await using _second = await startAgent(await mesh.as("researcher"), newResearcher, await agentOpts());
    assert.deepEqual((await ops.show(entry!.seq)).release, { ok: true });
    await ops.release({ seq: entry!.seq, operator: "alice" });
    await waitFor(() => newResearcher.handled.includes(input.id), { what: "the released task to be handled" });
    assert.deepEqual(newResearcher.seen.map((s) => s.dataschema), [V110]);
  });

  test("versions - a release to a capability whose consumer declares nothing is not promised", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, []);
    const ops = createQuarantineOps({ ...coordinator.deps, schemas });
    // No verifier has started: nothing says which versions verify.v1 reads. (An entry under the verifier's own
    // quarantine subject, as a verifier that refused the finding would have written it.)
    const finding = signEvent(createEvent({
      id: uuidv7(), source: "causeway://researcher", type: "research.finding.created", time: new Date().toISOString(), datacontenttype: "application/json",
      dataschema: "https://causeway.dev/schemas/research.finding.created/1.0.0", extensions: { traceparent: newTraceparent() },
      data: JSON.stringify({ taskId: "t", claim: "c", evidence: [{ source: "urn:causeway:test", quote: "q" }], confidence: 0.9 }),
    }), keyOf(mesh, "researcher"));
    const { headers, data } = NatsBinding.binary(finding);
    for (const [k, v] of Object.entries({
      [QuarantineHeader.Reason]: "max_deliveries", [QuarantineHeader.Detail]: "handler failed", [QuarantineHeader.DetectedBy]: "verifier",
      [QuarantineHeader.DetectedAt]: new Date().toISOString(), [QuarantineHeader.OriginalSubject]: "mesh.cap.verify.v1", [QuarantineHeader.OriginalStream]: "MESH_CAP",
    })) headers.set(k, v);
    const seq = (await jetstream(await mesh.as("verifier")).publish("mesh.quarantine.max_deliveries.verify", data, { headers })).seq;
    const release = (await ops.show(seq)).release;
    assert.equal(release.ok ? undefined : release.code, ErrorCode.ReleaseTarget);
    assert.match(release.ok ? "" : release.message, /consumer cap-verify-v1 of verify\.v1 declares no accepted versions/);
  });
});
