// Issue 12, finding 10: an upstream's flows are its own. The gateway correlates the flows upstreams start (the
// flow id: the event's id and a tag over its source and id), so an upstream-supplied `correlationid` or `causationid` cannot graft an event into a flow
// another request started: it is kept as `upstreamcorrelation` / `upstreamcausation`, and a signed event that
// carries one is refused (CW_ERR_UPSTREAM_CONTEXT), as is any carrying `flowdepth`. And a flow is per (source, id): two requests with the same
// id from different sources get a correlation id and a report each, not one merged flow. The upstream's sources here are two of
// upstream-demo's (its declared prefix `https://demo.causeway.dev/`); the agents run as processes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  NatsBinding, createEvent, dataJson, flowIdOf, readSeed, signEvent, signingKeyFromNkeySeed, type CloudEvent,
} from "../../services/kit/index.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { REFERENCE_AGENTS, agentScript } from "../e2e-fixture.ts";
import { REQUEST_SCHEMA, requestData, startGatewayMesh, type GatewayMesh } from "../gateway-fixture.ts";
import { waitFor } from "../harness/index.ts";

const SOURCE_A = "https://demo.causeway.dev/a";
const SOURCE_B = "https://demo.causeway.dev/b";
const QUESTIONS = ["Which battery chemistries lead grid-scale storage?", "What does a megawatt-hour of storage cost?"];

const binary = (id: string, source: string, extra: Record<string, string> = {}) => ({
  "content-type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": source, "ce-type": "report.requested",
  "ce-dataschema": REQUEST_SCHEMA, ...extra,
});
const body = (topic: string) => JSON.stringify({ topic, requester: "analyst@example.com", questions: QUESTIONS });

async function routed(g: GatewayMesh, id: string, source: string): Promise<CloudEvent> {
  const [e] = (await g.routed()).filter((x) => x.id === id && x.source === source);
  assert.ok(e, `${source} ${id} routed`);
  return g.mesh.trust.verify(e, { receivedAt: "now" }).event;
}

async function events(g: GatewayMesh, stream: string, subject: string): Promise<CloudEvent[]> {
  return (await readMessages(g.mesh.operator, stream, subject)).map((m) => NatsBinding.toEvent(m));
}

