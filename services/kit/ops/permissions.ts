// The least-privilege NATS permissions of each principal, derived from infra/principals.json: what `causeway
// infra render` writes into the server config, with the reason for every subject. Operator tooling: services
// never render permissions, the server enforces them.
import { createHash } from "node:crypto";
import { KvBucket, type KvBucketValue } from "../buckets.ts";
import { Role, getPrincipal, type AccountValue, type PrincipalSpec, type Principals, type RoleValue } from "../principals.ts";
import { GATEWAY_MARK_PREFIX, capabilityKeyPrefix } from "../kv-keys.ts";
import { PRIORITIES } from "../context.ts";
import { LANES, StreamName, inboxPrefix, priorityTail } from "../subjects.ts";

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
}


/** Options for {@link permissionsFor}. */
export interface PermissionOptions {
  /** The subject prefix of the mesh. Default: the prefix principals.json is written with. */
  prefix?: string;
}


/**
 * Derives the least-privilege NATS permissions of a principal. Subscriptions are limited to its private
 * inbox (plus service discovery and endpoints for services); publishing to the declared subjects, the
 * capabilities it addresses, and exactly the JetStream API subjects its consumers, fetches and KV buckets use.
 * A service answers requests by publishing on the inboxes of the principals that may send it one, and on no
 * other subject: there is no `allow_responses`, which would let any requester choose where the service
 * publishes (a KV key, a decision subject) by setting its reply subject.
 */
export function permissionsFor(principals: Principals, name: string, opts: PermissionOptions = {}): Permissions {
  const { spec, pub, sub } = baseGrants(principals, name, opts);
  if (spec.service !== undefined) {
    const served = sub.list().map((g) => g.subject).filter((s) => !s.startsWith("_INBOX_"));
    for (const requester of requestersOf(principals, spec, served, opts)) {
      pub.add(`${inboxPrefix(requester)}.>`, `answers requests from ${requester}, on its inbox only (no allow_responses)`);
    }
  }
  return Object.freeze({ principal: name, role: spec.role, account: spec.account, publish: pub.list(), subscribe: sub.list() });
}

/**
 * The principals that may send `spec`'s service a request: those of its account whose publish grants reach one
 * of the subjects it serves (control endpoints and discovery). Their inboxes are where it may answer.
 */
function requestersOf(principals: Principals, spec: PrincipalSpec, served: readonly string[], opts: PermissionOptions): string[] {
  return Object.values(principals.principals)
    .filter((q) => q.account === spec.account)
    .filter((q) => baseGrants(principals, q.name, opts).pub.list().some((g) => served.some((s) => subjectIntersection(g.subject, s) !== undefined)))
    .map((q) => q.name);
}

/**
 * The subjects two NATS subject patterns both match, as a pattern (`mesh.ctl.*.*` and `mesh.ctl.lineage.>` give
 * `mesh.ctl.lineage.*`), or undefined when no subject matches both. Wildcards are whole tokens.
 */
export function subjectIntersection(a: string, b: string): string | undefined {
  const x = a.split(".");
  const y = b.split(".");
  const out: string[] = [];
  for (let i = 0; ; i++) {
    const s = x[i];
    const t = y[i];
    if (s === undefined && t === undefined) return out.join(".");
    if (s === ">" && t !== undefined) return [...out, ...y.slice(i)].join(".");
    if (t === ">" && s !== undefined) return [...out, ...x.slice(i)].join(".");
    if (s === undefined || t === undefined) return undefined;
    if (s === "*") out.push(t);
    else if (t === "*" || t === s) out.push(s);
    else return undefined;
  }
}

