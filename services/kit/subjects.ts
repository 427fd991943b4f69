// The subject grammar of DESIGN.md ("Subjects and streams"): builders that refuse bad tokens, and a parser
// that turns any subject into a typed value or a precise error. Parsing runs on every message, so the work
// that depends only on the prefix (validating it, the "<prefix>." string to match) is done once per prefix
// and cached in a frozen `MeshSubjects` object.
import { PRIORITIES, Priority, type PriorityValue } from "./context.ts";
import { ErrorCode, SubjectError } from "./errors.ts";

/** The default subject prefix. */
export const DEFAULT_PREFIX = "mesh";

/** The fixed tokens that follow the prefix, one per kind of subject (`mesh.<token>.…`). */
export const SubjectToken = {
  Ingest: "ingest",
  Cap: "cap",
  Handoff: "handoff",
  Evt: "evt",
  Decision: "decision",
  Quarantine: "quarantine",
  Audit: "audit",
  Checkpoint: "checkpoint",
  Ctl: "ctl",
} as const;

/** The `kind` of a parsed subject. */
export const SubjectKind = {
  Ingest: "ingest",
  Cap: "cap",
  Handoff: "handoff",
  Evt: "evt",
  Decision: "decision",
  Quarantine: "quarantine",
  Ctl: "ctl",
  Checkpoint: "checkpoint",
} as const;

/** One of the subject kinds. */
export type SubjectKindValue = (typeof SubjectKind)[keyof typeof SubjectKind];

/** The JetStream streams of DESIGN.md, by the names `streams/*.json` gives them. */
export const StreamName = {
  Ingest: "MESH_INGEST",
  Cap: "MESH_CAP",
  Handoff: "MESH_HANDOFF",
  Evt: "MESH_EVT",
  Decision: "MESH_DECISION",
  Quarantine: "MESH_QUARANTINE",
  Audit: "MESH_AUDIT",
  Advisory: "MESH_ADVISORY",
} as const;

/** One of the stream names. */
export type StreamNameValue = (typeof StreamName)[keyof typeof StreamName];

/** The rule every token follows (prefix tokens included). */
export const TOKEN_RULE = "lowercase [a-z0-9_-]+";
const tokenPattern = /^[a-z0-9_-]+$/;
const tokensPattern = /^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*$/;
/** The lanes of a routed capability (routing.ts): `l1` … `l4`, one per version the control plane routes to at once. */
export const LANES = Object.freeze(["l1", "l2", "l3", "l4"] as const);
/** One of {@link LANES}. */
export type Lane = (typeof LANES)[number];
const LANE_RULE = `one of ${LANES.join(", ")}`;
const lanePattern = /^l[1-4]$/;
/**
 * The priorities that have their own subjects and durables (issue 16): every one of PRIORITIES but `normal`, whose
 * work stays on the capability's plain subject and lanes. `<…>.v<major>[.<lane>].<priority>`.
 */
export const PRIORITY_TOKENS: readonly PriorityValue[] = Object.freeze(PRIORITIES.filter((p) => p !== Priority.Normal));
const PRIORITY_RULE = `one of ${PRIORITY_TOKENS.join(", ")} (normal has no token)`;
const isPriorityToken = (t: string): t is PriorityValue => (PRIORITY_TOKENS as readonly string[]).includes(t);
/** The token a priority adds to a capability subject: "" for normal, `.<priority>` else. */
export function priorityTail(priority: PriorityValue): string {
  return priority === Priority.Normal ? "" : `.${priority}`;
}
// `v` then a non-negative integer without leading zeros, so parse → build gives back the same subject.
const majorPattern = /^v(0|[1-9][0-9]*)$/;

/** `<prefix>.ingest.<source>.<rest…>`: a raw upstream event, before notarization. */
export interface IngestSubject { kind: "ingest"; prefix: string; source: string; rest: readonly string[] }
/**
 * `<prefix>.cap.<capability>.v<major>`: work addressed to a capability; `….<lane>` when the control plane routes
 * the capability by version (routing.ts): the lane one implementation version consumes; and `….<priority>` last
 * for work of a flow whose priority is not normal (issue 16): `critical` or `background`.
 */
