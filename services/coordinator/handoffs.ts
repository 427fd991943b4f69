// Critical handoffs. Producers address a critical capability on mesh.handoff.<capability>.v<major>; only the
// coordinator may publish on its mesh.cap subject. For each handoff the coordinator verifies the event,
// applies policy (who may address it, confidence and evidence gates, required approvals), and then grants it:
// a lease in KV (create-only — one grant per event even with two coordinators; its revision is the fencing
// token), a signed decision.grant bound to the event's id and core digest, and the original bytes forwarded
// unchanged to the capability. Work that needs approval waits in KV causeway_approvals (with the handoff's
// stream sequence, so its bytes stay in MESH_HANDOFF) until approvers decide or the deadline passes.
import type { KV } from "@nats-io/kv";
import type { JsMsg } from "@nats-io/jetstream";
import {
  CausewayError, DecisionKind, ErrorCode, KvBucket, MsgIdKind, NatsBinding, QuarantineReason, StreamName, addControlEndpoint, confirmDuplicate, consumeDurable, isWrongRevision,
  correlationIdOf, priorityOf, routeEpochOf, dataJson, dataText, decisionEvent, formatTime, decisionMsgId, encodeLease, leaseKey, msgId, openMeshBucket, parseSubject, publishDecision,
  publishQuarantineCopy, quarantine, quarantineReasonOf, readLease, sameBytes, watchSwitches, type CloudEvent, type Lease, type QuarantineReasonValue, type SchemaRegistry,
} from "../kit/index.ts";
import {
  approvals as pendingApprovals, approve, approveAs, deny, denyAs, describeRevocation, type Approval, type ApprovalReply, type DecideByRequest, type ProducerRevocation,
} from "./contract.ts";
import type { CoordinatorDeps, CoordinatorModule, StartModule } from "./module.ts";
import type { CapabilityPolicy } from "./policy.ts";

/** A settled status whose action has not completed after this long was left by a coordinator that died. */
const STUCK_CLAIM_MS = 30_000;

const SWEEP_MS = 1_000;

export const start: StartModule = async (deps) => {
  const leases = await openMeshBucket(deps.nc, deps.layout.buckets[KvBucket.Leases].name, "leases of critical work");
  const approvals = await openMeshBucket(deps.nc, deps.layout.buckets[KvBucket.Approvals].name, "pending approvals");
  // Kill switches: critical work is not granted while its capability, its agent or the mesh is paused — the
  // lease would run out during the pause and the work be quarantined as expired on resume.
  const switches = await watchSwitches(deps.nc, { onProblem: (err) => deps.log.warn({ err }, "kill switch problem") });
  const handoffs = new Handoffs(deps, leases, approvals, (ref) => {
    const [capability, v] = ref.split(".") as [string, string];
    const major = Number(v.slice(1));
    const principals = Object.values(deps.layout.principals.principals).filter((p) => p.serves.includes(ref)).map((p) => p.name);
    for (const principal of principals.length > 0 ? principals : [""]) {
      const on = switches.isPaused({ capability, major, principal });
      if (on) return `${on.scope} ${on.target} is paused${on.reason ? `: ${on.reason}` : ""}`;
    }
    return undefined;
  });

  // One handoff at a time, as it always was: a grant is a sequence of writes (lease, decision, forward).
  const consumer = await consumeDurable(deps.nc, {
    stream: StreamName.Handoff, durable: deps.layout.durableOf(deps.principal, StreamName.Handoff), concurrency: 1, log: deps.log.child({ module: "handoffs" }),
    handler: (msg) => handoffs.handle(msg),
  }).catch(async (err: unknown) => {
    await switches.close().catch(() => undefined); // a failed start leaves no watcher behind
    throw err;
  });

  // Requests in progress finish before stop() returns (a settlement half done at shutdown waits for the sweep).
  const serve = { subjects: deps.subjects, log: deps.log };
  const endpoints = [
    addControlEndpoint(deps.service, approve, { ...serve, handle: (event) => handoffs.decide(event, "approved"), requester: (event) => handoffs.signer(event) }),
    addControlEndpoint(deps.service, deny, { ...serve, handle: (event) => handoffs.decide(event, "denied"), requester: (event) => handoffs.signer(event) }),
    addControlEndpoint(deps.service, approveAs, { ...serve, handle: (req, msg) => handoffs.decideByRequest(callerOf(msg.subject), req, "approved") }),
    addControlEndpoint(deps.service, denyAs, { ...serve, handle: (req, msg) => handoffs.decideByRequest(callerOf(msg.subject), req, "denied") }),
    addControlEndpoint(deps.service, pendingApprovals, { ...serve, handle: () => handoffs.pending() }),
  ];

  // One sweep at a time: a slow store must not pile them up.
  let sweeping: Promise<void> | undefined;
  const sweep = setInterval(() => {
    sweeping ??= handoffs.expireDue().catch((err: unknown) => deps.log.error({ err }, "approval deadline sweep failed")).finally(() => { sweeping = undefined; });
  }, SWEEP_MS);
  return {
    name: "handoffs",
    lost: Promise.race([consumer.lost, switches.lost]),
    async stop() {
      clearInterval(sweep);
      await consumer.stop();
      await Promise.allSettled([...endpoints.map((e) => e.stop()), sweeping]);
      await switches.close().catch(() => undefined);
    },
  } satisfies CoordinatorModule;
};

