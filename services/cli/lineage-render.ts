// How `causeway lineage` prints lineage's answers for a person: why as a chain from the event up to its root,
// trace as a timeline plus the critical path, verify as a verdict naming the first bad entry. `--json` prints
// the answers as they are.
import { table as alignedTable } from "./table.ts";
import { isBounded } from "../kit/index.ts";
import type { AuditProblem, AuditReport, EventList, EventStep, FlowSpend, ImpactResult, Timing, TraceResult, WhyResult } from "../lineage/contract.ts";

const short = (id: string | null | undefined, n = 12): string => (id ? (id.length > n ? `${id.slice(0, n)}…` : id) : "-");
const ms = (t: Timing): string => (t.ms === null ? "-" : `${t.ms} ms`);
const mark = (s: EventStep): string => (s.verification.result === "verified" ? "✓" : `✗ ${s.verification.code ?? ""}`.trim());

/** Rows whose first is the header, aligned. */
const table = ([header, ...rows]: string[][]): string => alignedTable(header!, rows);

function quarantineNote(s: EventStep): string {
  const q = s.appearances.find((a) => a.quarantine)?.quarantine;
  return q ? ` quarantined: ${q.reason ?? "?"} by ${q.detectedBy ?? "?"}` : "";
}

// The agent column: the principal, and the implementation version it signed (`planner@1.2.0`) when there is one.
function agent(s: { readonly principal: string | null; readonly version: string | null }): string {
  return s.principal === null ? "-" : s.version === null ? s.principal : `${s.principal}@${s.version}`;
}

export function renderWhy(w: WhyResult): string {
  const head = w.steps[0];
  const lines = [`why ${w.eventId} — ${head?.type ?? "?"} by ${head?.principal ?? "?"}, ${w.steps.length} step${w.steps.length === 1 ? "" : "s"} to ${endText(w)}`, ""];
  const rows = [["STEP", "EVENT", "TYPE", "AGENT", "KEY", "VERIFIED", "QUEUE", "PROCESSING", "INPUT"]];
  w.steps.forEach((s, i) => {
    rows.push([String(i), short(s.id), s.type ?? "-", agent(s), short(s.keyid, 10), mark(s), ms(s.queueWait), ms(s.processing), short(s.inputs[0]) + quarantineNote(s)]);
  });
  lines.push(table(rows));
  lines.push("", "QUEUE = when the agent started handling its input − when the input was emitted; PROCESSING = emitted − started (signed values only).");
  return lines.join("\n");
}

function endText(w: WhyResult): string {
  switch (w.end.kind) {
    case "root": return "the upstream root";
    case "missing": return `a missing input ${w.end.id}`;
    case "ambiguous": return `an input ${w.end.id} recorded under several sources`;
    case "cycle": return `a causation loop at ${w.end.id}`;
  }
}

// What the run that produced a step spent: "-" when nothing, "unverified" when its claims are not believed.
function spentCell(s: EventStep | undefined): string {
  if (s === undefined) return "-";
  if (s.spent === null) return s.verification.result === "verified" ? "malformed" : "unverified";
  const parts = [s.spent.cost > 0 ? `${s.spent.cost} cost` : "", s.spent.tokens > 0 ? `${s.spent.tokens} tok` : ""].filter((p) => p !== "");
  return parts.length === 0 ? "-" : parts.join(", ");
}

const bound = (n: number | undefined): string => (n === undefined ? "∞" : String(n));

/**
 * A flow's totals: `spent: 120 cost units, 3600 tokens in 4 runs of budget 1000 / 200000 / 64 steps (priority
 * normal)`, then what the budget leaves and what was not counted.
 */
export function renderSpend(s: FlowSpend): string[] {
  const budget = s.budget === null ? ", budget unknown" : !isBounded(s.budget)
    ? ", no budget" : ` of budget ${bound(s.budget.cost)} / ${bound(s.budget.tokens)} / ${bound(s.budget.steps)} steps`;
  const priority = s.priority === null ? "priority unknown: no verified event carries the flow's context" : `priority ${s.priority}`;
  const lines = [`spent: ${s.cost} cost units, ${s.tokens} tokens in ${s.runs} run${s.runs === 1 ? "" : "s"}${budget} (${priority})`];
  const r = s.remaining;
  if (r !== null && isBounded(r)) {
    const left = (n: number | undefined, unit: string) => (n === undefined ? "" : n < 0 ? `${-n} ${unit} over` : `${n} ${unit}`);
    lines.push(`left:  ${[left(r.cost, "cost units"), left(r.tokens, "tokens"), left(r.steps, "steps")].filter((x) => x !== "").join(", ")}`);
  }
  if (s.refusedForBudget > 0) lines.push(`refused for budget: ${s.refusedForBudget} input${s.refusedForBudget === 1 ? "" : "s"} quarantined as budget_exceeded`);
  if (s.otherContext.length > 0) {
    lines.push(`other context: ${s.otherContext.length} verified output${s.otherContext.length === 1 ? "" : "s"} carr${s.otherContext.length === 1 ? "ies" : "y"} another priority or budget than the flow's (${s.otherContext.map((id) => short(id)).join(", ")})`);
  }
  if (s.malformedSpend.length > 0) {
    lines.push(`counted as nothing: the spend of ${s.malformedSpend.length} run${s.malformedSpend.length === 1 ? "" : "s"} whose signed spend is malformed (${s.malformedSpend.map((id) => short(id)).join(", ")})`);
  }
  if (s.unverified > 0) lines.push(`not counted: ${s.unverified} event${s.unverified === 1 ? "" : "s"} that did not verify`);
  return lines;
}

