// The coordinator's control contract: every endpoint of its micro service (`nats micro info coordinator`), with
// its request, its reply and the request's validation. The coordinator serves these with addControlEndpoint;
// the `causeway` CLI and tests call them with controlRequest. Nothing else of the coordinator is imported
// from outside it.
import {
  CausewayError, ErrorCode, NatsBinding, SwitchScope, controlEndpoint, getPrincipal, jsonObjectBody, subjectMatches, subjectsFor,
  type CloudEvent, type ControlEndpoint, type Principals, type RouteTable, type SwitchScopeValue, type SwitchState, type SwitchValue,
} from "../kit/index.ts";

/** The coordinator's micro service name and principal. */
export const COORDINATOR = "coordinator";

/**
 * The authenticated identity behind every request on `endpoint`: the principal of the layout (principals.json)
 * whose publish grants reach the endpoint's subject, when exactly one does. The coordinator cannot see who sent
 * a request, but the server refuses the request from anyone without that grant, so a decision records this
 * (`principal`) next to the requester's claimed `operator` name. Undefined when several principals, or none,
 * may call it: then nothing is recorded but the claim (the coordinator warns at start-up).
 */
export function requesterOf(principals: Principals, endpoint: Pick<ControlEndpoint<unknown, unknown>, "service" | "action">): string | undefined {
  const subject = subjectsFor(principals.prefix).control(endpoint.service, endpoint.action);
  const account = getPrincipal(principals, COORDINATOR).account;
  const may = Object.values(principals.principals)
    .filter((p) => p.account === account && p.publish.some((grant) => subjectMatches(grant, subject)))
    .map((p) => p.name);
  return may.length === 1 ? may[0] : undefined;
}

// ---------------------------------------------------------------------------------------------------------
// Approvals of critical work

/** A pending or settled approval (KV causeway_approvals, same key as the lease). */
export interface Approval {
  readonly eventId: string;
  readonly eventSource: string;
  /** The flow the work belongs to, so the approvers' decisions join it in lineage. */
  readonly correlationId: string;
  readonly coreDigest: string;
  readonly capability: string;
  readonly status: "pending" | "approved" | "denied" | "expired";
  readonly required: number;
  readonly approvers: readonly string[];
  readonly approvals: readonly { approver: string; at: string; reason?: string }[];
  readonly deadline: string;
  /** The work's own `expirytime`, if it has one: past it the flow has ended and the approval is cancelled. */
  readonly workExpiresAt?: string;
  /** Where the original bytes are: MESH_HANDOFF at this sequence, on this subject. */
  readonly handoffSeq: number;
  readonly handoffSubject: string;
  readonly decidedBy?: string;
  readonly reason?: string;
  /** Set once the first deadline escalated the approval to more approvers. */
  readonly escalated?: boolean;
  /**
   * When the final status was claimed (compare-and-set from pending), and when its action (grant, or quarantine)
   * completed. Claimed but not acted after a while means a coordinator died in between: the sweep finishes it.
   * Records written before claims existed have neither and count as done.
   */
  readonly decidedAt?: string;
  readonly actedAt?: string;
  /** Approved while a kill switch paused the capability: why the grant waits (given when the pause is lifted). */
  readonly heldBy?: string;
  /** The key that signed the work (written since issue 12; older records are looked up in MESH_HANDOFF). */
  readonly producerKeyId?: string;
  /**
   * Set by the coordinator when the producer's key is revoked while the work waits: approving it then needs an
   * explicit confirmation (`causeway approve --despite-revocation`), else CW_ERR_PRODUCER_KEY_REVOKED.
   */
  readonly producerRevoked?: ProducerRevocation;
}

/** A revocation of the key that signed pending work, as the trust store has it. */
export interface ProducerRevocation {
  readonly keyid: string;
  readonly principal: string;
  /** RFC 3339. */
  readonly revokedAt: string;
  readonly reason?: string;
}

/** How approvers are told: "the producer's key … (reporter) was revoked at … (reason)". */
export function describeRevocation(r: ProducerRevocation): string {
  return `the producer's key ${r.keyid} (${r.principal}) was revoked at ${r.revokedAt}${r.reason === undefined ? "" : ` (${r.reason})`}`;
}