export class Handoffs {
  private readonly deps: CoordinatorDeps;
  private readonly leases: KV;
  private readonly approvals: KV;
  /** Why a capability (`research.v1`) may not be granted now (a kill switch on it, its agent or the mesh), or undefined. */
  private readonly paused: (ref: string) => string | undefined;

  constructor(deps: CoordinatorDeps, leases: KV, approvals: KV, paused: (ref: string) => string | undefined) {
    this.deps = deps;
    this.leases = leases;
    this.approvals = approvals;
    this.paused = paused;
  }

  /** One handoff message: verify, apply policy, then hold for approval or grant. Acks when settled. */
  async handle(msg: JsMsg): Promise<void> {
    const { deps } = this;
    let parsed;
    try {
      parsed = parseSubject(msg.subject);
    } catch {
      parsed = undefined;
    }
    const capability = parsed?.kind === "handoff" ? parsed.capability : "unknown";
    const major = parsed?.kind === "handoff" ? parsed.major : 0;
    const refuse = (reason: QuarantineReasonValue, detail: string, code?: string) =>
      quarantine(deps.js, msg, deps.subjects.quarantine(reason, capability), { reason, detail, code, detectedBy: deps.principal }, deps);

    let event: CloudEvent, trusted;
    try {
      event = NatsBinding.toEvent(msg);
      trusted = deps.trust.verifyMessage(msg, { event });
    } catch (err) {
      await refuse(quarantineReasonOf(err), (err as Error).message, (err as CausewayError).code);
      return;
    }
    const policy = deps.policy.policy().of(capability, major);
    if (!policy?.critical) {
      await refuse(QuarantineReason.UnknownCapability, `${capability}.v${major} is not a critical capability in policy`, ErrorCode.UnknownCapability);
      return;
    }
    if (!deps.trust.mayAddress(trusted.entry, capability, major)) {
      await refuse(QuarantineReason.PolicyDenied, `${trusted.entry.principal} may not address ${policy.ref}`, ErrorCode.UnauthorizedAddress);
      return;
    }
    // Bad data goes no further than it would at the agent: not to a human for approval first.
    const invalid = schemaProblem(deps.schemas, trusted.event);
    if (invalid) {
      await refuse(invalid.reason, invalid.detail, invalid.code);
      return;
    }
    const gate = gateVerdict(policy, trusted.event);
    if (gate) {
      await refuse(gate.reason, gate.detail, ErrorCode.PolicyVerdict);
      return;
    }
    const key = leaseKey(capability, major, trusted.event);
    const coreDigest = trusted.verification.coreDigest;
    if (policy.approvals) {
      const existing = await this.approvals.get(key);
      if (!existing || existing.operation !== "PUT") {
        await this.requestApproval(key, policy, trusted.event, coreDigest, msg, trusted.verification.keyid);
        msg.ack();
        return;
      }
      const approval = existing.json<Approval>();
      // Pending: a redelivery. The record is written before the request is published, so announce it again
      // (same id: deduplicated if it went out). Denied or expired: already quarantined.
      if (approval.status === "pending") await this.announce(approval, trusted.event);
      if (approval.status !== "approved") {
        msg.ack();
        return;
      }
    }
    const held = this.paused(policy.ref);
    if (held) {
      // Not granted during a pause. Nak'ing it until the resume would spend its deliveries (max_deliver) and end in
      // dead letters; instead it is recorded as approved and held — as an approval given during a pause is — and
      // the sweep grants it once the pause is lifted. Its bytes stay in MESH_HANDOFF at this sequence.
      if (!policy.approvals) {
        const now = new Date().toISOString();
        const record: Approval = {
          eventId: trusted.event.id, eventSource: trusted.event.source, correlationId: correlationIdOf(trusted.event), coreDigest, capability: policy.ref,
          status: "approved", required: 0, approvers: [], approvals: [], deadline: now, handoffSeq: msg.info.streamSequence, handoffSubject: msg.subject,
          producerKeyId: trusted.verification.keyid, decidedBy: deps.principal, decidedAt: now, heldBy: held,
        };
        await this.approvals.create(key, JSON.stringify(record)).catch(async (err: unknown) => {
          if ((await this.approvals.get(key))?.operation !== "PUT") throw err; // else recorded already (a redelivery, a peer)
        });
      }
      deps.log.info({ eventId: trusted.event.id, capability: policy.ref, held }, "grant held by a kill switch");
      msg.ack();
      return;
    }
    await this.grant(key, policy, trusted.event, coreDigest, { subject: msg.subject, seq: msg.info.streamSequence, headers: msg.headers, data: msg.data }, []);
    msg.ack();
  }

