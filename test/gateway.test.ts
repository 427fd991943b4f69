// The gateway as upstream systems use it: a process on a real mesh with least-privilege identities; HTTP in
// binary, structured and batch mode; NATS through the real `nats` CLI with ce- headers; every refusal with its
// stable code, and a quarantine entry for every refused input the gateway keeps.
import assert from "node:assert/strict";
import { Agent, request, type IncomingMessage } from "node:http";
import { connect as connectTcp } from "node:net";
import { after, before, describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { PermissionViolationError, headers } from "@nats-io/transport-node";
import { HTTP, CloudEvent as SdkCloudEvent } from "cloudevents";
import {
  DSSE_MATERIAL, ErrorCode, NatsBinding, createEvent, encodeJsonEvent, flowIdOf, readSeed, seedPath, signEvent, signingKeyFromNkeySeed,
} from "../services/kit/index.ts";
import { MARK_PREFIX } from "../services/gateway/ledger.ts";
import { dedupeKey } from "../services/gateway/notarize.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, demoFlowControl, requestData, startGatewayMesh, type GatewayMesh } from "./gateway-fixture.ts";
import { runNats, waitFor } from "./harness/index.ts";

const binary = (id: string, extra: Record<string, string> = {}) => ({
  "content-type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": DEMO_SOURCE, "ce-type": "report.requested",
  "ce-dataschema": REQUEST_SCHEMA, ...extra,
});
/** upstream-demo's request subject: answered by the gateway's endpoint, not stored. */
const REQUEST_SUBJECT = "mesh.ctl.gateway.publish.upstream-demo";
const routedById = async (g: GatewayMesh, id: string) => (await g.routed()).filter((e) => e.id === id);
const quarantinedWith = async (g: GatewayMesh, code: string) => (await g.quarantined()).filter((q) => q.code === code);

describe("gateway", () => {
  let g: GatewayMesh;
  before(async () => {
    // A small data limit, so oversized inputs are cheap to make.
    g = await startGatewayMesh({ env: { CAUSEWAY_MAX_DATA_BYTES: "4096" } });
  });
  after(async () => {
    await g?.[Symbol.asyncDispose]();
  });

  test("gateway - HTTP binary mode: 202 with id and trace id; the event is notarized by the gateway with the upstream's bytes and attributes", async () => {
    const data = `{"topic": "binary mode",  "requester": "analyst@example.com", "questions": ["q1"]}`;
    const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    const res = await g.post(data, binary("bin-1", { "ce-subject": "ticket 42", "ce-traceparent": traceparent, "ce-ticketref": "T%2042" }));
    assert.equal(res.status, 202, JSON.stringify(res.json));
    assert.deepEqual(res.json, {
      status: 202, id: "bin-1", source: DEMO_SOURCE, type: "report.requested", correlationid: flowIdOf({ source: DEMO_SOURCE, id: "bin-1" }), traceid: "0af7651916cd43dd8448eb211c80319c", subject: "mesh.cap.plan.v1", duplicate: false,
    });
    const [event] = await routedById(g, "bin-1");
    assert.ok(event);
    const trusted = g.mesh.trust.verify(event, { receivedAt: "now" });
    assert.equal(trusted.entry.principal, "gateway");
    assert.equal(Buffer.from(event.data).toString(), data, "data bytes exactly as sent");
    assert.equal(event.source, DEMO_SOURCE);
    assert.equal(event.subject, "ticket 42");
    assert.equal(event.datacontenttype, "application/json");
    assert.equal(trusted.event.extensions.ticketref, "T 42");
    assert.equal(trusted.event.extensions.upstream, "upstream-demo", "the upstream identity, signed");
    assert.equal(trusted.event.extensions.traceparent, traceparent);
    assert.match(String(trusted.event.extensions.emittedat), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    assert.equal(trusted.event.extensions.correlationid, flowIdOf({ source: DEMO_SOURCE, id: "bin-1" }), "the flow the event starts");
  });

  test("gateway - HTTP structured mode keeps the data bytes exactly; a missing dataschema and time are filled in", async () => {
    const structured = `{"specversion":"1.0","id":"str-1","source":"${DEMO_SOURCE}","type":"report.requested","datacontenttype":"application/json","data":{ "topic" : "structured", "requester":"a@example.com","questions":["q"] }}`;
    const res = await g.post(structured, { "content-type": "application/cloudevents+json; charset=utf-8" });
    assert.equal(res.status, 202, JSON.stringify(res.json));
    const [event] = await routedById(g, "str-1");
    assert.ok(event);
    assert.equal(Buffer.from(event.data).toString(), `{ "topic" : "structured", "requester":"a@example.com","questions":["q"] }`);
    assert.equal(event.dataschema, REQUEST_SCHEMA);
    assert.ok(event.time);
    assert.equal(g.mesh.trust.verify(event, { receivedAt: "now" }).entry.principal, "gateway");
  });

  test("gateway - an upstream using the cloudevents SDK (HTTP.binary and HTTP.structured) is accepted, attributes and data kept", async () => {
    const sdkEvent = new SdkCloudEvent({
      id: "sdk-1", source: DEMO_SOURCE, type: "report.requested", dataschema: REQUEST_SCHEMA, datacontenttype: "application/json",
      ticketref: "T 42", data: { topic: "from the SDK", requester: "a@example.com", questions: ["q"] },
    });
    for (const message of [HTTP.binary(sdkEvent), HTTP.structured(sdkEvent.cloneWith({ id: "sdk-2" }))]) {
      const res = await g.post(String(message.body), message.headers as Record<string, string>);
      assert.equal(res.status, 202, JSON.stringify(res.json));
    }
    for (const id of ["sdk-1", "sdk-2"]) {
      const [event] = await routedById(g, id);
      assert.ok(event, id);
      assert.equal(g.mesh.trust.verify(event, { receivedAt: "now" }).entry.principal, "gateway");
      assert.deepEqual(JSON.parse(Buffer.from(event.data).toString()), sdkEvent.data);
      assert.equal(event.time, sdkEvent.time);
      assert.equal(event.extensions.ticketref, "T 42");
      assert.equal(event.extensions.upstream, "upstream-demo");
    }
  });

  test("gateway - HTTP batch mode: every event accepted and routed, results in order", async () => {
    const events = ["batch-1", "batch-2", "batch-3"].map((id) => JSON.parse(encodeJsonEvent(createEvent({
      id, source: `${DEMO_SOURCE}/batch`, type: "report.requested", datacontenttype: "application/json", data: requestData(id),
    }))) as object);
    const res = await g.post(JSON.stringify(events), { "content-type": "application/cloudevents-batch+json" });
    assert.equal(res.status, 202, JSON.stringify(res.json));
    assert.deepEqual((res.json.results as { id: string; status: number }[]).map((r) => [r.id, r.status]), [["batch-1", 202], ["batch-2", 202], ["batch-3", 202]]);
    const routed = (await g.routed()).filter((e) => e.id.startsWith("batch-"));
    assert.deepEqual(routed.map((e) => e.id).sort(), ["batch-1", "batch-2", "batch-3"]);
  });

  test("gateway - HTTP batch mode is all or nothing: one schema-invalid event refuses the batch, names its index and is quarantined", async () => {
    const good = JSON.parse(encodeJsonEvent(createEvent({ id: "bad-batch-1", source: DEMO_SOURCE, type: "report.requested", data: requestData() }))) as object;
    const bad = JSON.parse(encodeJsonEvent(createEvent({ id: "bad-batch-2", source: DEMO_SOURCE, type: "report.requested", data: { topic: "no questions" } }))) as object;
    const res = await g.post(JSON.stringify([good, bad]), { "content-type": "application/cloudevents-batch+json" });
    assert.equal(res.status, 400);
    assert.equal(res.json.code, "CW_ERR_SCHEMA_VIOLATION");
    const errors = res.json.errors as { index: number; code: string; violations: { instancePath: string }[] }[];
    assert.deepEqual(errors.map((e) => [e.index, e.code]), [[1, "CW_ERR_SCHEMA_VIOLATION"]]);
    assert.ok(errors[0]!.violations.some((v) => v.instancePath === "/requester"));
    assert.deepEqual(await routedById(g, "bad-batch-1"), [], "nothing of a refused batch is routed");
    const q = await waitFor(async () => (await g.quarantined()).find((e) => e.data.includes('"bad-batch-2"')), { what: "the quarantined batch event" });
    assert.equal(q.reason, "schema_violation");
  });

  test("gateway - HTTP batch mode refuses invalid UTF-8 with CW_ERR_DECODE_JSON, as structured mode does, and quarantines the original bytes", async () => {
    const event = encodeJsonEvent(createEvent({ id: "utf8-1", source: DEMO_SOURCE, type: "report.requested", datacontenttype: "application/json", data: requestData("INVALID") }));
    const [before, after] = `[${event}]`.split("INVALID");
    // A lone 0xff: replaced with U+FFFD, the gateway would sign bytes the upstream never sent.
    const body = Buffer.concat([Buffer.from(before!), Buffer.from([0xff]), Buffer.from(after!)]);
    const res = await g.post(body, { "content-type": "application/cloudevents-batch+json" });
    assert.equal(res.status, 400, JSON.stringify(res.json));
    assert.deepEqual({ code: res.json.code, quarantined: res.json.quarantined, index: res.json.index }, { code: "CW_ERR_DECODE_JSON", quarantined: "decode_error", index: undefined });
    assert.match(String(res.json.message), /not valid UTF-8/);
    assert.deepEqual(await routedById(g, "utf8-1"), []);
    const entry = await waitFor(async () => (await quarantinedWith(g, "CW_ERR_DECODE_JSON")).find((e) => e.data.includes('"utf8-1"')), { what: "the batch in quarantine" });
    assert.equal(entry.reason, "decode_error");
    const jsm = await jetstreamManager(g.mesh.operator);
    const { state } = await jsm.streams.info("MESH_QUARANTINE");
    let stored: Uint8Array | undefined;
    for (let seq = state.first_seq; seq <= state.last_seq && stored === undefined; seq++) {
      const m = await jsm.streams.getMessage("MESH_QUARANTINE", { seq });
      if (m !== null && Buffer.from(m.data).includes('"utf8-1"')) stored = m.data;
    }
    assert.deepEqual(Buffer.from(stored!), body, "the original bytes, 0xff included");
  });

  test("gateway - nats pub with ce- headers through the real CLI: stored in MESH_INGEST, then routed; nats req on the request subject is answered at once, as over HTTP, and nothing of it is stored", async () => {
    const jsm = await jetstreamManager(g.mesh.operator);
    const ingested = async () => (await jsm.streams.info("MESH_INGEST")).state.messages;
    const before = await ingested();
    const pub = await g.natsAsUpstream(["pub", "mesh.ingest.upstream-demo.reports", requestData("over nats"),
      "-H", "ce-specversion:1.0", "-H", "ce-id:nats-1", "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested", "-H", "ce-datacontenttype:application/json"]);
    assert.equal(pub.code, 0, pub.stderr);
    const [event] = await waitFor(async () => { const e = await routedById(g, "nats-1"); return e.length > 0 && e; }, { what: "the event published with nats pub" });
    assert.equal(g.mesh.trust.verify(event!, { receivedAt: "now" }).event.extensions.upstream, "upstream-demo");
    assert.equal(Buffer.from(event!.data).toString(), requestData("over nats"));
    assert.equal(await ingested(), before + 1, "the plain publish is stored in MESH_INGEST");

    const req = await g.natsAsUpstream(["req", REQUEST_SUBJECT, requestData("request"),
      "-H", "ce-specversion:1.0", "-H", "ce-id:nats-2", "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
    assert.equal(req.code, 0, req.stderr);
    const reply = JSON.parse(req.stdout) as Record<string, unknown>;
    assert.deepEqual({ ...reply, traceid: typeof reply.traceid }, {
      status: 202, id: "nats-2", source: DEMO_SOURCE, type: "report.requested", correlationid: flowIdOf({ source: DEMO_SOURCE, id: "nats-2" }), traceid: "string", subject: "mesh.cap.plan.v1", duplicate: false,
    });
    // Answered after the publish to MESH_CAP was acknowledged: it is there now, once, and MESH_INGEST holds nothing of it.
    const [routed, ...more] = await routedById(g, "nats-2");
    assert.deepEqual(more, []);
    assert.equal(String(g.mesh.trust.verify(routed!, { receivedAt: "now" }).event.extensions.traceparent).slice(3, 35), reply.traceid);
    assert.equal(await ingested(), before + 1, "the request is not stored in MESH_INGEST");
  });

  test("gateway - a plain publish is stream-only: a request on an ingest subject gets no answer (the stream takes it, nobody answers), and its refusal ends in quarantine", async () => {
    const upstream = await g.mesh.as("upstream-demo");
    const h = headers();
    for (const [k, v] of Object.entries({ "ce-specversion": "1.0", "ce-id": "plain-1", "ce-source": DEMO_SOURCE, "ce-type": "report.requested" })) h.set(k, v);
    await assert.rejects(upstream.request("mesh.ingest.upstream-demo.reports", requestData("stream only"), { headers: h, timeout: 1_000 }),
      (err: Error) => err.name === "TimeoutError" || /timeout/i.test(err.message), "no answer from the consumer path");
    await upstream.close();
    await waitFor(async () => (await routedById(g, "plain-1")).length === 1, { what: "the unanswered publish routed from MESH_INGEST" });

    const bad = await g.natsAsUpstream(["pub", "mesh.ingest.upstream-demo.reports", requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:plain-bad-1", "-H", `ce-source:${DEMO_SOURCE}`]);
    assert.equal(bad.code, 0, bad.stderr);
    const q = await waitFor(async () => (await quarantinedWith(g, "CW_ERR_MISSING_ATTRIBUTE")).find((e) => e.headers["ce-id"] === "plain-bad-1"), { what: "the refused publish in quarantine" });
    assert.equal(q.subject, "mesh.quarantine.decode_error.ingest");
    assert.equal(q.headers["Causeway-Original-Subject"], "mesh.ingest.upstream-demo.reports");
    assert.equal(q.headers["Causeway-Original-Stream"], "MESH_INGEST");
    assert.equal(q.data, requestData(), "the original bytes");
    assert.deepEqual(await routedById(g, "plain-bad-1"), []);
  });

  test("gateway - nats req in structured mode, and a malformed one gets its precise error and a decode_error quarantine entry", async () => {
    const structured = encodeJsonEvent(createEvent({ id: "nats-str-1", source: DEMO_SOURCE, type: "report.requested", datacontenttype: "application/json", data: requestData() }));
    const ok = await g.natsAsUpstream(["req", REQUEST_SUBJECT, structured, "-H", "Content-Type:application/cloudevents+json"]);
    assert.equal(JSON.parse(ok.stdout).status, 202, ok.stdout + ok.stderr);
    assert.equal((await routedById(g, "nats-str-1")).length, 1);

    const bad = await g.natsAsUpstream(["req", REQUEST_SUBJECT, requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:nats-bad-1", "-H", `ce-source:${DEMO_SOURCE}`]);
    assert.deepEqual(JSON.parse(bad.stdout), {
      status: 400, code: "CW_ERR_MISSING_ATTRIBUTE", message: 'required attribute "type" is missing', attribute: "type", quarantined: "decode_error",
    });
    // Quarantined before the answer, like an HTTP input: under the upstream's ingest subject, from no stream.
    const q = (await quarantinedWith(g, "CW_ERR_MISSING_ATTRIBUTE")).find((e) => e.headers["ce-id"] === "nats-bad-1");
    assert.ok(q, "the malformed request in quarantine");
    assert.equal(q.subject, "mesh.quarantine.decode_error.ingest");
    assert.equal(q.headers["Causeway-Original-Subject"], "mesh.ingest.upstream-demo.request");
    assert.equal(q.headers["Causeway-Original-Stream"], "");
    assert.equal(q.data, requestData(), "the original bytes");
  });

  test("gateway - duplicates over HTTP and NATS produce one event, and every answer names the same id and trace id", async () => {
    const first = await g.post(requestData("dup"), binary("dup-1"));
    const again = await g.post(requestData("dup"), binary("dup-1"));
    assert.equal(first.status, 202);
    assert.equal(again.status, 202);
    assert.equal(first.json.duplicate, false);
    assert.equal(again.json.duplicate, true);
    assert.equal(again.json.traceid, first.json.traceid);
    const overNats = await g.natsAsUpstream(["req", REQUEST_SUBJECT, requestData("dup"),
      "-H", "ce-specversion:1.0", "-H", "ce-id:dup-1", "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
    assert.deepEqual(JSON.parse(overNats.stdout), { ...first.json, duplicate: true });
    assert.equal((await routedById(g, "dup-1")).length, 1);
    // The same id from another source is another event (ids are unique per source).
    assert.equal((await g.post(requestData("dup"), binary("dup-1", { "ce-source": `${DEMO_SOURCE}/other` }))).json.duplicate, false);
    assert.equal((await routedById(g, "dup-1")).length, 2);
  });

  test("gateway - a signed upstream event is verified and forwarded with its own signature intact", async () => {
    const key = signingKeyFromNkeySeed(readSeed("upstream-demo", g.mesh.dataDir));
    const signed = signEvent(createEvent({
      id: "signed-1", source: DEMO_SOURCE, type: "report.requested", time: new Date().toISOString(), datacontenttype: "application/json",
      dataschema: REQUEST_SCHEMA, data: requestData("signed"), extensions: demoFlowControl(),
    }), key);
    const { headers, data } = NatsBinding.binary(signed);
    const h: Record<string, string> = {};
    for (const [k, v] of headers) h[k] = v[0]!;
    const res = await g.post(data, { ...h, "content-type": "application/json" });
    assert.equal(res.status, 202, JSON.stringify(res.json));
    const [event] = await routedById(g, "signed-1");
    assert.equal(event!.extensions[DSSE_MATERIAL], signed.extensions[DSSE_MATERIAL], "the upstream's own signature");
    assert.equal(g.mesh.trust.verify(event!, { receivedAt: "now" }).entry.principal, "upstream-demo");

    // Tampered after signing: refused and quarantined, never forwarded.
    const tampered = await g.post(Buffer.from(requestData("tampered")), { ...h, "ce-id": "signed-2", "content-type": "application/json" });
    assert.equal(tampered.status, 403);
    assert.equal(tampered.json.code, "CW_ERR_CORE_DIGEST_MISMATCH");
    assert.equal(tampered.json.quarantined, "bad_signature");
    assert.deepEqual(await routedById(g, "signed-2"), []);
    // Signed by another principal's key (one that may emit the type, and sign this source: the gateway, naming
    // this upstream as it does when notarizing): not this upstream's to send.
    const gatewaySigned = signEvent(createEvent({ ...signed, id: "signed-3", extensions: { upstream: "upstream-demo" } }), signingKeyFromNkeySeed(readSeed("gateway", g.mesh.dataDir)));
    const enc = NatsBinding.binary(gatewaySigned);
    const h3: Record<string, string> = {};
    for (const [k, v] of enc.headers) h3[k] = v[0]!;
    const mismatch = await g.post(enc.data, { ...h3, "content-type": "application/json" });
    assert.equal(mismatch.status, 403);
    assert.equal(mismatch.json.code, "CW_ERR_SIGNER_MISMATCH");
    assert.equal(mismatch.json.quarantined, "policy_denied");
    assert.deepEqual(await routedById(g, "signed-3"), []);
  });

  test("gateway - a wrong or missing token gets 401 and nothing is kept", async () => {
    const before = (await g.quarantined()).length;
    const wrong = await g.post(requestData(), { ...binary("auth-1"), authorization: "Bearer not-the-token" });
    assert.equal(wrong.status, 401);
    assert.equal(wrong.json.code, "CW_ERR_UNAUTHENTICATED");
    assert.equal(wrong.headers.get("www-authenticate"), 'Bearer realm="causeway"');
    const res = await fetch(`${g.url}/events`, { method: "POST", body: requestData(), headers: binary("auth-2") });
    assert.equal(res.status, 401);
    assert.equal(((await res.json()) as { code: string }).code, "CW_ERR_UNAUTHENTICATED");
    assert.equal((await g.quarantined()).length, before);
    assert.deepEqual([...await routedById(g, "auth-1"), ...await routedById(g, "auth-2")], []);
  });

  test("gateway - wrong source: another upstream's ingest or request subject is refused by the server (the operator may not request as an upstream either); a source outside the upstream's is 403 and quarantined", async () => {
    const jsm = await jetstreamManager(g.mesh.operator);
    const before = (await jsm.streams.info("MESH_INGEST")).state.messages;
    const spoof = await g.natsAsUpstream(["pub", "mesh.ingest.upstream-other.reports", requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:spoof-1",
      "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
    assert.match(spoof.stdout + spoof.stderr, /[Pp]ermissions [Vv]iolation.*mesh\.ingest\.upstream-other\.reports/);
    assert.equal((await jsm.streams.info("MESH_INGEST")).state.messages, before);
    // Nor may it request on another upstream's request subject; the operator's mesh.ctl.*.* does not cover them either.
    const ce = ["-H", "ce-specversion:1.0", "-H", "ce-id:spoof-2", "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"];
    const other = await g.natsAsUpstream(["pub", "mesh.ctl.gateway.publish.upstream-other", requestData(), ...ce]);
    assert.match(other.stdout + other.stderr, /[Pp]ermissions [Vv]iolation.*mesh\.ctl\.gateway\.publish\.upstream-other/);
    const operator = await runNats(["--inbox-prefix", "_INBOX_operator", "pub", REQUEST_SUBJECT, requestData(), ...ce], { server: g.mesh.server.url, nkey: seedPath("operator", g.mesh.dataDir) });
    assert.match(operator.stdout + operator.stderr, /[Pp]ermissions [Vv]iolation.*mesh\.ctl\.gateway\.publish\.upstream-demo/);
    // The same as requests from a client library: the server refuses the request itself.
    const upstream = await g.mesh.as("upstream-demo");
    for (const [nc, subject] of [[upstream, "mesh.ctl.gateway.publish.upstream-other"], [g.mesh.operator, REQUEST_SUBJECT]] as const) {
      await assert.rejects(nc.request(subject, requestData(), { timeout: 5_000 }), (err: Error) => {
        const cause = err instanceof PermissionViolationError ? err : err.cause;
        assert.ok(cause instanceof PermissionViolationError, `expected a permissions violation on ${subject}, got ${String(err)}`);
        return true;
      });
    }
    await upstream.close();
    assert.deepEqual(await routedById(g, "spoof-2"), []);

    const res = await g.post(requestData(), binary("src-1", { "ce-source": "https://crm.example.com/" }));
    assert.equal(res.status, 403);
    assert.equal(res.json.code, "CW_ERR_SOURCE_NOT_ALLOWED");
    assert.equal(res.json.attribute, "source");
    const q = await waitFor(async () => (await quarantinedWith(g, "CW_ERR_SOURCE_NOT_ALLOWED")).find((e) => e.headers["ce-id"] === "src-1"), { what: "the quarantine entry" });
    assert.equal(q.reason, "policy_denied");
    assert.equal(q.headers["Causeway-Original-Subject"], "mesh.ingest.upstream-demo.http");
  });

  test("gateway - oversized input gets 413 over HTTP and NATS requests and is not kept; published without a reply it is terminated for the coordinator to keep", async () => {
    const big = JSON.stringify({ topic: "x".repeat(5000), requester: "a@example.com", questions: ["q"] });
    const res = await g.post(big, binary("big-1"));
    assert.equal(res.status, 413);
    assert.equal(res.json.code, "CW_ERR_PAYLOAD_TOO_LARGE");
    // Chunked, with no Content-Length to refuse up front: counted while read.
    const bytes = new TextEncoder().encode(big);
    const chunked = new ReadableStream({ start(c) { c.enqueue(bytes.subarray(0, 1000)); c.enqueue(bytes.subarray(1000)); c.close(); } });
    const counted = await fetch(`${g.url}/events`, { method: "POST", body: chunked, duplex: "half", headers: { authorization: `Bearer ${g.token}`, ...binary("big-0") } } as RequestInit);
    assert.equal(counted.status, 413);
    assert.equal(((await counted.json()) as { code: string }).code, "CW_ERR_PAYLOAD_TOO_LARGE");
    const ce = (id: string) => ["-H", "ce-specversion:1.0", "-H", `ce-id:${id}`, "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"];
    const overNats = await g.natsAsUpstream(["req", REQUEST_SUBJECT, big, ...ce("big-2")]);
    assert.deepEqual(JSON.parse(overNats.stdout), {
      status: 413, code: "CW_ERR_PAYLOAD_TOO_LARGE", attribute: "data",
      message: `the request's data is ${big.length} bytes, over 4096 bytes (event data limit 4096 bytes); send large content by reference`,
    });
    // Nobody to tell: dropping it would lose it silently.
    const unanswered = await g.natsAsUpstream(["pub", "mesh.ingest.upstream-demo.reports", big, ...ce("big-3")]);
    assert.equal(unanswered.code, 0, unanswered.stderr);

    // Terminations raise MSG_TERMINATED advisories (MESH_ADVISORY), which the coordinator quarantines as `terminated`.
    const jsm = await jetstreamManager(g.mesh.operator);
    const terminatedIds = async () => {
      const ids: string[] = [];
      const { state } = await jsm.streams.info("MESH_ADVISORY");
      for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
        const m = await jsm.streams.getMessage("MESH_ADVISORY", { seq });
        if (!m?.subject.includes("MSG_TERMINATED.MESH_INGEST")) continue;
        const advisory = m.json<{ stream_seq: number; reason: string }>();
        const original = await jsm.streams.getMessage("MESH_INGEST", { seq: advisory.stream_seq });
        ids.push(`${original?.header.get("ce-id")} ${advisory.reason.split(":", 1)[0]}`);
      }
      return ids;
    };
    const ids = await waitFor(async () => { const t = await terminatedIds(); return t.some((x) => x.startsWith("big-3")) && t; }, { what: "the MSG_TERMINATED advisory of big-3" });
    // big-2 was settled before big-3 was sent, so its advisory, had there been one, would be there too.
    assert.deepEqual(ids.filter((x) => x.startsWith("big-")), ["big-3 CW_ERR_PAYLOAD_TOO_LARGE"]);
    assert.deepEqual(await quarantinedWith(g, "CW_ERR_PAYLOAD_TOO_LARGE"), []);
    assert.deepEqual([...await routedById(g, "big-0"), ...await routedById(g, "big-1"), ...await routedById(g, "big-2"), ...await routedById(g, "big-3")], []);
  });

  test("gateway - malformed HTTP input: each gets its precise 400 naming the attribute, and a decode_error quarantine entry with the original", async () => {
    const cases: [string, string | Uint8Array, Record<string, string>, string, string | undefined][] = [
      ["missing type", requestData(), { ...binary("mal-1"), "ce-type": "" }, "CW_ERR_INVALID_ATTRIBUTE", "type"],
      ["bad time", requestData(), binary("mal-2", { "ce-time": "yesterday" }), "CW_ERR_INVALID_ATTRIBUTE", "time"],
      ["bad percent-encoding", requestData(), binary("mal-3", { "ce-ticketref": "%zz" }), "CW_ERR_DECODE_HEADER", "ce-ticketref"],
      ["unsupported specversion", requestData(), binary("mal-4", { "ce-specversion": "0.3" }), "CW_ERR_UNSUPPORTED_SPECVERSION", "specversion"],
      ["invalid JSON structured", '{"specversion":"1.0", "id": "mal-5"', { "content-type": "application/cloudevents+json" }, "CW_ERR_DECODE_JSON", undefined],
      ["data not JSON", "not json", binary("mal-6"), "CW_ERR_DECODE_JSON", "data"],
    ];
    for (const [what, body, headers, code, attribute] of cases) {
      const res = await g.post(body, headers);
      assert.equal(res.status, 400, what);
      assert.equal(res.json.code, code, what);
      assert.equal(res.json.attribute, attribute, what);
      assert.equal(res.json.quarantined, "decode_error", what);
    }
    const entries = await waitFor(async () => { const q = (await g.quarantined()).filter((e) => e.reason === "decode_error" && e.subject.endsWith(".ingest")); return q.length >= cases.length && q; }, { what: "every malformed input in quarantine" });
    const missingType = entries.find((e) => e.headers["ce-id"] === "mal-1")!;
    assert.equal(missingType.data, requestData(), "original body");
    assert.equal(missingType.headers["ce-datacontenttype"], "application/json", "Content-Type kept as ce-datacontenttype");
  });

  test("gateway - schema-invalid data: 400 naming each schema path, quarantined as schema_violation", async () => {
    const res = await g.post(JSON.stringify({ topic: "", questions: [] }), binary("schema-1"));
    assert.equal(res.status, 400);
    assert.equal(res.json.code, "CW_ERR_SCHEMA_VIOLATION");
    assert.equal(res.json.quarantined, "schema_violation");
    const paths = (res.json.violations as { instancePath: string }[]).map((v) => v.instancePath).sort();
    assert.deepEqual(paths, ["/questions", "/requester", "/topic"]);
    const wrongSchema = await g.post(requestData(), binary("schema-2", { "ce-dataschema": "https://causeway.dev/schemas/report.requested/2.0.0" }));
    assert.equal(wrongSchema.status, 400);
    assert.equal(wrongSchema.json.code, "CW_ERR_UNKNOWN_CAPABILITY");
    assert.equal(wrongSchema.json.attribute, "dataschema");
    await waitFor(async () => (await quarantinedWith(g, "CW_ERR_SCHEMA_VIOLATION")).some((e) => e.headers["ce-id"] === "schema-1"), { what: "the quarantine entry" });
  });

  test("gateway - an unroutable type: 400 CW_ERR_NO_ROUTE over HTTP and NATS, quarantined as unknown_capability", async () => {
    const res = await g.post(requestData(), binary("route-1", { "ce-type": "ticket.created" }));
    assert.equal(res.status, 400);
    assert.deepEqual({ code: res.json.code, attribute: res.json.attribute, quarantined: res.json.quarantined }, { code: "CW_ERR_NO_ROUTE", attribute: "type", quarantined: "unknown_capability" });
    const overNats = await g.natsAsUpstream(["req", REQUEST_SUBJECT, requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:route-2",
      "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:ticket.created"]);
    assert.deepEqual(JSON.parse(overNats.stdout), res.json, "the same answer as over HTTP");
    const entries = await waitFor(async () => { const q = await quarantinedWith(g, "CW_ERR_NO_ROUTE"); return q.length === 2 && q; }, { what: "both unroutable events in quarantine" });
    assert.deepEqual(entries.map((e) => e.subject), ["mesh.quarantine.unknown_capability.ingest", "mesh.quarantine.unknown_capability.ingest"]);
  });

  test("gateway - a request whose reply subject is not the upstream's own inbox is not answered there and nothing runs", async () => {
    const upstream = await g.mesh.as("upstream-demo");
    const spy = g.mesh.operator.subscribe("_INBOX_operator.stolen.>");
    const seen: string[] = [];
    void (async () => { for await (const m of spy) seen.push(m.subject); })();
    await g.mesh.operator.flush();
    try {
      const h = headers();
      for (const [k, v] of Object.entries({ "ce-specversion": "1.0", "ce-source": DEMO_SOURCE, "ce-type": "report.requested" })) h.set(k, v);
      const cases: [string, string | undefined][] = [
        ["reply-1", "$KV.causeway_switches.mesh"], // would make the gateway (allowed any response) write a kill switch
        ["reply-2", "_INBOX_operator.stolen.1"], // another principal's inbox
        ["reply-3", "_INBOX_upstream-demo"], // the inbox prefix itself, not a subject within it
        ["reply-4", undefined], // no reply at all: publish on mesh.ingest.upstream-demo.> for that
      ];
      for (const [id, reply] of cases) {
        h.set("ce-id", id);
        upstream.publish(REQUEST_SUBJECT, requestData(), { headers: h, ...(reply !== undefined && { reply }) });
      }
      await upstream.flush();
      const warnings = await waitFor(() => {
        const lines = g.gateway.output().split("\n").filter((l) => l.includes(`"code":"${ErrorCode.ReplyRefused}"`));
        return lines.length >= cases.length && lines;
      }, { what: "a warning per request" });
      assert.deepEqual(warnings.map((l) => (JSON.parse(l) as { reply: string | null }).reply), cases.map(([, reply]) => reply ?? null));
      // A request answered normally right after: the refused ones were not merely slow.
      h.set("ce-id", "reply-5");
      assert.equal((await upstream.request(REQUEST_SUBJECT, requestData(), { headers: h, timeout: 5_000 })).json<{ status: number }>().status, 202);
      const switches = await new Kvm(g.mesh.operator).open("causeway_switches");
      assert.equal(await switches.get("mesh"), null, "nothing written to the kill switch");
      assert.deepEqual(seen, [], "nothing published on the operator's inbox");
      assert.deepEqual((await g.routed()).filter((e) => e.id.startsWith("reply-")).map((e) => e.id), ["reply-5"]);
      assert.deepEqual((await g.quarantined()).filter((q) => q.headers["ce-id"]?.startsWith("reply-")), []);
      const marks = await new Kvm(g.mesh.operator).open("causeway_processed");
      for (const [id] of cases) assert.equal(await marks.get(`${MARK_PREFIX}.${dedupeKey({ source: DEMO_SOURCE, id })}`), null, `no mark for ${id}`);
    } finally {
      spy.unsubscribe();
      await upstream.close();
    }
  });

  test("gateway - the request endpoint shows in nats micro info, on the per-caller subject, in a queue group", async () => {
    const info = await runNats(["--inbox-prefix", "_INBOX_operator", "micro", "info", "gateway", "--json"], { server: g.mesh.server.url, nkey: seedPath("operator", g.mesh.dataDir) });
    assert.equal(info.code, 0, info.stderr);
    const endpoints = (JSON.parse(info.stdout) as { info: { endpoints: { name: string; subject: string; queue_group: string; metadata?: Record<string, string> }[] } }).info.endpoints;
    const publish = endpoints.find((e) => e.name === "publish");
    assert.ok(publish, JSON.stringify(endpoints));
    assert.equal(publish.subject, "mesh.ctl.gateway.publish.*");
    assert.ok(publish.queue_group, "in a queue group: one replica answers each request");
    assert.match(publish.metadata?.description ?? "", /only <upstream> may request on publish\.<upstream>/);
  });

  test("gateway - health endpoint, and unknown endpoints answer with a code", async () => {
    const health = await fetch(`${g.url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    const nope = await fetch(`${g.url}/nope`);
    assert.equal(nope.status, 404);
    assert.equal(((await nope.json()) as { code: string }).code, "CW_ERR_HTTP_ENDPOINT");
    const get = await fetch(`${g.url}/events`);
    assert.equal(get.status, 405);
    assert.equal(((await get.json()) as { code: string }).code, "CW_ERR_HTTP_METHOD");
  });
});


test("gateway - when its consumer on MESH_INGEST is deleted the gateway stops with exit code 1 and says why, instead of serving HTTP with NATS ingress dead", async () => {
  await using g = await startGatewayMesh();
  const jsm = await jetstreamManager(g.mesh.operator);
  await jsm.consumers.delete("MESH_INGEST", "gateway");
  assert.equal(await g.gateway.exited, 1, g.gateway.output());
  assert.match(g.gateway.output(), /gateway: consumer gateway on MESH_INGEST ended \(.*\): was it or its stream deleted\?/);
});

test("gateway - SIGTERM with a request in flight on a keep-alive connection: it is answered with connection: close and the gateway exits at once", async () => {
  await using g = await startGatewayMesh({ env: { LOG_LEVEL: "info" } });
  const agent = new Agent({ keepAlive: true });
  const body = Buffer.from(requestData());
  // Expect: 100-continue: the gateway's "100 Continue" says it has taken the request (it is in flight).
  const req = request(`${g.url}/events`, {
    method: "POST", agent, headers: { authorization: `Bearer ${g.token}`, ...binary("drain-1"), "content-length": String(body.length), expect: "100-continue" },
  });
  const response = new Promise<IncomingMessage>((resolve, reject) => { req.once("response", resolve); req.once("error", reject); });
  req.flushHeaders();
  await new Promise<void>((resolve) => { req.once("continue", resolve); });
  g.gateway.child.kill("SIGTERM");
  await waitFor(() => g.gateway.output().includes('"msg":"draining"'), { what: "the gateway draining" });
  req.end(body);
  const res = await response;
  res.resume();
  assert.equal(res.statusCode, 202);
  assert.equal(res.headers.connection, "close", "the keep-alive connection is not kept (it would hold the server open for 65 s)");
  assert.equal(await g.gateway.exited, 0, g.gateway.output());
  agent.destroy();
});

test("gateway - a client that disconnects mid-body is logged at debug level, not as a gateway error, and the gateway keeps serving", async () => {
  await using g = await startGatewayMesh({ env: { LOG_LEVEL: "debug" } });
  const { hostname, port } = new URL(g.url);
  const socket = connectTcp(Number(port), hostname);
  let received = "";
  socket.setEncoding("utf8").on("data", (chunk: string) => { received += chunk; });
  // Expect: 100-continue: the gateway's "100 Continue" says it is reading the body when the client goes away.
  socket.write(`POST /events HTTP/1.1\r\nhost: ${hostname}\r\nauthorization: Bearer ${g.token}\r\ncontent-type: application/json\r\n`
    + `ce-specversion: 1.0\r\nce-id: gone-1\r\nce-source: ${DEMO_SOURCE}\r\nce-type: report.requested\r\ncontent-length: 1000\r\nexpect: 100-continue\r\n\r\n`);
  await waitFor(() => received.startsWith("HTTP/1.1 100 Continue"), { what: "100 Continue" });
  socket.write('{"topic":');
  socket.destroy();
  const line = await waitFor(() => g.gateway.output().split("\n").find((l) => l.includes("went away mid-request")), { what: "the disconnect logged" });
  assert.equal((JSON.parse(line) as { level: string }).level, "debug", line);
  assert.doesNotMatch(g.gateway.output(), /"level":"error"/, "nothing logged at error level");
  assert.equal((await g.post(requestData(), binary("after-disconnect"))).status, 202);
});
