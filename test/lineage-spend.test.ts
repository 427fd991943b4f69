// What a flow spent, as lineage proves it (issue 16), on a real server: agents whose runs report spend, each run
// emitting several outputs; lineage recording the streams; `trace` totalling the flow's signed spend with each run
// counted once, against the flow's priority and budget. A forged event and a tampered copy claiming spend are
// recorded as failed and never counted; runs the budget refused show as budget_exceeded.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import {
  ContextExtension, NatsBinding, createEvent, createLogger, flowIdOf, newTraceparent, openFlowLedger, parseLoopGuards, signEvent, signingKeyFromNkeySeed,
  spentOf, startAgent, type AgentDefinition, type AgentOptions, type CloudEvent, type Emit, type Spend,
} from "../services/kit/index.ts";
import { startIngest, type Ingest } from "../services/lineage/ingest.ts";
import { trace, type TraceResult } from "../services/lineage/queries.ts";
import { RECORDED_STREAMS } from "../services/lineage/contract.ts";
import { renderTrace } from "../services/cli/lineage-render.ts";
import { FINDING_SCHEMA, REQUEST_SCHEMA, TASK_SCHEMA, startMesh, type Mesh } from "./mesh-fixture.ts";
import { tempStore } from "./lineage-flow-fixture.ts";
import { waitFor } from "./harness/index.ts";

const PLAN = "mesh.cap.plan.v1";
const VERIFY = "mesh.cap.verify.v1";
// The first flow is critical: its work is on each capability's critical subject (priority lanes).
const CRITICAL_PLAN = `${PLAN}.critical`, CRITICAL_VERIFY = `${VERIFY}.critical`;
const fastConsumer: AgentOptions["consumer"] = { ack_wait: 2_000_000_000, backoff: [100_000_000, 100_000_000, 100_000_000], max_deliver: 4 };
const log = createLogger({ name: "lineage-spend", level: process.env.LOG_LEVEL ?? "silent" });
const loopGuards = parseLoopGuards({ maxDepth: 32, maxEventsPerCapability: 0 }, "test");

/** A planner whose one run emits `tasks` research tasks, reporting `spend` (or spending nothing). */
function planner(tasks: number, spend?: Spend): AgentDefinition {
  return {
    principal: "planner", capability: "plan", major: 1, version: "0.0.1-test", description: "plans",
    accepts: { "report.requested": REQUEST_SCHEMA }, emits: { "research.task.created": TASK_SCHEMA },
    handler(input, ctx): Emit[] {
      if (spend) ctx.spend(spend);
      return Array.from({ length: tasks }, (_, i) => ({
        to: ctx.subjects.capability("research", 1), type: "research.task.created",
        data: { requestId: input.event.id, taskIndex: i, totalTasks: tasks, query: `q${i}` },
      }));
    },
  };
}

/** A researcher answering each task with `findings` findings; it reports `spend`, or declares `fixed` per run. */
function researcher(findings: number, opts: { spend?: Spend; fixed?: number }): AgentDefinition {
  const def: AgentDefinition<{ query: string }> = {
    principal: "researcher", capability: "research", major: 1, version: "0.0.1-test", description: "researches",
    accepts: { "research.task.created": TASK_SCHEMA }, emits: { "research.finding.created": FINDING_SCHEMA },
    ...(opts.fixed !== undefined && { cost: { cost: opts.fixed } }),
    handler(input, ctx): Emit[] {
      if (opts.spend) ctx.spend(opts.spend);
      return Array.from({ length: findings }, (_, i) => ({
        to: ctx.subjects.capability("verify", 1), type: "research.finding.created",
        data: { taskId: input.event.id, claim: `answer ${i} to ${input.data.query}`, evidence: [{ source: "urn:causeway:test", quote: "q" }], confidence: 0.9 },
      }));
    },
  };
  return def as AgentDefinition;
}

const run = (mesh: Mesh, def: AgentDefinition) => startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys[def.principal]!, consumer: fastConsumer, log, loopGuards });

/** Waits until lineage has recorded every message the recorded streams hold now. */
async function recordedAll(mesh: Mesh, ingest: Ingest): Promise<number> {
  let total = 0;
  for (const stream of RECORDED_STREAMS) total += (await mesh.jsm.streams.info(stream)).state.messages;
  await waitFor(() => ingest.stats().size === total, { what: `lineage to record all ${total} messages`, timeoutMs: 15_000 });
  return total;
}

