// `causeway event send` on a mesh as operators run it (the rendered least-privilege accounts, an agent as a process):
// a signed event goes where its principal addresses it and is followed to its end — processed, quarantined with the
// reason, still pending — and a publish the server refuses is reported as the permission violation it is (which
// `nats req` hides: it exits 0 and prints nothing).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import {
  ErrorCode, NatsBinding, StreamName, capabilityDurable, defaultLayout, readAcceptsDeclaration,
} from "../services/kit/index.ts";
import { readMessages } from "../services/cli/flow.ts";
import { agentScript, runCli, startOperatedMesh, type CliRun, type OperatedMesh } from "./e2e-fixture.ts";
import { runNats, waitFor } from "./harness/index.ts";

const layout = defaultLayout();
const { principals, subjects } = layout;
// The researcher's capability and a principal that addresses it (the planner), from infra/principals.json.
const researcher = principals.principals.researcher!;
const [researchRef] = researcher.serves;
const research = principals.capabilities[researchRef!]!;
const addresser = Object.values(principals.principals).find((p) => p.addresses.includes(researchRef!))!;
// A capability the researcher does not address: publishing there is refused by the server.
const elsewhere = Object.values(principals.capabilities).find((c) => !c.critical && !researcher.addresses.includes(c.ref) && !researcher.serves.includes(c.ref))!;

const TASK = { requestId: "req-send-1", taskIndex: 0, totalTasks: 1, query: "Which battery chemistries lead grid-scale storage?" };
const FINDING = { taskId: "t-1", claim: "LFP leads", evidence: [{ source: "urn:causeway:test", quote: "LFP leads" }], confidence: 0.9 };

describe("event send", () => {
  let mesh: OperatedMesh;
  const send = (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliRun> =>
    runCli(["event", "send", ...args], { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir, NATS_URL: mesh.server.url, LOG_LEVEL: "warn", ...env });

  before(async () => {
    mesh = await startOperatedMesh();
    mesh.spawn(agentScript("researcher"));
    // Running and declared: it writes what it accepts into its durable when it starts.
    const jsm = await jetstreamManager(mesh.operator);
    await waitFor(() => readAcceptsDeclaration(jsm, StreamName.Cap, capabilityDurable(research.name, research.major)), { what: "the researcher to declare its accepts", timeoutMs: 20_000 });
  });
  after(() => mesh?.[Symbol.asyncDispose]());

  test("event send - work goes to the capability its principal addresses, signed by it, and is followed until processed", async () => {
    const r = await send(["--as", addresser.name, "--type", "research.task.created", "--data", JSON.stringify(TASK)]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const sent = new RegExp(`✓ sent research\\.task\\.created (\\S+) as ${addresser.name} to ${subjects.capability(research.name, research.major).replaceAll(".", "\\.")} — stream MESH_CAP, seq (\\d+)`).exec(r.stdout);
    assert.ok(sent, r.stdout);
    assert.match(r.stdout, /✓ processed: 1 event\(s\) caused by it\n {4}research\.finding\.created → \S+ \(MESH_CAP seq \d+\) from researcher/);
    const [stored] = (await readMessages(mesh.operator, StreamName.Cap, subjects.capability(research.name, research.major))).filter((m) => m.seq === Number(sent[2]));
    const { event, entry } = mesh.trust.verify(NatsBinding.toEvent(stored!), { receivedAt: "now" });
    assert.deepEqual([event.id, entry.principal, event.source], [sent[1], addresser.name, `causeway://${addresser.name}`]);
  });

  test("event send - a type the principal may not emit is quarantined, and the reason is printed", async () => {
    const r = await send(["--as", addresser.name, "--type", "research.finding.created", "--data", JSON.stringify(FINDING), "--to", subjects.capability(research.name, research.major)]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, new RegExp(`! ${addresser.name} may not emit research\\.finding\\.created`));
    assert.match(r.stdout, /✗ quarantined by researcher: unauthorized_emitter — .*may not emit "research\.finding\.created"/);
    assert.match(r.stdout, /MESH_QUARANTINE seq \d+: causeway quarantine show \d+/);
  });

  test("event send - a subject its principal may not publish on is reported as a permission violation; nats req would exit 0", async () => {
    const to = subjects.capability(elsewhere.name, elsewhere.major);
    const before = (await readMessages(mesh.operator, StreamName.Cap, to)).length;
    const r = await send(["--as", "researcher", "--type", "research.finding.created", "--data", JSON.stringify(FINDING), "--to", to]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`Permissions Violation for Publish to "${to.replaceAll(".", "\\.")}".*nothing was sent \\(${ErrorCode.PermissionDenied}\\)`));
    assert.equal((await readMessages(mesh.operator, StreamName.Cap, to)).length, before, "nothing stored");
    // What the docs warn about: the same refusal through `nats req` is silent.
    const req = await runNats(["--inbox-prefix", "_INBOX_researcher", "--timeout", "1s", "req", to, "{}"], { server: mesh.server.url, nkey: join(mesh.dataDir, "keys", "researcher.nk") });
    assert.deepEqual([req.code, req.stdout], [0, ""]);
  });

  test("event send - data that does not match the schema is refused before anything is sent", async () => {
    const r = await send(["--as", addresser.name, "--type", "research.task.created", "--data", JSON.stringify({ ...TASK, query: "" })]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`data does not match https://causeway\\.dev/schemas/research\\.task\\.created/\\S+: /query: .*; nothing was sent \\(${ErrorCode.SchemaViolation}\\)`));
    assert.doesNotMatch(r.stdout, /sent/);
  });

  test("event send - a fact nobody consumes is still pending when the wait ends", async () => {
    const type = "report.published";
    const producer = Object.values(principals.principals).find((p) => p.emits.includes(type) && p.publish.some((s) => s.startsWith(`${principals.prefix}.evt.`)))!;
    const data = { requestId: "req-send-2", title: "t", sections: [{ heading: "h", body: "b" }], findingsCount: 1, complete: true };
    const r = await send(["--as", producer.name, "--type", type, "--data", JSON.stringify(data), "--to", subjects.event(type, 1), "--wait", "1"]);
    assert.equal(r.code, 3, r.stdout + r.stderr);
    assert.match(r.stdout, /… still pending after 1 s: no agent consumes its subject/);
  });

  test("event send - without the principal's seed it refuses: development meshes only", async () => {
    const empty = mkdtempSync(join(tmpdir(), "causeway-noseed-"));
    try {
      const r = await send(["--as", addresser.name, "--type", "research.task.created", "--data", JSON.stringify(TASK)], { CAUSEWAY_DATA_DIR: empty });
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`event send signs as ${addresser.name} with ${addresser.name}'s own seed, and there is none at .*: it is for development meshes.*\\(${ErrorCode.SeedMissing}\\)`));
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
