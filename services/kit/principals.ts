// The mesh's identities (infra/principals.json) and the NATS permissions derived from them.
//
// principals.json states intent an operator can review: what each principal publishes, which capabilities it
// serves and addresses, which durable consumers it reads, which KV buckets it reads or writes. This module
// turns that into least-privilege nats-server permissions, JetStream API subjects included, so nobody
// hand-writes `$JS.API.…` lists. Every grant carries the reason it exists; `causeway infra render` prints it
// next to the subject in the generated config.
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import type { ErrorObject, ValidateFunction } from "ajv/dist/2020.js";
import { ConfigError, ErrorCode } from "./errors.ts";
import { KvBucket, type KvBucketValue } from "./buckets.ts";
import { PRIORITIES, Priority, type PriorityValue } from "./context.ts";
import { LANES, StreamName, priorityTail, type Lane } from "./subjects.ts";
import type { StreamNameValue } from "./subjects.ts";

/** The repository root (two levels above services/kit). */
const repoRoot = resolve(import.meta.dirname, "..", "..");

/** Where the principals file lives unless a path is given. */
export const DEFAULT_PRINCIPALS_PATH = join(repoRoot, "infra", "principals.json");
const SCHEMA_PATH = join(repoRoot, "infra", "principals.schema.json");

/** What a principal is for; decides the grants that are not spelled out in principals.json. */
export const Role = {
  Gateway: "gateway",
  Coordinator: "coordinator",
  Lineage: "lineage",
  Agent: "agent",
  Approver: "approver",
  Operator: "operator",
  Sysadmin: "sysadmin",
  Upstream: "upstream",
  Auditor: "auditor",
} as const;

/** One of the roles. */
export type RoleValue = (typeof Role)[keyof typeof Role];

/** The nats-server accounts: the mesh's streams live in MESH; SYS is the system account. */
export const Account = { Mesh: "MESH", System: "SYS" } as const;

/** One of the accounts. */
export type AccountValue = (typeof Account)[keyof typeof Account];

// The bucket names live with their settings, in the one table of buckets.ts.

/** A capability of the mesh, keyed `<name>.v<major>` in principals.json. */
export interface CapabilitySpec {
  /** `<name>.v<major>`, e.g. `research.v1`. */
  readonly ref: string;
  readonly name: string;
  readonly major: number;
  readonly description: string;
  /** Critical work is addressed on `<prefix>.handoff…`; only the coordinator publishes on its `<prefix>.cap…`. */
  readonly critical: boolean;
}

/** A durable consumer a principal reads from. */
export interface ConsumerSpec {
  readonly stream: StreamNameValue;
  readonly durable: string;
  /** Its `filter_subject` (written under the file's prefix); the principal may create it only with this filter. */
  readonly filter: string | undefined;
  /** The principal creates or updates the consumer itself (otherwise `causeway streams apply` does). */
  readonly create: boolean;
}

/** One principal as declared, with defaults filled in and the consumers of `serves` made explicit. */
export interface PrincipalSpec {
  readonly name: string;
  readonly role: RoleValue;
  readonly account: AccountValue;
  readonly description: string;
  /** NATS micro service name; requests arrive on `<prefix>.ctl.<service>.*`. */
  readonly service: string | undefined;
  /**
   * The Node entry point that runs this principal, relative to the repository root; undefined for a principal
   * that runs no process of the mesh (people, upstream systems). The mesh layout's `services` are these.
   */
  readonly entry: string | undefined;
  /** How many processes of `entry` run by default (1 when the file says nothing). */
  readonly replicas: number;
  /**
   * Further implementation versions that may run beside `entry` under this principal (agents), by version: each
   * its own entry and replica count. The mesh layout makes each a service `<principal>@<version>`.
   */
  readonly versions: Readonly<Record<string, { readonly entry: string; readonly replicas: number }>>;
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
  readonly serves: readonly string[];
  /** Facts it reacts to, `<type>.v<major>` (agents): each through a durable of its own on MESH_EVT. */
  readonly subscribes: readonly string[];
  readonly addresses: readonly string[];
  /**
   * CloudEvents types it may sign (copied into its trust store entries): exact types, `<prefix>.*` for every
   * type under a prefix (whole tokens), or `*`. Empty: it signs no events.
   */
  readonly emits: readonly string[];
  /**
   * Declared consumers plus one `cap-<capability>-v<major>` on MESH_CAP per served capability and one
   * `sub-<principal>-<type>-v<major>` on MESH_EVT per subscribed fact.
   */
  readonly consumes: readonly ConsumerSpec[];
  readonly fetches: readonly StreamNameValue[];
  readonly kv: { readonly read: readonly KvBucketValue[]; readonly write: readonly KvBucketValue[] };
}

