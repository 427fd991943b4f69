import assert from "node:assert/strict";
import { test } from "node:test";
import { createPlannerDefinition } from "../../services/agents/planner/definition.ts";

/** The fixture request's request id (the planner tags its id with its source). */
const REQUEST_ID = flowIdOf({ source: "causeway://gateway", id: "req-0001" });
import { loadReporterConfig } from "../../services/agents/reporter/config.ts";
import { createReporterDefinition, deadlineOf, reporterDeadlineSweep, startDeadlineSweep } from "../../services/agents/reporter/definition.ts";
import { createMemoryJoinStore, type JoinState } from "../../services/agents/reporter/joins.ts";
import { buildReport, reportKey, type ReportPublished } from "../../services/agents/reporter/report.ts";
import { createResearcherDefinition } from "../../services/agents/researcher/definition.ts";
import { createVerifierDefinition } from "../../services/agents/verifier/definition.ts";
import { dataOf, fakeContext, inputOf, outputs, requestEvent, run, schemas, subjects } from "./fixtures.ts";
import { ConfigError, createEvent, flowIdOf, type Cause, type CloudEvent, type Emit } from "../../services/kit/index.ts";

const T0 = Date.parse("2026-03-01T10:00:00.000Z");

/** The verified findings of a request, through planner, researcher and verifier; quarantined ones are left out. */
async function verifiedFor(data: Record<string, unknown>, id = "req-0001"): Promise<CloudEvent[]> {
  const tasks = (await run(createPlannerDefinition(), requestEvent(data, { id }))).events;
  const out: CloudEvent[] = [];
  for (const task of tasks) {
    const finding = (await run(createResearcherDefinition(), task)).events[0]!;
    const verified = await run(createVerifierDefinition(), finding);
    out.push(...verified.events);
  }
  return out;
}

/** A fake running agent: records what the sweep emits, through the same output checks as handler outputs. */
function fakeAgent() {
  const emitted: { cause: Cause; emits: readonly Emit[]; events: CloudEvent[] }[] = [];
  const def = createReporterDefinition({ store: createMemoryJoinStore() });
  return {
    emitted,
    emit(cause: Cause, emits: readonly Emit[]) {
      const causeEvent = createEvent({ id: cause.id, source: cause.source, type: "causeway.cause", extensions: { correlationid: cause.correlationid } });
      emitted.push({ cause, emits, events: outputs(def, causeEvent, emits) });
      return Promise.resolve();
    },
  };
}

const request = { topic: "Grid-scale battery storage", requester: "r", questions: ["Which chemistries lead?", "What does a MWh cost?", "What are the risks of LFP cells?"] };

test("reporter - partial joins emit nothing", async () => {
  const verified = await verifiedFor(request);
  const def = createReporterDefinition({ store: createMemoryJoinStore(), now: () => T0 });
  assert.equal((await run(def, verified[0]!)).emits.length, 0);
  assert.equal((await run(def, verified[1]!)).emits.length, 0);
});

test("reporter - the Nth finding emits one complete report with the stable key", async () => {
  const verified = await verifiedFor(request);
  const def = createReporterDefinition({ store: createMemoryJoinStore(), now: () => T0 });
  await run(def, verified[2]!);
  await run(def, verified[0]!);
  const { emits, events } = await run(def, verified[1]!);
  assert.equal(emits.length, 2, "the report as a fact, and the same report handed to publish.v1");
  assert.equal(emits[0]!.key, reportKey(REQUEST_ID));
  assert.equal(emits[0]!.key, `report/${REQUEST_ID}`);
  assert.equal(emits[0]!.to, "mesh.evt.report.published.v1");
  assert.equal(emits[0]!.type, "report.published");
  assert.equal(emits[1]!.to, "mesh.handoff.publish.v1", "publishing outside the mesh is critical: through the coordinator");
  assert.equal(emits[1]!.key, `release/${REQUEST_ID}`);
  assert.deepEqual(emits[1]!.data, emits[0]!.data);
  const report = dataOf<ReportPublished>(events[0]!);
  assert.equal(report.requestId, REQUEST_ID);
  assert.equal(report.title, "Report: Grid-scale battery storage");
  assert.equal(report.complete, true);
  assert.equal(report.findingsCount, 3);
  assert.deepEqual(report.sections.map((s) => s.heading), request.questions, "sections in task order");
  assert.match(report.sections[0]!.body, /lithium iron phosphate[\s\S]*Verdict: supported/i);
  assert.equal(events[0]!.extensions.correlationid, REQUEST_ID);
});