  private async requestApproval(key: string, policy: CapabilityPolicy, event: CloudEvent, coreDigest: string, msg: JsMsg, producerKeyId: string): Promise<void> {
    const { deps } = this;
    const approvals = policy.approvals!;
    const deadline = new Date(Date.now() + policy.approvalDeadlineMs).toISOString();
    const approval: Approval = {
      eventId: event.id, eventSource: event.source, correlationId: correlationIdOf(event), coreDigest, capability: policy.ref, status: "pending",
      required: approvals.count, approvers: approvals.approvers, approvals: [], deadline,
      ...(typeof event.extensions.expirytime === "string" && { workExpiresAt: event.extensions.expirytime }),
      handoffSeq: msg.info.streamSequence, handoffSubject: msg.subject, producerKeyId,
    };
    try {
      await this.approvals.create(key, JSON.stringify(approval));
    } catch {
      return; // another coordinator (or an earlier delivery) recorded it first; it announces the request
    }
    await this.announce(approval, event);
    deps.log.info({ eventId: event.id, capability: policy.ref, deadline }, "approval requested");
  }

  /** Publishes the signed request of a pending approval; its id is derived from the event, so a repeat is one request. */
  private async announce(approval: Approval, event: CloudEvent): Promise<void> {
    const requested = decisionEvent(DecisionKind.ApprovalRequested, {
      eventId: event.id, eventSource: event.source, coreDigest: approval.coreDigest, capability: approval.capability,
      required: approval.required, approvers: approval.approvers, deadline: approval.deadline, summary: summarize(event),
    }, { principal: this.deps.principal, key: this.deps.key, about: event, idKey: `approval-requested/${event.id}` });
    await publishDecision(this.deps.js, DecisionKind.ApprovalRequested, requested, undefined, this.deps);
  }

  /**
   * Grants `event`: creates its lease (or finds the one a peer created), publishes the signed grant, and
   * forwards the original bytes unchanged. Idempotent: the lease, the grant id and the forward's msgID are all
   * derived from the event.
   */
  async grant(key: string, policy: CapabilityPolicy, event: CloudEvent, coreDigest: string, original: { subject: string; seq: number; headers?: JsMsg["headers"]; data: Uint8Array }, approvers: readonly string[]): Promise<void> {
    const { deps } = this;
    const grantId = decisionEvent(DecisionKind.Grant, {}, { principal: deps.principal, key: deps.key, about: event, idKey: `grant/${event.id}` }).id;
    const lease: Lease = { eventId: event.id, eventSource: event.source, coreDigest, capability: policy.ref, state: "granted", grantId, expiresAt: new Date(Date.now() + policy.leaseTtlMs).toISOString() };
    let revision: number;
    // The lease as stored: on a retry (the grant's publish or forward failed after the lease was created) the
    // first try's, so the grant — one id, however often it is retried — says the expiry the lease really has.
    let granted = lease;
    try {
      revision = await this.leases.create(key, encodeLease(lease));
    } catch {
      const found = await readLease(this.leases, key);
      if (!found) throw new Error(`lease ${key} exists but cannot be read`);
      if (found.lease.state !== "granted") return; // already running or consumed: nothing to forward
      revision = found.revision;
      granted = found.lease;
    }
    const grant = decisionEvent(DecisionKind.Grant, {
      eventId: event.id, eventSource: event.source, coreDigest, capability: policy.ref,
      lease: { key, revision, expiresAt: granted.expiresAt }, approvals: [...approvers],
    }, { principal: deps.principal, key: deps.key, about: event, idKey: `grant/${event.id}` });
    await publishDecision(deps.js, DecisionKind.Grant, grant, undefined, deps);
    // The original bytes and headers, unchanged: the critical agent verifies the producer's own signature.
    // Its message id is the coordinator's own (msg-ids.ts): a producer on another MESH_CAP subject cannot take it
    // first, and a duplicate ack counts only when the stream holds these bytes on this subject.
    const [capability, v] = policy.ref.split(".") as [string, string];
    // On the subject of the event's own signed priority (issue 16): the critical agent refuses any other.
    const target = await deps.router.route(deps.subjects.capability(capability, Number(v.slice(1))), correlationIdOf(event), routeEpochOf(event), priorityOf(event));
    const forwardId = msgId(deps, MsgIdKind.Grant, event.id);
    const forwarded = await deps.js.publish(target, original.data, { headers: original.headers, msgID: forwardId });
    await confirmDuplicate(deps.jsm, forwarded, forwardId, (stored) => sameBytes(stored, target, original.data));
    deps.log.info({ eventId: event.id, capability: policy.ref, lease: key, revision }, "granted");
  }

