// Messaging spans following the OpenTelemetry messaging semantic conventions: a `send <subject>` producer
// span per published event and a `process <subject>` consumer span per handled one. The trace travels
// inside the signed event, as CloudEvents' distributed-tracing extensions (`traceparent`, `tracestate`),
// so a process span continues the producer's trace and links to it, whatever the NATS headers say.
// Only @opentelemetry/api is used: with no SDK registered (telemetry.ts exports nothing) every function
// returns a shared no-op span and costs almost nothing.
import {
  INVALID_SPAN_CONTEXT, ProxyTracer, ROOT_CONTEXT, SpanKind, SpanStatusCode, context, createTraceState, isSpanContextValid, trace,
} from "@opentelemetry/api";
import type { Attributes, Context, Span, SpanContext, Tracer } from "@opentelemetry/api";
import { ContextExtension, parseTraceparent } from "./context.ts";
import type { ExtensionValue } from "./event.ts";

/** Instrumentation scope of Causeway's spans. */
export const TRACER_NAME = "causeway";

/**
 * Span attribute names. The messaging and CloudEvents names are the semantic conventions' own (still
 * "development" status there, hence copied rather than imported); `causeway.*` are ours.
 */
export const SpanAttribute = {
  MessagingSystem: "messaging.system",
  OperationType: "messaging.operation.type",
  OperationName: "messaging.operation.name",
  DestinationName: "messaging.destination.name",
  MessageId: "messaging.message.id",
  ConsumerGroupName: "messaging.consumer.group.name",
  EventId: "cloudevents.event_id",
  EventType: "cloudevents.event_type",
  EventSource: "cloudevents.event_source",
  /** JetStream delivery attempt of the processed message, from 1. */
  DeliveryCount: "causeway.delivery_count",
  ErrorType: "error.type",
} as const;

/** `messaging.operation.type` values. */
export const MessagingOperation = {
  Send: "send",
  Receive: "receive",
  Process: "process",
} as const;

/** One of the `messaging.operation.type` values. */
export type MessagingOperationValue = (typeof MessagingOperation)[keyof typeof MessagingOperation];

/** What a span needs of an event: a CloudEvent fits. */
export interface TracedEvent {
  readonly id: string;
  readonly type: string;
  readonly source: string;
  readonly extensions?: Readonly<Record<string, ExtensionValue>>;
}

/** How the processed message reached us. */
export interface ProcessSpanOptions {
  /** The durable consumer (`messaging.consumer.group.name`). */
  consumer: string;
  /** JetStream delivery attempt, from 1. */
  deliveryCount: number;
}

// Returned whenever no SDK is registered: non-recording, invalid context, so traceparentOf() is undefined.
const NOOP_SPAN: Span = trace.wrapSpanContext(INVALID_SPAN_CONTEXT);

/**
 * Starts the consumer span for handling `event` received on `subject`. Its parent is the producer's
 * context from the event's signed `traceparent` / `tracestate`, and it links to that context too; an
 * event without a valid traceparent starts a new trace. End it with {@link endSpan}.
 */
export function startProcessSpan(subject: string, event: TracedEvent, opts: ProcessSpanOptions): Span {
  const tracer = registeredTracer();
  if (tracer === undefined) return NOOP_SPAN;
  const producer = remoteSpanContext(event.extensions);
  const attributes: Attributes = {
    [SpanAttribute.MessagingSystem]: "nats",
    [SpanAttribute.OperationType]: MessagingOperation.Process,
    [SpanAttribute.OperationName]: MessagingOperation.Process,
    [SpanAttribute.DestinationName]: subject,
    [SpanAttribute.MessageId]: event.id,
    [SpanAttribute.ConsumerGroupName]: opts.consumer,
    [SpanAttribute.EventId]: event.id,
    [SpanAttribute.EventType]: event.type,
    [SpanAttribute.EventSource]: event.source,
    [SpanAttribute.DeliveryCount]: opts.deliveryCount,
  };
  if (producer === undefined) {
    return started(tracer.startSpan(`process ${subject}`, { kind: SpanKind.CONSUMER, attributes }, ROOT_CONTEXT), undefined);
  }
  const parent = trace.setSpanContext(ROOT_CONTEXT, producer);
  return started(tracer.startSpan(`process ${subject}`, { kind: SpanKind.CONSUMER, attributes, links: [{ context: producer }] }, parent), producer);
}

