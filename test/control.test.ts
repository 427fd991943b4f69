// The control plane's contract on an operated mesh: the refusal shape of each service's endpoints (micro error
// headers with the table's status, and the error body), CW_ERR_INTERNAL without internals, CW_ERR_UNAVAILABLE
// when nobody answers, and replies that go only to the requester's own inbox.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Svcm } from "@nats-io/services";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import {
  CausewayError, ErrorCode, addControlEndpoint, agentStatsEndpoint, controlRequest, createLogger, isCausewayError, readSeed, signingKeyFromNkeySeed,
  statusOf, subjectsFor, type ControlErrorBody,
} from "../services/kit/index.ts";
import { approveAs } from "../services/coordinator/contract.ts";
import { createLineageApi } from "../services/lineage/api.ts";
import { lineageEndpoint } from "../services/lineage/contract.ts";
import { addLineageEndpoints } from "../services/lineage/endpoints.ts";
import { openSqliteStore } from "../services/lineage/store-sqlite.ts";
import { startCoordinator } from "./coordinator-fixture.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { waitFor } from "./harness/index.ts";

/** A logger whose JSON lines are collected. */
function captured(name: string): { log: ReturnType<typeof createLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const log = createLogger({ name, level: "debug", destination: { write: (line: string) => { lines.push(JSON.parse(line) as Record<string, unknown>); } } });
  return { log, lines };
}

