// Researcher 1.1.0: a second implementation of research.v1, run beside 1.0.0 under the same principal (infra/
// principals.json `versions`) so the control plane can route a share of flows to it. Deliberately different and
// deterministic: it cites every fact of the corpus entry it picks, not only the claim's own, and states the mean
// confidence of what it cites (corpus.ts researchBroadlyFromCorpus) — visible in every finding it emits, so a
// rollout, lineage and `causeway replay` can tell the versions apart. It uses no model.
//
// It can also fail a configurable share of its inputs on purpose (CAUSEWAY_RESEARCHER_FAIL_PERCENT), chosen by a
// hash of the input's id so the same inputs fail on every replica, delivery and run: the failing candidate that
// the rollout's automatic rollback is tested and demonstrated with. The failure is an ordinary handler error (not
// transient, not retryable by its own delay): the runtime counts it as failed, redelivers the input with the
// consumer's backoff, and quarantines it as max_deliveries after the last allowed delivery — unless
// CAUSEWAY_RESEARCHER_FAIL_DELIVERIES lets a later delivery succeed.
import { createHash } from "node:crypto";
import { researcherDefaults, ResearcherEnv, type ResearcherConfig } from "../config.ts";
import { researchBroadlyFromCorpus } from "../corpus.ts";
import { RESEARCH_COST, ResearcherSchema, findingEmit, researcherPolicy, type ResearchTask } from "../definition.ts";
import type { AgentDefinition, Emit, HandlerContext, HandlerInput } from "../../../kit/index.ts";

/** This implementation's version. */
export const RESEARCHER_1_1_VERSION = "1.1.0";

/** Thrown for an input this version fails on purpose. */
export class InjectedFailure extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InjectedFailure";
  }
}

/** The bucket (0–99) of an input id: it fails on purpose when this is below the configured share. */
export function failureBucket(inputId: string): number {
  return createHash("sha256").update(`causeway/researcher-fail/v1\0${inputId}`).digest().readUInt32BE(0) % 100;
}

/** True when an input with id `inputId` is one of the `percent` % this version fails on purpose. */
export function failsOnPurpose(inputId: string, percent: number): boolean {
  return failureBucket(inputId) < percent;
}

/** Researcher 1.1.0's agent definition. */
export function createResearcher11Definition(deps: { config?: ResearcherConfig } = {}): AgentDefinition<ResearchTask> {
  const config = deps.config ?? researcherDefaults;
  return {
    principal: "researcher",
    capability: "research",
    major: 1,
    version: RESEARCHER_1_1_VERSION,
    description: "Researches one task broadly: every fact of the matching corpus entry as evidence, with their mean confidence",
    accepts: { "research.task.created": ResearcherSchema["research.task.created"] },
    emits: { "research.finding.created": ResearcherSchema["research.finding.created"] },
    concurrency: config.concurrency,
    cost: { cost: RESEARCH_COST }, // the same work costs the same whichever version does it
    policy: researcherPolicy,
    handler(input: HandlerInput<ResearchTask>, ctx: HandlerContext): readonly Emit[] {
      const { failPercent, failDeliveries } = config;
      if (failsOnPurpose(input.event.id, failPercent) && (failDeliveries === 0 || ctx.deliveryCount <= failDeliveries)) {
        throw new InjectedFailure(`failed on purpose: input ${input.event.id} is in the ${failPercent} % that ${ResearcherEnv.FailPercent} fails (delivery ${ctx.deliveryCount})`);
      }
      return [findingEmit(input, researchBroadlyFromCorpus(input.data.query), ctx)];
    },
  };
}