/** The reply of approve, deny, approve-as and deny-as: where the approval stands after this decision. */
type ApprovalOutcome =
  /** More approvals are needed: this one is counted. */
  | { readonly status: "pending"; readonly granted: false; readonly approvals: number; readonly required: number }
  /** Enough approvals: the work was granted and forwarded. */
  | { readonly status: "approved"; readonly granted: true; readonly approvals: number; readonly required: number }
  /**
   * Enough approvals, but a kill switch pauses the capability: the grant is held (a lease would expire while
   * paused) and given within seconds of the resume. `held` says which switch.
   */
  | { readonly status: "approved"; readonly granted: false; readonly approvals: number; readonly required: number; readonly held: string }
  | { readonly status: "denied"; readonly granted: false };
/** The reply also names the revocation of the producer's key when the work was approved despite it. */
export type ApprovalReply = ApprovalOutcome & { readonly producerRevoked?: ProducerRevocation };

/** The body of approve-as / deny-as: `{"eventId": "…", "reason": "…"}`. */
export interface DecideByRequest {
  readonly eventId: string;
  /** At most 2000 characters are kept. */
  readonly reason?: string;
  /** Approve work whose producer's key was revoked after it reached the mesh (else CW_ERR_PRODUCER_KEY_REVOKED). */
  readonly despiteRevocation?: boolean;
}

const MAX_REASON = 2000;

/** Decodes a signed decision.approval (binary CloudEvents over NATS); the coordinator verifies it. */
function parseSignedDecision(data: Uint8Array, headers: CloudEventHeaders): CloudEvent {
  return NatsBinding.toEvent({ headers, data });
}
type CloudEventHeaders = Parameters<typeof NatsBinding.toEvent>[0]["headers"];

function parseDecideByRequest(data: Uint8Array): DecideByRequest {
  const body = jsonObjectBody(data, '{"eventId": "…", "reason": "…"}');
  if (typeof body.eventId !== "string" || body.eventId === "") throw usage('the request body needs "eventId"');
  if (body.reason !== undefined && typeof body.reason !== "string") throw usage('"reason" must be a string');
  if (body.despiteRevocation !== undefined && typeof body.despiteRevocation !== "boolean") throw usage('"despiteRevocation" must be true or false');
  return {
    eventId: body.eventId, ...(typeof body.reason === "string" && body.reason !== "" && { reason: body.reason.slice(0, MAX_REASON) }),
    ...(body.despiteRevocation === true && { despiteRevocation: true }),
  };
}

const signed = (name: "approve" | "deny") => controlEndpoint<CloudEvent, ApprovalReply>({
  service: COORDINATOR, name,
  description: `${name} pending critical work: the request is a \`decision.approval\` signed by an approver (causeway ${name})`,
  parse: parseSignedDecision,
  encode: (event) => NatsBinding.binary(event),
});

const byRequest = (name: "approve" | "deny") => controlEndpoint<DecideByRequest, ApprovalReply>({
  service: COORDINATOR, name: `${name}-as`, action: name, perCaller: true,
  description: `${name} by request: body {"eventId", "reason"}; only <approver> may publish on ${name}.<approver>`,
  parse: parseDecideByRequest,
});

/** `mesh.ctl.coordinator.approve`: a decision.approval signed by the approver (`causeway approve`). */
export const approve = signed("approve");
/** `mesh.ctl.coordinator.deny`: a decision.approval with verdict denied, signed by the approver. */
export const deny = signed("deny");
/** `mesh.ctl.coordinator.approve.<approver>`: plain `nats req` by the approver; the coordinator signs on its behalf. */
export const approveAs = byRequest("approve");
/** `mesh.ctl.coordinator.deny.<approver>`. */
export const denyAs = byRequest("deny");
/** `mesh.ctl.coordinator.approvals`: pending approvals, oldest deadline first. No parameters. */
export const approvals: ControlEndpoint<Record<string, never>, Approval[]> = controlEndpoint<Record<string, never>, Approval[]>({
  service: COORDINATOR, name: "approvals", description: "pending approvals with their deadlines",
  parse: () => ({}),
});

