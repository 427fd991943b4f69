// Decisions: signed events on mesh.decision.<kind> (stream MESH_DECISION: deny_delete, deny_purge). Every
// grant, approval, release, rejection and kill switch is one, so lineage can answer who decided what, when,
// under which key. A decision's id is derived from what it is about, so a retried decision is one event.
import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import { NatsBinding } from "./binding.ts";
import { childTraceparent, deriveEventId, newTraceparent, principalSource } from "./context.ts";
import { createEvent, type CloudEvent } from "./event.ts";
import type { SigningKey } from "./keys.ts";
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

/** Publishes a decision on its subject; the event id is the msgID, so a retry is deduplicated. */
export async function publishDecision(js: JetStreamClient, kind: DecisionKindValue, event: CloudEvent, prefix?: string): Promise<PubAck> {
  const { headers, data } = NatsBinding.binary(event);
  return js.publish(decisionSubjectOf(kind, prefix), data, { headers, msgID: event.id });
}
