// Lineage queries (why, trace, impact, listEvents) on a real SQLite store holding a recorded reference flow.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { impact, LineageQueryError, listEvents, trace, why } from "../services/lineage/queries.ts";
import type { EventStep } from "../services/lineage/queries.ts";
import { FLOW_CONTEXT, ms, populate, referenceFlow, RUN_SPEND, T0, tempStore, type FixtureEvent, type FlowFixture } from "./lineage-flow-fixture.ts";
import { lineageStoreKinds, type LineageStoreKind } from "./lineage-stores.ts";
import type { LineageStore } from "../services/lineage/store.ts";
import { renderTrace } from "../services/cli/lineage-render.ts";
import { ErrorCode, isCausewayError } from "../services/kit/index.ts";

async function setup(t: TestContext, kind: LineageStoreKind): Promise<{ store: LineageStore; flow: FlowFixture }> {
  const store = await tempStore(t, kind);
  const flow = referenceFlow();
  await populate(store, flow.contents);
  return { store, flow };
}

const wait = (e: FixtureEvent, input: FixtureEvent): number => ms(e, "startedat") - ms(input, "emittedat");
const work = (e: FixtureEvent): number => ms(e, "emittedat") - ms(e, "startedat");
const stepOf = (steps: readonly EventStep[], e: FixtureEvent): EventStep => {
  const s = steps.find((x) => x.id === e.id && x.source === e.source);
  assert.ok(s, `no step for ${e.type} ${e.id}`);
  return s;
};

