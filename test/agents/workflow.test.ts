// The reference workflow in process: request → planner → researcher → verifier → reporter, each input going
// through policy then handler, each output through the checks and the binary binding a consumer would see.
import assert from "node:assert/strict";
import { test } from "node:test";
import { createPlannerDefinition } from "../../services/agents/planner/definition.ts";
import { createReporterDefinition, reporterDeadlineSweep } from "../../services/agents/reporter/definition.ts";
import { createMemoryJoinStore, type JoinStore } from "../../services/agents/reporter/joins.ts";
import type { ReportPublished } from "../../services/agents/reporter/report.ts";
import { createResearcherDefinition } from "../../services/agents/researcher/definition.ts";
import { createVerifierDefinition } from "../../services/agents/verifier/definition.ts";
import { dataOf, requestEvent, run, subjects } from "./fixtures.ts";
import type { Cause, CloudEvent, Emit } from "../../services/kit/index.ts";

async function flow(data: Record<string, unknown>, store: JoinStore) {
  const planner = createPlannerDefinition(), researcher = createResearcherDefinition(), verifier = createVerifierDefinition();
  const reporter = createReporterDefinition({ store });
  const quarantined: string[] = [];
  const reports: CloudEvent[] = [];
  for (const task of (await run(planner, requestEvent(data))).events) {
    for (const finding of (await run(researcher, task)).events) {
      const verified = await run(verifier, finding);
      if (verified.verdict) quarantined.push(`${verified.verdict.reason}: ${String(finding.extensions.query)}`);
      // The reporter also hands each report to publish.v1; the report as a fact is the one on mesh.evt.
      for (const v of verified.events) {
        const out = await run(reporter, v);
        reports.push(...out.events.filter((_, i) => out.emits[i]!.to === "mesh.evt.report.published.v1"));
      }
    }
  }
  return { quarantined, reports };
}

test("workflow - the demo request ends in one complete report", async () => {
  const { quarantined, reports } = await flow({ topic: "Grid-scale battery storage in 2026", requester: "analyst@example.com", questions: ["Which chemistries lead?", "What does a MWh cost?"] }, createMemoryJoinStore());
  assert.deepEqual(quarantined, []);
  assert.equal(reports.length, 1);
  const report = dataOf<ReportPublished>(reports[0]!);
  assert.equal(report.complete, true);
  assert.equal(report.findingsCount, 2);
  assert.equal(report.title, "Report: Grid-scale battery storage in 2026");
});

test("workflow - a rumour is quarantined as low_confidence and the report goes out at the deadline, incomplete", async () => {
  const store = createMemoryJoinStore();
  const { quarantined, reports } = await flow({ topic: "Batteries", requester: "r", questions: ["Which chemistries lead?", "Is the rumor about sodium-ion true?"] }, store);
  assert.deepEqual(quarantined, ["low_confidence: Is the rumor about sodium-ion true?"]);
  assert.equal(reports.length, 0);
  const sent: { cause: Cause; emits: readonly Emit[] }[] = [];
  const agent = { emit: (cause: Cause, emits: readonly Emit[]) => { sent.push({ cause, emits }); return Promise.resolve(); } };
  assert.equal(await reporterDeadlineSweep(agent, store, Date.parse("2026-03-01T10:00:10Z"), { subjects }), 1);
  const report = sent[0]!.emits[0]!.data as ReportPublished;
  assert.equal(report.complete, false);
  assert.equal(report.findingsCount, 1);
});
