// Stream and consumer definitions (streams/*.json, streams/consumers/<STREAM>.<durable>.json) and their
// idempotent application. The files keep the server's own field names, so the same bytes work with
// `nats stream add --config`; this module validates them with errors that name the file and the field,
// compares only what a file declares with what the server reports, and refuses changes that lose data or
// that the server cannot make in place unless the caller forces them.
import { readdirSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { ConsumerConfig, JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import { ConfigError, ErrorCode } from "./errors.ts";
import type { CausewayError, ErrorCodeValue } from "./errors.ts";
import { DEFAULT_PREFIX, subjectsFor } from "./subjects.ts";

/** The repository's `streams/` directory. */
export const defaultStreamsDir = resolve(import.meta.dirname, "..", "..", "streams");

/** A stream's configuration as a file declares it: server field names, durations in nanoseconds. */
export type StreamFileConfig = Partial<StreamConfig> & { name: string };

/** A consumer's configuration as a file declares it: a durable pull consumer in server field names. */
export type ConsumerFileConfig = Partial<ConsumerConfig> & { durable_name: string };

/** One consumer file, bound to its stream by the file name `<STREAM>.<durable>.json`. Frozen. */
export interface ConsumerDefinition {
  /** Path of the file it was read from. */
  readonly file: string;
  /** Name of the stream the consumer belongs to. */
  readonly stream: string;
  /** The configuration exactly as declared. */
  readonly config: Readonly<ConsumerFileConfig>;
}

/** One stream file and the consumer files bound to it. Frozen. */
export interface StreamDefinition {
  /** Path of the file it was read from. */
  readonly file: string;
  /** The configuration exactly as declared. */
  readonly config: Readonly<StreamFileConfig>;
  /** The stream's consumers, in file name order. */
  readonly consumers: readonly ConsumerDefinition[];
}

/** Options for {@link applyStreams}. */
export interface ApplyOptions {
  /** Apply destructive changes (shrinking limits, removing subjects, lowering replicas). Default false. */
  force?: boolean;
  /** Replica count for every stream, overriding the files' `num_replicas` (3 in production). Default: the files'. */
  replicas?: number;
  /** Receives one human-readable line per stream or consumer as it is applied. Default: silent. */
  log?: (line: string) => void;
}

/**
 * What a differing field means: `safe` is applied, `destructive` (may lose data or weaken a guarantee) is
 * applied only with `force`, `immutable` is never applied because the server cannot change it in place.
 */
export type ChangeEffect = "safe" | "destructive" | "immutable";

/** One declared field that differs from the server's configuration. */
export interface FieldChange {
  /** Server field name, e.g. `max_age`. */
  readonly field: string;
  /** The server's value (`undefined` when the server does not report the field). */
  readonly from: unknown;
  /** The declared value. */
  readonly to: unknown;
  readonly effect: ChangeEffect;
}

/** Identifies the stream or consumer a result is about. */
export interface ApplyTarget {
  readonly kind: "stream" | "consumer";
  /** The stream's name (for a consumer, the stream it belongs to). */
  readonly stream: string;
  /** The stream's name, or the consumer's durable name. */
  readonly name: string;
  /** The definition's file. */
  readonly file: string;
}

/** The outcome for one stream or consumer, discriminated on `status`. */
export type ApplyResult =
  | (ApplyTarget & { readonly status: "created" })
  | (ApplyTarget & { readonly status: "unchanged" })
  /** `changes` were applied; `unapplied` lists immutable changes that `force` could not make. */
  | (ApplyTarget & { readonly status: "updated"; readonly changes: readonly FieldChange[]; readonly unapplied: readonly FieldChange[] })
  /**
   * Nothing was applied. `reason` is one line for an operator; `error` carries the code: CW_ERR_DESTRUCTIVE_CHANGE
   * for a refused change, CW_ERR_STREAM_CONFIG_INVALID when the server rejected the definition.
   */
  | (ApplyTarget & { readonly status: "refused"; readonly changes: readonly FieldChange[]; readonly reason: string; readonly error: CausewayError });

/** What {@link applyStreams} did, in the order it did it. */
export interface ApplyReport {
  readonly results: readonly ApplyResult[];
  /** True when every declared change is now in effect: nothing refused, nothing left unapplied. */
  readonly ok: boolean;
}

// ---------------------------------------------------------------------------------------------------------
// Field tables: the type of every field the server (2.12) accepts, and what changing it means.

type FieldType =
  | "string" | "name" | "bool" | "int" | "nanos" | "strings" | "nanosList" | "object" | "objects" | "metadata"
  | { readonly oneOf: readonly string[] };

// How a change is classified. `limit`: lowering is destructive, a value <= 0 means unlimited.
// `sticky`: true → false is impossible in place. `subjects`: removing one is destructive.
// `replicas`: lowering is destructive. `retention`: to/from workqueue is impossible, limits ↔ interest
// is destructive (interest retention deletes acknowledged messages).
type Rule = "safe" | "limit" | "sticky" | "subjects" | "replicas" | "retention" | "sealed" | "destructive" | "immutable" | "identity";

interface FieldSpec {
  readonly type: FieldType;
  readonly rule: Rule;
  /** The value the server means when it omits the field. */
  readonly absent?: unknown;
}

const streamFields: Readonly<Record<string, FieldSpec>> = {
  name: { type: "name", rule: "identity" },
  description: { type: "string", rule: "safe", absent: "" },
  subjects: { type: "strings", rule: "subjects", absent: [] },
  retention: { type: { oneOf: ["limits", "interest", "workqueue"] }, rule: "retention", absent: "limits" },
  storage: { type: { oneOf: ["file", "memory"] }, rule: "immutable", absent: "file" },
  num_replicas: { type: "int", rule: "replicas", absent: 1 },
  max_consumers: { type: "int", rule: "limit", absent: -1 },
  max_msgs: { type: "int", rule: "limit", absent: -1 },
  max_bytes: { type: "int", rule: "limit", absent: -1 },
  max_age: { type: "nanos", rule: "limit", absent: 0 },
  max_msgs_per_subject: { type: "int", rule: "limit", absent: -1 },
  max_msg_size: { type: "int", rule: "limit", absent: -1 },
  discard: { type: { oneOf: ["old", "new"] }, rule: "safe", absent: "old" },
  discard_new_per_subject: { type: "bool", rule: "safe", absent: false },
  no_ack: { type: "bool", rule: "safe", absent: false },
  duplicate_window: { type: "nanos", rule: "safe", absent: 0 },
  placement: { type: "object", rule: "safe" },
  mirror: { type: "object", rule: "immutable" },
  sources: { type: "objects", rule: "safe", absent: [] },
  compression: { type: { oneOf: ["none", "s2"] }, rule: "safe", absent: "none" },
  first_seq: { type: "int", rule: "immutable", absent: 0 },
  subject_transform: { type: "object", rule: "safe" },
  republish: { type: "object", rule: "safe" },
  allow_direct: { type: "bool", rule: "safe", absent: false },
  mirror_direct: { type: "bool", rule: "safe", absent: false },
  sealed: { type: "bool", rule: "sealed", absent: false },
  deny_delete: { type: "bool", rule: "sticky", absent: false },
  deny_purge: { type: "bool", rule: "sticky", absent: false },
  allow_rollup_hdrs: { type: "bool", rule: "safe", absent: false },
  consumer_limits: { type: "object", rule: "safe", absent: {} },
  allow_msg_ttl: { type: "bool", rule: "sticky", absent: false },
  subject_delete_marker_ttl: { type: "nanos", rule: "safe", absent: 0 },
  allow_msg_counter: { type: "bool", rule: "immutable", absent: false },
  allow_atomic: { type: "bool", rule: "safe", absent: false },
  allow_msg_schedules: { type: "bool", rule: "sticky", absent: false },
  persist_mode: { type: { oneOf: ["default", "async"] }, rule: "immutable", absent: "default" },
  metadata: { type: "metadata", rule: "safe", absent: {} },
};

const consumerFields: Readonly<Record<string, FieldSpec>> = {
  durable_name: { type: "name", rule: "identity" },
  name: { type: "name", rule: "identity" },
  description: { type: "string", rule: "safe", absent: "" },
  deliver_policy: { type: { oneOf: ["all", "last", "new", "by_start_sequence", "by_start_time", "last_per_subject"] }, rule: "immutable", absent: "all" },
  opt_start_seq: { type: "int", rule: "immutable", absent: 0 },
  opt_start_time: { type: "string", rule: "immutable", absent: "" },
  ack_policy: { type: { oneOf: ["none", "all", "explicit"] }, rule: "immutable", absent: "none" },
  ack_wait: { type: "nanos", rule: "safe", absent: 0 },
  max_deliver: { type: "int", rule: "safe", absent: -1 },
  backoff: { type: "nanosList", rule: "safe", absent: [] },
  // A new filter skips whatever is pending outside it: for lineage that is a gap in the audit log.
  filter_subject: { type: "string", rule: "destructive", absent: "" },
  filter_subjects: { type: "strings", rule: "destructive", absent: [] },
  replay_policy: { type: { oneOf: ["instant", "original"] }, rule: "immutable", absent: "instant" },
  rate_limit_bps: { type: "int", rule: "safe", absent: 0 },
  sample_freq: { type: "string", rule: "safe", absent: "" },
  max_waiting: { type: "int", rule: "immutable", absent: 0 },
  max_ack_pending: { type: "int", rule: "safe", absent: 0 },
  headers_only: { type: "bool", rule: "safe", absent: false },
  max_batch: { type: "int", rule: "safe", absent: 0 },
  max_expires: { type: "nanos", rule: "safe", absent: 0 },
  max_bytes: { type: "int", rule: "safe", absent: 0 },
  inactive_threshold: { type: "nanos", rule: "safe", absent: 0 },
  num_replicas: { type: "int", rule: "replicas", absent: 0 },
  mem_storage: { type: "bool", rule: "safe", absent: false },
  metadata: { type: "metadata", rule: "safe", absent: {} },
  pause_until: { type: "string", rule: "safe", absent: "" },
  priority_groups: { type: "strings", rule: "safe", absent: [] },
  priority_policy: { type: { oneOf: ["none", "overflow", "pinned_client", "prioritized"] }, rule: "safe", absent: "none" },
  priority_timeout: { type: "nanos", rule: "safe", absent: 0 },
};

// Push-only fields: Causeway's consumers are durable pull consumers (queue semantics without deliver groups).
const pushOnly = ["deliver_subject", "deliver_group", "idle_heartbeat", "flow_control"];

const NAME_RULE = "a name without spaces, '.', '*', '>', '/' or '\\'";
const namePattern = /^[^\s.*>/\\]+$/;
const RESERVED_METADATA = "_nats.";
const MIN_DURATION = 100_000_000; // the server refuses max_age and duplicate_window below 100 ms

// ---------------------------------------------------------------------------------------------------------
// Loading and validation

/**
 * Reads `<dir>/*.json` (streams) and `<dir>/consumers/<STREAM>.<durable>.json` (consumers; `*.template.json`
 * is skipped), validates every file and returns frozen definitions sorted by file name. A bad file throws a
 * ConfigError (CW_ERR_STREAM_CONFIG_INVALID) naming the file and the field. Subjects are as written (under
 * {@link FILES_PREFIX}); {@link renderStreamDefinitions} moves them to another prefix.
 */
export async function loadStreamDefinitions(dir: string): Promise<readonly StreamDefinition[]> {
  return loadStreamDefinitionsSync(dir);
}

/** {@link loadStreamDefinitions}, synchronously: configuration is read once at start, before anything runs. */
export function loadStreamDefinitionsSync(dir: string): readonly StreamDefinition[] {
  const streamFiles = jsonFiles(dir, true);
  const streams = new Map<string, { file: string; config: StreamFileConfig; consumers: ConsumerDefinition[] }>();
  for (const file of streamFiles) {
    const config = parseStreamConfig(readFileSync(file, "utf8"), file);
    const other = streams.get(config.name);
    if (other) throw invalid(file, "name", `stream ${config.name} is already defined by ${other.file}`);
    streams.set(config.name, { file, config, consumers: [] });
  }
  const consumersDir = join(dir, "consumers");
  for (const file of jsonFiles(consumersDir, false)) {
    if (file.endsWith(TEMPLATE_SUFFIX)) continue;
    const stem = basename(file, ".json");
    const dot = stem.indexOf(".");
    if (dot <= 0 || dot === stem.length - 1) {
      throw invalid(file, undefined, "consumer files are named <STREAM>.<durable>.json");
    }
    const stream = stem.slice(0, dot);
    const owner = streams.get(stream);
    if (!owner) throw invalid(file, undefined, `the file name binds it to stream ${stream}, which no file in ${dir} defines`);
    const config = parseConsumerConfig(readFileSync(file, "utf8"), file);
    if (config.durable_name !== stem.slice(dot + 1)) {
      throw invalid(file, "durable_name", `"${config.durable_name}" does not match the file name (${stem.slice(dot + 1)})`);
    }
    owner.consumers.push(Object.freeze({ file, stream, config }));
  }
  return Object.freeze(
    [...streams.values()].map((s) => Object.freeze({ file: s.file, config: s.config, consumers: Object.freeze(s.consumers) })),
  );
}

/** Parses and validates one stream file's text; `file` names it in errors. Returns a deep-frozen config. */
export function parseStreamConfig(text: string, file: string): Readonly<StreamFileConfig> {
  const obj = parseObject(text, file);
  checkFields(obj, streamFields, file);
  if (obj.name === undefined) throw invalid(file, "name", "is required");
  const name = obj.name as string;
  const stem = basename(file, ".json");
  if (stem !== name) throw invalid(file, "name", `"${name}" does not match the file name (${stem}.json)`);
  for (const field of ["max_age", "duplicate_window"] as const) {
    const v = obj[field];
    if (typeof v === "number" && v !== 0 && v < MIN_DURATION) throw invalid(file, field, `must be 0 or at least 100 ms (${MIN_DURATION} ns)`);
  }
  const maxAge = obj.max_age as number | undefined;
  const window = obj.duplicate_window as number | undefined;
  if (maxAge && window && window > maxAge) throw invalid(file, "duplicate_window", `${window} ns exceeds max_age ${maxAge} ns`);
  const replicas = obj.num_replicas as number | undefined;
  if (replicas !== undefined && (replicas < 1 || replicas > 5)) throw invalid(file, "num_replicas", "must be between 1 and 5");
  if (obj.mirror === undefined && (obj.subjects as string[] | undefined)?.length === 0) {
    throw invalid(file, "subjects", "must list at least one subject");
  }
  return deepFreeze(obj as StreamFileConfig);
}

/** Parses and validates one consumer file's text; `file` names it in errors. Returns a deep-frozen config. */
export function parseConsumerConfig(text: string, file: string): Readonly<ConsumerFileConfig> {
  const obj = parseObject(text, file);
  for (const field of pushOnly) {
    if (field in obj) throw invalid(file, field, "is a push consumer field: Causeway consumers are durable pull consumers");
  }
  checkFields(obj, consumerFields, file);
  if (obj.durable_name === undefined) throw invalid(file, "durable_name", "is required (consumers are durable)");
  if (obj.name !== undefined && obj.name !== obj.durable_name) throw invalid(file, "name", "must equal durable_name");
  const backoff = obj.backoff as number[] | undefined;
  const maxDeliver = obj.max_deliver as number | undefined;
  if (backoff?.length) {
    if (maxDeliver !== undefined && maxDeliver > 0 && backoff.length > maxDeliver) {
      throw invalid(file, "backoff", `has ${backoff.length} steps, more than max_deliver ${maxDeliver}`);
    }
    // The server replaces ack_wait with backoff[0]; a different ack_wait would show as a change on every apply.
    if (obj.ack_wait !== undefined && obj.ack_wait !== backoff[0]) throw invalid(file, "ack_wait", `must equal backoff[0] (${backoff[0]} ns)`);
  }
  return deepFreeze(obj as ConsumerFileConfig);
}

function jsonFiles(dir: string, required: boolean): string[] {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new ConfigError(ErrorCode.StreamConfigInvalid, `cannot read stream definitions from ${dir}: ${(err as Error).message}`, { cause: err });
  }
  return entries.filter((e) => e.isFile() && e.name.endsWith(".json")).map((e) => join(dir, e.name)).sort();
}

function parseObject(text: string, file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(ErrorCode.StreamConfigInvalid, `${file}: invalid JSON: ${(err as Error).message}`, { cause: err });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(ErrorCode.StreamConfigInvalid, `${file}: expected a JSON object`);
  }
  return value as Record<string, unknown>;
}

