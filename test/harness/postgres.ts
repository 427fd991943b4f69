// A throwaway PostgreSQL for tests, in the spirit of startServer: the installed server binaries, a temporary
// data directory, a random port on 127.0.0.1, the unix socket inside the temporary directory, trust
// authentication for local connections only, readiness by connecting (never by sleeping), and cleanup
// (fast shutdown + remove) through stop() or Symbol.asyncDispose.
//
// PostgreSQL refuses to run as root, and CI runs as root: then initdb and postgres run as the `postgres` OS
// user the Debian package creates (spawn's uid/gid, no sudo/runuser needed), and the directory is theirs.
//
// The instance runs with fsync, full-page writes and synchronous commit off: its data is thrown away when the
// test ends, so crash durability buys nothing, and without them initdb and every commit are several times
// faster. Transactions, locks and constraints — what the tests exercise — behave the same. A test that crashes
// the server asks for `durable` (a lost acknowledged commit would be the harness's doing, not the code's).
import { spawn, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { Client } from "pg";
import { waitFor } from "./wait.ts";

/** A running PostgreSQL. Dispose it (`await using`) or stop() it to shut it down and remove its directory. */
export interface PostgresServer extends AsyncDisposable {
  /** URL of the database created for the caller, e.g. postgres://postgres@127.0.0.1:41234/causeway_test. */
  readonly url: string;
  readonly port: number;
  /** Creates another empty database on this server and returns its URL. */
  createDatabase(name?: string): Promise<string>;
  /** Fast shutdown (SIGINT: abort transactions, disconnect clients), then removes the directory. */
  stop(): Promise<void>;
  /** SIGKILL (a crash: its clients see the connection drop), then, after `downMs`, the same server on the same port and data again. */
  crashAndRestart(downMs: number): Promise<void>;
  /** What the server logged, for diagnosing a failed test. */
  logs(): string;
}

/** Options for {@link startPostgres}. */
export interface PostgresOptions {
  /** Name of the database created for {@link PostgresServer.url}. Default `causeway_test`. */
  database?: string;
  /** Milliseconds to wait for the server to accept connections. Default 30000. */
  readyTimeoutMs?: number;
  /**
   * Keep PostgreSQL's crash durability (fsync, full-page writes, synchronous commit on), for tests that crash the
   * server: without it a commit the client was told about can be lost, which no production server allows.
   */
  durable?: boolean;
}

const INSTALL_HINT = "install it with `apt-get install -y postgresql` (Debian/Ubuntu), or put its bin directory on PG_BIN";

const live = new Map<ChildProcess, string>();
process.once("exit", () => {
  // Last resort for a test that did not stop its server: kill it and remove its directory.
  for (const [child, dir] of live) {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});

let counter = 0;

/** Starts a PostgreSQL server with one empty database and resolves once it accepts connections. */
export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresServer> {
  const bin = postgresBin();
  const owner = process.getuid?.() === 0 ? postgresUser() : undefined;
  const workDir = mkdtempSync(join(tmpdir(), "causeway-pg-"));
  const dataDir = join(workDir, "data");
  if (owner) chownSync(workDir, owner.uid, owner.gid);
  const spawnAs = owner ? { uid: owner.uid, gid: owner.gid } : {};
  let child: ChildProcess | undefined;
  let log = "";

  const stop = async (): Promise<void> => {
    const proc = child;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGINT");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
    live.delete(proc!);
    rmSync(workDir, { recursive: true, force: true });
  };

  try {
    const init = await run(join(bin, "initdb"), [
      "-D", dataDir, "-U", "postgres", "--auth=trust", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C",
    ], { cwd: workDir, ...spawnAs });
    if (init.code !== 0) throw new Error(`initdb failed (exit ${init.code}):\n${init.output}`);

    const launch = (port: number): AbortSignal => {
      const proc = spawn(join(bin, "postgres"), [
        "-D", dataDir, "-p", String(port), "-k", workDir,
        "-c", "listen_addresses=127.0.0.1",
        ...(opts.durable ? [] : ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]),
        "-c", "max_connections=200", "-c", "logging_collector=off",
      ], { cwd: workDir, stdio: ["ignore", "ignore", "pipe"], ...spawnAs });
      child = proc;
      live.set(proc, workDir);
      // Tests that forget to stop the server must not keep the process alive: the exit hook kills it.
      proc.unref();
      const stderr = proc.stderr!;
      stderr.setEncoding("utf8").on("data", (chunk: string) => {
        log += chunk;
      });
      (stderr as unknown as { unref(): void }).unref();
      const gone = new AbortController();
      proc.once("exit", (code, signal) => {
        live.delete(proc);
        gone.abort(new Error(`postgres exited (code ${code}, signal ${signal}):\n${log}`));
      });
      return gone.signal;
    };
    const ready = (port: number, gone: AbortSignal) => {
      const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
      return waitFor(async () => {
        const client = new Client({ connectionString: admin, connectionTimeoutMillis: 2_000 });
        try {
          await client.connect();
          await client.query("SELECT 1");
          return true;
        } finally {
          await client.end().catch(() => {});
        }
      }, { timeoutMs: opts.readyTimeoutMs ?? 30_000, what: `postgres on port ${port} to accept connections`, signal: gone });
    };

    // A free port can be taken between probing and binding: then postgres exits, and we try another.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const gone = launch(port);
      const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
      try {
        await ready(port, gone);
      } catch (err) {
        if (gone.aborted && /could not bind|address already in use/i.test(log) && attempt < 5) {
          log = "";
          continue;
        }
        throw err;
      }
      const createDatabase = async (name = `causeway_${process.pid}_${++counter}`): Promise<string> => {
        if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new RangeError(`database name ${name} is not a plain lowercase identifier`);
        const client = new Client({ connectionString: admin });
        await client.connect();
        try {
          await client.query(`CREATE DATABASE ${name}`);
        } finally {
          await client.end();
        }
        return `postgres://postgres@127.0.0.1:${port}/${name}`;
      };
      const url = await createDatabase(opts.database ?? "causeway_test");
      return {
        url,
        port,
        createDatabase,
        stop,
        async crashAndRestart(downMs) {
          const proc = child!;
          const exited = new Promise((resolve) => proc.once("exit", resolve));
          proc.kill("SIGKILL");
          await exited;
          await delay(downMs); // the outage's length, by design
          await ready(port, launch(port));
        },
        logs: () => log,
        [Symbol.asyncDispose]: stop,
      };
    }
  } catch (err) {
    // A failed start leaves nothing behind: no process, no directory.
    await stop();
    throw err;
  }
}

