// The deadline path of the reporter: joins whose deadline passed are published with what they have
// (complete: false unless every task made it after all), through agent.emit, caused by the join's first
// verified finding. The report's stable key makes a sweep that races the last finding's handler run, or two
// replicas sweeping at once, produce one report event.
import type { Logger } from "pino";
import type { JoinStore } from "./joins.ts";
import { reportEmits } from "./report.ts";
import { subjectsFor, type Agent, type MeshSubjects } from "../../kit/index.ts";

/** Options of {@link reporterDeadlineSweep}. */
export interface SweepOptions {
  /** Subject builders of the mesh's prefix. Default: `subjectsFor()` (prefix "mesh"). */
  subjects?: MeshSubjects;
  /** Where failures and published reports are logged. Default: nowhere. */
  log?: Pick<Logger, "info" | "warn" | "error">;
}

/**
 * Publishes the report of every join due at `now` and marks it published; returns how many it published. A
 * report whose publish fails stays due and is retried by the next sweep (same key, so never twice).
 */
export async function reporterDeadlineSweep(agent: Pick<Agent, "emit">, store: JoinStore, now: number = Date.now(), opts: SweepOptions = {}): Promise<number> {
  const subjects = opts.subjects ?? subjectsFor();
  let published = 0;
  for (const state of await store.due(now)) {
    try {
      await agent.emit(state.cause, reportEmits(state, subjects));
      await store.markPublished(state.requestId);
      published++;
      opts.log?.info({ requestId: state.requestId, findings: state.findings.length, totalTasks: state.totalTasks, deadline: state.deadline }, "deadline passed; report published");
    } catch (err) {
      opts.log?.error({ err, requestId: state.requestId }, "deadline report not published; next sweep retries");
    }
  }
  return published;
}

/** Runs {@link reporterDeadlineSweep} every `intervalMs` (never two at once); returns the function that stops it. */
export function startDeadlineSweep(agent: Pick<Agent, "emit">, store: JoinStore, opts: SweepOptions & { intervalMs: number }): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const tick = async () => {
    try {
      await reporterDeadlineSweep(agent, store, Date.now(), opts);
    } catch (err) {
      opts.log?.warn({ err }, "deadline sweep failed; retrying at the next interval");
    } finally {
      if (!stopped) timer = setTimeout(run, opts.intervalMs);
    }
  };
  const run = () => void tick();
  timer = setTimeout(run, opts.intervalMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