  /** The approver who signed a decision.approval: its signature verifies against the trust store. */
  signer(signed: CloudEvent): string {
    return this.deps.trust.verify(signed, { receivedAt: "now" }).entry.principal; // a request, arriving now
  }

  /** An approve or deny request carrying a decision.approval signed by the approver (`causeway approve`). */
  async decide(signed: CloudEvent, verdict: "approved" | "denied"): Promise<ApprovalReply> {
    const { deps } = this;
    const decision = deps.trust.verify(signed, { receivedAt: "now" }); // a request, arriving now
    if (decision.event.type !== "decision.approval") throw new CausewayError(ErrorCode.UnknownCapability, `expected a decision.approval, got ${decision.event.type}`);
    const data = dataJson<{ eventId: string; coreDigest: string; verdict: string; approver: string; reason?: string; despiteRevocation?: boolean }>(decision.event);
    deps.schemas.validate(decision.event.dataschema ?? "", data);
    const approver = decision.entry.principal;
    if (data.approver !== approver) throw new CausewayError(ErrorCode.NotApprover, `the decision names ${data.approver} but is signed by ${approver}`);
    if (data.verdict !== verdict) throw new CausewayError(ErrorCode.Usage, `a ${verdict} request carries verdict ${data.verdict}`);
    return this.apply(data.eventId, approver, verdict, data.reason, data.despiteRevocation === true, (approval) => {
      if (data.coreDigest !== approval.coreDigest) throw new CausewayError(ErrorCode.NoPendingApproval, "the decision is for other bytes than the pending event (core digest differs)");
      return signed; // the approver's own signature goes into MESH_DECISION as it is
    });
  }

  /**
   * An approve or deny sent with plain `nats req` on mesh.ctl.coordinator.<approve|deny>.<approver>: the server
   * lets each approver publish only on its own subject, so `approver` (the subject's last token) is its
   * authenticated NATS identity. The coordinator signs the decision on its behalf (`via: "request"`).
   * `causeway approve` is the stronger path: there the approver signs with its own key.
   */
  async decideByRequest(approver: string, req: DecideByRequest, verdict: "approved" | "denied"): Promise<ApprovalReply> {
    const { eventId, reason } = req;
    const despite = req.despiteRevocation === true;
    return this.apply(eventId, approver, verdict, reason, despite, (approval) => decisionEvent(DecisionKind.Approval, {
      eventId, coreDigest: approval.coreDigest, verdict, approver, via: "request", ...(reason && { reason }), ...(despite && { despiteRevocation: true }),
    }, { principal: this.deps.principal, key: this.deps.key, about: { id: eventId, source: approval.eventSource, extensions: { correlationid: approval.correlationId } }, idKey: `${verdict}/${approver}/${eventId}` }));
  }

