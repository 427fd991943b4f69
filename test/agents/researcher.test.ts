import assert from "node:assert/strict";
import { test } from "node:test";
import { createPlannerDefinition } from "../../services/agents/planner/definition.ts";
import { loadResearcherConfig } from "../../services/agents/researcher/config.ts";
import { RUMOR_CONFIDENCE, isRumor, researchFromCorpus } from "../../services/agents/researcher/corpus.ts";
import { createResearcherDefinition, type FindingCreated } from "../../services/agents/researcher/definition.ts";
import { dataOf, fakeContext, requestEvent, run, scriptedModel } from "./fixtures.ts";
import { InjectedFailure, createResearcher11Definition, failsOnPurpose } from "../../services/agents/researcher/v1.1/definition.ts";
import { ConfigError, RetryableError, createEvent, flowIdOf, isTransient } from "../../services/kit/index.ts";

/** The research tasks the planner makes of a request. */
async function tasksFor(questions?: string[], topic = "Grid-scale battery storage") {
  return (await run(createPlannerDefinition(), requestEvent({ topic, requester: "r", ...(questions && { questions }) }))).events;
}

test("researcher - the same task always yields the same finding, id included", async () => {
  const [task] = await tasksFor(["Which chemistries lead?"]);
  const first = await run(createResearcherDefinition(), task!);
  const second = await run(createResearcherDefinition(), task!);
  assert.equal(first.events.length, 1);
  assert.deepEqual(first.emits, second.emits);
  assert.equal(first.events[0]!.id, second.events[0]!.id);
  const finding = dataOf<FindingCreated>(first.events[0]!);
  assert.equal(finding.taskId, task!.id);
  assert.match(finding.claim, /lithium iron phosphate/i);
  assert.ok(finding.evidence.length > 0 && finding.evidence.every((e) => e.source.startsWith("urn:causeway:corpus:")));
  assert.ok(finding.confidence >= 0.6 && finding.confidence <= 1);
  assert.equal(first.emits[0]!.to, "mesh.cap.verify.v1");
});

test("researcher - the corpus picks the entry and the aspect from the query's words", () => {
  assert.match(researchFromCorpus("What does a MWh cost?").claim, /cost per MWh/);
  assert.match(researchFromCorpus("Background: what is NATS JetStream, and how did it come about?").claim, /persistence layer of NATS/);
  assert.match(researchFromCorpus("Risks and open questions: what are the main risks and limitations of NATS JetStream?").claim, /power loss/);
  const unknown = researchFromCorpus("How do tulips grow?");
  assert.match(unknown.claim, /no entry that covers "How do tulips grow\?"/);
  assert.equal(unknown.evidence[0]!.source, "urn:causeway:corpus:index");
  assert.notEqual(researchFromCorpus("Which chemistries lead?").claim, researchFromCorpus("What does a MWh cost?").claim);
});

test("researcher - a question with the word rumor yields one finding with confidence below the verifier's minimum", async () => {
  assert.ok(isRumor("Is the rumor about sodium-ion true?") && isRumor("Rumours of LFP shortages") && !isRumor("tumorous"));
  const tasks = await tasksFor(["Which chemistries lead?", "Is the rumor about sodium-ion true?"]);
  const findings = await Promise.all(tasks.map(async (t) => dataOf<FindingCreated>((await run(createResearcherDefinition(), t)).events[0]!)));
  assert.ok(findings[0]!.confidence >= 0.6);
  assert.equal(findings[1]!.confidence, RUMOR_CONFIDENCE);
  assert.ok(RUMOR_CONFIDENCE < 0.6);
  assert.ok(findings[1]!.evidence.length > 0, "a rumour has evidence (hearsay), so it is low_confidence, not missing_evidence");
});

test("researcher - findings carry the request, the task's place and the planner's context as extensions", async () => {
  const tasks = await tasksFor(["q one", "q two"]);
  const { events } = await run(createResearcherDefinition(), tasks[1]!);
  const ext = events[0]!.extensions;
  assert.equal(ext.requestid, flowIdOf({ source: "causeway://gateway", id: "req-0001" }), "the planner's request id");
  assert.equal(ext.taskindex, "1");
  assert.equal(ext.totaltasks, "2");
  assert.equal(ext.query, "q two");
  assert.equal(ext.topic, "Grid-scale battery storage");
  assert.equal(ext.requesttime, "2026-03-01T10:00:00.000Z");
  assert.equal(ext.correlationid, flowIdOf({ source: "causeway://gateway", id: "req-0001" }));
  assert.equal(ext.causationid, tasks[1]!.id);
});

test("researcher - policy quarantines a task whose index is not below its total", async () => {
  const [task] = await tasksFor(["q"]);
  const bad = createEvent({ ...task!, data: JSON.stringify({ requestId: "req-0001", taskIndex: 3, totalTasks: 3, query: "q" }) });
  const { verdict } = await run(createResearcherDefinition(), bad);
  assert.deepEqual(verdict, { reason: "schema_violation", detail: "taskIndex 3 is not below totalTasks 3" });
});

test("researcher - a model's well-formed answer is the finding", async () => {
  const answer = { claim: "X holds.", evidence: [{ source: "https://example.org/x", quote: "X holds, says the source." }], confidence: 0.9 };
  const model = scriptedModel(JSON.stringify(answer));
  const [task] = await tasksFor(["Does X hold?"]);
  const { events } = await run(createResearcherDefinition({ model }), task!);
  assert.deepEqual(dataOf<FindingCreated>(events[0]!), { taskId: task!.id, ...answer });
  assert.match(model.requests[0]!.user, /Research question: Does X hold\?/);
  assert.equal(model.requests[0]!.json, true);
});

