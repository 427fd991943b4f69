// OpenTelemetry for a Causeway process, loaded before the service so the global tracer and meter exist
// before anything asks for them:
//
//   node --import ./services/kit/telemetry.ts services/agents/x/main.ts
//
// Configured by the standard OTEL_* variables (docs/telemetry.md). Two departures from the SDK's defaults:
// a signal whose exporter variable is unset exports nothing (`none`) unless an OTLP endpoint is set, so a
// laptop without a collector sees no connection errors; and no auto-instrumentation is registered, because
// the kit creates its own messaging spans (tracing.ts) and per-call hooks cost throughput.
// Never fatal: a bad setting or a failing SDK prints one warning line on stderr and the service runs on.

/** A signal's resolved exporters; empty when the signal is off. */
export interface SignalConfig {
  readonly exporters: readonly string[];
}

/** What {@link resolveTelemetryConfig} makes of the environment. */
export interface TelemetryConfig {
  /** False when every signal is off or OTEL_SDK_DISABLED is true: the SDK is then not even loaded. */
  readonly enabled: boolean;
  /** `service.name`; undefined when OTEL_RESOURCE_ATTRIBUTES already names the service. */
  readonly serviceName: string | undefined;
  readonly traces: SignalConfig;
  readonly metrics: SignalConfig;
  readonly logs: SignalConfig;
  /** Settings that were ignored, one sentence each, naming the variable and the expected form. */
  readonly warnings: readonly string[];
}

/** A started (or deliberately not started) telemetry SDK. */
export interface Telemetry {
  readonly config: TelemetryConfig;
  /** Exports what is buffered and stops the SDK; idempotent, never rejects, gives up after `timeoutMs`. */
  shutdown(timeoutMs?: number): Promise<void>;
}

type Env = Readonly<Record<string, string | undefined>>;

const SIGNALS = {
  traces: { variable: "OTEL_TRACES_EXPORTER", known: ["otlp", "zipkin", "console", "none"] },
  metrics: { variable: "OTEL_METRICS_EXPORTER", known: ["otlp", "prometheus", "console", "none"] },
  logs: { variable: "OTEL_LOGS_EXPORTER", known: ["otlp", "console", "none"] },
} as const;
const OTLP_PROTOCOLS: readonly string[] = ["grpc", "http/protobuf", "http/json"];
const DEFAULT_SHUTDOWN_MS = 5_000;
const STATE = Symbol.for("causeway.telemetry");

/**
 * Resolves the OTEL_* environment into what will be started. Pure: reads only `env`.
 * A signal is off when its exporter variable is unset and no OTLP endpoint (general or for the signal) is set.
 */
export function resolveTelemetryConfig(env: Env = process.env): TelemetryConfig {
  const warnings: string[] = [];
  const signal = (name: keyof typeof SIGNALS): SignalConfig => {
    const { variable, known } = SIGNALS[name];
    const raw = env[variable]?.trim();
    if (!raw) {
      const endpoint = env.OTEL_EXPORTER_OTLP_ENDPOINT || env[`OTEL_EXPORTER_OTLP_${name.toUpperCase()}_ENDPOINT`];
      return { exporters: endpoint ? ["otlp"] : [] };
    }
    const names = [...new Set(raw.split(",").map((s) => s.trim().toLowerCase()).filter((s) => s.length > 0))];
    const unknown = names.filter((n) => !(known as readonly string[]).includes(n));
    if (unknown.length > 0) {
      warnings.push(`${variable}: unknown exporter ${unknown.map((u) => `"${u}"`).join(", ")} ignored (expected ${known.join(", ")})`);
    }
    if (names.includes("none")) {
      if (names.length > 1) warnings.push(`${variable}: "none" together with other exporters; ${name} are off`);
      return { exporters: [] };
    }
    return { exporters: names.filter((n) => !unknown.includes(n)) };
  };
  const traces = signal("traces"), metrics = signal("metrics"), logs = signal("logs");
  for (const variable of ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"]) {
    const p = env[variable]?.trim();
    if (p && !OTLP_PROTOCOLS.includes(p)) warnings.push(`${variable}: unknown protocol "${p}" (expected ${OTLP_PROTOCOLS.join(", ")}); using http/protobuf`);
  }
  const disabled = env.OTEL_SDK_DISABLED?.trim().toLowerCase() === "true";
  const anything = traces.exporters.length + metrics.exporters.length + logs.exporters.length > 0;
  return Object.freeze({ enabled: !disabled && anything, serviceName: serviceNameOf(env), traces, metrics, logs, warnings });
}