  /** Records `approver`'s verdict on the pending approval of `eventId`, publishes the decision, and grants when complete. */
  private async apply(
    eventId: string, approver: string, verdict: "approved" | "denied", reason: string | undefined, despiteRevocation: boolean, decisionFor: (approval: Approval) => CloudEvent,
  ): Promise<ApprovalReply> {
    const { deps } = this;
    const found = await this.findApproval(eventId);
    if (!found) throw new CausewayError(ErrorCode.NoPendingApproval, `no approval is pending for event ${eventId}`);
    const { key, revision, approval } = found;
    if (approval.status !== "pending") throw new CausewayError(ErrorCode.NoPendingApproval, `the approval of ${eventId} is already ${approval.status}`);
    if (!approval.approvers.includes(approver)) throw new CausewayError(ErrorCode.NotApprover, `${approver} is not an approver of ${approval.capability} (policy: ${approval.approvers.join(", ")})`);
    // Work whose producer's key was revoked while it waited runs only if the approver says so, knowingly
    // (checked now too, not only as flagged by the sweep: the revocation may be a second old).
    const revoked = verdict === "approved" ? (approval.producerRevoked ?? await this.producerRevocation(approval)) : undefined;
    if (revoked !== undefined && !despiteRevocation) {
      throw new CausewayError(ErrorCode.ProducerKeyRevoked, `${describeRevocation(revoked)}, after the work reached the mesh: approve with --despite-revocation (a request: "despiteRevocation": true) to run it anyway, or deny it`, { details: { producerRevoked: revoked } });
    }
    const flag = revoked === undefined ? {} : { producerRevoked: revoked };
    // The approver's decision is recorded whatever happens next: it is what the approver did.
    const decision = decisionFor(approval);
    const { headers, data: bytes } = NatsBinding.binary(decision);
    const subject = deps.subjects.decision("approval"), id = decisionMsgId(decision, deps);
    const ack = await deps.js.publish(subject, bytes, { headers, msgID: id });
    let recorded: CloudEvent | undefined;
    await confirmDuplicate(deps.jsm, ack, id, (stored) => {
      if (stored.subject !== subject || stored.header.get("ce-id") !== decision.id) return false;
      try {
        recorded = NatsBinding.toEvent({ headers: stored.header, data: stored.data });
      } catch {
        return false;
      }
      return true;
    });
    // A retried decision (one id) is the first try's in MESH_DECISION: the approval records that one's reason.
    if (recorded !== undefined) reason = dataJson<{ reason?: string }>(recorded).reason;

    const now = new Date().toISOString();
    const entry = { approver, at: now, ...(reason && { reason }) };
    const approvals = verdict === "denied" || approval.approvals.some((a) => a.approver === approver) ? approval.approvals : [...approval.approvals, entry];
    if (verdict === "approved" && approvals.length < approval.required) {
      await this.approvals.update(key, JSON.stringify({ ...approval, approvals } satisfies Approval), revision).catch(() => {
        // Another approver's vote (or the deadline) changed it at the same moment: this vote is not counted yet.
        throw new CausewayError(ErrorCode.NoPendingApproval, `the approval of ${eventId} changed at the same moment; send your approval again`);
      });
      return { status: "pending", granted: false, approvals: approvals.length, required: approval.required, ...flag };
    }
    // Settling: claim the final status first (compare-and-set), so the deadline sweep or a peer coordinator cannot
    // settle the same approval differently at the same moment; then act; then record that the action is done.
    const settled: Approval = verdict === "denied"
      ? { ...approval, status: "denied", decidedBy: approver, decidedAt: now, ...(reason && { reason }) }
      : { ...approval, approvals, status: "approved", decidedBy: approver, decidedAt: now };
    const claimed = await this.claim(key, revision, settled);
    let held: string | undefined;
    try {
      held = await this.act(key, settled);
    } catch (err) {
      await this.unclaim(key, claimed, approval); // pending again: the approver's retry (or the sweep) completes it
      throw err;
    }
    if (held !== undefined) {
      // Approved, not granted: the claim stays unacted, marked held, and the sweep grants it once the pause is lifted.
      await this.approvals.update(key, JSON.stringify({ ...settled, heldBy: held } satisfies Approval), claimed).catch((err: unknown) => {
        deps.log.warn({ err, eventId }, "a held grant could not be marked; the sweep grants it 30 s after the pause is lifted");
      });
      deps.log.info({ eventId, capability: approval.capability, held }, "approved; grant held by a kill switch");
      return { status: "approved", granted: false, approvals: approvals.length, required: approval.required, held, ...flag };
    }
    await this.record(key, claimed, { ...settled, actedAt: new Date().toISOString() });
    return verdict === "denied"
      ? { status: "denied", granted: false }
      : { status: "approved", granted: true, approvals: approvals.length, required: approval.required, ...flag };
  }

  /** Moves a pending approval to its settled status; CW_ERR_NO_PENDING_APPROVAL naming what it is now when someone else moved it first. */
  private async claim(key: string, revision: number, settled: Approval): Promise<number> {
    try {
      return await this.approvals.update(key, JSON.stringify(settled), revision);
    } catch {
      const now = await this.approvals.get(key);
      const status = now?.operation === "PUT" ? now.json<Approval>().status : "gone";
      throw new CausewayError(ErrorCode.NoPendingApproval, status === "pending"
        ? `the approval of ${settled.eventId} changed at the same moment (another approval); try again`
        : `the approval of ${settled.eventId} is already ${status}`);
    }
  }

  /** Back to pending after a failed action (best effort: if this fails too, the sweep finishes the claim later). */
  private async unclaim(key: string, claimed: number, pending: Approval): Promise<void> {
    await this.approvals.update(key, JSON.stringify(pending), claimed).catch((err: unknown) => {
      this.deps.log.warn({ err, eventId: pending.eventId }, "a failed settlement could not be undone; the sweep finishes it");
    });
  }

