// The gateway under load and over time: per-upstream rate limits with 429 and Retry-After, a burst of ten
// times the rate that loses nothing accepted, and duplicates past JetStream's duplicate window.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DiscardPolicy, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { headers } from "@nats-io/transport-node";
import { MARK_PREFIX } from "../services/gateway/ledger.ts";
import { dedupeKey } from "../services/gateway/notarize.ts";
import { createRateLimiter } from "../services/gateway/rate-limit.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, requestData, startGatewayMesh } from "./gateway-fixture.ts";
import { waitFor } from "./harness/index.ts";

/** upstream-demo's request subject on the gateway. */
const REQUEST_SUBJECT = "mesh.ctl.gateway.publish.upstream-demo";
const binary = (id: string) => ({
  "content-type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": DEMO_SOURCE, "ce-type": "report.requested", "ce-dataschema": REQUEST_SCHEMA,
});

describe("gateway limits", () => {
  test("gateway - the rate limiter of one of two workers: half the rate and burst; a take larger than its share never fits and takes nothing", () => {
    const limiter = createRateLimiter(2);
    const upstream = { name: "u", perSecond: 10, burst: 40 };
    assert.equal(limiter.capacity(upstream), 20);
    assert.equal(limiter.take(upstream, 21, 0), Infinity, "more than this worker's share of the burst: waiting never helps");
    assert.equal(limiter.take(upstream, 41, 0), Infinity);
    assert.equal(limiter.take(upstream, 20, 0), 0, "the never-fitting takes took nothing");
    // Refilled at 5/s (half of 10/s): one token is 200 ms away, four are 800 ms away.
    assert.equal(limiter.take(upstream, 1, 0), 200);
    assert.equal(limiter.take(upstream, 4, 0), 800);
    assert.equal(limiter.take(upstream, 1, 200), 0);
    assert.equal(limiter.take(upstream, 20, 200), 4000, "a full share is 4 s away at 5/s");
    assert.equal(limiter.take(upstream, 20, 4200), 0);
    const whole = createRateLimiter(1);
    assert.equal(whole.capacity(upstream), 40);
    assert.equal(whole.take(upstream, 40, 0), 0);
    assert.equal(whole.take(upstream, 41, 0), Infinity);
    // An edit of the entry (infra/upstreams.json, live) applies at once: capacity and takes follow the new burst.
    const edited = { ...upstream, burst: 10 };
    assert.equal(whole.capacity(edited), 10);
    assert.equal(whole.take(edited, 11, 10_000), Infinity);
    assert.equal(whole.take(edited, 10, 10_000), 0, "refilled, within the new burst");
  });

  test("gateway - over its rate an upstream gets 429 with Retry-After over HTTP and NATS requests; nothing is accepted or kept", async () => {
    await using g = await startGatewayMesh({ rate: { per_second: 0.2, burst: 3 } });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await g.post(requestData(), binary(`rate-${i}`))).status);
    assert.deepEqual(statuses, [202, 202, 202]);
    const over = await g.post(requestData(), binary("rate-3"));
    assert.equal(over.status, 429);
    assert.equal(over.json.code, "CW_ERR_RATE_LIMITED");
    // 0.2 events/s: the next token is about 5 s away.
    assert.ok(Number(over.headers.get("retry-after")) >= 4 && Number(over.headers.get("retry-after")) <= 5, `Retry-After ${over.headers.get("retry-after")}`);
    assert.equal(over.json.retryafter, Number(over.headers.get("retry-after")));
    const overNats = await g.natsAsUpstream(["req", REQUEST_SUBJECT, requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:rate-4",
      "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
    const answer = JSON.parse(overNats.stdout) as { status: number; code: string; retryafter: number; message: string };
    assert.deepEqual([answer.status, answer.code], [429, "CW_ERR_RATE_LIMITED"], overNats.stdout + overNats.stderr);
    assert.ok(answer.retryafter >= 4 && answer.retryafter <= 5, `retryafter ${answer.retryafter}`);
    assert.match(answer.message, /upstream upstream-demo is over its rate of 0\.2\/s \(burst 3\)/);
    assert.deepEqual((await g.routed()).map((e) => e.id).sort(), ["rate-0", "rate-1", "rate-2"]);
    assert.deepEqual(await g.quarantined(), []);
  });

  test("gateway - a burst of 10× the configured rate: every accepted event is routed exactly once, the rest get 429", async () => {
    const rate = { per_second: 20, burst: 20 };
    await using g = await startGatewayMesh({ rate });
    const sent = rate.per_second * 10;
    const results = await Promise.all(Array.from({ length: sent }, (_, i) => g.post(requestData(), binary(`burst-${i}`)).then((r) => ({ i, ...r }))));
    const accepted = results.filter((r) => r.status === 202).map((r) => r.json.id as string);
    const refused = results.filter((r) => r.status === 429);
    assert.equal(accepted.length + refused.length, sent, `only 202 and 429: ${[...new Set(results.map((r) => r.status))].join(", ")}`);
    assert.ok(accepted.length >= rate.burst && accepted.length < sent / 2, `${accepted.length} accepted`);
    const routed = await waitFor(async () => { const r = await g.routed(); return r.length >= accepted.length && r; }, { what: "every accepted event in MESH_CAP" });
    assert.deepEqual(routed.map((e) => e.id).sort(), [...accepted].sort(), "each accepted event exactly once, nothing else");
  });

  test("gateway - events published without a reply over the rate wait in MESH_INGEST and are all routed", async () => {
    await using g = await startGatewayMesh({ rate: { per_second: 10, burst: 5 } });
    const ids = Array.from({ length: 15 }, (_, i) => `paced-${i}`);
    for (const id of ids) {
      const pub = await g.natsAsUpstream(["pub", "mesh.ingest.upstream-demo.reports", requestData(), "-H", "ce-specversion:1.0", "-H", `ce-id:${id}`,
        "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
      assert.equal(pub.code, 0, pub.stderr);
    }
    const routed = await waitFor(async () => { const r = await g.routed(); return r.length >= ids.length && r; }, { what: "every paced event routed", timeoutMs: 20_000 });
    assert.deepEqual(routed.map((e) => e.id).sort(), [...ids].sort());
  });

  test("gateway - a request over the size limit (headers and data, as MESH_INGEST counts) is answered 413 before any work; a data limit MESH_INGEST cannot hold stops the gateway", async () => {
    await using g = await startGatewayMesh();
    const jsm = await jetstreamManager(g.mesh.operator);
    const ingest = await jsm.streams.info("MESH_INGEST");
    const maxMsgSize = ingest.config.max_msg_size;
    const nc = await g.mesh.as("upstream-demo");
    const h = headers();
    for (const [k, v] of Object.entries({ "ce-specversion": "1.0", "ce-id": "huge-1", "ce-source": DEMO_SOURCE, "ce-type": "report.requested" })) h.set(k, v);
    // The data fits the event data limit (1 MiB); with 64 KiB of headers the request does not fit data limit + 64 KiB.
    h.set("ce-padding", "x".repeat(64 * 1024));
    const reply = await nc.request(REQUEST_SUBJECT, new Uint8Array(1024 * 1024 - 16).fill(0x20), { headers: h, timeout: 5_000 });
    const answer = reply.json<{ status: number; code: string; message: string }>();
    assert.deepEqual([answer.status, answer.code], [413, "CW_ERR_PAYLOAD_TOO_LARGE"]);
    assert.match(answer.message, /bytes with its headers, over 1114112 bytes \(event data limit 1048576 bytes \+ 65536 for attributes\)/);
    // Data over the limit: the same 413 as over HTTP.
    h.delete("ce-padding");
    const big = (await nc.request(REQUEST_SUBJECT, new Uint8Array(1024 * 1024 + 1).fill(0x20), { headers: h, timeout: 5_000 })).json<{ status: number; code: string }>();
    assert.deepEqual([big.status, big.code], [413, "CW_ERR_PAYLOAD_TOO_LARGE"]);
    assert.equal((await jsm.streams.info("MESH_INGEST")).state.messages, ingest.state.messages, "nothing stored in MESH_INGEST");
    assert.deepEqual(await g.routed(), []);
    assert.deepEqual(await g.quarantined(), []);
    // CAUSEWAY_MAX_DATA_BYTES + the structured-mode margin must fit MESH_INGEST, or such events would be refused unseen.
    const tooLarge = g.mesh.spawn("services/gateway/main.ts", { CAUSEWAY_GATEWAY_PORT: "0", CAUSEWAY_MAX_DATA_BYTES: String(maxMsgSize) });
    assert.equal(await tooLarge.exited, 1, tooLarge.output());
    assert.match(tooLarge.output(), new RegExp(`gateway: CAUSEWAY_MAX_DATA_BYTES ${maxMsgSize} \\+ 65536 bytes .* more than MESH_INGEST's max_msg_size of ${maxMsgSize}: lower CAUSEWAY_MAX_DATA_BYTES`));
  });

  test("gateway - a resubmission after the stream's duplicate window is still one event (the gateway's mark)", async () => {
    await using g = await startGatewayMesh({ env: { CAUSEWAY_GATEWAY_DUPLICATE_WINDOW_MS: "1000" } });
    const jsm = await jetstreamManager(g.mesh.operator);
    const cap = await jsm.streams.info("MESH_CAP");
    await jsm.streams.update("MESH_CAP", { ...cap.config, duplicate_window: 1_000_000_000 });
    const first = await g.post(requestData(), binary("late-1"));
    assert.equal(first.status, 202);
    const acceptedAt = Date.now();
    // Past the window JetStream no longer knows the msg id; only the mark stops a second copy.
    await waitFor(() => Date.now() - acceptedAt > 1_500, { what: "the duplicate window to pass" });
    const again = await g.post(requestData(), binary("late-1"));
    assert.equal(again.status, 202);
    assert.equal(again.json.duplicate, true);
    assert.equal(again.json.traceid, first.json.traceid);
    assert.equal((await g.routed()).filter((e) => e.id === "late-1").length, 1);
  });

  test("gateway - a publish no stream takes (for now) is a 503 that accepts nothing, and the upstream's retry is published once", async () => {
    await using g = await startGatewayMesh();
    const jsm = await jetstreamManager(g.mesh.operator);
    const cap = await jsm.streams.info("MESH_CAP");
    // No stream takes the route's subject for now (a refusal that may pass on a retry; one the stream would
    // refuse forever, such as a message over its max_msg_size, is a 413: test/security/unstorable-event.test.ts):
    // the mark is written, the publish fails.
    await jsm.streams.update("MESH_CAP", { ...cap.config, subjects: ["mesh.cap.elsewhere.>"] });
    const refused = await g.post(requestData(), binary("retry-1"));
    assert.equal(refused.status, 503, JSON.stringify(refused.json));
    assert.equal(refused.json.code, "CW_ERR_UNAVAILABLE");
    assert.equal(refused.headers.get("retry-after"), "1");
    assert.deepEqual(await g.routed(), []);
    // The mark was forgotten, so the retry is not taken for a duplicate: it takes the key over and publishes.
    await jsm.streams.update("MESH_CAP", cap.config);
    const retried = await g.post(requestData(), binary("retry-1"));
    assert.equal(retried.status, 202, JSON.stringify(retried.json));
    assert.equal(retried.json.duplicate, false);
    const again = await g.post(requestData(), binary("retry-1"));
    assert.equal(again.json.duplicate, true);
    assert.deepEqual((await g.routed()).map((e) => e.id), ["retry-1"]);
  });

  test("gateway - when the mark of an unpublished event cannot be deleted either, it is deleted once the bucket takes it again", async () => {
    await using g = await startGatewayMesh();
    const jsm = await jetstreamManager(g.mesh.operator);
    const cap = await jsm.streams.info("MESH_CAP");
    const marks = await jsm.streams.info("KV_causeway_processed");
    // No stream takes the event (for now), and the bucket refuses a second message on a key (discard_new_per_subject with
    // history 1): the mark is created, its delete marker refused.
    await jsm.streams.update("MESH_CAP", { ...cap.config, subjects: ["mesh.cap.elsewhere.>"] });
    await jsm.streams.update("KV_causeway_processed", { ...marks.config, discard: DiscardPolicy.New, discard_new_per_subject: true });
    const refused = await g.post(requestData(), binary("stuck-1"));
    assert.equal(refused.status, 503, JSON.stringify(refused.json));
    const kv = await new Kvm(g.mesh.operator).open("causeway_processed");
    const markKey = `${MARK_PREFIX}.${dedupeKey({ source: DEMO_SOURCE, id: "stuck-1" })}`;
    assert.equal((await kv.get(markKey))?.operation, "PUT", "the mark is left behind for now");
    await jsm.streams.update("MESH_CAP", cap.config);
    await jsm.streams.update("KV_causeway_processed", { ...marks.config, discard_new_per_subject: false });
    await waitFor(async () => (await kv.get(markKey))?.operation === "DEL", { what: "the mark deleted on retry" });
    const retried = await g.post(requestData(), binary("stuck-1"));
    assert.equal(retried.status, 202, JSON.stringify(retried.json));
    assert.equal(retried.json.duplicate, false);
    assert.deepEqual((await g.routed()).map((e) => e.id), ["stuck-1"]);
  });
});
