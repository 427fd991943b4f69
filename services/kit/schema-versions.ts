// Schema versions: which event versions a consumer reads, and which declared version an output takes. One rule,
// used by the agent pipeline (step 5) and by the coordinator's release pre-check, so a release is never promised
// to a consumer that would quarantine it again.
//
// A `dataschema` is `<base>/<major>.<minor>.<patch>` (https://causeway.dev/schemas/<type>/1.1.0). A consumer
// declares, per event type, the version it was written against; it reads an event whose dataschema is that exact
// $id, or has the same base and major and a minor no newer than the declared one (any patch): minors only add
// (a new optional property, a looser bound), so data valid under 1.0.0 is valid under 1.1.0, and a consumer of
// 1.1.0 reads it. Each event is validated against the schema of its own dataschema. Anything else of an accepted
// type — another major, a newer minor, no dataschema, a version this process has no schema for — is
// `unsupported_version`; a type not accepted at all is `unknown_capability`.
import type { JetStreamManager, ConsumerInfo } from "@nats-io/jetstream";
import { CausewayError, ConfigError, ErrorCode, QuarantineReason, SchemaError } from "./errors.ts";
import { isConsumerNotFound } from "./jetstream-errors.ts";
import type { DataValidator, SchemaRegistry } from "./schemas.ts";
import type { MeshSubjects, ParsedSubject } from "./subjects.ts";

/** A versioned dataschema, split: `https://causeway.dev/schemas/report.published` and 1, 1, 0. */
export interface SchemaVersion {
  readonly base: string;
  readonly major: number;
  readonly minor: number;
  readonly patch: number;
}

/** What a consumer accepts: per event type, the dataschema ($id) it was written against. */
export type Accepts = Readonly<Record<string, string>>;

/** What an agent may emit: per event type, one dataschema or several (a migration emits two majors side by side). */
export type Emits = Readonly<Record<string, string | readonly string[]>>;

/** Why an event is not accepted: the quarantine reason, its error code, and a sentence for the operator. */
export interface AcceptRefusal {
  readonly ok: false;
  readonly reason: typeof QuarantineReason.UnknownCapability | typeof QuarantineReason.UnsupportedVersion;
  readonly code: typeof ErrorCode.UnknownCapability | typeof ErrorCode.UnsupportedVersion;
  readonly detail: string;
}

/** The verdict of {@link acceptanceOf}. */
export type Acceptance = { readonly ok: true; readonly dataschema: string } | AcceptRefusal;

const VERSION = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$/;

/** Splits `<base>/<major>.<minor>.<patch>`; undefined for any other $id (which then matches only itself). */
export function parseSchemaVersion(id: string): SchemaVersion | undefined {
  const slash = id.lastIndexOf("/");
  const m = slash > 0 ? VERSION.exec(id.slice(slash + 1)) : null;
  return m ? { base: id.slice(0, slash), major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]) } : undefined;
}

/** The base of every dataschema of the mesh: `<base>/<type>/<major>.<minor>.<patch>` (schemas/README.md). */
export const SCHEMA_ID_BASE = "https://causeway.dev/schemas";

/** The dataschema ($id) of `type` at `version` (`1.0.0`). */
export function schemaIdOf(type: string, version: string): string {
  return `${SCHEMA_ID_BASE}/${type}/${version}`;
}

/**
 * The newest dataschema of event type `type` among `ids` (a registry's `list()`), of major `major` when given;
 * undefined when there is none. Newest: the highest major, then minor, then patch.
 */
export function newestSchemaOf(ids: Iterable<string>, type: string, major?: number): string | undefined {
  const base = `${SCHEMA_ID_BASE}/${type}`;
  let best: { id: string; v: SchemaVersion } | undefined;
  for (const id of ids) {
    const v = parseSchemaVersion(id);
    if (v === undefined || v.base !== base || (major !== undefined && v.major !== major)) continue;
    if (best === undefined || compareVersions(v, best.v) > 0) best = { id, v };
  }
  return best?.id;
}