// OTEL_SERVICE_NAME, else a service.name the operator put in OTEL_RESOURCE_ATTRIBUTES (the SDK reads that
// itself), else the principal the process runs as, else "causeway".
function serviceNameOf(env: Env): string | undefined {
  const explicit = env.OTEL_SERVICE_NAME?.trim();
  if (explicit) return explicit;
  const inResource = (env.OTEL_RESOURCE_ATTRIBUTES ?? "").split(",").some((kv) => kv.split("=", 1)[0]!.trim() === "service.name");
  if (inResource) return undefined;
  return env.CAUSEWAY_PRINCIPAL?.trim() || "causeway";
}

/**
 * Starts the SDK once per process (a second call, or a second copy of this module, gets the same handle).
 * Resolves even when the SDK fails; the failure is one warning line on stderr.
 */
export function startTelemetry(env: Env = process.env): Promise<Telemetry> {
  const g = globalThis as { [STATE]?: Promise<Telemetry> };
  return (g[STATE] ??= start(env));
}

/** Flushes and stops the telemetry this process started (nothing when none was). Call before `process.exit()`. */
export async function shutdownTelemetry(timeoutMs = DEFAULT_SHUTDOWN_MS): Promise<void> {
  const pending = (globalThis as { [STATE]?: Promise<Telemetry> })[STATE];
  if (pending) await (await pending).shutdown(timeoutMs);
}

async function start(env: Env): Promise<Telemetry> {
  let config: TelemetryConfig;
  try {
    config = resolveTelemetryConfig(env);
  } catch (err) {
    warn(`configuration unreadable (${oneLine(err)}); continuing without telemetry`);
    return off(resolveTelemetryConfig({}));
  }
  for (const w of config.warnings) warn(w);
  if (!config.enabled) return off(config);
  try {
    // Loaded only when something is exported: with telemetry off the service pays neither the SDK's
    // import time nor any per-span cost (the API stays no-op).
    const { NodeSDK } = await import("@opentelemetry/sdk-node");
    const sdk = new NodeSDK({
      ...(config.serviceName !== undefined && { serviceName: config.serviceName }),
      instrumentations: [],
      // An empty list switches a signal off; otherwise the SDK builds exporters from OTEL_* itself.
      ...(config.traces.exporters.length === 0 && { spanProcessors: [] }),
      ...(config.metrics.exporters.length === 0 && { metricReaders: [] }),
      ...(config.logs.exporters.length === 0 && { logRecordProcessors: [] }),
    });
    sdk.start();
    const telemetry = running(config, () => sdk.shutdown());
    hookProcessExit(telemetry);
    return telemetry;
  } catch (err) {
    warn(`could not start OpenTelemetry (${oneLine(err)}); continuing without telemetry`);
    return off(config);
  }
}

function off(config: TelemetryConfig): Telemetry {
  return { config, shutdown: () => Promise.resolve() };
}

function running(config: TelemetryConfig, stop: () => Promise<void>): Telemetry {
  let stopping: Promise<void> | undefined;
  return {
    config,
    shutdown(timeoutMs = DEFAULT_SHUTDOWN_MS) {
      return (stopping ??= withTimeout(stop(), timeoutMs).catch((err: unknown) => warn(`flushing telemetry failed (${oneLine(err)})`)));
    },
  };
}

// Flush when the event loop empties, and on SIGTERM / SIGINT. When the service has its own signal
// handler it owns the shutdown (drain, then exit): we leave the signal alone, and the flush happens on
// beforeExit or in its call to shutdownTelemetry(). Otherwise we flush, then re-raise the signal so the
// process ends the way it would have without us (exit code 128 + signal).
function hookProcessExit(telemetry: Telemetry): void {
  process.once("beforeExit", () => void telemetry.shutdown());
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    const onSignal = (): void => {
      if (process.listenerCount(signal) > 0) return;
      void telemetry.shutdown().finally(() => process.kill(process.pid, signal));
    };
    process.once(signal, onSignal);
  }
}

function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`gave up after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function warn(message: string): void {
  process.stderr.write(`causeway telemetry: warning: ${message}\n`);
}

function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.split("\n", 1)[0]!.trim();
}

// Loaded with --import (or imported first): start now, and hold the service's first line until the
// global providers are registered.
await startTelemetry();
