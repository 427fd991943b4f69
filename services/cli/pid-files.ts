// Pid files that are never trusted blindly. A pid file records the process's pid with what identifies it beyond
// the pid: when the kernel started it and its command line. A pid whose process is gone, or is now another
// program (pids are reused), makes the file stale: reported and removed, never signalled.
//
// A service started by `causeway up` / `start` runs under a supervisor (supervisor.ts), which writes the pid file
// itself: the service's identity, the supervisor's, how often it restarted the service and why. Such a file is
// live while either process is: while the supervisor waits to start the service again, the replica is
// `restarting`, and stopping it stops the supervisor first (which stops the service).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { setTimeout as delay } from "node:timers/promises";

/** What tells one process from a later one with the same pid. */
export interface ProcessIdentity {
  /** When the kernel started it: /proc/<pid>/stat's starttime (clock ticks since boot), else `ps -o lstart`. */
  readonly start: string;
  /** Its command line, arguments joined by spaces. */
  readonly command: string;
  /** Exited, not yet reaped by its parent: as good as gone. */
  readonly zombie: boolean;
}

/** A process as a pid file records it. */
export interface RecordedProcess {
  readonly pid: number;
  readonly start: string;
  readonly command: string;
}

/** The contents of a pid file. */
export interface PidRecord extends RecordedProcess {
  /** When it was started, ISO 8601: the uptime `causeway ps` shows. */
  readonly startedAt: string;
  /** The supervisor that restarts it when it exits unexpectedly (services started by `up` / `start`). */
  readonly supervisor?: RecordedProcess;
  /** How many times the supervisor has restarted it. */
  readonly restarts?: number;
  /** Its last unexpected exit: when, and how (`code 1`, `signal SIGKILL`). */
  readonly lastExit?: { readonly at: string; readonly how: string };
  /** Set while the supervisor waits to start it again: when it will. */
  readonly restartAt?: string;
}

/** A pid file read and checked against the process table. */
export type PidFileState =
  | { readonly state: "running"; readonly path: string; readonly record: PidRecord }
  /** The service exited and its supervisor is about to start it again. */
  | { readonly state: "restarting"; readonly path: string; readonly record: PidRecord }
  /** The file names no process of ours: `why` says what is wrong (gone, another program, unreadable). */
  | { readonly state: "stale"; readonly path: string; readonly record: PidRecord | undefined; readonly why: string };

const procfs = existsSync("/proc/self/stat");

/** The identity of process `pid`, or undefined when there is none. */
export function processIdentity(pid: number): ProcessIdentity | undefined {
  return procfs ? identityFromProc(pid) : identityFromPs(pid);
}

function identityFromProc(pid: number): ProcessIdentity | undefined {
  let stat: string;
  let cmdline: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid … starttime …": comm may hold spaces and parentheses, so fields count from the last ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { start: fields[19] ?? "", command: cmdline.split("\0").filter((a) => a !== "").join(" "), zombie: fields[0] === "Z" };
}