/**
 * True when a consumer written against `declared` reads data of `dataschema`: the same $id, or the same base and
 * major with a minor no newer than the declared one (any patch).
 */
export function readsVersion(declared: string, dataschema: string): boolean {
  if (dataschema === declared) return true;
  const d = parseSchemaVersion(declared), e = parseSchemaVersion(dataschema);
  return d !== undefined && e !== undefined && e.base === d.base && e.major === d.major && e.minor <= d.minor;
}

/** The versions a declaration reads, in words: `…/research.task.created 1.0.0 to 1.1.x`. */
export function describeAccepted(declared: string): string {
  const d = parseSchemaVersion(declared);
  return d === undefined ? `exactly ${declared}` : `${d.base} ${d.major}.0.0 to ${d.major}.${d.minor}.x`;
}

/**
 * Does a consumer that declares `accepts` take `event`? `consumer` names it in the refusal (`research.v1`).
 * `schemas` must have the event's own dataschema: the event is validated against it.
 */
export function acceptanceOf(accepts: Accepts, event: { readonly type: string; readonly dataschema?: string | undefined }, schemas: Pick<SchemaRegistry, "has">, consumer: string): Acceptance {
  const declared = Object.hasOwn(accepts, event.type) ? accepts[event.type] : undefined;
  if (declared === undefined) {
    return { ok: false, reason: QuarantineReason.UnknownCapability, code: ErrorCode.UnknownCapability, detail: `type ${event.type} is not accepted by ${consumer}` };
  }
  const unsupported = (why: string): AcceptRefusal => ({
    ok: false, reason: QuarantineReason.UnsupportedVersion, code: ErrorCode.UnsupportedVersion,
    detail: `${why}: ${consumer} accepts ${event.type} ${describeAccepted(declared)}`,
  });
  const dataschema = event.dataschema;
  if (dataschema === undefined) return unsupported(`${event.type} without a dataschema`);
  if (!readsVersion(declared, dataschema)) return unsupported(`dataschema ${dataschema} is not a version it reads`);
  if (!schemas.has(dataschema)) return unsupported(`dataschema ${dataschema} has no schema loaded here to validate it against`);
  return { ok: true, dataschema };
}

/** The accepted inputs of one consumer, compiled: {@link acceptanceOf} with each accepted version's validator at hand. */
export interface AcceptedInputs {
  /** The event's own validator when accepted (two map lookups), else why not. */
  check(event: { readonly type: string; readonly dataschema?: string | undefined }): { readonly ok: true; readonly dataschema: string; readonly validate: DataValidator } | AcceptRefusal;
}

/**
 * Compiles `accepts` against every schema of `schemas` once, so the hot path is a lookup. Throws SchemaError
 * CW_ERR_UNKNOWN_SCHEMA when a declared dataschema is not in the registry.
 */
export function compileAccepts(schemas: SchemaRegistry, accepts: Accepts, consumer: string): AcceptedInputs {
  const byType = new Map<string, Map<string, DataValidator>>();
  for (const [type, declared] of Object.entries(accepts)) {
    if (!schemas.has(declared)) throw new SchemaError(ErrorCode.UnknownSchema, `accepts: no schema has $id ${declared} (for ${type})`);
    const versions = new Map<string, DataValidator>();
    for (const id of schemas.list()) {
      if (acceptanceOf(accepts, { type, dataschema: id }, schemas, consumer).ok) versions.set(id, schemas.validator(id));
    }
    byType.set(type, versions);
  }
  return {
    check(event) {
      const validate = event.dataschema === undefined ? undefined : byType.get(event.type)?.get(event.dataschema);
      if (validate) return { ok: true, dataschema: event.dataschema!, validate };
      const verdict = acceptanceOf(accepts, event, schemas, consumer);
      // Every registered version the declaration reads was compiled above: a miss is a refusal.
      return verdict.ok ? { ok: false, reason: QuarantineReason.UnsupportedVersion, code: ErrorCode.UnsupportedVersion, detail: `dataschema ${event.dataschema} was not compiled` } : verdict;
    },
  };
}

