// Stream and consumer definitions (streams/*.json, streams/consumers/<STREAM>.<durable>.json): read, validated
// and rendered for a prefix, for the mesh layout (layout.ts). The files keep the server's own field names, so the
// same bytes work with `nats stream add --config`; errors name the file and the field. Applying them to a
// server is operator tooling: ops/streams-apply.ts.
import { readdirSync, readFileSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import type { ConsumerConfig, StreamConfig } from "@nats-io/jetstream";
import { ConfigError, ErrorCode } from "./errors.ts";
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

// ---------------------------------------------------------------------------------------------------------
// Field tables: the type of every field the server (2.12) accepts, and what changing it means.

type FieldType =
  | "string" | "name" | "bool" | "int" | "nanos" | "strings" | "nanosList" | "object" | "objects" | "metadata"
  | { readonly oneOf: readonly string[] };

// How a change is classified. `limit`: lowering is destructive, a value <= 0 means unlimited.
// `sticky`: true → false is impossible in place. `subjects`: removing one is destructive.
// `replicas`: lowering is destructive. `retention`: to/from workqueue is impossible, limits ↔ interest
// is destructive (interest retention deletes acknowledged messages).
export type Rule = "safe" | "limit" | "sticky" | "subjects" | "replicas" | "retention" | "sealed" | "destructive" | "immutable" | "identity";

export interface FieldSpec {
  readonly type: FieldType;
  readonly rule: Rule;
  /** The value the server means when it omits the field. */
  readonly absent?: unknown;
}

/** The type and change rule of every stream field the server accepts (ops/streams-apply.ts compares by them). */
export const streamFields: Readonly<Record<string, FieldSpec>> = {
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

/** The same for consumer fields. */
export const consumerFields: Readonly<Record<string, FieldSpec>> = {
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
/** Metadata keys the server sets itself (ignored when comparing). */
export const RESERVED_METADATA = "_nats.";
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

/** A JSON object (not an array, not null). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
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
// Rendering for a prefix

/** The prefix the files' subjects are written with (so they work as they are with `nats stream add --config`). */
export const FILES_PREFIX = DEFAULT_PREFIX;

/** The per-capability consumer template in `<dir>/consumers/`; `{capability}` and `{major}` are its placeholders. */
export const CAPABILITY_TEMPLATE = "capability.template.json";
/** The per-subscription consumer template in `<dir>/consumers/`; `{principal}`, `{type}`, `{type_name}` and `{major}`. */
export const SUBSCRIPTION_TEMPLATE = "subscription.template.json";
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

/** Reads and validates a consumer template of `<dir>/consumers/` (placeholders in place). */
export function loadConsumerTemplate(dir: string, name: string = CAPABILITY_TEMPLATE): Readonly<ConsumerFileConfig> {
  const file = join(dir, "consumers", name);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(ErrorCode.StreamConfigInvalid, `cannot read the consumer template ${file}: ${(err as Error).message}`, { cause: err });
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
  return renderConsumerTemplate(template, { capability, major: String(major) }, prefix, file);
}

/**
 * The consumer of `principal`'s subscription to facts of `type` v`major` from the subscription template:
 * `{principal}`, `{type}` (dotted, for subjects), `{type_name}` (dots as `_`, for the durable's name) and `{major}`
 * substituted. CW_ERR_STREAM_CONFIG_INVALID for a principal or type that is not made of subject tokens.
 */
export function renderSubscriptionConsumer(template: Readonly<ConsumerFileConfig>, principal: string, type: string, major: number, prefix: string, file = SUBSCRIPTION_TEMPLATE): Readonly<ConsumerFileConfig> {
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(principal) || !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(type) || !Number.isSafeInteger(major) || major < 0) {
    throw new ConfigError(ErrorCode.StreamConfigInvalid, `${principal}'s subscription to ${type} v${major} does not name a valid principal, type and major version`);
  }
  return renderConsumerTemplate(template, { principal, type, type_name: type.replaceAll(".", "_"), major: String(major) }, prefix, file);
}

function renderConsumerTemplate(template: Readonly<ConsumerFileConfig>, vars: Readonly<Record<string, string>>, prefix: string, file: string): Readonly<ConsumerFileConfig> {
  const entries = Object.entries(vars);
  const fill = (v: unknown): unknown => {
    if (typeof v === "string") return entries.reduce((text, [name, value]) => text.replaceAll(`{${name}}`, value), v);
    if (Array.isArray(v)) return v.map(fill);
    if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fill(x)]));
    return v;
  };
  const filled = parseConsumerConfig(JSON.stringify(fill(template)), file);
  return renderConsumerConfig(filled, prefix);
}