export interface CapSubject { kind: "cap"; prefix: string; capability: string; major: number; lane?: string; priority?: PriorityValue }
/** `<prefix>.handoff.<capability>.v<major>`: work for a critical capability, held by the coordinator. */
export interface HandoffSubject { kind: "handoff"; prefix: string; capability: string; major: number }
/**
 * `<prefix>.evt.<type>.v<major>`: a fact or result that ends or branches a flow — its CloudEvents type (one or
 * more tokens, e.g. `report.published`) and the major version of its dataschema. Consumers subscribe to it.
 */
export interface EvtSubject { kind: "evt"; prefix: string; type: string; major: number }
/** `<prefix>.decision.<decision>`: a signed decision (grant, approval, release, rejection, kill switch). */
export interface DecisionSubject { kind: "decision"; prefix: string; decision: string }
/** `<prefix>.quarantine.<reason>.<capability>`: a quarantined envelope. */
export interface QuarantineSubject { kind: "quarantine"; prefix: string; reason: string; capability: string }
/** `<prefix>.ctl.<service>.<action>`: a request/reply control endpoint. */
export interface CtlSubject { kind: "ctl"; prefix: string; service: string; action: string }
/** `<prefix>.audit.checkpoint`: lineage's signed checkpoints. */
export interface CheckpointSubject { kind: "checkpoint"; prefix: string }

/** A subject of the mesh, discriminated on `kind`. */
export type ParsedSubject =
  | IngestSubject
  | CapSubject
  | HandoffSubject
  | EvtSubject
  | DecisionSubject
  | QuarantineSubject
  | CtlSubject
  | CheckpointSubject;

/** Builders and parser bound to one prefix. Obtain with {@link subjectsFor}; frozen and cached per prefix. */
export interface MeshSubjects {
  readonly prefix: string;
  ingest(source: string, ...rest: string[]): string;
  /** `<prefix>.cap.<capability>.v<major>`, and `.<priority>` after it for a priority other than normal. */
  capability(capability: string, major: number, priority?: PriorityValue): string;
  /** `<prefix>.cap.<capability>.v<major>.<lane>`: the capability's work routed to one version's lane (`.<priority>` after it as above). */
  lane(capability: string, major: number, lane: Lane, priority?: PriorityValue): string;
  handoff(capability: string, major: number): string;
  /** `<prefix>.evt.<type>.v<major>`: where facts of `type` (dataschema major `major`) are published. */
  event(type: string, major: number): string;
  decision(kind: string): string;
  quarantine(reason: string, capability: string): string;
  control(service: string, action: string): string;
  checkpoint(): string;
  /** Parses a subject under this prefix; throws SubjectError CW_ERR_INVALID_SUBJECT otherwise. */
  parse(subject: string): ParsedSubject;
}

const cache = new Map<string, MeshSubjects>();

/** The builders and parser for `prefix` (one or more tokens, e.g. `mesh` or `acme.mesh`). */
export function subjectsFor(prefix: string = DEFAULT_PREFIX): MeshSubjects {
  let subjects = cache.get(prefix);
  if (subjects === undefined) {
    subjects = createMeshSubjects(prefix);
    cache.set(prefix, subjects);
  }
  return subjects;
}

