// The gateway's part of flow control (issue 16) on a real mesh: a flow's priority and budget come from its upstream's
// policy (infra/upstreams.json) and are signed into the event it admits; an upstream may ask for a smaller budget and
// an earlier deadline, never more, nor choose its priority, nor say what the mesh spent; a signed upstream event,
// which the gateway cannot change, must carry them within the caps itself.
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  ContextExtension, ErrorCode, NatsBinding, QuarantineReason, budgetOf, createEvent, priorityOf, readSeed, signEvent, signingKeyFromNkeySeed,
} from "../services/kit/index.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, requestData, startGatewayMesh, type GatewayMesh } from "./gateway-fixture.ts";
import { waitFor } from "./harness/index.ts";

const binary = (id: string, extra: Record<string, string> = {}) => ({
  "content-type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": DEMO_SOURCE, "ce-type": "report.requested",
  "ce-dataschema": REQUEST_SCHEMA, ...extra,
});
// The policy under test, written into the gateway's upstreams.json.
const BUDGET = { cost: 500, tokens: 20_000, steps: 12, deadlineMs: 120_000 };
const PRIORITY = { default: "background", types: { "report.requested": "critical" } };

describe("gateway flow control", () => {
  let g: GatewayMesh;
  before(async () => {
    g = await startGatewayMesh({ upstream: { budget: BUDGET, priority: PRIORITY } });
  });
  after(async () => {
    await g[Symbol.asyncDispose]();
  });
  const routed = async (id: string) => (await g.routed()).filter((e) => e.id === id);

  test("gateway flow control - the admitted event carries the upstream's priority for its type, its budget at the caps and a deadline within the upstream's", async () => {
    const before = Date.now();
    const res = await g.post(requestData(), binary("fc-1"));
    assert.equal(res.status, 202, JSON.stringify(res.json));
    const [event] = await routed("fc-1");
    assert.equal(priorityOf(event!), "critical", "per type");
    assert.deepEqual(budgetOf(event!), { cost: BUDGET.cost, tokens: BUDGET.tokens, steps: BUDGET.steps });
    const expiry = Date.parse(String(event!.extensions[ContextExtension.ExpiryTime]));
    assert.ok(expiry >= before + BUDGET.deadlineMs && expiry <= Date.now() + BUDGET.deadlineMs, "the deadline starts at admission");
    assert.equal(g.mesh.trust.verify(event!, { receivedAt: "now" }).entry.principal, "gateway", "signed by the gateway, extensions included");
  });

  test("gateway flow control - an upstream may ask for less and an earlier deadline", async () => {
    const soon = new Date(Date.now() + 30_000).toISOString();
    const res = await g.post(requestData(), binary("fc-less", { "ce-budgetcost": "7", "ce-budgetsteps": "3", "ce-expirytime": soon }));
    assert.equal(res.status, 202, JSON.stringify(res.json));
    const [event] = await routed("fc-less");
    assert.deepEqual(budgetOf(event!), { cost: 7, tokens: BUDGET.tokens, steps: 3 });
    assert.equal(Date.parse(String(event!.extensions[ContextExtension.ExpiryTime])), Date.parse(soon));
  });

  test("gateway flow control - asking for more, choosing a priority or claiming a spend is refused with CW_ERR_UPSTREAM_CONTEXT and kept in quarantine", async () => {
    const late = new Date(Date.now() + BUDGET.deadlineMs * 10).toISOString();
    const cases: [string, Record<string, string>, RegExp][] = [
      ["fc-more-cost", { "ce-budgetcost": String(BUDGET.cost + 1) }, /budgetcost: asks for 501, more than upstream upstream-demo's cap of 500/],
      ["fc-more-steps", { "ce-budgetsteps": "1000000" }, /budgetsteps: asks for 1000000/],
      ["fc-priority", { "ce-priority": "critical" }, /priority: the gateway sets a flow's priority/],
      ["fc-spent", { "ce-spentcost": "0" }, /spentcost: an upstream event may not say what the mesh spent/],
      ["fc-late", { "ce-expirytime": late }, /expirytime: .* is later than upstream upstream-demo's deadline allows/],
    ];
    for (const [id, headers, message] of cases) {
      const res = await g.post(requestData(), binary(id, headers));
      assert.equal(res.status, 403, `${id}: ${JSON.stringify(res.json)}`);
      assert.equal(res.json.code, ErrorCode.UpstreamContext, id);
      assert.match(String(res.json.message), message, id);
      assert.equal(res.json.quarantined, QuarantineReason.PolicyDenied, id);
      assert.deepEqual(await routed(id), [], `${id} was not routed`);
    }
    const bad = await g.post(requestData(), binary("fc-malformed", { "ce-budgettokens": "-3" }));
    assert.equal(bad.status, 400);
    assert.equal(bad.json.code, ErrorCode.InvalidAttribute);
    assert.equal(bad.json.attribute, ContextExtension.BudgetTokens);
  });

  test("gateway flow control - an edit of the upstream's policy applies to the next flow; a bad edit keeps the last good one", async () => {
    const path = join(g.mesh.dataDir, "upstreams.json");
    const original = readFileSync(path, "utf8");
    const doc = JSON.parse(original) as { upstreams: Record<string, Record<string, unknown>> };
    let n = 0;
    try {
      doc.upstreams["upstream-demo"]!.budget = { ...BUDGET, cost: 42 };
      doc.upstreams["upstream-demo"]!.priority = { default: "background" };
      writeFileSync(path, JSON.stringify(doc));
      const event = await waitFor(async () => {
        const id = `fc-live-${n++}`;
        assert.equal((await g.post(requestData(), binary(id))).status, 202);
        const [e] = await routed(id);
        return e !== undefined && budgetOf(e)?.cost === 42 && e;
      }, { what: "the edited budget in force" });
      assert.equal(priorityOf(event), "background");
      // A bad edit (an unknown tenant) is refused: the last good policy stays.
      doc.upstreams["upstream-demo"]!.tenant = "nobody";
      writeFileSync(path, JSON.stringify(doc));
      await waitFor(() => /the upstreams: the edit is refused/.test(g.gateway.output()), { what: "the bad edit refused" });
      const res = await g.post(requestData(), binary("fc-live-after"));
      assert.equal(res.status, 202);
      assert.equal(budgetOf((await routed("fc-live-after"))[0]!)?.cost, 42);
    } finally {
      writeFileSync(path, original);
    }
    await waitFor(async () => {
      const id = `fc-restored-${n++}`;
      await g.post(requestData(), binary(id));
      const [e] = await routed(id);
      return e !== undefined && budgetOf(e)?.cost === BUDGET.cost;
    }, { what: "the original policy back" });
  });

  test("gateway flow control - a signed upstream event must carry its priority and whole budget within the caps itself", async () => {
    const key = signingKeyFromNkeySeed(readSeed("upstream-demo", g.mesh.dataDir));
    const post = async (id: string, extensions: Record<string, string>) => {
      const signed = signEvent(createEvent({
        id, source: DEMO_SOURCE, type: "report.requested", time: new Date().toISOString(), datacontenttype: "application/json",
        dataschema: REQUEST_SCHEMA, data: requestData("signed"), extensions,
      }), key);
      const { headers, data } = NatsBinding.binary(signed);
      const h: Record<string, string> = {};
      for (const [k, v] of headers) h[k] = v[0]!;
      return g.post(data, { ...h, "content-type": "application/json" });
    };
    const complete = {
      priority: "critical", budgetcost: String(BUDGET.cost), budgettokens: String(BUDGET.tokens), budgetsteps: String(BUDGET.steps),
      expirytime: new Date(Date.now() + BUDGET.deadlineMs / 2).toISOString(),
    };
    assert.equal((await post("fc-signed-ok", complete)).status, 202);
    const { budgetsteps: _steps, ...withoutSteps } = complete;
    const missing = await post("fc-signed-missing", withoutSteps);
    assert.equal(missing.status, 403);
    assert.match(String(missing.json.message), /budgetsteps: a signed event of upstream upstream-demo must carry its budget/);
    const wrongPriority = await post("fc-signed-priority", { ...complete, priority: "background" });
    assert.equal(wrongPriority.status, 403);
    assert.match(String(wrongPriority.json.message), /priority: .*must carry exactly that/);
  });
});
