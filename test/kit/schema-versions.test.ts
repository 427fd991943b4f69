// The schema-version rule without a server: which versions a consumer reads (acceptanceOf, compileAccepts) and
// which declared version an output takes (compileEmits). The pipeline and the release pre-check on a real mesh:
// test/schema-versions.test.ts.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import {
  ErrorCode, QuarantineReason, acceptanceOf, compileAccepts, compileEmits, createSchemaRegistry, defaultSchemaDir, isCausewayError, parseSchemaVersion,
  readsVersion, subjectsFor,
} from "../../services/kit/index.ts";
import { repoRoot } from "../harness/index.ts";

const TASK = "https://causeway.dev/schemas/research.task.created";
const [V100, V110, V200] = [`${TASK}/1.0.0`, `${TASK}/1.1.0`, `${TASK}/2.0.0`];
/** The repository's schemas and the test fixtures' 1.1.0 and 2.0.0 of research.task.created. */
const schemas = createSchemaRegistry({ dir: [defaultSchemaDir, join(repoRoot, "test", "fixtures", "schemas")] });
const subjects = subjectsFor("mesh");
const task = { requestId: "r", taskIndex: 0, totalTasks: 1, query: "q" };

test("schema versions - a dataschema splits into base and major.minor.patch; anything else matches only itself", () => {
  assert.deepEqual(parseSchemaVersion(V110), { base: TASK, major: 1, minor: 1, patch: 0 });
  for (const id of [`${TASK}/1.0`, `${TASK}/01.0.0`, `${TASK}/1.0.0-rc.1`, "urn:x:1.0.0", `${TASK}/v1`]) assert.equal(parseSchemaVersion(id), undefined, id);
  assert.equal(readsVersion("urn:x:1.0.0", "urn:x:1.0.0"), true);
  assert.equal(readsVersion(`${TASK}/1.0.0-rc.1`, `${TASK}/1.0.0`), false);
});

test("schema versions - a consumer reads its declared version and every older minor and any patch of its major", () => {
  assert.equal(readsVersion(V110, V100), true);
  assert.equal(readsVersion(V110, V110), true);
  assert.equal(readsVersion(V110, `${TASK}/1.1.7`), true);
  assert.equal(readsVersion(V110, `${TASK}/1.0.3`), true);
  assert.equal(readsVersion(V110, `${TASK}/1.2.0`), false, "a newer minor may carry what the consumer does not know");
  assert.equal(readsVersion(V100, V110), false);
  assert.equal(readsVersion(V110, V200), false, "another major");
  assert.equal(readsVersion(V200, V110), false);
  assert.equal(readsVersion(V110, "https://causeway.dev/schemas/research.finding.created/1.0.0"), false, "another type");
});

test("schema versions - acceptanceOf: unknown_capability for a type not accepted, unsupported_version for a version not read or not loaded", () => {
  const accepts = { "research.task.created": V110 };
  assert.deepEqual(acceptanceOf(accepts, { type: "research.task.created", dataschema: V100 }, schemas, "research.v1"), { ok: true, dataschema: V100 });
  assert.deepEqual(acceptanceOf(accepts, { type: "research.task.created", dataschema: V110 }, schemas, "research.v1"), { ok: true, dataschema: V110 });
  const refusal = (dataschema: string | undefined, type = "research.task.created") => {
    const a = acceptanceOf(accepts, { type, dataschema }, schemas, "research.v1");
    assert.equal(a.ok, false);
    return a as Exclude<typeof a, { ok: true }>;
  };
  const other = refusal(V100, "report.requested");
  assert.deepEqual([other.reason, other.code], [QuarantineReason.UnknownCapability, ErrorCode.UnknownCapability]);
  for (const dataschema of [V200, `${TASK}/1.2.0`, undefined, "urn:other"]) {
    const r = refusal(dataschema);
    assert.deepEqual([r.reason, r.code], [QuarantineReason.UnsupportedVersion, ErrorCode.UnsupportedVersion], String(dataschema));
    assert.match(r.detail, /research\.v1 accepts research\.task\.created https:\/\/causeway\.dev\/schemas\/research\.task\.created 1\.0\.0 to 1\.1\.x$/);
  }
  // In range but not loaded here: the event cannot be validated against its own schema.
  assert.match(refusal(`${TASK}/1.0.9`).detail, /1\.0\.9 has no schema loaded here/);
  // Inherited keys are not declarations.
  assert.equal(refusal(V100, "constructor").reason, QuarantineReason.UnknownCapability);
});