/** Lineage's endpoints in-process, as the lineage principal, over an empty SQLite store. */
async function startLineageEndpoints(mesh: OperatedMesh): Promise<AsyncDisposable> {
  const dir = mkdtempSync(join(tmpdir(), "causeway-control-"));
  const store = openSqliteStore(join(dir, "lineage.db"));
  const api = createLineageApi({ store, publicKey: signingKeyFromNkeySeed(readSeed("lineage", mesh.dataDir)), published: async () => [] });
  const nc = await mesh.as("lineage");
  const service = await new Svcm(nc).add({ name: "lineage", version: "1.0.0" });
  const endpoints = addLineageEndpoints(service, api, subjectsFor(), createLogger({ name: "lineage", level: "silent" }));
  await nc.flush(); // the endpoints' subscriptions are on the server before a test asks from another connection
  return {
    async [Symbol.asyncDispose]() {
      await endpoints.stop();
      await service.stop();
      await store[Symbol.asyncDispose]();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A raw request; the refusal's status header, message header and body. */
async function refusal(nc: NatsConnection, subject: string, body: string): Promise<{ status: number; message: string | undefined; body: ControlErrorBody }> {
  const msg = await nc.request(subject, body, { timeout: 10_000 });
  return { status: Number(msg.headers?.get("Nats-Service-Error-Code")), message: msg.headers?.get("Nats-Service-Error"), body: msg.json<ControlErrorBody>() };
}

describe("control plane", () => {
  test("control - lineage refuses a bad question with the error headers, the table's status and the error body", async () => {
    await using mesh = await startOperatedMesh();
    await using _lineage = await startLineageEndpoints(mesh);
    const auditor = await mesh.as("auditor");
    const missing = await refusal(auditor, "mesh.ctl.lineage.why", "{}");
    assert.deepEqual(missing, { status: 400, message: 'missing parameter "id"', body: { error: { code: "CW_ERR_LINEAGE_QUERY", message: 'missing parameter "id"' } } });
    const notJson = await refusal(auditor, "mesh.ctl.lineage.why", "[1]");
    assert.deepEqual([notJson.status, notJson.body.error.code], [400, "CW_ERR_LINEAGE_QUERY"]);
    const unknown = await refusal(auditor, "mesh.ctl.lineage.why", JSON.stringify({ id: "no-such-event" }));
    assert.deepEqual([unknown.status, unknown.body.error.code, unknown.message], [404, "CW_ERR_LINEAGE_NOT_FOUND", unknown.body.error.message]);
    // The typed client throws the same code and message.
    const err = await controlRequest(auditor, lineageEndpoint("why"), { id: "no-such-event" }).then(() => undefined, (e: unknown) => e);
    assert.ok(isCausewayError(err, ErrorCode.LineageNotFound), String(err));
    assert.equal(err.message, unknown.body.error.message);
    // A success is the reply itself.
    assert.deepEqual(await controlRequest(auditor, lineageEndpoint("checkpoints"), {}), []);
  });

  test("control - an error without a code is answered as CW_ERR_INTERNAL (500) without its text; the log has it", async () => {
    await using mesh = await startOperatedMesh();
    const { log, lines } = captured("planner");
    const planner = await mesh.as("planner");
    const service = await new Svcm(planner).add({ name: "planner", version: "1.0.0" });
    const served = addControlEndpoint(service, agentStatsEndpoint("planner"), {
      subjects: subjectsFor(), log, handle: () => Promise.reject(new Error("connect ECONNREFUSED 10.0.0.7:5432 (password=hunter2)")),
    });
    await planner.flush(); // the endpoint's subscription is on the server before anyone asks
    try {
      const r = await refusal(mesh.operator, "mesh.ctl.planner.stats", "");
      const message = "internal error in planner stats; its log has the details";
      assert.deepEqual(r, { status: 500, message, body: { error: { code: "CW_ERR_INTERNAL", message } } });
      assert.equal(statusOf(ErrorCode.Internal), 500);
      const logged = lines.find((l) => l.msg === "control request failed");
      assert.match(String((logged?.err as { message?: string } | undefined)?.message), /hunter2/, "the log keeps the error");
    } finally {
      await served.stop();
      await service.stop();
    }
  });

  test("control - an agent's stats through the contract; a stopping endpoint answers CW_ERR_UNAVAILABLE (503)", async () => {
    await using mesh = await startOperatedMesh();
    const planner = await mesh.as("planner");
    const service = await new Svcm(planner).add({ name: "planner", version: "1.0.0" });
    const stats = { processed: 3, failed: 1, quarantined: 0, replays: 0, inFlight: 0, handlerMeanMs: 2, handlerMaxMs: 5 };
    const served = addControlEndpoint(service, agentStatsEndpoint("planner"), { subjects: subjectsFor(), log: createLogger({ name: "planner", level: "silent" }), handle: () => Promise.resolve(stats) });
    await planner.flush(); // the endpoint's subscription is on the server before anyone asks
    try {
      assert.deepEqual(await controlRequest(mesh.operator, agentStatsEndpoint("planner"), {}), stats);
      await served.stop();
      const r = await refusal(mesh.operator, "mesh.ctl.planner.stats", "");
      assert.deepEqual([r.status, r.body.error.code], [503, "CW_ERR_UNAVAILABLE"]);
    } finally {
      await service.stop();
    }
  });

  test("control - nobody answering is CW_ERR_UNAVAILABLE naming the service and subject, for no responders and for a timeout", async () => {
    await using mesh = await startOperatedMesh();
    const auditor = await mesh.as("auditor");
    const none = await controlRequest(auditor, lineageEndpoint("stats"), {}).then(() => undefined, (e: unknown) => e);
    assert.ok(none instanceof CausewayError && none.code === ErrorCode.Unavailable, String(none));
    assert.equal(none.message, "no lineage service is answering on mesh.ctl.lineage.stats: is it running?");
    // Something listens on the subject but never answers.
    const lineage = await mesh.as("lineage");
    const mute = lineage.subscribe("mesh.ctl.lineage.verify", { callback: () => undefined });
    await lineage.flush();
    try {
      const late = await controlRequest(auditor, lineageEndpoint("verify"), {}, { timeout: 300 }).then(() => undefined, (e: unknown) => e);
      assert.ok(late instanceof CausewayError && late.code === ErrorCode.Unavailable, String(late));
      assert.equal(late.message, "the lineage service did not answer on mesh.ctl.lineage.verify within 300 ms");
    } finally {
      mute.unsubscribe();
    }
  });

  test("control - a per-caller request answered into another principal's inbox is not run", async () => {
    await using mesh = await startOperatedMesh();
    await using coordinator = await startCoordinator(mesh, []);
    const { log, lines } = captured("coordinator");
    const ran: string[] = [];
    const served = addControlEndpoint(coordinator.deps.service, approveAs, {
      subjects: subjectsFor(), log, handle: (req) => {
        ran.push(req.eventId);
        return Promise.reject(new CausewayError(ErrorCode.NoPendingApproval, `no approval is pending for event ${req.eventId}`));
      },
    });
    const alice = await mesh.as("approver-alice");
    const seen: Msg[] = [];
    const operatorInbox = mesh.operator.subscribe("_INBOX_operator.stolen", { callback: (_err, m) => { seen.push(m); } });
    await mesh.operator.flush();
    try {
      // Alice may publish on her own subject; the reply subject is the operator's inbox.
      alice.publish("mesh.ctl.coordinator.approve.approver-alice", JSON.stringify({ eventId: "e-1" }), { reply: "_INBOX_operator.stolen" });
      await alice.flush();
      const refused = await waitFor(() => lines.find((l) => l.code === ErrorCode.ReplyRefused), { what: "the refusal in the log" });
      assert.deepEqual(
        { level: refused.level, requester: refused.requester, subject: refused.subject, reply: refused.reply },
        { level: "warn", requester: "approver-alice", subject: "mesh.ctl.coordinator.approve.approver-alice", reply: "_INBOX_operator.stolen" },
      );
      await mesh.operator.flush();
      assert.deepEqual(seen, [], "nothing was answered into the operator's inbox");
      assert.deepEqual(ran, [], "nothing ran");
      // Into alice's own inbox it runs.
      const own = await controlRequest(alice, approveAs, { eventId: "e-1" }, { caller: "approver-alice" }).then(() => undefined, (e: unknown) => e);
      assert.ok(isCausewayError(own, ErrorCode.NoPendingApproval), String(own));
      assert.deepEqual(ran, ["e-1"]);
    } finally {
      operatorInbox.unsubscribe();
      await served.stop();
    }
  });
});