// ---------------------------------------------------------------------------------------------------------
// Quarantine operations

/** The endpoint actions, each on `<prefix>.ctl.coordinator.<action>`. */
export const QuarantineAction = {
  List: "quarantine-list",
  Show: "quarantine-show",
  Release: "quarantine-release",
  Reject: "quarantine-reject",
} as const;

/** Where an entry stands: open until a signed release or rejection decision settles it. */
export type QuarantineStatus = "open" | "released" | "rejected";
const STATUSES: readonly QuarantineStatus[] = ["open", "released", "rejected"];

/** One quarantine entry as `list` returns it: the reason headers, the original's identity, its status. */
export interface QuarantineEntry {
  /** Sequence in MESH_QUARANTINE: the entry's identity for show, release and reject. */
  readonly seq: number;
  readonly reason: string;
  readonly detail: string;
  readonly code?: string;
  /** The capability token of the quarantine subject (`_evt`, `_ingest`, … for originals outside a capability). */
  readonly capability: string;
  readonly originalSubject: string;
  readonly originalStream: string;
  readonly originalSeq?: number;
  /** The consumer that failed it, when one did. */
  readonly consumer?: string;
  /** The CloudEvent id and type, when the original decodes. */
  readonly eventId?: string;
  readonly eventType?: string;
  readonly detectedBy: string;
  /** RFC 3339; when the detecting principal quarantined it. */
  readonly detectedAt: string;
  readonly status: QuarantineStatus;
  /** The decision that settled it. */
  readonly decision?: { readonly id: string; readonly operator: string; readonly at: string; readonly note?: string };
}

/** The result of checking an original now, as show reports it and release requires it. */
export type Check =
  | { readonly ok: true; readonly principal: string; readonly keyid: string; readonly eventId: string; readonly eventType: string }
  | { readonly ok: false; readonly code?: string; readonly message: string };

/** An entry with everything `show` returns. */
export interface QuarantineDetail {
  readonly entry: QuarantineEntry;
  /** When JetStream stored the entry (RFC 3339). */
  readonly storedAt: string;
  /** The original headers exactly as quarantined (JetStream bookkeeping and reason headers left out). */
  readonly headers: Readonly<Record<string, readonly string[]>>;
  /** The reason headers. */
  readonly reasonHeaders: Readonly<Record<string, string>>;
  /** The original data: UTF-8 text when it is valid UTF-8, base64 otherwise. */
  readonly data: string;
  readonly dataEncoding: "utf8" | "base64";
  readonly dataBytes: number;
  /** Decode and signature verification against the trust store, now. */
  readonly verification: Check;
  /** Whether a release would be accepted now (verification plus expiry, addressing and schema for capability subjects). */
  readonly release: { readonly ok: true } | { readonly ok: false; readonly code?: string; readonly message: string };
}

/** The request of `quarantine-list`; every field optional. */
export interface ListRequest {
  readonly reason?: string;
  readonly capability?: string;
  readonly status?: QuarantineStatus;
  /** RFC 3339 (or a date): entries detected at or after it. */
  readonly since?: string;
  /** RFC 3339 (or a date): entries detected before it. */
  readonly until?: string;
  /** The newest N matching entries. Default 100, at most 10000. */
  readonly limit?: number;
}

/** The reply of `quarantine-list`: the newest `limit` of the `matched` entries, oldest first. */
export interface ListReply {
  readonly entries: QuarantineEntry[];
  readonly matched: number;
}

/** The request of `quarantine-show`. `nats req … quarantine-show 7` (a bare number) works too. */
export interface ShowRequest {
  readonly seq: number;
}

/** The request of `quarantine-release` and `quarantine-reject`. */
export interface SettleRequest {
  readonly seq: number;
  /** Who asked (recorded in the signed decision), 1 to 100 characters. */
  readonly operator: string;
  /** Why, at most 2000 characters (recorded in the signed decision). */
  readonly note?: string;
}

/** The reply of `quarantine-release`: the decision, and where the original bytes were republished. */
export interface ReleaseReply {
  readonly released: true;
  readonly seq: number;
  readonly decisionId: string;
  readonly subject: string;
  readonly republished: { readonly stream: string; readonly seq: number; readonly duplicate: boolean };
}

