// The lineage service as operators run it: a process with its own identity on the operated mesh, recording
// every stream, answering over NATS, resuming after SIGKILL without gap or duplicate.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import {
  ErrorCode, NatsBinding, createEvent, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7,
} from "../services/kit/index.ts";
import { lineageEndpoint, type LineageOperationName, type LineageReplies, type LineageStats, type TraceResult, type WhyResult } from "../services/lineage/contract.ts";
import { openPostgresStore } from "../services/lineage/store-postgres.ts";
import { openSqliteStore } from "../services/lineage/store-sqlite.ts";
import { createLineageApi } from "../services/lineage/api.ts";
import { startLineageHttp } from "../services/lineage/http.ts";
import { startIngest } from "../services/lineage/ingest.ts";
import { createMerkleLog } from "../services/lineage/merkle.ts";
import { decodeRecord, encodeRecord } from "../services/lineage/record.ts";
import { findEvent } from "../services/lineage/queries.ts";
import { sqliteStorePath } from "../services/lineage/open-store.ts";
import { REFERENCE_AGENTS, agentScript, startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { lineageStoreKinds } from "./lineage-stores.ts";
import { repoRoot, runNatsJson, startPostgres, waitFor } from "./harness/index.ts";
import { readMessages } from "../services/cli/flow.ts";
import { Role, controlRequest, correlationIdOf, createLogger, defaultLayout, inboxPrefix, publicKeyOf, seedPath, statusOf, tokenDigestHex, type ControlErrorBody } from "../services/kit/index.ts";

const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";

/** Asks lineage over NATS through its contract; a refusal rejects with the CausewayError lineage answered. */
export function ask<K extends LineageOperationName>(nc: NatsConnection, operation: K, params: Record<string, string> = {}): Promise<LineageReplies[K]> {
  return controlRequest(nc, lineageEndpoint(operation), params);
}

/** Publishes `n` signed report requests as the gateway, plus one unsigned event and one undecodable message. */
async function publishWork(mesh: OperatedMesh, n: number): Promise<number> {
  const gateway = await mesh.as("gateway");
  const js = jetstream(gateway);
  const key = signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir));
  const acks: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const event = signEvent(createEvent({
      id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
      datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent() },
      data: JSON.stringify({ topic: `topic ${i}`, requester: "analyst@example.com", questions: ["q"] }),
    }), key);
    const { headers, data } = NatsBinding.binary(event);
    acks.push(js.publish("mesh.cap.plan.v1", data, { headers, msgID: event.id }));
  }
  const unsigned = createEvent({ id: uuidv7(), source: "causeway://gateway", type: "report.requested", data: "{}" });
  const u = NatsBinding.binary(unsigned);
  acks.push(js.publish("mesh.cap.plan.v1", u.data, { headers: u.headers }));
  const garbage = natsHeaders();
  garbage.set("ce-specversion", "0.3");
  acks.push(js.publish("mesh.cap.plan.v1", "not an event", { headers: garbage }));
  await Promise.all(acks);
  return n + 2;
}

