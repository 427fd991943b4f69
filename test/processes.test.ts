// `causeway ps | start | stop | restart | logs | down` on real processes: the services come from
// infra/principals.json (the layout's), run detached against a real nats-server with the rendered accounts,
// and are tracked in pid files that are checked against the process table, never trusted blindly.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Svcm } from "@nats-io/services";
import { ErrorCode, Role, defaultLayout, seedPath, type MeshService } from "../services/kit/index.ts";
import { ensureDevTokens } from "../services/cli/commands/tokens.ts";
import { identityFromPs, processIdentity, readPidFile } from "../services/cli/pid-files.ts";
import { logDir, logFileOf, pidFileOf, readinessProblems, recordedReplicas, runDir, type ServiceProcess } from "../services/cli/processes.ts";
import { runCli, startOperatedMesh, type CliRun, type OperatedMesh } from "./e2e-fixture.ts";
import { repoRoot, waitFor } from "./harness/index.ts";

const layout = defaultLayout();
/** An agent of the layout: the one replicas are tried on. */
const agent: MeshService = layout.services.find((s) => s.role === Role.Agent)!;

/** The environment every `causeway` run and the services it starts get: the test's server and data dir, free HTTP ports. */
const envOf = (mesh: OperatedMesh): NodeJS.ProcessEnv => ({
  ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir, NATS_URL: mesh.server.url, CAUSEWAY_GATEWAY_PORT: "0", LINEAGE_HTTP_PORT: "0", LOG_LEVEL: "info",
});

/** Runs the real `causeway` command. */
function causeway(mesh: OperatedMesh, ...args: string[]): Promise<CliRun> {
  return runCli(args, envOf(mesh));
}

interface PsRow {
  service: string;
  replica: number | null;
  pid: number | null;
  state: string;
  restarts: number | null;
  lastExit: { at: string; how: string } | null;
  supervisor: number | null;
  log: string;
  problem?: string;
}

async function ps(mesh: OperatedMesh): Promise<PsRow[]> {
  const r = await causeway(mesh, "ps", "--json");
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as PsRow[];
}

const alive = (pid: number) => processIdentity(pid) !== undefined && !processIdentity(pid)!.zombie;

/** A mesh for the services (the gateway needs the upstreams' tokens); on dispose whatever they left running is killed. */
async function meshForServices(): Promise<OperatedMesh> {
  const mesh = await startOperatedMesh();
  ensureDevTokens(mesh.dataDir);
  return mesh;
}

