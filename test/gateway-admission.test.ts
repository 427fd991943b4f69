// The gateway process admitting new flows (issue 16, items 2 and 4) on a real mesh: a tenant over its flow quota
// gets 429 with the reset time and Retry-After over HTTP, NATS requests and batches while another tenant's flows are
// accepted; the quota is exact under two gateway workers racing; a duplicate is not counted; the stream path keeps
// what is over quota in quarantine; `causeway tenants` shows the use. Backpressure with the real coordinator
// measuring the real backlog: background flows shed above soft (429 CW_ERR_OVERLOADED, Retry-After) while critical
// ones are admitted above hard, a resubmission of an accepted flow still gets its 202, an upstream cannot raise its
// priority, the refusals are summed up in signed decisions, and with the coordinator gone the gateway fails open.
// No agent may write the pressure bucket.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { jetstreamManager, type ConsumerConfig } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import {
  PRIORITIES, Priority, KvBucket, NatsBinding, PRESSURE_KEY, dataJson, defaultLayout, periodOf, quotaKey, seedPath, type CloudEvent, type PressureReport,
} from "../services/kit/index.ts";
import { readMessages } from "../services/cli/flow.ts";
import { REFERENCE_AGENTS, agentScript, runCli } from "./e2e-fixture.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, requestData, startGatewayMesh, type GatewayMesh } from "./gateway-fixture.ts";
import { repoRoot, runNats, waitFor } from "./harness/index.ts";

const BATCH_SOURCE = "https://batch.causeway.dev/jobs";
const binary = (id: string, source = DEMO_SOURCE, extra: Record<string, string> = {}) => ({
  "content-type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": source, "ce-type": "report.requested", "ce-dataschema": REQUEST_SCHEMA, ...extra,
});
const batchOf = (ids: string[]) => JSON.stringify(ids.map((id) => ({
  specversion: "1.0", id, source: DEMO_SOURCE, type: "report.requested", datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, data: JSON.parse(requestData()) as unknown,
})));

/** Writes `doc` into `dir` as `name`; returns its path. */
function file(dir: string, name: string, doc: unknown): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify(doc));
  return path;
}

async function decisions(g: GatewayMesh): Promise<CloudEvent[]> {
  return (await readMessages(g.mesh.operator, "MESH_DECISION", "mesh.decision.admission")).map((m) => NatsBinding.toEvent(m));
}