// Everything but the answers of a service, which depend on the other principals' grants.
function baseGrants(principals: Principals, name: string, opts: PermissionOptions): { spec: PrincipalSpec; pub: Grants; sub: Grants } {
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
    else for (const p of PRIORITIES) pub.add(`${prefix}.cap.${cap.name}.v${cap.major}${priorityTail(p)}`, `addresses capability ${ref} (${p} work)`);
  }
  // Version routing (routing.ts): whoever sends a capability work routes it by the tables, onto its lanes — each
  // lane once per priority (issue 16). Which priority subject an event may arrive on is the consumer's check: its
  // signed priority must be the subject's (agent.ts), so a subject of its own priority is all a producer gains.
  for (const cap of sendsWorkTo(principals, spec)) {
    for (const lane of LANES) for (const p of PRIORITIES) pub.add(`${prefix}.cap.${cap.name}.v${cap.major}.${lane}${priorityTail(p)}`, `sends ${cap.ref} work routed by version (lane ${lane}, ${p} work)`);
  }

  for (const ref of spec.serves) {
    const cap = principals.capabilities[ref]!;
    // Pipeline steps 1–6 quarantine the capability's own failed inputs, and only those.
    pub.add(`${prefix}.quarantine.*.${cap.name}`, `quarantines inputs of ${ref} that fail verification, schema or policy`);
  }

  if (spec.role === Role.Coordinator) {
    for (const cap of Object.values(principals.capabilities).filter((c) => c.critical)) {
      for (const p of PRIORITIES) pub.add(`${prefix}.cap.${cap.name}.v${cap.major}${priorityTail(p)}`, `forwards granted ${p} work to critical capability ${cap.ref}: nobody else may publish here`);
    }
    // Kill switches pause the consumers of a capability, an agent or the whole mesh, and report their state.
    for (const stream of [StreamName.Cap, StreamName.Handoff, StreamName.Evt]) {
      pub.add(`$JS.API.CONSUMER.PAUSE.${stream}.*`, "kill switches pause and resume consumers");
      pub.add(`$JS.API.CONSUMER.INFO.${stream}.*`, "kill switches report whether a consumer is paused");
    }
    // Backpressure: the backlog of every capability is its durables' pending and ack pending, listed in one request.
    pub.add(`$JS.API.CONSUMER.LIST.${StreamName.Cap}`, "measures the backlog of every capability each second (coordinator/pressure.ts)");
  }

  const usesJetStream = spec.role !== Role.Operator && (spec.consumes.length > 0 || spec.fetches.length > 0 || readBuckets(spec, principals).length > 0);
  if (usesJetStream) pub.add("$JS.API.INFO", "JetStream readiness check when the client starts (account info)");

  for (const c of spec.consumes) {
    pub.add(`$JS.API.STREAM.INFO.${c.stream}`, `checks that ${c.stream}, which it consumes, exists`);
    pub.add(`$JS.API.CONSUMER.INFO.${c.stream}.${c.durable}`, `binds to its durable ${c.stream}/${c.durable}`);
    pub.add(`$JS.API.CONSUMER.MSG.NEXT.${c.stream}.${c.durable}`, `pulls batches from ${c.stream}/${c.durable}`);
    const acks = `ack, nak, term and working() on messages of ${c.stream}/${c.durable}`;
    pub.add(`$JS.ACK.${c.stream}.${c.durable}.>`, `${acks} (v1 ack subjects: nats-server's default, 2.15 included)`);
    pub.add(ackSubjectV2(spec.account, c.stream, c.durable), `${acks} (v2 ack subjects: nats-server 2.14+ with js_ack_fc_v2)`);
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
  for (const bucket of spec.role === Role.Operator ? [] : readBuckets(spec, principals)) {
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
    pub.add(flowControlSubjectV2(spec.account, stream), `flow control replies of its ${bucket} watchers (v2 subjects: nats-server 2.14+ with js_ack_fc_v2)`);
  }
  for (const bucket of spec.kv.write) {
    const owned = ownedKeyPrefixes(principals, spec, bucket);
    if (owned === undefined) pub.add(`$KV.${bucket}.>`, `writes ${bucket} (put, create, update, delete, purge a key)`);
    else for (const { prefix: key, why } of owned) pub.add(`$KV.${bucket}.${key}.>`, `writes ${bucket} keys ${key}.… only: ${why}`);
  }

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

  return { spec, pub, sub };
}

/**
 * The key spaces `spec` may write in a bucket shared by several writers, each a first key token built by the
 * same function as the keys themselves (kv-keys.ts); undefined when it may write the whole bucket (a bucket with
 * one writer role). Leases: the coordinator grants them for critical capabilities, an agent claims those of the
 * capabilities it serves. Processed-set: an agent marks the inputs of the capabilities it serves, the gateway
 * its dedupe marks. Instances and flow counts: an agent's of the capabilities it serves. Undefined for any other writer: it gets the bucket as principals.json declares it.
 */
