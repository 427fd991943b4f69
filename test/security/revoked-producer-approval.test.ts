// Issue 12, finding 9: revoking a key used to leave its pending approvals to be granted later without a word.
// Now the coordinator flags pending work whose producer's key is revoked, and an approval of it — by
// `causeway approve` or a plain request on approve.<approver> — is refused with CW_ERR_PRODUCER_KEY_REVOKED
// unless the approver confirms (`despiteRevocation`); a refused approval records nothing and runs nothing.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Kvm } from "@nats-io/kv";
import { jetstream } from "@nats-io/jetstream";
import {
  ErrorCode, KvBucket, NatsBinding, controlRequest, createEvent, formatTime, isCausewayError, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7,
  type CloudEvent,
} from "../../services/kit/index.ts";
import { revokeTrust } from "../../services/kit/ops/index.ts";
import { approveAs, denyAs, type Approval } from "../../services/coordinator/contract.ts";
import { start as startHandoffs } from "../../services/coordinator/handoffs.ts";
import { readMessages } from "../../services/cli/flow.ts";
import { startCoordinator } from "../coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "../e2e-fixture.ts";
import { waitFor } from "../harness/index.ts";

const REPORT_SCHEMA = "https://causeway.dev/schemas/report.published/1.0.0";
const policy = { capabilities: { "publish.v1": { critical: true, approvals: { count: 1, approvers: ["approver-alice"] }, leaseTtlMs: 60_000, approvalDeadlineMs: 60_000, onDeadline: "quarantine" } } };

/** Critical work from the reporter, stamped a few seconds back so a revocation now is after it. */
async function handOff(mesh: OperatedMesh): Promise<CloudEvent> {
  const requestId = `req-${uuidv7()}`;
  const event = signEvent(createEvent({
    id: uuidv7(), source: "causeway://reporter", type: "report.published", time: new Date(Date.now() - 5_000).toISOString(), subject: requestId,
    datacontenttype: "application/json", dataschema: REPORT_SCHEMA, extensions: { traceparent: newTraceparent(), correlationid: requestId },
    data: JSON.stringify({ requestId, title: "Report: test", complete: true, findingsCount: 1, sections: [{ heading: "Q", body: "A" }] }),
  }), signingKeyFromNkeySeed(readSeed("reporter", mesh.dataDir)));
  const { headers, data } = NatsBinding.binary(event);
  await jetstream(await mesh.as("reporter")).publish("mesh.handoff.publish.v1", data, { headers, msgID: event.id });
  return event;
}

describe("revoked producer, pending approval", () => {
  test("revoked producer - approve-as without despiteRevocation is refused with CW_ERR_PRODUCER_KEY_REVOKED and records nothing; with it the work is granted and the reply names the revocation; deny needs no confirmation", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policy);
    const alice = await mesh.as("approver-alice");
    const approvals = await new Kvm(alice).open(KvBucket.Approvals);
    const pendingOf = async (id: string) => {
      for await (const k of await approvals.keys()) {
        const e = await approvals.get(k);
        if (e?.operation === "PUT" && e.json<Approval>().eventId === id) return e.json<Approval>();
      }
      return undefined;
    };
    const work = await handOff(mesh);
    const other = await handOff(mesh);
    await waitFor(async () => (await pendingOf(work.id)) && (await pendingOf(other.id)), { what: "both approvals pending" });

    const [revocation] = await revokeTrust(mesh.operator, "reporter", { reason: "key leaked" });
    const expected = { keyid: revocation!.keyid, principal: "reporter", revokedAt: formatTime(revocation!.revokedAt), reason: "key leaked" };
    const flagged = await waitFor(async () => (await pendingOf(work.id))?.producerRevoked, { what: "the pending approval flagged" });
    assert.deepEqual(flagged, expected);

    const refusal = await controlRequest(alice, approveAs, { eventId: work.id }, { caller: "approver-alice" }).then(() => undefined, (err: unknown) => err);
    assert.ok(isCausewayError(refusal), String(refusal));
    assert.equal(refusal.code, ErrorCode.ProducerKeyRevoked);
    assert.match(refusal.message, new RegExp(`the producer's key ${revocation!.keyid} \\(reporter\\) was revoked at ${expected.revokedAt} \\(key leaked\\)`));
    assert.equal((await pendingOf(work.id))?.status, "pending", "still pending");
    assert.deepEqual(await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.approval"), [], "no decision recorded");
    assert.deepEqual(await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.publish.v1"), [], "nothing forwarded");

    const approved = await controlRequest(alice, approveAs, { eventId: work.id, despiteRevocation: true }, { caller: "approver-alice" });
    assert.equal(approved.granted, true);
    assert.deepEqual(approved.producerRevoked, expected);
    assert.equal((await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.publish.v1")).length, 1, "granted and forwarded once");
    const [decision] = await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.approval");
    assert.equal((JSON.parse(Buffer.from(decision!.data).toString()) as { despiteRevocation?: boolean }).despiteRevocation, true, "the decision records the confirmation");

    const denied = await controlRequest(alice, denyAs, { eventId: other.id }, { caller: "approver-alice" });
    assert.equal(denied.status, "denied");
    await alice.close();
  });
});
