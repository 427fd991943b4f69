// Flow budgets (issue 16, item 1) on a real server: a planner fanning out beyond its flow's budget ends with the
// over-budget work quarantined as budget_exceeded, the ledger exact under two replicas and forced redelivery; what a
// handler reports it spent is settled in the ledger and signed into its outputs; a handler sees what remains; a
// wrap-up path runs instead of quarantine where the workflow declares one; nobody downstream can raise a budget.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Kvm } from "@nats-io/kv";
import {
  ContextExtension, ErrorCode, KvBucket, NatsBinding, PRESSURE_KEY, loadBackpressure, QuarantineHeader, QuarantineReason, RetryableError, budgetOf, createLogger, flowContextOf, flowIdOf, openFlowLedger, parseLoopGuards, priorityOf, spentOf,
  startAgent, type AgentDefinition, type AgentOptions, type CloudEvent, type Emit, type HandlerContext,
} from "../services/kit/index.ts";
import { FINDING_SCHEMA, REQUEST_SCHEMA, TASK_SCHEMA, header, startMesh, type Mesh } from "./mesh-fixture.ts";
import { waitFor } from "./harness/index.ts";

const PLAN = "mesh.cap.plan.v1";
// Retries come fast (100 ms); ack_wait is long enough that a loaded machine never redelivers an input still running.
const fastConsumer: AgentOptions["consumer"] = { ack_wait: 10_000_000_000, backoff: [100_000_000, 100_000_000, 100_000_000], max_deliver: 4 };
const log = createLogger({ name: "budgets", level: process.env.LOG_LEVEL ?? "silent" });
// The count per capability off: only the budget touches the ledger.
const loopGuards = parseLoopGuards({ maxDepth: 32, maxEventsPerCapability: 0 }, "test");

/** A planner that fans every request out into `tasks` research tasks, recording the budget it was shown. */
function fanOut(tasks: number, plan: (ctx: HandlerContext) => number = () => tasks) {
  const shown: (HandlerContext["budget"])[] = [];
  const def: AgentDefinition = {
    principal: "planner", capability: "plan", major: 1, version: "0.0.1-test", description: "fans out",
    accepts: { "report.requested": REQUEST_SCHEMA }, emits: { "research.task.created": TASK_SCHEMA },
    handler(input, ctx): Emit[] {
      shown.push(ctx.budget);
      const n = plan(ctx);
      return Array.from({ length: n }, (_, i) => ({
        to: ctx.subjects.capability("research", 1), type: "research.task.created",
        data: { requestId: input.event.id, taskIndex: i, totalTasks: n, query: `q${i}` },
        // A handler cannot raise its flow's budget, nor say what it spent: the runtime's values win.
        extensions: { [ContextExtension.BudgetSteps]: "1000", [ContextExtension.SpentCost]: "0", [ContextExtension.FlowCarry]: "0,0,0" },
      }));
    },
  };
  return { def, shown };
}

/** A researcher costing `cost` per run (declared fixed, or reported through ctx.spend), answering each task with one finding. */
function researcher(opts: { fixed?: number; reports?: { cost: number; tokens: number }; failFirst?: (query: string) => boolean; wrapUp?: boolean; concurrency?: number } = {}) {
  const ran: string[] = [];
  const wrapped: string[] = [];
  const finding = (input: { event: CloudEvent }, ctx: HandlerContext, claim: string): Emit => ({
    to: ctx.subjects.capability("verify", 1), type: "research.finding.created",
    data: { taskId: input.event.id, claim, evidence: [{ source: "urn:causeway:test", quote: "q" }], confidence: 0.9 },
  });
  const def: AgentDefinition<{ query: string }> = {
    principal: "researcher", capability: "research", major: 1, version: "0.0.1-test", description: "costs money",
    accepts: { "research.task.created": TASK_SCHEMA }, emits: { "research.finding.created": FINDING_SCHEMA },
    ...(opts.fixed !== undefined && { cost: { cost: opts.fixed } }),
    ...(opts.concurrency !== undefined && { concurrency: opts.concurrency }),
    handler(input, ctx) {
      if (opts.failFirst?.(input.data.query) && ctx.deliveryCount === 1) throw new RetryableError("fail the first delivery", { delayMs: 50 });
      ran.push(input.data.query);
      if (opts.reports) ctx.spend(opts.reports);
      // A handler claiming its run was a wrap-up: the runtime's value wins.
      return [{ ...finding(input, ctx, `answer to ${input.data.query}`), extensions: { [ContextExtension.WrapUp]: "steps" } }];
    },
    ...(opts.wrapUp && {
      wrapUp(input, ctx, over) {
        wrapped.push(`${input.data.query}: ${over.bound}`);
        return [finding(input, ctx, `not researched: ${over.detail}`)];
      },
    }),
  };
  return { def: def as AgentDefinition, ran, wrapped };
}

