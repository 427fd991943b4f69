// The reporter (capability report.v1): joins the verified findings of one request in a JoinStore and emits
// report.published on <prefix>.evt.report.published once every task has one (complete: true). Requests whose
// deadline passes first are published by the deadline sweep (sweep.ts) with what they have. Both paths build
// the report from the join alone and give it the stable key "report/" + requestId, so a request gets one report.
// The requestId is the request's flow id (the kit's flowIdOf): unique per (source, id) of the request, so requests
// that share an id across sources are joined apart.
// The reporter uses no model: the report must be a pure function of the join for both paths to agree.
import { reporterDefaults, type ReporterConfig } from "./config.ts";
import { isComplete, type JoinMeta, type JoinState, type JoinStore, type JoinedFinding } from "./joins.ts";
import { ReportSchema, reportEmits } from "./report.ts";
import {
  QuarantineReason, correlationIdOf, flowContextOf, type AgentDefinition, type Cause, type CloudEvent, type Emit, type ExtensionValue, type HandlerContext, type HandlerInput, type PolicyVerdict,
} from "../../kit/index.ts";

export { reporterDeadlineSweep, startDeadlineSweep } from "./sweep.ts";
export type { SweepOptions } from "./sweep.ts";

/** The data of research.finding.verified (schemas/research/research.finding.verified.v1.json). */
export interface FindingVerified {
  findingId: string;
  verdict: "supported" | "refuted" | "inconclusive";
  confidence: number;
}

/** Event types and their dataschemas. */
export const ReporterSchema = {
  "research.finding.verified": "https://causeway.dev/schemas/research.finding.verified/1.0.0",
  ...ReportSchema,
} as const;

/** The extensions the reporter reads, set upstream by the planner, the researcher and the verifier. */
export const ReporterExtension = {
  RequestId: "requestid",
  TaskIndex: "taskindex",
  TotalTasks: "totaltasks",
  Query: "query",
  Claim: "claim",
  Topic: "topic",
  RequestTime: "requesttime",
  Deadline: "deadline",
} as const;

/** What the reporter is built from. */
export interface ReporterDeps {
  /** Where joins live: the KV store in a deployment, the memory store in tests. */
  store: JoinStore;
  config?: ReporterConfig;
  /** The clock (epoch ms) for deadlines of requests that carry no time. Default Date.now. */
  now?: () => number;
}

const MAX_TASKS = 100;

/** The join coordinates of a verified finding, or why it has none. */
function coordinates(event: CloudEvent): { requestId: string; taskIndex: number; totalTasks: number } | string {
  const ext = event.extensions;
  const requestId = ext[ReporterExtension.RequestId];
  if (typeof requestId !== "string" || requestId === "" || requestId.length > 256) return `extension ${ReporterExtension.RequestId} is missing or invalid`;
  const totalTasks = integer(ext[ReporterExtension.TotalTasks]);
  if (totalTasks === undefined || totalTasks < 1 || totalTasks > MAX_TASKS) return `extension ${ReporterExtension.TotalTasks} must be an integer from 1 to ${MAX_TASKS}`;
  const taskIndex = integer(ext[ReporterExtension.TaskIndex]);
  if (taskIndex === undefined || taskIndex < 0 || taskIndex >= totalTasks) return `extension ${ReporterExtension.TaskIndex} must be an integer from 0 to ${totalTasks - 1}`;
  return { requestId, taskIndex, totalTasks };
}

/** Pipeline step 6: a verified finding that does not say which request and task it belongs to cannot be joined. */
export function reporterPolicy(input: HandlerInput<FindingVerified>): PolicyVerdict | undefined {
  const c = coordinates(input.event);
  return typeof c === "string" ? { reason: QuarantineReason.PolicyDenied, detail: `cannot join this finding: ${c}` } : undefined;
}

/**
 * When the report of the finding's request is due: the request's `deadline` when it has one, else its time
 * plus `deadlineMs`, else (no request time travelled) the finding's time, else now, plus `deadlineMs`.
 */
export function deadlineOf(event: CloudEvent, deadlineMs: number, now: number): string {
  const ext = event.extensions;
  const explicit = timestamp(ext[ReporterExtension.Deadline]);
  if (explicit !== undefined) return new Date(explicit).toISOString();
  const base = timestamp(ext[ReporterExtension.RequestTime]) ?? timestamp(event.time) ?? now;
  return new Date(base + deadlineMs).toISOString();
}