test("reporter - over the flow's budget it wraps up: the finding is joined and the report published with what it has, once", async () => {
  const verified = await verifiedFor(request);
  const def = createReporterDefinition({ store: createMemoryJoinStore(), now: () => T0 });
  const wrapUp = (event: CloudEvent) => def.wrapUp!(inputOf(event), fakeContext().ctx, { bound: "steps", detail: "the flow has run 9 of its 9 steps" });
  await run(def, verified[0]!);
  const emits = await wrapUp(verified[1]!);
  assert.equal(emits.length, 2);
  const report = emits[0]!.data as ReportPublished;
  assert.equal(report.complete, false);
  assert.equal(emits[0]!.key, reportKey(REQUEST_ID), "the same report a deadline or the last finding would publish");
  // The last finding arrives after the report: not joined, nothing published again.
  assert.deepEqual(await wrapUp(verified[2]!), []);
  assert.deepEqual((await run(def, verified[2]!)).emits, []);
});

test("reporter - a redelivered finding is not counted twice", async () => {
  const verified = await verifiedFor(request);
  const def = createReporterDefinition({ store: createMemoryJoinStore(), now: () => T0 });
  await run(def, verified[0]!);
  await run(def, verified[1]!);
  assert.equal((await run(def, verified[1]!)).emits.length, 0, "the same findingId again does not complete the join");
  assert.equal((await run(def, verified[0]!)).emits.length, 0);
  const last = await run(def, verified[2]!);
  assert.equal(dataOf<ReportPublished>(last.events[0]!).findingsCount, 3);
});

test("reporter - a redelivery of the last finding re-emits the same report event (its first publish may have failed)", async () => {
  const verified = await verifiedFor(request);
  const def = createReporterDefinition({ store: createMemoryJoinStore(), now: () => T0 });
  for (const v of verified.slice(0, 2)) await run(def, v);
  const first = await run(def, verified[2]!);
  const again = await run(def, verified[2]!);
  assert.equal(again.events.length, 2);
  assert.deepEqual(again.events.map((e) => e.id), first.events.map((e) => e.id));
  assert.deepEqual(again.emits[0]!.data, first.emits[0]!.data);
});

test("reporter - due() returns expired joins only, and the sweep publishes complete: false once", async () => {
  // The rumour question is quarantined by the verifier: its request can only end at the deadline.
  const verified = await verifiedFor({ ...request, questions: ["Which chemistries lead?", "Is the rumor about sodium-ion true?"] });
  assert.equal(verified.length, 1);
  const store = createMemoryJoinStore();
  const def = createReporterDefinition({ store, now: () => T0 });
  assert.equal((await run(def, verified[0]!)).emits.length, 0);
  const deadline = T0 + 10_000; // the request's time plus the default CAUSEWAY_REPORT_DEADLINE_MS
  assert.deepEqual(await store.due(deadline - 1), []);
  const due = await store.due(deadline);
  assert.deepEqual(due.map((s: JoinState) => [s.requestId, s.deadline]), [[REQUEST_ID, "2026-03-01T10:00:10.000Z"]]);

  const agent = fakeAgent();
  assert.equal(await reporterDeadlineSweep(agent, store, deadline, { subjects }), 1);
  assert.equal(await reporterDeadlineSweep(agent, store, deadline + 60_000, { subjects }), 0, "published once");
  assert.equal(agent.emitted.length, 1);
  const [{ cause, emits, events }] = agent.emitted as [(typeof agent.emitted)[0]];
  assert.equal(cause.id, verified[0]!.id, "caused by the finding that opened the join");
  assert.equal(cause.correlationid, REQUEST_ID);
  assert.equal(emits[0]!.key, `report/${REQUEST_ID}`);
  const report = dataOf<ReportPublished>(events[0]!);
  assert.equal(report.complete, false);
  assert.equal(report.findingsCount, 1);
  assert.equal(report.sections.at(-1)!.heading, "Missing");
  assert.match(report.sections.at(-1)!.body, /1 of 2 tasks \(task 2\)/);
  assert.deepEqual(await store.due(deadline + 60_000), []);
});