function checkFields(obj: Record<string, unknown>, specs: Readonly<Record<string, FieldSpec>>, file: string): void {
  for (const [field, value] of Object.entries(obj)) {
    const spec = specs[field];
    // The server and the nats CLI silently ignore unknown fields; a typo would silently not apply.
    if (!spec) throw invalid(file, field, "is not a field the server knows (check the spelling; names are snake_case)");
    const expected = typeMismatch(spec.type, value);
    if (expected) throw invalid(file, field, `expected ${expected}, got ${JSON.stringify(value)}`);
  }
}

// Returns what was expected when `value` does not have type `type`, else undefined.
function typeMismatch(type: FieldType, value: unknown): string | undefined {
  const isInt = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v);
  const isNanos = (v: unknown) => isInt(v) && (v as number) >= 0;
  switch (type) {
    case "string": return typeof value === "string" ? undefined : "a string";
    case "name": return typeof value === "string" && namePattern.test(value) ? undefined : NAME_RULE;
    case "bool": return typeof value === "boolean" ? undefined : "true or false";
    case "int": return isInt(value) ? undefined : "an integer";
    case "nanos": return isNanos(value) ? undefined : "a duration in nanoseconds (a non-negative integer)";
    case "strings": return Array.isArray(value) && value.every((s) => typeof s === "string" && s !== "") ? undefined : "an array of non-empty strings";
    case "nanosList": return Array.isArray(value) && value.every(isNanos) ? undefined : "an array of durations in nanoseconds";
    case "object": return isPlainObject(value) ? undefined : "an object";
    case "objects": return Array.isArray(value) && value.every(isPlainObject) ? undefined : "an array of objects";
    case "metadata":
      if (!isPlainObject(value) || !Object.values(value).every((v) => typeof v === "string")) return "an object of string values";
      return Object.keys(value).some((k) => k.startsWith(RESERVED_METADATA)) ? `keys not starting with ${RESERVED_METADATA} (reserved for the server)` : undefined;
    default:
      return typeof value === "string" && type.oneOf.includes(value) ? undefined : `one of ${type.oneOf.map((v) => `"${v}"`).join(", ")}`;
  }
}

