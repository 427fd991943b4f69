import assert from "node:assert/strict";
import { test } from "node:test";
import { loadPlannerConfig } from "../../services/agents/planner/config.ts";
import { PLANNER_ASPECTS, createPlannerDefinition, type ResearchTask } from "../../services/agents/planner/definition.ts";
import { dataOf, fakeContext, requestEvent, run, scriptedModel } from "./fixtures.ts";
import { ConfigError, RetryableError, flowIdOf } from "../../services/kit/index.ts";

/** The fixture request's id, tagged with its source. */
const REQUEST_ID = flowIdOf({ source: "causeway://gateway", id: "req-0001" });
const questions = ["Which chemistries lead?", "What does a MWh cost?", "Is the rumor about sodium-ion true?"];

test("planner - one task per question, in order, addressed to research.v1", async () => {
  const { events, emits } = await run(createPlannerDefinition(), requestEvent({ topic: "Grid-scale battery storage", requester: "a@example.com", questions }));
  assert.equal(events.length, 3);
  assert.ok(emits.every((e) => e.to === "mesh.cap.research.v1" && e.type === "research.task.created"));
  assert.deepEqual(events.map((e) => dataOf<ResearchTask>(e)), questions.map((query, taskIndex) => ({ requestId: REQUEST_ID, taskIndex, totalTasks: 3, query })));
});

test("planner - without questions, three tasks: background, current state, risks of the topic", async () => {
  const { events } = await run(createPlannerDefinition(), requestEvent({ topic: "NATS JetStream", requester: "a@example.com" }));
  const tasks = events.map((e) => dataOf<ResearchTask>(e));
  assert.equal(tasks.length, PLANNER_ASPECTS.length);
  assert.deepEqual(tasks.map((t) => t.taskIndex), [0, 1, 2]);
  assert.ok(tasks.every((t) => t.totalTasks === 3 && t.requestId === REQUEST_ID && t.query.includes("NATS JetStream")));
  assert.match(tasks[0]!.query, /^Background:/);
  assert.match(tasks[1]!.query, /^Current state:/);
  assert.match(tasks[2]!.query, /^Risks and open questions:/);
});

test("planner - tasks carry the topic, the request's time and its deadline; output ids are derived, correlation kept", async () => {
  const request = requestEvent({ topic: "T", requester: "r", questions: ["q1", "q2"], deadline: "2026-03-01T10:05:00Z" });
  const { events } = await run(createPlannerDefinition(), request);
  for (const e of events) {
    assert.equal(e.extensions.topic, "T");
    assert.equal(e.extensions.requesttime, "2026-03-01T10:00:00.000Z");
    assert.equal(e.extensions.deadline, "2026-03-01T10:05:00Z");
    assert.equal(e.extensions.correlationid, flowIdOf(request), "the request starts the flow");
    assert.equal(e.extensions.causationid, "req-0001");
  }
  const again = await run(createPlannerDefinition(), request);
  assert.deepEqual(again.events.map((e) => e.id), events.map((e) => e.id), "a redelivered request republishes the same ids");
  const noDeadline = await run(createPlannerDefinition(), requestEvent({ topic: "T", requester: "r" }));
  assert.equal(noDeadline.events[0]!.extensions.deadline, undefined);
});

test("planner - plans no more tasks than the flow's steps can carry to a report, and at least one", async () => {
  const budgeted = (steps: number) => {
    const { ctx, lines } = fakeContext();
    return { ctx: { ...ctx, budget: { limit: { steps: 99 }, spent: { steps: 0, cost: 0, tokens: 0 }, remaining: { steps } } }, lines };
  };
  const request = requestEvent({ topic: "T", requester: "r", questions: ["q1", "q2", "q3", "q4"] });
  // Each task takes three runs (research, verify, report), and two follow the tasks (summary, publish).
  const seven = budgeted(2 + 3 * 2 + 2);
  const { events } = await run(createPlannerDefinition(), request, seven.ctx);
  assert.deepEqual(events.map((e) => dataOf<ResearchTask>(e)).map((t) => [t.query, t.totalTasks]), [["q1", 2], ["q2", 2]]);
  assert.ok(seven.lines.some((l) => l.msg === "planned fewer tasks: the flow's budget" && l.tasks === 2 && l.planned === 4));
  assert.equal((await run(createPlannerDefinition(), request, budgeted(1).ctx)).events.length, 1, "a report needs a task");
  assert.equal((await run(createPlannerDefinition(), request, budgeted(100).ctx)).events.length, 4);
});

test("planner - a model phrases the aspect queries; questions never go to the model", async () => {
  const model = scriptedModel(JSON.stringify({ queries: ["How did X start?", "Who uses X?", "What can go wrong with X?"] }));
  const def = createPlannerDefinition({ model });
  const { events } = await run(def, requestEvent({ topic: "X", requester: "r" }));
  assert.deepEqual(events.map((e) => dataOf<ResearchTask>(e).query), ["How did X start?", "Who uses X?", "What can go wrong with X?"]);
  assert.equal(model.requests[0]!.json, true);
  assert.match(model.requests[0]!.user, /Topic: X/);
  await run(def, requestEvent({ topic: "X", requester: "r", questions: ["q"] }));
  assert.equal(model.requests.length, 1);
});

test("planner - a malformed model answer falls back to the fixed aspects with a warning", async () => {
  for (const answer of ["not json", JSON.stringify({ queries: ["only one"] }), JSON.stringify({ queries: ["a", "a", "a"] })]) {
    const { ctx, lines } = fakeContext();
    const { events } = await run(createPlannerDefinition({ model: scriptedModel(answer) }), requestEvent({ topic: "X", requester: "r" }), ctx);
    assert.deepEqual(events.map((e) => dataOf<ResearchTask>(e).query), PLANNER_ASPECTS.map((a) => a.query("X")));
    assert.ok(lines.some((l) => l.level === "warn" && /fixed aspects/.test(String(l.msg))), answer);
  }
});

test("planner - a retryable model failure propagates so the input is retried", async () => {
  const def = createPlannerDefinition({ model: scriptedModel(new RetryableError("HTTP 429")) });
  await assert.rejects(run(def, requestEvent({ topic: "X", requester: "r" })), RetryableError);
});

test("planner - config: concurrency from the environment; a bad value names the variable", () => {
  assert.equal(loadPlannerConfig({}).concurrency, 8);
  assert.equal(loadPlannerConfig({ CAUSEWAY_PLANNER_CONCURRENCY: "3" }).concurrency, 3);
  assert.ok(Object.isFrozen(loadPlannerConfig({})));
  assert.throws(() => loadPlannerConfig({ CAUSEWAY_PLANNER_CONCURRENCY: "0" }), (err: unknown) =>
    err instanceof ConfigError && err.code === "CW_ERR_CONFIG" && /CAUSEWAY_PLANNER_CONCURRENCY="0"/.test(err.message) && /integer from 1 to 1024/.test(err.message));
  assert.equal(createPlannerDefinition({ config: loadPlannerConfig({ CAUSEWAY_PLANNER_CONCURRENCY: "2" }) }).concurrency, 2);
});

