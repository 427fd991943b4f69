import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { test } from "node:test";
import type { TestContext } from "node:test";
import { SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { DataPointType } from "@opentelemetry/sdk-metrics";
import type { HistogramMetricData, MetricData, SumMetricData } from "@opentelemetry/sdk-metrics";
// @opentelemetry/sdk-trace is the 3.x successor of sdk-trace-base (TracerProvider = BasicTracerProvider);
// sdk-node pins it, and sdk-trace-base 2.x does not accept @opentelemetry/api 1.10.
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider } from "@opentelemetry/sdk-trace";
import {
  ConfigError, ErrorCode, QuarantineReason, SpanAttribute, createEvent, createLogger, endSpan, eventLogger, parseTraceparent, startProcessSpan, startSendSpan, traceparentOf, tracestateOf,
} from "../../services/kit/index.ts";
import { AgentMetric, AgentMetricAttribute, HANDLER_DURATION_BOUNDARIES_MS, createAgentMetrics, handlerDurationBucket } from "../../services/kit/internal.ts";
import { inMemoryMetrics } from "../metrics-fixture.ts";

const NODE = "node_modules/.bin/node";
const PRODUCER = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" };
const input = createEvent({
  id: "0199a3c4-1b2c-7d3e-8f40-5a6b7c8d9e0f", source: "causeway://planner", type: "research.requested", time: "2026-11-21T10:00:00Z",
  extensions: { traceparent: `00-${PRODUCER.traceId}-${PRODUCER.spanId}-01`, tracestate: "vendor=abc", correlationid: "flow-1" },
  data: "{}",
});
const SUBJECT = "mesh.cap.research.v1";

/** Registers an SDK tracer provider exporting to memory, for this test only. */
function memoryTracing(t: TestContext): InMemorySpanExporter {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  trace.disable();
  assert.ok(trace.setGlobalTracerProvider(provider));
  t.after(async () => {
    trace.disable();
    await provider.shutdown();
  });
  return exporter;
}

test("telemetry - a process span continues the producer's trace from the event's traceparent and links to it", (t) => {
  const exporter = memoryTracing(t);
  endSpan(startProcessSpan(SUBJECT, input, { consumer: "research_v1", deliveryCount: 2 }));
  const [span] = exporter.getFinishedSpans();
  assert.ok(span);
  assert.equal(span.name, `process ${SUBJECT}`);
  assert.equal(span.kind, SpanKind.CONSUMER);
  assert.equal(span.spanContext().traceId, PRODUCER.traceId);
  assert.notEqual(span.spanContext().spanId, PRODUCER.spanId);
  assert.equal(span.parentSpanContext?.spanId, PRODUCER.spanId);
  assert.equal(span.parentSpanContext?.isRemote, true);
  assert.equal(span.links.length, 1);
  assert.equal(span.links[0]!.context.traceId, PRODUCER.traceId);
  assert.equal(span.links[0]!.context.spanId, PRODUCER.spanId);
  assert.equal(span.spanContext().traceState?.serialize(), "vendor=abc");
});

test("telemetry - a process span carries the messaging and CloudEvents attributes", (t) => {
  const exporter = memoryTracing(t);
  endSpan(startProcessSpan(SUBJECT, input, { consumer: "research_v1", deliveryCount: 2 }));
  assert.deepEqual(exporter.getFinishedSpans()[0]!.attributes, {
    "messaging.system": "nats",
    "messaging.operation.type": "process",
    "messaging.operation.name": "process",
    "messaging.destination.name": SUBJECT,
    "messaging.message.id": input.id,
    "messaging.consumer.group.name": "research_v1",
    "cloudevents.event_id": input.id,
    "cloudevents.event_type": "research.requested",
    "cloudevents.event_source": "causeway://planner",
    "causeway.delivery_count": 2,
  });
});

test("telemetry - an event without a valid traceparent starts a new trace without links", (t) => {
  const exporter = memoryTracing(t);
  for (const traceparent of [undefined, "00-garbage", `00-${"0".repeat(32)}-${PRODUCER.spanId}-01`]) {
    const event = createEvent({ id: "e1", source: "causeway://gateway", type: "t", ...(traceparent !== undefined && { extensions: { traceparent } }) });
    endSpan(startProcessSpan(SUBJECT, event, { consumer: "c", deliveryCount: 1 }));
  }
  const spans = exporter.getFinishedSpans();
  assert.equal(spans.length, 3);
  for (const span of spans) {
    assert.equal(span.parentSpanContext, undefined);
    assert.equal(span.links.length, 0);
    assert.notEqual(span.spanContext().traceId, PRODUCER.traceId);
  }
});