describe("lineage service", () => {
  for (const kind of ["sqlite", "postgres"] as const) {
    test(`lineage on ${kind} - SIGKILLed mid-batch, the restarted process resumes with no gap and no duplicate; bad messages are recorded as failed`, async () => {
      await using mesh = await startOperatedMesh();
      await using postgres = kind === "postgres" ? await startPostgres() : undefined;
      const total = await publishWork(mesh, 1_000);
      const env = { LINEAGE_BATCH: "25", LINEAGE_HTTP_PORT: "-1", LINEAGE_CHECKPOINT_EVERY: "200", ...(postgres && { LINEAGE_DATABASE_URL: postgres.url }) };
      const first = mesh.spawn("services/lineage/main.ts", env);
      const jsm = await jetstreamManager(mesh.operator);
      const acked = async () => (await jsm.consumers.info("MESH_CAP", "lineage")).ack_floor.stream_seq;
      await waitFor(async () => (await acked()) >= 300, { what: "lineage to record a few hundred messages", timeoutMs: 20_000 });
      first.child.kill("SIGKILL");
      assert.equal(await first.exited, null);
      const atKill = await acked();
      assert.ok(atKill < total, `killed mid-ingest (acked ${atKill} of ${total})`);

      const second = mesh.spawn("services/lineage/main.ts", env);
      const stats = await waitFor(async () => {
        const s = await ask(mesh.operator, "stats").catch(() => undefined);
        return s !== undefined && s.size >= total && s;
      }, { what: "every message recorded after the restart", timeoutMs: 30_000 });
      assert.equal(stats.size, total, "exactly one record per message");

      const report = await ask(mesh.operator, "verify");
      assert.deepEqual(report.problems, []);
      assert.equal(report.ok, true);
      assert.equal(report.records, total);
      assert.ok(report.checkpointsVerified >= 1, "checkpoints were published and match");

      second.child.kill("SIGTERM");
      assert.equal(await second.exited, 0);
      await using store = postgres ? await openPostgresStore(postgres.url) : openSqliteStore(sqliteStorePath(mesh.dataDir));
      const rows = await store.range(0, total + 10);
      assert.equal(rows.length, total);
      const seqs = rows.map((r) => r.columns.seq).sort((a, b) => a - b);
      assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1), "every MESH_CAP sequence once: no gap, no duplicate");
      for (const r of rows) {
        const record = JSON.parse(r.bytes.toString()) as { datadigest: string; data: string };
        assert.equal(record.datadigest, createHash("sha256").update(Buffer.from(record.data, "base64")).digest("hex"), "datadigest is SHA-256 of the recorded data");
      }
      const failed = rows.filter((r) => !r.columns.verified).map((r) => JSON.parse(r.bytes.toString()) as { verification: { code: string } });
      assert.deepEqual(failed.map((f) => f.verification.code).sort(), ["CW_ERR_UNSIGNED", "CW_ERR_UNSUPPORTED_SPECVERSION"]);
    });
  }

  test("lineage - a reference flow answers why and trace through NATS, the nats CLI, the causeway CLI and HTTP, with signed timings", async () => {
    await using mesh = await startOperatedMesh();
    const lineage = mesh.spawn("services/lineage/main.ts", { LINEAGE_HTTP_PORT: "0", LINEAGE_CHECKPOINT_INTERVAL_MS: "200" });
    // The coordinator and the reference workflow's agents, with their entries from infra/principals.json.
    const coordinator = defaultLayout().services.find((s) => s.role === Role.Coordinator)!.name;
    for (const name of [coordinator, ...REFERENCE_AGENTS]) mesh.spawn(agentScript(name), { CAUSEWAY_REPORT_DEADLINE_MS: "2000", CAUSEWAY_REPORT_SWEEP_MS: "100" });
    const [, http, tokenFile] = await waitFor(() => /lineage: HTTP API on (http:\/\/\S+) \(bearer token in (\S+)\)/.exec(lineage.output()) ?? undefined, { what: "lineage's HTTP API", timeoutMs: 15_000 });
    assert.equal(tokenFile, join(mesh.dataDir, "tokens", "lineage-http.token"));
    assert.equal(statSync(tokenFile!).mode & 0o777, 0o600, "the token file is private");
    const auth = { authorization: `Bearer ${readFileSync(tokenFile!, "utf8").trim()}` };
    const gateway = await mesh.as("gateway");
    const now = new Date().toISOString();
    const root = signEvent(createEvent({
      id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: now, datacontenttype: "application/json", dataschema: REQUEST_SCHEMA,
      extensions: { traceparent: newTraceparent(), emittedat: now },
      data: JSON.stringify({ topic: "Grid storage", requester: "analyst@example.com", questions: ["Which battery chemistries lead grid-scale storage?", "Is the rumor true that sodium-ion replaces lithium by 2027?"] }),
    }), signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir)));
    const flow = correlationIdOf(root); // the flow the root starts
    const { headers, data } = NatsBinding.binary(root);
    await jetstream(gateway).publish("mesh.cap.plan.v1", data, { headers, msgID: root.id });
    const report = await waitFor(async () => (await readMessages(mesh.operator, "MESH_EVT", "mesh.evt.report.published.v1"))[0], { what: "report.published", timeoutMs: 30_000 });
    const reportId = NatsBinding.toEvent(report).id;
    await waitFor(async () => (await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.approval_requested")).length > 0, { what: "the approval request", timeoutMs: 15_000 });

    const auditor = await mesh.as("auditor");
    const why = await waitFor(async () => {
      const w = await ask(auditor, "why", { id: reportId }).catch(() => undefined);
      return w?.end.kind === "root" && w;
    }, { what: "lineage to record the report's ancestry", timeoutMs: 15_000 });
    assert.deepEqual(why.steps.map((s) => s.type), ["report.published", "research.finding.verified", "research.finding.created", "research.task.created", "report.requested"]);
    assert.deepEqual(why.steps.map((s) => s.principal), ["reporter", "verifier", "researcher", "planner", "gateway"]);
    assert.ok(why.steps.every((s) => s.verification.result === "verified" && s.keyid?.startsWith("U")));
    assert.equal(why.steps.at(-1)!.id, root.id);
    why.steps.slice(0, -1).forEach((s, i) => {
      const input = why.steps[i + 1]!;
      assert.equal(s.inputs[0], input.id, "each step's input is the next step");
      assert.equal(s.queueWait.ms, Date.parse(s.startedAt!) - Date.parse(input.emittedAt!), `${s.type}: queue wait from signed startedat − input emittedat`);
      assert.equal(s.processing.ms, Date.parse(s.emittedAt!) - Date.parse(s.startedAt!), `${s.type}: processing from signed values`);
      assert.ok(s.queueWait.ms! >= 0 && s.processing.ms! >= 0);
    });

    const trace = await waitFor(async () => {
      const t = await ask(auditor, "trace", { correlation: flow });
      return t.nodes.some((n) => n.type === "decision.approval.requested") && t.nodes.some((n) => n.appearances.some((a) => a.quarantine)) && t;
    }, { what: "the flow with its decision and quarantine entry", timeoutMs: 15_000 });
    const quarantined = trace.nodes.find((n) => n.appearances.some((a) => a.quarantine))!;
    assert.equal(quarantined.type, "research.finding.created");
    assert.equal(quarantined.appearances.find((a) => a.quarantine)!.quarantine!.reason, "low_confidence");
    assert.equal(trace.criticalPath!.events[0], root.id, "the critical path starts at the root");
    assert.ok(trace.edges.length >= trace.nodes.length - 1);

    // The same answers through the real nats CLI, the causeway CLI and the HTTP API.
    const cli = await runNatsJson<TraceResult>(["--inbox-prefix", inboxPrefix("auditor"), "req", "mesh.ctl.lineage.trace", JSON.stringify({ correlation: flow }), "--raw"],
      { server: mesh.server.url, nkey: seedPath("auditor", mesh.dataDir) });
    assert.equal(cli.nodes.length, trace.nodes.length);
    const { stdout } = await promisify(execFile)(process.execPath, [join(repoRoot, "services/cli/main.ts"), "lineage", "why", reportId, "--server", mesh.server.url], { env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir } });
    assert.match(stdout, /report\.published by reporter, 5 steps to the upstream root/);
    const viaHttp = await (await fetch(`${http}/v1/why/${reportId}`, { headers: auth })).json() as WhyResult;
    assert.deepEqual(viaHttp.steps.map((s) => s.id), why.steps.map((s) => s.id));
    const csv = await fetch(`${http}/v1/export/${flow}?format=csv`, { headers: auth });
    assert.equal(csv.status, 200);
    assert.match(csv.headers.get("content-type") ?? "", /^text\/csv/);

    // Evidence an auditor takes away and checks offline, with nothing but lineage's public key.
    const cwd = mkdtempSync(join(tmpdir(), "causeway-audit-"));
    const causeway = (...args: string[]) => promisify(execFile)(process.execPath, [join(repoRoot, "services/cli/main.ts"), "lineage", ...args], { env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir } });
    const key = publicKeyOf("lineage", mesh.dataDir);
    for (const format of ["jsonl", "csv"]) {
      const file = join(cwd, `flow.${format}`);
      await causeway("export", flow, "--format", format, "--out", file, "--server", mesh.server.url);
      const checked = await causeway("check-export", file, "--key", key);
      assert.match(checked.stdout, new RegExp(`✓ ${format} export verifies: \\d+ records`));
      // Change one letter of the last record line.
      const lines = readFileSync(file, "utf8").split("\n");
      const last = lines.length - 2; // the file ends with a newline
      lines[last] = lines[last]!.replace(/[A-Za-z]/, (c) => (c === "a" ? "b" : "a"));
      writeFileSync(file, lines.join("\n"));
      const tampered = await causeway("check-export", file, "--key", key).then(() => undefined, (e: { code: number; stdout: string }) => e);
      assert.equal(tampered?.code, 1, `a changed ${format} line fails the offline check`);
      assert.match(tampered!.stdout, new RegExp(`line ${last + 1}:`));
    }
    const proofFile = join(cwd, "proof.json");
    await causeway("prove", reportId, "--out", proofFile, "--server", mesh.server.url);
    assert.match((await causeway("check-proof", proofFile, "--key", key)).stdout, /✓ inclusion proof verifies/);
    const prov = JSON.parse((await causeway("export", flow, "--format", "prov", "--server", mesh.server.url)).stdout) as Record<string, unknown>;
    for (const relation of ["entity", "activity", "agent", "used", "wasGeneratedBy", "wasDerivedFrom", "wasAssociatedWith"]) assert.ok(prov[relation], `PROV-JSON has ${relation}`);
    const runs = (await causeway("export", flow, "--format", "openlineage", "--server", mesh.server.url)).stdout.trim().split("\n").map((l) => JSON.parse(l) as { eventType: string });
    assert.deepEqual([...new Set(runs.map((r) => r.eventType))].sort(), ["COMPLETE", "FAIL", "START"]);

    // Without the token, or with another, nothing but the health check answers.
    for (const headers of [{}, { authorization: "Bearer not-the-token" }, { authorization: auth.authorization.replace("Bearer", "Basic") }]) {
      const refused = await fetch(`${http}/v1/why/${reportId}`, { headers });
      assert.equal(refused.status, 401, JSON.stringify(headers));
      assert.equal(refused.headers.get("www-authenticate"), 'Bearer realm="causeway-lineage"');
      assert.equal(((await refused.json()) as ControlErrorBody).error.code, "CW_ERR_UNAUTHENTICATED");
    }
    assert.equal((await fetch(`${http}/healthz`)).status, 200);
    // Every refusal is {error: {code, message}} with the code's status from the error table.
    const refusal = async (path: string, init: RequestInit = { headers: auth }) => {
      const res = await fetch(`${http}${path}`, init);
      const body = (await res.json()) as ControlErrorBody;
      assert.deepEqual(Object.keys(body), ["error"]);
      assert.deepEqual(Object.keys(body.error), ["code", "message"]);
      assert.equal(res.status, statusOf(body.error.code));
      return { status: res.status, code: body.error.code, allow: res.headers.get("allow") };
    };
    assert.deepEqual(await refusal("/v1/why/%E0%A4%A"), { status: 400, code: "CW_ERR_LINEAGE_QUERY", allow: null });
    assert.deepEqual(await refusal("/v1/why/no-such-event"), { status: 404, code: "CW_ERR_LINEAGE_NOT_FOUND", allow: null });
    assert.deepEqual(await refusal("/v1/nope"), { status: 404, code: "CW_ERR_HTTP_ENDPOINT", allow: null });
    assert.deepEqual(await refusal("/v1/why/x", { method: "POST", headers: auth }), { status: 405, code: "CW_ERR_HTTP_METHOD", allow: "GET, HEAD" });
  });

  test("lineage - a store that recorded sequences the streams never reached (another mesh) is refused, not silently absorbed", async () => {
    await using mesh = await startOperatedMesh();
    await using store = openSqliteStore(join(mkdtempSync(join(tmpdir(), "causeway-other-")), "lineage.db"));
    const record = encodeRecord(0, {
      stream: "MESH_CAP", seq: 50, subject: "mesh.cap.plan.v1", recorded: new Date().toISOString(), verification: { result: "failed", code: "CW_ERR_UNSIGNED" },
      attributes: null, headers: {}, datadigest: "", data: "",
    });
    const log = createMerkleLog({ leafAt: () => record.leafHash });
    log.append(record.leafHash);
    await store.append([record], { size: 1, frontier: log.frontier() });
    const nc = await mesh.as("lineage");
    await assert.rejects(
      startIngest({ nc, store, trust: mesh.trust, log: createLogger({ name: "lineage", level: "silent" }) }),
      (err: Error & { code?: string }) => err.code === "CW_ERR_LINEAGE_STORE" && /recorded MESH_CAP up to sequence 50, but the stream ends at 0/.test(err.message),
    );
  });

  test("lineage - a lost store is rebuilt from the streams under a new log name; the same name is refused with the way out", async () => {
    await using mesh = await startOperatedMesh();
    const total = await publishWork(mesh, 300);
    const path = join(mesh.dataDir, "rebuild", "lineage.db");
    const env = { LINEAGE_HTTP_PORT: "-1", LINEAGE_CHECKPOINT_INTERVAL_MS: "200", LINEAGE_SQLITE_PATH: path };
    const recordedAll = async () => waitFor(async () => {
      const s = await ask(mesh.operator, "stats").catch(() => undefined);
      return s !== undefined && s.size >= total && s;
    }, { what: "every message recorded", timeoutMs: 20_000 });
    const first = mesh.spawn("services/lineage/main.ts", env);
    await recordedAll();
    await waitFor(async () => (await ask(mesh.operator, "checkpoints")).at(-1)?.size === total, { what: "a checkpoint of everything" });
    const before = await (async () => {
      await using store = openSqliteStore(path);
      return (await store.range(0, total)).map((r) => `${r.columns.stream}#${r.columns.seq} ${r.columns.id} ${r.columns.verified}`).sort();
    })();
    first.child.kill("SIGTERM");
    assert.equal(await first.exited, 0);
    rmSync(path, { force: true });
    rmSync(`${path}-wal`, { force: true });
    rmSync(`${path}-shm`, { force: true });

    const refused = mesh.spawn("services/lineage/main.ts", env);
    assert.equal(await refused.exited, 1, "an empty store under a name with published checkpoints is refused");
    assert.match(refused.output(), /is empty, but MESH_AUDIT holds \d+ checkpoints of the log "causeway.local\/lineage".*LINEAGE_ORIGIN=causeway.local\/lineage\/2/);

    const rebuilt = mesh.spawn("services/lineage/main.ts", { ...env, LINEAGE_ORIGIN: "causeway.local/lineage/2" });
    const stats = await recordedAll().catch((e: Error) => { throw new Error(`${e.message}\n${rebuilt.output()}`); });
    assert.equal(stats.size, total);
    await waitFor(async () => (await ask(mesh.operator, "checkpoints")).at(-1)?.size === total, { what: "a checkpoint of the rebuilt log" });
    const report = await ask(mesh.operator, "verify");
    assert.deepEqual(report.problems, []);
    assert.ok(report.checkpointsVerified >= 1);
    rebuilt.child.kill("SIGTERM");
    assert.equal(await rebuilt.exited, 0);
    await using store = openSqliteStore(path);
    const after = (await store.range(0, total + 1)).map((r) => `${r.columns.stream}#${r.columns.seq} ${r.columns.id} ${r.columns.verified}`).sort();
    assert.deepEqual(after, before, "the rebuilt log records the same messages with the same verification results");
  });

  for (const kind of lineageStoreKinds) {
    test(`lineage on ${kind.name} - a forged or tampered copy reusing an event's id is recorded as failed, and never keeps the genuine event out`, async () => {
      await using mesh = await startOperatedMesh();
      await using s = await kind.open();
      const key = signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir));
      const signed = () => signEvent(createEvent({
        id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(), datacontenttype: "application/json",
        dataschema: REQUEST_SCHEMA, data: JSON.stringify({ topic: "genuine", requester: "analyst@example.com", questions: ["q"] }),
      }), key);
      const [first, second] = [signed(), signed()];
      const genuine = (event: typeof first) => NatsBinding.binary(event);
      const forged = (event: typeof first) => ({ ...NatsBinding.binary(event), data: Buffer.from(JSON.stringify({ topic: "forged" })) });
      // A forgery of the first event (its headers and signature, other data) ahead of it; a tampered copy of the
      // second after it; then the genuine second again under a new sequence (a replay: absorbed).
      const js = jetstream(await mesh.as("gateway"));
      for (const m of [forged(first), genuine(first), genuine(second), forged(second), genuine(second)]) {
        await js.publish("mesh.cap.plan.v1", m.data, { headers: m.headers });
      }
      const ingest = await startIngest({ nc: await mesh.as("lineage"), store: s.store, trust: mesh.trust, log: createLogger({ name: "lineage", level: "silent" }) });
      try {
        await waitFor(() => ingest.stats().recorded + ingest.stats().absorbed === 5, { what: "every message recorded or absorbed" });
        const { recorded, absorbed, failed } = ingest.stats();
        assert.deepEqual({ recorded, absorbed, failed }, { recorded: 4, absorbed: 1, failed: 2 });
        const rows = (await s.store.range(0, 10)).map((r) => ({
          seq: r.columns.seq, id: r.columns.id, verified: r.columns.verified, code: decodeRecord(r.bytes).verification.code,
        }));
        assert.deepEqual(rows, [
          { seq: 1, id: first.id, verified: false, code: "CW_ERR_CORE_DIGEST_MISMATCH" },
          { seq: 2, id: first.id, verified: true, code: undefined },
          { seq: 3, id: second.id, verified: true, code: undefined },
          { seq: 4, id: second.id, verified: false, code: "CW_ERR_CORE_DIGEST_MISMATCH" },
        ]);
        const event = await findEvent(s.store, first.id);
        assert.equal(event.primary.verification.result, "verified", "the genuine record speaks for the event");
        assert.deepEqual(event.records.map((r) => r.stored.columns.seq), [1, 2]);
      } finally {
        await ingest.stop();
      }
    });
  }

  test("lineage - while the store refuses writes, nothing is lost and health says so (stats, /healthz 503); once it is back, all is recorded", async () => {
    await using mesh = await startOperatedMesh();
    await using inner = openSqliteStore(join(mkdtempSync(join(tmpdir(), "causeway-outage-")), "lineage.db"));
    let down = false;
    const store: typeof inner = Object.create(inner, {
      append: { value: (...args: Parameters<typeof inner.append>) => (down ? Promise.reject(new Error("disk full")) : inner.append(...args)) },
    });
    const log = createLogger({ name: "lineage", level: "silent" });
    const ingest = await startIngest({ nc: await mesh.as("lineage"), store, trust: mesh.trust, log });
    const api = createLineageApi({ store, publicKey: signingKeyFromNkeySeed(readSeed("lineage", mesh.dataDir)), published: async () => [], ingest, checkpointNow: async () => undefined });
    const http = await startLineageHttp(api, { host: "127.0.0.1", port: 0, tokenDigests: [tokenDigestHex("t")] }, log);
    try {
      down = true;
      const sent = await publishWork(mesh, 3);
      const failing = await waitFor(() => ingest.stats().failing, { what: "the outage in stats" });
      assert.equal(failing.error, "disk full");
      const health = await fetch(`${http.url}/healthz`);
      assert.equal(health.status, 503);
      assert.deepEqual(await health.json(), { ok: false, failingSince: failing.since }, "no error text without a token");
      const stats = await fetch(`${http.url}/v1/stats`, { headers: { authorization: "Bearer t" } });
      assert.deepEqual(((await stats.json()) as LineageStats).failing, failing);
      down = false;
      await waitFor(() => ingest.stats().failing === undefined && ingest.stats().size >= sent, { what: "every message recorded after the outage", timeoutMs: 20_000 });
      assert.equal(ingest.stats().size, sent);
      assert.equal((await fetch(`${http.url}/healthz`)).status, 200);
    } finally {
      await http.close();
      await ingest.stop();
    }
  });

  test("lineage - when the store cannot be written nor its log restored, ingest stops consuming and says why", async () => {
    await using mesh = await startOperatedMesh();
    await using inner = openSqliteStore(join(mkdtempSync(join(tmpdir(), "causeway-broken-")), "lineage.db"));
    let broken = false;
    const down = () => Promise.reject(new Error("database is down"));
    const store: typeof inner = Object.create(inner, {
      append: { value: (...args: Parameters<typeof inner.append>) => (broken ? down() : inner.append(...args)) },
      state: { value: () => (broken ? down() : inner.state()) },
    });
    const ingest = await startIngest({ nc: await mesh.as("lineage"), store, trust: mesh.trust, log: createLogger({ name: "lineage", level: "silent" }) });
    broken = true;
    await publishWork(mesh, 3);
    const lost = await ingest.lost;
    assert.equal(lost.code, ErrorCode.LineageStore);
    assert.match(lost.message, /database is down/);
    await ingest.stop();
  });
});
