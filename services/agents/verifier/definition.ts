// The verifier (capability verify.v1). Its policy (pipeline step 6) quarantines findings without evidence
// (missing_evidence) or with a confidence below the minimum (low_confidence, default 0.6); its handler checks
// the evidence against the claim and emits research.finding.verified to report.v1. Deterministic by default:
// a claim is `supported` when one quote shares at least two content words with it, else `inconclusive`. With a
// model configured, the model judges, and a malformed answer falls back to the word check with a warning.
import { completeJson, type Model } from "../model.ts";
import { verifierDefaults, type VerifierConfig } from "./config.ts";
import {
  QuarantineReason, type AgentDefinition, type Emit, type ExtensionValue, type HandlerContext, type HandlerInput, type PolicyVerdict,
} from "../../kit/index.ts";

/** The data of research.finding.created (schemas/research/research.finding.created.v1.json). */
export interface FindingCreated {
  taskId: string;
  claim: string;
  evidence: { source: string; quote: string }[];
  confidence: number;
}

/** A verdict of research.finding.verified. */
export type Verdict = "supported" | "refuted" | "inconclusive";

/** The data of research.finding.verified (schemas/research/research.finding.verified.v1.json). */
export interface FindingVerified {
  findingId: string;
  verdict: Verdict;
  confidence: number;
}

/** Event types and their dataschemas. */
export const VerifierSchema = {
  "research.finding.created": "https://causeway.dev/schemas/research.finding.created/1.0.0",
  "research.finding.verified": "https://causeway.dev/schemas/research.finding.verified/1.0.0",
} as const;

/**
 * What one verification run costs the flow, in cost units, when no model reports its spend (see the researcher's
 * RESEARCH_COST): reserved before the run, signed into its output. A finding the policy quarantines never runs.
 */
const VERIFY_COST = 2;

/** The extension that carries the checked claim to the reporter (the verified schema has no room for it). */
export const VerifierExtension = { Claim: "claim" } as const;

/** Extensions of the finding copied unchanged onto the verified finding: the request's context for the reporter. */
export const FORWARDED_EXTENSIONS = Object.freeze(["requestid", "taskindex", "totaltasks", "query", "topic", "requesttime", "deadline"] as const);

/** What the verifier is built from. */
export interface VerifierDeps {
  /** When set, judges the evidence. Default: the word check of {@link checkEvidence}. */
  model?: Model;
  config?: VerifierConfig;
}

/** The verdict and the verifier's confidence in it. */
export interface Check {
  verdict: Verdict;
  confidence: number;
}

/** Pipeline step 6: quarantine a finding without evidence, or less confident than `minConfidence`. */
export function verifierPolicy(minConfidence: number): (input: HandlerInput<FindingCreated>) => PolicyVerdict | undefined {
  return (input) => {
    const { evidence, confidence } = input.data;
    if (evidence.length === 0) return { reason: QuarantineReason.MissingEvidence, detail: "the finding cites no evidence" };
    if (confidence < minConfidence) {
      return { reason: QuarantineReason.LowConfidence, detail: `confidence ${confidence} is below the minimum ${minConfidence}` };
    }
    return undefined;
  };
}

// Words too common to show that a quote is about the claim.
const STOPWORDS = new Set(["that", "this", "with", "from", "have", "into", "than", "then", "they", "their", "there", "which", "what", "when", "where", "were", "will", "been", "about", "above", "only", "also", "more", "most", "much", "many", "such", "each", "over", "does", "must", "without", "because", "before", "after"]);
const WORD = /[a-z0-9]+/g;

/** The deterministic check: `supported` (confidence = the finding's) when a quote shares two content words with the claim, else `inconclusive` (0.5). */
export function checkEvidence(finding: Pick<FindingCreated, "claim" | "evidence" | "confidence">): Check {
  const claimWords = contentWords(finding.claim);
  const backed = finding.evidence.some((e) => {
    let shared = 0;
    for (const w of contentWords(e.quote)) if (claimWords.has(w)) shared++;
    return shared >= 2;
  });
  return backed ? { verdict: "supported", confidence: finding.confidence } : { verdict: "inconclusive", confidence: 0.5 };
}

/** The verifier's agent definition. */
export function createVerifierDefinition(deps: VerifierDeps = {}): AgentDefinition<FindingCreated> {
  const config = deps.config ?? verifierDefaults;
  const model = deps.model;

  const check = async (finding: FindingCreated, ctx: HandlerContext): Promise<Check> => {
    if (model === undefined) return checkEvidence(finding);
    const evidence = finding.evidence.map((e, i) => `[${i + 1}] ${e.source}\n"${e.quote}"`).join("\n");
    const answer = await completeJson(model, {
      system:
        "You check a research finding against its evidence. Decide whether the quoted evidence supports the claim, refutes it, " +
        "or neither (inconclusive), and how confident you are in that verdict from 0 to 1. " +
        'Answer with a JSON object {"verdict": "supported" | "refuted" | "inconclusive", "confidence": 0.5} and nothing else.',
      user: `Claim: ${finding.claim}\nEvidence:\n${evidence}`,
    }, parseCheck, ctx.signal);
    if (answer.ok) return answer.value;
    ctx.log.warn({ model: model.name, problem: answer.problem }, "model answer unusable; verifying with the word check");
    return checkEvidence(finding);
  };

  return {
    principal: "verifier",
    capability: "verify",
    major: 1,
    version: "1.0.0",
    description: `Verifies findings against their evidence; quarantines findings without evidence or below confidence ${config.minConfidence}`,
    accepts: { "research.finding.created": VerifierSchema["research.finding.created"] },
    emits: { "research.finding.verified": VerifierSchema["research.finding.verified"] },
    concurrency: config.concurrency,
    cost: { cost: VERIFY_COST },
    policy: verifierPolicy(config.minConfidence),
    async handler(input: HandlerInput<FindingCreated>, ctx: HandlerContext): Promise<readonly Emit[]> {
      const { verdict, confidence } = await check(input.data, ctx);
      const ext = input.event.extensions;
      const extensions: Record<string, ExtensionValue> = { [VerifierExtension.Claim]: input.data.claim };
      for (const name of FORWARDED_EXTENSIONS) if (ext[name] !== undefined) extensions[name] = ext[name];
      const data: FindingVerified = { findingId: input.event.id, verdict, confidence };
      return [{ to: ctx.subjects.capability("report", 1), type: "research.finding.verified", data, extensions }];
    },
  };
}

/** Checks a model's answer: a known verdict and a confidence from 0 to 1. */
export function parseCheck(value: unknown): Check {
  const v = value as { verdict?: unknown; confidence?: unknown } | null;
  if (v?.verdict !== "supported" && v?.verdict !== "refuted" && v?.verdict !== "inconclusive") {
    throw new Error(`"verdict" must be "supported", "refuted" or "inconclusive"`);
  }
  if (typeof v.confidence !== "number" || !(v.confidence >= 0 && v.confidence <= 1)) throw new Error(`"confidence" must be a number from 0 to 1`);
  return { verdict: v.verdict, confidence: v.confidence };
}

function contentWords(text: string): Set<string> {
  return new Set((text.toLowerCase().match(WORD) ?? []).filter((w) => w.length >= 4 && !STOPWORDS.has(w)));
}
