// Critical handoffs end to end: a report addressed to the critical publish.v1 waits for a human approval given
// with the real `causeway approve` CLI, is granted under a lease, and is published exactly once.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import {
  DecisionKind, ErrorCode, NatsBinding, QuarantineHeader, controlRequest, createEvent, createLogger, decisionEvent, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, startAgent,
  encodeSwitch, formatTime, isCausewayError, switchKey, uuidv7, type Agent, type CloudEvent,
} from "../services/kit/index.ts";
import { approveAs } from "../services/coordinator/contract.ts";
import { Kvm } from "@nats-io/kv";
import { Handoffs, start as startHandoffs } from "../services/coordinator/handoffs.ts";
import { createPublisherDefinition } from "../services/agents/publisher/definition.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startCoordinator } from "./coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { repoRoot, runNats, waitFor } from "./harness/index.ts";
import { revokeTrust } from "../services/kit/ops/index.ts";

const run = promisify(execFile);
const REPORT_SCHEMA = "https://causeway.dev/schemas/report.published/1.0.0";
const quiet = createLogger({ name: "publisher", level: process.env.LOG_LEVEL ?? "silent" });

function policyWith(overrides: Record<string, unknown> = {}) {
  return { capabilities: { "publish.v1": { critical: true, approvals: { count: 1, approvers: ["approver-alice"] }, leaseTtlMs: 60_000, approvalDeadlineMs: 60_000, onDeadline: "quarantine", ...overrides } } };
}

async function handOff(mesh: OperatedMesh, requestId = `req-${uuidv7()}`, expirytime?: string, time = new Date().toISOString()): Promise<CloudEvent> {
  const reporter = await mesh.as("reporter");
  const event = signEvent(createEvent({
    id: uuidv7(), source: "causeway://reporter", type: "report.published", time, subject: requestId,
    datacontenttype: "application/json", dataschema: REPORT_SCHEMA,
    extensions: { traceparent: newTraceparent(), correlationid: requestId, ...(expirytime && { expirytime }) },
    data: JSON.stringify({ requestId, title: "Report: test", complete: true, findingsCount: 1, sections: [{ heading: "Q", body: "A" }] }),
  }), signingKeyFromNkeySeed(readSeed("reporter", mesh.dataDir)));
  const { headers, data } = NatsBinding.binary(event);
  await jetstream(reporter).publish("mesh.handoff.publish.v1", data, { headers, msgID: event.id });
  return event;
}

async function publisher(mesh: OperatedMesh, outboxDir: string): Promise<Agent> {
  const nc = await mesh.as("publisher");
  return startAgent(nc, createPublisherDefinition({ config: { outboxDir } }), {
    trust: mesh.trust, signingKey: signingKeyFromNkeySeed(readSeed("publisher", mesh.dataDir)), log: quiet,
    consumer: { ack_wait: 500_000_000, backoff: [500_000_000, 500_000_000], max_deliver: 3 },
  });
}

function cli(mesh: OperatedMesh, ...args: string[]) {
  return run(join(repoRoot, "node_modules", ".bin", "node"), [join(repoRoot, "services", "cli", "main.ts"), ...args, "--server", mesh.server.url], {
    env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir },
  }).then((r) => ({ code: 0, ...r }), (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }));
}