/** What the flow's verified outputs on MESH_CAP spent, each (source, causationid) once: the sum a trace must report. */
async function signedRunSpend(mesh: Mesh, flow: string): Promise<{ runs: number; cost: number; tokens: number; outputs: number; naiveCost: number }> {
  const runs = new Map<string, Spend>();
  let outputs = 0, naiveCost = 0;
  for (const m of await mesh.messages("MESH_CAP", "mesh.cap.>")) {
    let event: CloudEvent;
    try {
      event = mesh.trust.verifyMessage(m).event;
    } catch {
      continue; // not believed
    }
    if (event.extensions[ContextExtension.CorrelationId] !== flow || event.extensions[ContextExtension.CausationId] === undefined) continue;
    const spent = spentOf(event)!;
    outputs++;
    naiveCost += spent.cost;
    runs.set(`${event.source}\u0000${String(event.extensions[ContextExtension.CausationId])}`, spent);
  }
  const sum = [...runs.values()].reduce((a, s) => ({ cost: a.cost + s.cost, tokens: a.tokens + s.tokens }), { cost: 0, tokens: 0 });
  return { runs: runs.size, ...sum, outputs, naiveCost };
}

describe("lineage spend", () => {
  test("lineage spend - a flow's trace totals its runs' signed spend, each run once however many outputs it emitted; forged and tampered claims are not counted", async (t) => {
    await using mesh = await startMesh();
    const store = await tempStore(t);
    const ingest = await startIngest({ nc: mesh.nc, store, trust: mesh.trust, log });
    t.after(() => ingest.stop());
    // One planner run (5 units, 300 tokens) emits three tasks; each of the three researcher runs (40 units, 1200
    // tokens) emits two findings.
    await using plan = await run(mesh, planner(3, { cost: 5, tokens: 300 }));
    await using research = await run(mesh, researcher(2, { spend: { cost: 40, tokens: 1200 } }));
    const root = mesh.event("gateway", { extensions: { priority: "critical", budgetcost: "1000", budgettokens: "200000", budgetsteps: "64" } });
    const flow = flowIdOf(root);
    await mesh.publish(CRITICAL_PLAN, root);
    // Done when the streams hold every output and the ledger every settled run (a slow run may be redelivered and
    // run again: its outputs are the same events, deduplicated, and the ledger charges it once).
    await waitFor(async () => (await mesh.messages("MESH_CAP", CRITICAL_VERIFY)).length === 6, { what: "six findings" });
    const ledger = await openFlowLedger(mesh.nc, "plan", 1);
    await waitFor(async () => (await ledger.totals(flow)).cost === 125, { what: "every run settled in the ledger" })
      .catch((e: Error) => { throw new Error(`${e.message}: ${JSON.stringify([plan.stats(), research.stats()])}`); });

    // The attacker: a finding signed by a key the trust store does not know, claiming a large spend, another
    // priority and a bigger budget; and a genuine finding republished with its spentcost raised.
    const genuine = (await mesh.messages("MESH_CAP", CRITICAL_VERIFY))[0]!;
    const genuineEvent = NatsBinding.toEvent(genuine);
    const outsider = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
    const forged = signEvent(createEvent({
      id: crypto.randomUUID(), source: "causeway://researcher", type: "research.finding.created", time: new Date().toISOString(),
      datacontenttype: "application/json", dataschema: FINDING_SCHEMA,
      extensions: {
        traceparent: newTraceparent(), correlationid: flow, causationid: String(genuineEvent.extensions[ContextExtension.CausationId]), flowdepth: "2",
        spentcost: "9999", spenttokens: "9999", priority: "background", budgetcost: "1000000",
      },
      data: JSON.stringify({ taskId: "t", claim: "forged", evidence: [{ source: "urn:x", quote: "q" }], confidence: 1 }),
    }), outsider);
    await mesh.publish(CRITICAL_VERIFY, forged);
    const tampered = NatsBinding.binary(genuineEvent);
    tampered.headers.set(`ce-${ContextExtension.SpentCost}`, "4000");
    await jetstream(mesh.nc).publish(CRITICAL_VERIFY, tampered.data, { headers: tampered.headers, msgID: `${genuineEvent.id}-tampered` });
    await recordedAll(mesh, ingest);

    const answer: TraceResult = await trace(store, flow);
    const expected = await signedRunSpend(mesh, flow);
    // The independent sum over the verified messages: 4 runs, 9 outputs; summing every output would say 255.
    assert.deepEqual(expected, { runs: 4, cost: 125, tokens: 3900, outputs: 9, naiveCost: 3 * 5 + 6 * 40 });
    assert.deepEqual(answer.spend, {
      cost: expected.cost, tokens: expected.tokens, runs: expected.runs, priority: "critical",
      budget: { cost: 1000, tokens: 200000, steps: 64 }, remaining: { cost: 875, tokens: 196100, steps: 60 },
      contextFrom: root.id, unverified: 1, otherContext: [], refusedForBudget: 0, malformedSpend: [],
    });
    // The flow ledger, kept by the runtime before and after each run, agrees: every run here emitted something.
    assert.deepEqual(await ledger.totals(flow), { steps: 4, cost: 125, tokens: 3900 });

    // Per step: each output shows its run's spend; the forged finding's claim is not believed; the tampered copy is
    // a failed appearance of the genuine finding, whose signed spend stands.
    const steps = (type: string) => answer.nodes.filter((n) => n.type === type);
    assert.deepEqual(steps("research.task.created").map((s) => s.spent), [1, 2, 3].map(() => ({ cost: 5, tokens: 300 })));
    const findings = steps("research.finding.created");
    assert.equal(findings.length, 7);
    const forgedStep = findings.find((s) => s.id === forged.id)!;
    assert.equal(forgedStep.verification.result, "failed");
    assert.equal(forgedStep.spent, null);
    assert.deepEqual(findings.filter((s) => s.id !== forged.id).map((s) => s.spent), [1, 2, 3, 4, 5, 6].map(() => ({ cost: 40, tokens: 1200 })));
    const copied = findings.find((s) => s.id === genuineEvent.id)!;
    assert.deepEqual(copied.appearances.map((a) => a.verified), [true, false], "the tampered copy is recorded as failed");
    assert.deepEqual(copied.spent, { cost: 40, tokens: 1200 });
    assert.deepEqual(steps("report.requested").map((s) => s.spent), [{ cost: 0, tokens: 0 }]);

    // What `causeway lineage trace` prints.
    const text = renderTrace(answer);
    assert.ok(text.includes("spent: 125 cost units, 3900 tokens in 4 runs of budget 1000 / 200000 / 64 steps (priority critical)"), text);
    assert.ok(text.includes("left:  875 cost units, 196100 tokens, 60 steps"), text);
    assert.ok(text.includes("not counted: 1 event that did not verify"), text);
    assert.equal(text.split("\n").filter((l) => / 40 cost, 1200 tok /.test(l)).length, 6, "one row per finding with its run's spend");
    assert.equal(text.split("\n").filter((l) => / unverified /.test(l)).length, 1, "the forged finding's row");
  });

  test("lineage spend - runs the budget refused are counted as budget_exceeded, and the budget shows nothing left", async (t) => {
    await using mesh = await startMesh();
    const store = await tempStore(t);
    const ingest = await startIngest({ nc: mesh.nc, store, trust: mesh.trust, log });
    t.after(() => ingest.stop());
    // Three steps: the planner's run and two researcher runs (a declared fixed cost of 10 each); the third task is refused.
    await using plan = await run(mesh, planner(3));
    await using research = await run(mesh, researcher(1, { fixed: 10 }));
    const root = mesh.event("gateway", { extensions: { budgetsteps: "3", budgetcost: "100" } });
    const flow = flowIdOf(root);
    await mesh.publish(PLAN, root);
    await waitFor(async () => (await mesh.messages("MESH_CAP", VERIFY)).length === 2 &&
      (await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.budget_exceeded.research")).length === 1, { what: "every task decided" })
      .catch((e: Error) => { throw new Error(`${e.message}: ${JSON.stringify([plan.stats(), research.stats()])}`); });
    const ledger = await openFlowLedger(mesh.nc, "plan", 1);
    await waitFor(async () => (await ledger.totals(flow)).cost === 20, { what: "both runs settled in the ledger" });
    await recordedAll(mesh, ingest);

    const answer = await trace(store, flow);
    assert.deepEqual(answer.spend, {
      cost: 20, tokens: 0, runs: 3, priority: "normal", budget: { cost: 100, steps: 3 }, remaining: { cost: 80, steps: 0 },
      contextFrom: root.id, unverified: 0, otherContext: [], refusedForBudget: 1, malformedSpend: [],
    });
    assert.deepEqual(await ledger.totals(flow), { steps: 3, cost: 20, tokens: 0 });
    const refused = answer.nodes.filter((n) => n.appearances.some((a) => a.quarantine?.reason === "budget_exceeded"));
    assert.deepEqual(refused.map((n) => n.type), ["research.task.created"]);
    const text = renderTrace(answer);
    assert.ok(text.includes("spent: 20 cost units, 0 tokens in 3 runs of budget 100 / ∞ / 3 steps (priority normal)"), text);
    assert.ok(text.includes("left:  80 cost units, 0 steps"), text);
    assert.ok(text.includes("refused for budget: 1 input quarantined as budget_exceeded"), text);
  });
});