function invalid(file: string, field: string | undefined, problem: string): ConfigError {
  return new ConfigError(ErrorCode.StreamConfigInvalid, field === undefined ? `${file}: ${problem}` : `${file}: ${field}: ${problem}`);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------------------
// Comparing declared and actual configurations

/**
 * The declared fields of `declared` whose value differs from `actual` (the server's configuration), each
 * classified. Only declared fields are compared; a field the server omits counts as its documented default.
 */
export function diffConfig(kind: "stream" | "consumer", declared: Readonly<Record<string, unknown>>, actual: Readonly<Record<string, unknown>>): FieldChange[] {
  const specs = kind === "stream" ? streamFields : consumerFields;
  const changes: FieldChange[] = [];
  for (const [field, to] of Object.entries(declared)) {
    const spec = specs[field];
    if (!spec || spec.rule === "identity") continue;
    const from = actual[field] ?? spec.absent;
    if (sameValue(field, spec, to, from)) continue;
    changes.push({ field, from: actual[field], to, effect: effectOf(spec.rule, from, to) });
  }
  return changes;
}

function sameValue(field: string, spec: FieldSpec, to: unknown, from: unknown): boolean {
  if (spec.rule === "limit" && typeof to === "number" && typeof from === "number") return limitOf(to) === limitOf(from);
  if (field === "max_deliver" && typeof to === "number" && typeof from === "number") return normalizeMaxDeliver(to) === normalizeMaxDeliver(from);
  if (spec.rule === "subjects" && Array.isArray(to) && Array.isArray(from)) return sameSet(to as string[], from as string[]);
  if (spec.type === "metadata" && isPlainObject(to)) {
    // The server stamps `_nats.*` keys (versions, API levels); they are not the file's to declare.
    const own = isPlainObject(from) ? Object.fromEntries(Object.entries(from).filter(([k]) => !k.startsWith(RESERVED_METADATA))) : {};
    return Object.keys(own).length === Object.keys(to).length && declaredMatch(to, own);
  }
  return declaredMatch(to, from);
}

// A declared value matches when every declared part equals the actual one; objects compare declared keys only
// (the server fills in defaults of nested objects such as placement or republish).
function declaredMatch(declared: unknown, actual: unknown): boolean {
  if (Array.isArray(declared)) {
    return Array.isArray(actual) && actual.length === declared.length && declared.every((d, i) => declaredMatch(d, actual[i]));
  }
  if (isPlainObject(declared)) {
    const a = isPlainObject(actual) ? actual : {};
    return Object.entries(declared).every(([k, v]) => declaredMatch(v, a[k] ?? zeroOf(v)));
  }
  return declared === actual;
}

function zeroOf(v: unknown): unknown {
  if (typeof v === "boolean") return false;
  if (typeof v === "number") return 0;
  if (typeof v === "string") return "";
  if (Array.isArray(v)) return [];
  return {};
}

function effectOf(rule: Rule, from: unknown, to: unknown): ChangeEffect {
  switch (rule) {
    case "limit": return limitOf(to as number) < limitOf(from as number) ? "destructive" : "safe";
    case "replicas": return typeof from === "number" && typeof to === "number" && to > 0 && to < from ? "destructive" : "safe";
    case "subjects": return (from as string[]).some((s) => !(to as string[]).includes(s)) ? "destructive" : "safe";
    case "sticky": return from === true && to !== true ? "immutable" : "safe";
    case "sealed": return from === true ? "immutable" : "destructive"; // sealing cannot be undone
    case "retention": return from === "workqueue" || to === "workqueue" ? "immutable" : "destructive";
    case "destructive": return "destructive";
    case "immutable": return "immutable";
    default: return "safe";
  }
}

// Limits use -1 (and 0) for "unlimited"; compare them as Infinity so raising to unlimited is growth.
function limitOf(n: number): number {
  return n <= 0 ? Infinity : n;
}

function normalizeMaxDeliver(n: number): number {
  return n === 0 || n < -1 ? -1 : n;
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((s) => sb.has(s));
}

// ---------------------------------------------------------------------------------------------------------
// Applying

/**
 * Creates or updates every stream of `defs` and then its consumers, idempotently: a definition that matches
 * the server is `unchanged`. Destructive or in-place-impossible changes refuse the whole item
 * (CW_ERR_DESTRUCTIVE_CHANGE) unless `force`; with `force` the server-updatable part is applied and the rest
 * reported as `unapplied`. A definition the server itself rejects is `refused` with its reason. Connection
 * errors propagate.
 */
export async function applyStreams(jsm: JetStreamManager, defs: readonly StreamDefinition[], opts: ApplyOptions = {}): Promise<ApplyReport> {
  const force = opts.force ?? false;
  if (opts.replicas !== undefined && !(Number.isInteger(opts.replicas) && opts.replicas >= 1 && opts.replicas <= 5)) {
    throw new ConfigError(ErrorCode.Config, `replicas must be an integer between 1 and 5, got ${opts.replicas}`);
  }
  const results: ApplyResult[] = [];
  const record = (result: ApplyResult) => {
    results.push(result);
    for (const line of describeResult(result)) opts.log?.(line);
  };
  for (const def of defs) {
    const declared: StreamFileConfig = opts.replicas === undefined ? def.config : { ...def.config, num_replicas: opts.replicas };
    const { result, exists } = await applyStream(jsm, def, declared, force);
    record(result);
    for (const consumer of def.consumers) {
      const target: ApplyTarget = { kind: "consumer", stream: consumer.stream, name: consumer.config.durable_name, file: consumer.file };
      record(exists
        ? await applyConsumer(jsm, target, consumer.config, force)
        : refused(target, [], ErrorCode.StreamConfigInvalid, `stream ${consumer.stream} does not exist (see above)`));
    }
  }
  return Object.freeze({
    results: Object.freeze(results),
    ok: results.every((r) => r.status === "created" || r.status === "unchanged" || (r.status === "updated" && r.unapplied.length === 0)),
  });
}

async function applyStream(jsm: JetStreamManager, def: StreamDefinition, declared: StreamFileConfig, force: boolean): Promise<{ result: ApplyResult; exists: boolean }> {
  const target: ApplyTarget = { kind: "stream", stream: declared.name, name: declared.name, file: def.file };
  const info = await jsm.streams.info(declared.name).catch((err: unknown) => {
    if (isApiError(err, JetStreamApiCodes.StreamNotFound)) return undefined;
    throw err;
  });
  if (!info) {
    const result = await serverCall(target, [], async () => {
      // The client assigns to the config it is given; the definition is frozen, so hand it a copy.
      await jsm.streams.add(structuredClone(declared) as StreamConfig);
      return { ...target, status: "created" };
    });
    return { result, exists: result.status === "created" };
  }
  const changes = diffConfig("stream", declared, info.config as unknown as Record<string, unknown>);
  const result = await plan(target, changes, force, async (patch) => {
    await jsm.streams.update(declared.name, patch as Partial<StreamConfig>);
  });
  return { result, exists: true };
}

async function applyConsumer(jsm: JetStreamManager, target: ApplyTarget, declared: Readonly<ConsumerFileConfig>, force: boolean): Promise<ApplyResult> {
  const info = await jsm.consumers.info(target.stream, target.name).catch((err: unknown) => {
    if (isApiError(err, JetStreamApiCodes.ConsumerNotFound)) return undefined;
    throw err;
  });
  if (!info) {
    return serverCall(target, [], async () => {
      // `name` = `durable_name`, as `nats consumer add --config` sends it, so both create the same consumer.
      await jsm.consumers.add(target.stream, { ...structuredClone(declared), name: declared.durable_name } as ConsumerConfig);
      return { ...target, status: "created" };
    });
  }
  const changes = diffConfig("consumer", declared, info.config as unknown as Record<string, unknown>);
  return plan(target, changes, force, async (patch) => {
    await jsm.consumers.update(target.stream, target.name, patch as Partial<ConsumerConfig>);
  });
}

async function plan(target: ApplyTarget, changes: FieldChange[], force: boolean, update: (patch: Record<string, unknown>) => Promise<void>): Promise<ApplyResult> {
  if (changes.length === 0) return { ...target, status: "unchanged" };
  const applicable = changes.filter((c) => c.effect !== "immutable");
  const unapplied = changes.filter((c) => c.effect === "immutable");
  // Without force any hazard refuses the whole item, so the server never holds half of a definition.
  if (force ? applicable.length === 0 : changes.some((c) => c.effect !== "safe")) {
    const reason = changes.filter((c) => c.effect !== "safe").map((c) => `${formatChange(c)} ${hazard(c, target.kind)}`).join(", ");
    return refused(target, changes, ErrorCode.DestructiveChange, reason);
  }
  return serverCall(target, applicable, async () => {
    await update(Object.fromEntries(applicable.map((c) => [c.field, structuredClone(c.to)])));
    return { ...target, status: "updated", changes: applicable, unapplied };
  });
}

function hazard(change: FieldChange, kind: ApplyTarget["kind"]): string {
  return change.effect === "destructive"
    ? "is destructive (use --force)"
    : `cannot be changed in place, not even with --force (recreate the ${kind})`;
}

function refused(target: ApplyTarget, changes: readonly FieldChange[], code: ErrorCodeValue, reason: string, cause?: unknown): ApplyResult {
  const error = new ConfigError(code, `${label(target)} (${target.file}): ${reason}`, cause === undefined ? undefined : { cause });
  return { ...target, status: "refused", changes, reason, error };
}

// Runs a create or update; a request the server rejects becomes a refused result carrying its reason.
async function serverCall(target: ApplyTarget, changes: readonly FieldChange[], call: () => Promise<ApplyResult>): Promise<ApplyResult> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof JetStreamApiError)) throw err;
    return refused(target, changes, ErrorCode.StreamConfigInvalid, `the server rejected it: ${err.message}`, err);
  }
}

