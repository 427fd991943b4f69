// An in-memory OpenTelemetry metrics SDK as the global meter provider for one test: instruments created after it
// (the API has no proxy) record into it, and `collect()` returns what they hold now.
import assert from "node:assert/strict";
import type { TestContext } from "node:test";
import { metrics } from "@opentelemetry/api";
import { AggregationTemporality, InMemoryMetricExporter, MeterProvider, PeriodicExportingMetricReader, type MetricData } from "@opentelemetry/sdk-metrics";

/** Installs the SDK for the test `t` (removed after it); `collect()` exports and returns every metric. */
export function inMemoryMetrics(t: TestContext): { collect(): Promise<MetricData[]> } {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
  const provider = new MeterProvider({ readers: [reader] });
  metrics.disable();
  assert.ok(metrics.setGlobalMeterProvider(provider));
  t.after(async () => {
    metrics.disable();
    await provider.shutdown();
  });
  return {
    async collect() {
      await reader.forceFlush();
      return exporter.getMetrics().at(-1)?.scopeMetrics.flatMap((s) => s.metrics) ?? [];
    },
  };
}
