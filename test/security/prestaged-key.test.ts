// Issue 12, finding 10: a stolen pre-staged key could sign future-dated events. A key seeded ahead of a
// rotation has a window that starts later; its signed-time check alone accepted an event stamped inside that
// future window, so whoever stole the key before the rotation could sign such events and have them accepted
// now. The time the mesh received a message, which a thief cannot choose, must also be inside the window
// (less KEY_NOT_BEFORE_SKEW_MS of clock skew at the start): CW_ERR_KEY_NOT_VALID otherwise.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createUser } from "@nats-io/nkeys";
import {
  ErrorCode, KEY_NOT_BEFORE_SKEW_MS, QuarantineHeader, QuarantineReason, VerificationError, createEvent, createLogger, loadPrincipals, signEvent,
  signingKeyFromNkeySeed, startAgent, uuidv7, type CloudEvent, type SigningKey,
} from "../../services/kit/index.ts";
import { seedTrustStore, trustEntriesFromPrincipals } from "../../services/kit/ops/index.ts";
import { RESEARCH, TASK_SCHEMA, header, recordingResearcher, startMesh, type Mesh } from "../mesh-fixture.ts";
import { waitFor } from "../harness/index.ts";

const log = createLogger({ name: "prestaged-key", level: process.env.LOG_LEVEL ?? "silent" });
const principals = loadPrincipals();

/** Seeds a second key of the planner, valid from `notBefore` (a rotation staged ahead), and waits for the store to see it. */
async function prestage(mesh: Mesh, notBefore: number): Promise<SigningKey> {
  const key = signingKeyFromNkeySeed(createUser().getSeed());
  const publicKeys = { ...Object.fromEntries(Object.entries(mesh.keys).map(([n, k]) => [n, k.keyid])), planner: key.keyid };
  const [record] = trustEntriesFromPrincipals(principals, publicKeys, { now: notBefore }).filter((r) => r.principal === "planner");
  await seedTrustStore(mesh.nc, [record!]);
  await waitFor(() => mesh.trust.entry(key.keyid), { what: "the pre-staged key" });
  return key;
}

/** A research task signed by `key` as the planner, stamped `at`. */
function task(key: SigningKey, at: number, query: string): CloudEvent {
  const id = uuidv7();
  return signEvent(createEvent({
    id, source: "causeway://planner", type: "research.task.created", time: new Date(at).toISOString(),
    datacontenttype: "application/json", dataschema: TASK_SCHEMA, extensions: { correlationid: id },
    data: JSON.stringify({ requestId: id, taskIndex: 0, totalTasks: 1, query }),
  }), key);
}



describe("pre-staged keys", () => {
  test("pre-staged key - an event stamped inside the key's future window and received now is refused with CW_ERR_KEY_NOT_VALID; within the clock-skew allowance it verifies", async () => {
    await using mesh = await startMesh();
    const hour = 3_600_000;
    const future = Date.now() + hour;
    const stolen = await prestage(mesh, future);
    const forged = task(stolen, future + 60_000, "stamped inside the future window");
    assert.throws(() => mesh.trust.verify(forged, { receivedAt: "now" }), (err: unknown) =>
      err instanceof VerificationError && err.code === ErrorCode.KeyNotValid && err.reason === QuarantineReason.UnknownKey &&
      /is valid from .*reached the mesh at .*whatever time it claims/.test(err.message));
    // Once the window has started (a message read back from a stream later), the same event verifies.
    assert.equal(mesh.trust.verify(forged, { receivedAt: future + 61_000 }).entry.keyid, stolen.keyid);
    // A little clock skew at a rotation is allowed: received up to KEY_NOT_BEFORE_SKEW_MS before the window starts.
    const startSecond = Math.floor(future / 1000) * 1000; // entry times count whole seconds
    const atStart = task(stolen, startSecond, "stamped at the start of the window");
    assert.equal(mesh.trust.verify(atStart, { receivedAt: startSecond - KEY_NOT_BEFORE_SKEW_MS }).entry.keyid, stolen.keyid);
    assert.throws(() => mesh.trust.verify(atStart, { receivedAt: startSecond - KEY_NOT_BEFORE_SKEW_MS - 1 }),
      (err: unknown) => err instanceof VerificationError && err.code === ErrorCode.KeyNotValid);
  });

  test("pre-staged key - a task the thief signs with the planner's pre-staged key, stamped in its future window, is quarantined by the researcher and never handled", async () => {
    await using mesh = await startMesh();
    const future = Date.now() + 3_600_000;
    const stolen = await prestage(mesh, future);
    const forged = task(stolen, future + 60_000, "forged");
    const genuine = task(mesh.keys.planner!, Date.now(), "genuine");
    await mesh.publish(RESEARCH, forged);
    await mesh.publish(RESEARCH, genuine);

    const def = recordingResearcher();
    await using agent = await startAgent(mesh.nc, def, { trust: mesh.trust, signingKey: mesh.keys.researcher!, log });
    await waitFor(() => agent.stats().processed === 1 && agent.stats().quarantined === 1, { what: "the genuine task handled and the forgery quarantined" });
    assert.deepEqual(def.handled, [genuine.id], "the forgery never reached the handler");
    const [q] = await mesh.messages("MESH_QUARANTINE", "mesh.quarantine.>");
    assert.ok(q, "the forgery's bytes are kept");
    assert.equal(q.subject, `mesh.quarantine.${QuarantineReason.UnknownKey}.research`);
    assert.equal(header(q, QuarantineHeader.Code), ErrorCode.KeyNotValid);
    assert.match(header(q, QuarantineHeader.Detail)!, new RegExp(`key ${stolen.keyid} of planner is valid from .*whatever time it claims`));
  });
});
