// The planner (capability plan.v1): turns one report.requested into N research.task.created events addressed
// to research.v1 — one per question when the request lists questions, otherwise one per aspect of
// PLANNER_ASPECTS (background, current state, risks). With a model configured and no questions, the model
// phrases the three aspect queries; a malformed answer falls back to the fixed templates with a warning.
import { affordsModel, completeJson, modelBudget, type Model } from "../model.ts";
import { plannerDefaults, type PlannerConfig } from "./config.ts";
import { flowIdOf, type AgentDefinition, type Emit, type ExtensionValue, type HandlerContext, type HandlerInput } from "../../kit/index.ts";

/** The data of report.requested (schemas/report/report.requested.v1.json). */
export interface ReportRequested {
  topic: string;
  questions?: string[];
  requester: string;
  deadline?: string;
}

/** The data of research.task.created (schemas/research/research.task.created.v1.json). */
export interface ResearchTask {
  requestId: string;
  taskIndex: number;
  totalTasks: number;
  query: string;
}

/** Event types and their dataschemas. */
export const PlannerSchema = {
  "report.requested": "https://causeway.dev/schemas/report.requested/1.0.0",
  "research.task.created": "https://causeway.dev/schemas/research.task.created/1.0.0",
} as const;

/**
 * Extensions the planner puts on every task, which the researcher and the verifier carry down the flow because
 * the finding schemas have no room for them: the report's title, and what the reporter's deadline is based on.
 */
export const PlannerExtension = {
  /** The request's topic (String). */
  Topic: "topic",
  /** The request event's `time` (Timestamp), the base of the reporter's default deadline. */
  RequestTime: "requesttime",
  /** The request's `deadline` (Timestamp), when it has one. */
  Deadline: "deadline",
} as const;

/** The three aspects researched when a request has no questions, in task order. */
export const PLANNER_ASPECTS = Object.freeze([
  { aspect: "background", query: (topic: string) => `Background: what is ${topic}, and how did it come about?` },
  { aspect: "current state", query: (topic: string) => `Current state: how is ${topic} used or practised today?` },
  { aspect: "risks", query: (topic: string) => `Risks and open questions: what are the main risks and limitations of ${topic}?` },
] as const);

/** What the planner is built from. */
export interface PlannerDeps {
  /** When set and a request has no questions, phrases the aspect queries. Default: the fixed templates. */
  model?: Model;
  config?: PlannerConfig;
}

/** The research queries of a request without a model: its questions, else the three aspect templates. */
export function planQueries(request: Pick<ReportRequested, "topic" | "questions">): string[] {
  if (request.questions !== undefined && request.questions.length > 0) return [...request.questions];
  return PLANNER_ASPECTS.map((a) => a.query(request.topic));
}

const MAX_QUERY = 2000;
/** Handler runs one research task takes on its way into the report: research, verify, report. */
const STEPS_PER_TASK = 3;
/** Handler runs after the tasks: the summary of the published report, and the critical publish. */
const STEPS_AFTER_TASKS = 2;

/** The planner's agent definition. */
export function createPlannerDefinition(deps: PlannerDeps = {}): AgentDefinition<ReportRequested> {
  const config = deps.config ?? plannerDefaults;
  const model = deps.model;

  const queriesFor = async (request: ReportRequested, ctx: HandlerContext): Promise<string[]> => {
    if (model === undefined || (request.questions !== undefined && request.questions.length > 0) || !affordsModel(ctx)) return planQueries(request);
    const answer = await completeJson(model, {
      system:
        "You plan research for a report. Write exactly three research questions about the topic, in this order: " +
        PLANNER_ASPECTS.map((a) => a.aspect).join(", ") +
        '. Answer with a JSON object {"queries": ["…", "…", "…"]} and nothing else.',
      user: `Topic: ${request.topic}`,
      ...modelBudget(ctx),
    }, parseQueries, ctx.signal);
    if (answer.ok) return answer.value;
    ctx.log.warn({ model: model.name, problem: answer.problem }, "model answer unusable; planning with the fixed aspects");
    return planQueries(request);
  };

  return {
    principal: "planner",
    capability: "plan",
    major: 1,
    version: "1.0.0",
    description: "Splits a report request into research tasks: one per question, else background, current state and risks",
    accepts: { "report.requested": PlannerSchema["report.requested"] },
    emits: { "research.task.created": PlannerSchema["research.task.created"] },
    concurrency: config.concurrency,
    async handler(input: HandlerInput<ReportRequested>, ctx: HandlerContext): Promise<readonly Emit[]> {
      const request = input.data;
      const planned = await queriesFor(request, ctx);
      // No more tasks than the flow's steps can carry to a report (at least one: a report needs a task).
      const left = ctx.budget?.remaining.steps;
      const affordable = left === undefined ? Infinity : Math.max(1, Math.floor((left - STEPS_AFTER_TASKS) / STEPS_PER_TASK));
      const queries = planned.slice(0, affordable);
      if (queries.length < planned.length) ctx.log.info({ planned: planned.length, tasks: queries.length, stepsLeft: left }, "planned fewer tasks: the flow's budget");
      const extensions: Record<string, ExtensionValue> = { [PlannerExtension.Topic]: request.topic };
      if (input.event.time !== undefined) extensions[PlannerExtension.RequestTime] = input.event.time;
      if (request.deadline !== undefined) extensions[PlannerExtension.Deadline] = request.deadline;
      const to = ctx.subjects.capability("research", 1);
      const requestId = flowIdOf(input.event); // the flow's id: unique per (source, id) of the request
      return queries.map((query, taskIndex): Emit => {
        const data: ResearchTask = { requestId, taskIndex, totalTasks: queries.length, query };
        return { to, type: "research.task.created", data, extensions };
      });
    },
  };
}

function parseQueries(value: unknown): string[] {
  const queries = (value as { queries?: unknown } | null)?.queries;
  if (!Array.isArray(queries) || queries.length !== PLANNER_ASPECTS.length) throw new Error(`"queries" must be an array of ${PLANNER_ASPECTS.length} strings`);
  const out = queries.map((q: unknown) => (typeof q === "string" ? q.trim() : ""));
  if (out.some((q) => q === "" || q.length > MAX_QUERY)) throw new Error(`each query must be a non-empty string of at most ${MAX_QUERY} characters`);
  if (new Set(out).size !== out.length) throw new Error("the queries must be distinct");
  return out;
}
