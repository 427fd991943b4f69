// The schema registry: every JSON Schema 2020-12 document under schemas/, keyed by its `$id`, which is the
// CloudEvents `dataschema` value. Pipeline step 5 validates every message's data, and the budget for that
// step is a compiled ajv validator (< 2 µs). Compiling a schema costs milliseconds (ajv generates and
// evaluates code), so each schema is compiled exactly once, when the registry is created, and the hot path
// only calls the compiled function: `validator(dataschema)` hands it out so a consumer of one input type
// does not even pay a Map lookup per message.
import { readFileSync, readdirSync, type Dirent } from "node:fs";
import { join, relative, resolve } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject, ValidateFunction } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { ErrorCode, SchemaError } from "./errors.ts";

/** The only JSON Schema dialect the registry accepts. */
export const SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema";

/** The repository's schemas/ directory. */
export const defaultSchemaDir = resolve(import.meta.dirname, "..", "..", "schemas");

/** One failed check: a JSON pointer into the data and what was expected there. */
export interface SchemaViolation {
  instancePath: string;
  message: string;
}

/** Validates data against one schema; throws SchemaError CW_ERR_SCHEMA_VIOLATION when it does not match. */
export type DataValidator = (data: unknown) => void;

/** The compiled schemas, keyed by `dataschema` (the schema's `$id`). Frozen. */
export interface SchemaRegistry {
  /** Throws SchemaError: CW_ERR_SCHEMA_VIOLATION naming each instance path, or CW_ERR_UNKNOWN_SCHEMA. */
  validate(dataschema: string, data: unknown): void;
  /** The compiled validator for the hot path; throws CW_ERR_UNKNOWN_SCHEMA when there is none. */
  validator(dataschema: string): DataValidator;
  has(dataschema: string): boolean;
  /** Every registered `dataschema`, sorted. */
  list(): readonly string[];
}

/** Options for {@link createSchemaRegistry}. */
export interface SchemaRegistryOptions {
  /**
   * Directory (or directories, e.g. schemas/ and a test's fixtures) searched recursively for `*.json` schemas.
   * Default: the repository's `schemas/`.
   */
  dir?: string | readonly string[];
}

/** The lockfile of published schema digests (ops/schema-lock.ts) lives next to the schemas; it is not a schema. */
export const SCHEMA_LOCK_FILE = "schemas.lock.json";

/** One schema document as read from its file: its `$id`, the parsed JSON, where it was found. */
export interface SchemaDocument {
  readonly id: string;
  readonly schema: Readonly<Record<string, unknown>>;
  /** The file, relative to `dir`. */
  readonly name: string;
  readonly dir: string;
}

// A message naming every violation is what an operator reads in quarantine; past this many it stops helping.
const maxViolationsInMessage = 10;

/**
 * Loads and compiles every `**\/*.json` under `dir` (but the lockfile, {@link SCHEMA_LOCK_FILE}). Throws
 * SchemaError CW_ERR_SCHEMA_INVALID naming the file for invalid JSON, a missing, relative or duplicate `$id`,
 * another `$schema` than 2020-12, or a schema that does not compile (strict mode: unknown keywords and formats are errors). Schemas may `$ref`
 * each other by `$id`: all are added before any is compiled.
 */
export function createSchemaRegistry(opts: SchemaRegistryOptions = {}): SchemaRegistry {
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  // ajv-formats is CommonJS: its default import is `module.exports`, which carries the plugin as `.default`.
  addFormats.default(ajv);

  const files = new Map<string, string>(); // $id -> file, relative to its dir, and the dir
  for (const doc of readSchemaDocuments(opts.dir ?? defaultSchemaDir)) {
    try {
      ajv.addSchema(doc.schema as object, doc.id);
    } catch (err) {
      throw new SchemaError(ErrorCode.SchemaInvalid, `schema ${doc.name} (in ${doc.dir}): does not compile: ${(err as Error).message}`, [], { cause: err });
    }
    files.set(doc.id, `${doc.name} (in ${doc.dir})`);
  }

  const validators = new Map<string, DataValidator>();
  for (const [id, name] of files) {
    let compiled: ValidateFunction | undefined;
    try {
      compiled = ajv.getSchema(id);
    } catch (err) {
      throw new SchemaError(ErrorCode.SchemaInvalid, `schema ${name}: does not compile: ${(err as Error).message}`, [], { cause: err });
    }
    if (compiled === undefined) throw new SchemaError(ErrorCode.SchemaInvalid, `schema ${name}: does not compile`);
    validators.set(id, checker(id, compiled));
  }
  const ids = Object.freeze([...validators.keys()].sort());

  const validator = (dataschema: string): DataValidator => {
    const check = validators.get(dataschema);
    if (check === undefined) throw unknownSchema(dataschema);
    return check;
  };
  return Object.freeze({
    validate(dataschema: string, data: unknown) {
      validator(dataschema)(data);
    },
    validator,
    has: (dataschema: string) => validators.has(dataschema),
    list: () => ids,
  });
}

