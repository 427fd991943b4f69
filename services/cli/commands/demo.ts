// `causeway demo`: the mesh end to end with embedded defaults, then everything stops. A nats-server with the
// rendered least-privilege config, streams, buckets and trust store; the coordinator and the five agents as
// child processes; a report request POSTed to the gateway as an upstream would (one of its questions chases a rumor, so one finding is quarantined
// for low confidence and the report is published at its deadline); publishing the report outside the mesh is
// critical, so the coordinator holds it until an approver approves with `causeway approve` — which the demo
// does, as approver-alice — and then grants it; the flow printed as a tree.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  KvBucket, NatsBinding, connectAs, controlRequest, dataDir, dataJson, inboxPrefix, loadLayout, openFlowLedger, openTrustStore, seedPath, uuidv7, type CloudEvent, type MeshLayout, type TrustStore,
} from "../../kit/index.ts";
import { lineageEndpoint } from "../../lineage/contract.ts";
import { Svcm } from "@nats-io/services";
import { devTokenPath, ensureDevTokens } from "./tokens.ts";
import { readinessProblems, spawnServices, waitForServices, type ServiceProcess } from "../processes.ts";
import { applyMeshInfra, ensureIdentities, seedTrust } from "../bootstrap.ts";
import { collectFlow, renderFlow } from "../flow.ts";
import { natsBinary, repoRoot, spawnNatsServer, type NatsProcess } from "../nats-process.ts";
import { onOutputClosed } from "../output.ts";
import { step } from "../progress.ts";
import { renderInfra, renderServerConfig } from "./infra.ts";

const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
const DEMO_SOURCE = "https://demo.causeway.dev/requests";
const WAIT_MS = 30_000;