  /**
   * The action of a settled approval: grant and forward, or quarantine the original. Idempotent. Resolves with
   * why an approved grant is held (a kill switch), in which case nothing was done and the sweep acts later.
   */
  private async act(key: string, settled: Approval): Promise<string | undefined> {
    const { deps } = this;
    if (settled.status === "denied") {
      await this.quarantineOriginal(settled, QuarantineReason.PolicyDenied, `denied by ${settled.decidedBy}${settled.reason ? `: ${settled.reason}` : ""}`, ErrorCode.PolicyVerdict);
      return undefined;
    }
    if (settled.status === "expired") {
      const abandoned = settled.workExpiresAt !== undefined && Date.parse(settled.workExpiresAt) <= Date.parse(settled.decidedAt ?? new Date().toISOString());
      const expired = decisionEvent(DecisionKind.Approval, {
        eventId: settled.eventId, coreDigest: settled.coreDigest, verdict: "expired", approver: deps.principal, via: "deadline",
        reason: abandoned ? `cancelled: the work expired at ${settled.workExpiresAt} before a decision` : `no decision by ${settled.deadline}`,
      }, { principal: deps.principal, key: deps.key, about: { id: settled.eventId, source: settled.eventSource, extensions: { correlationid: settled.correlationId } }, idKey: `approval-expired/${settled.eventId}` });
      await publishDecision(deps.js, DecisionKind.Approval, expired, undefined, deps);
      if (abandoned) {
        await this.quarantineOriginal(settled, QuarantineReason.Expired, `approval cancelled: the work expired at ${settled.workExpiresAt}`, ErrorCode.Expired);
      } else {
        await this.quarantineOriginal(settled, QuarantineReason.ApprovalTimeout, `no approval by ${settled.deadline} (${settled.approvals.length} of ${settled.required})`, ErrorCode.ApprovalTimeout);
      }
      return undefined;
    }
    const held = this.paused(settled.capability);
    if (held) return held;
    const original = await deps.jsm.streams.getMessage("MESH_HANDOFF", { seq: settled.handoffSeq });
    if (!original) throw new CausewayError(ErrorCode.QuarantineNotFound, `the original of ${settled.eventId} is no longer in MESH_HANDOFF (seq ${settled.handoffSeq})`);
    const event = NatsBinding.toEvent({ headers: original.header, data: original.data });
    const [capability, v] = settled.capability.split(".") as [string, string];
    const policy = deps.policy.policy().of(capability, Number(v.slice(1)));
    if (!policy) throw new CausewayError(ErrorCode.UnknownCapability, `${settled.capability} has no policy any more`);
    await this.grant(key, policy, event, settled.coreDigest, { subject: original.subject, seq: original.seq, headers: original.header, data: original.data }, settled.approvals.map((a) => a.approver));
    return undefined;
  }

  /**
   * Records that a claimed settlement's action is done. A compare-and-set conflict means a peer coordinator
   * finished the same claim (its actions are the same, and idempotent). Logged, not an error.
   */
  private async record(key: string, revision: number, settled: Approval): Promise<void> {
    await this.approvals.update(key, JSON.stringify(settled), revision).catch((err: unknown) => {
      this.deps.log.warn({ err, eventId: settled.eventId, status: settled.status }, "approval already changed by a peer; its action is idempotent");
    });
  }

  /** Pending approvals, oldest deadline first. */
  async pending(): Promise<Approval[]> {
    const out: Approval[] = [];
    for await (const key of await this.approvals.keys()) {
      const e = await this.approvals.get(key);
      if (e?.operation === "PUT") {
        const a = e.json<Approval>();
        if (a.status === "pending") out.push(a);
      }
    }
    return out.sort((a, b) => a.deadline.localeCompare(b.deadline));
  }

  /**
   * Ends every pending approval whose time is up: past its deadline (approval_timeout), or abandoned because the
   * work itself expired — its flow has ended and nobody can use the result (expired). Each gets a signed
   * decision, then the work is quarantined.
   */
  async expireDue(now = Date.now()): Promise<void> {
    for await (const key of await this.approvals.keys()) {
      // One approval that cannot be settled now must not hold up the others: logged, retried next sweep.
      await this.sweepOne(key, now).catch((err: unknown) => this.deps.log.error({ err, key }, "approval sweep failed for this approval; retried next sweep"));
    }
  }