function isApiError(err: unknown, code: number): boolean {
  return err instanceof JetStreamApiError && err.code === code;
}

// ---------------------------------------------------------------------------------------------------------
// Describing results

/**
 * The lines an operator reads for one result, e.g. `✓ MESH_EVT created`, `= MESH_EVT.lineage unchanged`,
 * `~ MESH_CAP updated: max_age 604800000000000 → 1209600000000000`,
 * `✗ MESH_DECISION refused: deny_delete true → false cannot be changed in place`.
 */
export function describeResult(result: ApplyResult): string[] {
  const name = label(result);
  switch (result.status) {
    case "created": return [`✓ ${name} created`];
    case "unchanged": return [`= ${name} unchanged`];
    case "updated": {
      const lines = [`~ ${name} updated: ${result.changes.map(formatChange).join(", ")}`];
      if (result.unapplied.length > 0) {
        lines.push(`✗ ${name} not applied: ${result.unapplied.map((c) => `${formatChange(c)} ${hazard(c, result.kind)}`).join(", ")}`);
      }
      return lines;
    }
    case "refused": return [`✗ ${name} refused: ${result.reason}`];
  }
}

function label(target: ApplyTarget): string {
  return target.kind === "stream" ? target.name : `${target.stream}.${target.name}`;
}

