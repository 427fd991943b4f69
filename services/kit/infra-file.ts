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
  /** Stops watching. */
  close(): void;
}

/** How a followed file reports. */
export interface WatchInfraOptions {
  /** What the file is, for the log lines ("the loop guards"). */
  readonly what: string;
  /** Where an applied edit (info) and a refused one (warn, with the error) are logged. */
  readonly log?: Logger;
  /** Called after each change: without an argument when it applied, with the error when it was refused. */
  readonly onReload?: (err?: Error) => void;
  /** Coalesces the several events one save makes. Default 50 ms. */
  readonly debounceMs?: number;
}

/**
 * Loads `path` with `load` (which reads and validates it, throwing on a bad file) and reloads it whenever its text
 * changes. A bad edit keeps the last good version, is logged and reported once per bad version; a good one replaces
 * it. The first load throws as `load` does. The directory is watched, not the file, so an editor that saves by
 * renaming a new file over the old one (vim, most IDEs, `mv`) is followed; the watch never keeps a process alive.
 * On a file system without change notifications the file stays as first loaded (logged once).
 */
export function watchInfraFile<T>(path: string, load: (path: string) => T, opts: WatchInfraOptions): WatchedInfraFile<T> {
  let current = load(path);
  let text = readText(path);
  let timer: NodeJS.Timeout | undefined;
  const reload = () => {
    timer = undefined;
    const now = readText(path);
    if (now === text) return; // touched, or a second event of the same save
    text = now; // a bad version is reported once, not once per event
    try {
      current = load(path);
      opts.log?.info({ path }, `${opts.what} reloaded`);
      opts.onReload?.();
    } catch (err) {
      opts.log?.warn({ err, path }, `${opts.what}: the edit is refused, the last good version stays in force`);
      opts.onReload?.(err as Error);
    }
  };
  let watcher: FSWatcher | undefined;
  try {
    const name = basename(path);
    watcher = watch(dirname(path), { persistent: false }, (_event, changed) => {
      if (changed !== null && changed !== name) return;
      clearTimeout(timer);
      timer = setTimeout(reload, opts.debounceMs ?? 50);
    });
    watcher.on("error", (err) => opts.log?.warn({ err, path }, `${opts.what}: watching the file failed; it stays as last loaded`));
  } catch (err) {
    opts.log?.warn({ err, path }, `${opts.what}: the file cannot be watched; it stays as loaded`);
  }
  return {
    current: () => current,
    close() {
      clearTimeout(timer);
      watcher?.close();
    },
  };
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}