/** The newest installed PostgreSQL's bin directory: env PG_BIN, else /usr/lib/postgresql/<major>/bin. */
export function postgresBin(): string {
  const fromEnv = process.env.PG_BIN;
  if (fromEnv !== undefined && fromEnv !== "") {
    if (!existsSync(join(fromEnv, "postgres"))) throw new Error(`PG_BIN=${fromEnv} holds no postgres binary: ${INSTALL_HINT}`);
    return fromEnv;
  }
  const root = "/usr/lib/postgresql";
  const majors = existsSync(root)
    ? readdirSync(root).filter((v) => /^\d+$/.test(v) && existsSync(join(root, v, "bin", "initdb"))).sort((a, b) => Number(b) - Number(a))
    : [];
  if (majors.length === 0) throw new Error(`PostgreSQL is not installed (no ${root}/<version>/bin/initdb): ${INSTALL_HINT}`);
  return join(root, majors[0]!, "bin");
}

/** The `postgres` OS user, which runs the server when the tests run as root. */
function postgresUser(): { uid: number; gid: number } {
  const line = readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.startsWith("postgres:"));
  const [, , uid, gid] = line?.split(":") ?? [];
  if (uid === undefined || gid === undefined) {
    throw new Error(`running as root, and PostgreSQL refuses to: no \`postgres\` user to run it as; ${INSTALL_HINT} (it creates the user)`);
  }
  return { uid: Number(uid), gid: Number(gid) };
}

/** A port nobody listens on right now, on 127.0.0.1. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === "string") throw new Error("no TCP address for a free port");
  return address.port;
}

/** Runs a command to completion, collecting its output. */
function run(cmd: string, args: string[], opts: { cwd: string; uid?: number; gid?: number }): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, args, { ...opts, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    proc.stdout.setEncoding("utf8").on("data", (c: string) => (output += c));
    proc.stderr.setEncoding("utf8").on("data", (c: string) => (output += c));
    proc.once("error", reject);
    proc.once("close", (code) => resolve({ code, output }));
  });
}
