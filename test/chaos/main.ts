// `make chaos` / `npm run chaos`: every scenario of test/chaos/scenarios.ts in order, each on a fresh 3-node
// mesh, then a Markdown table of the results with the command and the date. Every publish outcome of a scenario is
// written as JSON lines under --log-dir (default a new directory under the system's tmp).
//   node test/chaos/main.ts [--only 1,4] [--flows N] [--rate R] [--log-dir DIR]   (CHAOS_LOG_LEVEL=info: the services log more)
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { FULL_LOAD, SCENARIOS, renderTable, runScenario, type Result } from "./scenarios.ts";

const { values } = parseArgs({ options: { only: { type: "string" }, flows: { type: "string" }, rate: { type: "string" }, "log-dir": { type: "string" } } });
const only = values.only?.split(",").map(Number);
const load = { ...FULL_LOAD, ...(values.flows ? { flows: Number(values.flows) } : {}), ...(values.rate ? { rate: Number(values.rate) } : {}) };
const logDir = values["log-dir"] ?? mkdtempSync(join(tmpdir(), "causeway-chaos-log-"));
mkdirSync(logDir, { recursive: true });
const command = `node test/chaos/main.ts${process.argv.slice(2).length > 0 ? ` ${process.argv.slice(2).join(" ")}` : ""}`;

const results: Result[] = [];
for (const [i, scenario] of SCENARIOS.entries()) {
  if (only && !only.includes(i + 1)) continue;
  const t0 = Date.now();
  const log = (line: string) => console.log(`  [${((Date.now() - t0) / 1000).toFixed(1)} s] ${line}`);
  console.log(`\n${i + 1}. ${scenario.name} — ${load.flows} flows at ${load.rate}/s, fault after ${load.faultAfterMs / 1000} s`);
  let result: Result;
  try {
    result = await runScenario(scenario, load, { log, keepLogsIn: join(logDir, `scenario-${i + 1}`) });
  } catch (err) {
    result = {
      scenario: scenario.name, posted: 0, accepted: 0, refused: {}, completed: 0, lost: 0, duplicated: 0, quarantined: {}, stallS: 0, stallFromS: 0, maxLatencyS: 0,
      lineageVerify: "fail", lineageDetail: "", deadServices: [], notes: "", outcomes: [], error: (err as Error).message.split("\n")[0]!,
    };
  }
  const file = join(logDir, `scenario-${i + 1}.jsonl`);
  writeFileSync(file, result.outcomes.map((o) => JSON.stringify(o)).join("\n") + "\n");
  console.log(`  accepted ${result.accepted}/${result.posted}, completed ${result.completed}, lost ${result.lost}, duplicated ${result.duplicated}, stall ${result.stallS.toFixed(1)} s (from ${result.stallFromS.toFixed(1)} s after the fault), max latency ${result.maxLatencyS.toFixed(1)} s, lineage verify ${result.lineageVerify} (${result.lineageDetail}); ${((Date.now() - t0) / 1000).toFixed(0)} s; outcomes in ${file}`);
  if (result.error) console.log(`  error: ${result.error}`);
  results.push(result);
}

console.log(`\n\`${command}\`, ${new Date().toISOString().slice(0, 10)}, ${load.flows} flows at ${load.rate}/s per scenario, fault ${load.faultAfterMs / 1000} s in:\n`);
console.log(renderTable(results));
process.exit(results.every((r) => r.lost === 0 && r.duplicated === 0 && r.lineageVerify === "pass" && r.error === undefined) ? 0 : 1);