/** The validated, frozen contents of principals.json. */
export interface Principals {
  /** The file it was loaded from (or the label given to {@link parsePrincipals}). */
  readonly source: string;
  /** The prefix the file's subjects are written with. */
  readonly prefix: string;
  readonly capabilities: Readonly<Record<string, CapabilitySpec>>;
  readonly principals: Readonly<Record<string, PrincipalSpec>>;
}

// The subject space each stream captures, relative to the prefix. MESH_ADVISORY captures server advisories
// ($JS.EVENT.ADVISORY…), which no principal filters by a mesh subject.
const streamTokens: Record<StreamNameValue, string | undefined> = {
  [StreamName.Ingest]: "ingest",
  [StreamName.Cap]: "cap",
  [StreamName.Handoff]: "handoff",
  [StreamName.Evt]: "evt",
  [StreamName.Decision]: "decision",
  [StreamName.Quarantine]: "quarantine",
  [StreamName.Audit]: "audit",
  [StreamName.Advisory]: undefined,
};

/**
 * The shared durable consumer of a capability on MESH_CAP: `cap-<capability>-v<major>`; for the work of another
 * priority than normal (issue 16) `cap-<capability>-v<major>-<priority>`.
 */
export function capabilityDurable(capability: string, major: number, priority: PriorityValue = Priority.Normal): string {
  return `cap-${capability}-v${major}${priorityDurableTail(priority)}`;
}

/** The durable of one lane of a routed capability (routing.ts): `cap-<capability>-v<major>-<lane>[-<priority>]`. */
export function laneDurable(capability: string, major: number, lane: Lane, priority: PriorityValue = Priority.Normal): string {
  return `cap-${capability}-v${major}-${lane}${priorityDurableTail(priority)}`;
}

/** What a priority adds to a durable's name: nothing for normal, `-<priority>` else (the subject's `.<priority>`). */
function priorityDurableTail(priority: PriorityValue): string {
  return priorityTail(priority).replace(".", "-");
}

/** A subscribed fact, `<type>.v<major>` split: `report.published` and 1. */
export interface FactRef {
  readonly type: string;
  readonly major: number;
}

/** Splits `report.published.v1`; undefined when it is not `<type>.v<major>`. */
export function parseFactRef(ref: string): FactRef | undefined {
  const m = /^([a-z0-9_-]+(?:\.[a-z0-9_-]+)*)\.v(0|[1-9][0-9]*)$/.exec(ref);
  return m ? { type: m[1]!, major: Number(m[2]) } : undefined;
}

/**
 * The durable consumer of one agent's subscription to a fact on MESH_EVT: `sub-<principal>-<type>-v<major>`
 * (the type's dots as `_`: durable names have no dots). One per subscribing principal, shared by its replicas.
 */
export function subscriptionDurable(principal: string, fact: FactRef): string {
  return `sub-${principal}-${fact.type.replaceAll(".", "_")}-v${fact.major}`;
}

/** True for the consumers `parsePrincipals` derives from `serves` and `subscribes` (not declared in `consumes`). */
export function isDerivedConsumer(c: Pick<ConsumerSpec, "stream" | "durable">): boolean {
  return (c.stream === StreamName.Cap && c.durable.startsWith("cap-")) || (c.stream === StreamName.Evt && c.durable.startsWith("sub-"));
}

/** The principals subscribing to `fact`, by name. */
export function subscribersOf(principals: Principals, fact: FactRef): readonly PrincipalSpec[] {
  const ref = `${fact.type}.v${fact.major}`;
  return Object.values(principals.principals).filter((p) => p.subscribes.includes(ref));
}

/**
 * The subjects on which the coordinator forwards granted work to critical capabilities (`<prefix>.cap.<name>.v<major>`,
 * which nobody else may publish on). A message there was first received on `<prefix>.handoff.…`, where its
 * signer was checked at the time the mesh received it; the forward's own stored time is later.
 */
export function criticalForwardSubjects(principals: Principals): ReadonlySet<string> {
  // One per priority: the forward goes to the subject of the event's own priority (issue 16).
  return new Set(Object.values(principals.capabilities).filter((c) => c.critical).flatMap((c) => PRIORITIES.map((p) => `${principals.prefix}.cap.${c.name}.v${c.major}${priorityTail(p)}`)));
}


/** The account a role belongs to. */
export function accountOf(role: RoleValue): AccountValue {
  return role === Role.Sysadmin ? Account.System : Account.Mesh;
}

