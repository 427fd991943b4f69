// The lineage service as operators run it: a process with its own identity on the operated mesh, recording
// every stream, answering over NATS, resuming after SIGKILL without gap or duplicate.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import {
  NatsBinding, createEvent, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7,
} from "../services/kit/index.ts";
import { openSqliteStore } from "../services/lineage/store-sqlite.ts";
import { sqliteStorePath } from "../services/lineage/open-store.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { waitFor } from "./harness/index.ts";

const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";

/** Asks lineage over NATS, as the operator; throws on an error reply. */
export async function ask<T>(nc: NatsConnection, operation: string, params: Record<string, unknown> = {}): Promise<T> {
  const reply = await nc.request(`mesh.ctl.lineage.${operation}`, JSON.stringify(params), { timeout: 10_000 });
  const body = reply.json<{ ok: boolean; result?: T; code?: string; error?: string }>();
  if (!body.ok) throw Object.assign(new Error(`${body.code}: ${body.error}`), { code: body.code });
  return body.result as T;
}

/** Publishes `n` signed report requests as the gateway, plus one unsigned event and one undecodable message. */
async function publishWork(mesh: OperatedMesh, n: number): Promise<number> {
  const gateway = await mesh.as("gateway");
  const js = jetstream(gateway);
  const key = signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir));
  const acks: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const event = signEvent(createEvent({
      id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
      datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent() },
      data: JSON.stringify({ topic: `topic ${i}`, requester: "analyst@example.com", questions: ["q"] }),
    }), key);
    const { headers, data } = NatsBinding.binary(event);
    acks.push(js.publish("mesh.cap.plan.v1", data, { headers, msgID: event.id }));
  }
  const unsigned = createEvent({ id: uuidv7(), source: "causeway://gateway", type: "report.requested", data: "{}" });
  const u = NatsBinding.binary(unsigned);
  acks.push(js.publish("mesh.cap.plan.v1", u.data, { headers: u.headers }));
  const garbage = natsHeaders();
  garbage.set("ce-specversion", "0.3");
  acks.push(js.publish("mesh.cap.plan.v1", "not an event", { headers: garbage }));
  await Promise.all(acks);
  return n + 2;
}

describe("lineage service", () => {
  test("lineage - SIGKILLed mid-batch, the restarted process resumes with no gap and no duplicate; bad messages are recorded as failed", async () => {
    await using mesh = await startOperatedMesh();
    const total = await publishWork(mesh, 1_000);
    const env = { LINEAGE_BATCH: "25", LINEAGE_HTTP_PORT: "-1", LINEAGE_CHECKPOINT_EVERY: "200" };
    const first = mesh.spawn("services/lineage/main.ts", env);
    const jsm = await jetstreamManager(mesh.operator);
    const acked = async () => (await jsm.consumers.info("MESH_CAP", "lineage")).ack_floor.stream_seq;
    await waitFor(async () => (await acked()) >= 300, { what: "lineage to record a few hundred messages", timeoutMs: 20_000 });
    first.child.kill("SIGKILL");
    assert.equal(await first.exited, null);
    const atKill = await acked();
    assert.ok(atKill < total, `killed mid-ingest (acked ${atKill} of ${total})`);

    const second = mesh.spawn("services/lineage/main.ts", env);
    const stats = await waitFor(async () => {
      const s = await ask<{ size: number }>(mesh.operator, "stats").catch(() => undefined);
      return s !== undefined && s.size >= total && s;
    }, { what: "every message recorded after the restart", timeoutMs: 30_000 });
    assert.equal(stats.size, total, "exactly one record per message");

    const report = await ask<{ ok: boolean; records: number; checkpointsVerified: number; problems: unknown[] }>(mesh.operator, "verify");
    assert.deepEqual(report.problems, []);
    assert.equal(report.ok, true);
    assert.equal(report.records, total);
    assert.ok(report.checkpointsVerified >= 1, "checkpoints were published and match");

    second.child.kill("SIGTERM");
    assert.equal(await second.exited, 0);
    await using store = openSqliteStore(sqliteStorePath(mesh.dataDir));
    const rows = await store.range(0, total + 10);
    assert.equal(rows.length, total);
    const seqs = rows.map((r) => r.columns.seq).sort((a, b) => a - b);
    assert.deepEqual(seqs, Array.from({ length: total }, (_, i) => i + 1), "every MESH_CAP sequence once: no gap, no duplicate");
    const failed = rows.filter((r) => !r.columns.verified).map((r) => JSON.parse(r.bytes.toString()) as { verification: { code: string } });
    assert.deepEqual(failed.map((f) => f.verification.code).sort(), ["CW_ERR_UNSIGNED", "CW_ERR_UNSUPPORTED_SPECVERSION"]);
  });
});