describe("gateway admission", () => {
  test("gateway admission - a tenant over its flow quota gets 429 with its reset and Retry-After on every way in, exactly the quota admitted under two workers racing, duplicates not counted; another tenant's flows are accepted and complete; causeway tenants shows the use", async () => {
    const dir = mkdtempSync(join(tmpdir(), "causeway-admission-"));
    try {
      const tenantsPath = file(dir, "tenants.json", {
        tenants: {
          demo: { description: "d", quotas: { period: "day", flows: 20 } },
          batch: { description: "b", quotas: { period: "hour", flows: 100, cost: 100000 }, weight: 0.5 },
        },
      });
      const backpressurePath = file(dir, "backpressure.json", { default: { soft: 1000, hard: 5000 }, summaryIntervalMs: 1000 });
      await using g = await startGatewayMesh({ env: { CAUSEWAY_GATEWAY_WORKERS: "2", CAUSEWAY_TENANTS: tenantsPath, CAUSEWAY_BACKPRESSURE: backpressurePath } });
      // 60 new flows at once over two workers: exactly 20 admitted between them, 40 refused.
      const results = await Promise.all(Array.from({ length: 60 }, (_, i) => g.post(requestData(), binary(`q-${i}`))));
      const accepted = results.filter((r) => r.status === 202).map((r) => r.json.id as string).sort();
      const refused = results.filter((r) => r.status === 429);
      assert.equal(accepted.length, 20, `exactly the quota: ${results.map((r) => r.status).join(",")}`);
      assert.equal(refused.length, 40);
      const period = periodOf("day", Date.now());
      const resets = new Date(period.end).toISOString();
      for (const r of refused) {
        assert.equal(r.json.code, "CW_ERR_QUOTA_EXCEEDED");
        assert.match(String(r.json.message), new RegExp(`^tenant demo \\(upstream upstream-demo\\) is over its flows quota: 20 of 20 flows used this period \\(day, ${new Date(period.start).toISOString()} to ${resets}\\); a new flow would exceed it\\. The quota resets at ${resets}: retry after \\d+ s$`));
        assert.equal(Number(r.headers.get("retry-after")), r.json.retryafter);
        assert.ok(Math.abs(Number(r.json.retryafter) - (period.end - Date.now()) / 1000) < 120, `Retry-After ${String(r.json.retryafter)} is the time to the reset`);
      }
      // An upstream cannot pick another tenant: its tenant is the gateway's configuration, not an attribute it sends.
      const dodge = await g.post(requestData(), binary("q-dodge", DEMO_SOURCE, { "ce-tenant": "batch" }));
      assert.deepEqual([dodge.status, dodge.json.code], [429, "CW_ERR_QUOTA_EXCEEDED"]);
      assert.match(String(dodge.json.message), /^tenant demo \(upstream upstream-demo\)/);
      const kv = await new Kvm(g.mesh.operator).open(KvBucket.Quotas);
      const use = async () => (await kv.get(quotaKey("demo", period.start)))!.json<{ flows: number }>().flows;
      assert.equal(await use(), 20);
      // A resubmission of an accepted flow is answered as then, and not counted.
      const again = await g.post(requestData(), binary(accepted[0]!));
      assert.deepEqual([again.status, again.json.duplicate], [202, true]);
      assert.equal(await use(), 20);
      // The NATS request path and a batch are refused the same way; nothing is kept in quarantine for a 429.
      const nats = await g.natsAsUpstream(["req", "mesh.ctl.gateway.publish.upstream-demo", requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:q-nats",
        "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
      const answer = JSON.parse(nats.stdout) as { status: number; code: string; retryafter: number };
      assert.deepEqual([answer.status, answer.code], [429, "CW_ERR_QUOTA_EXCEEDED"], nats.stdout + nats.stderr);
      assert.ok(answer.retryafter > 0);
      const batch = await g.post(batchOf(["qb-1", "qb-2"]), { "content-type": "application/cloudevents-batch+json" });
      assert.deepEqual([batch.status, batch.json.code], [429, "CW_ERR_QUOTA_EXCEEDED"], JSON.stringify(batch.json));
      assert.match(String(batch.json.message), /^the batch of 2 events was not admitted, nothing in it was accepted: tenant demo .* 2 new flows would exceed it/);
      assert.ok(Number(batch.headers.get("retry-after")) > 0);
      assert.deepEqual(await g.quarantined(), []);
      // Another tenant's flows are accepted, and complete: the reference agents take them to report.published.
      const flows: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await g.post(requestData(), binary(`b-${i}`, BATCH_SOURCE), "upstream-batch");
        assert.equal(r.status, 202, JSON.stringify(r.json));
        flows.push(String(r.json.correlationid));
      }
      const routed = await waitFor(async () => {
        const ids = (await g.routed()).map((e) => e.id).sort();
        return ids.length >= 23 && ids;
      }, { what: "every accepted flow routed" });
      assert.deepEqual(routed, [...accepted, "b-0", "b-1", "b-2"].sort(), "the admitted flows of both tenants, each once; nothing refused");
      const agents = REFERENCE_AGENTS.map((name) => g.mesh.spawn(agentScript(name)));
      await waitFor(async () => {
        const done = new Set((await readMessages(g.mesh.operator, "MESH_EVT", "mesh.evt.report.published.v1")).map((m) => String(NatsBinding.toEvent(m).extensions.correlationid)));
        return flows.every((f) => done.has(f));
      }, { what: "the batch tenant's three flows reported", timeoutMs: 90_000, intervalMs: 250 });
      for (const a of agents) a.child.kill("SIGTERM");
      await Promise.all(agents.map((a) => a.exited));
      // Published without a reply over the quota: nobody is told, so it is kept in quarantine with the code (policy_denied).
      const pub = await g.natsAsUpstream(["pub", "mesh.ingest.upstream-demo.reports", requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:q-stream",
        "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
      assert.equal(pub.code, 0, pub.stderr);
      const kept = await waitFor(async () => (await g.quarantined()).find((q) => q.code === "CW_ERR_QUOTA_EXCEEDED"), { what: "the stream event over quota in quarantine" });
      assert.equal(kept.reason, "policy_denied");
      // The refusals, summed up: one signed decision per gateway worker and interval, naming the tenant and the quota.
      const summed = await waitFor(async () => {
        const found = (await decisions(g)).map((e) => dataJson(e) as { action: string; tenant: string; count: number; quotas: { flows: { limit: number } } });
        const quota = found.filter((d) => d.action === "quota" && d.tenant === "demo");
        return quota.reduce((n, d) => n + d.count, 0) >= 44 && quota;
      }, { what: "decision.admission summaries of the 44 refusals", timeoutMs: 15_000 });
      assert.ok(summed.every((d) => d.quotas.flows.limit === 20));
      // causeway tenants: the use against the quota, as the gateway counted it.
      const cli = await runCli(["tenants"], { ...process.env, NATS_URL: g.mesh.server.url, CAUSEWAY_DATA_DIR: g.mesh.dataDir, CAUSEWAY_TENANTS: tenantsPath });
      assert.equal(cli.code, 0, cli.stderr);
      const lines = cli.stdout.trim().split("\n");
      assert.match(lines[0]!, /^TENANT\s+PERIOD\s+FLOWS\s+COST UNITS\s+RESETS\s+WEIGHT\s+UPSTREAMS$/);
      assert.match(lines[1]!, new RegExp(`^demo\\s+day\\s+20 / 20 \\(100 %\\)\\s+20000 \\(no quota\\)\\s+${resets} \\(in [0-9.]+ (s|min|h)\\)\\s+1\\s+upstream-demo$`));
      // Far from its limit, a gateway process counts ahead a sixteenth of what is left (tenants.ts): the batch tenant's 3
      // admitted flows count with what its worker holds ahead, never more than the quota.
      const batchLine = /^batch\s+hour\s+(\d+) \/ 100 \(\d+ %\)\s+(\d+) \/ 100000 \([0-9.]+ %\)\s+\S+ \(in .*\)\s+0\.5\s+upstream-batch$/.exec(lines[2]!);
      assert.ok(batchLine, lines[2]);
      const counted = Number(batchLine[1]);
      assert.ok(counted >= 3 && counted <= 3 + 2 * Math.floor(97 / 16), `3 admitted, ${counted} counted`);
      const batchCost = (JSON.parse(readFileSync(join(repoRoot, "infra", "upstreams.json"), "utf8")) as { upstreams: Record<string, { budget: { cost: number } }> }).upstreams["upstream-batch"]!.budget.cost;
      assert.equal(Number(batchLine[2]), counted * batchCost, "each counted flow at its cost budget");
      const json = JSON.parse((await runCli(["tenants", "--json"], { ...process.env, NATS_URL: g.mesh.server.url, CAUSEWAY_DATA_DIR: g.mesh.dataDir, CAUSEWAY_TENANTS: tenantsPath })).stdout) as { tenant: string; flows: { used: number } }[];
      assert.deepEqual(json.map((t) => [t.tenant, t.flows.used]), [["demo", 20], ["batch", counted]]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("gateway admission - backpressure from the coordinator's measurement: background shed above soft with Retry-After, critical admitted above hard, duplicates still 202, no priority dodging, summed up; with the coordinator gone the gateway fails open", async () => {
    const dir = mkdtempSync(join(tmpdir(), "causeway-admission-"));
    try {
      const backpressurePath = file(dir, "backpressure.json", { default: { soft: 1000, hard: 5000 }, capabilities: { "plan.v1": { soft: 3, hard: 6 } }, staleMs: 2000, summaryIntervalMs: 1000 });
      await using g = await startGatewayMesh({
        env: { CAUSEWAY_BACKPRESSURE: backpressurePath, LOG_LEVEL: "info" },
        upstream: { priority: { default: "critical" } },
      });
      // The planner's shared consumers, one per priority, as its agents create them: nothing consumes them, so the
      // backlog only grows.
      const layout = defaultLayout();
      const jsm = await jetstreamManager(g.mesh.operator);
      for (const priority of PRIORITIES) await jsm.consumers.add("MESH_CAP", layout.capabilityConsumer("plan", 1, priority) as ConsumerConfig);
      const coordinator = g.mesh.spawn("services/coordinator/main.ts");
      const pressure = await new Kvm(g.mesh.operator).open(KvBucket.Pressure);
      const backlog = async () => {
        const e = await pressure.get(PRESSURE_KEY);
        return e === null ? undefined : e.json<PressureReport>().capabilities["plan.v1"]?.backlog;
      };
      const measured = (atLeast: number) => waitFor(async () => {
        const b = await backlog();
        return b !== undefined && b >= atLeast && b;
      }, { what: `the coordinator measuring plan.v1's backlog at ${atLeast} or more`, timeoutMs: 20_000 });
      assert.equal(await measured(0), 0);

      const early = await g.post(requestData(), binary("bg-early", BATCH_SOURCE), "upstream-batch");
      assert.equal(early.status, 202, "nothing waits: a background flow is admitted");
      for (let i = 0; i < 3; i++) assert.equal((await g.post(requestData(), binary(`crit-${i}`))).status, 202);
      await measured(4);
      // Above soft: a new background flow is shed (once the gateway's watch has the report the test read); its
      // resubmitted earlier flow is answered 202 as then.
      let tries = 0;
      const admittedWhileWaiting: string[] = [];
      const shedBackground = (what: RegExp) => waitFor(async () => {
        const id = `bg-${tries++}`;
        const r = await g.post(requestData(), binary(id, BATCH_SOURCE), "upstream-batch");
        if (r.status === 202) admittedWhileWaiting.push(id);
        return r.status === 429 && what.test(String(r.json.message)) && { id, ...r };
      }, { what: `a background flow shed: ${what}`, intervalMs: 100 });
      const shed = await shedBackground(/above its soft threshold background flows are shed/);
      assert.equal(shed.json.code, "CW_ERR_OVERLOADED");
      assert.match(String(shed.json.message), /^the mesh is overloaded: plan\.v1, where this flow would start, has \d+ waiting \(soft 3, hard 6\); above its soft threshold background flows are shed\. This background flow of upstream upstream-batch \(tenant batch\) was not admitted; retry after \d+ s$/);
      assert.ok(Number(shed.headers.get("retry-after")) >= 1, "Retry-After");
      assert.equal(Number(shed.headers.get("retry-after")), shed.json.retryafter);
      const resubmitted = await g.post(requestData(), binary("bg-early", BATCH_SOURCE), "upstream-batch");
      assert.deepEqual([resubmitted.status, resubmitted.json.duplicate], [202, true], "nothing already accepted is shed");
      // The batch upstream cannot raise its flow's priority: the gateway sets it.
      const dodge = await g.post(requestData(), binary("bg-dodge", BATCH_SOURCE, { "ce-priority": "critical" }), "upstream-batch");
      assert.deepEqual([dodge.status, dodge.json.code], [403, "CW_ERR_UPSTREAM_CONTEXT"]);
      // Above hard: critical flows are still admitted, background ones shed.
      for (let i = 3; i < 6; i++) assert.equal((await g.post(requestData(), binary(`crit-${i}`))).status, 202);
      await measured(7 + admittedWhileWaiting.length);
      const hard = await shedBackground(/above its hard threshold only critical flows are admitted/);
      assert.equal(hard.json.code, "CW_ERR_OVERLOADED");
      assert.equal((await g.post(requestData(), binary("crit-hard"))).status, 202, "critical is admitted above hard");
      // Every shed is logged at info with its cause, and summed up in a signed decision.
      assert.match(g.gateway.output(), /"code":"CW_ERR_OVERLOADED".*"tenant":"batch".*"priority":"background".*flow shed: above its soft threshold background flows are shed/);
      const summary = await waitFor(async () => (await decisions(g)).map((e) => dataJson(e) as Record<string, unknown>).find((d) => d.action === "shed" && d.tenant === "batch"), { what: "the shed summary", timeoutMs: 15_000 });
      assert.equal(summary.code, "CW_ERR_OVERLOADED");
      assert.deepEqual(summary.upstreams, { "upstream-batch": summary.count });
      assert.deepEqual(summary.priorities, { background: summary.count });
      const cap = (summary.capabilities as Record<string, { backlog: { min: number; max: number }; thresholds: unknown }>)["plan.v1"]!;
      assert.ok(cap.backlog.min >= 3, JSON.stringify(cap));
      assert.deepEqual(cap.thresholds, { soft: 3, hard: 6 });
      // What was shed was never routed.
      const routed = (await g.routed()).map((e) => e.id);
      assert.ok(!routed.includes(shed.id) && !routed.includes(hard.id) && routed.includes("bg-early"), routed.join(","));

      // Published without a reply while shed: nobody is told, so it waits in MESH_INGEST (nak with the Retry-After).
      const pub = await runNats(["--inbox-prefix", "_INBOX_upstream-batch", "pub", "mesh.ingest.upstream-batch.jobs", requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:bg-stream",
        "-H", `ce-source:${BATCH_SOURCE}`, "-H", "ce-type:report.requested"], { server: g.mesh.server.url, nkey: seedPath("upstream-batch", g.mesh.dataDir) });
      assert.equal(pub.code, 0, pub.stderr);
      await waitFor(() => /"id":"bg-stream".*flow shed/.test(g.gateway.output()), { what: "the stream event shed" });

      // The coordinator gone: once its last report is stale, flows are admitted (fail open), and that is logged once.
      coordinator.child.kill("SIGKILL");
      await coordinator.exited;
      const killedAt = Date.now();
      let n = 0;
      await waitFor(async () => (await g.post(requestData(), binary(`bg-open-${n++}`, BATCH_SOURCE), "upstream-batch")).status === 202, { what: "a background flow admitted with stale pressure data", timeoutMs: 15_000, intervalMs: 250 });
      // The log line travels through the gateway's stdout pipe, which may trail its HTTP answer.
      const failOpen = () => g.gateway.output().split("\n").filter((l) => l.includes("admitting new flows without backpressure (fail open)")).length;
      await waitFor(() => failOpen() >= 1, { what: "the fail-open warning" });
      // The stream event that waited is routed now, after the coordinator died: shed, it was never dropped nor kept in quarantine.
      const waited = await waitFor(async () => (await readMessages(g.mesh.operator, "MESH_CAP", layout.subjects.capability("plan", 1, Priority.Background))).find((m) => m.headers?.get("ce-id") === "bg-stream"), { what: "the waiting stream event routed", timeoutMs: 30_000, intervalMs: 250 });
      assert.ok(waited.info.timestampNanos / 1e6 > killedAt, "routed only once the pressure data was stale");
      assert.equal(failOpen(), 1, "logged once, however many flows were admitted since");
      assert.deepEqual((await g.quarantined()).map((q) => q.code), ["CW_ERR_UPSTREAM_CONTEXT"], "only the event that tried to pick its priority is kept");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("gateway admission - no agent and no upstream may write the pressure bucket; the coordinator may", async () => {
    await using g = await startGatewayMesh();
    for (const principal of ["researcher", "planner", "gateway", "upstream-demo"]) {
      const nc = await g.mesh.as(principal);
      const kv = await new Kvm(nc).open(KvBucket.Pressure).catch((err: unknown) => err as Error);
      if (kv instanceof Error) continue; // may not even open it: refused
      await assert.rejects(kv.put(PRESSURE_KEY, JSON.stringify({ at: new Date().toISOString(), capabilities: {} })), /permission|Permissions Violation|timeout/i, `${principal} must not write ${KvBucket.Pressure}`);
    }
    const coordinator = await g.mesh.as("coordinator");
    const kv = await new Kvm(coordinator).open(KvBucket.Pressure);
    assert.ok((await kv.put(PRESSURE_KEY, "{}")) > 0);
  });
});
