// Runs the real, pinned `nats` CLI against a test server, the way an operator would.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toolPath } from "./binaries.ts";

/** What a `nats` invocation printed and how it exited. */
export interface CliResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Connection options for {@link runNats}. */
export interface CliConnection {
  /** Server URL(s), comma-separated for a cluster. */
  server: string;
  /** Path to an NKey seed file (`--nkey`). */
  nkey?: string;
  /** Extra environment. */
  env?: NodeJS.ProcessEnv;
  /** Milliseconds before the process is killed. Default 30000. */
  timeoutMs?: number;
}

// The CLI reads contexts from $XDG_CONFIG_HOME; a private home keeps a developer's contexts out of tests.
// Made on first use and removed when the test process exits.
let home: string | undefined;
function cliHome(): string {
  if (home === undefined) {
    const dir = mkdtempSync(join(tmpdir(), "causeway-natscli-"));
    home = dir;
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return home;
}

/** Runs `nats <args>` and resolves with its output; never rejects on a non-zero exit. */
export function runNats(args: string[], conn: CliConnection): Promise<CliResult> {
  const connArgs = ["--server", conn.server, ...(conn.nkey ? ["--nkey", conn.nkey] : [])];
  return new Promise((resolve, reject) => {
    execFile(
      toolPath("nats"),
      [...connArgs, ...args],
      {
        timeout: conn.timeoutMs ?? 30_000,
        env: { ...process.env, HOME: cliHome(), XDG_CONFIG_HOME: cliHome(), NO_COLOR: "1", ...conn.env },
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") return reject(err);
        resolve({ stdout, stderr, code: err ? Number(err.code) : 0 });
      },
    );
  });
}

/** Runs `nats <args>` and parses stdout as JSON; throws with stderr when the command fails. */
export async function runNatsJson<T>(args: string[], conn: CliConnection): Promise<T> {
  const res = await runNats(args, conn);
  if (res.code !== 0) throw new Error(`nats ${args.join(" ")} exited ${res.code}: ${res.stderr || res.stdout}`);
  return JSON.parse(res.stdout) as T;
}