function formatChange(c: FieldChange): string {
  return `${c.field} ${formatValue(c.from)} → ${formatValue(c.to)}`;
}

function formatValue(v: unknown): string {
  if (v === undefined) return "unset";
  return typeof v === "string" ? v : JSON.stringify(v);
}

// ---------------------------------------------------------------------------------------------------------
// Rendering for a prefix

/** The prefix the files' subjects are written with (so they work as they are with `nats stream add --config`). */
export const FILES_PREFIX = DEFAULT_PREFIX;

/** The per-capability consumer template in `<dir>/consumers/`; `{capability}` and `{major}` are its placeholders. */
export const CAPABILITY_TEMPLATE = "capability.template.json";
const TEMPLATE_SUFFIX = ".template.json";

/**
 * `subject` moved from {@link FILES_PREFIX} to `prefix`, token-wise: only a first token equal to the files' prefix
 * is replaced (`mesh.cap.>` → `acme.cap.>`); other subjects (`$JS.EVENT.…`, `meshy.x`) are returned unchanged.
 */
export function renderSubject(subject: string, prefix: string): string {
  if (prefix === FILES_PREFIX) return subject;
  const tokens = subject.split(".");
  return tokens[0] === FILES_PREFIX ? [prefix, ...tokens.slice(1)].join(".") : subject;
}