describe("services as processes", () => {
  test("services - start runs every service infra/principals.json gives an entry; ps lists them; restart gives one new pids; down stops them all", async () => {
    await using mesh = await meshForServices();
    const started = await causeway(mesh, "start");
    assert.equal(started.code, 0, started.stdout + started.stderr);
    for (const s of layout.services) assert.match(started.stdout, new RegExp(`^✓ ${s.name} — started replica 1 \\(pid \\d+\\)`, "m"));

    const rows = await ps(mesh);
    assert.deepEqual(rows.map((r) => [r.service, r.replica, r.state]), layout.services.map((s) => [s.name, 1, "running"]));
    for (const r of rows) {
      assert.ok(alive(r.pid!), `${r.service} pid ${r.pid} runs`);
      assert.equal(r.log, logFileOf(logDir(mesh.dataDir), r.service));
    }
    const text = await causeway(mesh, "ps");
    assert.match(text.stdout, /^SERVICE\s+REPLICA\s+PID\s+STATE\s+UPTIME\s+RESTARTS\s+LOG$/m);
    assert.match(text.stdout, new RegExp(`^${agent.name}\\s+1\\s+\\d+\\s+running\\s+\\d+s\\s+0\\s+\\S+${agent.name}\\.log$`, "m"));

    // Everything already runs: start starts nothing.
    const again = await causeway(mesh, "start", agent.name);
    assert.equal(again.code, 0, again.stdout);
    assert.equal(again.stdout, `= already running: ${agent.name} (pid ${rows.find((r) => r.service === agent.name)!.pid})\n`);

    const before = rows.find((r) => r.service === agent.name)!.pid!;
    const restarted = await causeway(mesh, "restart", agent.name);
    assert.equal(restarted.code, 0, restarted.stdout + restarted.stderr);
    assert.match(restarted.stdout, new RegExp(`^✓ stopped ${agent.name}\\.1 \\(pid ${before}\\) — drained in`, "m"));
    const after = (await ps(mesh)).find((r) => r.service === agent.name)!;
    assert.equal(after.state, "running");
    assert.notEqual(after.pid, before);
    assert.ok(!alive(before), "the old process is gone");

    const down = await causeway(mesh, "down");
    assert.equal(down.code, 0, down.stdout + down.stderr);
    for (const r of rows.filter((x) => x.service !== agent.name)) assert.match(down.stdout, new RegExp(`^✓ stopped ${r.service}\\.1 \\(pid ${r.pid}\\)`, "m"));
    assert.match(down.stdout, /^no nats-server running$/m, "this mesh's server is the test's, not one `up` started");
    for (const r of [...rows, after]) assert.ok(!alive(r.pid!), `${r.service} pid ${r.pid} stopped`);
    assert.deepEqual(readdirSync(join(runDir(mesh.dataDir), "services")), []);
    assert.deepEqual((await ps(mesh)).map((r) => r.state), layout.services.map(() => "stopped"));
  });

  test("services - --replicas 2 runs two processes; logs shows their output; a stale pid file is reported, never signalled; stop stops both", async () => {
    await using mesh = await meshForServices();
    const started = await causeway(mesh, "start", agent.name, "--replicas", "2");
    assert.equal(started.code, 0, started.stdout + started.stderr);
    const rows = (await ps(mesh)).filter((r) => r.service === agent.name);
    assert.deepEqual(rows.map((r) => [r.replica, r.state]), [[1, "running"], [2, "running"]]);
    const [one, two] = rows.map((r) => r.pid!);
    assert.notEqual(one, two);
    // Both answer as the agent's micro service.
    const pings = await waitFor(async () => {
      const infos = [];
      for await (const info of await new Svcm(mesh.operator).client({ strategy: "timer", maxWait: 500 }).ping(agent.service)) infos.push(info);
      return infos.length === 2 && infos;
    }, { what: "two instances answering" });
    assert.equal(pings.length, 2);

    // The log is the service's output: JSON lines of both replicas, each with its pid.
    const logs = await causeway(mesh, "logs", agent.name, "-n", "200");
    assert.equal(logs.code, 0, logs.stderr);
    for (const pid of [one, two]) assert.match(logs.stdout, new RegExp(`"pid":${pid},.*"name":"${agent.name}"`));

    // Following the log while replica 1 drains shows its drain as it happens.
    const follow = spawn(process.execPath, [join(repoRoot, "services/cli/main.ts"), "logs", agent.name, "-f", "-n", "0"], { env: envOf(mesh), stdio: ["ignore", "pipe", "pipe"] });
    let followed = "";
    follow.stdout.setEncoding("utf8").on("data", (c: string) => { followed += c; });
    const followExit = new Promise((r) => follow.once("exit", r));
    try {
      // Replica 2 dies without a drain, its supervisor first (or it would start it again): its pid file is stale
      // (processes gone). Replica 3's pid file names a live process that is not the agent (the test's own
      // nats-server), and no supervisor: stale too, and never signalled.
      const twoRecord = readPidFile(pidFileOf(mesh.dataDir, agent.name, 2)).record!;
      process.kill(twoRecord.supervisor!.pid, "SIGKILL");
      process.kill(two!, "SIGKILL");
      await waitFor(() => !alive(two!) && !alive(twoRecord.supervisor!.pid), { what: "replica 2 and its supervisor gone" });
      const serverPid = mesh.server.pid;
      const { supervisor: _supervisor, ...unsupervised } = twoRecord;
      writeFileSync(pidFileOf(mesh.dataDir, agent.name, 3), JSON.stringify({ ...unsupervised, pid: serverPid }));

      const stale = await ps(mesh);
      const mine = stale.filter((r) => r.service === agent.name);
      assert.deepEqual(mine.map((r) => [r.replica, r.state]), [[1, "running"], [2, "exited"], [3, "exited"]]);
      assert.match(mine[1]!.problem!, new RegExp(`stale pid file .*${agent.name}\\.2\\.pid: process ${two} is not running`));
      assert.match(mine[2]!.problem!, new RegExp(`pid ${serverPid} is now another process`));
      const table = await causeway(mesh, "ps");
      assert.match(table.stdout, new RegExp(`^! ${agent.name}\\.2: stale pid file`, "m"));

      const stopped = await causeway(mesh, "stop", agent.name);
      assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
      assert.match(stopped.stdout, new RegExp(`^! ${agent.name}\\.2: stale pid file — process ${two} is not running; removed$`, "m"));
      assert.match(stopped.stdout, new RegExp(`^! ${agent.name}\\.3: stale pid file — pid ${serverPid} is now another process`, "m"));
      assert.match(stopped.stdout, new RegExp(`^✓ stopped ${agent.name}\\.1 \\(pid ${one}\\) — drained in`, "m"));
      assert.ok(!alive(one!), "replica 1 stopped");
      assert.ok(alive(serverPid), "the process a stale pid file named was not signalled");
      assert.deepEqual(recordedReplicas(mesh.dataDir), [], "every pid file removed");
      await waitFor(() => followed.includes(`"pid":${one},`) && followed.includes("draining"), { what: "logs -f to show replica 1 draining" });
    } finally {
      follow.kill("SIGTERM");
      await followExit;
    }
    assert.equal(follow.exitCode, 0);
  });

  test("services - --replicas on a running service scales it to exactly that many; restart brings a crashed replica back; down stops replicas started by hand", async () => {
    await using mesh = await meshForServices();
    const started = await causeway(mesh, "start", agent.name, "--replicas", "3");
    assert.equal(started.code, 0, `${started.stdout}\n${started.stderr}`);
    const three = (await ps(mesh)).filter((r) => r.service === agent.name);
    assert.deepEqual(three.map((r) => r.state), ["running", "running", "running"]);
    const scaled = await causeway(mesh, "start", agent.name, "--replicas", "1");
    assert.equal(scaled.code, 0, scaled.stdout);
    assert.match(scaled.stdout, new RegExp(`^✓ stopped ${agent.name}\\.3 \\(pid ${three[2]!.pid}\\)`, "m"));
    assert.match(scaled.stdout, new RegExp(`^= already running: ${agent.name} \\(pid ${three[0]!.pid}\\)$`, "m"));
    assert.deepEqual((await ps(mesh)).filter((r) => r.service === agent.name).map((r) => r.pid), [three[0]!.pid]);

    assert.equal((await causeway(mesh, "start", agent.name, "--replicas", "2")).code, 0);
    // A replica that crashed with its supervisor (nothing restarted it) is restarted with the others: its pid file
    // says it was meant to run.
    const crashedRow = (await ps(mesh)).find((r) => r.service === agent.name && r.replica === 2)!;
    const crashed = crashedRow.pid!;
    process.kill(crashedRow.supervisor!, "SIGKILL");
    process.kill(crashed, "SIGKILL");
    await waitFor(() => !alive(crashed) && !alive(crashedRow.supervisor!), { what: "replica 2 and its supervisor gone" });
    const restarted = await causeway(mesh, "restart", agent.name);
    assert.equal(restarted.code, 0, restarted.stdout);
    assert.match(restarted.stdout, new RegExp(`^! ${agent.name}\\.2: stale pid file — process ${crashed} is not running; removed$`, "m"));
    assert.match(restarted.stdout, new RegExp(`^✓ ${agent.name} — started replica 1 \\(pid \\d+\\), replica 2 \\(pid \\d+\\)`, "m"));
    const down = await causeway(mesh, "down");
    assert.equal(down.code, 0, down.stdout);
    assert.equal(down.stdout.match(new RegExp(`^✓ stopped ${agent.name}\\.\\d`, "gm"))?.length, 2);
    assert.deepEqual(recordedReplicas(mesh.dataDir), []);
  });

  test("services - a replica killed with SIGKILL is started again by its supervisor with a new pid, and ps reports the restart; stop stops both", async () => {
    await using mesh = await meshForServices();
    const started = await causeway(mesh, "start", agent.name);
    assert.equal(started.code, 0, started.stdout + started.stderr);
    const before = (await ps(mesh)).find((r) => r.service === agent.name)!;
    assert.deepEqual([before.state, before.restarts, before.lastExit], ["running", 0, null]);
    assert.match(started.stdout, new RegExp(`started replica 1 \\(pid ${before.pid}\\)`), "start prints the service's pid, not its supervisor's");
    assert.ok(before.supervisor !== null && alive(before.supervisor), "a supervisor runs it");

    process.kill(before.pid!, "SIGKILL");
    const after = await waitFor(async () => {
      const row = (await ps(mesh)).find((r) => r.service === agent.name)!;
      return row.state === "running" && row.pid !== before.pid && row;
    }, { what: "the replica to run again", timeoutMs: 20_000 });
    assert.ok(!alive(before.pid!), "the killed process is gone");
    assert.equal(after.supervisor, before.supervisor, "the same supervisor");
    assert.equal(after.restarts, 1);
    assert.equal(after.lastExit?.how, "signal SIGKILL");
    const text = await causeway(mesh, "ps");
    assert.match(text.stdout, new RegExp(`^${agent.name}\\s+1\\s+${after.pid}\\s+running\\s+\\d+s\\s+1\\s+`, "m"));
    assert.match(text.stdout, new RegExp(`^! ${agent.name}\\.1: restarted 1 time by its supervisor; last exit: signal SIGKILL at `, "m"));
    const logs = await causeway(mesh, "logs", agent.name, "-n", "100");
    assert.match(logs.stdout, new RegExp(`"msg":"${agent.name}\\.1 exited unexpectedly \\(signal SIGKILL\\); restarting in [\\d.]+ s"`));
    // The new process is the service: it answers as the agent's micro service.
    await waitFor(async () => {
      for await (const info of await new Svcm(mesh.operator).client({ strategy: "timer", maxWait: 300 }).ping(agent.service)) if (info.name === agent.service) return true;
      return false;
    }, { what: "the restarted replica to answer" });

    const stopped = await causeway(mesh, "stop", agent.name);
    assert.equal(stopped.code, 0, stopped.stdout + stopped.stderr);
    assert.match(stopped.stdout, new RegExp(`^✓ stopped ${agent.name}\\.1 \\(pid ${after.pid}\\) — drained in`, "m"));
    assert.ok(!alive(after.pid!) && !alive(after.supervisor!), "the replica and its supervisor stopped; nothing restarted it");
    assert.deepEqual(recordedReplicas(mesh.dataDir), []);
  });

  test("services - refusals: an unknown service, a principal without an entry, --replicas without a service, an unreachable server, a service that exits at start", async () => {
    await using mesh = await meshForServices();
    const unknown = await causeway(mesh, "start", "nobody");
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, new RegExp(`no principal "nobody" in .*; its services: ${layout.services.map((s) => s.name).join(", ")} \\(${ErrorCode.UnknownPrincipal}\\)`));
    const person = Object.values(layout.principals.principals).find((p) => p.entry === undefined)!;
    const noEntry = await causeway(mesh, "stop", person.name);
    assert.equal(noEntry.code, 1);
    assert.match(noEntry.stderr, new RegExp(`principal "${person.name}" runs no process \\(it has no entry\\).*\\(${ErrorCode.UnknownPrincipal}\\)`));
    const usage = await causeway(mesh, "start", "--replicas", "2");
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, new RegExp(`--replicas needs a service.*\\(${ErrorCode.Usage}\\)`));
    const badCount = await causeway(mesh, "restart", agent.name, "--replicas", "0");
    assert.equal(badCount.code, 2);
    const unreachable = await causeway(mesh, "start", agent.name, "--server", "nats://127.0.0.1:1");
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, new RegExp(`cannot reach the NATS server nats://127\\.0\\.0\\.1:1 as the operator.*\\(${ErrorCode.Unavailable}\\)`));
    assert.equal(existsSync(pidFileOf(mesh.dataDir, agent.name, 1)), false, "nothing was started");
    const nothing = await causeway(mesh, "stop");
    assert.deepEqual([nothing.code, nothing.stdout.trim()], [0, "no service is running"]);

    // A service that exits at start (here: its seed is gone) fails the start, with its last words and its log: on a
    // running mesh the fix is `principal add` (a seed alone is a key the server does not know), `keys new` offline.
    rmSync(seedPath(agent.name, mesh.dataDir));
    const failed = await causeway(mesh, "start", agent.name);
    assert.equal(failed.code, 1, failed.stdout);
    assert.match(failed.stdout, new RegExp(`^✗ ${agent.name}\\.1 exited \\(code 1\\) before it answered: ${agent.name}: no seed for principal "${agent.name}" at \\S+\\. ` +
      `On a running development mesh run \`causeway principal add ${agent.name}\` \\(creates the seed, .*\\); without a running mesh, \`causeway keys new ${agent.name}\` creates the seed alone; ` +
      `log \\S+${agent.name}\\.log \\(${ErrorCode.Unavailable}\\)$`, "m"));
    assert.deepEqual(recordedReplicas(mesh.dataDir), [], "no pid file is left for it");
  });

  test("services - a process that exits at start is reported with its own reason line whole, hint included; any other last line is cut with …", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "causeway-lastline-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const logFile = join(dir, `${agent.name}.log`);
    writeFileSync(logFile, `${agent.name}: what an earlier run said\n`);
    const started = (replica: number): ServiceProcess => ({ service: agent, replica, logFile, logOffset: statSync(logFile).size }) as ServiceProcess;
    const first = started(1);
    // Longer than any summary line used to keep, with a parenthesis and a hint at its very end.
    const reason = `${agent.name}: the NATS server refused principal "${agent.name}" (Authorization Violation): ${"it does not know its key. ".repeat(12)}` +
      `On a development mesh run \`causeway principal add ${agent.name}\` (renders the server's accounts, reloads it, seeds the trust store, starts the service); by hand: \`causeway trust seed\``;
    appendFileSync(logFile, `{"level":"error","msg":"${agent.name} failed"}\n${reason}\n`);
    const second = started(2);
    const other = `{"level":"fatal","msg":"${"x".repeat(400)}"}`;
    appendFileSync(logFile, `${other}\n`);
    const problems = readinessProblems({ failed: [{ process: first, exit: "code 1" }, { process: second, exit: "code 1" }], late: [], timeoutMs: 30_000 });
    assert.deepEqual(problems, [
      `${agent.name}.1 exited (code 1) before it answered: ${reason}; log ${logFile}`,
      `${agent.name}.2 exited (code 1) before it answered: ${other.slice(0, 300)}…; log ${logFile}`,
    ]);
  });

  test("services - a process's identity from ps matches /proc's, so systems without /proc check pid files too", () => {
    assert.equal(identityFromPs(process.pid)?.command, processIdentity(process.pid)?.command);
    assert.equal(identityFromPs(2 ** 22 + 1), undefined);
  });
});
