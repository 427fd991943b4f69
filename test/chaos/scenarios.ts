// Chaos scenarios with Jepsen-style accounting (issue 14, item 5). Each scenario runs on a fresh 3-node mesh
// (test/chaos/mesh.ts): report flows are POSTed to the gateway at a steady rate, one fault is injected a few
// seconds in, and once the fault has healed and the load is done the run waits for quiescence (every accepted
// flow has its report.published, or a deadline passes). Every publish outcome is kept; the result counts what
// was accepted, completed, lost, duplicated and quarantined, the longest stall after the fault, and whether
// `causeway lineage verify` passes. The network partitions run on a mesh whose nodes each have a network
// namespace of their own (mesh.ts, netns.ts); where the machine does not allow that, they SIGSTOP the same node
// instead and say so in the notes.
import { cpSync, existsSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { NODES, startChaosMesh, type ChaosMesh, type Completion, type PublishOutcome } from "./mesh.ts";

/** How a scenario loads the mesh. */
export interface Load {
  /** Flows POSTed in all. */
  readonly flows: number;
  /** POSTs a second. */
  readonly rate: number;
  /** The fault starts this long after the first POST. */
  readonly faultAfterMs: number;
  /** POSTs go on at least this long after the fault healed (past `flows` if need be): does the mesh take work again? */
  readonly afterHealMs: number;
  /** After the fault healed and the last POST answered, how long accepted flows may take to complete. */
  readonly quiesceMs: number;
}

export const FULL_LOAD: Load = { flows: 60, rate: 3, faultAfterMs: 4_000, afterHealMs: 10_000, quiesceMs: 90_000 };

/** One fault: breaks the mesh, heals it, and returns notes on what it did (which node, what restarted it). */
export interface Scenario {
  readonly name: string;
  /** Lineage on PostgreSQL instead of SQLite. */
  readonly postgres?: boolean;
  /** Every node in a network namespace of its own (`mesh.net`), when the machine allows it. */
  readonly network?: boolean;
  readonly fault: (mesh: ChaosMesh, log: (line: string) => void) => Promise<string>;
}

export interface Result {
  readonly scenario: string;
  readonly posted: number;
  readonly accepted: number;
  /** Non-202 answers by status (0: no answer). */
  readonly refused: Record<string, number>;
  readonly completed: number;
  readonly lost: number;
  readonly duplicated: number;
  readonly quarantined: Record<string, number>;
  /**
   * Longest gap without a completed flow from the fault's start until the last POST was answered or the last
   * completion (or the deadline while flows were lost): a mesh that accepts nothing stalls too.
   */
  readonly stallS: number;
  /** When the longest stall began, in seconds after the fault's start. */
  readonly stallFromS: number;
  /** Longest time from a POST to its flow's first report.published. */
  readonly maxLatencyS: number;
  readonly lineageVerify: "pass" | "fail";
  readonly lineageDetail: string;
  /** Service replicas whose process was gone at the end. */
  readonly deadServices: string[];
  readonly notes: string;
  readonly outcomes: readonly PublishOutcome[];
  /** Set when the scenario itself failed to run (the mesh did not come up, the fault could not be applied). */
  readonly error?: string;
}

const kill = (pid: number | undefined, signal: NodeJS.Signals) => {
  if (pid === undefined) throw new Error("no such process to signal");
  process.kill(pid, signal);
};

/** Waits until `pid` is gone (a signalled process exits on its own time). */
async function exited(pid: number, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { process.kill(pid, 0); } catch { return; }
    if (Date.now() > deadline) throw new Error(`pid ${pid} still runs after ${timeoutMs} ms`);
    await delay(50);
  }
}

/** SIGKILL of service replicas; if no supervisor has restarted them within `graceMs`, `causeway start` does. */
async function killServices(mesh: ChaosMesh, names: string[], downMs: number, log: (line: string) => void): Promise<string> {
  const before = new Map(names.map((n) => [n, mesh.servicePids(n)]));
  for (const [name, pids] of before) for (const pid of pids) { kill(pid, "SIGKILL"); log(`SIGKILL ${name} (pid ${pid})`); }
  for (const pids of before.values()) for (const pid of pids) await exited(pid);
  await delay(downMs); // the fault's duration: a deliberate wait
  const notes: string[] = [];
  const unrestarted = names.filter((n) => mesh.servicePids(n).filter((p) => !before.get(n)!.includes(p)).length === 0);
  for (const name of names.filter((n) => !unrestarted.includes(n))) notes.push(`${name} restarted by a supervisor`);
  if (unrestarted.length > 0) {
    // `causeway start` takes one service (or none: every service that is not running).
    const codes = [];
    for (const name of unrestarted) {
      const res = await mesh.cli(["start", name]);
      log(`causeway start ${name} → ${res.code}${res.code === 0 ? "" : `: ${res.stderr.trim()}`}`);
      codes.push(`\`causeway start ${name}\` (exit ${res.code})`);
    }
    notes.push(`nothing restarted ${unrestarted.join(", ")} within ${downMs / 1000} s: the scenario ran ${codes.join(", ")}`);
  }
  return notes.join("; ");
}