for (const kind of lineageStoreKinds) {
  describe(`on ${kind.name}`, () => {
    test("why - the released report walks back to the upstream request, one step per event, with agents and keys", async (t) => {
      const { store, flow } = await setup(t, kind);
      const answer = await why(store, flow.released.id);
      const chain = [flow.released, flow.report, flow.verified[1]!, flow.findings[1]!, flow.tasks[1]!, flow.request];
      assert.deepEqual(answer.steps.map((s) => s.id), chain.map((e) => e.id));
      assert.deepEqual(answer.end, { kind: "root" });
      assert.deepEqual(answer.steps.map((s) => s.principal), ["publisher", "reporter", "verifier", "researcher", "planner", "gateway"]);
      assert.deepEqual(answer.steps.map((s) => s.keyid), ["publisher", "reporter", "verifier", "researcher", "planner", "gateway"].map((p) => flow.keyids[p as "gateway"]));
      assert.deepEqual(answer.steps.map((s) => s.inputs), [...chain.slice(1).map((e) => [e.id]), []]);
      assert.ok(answer.steps.every((s) => s.verification.result === "verified"));
      assert.equal(answer.steps[0]!.time, flow.released.attributes.time);
      assert.equal(answer.steps[0]!.type, "report.released");
      // The report went through the critical handoff and was forwarded: one step, two appearances.
      assert.deepEqual(answer.steps[1]!.appearances.map((a) => [a.stream, a.subject]), [
        ["MESH_HANDOFF", "mesh.handoff.publish.v1"], ["MESH_CAP", "mesh.cap.publish.v1"],
      ]);
      // The request: its raw upstream copy failed (unsigned), the notarized copy verified; the step is the verified one.
      const root = answer.steps[5]!;
      assert.deepEqual(root.appearances.map((a) => [a.stream, a.verified, a.code]), [["MESH_INGEST", false, "CW_ERR_UNSIGNED"], ["MESH_CAP", true, undefined]]);
      assert.deepEqual(root.verification, { result: "verified" });
    });

    test("why - queue wait and processing time come exactly from the signed startedat and emittedat", async (t) => {
      const { store, flow } = await setup(t, kind);
      const { steps } = await why(store, flow.released.id);
      const pairs: [FixtureEvent, FixtureEvent][] = [
        [flow.released, flow.report], [flow.report, flow.verified[1]!], [flow.verified[1]!, flow.findings[1]!],
        [flow.findings[1]!, flow.tasks[1]!], [flow.tasks[1]!, flow.request],
      ];
      for (const [event, input] of pairs) {
        const s = stepOf(steps, event);
        assert.deepEqual(s.queueWait, { ms: wait(event, input) }, event.type);
        assert.deepEqual(s.processing, { ms: work(event) }, event.type);
        assert.equal(s.startedAt, event.attributes.startedat);
        assert.equal(s.emittedAt, event.attributes.emittedat);
      }
      assert.equal(stepOf(steps, flow.released).queueWait.ms, 95_070);
      assert.equal(stepOf(steps, flow.tasks[1]!).queueWait.ms, 37);
      // The notarized request has an emittedat but no startedat and no input.
      const root = stepOf(steps, flow.request);
      assert.equal(root.queueWait.ms, null);
      assert.match(root.queueWait.reason!, /no signed startedat/);
      assert.equal(root.processing.ms, null);
    });

    test("why - a failed record has null timings and its failure; its input's walk goes on", async (t) => {
      const { store, flow } = await setup(t, kind);
      const answer = await why(store, flow.forged.id);
      const forged = answer.steps[0]!;
      assert.deepEqual(forged.verification, { result: "failed", code: "CW_ERR_BAD_SIGNATURE", detail: "the DSSE signature does not verify" });
      assert.equal(forged.principal, null);
      assert.equal(forged.keyid, flow.keyids.researcher);
      assert.equal(forged.startedAt, null, "an unverified startedat is not reported as signed");
      assert.equal(forged.queueWait.ms, null);
      assert.match(forged.queueWait.reason!, /did not verify/);
      assert.equal(forged.processing.ms, null);
      assert.match(forged.processing.reason!, /did not verify/);
      assert.deepEqual(forged.appearances.map((a) => [a.stream, a.quarantine?.reason]), [["MESH_CAP", undefined], ["MESH_QUARANTINE", "bad_signature"]]);
      assert.deepEqual(answer.steps.map((s) => s.id), [flow.forged.id, flow.tasks[0]!.id, flow.request.id]);
    });

    test("why - a quarantined finding lists its quarantine copy with reason, detail and detecting principal", async (t) => {
      const { store, flow } = await setup(t, kind);
      const low = flow.findings[2]!;
      const [step] = (await why(store, low.id)).steps;
      assert.equal(step!.appearances.length, 2);
      const q = step!.appearances[1]!;
      assert.equal(q.stream, "MESH_QUARANTINE");
      assert.equal(q.subject, "mesh.quarantine.low_confidence.verify");
      assert.deepEqual(q.quarantine, {
        reason: "low_confidence", detail: "confidence 0.2 is below 0.5", code: "CW_ERR_POLICY_VERDICT", detectedBy: "verifier",
        detectedAt: new Date(ms(low, "emittedat") + 45).toISOString(), originalStream: "MESH_CAP", originalSeq: step!.appearances[0]!.seq,
        originalSubject: "mesh.cap.verify.v1",
      });
      assert.deepEqual(step!.queueWait, { ms: wait(low, flow.tasks[2]!) });
    });

    test("why - a decision's input is the event decided on; without startedat its timings are null", async (t) => {
      const { store, flow } = await setup(t, kind);
      const { steps } = await why(store, flow.approval.id);
      assert.deepEqual(steps.map((s) => s.id).slice(0, 2), [flow.approval.id, flow.report.id]);
      assert.equal(steps[0]!.principal, "approver");
      assert.equal(steps[0]!.emittedAt, flow.approval.attributes.emittedat);
      assert.match(steps[0]!.queueWait.reason!, /no signed startedat/);
      assert.match(steps[0]!.processing.reason!, /no signed startedat/);
    });

    test("why - an input lineage never recorded ends the walk as missing", async (t) => {
      const { store, flow } = await setup(t, kind);
      const answer = await why(store, flow.orphan.id);
      assert.equal(answer.steps.length, 1);
      assert.deepEqual(answer.end, { kind: "missing", id: flow.orphan.attributes.causationid });
      assert.equal(answer.steps[0]!.queueWait.ms, null);
      assert.match(answer.steps[0]!.queueWait.reason!, /not recorded/);
      assert.deepEqual(answer.steps[0]!.processing, { ms: work(flow.orphan) });
    });

    test("why - an unknown id fails with CW_ERR_LINEAGE_NOT_FOUND", async (t) => {
      const { store } = await setup(t, kind);
      await assert.rejects(why(store, "no-such-event"), (err: unknown) => {
        assert.ok(isCausewayError(err, ErrorCode.LineageNotFound));
        assert.match(err.message, /no-such-event/);
        return true;
      });
    });

    test("why - an id under several sources fails with CW_ERR_LINEAGE_AMBIGUOUS_ID listing them, unless the source is given", async (t) => {
      const { store, flow } = await setup(t, kind);
      await assert.rejects(why(store, flow.ambiguousId), (err: unknown) => {
        assert.ok(err instanceof LineageQueryError);
        assert.equal(err.code, ErrorCode.LineageAmbiguousId);
        assert.deepEqual(err.sources, flow.ambiguousSources);
        for (const s of flow.ambiguousSources) assert.ok(err.message.includes(s));
        return true;
      });
      const answer = await why(store, flow.ambiguousId, { source: flow.ambiguousSources[1]! });
      assert.equal(answer.source, flow.ambiguousSources[1]);
      assert.equal(answer.steps[0]!.appearances.length, 1);
      await assert.rejects(why(store, flow.ambiguousId, { source: "https://other.example" }), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotFound));
    });

    test("trace - the flow is a DAG of every event: decisions and quarantined events included, one edge per causation", async (t) => {
      const { store, flow } = await setup(t, kind);
      const answer = await trace(store, flow.correlationId);
      const events = [
        flow.request, ...flow.tasks, ...flow.findings, flow.forged, ...flow.verified, flow.report, flow.approvalRequested, flow.approval, flow.grant,
        flow.released,
      ];
      assert.deepEqual(new Set(answer.nodes.map((n) => n.id)), new Set(events.map((e) => e.id)));
      assert.equal(answer.nodes.length, events.length);
      const edges = new Set(answer.edges.map((e) => `${e.from}>${e.to}`));
      assert.equal(answer.edges.length, events.length - 1);
      for (const e of events.slice(1)) assert.ok(edges.has(`${e.attributes.causationid}>${e.id}`), e.type);
      assert.deepEqual(answer.missingInputs, []);
      for (const d of [flow.approvalRequested, flow.approval, flow.grant]) assert.ok(edges.has(`${flow.report.id}>${d.id}`));
      assert.equal(stepOf(answer.nodes, flow.findings[2]!).appearances[1]!.quarantine?.reason, "low_confidence");
      // Node timings are the same as why's.
      assert.deepEqual(stepOf(answer.nodes, flow.verified[0]!).queueWait, { ms: wait(flow.verified[0]!, flow.findings[0]!) });
      assert.deepEqual(stepOf(answer.nodes, flow.released).processing, { ms: work(flow.released) });
    });

    test("trace - the timeline is in time order, signed emittedat where there is one", async (t) => {
      const { store, flow } = await setup(t, kind);
      const { timeline } = await trace(store, flow.correlationId);
      const times = timeline.map((e) => Date.parse(e.at!));
      assert.deepEqual(times, [...times].sort((a, b) => a - b));
      // The forged finding's unsigned time is cut to the second, so it sorts before the request's signed emittedat.
      assert.deepEqual(timeline.filter((e) => e.basis === "emittedat").map((e) => e.id)[0], flow.request.id);
      assert.equal(timeline.at(-1)!.id, flow.released.id);
      assert.deepEqual(timeline.find((e) => e.id === flow.tasks[0]!.id), {
        at: flow.tasks[0]!.attributes.emittedat, basis: "emittedat", id: flow.tasks[0]!.id, source: "causeway://planner",
        type: "research.task.created", principal: "planner", version: flow.tasks[0]!.attributes.agentversion, streams: ["MESH_CAP"],
      });
      assert.equal(flow.tasks[0]!.attributes.agentversion, "1.4.2", "the implementation version the planner signed");
      // The gateway's notarized request names no agent version; the forged finding's is not trusted.
      assert.equal(timeline.find((e) => e.id === flow.request.id)!.version, null);
      // The forged finding did not verify: its emittedat is not signed, so the timeline uses its time attribute.
      const forged = timeline.find((e) => e.id === flow.forged.id)!;
      assert.deepEqual([forged.basis, forged.at], ["time", flow.forged.attributes.time]);
      assert.deepEqual(timeline.find((e) => e.id === flow.report.id)!.streams, ["MESH_HANDOFF", "MESH_CAP"]);
    });

    test("trace - the critical path is the causal chain of the last event, with per-edge and total durations", async (t) => {
      const { store, flow } = await setup(t, kind);
      const path = (await trace(store, flow.correlationId)).criticalPath!;
      const chain = [flow.request, flow.tasks[1]!, flow.findings[1]!, flow.verified[1]!, flow.report, flow.released];
      assert.deepEqual(path.events, chain.map((e) => e.id));
      assert.deepEqual(path.edges, chain.slice(1).map((to, i) => ({
        from: chain[i]!.id, to: to.id, ms: ms(to, "emittedat") - ms(chain[i]!, "emittedat"), signed: true,
      })));
      assert.equal(path.totalMs, ms(flow.released, "emittedat") - ms(flow.request, "emittedat"));
      assert.equal(path.totalMs, path.edges.reduce((sum, e) => sum + e.ms, 0));
      assert.equal(path.signed, true);
    });

    test("trace - spend per step from signed values, per flow each run once, against the flow's priority and budget", async (t) => {
      const { store, flow } = await setup(t, kind);
      const answer = await trace(store, flow.correlationId);
      // Every output of a run shows what that run spent; the forged finding's claim is not believed.
      for (const task of flow.tasks) assert.deepEqual(stepOf(answer.nodes, task).spent, RUN_SPEND.planner);
      for (const f of flow.findings) assert.deepEqual(stepOf(answer.nodes, f).spent, RUN_SPEND.researcher);
      for (const v of flow.verified) assert.deepEqual(stepOf(answer.nodes, v).spent, RUN_SPEND.verifier);
      assert.equal(stepOf(answer.nodes, flow.forged).spent, null);
      assert.deepEqual(stepOf(answer.nodes, flow.report).spent, { cost: 0, tokens: 0 });
      assert.deepEqual(stepOf(answer.nodes, flow.grant).spent, { cost: 0, tokens: 0 });
      // Runs: the planner's (three tasks, counted once), three researcher, two verifier, the reporter's and the
      // publisher's. Decisions are no runs; the forged finding claims 9999 units, a background priority and a
      // bigger budget, and none of it counts.
      const cost = RUN_SPEND.planner.cost + 3 * RUN_SPEND.researcher.cost + 2 * RUN_SPEND.verifier.cost;
      const tokens = RUN_SPEND.planner.tokens + 3 * RUN_SPEND.researcher.tokens;
      assert.deepEqual(answer.spend, {
        cost, tokens, runs: 8, priority: "critical",
        budget: { cost: Number(FLOW_CONTEXT.budgetcost), tokens: Number(FLOW_CONTEXT.budgettokens), steps: Number(FLOW_CONTEXT.budgetsteps) },
        remaining: { cost: Number(FLOW_CONTEXT.budgetcost) - cost, tokens: Number(FLOW_CONTEXT.budgettokens) - tokens, steps: Number(FLOW_CONTEXT.budgetsteps) - 8 },
        contextFrom: flow.request.id, unverified: 1, otherContext: [], refusedForBudget: 0, malformedSpend: [],
      });
      assert.deepEqual([cost, tokens], [129, 3900]);
    });

    test("trace - a verified output that did not inherit its flow's priority or budget is named; the flow's own are the root's", async (t) => {
      const store = await tempStore(t, kind);
      const flow = referenceFlow();
      // The publisher signed the release with another budget and no priority (read as normal).
      const contents = flow.contents.map((c) => {
        if (c.attributes?.id !== flow.released.id) return c;
        const { priority: _, ...rest } = c.attributes;
        return { ...c, attributes: { ...rest, budgetcost: "999999" } };
      });
      await populate(store, contents);
      const { spend } = await trace(store, flow.correlationId);
      assert.deepEqual(spend.otherContext, [flow.released.id]);
      assert.equal(spend.priority, "critical");
      assert.equal(spend.budget!.cost, Number(FLOW_CONTEXT.budgetcost));
    });

    test("trace - a verified run output with a malformed signed spend is named, and its run counted with nothing spent", async (t) => {
      const store = await tempStore(t, kind);
      const flow = referenceFlow();
      const complete = await (async () => {
        const s = await tempStore(t, kind);
        await populate(s, flow.contents);
        return (await trace(s, flow.correlationId)).spend;
      })();
      // The publisher signed a spend that is no count.
      const contents = flow.contents.map((c) => (c.attributes?.id !== flow.released.id ? c : { ...c, attributes: { ...c.attributes, spentcost: "lots" } }));
      await populate(store, contents);
      const answer = await trace(store, flow.correlationId);
      assert.deepEqual(answer.spend.malformedSpend, [flow.released.id]);
      assert.equal(answer.spend.runs, complete.runs, "the run still counts");
      const released = answer.nodes.find((n) => n.id === flow.released.id)!;
      assert.equal(released.spent, null);
      assert.match(renderTrace(answer), new RegExp(`counted as nothing: the spend of 1 run whose signed spend is malformed \\(`));
    });

    test("trace - an unknown correlation id fails with CW_ERR_LINEAGE_NOT_FOUND; a non-root event id names its flow", async (t) => {
      const { store, flow } = await setup(t, kind);
      await assert.rejects(trace(store, "no-such-flow"), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotFound));
      await assert.rejects(trace(store, flow.tasks[0]!.id), (err: unknown) => {
        assert.ok(isCausewayError(err, ErrorCode.LineageNotFound));
        assert.ok(err.message.includes(flow.correlationId));
        return true;
      });
    });

    test("impact - every descendant of the request, breadth first, with its depth", async (t) => {
      const { store, flow } = await setup(t, kind);
      const answer = await impact(store, flow.request.id);
      assert.equal(answer.event.id, flow.request.id);
      const depth = new Map(answer.descendants.map((d) => [d.id, d.depth]));
      const expected: [FixtureEvent, number][] = [
        ...flow.tasks.map((e) => [e, 1] as [FixtureEvent, number]), ...flow.findings.map((e) => [e, 2] as [FixtureEvent, number]), [flow.forged, 2],
        ...flow.verified.map((e) => [e, 3] as [FixtureEvent, number]), [flow.report, 4], [flow.approvalRequested, 5], [flow.approval, 5],
        [flow.grant, 5], [flow.released, 5],
      ];
      assert.deepEqual(depth, new Map(expected.map(([e, d]) => [e.id, d])));
      const depths = answer.descendants.map((d) => d.depth);
      assert.deepEqual(depths, [...depths].sort((a, b) => a - b));
      assert.deepEqual(stepOf(answer.descendants, flow.released).queueWait, { ms: wait(flow.released, flow.report) });
    });

    test("impact - a leaf has no descendants; the report has its decisions and its release at depth 1", async (t) => {
      const { store, flow } = await setup(t, kind);
      assert.deepEqual((await impact(store, flow.released.id)).descendants, []);
      const report = await impact(store, flow.report.id);
      assert.deepEqual(report.descendants.map((d) => [d.type, d.depth]), [
        ["decision.approval.requested", 1], ["decision.approval", 1], ["decision.grant", 1], ["report.released", 1],
      ]);
      await assert.rejects(impact(store, "nope"), (err: unknown) => isCausewayError(err, ErrorCode.LineageNotFound));
    });

    test("listEvents - filters by agent, implementation version, type, stream, failures and time, and pages", async (t) => {
      const { store, flow } = await setup(t, kind);
      // Listings show which implementation did the work: the planner's tasks carry the version it signed.
      const planner = await listEvents(store, { principal: "planner" });
      assert.ok(planner.events.length > 0);
      assert.deepEqual([...new Set(planner.events.map((e) => e.version))], [flow.tasks[0]!.attributes.agentversion]);
      // By version: exactly the events that version signed, paged like any listing; another version has none.
      const byVersion = await listEvents(store, {}, flow.tasks[0]!.attributes.agentversion);
      assert.deepEqual(byVersion.events.map((e) => e.id), flow.tasks.map((e) => e.id));
      assert.equal(byVersion.next, null);
      const oneByVersion = await listEvents(store, { limit: 1 }, flow.tasks[0]!.attributes.agentversion);
      assert.deepEqual(oneByVersion.events.map((e) => e.id), [flow.tasks[0]!.id]);
      assert.deepEqual((await listEvents(store, { limit: 5, afterIndex: oneByVersion.next! }, flow.tasks[0]!.attributes.agentversion)).events.map((e) => e.id), flow.tasks.slice(1).map((e) => e.id));
      assert.deepEqual((await listEvents(store, {}, "0.0.1")).events, []);
      const verifier = await listEvents(store, { principal: "verifier" });
      assert.deepEqual(verifier.events.map((e) => e.id), flow.verified.map((e) => e.id));
      assert.equal(verifier.next, null);
      assert.deepEqual((await listEvents(store, { type: "decision.approval" })).events.map((e) => [e.id, e.principal, e.keyid]), [
        [flow.approval.id, "approver", flow.keyids.approver],
      ]);
      const failed = await listEvents(store, { failedOnly: true });
      assert.deepEqual(failed.events.map((e) => [e.stream, e.code]), [
        ["MESH_INGEST", "CW_ERR_UNSIGNED"], ["MESH_CAP", "CW_ERR_BAD_SIGNATURE"], ["MESH_QUARANTINE", "CW_ERR_BAD_SIGNATURE"],
      ]);
      const quarantined = await listEvents(store, { stream: "MESH_QUARANTINE" });
      assert.deepEqual(quarantined.events.map((e) => [e.id, e.quarantineReason]), [[flow.forged.id, "bad_signature"], [flow.findings[2]!.id, "low_confidence"]]);
      const early = await listEvents(store, { fromMs: T0, toMs: T0 + 1000 });
      assert.ok(early.events.length > 0);
      assert.ok(early.events.every((e) => Date.parse(e.time!) >= T0 && Date.parse(e.time!) < T0 + 1000));
      const first = await listEvents(store, { limit: 5 });
      assert.deepEqual(first.events.map((e) => e.index), [0, 1, 2, 3, 4]);
      assert.equal(first.next, 4);
      const second = await listEvents(store, { limit: 5, afterIndex: first.next! });
      assert.deepEqual(second.events.map((e) => e.index), [5, 6, 7, 8, 9]);
      const summary = first.events[1]!;
      assert.deepEqual(summary, {
        index: 1, stream: "MESH_CAP", seq: 1, subject: "mesh.cap.plan.v1", source: flow.request.source, id: flow.request.id, type: "report.requested",
        time: flow.request.attributes.time, principal: "gateway", version: null, keyid: flow.keyids.gateway, verified: true, code: null, correlationid: flow.correlationId,
        causationid: null, quarantineReason: null, spent: { cost: 0, tokens: 0 },
      });
      // Listings show what a run spent, from verified records only (the forged finding and its quarantine copy claim 9999).
      const findings = await listEvents(store, { type: "research.finding.created" });
      assert.deepEqual(findings.events.map((e) => [e.id, e.spent]), [
        ...flow.findings.map((f) => [f.id, RUN_SPEND.researcher]), [flow.forged.id, null], [flow.forged.id, null], [flow.findings[2]!.id, RUN_SPEND.researcher], [flow.orphan.id, { cost: 0, tokens: 0 }],
      ]);
    });
  });
}
