import { test } from "node:test";
import assert from "node:assert/strict";
import {
  ErrorCode, StreamName, SubjectError, SubjectKind, capabilitySubject, checkpointSubject, controlSubject, decisionSubject, eventSubject, handoffSubject, ingestSubject, parseSubject, quarantineSubject, streamFor, subjectsFor, type ErrorCodeValue, type Lane, type ParsedSubject,
} from "../../services/kit/index.ts";

function subjectError(code: ErrorCodeValue, ...fragments: string[]) {
  return (err: unknown) => {
    assert.ok(err instanceof SubjectError, `expected a SubjectError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const f of fragments) assert.ok(err.message.includes(f), `"${err.message}" should mention "${f}"`);
    return true;
  };
}

/** Builds the subject of a parsed value again, through the builder of its kind. */
function build(p: ParsedSubject): string {
  const s = subjectsFor(p.prefix);
  switch (p.kind) {
    case "ingest": return s.ingest(p.source, ...p.rest);
    case "cap": return p.lane === undefined ? s.capability(p.capability, p.major, p.priority) : s.lane(p.capability, p.major, p.lane as Lane, p.priority);
    case "handoff": return s.handoff(p.capability, p.major);
    case "evt": return s.event(p.type, p.major);
    case "decision": return s.decision(p.decision);
    case "quarantine": return s.quarantine(p.reason, p.capability);
    case "ctl": return s.control(p.service, p.action);
    case "checkpoint": return s.checkpoint();
  }
}

const examples: [string, ParsedSubject, string | undefined][] = [
  [capabilitySubject("research", 1), { kind: "cap", prefix: "mesh", capability: "research", major: 1 }, StreamName.Cap],
  [subjectsFor().lane("research", 1, "l2"), { kind: "cap", prefix: "mesh", capability: "research", major: 1, lane: "l2" }, StreamName.Cap],
  [subjectsFor().capability("research", 1, "critical"), { kind: "cap", prefix: "mesh", capability: "research", major: 1, priority: "critical" }, StreamName.Cap],
  [subjectsFor().lane("research", 1, "l2", "background"), { kind: "cap", prefix: "mesh", capability: "research", major: 1, lane: "l2", priority: "background" }, StreamName.Cap],
  [handoffSubject("publish_report", 0), { kind: "handoff", prefix: "mesh", capability: "publish_report", major: 0 }, StreamName.Handoff],
  [eventSubject("report.published", 1), { kind: "evt", prefix: "mesh", type: "report.published", major: 1 }, StreamName.Evt],
  [eventSubject("audit", 0), { kind: "evt", prefix: "mesh", type: "audit", major: 0 }, StreamName.Evt],
  [decisionSubject("grant"), { kind: "decision", prefix: "mesh", decision: "grant" }, StreamName.Decision],
  [quarantineSubject("schema_violation", "research"), { kind: "quarantine", prefix: "mesh", reason: "schema_violation", capability: "research" }, StreamName.Quarantine],
  [ingestSubject("crm", "report", "requested"), { kind: "ingest", prefix: "mesh", source: "crm", rest: ["report", "requested"] }, StreamName.Ingest],
  [controlSubject("coordinator", "pause"), { kind: "ctl", prefix: "mesh", service: "coordinator", action: "pause" }, undefined],
  [checkpointSubject(), { kind: "checkpoint", prefix: "mesh" }, StreamName.Audit],
];

test("subjects - builders follow the subject grammar", () => {
  assert.deepEqual(
    examples.map(([s]) => s),
    [
      "mesh.cap.research.v1",
      "mesh.cap.research.v1.l2",
      "mesh.cap.research.v1.critical",
      "mesh.cap.research.v1.l2.background",
      "mesh.handoff.publish_report.v0",
      "mesh.evt.report.published.v1",
      "mesh.evt.audit.v0",
      "mesh.decision.grant",
      "mesh.quarantine.schema_violation.research",
      "mesh.ingest.crm.report.requested",
      "mesh.ctl.coordinator.pause",
      "mesh.audit.checkpoint",
    ],
  );
});

test("subjects - every builder/parser pair round-trips", () => {
  for (const [subject, parsed] of examples) {
    assert.deepEqual(parseSubject(subject), parsed, subject);
    assert.equal(build(parseSubject(subject)), subject);
  }
  assert.deepEqual(new Set(examples.map(([, p]) => p.kind)), new Set(Object.values(SubjectKind)), "every kind is covered");
});

test("subjects - streamFor names the stream that captures each kind", () => {
  for (const [subject, , stream] of examples) assert.equal(streamFor(parseSubject(subject)), stream, subject);
  const cap: "MESH_CAP" = streamFor({ kind: "cap", prefix: "mesh", capability: "x", major: 1 });
  assert.equal(cap, "MESH_CAP");
});

test("subjects - large and zero majors", () => {
  assert.equal(capabilitySubject("x", 0), "mesh.cap.x.v0");
  assert.equal(capabilitySubject("x", Number.MAX_SAFE_INTEGER), `mesh.cap.x.v${Number.MAX_SAFE_INTEGER}`);
  assert.deepEqual(parseSubject(`mesh.cap.x.v${Number.MAX_SAFE_INTEGER}`), { kind: "cap", prefix: "mesh", capability: "x", major: Number.MAX_SAFE_INTEGER });
});

test("subjects - builders reject invalid tokens naming the token and the rule", () => {
  const bad: [string, () => string, string][] = [
    ["uppercase", () => capabilitySubject("Research", 1), '"Research"'],
    ["dot", () => capabilitySubject("report.x", 1), '"report.x"'],
    ["an empty type token", () => eventSubject("report..published", 1), '""'],
    ["wildcard *", () => decisionSubject("*"), '"*"'],
    ["wildcard >", () => quarantineSubject(">", "research"), '">"'],
    ["empty", () => controlSubject("", "pause"), '""'],
    ["space", () => controlSubject("coordinator", "pa use"), '"pa use"'],
    ["unicode", () => handoffSubject("recherché", 1), '"recherché"'],
    ["ingest rest token", () => ingestSubject("crm", "Report"), '"Report"'],
    ["ingest source", () => ingestSubject("c.rm", "report"), '"c.rm"'],
  ];
  for (const [what, fn, token] of bad) assert.throws(fn, subjectError(ErrorCode.InvalidToken, token, "lowercase [a-z0-9_-]+"), what);
});

test("subjects - builders reject a major that is not a non-negative integer", () => {
  for (const major of [-1, 1.5, NaN, Infinity, Number.MAX_SAFE_INTEGER + 1, "1" as unknown as number]) {
    assert.throws(() => capabilitySubject("research", major), subjectError(ErrorCode.InvalidToken, "major", "non-negative integer"), String(major));
    assert.throws(() => handoffSubject("research", major), subjectError(ErrorCode.InvalidToken, "major"), String(major));
  }
});

test("subjects - an ingest subject needs a token after the source", () => {
  assert.throws(() => ingestSubject("crm"), subjectError(ErrorCode.InvalidToken, "after the source"));
  assert.throws(() => parseSubject("mesh.ingest.crm"), subjectError(ErrorCode.InvalidSubject, "mesh.ingest.crm"));
});

test("subjects - parse rejects each class of invalid subject", () => {
  const bad: [string, string, string][] = [
    ["wrong prefix", "other.cap.research.v1", 'expected prefix "mesh"'],
    ["prefix only", "mesh", 'expected prefix "mesh"'],
    ["prefix as part of a token", "meshx.cap.research.v1", 'expected prefix "mesh"'],
    ["uppercase prefix", "MESH.cap.research.v1", 'expected prefix "mesh"'],
    ["unknown kind", "mesh.foo.research.v1", 'unknown subject kind "foo"'],
    ["too few tokens", "mesh.cap.research", "tokens"],
    ["too many tokens", "mesh.cap.research.v1.l1.extra", "tokens"],
    ["a fourth cap token that is no lane", "mesh.cap.research.v1.extra", "is no lane (one of l1, l2, l3, l4)"],
    ["normal priority has no token", "mesh.cap.research.v1.normal", "nor priority (one of critical, background (normal has no token))"],
    ["the priority before the lane", "mesh.cap.research.v1.critical.l1", "tokens"],
    ["two priorities", "mesh.cap.research.v1.l1.critical.background", "tokens"],
    ["handoff with a lane", "mesh.handoff.publish.v1.l1", "tokens"],
    ["evt too few", "mesh.evt.report", "tokens"],
    ["decision too many", "mesh.decision.grant.x", "tokens"],
    ["quarantine too few", "mesh.quarantine.bad_signature", "tokens"],
    ["ctl too many", "mesh.ctl.coordinator.pause.now", "tokens"],
    ["audit other than checkpoint", "mesh.audit.other", "mesh.audit.checkpoint"],
    ["audit too many", "mesh.audit.checkpoint.x", "mesh.audit.checkpoint"],
    ["missing v", "mesh.cap.research.1", "major"],
    ["leading zero major", "mesh.cap.research.v01", "major"],
    ["negative major", "mesh.cap.research.v-1", "major"],
    ["major beyond safe integers", "mesh.handoff.research.v9007199254740993", "major"],
    ["wildcard *", "mesh.cap.*.v1", "wildcard"],
    ["wildcard >", "mesh.evt.>", "wildcard"],
    ["empty token", "mesh.cap..v1", "empty token"],
    ["trailing dot", "mesh.decision.grant.", "empty token"],
    ["leading dot", ".mesh.cap.research.v1", 'expected prefix "mesh"'],
    ["uppercase token", "mesh.cap.Research.v1", '"Research"'],
    ["space", "mesh.decision.gr ant", '"gr ant"'],
    ["empty", "", 'expected prefix "mesh"'],
  ];
  for (const [what, subject, fragment] of bad) {
    assert.throws(() => parseSubject(subject), subjectError(ErrorCode.InvalidSubject, JSON.stringify(subject), fragment), what);
  }
});

test("subjects - custom prefix", () => {
  const acme = subjectsFor("acme");
  assert.equal(capabilitySubject("research", 2, "acme"), "acme.cap.research.v2");
  assert.equal(acme.ingest("crm", "x"), "acme.ingest.crm.x");
  assert.equal(checkpointSubject("acme"), "acme.audit.checkpoint");
  assert.deepEqual(parseSubject("acme.cap.research.v2", "acme"), { kind: "cap", prefix: "acme", capability: "research", major: 2 });
  assert.throws(() => parseSubject("mesh.cap.research.v2", "acme"), subjectError(ErrorCode.InvalidSubject, 'expected prefix "acme"'));
  assert.throws(() => parseSubject("acme.cap.research.v2"), subjectError(ErrorCode.InvalidSubject, 'expected prefix "mesh"'));
});

test("subjects - a prefix of several tokens", () => {
  const s = subjectsFor("tenant_a.mesh");
  const subject = s.event("report.published", 1);
  assert.equal(subject, "tenant_a.mesh.evt.report.published.v1");
  assert.deepEqual(s.parse(subject), { kind: "evt", prefix: "tenant_a.mesh", type: "report.published", major: 1 });
  assert.equal(build(s.parse(subject)), subject);
  assert.throws(() => s.parse("tenant_a.mesh.evt.v1"), subjectError(ErrorCode.InvalidSubject, "at least 5 tokens"));
  assert.throws(() => s.parse("tenant_a.mesh.evt.report.published"), subjectError(ErrorCode.InvalidSubject, '"published" is not a major version'));
  assert.throws(() => s.parse("tenant_a.mesh.evt.report.*"), subjectError(ErrorCode.InvalidSubject, "position 4"));
});

test("subjects - an invalid prefix is refused up front", () => {
  for (const prefix of ["Mesh", "mesh.", "", "me*sh", "a..b", ">"]) {
    assert.throws(() => subjectsFor(prefix), subjectError(ErrorCode.InvalidToken, "prefix"), JSON.stringify(prefix));
    assert.throws(() => capabilitySubject("x", 1, prefix), subjectError(ErrorCode.InvalidToken, "prefix"), JSON.stringify(prefix));
    assert.throws(() => parseSubject("mesh.cap.x.v1", prefix), subjectError(ErrorCode.InvalidToken, "prefix"), JSON.stringify(prefix));
  }
});

test("subjects - the per-prefix subjects are built once and frozen", () => {
  assert.equal(subjectsFor("mesh"), subjectsFor());
  assert.equal(subjectsFor("acme"), subjectsFor("acme"));
  assert.ok(Object.isFrozen(subjectsFor()));
});