/** Loads, validates and freezes principals.json. Throws ConfigError CW_ERR_PRINCIPALS_INVALID naming each JSON path at fault. */
export function loadPrincipals(path: string = DEFAULT_PRINCIPALS_PATH): Principals {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(ErrorCode.PrincipalsInvalid, `cannot read principals file ${path}: ${(err as Error).message}`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(ErrorCode.PrincipalsInvalid, `${path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  return parsePrincipals(doc, path);
}

/** Validates an already parsed principals document; `source` names it in errors. */
export function parsePrincipals(doc: unknown, source = "principals.json"): Principals {
  const validate = schemaValidator();
  if (!validate(doc)) throw invalid(source, formatSchemaErrors(validate.errors ?? []));
  const raw = doc as RawDocument;
  const prefix = raw.prefix;

  const capabilities: Record<string, CapabilitySpec> = {};
  for (const [ref, c] of Object.entries(raw.capabilities)) {
    const [name, v] = ref.split(".") as [string, string];
    capabilities[ref] = Object.freeze({ ref, name, major: Number(v.slice(1)), description: c.description, critical: c.critical ?? false });
  }

  const principals: Record<string, PrincipalSpec> = {};
  for (const [name, p] of Object.entries(raw.principals)) {
    const derived: ConsumerSpec[] = (p.serves ?? []).flatMap((ref) => {
      const cap = capabilities[ref];
      if (!cap) return []; // reported by checkSemantics
      // Agents ensure their own capability consumer, pinned to its filter (see permissionsFor), and the lanes'
      // consumers of the versions the control plane routes to (routing.ts), each pinned to its lane's subject.
      // Each of them once per priority (issue 16): normal's are the plain ones, the others end in `-<priority>`.
      const subject = `${prefix}.cap.${cap.name}.v${cap.major}`;
      return PRIORITIES.flatMap((p) => [
        { stream: StreamName.Cap, durable: capabilityDurable(cap.name, cap.major, p), filter: `${subject}${priorityTail(p)}`, create: true },
        ...LANES.map((lane) => ({ stream: StreamName.Cap, durable: laneDurable(cap.name, cap.major, lane, p), filter: `${subject}.${lane}${priorityTail(p)}`, create: true })),
      ]);
    });
    const subscribed: ConsumerSpec[] = (p.subscribes ?? []).flatMap((ref) => {
      const fact = parseFactRef(ref);
      if (!fact) return []; // refused by the schema
      // Agents ensure their own subscription consumers, each pinned to its fact's subject (see permissionsFor).
      return [{ stream: StreamName.Evt, durable: subscriptionDurable(name, fact), filter: `${prefix}.evt.${fact.type}.v${fact.major}`, create: true }];
    });
    const declared: ConsumerSpec[] = (p.consumes ?? []).map((c) => ({ stream: c.stream, durable: c.durable, filter: c.filter, create: c.create ?? false }));
    // The coordinator makes every lane's durable before a rollout routes to it, and hands over what waits on the
    // lane of a version with no live instance (coordinator/rollout.ts): it consumes each lane, pinned to it.
    const lanes: ConsumerSpec[] = p.role !== Role.Coordinator ? [] : Object.values(capabilities).flatMap((cap) => LANES.flatMap((lane) => PRIORITIES.map((pr) => ({
      stream: StreamName.Cap, durable: laneDurable(cap.name, cap.major, lane, pr), filter: `${prefix}.cap.${cap.name}.v${cap.major}.${lane}${priorityTail(pr)}`, create: true,
    }))));
    principals[name] = deepFreeze({
      name,
      role: p.role,
      account: accountOf(p.role),
      description: p.description,
      service: p.service,
      entry: p.entry,
      replicas: p.replicas ?? 1,
      versions: Object.fromEntries(Object.entries(p.versions ?? {}).map(([v, e]) => [v, { entry: e.entry, replicas: e.replicas ?? 1 }])),
      // Copies, so freezing the result never freezes the caller's document.
      publish: [...(p.publish ?? [])],
      subscribe: [...(p.subscribe ?? [])],
      serves: [...(p.serves ?? [])],
      subscribes: [...(p.subscribes ?? [])],
      addresses: [...(p.addresses ?? [])],
      emits: [...(p.emits ?? [])],
      consumes: [...declared, ...derived, ...subscribed, ...lanes],
      fetches: [...(p.fetches ?? [])],
      kv: { read: [...(p.kv?.read ?? [])], write: [...(p.kv?.write ?? [])] },
    });
  }

  const result: Principals = deepFreeze({ source, prefix, capabilities, principals });
  const problems = checkSemantics(result, raw);
  if (problems.length > 0) throw invalid(source, problems);
  return result;
}

/** The principal called `name`; ConfigError CW_ERR_UNKNOWN_PRINCIPAL (listing the known ones) otherwise. */
export function getPrincipal(principals: Principals, name: string): PrincipalSpec {
  const spec = Object.hasOwn(principals.principals, name) ? principals.principals[name] : undefined;
  if (!spec) {
    throw new ConfigError(
      ErrorCode.UnknownPrincipal,
      `unknown principal "${name}": ${principals.source} declares ${Object.keys(principals.principals).join(", ")}`,
    );
  }
  return spec;
}

/** True when NATS subject pattern `pattern` matches the literal subject `subject`. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== "*" && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

// Checks the schema cannot express: references between sections and the rules of DESIGN.md.
function checkSemantics(p: Principals, raw: RawDocument): string[] {
  const problems: string[] = [];
  const prefix = p.prefix;
  const critical = Object.values(p.capabilities).filter((c) => c.critical);
  const consumerOwners = new Map<string, string>();
  const serviceOwners = new Map<string, string>();

  for (const spec of Object.values(p.principals)) {
    const at = `/principals/${spec.name}`;
    const rawSpec = raw.principals[spec.name]!;

    for (const key of ["serves", "addresses"] as const) {
      spec[key].forEach((ref, i) => {
        if (!p.capabilities[ref]) problems.push(`${at}/${key}/${i}: unknown capability "${ref}" (declared: ${Object.keys(p.capabilities).join(", ") || "none"})`);
      });
    }

    for (const key of ["publish", "subscribe"] as const) {
      spec[key].forEach((subject, i) => {
        if (!subject.startsWith(`${prefix}.`)) problems.push(`${at}/${key}/${i}: "${subject}" is not under the prefix "${prefix}"`);
      });
    }

    if (spec.role !== Role.Coordinator) {
      spec.publish.forEach((subject, i) => {
        for (const cap of critical) {
          const capSubject = `${prefix}.cap.${cap.name}.v${cap.major}`;
          if (subjectMatches(subject, capSubject)) {
            problems.push(`${at}/publish/${i}: "${subject}" covers ${capSubject} of critical capability ${cap.ref}; only the coordinator may publish there (address the capability instead: it goes to ${prefix}.handoff.${cap.name}.v${cap.major})`);
          }
        }
      });
    }

    if (spec.role === Role.Upstream) {
      const own = `${prefix}.ingest.${spec.name}`;
      spec.publish.forEach((subject, i) => {
        if (!withinNamespace(subject, own)) problems.push(`${at}/publish/${i}: "${subject}" is outside ${own}.>; an upstream publishes only on its own ingest subjects`);
      });
    }

    for (const [version, v] of Object.entries(spec.versions)) {
      // One entry runs one definition, so one version: the same entry twice could never pass the start's check.
      if (v.entry === spec.entry) problems.push(`${at}/versions/${version}/entry: "${v.entry}" is the principal's own entry; a version beside it runs an entry of its own`);
    }

    if (spec.fetches.length > 0 && spec.role !== Role.Coordinator && spec.role !== Role.Lineage) {
      problems.push(`${at}/fetches: only the coordinator and lineage read streams by sequence`);
    }

    spec.kv.write.forEach((bucket, i) => {
      if (bucket === KvBucket.Trust && spec.role !== Role.Operator) problems.push(`${at}/kv/write/${i}: only the operator writes ${KvBucket.Trust}`);
      // What the gateway admits by must come from the coordinator's measurement, and the quota use from the gateway's counting.
      if (bucket === KvBucket.Pressure && spec.role !== Role.Coordinator) problems.push(`${at}/kv/write/${i}: only the coordinator writes ${KvBucket.Pressure}`);
      if (bucket === KvBucket.Quotas && spec.role !== Role.Gateway) problems.push(`${at}/kv/write/${i}: only the gateway writes ${KvBucket.Quotas}`);
    });

    (rawSpec.consumes ?? []).forEach((c, i) => {
      if (isDerivedConsumer(c)) problems.push(`${at}/consumes/${i}: durable names cap-… on ${StreamName.Cap} and sub-… on ${StreamName.Evt} are derived from serves and subscribes; name it otherwise`);
      const token = streamTokens[c.stream];
      if (c.filter !== undefined && (token === undefined || !withinNamespace(c.filter, `${prefix}.${token}`, true))) {
        problems.push(`${at}/consumes/${i}/filter: "${c.filter}" is not within the subjects of ${c.stream}${token ? ` (${prefix}.${token}.>)` : ""}`);
      }
      const key = `${c.stream}/${c.durable}`;
      const owner = consumerOwners.get(key);
      if (owner !== undefined && owner !== spec.name) problems.push(`${at}/consumes/${i}: consumer ${key} is already consumed by ${owner}; a durable belongs to one principal`);
      consumerOwners.set(key, spec.name);
    });

    if (spec.service !== undefined) {
      const owner = serviceOwners.get(spec.service);
      if (owner !== undefined) problems.push(`${at}/service: service name "${spec.service}" is already used by ${owner}`);
      serviceOwners.set(spec.service, spec.name);
    }
  }

  // A derived consumer (a capability's, a subscription's) is shared by the replicas of one principal, never
  // claimed by a second one — nor by a consumer declared with the same name. The coordinator's lane consumers are
  // the one exception: the control plane makes the lanes and takes over what waits on a dead version's lane.
  for (const spec of Object.values(p.principals).filter((x) => x.role !== Role.Coordinator)) {
    for (const c of spec.consumes.filter(isDerivedConsumer)) {
      const key = `${c.stream}/${c.durable}`;
      const owner = consumerOwners.get(key);
      const from = c.stream === StreamName.Cap ? "serves" : "subscribes";
      if (owner !== undefined && owner !== spec.name) problems.push(`/principals/${spec.name}/${from}: consumer ${key} is already consumed by ${owner}`);
      consumerOwners.set(key, spec.name);
    }
  }
  return problems;
}

