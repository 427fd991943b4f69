// The supervisor of one replica of a service, as `causeway up` and `causeway start` run it:
//
//   node services/cli/supervisor.ts <service> <replica> <pid-file>
//
// <service> is a name `causeway start` takes: a principal with an entry, or `<principal>@<version>` for one of its
// `versions` (the process then runs as the principal and must run that version).
// `start` spawns it detached (so `make up` returns) with the service's log as its output; it spawns the service
// as its child, writes the replica's pid file (the service's identity and its own), and when the service exits
// unexpectedly — a crash, an OOM kill, `kill -9`, an exit 1 because something it depends on is gone — starts it
// again after a backoff (1 s doubling to 30 s, jittered; back to 1 s once a run has lasted a minute), writes the
// restart into the pid file (`causeway ps` shows it) and logs it. A service that has started once is restarted
// for as long as it keeps coming up; after 10 restarts in a row that never started (about 4 minutes of failing:
// its seed or data directory gone, a configuration broken since) the supervisor gives up, says why in the pid
// file and the log, and exits 1 — `causeway ps` shows the replica exited with the reason. A pid file removed
// from under it (the replica is no longer wanted) stops it too.
//
// What it does not restart: a service that stops cleanly (exit 0: it drained on SIGTERM / SIGINT, whoever sent
// it), and a first start that fails before the service ever answered — a configuration error would fail again,
// so the supervisor exits with the service's code and `causeway start` reports the reason. SIGTERM / SIGINT to
// the supervisor (`causeway stop`, `down`) is passed to the service, which drains; then the supervisor exits.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createLogger, isStartedMessage, jittered, loadLayout, type MeshService } from "../kit/index.ts";
import { repoRoot } from "./nats-process.ts";
import { readPidFile, recordProcess, writeRecord, type PidRecord, type RecordedProcess } from "./pid-files.ts";
import { serviceProcessEnv } from "./processes.ts";

/** Backoff between restarts: first, longest, and how long a run must last to reset it. */
export const RESTART_BACKOFF = Object.freeze({ firstMs: 1_000, maxMs: 30_000, resetAfterMs: 60_000, giveUpAfter: 10 });

const [name, replicaArg, pidFile] = process.argv.slice(2);
if (name === undefined || replicaArg === undefined || pidFile === undefined) {
  console.error("usage: supervisor.ts <service> <replica> <pid-file> (CW_ERR_USAGE)");
  process.exit(2);
}
const replica = Number(replicaArg);
const service: MeshService = loadLayout().service(name);
const log = createLogger({ name: `${name}-supervisor` }).child({ service: name, replica, supervisor: process.pid });
const self: RecordedProcess = recordProcess(process.pid);

let child: ChildProcess | undefined;
let record: PidRecord | undefined;
let everStarted = false;
let stopping = false;
let restarts = 0;
/** Restarts in a row whose service exited before it started. */
let failedInARow = 0;
let backoffMs: number = RESTART_BACKOFF.firstMs;
let waiting: NodeJS.Timeout | undefined;

/** Starts the service and records it; resolves nothing — its exit drives what happens next. */
function launch(): void {
  const proc = spawn(process.execPath, ["--import", join(repoRoot, "services", "kit", "telemetry.ts"), service.entryPath], {
    env: serviceProcessEnv(service, { ...process.env, CAUSEWAY_REPLICA: String(replica) }),
    // Its output is ours (the service's log file); the channel carries only "started" (kit supervision.ts).
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  child = proc;
  const launchedAt = Date.now();
  let ready = false;
  proc.on("message", (msg: unknown) => {
    if (!isStartedMessage(msg) || ready) return;
    ready = true;
    everStarted = true;
    failedInARow = 0;
    if (restarts > 0) log.info({ pid: proc.pid, restarts }, `${name}.${replica} started again (restart ${restarts})`);
  });
  proc.once("exit", (code, signal) => exited(proc, code, signal, ready, Date.now() - launchedAt));
  proc.once("error", (err) => log.error({ err }, `cannot start ${name}.${replica}`));
  if (proc.pid === undefined) return; // "error" follows, then "exit"
  try {
    record = { ...recordProcess(proc.pid), startedAt: new Date().toISOString(), supervisor: self, restarts, ...(record?.lastExit && { lastExit: record.lastExit }) };
    writeRecord(pidFile!, record);
  } catch {
    // Exited already: its exit handler decides.
  }
}

function exited(proc: ChildProcess, code: number | null, signal: NodeJS.Signals | null, ready: boolean, ranMs: number): void {
  if (child !== proc) return;
  child = undefined;
  const how = signal !== null ? `signal ${signal}` : `code ${code}`;
  if (stopping || (code === 0 && signal === null)) {
    // Stopped on purpose: drained on a signal (ours, or anyone's). Nothing to restart.
    log.info({ pid: proc.pid, exit: how }, `${name}.${replica} stopped; the supervisor exits too`);
    finish(code ?? 0);
    return;
  }
  if (!everStarted) {
    // Its first start failed: its reason is in the log (and on stderr); starting it again would fail again.
    log.error({ pid: proc.pid, exit: how }, `${name}.${replica} exited (${how}) before it ever started; not restarted`);
    finish(code ?? 1);
    return;
  }
  const at = new Date();
  if (!existsSync(pidFile!)) {
    // Someone removed the replica's pid file: it is no longer wanted (or its data directory is gone).
    log.warn({ pid: proc.pid, exit: how }, `${name}.${replica} exited (${how}) and its pid file is gone; not restarted`);
    process.exit(1);
  }
  if (!ready && ++failedInARow >= RESTART_BACKOFF.giveUpAfter) {
    record = { ...record!, lastExit: { at: at.toISOString(), how: `${how}; the supervisor gave up after ${failedInARow} restarts that never started` } };
    writeRecord(pidFile!, record);
    log.error({ pid: proc.pid, exit: how, restarts }, `${name}.${replica} failed to start ${failedInARow} times in a row; the supervisor gives up (\`causeway restart ${name}\` tries again)`);
    process.exit(1);
  }
  if (ready && ranMs >= RESTART_BACKOFF.resetAfterMs) backoffMs = RESTART_BACKOFF.firstMs;
  const wait = jittered(backoffMs);
  backoffMs = Math.min(RESTART_BACKOFF.maxMs, backoffMs * 2);
  restarts++;
  record = { ...record!, restarts, lastExit: { at: at.toISOString(), how }, restartAt: new Date(at.getTime() + wait).toISOString() };
  writeRecord(pidFile!, record);
  log.warn({ pid: proc.pid, exit: how, ranMs, restart: restarts, retryInMs: wait }, `${name}.${replica} exited unexpectedly (${how}); restarting in ${(wait / 1000).toFixed(1)} s`);
  waiting = setTimeout(() => {
    waiting = undefined;
    if (!stopping) launch();
  }, wait);
}

/** Removes the pid file (if it is still ours) and exits with `code`. */
function finish(code: number): void {
  if (existsSync(pidFile!)) {
    const f = readPidFile(pidFile!);
    if (f.record === undefined || f.record.supervisor?.pid === process.pid) rmSync(pidFile!, { force: true });
  }
  process.exit(code);
}

const stop = (sig: NodeJS.Signals) => {
  if (stopping) return;
  stopping = true;
  log.info({ signal: sig }, `stopping ${name}.${replica}`);
  if (waiting !== undefined) {
    clearTimeout(waiting);
    finish(0);
    return;
  }
  child?.kill("SIGTERM");
};
process.on("SIGTERM", stop).on("SIGINT", stop).on("SIGHUP", () => undefined);
launch();
