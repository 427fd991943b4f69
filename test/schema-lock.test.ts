// Published schemas are immutable: schemas/schemas.lock.json holds every published $id's digest. The first test is
// the guard on the repository (the schema list is whatever schemas/ holds); the others run the checker, the lock
// command and `causeway schemas` on a temporary copy of schemas/.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { ErrorCode, createSchemaRegistry, defaultSchemaDir, isCausewayError } from "../services/kit/index.ts";
import { checkSchemaLock, lockSchemas, readSchemaLock, schemaDigest, schemaLockPath } from "../services/kit/ops/index.ts";
import { repoRoot } from "./harness/index.ts";

const FINDING = "https://causeway.dev/schemas/research.finding.created/1.0.0";
const FINDING_FILE = join("research", "research.finding.created.v1.json");

/** A copy of the repository's schemas/ (lockfile included) that the test may change. */
function copyOfSchemas(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "causeway-schema-lock-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(defaultSchemaDir, dir, { recursive: true });
  return dir;
}

function editJson(path: string, edit: (doc: Record<string, unknown>) => void, indent = 2): void {
  const doc = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  edit(doc);
  writeFileSync(path, JSON.stringify(doc, null, indent));
}

function causewaySchemas(args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [join(repoRoot, "services", "cli", "main.ts"), "schemas", ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ stdout, stderr, code: err ? Number(err.code) : 0 });
    });
  });
}

test("schema lock - every schema in schemas/ is locked, and no published $id changed or disappeared", () => {
  assert.deepEqual(checkSchemaLock().map((p) => p.message), []);
  // The lock covers exactly what the registry loads (the lockfile itself is not a schema).
  assert.deepEqual(Object.keys(readSchemaLock().schemas).sort(), [...createSchemaRegistry().list()]);
});

test("schema lock - a published schema edited in place is reported, whitespace and key order are not", (t) => {
  const dir = copyOfSchemas(t);
  const file = join(dir, FINDING_FILE);
  // Reformatting and reordering keys change no value: the canonical JSON, and so the digest, is the same.
  editJson(file, (doc) => { const { $id, ...rest } = doc; for (const k of Object.keys(doc)) delete doc[k]; Object.assign(doc, rest, { $id }); }, 4);
  assert.deepEqual(checkSchemaLock(dir), []);
  // A new optional property under the same $id: the mesh would hold two shapes under one dataschema.
  editJson(file, (doc) => { (doc.properties as Record<string, unknown>).note = { type: "string", maxLength: 10 }; });
  const problems = checkSchemaLock(dir);
  assert.deepEqual(problems.map((p) => [p.kind, p.id, p.file]), [["changed", FINDING, FINDING_FILE]]);
  assert.match(problems[0]!.message, /published as sha256:[0-9a-f]{64} and is now sha256:[0-9a-f]{64}; a published schema is immutable/);
  // The lock command never rewrites it, and writes nothing at all.
  const before = readFileSync(schemaLockPath(dir), "utf8");
  assert.throws(() => lockSchemas(dir), (err: unknown) => isCausewayError(err, ErrorCode.Config) && err.message.includes(FINDING) && /nothing written/.test(err.message));
  assert.equal(readFileSync(schemaLockPath(dir), "utf8"), before);
});

test("schema lock - a new schema is reported until locked; lock adds it and keeps every entry", (t) => {
  const dir = copyOfSchemas(t);
  const before = readSchemaLock(dir).schemas;
  cpSync(join(repoRoot, "test", "fixtures", "schemas", "research"), join(dir, "research"), { recursive: true });
  const problems = checkSchemaLock(dir);
  assert.deepEqual(problems.map((p) => [p.kind, p.id]), [
    ["unlocked", "https://causeway.dev/schemas/research.task.created/1.1.0"],
    ["unlocked", "https://causeway.dev/schemas/research.task.created/2.0.0"],
  ]);
  assert.deepEqual(lockSchemas(dir), problems.map((p) => p.id));
  assert.deepEqual(checkSchemaLock(dir), []);
  const after = readSchemaLock(dir).schemas;
  for (const [id, digest] of Object.entries(before)) assert.equal(after[id], digest, id);
  assert.equal(after["https://causeway.dev/schemas/research.task.created/2.0.0"], schemaDigest(JSON.parse(readFileSync(join(dir, "research", "research.task.created.v2.json"), "utf8"))));
  assert.deepEqual(lockSchemas(dir), [], "nothing left to add");
});

test("schema lock - a published $id whose file is gone is reported; moving the file elsewhere is not", (t) => {
  const dir = copyOfSchemas(t);
  // The README's rule for a superseded minor: the old document moves next to the current one, unchanged.
  renameSync(join(dir, FINDING_FILE), join(dir, "research", "research.finding.created.v1.0.0.json"));
  assert.deepEqual(checkSchemaLock(dir), []);
  rmSync(join(dir, "research", "research.finding.created.v1.0.0.json"));
  assert.deepEqual(checkSchemaLock(dir).map((p) => [p.kind, p.id]), [["removed", FINDING]]);
  assert.throws(() => lockSchemas(dir), (err: unknown) => isCausewayError(err, ErrorCode.Config));
});

test("schema lock - causeway schemas check and lock", async (t) => {
  const dir = copyOfSchemas(t);
  const ok = await causewaySchemas(["check", "--dir", dir]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /✓ every schema in .* matches .*schemas\.lock\.json/);
  cpSync(join(repoRoot, "test", "fixtures", "schemas", "research"), join(dir, "research"), { recursive: true });
  const unlocked = await causewaySchemas(["check", "--dir", dir]);
  assert.equal(unlocked.code, 1);
  assert.match(unlocked.stderr, /✗ research\/research\.task\.created\.v2\.json: https:\/\/causeway\.dev\/schemas\/research\.task\.created\/2\.0\.0 is not in schemas\.lock\.json/);
  const locked = await causewaySchemas(["lock", "--dir", dir]);
  assert.equal(locked.code, 0, locked.stderr);
  assert.match(locked.stdout, /^\+ https:\/\/causeway\.dev\/schemas\/research\.task\.created\/1\.1\.0$/m);
  assert.match(locked.stdout, /2 schema\(s\) added/);
  editJson(join(dir, FINDING_FILE), (doc) => { doc.description = "edited in place"; });
  const refused = await causewaySchemas(["lock", "--dir", dir]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /published schemas changed; nothing written:[\s\S]*research\.finding\.created\/1\.0\.0 was published as .* \(CW_ERR_CONFIG\)/);
});
