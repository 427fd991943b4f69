// streams/*.json and `causeway streams apply` against real nats-servers and the real nats CLI.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import type { JetStreamManager } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import { freePort, startServer, runNats, runNatsJson, repoRoot } from "./harness/index.ts";
import { ErrorCode, MESH_BUCKETS, STREAMS_APPLY, isCausewayError } from "../services/kit/index.ts";
import { applyStreams, loadStreamDefinitions, type ApplyResult, type StreamDefinition } from "../services/kit/ops/index.ts";

const streamsDir = join(repoRoot, "streams");
const nodeBin = join(repoRoot, "node_modules", ".bin", "node");
const cliMain = join(repoRoot, "services", "cli", "main.ts");
const DAY = 86_400_000_000_000;

/** A JetStreamManager on `url`, closed on dispose. */
async function manager(url: string): Promise<{ jsm: JetStreamManager } & AsyncDisposable> {
  const nc = await connect({ servers: url });
  return { jsm: await jetstreamManager(nc), [Symbol.asyncDispose]: () => nc.close() };
}

/** A private copy of streams/ to edit; removed on dispose. */
function copyOfStreams(): { dir: string; edit: (file: string, change: (cfg: Record<string, unknown>) => void) => void } & Disposable {
  const dir = mkdtempSync(join(tmpdir(), "causeway-streams-"));
  cpSync(streamsDir, dir, { recursive: true });
  return {
    dir,
    edit(file, change) {
      const path = join(dir, file);
      const cfg = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
      change(cfg);
      writeFileSync(path, JSON.stringify(cfg, null, 2));
    },
    [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }),
  };
}

function labelOf(r: ApplyResult): string {
  return r.kind === "stream" ? r.name : `${r.stream}.${r.name}`;
}

function allItems(defs: readonly StreamDefinition[]): string[] {
  return defs.flatMap((d) => [d.config.name, ...d.consumers.map((c) => `${c.stream}.${c.config.durable_name}`)]);
}

type Info = { config: Record<string, unknown> };

async function streamConfig(url: string, name: string): Promise<Record<string, unknown>> {
  return (await runNatsJson<Info>(["stream", "info", name, "--json"], { server: url })).config;
}

async function consumerConfig(url: string, stream: string, name: string): Promise<Record<string, unknown>> {
  return (await runNatsJson<Info>(["consumer", "info", stream, name, "--json"], { server: url })).config;
}

// `nats consumer add` sends Go's zero time for an unset pause_until and the server stores it, while a client
// that omits the field stores none; both mean "not paused". (`nats consumer info` renders both the same way.)
function withoutZeroPause<T extends { pause_until?: string }>(config: T): T {
  if (config.pause_until !== "0001-01-01T00:00:00Z") return config;
  const { pause_until: _zero, ...rest } = config;
  return rest as T;
}