/**
 * Starts the producer span for publishing `event` on `subject`, as a child of `parent` (typically the
 * process span of the input) or else of the active context. Start it before building the event's trace
 * context: put `traceparentOf(span) ?? childTraceparent(input traceparent)` into the output, then sign.
 */
export function startSendSpan(subject: string, event: TracedEvent, parent?: Span): Span {
  const tracer = registeredTracer();
  if (tracer === undefined) return NOOP_SPAN;
  const ctx: Context = parent !== undefined && isSpanContextValid(parent.spanContext()) ? trace.setSpan(context.active(), parent) : context.active();
  const attributes: Attributes = {
    [SpanAttribute.MessagingSystem]: "nats",
    [SpanAttribute.OperationType]: MessagingOperation.Send,
    [SpanAttribute.OperationName]: MessagingOperation.Send,
    [SpanAttribute.DestinationName]: subject,
    [SpanAttribute.MessageId]: event.id,
    [SpanAttribute.EventId]: event.id,
    [SpanAttribute.EventType]: event.type,
    [SpanAttribute.EventSource]: event.source,
  };
  return started(tracer.startSpan(`send ${subject}`, { kind: SpanKind.PRODUCER, attributes }, ctx), trace.getSpanContext(ctx));
}

/**
 * The W3C `traceparent` of `span`, for the `traceparent` extension of an output event so the next hop
 * continues the trace. Undefined when no SDK is registered: fall back to `childTraceparent` (context.ts).
 */
export function traceparentOf(span: Span): string | undefined {
  const sc = span.spanContext();
  if (!isSpanContextValid(sc)) return undefined;
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

/** The W3C `tracestate` of `span`, when it has one (for the `tracestate` extension). */
export function tracestateOf(span: Span): string | undefined {
  const sc = span.spanContext();
  if (!isSpanContextValid(sc)) return undefined;
  const ts = sc.traceState?.serialize();
  return ts ? ts : undefined;
}

/** Ends `span`; with `err`, first records the exception, sets `error.type` and the ERROR status. */
export function endSpan(span: Span, err?: unknown): void {
  if (err !== undefined && span.isRecording()) {
    const e = err instanceof Error ? err : undefined;
    const code = (e as { code?: unknown } | undefined)?.code;
    span.recordException(e ?? String(err));
    span.setAttribute(SpanAttribute.ErrorType, typeof code === "string" ? code : e?.name ?? "_OTHER");
    span.setStatus({ code: SpanStatusCode.ERROR, message: e?.message ?? String(err) });
  }
  span.end();
}

// The registered SDK's tracer, or undefined while the global provider is the API's no-op proxy. Asked on
// every span (a map lookup in the SDK) rather than cached, so registering or replacing the provider later
// takes effect.
function registeredTracer(): Tracer | undefined {
  const tracer = trace.getTracer(TRACER_NAME);
  return tracer instanceof ProxyTracer ? undefined : tracer;
}

// A no-op tracer hands back its parent's context (or an invalid one) instead of a new span: never let that
// pass for a span of ours, or traceparentOf() would repeat the parent's span id.
function started(span: Span, parent: SpanContext | undefined): Span {
  const sc = span.spanContext();
  return isSpanContextValid(sc) && sc.spanId !== parent?.spanId ? span : NOOP_SPAN;
}

// The producer's span context from the event's trace extensions; undefined when absent or malformed.
function remoteSpanContext(ext: TracedEvent["extensions"]): SpanContext | undefined {
  if (ext === undefined) return undefined;
  const tp = parseTraceparent(ext[ContextExtension.TraceParent]);
  if (tp === undefined) return undefined;
  const ts = ext[ContextExtension.TraceState];
  return {
    traceId: tp.traceId,
    spanId: tp.spanId,
    traceFlags: Number.parseInt(tp.flags, 16),
    isRemote: true,
    ...(typeof ts === "string" && ts.length > 0 && { traceState: createTraceState(ts) }),
  };
}