/** The reply of `quarantine-reject`. */
export interface RejectReply {
  readonly rejected: true;
  readonly seq: number;
  readonly decisionId: string;
}

/** The body of a quarantine request: a JSON object, a bare sequence number, or nothing. */
function quarantineBody(data: Uint8Array): Record<string, unknown> {
  const text = Buffer.from(data).toString("utf8").trim();
  if (/^[0-9]+$/.test(text)) return { seq: Number(text) };
  return jsonObjectBody(data, '{"seq": 7}');
}

function seqOf(body: Record<string, unknown>): number {
  const seq = typeof body.seq === "string" && /^[1-9][0-9]*$/.test(body.seq) ? Number(body.seq) : body.seq;
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1) throw usage("seq (the quarantine entry's sequence, a positive integer) is required");
  return seq;
}

function optionalString(body: Record<string, unknown>, name: string): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw usage(`${name} must be a string`);
  return v;
}

function parseList(data: Uint8Array): ListRequest {
  const b = quarantineBody(data);
  const status = optionalString(b, "status");
  if (status !== undefined && !(STATUSES as readonly string[]).includes(status)) throw usage("status must be open, released or rejected");
  const limit = b.limit === undefined || b.limit === null ? undefined : Number(b.limit);
  const out: Record<string, unknown> = { limit };
  for (const name of ["reason", "capability", "since", "until"] as const) out[name] = optionalString(b, name);
  return Object.fromEntries(Object.entries({ ...out, status }).filter(([, v]) => v !== undefined)) as ListRequest;
}

function parseSettle(data: Uint8Array): SettleRequest {
  const b = quarantineBody(data);
  const note = optionalString(b, "note");
  return { seq: seqOf(b), operator: optionalString(b, "operator") ?? "", ...(note !== undefined && { note }) };
}

const quarantineEndpoint = <Req, Reply>(name: string, description: string, parse: (data: Uint8Array) => Req) =>
  controlEndpoint<Req, Reply>({ service: COORDINATOR, name, description, parse });

export const quarantineList = quarantineEndpoint<ListRequest, ListReply>(QuarantineAction.List,
  "list quarantine entries: {reason?, capability?, status?, since?, until?, limit?}", parseList);
export const quarantineShow = quarantineEndpoint<ShowRequest, QuarantineDetail>(QuarantineAction.Show,
  "one entry with its original headers, data and verification now: {seq}", (data) => ({ seq: seqOf(quarantineBody(data)) }));
export const quarantineRelease = quarantineEndpoint<SettleRequest, ReleaseReply>(QuarantineAction.Release,
  "re-verify and republish the original bytes to the original subject: {seq, operator, note?}", parseSettle);
export const quarantineReject = quarantineEndpoint<SettleRequest, RejectReply>(QuarantineAction.Reject,
  "settle an entry for good: {seq, operator, note?}", parseSettle);

// ---------------------------------------------------------------------------------------------------------
// Kill switches

/** The kill switch endpoints: `<prefix>.ctl.coordinator.<action>`. */
export const SwitchAction = {
  Pause: "pause",
  Resume: "resume",
  Status: "status",
} as const;
/** One of the switch actions. */
export type SwitchActionValue = (typeof SwitchAction)[keyof typeof SwitchAction];

/** The body of a pause or resume request (JSON). */
export interface SwitchRequest {
  readonly scope: SwitchScopeValue;
  /** `research.v1` (capability), `planner` (principal) or `*` (mesh; may be left out). */
  readonly target?: string;
  /** Why; required to pause, default "resumed" to resume. */
  readonly reason?: string;
  /** Who asks (a person's name); it is recorded as `by` and in the decision. */
  readonly operator?: string;
  /** Pause only: when the pause ends by itself (RFC 3339 with a zone). Default: until resumed. */
  readonly expires_at?: string;
}

