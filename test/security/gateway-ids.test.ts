// Issue 12, findings 4 and 3 (the gateway's residuals). Message ids: the gateway's event and edge-quarantine ids
// are the kit's tagged ids, so a principal that may publish on the same subjects (the coordinator) cannot take an
// event's id first and make it vanish as a "duplicate". max_payload: an event that only exceeds the server's
// max_payload once the gateway adds its headers is refused once (CW_ERR_UNSTORABLE, 413, quarantined), not
// retried forever.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import { connect } from "@nats-io/transport-node";
import {
  ErrorCode, KvBucket, createEvent, createLogger, createStreamPublisher, defaultLayout, flowIdOf, isCausewayError, newTraceparent, openMeshBucket, signEvent,
  signingKeyFromNkeySeed, startRouter, type CloudEvent,
} from "../../services/kit/index.ts";
import { applyMeshInfra } from "../../services/cli/bootstrap.ts";
import { MARK_PREFIX, createLedger, eventMsgId } from "../../services/gateway/ledger.ts";
import { dedupeKey, type Checked } from "../../services/gateway/notarize.ts";
import { quarantineCopyMsgId } from "../../services/gateway/quarantine.ts";
import type { Route } from "../../services/gateway/routes.ts";
import type { Upstream } from "../../services/gateway/upstreams.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, startGatewayMesh, type GatewayMesh } from "../gateway-fixture.ts";
import { startServer } from "../harness/index.ts";
import { readMessages } from "../../services/cli/flow.ts";

const quiet = createLogger({ name: "test", level: process.env.LOG_LEVEL ?? "silent" });
const newKey = () => signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
const binary = (id: string) => ({
  "content-type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": DEMO_SOURCE, "ce-type": "report.requested", "ce-dataschema": REQUEST_SCHEMA,
});

/** Events with `id` on mesh.cap.plan.v1 (read as messages: the forged ones are not events). */
async function routedCount(g: GatewayMesh, id: string): Promise<number> {
  return (await readMessages(g.mesh.operator, "MESH_CAP", "mesh.cap.plan.v1")).filter((m) => m.headers?.get("ce-id") === id).length;
}

describe("the gateway's message ids and payload size", () => {
  test("gateway ids - the coordinator publishes an event's predictable ids first on mesh.cap.plan.v1: the upstream's event is still routed", async () => {
    await using g = await startGatewayMesh();
    const coordinator = await g.mesh.as("coordinator");
    const id = "preempted-1";
    const key = dedupeKey({ source: DEMO_SOURCE, id });
    // Every id it could predict: the dedupe key (the old id) and the tagged id's untagged body.
    for (const msgID of [key, `gateway/output/${key}`]) {
      const ack = await jetstream(coordinator).publish("mesh.cap.plan.v1", `forged under ${msgID}`, { msgID });
      assert.equal(ack.duplicate, false);
    }
    const data = JSON.stringify({ topic: "pre-empted?", requester: "a@example.com", questions: ["q"] });
    const res = await g.post(data, binary(id));
    assert.equal(res.status, 202, JSON.stringify(res.json));
    assert.equal(res.json.duplicate, false, "the stream stored it, not a forged message under its id");
    assert.equal(await routedCount(g, id), 1, "the event is on mesh.cap.plan.v1");
    // Resubmitted: still one copy (the id is deterministic, the duplicate window absorbs it).
    const again = await g.post(data, binary(id));
    assert.equal(again.status, 202);
    assert.equal(again.json.duplicate, true);
    assert.equal(await routedCount(g, id), 1);
  });

  test("gateway ids - event and edge-quarantine ids are namespaced, tagged by the gateway's key and stable", () => {
    const owner = { principal: "gateway", key: newKey() };
    const checked = { key: dedupeKey({ source: DEMO_SOURCE, id: "x" }) };
    const id = eventMsgId(owner, checked);
    assert.match(id, new RegExp(`^gateway/output/${checked.key}/[A-Za-z0-9_-]{22}$`));
    assert.equal(eventMsgId(owner, checked), id, "stable: a resubmission gets the same id");
    assert.notEqual(eventMsgId({ principal: "gateway", key: newKey() }, checked), id, "another key computes another id");
    const original = { subject: "mesh.ingest.upstream-demo.http", headers: undefined, data: new TextEncoder().encode("{}") };
    const q = quarantineCopyMsgId(owner, original);
    assert.match(q, /^gateway\/quarantine\/http\/[0-9a-f]{64}\/[A-Za-z0-9_-]{22}$/);
    assert.equal(quarantineCopyMsgId(owner, original), q);
    assert.notEqual(quarantineCopyMsgId({ principal: "gateway", key: newKey() }, original), q);
  });

  test("max_payload - an event pushed over the server's max_payload by the gateway's headers is CW_ERR_UNSTORABLE (quarantined), and leaves no mark", async () => {
    await using server = await startServer({ config: "max_payload: 65536" });
    const nc = await connect({ servers: server.url });
    try {
      const layout = defaultLayout();
      await applyMeshInfra(nc, layout);
      const bucket = layout.buckets[KvBucket.Processed].name;
      const kv = await openMeshBucket(nc, bucket);
      const key = newKey();
      const ledger = createLedger({
        publisher: createStreamPublisher(nc, "_INBOX_gateway"), kv, bucket, duplicateWindowMs: 120_000,
        maxPayload: () => nc.info?.max_payload, owner: { principal: "gateway", key }, log: quiet,
        router: await startRouter(nc, layout.subjects, { log: quiet }),
      });
      const upstream = { name: "upstream-demo" } as Upstream;
      const route = { subject: "mesh.cap.plan.v1", dataschema: REQUEST_SCHEMA } as Route;
      const prepare = (id: string, dataBytes: number): { checked: Checked; event: CloudEvent } => {
        const event = createEvent({
          id, source: DEMO_SOURCE, type: "report.requested", datacontenttype: "application/json", dataschema: REQUEST_SCHEMA,
          extensions: { traceparent: newTraceparent(), upstream: "upstream-demo" }, data: JSON.stringify({ pad: "x".repeat(dataBytes - 12) }),
        });
        const checked: Checked = { event, upstream, route, key: dedupeKey(event), flow: flowIdOf(event), signed: false, traceparent: String(event.extensions.traceparent), priority: "normal", budget: {} };
        return { checked, event: signEvent(event, key) };
      };

      // Data under max_payload on its own, over it with the gateway's headers.
      const big = prepare("big-1", 65_000);
      assert.ok(big.event.data.length < 65_536);
      const refused = await ledger.publish(big.checked, big.event).then(() => undefined, (err: unknown) => err);
      assert.ok(isCausewayError(refused), `a refusal with a code, not a retry: ${String(refused)}`);
      assert.equal(refused.code, ErrorCode.Unstorable);
      assert.equal((refused as { reason?: string }).reason, "decode_error", "kept in quarantine");
      assert.match(refused.message, /max_payload is 65536/);
      assert.equal(await kv.get(`${MARK_PREFIX}.${big.checked.key}`), null, "no mark: nothing was accepted");

      // An event that fits is published.
      const small = prepare("small-1", 1_000);
      const accepted = await ledger.publish(small.checked, small.event);
      assert.deepEqual([accepted.status, accepted.duplicate], [202, false]);
    } finally {
      await nc.close();
    }
  });
});