test("telemetry - a send span is a child of the process span and its traceparent round-trips through parseTraceparent", (t) => {
  const exporter = memoryTracing(t);
  const processSpan = startProcessSpan(SUBJECT, input, { consumer: "research_v1", deliveryCount: 1 });
  const output = { id: "0199a3c4-aaaa-8bbb-8ccc-000000000001", type: "research.completed", source: "causeway://researcher" };
  const send = startSendSpan("mesh.evt.research.completed", output, processSpan);
  const traceparent = traceparentOf(send);
  endSpan(send);
  endSpan(processSpan);

  const parsed = parseTraceparent(traceparent);
  assert.ok(parsed, traceparent);
  assert.equal(parsed.traceId, PRODUCER.traceId);
  assert.equal(parsed.spanId, send.spanContext().spanId);
  assert.equal(parsed.flags, "01");
  assert.equal(tracestateOf(send), "vendor=abc");

  const span = exporter.getFinishedSpans().find((s) => s.name === "send mesh.evt.research.completed");
  assert.ok(span);
  assert.equal(span.kind, SpanKind.PRODUCER);
  assert.equal(span.parentSpanContext?.spanId, processSpan.spanContext().spanId);
  assert.equal(span.attributes[SpanAttribute.OperationType], "send");
  assert.equal(span.attributes[SpanAttribute.DestinationName], "mesh.evt.research.completed");
  assert.equal(span.attributes[SpanAttribute.MessageId], output.id);
  assert.equal(span.attributes[SpanAttribute.EventType], "research.completed");
});

test("telemetry - endSpan with an error records the exception and sets status ERROR", (t) => {
  const exporter = memoryTracing(t);
  const span = startProcessSpan(SUBJECT, input, { consumer: "c", deliveryCount: 1 });
  endSpan(span, new ConfigError(ErrorCode.Config, "model endpoint refused"));
  const done = exporter.getFinishedSpans()[0]!;
  assert.equal(done.status.code, SpanStatusCode.ERROR);
  assert.equal(done.status.message, "model endpoint refused");
  assert.equal(done.attributes[SpanAttribute.ErrorType], ErrorCode.Config);
  const exception = done.events.find((e) => e.name === "exception");
  assert.ok(exception);
  assert.equal(exception.attributes?.["exception.message"], "model endpoint refused");
  assert.equal(exception.attributes?.["exception.type"], ErrorCode.Config);
});

test("telemetry - endSpan without an error leaves the status unset", (t) => {
  const exporter = memoryTracing(t);
  endSpan(startSendSpan("mesh.evt.x", input));
  const done = exporter.getFinishedSpans()[0]!;
  assert.equal(done.status.code, SpanStatusCode.UNSET);
  assert.equal(done.events.length, 0);
});

test("telemetry - with no tracer provider registered spans are no-ops and traceparentOf is undefined", () => {
  trace.disable();
  const processSpan = startProcessSpan(SUBJECT, input, { consumer: "c", deliveryCount: 1 });
  const send = startSendSpan("mesh.evt.x", input, processSpan);
  assert.equal(processSpan.isRecording(), false);
  assert.equal(traceparentOf(processSpan), undefined);
  assert.equal(traceparentOf(send), undefined);
  assert.equal(tracestateOf(send), undefined);
  endSpan(send, new Error("ignored"));
  endSpan(processSpan);
});