const decisions = async (mesh: OperatedMesh, kind: string) => (await readMessages(mesh.operator, "MESH_DECISION", `mesh.decision.${kind}`)).map((m) => mesh.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" }));

describe("critical handoffs", () => {
  test("critical - approve with the CLI: the coordinator grants under a lease and the publisher publishes once", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    const outbox = join(mesh.dataDir, "outbox");
    await using pub = await publisher(mesh, outbox);
    const event = await handOff(mesh);
    const [requested] = await waitFor(async () => { const d = await decisions(mesh, "approval_requested"); return d.length > 0 && d; }, { what: "the approval request" });
    assert.equal(requested!.entry.principal, "coordinator");
    assert.equal(pub.stats().processed, 0, "nothing runs before the approval");

    const denied = await cli(mesh, "approve", event.id, "--as", "researcher");
    assert.notEqual(denied.code, 0, "only approvers may approve");

    const ok = await cli(mesh, "approve", event.id, "--as", "approver-alice", "--reason", "looks right");
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /approved .* granted and forwarded/);
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run" });
    assert.equal(readdirSync(outbox).length, 1);
    const [approval] = await decisions(mesh, "approval");
    assert.equal(approval!.entry.principal, "approver-alice", "the approval is signed by the approver's own key");
    const [grant] = await decisions(mesh, "grant");
    const g = JSON.parse(Buffer.from(grant!.event.data).toString()) as { eventId: string; coreDigest: string; approvals: string[]; lease: { revision: number } };
    assert.equal(g.eventId, event.id);
    assert.deepEqual(g.approvals, ["approver-alice"]);
    const [released] = (await readMessages(mesh.operator, "MESH_EVT", "mesh.evt.report.released.v1")).map((m) => mesh.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" }));
    assert.equal(released!.event.extensions.causationid, event.id);
    assert.equal((JSON.parse(Buffer.from(released!.event.data).toString()) as { leaseRevision: number }).leaseRevision, g.lease.revision + 1, "the fencing token is the claimed lease's revision");
    // The forwarded work is the reporter's own signed bytes, unchanged.
    const [forwarded] = await readMessages(mesh.operator, "MESH_CAP", "mesh.cap.publish.v1");
    assert.deepEqual(Buffer.from(forwarded!.data), Buffer.from(NatsBinding.binary(event).data));
    assert.equal(mesh.trust.verify(NatsBinding.toEvent(forwarded!), { receivedAt: "now" }).entry.principal, "reporter");
  });

  test("critical - approved while its capability is paused: the grant is held (no lease runs out during the pause) and given when the pause is lifted", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    const outbox = join(mesh.dataDir, "outbox");
    await using pub = await publisher(mesh, outbox);
    const switches = await new Kvm(await mesh.as("coordinator")).open("causeway_switches");
    const key = switchKey("capability", "publish.v1");
    await switches.put(key, encodeSwitch({ paused: true, reason: "publishing frozen", by: "alice", at: new Date().toISOString(), expires_at: null, decision_id: "test" }));
    const event = await handOff(mesh);
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length > 0, { what: "the approval request" });

    const ok = await cli(mesh, "approve", event.id, "--as", "approver-alice");
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /approved \(1 of 1 approvals\) — not granted yet: capability publish\.v1 is paused: publishing frozen; it is granted when the pause is lifted/);
    assert.deepEqual(await decisions(mesh, "grant"), [], "no grant, so no lease runs out during the pause");
    assert.equal(pub.stats().processed, 0);

    await switches.delete(key);
    await waitFor(async () => (await decisions(mesh, "grant")).length === 1, { what: "the grant once the pause is lifted", timeoutMs: 10_000 });
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run once" });
    assert.equal(readdirSync(outbox).length, 1);
    assert.equal(pub.stats().quarantined, 0, "not quarantined as expired");
  });

  test("critical - work that needs no approval, handed off while its capability is paused: held without spending deliveries, granted when the pause is lifted", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], { capabilities: { "publish.v1": { critical: true, leaseTtlMs: 60_000 } } });
    const outbox = join(mesh.dataDir, "outbox");
    await using pub = await publisher(mesh, outbox);
    const coordinatorNc = await mesh.as("coordinator");
    const switches = await new Kvm(coordinatorNc).open("causeway_switches");
    const key = switchKey("capability", "publish.v1");
    await switches.put(key, encodeSwitch({ paused: true, reason: "publishing frozen", by: "alice", at: new Date().toISOString(), expires_at: null, decision_id: "test" }));
    const event = await handOff(mesh);

    // Recorded as held and the handoff acked: nothing is re-offered against max_deliver while the pause lasts.
    const approvals = await new Kvm(coordinatorNc).open("causeway_approvals");
    const held = await waitFor(async () => {
      for await (const k of await approvals.keys()) {
        const a = (await approvals.get(k))?.json<{ eventId: string; status: string; heldBy?: string }>();
        if (a?.eventId === event.id) return a;
      }
      return undefined;
    }, { what: "the held record" });
    assert.deepEqual([held.status, held.heldBy], ["approved", "capability publish.v1 is paused: publishing frozen"]);
    const jsm = await jetstreamManager(mesh.operator);
    await waitFor(async () => (await jsm.consumers.info("MESH_HANDOFF", "coordinator-handoff")).num_ack_pending === 0, { what: "the handoff acked" });
    assert.equal((await jsm.consumers.info("MESH_HANDOFF", "coordinator-handoff")).num_redelivered, 0);
    assert.deepEqual(await decisions(mesh, "grant"), []);

    await switches.delete(key);
    await waitFor(async () => (await decisions(mesh, "grant")).length === 1, { what: "the grant once the pause is lifted", timeoutMs: 10_000 });
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run once" });
    assert.equal(pub.stats().quarantined, 0);
  });

  test("critical - the producer's key revoked while its work waits for approval: flagged to approvers, refused without --despite-revocation, then run once when approved despite it; new work under the key is refused", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    const outbox = join(mesh.dataDir, "outbox");
    await using pub = await publisher(mesh, outbox);
    // Stamped a few seconds back, so the revocation below (which covers its whole second) is after it.
    const event = await handOff(mesh, undefined, undefined, new Date(Date.now() - 5_000).toISOString());
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length > 0, { what: "the approval request" });
    // A key rotation's last step: the old key is revoked after the work reached the mesh.
    const [revocation] = await revokeTrust(mesh.operator, "reporter", { reason: "rotated" });
    await waitFor(() => mesh.trust.entry(revocation!.keyid)?.revokedAt !== undefined, { what: "the revocation" });
    const warning = `the producer's key ${revocation!.keyid} (reporter) was revoked at ${formatTime(revocation!.revokedAt)} (rotated)`;
    // The coordinator flags the pending approval, and approvers see it.
    const listed = await waitFor(async () => {
      const r = await cli(mesh, "approvals", "--as", "approver-alice");
      return r.stdout.includes(warning) && r;
    }, { what: "the approval flagged in causeway approvals" });
    assert.match(listed.stdout, /approve only with --despite-revocation, or deny it/);
    const refused = await cli(mesh, "approve", event.id, "--as", "approver-alice");
    assert.equal(refused.code, 1);
    assert.ok(refused.stderr.includes(warning), refused.stderr);
    assert.match(refused.stderr, /--despite-revocation.*\(CW_ERR_PRODUCER_KEY_REVOKED\)/);
    assert.deepEqual(await decisions(mesh, "approval"), [], "a refused approval is not recorded");
    assert.equal(pub.stats().processed, 0);

    const ok = await cli(mesh, "approve", event.id, "--as", "approver-alice", "--despite-revocation");
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /granted and forwarded/);
    assert.ok(ok.stdout.includes(`! approved despite the revocation: ${warning}`), ok.stdout);
    const [approval] = await decisions(mesh, "approval");
    assert.equal((JSON.parse(Buffer.from(approval!.event.data).toString()) as { despiteRevocation?: boolean }).despiteRevocation, true, "the approver's signed decision says so");
    // The forward is stored after the revocation, but the work reached the mesh (MESH_HANDOFF) before it.
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run" });
    assert.equal(pub.stats().quarantined, 0);
    assert.equal(readdirSync(outbox).length, 1);

    // Work the revoked key signs now, stamped as if from before the revocation, is refused at the handoff.
    const backdated = await handOff(mesh, `req-${uuidv7()}`, undefined, new Date(revocation!.revokedAt - 60_000).toISOString());
    const entry = await waitFor(async () => (await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.>")).find((m) => m.headers?.get("ce-id") === backdated.id), { what: "the backdated work in quarantine" });
    assert.equal(entry.headers?.get(QuarantineHeader.Reason), "revoked_key");
    assert.match(entry.headers?.get(QuarantineHeader.Detail) ?? "", /reached the mesh at .*whatever time it claims/);
    assert.equal(pub.stats().processed, 1, "it never ran");
  });

  test("critical - an approval racing the deadline sweep of another replica: each work is either granted or expired, never both", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    const outbox = join(mesh.dataDir, "outbox");
    await using pub = await publisher(mesh, outbox);
    const kvm = new Kvm(coordinator.deps.nc);
    // A second replica whose deadline sweep runs as if the deadline had passed, at the moment the approvals land.
    const replica = new Handoffs(coordinator.deps, await kvm.open("causeway_leases"), await kvm.open("causeway_approvals"), () => undefined);
    const events = [];
    for (let i = 0; i < 4; i++) events.push(await handOff(mesh));
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length === events.length, { what: "the approval requests" });
    const alice = await mesh.as("approver-alice");
    // Granted, or refused because the deadline sweep settled it first.
    const approve = (e: CloudEvent) => controlRequest(alice, approveAs, { eventId: e.id }, { caller: "approver-alice" }).then((r) => r.granted, (err: unknown) => {
      assert.ok(isCausewayError(err, ErrorCode.NoPendingApproval), String(err));
      return false;
    });
    const [replies] = await Promise.all([Promise.all(events.map(approve)), replica.expireDue(Date.now() + 3_600_000)]);

    const granted = new Set((await decisions(mesh, "grant")).map((g) => (JSON.parse(Buffer.from(g.event.data).toString()) as { eventId: string }).eventId));
    const expired = new Set((await decisions(mesh, "approval")).map((d) => JSON.parse(Buffer.from(d.event.data).toString()) as { eventId: string; verdict: string }).filter((d) => d.verdict === "expired").map((d) => d.eventId));
    const quarantined = new Set((await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.>")).map((m) => m.headers?.get("ce-id")));
    for (const [i, e] of events.entries()) {
      const g = granted.has(e.id), x = expired.has(e.id), q = quarantined.has(e.id);
      assert.ok(g !== x, `${e.id}: granted ${g}, expired ${x}: exactly one`);
      assert.equal(q, x, `${e.id}: quarantined exactly when expired`);
      assert.equal(replies[i], g, `${e.id}: the approver is told whether it was granted`);
    }
    await waitFor(() => pub.stats().processed === granted.size, { what: "every granted work to run" });
    assert.equal(readdirSync(outbox).length, granted.size);
  });

  test("critical - a settlement claimed by a coordinator that died before acting is finished by the sweep", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const kvm = new Kvm(coordinator.deps.nc);
    const approvals = await kvm.open("causeway_approvals");
    const replica = new Handoffs(coordinator.deps, await kvm.open("causeway_leases"), approvals, () => undefined);
    const event = await handOff(mesh);
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length === 1, { what: "the approval request" });
    const key = await waitFor(async () => { for await (const k of await approvals.keys()) return k; return undefined; }, { what: "the approval" });
    const pending = (await approvals.get(key))!;
    // What a coordinator leaves when it dies right after claiming the approval: approved, decided, never acted.
    const decidedAt = new Date(Date.now() - 31_000).toISOString();
    const claimed = { ...pending.json<Record<string, unknown>>(), status: "approved", approvals: [{ approver: "approver-alice", at: decidedAt }], decidedBy: "approver-alice", decidedAt };
    await approvals.update(key, JSON.stringify(claimed), pending.revision);
    await replica.expireDue();
    await waitFor(() => pub.stats().processed === 1, { what: "the granted work to run" });
    const [grant] = await decisions(mesh, "grant");
    assert.equal((JSON.parse(Buffer.from(grant!.event.data).toString()) as { eventId: string }).eventId, event.id);
    const done = (await approvals.get(key))!.json<{ status: string; actedAt?: string }>();
    assert.equal(done.status, "approved");
    assert.ok(done.actedAt, "recorded as acted");
    await replica.expireDue();
    assert.equal((await decisions(mesh, "grant")).length, 1, "finished once");
  });

  test("critical - an approval signed with a revoked approver key and backdated to before the revocation is refused", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const event = await handOff(mesh);
    const [requested] = await waitFor(async () => { const d = await decisions(mesh, "approval_requested"); return d.length > 0 && d; }, { what: "the approval request" });
    const { coreDigest } = JSON.parse(Buffer.from(requested!.event.data).toString()) as { coreDigest: string };
    // Alice's key has been valid for an hour, so a time before its revocation is inside its window.
    const trustKv = await new Kvm(mesh.operator).open("causeway_trust");
    const aliceKey = signingKeyFromNkeySeed(readSeed("approver-alice", mesh.dataDir));
    const hourAgo = Date.now() - 3_600_000;
    const current = (await trustKv.get(aliceKey.keyid))!;
    await trustKv.put(aliceKey.keyid, JSON.stringify({ ...current.json<Record<string, unknown>>(), not_before: new Date(hourAgo).toISOString().replace(/\.\d+Z$/, "Z") }));
    await waitFor(() => (coordinator.deps.trust.entry(aliceKey.keyid)?.notBefore ?? Infinity) < hourAgo + 1000, { what: "the coordinator to see the longer window" });
    const [revocation] = await revokeTrust(mesh.operator, "approver-alice", { reason: "laptop stolen" });
    await waitFor(() => coordinator.deps.trust.entry(revocation!.keyid)?.revokedAt !== undefined, { what: "the coordinator to see the revocation" });
    const forged = decisionEvent(DecisionKind.Approval, { eventId: event.id, coreDigest, verdict: "approved", approver: "approver-alice" }, {
      principal: "approver-alice", key: aliceKey, about: event, idKey: `approved/${event.id}`,
      now: new Date(revocation!.revokedAt - 120_000),
    });
    const { headers, data } = NatsBinding.binary(forged);
    const reply = await (await mesh.as("approver-alice")).request("mesh.ctl.coordinator.approve", data, { headers, timeout: 10_000 });
    // The control plane's refusal: micro service error headers with the code's status, and the error body.
    assert.equal(reply.headers?.get("Nats-Service-Error-Code"), "403");
    const message = reply.headers?.get("Nats-Service-Error");
    assert.match(message ?? "", /revoked/);
    assert.deepEqual(reply.json(), { error: { code: "CW_ERR_KEY_REVOKED", message } });
    assert.equal((await decisions(mesh, "grant")).length, 0);
    assert.equal(pub.stats().processed, 0);
  });

  test("critical - if announcing the approval request fails, the redelivered handoff announces it (approvers are never left untold)", async () => {
    await using mesh = await startOperatedMesh();
    let failures = 1;
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith(), (subject) => subject === "mesh.decision.approval_requested" && failures-- > 0);
    const event = await handOff(mesh);
    const [requested] = await waitFor(async () => { const d = await decisions(mesh, "approval_requested"); return d.length > 0 && d; }, { what: "the approval request, after the redelivery" });
    assert.equal(failures, -1, "the first announcement failed");
    assert.equal((JSON.parse(Buffer.from(requested!.event.data).toString()) as { eventId: string }).eventId, event.id);
    const pending = await cli(mesh, "approvals", "--as", "approver-alice");
    assert.match(pending.stdout, new RegExp(`${event.id}  publish\\.v1  0/1 approvals`));
  });

  test("critical - if granting fails after the approval, the approval stays pending and a retry grants once", async () => {
    await using mesh = await startOperatedMesh();
    let failures = 1;
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith(), (subject) => subject === "mesh.cap.publish.v1" && failures-- > 0);
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const event = await handOff(mesh);
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length === 1, { what: "the approval request" });
    const first = await cli(mesh, "approve", event.id, "--as", "approver-alice");
    assert.equal(first.code, 1, "the forward failed, so the approval is not reported done");
    // An error without a code is answered as CW_ERR_INTERNAL, without its text (the coordinator's log has it).
    assert.match(first.stderr, /internal error in coordinator approve; its log has the details \(CW_ERR_INTERNAL\)/);
    assert.doesNotMatch(first.stderr, /injected failure/);
    const pending = await cli(mesh, "approvals", "--as", "approver-alice");
    // The completing approval is recorded only once its grant succeeds.
    assert.match(pending.stdout, new RegExp(`${event.id}  publish\\.v1  0/1 approvals`), "still pending");
    const second = await cli(mesh, "approve", event.id, "--as", "approver-alice");
    assert.equal(second.code, 0, second.stderr);
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run" });
    assert.equal((await decisions(mesh, "grant")).length, 1, "one grant, though granting ran twice");
    assert.equal((await decisions(mesh, "approval")).length, 1, "the approver's decision is stored once, though sent twice");
    assert.equal((await cli(mesh, "approvals", "--as", "approver-alice")).stdout.trim(), "no approvals pending");
  });

  test("critical - retried after the grant's decision failed to publish: the grant states the expiry the lease has, and the approval records the reason MESH_DECISION keeps", async () => {
    await using mesh = await startOperatedMesh();
    let failures = 1;
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith(), (subject) => subject === "mesh.decision.grant" && failures-- > 0);
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const event = await handOff(mesh);
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length === 1, { what: "the approval request" });
    // The first try stores the approver's decision and the lease, then fails on the grant's decision.
    const first = await cli(mesh, "approve", event.id, "--as", "approver-alice", "--reason", "checked the draft");
    assert.equal(first.code, 1, first.stderr);
    // The retry comes later, and its approver words the reason differently.
    const second = await cli(mesh, "approve", event.id, "--as", "approver-alice", "--reason", "checked it twice");
    assert.equal(second.code, 0, second.stderr);
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run" });

    const [grant] = await decisions(mesh, "grant");
    const granted = JSON.parse(Buffer.from(grant!.event.data).toString()) as { lease: { key: string; expiresAt: string } };
    const lease = (await (await new Kvm(mesh.operator).open("causeway_leases")).get(granted.lease.key))!.json<{ expiresAt: string }>();
    assert.equal(granted.lease.expiresAt, lease.expiresAt, "one grant id, one expiry: the lease's");

    const [approval] = await decisions(mesh, "approval");
    assert.equal((JSON.parse(Buffer.from(approval!.event.data).toString()) as { reason?: string }).reason, "checked the draft", "MESH_DECISION keeps the first try's decision");
    const approvals = await new Kvm(await mesh.as("approver-alice")).open("causeway_approvals");
    const recorded = [];
    for await (const key of await approvals.keys()) recorded.push((await approvals.get(key))!.json<{ eventId: string; approvals: { reason?: string }[] }>());
    const mine = recorded.find((a) => a.eventId === event.id)!;
    assert.deepEqual(mine.approvals.map((a) => a.reason), ["checked the draft"], "the approval records what MESH_DECISION holds");
  });

  test("critical - an approver approves with a plain nats req on its own subject; no one else can use it", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const event = await handOff(mesh);
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length === 1, { what: "the approval request" });
    const body = JSON.stringify({ eventId: event.id, reason: "fine by me" });
    // Not another principal, and not the operator either: running the mesh is not approving its critical work.
    for (const who of ["researcher", "operator"]) {
      const stranger = await runNats(["--inbox-prefix", `_INBOX_${who}`, "req", "--timeout", "1s", "mesh.ctl.coordinator.approve.approver-alice", body], { server: mesh.server.url, nkey: join(mesh.dataDir, "keys", `${who}.nk`) });
      // The server drops the stranger's publish, so no reply ever comes (`nats req` still exits 0).
      assert.doesNotMatch(stranger.stdout + stranger.stderr, /Received/, who);
    }
    assert.equal((await decisions(mesh, "approval")).length, 0, "no stranger approved anything");
    const res = await runNats(["--inbox-prefix", "_INBOX_approver-alice", "req", "mesh.ctl.coordinator.approve.approver-alice", body], { server: mesh.server.url, nkey: join(mesh.dataDir, "keys", "approver-alice.nk") });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /"status":"approved","granted":true/);
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run" });
    const [approval] = await decisions(mesh, "approval");
    const data = JSON.parse(Buffer.from(approval!.event.data).toString()) as { approver: string; via: string; reason: string };
    assert.deepEqual({ approver: data.approver, via: data.via, reason: data.reason }, { approver: "approver-alice", via: "request", reason: "fine by me" });
    assert.equal(approval!.entry.principal, "coordinator", "signed by the coordinator on the approver's behalf");
  });

  test("critical - deny with the CLI: the work is quarantined and never runs", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const event = await handOff(mesh);
    await waitFor(async () => (await decisions(mesh, "approval_requested")).length === 1, { what: "the approval request" });
    const res = await cli(mesh, "deny", event.id, "--as", "approver-alice", "--reason", "not ready");
    assert.equal(res.code, 0, res.stderr);
    const [q] = await waitFor(async () => { const m = await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.>"); return m.length > 0 && m; }, { what: "the quarantine entry" });
    assert.equal(q!.headers?.get(QuarantineHeader.Reason), "policy_denied");
    assert.match(q!.headers?.get(QuarantineHeader.Detail) ?? "", /denied by approver-alice: not ready/);
    assert.equal(pub.stats().processed, 0);
    assert.equal((await cli(mesh, "approve", event.id, "--as", "approver-alice")).code, 1, "a decided approval cannot be approved");
  });

  test("critical - an approval past its deadline is quarantined as approval_timeout with a signed expiry", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith({ approvalDeadlineMs: 1_000 }));
    const event = await handOff(mesh);
    const [q] = await waitFor(async () => { const m = await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.approval_timeout.publish"); return m.length > 0 && m; }, { what: "the timeout", timeoutMs: 10_000 });
    assert.equal(NatsBinding.toEvent(q!).id, event.id);
    const [expired] = await decisions(mesh, "approval");
    assert.equal((JSON.parse(Buffer.from(expired!.event.data).toString()) as { verdict: string }).verdict, "expired");
    assert.equal(expired!.entry.principal, "coordinator");
  });

  test("critical - a deadline with escalation widens the approvers once; the escalated approver's approval grants", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith({
      approvalDeadlineMs: 1_000, onDeadline: "escalate", escalation: { approvers: ["approver-bob"], deadlineMs: 60_000 },
    }));
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const event = await handOff(mesh);
    const requests = await waitFor(async () => { const d = await decisions(mesh, "approval_requested"); return d.length === 2 && d; }, { what: "the escalated request", timeoutMs: 10_000 });
    const escalated = JSON.parse(Buffer.from(requests[1]!.event.data).toString()) as { approvers: string[]; summary: string };
    assert.deepEqual(escalated.approvers, ["approver-alice", "approver-bob"]);
    assert.match(escalated.summary, /^escalated/);
    const ok = await cli(mesh, "approve", event.id, "--as", "approver-bob");
    assert.equal(ok.code, 0, ok.stderr);
    await waitFor(() => pub.stats().processed === 1, { what: "the publisher to run" });
    assert.equal((await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.>")).length, 0, "escalation, not quarantine, at the first deadline");
  });

  test("critical - an approval whose work expires is cancelled: signed, and the work quarantined as expired", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], policyWith());
    const event = await handOff(mesh, undefined, new Date(Date.now() + 1_500).toISOString());
    const [q] = await waitFor(async () => { const m = await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.expired.publish"); return m.length > 0 && m; }, { what: "the cancellation", timeoutMs: 10_000 });
    assert.equal(NatsBinding.toEvent(q!).id, event.id);
    const [cancelled] = await decisions(mesh, "approval");
    assert.match((JSON.parse(Buffer.from(cancelled!.event.data).toString()) as { reason: string }).reason, /^cancelled: the work expired/);
    assert.notEqual((await cli(mesh, "approve", event.id, "--as", "approver-alice")).code, 0, "nothing is left to approve");
  });

  test("critical - two publisher replicas and a forced redelivery: the action runs once", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startHandoffs], { capabilities: { "publish.v1": { critical: true, leaseTtlMs: 60_000 } } });
    const outbox = join(mesh.dataDir, "outbox");
    await using a = await publisher(mesh, outbox);
    await using b = await publisher(mesh, outbox);
    const event = await handOff(mesh);
    await waitFor(() => a.stats().processed + b.stats().processed === 1, { what: "the grant to run" });
    // The coordinator forwards the same granted bytes again (a redelivery, or a second coordinator).
    const coordinator = await mesh.as("coordinator");
    const { headers, data } = NatsBinding.binary(event);
    await jetstream(coordinator).publish("mesh.cap.publish.v1", data, { headers, msgID: `again/${event.id}` });
    await waitFor(() => a.stats().replays + b.stats().replays === 1, { what: "the duplicate to be absorbed" });
    assert.equal(a.stats().processed + b.stats().processed, 1);
    assert.equal(readdirSync(outbox).length, 1);
    assert.equal((await readMessages(mesh.operator, "MESH_EVT", "mesh.evt.report.released.v1")).length, 1);
  });

  test("critical - work forwarded without a grant is quarantined by the critical agent, never run", async () => {
    await using mesh = await startOperatedMesh();
    await using pub = await publisher(mesh, join(mesh.dataDir, "outbox"));
    const event = await handOff(mesh); // no coordinator: it stays in MESH_HANDOFF
    const coordinator = await mesh.as("coordinator");
    const { headers, data } = NatsBinding.binary(event);
    await jetstream(coordinator).publish("mesh.cap.publish.v1", data, { headers, msgID: event.id });
    await waitFor(() => pub.stats().quarantined === 1, { what: "the refusal" });
    const [q] = await readMessages(mesh.operator, "MESH_QUARANTINE", "mesh.quarantine.>");
    assert.equal(q!.headers?.get(QuarantineHeader.Code), "CW_ERR_NO_GRANT");
    assert.equal(pub.stats().processed, 0);
  });
});
