// Reading configuration from the environment: env → typed → validated. A bad value fails at startup with a
// ConfigError (CW_ERR_CONFIG) naming the variable and the form it expects; an unset or empty one takes the
// default. Services freeze the object they build from these.
import { ConfigError, ErrorCode } from "./errors.ts";

/** An integer from `min` to `max`; `unit` (e.g. " ms") is shown in the error. */
export function envInteger(env: NodeJS.ProcessEnv, name: string, min: number, max: number, fallback: number, unit = ""): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!/^-?\d+$/.test(raw) || value < min || value > max) {
    throw new ConfigError(ErrorCode.Config, `${name}=${JSON.stringify(raw)} is invalid: expected an integer from ${min} to ${max}${unit}`);
  }
  return value;
}

/** A number from 0 to 1 (a confidence, a ratio). */
export function envFraction(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name]?.trim();
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw) || value > 1) {
    throw new ConfigError(ErrorCode.Config, `${name}=${JSON.stringify(raw)} is invalid: expected a number from 0 to 1, e.g. 0.6`);
  }
  return value;
}