async function run(mesh: Mesh, def: AgentDefinition) {
  return startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys[def.principal]!, consumer: fastConsumer, log, loopGuards });
}

/** A request with a budget, as the gateway admits it. */
function request(mesh: Mesh, budget: Record<string, string>): CloudEvent {
  return mesh.event("gateway", { extensions: budget });
}

async function ledgerTotals(mesh: Mesh, flow: string) {
  return (await openFlowLedger(mesh.nc, "plan", 1)).totals(flow);
}

describe("flow budgets", () => {
  test("budgets - a fan-out past the flow's steps is quarantined as budget_exceeded, exactly, under two replicas and forced redelivery", async () => {
    await using mesh = await startMesh();
    const plan = fanOut(10);
    // Every task fails its first delivery after it was admitted: its redelivery must not be charged again.
    const research = researcher({ fixed: 3, failFirst: () => true });
    await using planner = await run(mesh, plan.def);
    await using a = await run(mesh, research.def);
    await using b = await run(mesh, research.def);
    const root = request(mesh, { budgetsteps: "6", budgetcost: "1000" });
    const flow = flowIdOf(root);
    await mesh.publish(PLAN, root);
    // Decided: every task either ran (its query recorded) or was refused (its quarantine entry), whichever replica got it.
    const refusedTasks = async () => (await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.budget_exceeded.research"));
    await waitFor(async () => planner.stats().processed === 1 && new Set(research.ran).size + (await refusedTasks()).length >= 10, { what: "every task decided", timeoutMs: 30_000 });

    // The planner's run is one step: five tasks run, five are refused.
    assert.equal(new Set(research.ran).size, 5, "five distinct tasks ran");
    const refused = await refusedTasks();
    assert.equal(new Set(refused.map((q) => NatsBinding.toEvent(q).id)).size, 5, "five distinct tasks refused");
    for (const q of refused) {
      assert.equal(header(q, QuarantineHeader.Code), ErrorCode.BudgetExceeded);
      assert.match(header(q, QuarantineHeader.Detail)!, /has run 6 of its 6 steps/);
    }
    // The ledger: one step per admitted input, the fixed cost of each research run, nothing twice.
    assert.deepEqual(await ledgerTotals(mesh, flow), { steps: 6, cost: 15, tokens: 0 });
    assert.ok(a.stats().failed + b.stats().failed >= 5, "each admitted input failed (at least) once and was redelivered");
    // The handler's own budget extension did not travel: every task carries the flow's.
    const tasks = (await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).map((m) => NatsBinding.toEvent(m));
    assert.equal(tasks.length, 10);
    for (const t of tasks) {
      assert.equal(t.extensions[ContextExtension.BudgetSteps], "6");
      assert.equal(t.extensions[ContextExtension.SpentCost], undefined, "the planner spent nothing");
    }
  });

  test("budgets - what a handler reports replaces its reservation in the ledger and is signed into its outputs; the cost bound stops the next run", async () => {
    await using mesh = await startMesh();
    const plan = fanOut(4);
    // Reserves 30 per run, reports 40 once it ran; one task at a time, so each admission sees the last settlement.
    const research = researcher({ fixed: 30, reports: { cost: 40, tokens: 1200 }, concurrency: 1 });
    await using planner = await run(mesh, plan.def);
    await using r = await run(mesh, research.def);
    const root = request(mesh, { budgetcost: "100", budgettokens: "100000" });
    await mesh.publish(PLAN, root);
    // 0 + 30 ≤ 100: runs, settles at 40; 40 + 30 ≤ 100: runs, settles at 80; 80 + 30 > 100: refused, twice.
    await waitFor(() => planner.stats().processed === 1 && r.stats().processed + r.stats().quarantined === 4, { what: "every task decided" });
    assert.equal(r.stats().processed, 2);
    assert.equal(r.stats().quarantined, 2);
    const refused = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.budget_exceeded.research");
    for (const q of refused) assert.match(header(q, QuarantineHeader.Detail)!, /the flow has spent 80 of its 100 cost units and this run reserves 30$/);
    assert.deepEqual(await ledgerTotals(mesh, flowIdOf(root)), { steps: 3, cost: 80, tokens: 2400 });
    const findings = (await mesh.messages("MESH_CAP", "mesh.cap.verify.v1")).map((m) => NatsBinding.toEvent(m));
    assert.equal(findings.length, 2);
    for (const f of findings) assert.deepEqual(spentOf(f), { cost: 40, tokens: 1200 }, "each finding carries what its run spent, signed");
  });

  test("budgets - a handler sees what remains; the workflow's wrap-up runs instead of quarantine", async () => {
    await using mesh = await startMesh();
    // A planner that plans no more tasks than the steps left after its own run allow, plus two to go over.
    const plan = fanOut(0, (ctx) => (ctx.budget?.remaining.steps ?? 0) + 2);
    const research = researcher({ wrapUp: true });
    await using planner = await run(mesh, plan.def);
    await using r = await run(mesh, research.def);
    await mesh.publish(PLAN, request(mesh, { budgetsteps: "4" }));
    await waitFor(() => planner.stats().processed === 1 && r.stats().processed === 5, { what: "every task handled or wrapped up" });
    assert.deepEqual(plan.shown.map((b) => b && { limit: b.limit, spent: b.spent.steps, remaining: b.remaining }), [{ limit: { steps: 4 }, spent: 0, remaining: { steps: 3 } }]);
    assert.equal(research.ran.length, 3);
    assert.deepEqual(research.wrapped.sort(), ["q3: steps", "q4: steps"]);
    assert.equal(r.stats().quarantined, 0);
    const findings = (await mesh.messages("MESH_CAP", "mesh.cap.verify.v1")).map((m) => NatsBinding.toEvent(m));
    const wrappedUp = findings.filter((f) => f.data.toString().includes("not researched: the flow has run 4 of its 4 steps"));
    assert.equal(wrappedUp.length, 2);
    // The record of the enforcement: the wrap-up's outputs carry the bound, signed; the handler's never do.
    assert.deepEqual(wrappedUp.map((f) => f.extensions[ContextExtension.WrapUp]), ["steps", "steps"]);
    assert.equal(findings.filter((f) => f.extensions[ContextExtension.WrapUp] !== undefined).length, 2);
  });

  test("budgets - a chain that never forks is checked against the spend it carries (signed flowcarry), and written to the ledger only where it forks or ends", async () => {
    await using mesh = await startMesh();
    const plan = fanOut(1);
    const research = researcher({ fixed: 5 });
    await using planner = await run(mesh, plan.def);
    await using r = await run(mesh, research.def);
    // Two runs in a row, each with one output: nothing is written, the finding carries the chain's spend.
    const chain = request(mesh, { budgetsteps: "5", budgetcost: "100" });
    await mesh.publish(PLAN, chain);
    await waitFor(() => r.stats().processed === 1, { what: "the chain's second run" });
    const [finding] = (await mesh.messages("MESH_CAP", "mesh.cap.verify.v1")).map((m) => NatsBinding.toEvent(m));
    assert.equal(finding!.extensions[ContextExtension.FlowCarry], "2,5,0", "two steps, the researcher's 5 units");
    assert.deepEqual(await ledgerTotals(mesh, flowIdOf(chain)), { steps: 0, cost: 0, tokens: 0 }, "no ledger write on an unforked chain");
    // The chain's carry counts: with one step left after the planner's, the researcher's run is refused.
    const short = request(mesh, { budgetsteps: "1" });
    await mesh.publish(PLAN, short);
    await waitFor(() => r.stats().quarantined === 1, { what: "the second chain's research refused" });
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.budget_exceeded.research");
    assert.match(header(q!, QuarantineHeader.Detail)!, /the flow has run 1 of its 1 steps$/);
    // A run that ends the chain (no output) writes what it carried and its own run.
    const ends = fanOut(0);
    await planner.stop();
    await using quiet = await run(mesh, ends.def);
    const ended = request(mesh, { budgetsteps: "5" });
    await mesh.publish(PLAN, ended);
    await waitFor(async () => (await ledgerTotals(mesh, flowIdOf(ended))).steps === 1, { what: "the ended chain written to the ledger" });
    assert.equal(quiet.stats().processed, 1);
    // A handler cannot set the carry: the planner's forged flowcarry never travels (its tasks carry the runtime's).
    assert.ok((await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).map((m) => NatsBinding.toEvent(m)).every((t) => t.extensions[ContextExtension.FlowCarry] === "1,0,0"));
  });

  test("budgets - what an agent emits outside a handler run (a deadline) stays in its flow's budget, priority and depth", async () => {
    await using mesh = await startMesh();
    const research = researcher();
    await using r = await run(mesh, research.def);
    const finding = mesh.event("gateway", { extensions: { budgetcost: "70", budgetsteps: "9", priority: "background", flowdepth: "4" } });
    const cause = { id: finding.id, source: finding.source, correlationid: flowIdOf(finding), context: flowContextOf(finding) };
    await r.emit(cause, [{
      to: "mesh.cap.verify.v1", type: "research.finding.created",
      data: { taskId: finding.id, claim: "late", evidence: [{ source: "urn:causeway:test", quote: "q" }], confidence: 0.5 },
    }]);
    // A background flow's work goes to the capability's background subject (priority lanes).
    const stored = await mesh.messages("MESH_CAP", "mesh.cap.verify.v1.>");
    assert.deepEqual(stored.map((m) => m.subject), ["mesh.cap.verify.v1.background"]);
    const [out] = stored.map((m) => NatsBinding.toEvent(m));
    assert.deepEqual(budgetOf(out!), { cost: 70, steps: 9 });
    assert.equal(priorityOf(out!), "background");
    assert.equal(out!.extensions[ContextExtension.FlowDepth], "5", "one deeper than its cause");
  });

  test("pressure - a handler sees the backlog of the capability it addresses, as the coordinator reports it, and can shrink its fan-out", async () => {
    await using mesh = await startMesh();
    const backlog = (research: number) => JSON.stringify({
      at: new Date().toISOString(), intervalMs: 1000, stream: { name: "MESH_CAP", messages: 0, bytes: 0, maxMsgs: -1, maxBytes: -1, fill: 0 },
      capabilities: { "research.v1": { backlog: research, pending: research, ackPending: 0, drainPerSecond: 0, durables: {} } },
    });
    // The planner plans one task per input while research is under pressure, five otherwise.
    const seen: unknown[] = [];
    const plan = fanOut(0, (ctx) => {
      const p = ctx.pressure("research", 1);
      seen.push(p);
      return p.level === "ok" ? 5 : 1;
    });
    const thresholds = loadBackpressure().default;
    const pressure = await new Kvm(mesh.nc).open(KvBucket.Pressure);
    await pressure.put(PRESSURE_KEY, backlog(thresholds.hard + 1));
    await using planner = await run(mesh, plan.def);
    await mesh.publish(PLAN, mesh.event("gateway"));
    await waitFor(() => planner.stats().processed === 1, { what: "the request planned" });
    assert.deepEqual(seen, [{ level: "hard", backlog: thresholds.hard + 1, stale: false }]);
    assert.equal((await mesh.messages("MESH_CAP", "mesh.cap.research.v1")).length, 1, "one task under pressure");
  });

  test("budgets - a run refused on a remembered ledger state is decided again on what the ledger holds: another replica's settlement lowered it", async () => {
    await using mesh = await startMesh();
    // Two replicas of one capability: each its own view of the ledger, remembering what it wrote last.
    const [a, b] = [await openFlowLedger(mesh.nc, "research", 1), await openFlowLedger(mesh.nc, "research", 1)];
    const flow = `flow-${crypto.randomUUID()}`;
    const budget = { cost: 15 };
    const reserve = { cost: 10, tokens: 0 };
    const first = { source: "test", id: "input-1" }, second = { source: "test", id: "input-2" };
    assert.equal((await a.admit(flow, first, { budget, reserve, maxRuns: 0 })).admitted, true);
    // Replica b settles the first run, which spent 1 of the 10 it reserved; a remembers 10 spent.
    assert.equal((await b.admit(flow, first, { budget, reserve, maxRuns: 0 })).admitted, true, "admitted before: no second charge");
    await b.settle(flow, first, { cost: 1, tokens: 0 });
    const decided = await a.admit(flow, second, { budget, reserve, maxRuns: 0 });
    assert.deepEqual(decided, { admitted: true, spent: { steps: 1, cost: 1, tokens: 0 }, remaining: { cost: 4 } });
    assert.deepEqual(await a.totals(flow), { steps: 2, cost: 11, tokens: 0 });
  });

  test("budgets - a malformed budget is refused before the handler; a flow without one never touches the ledger", async () => {
    await using mesh = await startMesh();
    const plan = fanOut(1);
    await using planner = await run(mesh, plan.def);
    const bad = ["-1", "1.5", "lots", "007"];
    for (const v of bad) await mesh.publish(PLAN, request(mesh, { budgetcost: v }));
    await waitFor(() => planner.stats().quarantined === bad.length, { what: "every malformed budget refused" });
    const refused = await mesh.messages("MESH_QUARANTINE", `mesh.quarantine.${QuarantineReason.DecodeError}.plan`);
    assert.deepEqual(refused.map((q) => header(q, QuarantineHeader.Code)), bad.map(() => ErrorCode.InvalidAttribute));
    assert.deepEqual(plan.shown, []);

    const free = mesh.event("gateway");
    await mesh.publish(PLAN, free);
    await waitFor(() => planner.stats().processed === 1, { what: "the unbudgeted request" });
    assert.deepEqual(plan.shown, [undefined], "no budget to show");
    assert.deepEqual(await ledgerTotals(mesh, flowIdOf(free)), { steps: 0, cost: 0, tokens: 0 }, "nothing charged");
  });
});
