// An agent's metrics, through @opentelemetry/api: what it processed, failed and quarantined, how long its
// handler took, how many inputs are in flight. Attributes are built once per agent (and once per
// quarantine reason), so a recording on the hot path allocates nothing.
// The metrics API has no proxy: instruments made before an SDK registers stay no-op for good. telemetry.ts,
// loaded with --import, registers it before any agent starts.
import { ValueType, metrics } from "@opentelemetry/api";
import type { Attributes, Meter } from "@opentelemetry/api";
import type { QuarantineReasonValue } from "./errors.ts";

/** Instrumentation scope of Causeway's metrics. */
export const METER_NAME = "causeway";

/** Metric names. */
export const AgentMetric = {
  Processed: "causeway.agent.processed",
  Failed: "causeway.agent.failed",
  Quarantined: "causeway.agent.quarantined",
  HandlerDuration: "causeway.agent.handler.duration",
  InFlight: "causeway.agent.in_flight",
} as const;

/** Attribute names on every agent metric, plus `reason` on `causeway.agent.quarantined`. */
export const AgentMetricAttribute = {
  Principal: "causeway.principal",
  Capability: "causeway.capability",
  Major: "causeway.capability.major",
  /** The implementation version (semver): two builds of one capability running side by side tell apart. */
  Version: "causeway.agent.version",
  Reason: "reason",
} as const;

/** Who the metrics are about. */
export interface AgentMetricAttributes {
  principal: string;
  capability: string;
  major: number;
  /** The implementation version (the definition's `version`). */
  version: string;
}

/** Recorders for one agent. */
export interface AgentMetrics {
  /** Inputs handled to the end (outputs published, input acked). */
  processed(n?: number): void;
  /** Handler runs that threw (the input is retried or, at the last delivery, quarantined). */
  failed(n?: number): void;
  /** An input sent to quarantine, with the reason. */
  quarantined(reason: QuarantineReasonValue): void;
  /** How long one handler run took, in milliseconds. */
  handlerDuration(ms: number): void;
  /** +1 when a handler run starts, -1 when it ends. */
  inFlight(delta: 1 | -1): void;
}

/**
 * Upper bounds (ms, inclusive) of the handler-duration histogram's buckets; one more bucket holds what is above the
 * last. Handler runs go from sub-millisecond transforms to minute-long model calls. The OTel histogram and the
 * cumulative bucket counts every agent heartbeats (AgentStats.handlerBuckets), from which the coordinator computes
 * windowed percentiles per version, use these same bounds.
 */
export const HANDLER_DURATION_BOUNDARIES_MS: readonly number[] = Object.freeze([1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000]);

/** The bucket of HANDLER_DURATION_BOUNDARIES_MS a duration falls in (as OTel counts: `ms <= bound`); the last index is the overflow. */
export function handlerDurationBucket(ms: number): number {
  const bounds = HANDLER_DURATION_BOUNDARIES_MS;
  let i = 0;
  while (i < bounds.length && ms > bounds[i]!) i++;
  return i;
}

/** The metrics of one agent, on `meter` (default: the global meter provider's `causeway` meter). */
export function createAgentMetrics(attrs: AgentMetricAttributes, meter: Meter = metrics.getMeter(METER_NAME)): AgentMetrics {
  const base: Attributes = Object.freeze({
    [AgentMetricAttribute.Principal]: attrs.principal,
    [AgentMetricAttribute.Capability]: attrs.capability,
    [AgentMetricAttribute.Major]: attrs.major,
    [AgentMetricAttribute.Version]: attrs.version,
  });
  const byReason = new Map<string, Attributes>();
  const processed = meter.createCounter(AgentMetric.Processed, { description: "Inputs handled to the end", unit: "{event}", valueType: ValueType.INT });
  const failed = meter.createCounter(AgentMetric.Failed, { description: "Handler runs that threw", unit: "{event}", valueType: ValueType.INT });
  const quarantined = meter.createCounter(AgentMetric.Quarantined, { description: "Inputs sent to quarantine, by reason", unit: "{event}", valueType: ValueType.INT });
  const duration = meter.createHistogram(AgentMetric.HandlerDuration, {
    description: "Duration of one handler run", unit: "ms", advice: { explicitBucketBoundaries: [...HANDLER_DURATION_BOUNDARIES_MS] },
  });
  const inFlight = meter.createUpDownCounter(AgentMetric.InFlight, { description: "Handler runs in progress", unit: "{event}", valueType: ValueType.INT });
  return Object.freeze({
    processed: (n = 1) => processed.add(n, base),
    failed: (n = 1) => failed.add(n, base),
    quarantined(reason: QuarantineReasonValue) {
      let a = byReason.get(reason);
      if (a === undefined) byReason.set(reason, (a = Object.freeze({ ...base, [AgentMetricAttribute.Reason]: reason })));
      quarantined.add(1, a);
    },
    handlerDuration: (ms: number) => duration.record(ms, base),
    inFlight: (delta: 1 | -1) => inFlight.add(delta, base),
  });
}
