// Issue 12, finding 3: an event that can never be stored must not loop. A structured event whose attributes fit
// the structured limit but whose binary re-encoding exceeds JetStream's 64 KiB header limit, an event that only
// grows too large once the gateway signs it, and an event the target stream refuses as too large: each is
// refused once (413) or kept in quarantine, and its ingest message is settled, never redelivered every second.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { headers, type NatsConnection } from "@nats-io/transport-node";
import { STRUCTURED_CONTENT_TYPE } from "../../services/kit/index.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, requestData, startGatewayMesh, type GatewayMesh } from "../gateway-fixture.ts";
import { waitFor } from "../harness/index.ts";

const INGEST = "mesh.ingest.upstream-demo.x";
const REQUEST_SUBJECT = "mesh.ctl.gateway.publish.upstream-demo";

/** A structured report.requested event with `extensions`. */
function structured(id: string, extensions: Record<string, string>): string {
  return JSON.stringify({
    specversion: "1.0", id, source: DEMO_SOURCE, type: "report.requested", datacontenttype: "application/json", dataschema: REQUEST_SCHEMA,
    ...extensions, data: JSON.parse(requestData()) as unknown,
  });
}

/** One extension of 70 KiB: the JSON fits the structured limit, its binary re-encoding is over 64 KiB of headers. */
const hugeAttribute = (id: string) => structured(id, { padding: "x".repeat(70 * 1024) });

/** 2,000 small extensions (under 32 KiB of headers); the gateway's signature lists each, past 64 KiB. */
function manyExtensions(id: string): string {
  const ext: Record<string, string> = {};
  for (let i = 0; i < 2_000; i++) ext[`ext${String(i).padStart(5, "0")}`] = "x";
  return structured(id, ext);
}

/** Publishes `body` in structured mode on the upstream's ingest subject; resolves with its MESH_INGEST sequence. */
async function publishIngest(nc: NatsConnection, jsm: JetStreamManager, body: string): Promise<number> {
  const before = (await jsm.streams.info("MESH_INGEST")).state.last_seq;
  const h = headers();
  h.set("content-type", STRUCTURED_CONTENT_TYPE);
  nc.publish(INGEST, body, { headers: h });
  await nc.flush();
  return waitFor(async () => { const s = (await jsm.streams.info("MESH_INGEST")).state.last_seq; return s > before && s; }, { what: "the event stored in MESH_INGEST" });
}

/**
 * Waits until the gateway settled (acked or terminated) the ingest message at `seq`, then checks it is not being
 * redelivered: old code naks it every second forever, so the ack floor never reaches it.
 */
async function settledOnce(g: GatewayMesh, jsm: JetStreamManager, seq: number): Promise<void> {
  await waitFor(async () => {
    const info = await jsm.consumers.info("MESH_INGEST", "gateway");
    return info.ack_floor.stream_seq >= seq && info.num_ack_pending === 0;
  }, { what: `MESH_INGEST message ${seq} settled by the gateway`, timeoutMs: 15_000 });
  const info = await jsm.consumers.info("MESH_INGEST", "gateway");
  assert.equal(info.num_redelivered, 0, "delivered once, never redelivered");
  assert.equal(info.delivered.stream_seq, (await jsm.streams.info("MESH_INGEST")).state.last_seq);
  void g;
}

describe("an event the mesh can never store", () => {
  test("unstorable - over HTTP: attributes over the header limit are a 413 (not 503), an event too large once signed is a 413 kept in quarantine", async () => {
    await using g = await startGatewayMesh();
    const huge = await g.post(hugeAttribute("huge-http"), { "content-type": STRUCTURED_CONTENT_TYPE });
    assert.equal(huge.status, 413, JSON.stringify(huge.json).slice(0, 300));
    assert.equal(huge.json.code, "CW_ERR_ATTRIBUTES_TOO_LARGE");
    assert.match(String(huge.json.message), /the limit is 32768/);
    assert.equal(huge.headers.get("retry-after"), null, "nothing to retry");

    const many = await g.post(manyExtensions("many-http"), { "content-type": STRUCTURED_CONTENT_TYPE });
    assert.equal(many.status, 413, JSON.stringify(many.json).slice(0, 300));
    assert.equal(many.json.code, "CW_ERR_UNSTORABLE");
    assert.equal(many.json.quarantined, "decode_error");
    assert.equal(many.headers.get("retry-after"), null);
    const kept = await g.quarantined();
    assert.deepEqual(kept.map((q) => [q.code, q.reason, q.subject]), [["CW_ERR_UNSTORABLE", "decode_error", "mesh.quarantine.decode_error.ingest"]]);
    assert.equal(JSON.parse(kept[0]!.data).id, "many-http", "the original, byte for byte");
    assert.deepEqual(await g.routed(), []);
  });

  test("unstorable - published on mesh.ingest.<upstream>: terminated or quarantined once, never redelivered; a stream refusing the event as too large is a 413 over a NATS request", async () => {
    await using g = await startGatewayMesh();
    const jsm = await jetstreamManager(g.mesh.operator);
    const nc = await g.mesh.as("upstream-demo");

    // Over the header limit at decode: terminated (the coordinator keeps terminated messages in quarantine).
    const hugeSeq = await publishIngest(nc, jsm, hugeAttribute("huge-nats"));
    await settledOnce(g, jsm, hugeSeq);

    // Too large once signed: quarantined by the gateway, its ingest message terminated.
    const manySeq = await publishIngest(nc, jsm, manyExtensions("many-nats"));
    await settledOnce(g, jsm, manySeq);
    const kept = await waitFor(async () => { const q = await g.quarantined(); return q.length > 0 && q; }, { what: "the quarantine entry" });
    assert.deepEqual(kept.map((q) => [q.code, q.reason, q.headers["Causeway-Original-Sequence"]]), [["CW_ERR_UNSTORABLE", "decode_error", String(manySeq)]]);

    // The stream refuses it as too large (MESH_CAP's max_msg_size): permanent, so 413 and quarantined, not 503.
    const cap = await jsm.streams.info("MESH_CAP");
    await jsm.streams.update("MESH_CAP", { ...cap.config, max_msg_size: 512 });
    const h = headers();
    for (const [k, v] of Object.entries({ "ce-specversion": "1.0", "ce-id": "capped-1", "ce-source": DEMO_SOURCE, "ce-type": "report.requested" })) h.set(k, v);
    const answer = (await nc.request(REQUEST_SUBJECT, requestData(), { headers: h, timeout: 10_000 })).json<{ status: number; code: string; quarantined?: string; message: string }>();
    assert.deepEqual([answer.status, answer.code, answer.quarantined], [413, "CW_ERR_UNSTORABLE", "decode_error"], answer.message);
    assert.match(answer.message, /err_code 10054/);
    // And on the stream path, the same event is quarantined once, not naked every second.
    const cappedSeq = await publishIngest(nc, jsm, structured("capped-2", {}));
    await settledOnce(g, jsm, cappedSeq);
    const codes = (await g.quarantined()).map((q) => q.code);
    assert.deepEqual(codes, ["CW_ERR_UNSTORABLE", "CW_ERR_UNSTORABLE", "CW_ERR_UNSTORABLE"]);
    assert.deepEqual(await g.routed(), []);
  });
});
