// `make bench`: every benchmark prints its throughput next to a hand-written baseline measured in the same
// run, and the ratio against the goal. Absolute numbers vary with the machine; ratios are the result.
import { cpus } from "node:os";
import { cryptoBenchmarks } from "./crypto.bench.ts";
import { gatewayThroughput } from "./gateway.bench.ts";
import { chainLatency, hopThroughput } from "./hop.bench.ts";
import { lineageIngest, lineageQueries } from "./lineage.bench.ts";
import { priorityLatency } from "./priority.bench.ts";
import { printTable, type Comparison } from "./measure.ts";

const results: Comparison[] = [];
console.log(`Causeway benchmarks — node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? "cpu"}`);
console.log("… signing and verification");
results.push(...(await cryptoBenchmarks()));
console.log("… agent hop throughput (runtime vs hand-written loop, telemetry on vs off)");
const hop = await hopThroughput();
results.push(...hop.results);
console.log("… 5-hop chain latency, one event in flight");
const chain = await chainLatency();
console.log("… priority lanes: critical flows' p99 under a background flood at 3× capacity vs on an idle mesh");
const priority = await priorityLatency();
console.log("… gateway: accepted events/s over HTTP and NATS vs a hand-written JetStream publisher");
const gateway = await gatewayThroughput();
results.push(...gateway.results);
console.log("… lineage ingest: verify + Merkle + SQLite vs a hand-written consume + verify loop");
const lineage = await lineageIngest();
results.push(...lineage.results);
console.log("… lineage why / trace / prove / consistency latency on a 1,000,000-record SQLite store");
const queries = await lineageQueries();
console.log("");
const met = printTable(results);
for (const note of [...hop.notes, ...chain.notes, ...priority.notes, ...gateway.notes, ...lineage.notes, ...queries.notes]) console.log(note);
const chainMet = chain.p50 <= 1.25 && chain.p99 <= 1.5;
console.log(met && chainMet && priority.met && queries.met ? "\nall goals met" : "\nsome goals not met (see the ✗ marks)");