/** A stream's config with its subject fields (`subjects`) under `prefix`. Deep-frozen. */
export function renderStreamConfig(config: Readonly<StreamFileConfig>, prefix: string): Readonly<StreamFileConfig> {
  subjectsFor(prefix); // refuses a bad prefix with CW_ERR_INVALID_TOKEN
  const out = structuredClone(config) as StreamFileConfig;
  if (out.subjects !== undefined) out.subjects = out.subjects.map((s) => renderSubject(s, prefix));
  return deepFreeze(out);
}

/** A consumer's config with its subject fields (`filter_subject`, `filter_subjects`) under `prefix`. Deep-frozen. */
export function renderConsumerConfig(config: Readonly<ConsumerFileConfig>, prefix: string): Readonly<ConsumerFileConfig> {
  subjectsFor(prefix);
  const out = structuredClone(config) as ConsumerFileConfig;
  if (out.filter_subject !== undefined) out.filter_subject = renderSubject(out.filter_subject, prefix);
  if (out.filter_subjects !== undefined) out.filter_subjects = out.filter_subjects.map((s) => renderSubject(s, prefix));
  return deepFreeze(out);
}

/** Every definition of `defs` (streams and their consumers) rendered for `prefix`. Frozen. */
export function renderStreamDefinitions(defs: readonly StreamDefinition[], prefix: string): readonly StreamDefinition[] {
  return Object.freeze(defs.map((d) => Object.freeze({
    file: d.file,
    config: renderStreamConfig(d.config, prefix),
    consumers: Object.freeze(d.consumers.map((c) => Object.freeze({ file: c.file, stream: c.stream, config: renderConsumerConfig(c.config, prefix) }))),
  })));
}

