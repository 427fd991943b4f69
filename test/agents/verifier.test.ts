import assert from "node:assert/strict";
import { test } from "node:test";
import { createPlannerDefinition } from "../../services/agents/planner/definition.ts";
import { createResearcherDefinition } from "../../services/agents/researcher/definition.ts";
import { loadVerifierConfig } from "../../services/agents/verifier/config.ts";
import { checkEvidence, createVerifierDefinition, type FindingCreated, type FindingVerified } from "../../services/agents/verifier/definition.ts";
import { dataOf, fakeContext, requestEvent, run, scriptedModel } from "./fixtures.ts";
import { ConfigError, createEvent, type CloudEvent } from "../../services/kit/index.ts";

/** The finding the researcher makes of the first question. */
async function findingFor(question: string): Promise<CloudEvent> {
  const [task] = (await run(createPlannerDefinition(), requestEvent({ topic: "Grid-scale battery storage", requester: "r", questions: [question, "other"] }))).events;
  return (await run(createResearcherDefinition(), task!)).events[0]!;
}

/** A copy of `finding` with other data. */
function withData(finding: CloudEvent, data: Partial<FindingCreated>): CloudEvent {
  return createEvent({ ...finding, data: JSON.stringify({ ...dataOf<FindingCreated>(finding), ...data }) });
}

test("verifier - policy quarantines a finding without evidence as missing_evidence", async () => {
  const finding = withData(await findingFor("Which chemistries lead?"), { evidence: [], confidence: 0.95 });
  const { verdict, emits } = await run(createVerifierDefinition(), finding);
  assert.equal(verdict?.reason, "missing_evidence");
  assert.equal(emits.length, 0);
});

test("verifier - policy quarantines a finding below the minimum confidence as low_confidence", async () => {
  const rumor = await findingFor("Is the rumor about sodium-ion true?");
  const { verdict } = await run(createVerifierDefinition(), rumor);
  assert.equal(verdict?.reason, "low_confidence");
  assert.match(verdict!.detail, /confidence 0\.3 is below the minimum 0\.6/);
  const justBelow = withData(await findingFor("Which chemistries lead?"), { confidence: 0.59 });
  assert.equal((await run(createVerifierDefinition(), justBelow)).verdict?.reason, "low_confidence");
});

test("verifier - a finding with evidence at the minimum confidence passes the policy", async () => {
  const atMin = withData(await findingFor("Which chemistries lead?"), { confidence: 0.6 });
  const { verdict, events } = await run(createVerifierDefinition(), atMin);
  assert.equal(verdict, undefined);
  assert.equal(events.length, 1);
  const lowered = createVerifierDefinition({ config: loadVerifierConfig({ CAUSEWAY_MIN_CONFIDENCE: "0.2" }) });
  assert.equal((await run(lowered, await findingFor("Is the rumor about sodium-ion true?"))).verdict, undefined);
});

test("verifier - emits the verdict to report.v1 with the claim and the request's context carried on", async () => {
  const finding = await findingFor("Which chemistries lead?");
  const { emits, events } = await run(createVerifierDefinition(), finding);
  assert.equal(emits[0]!.to, "mesh.cap.report.v1");
  assert.equal(emits[0]!.type, "research.finding.verified");
  const verified = dataOf<FindingVerified>(events[0]!);
  assert.deepEqual(verified, { findingId: finding.id, verdict: "supported", confidence: dataOf<FindingCreated>(finding).confidence });
  const ext = events[0]!.extensions;
  assert.equal(ext.claim, dataOf<FindingCreated>(finding).claim);
  for (const name of ["requestid", "taskindex", "totaltasks", "query", "topic", "requesttime"]) assert.equal(ext[name], finding.extensions[name], name);
  assert.equal(ext.causationid, finding.id);
});

test("verifier - the word check: a quote sharing two content words supports the claim, otherwise inconclusive", () => {
  const claim = "Lithium iron phosphate leads grid storage.";
  assert.deepEqual(checkEvidence({ claim, evidence: [{ source: "urn:x", quote: "Most grid storage uses lithium iron phosphate." }], confidence: 0.8 }), { verdict: "supported", confidence: 0.8 });
  assert.deepEqual(checkEvidence({ claim, evidence: [{ source: "urn:x", quote: "Tulips bloom in spring." }], confidence: 0.8 }), { verdict: "inconclusive", confidence: 0.5 });
});

test("verifier - a model's verdict is used; a malformed one falls back to the word check with a warning", async () => {
  const finding = await findingFor("Which chemistries lead?");
  const model = scriptedModel(JSON.stringify({ verdict: "refuted", confidence: 0.7 }), JSON.stringify({ verdict: "maybe", confidence: 0.7 }));
  const def = createVerifierDefinition({ model });
  assert.deepEqual(dataOf<FindingVerified>((await run(def, finding)).events[0]!), { findingId: finding.id, verdict: "refuted", confidence: 0.7 });
  assert.match(model.requests[0]!.user, /Claim: .*\nEvidence:\n\[1\] urn:causeway:corpus:/);
  const { ctx, lines } = fakeContext();
  assert.equal(dataOf<FindingVerified>((await run(def, finding, ctx)).events[0]!).verdict, "supported");
  assert.ok(lines.some((l) => l.level === "warn" && /word check/.test(String(l.msg))));
});

test("verifier - config: CAUSEWAY_MIN_CONFIDENCE is a number from 0 to 1", () => {
  assert.equal(loadVerifierConfig({}).minConfidence, 0.6);
  assert.equal(loadVerifierConfig({ CAUSEWAY_MIN_CONFIDENCE: "0.75" }).minConfidence, 0.75);
  assert.equal(loadVerifierConfig({ CAUSEWAY_MIN_CONFIDENCE: "1" }).minConfidence, 1);
  for (const bad of ["1.5", "-0.1", "abc", "0.6x"]) {
    assert.throws(() => loadVerifierConfig({ CAUSEWAY_MIN_CONFIDENCE: bad }), (err: unknown) =>
      err instanceof ConfigError && err.message.startsWith(`CAUSEWAY_MIN_CONFIDENCE=${JSON.stringify(bad)} is invalid`) && /a number from 0 to 1/.test(err.message), bad);
  }
});