/** The declared outputs of one agent, compiled. */
export interface DeclaredOutputs {
  /**
   * The dataschema an output takes and its validator: `emit.dataschema` when given (it must be declared); else the
   * type's only declared version; else, on a `<prefix>.cap` or `<prefix>.handoff` subject, the newest declared
   * version with the subject's major; else the newest declared version. A fact (`<prefix>.evt.<type>.v<major>`)
   * takes the declared version of the subject's major, and only its own type. Throws CausewayError
   * CW_ERR_UNDECLARED_OUTPUT for a type or dataschema the agent does not declare, or a fact on another subject.
   */
  choose(emit: { readonly type: string; readonly to: string; readonly dataschema?: string | undefined }): { readonly dataschema: string; readonly validate: DataValidator };
}

/**
 * Compiles `emits` (`who` names the agent in errors). A type with several dataschemas must name versions of one
 * base (`<base>/<major>.<minor>.<patch>`), all different: otherwise "newest" means nothing (CW_ERR_CONFIG).
 * Throws SchemaError CW_ERR_UNKNOWN_SCHEMA for a dataschema the registry does not have.
 */
export function compileEmits(schemas: SchemaRegistry, emits: Emits, who: string, subjects: Pick<MeshSubjects, "parse" | "prefix">): DeclaredOutputs {
  interface Declared { readonly dataschema: string; readonly version: SchemaVersion | undefined; readonly validate: DataValidator }
  const byType = new Map<string, readonly Declared[]>(); // newest first
  for (const [type, value] of Object.entries(emits)) {
    const ids = typeof value === "string" ? [value] : [...value];
    if (ids.length === 0) throw new ConfigError(ErrorCode.Config, `emits: ${type} names no dataschema`);
    const declared = ids.map((dataschema) => {
      if (!schemas.has(dataschema)) throw new SchemaError(ErrorCode.UnknownSchema, `emits: no schema has $id ${dataschema} (for ${type})`);
      return { dataschema, version: parseSchemaVersion(dataschema), validate: schemas.validator(dataschema) };
    });
    if (declared.length > 1) {
      const bases = new Set(declared.map((d) => d.version?.base));
      const versions = new Set(declared.map((d) => d.version && `${d.version.major}.${d.version.minor}.${d.version.patch}`));
      if (bases.size !== 1 || bases.has(undefined) || versions.size !== declared.length) {
        throw new ConfigError(ErrorCode.Config, `emits: ${type} names several dataschemas (${ids.join(", ")}); they must be different <major>.<minor>.<patch> versions of one schema`);
      }
      declared.sort((a, b) => compareVersions(b.version!, a.version!));
    }
    byType.set(type, declared);
  }
  const undeclared = (message: string) => new CausewayError(ErrorCode.UndeclaredOutput, message);
  // Per output, the subject is parsed only when it matters: a fact's (its type and major are checked) or a
  // choice between several versions; the common case — one version, work for a capability — is a map lookup.
  const factHead = `${subjects.prefix}.evt.`;
  return {
    choose(emit) {
      const declared = byType.get(emit.type);
      if (!declared) throw undeclared(`handler emitted ${emit.type}, which ${who} does not declare in emits`);
      const named = emit.dataschema === undefined ? undefined : declared.find((d) => d.dataschema === emit.dataschema);
      if (emit.dataschema !== undefined && !named) {
        throw undeclared(`handler emitted ${emit.type} as ${emit.dataschema}, which ${who} does not declare in emits (it declares ${declared.map((d) => d.dataschema).join(", ")})`);
      }
      if (emit.to.startsWith(factHead)) {
        // A fact is published on its own subject, `<prefix>.evt.<type>.v<major>`: subscribers filter on it.
        const to = parsed(subjects, emit.to);
        const major = to?.kind === "evt" && to.type === emit.type ? to.major : undefined;
        const chosen = major === undefined ? undefined : (named ? [named] : declared).find((d) => (d.version?.major ?? major) === major);
        if (!chosen) {
          throw undeclared(`handler emitted ${emit.type} ${emit.dataschema ?? `(${declared.map((d) => d.dataschema).join(", ")})`} on ${emit.to}: a fact goes on the subject of its own type and major, ${declared.map((d) => `<prefix>.evt.${emit.type}.v${d.version?.major ?? "?"}`).join(" or ")}`);
        }
        return chosen;
      }
      if (named) return named;
      if (declared.length === 1) return declared[0]!;
      const to = parsed(subjects, emit.to);
      const major = to?.kind === "cap" || to?.kind === "handoff" ? to.major : undefined;
      return (major === undefined ? undefined : declared.find((d) => d.version!.major === major)) ?? declared[0]!;
    },
  };
}

