// The coordinator's quarantine operations and dead letters, on a mesh run as operators run it: the rendered
// least-privilege accounts, the coordinator as a process, the operator asking through the `causeway` CLI and
// the real `nats` CLI, agents and plain JetStream consumers failing messages on purpose.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { AckPolicy, jetstream } from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { createUser } from "@nats-io/nkeys";
import {
  NatsBinding, QuarantineHeader, createEvent, createLogger, newTraceparent, readSeed, seedPath, signEvent, signingKeyFromNkeySeed, startAgent, uuidv7,
  type Agent, type CloudEvent, type EventInit, type SigningKey,
} from "../services/kit/index.ts";
import { createPlannerDefinition } from "../services/agents/planner/definition.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startOperatedMesh, type OperatedMesh, type SpawnedProcess } from "./e2e-fixture.ts";
import { repoRoot, runNats, toolPath, waitFor } from "./harness/index.ts";

const PLAN = "mesh.cap.plan.v1";
const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
const ctl = (action: string) => `mesh.ctl.coordinator.quarantine-${action}`;
const log = createLogger({ name: "planner", level: process.env.LOG_LEVEL ?? "silent" });

// ---------------------------------------------------------------------------------------------------------
// Helpers: the coordinator as a process, the two CLIs, signed inputs, reading the streams.

/** Starts the coordinator process and resolves once its quarantine endpoints answer. */
async function startCoordinator(mesh: OperatedMesh): Promise<SpawnedProcess> {
  const proc = mesh.spawn("services/coordinator/main.ts");
  const failed = new AbortController();
  void proc.exited.then((code) => failed.abort(new Error(`the coordinator exited ${code}: ${proc.output()}`)));
  await waitFor(async () => (await mesh.operator.request(ctl("list"), "{}", { timeout: 1_000 })).json<{ entries: unknown[] }>().entries, {
    what: "the coordinator's quarantine endpoints", timeoutMs: 20_000, signal: failed.signal,
  });
  return proc;
}

async function stopCoordinator(proc: SpawnedProcess): Promise<void> {
  proc.child.kill("SIGTERM");
  assert.equal(await proc.exited, 0, proc.output());
}

/** A request as the operator, the reply parsed. */
async function ask<T = Record<string, unknown>>(mesh: OperatedMesh, action: string, body: unknown): Promise<T> {
  return (await mesh.operator.request(ctl(action), JSON.stringify(body), { timeout: 10_000 })).json<T>();
}

/** `nats <args>` as the operator, with its NKey and private inbox. */
function nats(mesh: OperatedMesh, args: string[]) {
  return runNats(["--inbox-prefix", "_INBOX_operator", ...args], { server: mesh.server.url, nkey: seedPath("operator", mesh.dataDir) });
}

/**
 * `nats <args>` as the operator in a pseudo-terminal (util-linux `script`): `nats stream view` pages
 * interactively and refuses to run without one.
 */
function natsInTerminal(mesh: OperatedMesh, args: string[]): Promise<{ stdout: string; code: number }> {
  const argv = [toolPath("nats"), "--server", mesh.server.url, "--nkey", seedPath("operator", mesh.dataDir), "--inbox-prefix", "_INBOX_operator", ...args];
  const quoted = argv.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  return new Promise((resolve, reject) => {
    execFile("script", ["-qec", quoted, "/dev/null"], { timeout: 30_000, env: { ...process.env, NO_COLOR: "1" } }, (err, stdout) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ stdout: stdout.replaceAll("\r\n", "\n"), code: err ? Number(err.code) : 0 });
    });
  });
}