/** The identity from `ps` (systems without /proc). Exported for the test that compares it with /proc's. */
export function identityFromPs(pid: number): ProcessIdentity | undefined {
  let out: string;
  try {
    out = execFileSync("ps", ["-ww", "-o", "stat=,lstart=,args=", "-p", String(pid)], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
  } catch {
    return undefined; // ps exits 1 when there is no such process
  }
  const m = /^\s*(\S+)\s+(.{24})\s+(.*)$/.exec(out.trimEnd());
  return m ? { start: m[2]!, command: m[3]!, zombie: m[1]!.startsWith("Z") } : undefined;
}

/** `pid` as a pid file records it, its identity read now. Throws when it is not running. */
export function recordProcess(pid: number): RecordedProcess {
  const id = processIdentity(pid);
  if (!id || id.zombie) throw new Error(`process ${pid} exited before its pid file was written`);
  return { pid, start: id.start, command: id.command };
}

/** Records the running process `pid` in `path` (creating its directory); its identity is read now. */
export function writePidFile(path: string, pid: number, extra: Omit<PidRecord, keyof RecordedProcess | "startedAt"> & { startedAt?: string } = {}): PidRecord {
  const record: PidRecord = { ...recordProcess(pid), startedAt: new Date().toISOString(), ...extra };
  writeRecord(path, record);
  return record;
}

/** Writes `record` to `path` at once (a reader never sees half a file). */
export function writeRecord(path: string, record: PidRecord): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(record)}\n`);
  renameSync(tmp, path);
}

/** Reads `path` and checks that its process is still the one it recorded. */
export function readPidFile(path: string): PidFileState {
  let record: PidRecord;
  try {
    record = JSON.parse(readFileSync(path, "utf8")) as PidRecord;
    if (!Number.isInteger(record.pid) || record.pid <= 0 || typeof record.start !== "string" || typeof record.command !== "string") throw new Error("not a pid record");
  } catch (err) {
    return { state: "stale", path, record: undefined, why: `unreadable pid file (${(err as Error).message}): no process is signalled for it` };
  }
  const why = staleness(record);
  if (why === undefined) return { state: "running", path, record };
  if (record.supervisor !== undefined && staleness(record.supervisor) === undefined) return { state: "restarting", path, record };
  return { state: "stale", path, record, why };
}

/** True while `p`'s process runs and is still the recorded one (not a reused pid). */
export function isRecordedAlive(p: RecordedProcess): boolean {
  return staleness(p) === undefined;
}

/** Why `record` no longer names its process, or undefined while it does. */
function staleness(record: RecordedProcess): string | undefined {
  const id = processIdentity(record.pid);
  if (!id || id.zombie) return `process ${record.pid} is not running`;
  if (id.start !== record.start || id.command !== record.command) return `pid ${record.pid} is now another process (${id.command.slice(0, 80)})`;
  return undefined;
}

/** How a {@link terminate} ended. */
export interface Termination {
  /** Milliseconds from SIGTERM to exit. */
  readonly ms: number;
  /** It did not exit within the grace period and was sent SIGKILL. */
  readonly killed: boolean;
}

/**
 * Sends SIGTERM to the process `record` names (a service drains on it) — to its supervisor when it has one, which
 * passes it on and does not restart it — waits until both are gone, SIGKILL after `graceMs`; then removes the pid
 * file. Signals only processes that are still the recorded ones; the service's record is read again from the
 * file each time, as a supervisor may have restarted it meanwhile.
 */
export async function terminate(path: string, record: PidRecord, graceMs = 10_000): Promise<Termination> {
  const started = performance.now();
  const current = (): PidRecord => {
    const f = existsSync(path) ? readPidFile(path) : undefined;
    return f?.record !== undefined && f.record.supervisor?.pid === record.supervisor?.pid ? f.record : record;
  };
  const alive = (p: RecordedProcess | undefined): p is RecordedProcess => p !== undefined && staleness(p) === undefined;
  const signal = (p: RecordedProcess | undefined, sig: NodeJS.Signals) => {
    try {
      if (alive(p)) process.kill(p.pid, sig);
    } catch {
      // exited between the check and the signal
    }
  };
  // The supervisor first: it stops the service and restarts nothing. Without one (or with it gone), the service.
  if (alive(record.supervisor)) signal(record.supervisor, "SIGTERM");
  else signal(record, "SIGTERM");
  let killed = false;
  for (let now = current(); alive(now) || alive(record.supervisor); now = current()) {
    const elapsed = performance.now() - started;
    if (!killed && elapsed > graceMs) {
      signal(record.supervisor, "SIGKILL");
      signal(now, "SIGKILL");
      killed = true;
    } else if (elapsed > graceMs + 5_000) {
      throw new Error(`process ${now.pid} is still there 5 s after SIGKILL; its pid file ${path} stays`);
    }
    await delay(25);
  }
  rmSync(path, { force: true });
  return { ms: performance.now() - started, killed };
}
