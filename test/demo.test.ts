// `make demo` is the README's first promise: the whole mesh end to end on embedded defaults. Run it as a user
// would, in a data directory that already holds another mesh's audit log (the demo must not use it).
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { sqliteStorePath } from "../services/lineage/open-store.ts";
import { createMerkleLog } from "../services/lineage/merkle.ts";
import { encodeRecord } from "../services/lineage/record.ts";
import { openSqliteStore } from "../services/lineage/store-sqlite.ts";
import { processIdentity } from "../services/cli/pid-files.ts";
import { repoRoot, waitFor } from "./harness/index.ts";

test("demo - the flow runs through the gateway, the critical step is approved, and lineage answers why, trace (with the flow's spend) and verify", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "causeway-demo-"));
  try {
    // Another mesh's audit log in the data directory, as `make up` leaves one.
    {
      await using other = openSqliteStore(sqliteStorePath(dataDir));
      const r = encodeRecord(0, { stream: "MESH_CAP", seq: 99, subject: "mesh.cap.plan.v1", recorded: "2026-01-01T00:00:00.000Z", verification: { result: "failed", code: "CW_ERR_UNSIGNED" }, attributes: null, headers: {}, datadigest: "", data: "" });
      const log = createMerkleLog({ leafAt: () => r.leafHash });
      log.append(r.leafHash);
      await other.append([r], { size: 1, frontier: log.frontier() });
    }
    const { stdout } = await promisify(execFile)(process.execPath, [join(repoRoot, "services/cli/main.ts"), "demo"], {
      env: { ...process.env, CAUSEWAY_DATA_DIR: dataDir }, timeout: 90_000, maxBuffer: 16 * 1024 * 1024,
    });
    assert.match(stdout, /upstream-demo → gateway \(HTTP\): report\.requested accepted — 202/);
    assert.match(stdout, /approver-alice approved publish\.v1 work/);
    assert.match(stdout, /report\.released — published once, under the grant's lease/);
    assert.match(stdout, /✗ quarantined by verifier: low_confidence/);
    assert.match(stdout, /why \S+ — report\.released by publisher, 6 steps to the upstream root/);
    // The listener the reporter does not know: its output, and lineage's edge from the fact to it.
    assert.match(stdout, /report\.summarized — the summarizer subscribes to report\.published; the reporter does not know it — caused by report /);
    assert.match(stdout, /why \S+ — report\.summarized by summarizer, 6 steps to the upstream root/);
    // The flow's spend and priority, from lineage's trace: the researcher's three runs at 10 cost units and the
    // verifier's two at 2 (the low-confidence finding never ran), against upstream-demo's budget.
    assert.match(stdout, /\$ bin\/causeway lineage trace \S+\ntrace \S+ — \d+ events/);
    assert.match(stdout, /\nspent: 34 cost units, 0 tokens in \d+ runs of budget 1000 \/ 200000 \/ 64 steps \(priority normal\)\n/);
    assert.match(stdout, /research\.finding\.created +researcher@1\.0\.0 +10 cost /);
    assert.match(stdout, /the flow ledger \(KV causeway_flow_ledger\), which the runtime checked the budget against — \d+ steps, 34 cost units, 0 tokens/);
    assert.match(stdout, /✓ the audit log is intact: \d+ records re-hashed, \d+ signed checkpoints? match/);
    assert.match(stdout, /demo complete in/);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test("demo - when its output closes early (`make demo | head`), it stops its nats-server and services: no process is left", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "causeway-demo-"));
  const demo = spawn(process.execPath, [join(repoRoot, "services/cli/main.ts"), "demo"], { env: { ...process.env, CAUSEWAY_DATA_DIR: dataDir }, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<number | null>((resolve) => demo.once("exit", (code) => resolve(code)));
  let out = "", err = "";
  demo.stderr.setEncoding("utf8").on("data", (c: string) => { err += c; });
  const alive = (pid: number) => processIdentity(pid) !== undefined && !processIdentity(pid)!.zombie;
  try {
    // The reader takes the lines up to the started services, as `head` would, and goes away.
    const services = await new Promise<string>((resolve, reject) => {
      demo.stdout.setEncoding("utf8").on("data", (c: string) => {
        out += c;
        const m = /^✓ services — (.*)$/m.exec(out);
        if (m) resolve(m[1]!);
      });
      void exited.then(() => reject(new Error(`the demo ended before its services started:\n${out}\n${err}`)));
    });
    const pids = [...services.matchAll(/\(pid (\d+)\)/g)].map((m) => Number(m[1]));
    assert.ok(pids.length >= 8, services);
    const ports = readdirSync(join(dataDir, "demo")).map((f) => /^nats-server_(\d+)\.ports$/.exec(f)).find((m) => m !== null);
    assert.ok(ports, "the demo's nats-server wrote its ports file");
    const serverPid = Number(ports[1]);
    for (const pid of [serverPid, ...pids]) assert.ok(alive(pid), `pid ${pid} runs while the demo does`);
    demo.stdout.destroy();

    assert.equal(await exited, 0, err);
    assert.match(err, /causeway demo: the output closed; stopped what it had started/);
    await waitFor(() => [serverPid, ...pids].every((pid) => !alive(pid)), { what: "no process of the demo left", timeoutMs: 5_000 });
  } finally {
    demo.kill("SIGKILL");
    rmSync(dataDir, { recursive: true, force: true });
  }
});