export async function run(args: string[]): Promise<number> {
  if (args.length > 0) {
    console.error("usage: causeway demo (CW_ERR_USAGE)");
    return 2;
  }
  const started = performance.now();
  const data = dataDir();
  const demoDir = join(data, "demo");
  let server: NatsProcess | undefined;
  let agents: ServiceProcess[] = [];
  let trust: TrustStore | undefined;
  const connections: NatsConnection[] = [];
  // A reader that stops reading (`make demo | head`) stops the demo: its server and services with it (output.ts).
  const stopAll = async () => {
    await Promise.all(agents.map((a) => a.stop(2_000)));
    await trust?.close().catch(() => undefined);
    for (const nc of connections) await nc.close().catch(() => undefined);
    await server?.stop();
  };
  const unregister = onOutputClosed(stopAll);
  console.log("Causeway demo — a report request through planner → researcher → verifier → reporter → publisher (critical: approved, then granted), every hop signed and verified\n");
  try {
    const layout = loadLayout();
    const principals = layout.principals;
    const subjects = layout.subjects;
    await step("identities", () => ensureIdentities(principals, data), (n) => `${Object.keys(principals.principals).length} principals, ${n} new NKey seeds in ${join(data, "keys")}`);
    await step("upstream tokens", () => ensureDevTokens(data), (created) => `${created.length} new development bearer tokens in ${join(data, "tokens")}`);
    const config = await step("nats-server config", () => {
      const rendered = renderInfra({ dataDir: data, principals, prefix: layout.prefix });
      rmSync(demoDir, { recursive: true, force: true });
      mkdirSync(demoDir, { recursive: true });
      const path = join(demoDir, "server.conf");
      // Free ports; the same settings as every Causeway server (max_payload, sync_interval: always).
      writeFileSync(path, renderServerConfig(rendered.text, {
        name: "causeway_demo", host: "127.0.0.1", ports: { client: -1, monitor: -1 }, storeDir: join(demoDir, "store"),
      }, "demo server, written by `causeway demo`"));
      return { path, accounts: rendered.accounts };
    }, (c) => `accounts ${Object.entries(c.accounts).map(([a, users]) => `${a} (${users.length} users)`).join(", ")}, least-privilege permissions`);
    server = await step("nats-server", () => spawnNatsServer({ configPath: config.path, portsDir: demoDir }), (s) => `${version()} on ${s.url}`);
    const url = server.url;

    const operator = await connectAs("operator", { servers: url });
    connections.push(operator);
    await step("streams and buckets", () => applyMeshInfra(operator, layout), (summary) => summary);
    await step("trust store", () => seedTrust(operator, principals, data), (summary) => `KV ${layout.buckets[KvBucket.Trust].name}: ${summary}`);
    trust = await openTrustStore(operator);

    agents = spawnServices(layout.services, {
      natsUrl: url, dataDir: data, logDir: join(demoDir, "logs"),
      // A short deadline so the demo's partial report (one finding is quarantined) comes quickly.
      env: { CAUSEWAY_REPORT_DEADLINE_MS: "3000", CAUSEWAY_REPORT_SWEEP_MS: "200", LOG_LEVEL: "info", CAUSEWAY_OUTBOX_DIR: join(demoDir, "outbox"),
        // The demo's streams are new every run, so its audit log is too (make up keeps one in the data directory).
        LINEAGE_HTTP_PORT: "0", LINEAGE_CHECKPOINT_INTERVAL_MS: "200", LINEAGE_SQLITE_PATH: join(demoDir, "lineage.db"), CAUSEWAY_GATEWAY_PORT: "0" },
    });
    await step("services", async () => {
      const problems = readinessProblems(await waitForServices(operator, agents));
      if (problems.length > 0) throw new Error(problems.join("; "));
    }, () => `${agents.map((a) => `${a.service.name} (pid ${a.child.pid})`).join(", ")} running; logs in ${join(demoDir, "logs")}`);

    // The flow starts as an upstream system starts it: a CloudEvent POSTed to the gateway over HTTP (binary
    // mode) with upstream-demo's bearer token; the gateway notarizes it and routes it to plan.v1.
    const gatewayUrl = await gatewayHttpUrl(operator);
    const token = readFileSync(devTokenPath(data, "upstream-demo"), "utf8").trim();
    const request = { id: uuidv7() };
    const reports = await watchFor(operator, "MESH_EVT", subjects.event("report.published", 1));
    const summaries = await watchFor(operator, "MESH_EVT", subjects.event("report.summarized", 1));
    const approvalRequests = await watchFor(operator, "MESH_DECISION", subjects.decision("approval_requested"));
    const releases = await watchFor(operator, "MESH_EVT", subjects.event("report.released", 1));
    console.log(`\n$ curl -X POST ${gatewayUrl}/events -H "Authorization: Bearer $(cat $CAUSEWAY_DATA_DIR/tokens/upstream-demo.token)" -H "Content-Type: application/json" \\
    -H "ce-specversion: 1.0" -H "ce-id: ${request.id}" -H "ce-source: ${DEMO_SOURCE}" -H "ce-type: report.requested" -d '{"topic": …}'`);
    const accepted = await step("upstream-demo → gateway (HTTP): report.requested accepted", async () => {
      const res = await fetch(`${gatewayUrl}/events`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${token}`, "content-type": "application/json",
          "ce-specversion": "1.0", "ce-id": request.id, "ce-source": DEMO_SOURCE, "ce-type": "report.requested", "ce-dataschema": REQUEST_SCHEMA,
        },
        body: JSON.stringify({
          topic: "Grid-scale battery storage in 2026", requester: "analyst@example.com",
          questions: ["Which battery chemistries lead grid-scale storage?", "What does a megawatt-hour of storage cost?", "Is the rumor true that sodium-ion replaces lithium by 2027?"],
        }),
      });
      const body = await res.text();
      if (res.status !== 202) throw new Error(`the gateway answered ${res.status}: ${body}`);
      return JSON.parse(body) as { id: string; correlationid: string; traceid: string; subject: string };
    }, (a) => `202, id ${a.id}, flow ${a.correlationid}, trace ${a.traceid}, notarized and routed to ${a.subject}`);
    const flow = accepted.correlationid;
    const report = await step("report.published", () => reports(flow), (r) => `${r.elapsedMs} ms after the request`);
    // A listener the reporter does not know: the summarizer subscribes to report.published in its own entry.
    const summary = await step("report.summarized — the summarizer subscribes to report.published; the reporter does not know it", () => summaries(flow),
      (r) => `caused by report ${String(r.event.extensions.causationid)}`);
    const pending = await step("publishing the report is critical: the coordinator asks for approval", () => approvalRequests(flow),
      (r) => `decision.approval.requested for ${dataJson<{ eventId: string }>(r.event).eventId}`);
    const workId = dataJson<{ eventId: string }>(pending.event).eventId;
    const approveArgs = ["approve", workId, "--as", "approver-alice", "--reason", "checked the draft", "--server", url];
    console.log(`\n$ bin/causeway ${approveArgs.map((a) => (a.includes(" ") ? `"${a}"` : a)).join(" ").replace(url, "$NATS_URL")}`);
    console.log(execFileSync(process.execPath, [join(repoRoot, "services", "cli", "main.ts"), ...approveArgs], { encoding: "utf8", env: { ...process.env, CAUSEWAY_DATA_DIR: data } }).trimEnd() + "\n");
    const released = await step("report.released — published once, under the grant's lease", () => releases(flow),
      (r) => dataJson<{ location: string }>(r.event).location);

    console.log(`\nThe flow (correlation id ${flow}), read back from the streams and verified:\n`);
    console.log(renderFlow(await collectFlow(operator, trust, flow)));
    printReport(report.event);

    // The audit log: lineage recorded every message of every stream; ask it, as the auditor, why the report
    // exists and what the whole flow did and spent (its priority and budget, each run's signed spend), then check
    // the whole log against its signed checkpoints.
    await step("lineage recorded every message and signed a checkpoint", () => lineageCaughtUp(operator, layout), (n) => `${n} records`);
    for (const args of [["lineage", "why", released.event.id], ["lineage", "why", summary.event.id], ["lineage", "trace", flow], ["lineage", "verify"]]) {
      console.log(`\n$ bin/causeway ${args.join(" ")}`);
      console.log(execFileSync(process.execPath, [join(repoRoot, "services", "cli", "main.ts"), ...args, "--server", url], { encoding: "utf8", env: { ...process.env, CAUSEWAY_DATA_DIR: data } }).trimEnd());
    }
    // The runtime's own account of the flow: its ledger counts every admitted run, those that emitted nothing too
    // (any capability's view of the ledger reads every capability's totals; the operator only reads).
    console.log("");
    await step(`the flow ledger (KV ${layout.buckets[KvBucket.FlowLedger].name}), which the runtime checked the budget against`,
      async () => (await openFlowLedger(operator, "plan", 1)).totals(flow),
      (t) => `${t.steps} steps, ${t.cost} cost units, ${t.tokens} tokens (lineage counts only the runs whose signed outputs it holds)`);

    const cliArgs = ["--server", url, "--nkey", seedPath("operator", data), "--inbox-prefix", inboxPrefix("operator"), "micro", "ls"];
    console.log(`\n$ nats ${cliArgs.join(" ").replace(url, "$NATS_URL").replace(data, "$CAUSEWAY_DATA_DIR")}`);
    console.log(execFileSync(natsBinary("nats"), cliArgs, { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } }).trimEnd());

    await step("services drained", async () => {
      const codes = await Promise.all(agents.map((a) => a.stop()));
      if (codes.some((c) => c !== 0)) throw new Error(`exit codes ${codes.join(", ")}; see ${join(demoDir, "logs")}`);
      agents = [];
    });
    console.log(`\ndemo complete in ${((performance.now() - started) / 1000).toFixed(1)} s — \`make up\` keeps a mesh running, \`make test\` runs the suite`);
    return 0;
  } catch (err) {
    console.error(`\ndemo failed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    unregister();
    await stopAll();
  }
}

/** Starts watching `subject` in `stream`; the returned function waits for the first event of a flow there. */
async function watchFor(nc: NatsConnection, stream: string, subject: string): Promise<(correlationId: string) => Promise<{ event: CloudEvent; elapsedMs: number }>> {
  const consumer = await jetstream(nc).consumers.get(stream, { filter_subjects: [subject], deliver_policy: DeliverPolicy.New });
  const messages = await consumer.consume();
  return async (correlationId) => {
    const started = performance.now();
    const timer = setTimeout(() => messages.stop(new Error(`nothing on ${subject} within ${WAIT_MS / 1000} s; see the services' logs`)), WAIT_MS);
    try {
      for await (const m of messages) {
        const event = NatsBinding.toEvent(m);
        if (event.extensions.correlationid === correlationId) return { event, elapsedMs: Math.round(performance.now() - started) };
      }
      throw new Error(`the watch on ${subject} ended before the event arrived`);
    } finally {
      clearTimeout(timer);
      messages.stop();
    }
  };
}

/** Waits until lineage holds one record per message of every recorded stream and a checkpoint covers them all. */
async function lineageCaughtUp(nc: NatsConnection, layout: MeshLayout): Promise<number> {
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    let messages = 0;
    for (const { stream } of layout.consumersOf("lineage")) messages += (await jsm.streams.info(stream)).state.messages;
    // Not answering yet (still starting) is the same as no checkpoint yet.
    const checkpoints = await controlRequest(nc, lineageEndpoint("checkpoints"), {}, { timeout: 5_000 }).catch(() => []);
    const newest = checkpoints.at(-1)?.size ?? 0;
    if (newest >= messages && messages > 0) return newest;
    if (Date.now() > deadline) throw new Error(`lineage holds a checkpoint of ${newest} records of ${messages} within ${WAIT_MS / 1000} s; see its log`);
    await delay(100);
  }
}

/** The gateway's HTTP URL, from its micro service metadata (`nats micro info gateway`). */
async function gatewayHttpUrl(nc: NatsConnection): Promise<string> {
  for await (const info of await new Svcm(nc).client({ strategy: "timer", maxWait: 500 }).info("gateway")) {
    if (info.metadata?.http) return info.metadata.http;
  }
  throw new Error("the gateway did not answer `nats micro info gateway`; see its log");
}

function printReport(event: CloudEvent): void {
  const r = dataJson<{ title: string; complete: boolean; findingsCount: number; sections: { heading: string; body: string }[] }>(event);
  console.log(`\nThe report: “${r.title}” — ${r.complete ? "complete" : "partial"}, ${r.findingsCount} verified findings`);
  for (const s of r.sections) {
    const first = s.body.split("\n", 1)[0]!;
    console.log(`  • ${s.heading}\n      ${first.length > 140 ? first.slice(0, 137) + "…" : first}`);
  }
}

function version(): string {
  return execFileSync(natsBinary("nats-server"), ["--version"], { encoding: "utf8" }).trim();
}
