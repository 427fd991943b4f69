// The researcher (capability research.v1): one research.finding.created per research.task.created, addressed
// to verify.v1. Deterministic by default (the built-in corpus of corpus.ts); with a model configured, the model
// answers and its JSON is checked against the finding's shape, falling back to the corpus with a warning when
// it is malformed. The finding schema has no room for the request's context, so it travels in signed
// extensions (ResearcherExtension) that the verifier carries on to the reporter.
import { affordsModel, completeJson, modelBudget, type Model } from "../model.ts";
import { researcherDefaults, type ResearcherConfig } from "./config.ts";
import { researchFromCorpus, type Evidence, type Research } from "./corpus.ts";
import {
  QuarantineReason, type AgentDefinition, type Emit, type ExtensionValue, type HandlerContext, type HandlerInput, type PolicyVerdict,
} from "../../kit/index.ts";

/** The data of research.task.created (schemas/research/research.task.created.v1.json). */
export interface ResearchTask {
  requestId: string;
  taskIndex: number;
  totalTasks: number;
  query: string;
}

/** The data of research.finding.created (schemas/research/research.finding.created.v1.json). */
export interface FindingCreated {
  taskId: string;
  claim: string;
  evidence: Evidence[];
  confidence: number;
}

/** Event types and their dataschemas. */
export const ResearcherSchema = {
  "research.task.created": "https://causeway.dev/schemas/research.task.created/1.0.0",
  "research.finding.created": "https://causeway.dev/schemas/research.finding.created/1.0.0",
} as const;

/** Extensions on every finding: the task's place in its request, and the request's context from the planner. */
export const ResearcherExtension = {
  /** The report.requested id (String). */
  RequestId: "requestid",
  /** The task's position, from 0 (Integer). */
  TaskIndex: "taskindex",
  /** How many tasks the request has (Integer). */
  TotalTasks: "totaltasks",
  /** The task's query (String), the heading of its section in the report. */
  Query: "query",
} as const;

/** Extensions of the task copied unchanged onto the finding (set by the planner: topic, requesttime, deadline). */
export const FORWARDED_EXTENSIONS = Object.freeze(["topic", "requesttime", "deadline"] as const);

/**
 * What one research run costs the flow, in cost units, when no model reports its spend: a fixed cost reserved
 * against the flow's budget before the run and signed into its finding (`spentcost`), so a deterministic flow's
 * spend shows in lineage and the demo. What a model run reports (ctx.spend) replaces it.
 */
export const RESEARCH_COST = 10;

/** What the researcher is built from. */
export interface ResearcherDeps {
  /** When set, answers the research question. Default: the built-in corpus. */
  model?: Model;
  config?: ResearcherConfig;
}