  private async sweepOne(key: string, now: number): Promise<void> {
    const e = await this.approvals.get(key);
    if (!e || e.operation !== "PUT") return;
    const approval = e.json<Approval>();
    if (approval.status !== "pending") {
      // Claimed, never acted, and long enough ago that its coordinator is gone: finish it (idempotent).
      // A grant held by a kill switch is given as soon as the pause is lifted.
      const heldBefore = approval.status === "approved" && this.paused(approval.capability) === undefined && approval.heldBy !== undefined;
      if (approval.decidedAt !== undefined && approval.actedAt === undefined && (heldBefore || Date.parse(approval.decidedAt) + STUCK_CLAIM_MS <= now)) {
        if ((await this.act(key, approval)) !== undefined) return; // still paused
        await this.record(key, e.revision, { ...approval, actedAt: new Date(now).toISOString() });
        this.deps.log.warn({ eventId: approval.eventId, status: approval.status }, "finished a settlement a coordinator left undone");
      }
      return;
    }
    if (approval.producerRevoked === undefined) {
      // The producer's key revoked while its work waits: flag it, so approvers see it (causeway approvals).
      const revoked = await this.producerRevocation(approval);
      if (revoked !== undefined) {
        await this.approvals.update(key, JSON.stringify({ ...approval, producerRevoked: revoked } satisfies Approval), e.revision).then(
          () => this.deps.log.warn({ eventId: approval.eventId, capability: approval.capability, ...revoked }, "the producer's key was revoked while its work waits for approval: flagged"),
          (err: unknown) => {
            if (!isWrongRevision(err)) throw err; // reported by the sweep, retried next sweep
            // changed at the same moment (a vote, a peer): the next sweep looks again
          },
        );
        return;
      }
    }
    const abandoned = approval.workExpiresAt !== undefined && Date.parse(approval.workExpiresAt) <= now;
    if (!abandoned && Date.parse(approval.deadline) > now) return;
    if (!abandoned && !approval.escalated && (await this.escalate(key, e.revision, approval, now))) return;
    // Claimed before acting, as approvals are: an approval landing now finds it expired, not pending.
    const settled: Approval = { ...approval, status: "expired", decidedBy: this.deps.principal, decidedAt: new Date(now).toISOString() };
    let claimed: number;
    try {
      claimed = await this.approvals.update(key, JSON.stringify(settled), e.revision);
    } catch {
      return; // an approval or a peer got there first; the next sweep looks again
    }
    try {
      await this.act(key, settled);
    } catch (err) {
      await this.unclaim(key, claimed, approval); // pending again: the next sweep retries
      throw err;
    }
    await this.record(key, claimed, { ...settled, actedAt: new Date().toISOString() });
    this.deps.log.warn({ eventId: approval.eventId, capability: approval.capability, abandoned }, "approval ended without a decision; work quarantined");
  }

  /**
   * The first deadline of a capability whose policy says "escalate": more approvers, a new deadline, and a new
   * signed approval request. Returns false when the policy does not escalate (the caller quarantines).
   */
  private async escalate(key: string, revision: number, approval: Approval, now: number): Promise<boolean> {
    const [capability, v] = approval.capability.split(".") as [string, string];
    const policy = this.deps.policy.policy().of(capability, Number(v.slice(1)));
    if (policy?.onDeadline !== "escalate" || !policy.escalation) return false;
    const approvers = [...new Set([...approval.approvers, ...policy.escalation.approvers])];
    const deadline = new Date(now + policy.escalation.deadlineMs).toISOString();
    // Announced before it is recorded: if the publish fails the approval stays unescalated and the next sweep
    // tries again (the same id: a repeat is one request), instead of widening it with nobody told.
    const requested = decisionEvent(DecisionKind.ApprovalRequested, {
      eventId: approval.eventId, eventSource: approval.eventSource, coreDigest: approval.coreDigest, capability: approval.capability,
      required: approval.required, approvers, deadline, summary: `escalated: no decision by ${approval.deadline}`,
    }, { principal: this.deps.principal, key: this.deps.key, about: { id: approval.eventId, source: approval.eventSource, extensions: { correlationid: approval.correlationId } }, idKey: `approval-escalated/${approval.eventId}` });
    await publishDecision(this.deps.js, DecisionKind.ApprovalRequested, requested, undefined, this.deps);
    try {
      await this.approvals.update(key, JSON.stringify({ ...approval, approvers, deadline, escalated: true } satisfies Approval), revision);
    } catch {
      return true; // a peer coordinator escalated it (or an approval landed): nothing more to do now
    }
    this.deps.log.warn({ eventId: approval.eventId, approvers, deadline }, "approval escalated");
    return true;
  }

