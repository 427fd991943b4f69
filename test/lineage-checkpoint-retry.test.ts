// Lineage's checkpoints under retries (issue 14 item 4): a publish whose ack is lost (the stream stored the note,
// lineage was told "timeout") is retried with the very same note, and a checkpointer that lost the note it had
// signed (a restart) keeps the one MESH_AUDIT already holds for that size — so `verify` passes, on a real server.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { jetstream, type JetStreamClient } from "@nats-io/jetstream";
import { createLogger, formatTime } from "../services/kit/index.ts";
import { verifyLog } from "../services/lineage/audit.ts";
import { startCheckpointer } from "../services/lineage/checkpointer.ts";
import { createMerkleLog, type MerkleLog } from "../services/lineage/merkle.ts";
import { encodeRecord } from "../services/lineage/record.ts";
import { openSqliteStore } from "../services/lineage/store-sqlite.ts";
import type { LineageStore } from "../services/lineage/store.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startMesh } from "./mesh-fixture.ts";
import { waitFor } from "./harness/index.ts";

const ORIGIN = "causeway.test/lineage";
const SUBJECT = "mesh.audit.checkpoint";
const log = createLogger({ name: "lineage", level: process.env.LOG_LEVEL ?? "silent" });

/** `n` records appended to the store and a Merkle log over them. */
async function grow(store: LineageStore, log: MerkleLog, n: number): Promise<void> {
  for (let i = log.size; i < n; i++) {
    const r = encodeRecord(i, {
      stream: "MESH_CAP", seq: i + 1, subject: "mesh.cap.plan.v1", recorded: "2026-01-01T00:00:00.000Z",
      verification: { result: "failed", code: "CW_ERR_UNSIGNED" }, attributes: null, headers: {}, datadigest: "", data: "",
    });
    log.append(r.leafHash);
    await store.append([r], { size: log.size, frontier: log.frontier() });
  }
}

/**
 * A client whose first publish reaches the stream, which stores it, but whose answer is lost: the caller gets
 * the timeout nats.js gives when no ack arrives. The broker is real; only the ack goes missing.
 */
function losingFirstAck(js: JetStreamClient): JetStreamClient & { lost: number } {
  const wrapper = Object.create(js) as JetStreamClient & { lost: number };
  wrapper.lost = 0;
  wrapper.publish = async (...args: Parameters<JetStreamClient["publish"]>) => {
    const ack = await js.publish(...args);
    if (wrapper.lost++ === 0) throw Object.assign(new Error("timeout"), { name: "TimeoutError" });
    return ack;
  };
  return wrapper;
}

test("lineage - a checkpoint publish whose ack is lost is retried with the same note; a restarted checkpointer keeps the one MESH_AUDIT holds; verify passes", async () => {
  await using mesh = await startMesh();
  const dir = mkdtempSync(join(tmpdir(), "causeway-checkpoint-"));
  try {
    await using store = openSqliteStore(join(dir, "lineage.db"));
    const merkle = createMerkleLog({ leafAt: () => Buffer.alloc(32) });
    const key = mesh.keys.lineage!;
    const published = async () => (await readMessages(mesh.nc, "MESH_AUDIT", SUBJECT)).map((m) => m.string());
    const verify = async () => verifyLog(store, { publicKey: key, published: await published() });
    const options = { jsm: mesh.jsm, store, key, origin: ORIGIN, subject: SUBJECT, every: 1_000, intervalMs: 3_600_000, log };

    // 1. The ack of size 3 is lost: the stream holds the note, lineage does not know it yet.
    await grow(store, merkle, 3);
    const js = losingFirstAck(jetstream(mesh.nc));
    const first = await startCheckpointer({ ...options, js });
    first.grew(merkle);
    assert.equal(await first.publishNow(), undefined, "the first try failed");
    assert.equal(js.lost, 1);
    const [stored3] = await published();
    assert.ok(stored3, "the stream stored the note of the failed try");
    // The retry comes a second later: a re-signed note would now carry another time.
    const signedAt = /\n(\d{4}-[^\n]+Z)\n/.exec(stored3)![1]!;
    await waitFor(() => formatTime(Date.now()) !== signedAt, { what: "the next second", timeoutMs: 2_000 });
    const retried = await first.publishNow();
    assert.equal(retried?.size, 3);
    assert.equal(retried.note, stored3, "the retry sent (and stored) the note the stream kept");
    assert.deepEqual(await published(), [stored3], "one checkpoint of size 3 in MESH_AUDIT");
    let report = await verify();
    assert.ok(report.ok, JSON.stringify(report.problems));

    // 2. Size 5's ack is lost too, and then the checkpointer is gone (a restart): a new one signs size 5 afresh,
    // is told "duplicate", and keeps the note MESH_AUDIT holds.
    await grow(store, merkle, 5);
    const again = losingFirstAck(jetstream(mesh.nc));
    const before = await startCheckpointer({ ...options, js: again });
    before.grew(merkle);
    assert.equal((await before.publishNow())?.size, 3, "size 5 failed; the last stored checkpoint is still 3");
    const stored5 = (await published())[1]!;
    const signed5 = /\n(\d{4}-[^\n]+Z)\n/.exec(stored5)![1]!;
    await waitFor(() => formatTime(Date.now()) !== signed5, { what: "the next second", timeoutMs: 2_000 });
    const restarted = await startCheckpointer({ ...options, js: jetstream(mesh.nc) });
    restarted.grew(merkle);
    const kept = await restarted.publishNow();
    assert.equal(kept?.size, 5);
    assert.equal(kept.note, stored5, "the restarted checkpointer kept the stream's note of size 5");
    assert.deepEqual((await store.checkpoints()).map((c) => c.note), [stored3, stored5]);
    report = await verify();
    assert.ok(report.ok, JSON.stringify(report.problems));
    assert.equal(report.checkpointsVerified, 2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
