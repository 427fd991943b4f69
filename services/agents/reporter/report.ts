// The report of a join: a pure function of the join state, so the two paths that may publish it — the last
// finding's handler run and the deadline sweep — build the same data, and its stable key ("report/" + request
// id) gives both the same event id, which JetStream's duplicate window keeps once.
import { isComplete, type JoinState } from "./joins.ts";
import type { Emit, MeshSubjects } from "../../kit/index.ts";

/** The data of report.published (schemas/report/report.published.v1.json). */
export interface ReportPublished {
  requestId: string;
  title: string;
  sections: { heading: string; body: string }[];
  findingsCount: number;
  complete: boolean;
}

/** The report's type and dataschema. */
export const ReportSchema = { "report.published": "https://causeway.dev/schemas/report.published/1.0.0" } as const;

/** The stable output key of the report of `requestId`. */
export function reportKey(requestId: string): string {
  return `report/${requestId}`;
}

const MAX_SECTIONS = 50;
const MAX_HEADING = 300;
const MAX_BODY = 20_000;

/** Builds the report of a join: one section per finding in task order, and one naming the tasks still missing. */
export function buildReport(state: JoinState): ReportPublished {
  const complete = isComplete(state);
  const sections = state.findings.map((f) => ({
    heading: clip(f.query ?? `Task ${f.taskIndex + 1} of ${state.totalTasks}`, MAX_HEADING),
    body: clip(`${f.claim ?? `Finding ${f.findingId} (its claim did not travel with the verified finding).`}\n\nVerdict: ${f.verdict} (confidence ${f.confidence}).`, MAX_BODY),
  }));
  const room = complete ? MAX_SECTIONS : MAX_SECTIONS - 1;
  if (sections.length > room) {
    // The schema allows 50 sections: the last one gathers the findings that do not fit.
    const rest = sections.splice(room - 1);
    sections.push({ heading: "Further findings", body: clip(rest.map((s) => `${s.heading}\n${s.body}`).join("\n\n"), MAX_BODY) });
  }
  if (!complete) {
    const have = new Set(state.findings.map((f) => f.taskIndex));
    const missing = Array.from({ length: state.totalTasks }, (_, i) => i).filter((i) => !have.has(i));
    sections.push({
      heading: "Missing",
      body: clip(
        `No verified finding arrived for ${missing.length} of ${state.totalTasks} tasks (task ${missing.map((i) => i + 1).join(", ")}) ` +
          `by the deadline ${state.deadline}: they were quarantined (no evidence, low confidence), failed, or are late.`,
        MAX_BODY,
      ),
    });
  }
  return {
    requestId: state.requestId,
    title: clip(state.topic !== undefined ? `Report: ${state.topic}` : `Report for request ${state.requestId}`, MAX_HEADING),
    sections,
    findingsCount: state.findings.length,
    complete,
  };
}

/** The report of a join as an output, with its stable key, addressed to `<prefix>.evt.report.published`. */
export function reportEmit(state: JoinState, subjects: MeshSubjects): Emit {
  return {
    to: subjects.event("report.published", 1),
    type: "report.published",
    data: buildReport(state),
    subject: state.requestId,
    key: reportKey(state.requestId),
  };
}

/**
 * The same report, addressed to the critical `publish.v1` capability through the coordinator's handoff subject:
 * publishing it outside the mesh cannot be undone, so it needs an approval and runs under a lease.
 */
export function releaseEmit(state: JoinState, subjects: MeshSubjects): Emit {
  return { ...reportEmit(state, subjects), to: subjects.handoff("publish", 1), key: `release/${state.requestId}` };
}

/** Everything a finished join emits: the report as a fact, and the request to publish it. */
export function reportEmits(state: JoinState, subjects: MeshSubjects): Emit[] {
  return [reportEmit(state, subjects), releaseEmit(state, subjects)];
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}