test("telemetry - agent metrics count processed, failed and quarantined inputs and record handler durations", async (t) => {
  const sdk = inMemoryMetrics(t);
  const m = createAgentMetrics({ principal: "researcher", capability: "research", major: 1, version: "1.4.0" });
  m.inFlight(1);
  m.inFlight(1);
  m.handlerDuration(12);
  m.handlerDuration(30);
  m.inFlight(-1);
  m.processed();
  m.processed(2);
  m.failed();
  m.quarantined(QuarantineReason.SchemaViolation);
  m.quarantined(QuarantineReason.SchemaViolation);
  m.quarantined(QuarantineReason.LowConfidence);
  const all: MetricData[] = await sdk.collect();
  const metric = (name: string): MetricData => {
    const found = all.find((x) => x.descriptor.name === name);
    assert.ok(found, name);
    return found;
  };
  const base = { [AgentMetricAttribute.Principal]: "researcher", [AgentMetricAttribute.Capability]: "research", [AgentMetricAttribute.Major]: 1, [AgentMetricAttribute.Version]: "1.4.0" };
  const sum = (name: string): SumMetricData["dataPoints"] => (metric(name) as SumMetricData).dataPoints;

  assert.deepEqual(sum(AgentMetric.Processed).map((p) => [p.attributes, p.value]), [[base, 3]]);
  assert.deepEqual(sum(AgentMetric.Failed).map((p) => [p.attributes, p.value]), [[base, 1]]);
  assert.deepEqual(sum(AgentMetric.InFlight).map((p) => p.value), [1]);
  const byReason = Object.fromEntries(sum(AgentMetric.Quarantined).map((p) => [p.attributes[AgentMetricAttribute.Reason], p.value]));
  assert.deepEqual(byReason, { schema_violation: 2, low_confidence: 1 });
  assert.deepEqual(sum(AgentMetric.Quarantined).find((p) => p.value === 2)!.attributes, { ...base, reason: "schema_violation" });

  const histogram = metric(AgentMetric.HandlerDuration) as HistogramMetricData;
  assert.equal(histogram.dataPointType, DataPointType.HISTOGRAM);
  assert.equal(histogram.descriptor.unit, "ms");
  const point = histogram.dataPoints[0]!;
  assert.deepEqual(point.attributes, base);
  assert.equal(point.value.count, 2);
  assert.equal(point.value.sum, 42);
  assert.equal(point.value.min, 12);
  assert.equal(point.value.max, 30);
  // The heartbeat's bucket counts (AgentStats.handlerBuckets) use the histogram's own bounds.
  assert.deepEqual(point.value.buckets.boundaries, [...HANDLER_DURATION_BOUNDARIES_MS]);
  assert.deepEqual([0.5, 1, 1.01, 12, 300_000, 300_001].map(handlerDurationBucket), [0, 0, 1, 4, HANDLER_DURATION_BOUNDARIES_MS.length - 1, HANDLER_DURATION_BOUNDARIES_MS.length]);
});

/** A pino destination that keeps each line, parsed. */
function lineCapture(): { stream: Writable; lines: Record<string, unknown>[]; text: () => string } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString("utf8"));
      callback();
    },
  });
  return {
    stream,
    get lines() {
      return chunks.join("").split("\n").filter((l) => l.length > 0).map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    text: () => chunks.join(""),
  };
}

test("telemetry - an event logger puts event_id, correlation_id, trace_id and span_id on every line", () => {
  const out = lineCapture();
  const root = createLogger({ name: "researcher", level: "debug", pretty: false, destination: out.stream });
  const log = eventLogger(root, { eventId: input.id, correlationId: "flow-1", traceId: PRODUCER.traceId, spanId: PRODUCER.spanId });
  log.debug({ type: input.type }, "handling input");
  log.info("done");
  log.child({ step: "publish" }).warn("slow publish");
  root.info("agent line");

  const lines = out.lines;
  assert.equal(lines.length, 4);
  for (const line of lines.slice(0, 3)) {
    assert.equal(line.event_id, input.id);
    assert.equal(line.correlation_id, "flow-1");
    assert.equal(line.trace_id, PRODUCER.traceId);
    assert.equal(line.span_id, PRODUCER.spanId);
    assert.equal(line.name, "researcher");
  }
  assert.deepEqual(lines.map((l) => l.level), ["debug", "info", "warn", "info"]);
  assert.equal(lines[3]!.event_id, undefined);
});

test("telemetry - an event logger without trace context omits trace_id and span_id", () => {
  const out = lineCapture();
  const log = eventLogger(createLogger({ name: "x", pretty: false, destination: out.stream }), { eventId: "e1", correlationId: "c1" });
  log.info("no trace");
  const [line] = out.lines;
  assert.equal(line!.event_id, "e1");
  assert.equal("trace_id" in line!, false);
  assert.equal("span_id" in line!, false);
});

test("telemetry - seed, secret, token and password are redacted, at the top level and one object down", () => {
  const out = lineCapture();
  const log = createLogger({ name: "x", pretty: false, destination: out.stream });
  log.info({ seed: "SUAEXAMPLESEED", secret: "s", token: "t", password: "p", principal: { name: "researcher", seed: "SUANESTED" } }, "keys loaded");
  eventLogger(log, { eventId: "e1", correlationId: "c1" }).child({ token: "bound" }).info("child");
  const [first, second] = out.lines;
  assert.equal(first!.seed, "[Redacted]");
  assert.equal(first!.secret, "[Redacted]");
  assert.equal(first!.token, "[Redacted]");
  assert.equal(first!.password, "[Redacted]");
  assert.deepEqual(first!.principal, { name: "researcher", seed: "[Redacted]" });
  assert.equal(second!.token, "[Redacted]");
  assert.doesNotMatch(out.text(), /SUA|"bound"/);
});

