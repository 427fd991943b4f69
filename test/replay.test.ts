// Issue 15, item 7: shadow replay on a real server. Researcher 1.0.0 handles tasks of two flows as the mesh runs
// it; then `causeway replay` re-runs them through 1.1.0 (a different implementation: its findings cite more
// evidence with a lower confidence) and through 1.0.0 itself. The candidate's differences are printed field by
// field, identical versions show "same", a tampered recorded input is refused and never run, and nothing is
// published or written: every stream's (and so every KV bucket's) message count and last sequence are unchanged.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import {
  NatsBinding, createEvent, createLogger, defaultLayout, newTraceparent, openTrustStore, principalSource, readSeed, signEvent, signingKeyFromNkeySeed, startAgent, uuidv7,
  type CloudEvent,
} from "../services/kit/index.ts";
import { ResearcherSchema, createResearcherDefinition } from "../services/agents/researcher/definition.ts";
import { readMessages } from "../services/cli/flow.ts";
import type { ReplayReport } from "../services/cli/replay.ts";
import { runCli, startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { waitFor } from "./harness/index.ts";

const { subjects } = defaultLayout();

/**
 * Every stream's last sequence: KV buckets are streams too (KV_<bucket>). A write anywhere moves it; the message
 * count is not compared, since a bucket with a max age (the heartbeats') loses messages by itself.
 */
async function streamState(mesh: OperatedMesh): Promise<Record<string, number>> {
  const state: Record<string, number> = {};
  for await (const s of (await jetstreamManager(mesh.operator)).streams.list()) state[s.config.name] = s.state.last_seq;
  return state;
}

async function replayCli(mesh: OperatedMesh, ...args: string[]) {
  return runCli(["replay", "research.v1", ...args, "--server", mesh.server.url], { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir, LOG_LEVEL: "warn" });
}

describe("shadow replay", () => {
  test("replay - a candidate's changed fields are shown per output, the same version shows same, a tampered input is refused, and nothing is published", async () => {
    await using mesh = await startOperatedMesh();
    // Researcher 1.0.0, the stable version, as its principal.
    const rnc = await mesh.as("researcher");
    const rtrust = await openTrustStore(rnc);
    const agent = await startAgent(rnc, createResearcherDefinition(), {
      trust: rtrust, signingKey: signingKeyFromNkeySeed(readSeed("researcher", mesh.dataDir)), log: createLogger({ name: "researcher", level: "silent" }),
    });
    // Tasks as the planner sends them: signed with its key, on research.v1.
    const planner = await mesh.as("planner");
    const plannerKey = signingKeyFromNkeySeed(readSeed("planner", mesh.dataDir));
    const task = (flow: string, taskIndex: number, query: string): CloudEvent => signEvent(createEvent({
      id: uuidv7(), source: principalSource("planner"), type: "research.task.created", time: new Date().toISOString(), datacontenttype: "application/json",
      dataschema: ResearcherSchema["research.task.created"], data: JSON.stringify({ requestId: flow, taskIndex, totalTasks: 2, query }),
      extensions: { correlationid: flow, traceparent: newTraceparent() },
    }), plannerKey);
    const send = async (event: CloudEvent, tamper = false) => {
      const { headers, data } = NatsBinding.binary(event);
      // Tampered: the signed query changed after signing, as an attacker with write access to the stream would.
      const bytes = tamper ? new TextEncoder().encode(new TextDecoder().decode(data).replace("chemistries", "cheMistries")) : data;
      await jetstream(planner).publish(subjects.capability("research", 1), bytes, { headers, msgID: event.id });
    };
    const clean = "flow-replay-clean", forged = "flow-replay-forged";
    const chemistry = task(clean, 0, "Which battery chemistries lead today?");
    const rumor = task(clean, 1, "Is the rumor about sodium-ion batteries true?");
    const tampered = task(forged, 0, "Which battery chemistries lead today?");
    await send(chemistry);
    await send(rumor);
    await send(tampered, true);
    // The stable version's two findings, and the tampered input in quarantine.
    await waitFor(async () => (await readMessages(mesh.operator, "MESH_CAP", subjects.capability("verify", 1))).length === 2, { what: "the two findings of 1.0.0" });
    await waitFor(async () => (await readMessages(mesh.operator, "MESH_QUARANTINE")).length === 1, { what: "the tampered input quarantined" });
    await agent.stop();
    await rtrust.close();
    const before = await streamState(mesh);

    // 1.1.0 against what 1.0.0 emitted: the chemistry finding differs in its evidence and confidence, the rumour's is the same.
    const candidate = await replayCli(mesh, "--version", "1.1.0", "--flows", clean, "--json");
    assert.equal(candidate.code, 1, candidate.stderr);
    const report = JSON.parse(candidate.stdout) as ReplayReport;
    assert.equal(report.candidate.version, "1.1.0");
    assert.equal(report.candidate.service, "researcher@1.1.0");
    assert.deepEqual(report.summary, { replayed: 2, same: 1, differs: 1, refused: 0, unrecorded: 0, undecodable: 0, truncated: false });
    const [first, second] = report.inputs;
    assert.deepEqual([first!.input.id, first!.result, second!.input.id, second!.result], [chemistry.id, "differs", rumor.id, "same"]);
    assert.equal(first!.recorded!.version, "1.0.0");
    const at = first!.differences.map((d) => d.at);
    assert.ok(at.some((a) => a.endsWith("data.confidence")), at.join("\n"));
    assert.ok(at.some((a) => a.endsWith("data.evidence[1]")), at.join("\n"));
    assert.ok(!at.some((a) => a.includes("data.claim") || a.includes("extensions")), `only the evidence and confidence differ:\n${at.join("\n")}`);
    // The candidate's output is the same output (the id derives from the input and its index), with another content.
    assert.equal(first!.candidate!.kind, "outputs");
    assert.equal(first!.recorded!.kind, "outputs");
    if (first!.candidate!.kind === "outputs" && first!.recorded!.kind === "outputs") {
      assert.deepEqual(first!.candidate!.outputs.map((o) => o.id), first!.recorded!.outputs.map((o) => o.id));
      assert.equal(first!.candidate!.outputs[0]!.to, subjects.capability("verify", 1));
    }

    // The text report names the fields.
    const text = await replayCli(mesh, "--version", "1.1.0", "--flows", clean);
    assert.equal(text.code, 1, text.stderr);
    assert.match(text.stdout, new RegExp(`^✗ differs +research\\.task\\.created ${chemistry.id} +flow ${clean}`, "m"));
    assert.match(text.stdout, /^ +output \S+ \(research\.finding\.created\) data\.confidence: 0\.88 → 0\.85$/m);
    assert.match(text.stdout, /^2 inputs replayed: 1 same, 1 differs, 0 refused; nothing was published$/m);

    // The stable version replayed against itself: the same, exit 0.
    const itself = await replayCli(mesh, "--version", "1.0.0", "--flows", clean, "--json");
    assert.equal(itself.code, 0, itself.stdout + itself.stderr);
    assert.deepEqual((JSON.parse(itself.stdout) as ReplayReport).inputs.map((i) => i.result), ["same", "same"]);

    // The tampered input is refused, never run: no candidate outcome at all.
    const refused = await replayCli(mesh, "--version", "1.1.0", "--since", "1h", "--json");
    assert.equal(refused.code, 1);
    const all = JSON.parse(refused.stdout) as ReplayReport;
    assert.equal(all.summary.replayed, 3);
    const bad = all.inputs.find((i) => i.input.id === tampered.id)!;
    assert.equal(bad.result, "refused");
    assert.equal(bad.candidate, undefined);
    assert.match(bad.refused!.code, /^CW_ERR_(DIGEST|CORE_DIGEST_MISMATCH|BAD_SIGNATURE)/);

    // Nothing was published, nothing written: every stream and bucket as before.
    assert.deepEqual(await streamState(mesh), before);
  });

  test("replay - usage: a version nobody runs, no selection, an unparsable --since are usage errors (exit 2)", async () => {
    await using mesh = await startOperatedMesh();
    const unknown = await replayCli(mesh, "--version", "9.9.9", "--since", "1h");
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /no version 9\.9\.9 of research\.v1: researcher runs 1\.0\.0 .*researcher@1\.1\.0 .*CW_ERR_UNKNOWN_VERSION/);
    assert.equal((await replayCli(mesh, "--version", "1.1.0")).code, 2);
    assert.match((await replayCli(mesh, "--version", "1.1.0", "--since", "yesterday")).stderr, /--since yesterday is neither a duration/);
    const critical = await runCli(["replay", "publish.v1", "--version", "1.0.0", "--since", "1h", "--server", mesh.server.url], { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir });
    assert.equal(critical.code, 1);
    assert.match(critical.stderr, /publish\.v1 is critical.*CW_ERR_REPLAY_UNSUPPORTED/);
  });
});