function createMeshSubjects(prefix: string): MeshSubjects {
  if (typeof prefix !== "string") throw tokenError("prefix", prefix);
  for (const token of prefix.split(".")) checkToken("prefix", token);
  const head = `${prefix}.`;
  const prefixTokens = prefix.split(".").length;

  const parse = (subject: string): ParsedSubject => {
    if (typeof subject !== "string") throw subjectError(String(subject), "not a string");
    if (!subject.startsWith(head)) throw subjectError(subject, `expected prefix "${prefix}"`);
    const tail = subject.slice(head.length);
    const t = tail.split(".");
    // One regex over the whole tail on the hot path; the per-token walk only runs to explain a failure.
    if (!tokensPattern.test(tail)) {
      const i = t.findIndex((token) => !tokenPattern.test(token));
      throw subjectError(subject, describeBadToken(t[i]!, prefixTokens + i));
    }
    const count = (n: number, shape: string) => {
      if (t.length !== n) throw subjectError(subject, `${t[0]} subjects have ${n + prefixTokens} tokens: ${prefix}.${shape}`);
    };
    switch (t[0]) {
      case SubjectToken.Ingest:
        if (t.length < 3) throw subjectError(subject, `ingest subjects have at least ${3 + prefixTokens} tokens: ${prefix}.ingest.<source>.<token>…`);
        return { kind: "ingest", prefix, source: t[1]!, rest: t.slice(2) };
      case SubjectToken.Cap: {
        // cap.<capability>.v<major>[.<lane>][.<priority>]
        const last = t.at(-1)!;
        const priority = t.length > 3 && isPriorityToken(last) ? last : Priority.Normal;
        const n = priority === Priority.Normal ? t.length : t.length - 1;
        if (n === 4 && !lanePattern.test(t[3]!)) throw subjectError(subject, `"${t[3]}" is no lane (${LANE_RULE}) nor priority (${PRIORITY_RULE})`);
        if (n !== 3 && n !== 4) count(3, "cap.<capability>.v<major>[.<lane>][.<priority>]");
        // Normal work has no token, and no `priority` here (as a plain capability subject has no `lane`).
        const parsed: CapSubject = { kind: "cap", prefix, capability: t[1]!, major: majorOf(subject, t[2]!) };
        if (n === 4) parsed.lane = t[3]!;
        if (priority !== Priority.Normal) parsed.priority = priority;
        return parsed;
      }
      case SubjectToken.Handoff: {
        count(3, `${t[0]}.<capability>.v<major>`);
        return { kind: t[0], prefix, capability: t[1]!, major: majorOf(subject, t[2]!) };
      }
      case SubjectToken.Evt:
        if (t.length < 3) throw subjectError(subject, `evt subjects have at least ${3 + prefixTokens} tokens: ${prefix}.evt.<type>.v<major>`);
        return { kind: "evt", prefix, type: t.slice(1, -1).join("."), major: majorOf(subject, t.at(-1)!) };
      case SubjectToken.Decision:
        count(2, "decision.<kind>");
        return { kind: "decision", prefix, decision: t[1]! };
      case SubjectToken.Quarantine:
        count(3, "quarantine.<reason>.<capability>");
        return { kind: "quarantine", prefix, reason: t[1]!, capability: t[2]! };
      case SubjectToken.Ctl:
        count(3, "ctl.<service>.<action>");
        return { kind: "ctl", prefix, service: t[1]!, action: t[2]! };
      case SubjectToken.Audit:
        if (t.length !== 2 || t[1] !== SubjectToken.Checkpoint) throw subjectError(subject, `the only audit subject is ${prefix}.audit.checkpoint`);
        return { kind: "checkpoint", prefix };
      default:
        throw subjectError(subject, `unknown subject kind "${t[0]}"`);
    }
  };

  return Object.freeze({
    prefix,
    ingest(source: string, ...rest: string[]) {
      if (rest.length === 0) throw new SubjectError(ErrorCode.InvalidToken, "an ingest subject needs at least one token after the source");
      checkToken("source", source);
      for (const token of rest) checkToken("ingest", token);
      return `${head}ingest.${source}.${rest.join(".")}`;
    },
    capability(capability: string, major: number, priority: PriorityValue = Priority.Normal) {
      return `${head}cap.${checkToken("capability", capability)}.v${checkMajor(major)}${checkPriority(priority)}`;
    },
    lane(capability: string, major: number, lane: Lane, priority: PriorityValue = Priority.Normal) {
      if (!lanePattern.test(lane)) throw new SubjectError(ErrorCode.InvalidToken, `"${String(lane)}" is no lane (${LANE_RULE})`);
      return `${head}cap.${checkToken("capability", capability)}.v${checkMajor(major)}.${lane}${checkPriority(priority)}`;
    },
    handoff(capability: string, major: number) {
      return `${head}handoff.${checkToken("capability", capability)}.v${checkMajor(major)}`;
    },
    event(type: string, major: number) {
      if (typeof type !== "string") throw tokenError("event type", type);
      for (const token of type.split(".")) checkToken("event type", token);
      return `${head}evt.${type}.v${checkMajor(major)}`;
    },
    decision(kind: string) {
      return `${head}decision.${checkToken("decision kind", kind)}`;
    },
    quarantine(reason: string, capability: string) {
      return `${head}quarantine.${checkToken("reason", reason)}.${checkToken("capability", capability)}`;
    },
    control(service: string, action: string) {
      return `${head}ctl.${checkToken("service", service)}.${checkToken("action", action)}`;
    },
    checkpoint() {
      return `${head}audit.checkpoint`;
    },
    parse,
  });
}

/** `<prefix>.cap.<capability>.v<major>`. Throws SubjectError CW_ERR_INVALID_TOKEN on a bad token or major. */
export function capabilitySubject(capability: string, major: number, prefix?: string): string {
  return subjectsFor(prefix).capability(capability, major);
}

