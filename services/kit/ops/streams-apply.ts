// Applying stream and consumer definitions idempotently (`causeway streams apply`, the demo, test fixtures):
// only what a file declares is compared with what the server reports, and changes that lose data or that the
// server cannot make in place are refused unless the caller forces them.
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { ConsumerConfig, JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import { ConfigError, ErrorCode } from "../errors.ts";
import type { CausewayError, ErrorCodeValue } from "../errors.ts";
import { RESERVED_METADATA, consumerFields, isPlainObject, streamFields, type ConsumerFileConfig, type FieldSpec, type Rule, type StreamDefinition, type StreamFileConfig } from "../stream-files.ts";

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
function describeResult(result: ApplyResult): string[] {
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

