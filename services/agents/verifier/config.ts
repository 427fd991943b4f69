// The verifier's configuration: environment → typed → validated → frozen. A bad value fails at startup with a
// message naming the variable and the form it expects.
import { envFraction, envInteger } from "../../kit/index.ts";

/** The environment variables the verifier reads (the model's are in services/agents/model.ts). */
export const VerifierEnv = {
  /** Findings below this confidence are quarantined as low_confidence. */
  MinConfidence: "CAUSEWAY_MIN_CONFIDENCE",
  /** Findings verified at once in one process. */
  Concurrency: "CAUSEWAY_VERIFIER_CONCURRENCY",
} as const;

/** The verifier's settings. */
export interface VerifierConfig {
  /** Findings whose confidence is below this are quarantined (low_confidence). From 0 to 1; default 0.6. */
  readonly minConfidence: number;
  /** Findings verified at once in one process. Default 8. */
  readonly concurrency: number;
}

/** Defaults, one literal object. */
export const verifierDefaults: VerifierConfig = Object.freeze({ minConfidence: 0.6, concurrency: 8 });

/** Reads, validates and freezes the verifier's configuration. Throws ConfigError CW_ERR_CONFIG. */
export function loadVerifierConfig(env: NodeJS.ProcessEnv = process.env): VerifierConfig {
  return Object.freeze({
    minConfidence: envFraction(env, VerifierEnv.MinConfidence, verifierDefaults.minConfidence),
    concurrency: envInteger(env, VerifierEnv.Concurrency, 1, 1024, verifierDefaults.concurrency),
  });
}