  /** The revocation of the key that signed `approval`'s work, when the trust store has one. */
  private async producerRevocation(approval: Approval): Promise<ProducerRevocation | undefined> {
    let keyid = approval.producerKeyId;
    if (keyid === undefined) {
      // A record from before producerKeyId: the signer of the original in MESH_HANDOFF.
      // Gone (null): nothing to forward either. A read that fails throws, so the check never fails open.
      const original = await this.deps.jsm.streams.getMessage(StreamName.Handoff, { seq: approval.handoffSeq });
      if (!original) return undefined;
      try {
        keyid = this.deps.trust.verify(NatsBinding.toEvent({ headers: original.header, data: original.data }), { receivedAt: "forwarded" }).verification.keyid;
      } catch {
        return undefined; // it no longer verifies at all: the critical agent refuses it if it is ever forwarded
      }
    }
    const e = this.deps.trust.entry(keyid);
    if (e?.revokedAt === undefined) return undefined;
    return { keyid, principal: e.principal, revokedAt: formatTime(e.revokedAt), ...(e.revocationReason !== undefined && { reason: e.revocationReason }) };
  }

  private async findApproval(eventId: string): Promise<{ key: string; revision: number; approval: Approval } | undefined> {
    for await (const key of await this.approvals.keys()) {
      const e = await this.approvals.get(key);
      if (e?.operation === "PUT") {
        const approval = e.json<Approval>();
        if (approval.eventId === eventId) return { key, revision: e.revision, approval };
      }
    }
    return undefined;
  }

  private async quarantineOriginal(approval: Approval, reason: QuarantineReasonValue, detail: string, code: string): Promise<void> {
    const original = await this.deps.jsm.streams.getMessage("MESH_HANDOFF", { seq: approval.handoffSeq });
    if (!original) return; // aged out of the stream; the decision event records what happened
    const capability = approval.capability.split(".")[0]!;
    await publishQuarantineCopy(this.deps.js, { subject: original.subject, stream: "MESH_HANDOFF", seq: original.seq, consumer: "", headers: original.header, data: original.data },
      this.deps.subjects.quarantine(reason, capability), { reason, detail, code, detectedBy: this.deps.principal }, this.deps);
  }
}

/** Confidence and evidence gates of the policy, on the event's data (`confidence`, `evidence`). */
function gateVerdict(policy: CapabilityPolicy, event: CloudEvent): { reason: QuarantineReasonValue; detail: string } | undefined {
  const gates = policy.gates;
  if (!gates || (gates.minConfidence === undefined && !gates.requireEvidence)) return undefined;
  let data: { confidence?: unknown; evidence?: unknown };
  try {
    data = dataJson<typeof data>(event);
  } catch {
    return { reason: QuarantineReason.SchemaViolation, detail: "data is not JSON, so the policy's gates cannot be checked" };
  }
  if (gates.requireEvidence && !(Array.isArray(data.evidence) && data.evidence.length > 0)) {
    return { reason: QuarantineReason.MissingEvidence, detail: `${policy.ref} requires evidence` };
  }
  if (gates.minConfidence !== undefined && !(typeof data.confidence === "number" && data.confidence >= gates.minConfidence)) {
    return { reason: QuarantineReason.LowConfidence, detail: `confidence ${String(data.confidence)} is below ${gates.minConfidence}` };
  }
  return undefined;
}

function summarize(event: CloudEvent): string {
  const text = dataText(event);
  return `${event.type} from ${event.source}: ${text.length > 300 ? text.slice(0, 297) + "…" : text}`;
}

/** The approver of a per-caller request: the last token of mesh.ctl.coordinator.<approve|deny>.<approver>. */
function callerOf(subject: string): string {
  return subject.split(".").at(-1)!;
}

/** Why a handoff's data is not valid under its own dataschema (unknown, not JSON, or violating it); undefined when it is. */
function schemaProblem(schemas: SchemaRegistry, event: CloudEvent): { reason: QuarantineReasonValue; detail: string; code: string } | undefined {
  if (event.dataschema === undefined || !schemas.has(event.dataschema)) {
    return { reason: QuarantineReason.UnsupportedVersion, detail: `no schema ${String(event.dataschema)} is registered to check its data against`, code: ErrorCode.UnsupportedVersion };
  }
  let data: unknown;
  try {
    data = dataJson(event);
  } catch (err) {
    return { reason: QuarantineReason.DecodeError, detail: `data is not JSON: ${(err as Error).message}`, code: ErrorCode.DecodeJson };
  }
  try {
    schemas.validate(event.dataschema, data);
  } catch (err) {
    return { reason: QuarantineReason.SchemaViolation, detail: (err as Error).message, code: ErrorCode.SchemaViolation };
  }
  return undefined;
}