test("reporter - the deadline path and the last-finding path produce the same report event id", async () => {
  const verified = await verifiedFor({ ...request, questions: ["q1", "q2"] });
  const store = createMemoryJoinStore();
  const def = createReporterDefinition({ store, now: () => T0 });
  await run(def, verified[0]!);
  const agent = fakeAgent();
  await reporterDeadlineSweep(agent, store, T0 + 10_000, { subjects });
  // A late finding after the deadline report: not joined, nothing emitted.
  assert.equal((await run(def, verified[1]!)).emits.length, 0);
  // Had the last finding arrived in time, its report would have had the very same id.
  const other = createReporterDefinition({ store: createMemoryJoinStore(), now: () => T0 });
  await run(other, verified[0]!);
  const onTime = await run(other, verified[1]!);
  assert.equal(onTime.events[0]!.id, agent.emitted[0]!.events[0]!.id);
});

test("reporter - policy quarantines a verified finding that does not say which request and task it belongs to", async () => {
  const [v] = await verifiedFor(request);
  const { requestid: _r, ...rest } = v!.extensions;
  const orphan = createEvent({ ...v!, extensions: rest });
  const { verdict } = await run(createReporterDefinition({ store: createMemoryJoinStore() }), orphan);
  assert.equal(verdict?.reason, "policy_denied");
  assert.match(verdict!.detail, /requestid/);
  const outOfRange = createEvent({ ...v!, extensions: { ...v!.extensions, taskindex: "7" } });
  assert.match((await run(createReporterDefinition({ store: createMemoryJoinStore() }), outOfRange)).verdict!.detail, /taskindex must be an integer from 0 to 2/);
});

test("reporter - the deadline: the request's own, else its time plus CAUSEWAY_REPORT_DEADLINE_MS", async () => {
  const [withDeadline] = await verifiedFor({ ...request, deadline: "2026-03-01T11:00:00+01:00" });
  assert.equal(deadlineOf(withDeadline!, 10_000, 0), "2026-03-01T10:00:00.000Z");
  const [plain] = await verifiedFor(request);
  assert.equal(deadlineOf(plain!, 30_000, 0), "2026-03-01T10:00:30.000Z");
  const { requesttime: _t, ...rest } = plain!.extensions;
  const noTime = createEvent({ ...plain!, time: undefined, extensions: rest });
  assert.equal(deadlineOf(noTime, 1_000, T0), "2026-03-01T10:00:01.000Z");
});

test("reporter - every report validates, even with more findings than the schema has sections for", () => {
  const findings = Array.from({ length: 100 }, (_, i) => ({ findingId: `f${String(i).padStart(3, "0")}`, taskIndex: i, verdict: "supported" as const, confidence: 0.9, claim: "c".repeat(300), query: "q".repeat(400) }));
  const base = { requestId: "r", totalTasks: 100, deadline: "2026-03-01T10:00:00Z", cause: { id: "c", source: "s", correlationid: "r" }, published: false };
  for (const state of [{ ...base, findings }, { ...base, findings: findings.slice(0, 70) }, { ...base, findings: findings.slice(0, 1) }]) {
    const report = buildReport(state);
    schemas.validate("https://causeway.dev/schemas/report.published/1.0.0", report);
    assert.ok(report.sections.length <= 50);
    assert.equal(report.findingsCount, state.findings.length);
  }
});

test("reporter - config: deadline and sweep interval from the environment; bad values name the variable", () => {
  assert.deepEqual({ ...loadReporterConfig({}) }, { deadlineMs: 10_000, sweepMs: 500, concurrency: 8 });
  assert.equal(loadReporterConfig({ CAUSEWAY_REPORT_DEADLINE_MS: "60000", CAUSEWAY_REPORT_SWEEP_MS: "250" }).sweepMs, 250);
  assert.throws(() => loadReporterConfig({ CAUSEWAY_REPORT_DEADLINE_MS: "10s" }), (err: unknown) =>
    err instanceof ConfigError && /CAUSEWAY_REPORT_DEADLINE_MS="10s" is invalid: expected an integer from 1 to \d+ milliseconds/.test(err.message));
  assert.throws(() => loadReporterConfig({ CAUSEWAY_REPORT_SWEEP_MS: "1" }), /CAUSEWAY_REPORT_SWEEP_MS="1"/);
});

test("reporter - startDeadlineSweep runs the sweep on its interval until stopped", async () => {
  const verified = await verifiedFor({ ...request, questions: ["q1", "q2"] });
  const store = createMemoryJoinStore();
  await run(createReporterDefinition({ store, now: () => T0 }), verified[0]!); // due long ago
  let published!: (cause: Cause) => void;
  const first = new Promise<Cause>((resolve) => { published = resolve; });
  const stop = startDeadlineSweep({ emit: (cause) => { published(cause); return Promise.resolve(); } }, store, { intervalMs: 10, subjects });
  try {
    assert.equal((await first).id, verified[0]!.id);
  } finally {
    stop();
  }
});
