// Agent-runtime benchmarks (issue 3): the runtime against a hand-written loop doing the same work with the
// same crypto — consume → decode → verify → validate → sign → publish (kept in flight) → ack — in the same
// process, on the same server, alternating rounds over fresh inputs.
import { AckPolicy, DeliverPolicy, jetstream, type ConsumerConfig } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { trace } from "@opentelemetry/api";
import { BatchSpanProcessor, TracerProvider, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace";
import {
  KvBucket, NatsBinding, createEvent, createKeyring, createLogger, defaultLayout, deriveEventId, routeKey, startAgent, signEvent, verifyEvent, type Agent, type AgentDefinition,
  type MeshLayout, type RouteTable,
} from "../../services/kit/index.ts";
import { HOP_SCHEMA, HOP_TYPE, startBenchMesh, type BenchMesh } from "./bench-mesh.ts";
import type { Comparison } from "./measure.ts";

const ROUND = 1500;
const ROUNDS = 3;
const quiet = createLogger({ name: "bench", level: process.env.LOG_LEVEL ?? "silent" });
// The hop principals are the bench's own, not in infra/principals.json: they subscribe to no fact (since issue 13
// the runtime checks an agent's subscriptions against its principal's entry there).
const layout: MeshLayout = { ...defaultLayout(), subscriptionConsumers: () => Object.freeze([]) };

/** A no-op hop: passes its input's data on to `next` as one output. */
function hopDefinition(n: number, next: string): AgentDefinition<{ seq: number; payload: string }> {
  return {
    principal: `hop${n}`, capability: `hop${n}`, major: 1, version: "0.0.0", description: "bench hop",
    accepts: { [HOP_TYPE]: HOP_SCHEMA }, emits: { [HOP_TYPE]: HOP_SCHEMA }, concurrency: 64,
    handler: (input) => [{ to: next, type: HOP_TYPE, data: { ...input.data, hop: n } }],
  };
}

const fromSeq = (seq: number): Partial<ConsumerConfig> => ({ deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: seq, max_ack_pending: 256 });

/** The hand-written loop. Returns a stop function and a counter of acked inputs. */
async function handWritten(mesh: BenchMesh, opts: { n: number; filter: string; next: string; durable: string; startSeq?: number }) {
  const js = jetstream(mesh.nc);
  const keyring = createKeyring(Object.values(mesh.keys));
  const validate = mesh.schemas.validator(HOP_SCHEMA);
  const key = mesh.keys[`hop${opts.n}`]!;
  await mesh.jsm.consumers.add("MESH_CAP", {
    durable_name: opts.durable, filter_subject: opts.filter, ack_policy: AckPolicy.Explicit, max_ack_pending: 256,
    ...(opts.startSeq === undefined ? { deliver_policy: DeliverPolicy.New } : fromSeq(opts.startSeq)),
  });
  const messages = await (await js.consumers.get("MESH_CAP", opts.durable)).consume({ max_messages: 64 });
  const counter = { acked: 0 };
  void (async () => {
    for await (const m of messages) {
      try {
      const v = verifyEvent(NatsBinding.toEvent(m), keyring);
      const data = JSON.parse(Buffer.from(v.event.data).toString("utf8")) as Record<string, unknown>;
      validate(data);
      const out = signEvent(createEvent({
        id: deriveEventId(v.event, `baseline-${opts.n}`, 0), source: `causeway://hop${opts.n}`, type: HOP_TYPE, time: new Date().toISOString(),
        datacontenttype: "application/json", dataschema: HOP_SCHEMA,
        extensions: { correlationid: String(v.event.extensions.correlationid ?? v.event.id), causationid: v.event.id, traceparent: String(v.event.extensions.traceparent) },
        data: JSON.stringify({ ...data, hop: opts.n }),
      }), key);
      const { headers, data: bytes } = NatsBinding.binary(out);
      js.publish(opts.next, bytes, { headers, msgID: out.id }).then(() => { m.ack(); counter.acked++; }, () => m.nak());
      } catch (err) {
        // A benchmark that silently stalls is worse than one that fails loudly.
        console.error(`hand-written hop ${opts.n} failed:`, err);
        process.exit(1);
      }
    }
  })();
  return { counter, stop: async () => { await messages.close(); await mesh.jsm.consumers.delete("MESH_CAP", opts.durable); } };
}

async function preload(mesh: BenchMesh, subject: string, count: number, extensions?: Record<string, string>): Promise<number> {
  const js = jetstream(mesh.nc);
  let first = 0;
  for (let i = 0; i < count; i += 256) {
    const acks = await Promise.all(Array.from({ length: Math.min(256, count - i) }, () => {
      const e = mesh.input(extensions);
      const { headers, data } = NatsBinding.binary(e);
      return js.publish(subject, data, { headers, msgID: e.id });
    }));
    if (i === 0) first = acks[0]!.seq;
  }
  return first;
}

async function untilCount(count: () => number, target: number): Promise<void> {
  while (count() < target) await new Promise((r) => setImmediate(r));
}

interface RoundResult { opsPerSec: number; cpuUsPerOp: number }

async function timed(n: number, run: () => Promise<void>): Promise<RoundResult> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  await run();
  const ms = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return { opsPerSec: n / (ms / 1000), cpuUsPerOp: (used.user + used.system) / n };
}

