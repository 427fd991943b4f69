// Reads one flow (every event sharing a correlation id) back from the mesh's streams, verifies each event
// against the trust store, and renders the causal tree: agent, event type, key id, verification, time per
// step (JetStream's timestamps, parent to child), and the quarantined inputs with their reasons.
import { DeliverPolicy, jetstream, type JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  NatsBinding, QuarantineHeader, StreamName, correlationIdOf, dataJson, type CloudEvent, type TrustStore,
} from "../kit/index.ts";

/** One event of a flow. */
export interface FlowNode {
  readonly event: CloudEvent;
  /** The signer's principal, or undefined when the event did not verify. */
  readonly principal: string | undefined;
  readonly keyid: string | undefined;
  readonly verified: boolean;
  readonly problem?: string;
  readonly stream: string;
  readonly subject: string;
  readonly seq: number;
  /** When JetStream stored it, in ms. */
  readonly storedAt: number;
  /** Set when the event was quarantined (the reason headers of its quarantine copy). */
  quarantine?: { reason: string; detail: string; detectedBy: string };
  readonly children: FlowNode[];
}

/** Collects the flow of `correlationId` from the work, event and quarantine streams, as a forest. */
export async function collectFlow(nc: NatsConnection, trust: TrustStore, correlationId: string): Promise<FlowNode[]> {
  const nodes = new Map<string, FlowNode>();
  const quarantined: { id: string; note: NonNullable<FlowNode["quarantine"]> }[] = [];
  for (const stream of [StreamName.Cap, StreamName.Handoff, StreamName.Evt, StreamName.Decision, StreamName.Quarantine]) {
    for (const msg of await readMessages(nc, stream)) {
      let event: CloudEvent;
      try {
        event = NatsBinding.toEvent(msg);
      } catch {
        continue; // not an event of any flow
      }
      if (correlationIdOf(event) !== correlationId) continue; // a root event belongs to the flow it starts
      if (stream === StreamName.Quarantine) {
        const h = (name: string) => msg.headers?.get(name) ?? "";
        quarantined.push({ id: event.id, note: { reason: h(QuarantineHeader.Reason), detail: h(QuarantineHeader.Detail), detectedBy: h(QuarantineHeader.DetectedBy) } });
        continue;
      }
      if (nodes.has(event.id)) continue;
      let principal: string | undefined, keyid: string | undefined, problem: string | undefined, verified = false;
      try {
        // As the services check it: the signer as of when the mesh received the message.
        const v = trust.verifyMessage(msg, { event });
        ({ principal, keyid } = v.entry);
        event = v.event;
        verified = true;
      } catch (err) {
        problem = (err as Error).message;
      }
      nodes.set(event.id, { event, principal, keyid, verified, ...(problem && { problem }), stream, subject: msg.subject, seq: msg.seq, storedAt: msg.info.timestampNanos / 1e6, children: [] });
    }
  }
  for (const q of quarantined) {
    const node = nodes.get(q.id);
    if (node) node.quarantine = q.note;
  }
  const roots: FlowNode[] = [];
  for (const node of nodes.values()) {
    const parent = nodes.get(String(node.event.extensions.causationid ?? ""));
    (parent ? parent.children : roots).push(node);
  }
  const byTime = (a: FlowNode, b: FlowNode) => a.storedAt - b.storedAt;
  const sort = (list: FlowNode[]) => { list.sort(byTime); for (const n of list) sort(n.children); };
  sort(roots);
  return roots;
}

/** Renders the forest as an indented tree, one line per event (plus one per quarantine). */
export function renderFlow(roots: readonly FlowNode[]): string {
  const lines: string[] = [];
  const walk = (node: FlowNode, parent: FlowNode | undefined, indent: string, last: boolean, root: boolean) => {
    const branch = root ? "" : last ? "└─ " : "├─ ";
    const step = parent ? `+${formatMs(node.storedAt - parent.storedAt)}` : "";
    const who = `${(node.principal ?? "?").padEnd(14)} ${node.keyid ? node.keyid.slice(0, 8) + "…" : "-".padEnd(9)}`;
    const check = node.verified ? "✓ verified" : `✗ ${node.problem ?? "not verified"}`;
    lines.push(`${indent}${branch}${label(node).padEnd(Math.max(1, 46 - indent.length - branch.length))} ${who}  ${check.padEnd(10)}  ${step.padStart(8)}${summary(node)}`);
    const childIndent = root ? indent : indent + (last ? "   " : "│  ");
    if (node.quarantine) {
      const q = node.quarantine;
      lines.push(`${childIndent}${node.children.length ? "├─ " : "└─ "}✗ quarantined by ${q.detectedBy}: ${q.reason} — ${q.detail}`);
    }
    node.children.forEach((child, i) => walk(child, node, childIndent, i === node.children.length - 1, false));
  };
  roots.forEach((r) => walk(r, undefined, "", true, true));
  return lines.join("\n");
}

/** The event type, plus where it went when it was work for a capability (`→ publish.v1`). */
function label(node: FlowNode): string {
  const m = /^[^.]+\.(?:cap|handoff)\.([a-z0-9_-]+)\.(v\d+)$/.exec(node.subject);
  return m ? `${node.event.type} → ${m[1]}.${m[2]}` : node.event.type;
}

function summary(node: FlowNode): string {
  if (node.event.type !== "report.published") return "";
  try {
    const r = dataJson<{ complete: boolean; findingsCount: number }>(node.event);
    return `   (${r.complete ? "complete" : "partial: deadline passed"}, ${r.findingsCount} findings)`;
  } catch {
    return "";
  }
}

function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.max(0, ms).toFixed(0)} ms`;
}

/** Every message currently in `stream` (optionally only those on `subject`, wildcards allowed), in order. */
export async function readMessages(nc: NatsConnection, stream: string, subject?: string): Promise<JsMsg[]> {
  const out: JsMsg[] = [];
  for await (const m of streamMessages(nc, stream, subject === undefined ? {} : { subjects: [subject] })) out.push(m);
  return out;
}

/** Which messages {@link streamMessages} reads. */
export interface StreamReadOptions {
  /** Only messages on these subjects (wildcards allowed). Default: all. */
  readonly subjects?: readonly string[];
  /** Only messages the stream stored at or after this time. */
  readonly since?: Date;
}

/** How many messages one fetch asks for: a long stream is read in bounded batches, never held whole. */
const READ_BATCH = 256;

/**
 * The messages `stream` holds now (what arrives after the read began is not waited for), in order, through an
 * ordered consumer read in batches: the caller keeps what it needs as it goes.
 */
export async function* streamMessages(nc: NatsConnection, stream: string, opts: StreamReadOptions = {}): AsyncGenerator<JsMsg> {
  const consumer = await jetstream(nc).consumers.get(stream, {
    ...(opts.subjects !== undefined && { filter_subjects: [...opts.subjects] }),
    ...(opts.since !== undefined && { deliver_policy: DeliverPolicy.StartTime, opt_start_time: opts.since.toISOString() }),
  });
  const pending = (await consumer.info()).num_pending;
  let read = 0;
  while (read < pending) {
    let got = 0;
    for await (const m of await consumer.fetch({ max_messages: Math.min(READ_BATCH, pending - read), expires: 5_000 })) {
      got++;
      read++;
      yield m;
      if (read === pending) break;
    }
    if (got === 0) return; // removed meanwhile (limits, a purge): what is left is all there is
  }
}