/** A JetStream consumer a switch pauses, and its state after the switch. */
export interface ConsumerSwitch {
  readonly stream: string;
  readonly name: string;
  readonly paused: boolean;
  /** When the server resumes it by itself; null when it is not paused. */
  readonly pause_until: string | null;
  /** The consumer does not exist yet (no agent has started); the flag still applies to agents that start. */
  readonly missing?: true;
}

/** The reply to pause and resume. */
export interface SwitchReply extends Omit<SwitchValue, "decision_id"> {
  readonly key: string;
  readonly scope: SwitchScopeValue;
  readonly target: string;
  /** The decision.switch event emitted, or null when nothing changed (resuming what was not paused). */
  readonly decision_id: string | null;
  readonly consumers: readonly ConsumerSwitch[];
}

/** One pause in effect, as `status` lists it. */
export interface SwitchStatus extends SwitchState {
  readonly consumers: readonly ConsumerSwitch[];
  /**
   * Set when the stored value cannot be read: agents treat it as a pause without end (a kill switch fails
   * closed) until it is rewritten or deleted; `causeway resume <scope> <target>` repairs it. The reason says why.
   */
  readonly unreadable?: true;
}

/** The reply to status. */
export interface SwitchStatusReply {
  readonly switches: readonly SwitchStatus[];
}

const SWITCH_FIELDS = new Set(["scope", "target", "reason", "operator", "expires_at"]);
const SWITCH_EXAMPLE = '{"scope":"capability","target":"research.v1","reason":"…","operator":"…"}';

/** A pause or resume request: a JSON object with known fields only (a misspelt field is refused, not ignored). */
export function parseSwitchRequest(data: Uint8Array): SwitchRequest {
  if (Buffer.from(data).toString("utf8").trim() === "") throw invalid(`the request is not JSON: it is empty; send ${SWITCH_EXAMPLE}`);
  const r = jsonObjectBody(data, SWITCH_EXAMPLE, ErrorCode.SwitchInvalid);
  const unknown = Object.keys(r).filter((k) => !SWITCH_FIELDS.has(k));
  if (unknown.length > 0) throw invalid(`unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}: a request has ${[...SWITCH_FIELDS].join(", ")}`);
  const scope = Object.values(SwitchScope).find((s) => s === r.scope);
  if (typeof r.scope !== "string") throw invalid(`scope must be one of ${Object.values(SwitchScope).join(", ")}`);
  if (scope === undefined) throw invalid(`unknown scope ${JSON.stringify(r.scope)}: one of ${Object.values(SwitchScope).join(", ")}`);
  const text = (field: "target" | "reason" | "operator" | "expires_at"): { [field]?: string } => {
    const v = r[field];
    if (v === undefined) return {};
    if (typeof v !== "string") throw invalid(`${field} must be a string`);
    return { [field]: v };
  };
  return { scope, ...text("target"), ...text("reason"), ...text("operator"), ...text("expires_at") };
}

export const pause = controlEndpoint<SwitchRequest, SwitchReply>({
  service: COORDINATOR, name: SwitchAction.Pause,
  description: 'pause a capability, principal or the mesh: {"scope","target","reason","operator","expires_at"?}', parse: parseSwitchRequest,
});
export const resume = controlEndpoint<SwitchRequest, SwitchReply>({
  service: COORDINATOR, name: SwitchAction.Resume, description: 'resume it: {"scope","target","reason"?,"operator"}', parse: parseSwitchRequest,
});
export const status = controlEndpoint<Record<string, never>, SwitchStatusReply>({
  service: COORDINATOR, name: SwitchAction.Status, description: "every pause in effect: reason, by, since, expiry, consumers", parse: () => ({}),
});

// ---------------------------------------------------------------------------------------------------------
// Health per capability version

/**
 * One implementation version of a capability over the coordinator's sliding window, from its instances'
 * heartbeats (their cumulative counters; health.ts). Counts are what happened inside the window, to a heartbeat.
 */
