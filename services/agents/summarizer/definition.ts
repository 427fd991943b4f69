// The summarizer (capability summarize.v1, and a subscriber to report.published.v1): reacts to every published
// report with report.summarized, a fact on <prefix>.evt.report.summarized.v1 — the first sentence of each section,
// in order. It is the reference listener of a choreography: it subscribes to the reporter's fact in its own
// principals.json entry, so neither the reporter's code nor its entry names it. A report addressed to
// summarize.v1 directly is summarized the same way. Deterministic: no model.
import type { ReportPublished } from "../reporter/report.ts";
import { summarizerDefaults, type SummarizerConfig } from "./config.ts";
import type { AgentDefinition, Emit, HandlerContext, HandlerInput } from "../../kit/index.ts";

/** Event types and their dataschemas. */
export const SummarizerSchema = {
  "report.published": "https://causeway.dev/schemas/report.published/1.0.0",
  "report.summarized": "https://causeway.dev/schemas/report.summarized/1.0.0",
} as const;

/** The data of report.summarized (schemas/report/report.summarized.v1.json). */
export interface ReportSummarized {
  requestId: string;
  reportId: string;
  title: string;
  summary: string;
  complete: boolean;
}

/** The longest summary report.summarized allows. */
const MAX_SUMMARY = 1000;
const SENTENCE = /^.*?[.!?](?=\s|$)/s;

/** The first sentence of each section, in order, clipped to 1,000 characters. */
export function summarize(report: Pick<ReportPublished, "sections">): string {
  const lines = report.sections.map((s) => {
    const body = s.body.trim();
    return `${s.heading}: ${(SENTENCE.exec(body)?.[0] ?? body).replace(/\s+/g, " ")}`;
  });
  const text = lines.join("\n");
  return text.length <= MAX_SUMMARY ? text : `${text.slice(0, MAX_SUMMARY - 1)}…`;
}

/** The summarizer's agent definition. */
export function createSummarizerDefinition(config: SummarizerConfig = summarizerDefaults): AgentDefinition<ReportPublished> {
  return {
    principal: "summarizer",
    capability: "summarize",
    major: 1,
    version: "1.0.0",
    description: "Summarizes every published report (report.summarized): subscribes to report.published, which the reporter publishes without knowing it",
    accepts: { "report.published": SummarizerSchema["report.published"] },
    subscribes: { "report.published": SummarizerSchema["report.published"] },
    emits: { "report.summarized": SummarizerSchema["report.summarized"] },
    concurrency: config.concurrency,
    handler(input: HandlerInput<ReportPublished>, ctx: HandlerContext): readonly Emit[] {
      const report = input.data;
      const data: ReportSummarized = { requestId: report.requestId, reportId: input.event.id, title: report.title, summary: summarize(report), complete: report.complete };
      return [{ to: ctx.subjects.event("report.summarized", 1), type: "report.summarized", data }];
    },
  };
}
