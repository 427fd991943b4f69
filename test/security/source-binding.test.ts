// Issue 12, finding 6: `source` is bound to the signing key. A principal signs only in its own name
// (`causeway://<itself>`), so the planner cannot sign an event as the researcher — not into an agent's
// pipeline, and not into lineage, where the forgery used to take the (source, id) of the researcher's genuine
// output and absorb it as a duplicate, so that `why` and `trace` showed the forgery. Non-mesh sources belong
// to upstreams: the upstream's own key for a source it declares, or the gateway notarizing for that upstream.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ErrorCode, QuarantineHeader, QuarantineReason, UPSTREAM_EXTENSION, VerificationError, createEvent, createLogger, deriveEventId, signEvent,
  startAgent, uuidv7, type CloudEvent,
} from "../../services/kit/index.ts";
import { startIngest } from "../../services/lineage/ingest.ts";
import { trace, why } from "../../services/lineage/queries.ts";
import { decodeRecord } from "../../services/lineage/record.ts";
import { RESEARCH, TASK_SCHEMA, header, recordingResearcher, startMesh } from "../mesh-fixture.ts";
import { lineageStoreKinds } from "../lineage-stores.ts";
import { waitFor } from "../harness/index.ts";

const log = createLogger({ name: "source-binding", level: process.env.LOG_LEVEL ?? "silent" });