function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(nodeBin, [cliMain, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}

test("streams - the files define every stream of the mesh and skip the capability template", async () => {
  const defs = await loadStreamDefinitions(streamsDir);
  assert.deepEqual(defs.map((d) => d.config.name).sort(), [
    "MESH_ADVISORY", "MESH_AUDIT", "MESH_CAP", "MESH_DECISION", "MESH_EVT", "MESH_HANDOFF", "MESH_INGEST", "MESH_QUARANTINE",
  ]);
  for (const d of defs) {
    assert.equal(d.config.retention, "limits", d.file);
    assert.equal(d.config.storage, "file", d.file);
    assert.equal(d.config.num_replicas, 1, d.file);
    assert.equal(d.config.duplicate_window, 120_000_000_000, d.file);
  }
  const consumers = defs.flatMap((d) => d.consumers.map((c) => basename(c.file)));
  assert.ok(!consumers.some((f) => f.includes("template")));
  assert.ok(consumers.includes("MESH_ADVISORY.coordinator-dead-letters.json"));
  assert.ok(consumers.includes("MESH_HANDOFF.coordinator-handoff.json"));
});

test("streams - applyStreams creates exactly what nats stream add --config creates", async () => {
  await using ours = await startServer();
  await using theirs = await startServer();
  const defs = await loadStreamDefinitions(streamsDir);

  await using m = await manager(ours.url);
  const report = await applyStreams(m.jsm, defs);
  assert.ok(report.ok);
  assert.deepEqual(report.results.map((r) => `${labelOf(r)} ${r.status}`), allItems(defs).map((i) => `${i} created`));

  for (const d of defs) {
    const res = await runNats(["stream", "add", "--config", d.file], { server: theirs.url });
    assert.equal(res.code, 0, res.stderr);
    await Promise.all(d.consumers.map(async (c) => {
      const r = await runNats(["consumer", "add", c.stream, "--config", c.file], { server: theirs.url });
      assert.equal(r.code, 0, r.stderr);
    }));
  }

  // Nothing is stripped: both servers run the same version, so even the `_nats.*` metadata the server stamps
  // (its version and API levels) is identical, and `created` lives outside `.config`. Each configuration is
  // compared twice: as `nats … info --json` renders it, and raw from the server through the client, because
  // the CLI's rendering omits fields it does not know or that are at their zero value (allow_msg_ttl).
  await using t = await manager(theirs.url);
  await Promise.all(defs.flatMap((d) => [
    (async () => {
      assert.deepEqual(await streamConfig(ours.url, d.config.name), await streamConfig(theirs.url, d.config.name), d.file);
      assert.deepEqual((await m.jsm.streams.info(d.config.name)).config, (await t.jsm.streams.info(d.config.name)).config, d.file);
    })(),
    ...d.consumers.map(async (c) => {
      const name = c.config.durable_name;
      assert.deepEqual(await consumerConfig(ours.url, c.stream, name), await consumerConfig(theirs.url, c.stream, name), c.file);
      assert.deepEqual((await m.jsm.consumers.info(c.stream, name)).config, withoutZeroPause((await t.jsm.consumers.info(c.stream, name)).config), c.file);
    }),
  ]));
});

test("streams - the capability template instantiates into a consumer the nats CLI accepts", async () => {
  await using server = await startServer();
  const added = await runNats(["stream", "add", "--config", join(streamsDir, "MESH_CAP.json")], { server: server.url });
  assert.equal(added.code, 0, added.stderr);
  const template = readFileSync(join(streamsDir, "consumers", "capability.template.json"), "utf8");
  using copy = copyOfStreams();
  const file = join(copy.dir, "cap.json");
  writeFileSync(file, template.replaceAll("{capability}", "summarize").replaceAll("{major}", "1"));
  const res = await runNats(["consumer", "add", "MESH_CAP", "--config", file], { server: server.url });
  assert.equal(res.code, 0, res.stderr);
  const config = await consumerConfig(server.url, "MESH_CAP", "cap-summarize-v1");
  assert.equal(config.filter_subject, "mesh.cap.summarize.v1");
  assert.equal(config.ack_policy, "explicit");
});

test("streams - a second apply reports every item unchanged", async () => {
  await using server = await startServer();
  await using m = await manager(server.url);
  const defs = await loadStreamDefinitions(streamsDir);
  assert.ok((await applyStreams(m.jsm, defs)).ok);
  const lines: string[] = [];
  const again = await applyStreams(m.jsm, defs, { log: (line) => lines.push(line) });
  assert.ok(again.ok);
  assert.deepEqual(again.results.map((r) => r.status), allItems(defs).map(() => "unchanged"));
  assert.deepEqual(lines, allItems(defs).map((i) => `= ${i} unchanged`));
});

test("streams - a safe change is applied and reported field by field", async () => {
  await using server = await startServer();
  await using m = await manager(server.url);
  assert.ok((await applyStreams(m.jsm, await loadStreamDefinitions(streamsDir))).ok);
  using copy = copyOfStreams();
  copy.edit("MESH_CAP.json", (cfg) => { cfg.max_age = 28 * DAY; });
  copy.edit("consumers/MESH_CAP.lineage.json", (cfg) => { cfg.max_ack_pending = 2048; });
  const lines: string[] = [];
  const report = await applyStreams(m.jsm, await loadStreamDefinitions(copy.dir), { log: (line) => lines.push(line) });
  assert.ok(report.ok);
  assert.ok(lines.includes(`~ MESH_CAP updated: max_age ${14 * DAY} → ${28 * DAY}`), lines.join("\n"));
  assert.ok(lines.includes("~ MESH_CAP.lineage updated: max_ack_pending 1024 → 2048"), lines.join("\n"));
  assert.equal((await streamConfig(server.url, "MESH_CAP")).max_age, 28 * DAY);
  assert.equal((await consumerConfig(server.url, "MESH_CAP", "lineage")).max_ack_pending, 2048);
});

test("streams - destructive changes are refused without force and applied with force", async () => {
  await using server = await startServer();
  await using m = await manager(server.url);
  assert.ok((await applyStreams(m.jsm, await loadStreamDefinitions(streamsDir))).ok);
  const before = {
    MESH_CAP: await streamConfig(server.url, "MESH_CAP"),
    MESH_ADVISORY: await streamConfig(server.url, "MESH_ADVISORY"),
    MESH_DECISION: await streamConfig(server.url, "MESH_DECISION"),
  };

  using copy = copyOfStreams();
  copy.edit("MESH_CAP.json", (cfg) => { cfg.max_age = 7 * DAY; cfg.description = "shorter"; });
  copy.edit("MESH_ADVISORY.json", (cfg) => { cfg.subjects = ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"]; });
  copy.edit("MESH_DECISION.json", (cfg) => { cfg.deny_delete = false; });
  copy.edit("MESH_AUDIT.json", (cfg) => { cfg.deny_purge = false; cfg.description = "checkpoints"; });
  const defs = await loadStreamDefinitions(copy.dir);

  const lines: string[] = [];
  const refused = await applyStreams(m.jsm, defs, { log: (line) => lines.push(line) });
  assert.equal(refused.ok, false);
  const byName = (report: typeof refused, name: string) => report.results.find((r) => r.kind === "stream" && r.name === name)!;
  for (const name of ["MESH_CAP", "MESH_ADVISORY", "MESH_DECISION"] as const) {
    const r = byName(refused, name);
    assert.equal(r.status, "refused", name);
    assert.ok(r.status === "refused" && isCausewayError(r.error, ErrorCode.DestructiveChange), name);
    // Nothing of a refused definition reaches the server, not even its safe part (the description).
    assert.deepEqual(await streamConfig(server.url, name), before[name], name);
  }
  assert.ok(lines.includes(`✗ MESH_CAP refused: max_age ${14 * DAY} → ${7 * DAY} is destructive (use --force)`), lines.join("\n"));
  assert.ok(lines.some((l) => l.startsWith("✗ MESH_DECISION refused: deny_delete true → false cannot be changed in place")), lines.join("\n"));
  assert.ok(lines.includes("= MESH_EVT unchanged"));

  const forcedLines: string[] = [];
  const forced = await applyStreams(m.jsm, defs, { force: true, log: (line) => forcedLines.push(line) });
  assert.equal(forced.ok, false, "deny_delete cannot be turned off, even with force");
  const cap = byName(forced, "MESH_CAP");
  assert.equal(cap.status, "updated");
  assert.deepEqual(cap.status === "updated" && cap.changes.map((c) => c.field).sort(), ["description", "max_age"]);
  assert.equal(byName(forced, "MESH_ADVISORY").status, "updated");
  assert.equal(byName(forced, "MESH_DECISION").status, "refused");
  // With force, the part the server can change is applied and the rest reported.
  const audit = byName(forced, "MESH_AUDIT");
  assert.ok(audit.status === "updated" && audit.unapplied.length === 1 && audit.unapplied[0]?.field === "deny_purge");
  assert.ok(forcedLines.includes("~ MESH_AUDIT updated: description Lineage's signed Merkle checkpoints → checkpoints"), forcedLines.join("\n"));
  assert.ok(forcedLines.some((l) => l.startsWith("✗ MESH_AUDIT not applied: deny_purge true → false cannot be changed in place")), forcedLines.join("\n"));
  assert.equal((await streamConfig(server.url, "MESH_AUDIT")).deny_purge, true);
  const capNow = await streamConfig(server.url, "MESH_CAP");
  assert.equal(capNow.max_age, 7 * DAY);
  assert.equal(capNow.description, "shorter");
  assert.deepEqual((await streamConfig(server.url, "MESH_ADVISORY")).subjects, ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.>"]);
  assert.equal((await streamConfig(server.url, "MESH_DECISION")).deny_delete, true);
});

test("streams - a definition the server rejects is refused with its reason, and so are its consumers", async () => {
  await using server = await startServer();
  await using m = await manager(server.url);
  const defs = (await loadStreamDefinitions(streamsDir)).filter((d) => d.config.name === "MESH_EVT");
  // A single server cannot place three replicas.
  const report = await applyStreams(m.jsm, defs, { replicas: 3 });
  assert.equal(report.ok, false);
  assert.deepEqual(report.results.map((r) => `${labelOf(r)} ${r.status}`), ["MESH_EVT refused", "MESH_EVT.lineage refused"]);
  for (const r of report.results) assert.ok(r.status === "refused" && isCausewayError(r.error, ErrorCode.StreamConfigInvalid), labelOf(r));
  const res = await runNats(["stream", "info", "MESH_EVT", "--json"], { server: server.url });
  assert.notEqual(res.code, 0, "the stream must not exist");
});

test("streams - invalid files fail with CW_ERR_STREAM_CONFIG_INVALID naming the file and the field", async () => {
  const cases: { file: string; text: string; mentions: string[] }[] = [
    { file: "MESH_EVT.json", text: "{ \"name\": \"MESH_EVT\", ", mentions: ["invalid JSON"] },
    { file: "MESH_EVT.json", text: JSON.stringify({ name: "MESH_EVT", subjects: ["mesh.evt.>"], max_age: "30d" }), mentions: ["max_age", "nanoseconds"] },
    { file: "MESH_EVT.json", text: JSON.stringify({ subjects: ["mesh.evt.>"] }), mentions: ["name", "required"] },
    { file: "MESH_EVT.json", text: JSON.stringify({ name: "MESH_EVT", subjects: ["mesh.evt.>"], max_agee: 1 }), mentions: ["max_agee"] },
    { file: "consumers/MESH_NOPE.lineage.json", text: JSON.stringify({ durable_name: "lineage" }), mentions: ["MESH_NOPE"] },
  ];
  for (const c of cases) {
    using copy = copyOfStreams();
    writeFileSync(join(copy.dir, c.file), c.text);
    await assert.rejects(loadStreamDefinitions(copy.dir), (err: Error) => {
      assert.ok(isCausewayError(err, ErrorCode.StreamConfigInvalid), `${c.file}: ${err.message}`);
      assert.ok(err.message.includes(join(copy.dir, c.file)), err.message);
      for (const m of c.mentions) assert.ok(err.message.includes(m), `${err.message} should mention ${m}`);
      return true;
    });
  }
});

test("streams - the CLI applies the files, exits 0, then exits 1 on a refused change", async () => {
  await using server = await startServer();
  const defs = await loadStreamDefinitions(streamsDir);
  const first = await runCli(["streams", "apply", "--server", server.url]);
  assert.equal(first.code, 0, first.stderr);
  assert.deepEqual(first.stdout.trim().split("\n"), [
    ...allItems(defs).map((i) => `✓ ${i} created`),
    ...Object.values(MESH_BUCKETS).filter((b) => b.createdBy === STREAMS_APPLY).map((b) => `✓ KV ${b.name} created`),
  ]);
  const again = await runCli(["streams", "apply", "--server", server.url]);
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stdout, /KV .* created/, "existing buckets are left alone");

  using copy = copyOfStreams();
  copy.edit("MESH_DECISION.json", (cfg) => { cfg.deny_delete = false; });
  const second = await runCli(["streams", "apply", "--dir", copy.dir], { NATS_URL: server.url });
  assert.equal(second.code, 1, second.stdout + second.stderr);
  assert.match(second.stdout, /^✗ MESH_DECISION refused: deny_delete true → false /m);
  assert.match(second.stdout, /^= MESH_EVT unchanged$/m);
  assert.match(second.stderr, /CW_ERR_DESTRUCTIVE_CHANGE/);
});

test("streams - the CLI rejects bad usage with exit 2 and CW_ERR_USAGE", async () => {
  for (const args of [["streams"], ["streams", "remove"], ["streams", "apply", "--replicas", "0"], ["streams", "apply", "--bogus"]]) {
    const res = await runCli(args);
    assert.equal(res.code, 2, `${args.join(" ")}: ${res.stdout}${res.stderr}`);
    assert.match(res.stderr, /CW_ERR_USAGE/);
  }
});

test("streams - the CLI authenticates with an NKey seed file", async () => {
  const user = createUser();
  const seedDir = mkdtempSync(join(tmpdir(), "causeway-nkey-"));
  const seedFile = join(seedDir, "operator.nk");
  writeFileSync(seedFile, new TextDecoder().decode(user.getSeed()), { mode: 0o600 });
  try {
    await using server = await startServer({ config: `authorization { users: [ { nkey: "${user.getPublicKey()}" } ] }` });
    const denied = await runCli(["streams", "apply", "--server", server.url]);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /CW_ERR_CONFIG/);
    const viaFlag = await runCli(["streams", "apply", "--server", server.url, "--nkey", seedFile]);
    assert.equal(viaFlag.code, 0, viaFlag.stderr);
    const viaEnv = await runCli(["streams", "apply", "--server", server.url], { CAUSEWAY_NKEY: seedFile });
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.match(viaEnv.stdout, /^= MESH_EVT unchanged$/m);
    // A server list, as NATS_URL gives one to every service: the live node is found whatever the first entry is.
    const viaList = await runCli(["streams", "apply", "--server", `nats://127.0.0.1:${await freePort()}, ${server.url}`, "--nkey", seedFile]);
    assert.equal(viaList.code, 0, viaList.stderr);
  } finally {
    rmSync(seedDir, { recursive: true, force: true });
  }
});
