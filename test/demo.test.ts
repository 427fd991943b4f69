// `make demo` is the README's first promise: the whole mesh end to end on embedded defaults. Run it as a user
// would, in a data directory that already holds another mesh's audit log (the demo must not use it).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { sqliteStorePath } from "../services/lineage/open-store.ts";
import { createMerkleLog } from "../services/lineage/merkle.ts";
import { encodeRecord } from "../services/lineage/record.ts";
import { openSqliteStore } from "../services/lineage/store-sqlite.ts";
import { repoRoot } from "./harness/index.ts";

test("demo - the flow runs through the gateway, the critical step is approved, and lineage answers why and verify", async () => {
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
    assert.match(stdout, /✓ the audit log is intact: \d+ records re-hashed, \d+ signed checkpoints? match/);
    assert.match(stdout, /demo complete in/);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
});