/**
 * Reads every `**\/*.json` under `dirs` (the lockfile excepted) as a schema document, in file order. Throws
 * SchemaError CW_ERR_SCHEMA_INVALID naming the file for invalid JSON, a missing, relative or duplicate `$id`
 * (across all `dirs`), or another `$schema` than 2020-12. Compiling is the registry's business.
 */
export function readSchemaDocuments(dirs: string | readonly string[]): SchemaDocument[] {
  const docs: SchemaDocument[] = [];
  const seen = new Map<string, string>(); // $id -> where
  for (const dir of (typeof dirs === "string" ? [dirs] : dirs).map((d) => resolve(d))) {
    for (const file of listJsonFiles(dir)) {
      const name = relative(dir, file);
      const fail = (why: string, cause?: unknown) =>
        new SchemaError(ErrorCode.SchemaInvalid, `schema ${name} (in ${dir}): ${why}`, [], cause === undefined ? undefined : { cause });
      let schema: unknown;
      try {
        schema = JSON.parse(readFileSync(file, "utf8"));
      } catch (err) {
        throw fail(`invalid JSON: ${(err as Error).message}`, err);
      }
      if (typeof schema !== "object" || schema === null || Array.isArray(schema)) throw fail("is not a JSON object");
      const { $schema, $id } = schema as { $schema?: unknown; $id?: unknown };
      if ($schema !== SCHEMA_DIALECT) throw fail(`"$schema" must be "${SCHEMA_DIALECT}", got ${JSON.stringify($schema)}`);
      if (typeof $id !== "string" || $id === "") throw fail(`missing "$id": the $id is the dataschema URI and is required`);
      if (!isAbsoluteUriWithoutFragment($id)) throw fail(`"$id" ${JSON.stringify($id)} must be an absolute URI without a fragment`);
      const other = seen.get($id);
      if (other !== undefined) throw fail(`duplicate "$id" ${$id}, already declared by ${other}`);
      seen.set($id, `${name} (in ${dir})`);
      docs.push({ id: $id, schema: schema as Record<string, unknown>, name, dir });
    }
  }
  return docs;
}

// The success path is a single call of the generated function; the error path (rare, and headed for
// quarantine) builds the message.
function checker(dataschema: string, compiled: ValidateFunction): DataValidator {
  return (data: unknown) => {
    if (compiled(data)) return;
    const violations = (compiled.errors ?? []).map(toViolation);
    const shown = violations.slice(0, maxViolationsInMessage).map((v) => `${v.instancePath || "(root)"}: ${v.message}`);
    if (violations.length > maxViolationsInMessage) shown.push(`… and ${violations.length - maxViolationsInMessage} more`);
    throw new SchemaError(ErrorCode.SchemaViolation, `data does not match ${dataschema}: ${shown.join("; ")}`, violations);
  };
}

// ajv reports a missing or an extra property at the object that holds it; point at the property itself,
// which is where a reader looks (`/tasks/0/query: must have required property 'query'`).
function toViolation(e: ErrorObject): SchemaViolation {
  const params = e.params as { missingProperty?: string; additionalProperty?: string; unevaluatedProperty?: string };
  const property =
    e.keyword === "required" || e.keyword === "dependentRequired"
      ? params.missingProperty
      : e.keyword === "additionalProperties"
        ? params.additionalProperty
        : e.keyword === "unevaluatedProperties"
          ? params.unevaluatedProperty
          : undefined;
  const instancePath = property === undefined ? e.instancePath : `${e.instancePath}/${escapePointer(property)}`;
  return { instancePath, message: e.message ?? `failed ${e.keyword}` };
}

function escapePointer(token: string): string {
  return token.replaceAll("~", "~0").replaceAll("/", "~1");
}

function unknownSchema(dataschema: string): SchemaError {
  return new SchemaError(ErrorCode.UnknownSchema, `unknown dataschema ${JSON.stringify(dataschema)}: no schema with this $id is registered`);
}

function isAbsoluteUriWithoutFragment(id: string): boolean {
  if (!URL.canParse(id) || id.includes("#")) return false;
  return /^[a-z][a-z0-9+.-]*:/i.test(id);
}

function listJsonFiles(dir: string): string[] {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { recursive: true, withFileTypes: true });
  } catch (err) {
    throw new SchemaError(ErrorCode.SchemaInvalid, `schema directory ${dir} cannot be read: ${(err as Error).message}`, [], { cause: err });
  }
  return entries
    .filter((e) => e.isFile() && e.name.endsWith(".json") && e.name !== SCHEMA_LOCK_FILE)
    .map((e) => join(e.parentPath, e.name))
    .sort();
}
