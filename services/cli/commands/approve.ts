// `causeway approve|deny <event-id> --as <approver> [--reason text]` and `causeway approvals`: a human
// approver decides on pending critical work. The decision is a decision.approval event signed with the
// approver's own key and sent to the coordinator, which checks the approver against policy and the decision
// against the pending event's exact bytes (core digest), records it, and grants the work when enough approvals
// are in. `approvals` lists what is pending. Work whose producer's key was revoked while it waited is flagged,
// and approving it needs --despite-revocation (CW_ERR_PRODUCER_KEY_REVOKED otherwise).
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  DecisionKind, KvBucket, asUnavailable, connectAs, controlRequest, decisionEvent, isCausewayError, permissionDenied, readSeed, signingKeyFromNkeySeed,
} from "../../kit/index.ts";
import { approve as approveEndpoint, deny as denyEndpoint, describeRevocation, type Approval } from "../../coordinator/contract.ts";
import { parseCommand, usageError } from "../usage.ts";

const USAGE = `usage: causeway approve <event-id> --as <approver> [--reason text] [--despite-revocation] [--server URL]
       causeway deny <event-id> --as <approver> [--reason text] [--server URL]
       causeway approvals --as <approver> [--server URL]

The decision is signed with the approver's own key (<data>/keys/<approver>.nk) and checked by the coordinator
against policy (infra/policy.json) and against the pending event's exact bytes. Work whose producer's key
was revoked after it reached the mesh is approved only with --despite-revocation.`;

const options = {
  as: { type: "string" }, reason: { type: "string" }, server: { type: "string" }, "despite-revocation": { type: "boolean", default: false },
} as const;

/** The approvals in KV causeway_approvals, which approvers may read (they may not ask the coordinator's `approvals`). */
async function pendingApprovals(nc: NatsConnection, who: string): Promise<Approval[]> {
  try {
    const kv = await new Kvm(nc).open(KvBucket.Approvals);
    const out: Approval[] = [];
    for await (const key of await kv.keys()) {
      const e = await kv.get(key);
      if (e?.operation === "PUT") out.push(e.json<Approval>());
    }
    return out;
  } catch (err) {
    // Only approvers may read pending approvals: the server refuses anyone else. During a leader election JetStream
    // does not answer ("jetstream is not enabled"): that passes, so CW_ERR_UNAVAILABLE, retry.
    throw permissionDenied(err, `${who} reading pending approvals (only approver principals may)`) ?? asUnavailable(err) ?? err;
  }
}

/** `causeway approve …` */
export function run(args: string[]): Promise<number> {
  return decide("approve", args);
}

/** `causeway deny …` */
export function deny(args: string[]): Promise<number> {
  return decide("deny", args);
}

async function decide(command: "approve" | "deny", args: string[]): Promise<number> {
  const parsed = parseCommand(command, USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  if (positionals.length !== 1) return usageError(command, USAGE, "name exactly one event id");
  if (!values.as) return usageError(command, USAGE, "--as <approver> is required: the decision is signed with that approver's key");
  const eventId = positionals[0]!;
  const approver = values.as;
  const nc = await connectAs(approver, values.server ? { servers: values.server } : {});
  try {
    const pending = (await pendingApprovals(nc, approver)).find((p) => p.eventId === eventId);
    if (!pending) {
      console.error(`causeway ${command}: no approval is known for event ${eventId} (CW_ERR_NO_PENDING_APPROVAL)`);
      return 1;
    }
    const verdict = command === "approve" ? "approved" : "denied";
    const despite = command === "approve" && values["despite-revocation"] === true;
    const decision = decisionEvent(DecisionKind.Approval, {
      eventId, coreDigest: pending.coreDigest, verdict, approver, via: "cli", ...(values.reason && { reason: values.reason }), ...(despite && { despiteRevocation: true }),
    }, { principal: approver, key: signingKeyFromNkeySeed(readSeed(approver)), about: { id: eventId, source: pending.eventSource, extensions: { correlationid: pending.correlationId } }, idKey: `${verdict}/${approver}/${eventId}` });
    let answer;
    try {
      answer = await controlRequest(nc, command === "approve" ? approveEndpoint : denyEndpoint, decision);
    } catch (err) {
      if (!isCausewayError(err)) throw err;
      console.error(`causeway ${command}: ${err.message} (${err.code})`);
      return 1;
    }
    const progress = answer.status !== "denied" ? ` (${answer.approvals} of ${answer.required} approvals)` : "";
    console.log(`✓ ${approver} ${verdict} ${pending.capability} work ${eventId}: ${answer.status}${progress}${answer.granted ? " — granted and forwarded" : "held" in answer ? ` — not granted yet: ${answer.held}; it is granted when the pause is lifted` : ""}`);
    if (answer.producerRevoked) console.log(`  ! approved despite the revocation: ${describeRevocation(answer.producerRevoked)}`);
    console.log(`  decision ${decision.id}, signed ${decision.extensions.dssematerial ? "by " + approver : ""}`);
    return 0;
  } finally {
    await nc.close();
  }
}

/** `causeway approvals --as <approver>`: what is pending. */
export async function list(args: string[]): Promise<number> {
  const parsed = parseCommand("approvals", USAGE, args, options);
  if (parsed.exit !== undefined) return parsed.exit;
  const { values } = parsed;
  if (!values.as) return usageError("approvals", USAGE, "--as <approver> is required");
  const nc = await connectAs(values.as, values.server ? { servers: values.server } : {});
  try {
    const pending = (await pendingApprovals(nc, values.as)).filter((p) => p.status === "pending");
    if (pending.length === 0) {
      console.log("no approvals pending");
      return 0;
    }
    for (const p of pending.sort((a, b) => a.deadline.localeCompare(b.deadline))) {
      console.log(`${p.eventId}  ${p.capability}  ${p.approvals.length}/${p.required} approvals  deadline ${p.deadline}  approvers ${p.approvers.join(", ")}`);
      if (p.producerRevoked) console.log(`  ! ${describeRevocation(p.producerRevoked)}: approve only with --despite-revocation, or deny it`);
    }
    return 0;
  } finally {
    await nc.close();
  }
}
