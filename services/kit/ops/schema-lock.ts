// The lockfile of published schemas (schemas/schemas.lock.json): every `$id` with the SHA-256 of its document's
// canonical JSON. A published version is immutable — events keep their `dataschema` forever and are validated
// against it — so `checkSchemaLock` reports a locked `$id` whose content changed or whose file is gone, and a
// schema not in the lock yet; `lockSchemas` adds new schemas and never rewrites an entry
// (`causeway schemas lock`, `npm run schemas:lock`). test/schema-lock.test.ts checks the repository's schemas/.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { ConfigError, ErrorCode } from "../errors.ts";
import { SCHEMA_LOCK_FILE, defaultSchemaDir, readSchemaDocuments } from "../schemas.ts";

/** The lockfile's content. */
export interface SchemaLock {
  readonly $comment?: string;
  /** `$id` → `sha256:<hex>` of the canonical JSON of its document. */
  readonly schemas: Readonly<Record<string, string>>;
}

/** One way the schemas disagree with their lock. */
export interface SchemaLockProblem {
  /** `changed`: a locked `$id`'s content differs; `removed`: a locked `$id` has no file; `unlocked`: a schema is not in the lock. */
  readonly kind: "changed" | "removed" | "unlocked";
  readonly id: string;
  /** The file, relative to the schema directory (none for `removed`). */
  readonly file?: string;
  readonly message: string;
}

const COMMENT = "Published schemas are immutable: $id -> sha256 of the document's canonical JSON (keys sorted, no whitespace). "
  + "Add new schemas with `npm run schemas:lock`; never edit an entry: publish a new version ($id) instead.";

/** The lockfile of `dir`. */
export function schemaLockPath(dir: string = defaultSchemaDir): string {
  return join(resolve(dir), SCHEMA_LOCK_FILE);
}

/**
 * The JSON text of `value` with object keys sorted and no whitespace: two files that differ only in formatting or
 * key order have the same canonical form; any change to a value does not.
 */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/** `sha256:<hex>` of the canonical JSON of a schema document. */
export function schemaDigest(schema: unknown): string {
  return `sha256:${createHash("sha256").update(canonicalJson(schema), "utf8").digest("hex")}`;
}

/** The lock as it is on disk; an absent file is an empty lock. Throws CW_ERR_CONFIG for a malformed one. */
export function readSchemaLock(dir: string = defaultSchemaDir): SchemaLock {
  const path = schemaLockPath(dir);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { schemas: {} };
    throw err;
  }
  let lock: unknown;
  try {
    lock = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(ErrorCode.Config, `${path} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const schemas = (lock as { schemas?: unknown } | null)?.schemas;
  if (typeof schemas !== "object" || schemas === null || Array.isArray(schemas) || !Object.values(schemas).every((d) => typeof d === "string" && /^sha256:[0-9a-f]{64}$/.test(d))) {
    throw new ConfigError(ErrorCode.Config, `${path} must be {"schemas": {"<$id>": "sha256:<64 hex digits>", …}}`);
  }
  return { schemas: schemas as Record<string, string> };
}

/** Every way the schemas under `dir` (found there, never listed by hand) disagree with `dir`'s lockfile. */
export function checkSchemaLock(dir: string = defaultSchemaDir): SchemaLockProblem[] {
  const locked = readSchemaLock(dir).schemas;
  const problems: SchemaLockProblem[] = [];
  const present = new Set<string>();
  for (const doc of readSchemaDocuments(dir)) {
    present.add(doc.id);
    const digest = schemaDigest(doc.schema);
    const expected = Object.hasOwn(locked, doc.id) ? locked[doc.id] : undefined;
    if (expected === undefined) {
      problems.push({ kind: "unlocked", id: doc.id, file: doc.name, message: `${doc.name}: ${doc.id} is not in ${SCHEMA_LOCK_FILE}; add it with \`npm run schemas:lock\`` });
    } else if (expected !== digest) {
      problems.push({
        kind: "changed", id: doc.id, file: doc.name,
        message: `${doc.name}: ${doc.id} was published as ${expected} and is now ${digest}; a published schema is immutable: restore it and publish the change under a new version`,
      });
    }
  }
  for (const id of Object.keys(locked).sort()) {
    if (!present.has(id)) problems.push({ kind: "removed", id, message: `${id} is in ${SCHEMA_LOCK_FILE} but no schema file declares it; events keep their dataschema forever: restore the file` });
  }
  return problems;
}

/**
 * Adds every schema under `dir` that is not in its lockfile yet, and writes the lockfile (sorted). Never rewrites
 * an entry: when a locked schema changed or disappeared it writes nothing and throws CW_ERR_CONFIG naming each.
 * Returns the `$id`s it added.
 */
export function lockSchemas(dir: string = defaultSchemaDir): string[] {
  const problems = checkSchemaLock(dir);
  const broken = problems.filter((p) => p.kind !== "unlocked");
  if (broken.length > 0) {
    throw new ConfigError(ErrorCode.Config, `${schemaLockPath(dir)}: published schemas changed; nothing written:\n${broken.map((p) => `  ${p.message}`).join("\n")}`);
  }
  const added = problems.map((p) => p.id);
  if (added.length === 0) return added;
  const digests: Record<string, string> = { ...readSchemaLock(dir).schemas };
  for (const doc of readSchemaDocuments(dir)) if (added.includes(doc.id)) digests[doc.id] = schemaDigest(doc.schema);
  const sorted = Object.fromEntries(Object.entries(digests).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  writeFileSync(schemaLockPath(dir), `${JSON.stringify({ $comment: COMMENT, schemas: sorted }, null, 2)}\n`);
  return added;
}