// True when every subject `pattern` matches is under `namespace.` (with `orEqual`, `namespace.>` itself counts).
function withinNamespace(pattern: string, namespace: string, orEqual = false): boolean {
  const head = namespace.split(".");
  const t = pattern.split(".");
  if (t.length <= head.length) return false;
  if (!head.every((token, i) => t[i] === token)) return false;
  return orEqual || t.length > head.length;
}

function invalid(source: string, problems: readonly string[]): ConfigError {
  return new ConfigError(ErrorCode.PrincipalsInvalid, `${source} is invalid:\n  ${problems.join("\n  ")}`);
}

let validator: ValidateFunction | undefined;

function schemaValidator(): ValidateFunction {
  if (validator) return validator;
  const schema = JSON.parse(readFileSync(SCHEMA_PATH, "utf8")) as object;
  // verbose: errors carry their parent schema, whose description explains a failed pattern in words.
  const ajv = new Ajv2020({ allErrors: true, strict: true, verbose: true, useDefaults: false });
  validator = ajv.compile(schema);
  return validator;
}

function formatSchemaErrors(errors: readonly ErrorObject[]): string[] {
  const lines = new Set<string>();
  for (const e of errors) {
    // `if`/`then` wrappers and propertyNames summaries repeat an error already reported more precisely.
    if (e.keyword === "if" || e.keyword === "propertyNames") continue;
    const path = (e.propertyName !== undefined ? `${e.instancePath}/${e.propertyName}` : e.instancePath) || "/";
    const described = (e.parentSchema as { description?: string } | undefined)?.description;
    switch (e.keyword) {
      case "additionalProperties":
        lines.add(`${path}: unknown property "${String((e.params as { additionalProperty: string }).additionalProperty)}"`);
        break;
      case "enum":
        lines.add(`${path}: ${JSON.stringify(e.data)} is not one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(", ")}`);
        break;
      case "false schema":
        lines.add(`${path}: not allowed for this role`);
        break;
      case "pattern":
        lines.add(`${path}: ${JSON.stringify(e.propertyName ?? e.data)} is not valid${described ? `: ${described}` : ` (${e.message ?? ""})`}`);
        break;
      default:
        lines.add(`${path}: ${e.message ?? e.keyword}`);
    }
  }
  return [...lines];
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object" && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

// The document as the schema guarantees it.
interface RawDocument {
  prefix: string;
  capabilities: Record<string, { description: string; critical?: boolean }>;
  principals: Record<string, RawPrincipal>;
}

interface RawPrincipal {
  role: RoleValue;
  description: string;
  service?: string;
  entry?: string;
  replicas?: number;
  versions?: Record<string, { entry: string; replicas?: number }>;
  publish?: string[];
  subscribe?: string[];
  serves?: string[];
  subscribes?: string[];
  addresses?: string[];
  emits?: string[];
  consumes?: { stream: StreamNameValue; durable: string; filter?: string; create?: boolean }[];
  fetches?: StreamNameValue[];
  kv?: { read?: KvBucketValue[]; write?: KvBucketValue[] };
}
