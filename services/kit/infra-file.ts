// Reading an infra/ JSON file against its JSON Schema (the `$schema` next to it), with errors that name the
// JSON path — the same shape of message as infra/principals.json's. The gateway's routes and upstreams and the
// agents' loop guards are read through it; files that reload live (the coordinator's policy, the agents'
// priority weights) are watched through `watchInfraFile`.
import { readFileSync, watch, type FSWatcher } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import type { Logger } from "pino";
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

/** An infra/ file followed live: the last good version of it. */
export interface WatchedInfraFile<T> {
  /** The last version that loaded: the first, or a later edit that passed `load`. */
  current(): T;
  close(): void;
}

/**
 * Loads `path` with `load` (which reads and validates it, throwing on a bad file) and reloads it whenever it
 * changes. A bad edit keeps the last good version and is logged (warn, with the error) and reported to
 * `onReload(err)`; a good one replaces it and calls `onReload()`. The first load throws as `load` does. The
 * directory is watched, not the file, so an editor that saves by renaming a new file over the old one is followed.
 * On a file system without change notifications the file stays as first loaded (logged once).
 */
export function watchInfraFile<T>(path: string, load: (path: string) => T, opts: { what: string; log?: Logger; onReload?: (err?: Error) => void }): WatchedInfraFile<T> {
  let current = load(path);
  const name = basename(path);
  let watcher: FSWatcher | undefined;
  const reload = () => {
    try {
      current = load(path);
      opts.log?.info({ path }, `${opts.what} reloaded`);
      opts.onReload?.();
    } catch (err) {
      opts.log?.warn({ err, path }, `${opts.what}: the edit is refused, the last good version stays in force`);
      opts.onReload?.(err as Error);
    }
  };
  try {
    watcher = watch(dirname(path), (_event, file) => {
      if (file === null || file === name) reload();
    });
    watcher.unref();
  } catch (err) {
    opts.log?.warn({ err, path }, `${opts.what}: the file cannot be watched; it stays as loaded`);
    watcher = undefined;
  }
  return { current: () => current, close: () => watcher?.close() };
}