export interface VersionHealth {
  /** `research.v1`. */
  readonly capability: string;
  /** The implementation version, `1.4.0`. */
  readonly version: string;
  readonly windowMs: number;
  /** Instances heartbeating now. One that stopped or was lost inside the window still counts for what it did. */
  readonly liveInstances: number;
  /** Inputs handled to the end. */
  readonly handled: number;
  /** Handler runs that threw (each retry counts). */
  readonly failed: number;
  readonly quarantined: number;
  readonly quarantinedByReason: Readonly<Record<string, number>>;
  /** failed / (handled + failed); 0 when nothing ran. */
  readonly failureRate: number;
  /** quarantined / (handled + quarantined); 0 when nothing ran. */
  readonly quarantineRate: number;
  /** Handler latency percentiles (ms), from the histogram buckets; null when no handler ran in the window. */
  readonly p50Ms: number | null;
  readonly p95Ms: number | null;
  /** When the coordinator received the newest beat of any of its instances (ISO time), null when none. */
  readonly lastHeartbeat: string | null;
}

/** The request of `health`: every capability, or one (`{"capability": "research.v1"}`). */
export interface HealthRequest {
  readonly capability?: string;
}

/** The reply of `health`: every capability version seen in the window, sorted by capability then version. */
export interface HealthReply {
  readonly windowMs: number;
  readonly versions: readonly VersionHealth[];
}

const CAPABILITY_REF = /^[a-z0-9_-]+\.v(0|[1-9][0-9]*)$/;

function parseHealthRequest(data: Uint8Array): HealthRequest {
  const body = jsonObjectBody(data, '{"capability": "research.v1"}');
  const unknown = Object.keys(body).filter((k) => k !== "capability");
  if (unknown.length > 0) throw usage(`unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}: the request has only "capability"`);
  if (body.capability === undefined || body.capability === null) return {};
  if (typeof body.capability !== "string" || !CAPABILITY_REF.test(body.capability)) {
    throw usage(`capability must be a capability and major like "research.v1", not ${JSON.stringify(body.capability).slice(0, 100)}`);
  }
  return { capability: body.capability };
}

/** `mesh.ctl.coordinator.health`: handled, failed, quarantined, latency and liveness per capability version over the window. */
export const health = controlEndpoint<HealthRequest, HealthReply>({
  service: COORDINATOR, name: "health",
  description: 'health per capability version over the sliding window: {"capability"?: "research.v1"}', parse: parseHealthRequest,
});

function usage(message: string): CausewayError {
  return new CausewayError(ErrorCode.Usage, message);
}

function invalid(message: string): CausewayError {
  return new CausewayError(ErrorCode.SwitchInvalid, message);
}

// ---------------------------------------------------------------------------------------------------------
// Routing by version: rollouts and fallbacks (rollout.ts; the tables in KV causeway_routes, kit routing.ts)

/** The endpoint actions, each on `<prefix>.ctl.coordinator.<action>`. */
export const RolloutAction = {
  Start: "rollout-start",
  Status: "rollout-status",
  Promote: "rollout-promote",
  Rollback: "rollout-rollback",
  Pause: "rollout-pause",
  Resume: "rollout-resume",
  Fallback: "rollout-fallback",
} as const;

/** `rollout-start`: route a share of new flows to a candidate version, raised step by step while it is healthy. */
export interface RolloutStartRequest {
  /** `research.v1`. */
  readonly capability: string;
  readonly candidate: string;
  /** The version the rest of the flows go to; default: the table's, else the one other version with live instances. */
  readonly stable?: string;
  /** Shares of new flows, ascending, ending at 100. Default 5, 25, 50, 100. */
  readonly steps?: readonly number[];
  /** How long each step lasts while the candidate is healthy (ms, ≥ 1000). Default 60000. */
  readonly intervalMs?: number;
  /** Rolled back when its failure or quarantine rate exceeds the stable one's by more than this (0–1). Default 0.1. */
  readonly maxRateMargin?: number;
  /** … or its p95 handler latency the stable one's times this (≥ 1). Default 2. */
  readonly maxLatencyRatio?: number;
  /** Inputs the candidate runs in the window before its figures are judged and a step advances. Default 20. */
  readonly minFlows?: number;
  readonly operator?: string;
  readonly reason?: string;
}

/** `rollout-promote|rollback|pause|resume`: the capability's rollout in progress. */
export interface RolloutRequest {
  readonly capability: string;
  readonly operator?: string;
  readonly reason?: string;
}