const MAX_TEXT = 4000;
const MAX_EVIDENCE = 50;
const MAX_URI = 2048;
// An absolute URI without whitespace or the characters RFC 3986 excludes (the schema's `format: uri`).
const ABSOLUTE_URI = /^[a-z][a-z0-9+.-]*:[^\s<>"{}|\\^`]+$/i;

/** Pipeline step 6: a task whose index is not below its total is inconsistent (JSON Schema cannot compare them). */
export function researcherPolicy(input: HandlerInput<ResearchTask>): PolicyVerdict | undefined {
  const { taskIndex, totalTasks } = input.data;
  if (taskIndex >= totalTasks) {
    return { reason: QuarantineReason.SchemaViolation, detail: `taskIndex ${taskIndex} is not below totalTasks ${totalTasks}` };
  }
  return undefined;
}

/** The researcher's agent definition. */
export function createResearcherDefinition(deps: ResearcherDeps = {}): AgentDefinition<ResearchTask> {
  const config = deps.config ?? researcherDefaults;
  const model = deps.model;

  const research = async (task: ResearchTask, topic: string | undefined, ctx: HandlerContext): Promise<Research> => {
    // The cheaper tier when the flow cannot pay for a model call: the built-in corpus costs nothing.
    if (model === undefined || !affordsModel(ctx)) return researchFromCorpus(task.query);
    const answer = await completeJson(model, {
      system:
        "You are a careful researcher. Answer the research question with one self-contained claim, the evidence behind it " +
        "(each item: an absolute URI of the source and a verbatim quote from it) and your confidence in the claim from 0 to 1. " +
        'Answer with a JSON object {"claim": "…", "evidence": [{"source": "https://…", "quote": "…"}], "confidence": 0.5} and nothing else. ' +
        "Give no evidence rather than invented evidence.",
      user: topic === undefined ? `Research question: ${task.query}` : `Report topic: ${topic}\nResearch question: ${task.query}`,
      ...modelBudget(ctx),
    }, parseResearch, ctx.signal);
    if (answer.ok) return answer.value;
    ctx.log.warn({ model: model.name, problem: answer.problem }, "model answer unusable; researching from the built-in corpus");
    return researchFromCorpus(task.query);
  };

  return {
    principal: "researcher",
    capability: "research",
    major: 1,
    version: "1.0.0",
    description: "Researches one task and reports a finding with its evidence and confidence",
    accepts: { "research.task.created": ResearcherSchema["research.task.created"] },
    emits: { "research.finding.created": ResearcherSchema["research.finding.created"] },
    concurrency: config.concurrency,
    cost: { cost: RESEARCH_COST },
    policy: researcherPolicy,
    async handler(input: HandlerInput<ResearchTask>, ctx: HandlerContext): Promise<readonly Emit[]> {
      const ext = input.event.extensions;
      const topic = typeof ext.topic === "string" ? ext.topic : undefined;
      return [findingEmit(input, await research(input.data, topic, ctx), ctx)];
    },
  };
}

/**
 * The finding of `found` for `input`, addressed to verify.v1 with the task's context as extensions: what every
 * version of the researcher emits for its research (services/agents/researcher/v1.1/ is another reading).
 */
export function findingEmit(input: HandlerInput<ResearchTask>, found: Research, ctx: HandlerContext): Emit {
  const task = input.data;
  const ext = input.event.extensions;
  const extensions: Record<string, ExtensionValue> = {
    [ResearcherExtension.RequestId]: task.requestId,
    [ResearcherExtension.TaskIndex]: task.taskIndex,
    [ResearcherExtension.TotalTasks]: task.totalTasks,
    [ResearcherExtension.Query]: task.query,
  };
  for (const name of FORWARDED_EXTENSIONS) if (ext[name] !== undefined) extensions[name] = ext[name];
  const data: FindingCreated = { taskId: input.event.id, claim: found.claim, evidence: found.evidence, confidence: found.confidence };
  return { to: ctx.subjects.capability("verify", 1), type: "research.finding.created", data, extensions };
}

/** Checks a model's answer against the finding's shape (the schema's bounds included). */
export function parseResearch(value: unknown): Research {
  const v = value as { claim?: unknown; evidence?: unknown; confidence?: unknown } | null;
  if (typeof v !== "object" || v === null) throw new Error("the answer must be a JSON object");
  if (typeof v.claim !== "string" || v.claim.trim() === "" || v.claim.length > MAX_TEXT) throw new Error(`"claim" must be a non-empty string of at most ${MAX_TEXT} characters`);
  if (typeof v.confidence !== "number" || !(v.confidence >= 0 && v.confidence <= 1)) throw new Error(`"confidence" must be a number from 0 to 1`);
  if (!Array.isArray(v.evidence) || v.evidence.length > MAX_EVIDENCE) throw new Error(`"evidence" must be an array of at most ${MAX_EVIDENCE} items`);
  const evidence = v.evidence.map((item: unknown, i): Evidence => {
    const e = item as { source?: unknown; quote?: unknown } | null;
    if (typeof e?.source !== "string" || !ABSOLUTE_URI.test(e.source) || e.source.length > MAX_URI) throw new Error(`evidence[${i}].source must be an absolute URI`);
    if (typeof e.quote !== "string" || e.quote.trim() === "" || e.quote.length > MAX_TEXT) throw new Error(`evidence[${i}].quote must be a non-empty string of at most ${MAX_TEXT} characters`);
    return { source: e.source, quote: e.quote };
  });
  return { claim: v.claim.trim(), evidence, confidence: v.confidence };
}