test("telemetry - the log level comes from LOG_LEVEL, defaults to info, and a bad value names the variable", () => {
  const out = lineCapture();
  createLogger({ name: "x", pretty: false, destination: out.stream }, {}).debug("hidden");
  assert.equal(out.lines.length, 0);
  assert.equal(createLogger({ name: "x", pretty: false, destination: out.stream }, {}).level, "info");
  assert.equal(createLogger({ name: "x", pretty: false, destination: out.stream }, { LOG_LEVEL: "DEBUG" }).level, "debug");
  assert.throws(() => createLogger({ name: "x", destination: out.stream }, { LOG_LEVEL: "verbose" }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, ErrorCode.Config);
    assert.match(err.message, /LOG_LEVEL must be one of .*debug.* \(got "verbose"\)/);
    return true;
  });
});

test("telemetry - CAUSEWAY_LOG_PRETTY=1 prints human-readable lines with the event fields", () => {
  const out = lineCapture();
  const log = eventLogger(createLogger({ name: "researcher", destination: out.stream }, { CAUSEWAY_LOG_PRETTY: "1" }), { eventId: "e1", correlationId: "c1" });
  log.info({ seed: "SUAEXAMPLE" }, "handled");
  const text = out.text();
  assert.match(text, /INFO \(researcher\): handled/);
  assert.match(text, /event_id: "e1"/);
  assert.match(text, /seed: "\[Redacted\]"/);
});

/** Runs node with `args` and only the given environment (plus PATH), to completion. */
async function runNode(args: readonly string[], env: Record<string, string>): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const child = spawn(NODE, args, { env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "", stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const [code, signal] = (await once(child, "close")) as [number | null, string | null];
  return { code, signal, stdout, stderr };
}

test("telemetry - an unreachable OTLP endpoint is never fatal", async () => {
  const r = await runNode(["--import", "./services/kit/telemetry.ts", "-e", "console.log('ok')"], {
    OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9",
  });
  assert.equal(r.stdout, "ok\n", r.stderr);
  assert.equal(r.code, 0, r.stderr);
});

test("telemetry - an unknown exporter is one warning line naming the variable, and the service runs", async () => {
  const r = await runNode(["--import", "./services/kit/telemetry.ts", "-e", "console.log('ok')"], { OTEL_TRACES_EXPORTER: "definitely-not-an-exporter" });
  assert.equal(r.stdout, "ok\n");
  assert.equal(r.code, 0);
  const lines = r.stderr.split("\n").filter((l) => l.length > 0);
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0]!, /^causeway telemetry: warning: OTEL_TRACES_EXPORTER: unknown exporter "definitely-not-an-exporter"/);
});

test("telemetry - configuration: exporters default to none without an endpoint, service name falls back to the principal", async () => {
  const script = `
    import { resolveTelemetryConfig, startTelemetry } from "./services/kit/telemetry.ts";
    const started = await startTelemetry();
    console.log(JSON.stringify({
      started: started.config,
      endpoint: resolveTelemetryConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_METRICS_EXPORTER: "prometheus" }),
      tracesEndpoint: resolveTelemetryConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/v1/traces" }),
      explicit: resolveTelemetryConfig({ OTEL_SERVICE_NAME: "svc", CAUSEWAY_PRINCIPAL: "researcher", OTEL_TRACES_EXPORTER: "console" }),
      resource: resolveTelemetryConfig({ OTEL_RESOURCE_ATTRIBUTES: "service.name=from-resource", CAUSEWAY_PRINCIPAL: "researcher" }),
      disabled: resolveTelemetryConfig({ OTEL_SDK_DISABLED: "true", OTEL_TRACES_EXPORTER: "console" }),
      none: resolveTelemetryConfig({ OTEL_TRACES_EXPORTER: "none,console", OTEL_EXPORTER_OTLP_PROTOCOL: "carrier-pigeon" }),
    }));`;
  const r = await runNode(["--import", "./services/kit/telemetry.ts", "--input-type=module", "-e", script], { CAUSEWAY_PRINCIPAL: "planner" });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, "");
  const c = JSON.parse(r.stdout) as Record<string, { enabled: boolean; serviceName?: string; traces: { exporters: string[] }; metrics: { exporters: string[] }; logs: { exporters: string[] }; warnings: string[] }>;
  const off = { exporters: [] };
  assert.deepEqual(c.started, { enabled: false, serviceName: "planner", traces: off, metrics: off, logs: off, warnings: [] });
  assert.deepEqual([c.endpoint!.traces, c.endpoint!.metrics, c.endpoint!.logs], [{ exporters: ["otlp"] }, { exporters: ["prometheus"] }, { exporters: ["otlp"] }]);
  assert.deepEqual([c.tracesEndpoint!.traces, c.tracesEndpoint!.metrics, c.tracesEndpoint!.enabled], [{ exporters: ["otlp"] }, off, true]);
  assert.equal(c.endpoint!.serviceName, "causeway");
  assert.equal(c.explicit!.serviceName, "svc");
  assert.equal(c.resource!.serviceName, undefined);
  assert.equal(c.disabled!.enabled, false);
  assert.deepEqual(c.none!.traces, off);
  assert.equal(c.none!.warnings.length, 2);
  assert.match(c.none!.warnings.join("\n"), /OTEL_TRACES_EXPORTER: "none" together with other exporters/);
  assert.match(c.none!.warnings.join("\n"), /OTEL_EXPORTER_OTLP_PROTOCOL: unknown protocol "carrier-pigeon"/);
});