/** `nats req <subject> <body>` as the operator; the reply body parsed. */
async function natsReq<T = Record<string, unknown>>(mesh: OperatedMesh, action: string, body: unknown): Promise<T> {
  const res = await nats(mesh, ["req", ctl(action), JSON.stringify(body)]);
  assert.equal(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as T;
}

// `causeway quarantine …` as a process. Until services/cli/main.ts registers the command, the command module
// is run the way main.ts runs it.
const causewayMain = join(repoRoot, "services", "cli", "main.ts");
const registered = /\bquarantine:\s*\{/.test(readFileSync(causewayMain, "utf8"));
function causeway(mesh: OperatedMesh, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  const command = join(repoRoot, "services", "cli", "commands", "quarantine.ts");
  const argv = registered
    ? [causewayMain, "quarantine", ...args]
    : ["--input-type=module", "-e", `const { run } = await import(${JSON.stringify(command)}); process.exitCode = await run(process.argv.slice(1));`, "--", ...args];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, argv, {
      env: { ...process.env, NATS_URL: mesh.server.url, CAUSEWAY_DATA_DIR: mesh.dataDir, CAUSEWAY_OPERATOR: "alice", NO_COLOR: "1" },
      timeout: 30_000,
    }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ stdout, stderr, code: err ? Number(err.code) : 0 });
    });
  });
}

function keyOf(mesh: OperatedMesh, principal: string): SigningKey {
  return signingKeyFromNkeySeed(readSeed(principal, mesh.dataDir));
}

/** A report request signed by the gateway (or by `key`). */
function request(mesh: OperatedMesh, init: Partial<EventInit> = {}, key = keyOf(mesh, "gateway")): CloudEvent {
  return signEvent(createEvent({
    id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
    datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent() },
    data: JSON.stringify({ topic: "Heat pumps in cold climates", requester: "analyst@example.com", questions: ["How cold is too cold?"] }),
    ...init,
  }), key);
}

/** Publishes `event` (binary mode) on `subject` as `nc`; resolves with its stream sequence. */
async function publish(nc: NatsConnection, subject: string, event: CloudEvent): Promise<number> {
  const { headers, data } = NatsBinding.binary(event);
  return (await jetstream(nc).publish(subject, data, { headers, msgID: event.id })).seq;
}

interface Entry { seq: number; reason: string; detail: string; capability: string; consumer?: string; originalSubject: string; originalStream: string; originalSeq?: number; eventId?: string; status: string; detectedBy: string; decision?: { id: string; operator: string } }
interface ErrorReply { error: { code: string; message: string; details?: Record<string, unknown> } }

async function quarantineCount(mesh: OperatedMesh): Promise<number> {
  return (await (await jetstream(mesh.operator).jetstreamManager()).streams.info("MESH_QUARANTINE")).state.messages;
}

/** The planner, in-process under its own identity, failing every input while `broken.on`. */
async function startPlanner(mesh: OperatedMesh, broken: { on: boolean }): Promise<Agent> {
  const def = createPlannerDefinition();
  return startAgent(await mesh.as("planner"), {
    ...def,
    handler: (input, ctx) => {
      if (broken.on) throw new Error("the model endpoint is down");
      return def.handler(input, ctx);
    },
  }, {
    trust: mesh.trust, signingKey: keyOf(mesh, "planner"), log,
    consumer: { ack_wait: 500_000_000, backoff: [100_000_000], max_deliver: 2 },
  });
}

/** A plain pull consumer on MESH_CAP (no quarantine of its own), created by the operator. */
async function plainConsumer(mesh: OperatedMesh, name: string, filter: string) {
  await jetstream(mesh.operator).jetstreamManager().then((jsm) => jsm.consumers.add("MESH_CAP", {
    durable_name: name, filter_subject: filter, ack_policy: AckPolicy.Explicit, max_deliver: 2, ack_wait: 1_000_000_000,
  }));
  return jetstream(mesh.operator).consumers.get("MESH_CAP", name);
}

/** Resolves once the coordinator has handled every advisory MESH_ADVISORY holds (at least `count`). */
async function advisoriesHandled(mesh: OperatedMesh, count: number): Promise<void> {
  const jsm = await jetstream(mesh.operator).jetstreamManager();
  await waitFor(async () => {
    const last = (await jsm.streams.info("MESH_ADVISORY")).state.last_seq;
    const c = await jsm.consumers.info("MESH_ADVISORY", "coordinator-dead-letters");
    return last >= count && c.ack_floor.stream_seq === last && c.num_ack_pending === 0;
  }, { what: `${count} advisories handled by the coordinator`, timeoutMs: 15_000 });
}

async function entries(mesh: OperatedMesh, filter: Record<string, unknown> = {}): Promise<Entry[]> {
  return (await ask<{ entries: Entry[] }>(mesh, "list", filter)).entries;
}