async function agentRound(mesh: BenchMesh, startSeq: number, log = quiet, def: Partial<AgentDefinition<{ seq: number; payload: string }>> = {}): Promise<RoundResult> {
  let agent: Agent | undefined;
  const result = await timed(ROUND, async () => {
    agent = await startAgent(mesh.nc, { ...hopDefinition(1, "mesh.cap.hop2.v1"), ...def }, { trust: mesh.trust, signingKey: mesh.keys.hop1!, schemas: mesh.schemas, consumer: fromSeq(startSeq), log, layout });
    await untilCount(() => agent!.stats().processed, ROUND);
  });
  await agent!.stop();
  await mesh.jsm.consumers.delete("MESH_CAP", "cap-hop1-v1");
  return result;
}

async function baselineRound(mesh: BenchMesh, startSeq: number): Promise<RoundResult> {
  let loop: Awaited<ReturnType<typeof handWritten>> | undefined;
  const result = await timed(ROUND, async () => {
    loop = await handWritten(mesh, { n: 1, filter: "mesh.cap.hop1.v1", next: "mesh.cap.hop2.v1", durable: "baseline-hop1", startSeq });
    await untilCount(() => loop!.counter.acked, ROUND);
  });
  await loop!.stop();
  return result;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Hop throughput and CPU per hop, runtime vs hand-written; then telemetry + logging on vs off. */
export async function hopThroughput(): Promise<{ results: Comparison[]; notes: string[] }> {
  await using mesh = await startBenchMesh(2);
  await agentRound(mesh, await preload(mesh, "mesh.cap.hop1.v1", ROUND)); // warm-up
  const agent: RoundResult[] = [], base: RoundResult[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const seq = await preload(mesh, "mesh.cap.hop1.v1", ROUND);
    if (r % 2 === 0) { agent.push(await agentRound(mesh, seq)); base.push(await baselineRound(mesh, seq)); }
    else { base.push(await baselineRound(mesh, seq)); agent.push(await agentRound(mesh, seq)); }
  }
  // Telemetry on: a real tracer SDK recording every span (exported in batches to a sink) and the logger at its
  // default level (info; per-message lines are debug). Off: no tracer provider, logger silent.
  const sink: SpanExporter = { export: (_spans: ReadableSpan[], done) => done({ code: 0 }), shutdown: () => Promise.resolve() };
  const provider = new TracerProvider({ spanProcessors: [new BatchSpanProcessor({ exporter: sink, maxQueueSize: 65_536, maxExportBatchSize: 4096 })] });
  const infoLog = createLogger({ name: "bench", level: "info", destination: { write: () => true } as unknown as NodeJS.WritableStream });
  const on: RoundResult[] = [], off: RoundResult[] = [];
  const withTelemetry = async () => {
    const seq = await preload(mesh, "mesh.cap.hop1.v1", ROUND);
    trace.setGlobalTracerProvider(provider);
    on.push(await agentRound(mesh, seq, infoLog));
    trace.disable();
  };
  const without = async () => off.push(await agentRound(mesh, await preload(mesh, "mesh.cap.hop1.v1", ROUND)));
  // Five rounds each, alternating which goes first: the effect measured is small next to machine noise.
  for (let r = 0; r < 5; r++) {
    if (r % 2 === 0) { await withTelemetry(); await without(); } else { await without(); await withTelemetry(); }
  }
  await provider.shutdown();
  // Version routing on: hop2.v1 (where hop 1's outputs go) in a rollout at 10 %. Every input is a flow of its own,
  // so every output is routed afresh: its flow's share bucket (a hash), the table at its epoch, its lane.
  const routes = await new Kvm(mesh.nc).open(KvBucket.Routes);
  const rollout: RouteTable = {
    capability: "hop2.v1", stable: "1.0.0", candidate: { version: "1.1.0", share: 10 }, retiring: [], lanes: { "1.0.0": "l1", "1.1.0": "l2" },
    updatedAt: new Date().toISOString(), reason: "bench",
  };
  const routed: RoundResult[] = [], plain: RoundResult[] = [];
  const withRouting = async () => {
    const seq = await preload(mesh, "mesh.cap.hop1.v1", ROUND);
    await routes.put(routeKey("hop2", 1), JSON.stringify(rollout));
    routed.push(await agentRound(mesh, seq));
    await routes.delete(routeKey("hop2", 1));
  };
  const unrouted = async () => plain.push(await baselineRound(mesh, await preload(mesh, "mesh.cap.hop1.v1", ROUND)));
  for (let r = 0; r < 5; r++) {
    if (r % 2 === 0) { await withRouting(); await unrouted(); } else { await unrouted(); await withRouting(); }
  }
  // Budgets on: every input a flow of its own with a budget (as the gateway signs one), and the hop a fixed cost.
  // Its first run, with one output: an unforked chain, checked against the spend it carries (no ledger round trip).
  // Forked: the same inputs one step into a flow that forked (depth 1, no carry), each checked and charged in the
  // flow ledger — a read of the flow's records and a compare-and-set over them per input; reported, not a goal.
  const BUDGET = { budgetcost: "1000", budgettokens: "100000", budgetsteps: "64" };
  const FORKED = { ...BUDGET, flowdepth: "1" };
  const budgeted: RoundResult[] = [], forked: RoundResult[] = [], unbudgeted: RoundResult[] = [];
  const withBudgets = async () => budgeted.push(await agentRound(mesh, await preload(mesh, "mesh.cap.hop1.v1", ROUND, BUDGET), quiet, { cost: { cost: 1 } }));
  const withLedger = async () => forked.push(await agentRound(mesh, await preload(mesh, "mesh.cap.hop1.v1", ROUND, FORKED), quiet, { cost: { cost: 1 } }));
  const handWrittenRound = async () => unbudgeted.push(await baselineRound(mesh, await preload(mesh, "mesh.cap.hop1.v1", ROUND)));
  for (let r = 0; r < 5; r++) {
    if (r % 2 === 0) { await withBudgets(); await withLedger(); await handWrittenRound(); } else { await handWrittenRound(); await withLedger(); await withBudgets(); }
  }
  const a = median(agent.map((x) => x.opsPerSec)), b = median(base.map((x) => x.opsPerSec));
  const cpuA = median(agent.map((x) => x.cpuUsPerOp)), cpuB = median(base.map((x) => x.cpuUsPerOp));
  return {
    results: [
      { name: "hop: no-op agent vs hand-written loop", candidate: "startAgent", baseline: "hand-written", candidateOpsPerSec: a, baselineOpsPerSec: b, ratio: a / b, goal: 0.85 },
      { name: "hop: version routing on (a rollout at 10 %) vs hand-written", candidate: "startAgent, routed", baseline: "hand-written", candidateOpsPerSec: median(routed.map((x) => x.opsPerSec)), baselineOpsPerSec: median(plain.map((x) => x.opsPerSec)), ratio: median(routed.map((x) => x.opsPerSec)) / median(plain.map((x) => x.opsPerSec)), goal: 0.85 },
      { name: "hop: budgets on (each input a budgeted flow, unforked: checked against its carry) vs hand-written", candidate: "startAgent, budgets", baseline: "hand-written", candidateOpsPerSec: median(budgeted.map((x) => x.opsPerSec)), baselineOpsPerSec: median(unbudgeted.map((x) => x.opsPerSec)), ratio: median(budgeted.map((x) => x.opsPerSec)) / median(unbudgeted.map((x) => x.opsPerSec)), goal: 0.85 },
      { name: "hop: telemetry + logs on vs off", candidate: "tracer SDK + info logs", baseline: "both off", candidateOpsPerSec: median(on.map((x) => x.opsPerSec)), baselineOpsPerSec: median(off.map((x) => x.opsPerSec)), ratio: median(on.map((x) => x.opsPerSec)) / median(off.map((x) => x.opsPerSec)), goal: 0.9 },
    ],
    notes: [
      `CPU per hop in this process (client side): runtime ${cpuA.toFixed(0)} µs, hand-written ${cpuB.toFixed(0)} µs (ratio ${(cpuA / cpuB).toFixed(2)})`,
      `hop with budgets on a forked flow (a ledger read and compare-and-set per input): ${(median(forked.map((x) => x.opsPerSec)) / median(unbudgeted.map((x) => x.opsPerSec))).toFixed(2)} of the hand-written loop (no goal: the price of exact budgets across a fan-out)`,
    ],
  };
}

/** A 5-hop chain with one event in flight: latency of the runtime chain against a hand-written chain. */
export async function chainLatency(): Promise<{ notes: string[]; p50: number; p99: number }> {
  const HOPS = 5, SAMPLES = 400, WARMUP = 30, SAMPLE_TIMEOUT_MS = 10_000;
  await using mesh = await startBenchMesh(HOPS);
  const js = jetstream(mesh.nc);
  // One event in flight at a time, the two chains sampled alternately so both see the same machine noise.
  const endOf = async (prefix: "hop" | "bhop") => {
    const done = await (await js.consumers.get("MESH_EVT", { filter_subjects: [`mesh.evt.bench.${prefix}.v1`], deliver_policy: DeliverPolicy.New })).consume();
    return { done, it: done[Symbol.asyncIterator]() };
  };
  const sample = async (prefix: "hop" | "bhop", end: Awaited<ReturnType<typeof endOf>>) => {
    const e = mesh.input();
    const { headers, data } = NatsBinding.binary(e);
    const start = performance.now();
    await js.publish(`mesh.cap.${prefix}1.v1`, data, { headers, msgID: e.id });
    // A chain that loses or refuses the event fails loudly instead of waiting forever.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([end.it.next(), new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the ${prefix} chain did not deliver within ${SAMPLE_TIMEOUT_MS} ms (LOG_LEVEL=warn shows why)`)), SAMPLE_TIMEOUT_MS);
    })]).finally(() => clearTimeout(timer));
    return performance.now() - start;
  };
  const agents: Agent[] = [];
  for (let n = 1; n <= HOPS; n++) {
    // The chain ends in a fact, on the subject of its own type and major (the runtime refuses any other).
    const next = n === HOPS ? "mesh.evt.bench.hop.v1" : `mesh.cap.hop${n + 1}.v1`;
    agents.push(await startAgent(mesh.nc, hopDefinition(n, next), { trust: mesh.trust, signingKey: mesh.keys[`hop${n}`]!, schemas: mesh.schemas, log: quiet, consumer: { deliver_policy: DeliverPolicy.New }, layout }));
  }
  const loops = [];
  for (let n = 1; n <= HOPS; n++) {
    loops.push(await handWritten(mesh, { n, filter: `mesh.cap.bhop${n}.v1`, next: n === HOPS ? "mesh.evt.bench.bhop.v1" : `mesh.cap.bhop${n + 1}.v1`, durable: `bhop${n}` }));
  }
  const ends = { hop: await endOf("hop"), bhop: await endOf("bhop") };
  const runtime: number[] = [], baseline: number[] = [];
  for (let i = 0; i < SAMPLES + WARMUP; i++) {
    const order = i % 2 === 0 ? (["hop", "bhop"] as const) : (["bhop", "hop"] as const);
    for (const prefix of order) {
      const ms = await sample(prefix, ends[prefix]);
      if (i >= WARMUP) (prefix === "hop" ? runtime : baseline).push(ms);
    }
  }
  // close() on an ordered consumer can wait indefinitely; stop() ends the iterator.
  ends.hop.done.stop();
  ends.bhop.done.stop();
  runtime.sort((a, b) => a - b);
  baseline.sort((a, b) => a - b);
  for (const a of agents) await a.stop();
  for (const l of loops) await l.stop();
  const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
  const p50 = pct(runtime, 0.5) / pct(baseline, 0.5), p99 = pct(runtime, 0.99) / pct(baseline, 0.99);
  return {
    p50, p99,
    notes: [
      `5-hop chain, one event in flight (${SAMPLES} samples): runtime p50 ${pct(runtime, 0.5).toFixed(2)} ms / p99 ${pct(runtime, 0.99).toFixed(2)} ms; ` +
        `hand-written p50 ${pct(baseline, 0.5).toFixed(2)} ms / p99 ${pct(baseline, 0.99).toFixed(2)} ms; ` +
        `ratio p50 ${p50.toFixed(2)} (goal ≤ 1.25 ${p50 <= 1.25 ? "✓" : "✗"}), p99 ${p99.toFixed(2)} (goal ≤ 1.5 ${p99 <= 1.5 ? "✓" : "✗"})`,
    ],
  };
}