describe("source binding", () => {
  for (const kind of lineageStoreKinds) {
    test(`source on ${kind.name} - the planner's event signed as causeway://researcher is refused by the agent and recorded as failed by lineage; the researcher's genuine event stays verified in why and trace`, async () => {
      await using mesh = await startMesh();
      await using s = await kind.open();
      const flow = uuidv7();
      // The genuine task (the planner's own), and the id the researcher's finding for it will carry.
      const task = mesh.event("planner", {
        type: "research.task.created", dataschema: TASK_SCHEMA, extensions: { correlationid: flow },
        data: JSON.stringify({ requestId: flow, taskIndex: 0, totalTasks: 1, query: "how cold is too cold?" }),
      });
      const findingId = deriveEventId(task, "researcher", 0);
      // The forgery: signed by the planner (whose key may emit research.task.created and address research.v1),
      // in the researcher's name and under the id of the researcher's coming finding. Its own message id, so
      // the stream keeps both and the test is about verification, not JetStream's duplicate window.
      const forged = signEvent(createEvent({
        id: findingId, source: "causeway://researcher", type: "research.task.created", time: new Date().toISOString(),
        datacontenttype: "application/json", dataschema: TASK_SCHEMA, extensions: { correlationid: flow },
        data: JSON.stringify({ requestId: flow, taskIndex: 0, totalTasks: 1, query: "forged" }),
      }), mesh.keys.planner!);
      await mesh.publish(RESEARCH, forged, `forged-${findingId}`);
      await mesh.publish(RESEARCH, task);

      const def = recordingResearcher();
      await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.researcher!, log });
      await waitFor(() => agent.stats().processed === 1 && agent.stats().quarantined === 1, { what: "the task handled and the forgery quarantined" });
      assert.deepEqual(def.handled, [task.id], "the forgery never reached the handler");
      const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
      assert.ok(q, "the forgery's bytes are kept");
      assert.equal(q.subject, `mesh.quarantine.${QuarantineReason.UnauthorizedEmitter}.research`);
      assert.equal(header(q, QuarantineHeader.Code), ErrorCode.SourceMismatch);
      assert.match(header(q, QuarantineHeader.Detail)!, /source "causeway:\/\/researcher" is not the signer's: planner signs as "causeway:\/\/planner"/);

      const ingest = await startIngest({
        nc: mesh.nc, store: s.store, trust: mesh.trust, log,
        consumers: [{ stream: "MESH_CAP", durable: "lineage" }, { stream: "MESH_QUARANTINE", durable: "lineage" }],
      });
      try {
        // MESH_CAP: forgery, task, finding; MESH_QUARANTINE: the forgery's copy.
        await waitFor(() => ingest.stats().recorded + ingest.stats().absorbed === 4, { what: "every message recorded or absorbed" });
        const { recorded, absorbed, failed } = ingest.stats();
        assert.deepEqual({ recorded, absorbed, failed }, { recorded: 4, absorbed: 0, failed: 2 }, "nothing absorbed: the forgery and its quarantine copy are failed records");
        // Lineage records its streams concurrently: the records' order across streams is not defined, so compare them sorted.
        const rows = (await s.store.byId(findingId)).map((r) => {
          const v = decodeRecord(r.bytes).verification;
          return { stream: r.columns.stream, type: r.columns.type, verified: r.columns.verified, principal: r.columns.principal, code: v.code };
        }).sort((a, b) => `${a.stream} ${a.type}`.localeCompare(`${b.stream} ${b.type}`));
        assert.deepEqual(rows, [
          { stream: "MESH_CAP", type: "research.finding.created", verified: true, principal: "researcher", code: undefined },
          { stream: "MESH_CAP", type: "research.task.created", verified: false, principal: null, code: ErrorCode.SourceMismatch },
          { stream: "MESH_QUARANTINE", type: "research.task.created", verified: false, principal: null, code: ErrorCode.SourceMismatch },
        ]);

        const answer = await why(s.store, findingId);
        const [finding, input] = answer.steps;
        assert.deepEqual([finding?.type, finding?.principal, finding?.verification.result], ["research.finding.created", "researcher", "verified"]);
        assert.deepEqual([input?.id, input?.principal, input?.verification.result], [task.id, "planner", "verified"], "the finding's input is the genuine task");
        const flowTrace = await trace(s.store, flow);
        const node = flowTrace.nodes.find((n) => n.id === findingId);
        assert.deepEqual([node?.type, node?.principal, node?.verification.result], ["research.finding.created", "researcher", "verified"]);
      } finally {
        await ingest.stop();
      }
    });
  }

  test("source - what the trust store accepts: a principal's own mesh source; an upstream's declared source from its key or notarized by the gateway for it", async () => {
    await using mesh = await startMesh();
    const sign = (principal: string, source: string, type: string, extensions: Record<string, string> = {}) => signEvent(createEvent({
      id: uuidv7(), source, type, time: new Date().toISOString(), datacontenttype: "application/json", extensions, data: "{}",
    }), mesh.keys[principal]!);
    const ok = (event: CloudEvent) => mesh.trust.verify(event, { receivedAt: "now" }).entry.principal;
    const refused = (event: CloudEvent) => assert.throws(() => mesh.trust.verify(event, { receivedAt: "now" }), (err: unknown) => {
      assert.ok(err instanceof VerificationError, String(err));
      assert.equal(err.code, ErrorCode.SourceMismatch, err.message);
      assert.equal(err.reason, QuarantineReason.UnauthorizedEmitter);
      return true;
    });
    const demo = "https://demo.causeway.dev/requests/1"; // under upstream-demo's declared "https://demo.causeway.dev/"
    assert.equal(ok(sign("researcher", "causeway://researcher", "research.finding.created")), "researcher");
    refused(sign("researcher", "causeway://planner", "research.finding.created"));
    refused(sign("researcher", "causeway://researcher/sub", "research.finding.created"));
    refused(sign("researcher", demo, "research.finding.created"));
    // The gateway notarizes for an upstream: the signed `upstream` extension names it, and it declares the source.
    assert.equal(ok(sign("gateway", demo, "report.requested", { [UPSTREAM_EXTENSION]: "upstream-demo" })), "gateway");
    refused(sign("gateway", demo, "report.requested"));
    refused(sign("gateway", "https://elsewhere.example/", "report.requested", { [UPSTREAM_EXTENSION]: "upstream-demo" }));
    refused(sign("gateway", demo, "report.requested", { [UPSTREAM_EXTENSION]: "no-such-upstream" }));
    refused(sign("gateway", "causeway://planner", "report.requested", { [UPSTREAM_EXTENSION]: "upstream-demo" }));
    // An upstream's own key: only its declared sources.
    assert.equal(ok(sign("upstream-demo", demo, "report.requested")), "upstream-demo");
    refused(sign("upstream-demo", "https://elsewhere.example/x", "report.requested"));
  });
});
