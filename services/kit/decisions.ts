// Decisions: signed events on mesh.decision.<kind> (stream MESH_DECISION: deny_delete, deny_purge). Every
// grant, approval, release, rejection and kill switch is one, so lineage can answer who decided what, when,
// under which key. A decision's id is derived from what it is about, so a retried decision is one event.
import type { JetStreamClient, JetStreamManager, PubAck } from "@nats-io/jetstream";
import { NatsBinding } from "./binding.ts";
import { childTraceparent, deriveEventId, newTraceparent, principalSource } from "./context.ts";
import { createEvent, type CloudEvent } from "./event.ts";
import type { SigningKey } from "./keys.ts";
import { MsgIdKind, confirmDuplicate, msgId, signedWith } from "./msg-ids.ts";
import { decisionSubject } from "./subjects.ts";
import { signEvent } from "./verifiability.ts";

/** The kinds of decision, each with a schema `decision.<kind>`. */
export const DecisionKind = {
  Grant: "grant",
  ApprovalRequested: "approval.requested",
  Approval: "approval",
  Release: "release",
  Rejection: "rejection",
  Switch: "switch",
  /** A version routing change: a rollout's start, step, promotion, pause or rollback; a circuit's change (routing.ts). */
  Rollout: "rollout",
  /** New flows a gateway refused (shed by backpressure, over a tenant's quota), summed up per tenant and interval. */
  Admission: "admission",
} as const;
export type DecisionKindValue = (typeof DecisionKind)[keyof typeof DecisionKind];

/** The `dataschema` of a decision kind. */
export function decisionSchema(kind: DecisionKindValue): string {
  return `https://causeway.dev/schemas/decision.${kind}/1.0.0`;
}

/** The subject a decision kind is published on: `mesh.decision.<kind>` (dots become underscores). */
export function decisionSubjectOf(kind: DecisionKindValue, prefix?: string): string {
  return decisionSubject(kind.replaceAll(".", "_"), prefix);
}

/** What a decision is about: the event it decides on (its context continues into the decision). */
export interface DecisionAbout {
  readonly id: string;
  readonly source: string;
  readonly extensions?: Readonly<Record<string, unknown>>;
}

/** Options for {@link decisionEvent}. */
export interface DecisionOptions {
  /** The deciding principal and its key. */
  principal: string;
  key: SigningKey;
  /** The event decided on; sets causation, correlation and trace. */
  about?: DecisionAbout;
  /** Makes the id stable: the same key gives the same id, so a retried decision is stored once. */
  idKey: string;
  now?: Date;
}

/** Builds and signs a decision event of `kind` with `data` (validated against its schema by consumers). */
export function decisionEvent(kind: DecisionKindValue, data: unknown, opts: DecisionOptions): CloudEvent {
  const source = principalSource(opts.principal);
  const about = opts.about;
  const correlation = about ? String(about.extensions?.correlationid ?? about.id) : undefined;
  const time = (opts.now ?? new Date()).toISOString();
  return signEvent(createEvent({
    id: deriveEventId({ source, id: `decision/${kind}/${opts.idKey}` }, opts.principal, 0),
    source,
    type: `decision.${kind}`,
    time,
    datacontenttype: "application/json",
    dataschema: decisionSchema(kind),
    extensions: {
      emittedat: time, // signed millisecond time for lineage (the digest keeps `time` to the second)
      ...(correlation !== undefined && { correlationid: correlation }),
      ...(about && { causationid: about.id }),
      traceparent: about ? childTraceparent(about.extensions?.traceparent) : newTraceparent(),
    },
    data: JSON.stringify(data),
  }), opts.key);
}

/** Who publishes a decision: the deciding principal and its key, and a reader of MESH_DECISION when it has one. */
export interface DecisionPublisher {
  readonly principal: string;
  readonly key: SigningKey;
  /** Confirms a duplicate ack against the stored decision (the coordinator may read MESH_DECISION). */
  readonly jsm?: JetStreamManager | undefined;
}

/** The message id of a decision: the decider's, for the event's (derived, stable) id. */
export function decisionMsgId(event: Pick<CloudEvent, "id">, by: Pick<DecisionPublisher, "principal" | "key">): string {
  return msgId(by, MsgIdKind.Decision, event.id);
}

/**
 * Publishes a decision on its subject under the decider's message id for the event id, so a retry is
 * deduplicated and nobody else can pre-empt it. A duplicate ack counts only when the stored decision is this
 * event signed with the decider's key (when `by.jsm` can read it back); otherwise CW_ERR_MSG_ID_TAKEN.
 */
export async function publishDecision(js: JetStreamClient, kind: DecisionKindValue, event: CloudEvent, prefix: string | undefined, by: DecisionPublisher): Promise<PubAck> {
  const { headers, data } = NatsBinding.binary(event);
  const subject = decisionSubjectOf(kind, prefix);
  const id = decisionMsgId(event, by);
  const ack = await js.publish(subject, data, { headers, msgID: id });
  if (by.jsm) await confirmDuplicate(by.jsm, ack, id, (stored) => signedWith(stored, subject, event.id, by.key));
  return ack;
}