/** `rollout-fallback`: the version new flows go to while the stable version's circuit is open; null clears it. */
export interface FallbackRequest {
  readonly capability: string;
  readonly version: string | null;
  /** When the capability is not routed yet: its stable version (default: the one other version with live instances). */
  readonly stable?: string;
  readonly operator?: string;
  readonly reason?: string;
}

/** `rollout-status`: every routed capability, or one. */
export interface RolloutStatusRequest {
  readonly capability?: string;
}

/** A capability's routing and the health of its versions. */
export interface RoutingState {
  readonly capability: string;
  /** Null when the capability is not routed (every instance shares its durable). */
  readonly table: RouteTable | null;
  readonly health: readonly VersionHealth[];
}

/** The reply to a change: the state after it and the decision.rollout it emitted (null when nothing changed). */
export interface RolloutReply extends RoutingState {
  readonly decision_id: string | null;
}

export interface RolloutStatusReply {
  readonly capabilities: readonly RoutingState[];
}

const ROLLOUT_FIELDS = ["capability", "candidate", "stable", "steps", "intervalMs", "maxRateMargin", "maxLatencyRatio", "minFlows", "operator", "reason"];

function rolloutBody(data: Uint8Array, allowed: readonly string[], example: string): Record<string, unknown> {
  const body = jsonObjectBody(data, example, ErrorCode.RolloutInvalid);
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) throw rolloutInvalid(`unknown field${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}: the request has ${allowed.join(", ")}`);
  if (typeof body.capability !== "string" || !CAPABILITY_REF.test(body.capability)) {
    throw rolloutInvalid(`capability must be a capability and major like "research.v1", not ${JSON.stringify(body.capability ?? null).slice(0, 100)}`);
  }
  for (const k of ["operator", "reason"]) {
    if (body[k] !== undefined && (typeof body[k] !== "string" || (body[k] as string).length > (k === "reason" ? 2000 : 100))) throw rolloutInvalid(`${k} must be a string of at most ${k === "reason" ? 2000 : 100} characters`);
  }
  return body;
}

const SEMVER_TEXT = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
function versionField(body: Record<string, unknown>, k: string, required: boolean): string | undefined {
  const v = body[k];
  if (v === undefined && !required) return undefined;
  if (typeof v !== "string" || v.length > 64 || !SEMVER_TEXT.test(v)) throw rolloutInvalid(`${k} must be a semver version like "1.1.0", not ${JSON.stringify(v ?? null).slice(0, 100)}`);
  return v;
}

function numberField(body: Record<string, unknown>, k: string, ok: (n: number) => boolean, rule: string): number | undefined {
  const v = body[k];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !ok(v)) throw rolloutInvalid(`${k} must be ${rule}, not ${JSON.stringify(v).slice(0, 100)}`);
  return v;
}

/** Parses a `rollout-start` request; CW_ERR_ROLLOUT_INVALID naming the field otherwise. */
export function parseRolloutStart(data: Uint8Array): RolloutStartRequest {
  const body = rolloutBody(data, ROLLOUT_FIELDS, '{"capability":"research.v1","candidate":"1.1.0","steps":[5,25,50,100],"intervalMs":60000}');
  const steps = body.steps;
  if (steps !== undefined && (!Array.isArray(steps) || steps.length === 0 || steps.length > 20
    || steps.some((x, i) => typeof x !== "number" || !Number.isInteger(x) || x < 1 || x > 100 || (i > 0 && x <= (steps[i - 1] as number))) || steps.at(-1) !== 100)) {
    throw rolloutInvalid(`steps must be 1 to 20 ascending integer shares of 1–100 ending at 100, like [5,25,50,100], not ${JSON.stringify(steps).slice(0, 100)}`);
  }
  const intervalMs = numberField(body, "intervalMs", (n) => Number.isInteger(n) && n >= 1000 && n <= 86_400_000, "an integer of ms from 1000 to 86400000");
  const maxRateMargin = numberField(body, "maxRateMargin", (n) => n >= 0 && n <= 1, "a number from 0 to 1");
  const maxLatencyRatio = numberField(body, "maxLatencyRatio", (n) => n >= 1 && n <= 1000, "a number from 1 to 1000");
  const minFlows = numberField(body, "minFlows", (n) => Number.isInteger(n) && n >= 1 && n <= 1_000_000, "an integer from 1 to 1000000");
  const stable = versionField(body, "stable", false);
  return {
    capability: body.capability as string, candidate: versionField(body, "candidate", true)!, ...(stable !== undefined && { stable }),
    ...(steps !== undefined && { steps: steps as number[] }), ...(intervalMs !== undefined && { intervalMs }), ...(maxRateMargin !== undefined && { maxRateMargin }),
    ...(maxLatencyRatio !== undefined && { maxLatencyRatio }), ...(minFlows !== undefined && { minFlows }),
    ...(body.operator !== undefined && { operator: body.operator as string }), ...(body.reason !== undefined && { reason: body.reason as string }),
  };
}

