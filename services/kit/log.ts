// Logs: pino, one JSON object per line in production, pretty-printed in development. A handler logs
// through a child logger that carries the event's ids and trace context on every line (eventLogger).
//
// Per-message lines are `debug`: one pino line costs about as much as a span (≈ 2 µs), and info-level
// logging on the hot path costs throughput (DESIGN.md, "Performance budget"). Info and above are for
// things an operator acts on: start, stop, configuration, quarantines worth a look, failures.
import { createRequire } from "node:module";
import { pino } from "pino";
import type { DestinationStream, Level, Logger, LoggerOptions as PinoOptions } from "pino";
import type PinoPretty from "pino-pretty";
import { ConfigError, ErrorCode } from "./errors.ts";

/** Levels `LOG_LEVEL` accepts. */
export const LOG_LEVELS: readonly (Level | "silent")[] = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

/**
 * Fields whose values never reach a log line, at the top level or one object down (`{ principal: { seed } }`):
 * pino replaces them with "[Redacted]". Do not log secrets deeper than that either.
 */
export const REDACTED_FIELDS: readonly string[] = ["seed", "secret", "token", "password"];

/** Options of {@link createLogger}. */
export interface LoggerOptions {
  /** The `name` on every line: the service or principal. */
  name: string;
  /** Minimum level. Default: `LOG_LEVEL`, else `info`. */
  level?: string;
  /** Pretty-print instead of JSON. Default: `CAUSEWAY_LOG_PRETTY=1`, or `NODE_ENV=development` unless `CAUSEWAY_LOG_PRETTY=0`. */
  pretty?: boolean;
  /** Where lines go. Default: standard output. */
  destination?: DestinationStream;
}

/** What {@link eventLogger} puts on every line. */
export interface EventLogFields {
  eventId: string;
  correlationId: string;
  /** From the process span, or the input's `traceparent` when telemetry is off. */
  traceId?: string;
  spanId?: string;
}

type Env = Readonly<Record<string, string | undefined>>;

const REDACT_PATHS = REDACTED_FIELDS.flatMap((f) => [f, `*.${f}`]);

/**
 * A root logger for one process. A bad level fails with a {@link ConfigError} naming `LOG_LEVEL`.
 * Pretty output needs the `pino-pretty` package (a development dependency); without it lines stay JSON.
 */
export function createLogger(opts: LoggerOptions, env: Env = process.env): Logger {
  const level = levelOf(opts.level, env);
  const options: PinoOptions = {
    name: opts.name,
    level,
    redact: { paths: REDACT_PATHS },
    // "info" rather than 30: log pipelines and people read the same line.
    formatters: { level: (label) => ({ level: label }) },
  };
  const pretty = opts.pretty ?? prettyByDefault(env);
  if (pretty) {
    const stream = prettyStream(opts.destination);
    if (stream !== undefined) return pino(options, stream);
  }
  return opts.destination === undefined ? pino(options) : pino(options, opts.destination);
}

/**
 * A child of `base` for one input event: `event_id`, `correlation_id`, `trace_id` and `span_id` on every
 * line (trace fields only when known). Log per-message lines at `debug`.
 */
export function eventLogger(base: Logger, fields: EventLogFields): Logger {
  const bindings: Record<string, string> = { event_id: fields.eventId, correlation_id: fields.correlationId };
  if (fields.traceId !== undefined) bindings.trace_id = fields.traceId;
  if (fields.spanId !== undefined) bindings.span_id = fields.spanId;
  return base.child(bindings);
}

function levelOf(explicit: string | undefined, env: Env): Level | "silent" {
  const [value, source] = explicit !== undefined ? [explicit, "level"] : [env.LOG_LEVEL?.trim() || "info", "LOG_LEVEL"];
  const level = value.toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new ConfigError(ErrorCode.Config, `${source} must be one of ${LOG_LEVELS.join(", ")} (got "${value}")`);
  }
  return level as Level | "silent";
}

function prettyByDefault(env: Env): boolean {
  const flag = env.CAUSEWAY_LOG_PRETTY?.trim();
  if (flag === "1" || flag === "true") return true;
  if (flag === "0" || flag === "false") return false;
  return env.NODE_ENV === "development";
}

// pino-pretty in the main thread (no transport worker): lines appear in order and none is lost at exit,
// which is what development wants. Loaded lazily so production never loads it and need not install it.
function prettyStream(destination: DestinationStream | undefined): DestinationStream | undefined {
  let pretty: typeof PinoPretty;
  try {
    pretty = createRequire(import.meta.url)("pino-pretty") as typeof PinoPretty;
  } catch {
    process.stderr.write("causeway log: warning: pino-pretty is not installed; logging JSON\n");
    return undefined;
  }
  return pretty({
    sync: true,
    ignore: "pid,hostname",
    translateTime: "SYS:HH:MM:ss.l",
    ...(destination !== undefined && { destination, colorize: false }),
  });
}
