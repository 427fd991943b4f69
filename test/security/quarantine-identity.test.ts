// Issue 12, finding 5: a quarantine entry's claims are only headers, written by whoever may publish on
// MESH_QUARANTINE. The dead-letter path must not take a forged entry's claim on an original for the real copy, and
// a release must not republish wherever an entry's Causeway-Original-Subject says. On an operated mesh: rendered
// least-privilege accounts, every forger a principal that may legitimately publish on its quarantine subject.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ErrorCode, NatsBinding, QuarantineHeader, createEvent, isCausewayError, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7, type CloudEvent,
} from "../../services/kit/index.ts";
import { start as startDeadLetters } from "../../services/coordinator/dead-letters.ts";
import { createQuarantineOps } from "../../services/coordinator/quarantine-ops.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { startCoordinator } from "../coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "../e2e-fixture.ts";
import { waitFor } from "../harness/index.ts";

const PLAN = "mesh.cap.plan.v1";

function event(mesh: OperatedMesh, principal: string, type: string, schema: string, data: unknown, extra: Record<string, string> = {}): CloudEvent {
  return signEvent(createEvent({
    id: uuidv7(), source: `causeway://${principal}`, type, time: new Date().toISOString(), datacontenttype: "application/json",
    dataschema: `https://causeway.dev/schemas/${schema}/1.0.0`, extensions: { traceparent: newTraceparent(), ...extra }, data: JSON.stringify(data),
  }), signingKeyFromNkeySeed(readSeed(principal, mesh.dataDir)));
}

const request = (mesh: OperatedMesh) => event(mesh, "gateway", "report.requested", "report.requested", { topic: "Heat pumps", requester: "analyst@example.com" });

/** Publishes `e` (or `bytes`) as a quarantine entry on `subject` as `nc`, with the claims in `claims`. Resolves with its sequence. */
async function entry(nc: NatsConnection, subject: string, e: CloudEvent, claims: Record<string, string>, bytes?: Uint8Array): Promise<number> {
  const { headers, data } = NatsBinding.binary(e);
  for (const [k, v] of Object.entries({ [QuarantineHeader.Reason]: subject.split(".")[2]!, [QuarantineHeader.Detail]: "forged", [QuarantineHeader.DetectedAt]: new Date().toISOString(), ...claims })) headers.set(k, v);
  return (await jetstream(nc).publish(subject, bytes ?? data, { headers })).seq;
}

describe("quarantine entries are trusted only as far as their publisher", () => {
  test("dead letters - forged entries claiming the original do not stop the real dead letter being quarantined", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startDeadLetters]);
    const input = request(mesh);
    const { headers, data } = NatsBinding.binary(input);
    const seq = (await jetstream(await mesh.as("gateway")).publish(PLAN, data, { headers, msgID: input.id })).seq;

    const claim = { [QuarantineHeader.OriginalSubject]: PLAN, [QuarantineHeader.OriginalStream]: "MESH_CAP", [QuarantineHeader.OriginalSequence]: String(seq) };
    // The researcher, under its own token, with the original's exact bytes: its token does not take mesh.cap.plan.v1.
    await entry(await mesh.as("researcher"), "mesh.quarantine.policy_denied.research", input, { ...claim, [QuarantineHeader.DetectedBy]: "planner" });
    // The planner, under the right token and naming itself, but keeping other bytes.
    await entry(await mesh.as("planner"), "mesh.quarantine.policy_denied.plan", input, { ...claim, [QuarantineHeader.DetectedBy]: "planner" }, new TextEncoder().encode("{}"));

    const jsm = await jetstreamManager(mesh.operator);
    await jsm.consumers.add("MESH_CAP", { durable_name: "strict-worker", filter_subject: PLAN, ack_policy: AckPolicy.Explicit, max_deliver: 2 });
    const worker = await jetstream(mesh.operator).consumers.get("MESH_CAP", "strict-worker");
    const m = await waitFor(() => worker.next({ expires: 1_000 }).then((x) => x ?? undefined), { what: "a delivery" });
    m.term("refused");

    const real = await waitFor(async () => (await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.terminated.plan"))[0], { what: "the dead letter's entry" });
    assert.equal(real.headers?.get(QuarantineHeader.DetectedBy), "coordinator");
    assert.equal(real.headers?.get(QuarantineHeader.OriginalSequence), String(seq));
    assert.deepEqual(Buffer.from(real.data), Buffer.from(data), "the original bytes are kept");
  });

  test("release - a release goes only where the entry and the original's signer imply: decision, another upstream's ingest and a critical mesh.cap subject are refused, nothing published", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, []);
    const ops = createQuarantineOps(coordinator.deps);
    const claim = (subject: string, by: string) => ({ [QuarantineHeader.OriginalSubject]: subject, [QuarantineHeader.OriginalStream]: "MESH_CAP", [QuarantineHeader.OriginalSequence]: "1", [QuarantineHeader.DetectedBy]: by });
    const requestId = `req-${uuidv7()}`;
    const report = event(mesh, "reporter", "report.published", "report.published",
      { requestId, title: "Report: test", complete: true, findingsCount: 1, sections: [{ heading: "Q", body: "A" }] }, { correlationid: requestId });
    const forged = [
      // The planner's own quarantine subject, a gateway-signed request the planner received, aimed at the grants.
      await entry(await mesh.as("planner"), "mesh.quarantine.schema_violation.plan", request(mesh), claim("mesh.decision.grant", "planner")),
      // The gateway's edge quarantine, its own event aimed at another upstream's ingest subject.
      await entry(await mesh.as("gateway"), "mesh.quarantine.bad_signature.ingest", request(mesh), claim("mesh.ingest.upstream-demo.http", "gateway")),
      // The critical publisher, a reporter-signed report aimed straight at its critical mesh.cap subject: no grant.
      await entry(await mesh.as("publisher"), "mesh.quarantine.policy_denied.publish", report, claim("mesh.cap.publish.v1", "publisher")),
    ];
    for (const seq of forged) {
      await assert.rejects(ops.release({ seq, operator: "alice" }), (err: unknown) => {
        assert.ok(isCausewayError(err), String(err));
        assert.equal(err.code, ErrorCode.ReleaseRefused, err.message);
        assert.equal((err.details?.check as { code?: string } | undefined)?.code, ErrorCode.ReleaseTarget, err.message);
        return true;
      }, `entry ${seq}`);
      assert.equal((await ops.show(seq)).release.ok, false);
    }
    assert.equal((await readMessages(mesh.operator, "MESH_DECISION")).length, 0, "nothing decided");
    assert.equal((await readMessages(mesh.operator, "MESH_INGEST")).length, 0, "nothing republished to ingest");
    assert.equal((await readMessages(mesh.operator, "MESH_CAP")).length, 0, "nothing forwarded to the critical capability");
  });
});