/** Reads and validates `<dir>/consumers/capability.template.json` (placeholders in place). */
export function loadCapabilityTemplate(dir: string): Readonly<ConsumerFileConfig> {
  const file = join(dir, "consumers", CAPABILITY_TEMPLATE);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(ErrorCode.StreamConfigInvalid, `cannot read the capability consumer template ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseConsumerConfig(text, file);
}

/**
 * The shared consumer of `capability` v`major` from the template: `{capability}` and `{major}` substituted in its
 * string fields (not in the JSON text), then its subjects rendered for `prefix` and the result validated like
 * any consumer file. CW_ERR_STREAM_CONFIG_INVALID for a capability that is not a subject token.
 */
export function renderCapabilityConsumer(template: Readonly<ConsumerFileConfig>, capability: string, major: number, prefix: string, file = CAPABILITY_TEMPLATE): Readonly<ConsumerFileConfig> {
  if (!/^[a-z0-9_-]+$/.test(capability) || !Number.isSafeInteger(major) || major < 0) {
    throw new ConfigError(ErrorCode.StreamConfigInvalid, `capability "${capability}" v${major} is not a valid capability token and major version`);
  }
  const fill = (v: unknown): unknown => {
    if (typeof v === "string") return v.replaceAll("{capability}", capability).replaceAll("{major}", String(major));
    if (Array.isArray(v)) return v.map(fill);
    if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fill(x)]));
    return v;
  };
  const filled = parseConsumerConfig(JSON.stringify(fill(template)), file);
  return renderConsumerConfig(filled, prefix);
}

/**
 * The shared durable consumer of one capability, instantiated from `streams/consumers/capability.template.json`
 * (the single definition agents, the demo and operators use): `{capability}` and `{major}` are substituted
 * and the subject prefix applied. Validated like any consumer file. Prefer `MeshLayout.capabilityConsumer`.
 */
export async function capabilityConsumerConfig(capability: string, major: number, opts: { dir?: string; prefix?: string } = {}): Promise<Readonly<ConsumerFileConfig>> {
  const dir = opts.dir ?? defaultStreamsDir;
  return renderCapabilityConsumer(loadCapabilityTemplate(dir), capability, major, opts.prefix ?? FILES_PREFIX, join(dir, "consumers", CAPABILITY_TEMPLATE));
}