/** SIGSTOP of node `node` for `ms`, then SIGCONT and the wait for the cluster. */
async function stopNode(mesh: ChaosMesh, node: number, ms: number, log: (line: string) => void, why: string): Promise<void> {
  kill(mesh.nodePid(node), "SIGSTOP");
  log(`SIGSTOP causeway-${node} (${why})`);
  await delay(ms); // the fault's duration
  kill(mesh.nodePid(node), "SIGCONT");
  await mesh.waitForCluster();
}

/**
 * A network fault on node `node` for `ms` (`apply` on the mesh's own network), healed, then the wait for the
 * cluster; without namespaces, a SIGSTOP of the same node, which the notes say.
 */
async function partition(mesh: ChaosMesh, node: number, ms: number, log: (line: string) => void, what: string, apply: (net: NonNullable<ChaosMesh["net"]>) => Promise<void>): Promise<string> {
  if (mesh.net === undefined) {
    await stopNode(mesh, node, ms, log, `instead of a partition: ${mesh.netUnavailable ?? "no network namespaces"}`);
    return `network namespaces unavailable (${mesh.netUnavailable ?? "?"}): SIGSTOP of causeway-${node} for ${ms / 1000} s instead`;
  }
  await apply(mesh.net);
  log(`partition: ${what}`);
  await delay(ms); // the fault's duration
  await mesh.net.heal();
  log("partition healed");
  await mesh.waitForCluster();
  return mesh.net.description;
}

/** SIGKILL of the node leading MESH_CAP; started again after `downMs`. */
export function leaderKill(downMs: number): Scenario {
  return {
    name: `SIGKILL the MESH_CAP stream leader node, restart after ${downMs / 1000} s`,
    async fault(mesh, log) {
      const leader = await mesh.streamLeader("MESH_CAP");
      kill(mesh.nodePid(leader), "SIGKILL");
      log(`SIGKILL causeway-${leader} (MESH_CAP leader)`);
      await delay(downMs); // the fault's duration
      await mesh.startNode(leader);
      await mesh.waitForCluster();
      return `leader was causeway-${leader}`;
    },
  };
}

/** SIGKILL of the researcher; `causeway start` after `graceMs` unless a supervisor restarted it. */
export function agentKill(graceMs: number): Scenario {
  return { name: "SIGKILL an agent (researcher) mid-flow", fault: (mesh, log) => killServices(mesh, ["researcher"], graceMs, log) };
}