test("telemetry - importing it twice starts one SDK", async () => {
  const script = `
    import { trace } from "@opentelemetry/api";
    const a = await import("./services/kit/telemetry.ts");
    const b = await import("./services/kit/telemetry.ts?again");
    console.log(a !== b, (await a.startTelemetry()) === (await b.startTelemetry()), trace.getTracer("t").startSpan("s").isRecording());`;
  const r = await runNode(["--import", "./services/kit/telemetry.ts", "--input-type=module", "-e", script], {
    OTEL_TRACES_EXPORTER: "console", OTEL_LOG_LEVEL: "warn", OTEL_BSP_SCHEDULE_DELAY: "3600000",
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.split("\n")[0], "true true true");
  assert.doesNotMatch(r.stderr, /duplicate registration/i);
});

/** An OTLP/HTTP collector in this process: `next()` resolves with the next request as "<path> <body>". */
async function collector(t: TestContext): Promise<{ endpoint: string; next: () => Promise<string> }> {
  const received: string[] = [];
  const waiting: ((request: string) => void)[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d: string) => (body += d)).on("end", () => {
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
      const request = `${req.url} ${body}`;
      const w = waiting.shift();
      if (w) w(request);
      else received.push(request);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(() => server.close());
  const next = (): Promise<string> => {
    const ready = received.shift();
    return ready !== undefined ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve));
  };
  return { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, next };
}

const SPAN_THEN_IDLE = `
  import { trace } from "@opentelemetry/api";
  trace.getTracer("t").startSpan("span-before-shutdown").end();
  if (process.env.IDLE) { setInterval(() => {}, 1 << 30); console.log("ready"); }`;

test("telemetry - buffered spans are flushed when the process ends on its own", async (t) => {
  const { endpoint, next } = await collector(t);
  const r = runNode(["--import", "./services/kit/telemetry.ts", "--input-type=module", "-e", SPAN_THEN_IDLE], {
    OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${endpoint}/v1/traces`,
    OTEL_BSP_SCHEDULE_DELAY: "3600000",
  });
  const exited = r.then((result) => Promise.reject(new Error(`exited without exporting: ${JSON.stringify(result)}`)));
  assert.match(await Promise.race([next(), exited]), /^\/v1\/traces .*span-before-shutdown/);
  assert.equal((await r).code, 0);
});

test("telemetry - on SIGTERM buffered spans are flushed and the process still ends by the signal", async (t) => {
  const { endpoint, next } = await collector(t);
  const child = spawn(NODE, ["--import", "./services/kit/telemetry.ts", "--input-type=module", "-e", SPAN_THEN_IDLE], {
    env: {
      PATH: process.env.PATH ?? "", IDLE: "1", OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${endpoint}/v1/traces`, OTEL_BSP_SCHEDULE_DELAY: "3600000",
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  t.after(() => child.kill("SIGKILL"));
  const closed = once(child, "close");
  await once(child.stdout.setEncoding("utf8"), "data");
  child.kill("SIGTERM");
  const exited = closed.then((result) => Promise.reject(new Error(`exited without exporting: ${JSON.stringify(result)}`)));
  assert.match(await Promise.race([next(), exited]), /^\/v1\/traces .*span-before-shutdown/);
  const [code, signal] = (await closed) as [number | null, string | null];
  assert.equal(code, null);
  assert.equal(signal, "SIGTERM");
});