/** `<prefix>.handoff.<capability>.v<major>`. */
export function handoffSubject(capability: string, major: number, prefix?: string): string {
  return subjectsFor(prefix).handoff(capability, major);
}

/** `<prefix>.evt.<type>.v<major>`. */
export function eventSubject(type: string, major: number, prefix?: string): string {
  return subjectsFor(prefix).event(type, major);
}

/** `<prefix>.decision.<kind>`. */
export function decisionSubject(kind: string, prefix?: string): string {
  return subjectsFor(prefix).decision(kind);
}

/** `<prefix>.quarantine.<reason>.<capability>`. */
export function quarantineSubject(reason: string, capability: string, prefix?: string): string {
  return subjectsFor(prefix).quarantine(reason, capability);
}

/**
 * `mesh.ingest.<source>.<rest…>` (at least one token after the source) under the default prefix. The rest
 * parameter leaves no room for a trailing prefix: use `subjectsFor(prefix).ingest(…)` for another one.
 */
export function ingestSubject(source: string, ...rest: string[]): string {
  return subjectsFor().ingest(source, ...rest);
}

/** `<prefix>.ctl.<service>.<action>`. */
export function controlSubject(service: string, action: string, prefix?: string): string {
  return subjectsFor(prefix).control(service, action);
}

/** `<prefix>.audit.checkpoint`. */
export function checkpointSubject(prefix?: string): string {
  return subjectsFor(prefix).checkpoint();
}

/** Parses a subject into its typed parts; throws SubjectError CW_ERR_INVALID_SUBJECT for anything else. */
export function parseSubject(subject: string, prefix?: string): ParsedSubject {
  return subjectsFor(prefix).parse(subject);
}

const streamByKind = {
  ingest: StreamName.Ingest,
  cap: StreamName.Cap,
  handoff: StreamName.Handoff,
  evt: StreamName.Evt,
  decision: StreamName.Decision,
  quarantine: StreamName.Quarantine,
  checkpoint: StreamName.Audit,
  ctl: undefined,
} as const satisfies Record<SubjectKindValue, StreamNameValue | undefined>;

/** The stream that captures a parsed subject; `undefined` for control subjects (request/reply, no stream). */
export function streamFor<S extends ParsedSubject>(subject: S): (typeof streamByKind)[S["kind"]] {
  return streamByKind[subject.kind as S["kind"]];
}

function checkToken(what: string, token: unknown): string {
  if (typeof token !== "string" || !tokenPattern.test(token)) throw tokenError(what, token);
  return token;
}

function checkPriority(priority: unknown): string {
  if (!(PRIORITIES as readonly unknown[]).includes(priority)) throw new SubjectError(ErrorCode.InvalidToken, `"${String(priority)}" is no priority (${PRIORITIES.join(", ")})`);
  return priorityTail(priority as PriorityValue);
}

function majorOf(subject: string, token: string): number {
  const m = majorPattern.exec(token);
  const major = m ? Number(m[1]) : NaN;
  if (!Number.isSafeInteger(major)) throw subjectError(subject, `"${token}" is not a major version v<non-negative integer>`);
  return major;
}

function checkMajor(major: unknown): number {
  if (typeof major !== "number" || !Number.isSafeInteger(major) || major < 0) {
    throw new SubjectError(ErrorCode.InvalidToken, `invalid major version ${String(major)}: must be a non-negative integer`);
  }
  return major;
}

function tokenError(what: string, token: unknown): SubjectError {
  const shown = typeof token === "string" ? JSON.stringify(token) : String(token);
  return new SubjectError(ErrorCode.InvalidToken, `invalid ${what} token ${shown}: subject tokens are ${TOKEN_RULE} (no dots, wildcards, spaces or uppercase)`);
}

function subjectError(subject: string, why: string): SubjectError {
  return new SubjectError(ErrorCode.InvalidSubject, `invalid subject ${JSON.stringify(subject)}: ${why}`);
}

function describeBadToken(token: string, position: number): string {
  if (token === "") return `empty token at position ${position}`;
  if (token === "*" || token === ">") return `wildcard "${token}" at position ${position}: a concrete subject has none`;
  return `token ${JSON.stringify(token)} at position ${position} is not ${TOKEN_RULE}`;
}

/** The private inbox prefix of a principal; connections must set it as `inboxPrefix`. */
export function inboxPrefix(principal: string): string {
  return `_INBOX_${principal}`;
}
