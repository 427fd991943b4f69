import { test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { ErrorCode, SCHEMA_DIALECT, SCHEMA_LOCK_FILE, SchemaError, createSchemaRegistry, defaultSchemaDir, type ErrorCodeValue } from "../../services/kit/index.ts";

const base = "https://causeway.dev/schemas";
// The schemas this file's samples and cases use (the registry's whole content is derived from the files below).
const ids = {
  reportRequested: `${base}/report.requested/1.0.0`,
  taskCreated: `${base}/research.task.created/1.0.0`,
  findingCreated: `${base}/research.finding.created/1.0.0`,
  findingVerified: `${base}/research.finding.verified/1.0.0`,
  reportPublished: `${base}/report.published/1.0.0`,
  reportReleased: `${base}/report.released/1.0.0`,
  grant: `${base}/decision.grant/1.0.0`,
  approvalRequested: `${base}/decision.approval.requested/1.0.0`,
  approval: `${base}/decision.approval/1.0.0`,
  release: `${base}/decision.release/1.0.0`,
  rejection: `${base}/decision.rejection/1.0.0`,
  switch: `${base}/decision.switch/1.0.0`,
} as const;

// Compiling is the expensive part; the repository registry is built once for the whole file.
const registry = createSchemaRegistry();

const samples: Record<string, unknown[]> = {
  [ids.reportRequested]: [
    { topic: "Grid-scale storage in 2025", requester: "alice@example.com" },
    { topic: "Grid-scale storage", requester: "planner", questions: ["Which chemistries?", "What cost per kWh?"], deadline: "2025-06-30T17:00:00Z" },
  ],
  [ids.taskCreated]: [{ requestId: "0190b7a4-6c2e-7cde-9f6a-1b2c3d4e5f60", taskIndex: 0, totalTasks: 2, query: "Which chemistries?" }],
  [ids.findingCreated]: [
    {
      taskId: "0190b7a4-6c2e-7cde-9f6a-1b2c3d4e5f61",
      claim: "Sodium-ion cells reached 160 Wh/kg.",
      evidence: [{ source: "https://example.com/paper", quote: "cells reached 160 Wh/kg" }, { source: "doi:10.1000/182", quote: "160 Wh/kg" }],
      confidence: 0.8,
    },
    { taskId: "t", claim: "Unsupported yet", evidence: [], confidence: 0 },
  ],
  [ids.findingVerified]: [
    { findingId: "f", verdict: "supported", confidence: 1 },
    { findingId: "f", verdict: "inconclusive", confidence: 0.25 },
  ],
  [ids.reportPublished]: [
    { requestId: "r", title: "Storage", sections: [{ heading: "Chemistries", body: "Sodium-ion …" }], findingsCount: 3, complete: true },
    { requestId: "r", title: "Storage", sections: [{ heading: "Partial", body: "Deadline passed" }], findingsCount: 0, complete: false },
  ],
};

function schemaError(code: ErrorCodeValue, ...fragments: string[]) {
  return (err: unknown) => {
    assert.ok(err instanceof SchemaError, `expected a SchemaError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const f of fragments) assert.ok(err.message.includes(f), `"${err.message}" should mention "${f}"`);
    return true;
  };
}

function schemaDir(t: TestContext, files: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), "causeway-schemas-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, content] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), typeof content === "string" ? content : JSON.stringify(content, null, 2));
  }
  return dir;
}

function objectSchema(id: string, properties: Record<string, unknown>, extra: Record<string, unknown> = {}) {
  return { $schema: SCHEMA_DIALECT, $id: id, type: "object", additionalProperties: false, required: Object.keys(properties), properties, ...extra };
}

test("schemas - every repository schema loads and compiles", () => {
  // Every file under schemas/ (the lockfile aside), read here on its own: the registry holds exactly their $ids.
  const declared = readdirSync(defaultSchemaDir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith(".json") && e.name !== SCHEMA_LOCK_FILE)
    .map((e) => (JSON.parse(readFileSync(join(e.parentPath, e.name), "utf8")) as { $id: string }).$id);
  assert.ok(declared.length > 0);
  assert.deepEqual(registry.list(), [...declared].sort());
  for (const id of Object.values(ids)) assert.equal(registry.has(id), true, id);
});

test("schemas - repository files follow the <domain>/<type>.v<major>.json and $id convention", () => {
  for (const id of registry.list()) {
    const m = /^https:\/\/causeway\.dev\/schemas\/([a-z0-9]+(?:\.[a-z0-9]+)+)\/(\d+)\.(\d+)\.(\d+)$/.exec(id);
    assert.ok(m, `${id} does not follow https://causeway.dev/schemas/<type>/<major>.<minor>.<patch>`);
    const [, type, major, minor, patch] = m;
    // The current version of a major is <type>.v<major>.json; a superseded one moved to <type>.v<major>.<minor>.<patch>.json.
    const superseded = join(defaultSchemaDir, type!.split(".")[0]!, `${type}.v${major}.${minor}.${patch}.json`);
    const file = existsSync(superseded) ? superseded : join(defaultSchemaDir, type!.split(".")[0]!, `${type}.v${major}.json`);
    const schema = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    assert.equal(schema.$id, id, relative(defaultSchemaDir, file));
    assert.equal(schema.additionalProperties, false, `${id} must set additionalProperties: false`);
  }
});

test("schemas - valid samples pass", () => {
  for (const [id, list] of Object.entries(samples)) {
    for (const data of list) {
      assert.doesNotThrow(() => registry.validate(id, data), `${id}: ${JSON.stringify(data)}`);
      assert.doesNotThrow(() => registry.validator(id)(data));
    }
  }
});

test("schemas - a violation names its instance path", () => {
  const data = { taskId: "t", claim: "c", evidence: [{ source: "https://example.com" }], confidence: 0.5 };
  assert.throws(() => registry.validate(ids.findingCreated, data), (err: unknown) => {
    schemaError(ErrorCode.SchemaViolation, ids.findingCreated, "/evidence/0/quote: must have required property 'quote'")(err);
    assert.deepEqual((err as SchemaError).violations, [{ instancePath: "/evidence/0/quote", message: "must have required property 'quote'" }]);
    return true;
  });
});

test("schemas - every violation is reported, not only the first", () => {
  const data = { requestId: "", title: "t", sections: [{ heading: "h", body: "b", extra: 1 }], findingsCount: -1 };
  assert.throws(() => registry.validate(ids.reportPublished, data), (err: unknown) => {
    assert.ok(err instanceof SchemaError);
    assert.deepEqual(err.violations.map((v) => v.instancePath).sort(), ["/complete", "/findingsCount", "/requestId", "/sections/0/extra"]);
    for (const v of err.violations) assert.ok(err.message.includes(`${v.instancePath}: ${v.message}`), err.message);
    return true;
  });
});

test("schemas - a violation at the root is named (root)", () => {
  assert.throws(() => registry.validate(ids.findingVerified, "not an object"), schemaError(ErrorCode.SchemaViolation, "(root): must be object"));
});

test("schemas - bounds, formats and enums are enforced", () => {
  const bad: [string, unknown, string][] = [
    [ids.findingCreated, { taskId: "t", claim: "c", evidence: [], confidence: 1.5 }, "/confidence"],
    [ids.findingCreated, { taskId: "t", claim: "c", evidence: [{ source: "not a uri", quote: "q" }], confidence: 1 }, "/evidence/0/source"],
    [ids.findingVerified, { findingId: "f", verdict: "maybe", confidence: 1 }, "/verdict"],
    [ids.taskCreated, { requestId: "r", taskIndex: -1, totalTasks: 1, query: "q" }, "/taskIndex"],
    [ids.taskCreated, { requestId: "r", taskIndex: 0, totalTasks: 1.5, query: "q" }, "/totalTasks"],
    [ids.reportRequested, { topic: "t", requester: "r", deadline: "tomorrow" }, "/deadline"],
    [ids.reportRequested, { topic: "t", requester: "r", priority: "high" }, "/priority"],
    [ids.reportPublished, { requestId: "r", title: "t", sections: [], findingsCount: 0, complete: true }, "/sections"],
  ];
  for (const [id, data, path] of bad) {
    assert.throws(() => registry.validate(id, data), schemaError(ErrorCode.SchemaViolation, `${path}: `), JSON.stringify(data));
  }
});

test("schemas - unknown dataschema", () => {
  const unknown = `${base}/report.requested/9.9.9`;
  assert.equal(registry.has(unknown), false);
  assert.throws(() => registry.validate(unknown, {}), schemaError(ErrorCode.UnknownSchema, unknown));
  assert.throws(() => registry.validator(unknown), schemaError(ErrorCode.UnknownSchema, unknown));
});

test("schemas - validator() hands out the function compiled at load time", () => {
  const check = registry.validator(ids.findingVerified);
  assert.equal(registry.validator(ids.findingVerified), check);
  assert.throws(() => check({ findingId: "f" }), schemaError(ErrorCode.SchemaViolation, "/verdict", "/confidence"));
});

test("schemas - the registry is frozen", () => {
  assert.ok(Object.isFrozen(registry));
  assert.ok(Object.isFrozen(registry.list()));
  assert.throws(() => {
    (registry as { validate: unknown }).validate = () => undefined;
  }, TypeError);
  assert.throws(() => (registry.list() as string[]).push("x"), TypeError);
});

test("schemas - $ref across files works", (t) => {
  const dir = schemaDir(t, {
    "common/defs.v1.json": { $schema: SCHEMA_DIALECT, $id: "https://example.test/defs/1.0.0", $defs: { confidence: { type: "number", minimum: 0, maximum: 1 } } },
    "x/x.scored.v1.json": objectSchema("https://example.test/x.scored/1.0.0", { score: { $ref: "https://example.test/defs/1.0.0#/$defs/confidence" } }),
  });
  const r = createSchemaRegistry({ dir });
  assert.deepEqual(r.list(), ["https://example.test/defs/1.0.0", "https://example.test/x.scored/1.0.0"]);
  r.validate("https://example.test/x.scored/1.0.0", { score: 0.5 });
  assert.throws(() => r.validate("https://example.test/x.scored/1.0.0", { score: 2 }), schemaError(ErrorCode.SchemaViolation, "/score: must be <= 1"));
});

test("schemas - nested folders are searched and other files ignored", (t) => {
  const dir = schemaDir(t, {
    "README.md": "# not a schema",
    "a/b/c/deep.v1.json": objectSchema("https://example.test/deep/1.0.0", { n: { type: "integer" } }),
  });
  assert.deepEqual(createSchemaRegistry({ dir }).list(), ["https://example.test/deep/1.0.0"]);
});

test("schemas - several folders load as one registry (a $ref may cross them); the lockfile is not a schema", (t) => {
  const base = schemaDir(t, {
    "schemas.lock.json": { schemas: {} },
    "common/defs.v1.json": { $schema: SCHEMA_DIALECT, $id: "https://example.test/defs/1.0.0", $defs: { n: { type: "integer" } } },
  });
  const extra = schemaDir(t, { "x/x.v1.json": objectSchema("https://example.test/x/1.0.0", { n: { $ref: "https://example.test/defs/1.0.0#/$defs/n" } }) });
  const r = createSchemaRegistry({ dir: [base, extra] });
  assert.deepEqual(r.list(), ["https://example.test/defs/1.0.0", "https://example.test/x/1.0.0"]);
  r.validate("https://example.test/x/1.0.0", { n: 1 });
  // One $id in two folders is as ambiguous as in two files of one.
  assert.throws(() => createSchemaRegistry({ dir: [extra, extra] }), schemaError(ErrorCode.SchemaInvalid, join("x", "x.v1.json"), "duplicate"));
});

test("schemas - an empty folder gives an empty registry", (t) => {
  const r = createSchemaRegistry({ dir: schemaDir(t, {}) });
  assert.deepEqual(r.list(), []);
});

test("schemas - load error: invalid JSON names the file", (t) => {
  const dir = schemaDir(t, { "x/broken.v1.json": '{ "$schema": ' });
  assert.throws(() => createSchemaRegistry({ dir }), schemaError(ErrorCode.SchemaInvalid, join("x", "broken.v1.json"), "invalid JSON"));
});

test("schemas - load error: a document that is not an object", (t) => {
  const dir = schemaDir(t, { "list.json": [1, 2] });
  assert.throws(() => createSchemaRegistry({ dir }), schemaError(ErrorCode.SchemaInvalid, "list.json", "not a JSON object"));
});

test("schemas - load error: missing $id", (t) => {
  const { $id, ...noId } = objectSchema("https://example.test/a/1.0.0", { a: { type: "string" } });
  assert.ok($id);
  const dir = schemaDir(t, { "a.v1.json": noId });
  assert.throws(() => createSchemaRegistry({ dir }), schemaError(ErrorCode.SchemaInvalid, "a.v1.json", 'missing "$id"'));
});

test("schemas - load error: relative $id", (t) => {
  const dir = schemaDir(t, { "a.v1.json": objectSchema("a/1.0.0", { a: { type: "string" } }) });
  assert.throws(() => createSchemaRegistry({ dir }), schemaError(ErrorCode.SchemaInvalid, "a.v1.json", "absolute URI"));
});

test("schemas - load error: duplicate $id names both files", (t) => {
  const schema = objectSchema("https://example.test/a/1.0.0", { a: { type: "string" } });
  const dir = schemaDir(t, { "one/a.v1.json": schema, "two/a.v1.json": schema });
  assert.throws(() => createSchemaRegistry({ dir }), schemaError(ErrorCode.SchemaInvalid, join("one", "a.v1.json"), join("two", "a.v1.json"), "duplicate"));
});

test("schemas - load error: wrong or missing $schema", (t) => {
  const wrong = { ...objectSchema("https://example.test/a/1.0.0", {}), $schema: "http://json-schema.org/draft-07/schema#" };
  assert.throws(() => createSchemaRegistry({ dir: schemaDir(t, { "a.v1.json": wrong }) }), schemaError(ErrorCode.SchemaInvalid, "a.v1.json", "draft-07", SCHEMA_DIALECT));
  const { $schema, ...missing } = objectSchema("https://example.test/b/1.0.0", {});
  assert.ok($schema);
  assert.throws(() => createSchemaRegistry({ dir: schemaDir(t, { "b.v1.json": missing }) }), schemaError(ErrorCode.SchemaInvalid, "b.v1.json", '"$schema"'));
});

test("schemas - load error: schemas that do not compile", (t) => {
  const cases: [string, unknown, string][] = [
    ["meta-schema", objectSchema("https://example.test/m/1.0.0", { a: { type: "strin" } }), "schema is invalid"],
    ["unknown keyword (strict)", objectSchema("https://example.test/k/1.0.0", { a: { type: "string", maxLenght: 3 } }), "maxLenght"],
    ["unknown format", objectSchema("https://example.test/f/1.0.0", { a: { type: "string", format: "colour" } }), "colour"],
    ["unresolved $ref", objectSchema("https://example.test/r/1.0.0", { a: { $ref: "https://example.test/nowhere/1.0.0" } }), "nowhere"],
    ["required names an undeclared property (strict)", objectSchema("https://example.test/q/1.0.0", { a: { type: "string" } }, { required: ["a", "undeclared"] }), "undeclared"],
  ];
  for (const [what, schema, mention] of cases) {
    const dir = schemaDir(t, { "bad.v1.json": schema });
    assert.throws(() => createSchemaRegistry({ dir }), schemaError(ErrorCode.SchemaInvalid, "bad.v1.json", mention), what);
  }
});

test("schemas - load error: a missing folder", (t) => {
  const dir = join(schemaDir(t, {}), "absent");
  assert.throws(() => createSchemaRegistry({ dir }), schemaError(ErrorCode.SchemaInvalid, dir));
});