function parseRolloutRequest(data: Uint8Array): RolloutRequest {
  const body = rolloutBody(data, ["capability", "operator", "reason"], '{"capability":"research.v1","operator":"…","reason":"…"}');
  return { capability: body.capability as string, ...(body.operator !== undefined && { operator: body.operator as string }), ...(body.reason !== undefined && { reason: body.reason as string }) };
}

function parseFallbackRequest(data: Uint8Array): FallbackRequest {
  const body = rolloutBody(data, ["capability", "version", "stable", "operator", "reason"], '{"capability":"research.v1","version":"1.0.0"} (null clears it)');
  if (!("version" in body)) throw rolloutInvalid('the request needs "version": a semver version, or null to clear the fallback');
  const stable = versionField(body, "stable", false);
  return {
    capability: body.capability as string, version: body.version === null ? null : versionField(body, "version", true)!, ...(stable !== undefined && { stable }),
    ...(body.operator !== undefined && { operator: body.operator as string }), ...(body.reason !== undefined && { reason: body.reason as string }),
  };
}

function parseRolloutStatus(data: Uint8Array): RolloutStatusRequest {
  if (Buffer.from(data).toString("utf8").trim() === "") return {};
  const body = jsonObjectBody(data, '{"capability": "research.v1"}', ErrorCode.RolloutInvalid);
  if (body.capability === undefined) return {};
  return { capability: rolloutBody(data, ["capability"], '{"capability": "research.v1"}').capability as string };
}

export const rolloutStart = controlEndpoint<RolloutStartRequest, RolloutReply>({
  service: COORDINATOR, name: RolloutAction.Start, parse: parseRolloutStart,
  description: 'start a rollout: {"capability","candidate","stable"?,"steps"?,"intervalMs"?,"maxRateMargin"?,"maxLatencyRatio"?,"minFlows"?,"operator"?}',
});
export const rolloutStatus = controlEndpoint<RolloutStatusRequest, RolloutStatusReply>({
  service: COORDINATOR, name: RolloutAction.Status, parse: parseRolloutStatus,
  description: 'routing by version and the versions\' health: {"capability"?}',
});
const rolloutChange = (name: (typeof RolloutAction)[keyof typeof RolloutAction], what: string) => controlEndpoint<RolloutRequest, RolloutReply>({
  service: COORDINATOR, name, parse: parseRolloutRequest, description: `${what}: {"capability","operator"?,"reason"?}`,
});
export const rolloutPromote = rolloutChange(RolloutAction.Promote, "make the candidate the stable version now");
export const rolloutRollback = rolloutChange(RolloutAction.Rollback, "send no more new flows to the candidate");
export const rolloutPause = rolloutChange(RolloutAction.Pause, "hold the candidate's share where it is");
export const rolloutResume = rolloutChange(RolloutAction.Resume, "let the rollout advance again");
export const rolloutFallback = controlEndpoint<FallbackRequest, RolloutReply>({
  service: COORDINATOR, name: RolloutAction.Fallback, parse: parseFallbackRequest,
  description: 'the version new flows go to while the stable version\'s circuit is open: {"capability","version"|null,"stable"?,"operator"?}',
});

function rolloutInvalid(message: string): CausewayError {
  return new CausewayError(ErrorCode.RolloutInvalid, message);
}