export const SCENARIOS: readonly Scenario[] = [
  leaderKill(10_000),
  {
    name: "SIGSTOP the node the services are connected to for 15 s, then SIGCONT",
    async fault(mesh, log) {
      const { node, counts } = await mesh.servicesNode();
      await stopNode(mesh, node, 15_000, log, `service connections per node: ${counts.join("/")}`);
      return `causeway-${node} stopped (service connections per node ${counts.join("/")})`;
    },
  },
  {
    name: "rolling restart of all three nodes (lame duck mode, start, wait for the cluster)",
    async fault(mesh, log) {
      // As docs/operations.md's upgrade says: `nats-server --signal ldm=<pid>` (the real binary), wait for the
      // node to exit, start it on the same config and store, wait for the whole cluster before the next node.
      for (let i = 1; i <= NODES; i++) {
        const pid = mesh.nodePid(i)!;
        const ldm = await mesh.signalNode(i, "ldm");
        if (ldm.code !== 0) throw new Error(`nats-server --signal ldm=${pid} failed (${ldm.code}): ${ldm.stderr.trim()}`);
        log(`causeway-${i} (pid ${pid}) in lame duck mode`);
        await exited(pid, 60_000);
        await mesh.startNode(i);
        log(`restarted causeway-${i}`);
        await mesh.waitForCluster();
      }
      return "one node at a time (`nats-server --signal ldm=<pid>`), each after the cluster was whole again";
    },
  },
  agentKill(10_000),
  {
    name: "SIGKILL the coordinator and lineage mid-flow, restart them",
    fault: (mesh, log) => killServices(mesh, ["coordinator", "lineage"], 5_000, log),
  },
  {
    name: "all three nodes down (SIGKILL) for 20 s",
    async fault(mesh, log) {
      for (let i = 1; i <= NODES; i++) kill(mesh.nodePid(i), "SIGKILL");
      log("SIGKILL causeway-1, -2, -3");
      await delay(20_000);
      for (let i = 1; i <= NODES; i++) await mesh.startNode(i);
      await mesh.waitForCluster(90_000);
      return "";
    },
  },
  {
    name: "PostgreSQL (lineage's store) SIGKILLed, restarted after 10 s",
    postgres: true,
    async fault(mesh, log) {
      log("SIGKILL postgres");
      await mesh.postgres!.crashAndRestart(10_000);
      log("postgres accepts connections again");
      if (mesh.servicePids("lineage").length > 0) return "lineage on PostgreSQL (LINEAGE_DATABASE_URL); lineage rode it out";
      // Nothing supervises lineage: the scenario starts it again, to see whether its log is whole afterwards.
      const res = await mesh.cli(["start", "lineage"]);
      log(`lineage had exited; causeway start lineage → ${res.code}`);
      return `lineage on PostgreSQL (LINEAGE_DATABASE_URL); lineage exited during the outage, the scenario ran \`causeway start lineage\` (exit ${res.code})`;
    },
  },
  {
    name: "network partition: the node the services are connected to cut off from everything for 15 s (its bridge port down), then healed",
    network: true,
    async fault(mesh, log) {
      const { node, counts } = await mesh.servicesNode();
      const net = await partition(mesh, node, 15_000, log, `causeway-${node} isolated (service connections per node: ${counts.join("/")})`, (n) => n.isolate(node));
      return `causeway-${node} isolated (service connections per node ${counts.join("/")}); ${net}`;
    },
  },
  {
    name: "network partition: the MESH_CAP stream leader cut off from the other two nodes for 15 s (every client still reaches it), then healed",
    network: true,
    async fault(mesh, log) {
      const leader = await mesh.streamLeader("MESH_CAP");
      const { counts } = await mesh.servicesNode();
      const peers = Array.from({ length: NODES }, (_, i) => i + 1).filter((i) => i !== leader);
      const net = await partition(mesh, leader, 15_000, log, `causeway-${leader} (MESH_CAP leader) cut off from causeway-${peers.join(", -")}; service connections per node: ${counts.join("/")}`, (n) => n.cut(leader, peers));
      return `leader was causeway-${leader}, afterwards causeway-${await mesh.streamLeader("MESH_CAP")} (service connections per node ${counts.join("/")}); ${net}`;
    },
  },
];

/** Copies the service and node logs of a mesh's data directory to `dir`. */
function copyLogs(dataDir: string, dir: string): void {
  for (const [from, to] of [["logs", "services"], ["cluster", "nodes"]] as const) {
    const src = join(dataDir, "nats", from);
    if (existsSync(src)) cpSync(src, join(dir, to), { recursive: true, filter: (f) => !f.includes("/store") && !f.endsWith(".conf") && !f.includes("password") });
  }
}

/** The longest gap from `from` through the sorted completion times, and on to `until` when given: its length and start. */
export function longestStall(from: number, completions: readonly number[], until?: number): { ms: number; at: number } {
  let prev = from;
  let longest = { ms: 0, at: from };
  for (const t of [...completions, ...(until === undefined ? [] : [until])].filter((c) => c >= from).sort((a, b) => a - b)) {
    if (t - prev > longest.ms) longest = { ms: t - prev, at: prev };
    prev = t;
  }
  return longest;
}

