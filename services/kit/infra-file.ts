// Reading an infra/ JSON file against its JSON Schema (the `$schema` next to it), with errors that name the
// JSON path — the same shape of message as infra/principals.json's. The gateway's routes and upstreams and the
// agents' loop guards are read through it.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject, ValidateFunction } from "ajv/dist/2020.js";
import { ConfigError, type ErrorCodeValue } from "./errors.ts";

/** The repository's infra/ directory, where the schemas live. */
export const infraDir = resolve(import.meta.dirname, "..", "..", "infra");

/** Parses `path` and validates it against `infra/<schemaFile>`; ConfigError `code` names each failing path. */
export function readInfraFile<T>(path: string, schemaFile: string, code: ErrorCodeValue): T {
  const read = (p: string): unknown => {
    let text: string;
    try {
      text = readFileSync(p, "utf8");
    } catch (err) {
      throw new ConfigError(code, `cannot read ${p}: ${(err as Error).message}`, { cause: err });
    }
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new ConfigError(code, `${p} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  };
  return checkInfraDoc<T>(read(path), schemaFile, code, path);
}

/** Each schema of infra/, compiled once. */
const validators = new Map<string, ValidateFunction>();

/** Validates `doc` (read from `source`) against `infra/<schemaFile>`; ConfigError `code` names each failing path. */
export function checkInfraDoc<T>(doc: unknown, schemaFile: string, code: ErrorCodeValue, source: string): T {
  let validate = validators.get(schemaFile);
  if (validate === undefined) {
    validate = new Ajv2020({ allErrors: true, strict: true }).compile(JSON.parse(readFileSync(join(infraDir, schemaFile), "utf8")) as object);
    validators.set(schemaFile, validate);
  }
  if (!validate(doc)) throw invalidFile(source, code, (validate.errors ?? []).map(describe));
  return doc as T;
}

/** A ConfigError listing `problems` of the file at `path`. */
export function invalidFile(path: string, code: ErrorCodeValue, problems: readonly string[]): ConfigError {
  return new ConfigError(code, `${path} is invalid:\n  ${[...new Set(problems)].join("\n  ")}`);
}

function describe(e: ErrorObject): string {
  const path = (e.propertyName !== undefined ? `${e.instancePath}/${e.propertyName}` : e.instancePath) || "/";
  if (e.keyword === "additionalProperties") return `${path}: unknown property "${String((e.params as { additionalProperty: string }).additionalProperty)}"`;
  return `${path}: ${e.message ?? e.keyword}`;
}
