// `make bench`: every benchmark prints its throughput next to a hand-written baseline measured in the same
// run, and the ratio against the goal. Absolute numbers vary with the machine; ratios are the result.
import { cpus } from "node:os";
import { cryptoBenchmarks } from "./crypto.bench.ts";
import { printTable, type Comparison } from "./measure.ts";

const results: Comparison[] = [];
console.log(`Causeway benchmarks — node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}`);
console.log("… signing and verification");
results.push(...(await cryptoBenchmarks()));
console.log("");
const met = printTable(results);
console.log(met ? "\nall goals met" : "\nsome goals not met (see the ✗ rows)");