function ownedKeyPrefixes(principals: Principals, spec: PrincipalSpec, bucket: KvBucketValue): { prefix: string; why: string }[] | undefined {
  const served = () => spec.serves.map((ref) => principals.capabilities[ref]!).map((c) => ({ prefix: capabilityKeyPrefix(c.name, c.major), why: `its own keys for ${c.ref}, which it serves` }));
  if (bucket === KvBucket.Leases) {
    if (spec.role === Role.Coordinator) {
      return Object.values(principals.capabilities).filter((c) => c.critical).map((c) => ({ prefix: capabilityKeyPrefix(c.name, c.major), why: `grants leases of critical capability ${c.ref}` }));
    }
    if (spec.role === Role.Agent) return served();
  }
  if (bucket === KvBucket.Processed) {
    if (spec.role === Role.Gateway) return [{ prefix: GATEWAY_MARK_PREFIX, why: "the gateway's dedupe marks" }];
    if (spec.role === Role.Agent) return served();
  }
  // Heartbeats: an agent announces instances of the capabilities it serves only; loop guards: it counts their inputs only.
  if ((bucket === KvBucket.Instances || bucket === KvBucket.FlowLedger) && spec.role === Role.Agent) return served();
  // Any other writer (a role the key layout does not know) gets the bucket as principals.json declares it.
  return undefined;
}



// Buckets a principal reads: the trust store for everyone who verifies signatures (all but upstreams and the
// system account), the declared ones, and every bucket it writes (writers read back, e.g. create-only leases).
function readBuckets(spec: PrincipalSpec, principals: Principals): KvBucketValue[] {
  const verifies = spec.role !== Role.Upstream && spec.role !== Role.Sysadmin && spec.role !== Role.Operator && spec.role !== Role.Auditor;
  // The route tables: producers route by them, agents find their version's lane in them. The backlog reports: the
  // gateway admits by them, a handler sees the pressure on the capabilities it addresses (pressure.ts).
  const routes = spec.serves.length > 0 || sendsWorkTo(principals, spec).length > 0 ? [KvBucket.Routes, KvBucket.Pressure] : [];
  return [...new Set<KvBucketValue>([...(verifies ? [KvBucket.Trust] : []), ...routes, ...spec.kv.read, ...spec.kv.write])];
}

/**
 * The capabilities `spec` publishes work to on MESH_CAP: those it addresses that are not critical (an upstream's
 * addresses are trust, never publishing), and every one for the coordinator, which forwards granted critical work
 * and hands over what waits on the lane of a version with no live instance (coordinator/rollout.ts).
 */
function sendsWorkTo(principals: Principals, spec: PrincipalSpec): Principals["capabilities"][string][] {
  const caps = Object.values(principals.capabilities);
  if (spec.role === Role.Coordinator) return caps;
  if (spec.role === Role.Upstream) return [];
  return caps.filter((c) => !c.critical && spec.addresses.includes(c.ref));
}

/**
 * The JetStream domain token of the v2 ack and flow control subjects: `_` for a server without a JetStream domain,
 * as every config `causeway infra render` writes is. A deployment that sets `jetstream { domain }` must render
 * with it here, or its principals' v2 acks are refused.
 */
export const NO_JETSTREAM_DOMAIN = "_";

/**
 * The account token of the v2 ack and flow control subjects: nats-server's 8-character hash of the account name
 * (`getHash` in its events.go: the first 8 bytes of SHA-256, each mapped to one of 62 digits).
 */
export function accountHash(account: string): string {
  const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  return [...createHash("sha256").update(account).digest().subarray(0, 8)].map((b) => digits[b % digits.length]).join("");
}

/**
 * The v2 ack subjects of one consumer (nats-server 2.14+ with the feature flag `js_ack_fc_v2`, the default in a
 * later release): `$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>[.…]`,
 * exactly what the server subscribes to for it. Domain and account hash are concrete, never `*`: the server also
 * keeps a v1 subscription `$JS.ACK.<stream>.<consumer>.*.*.*.*.*` for every consumer and does not check the names
 * in an ack, so `$JS.ACK.*.*.<stream>.<consumer>.>` would let its holder send `+NXT` (pull with its own reply) or
 * acks to every other consumer of the account as `$JS.ACK.<their stream>.<their consumer>.<stream>.<consumer>.…`.
 * The four single-token wildcards make the grant need 11 tokens, so it never reaches a v1 subscription (9 tokens).
 */
export function ackSubjectV2(account: string, stream: string, consumer: string): string {
  return `$JS.ACK.${NO_JETSTREAM_DOMAIN}.${accountHash(account)}.${stream}.${consumer}.*.*.*.*.>`;
}

/**
 * The v2 flow control subjects of the push consumers on `stream` (KV watchers, whose names the client generates):
 * `$JS.FC.<domain>.<account hash>.<stream>.<consumer>.*`, as the server subscribes; 7 tokens, never a v1 one (5).
 */
export function flowControlSubjectV2(account: string, stream: string): string {
  return `$JS.FC.${NO_JETSTREAM_DOMAIN}.${accountHash(account)}.${stream}.*.*`;
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

