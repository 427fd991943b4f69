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
import { StreamName } from "./subjects.ts";
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
export { KvBucket } from "./buckets.ts";
export type { KvBucketValue } from "./buckets.ts";

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
  readonly publish: readonly string[];
  readonly subscribe: readonly string[];
  readonly serves: readonly string[];
  readonly addresses: readonly string[];
  /**
   * CloudEvents types it may sign (copied into its trust store entries): exact types, `<prefix>.*` for every
   * type under a prefix (whole tokens), or `*`. Empty: it signs no events.
   */
  readonly emits: readonly string[];
  /** Declared consumers plus one `cap-<capability>-v<major>` on MESH_CAP per served capability. */
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

/** One allowed subject and why the principal needs it. */
export interface Grant {
  readonly subject: string;
  readonly why: string;
}

/** The NATS permissions of one principal, each subject with its reason. */
export interface Permissions {
  readonly principal: string;
  readonly role: RoleValue;
  readonly account: AccountValue;
  readonly publish: readonly Grant[];
  readonly subscribe: readonly Grant[];
  /** May reply once to each request it receives (services answering requests and discovery pings). */
  readonly allowResponses: boolean;
}

/** The same permissions in nats-server's own field names, as they appear in a server config. */
export interface ServerPermissions {
  publish: { allow: string[] };
  subscribe: { allow: string[] };
  allow_responses?: true;
}