// ---------------------------------------------------------------------------------------------------------

describe("coordinator quarantine", () => {
  test("quarantine - a poison input is listed and shown by both CLIs, released when the handler works, and reprocessed by the agent", async () => {
    await using mesh = await startOperatedMesh();
    await startCoordinator(mesh);
    const broken = { on: true };
    await using planner = await startPlanner(mesh, broken);
    const input = request(mesh);
    const originalSeq = await publish(await mesh.as("gateway"), PLAN, input);
    await waitFor(() => planner.stats().quarantined === 1, { what: "the poison input to be quarantined", timeoutMs: 15_000 });

    const [entry] = await waitFor(async () => { const e = await entries(mesh); return e.length === 1 && e; }, { what: "the entry to be listed" });
    assert.equal(entry!.reason, "max_deliveries");
    assert.equal(entry!.capability, "plan");
    assert.equal(entry!.status, "open");
    assert.equal(entry!.eventId, input.id);
    assert.deepEqual([entry!.originalSubject, entry!.originalStream, entry!.originalSeq, entry!.detectedBy], [PLAN, "MESH_CAP", originalSeq, "planner"]);

    const ls = await causeway(mesh, ["ls"]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^SEQ\s+DETECTED\s+REASON\s+CAPABILITY\s+STATUS\s+EVENT TYPE\s+DETAIL$/m);
    assert.match(ls.stdout, new RegExp(`^${entry!.seq}\\s+\\S+Z\\s+max_deliveries\\s+plan\\s+open\\s+report\\.requested\\s+handler failed 2 times`, "m"));
    const listed = await natsReq<{ entries: Entry[]; matched: number }>(mesh, "list", { reason: "max_deliveries" });
    assert.deepEqual(listed.entries.map((e) => e.seq), [entry!.seq]);

    const show = await causeway(mesh, ["show", String(entry!.seq)]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /verifies now\s+✓ signed by gateway/);
    assert.match(show.stdout, /release\s+would be accepted/);
    assert.match(show.stdout, new RegExp(`ce-id: ${input.id}`));
    const shown = await natsReq<{ data: string; dataEncoding: string; headers: Record<string, string[]>; reasonHeaders: Record<string, string>; verification: { ok: boolean; principal: string } }>(mesh, "show", { seq: entry!.seq });
    assert.equal(shown.data, Buffer.from(input.data).toString("utf8"));
    assert.equal(shown.dataEncoding, "utf8");
    assert.deepEqual(shown.verification, { ok: true, principal: "gateway", keyid: keyOf(mesh, "gateway").keyid, eventId: input.id, eventType: "report.requested" });
    assert.equal(shown.reasonHeaders[QuarantineHeader.Reason], "max_deliveries");
    const { headers: sent } = NatsBinding.binary(input);
    for (const name of sent.keys()) assert.deepEqual(shown.headers[name], [sent.get(name)], name);
    assert.ok(!Object.keys(shown.headers).some((h) => h.startsWith("Causeway-") || h.startsWith("Nats-")), "only the original headers");

    const before = await quarantineCount(mesh);
    broken.on = false;
    const released = await causeway(mesh, ["release", String(entry!.seq), "--note", "model endpoint fixed"]);
    assert.equal(released.code, 0, released.stderr);
    assert.match(released.stdout, new RegExp(`✓ released quarantine entry ${entry!.seq}: the original bytes republished to ${PLAN.replaceAll(".", "\\.")} \\(MESH_CAP #\\d+\\)`));
    await waitFor(() => planner.stats().processed === 1, { what: "the released input to be processed" });
    const tasks = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.research.v1");
    assert.equal(tasks.length, 1);
    assert.equal(mesh.trust.verify(NatsBinding.toEvent(tasks[0]!), { receivedAt: "now" }).event.extensions.causationid, input.id);
    // The republished copy is the original, byte for byte, under the release's msgID (the coordinator's own, tagged: msg-ids.ts).
    const copies = await readMessages(mesh.operator, "MESH_CAP", PLAN);
    assert.equal(copies.length, 2);
    assert.deepEqual(Buffer.from(copies[1]!.data), Buffer.from(copies[0]!.data));
    for (const name of sent.keys()) assert.equal(copies[1]!.headers?.get(name), copies[0]!.headers?.get(name), name);
    assert.match(copies[1]!.headers?.get("Nats-Msg-Id") ?? "", new RegExp(`^coordinator/release/${entry!.seq}/\\S+/[A-Za-z0-9_-]{22}$`));

    // One signed decision that verifies; the entry is released; the quarantine stream kept everything.
    const decisions = await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.release");
    assert.equal(decisions.length, 1);
    const decision = mesh.trust.verify(NatsBinding.toEvent(decisions[0]!), { receivedAt: "now" });
    assert.equal(decision.entry.principal, "coordinator");
    assert.equal(decision.event.extensions.causationid, input.id);
    const data = JSON.parse(Buffer.from(decision.event.data).toString()) as Record<string, unknown>;
    assert.deepEqual(data, { quarantineSeq: entry!.seq, originalSubject: PLAN, originalStream: "MESH_CAP", originalSeq, reason: "max_deliveries", operator: "alice", principal: "operator", note: "model endpoint fixed", eventId: input.id });
    assert.match(released.stdout, new RegExp(`decision ${decision.event.id}`));
    const [after] = await entries(mesh);
    assert.equal(after!.status, "released");
    assert.deepEqual(after!.decision, { id: decision.event.id, operator: "alice", at: decision.event.time, note: "model endpoint fixed" });
    assert.equal(await quarantineCount(mesh), before, "a release neither removes nor adds quarantine entries");

    // A second release: already settled, same decision, nothing republished. The refusal: the micro service
    // error headers (the message, and the code's status) and the error body with the details.
    const raw = await nats(mesh, ["req", ctl("release"), JSON.stringify({ seq: entry!.seq, operator: "bob" })]);
    assert.equal(raw.code, 0, raw.stderr);
    const again = JSON.parse(raw.stdout) as ErrorReply;
    assert.deepEqual(again, {
      error: {
        code: "CW_ERR_ALREADY_SETTLED", message: `quarantine entry ${entry!.seq} was already released by alice at ${decision.event.time} (decision ${decision.event.id})`,
        details: { status: "released", decisionId: decision.event.id },
      },
    });
    assert.match(raw.stderr, /Nats-Service-Error-Code: 409\n/);
    assert.ok(raw.stderr.includes(`Nats-Service-Error: ${again.error.message}\n`), raw.stderr);
    assert.equal((await readMessages(mesh.operator, "MESH_CAP", PLAN)).length, 2);
    assert.equal((await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.release")).length, 1);
  });

  test("quarantine - release re-verifies: tampered and unknown-key originals are refused with CW_ERR_RELEASE_REFUSED and stay open", async () => {
    await using mesh = await startOperatedMesh();
    await startCoordinator(mesh);
    await using planner = await startPlanner(mesh, { on: false });
    const gateway = await mesh.as("gateway");
    const tampered = NatsBinding.binary(request(mesh));
    const data = Buffer.from(tampered.data);
    data[5]! ^= 1;
    await jetstream(gateway).publish(PLAN, data, { headers: tampered.headers });
    const strangerKey = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
    await publish(gateway, PLAN, request(mesh, {}, strangerKey));
    // Not an event at all, and not UTF-8: shown as base64.
    await jetstream(gateway).publish(PLAN, new Uint8Array([0xff, 0xfe, 0x00, 0x01]), { headers: natsHeaders() });
    await waitFor(() => planner.stats().quarantined === 3, { what: "three quarantines" });
    const list = await waitFor(async () => { const e = await entries(mesh); return e.length === 3 && e; }, { what: "three entries" });
    const byReason = Object.fromEntries(list.map((e) => [e.reason, e]));
    assert.deepEqual(Object.keys(byReason).sort(), ["bad_signature", "decode_error", "unknown_key"]);

    const viaNats = await natsReq<ErrorReply>(mesh, "release", { seq: byReason.bad_signature!.seq, operator: "alice" });
    assert.equal(viaNats.error.code, "CW_ERR_RELEASE_REFUSED");
    assert.match(viaNats.error.message, /would fail again \(CW_ERR_(BAD_SIGNATURE|CORE_DIGEST_MISMATCH)/);
    const viaCauseway = await causeway(mesh, ["release", String(byReason.unknown_key!.seq)]);
    assert.equal(viaCauseway.code, 1);
    assert.match(viaCauseway.stderr, /release of quarantine entry \d+ refused: it would fail again \(CW_ERR_UNKNOWN_KEY: .*\) \(CW_ERR_RELEASE_REFUSED\)/);
    const notEvent = await causeway(mesh, ["release", String(byReason.decode_error!.seq)]);
    assert.match(notEvent.stderr, /CW_ERR_RELEASE_REFUSED/);

    const shown = await natsReq<{ dataEncoding: string; data: string; verification: { ok: boolean; code: string }; release: { ok: boolean } }>(mesh, "show", { seq: byReason.decode_error!.seq });
    assert.deepEqual([shown.dataEncoding, shown.data, shown.release.ok], ["base64", "//4AAQ==", false]);
    const show = await causeway(mesh, ["show", String(byReason.unknown_key!.seq)]);
    assert.match(show.stdout, /verifies now\s+✗ CW_ERR_UNKNOWN_KEY/);
    assert.match(show.stdout, /release\s+would be refused: CW_ERR_UNKNOWN_KEY/);

    assert.ok((await entries(mesh)).every((e) => e.status === "open"));
    assert.equal((await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.>")).length, 0, "a refused release decides nothing");
    assert.equal((await readMessages(mesh.operator, "MESH_CAP", PLAN)).length, 3, "nothing republished");
    const missing = await causeway(mesh, ["show", "99"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no quarantine entry at sequence 99 .*\(CW_ERR_QUARANTINE_NOT_FOUND\)/);
  });

  test("quarantine - reject is terminal: one signed decision, then release and reject give CW_ERR_ALREADY_SETTLED; the stream stays browsable", async () => {
    await using mesh = await startOperatedMesh();
    await startCoordinator(mesh);
    await using planner = await startPlanner(mesh, { on: false });
    const input = request(mesh, { data: JSON.stringify({ topic: 42 }) });
    await publish(await mesh.as("gateway"), PLAN, input);
    await waitFor(() => planner.stats().quarantined === 1, { what: "a schema_violation" });
    const [entry] = await waitFor(async () => { const e = await entries(mesh); return e.length === 1 && e; }, { what: "the entry" });
    assert.equal(entry!.reason, "schema_violation");

    const rejected = await causeway(mesh, ["reject", String(entry!.seq), "--note", "upstream bug, ticket 42"]);
    assert.equal(rejected.code, 0, rejected.stderr);
    assert.match(rejected.stdout, new RegExp(`✓ rejected quarantine entry ${entry!.seq}: it will not be processed`));
    const [decision] = await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.rejection");
    const verified = mesh.trust.verify(NatsBinding.toEvent(decision!), { receivedAt: "now" });
    assert.equal(verified.entry.principal, "coordinator");
    assert.deepEqual(JSON.parse(Buffer.from(verified.event.data).toString()), {
      quarantineSeq: entry!.seq, originalSubject: PLAN, reason: "schema_violation", operator: "alice", principal: "operator", note: "upstream bug, ticket 42", eventId: input.id,
    });

    const release = await natsReq<ErrorReply>(mesh, "release", { seq: entry!.seq, operator: "alice" });
    assert.equal(release.error.code, "CW_ERR_ALREADY_SETTLED");
    const reject = await causeway(mesh, ["reject", String(entry!.seq)]);
    assert.equal(reject.code, 1);
    assert.match(reject.stderr, new RegExp(`already rejected by alice .*decision ${verified.event.id}.*\\(CW_ERR_ALREADY_SETTLED\\)`));
    assert.equal((await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.>")).length, 1, "one decision, whatever was asked after");
    assert.equal((await readMessages(mesh.operator, "MESH_CAP", PLAN)).length, 1, "a rejected input is never republished");
    assert.equal((await entries(mesh, { status: "rejected" }))[0]!.seq, entry!.seq);

    // Append-only: the entry is still there, browsable with the nats CLI.
    const view = await natsInTerminal(mesh, ["stream", "view", "MESH_QUARANTINE"]);
    assert.equal(view.code, 0, view.stdout);
    assert.match(view.stdout, /Subject: mesh\.quarantine\.schema_violation\.plan/);
    assert.match(view.stdout, /Causeway-Quarantine-Reason: schema_violation/);
    assert.equal(await quarantineCount(mesh), 1);
  });

  test("quarantine - list filters by reason, capability, status, time range and limit", async () => {
    await using mesh = await startOperatedMesh();
    await startCoordinator(mesh);
    await using planner = await startPlanner(mesh, { on: false });
    const gateway = await mesh.as("gateway");
    await publish(gateway, PLAN, request(mesh, { data: JSON.stringify({ topic: 1 }) }));
    await publish(gateway, PLAN, request(mesh, { extensions: { traceparent: newTraceparent(), expirytime: new Date(Date.now() - 1_000).toISOString() } }));
    await waitFor(() => planner.stats().quarantined === 2, { what: "two quarantines" });
    // A time strictly after the first two detections and strictly before the third.
    const t0 = Date.now();
    await waitFor(() => Date.now() > t0, { what: "the clock to move on" });
    const between = new Date().toISOString();
    await waitFor(() => Date.now() > Date.parse(between), { what: "the clock to move on" });
    await publish(gateway, PLAN, request(mesh, { data: JSON.stringify({ topic: 2 }) }));
    await waitFor(() => planner.stats().quarantined === 3, { what: "a third quarantine" });
    const all = await waitFor(async () => { const e = await entries(mesh); return e.length === 3 && e; }, { what: "three entries" });
    const seqs = (list: Entry[]) => list.map((e) => e.seq);

    assert.deepEqual(seqs(await entries(mesh, { reason: "schema_violation" })), [all[0]!.seq, all[2]!.seq]);
    assert.deepEqual(seqs(await entries(mesh, { reason: "expired" })), [all[1]!.seq]);
    assert.deepEqual(seqs(await entries(mesh, { capability: "plan" })), seqs(all));
    assert.deepEqual(seqs(await entries(mesh, { capability: "research" })), []);
    assert.deepEqual(seqs(await entries(mesh, { since: between })), [all[2]!.seq]);
    assert.deepEqual(seqs(await entries(mesh, { until: between })), [all[0]!.seq, all[1]!.seq]);
    const limited = await ask<{ entries: Entry[]; matched: number }>(mesh, "list", { limit: 2 });
    assert.deepEqual([seqs(limited.entries), limited.matched], [[all[1]!.seq, all[2]!.seq], 3]);
    assert.deepEqual((await ask<ErrorReply>(mesh, "list", { since: "yesterday" })).error.code, "CW_ERR_USAGE");

    await ask(mesh, "reject", { seq: all[1]!.seq, operator: "alice" });
    assert.deepEqual(seqs(await entries(mesh, { status: "open" })), [all[0]!.seq, all[2]!.seq]);

    const ls = await causeway(mesh, ["ls", "--reason", "schema_violation", "--since", "1h", "--limit", "1"]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, new RegExp(`^${all[2]!.seq}\\s+\\S+\\s+schema_violation\\s+plan\\s+open`, "m"));
    assert.match(ls.stdout, /the newest 1 of 2 matching entries/);
    const json = await causeway(mesh, ["ls", "--status", "rejected", "--json"]);
    assert.deepEqual((JSON.parse(json.stdout) as { entries: Entry[] }).entries.map((e) => [e.seq, e.status]), [[all[1]!.seq, "rejected"]]);
    const bad = await causeway(mesh, ["ls", "--since", "last tuesday"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /CW_ERR_USAGE/);
  });

  test("dead letters - a poison message that hits max_deliver while the coordinator is stopped is quarantined when it returns", async () => {
    await using mesh = await startOperatedMesh();
    await stopCoordinator(await startCoordinator(mesh));
    const poison = await plainConsumer(mesh, "legacy-worker", PLAN);
    const input = request(mesh);
    const originalSeq = await publish(await mesh.as("gateway"), PLAN, input);
    const jsm = await jetstream(mesh.operator).jetstreamManager();
    // A consumer without the runtime's quarantine: it naks until max_deliver (2) is exhausted.
    await waitFor(async () => {
      const m = await poison.next({ expires: 1_000 });
      m?.nak();
      return (await jsm.streams.info("MESH_ADVISORY")).state.messages === 1;
    }, { what: "the MAX_DELIVERIES advisory", timeoutMs: 15_000 });
    assert.equal(await quarantineCount(mesh), 0, "nobody quarantined it while the coordinator was down");

    await startCoordinator(mesh);
    await advisoriesHandled(mesh, 1);
    const [entry] = await entries(mesh);
    assert.ok(entry);
    assert.deepEqual(
      [entry.reason, entry.capability, entry.consumer, entry.originalSubject, entry.originalStream, entry.originalSeq, entry.eventId, entry.detectedBy],
      ["max_deliveries", "plan", "legacy-worker", PLAN, "MESH_CAP", originalSeq, input.id, "coordinator"],
    );
    assert.match(entry.detail, /consumer legacy-worker gave up after 2 deliveries/);
    const [copy] = await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.max_deliveries.plan");
    assert.deepEqual(Buffer.from(copy!.data), Buffer.from(input.data), "the original bytes");
    assert.equal(mesh.trust.verify(NatsBinding.toEvent(copy!), { receivedAt: "now" }).event.id, input.id, "the copy still verifies");
  });

  test("dead letters - a terminated message is quarantined as terminated with the consumer's reason", async () => {
    await using mesh = await startOperatedMesh();
    await startCoordinator(mesh);
    const worker = await plainConsumer(mesh, "strict-worker", PLAN);
    const seq = await publish(await mesh.as("gateway"), PLAN, request(mesh));
    const m = await waitFor(() => worker.next({ expires: 1_000 }).then((x) => x ?? undefined), { what: "a delivery" });
    m.term("payload refers to a deleted account");
    await advisoriesHandled(mesh, 1);
    const [entry] = await entries(mesh);
    assert.deepEqual([entry!.reason, entry!.consumer, entry!.originalSeq], ["terminated", "strict-worker", seq]);
    assert.match(entry!.detail, /consumer strict-worker terminated it after 1 delivery: payload refers to a deleted account/);
    const show = await causeway(mesh, ["show", String(entry!.seq)]);
    assert.match(show.stdout, /reason\s+terminated/);
    // No agent of plan.v1 has started, so nothing declares which versions plan.v1 reads: no release is promised.
    assert.match(show.stdout, /release\s+would be refused: CW_ERR_RELEASE_TARGET: consumer cap-plan-v1 of plan\.v1 declares no accepted versions/);
  });

  test("dead letters - an advisory for a message already quarantined yields no second entry, inside or beyond the duplicate window", async () => {
    await using mesh = await startOperatedMesh();
    await startCoordinator(mesh);
    await using planner = await startPlanner(mesh, { on: false });
    const gateway = await mesh.as("gateway");
    // The runtime quarantines (schema_violation) and then terminates: a MSG_TERMINATED advisory follows.
    await publish(gateway, PLAN, request(mesh, { data: JSON.stringify({ topic: 7 }) }));
    await waitFor(() => planner.stats().quarantined === 1, { what: "the runtime's quarantine" });
    await advisoriesHandled(mesh, 1);
    assert.equal(await quarantineCount(mesh), 1);

    // An entry older than the duplicate window (its msgID long forgotten), then its original terminated.
    const worker = await plainConsumer(mesh, "research-worker", "mesh.cap.research.v1");
    const planners = await mesh.as("planner");
    const task = signEvent(createEvent({
      id: uuidv7(), source: "causeway://planner", type: "research.task.created", time: new Date().toISOString(), datacontenttype: "application/json",
      dataschema: "https://causeway.dev/schemas/research.task.created/1.0.0", extensions: { traceparent: newTraceparent() },
      data: JSON.stringify({ requestId: uuidv7(), taskIndex: 0, totalTasks: 1, query: "q" }),
    }), keyOf(mesh, "planner"));
    const taskSeq = await publish(planners, "mesh.cap.research.v1", task);
    const old = NatsBinding.binary(task);
    for (const [k, v] of Object.entries({
      [QuarantineHeader.Reason]: "policy_denied", [QuarantineHeader.Detail]: "an earlier verdict", [QuarantineHeader.OriginalSubject]: "mesh.cap.research.v1",
      [QuarantineHeader.OriginalStream]: "MESH_CAP", [QuarantineHeader.OriginalSequence]: String(taskSeq), [QuarantineHeader.DetectedBy]: "researcher",
      [QuarantineHeader.DetectedAt]: new Date().toISOString(),
    })) old.headers.set(k, v);
    await jetstream(await mesh.as("researcher")).publish("mesh.quarantine.policy_denied.research", old.data, { headers: old.headers, msgID: "published-long-ago" });
    const m = await waitFor(() => worker.next({ expires: 1_000 }).then((x) => x ?? undefined), { what: "the task" });
    m.term("already quarantined elsewhere");
    await advisoriesHandled(mesh, 2);

    assert.equal(await quarantineCount(mesh), 2, "one entry per original");
    const list = await entries(mesh);
    assert.deepEqual(list.map((e) => [e.reason, e.detectedBy]), [["schema_violation", "planner"], ["policy_denied", "researcher"]]);
  });

  test("dead letters - when the failed message is gone, the advisory itself is kept, and release is refused", async () => {
    await using mesh = await startOperatedMesh();
    const coordinator = await startCoordinator(mesh);
    await stopCoordinator(coordinator);
    const worker = await plainConsumer(mesh, "flaky-worker", PLAN);
    const seq = await publish(await mesh.as("gateway"), PLAN, request(mesh));
    const m = await waitFor(() => worker.next({ expires: 1_000 }).then((x) => x ?? undefined), { what: "a delivery" });
    m.term();
    const jsm = await jetstream(mesh.operator).jetstreamManager();
    await waitFor(async () => (await jsm.streams.info("MESH_ADVISORY")).state.messages === 1, { what: "the advisory" });
    await jsm.streams.deleteMessage("MESH_CAP", seq);

    await startCoordinator(mesh);
    await advisoriesHandled(mesh, 1);
    const [entry] = await entries(mesh);
    assert.deepEqual([entry!.reason, entry!.capability, entry!.originalStream, entry!.originalSeq, entry!.consumer], ["terminated", "_unknown", "MESH_CAP", seq, "flaky-worker"]);
    assert.match(entry!.detail, new RegExp(`the original MESH_CAP #${seq} is gone .*this entry keeps the advisory`));
    const shown = await natsReq<{ data: string }>(mesh, "show", { seq: entry!.seq });
    assert.equal((JSON.parse(shown.data) as { type: string }).type, "io.nats.jetstream.advisory.v1.terminated");
    const refused = await natsReq<ErrorReply>(mesh, "release", { seq: entry!.seq, operator: "alice" });
    assert.equal(refused.error.code, "CW_ERR_RELEASE_REFUSED");
    assert.match(refused.error.message, /is gone/);
  });

  test("dead letters - a failed message on a stream the coordinator may not read: the advisory is kept instead", async () => {
    await using mesh = await startOperatedMesh();
    await startCoordinator(mesh);
    // A stream outside the mesh's eight, on a subject the operator may publish to.
    const jsm = await jetstream(mesh.operator).jetstreamManager();
    await jsm.streams.add({ name: "SCRATCH", subjects: ["mesh.ctl.scratch.>"] });
    await jsm.consumers.add("SCRATCH", { durable_name: "scratch-worker", ack_policy: AckPolicy.Explicit });
    await jetstream(mesh.operator).publish("mesh.ctl.scratch.job", "a job");
    const worker = await jetstream(mesh.operator).consumers.get("SCRATCH", "scratch-worker");
    const m = await waitFor(() => worker.next({ expires: 1_000 }).then((x) => x ?? undefined), { what: "a delivery" });
    m.term("cannot parse");
    await advisoriesHandled(mesh, 1);
    const [entry] = await entries(mesh);
    assert.deepEqual([entry!.reason, entry!.originalStream, entry!.originalSeq, entry!.consumer], ["terminated", "SCRATCH", 1, "scratch-worker"]);
    assert.match(entry!.detail, /the coordinator may not read SCRATCH #1 .*Permissions Violation.*so this entry keeps the advisory/);
  });
});
