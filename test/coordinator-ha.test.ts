// Two coordinator processes, one SIGKILLed while handoffs are in flight: every critical event is requested
// for approval once, granted once, and published once.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { NatsBinding, createEvent, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7, type CloudEvent } from "../services/kit/index.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startOperatedMesh } from "./e2e-fixture.ts";
import { repoRoot, waitFor } from "./harness/index.ts";

const run = promisify(execFile);
const REPORT_SCHEMA = "https://causeway.dev/schemas/report.published/1.0.0";

test("coordinator - two replicas, one SIGKILLed mid-handoff: each event is requested, granted and published once", async () => {
  await using mesh = await startOperatedMesh();
  // Redeliver a dead replica's handoffs after 1 s rather than the production 30 s.
  await (await jetstreamManager(mesh.operator)).consumers.update("MESH_HANDOFF", "coordinator-handoff", { ack_wait: 1_000_000_000, backoff: [1_000_000_000, 1_000_000_000] });
  const outbox = join(mesh.dataDir, "outbox");
  const a = mesh.spawn("services/coordinator/main.ts");
  const b = mesh.spawn("services/coordinator/main.ts");
  mesh.spawn("services/agents/publisher/main.ts", { CAUSEWAY_OUTBOX_DIR: outbox });
  const reporter = await mesh.as("reporter");
  const key = signingKeyFromNkeySeed(readSeed("reporter", mesh.dataDir));
  const events: CloudEvent[] = [];
  for (let i = 0; i < 12; i++) {
    const requestId = `req-${i}`;
    const e = signEvent(createEvent({
      id: uuidv7(), source: "causeway://reporter", type: "report.published", time: new Date().toISOString(),
      datacontenttype: "application/json", dataschema: REPORT_SCHEMA, extensions: { traceparent: newTraceparent(), correlationid: requestId },
      data: JSON.stringify({ requestId, title: `Report ${i}`, complete: true, findingsCount: 1, sections: [{ heading: "Q", body: "A" }] }),
    }), key);
    const { headers, data } = NatsBinding.binary(e);
    await jetstream(reporter).publish("mesh.handoff.publish.v1", data, { headers, msgID: e.id });
    events.push(e);
    if (i === 3) a.child.kill("SIGKILL"); // in the middle of the stream of handoffs
  }
  assert.equal(await a.exited, null);
  const requests = await waitFor(async () => {
    const r = await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.approval_requested");
    return r.length >= events.length && r;
  }, { what: "an approval request per event", timeoutMs: 20_000 });
  assert.equal(requests.length, events.length, "one request per event, none duplicated");

  for (const e of events) {
    const res = await run(join(repoRoot, "node_modules", ".bin", "node"), [join(repoRoot, "services", "cli", "main.ts"), "approve", e.id, "--as", "approver-alice", "--server", mesh.server.url], { env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir } });
    assert.match(res.stdout, /granted and forwarded/);
  }
  await waitFor(async () => (await readMessages(mesh.operator, "MESH_EVT", "mesh.evt.report.released.v1")).length >= events.length, { what: "every report released", timeoutMs: 20_000 });
  assert.equal((await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.grant")).length, events.length, "one grant per event");
  assert.equal((await readMessages(mesh.operator, "MESH_EVT", "mesh.evt.report.released.v1")).length, events.length, "one publication per event");
  assert.equal(readdirSync(outbox).length, events.length);
  assert.equal(b.child.exitCode, null, "the surviving replica keeps running");
});