export function renderTrace(t: TraceResult): string {
  const first = t.timeline.find((e) => e.at !== null)?.at;
  const t0 = first ? Date.parse(first) : 0;
  const lines = [`trace ${t.correlationId} — ${t.nodes.length} events, ${t.edges.length} causal edges`, ""];
  const steps = new Map(t.nodes.map((n) => [`${n.source}\u0000${n.id}`, n]));
  const rows = [["AT", "EVENT", "TYPE", "AGENT", "SPENT", "STREAMS"]];
  for (const e of t.timeline) {
    rows.push([e.at ? `+${Date.parse(e.at) - t0} ms` : "-", short(e.id), e.type ?? "-", agent(e), spentCell(steps.get(`${e.source}\u0000${e.id}`)), e.streams.join(",")]);
  }
  lines.push(table(rows));
  lines.push("", ...renderSpend(t.spend));
  lines.push("SPENT = what the run that produced the event spent (signed); a run's outputs share it and count once. Runs that emitted nothing are in the flow ledger only.");
  if (t.criticalPath) {
    const p = t.criticalPath;
    lines.push("", `critical path: ${p.events.length} events, ${p.totalMs} ms${p.signed ? " (signed timings)" : " (partly from unsigned or second-precision times)"}`);
    const byId = new Map(t.nodes.map((n) => [n.id, n]));
    p.edges.forEach((e) => lines.push(`  ${byId.get(e.from)?.type ?? short(e.from)} → ${byId.get(e.to)?.type ?? short(e.to)}  ${e.ms} ms`));
  }
  if (t.missingInputs.length > 0) lines.push("", `inputs not recorded: ${t.missingInputs.join(", ")}`);
  return lines.join("\n");
}

export function renderImpact(r: ImpactResult): string {
  const lines = [`impact ${r.eventId} — ${r.event.type ?? "?"} by ${r.event.principal ?? "?"}: ${r.descendants.length} descendant${r.descendants.length === 1 ? "" : "s"}`, ""];
  const rows = [["DEPTH", "EVENT", "TYPE", "AGENT", "VERIFIED"]];
  for (const d of r.descendants) rows.push([String(d.depth), short(d.id), d.type ?? "-", d.principal ?? "-", mark(d) + quarantineNote(d)]);
  lines.push(table(rows));
  return lines.join("\n");
}

export function renderEvents(list: EventList): string {
  const rows = [["INDEX", "STREAM", "SEQ", "TIME", "TYPE", "AGENT", "VERIFIED", "EVENT"]];
  for (const e of list.events) {
    rows.push([String(e.index), e.stream, String(e.seq), e.time ?? "-", e.type ?? "-", agent(e), e.verified ? "✓" : `✗ ${e.code ?? ""}`, e.id ?? "-"]);
  }
  return [table(rows), "", list.next === null ? `${list.events.length} records` : `${list.events.length} records; more with --after ${list.next}`].join("\n");
}

const where = (p: AuditProblem): string =>
  p.index !== undefined ? `record ${p.index}` : p.node ? `stored subtree hash (level ${p.node.level}, index ${p.node.index})` : p.size !== undefined ? `checkpoint at size ${p.size}` : p.kind;

export function renderVerify(r: AuditReport): string {
  if (r.ok) {
    const latest = r.latest ? `; newest checkpoint: size ${r.latest.size}, root ${r.latest.root}, ${r.latest.time}` : "";
    return `✓ the audit log is intact: ${r.records} records re-hashed, ${r.checkpointsVerified} signed checkpoint${r.checkpointsVerified === 1 ? "" : "s"} match${latest}` +
      (r.uncheckpointed > 0 ? `\n  ${r.uncheckpointed} records after the newest checkpoint (covered by the next one)` : "");
  }
  const lines = [`✗ the audit log does NOT verify: ${r.problems.length} problem${r.problems.length === 1 ? "" : "s"}`];
  if (r.firstBad) lines.push(`  first bad entry: ${where(r.firstBad)}: ${r.firstBad.message}`);
  for (const p of r.problems.slice(0, 10)) lines.push(`  - ${p.message}`);
  return lines.join("\n");
}