test("researcher - a malformed model answer falls back to the corpus with a warning", async () => {
  const [task] = await tasksFor(["Which chemistries lead?"]);
  const bad = [
    "{}",
    JSON.stringify({ claim: "c", evidence: [], confidence: 1.5 }),
    JSON.stringify({ claim: "c", evidence: [{ source: "not a uri", quote: "q" }], confidence: 0.9 }),
    JSON.stringify({ claim: "", evidence: [], confidence: 0.9 }),
  ];
  for (const answer of bad) {
    const { ctx, lines } = fakeContext();
    const { events } = await run(createResearcherDefinition({ model: scriptedModel(answer) }), task!, ctx);
    assert.deepEqual(dataOf<FindingCreated>(events[0]!), { taskId: task!.id, ...researchFromCorpus("Which chemistries lead?") }, answer);
    assert.ok(lines.some((l) => l.level === "warn" && /built-in corpus/.test(String(l.msg))));
  }
});

test("researcher - a retryable model failure propagates", async () => {
  const [task] = await tasksFor(["q"]);
  await assert.rejects(run(createResearcherDefinition({ model: scriptedModel(new RetryableError("timeout")) }), task!), RetryableError);
});

test("researcher - config: a bad concurrency names the variable", () => {
  assert.equal(loadResearcherConfig({}).concurrency, 8);
  assert.throws(() => loadResearcherConfig({ CAUSEWAY_RESEARCHER_CONCURRENCY: "many" }), (err: unknown) =>
    err instanceof ConfigError && /CAUSEWAY_RESEARCHER_CONCURRENCY="many"/.test(err.message));
});

test("researcher 1.1.0 - the same claim and output id as 1.0.0, but every fact of the entry as evidence and their mean confidence; a rumour is unchanged", async () => {
  const [chemistry, rumor] = await tasksFor(["Which chemistries lead?", "Is the rumor about sodium-ion true?"]);
  const stable = await run(createResearcherDefinition(), chemistry!);
  const candidate = await run(createResearcher11Definition(), chemistry!);
  assert.equal(createResearcher11Definition().version, "1.1.0");
  assert.equal(candidate.events[0]!.id, stable.events[0]!.id, "the output id derives from the input and the index, not the version");
  const [s, c] = [dataOf<FindingCreated>(stable.events[0]!), dataOf<FindingCreated>(candidate.events[0]!)];
  assert.equal(c.claim, s.claim);
  assert.deepEqual(c.evidence[0], s.evidence[0], "the claim's own evidence first");
  assert.deepEqual(c.evidence.map((e) => e.source), ["urn:causeway:corpus:battery-chemistry:1", "urn:causeway:corpus:battery-chemistry:0", "urn:causeway:corpus:battery-chemistry:2"]);
  assert.deepEqual([s.confidence, c.confidence], [0.88, 0.85]);
  const perRun = ({ emittedat: _e, traceparent: _t, ...rest }: Record<string, unknown>) => rest; // differ on every run
  assert.deepEqual(perRun(candidate.events[0]!.extensions), perRun(stable.events[0]!.extensions));
  const [rs, rc] = [await run(createResearcherDefinition(), rumor!), await run(createResearcher11Definition(), rumor!)];
  assert.deepEqual(dataOf(rc.events[0]!), dataOf(rs.events[0]!));
});

test("researcher 1.1.0 - CAUSEWAY_RESEARCHER_FAIL_PERCENT fails that share of inputs, chosen by input id, on every delivery unless FAIL_DELIVERIES lets a later one pass", async () => {
  const ids = Array.from({ length: 2000 }, (_, i) => `input-${i}`);
  const failing = ids.filter((id) => failsOnPurpose(id, 30));
  assert.ok(Math.abs(failing.length / ids.length - 0.3) < 0.03, `${failing.length} of ${ids.length} fail`);
  assert.deepEqual(ids.filter((id) => failsOnPurpose(id, 30)), failing, "the same inputs every time");
  assert.equal(ids.filter((id) => failsOnPurpose(id, 0)).length, 0);
  assert.equal(ids.filter((id) => failsOnPurpose(id, 100)).length, ids.length);

  const config = loadResearcherConfig({ CAUSEWAY_RESEARCHER_FAIL_PERCENT: "30", CAUSEWAY_RESEARCHER_FAIL_DELIVERIES: "2" });
  assert.deepEqual([config.failPercent, config.failDeliveries], [30, 2]);
  assert.throws(() => loadResearcherConfig({ CAUSEWAY_RESEARCHER_FAIL_PERCENT: "101" }), ConfigError);
  const tasks = await tasksFor(Array.from({ length: 12 }, (_, i) => `question ${i}`));
  const fails = tasks.find((t) => failsOnPurpose(t.id, 30))!;
  const passes = tasks.find((t) => !failsOnPurpose(t.id, 30))!;
  const def = createResearcher11Definition({ config });
  const at = (deliveryCount: number) => ({ ...fakeContext().ctx, deliveryCount });
  await assert.rejects(run(def, fails, at(1)), (err: Error) => err instanceof InjectedFailure && !(err instanceof RetryableError) && !isTransient(err) && /in the 30 %/.test(err.message));
  await assert.rejects(run(def, fails, at(2)), InjectedFailure);
  assert.equal((await run(def, fails, at(3))).events.length, 1, "the third delivery passes");
  assert.equal((await run(def, passes, at(1))).events.length, 1);
  await assert.rejects(run(createResearcher11Definition({ config: { ...config, failDeliveries: 0 } }), fails, at(50)), InjectedFailure);
  // 1.0.0, the stable version, never fails on purpose.
  assert.equal((await run(createResearcherDefinition({ config }), fails, at(1))).events.length, 1);
});
