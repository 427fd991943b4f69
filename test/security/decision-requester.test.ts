// Issue 12, finding 10: the operator name in pause, resume, release and reject is free text, recorded in signed
// decisions. The coordinator cannot see who sent a request, but the server's permissions decide who may publish
// on each control subject: a decision now also records that authenticated principal (`principal`, derived from
// principals.json: only `operator` may call these endpoints), next to the `operator` name the requester claims.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { jetstream } from "@nats-io/jetstream";
import {
  NatsBinding, controlRequest, createEvent, createLogger, decisionSchema, loadPrincipals, newTraceparent, openTrustStore, readSeed, signEvent,
  signingKeyFromNkeySeed, startAgent, uuidv7,
} from "../../services/kit/index.ts";
import {
  approve, pause, quarantineList, quarantineReject, quarantineRelease, requesterOf, resume, type ListReply, type RejectReply, type SwitchReply,
} from "../../services/coordinator/contract.ts";
import { start as startSwitches } from "../../services/coordinator/switches.ts";
import { start as startQuarantine } from "../../services/coordinator/quarantine-ops.ts";
import { createPlannerDefinition } from "../../services/agents/planner/definition.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { startOperatedMesh } from "../e2e-fixture.ts";
import { startCoordinator } from "../coordinator-fixture.ts";
import { waitFor } from "../harness/index.ts";

const principals = loadPrincipals();
const quiet = (name: string) => createLogger({ name, level: process.env.LOG_LEVEL ?? "silent" });

describe("decisions record the authenticated requester", () => {
  test("requester - the layout grants pause, resume, release and reject to the operator alone; approve has several callers, so no one principal", () => {
    for (const endpoint of [pause, resume, quarantineRelease, quarantineReject]) assert.equal(requesterOf(principals, endpoint), "operator", endpoint.action);
    assert.equal(requesterOf(principals, approve), undefined);
  });

  test("requester - a pause, resume and reject claiming another name record principal \"operator\" in their signed decisions", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, [startSwitches, startQuarantine]);
    const claimed = "someone-else@example.com";

    const paused = await controlRequest<unknown, SwitchReply>(mesh.operator, pause, { scope: "capability", target: "plan.v1", reason: "audit", operator: claimed });
    await controlRequest<unknown, SwitchReply>(mesh.operator, resume, { scope: "capability", target: "plan.v1", operator: claimed });
    assert.equal(paused.by, claimed);

    // A quarantine entry: an input the planner refuses by its schema.
    const nc = await mesh.as("planner");
    const trust = await openTrustStore(nc);
    const planner = await startAgent(nc, createPlannerDefinition(), { trust, signingKey: signingKeyFromNkeySeed(readSeed("planner", mesh.dataDir)), log: quiet("planner") });
    try {
      const bad = signEvent(createEvent({
        id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(), datacontenttype: "application/json",
        dataschema: "https://causeway.dev/schemas/report.requested/1.0.0", extensions: { traceparent: newTraceparent() }, data: JSON.stringify({ topic: 42 }),
      }), signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir)));
      const { headers, data } = NatsBinding.binary(bad);
      await jetstream(await mesh.as("gateway")).publish("mesh.cap.plan.v1", data, { headers, msgID: bad.id });
      await waitFor(() => planner.stats().quarantined === 1, { what: "the quarantined input" });
    } finally {
      await planner.stop();
      await trust.close();
    }
    const [entry] = await waitFor(async () => {
      const list = await controlRequest<unknown, ListReply>(mesh.operator, quarantineList, {});
      return list.entries.length === 1 && list.entries;
    }, { what: "the quarantine entry" });
    const rejected = await controlRequest<unknown, RejectReply>(mesh.operator, quarantineReject, { seq: entry!.seq, operator: claimed });

    const decisions = (await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.>")).map((m) => coordinator.deps.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" }));
    const data = (type: string) => decisions.filter((d) => d.event.type === type).map((d) => {
      const body = JSON.parse(Buffer.from(d.event.data).toString("utf8")) as Record<string, unknown>;
      coordinator.deps.schemas.validate(d.event.dataschema!, body);
      return body;
    });
    const switches = data("decision.switch");
    assert.deepEqual(switches.map((d) => [d.action, d.operator, d.principal]), [["pause", claimed, "operator"], ["resume", claimed, "operator"]]);
    const [rejection] = data("decision.rejection");
    assert.equal(decisions.find((d) => d.event.type === "decision.rejection")?.event.id, rejected.decisionId);
    assert.equal(rejection?.operator, claimed, "the claim is kept");
    assert.equal(rejection?.principal, "operator", "and the identity the server checked is recorded");
    assert.equal(decisionSchema("rejection"), decisions.find((d) => d.event.type === "decision.rejection")?.event.dataschema);
  });
});