test("schema versions - compileAccepts validates each event against its own dataschema", () => {
  const inputs = compileAccepts(schemas, { "research.task.created": V110 }, "research.v1");
  const old = inputs.check({ type: "research.task.created", dataschema: V100 });
  assert.ok(old.ok);
  old.validate(task);
  // 1.1.0's new property is not 1.0.0's: a 1.0.0 event carrying it is a schema violation, not silently read as 1.1.0.
  assert.throws(() => old.validate({ ...task, priority: "high" }), (err: unknown) => isCausewayError(err, ErrorCode.SchemaViolation));
  const current = inputs.check({ type: "research.task.created", dataschema: V110 });
  assert.ok(current.ok);
  current.validate({ ...task, priority: "high" });
  const major = inputs.check({ type: "research.task.created", dataschema: V200 });
  assert.equal(major.ok, false);
  assert.throws(() => compileAccepts(schemas, { "research.task.created": `${TASK}/1.3.0` }, "research.v1"), (err: unknown) => isCausewayError(err, ErrorCode.UnknownSchema));
});

test("schema versions - compileEmits: the named dataschema, else the only one, else the newest with the subject's major, else the newest", () => {
  const outputs = compileEmits(schemas, { "research.task.created": [V100, V200, V110] }, "planner", subjects);
  const choose = (to: string, dataschema?: string) => outputs.choose({ type: "research.task.created", to, ...(dataschema !== undefined && { dataschema }) }).dataschema;
  assert.equal(choose("mesh.cap.research.v1"), V110, "the newest 1.x on a v1 subject");
  assert.equal(choose("mesh.cap.research.v2"), V200);
  assert.equal(choose("mesh.handoff.research.v1"), V110);
  assert.equal(choose("mesh.cap.research.v3"), V200, "no declared version of the subject's major: the newest");
  // A fact goes on its own type's subject, in the major of the version chosen — named or not.
  assert.equal(choose("mesh.evt.research.task.created.v1"), V110, "a fact: the newest of the subject's major");
  assert.equal(choose("mesh.evt.research.task.created.v2"), V200);
  assert.equal(choose("mesh.evt.research.task.created.v1", V100), V100, "named, on its major's subject");
  for (const [to, dataschema] of [["mesh.evt.plan.created", undefined], ["mesh.evt.research.task.created.v3", undefined], ["mesh.evt.research.task.created.v1", V200], ["mesh.evt.report.published.v1", V110]] as const) {
    assert.throws(() => choose(to, dataschema), (err: unknown) => isCausewayError(err, ErrorCode.UndeclaredOutput) && /a fact goes on the subject of its own type and major/.test(err.message), `${to} ${dataschema ?? ""}`);
  }
  assert.equal(choose("mesh.cap.research.v2", V100), V100, "named: taken as named");
  assert.throws(() => choose("mesh.cap.research.v1", `${TASK}/1.0.9`), (err: unknown) => isCausewayError(err, ErrorCode.UndeclaredOutput) && /declares .*1\.0\.0/.test(err.message));
  assert.throws(() => outputs.choose({ type: "report.published", to: "mesh.evt.report.published.v1" }), (err: unknown) => isCausewayError(err, ErrorCode.UndeclaredOutput));
  // The validator is the chosen version's.
  outputs.choose({ type: "research.task.created", to: "mesh.cap.research.v2" }).validate({ requestId: "r", taskIndex: 0, totalTasks: 1, question: { text: "q", language: "en" } });
  assert.throws(() => outputs.choose({ type: "research.task.created", to: "mesh.cap.research.v2" }).validate(task), (err: unknown) => isCausewayError(err, ErrorCode.SchemaViolation));

  const single = compileEmits(schemas, { "research.task.created": V100 }, "planner", subjects);
  assert.equal(single.choose({ type: "research.task.created", to: "mesh.cap.research.v2" }).dataschema, V100, "one declared version: always that one");
});

test("schema versions - compileEmits refuses several dataschemas that are not distinct versions of one schema", () => {
  const refused = (value: readonly string[]) => assert.throws(() => compileEmits(schemas, { "research.task.created": value }, "planner", subjects), (err: unknown) => isCausewayError(err, ErrorCode.Config), value.join(" "));
  refused([]);
  refused([V100, V100]);
  refused([V100, "https://causeway.dev/schemas/research.finding.created/1.0.0"]);
  assert.throws(() => compileEmits(schemas, { "research.task.created": [V100, `${TASK}/3.0.0`] }, "planner", subjects), (err: unknown) => isCausewayError(err, ErrorCode.UnknownSchema));
});
