// Benchmark plumbing: candidate and baseline run in alternating rounds in the same process, and each side's
// median round is compared, so a noisy neighbour slows both sides rather than skewing the ratio.

/** One side of a comparison: `run(n)` performs n operations. */
export interface Side {
  name: string;
  run(n: number): void | Promise<void>;
}

/** The outcome of one comparison. */
export interface Comparison {
  name: string;
  candidate: string;
  baseline: string;
  candidateOpsPerSec: number;
  baselineOpsPerSec: number;
  /** candidate / baseline throughput. */
  ratio: number;
  goal: number;
}

/** Runs both sides for `rounds` alternating rounds of `ops` operations each, after a warm-up round. */
export async function compare(name: string, candidate: Side, baseline: Side, opts: { ops: number; rounds?: number; goal: number }): Promise<Comparison> {
  const rounds = opts.rounds ?? 7;
  await candidate.run(Math.ceil(opts.ops / 4));
  await baseline.run(Math.ceil(opts.ops / 4));
  const c: number[] = [], b: number[] = [];
  for (let r = 0; r < rounds; r++) {
    // Alternate which side goes first so neither always runs on a warmer cache.
    const order = r % 2 === 0 ? [[candidate, c], [baseline, b]] as const : [[baseline, b], [candidate, c]] as const;
    for (const [side, out] of order) {
      const start = process.hrtime.bigint();
      await side.run(opts.ops);
      out.push(opts.ops / (Number(process.hrtime.bigint() - start) / 1e9));
    }
  }
  const cm = median(c), bm = median(b);
  return { name, candidate: candidate.name, baseline: baseline.name, candidateOpsPerSec: cm, baselineOpsPerSec: bm, ratio: cm / bm, goal: opts.goal };
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)]!;
}

/** Prints comparisons as a table with ✓ / ✗ against each goal; returns whether every goal was met. */
export function printTable(results: Comparison[]): boolean {
  const rows = results.map((r) => [
    r.name,
    `${fmt(r.candidateOpsPerSec)}/s`,
    `${fmt(r.baselineOpsPerSec)}/s`,
    r.ratio.toFixed(2),
    `≥ ${r.goal.toFixed(2)} ${r.ratio >= r.goal ? "✓" : "✗"}`,
  ]);
  const head = ["benchmark", "causeway", "baseline", "ratio", "goal"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => cell.padEnd(widths[i]!)).join("  ");
  console.log(line(head));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const row of rows) console.log(line(row));
  return results.every((r) => r.ratio >= r.goal);
}

function fmt(n: number): string {
  return n >= 1000 ? `${(n / 1000).toFixed(1)}k` : n.toFixed(0);
}