describe("an upstream's flows are its own", () => {
  test("upstream flows - an upstream-supplied correlationid/causationid does not join another flow; same id from two sources, two reports", async () => {
    await using g = await startGatewayMesh();
    for (const name of REFERENCE_AGENTS) g.mesh.spawn(agentScript(name));

    // B starts a flow; A sends a request naming B's flow as its correlation and cause.
    const b = await g.post(body("B's request"), binary("flow-b", SOURCE_B));
    assert.equal(b.status, 202, JSON.stringify(b.json));
    const a = await g.post(body("A's request"), binary("flow-a", SOURCE_A, { "ce-correlationid": "flow-b", "ce-causationid": "flow-b" }));
    assert.equal(a.status, 202, JSON.stringify(a.json));

    const flowB = flowIdOf({ source: SOURCE_B, id: "flow-b" });
    const flowA = flowIdOf({ source: SOURCE_A, id: "flow-a" });
    assert.equal(b.json.correlationid, flowB, "the gateway answers with the flow it started");
    const fromB = await routed(g, "flow-b", SOURCE_B);
    assert.equal(fromB.extensions.correlationid, flowB, "a plain request starts its own flow");
    assert.equal(fromB.extensions.upstreamcorrelation, undefined);
    const fromA = await routed(g, "flow-a", SOURCE_A);
    assert.equal(fromA.extensions.correlationid, flowA, "the gateway's correlation, not the upstream's");
    assert.equal(fromA.extensions.causationid, undefined, "no cause inside the mesh");
    assert.equal(fromA.extensions.upstreamcorrelation, "flow-b", "the upstream's value is kept, signed");
    assert.equal(fromA.extensions.upstreamcausation, "flow-b");

    // The same id from another source: a request of its own.
    const same = await g.post(body("A's second request"), binary("flow-b", SOURCE_A));
    assert.equal(same.status, 202, JSON.stringify(same.json));
    assert.equal(same.json.duplicate, false);
    assert.notEqual(same.json.correlationid, flowB, "the same id from another source is another flow");
    assert.equal((await routed(g, "flow-b", SOURCE_A)).extensions.correlationid, same.json.correlationid);

    // A signed event cannot be changed by the gateway: one naming another flow is refused.
    const key = signingKeyFromNkeySeed(readSeed("upstream-demo", g.mesh.dataDir));
    for (const extensions of [{ correlationid: "flow-b" }, { correlationid: flowB }, { causationid: "flow-b" }] as Record<string, string>[]) {
      const signed = signEvent(createEvent({
        id: "signed-graft", source: SOURCE_A, type: "report.requested", time: new Date().toISOString(), datacontenttype: "application/json",
        dataschema: REQUEST_SCHEMA, extensions, data: requestData("graft"),
      }), key);
      const enc = NatsBinding.binary(signed);
      const h: Record<string, string> = {};
      for (const [k, v] of enc.headers) h[k] = v[0]!;
      const res = await g.post(enc.data, { ...h, "content-type": "application/json" });
      assert.equal(res.status, 403, JSON.stringify(res.json));
      assert.equal(res.json.code, "CW_ERR_UPSTREAM_CONTEXT");
      assert.equal(res.json.quarantined, "policy_denied");
    }
    // Nor may an upstream set the flow's causal depth (loop guards): signed or not, a flow starts at 0.
    for (const depth of ["-5", "0", "1152921504606846976"]) {
      const res = await g.post(body("deep"), binary(`depth-${depth}`, SOURCE_A, { "ce-flowdepth": depth }));
      assert.equal(res.status, 403, JSON.stringify(res.json));
      assert.equal(res.json.code, "CW_ERR_UPSTREAM_CONTEXT");
    }
    assert.equal(fromB.extensions.flowdepth, undefined, "the gateway's event is the flow's root: depth 0, absent");
    // Nor choose which versions its flow runs on: the route epoch is the gateway's to stamp (version routing).
    for (const epoch of ["0", "999999"]) {
      const res = await g.post(body("routed"), binary(`epoch-${epoch}`, SOURCE_A, { "ce-routeepoch": epoch }));
      assert.equal(res.status, 403, JSON.stringify(res.json));
      assert.equal(res.json.code, "CW_ERR_UPSTREAM_CONTEXT");
      assert.match(String(res.json.message), /routeepoch/);
    }
    assert.match(String(fromB.extensions.routeepoch), /^\d+$/, "the gateway stamps the flow's route epoch");

    // Downstream: three requests, three complete reports, each with its own findings; B's flow holds only B's work.
    const reports = await waitFor(async () => {
      const r = await events(g, "MESH_EVT", "mesh.evt.report.published.v1");
      return r.length >= 3 && r;
    }, { what: "three reports", timeoutMs: 60_000 });
    const summary = reports.map((r) => {
      const d = dataJson<{ requestId: string; title: string; complete: boolean; findingsCount: number }>(r);
      return { correlation: String(r.extensions.correlationid), title: d.title, complete: d.complete, findings: d.findingsCount, requestId: d.requestId };
    }).sort((x, y) => x.title.localeCompare(y.title));
    assert.deepEqual(summary.map((s) => [s.title, s.complete, s.findings]), [
      ["Report: A's request", true, 2], ["Report: A's second request", true, 2], ["Report: B's request", true, 2],
    ]);
    assert.deepEqual(summary.map((s) => s.correlation), [flowA, same.json.correlationid, flowB], "three flows");
    assert.deepEqual(summary.map((s) => s.requestId), summary.map((s) => s.correlation), "a request's id is the flow it started");
    const tasks = await events(g, "MESH_CAP", "mesh.cap.research.v1");
    assert.deepEqual(tasks.filter((t) => t.extensions.correlationid === flowA).map((t) => t.extensions.topic), ["A's request", "A's request"]);
  });
});