/** Runs one scenario on a fresh mesh and accounts for every flow. */
export async function runScenario(scenario: Scenario, load: Load, opts: { log?: (line: string) => void; keepLogsIn?: string } = {}): Promise<Result> {
  const log = opts.log ?? (() => undefined);
  await using mesh = await startChaosMesh({ postgres: scenario.postgres ?? false, network: scenario.network ?? false });
  // The services' and nodes' logs outlive the mesh's data directory when asked (dispose runs after this copy).
  await using _logs = { [Symbol.asyncDispose]: async () => { if (opts.keepLogsIn) copyLogs(mesh.dataDir, opts.keepLogsIn); } };
  const started = Date.now();
  let healed: number | undefined;
  const outcomes: Promise<PublishOutcome>[] = [];
  const posting = (async () => {
    for (let i = 0; i < load.flows || healed === undefined || Date.now() < healed + load.afterHealMs; i++) {
      const due = started + (i * 1000) / load.rate;
      if (due > Date.now()) await delay(due - Date.now()); // the load's rate
      outcomes.push(mesh.post(i, started));
    }
  })();
  await delay(load.faultAfterMs); // the fault comes a few seconds in, by design
  const faultAt = Date.now();
  log(`fault: ${scenario.name}`);
  let notes = "";
  let error: string | undefined;
  try {
    notes = await scenario.fault(mesh, log);
  } catch (err) {
    error = `the fault failed: ${(err as Error).message}`;
    log(error);
  }
  healed = Date.now();
  log(`healed after ${((healed - faultAt) / 1000).toFixed(1)} s`);
  await posting;
  const published = await Promise.all(outcomes);
  const accepted = published.filter((o) => o.status === 202 && o.correlationid !== undefined);
  const wanted = new Set(accepted.map((o) => o.correlationid!));
  const deadline = Math.max(healed, Date.now()) + load.quiesceMs;
  let completions: Completion[] = [];
  for (;;) {
    try {
      completions = (await mesh.completions()).filter((c) => wanted.has(c.correlationid));
    } catch (err) {
      log(`reading report.published: ${(err as Error).message}`);
    }
    const done = new Set(completions.map((c) => c.correlationid));
    if (done.size >= wanted.size || Date.now() > deadline) break;
    await delay(1_000); // polling the stream between reads
  }
  const perFlow = new Map<string, number>();
  for (const c of completions) perFlow.set(c.correlationid, (perFlow.get(c.correlationid) ?? 0) + 1);
  const lost = [...wanted].filter((c) => !perFlow.has(c));
  const refused: Record<string, number> = {};
  for (const o of published.filter((p) => p.status !== 202)) refused[String(o.status)] = (refused[String(o.status)] ?? 0) + 1;
  const quarantined: Record<string, number> = {};
  for (const q of await mesh.quarantined().catch(() => [])) {
    if (q.correlationid !== undefined && !wanted.has(q.correlationid)) continue;
    quarantined[q.reason] = (quarantined[q.reason] ?? 0) + 1;
  }
  // Lineage checkpoints every second; verify once it has had the time to index the quiet mesh.
  const verify = await mesh.cli(["lineage", "verify"]);
  const first = new Map<string, number>();
  for (const c of completions) first.set(c.correlationid, Math.min(first.get(c.correlationid) ?? Infinity, c.storedAt));
  const firstByFlow = [...first.values()];
  const stall = longestStall(faultAt, firstByFlow, lost.length > 0 ? deadline : Math.max(...published.map((o) => started + o.at + o.ms)));
  const latencies = accepted.flatMap((o) => (first.has(o.correlationid!) ? [first.get(o.correlationid!)! - (started + o.at)] : []));
  return {
    scenario: scenario.name, posted: published.length, accepted: accepted.length, refused,
    completed: perFlow.size, lost: lost.length, duplicated: [...perFlow.values()].filter((n) => n > 1).length, quarantined,
    stallS: stall.ms / 1000, stallFromS: (stall.at - faultAt) / 1000,
    maxLatencyS: Math.max(0, ...latencies) / 1000,
    lineageVerify: verify.code === 0 ? "pass" : "fail", lineageDetail: (verify.code === 0 ? verify.stdout : `${verify.stdout}\n${verify.stderr}`).trim().split("\n").slice(-3).join(" "),
    deadServices: mesh.deadServices(), notes, outcomes: published, ...(error === undefined ? {} : { error }),
  };
}

const fmt = (r: Record<string, number>) => Object.entries(r).map(([k, v]) => `${k}: ${v}`).join(", ") || "0";

/** The Markdown table of a run (a cell's line breaks, e.g. a multi-line error, become spaces: a row is one line). */
export function renderTable(results: readonly Result[]): string {
  const rows = results.map((r) => [
    r.scenario, String(r.posted), String(r.accepted), fmt(r.refused), String(r.completed), String(r.lost), String(r.duplicated),
    fmt(r.quarantined), r.stallS.toFixed(1), r.maxLatencyS.toFixed(1), r.lineageVerify, r.deadServices.join(", ") || "none", [r.notes, r.error].filter(Boolean).join("; "),
  ]);
  const head = ["scenario", "posted", "accepted (202)", "refused (status: n)", "completed", "lost", "duplicated", "quarantined", "stall s", "max latency s", "lineage verify", "services dead at the end", "notes"];
  return [head, head.map(() => "---"), ...rows].map((cells) => `| ${cells.map((c) => c.replace(/\|/g, "\\|").replace(/\s*\n\s*/g, " ")).join(" | ")} |`).join("\n");
}