/** The cause of outputs the sweep emits for a join: the verified finding that opened it. */
export function causeOf(event: CloudEvent): Cause {
  const ext = event.extensions;
  const traceparent = text(ext.traceparent), tracestate = text(ext.tracestate), expirytime = text(ext.expirytime);
  return {
    id: event.id,
    source: event.source,
    correlationid: correlationIdOf(event),
    ...(traceparent !== undefined && { traceparent }),
    ...(tracestate !== undefined && { tracestate }),
    ...(expirytime !== undefined && { expirytime }),
    context: flowContextOf(event),
  };
}

/** The reporter's agent definition. */
export function createReporterDefinition(deps: ReporterDeps): AgentDefinition<FindingVerified> {
  const config = deps.config ?? reporterDefaults;
  const store = deps.store;
  const now = deps.now ?? Date.now;

  return {
    principal: "reporter",
    capability: "report",
    major: 1,
    version: "1.0.0",
    description: "Joins the verified findings of one request into a report, published when all tasks have one or at the deadline",
    accepts: { "research.finding.verified": ReporterSchema["research.finding.verified"] },
    emits: { "report.published": ReporterSchema["report.published"] },
    concurrency: config.concurrency,
    policy: reporterPolicy,
    async handler(input: HandlerInput<FindingVerified>, ctx: HandlerContext): Promise<readonly Emit[]> {
      const state = await join(input, ctx);
      return state !== undefined && isComplete(state) ? publish(state, ctx) : [];
    },
    // The flow's budget cannot pay for another step: the finding is joined all the same (the reporter spends
    // nothing) and the report is published now with what it has, as at the deadline — not a finding is lost.
    async wrapUp(input: HandlerInput<FindingVerified>, ctx: HandlerContext, over): Promise<readonly Emit[]> {
      const state = await join(input, ctx);
      if (state === undefined) return [];
      ctx.log.info({ requestId: state.requestId, findings: state.findings.length, totalTasks: state.totalTasks, bound: over.bound }, "the flow's budget is spent: publishing the report with what it has");
      return publish(state, ctx);
    },
  };

  /** Adds the finding to its request's join; undefined when it arrived after the report was published. */
  async function join(input: HandlerInput<FindingVerified>, ctx: HandlerContext): Promise<JoinState | undefined> {
    const c = coordinates(input.event);
    if (typeof c === "string") throw new Error(`cannot join this finding: ${c}`); // the policy quarantines these first
    const ext = input.event.extensions;
    const claim = text(ext[ReporterExtension.Claim]), query = text(ext[ReporterExtension.Query]), topic = text(ext[ReporterExtension.Topic]);
    const finding: JoinedFinding = {
      findingId: input.data.findingId,
      taskIndex: c.taskIndex,
      verdict: input.data.verdict,
      confidence: input.data.confidence,
      ...(claim !== undefined && { claim }),
      ...(query !== undefined && { query }),
    };
    const meta: JoinMeta = {
      totalTasks: c.totalTasks,
      deadline: deadlineOf(input.event, config.deadlineMs, now()),
      cause: causeOf(input.event),
      ...(topic !== undefined && { topic }),
    };
    const state = await store.add(c.requestId, finding, meta);
    if (!state.findings.some((f) => f.findingId === finding.findingId)) {
      ctx.log.debug({ requestId: c.requestId, findingId: finding.findingId }, "finding arrived after its report was published; not joined");
      return undefined;
    }
    return state;
  }

  /** The report of `state`. Marked before the runtime publishes: if that publish fails, the input is redelivered,
   * finds its finding in the join, and emits the same report (same key, same id) again. */
  async function publish(state: JoinState, ctx: HandlerContext): Promise<readonly Emit[]> {
    if (!state.published) await store.markPublished(state.requestId);
    return reportEmits(state, ctx.subjects);
  }
}

function text(value: ExtensionValue | undefined): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

function integer(value: ExtensionValue | undefined): number | undefined {
  if (typeof value === "number") return Number.isSafeInteger(value) ? value : undefined;
  if (typeof value === "string" && /^(0|[1-9][0-9]{0,8})$/.test(value)) return Number(value);
  return undefined;
}

function timestamp(value: ExtensionValue | undefined): number | undefined {
  if (typeof value !== "string") return undefined;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? undefined : ms;
}
