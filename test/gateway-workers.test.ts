// CAUSEWAY_GATEWAY_WORKERS: several gateway processes behind one HTTP port and one NATS ingress consumer,
// supervised by the first. Each accepted event is routed once, both workers serve, the rate limit is shared out,
// and SIGTERM drains them all.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Svcm } from "@nats-io/services";
import { createEvent, encodeJsonEvent } from "../services/kit/index.ts";
import { DEMO_SOURCE, REQUEST_SCHEMA, requestData, startGatewayMesh } from "./gateway-fixture.ts";
import { waitFor } from "./harness/index.ts";

const binary = (id: string) => ({
  "content-type": "application/json", "ce-specversion": "1.0", "ce-id": id, "ce-source": DEMO_SOURCE, "ce-type": "report.requested", "ce-dataschema": REQUEST_SCHEMA,
});

test("gateway workers - two processes share the port and the ingress; every event once; the rate is shared out; SIGTERM drains both", async () => {
  await using g = await startGatewayMesh({ rate: { per_second: 0.001, burst: 40 }, env: { CAUSEWAY_GATEWAY_WORKERS: "2" } });
  const instances = async () => {
    const found = new Set<string>();
    for await (const info of await new Svcm(g.mesh.operator).client({ strategy: "timer", maxWait: 300 }).info("gateway")) found.add(info.id);
    return found.size;
  };
  assert.equal(await waitFor(async () => (await instances()) === 2 && 2, { what: "both workers registered" }), 2);

  // A batch of 21 fits the declared burst of 40 but never a worker's share of 20: refused without Retry-After
  // (waiting would not help), and it takes no tokens.
  const batch = Array.from({ length: 21 }, (_, i) => JSON.parse(encodeJsonEvent(createEvent({
    id: `wb-${i}`, source: DEMO_SOURCE, type: "report.requested", datacontenttype: "application/json", data: requestData(),
  }))) as object);
  const tooBig = await g.post(JSON.stringify(batch), { "content-type": "application/cloudevents-batch+json" });
  assert.equal(tooBig.status, 429, JSON.stringify(tooBig.json));
  assert.equal(tooBig.json.code, "CW_ERR_RATE_LIMITED");
  assert.match(String(tooBig.json.message), /a batch of 21 events is more than upstream upstream-demo's burst of 20 \(its burst of 40 shared out over the gateway's 2 workers\): send smaller batches/);
  assert.equal(tooBig.headers.get("retry-after"), null);

  // 40 tokens split over two workers: each takes 20, so 60 requests spread over both get 40 × 202 at most.
  const results = await Promise.all(Array.from({ length: 60 }, (_, i) => g.post(requestData(), binary(`w-${i}`))));
  const accepted = results.filter((r) => r.status === 202).map((r) => r.json.id as string);
  assert.ok(results.every((r) => r.status === 202 || r.status === 429), "only 202 and 429");
  assert.ok(accepted.length <= 40 && accepted.length >= 20, `${accepted.length} accepted of a shared burst of 40`);
  const nats = await g.natsAsUpstream(["req", "mesh.ctl.gateway.publish.upstream-demo", requestData(), "-H", "ce-specversion:1.0", "-H", "ce-id:w-nats",
    "-H", `ce-source:${DEMO_SOURCE}`, "-H", "ce-type:report.requested"]);
  const natsStatus = (JSON.parse(nats.stdout) as { status: number }).status;
  assert.ok(natsStatus === 202 || natsStatus === 429, nats.stdout + nats.stderr);
  const expected = [...accepted, ...(natsStatus === 202 ? ["w-nats"] : [])].sort();
  const routed = await waitFor(async () => {
    const ids = (await g.routed()).map((e) => e.id).sort();
    return ids.length >= expected.length && ids;
  }, { what: "every accepted event routed" });
  assert.deepEqual(routed, expected, "each accepted event routed exactly once");

  g.gateway.child.kill("SIGTERM");
  assert.equal(await g.gateway.exited, 0, g.gateway.output());
});
