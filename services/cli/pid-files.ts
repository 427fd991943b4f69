// Pid files that are never trusted blindly. A pid file records the process's pid with what identifies it beyond
// the pid: when the kernel started it and its command line. A pid whose process is gone, or is now another
// program (pids are reused), makes the file stale: reported and removed, never signalled.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
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

/** The contents of a pid file. */
export interface PidRecord {
  readonly pid: number;
  readonly start: string;
  readonly command: string;
  /** When it was started, ISO 8601: the uptime `causeway ps` shows. */
  readonly startedAt: string;
}

/** A pid file read and checked against the process table. */
export type PidFileState =
  | { readonly state: "running"; readonly path: string; readonly record: PidRecord }
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

/** Records the running process `pid` in `path` (creating its directory); its identity is read now. */
export function writePidFile(path: string, pid: number): PidRecord {
  const id = processIdentity(pid);
  if (!id || id.zombie) throw new Error(`process ${pid} exited before its pid file was written`);
  const record: PidRecord = { pid, start: id.start, command: id.command, startedAt: new Date().toISOString() };
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${JSON.stringify(record)}\n`);
  return record;
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
  return why === undefined ? { state: "running", path, record } : { state: "stale", path, record, why };
}

/** Why `record` no longer names its process, or undefined while it does. */
function staleness(record: PidRecord): string | undefined {
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
 * Sends SIGTERM to the process `record` names (a service drains on it), waits until it is gone, SIGKILL after
 * `graceMs`; then removes the pid file. Signals only while the process is still the recorded one.
 */
export async function terminate(path: string, record: PidRecord, graceMs = 10_000): Promise<Termination> {
  const started = performance.now();
  const signal = (sig: NodeJS.Signals) => {
    try {
      if (staleness(record) === undefined) process.kill(record.pid, sig);
    } catch {
      // exited between the check and the signal
    }
  };
  signal("SIGTERM");
  let killed = false;
  while (staleness(record) === undefined) {
    const elapsed = performance.now() - started;
    if (!killed && elapsed > graceMs) {
      signal("SIGKILL");
      killed = true;
    } else if (elapsed > graceMs + 5_000) {
      throw new Error(`process ${record.pid} is still there 5 s after SIGKILL; its pid file ${path} stays`);
    }
    await delay(25);
  }
  rmSync(path, { force: true });
  return { ms: performance.now() - started, killed };
}