/** Options for {@link permissionsFor}. */
export interface PermissionOptions {
  /** The subject prefix of the mesh. Default: the prefix principals.json is written with. */
  prefix?: string;
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

/** The shared durable consumer of a capability on MESH_CAP: `cap-<capability>-v<major>`. */
export function capabilityDurable(capability: string, major: number): string {
  return `cap-${capability}-v${major}`;
}

/**
 * The subjects on which the coordinator forwards granted work to critical capabilities (`<prefix>.cap.<name>.v<major>`,
 * which nobody else may publish on). A message there was first received on `<prefix>.handoff.…`, where its
 * signer was checked at the time the mesh received it; the forward's own stored time is later.
 */
export function criticalForwardSubjects(principals: Principals): ReadonlySet<string> {
  return new Set(Object.values(principals.capabilities).filter((c) => c.critical).map((c) => `${principals.prefix}.cap.${c.name}.v${c.major}`));
}

/** The private inbox prefix of a principal; connections must set it as `inboxPrefix`. */
export function inboxPrefix(principal: string): string {
  return `_INBOX_${principal}`;
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
      // Agents ensure their own capability consumer, pinned to its filter (see permissionsFor).
      return [{ stream: StreamName.Cap, durable: capabilityDurable(cap.name, cap.major), filter: `${prefix}.cap.${cap.name}.v${cap.major}`, create: true }];
    });
    const declared: ConsumerSpec[] = (p.consumes ?? []).map((c) => ({ stream: c.stream, durable: c.durable, filter: c.filter, create: c.create ?? false }));
    principals[name] = deepFreeze({
      name,
      role: p.role,
      account: accountOf(p.role),
      description: p.description,
      service: p.service,
      // Copies, so freezing the result never freezes the caller's document.
      publish: [...(p.publish ?? [])],
      subscribe: [...(p.subscribe ?? [])],
      serves: [...(p.serves ?? [])],
      addresses: [...(p.addresses ?? [])],
      emits: [...(p.emits ?? [])],
      consumes: [...declared, ...derived],
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

/**
 * Derives the least-privilege NATS permissions of a principal. Subscriptions are limited to its private
 * inbox (plus service discovery and endpoints for services); publishing to the declared subjects, the
 * capabilities it addresses, and exactly the JetStream API subjects its consumers, fetches and KV buckets use.
 */
export function permissionsFor(principals: Principals, name: string, opts: PermissionOptions = {}): Permissions {
  const spec = getPrincipal(principals, name);
  const prefix = opts.prefix ?? principals.prefix;
  const at = (subject: string) => rebase(subject, principals.prefix, prefix);
  const pub = new Grants();
  const sub = new Grants();

  // Replies (JetStream API responses, PubAcks, pull batches, service responses) come back on the private
  // inbox; nobody else may subscribe to it, so no principal can read another's replies.
  sub.add(`${inboxPrefix(name)}.>`, "its private inbox: replies to its requests, PubAcks, pulled messages");

  switch (spec.role) {
    case Role.Operator:
      pub.add("$JS.API.>", "full JetStream management of the mesh account (nats stream/consumer/kv, causeway streams apply)");
      pub.add("$JS.ACK.>", "acks while inspecting consumers (nats consumer next)");
      pub.add("$JS.FC.>", "flow control replies of push consumers it creates while inspecting (nats stream view, kv watch)");
      pub.add("$SRV.>", "service discovery (nats micro ls/info/stats)");
      break;
    case Role.Sysadmin:
      pub.add("$SYS.REQ.>", "server-wide monitoring requests (nats server report/list/ping)");
      break;
    case Role.Upstream:
      // Its own per-caller request subject on the gateway (5 tokens: the operator's `ctl.*.*` does not cover it).
      for (const gw of Object.values(principals.principals).filter((p) => p.role === Role.Gateway && p.service !== undefined)) {
        pub.add(`${prefix}.ctl.${gw.service!}.publish.${name}`, `requests to ${gw.name} (nats req): answered at once on its inbox, not stored`);
      }
      break;
    default:
      break;
  }

  for (const subject of spec.publish) pub.add(at(subject), "declared in principals.json");
  for (const subject of spec.subscribe) sub.add(at(subject), "declared in principals.json");

  // An upstream's events reach capabilities only through the gateway: its `addresses` is trust (what its own
  // signed events may address once the gateway forwards them), never a permission to publish there.
  for (const ref of spec.role === Role.Upstream ? [] : spec.addresses) {
    const cap = principals.capabilities[ref]!;
    if (cap.critical) pub.add(`${prefix}.handoff.${cap.name}.v${cap.major}`, `addresses critical capability ${ref}: held by the coordinator until granted`);
    else pub.add(`${prefix}.cap.${cap.name}.v${cap.major}`, `addresses capability ${ref}`);
  }

  for (const ref of spec.serves) {
    const cap = principals.capabilities[ref]!;
    // Pipeline steps 1–6 quarantine the capability's own failed inputs, and only those.
    pub.add(`${prefix}.quarantine.*.${cap.name}`, `quarantines inputs of ${ref} that fail verification, schema or policy`);
  }

  if (spec.role === Role.Coordinator) {
    for (const cap of Object.values(principals.capabilities).filter((c) => c.critical)) {
      pub.add(`${prefix}.cap.${cap.name}.v${cap.major}`, `forwards granted work to critical capability ${cap.ref}: nobody else may publish here`);
    }
    // Kill switches pause the consumers of a capability, an agent or the whole mesh, and report their state.
    for (const stream of [StreamName.Cap, StreamName.Handoff]) {
      pub.add(`$JS.API.CONSUMER.PAUSE.${stream}.*`, "kill switches pause and resume consumers");
      pub.add(`$JS.API.CONSUMER.INFO.${stream}.*`, "kill switches report whether a consumer is paused");
    }
  }

  const usesJetStream = spec.role !== Role.Operator && (spec.consumes.length > 0 || spec.fetches.length > 0 || readBuckets(spec).length > 0);
  if (usesJetStream) pub.add("$JS.API.INFO", "JetStream readiness check when the client starts (account info)");

  for (const c of spec.consumes) {
    pub.add(`$JS.API.STREAM.INFO.${c.stream}`, `checks that ${c.stream}, which it consumes, exists`);
    pub.add(`$JS.API.CONSUMER.INFO.${c.stream}.${c.durable}`, `binds to its durable ${c.stream}/${c.durable}`);
    pub.add(`$JS.API.CONSUMER.MSG.NEXT.${c.stream}.${c.durable}`, `pulls batches from ${c.stream}/${c.durable}`);
    pub.add(`$JS.ACK.${c.stream}.${c.durable}.>`, `ack, nak, term and working() on messages of ${c.stream}/${c.durable}`);
    if (!c.create) continue;
    if (c.filter !== undefined) {
      // The filter is part of the subject and the server rejects a config whose filter differs from it,
      // so this principal cannot re-point its consumer at someone else's subjects.
      pub.add(`$JS.API.CONSUMER.CREATE.${c.stream}.${c.durable}.${at(c.filter)}`, `creates or updates ${c.stream}/${c.durable}, only with filter ${at(c.filter)}`);
    } else {
      const why = `creates or updates ${c.stream}/${c.durable} (it reads the whole stream anyway)`;
      pub.add(`$JS.API.CONSUMER.CREATE.${c.stream}.${c.durable}`, why);
      pub.add(`$JS.API.CONSUMER.CREATE.${c.stream}.${c.durable}.>`, why);
      pub.add(`$JS.API.CONSUMER.DURABLE.CREATE.${c.stream}.${c.durable}`, why);
    }
  }

  for (const stream of spec.fetches) {
    const why = `fetches messages of ${stream} by sequence or subject (dead letters, quarantine, rebuilds)`;
    pub.add(`$JS.API.STREAM.INFO.${stream}`, `reads the state of ${stream}`);
    pub.add(`$JS.API.DIRECT.GET.${stream}`, why);
    pub.add(`$JS.API.DIRECT.GET.${stream}.>`, why);
    pub.add(`$JS.API.STREAM.MSG.GET.${stream}`, `${why}, on streams without allow_direct`);
  }

  // The operator's `$JS.API.>` already covers reading every bucket.
  for (const bucket of spec.role === Role.Operator ? [] : readBuckets(spec)) {
    const stream = `KV_${bucket}`;
    pub.add(`$JS.API.STREAM.INFO.${stream}`, `opens KV bucket ${bucket}`);
    pub.add(`$JS.API.DIRECT.GET.${stream}`, `reads keys of ${bucket}`);
    pub.add(`$JS.API.DIRECT.GET.${stream}.>`, `reads keys of ${bucket} (last value by key subject)`);
    pub.add(`$JS.API.STREAM.MSG.GET.${stream}`, `reads keys of ${bucket} (a bucket opened without allow_direct)`);
    // Watchers are ordered push consumers with generated names, delivered to the private inbox.
    pub.add(`$JS.API.CONSUMER.CREATE.${stream}.>`, `watches ${bucket} (ordered consumer)`);
    pub.add(`$JS.API.CONSUMER.INFO.${stream}.>`, `watches ${bucket} (ordered consumer state)`);
    pub.add(`$JS.API.CONSUMER.DELETE.${stream}.>`, `stops watching ${bucket}`);
    pub.add(`$JS.FC.${stream}.>`, `flow control replies of its ${bucket} watchers`);
  }
  for (const bucket of spec.kv.write) pub.add(`$KV.${bucket}.>`, `writes ${bucket} (put, create, update, delete, purge a key)`);

  if (spec.service !== undefined) {
    const s = spec.service;
    // NATS micro discovery: `nats micro ls` pings every service; the service answers for its own name only.
    for (const verb of ["PING", "INFO", "STATS"]) sub.add(`$SRV.${verb}`, "answers service discovery (nats micro ls/info/stats)");
    sub.add(`$SRV.*.${s}`, `answers discovery addressed to service ${s}`);
    sub.add(`$SRV.*.${s}.*`, `answers discovery addressed to an instance of ${s}`);
    sub.add(`${prefix}.ctl.${s}.*`, `serves its control endpoints`);
    // Endpoints addressed per caller (e.g. the coordinator's approve.<approver>): the server proves who called.
    sub.add(`${prefix}.ctl.${s}.*.*`, `serves its per-caller control endpoints`);
  }

  return Object.freeze({
    principal: name,
    role: spec.role,
    account: spec.account,
    publish: pub.list(),
    subscribe: sub.list(),
    allowResponses: spec.service !== undefined,
  });
}

/** Strips the reasons: the `permissions` block of a nats-server user. */
export function serverPermissions(perms: Permissions): ServerPermissions {
  const out: ServerPermissions = {
    publish: { allow: perms.publish.map((g) => g.subject) },
    subscribe: { allow: perms.subscribe.map((g) => g.subject) },
  };
  if (perms.allowResponses) out.allow_responses = true;
  return out;
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

// Buckets a principal reads: the trust store for everyone who verifies signatures (all but upstreams and the
// system account), the declared ones, and every bucket it writes (writers read back, e.g. create-only leases).
function readBuckets(spec: PrincipalSpec): KvBucketValue[] {
  const verifies = spec.role !== Role.Upstream && spec.role !== Role.Sysadmin && spec.role !== Role.Operator && spec.role !== Role.Auditor;
  return [...new Set<KvBucketValue>([...(verifies ? [KvBucket.Trust] : []), ...spec.kv.read, ...spec.kv.write])];
}

/** Ordered, de-duplicated grants; the first reason given for a subject is kept. */
class Grants {
  readonly #byKey = new Map<string, Grant>();
  add(subject: string, why: string): void {
    if (!this.#byKey.has(subject)) this.#byKey.set(subject, Object.freeze({ subject, why }));
  }
  list(): readonly Grant[] {
    return Object.freeze([...this.#byKey.values()]);
  }
}

function rebase(subject: string, from: string, to: string): string {
  if (from === to) return subject;
  return subject === from ? to : subject.startsWith(`${from}.`) ? `${to}${subject.slice(from.length)}` : subject;
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

    if (spec.fetches.length > 0 && spec.role !== Role.Coordinator && spec.role !== Role.Lineage) {
      problems.push(`${at}/fetches: only the coordinator and lineage read streams by sequence`);
    }

    spec.kv.write.forEach((bucket, i) => {
      if (bucket === KvBucket.Trust && spec.role !== Role.Operator) problems.push(`${at}/kv/write/${i}: only the operator writes ${KvBucket.Trust}`);
    });

    (rawSpec.consumes ?? []).forEach((c, i) => {
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

  // A capability consumer is shared by the replicas of one principal, never claimed by a second one.
  for (const spec of Object.values(p.principals)) {
    for (const c of spec.consumes.filter((c) => c.stream === StreamName.Cap && c.durable.startsWith("cap-"))) {
      const key = `${c.stream}/${c.durable}`;
      const owner = consumerOwners.get(key);
      if (owner !== undefined && owner !== spec.name) problems.push(`/principals/${spec.name}/serves: consumer ${key} is already consumed by ${owner}`);
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
  publish?: string[];
  subscribe?: string[];
  serves?: string[];
  addresses?: string[];
  emits?: string[];
  consumes?: { stream: StreamNameValue; durable: string; filter?: string; create?: boolean }[];
  fetches?: StreamNameValue[];
  kv?: { read?: KvBucketValue[]; write?: KvBucketValue[] };
}