function compareVersions(a: SchemaVersion, b: SchemaVersion): number {
  return a.major - b.major || a.minor - b.minor || a.patch - b.patch;
}

function parsed(subjects: Pick<MeshSubjects, "parse">, subject: string): ParsedSubject | undefined {
  try {
    return subjects.parse(subject);
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The declaration on the consumer: what the agents sharing a durable accept, for the release pre-check.

/** The consumer metadata key an agent writes its {@link AcceptsDeclaration} under (JSON). */
export const ACCEPTS_METADATA = "causeway.accepts";

/** What the agent that last started on a durable declared: its accepts, and who it was. */
export interface AcceptsDeclaration {
  readonly accepts: Accepts;
  /** The agent's principal and implementation version. */
  readonly by: string;
  readonly version: string;
}

/**
 * Writes `declaration` into the metadata of the durable `info` describes, unless it is there already (a restart
 * of the same build writes nothing). The last replica to start wins: during a rollout whose replicas accept
 * different versions, the durable says what the newest one accepts.
 */
export async function declareAccepts(jsm: JetStreamManager, info: ConsumerInfo, declaration: AcceptsDeclaration): Promise<void> {
  const value = JSON.stringify({ accepts: sortedRecord(declaration.accepts), by: declaration.by, version: declaration.version });
  if (info.config.metadata?.[ACCEPTS_METADATA] === value) return;
  // consumers.update reads the current configuration and changes only the metadata (a pause stays in force).
  await jsm.consumers.update(info.stream_name, info.name, { metadata: { ...info.config.metadata, [ACCEPTS_METADATA]: value } });
}

/**
 * What the durable `durable` on `stream` declares it accepts: undefined when the consumer does not exist or
 * carries no (valid) declaration — no agent of this kit has started on it.
 */
export async function readAcceptsDeclaration(jsm: JetStreamManager, stream: string, durable: string): Promise<AcceptsDeclaration | undefined> {
  let info: ConsumerInfo;
  try {
    info = await jsm.consumers.info(stream, durable);
  } catch (err) {
    if (isConsumerNotFound(err)) return undefined;
    throw err;
  }
  const raw = info.config.metadata?.[ACCEPTS_METADATA];
  if (raw === undefined) return undefined;
  try {
    const parsed = JSON.parse(raw) as { accepts?: unknown; by?: unknown; version?: unknown };
    const accepts = parsed.accepts;
    if (typeof accepts !== "object" || accepts === null || Array.isArray(accepts) || !Object.values(accepts).every((v) => typeof v === "string")) return undefined;
    return { accepts: accepts as Accepts, by: String(parsed.by ?? "?"), version: String(parsed.version ?? "?") };
  } catch {
    return undefined;
  }
}

function sortedRecord(r: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(r).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
