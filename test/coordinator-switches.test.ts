// Kill switches on a mesh with the rendered least-privilege accounts: the coordinator's module in-process (its
// own identity), the reference planner in-process as `planner`, requests as the operator — through the
// `causeway` command, the real `nats` CLI, and a plain NATS request.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { PerformanceObserver } from "node:perf_hooks";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Svcm, type Service } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  CausewayError, ErrorCode, KvBucket, NatsBinding, createEvent, capabilityDurable, createLogger, createSchemaRegistry, decisionSchema, loadPrincipals, newTraceparent, openTrustStore, readSeed, seedPath, signEvent, signingKeyFromNkeySeed, startAgent, startRouter, subjectsFor, defaultLayout, uuidv7, type Agent, type TrustStore, MESH_TARGET, PAUSED_UNTIL_RESUMED, encodeSwitch, parseSwitch, parseSwitchKey, switchKey, watchSwitches, type SwitchValue,
} from "../services/kit/index.ts";
import type { SwitchReply, SwitchStatusReply } from "../services/coordinator/contract.ts";
import { createPlannerDefinition } from "../services/agents/planner/definition.ts";
import { readMessages } from "../services/cli/flow.ts";
import { run as runSwitchCommand } from "../services/cli/commands/switch.ts";
import { loadPolicy } from "../services/coordinator/policy.ts";
import type { CoordinatorDeps, CoordinatorModule } from "../services/coordinator/module.ts";
import { EXPIRED_REASON, start } from "../services/coordinator/switches.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { runNats, runNatsJson, waitFor } from "./harness/index.ts";

const REQUEST_SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
const SWITCH_SCHEMA = decisionSchema("switch");
const quiet = (name: string) => createLogger({ name, level: process.env.LOG_LEVEL ?? "silent" });

interface SwitchDecision {
  id: string;
  principal: string;
  data: { action: "pause" | "resume"; scope: string; target: string; reason: string; operator: string; principal?: string; expiresAt?: string };
}

/** A running coordinator replica: its own connection, trust store, micro service and switches module. */
interface Replica {
  readonly deps: CoordinatorDeps;
  readonly module: CoordinatorModule;
  stop(): Promise<void>;
}

interface SwitchMesh extends AsyncDisposable {
  readonly mesh: OperatedMesh;
  readonly coordinator: Replica;
  /** `nats` CLI connection options as the operator (pass `--inbox-prefix _INBOX_operator` first). */
  readonly cli: { server: string; nkey: string };
  /** Another coordinator replica (same identity, own connection and service instance); `lines` collects its log. */
  replica(lines?: string[]): Promise<Replica>;
  /** A request to mesh.ctl.coordinator.<action> as the operator: the reply, or the refusal as a CausewayError. */
  request<T = SwitchReply>(action: string, body: unknown): Promise<T>;
  /** The reference planner, in-process as `planner`. */
  planner(): Promise<Agent>;
  /** Publishes `n` signed report.requested inputs to plan.v1, as the gateway. */
  requestReports(n: number): Promise<void>;
  /** Every decision.switch on MESH_DECISION, verified with the coordinator's trust store. */
  decisions(): Promise<SwitchDecision[]>;
  /** cap-plan-v1 as the server reports it. */
  planConsumer(): Promise<{ paused: boolean; num_pending: number; num_ack_pending: number; delivered: number }>;
}

async function startReplica(mesh: OperatedMesh, lines?: string[]): Promise<Replica> {
  const nc = await mesh.as("coordinator");
  const trust = await openTrustStore(nc);
  const service: Service = await new Svcm(nc).add({ name: "coordinator", version: "1.0.0", description: "test coordinator" });
  const deps: CoordinatorDeps = {
    nc, js: jetstream(nc), jsm: await jetstreamManager(nc), trust, key: signingKeyFromNkeySeed(readSeed("coordinator", mesh.dataDir)),
    principal: "coordinator", layout: defaultLayout(), subjects: defaultLayout().subjects, schemas: createSchemaRegistry(),
    policy: { policy: () => loadPolicy(loadPrincipals()), close() {} }, service,
    log: lines ? createLogger({ name: "coordinator", level: "debug", destination: { write: (line: string) => { lines.push(line); } } }) : quiet("coordinator"),
    router: await startRouter(nc, defaultLayout().subjects, { log: quiet("router") }),
  };
  const module = await start(deps);
  await nc.flush(); // its endpoints are on the server before a test asks
  let stopped: Promise<void> | undefined;
  return {
    deps, module,
    stop: () => (stopped ??= (async () => {
      await module.stop();
      await service.stop().catch(() => undefined);
      await trust.close();
    })()),
  };
}

async function startSwitchMesh(): Promise<SwitchMesh> {
  const mesh = await startOperatedMesh();
  const replicas: Replica[] = [];
  const agents: Agent[] = [];
  const trusts: TrustStore[] = [];
  const coordinator = await startReplica(mesh);
  replicas.push(coordinator);
  const gateway = await mesh.as("gateway");
  const gatewayKey = signingKeyFromNkeySeed(readSeed("gateway", mesh.dataDir));
  const jsm = await jetstreamManager(mesh.operator);
  return {
    mesh, coordinator,
    cli: { server: mesh.server.url, nkey: seedPath("operator", mesh.dataDir) },
    async replica(lines) {
      const r = await startReplica(mesh, lines);
      replicas.push(r);
      return r;
    },
    async request<T>(action: string, body: unknown): Promise<T> {
      const msg = await mesh.operator.request(subjectsFor().control("coordinator", action), typeof body === "string" ? body : JSON.stringify(body), { timeout: 10_000 });
      const reply = msg.json<T & { error?: { code: typeof ErrorCode.SwitchInvalid; message: string } }>();
      if (reply.error) throw new CausewayError(reply.error.code, reply.error.message);
      return reply;
    },
    async planner() {
      const nc = await mesh.as("planner");
      const trust = await openTrustStore(nc);
      trusts.push(trust);
      const agent = await startAgent(nc, createPlannerDefinition(), { trust, signingKey: signingKeyFromNkeySeed(readSeed("planner", mesh.dataDir)), log: quiet("planner") });
      agents.push(agent);
      return agent;
    },
    async requestReports(n) {
      const js = jetstream(gateway);
      for (let i = 0; i < n; i++) {
        const event = signEvent(createEvent({
          id: uuidv7(), source: "causeway://gateway", type: "report.requested", time: new Date().toISOString(),
          datacontenttype: "application/json", dataschema: REQUEST_SCHEMA, extensions: { traceparent: newTraceparent() },
          data: JSON.stringify({ topic: `Kill switches ${i}`, requester: "ops@example.com", questions: ["Why pause?"] }),
        }), gatewayKey);
        const { headers, data } = NatsBinding.binary(event);
        await js.publish("mesh.cap.plan.v1", data, { headers, msgID: event.id });
      }
    },
    async decisions() {
      return (await readMessages(mesh.operator, "MESH_DECISION", "mesh.decision.switch")).map((m) => {
        const v = coordinator.deps.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" });
        assert.equal(v.event.type, "decision.switch");
        assert.equal(v.event.dataschema, SWITCH_SCHEMA);
        assert.equal(v.event.source, "causeway://coordinator");
        const data = JSON.parse(Buffer.from(v.event.data).toString("utf8")) as SwitchDecision["data"];
        coordinator.deps.schemas.validate(SWITCH_SCHEMA, data);
        return { id: v.event.id, principal: v.entry.principal, data };
      });
    },
    async planConsumer() {
      const info = await jsm.consumers.info("MESH_CAP", "cap-plan-v1");
      return { paused: info.paused === true, num_pending: info.num_pending, num_ack_pending: info.num_ack_pending, delivered: info.delivered.consumer_seq };
    },
    async [Symbol.asyncDispose]() {
      for (const a of agents) await a.stop().catch(() => undefined);
      for (const t of trusts) await t.close().catch(() => undefined);
      for (const r of replicas) await r.stop().catch(() => undefined);
      await mesh[Symbol.asyncDispose]();
    },
  };
}

/** `nats consumer info --json` as the operator. */
async function consumerInfo(s: SwitchMesh, stream: string, name: string) {
  return runNatsJson<{ paused?: boolean; pause_remaining?: number; num_pending: number; num_ack_pending: number; config: { pause_until?: string } }>(
    ["--inbox-prefix", "_INBOX_operator", "consumer", "info", stream, name, "--json"], s.cli);
}

async function refusal(p: Promise<unknown>): Promise<CausewayError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof CausewayError, `expected a refusal, got ${String(err)}`);
  return err;
}

const pauseBody = (target: string, extra: Record<string, unknown> = {}) => ({ scope: "capability", target, reason: "planner emits junk tasks", operator: "alice", ...extra });

describe("kill switches", () => {
  test("switches - pausing a capability pauses its consumer; inputs stay pending until resume processes them", async () => {
    await using s = await startSwitchMesh();
    const agent = await s.planner();
    const paused = await s.request("pause", pauseBody("plan.v1"));
    assert.equal(paused.paused, true);
    assert.equal(paused.key, "capability.plan_v1");
    assert.equal(paused.expires_at, null);
    assert.deepEqual(paused.consumers, [{ stream: "MESH_CAP", name: "cap-plan-v1", paused: true, pause_until: PAUSED_UNTIL_RESUMED }]);

    // The operator's own view, with the real CLI: the server has paused the shared consumer.
    const text = await runNats(["--inbox-prefix", "_INBOX_operator", "consumer", "info", "MESH_CAP", "cap-plan-v1"], s.cli);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /Paused Until: 2199-12-31/);
    assert.equal((await consumerInfo(s, "MESH_CAP", "cap-plan-v1")).paused, true);

    const before = await s.planConsumer();
    await s.requestReports(3);
    await waitFor(async () => (await s.planConsumer()).num_pending === 3, { what: "three inputs pending on the paused consumer" });
    // Still pending after a round trip through the CLI: nothing was delivered, nothing handled.
    const after = await consumerInfo(s, "MESH_CAP", "cap-plan-v1");
    assert.equal(after.num_pending, 3);
    assert.equal(after.num_ack_pending, 0);
    assert.equal((await s.planConsumer()).delivered, before.delivered);
    assert.equal(agent.stats().processed, 0);

    const resumed = await s.request("resume", { scope: "capability", target: "plan.v1", reason: "fixed", operator: "alice" });
    assert.equal(resumed.paused, false);
    assert.deepEqual(resumed.consumers, [{ stream: "MESH_CAP", name: "cap-plan-v1", paused: false, pause_until: null }]);
    // Delivery resumes with the agent's next pull (its pulls expire every 5 s).
    await waitFor(() => agent.stats().processed === 3, { what: "the three inputs processed after resume" });
    assert.equal((await consumerInfo(s, "MESH_CAP", "cap-plan-v1")).paused ?? false, false);
  });

  test("switches - consumption stops within a second of the pause reply", async () => {
    await using s = await startSwitchMesh();
    const agent = await s.planner();
    await s.requestReports(1);
    await waitFor(() => agent.stats().processed === 1, { what: "the agent to consume before the pause" });
    const t0 = performance.now();
    await s.request("pause", pauseBody("plan.v1"));
    const elapsed = performance.now() - t0;
    assert.ok((await s.planConsumer()).paused, "paused when the reply arrives");
    assert.ok(elapsed < 1_000, `the pause took ${elapsed.toFixed(0)} ms`);
    // The agent's outstanding pull was issued before the pause: the server must not fill it either.
    await s.requestReports(2);
    await waitFor(async () => (await s.planConsumer()).num_pending === 2, { what: "the new inputs pending" });
    await runNats(["--inbox-prefix", "_INBOX_operator", "consumer", "info", "MESH_CAP", "cap-plan-v1"], s.cli);
    assert.equal(agent.stats().processed, 1);
    assert.equal((await s.planConsumer()).num_ack_pending, 0);
  });

  test("switches - a pause with an expiry resumes by itself, with a decision whose reason is expired", async () => {
    await using s = await startSwitchMesh();
    const agent = await s.planner();
    const watcher = await watchSwitches(s.coordinator.deps.nc);
    // Expiries have second precision: three seconds ahead is at least two.
    const until = new Date(Math.ceil(Date.now() / 1000) * 1000 + 3_000).toISOString().replace(".000Z", "Z");
    const paused = await s.request("pause", pauseBody("plan.v1", { expires_at: until }));
    assert.equal(paused.expires_at, until);
    assert.deepEqual(paused.consumers, [{ stream: "MESH_CAP", name: "cap-plan-v1", paused: true, pause_until: until }]);
    assert.equal((await consumerInfo(s, "MESH_CAP", "cap-plan-v1")).config.pause_until, until);
    await waitFor(() => watcher.isPaused({ capability: "plan", major: 1, principal: "planner" }) !== undefined, { what: "the watcher to see the pause" });
    await s.requestReports(1);
    await waitFor(async () => (await s.planConsumer()).num_pending === 1, { what: "the input pending while paused" });
    assert.equal(agent.stats().processed, 0);

    await waitFor(() => agent.stats().processed === 1, { what: "the input processed after the expiry", timeoutMs: 15_000 });
    assert.ok(Date.now() >= Date.parse(until), "not before the expiry");
    const decisions = await waitFor(async () => {
      const d = await s.decisions();
      return d.length === 2 ? d : undefined;
    }, { what: "the expiry's resume decision" });
    assert.deepEqual(decisions.map((d) => d.data.action), ["pause", "resume"]);
    assert.deepEqual(decisions[1]!.data, { action: "resume", scope: "capability", target: "plan.v1", reason: EXPIRED_REASON, operator: "coordinator", principal: "coordinator" });
    await waitFor(async () => (await new Kvm(s.mesh.operator).open(KvBucket.Switches).then((kv) => kv.get("capability.plan_v1")))?.operation === "DEL", { what: "the flag cleared" });
    assert.equal(watcher.isPaused({ capability: "plan", major: 1, principal: "planner" }), undefined);
    await watcher.close();
  });

  test("switches - two coordinator replicas enforce an expiry once: one resume decision", async () => {
    await using s = await startSwitchMesh();
    const logs: string[][] = [[], []];
    await s.replica(logs[0]);
    await s.replica(logs[1]);
    await s.coordinator.stop(); // the two logged replicas are the only ones left
    const until = new Date(Math.ceil(Date.now() / 1000) * 1000 + 2_000).toISOString().replace(".000Z", "Z");
    await s.request("pause", { scope: "principal", target: "planner", reason: "maintenance window", operator: "bob", expires_at: until });
    // Both replicas' timers fire; compare-and-set lets one resume, the other finds the flag gone.
    const said = (lines: string[], msg: string) => lines.some((l) => (JSON.parse(l) as { msg: string }).msg.startsWith(msg));
    await waitFor(() => logs.every((l) => said(l, "pause expired")), { what: "both replicas to act on the expiry", timeoutMs: 15_000 });
    assert.equal(logs.filter((l) => said(l, "pause expired; resumed")).length, 1);
    assert.equal(logs.filter((l) => said(l, "pause expired; already resumed")).length, 1);
    const decisions = await s.decisions();
    assert.deepEqual(decisions.map((d) => `${d.data.action}:${d.data.reason}:${d.data.operator}`), ["pause:maintenance window:bob", `resume:${EXPIRED_REASON}:coordinator`]);
  });

  test("switches - status lists what is paused and why; layered switches keep a consumer paused until the last one resumes", async () => {
    await using s = await startSwitchMesh();
    await s.planner();
    const until = new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d{3}Z$/, "Z");
    await s.request("pause", { scope: "capability", target: "plan.v1", reason: "bad prompts", operator: "alice", expires_at: until });
    await s.request("pause", { scope: "principal", target: "planner", reason: "key rotation", operator: "bob" });
    await s.request("pause", { scope: "mesh", target: MESH_TARGET, reason: "incident 42", operator: "carol" });
    const status = await s.request<SwitchStatusReply>("status", {});
    assert.deepEqual(status.switches.map((w) => [w.scope, w.target, w.reason, w.by, w.expires_at]), [
      ["mesh", "*", "incident 42", "carol", null],
      ["principal", "planner", "key rotation", "bob", null],
      ["capability", "plan.v1", "bad prompts", "alice", until],
    ]);
    for (const w of status.switches) assert.ok(Date.parse(w.at) <= Date.now() && Date.now() - Date.parse(w.at) < 60_000, `since ${w.at}`);
    const mesh = status.switches[0]!;
    assert.deepEqual(mesh.consumers.filter((c) => !c.missing).map((c) => `${c.stream}/${c.name}:${c.paused}`), ["MESH_CAP/cap-plan-v1:true", "MESH_HANDOFF/coordinator-handoff:true"]);
    // Every other capability's durable and every subscription's, from the layout: no agent has created them yet.
    const layout = defaultLayout();
    const others = [
      ...Object.values(layout.principals.capabilities).filter((c) => c.ref !== "plan.v1").map((c) => capabilityDurable(c.name, c.major)),
      ...Object.keys(layout.principals.principals).flatMap((p) => layout.subscriptionConsumers(p).map((c) => c.config.durable_name!)),
    ];
    assert.deepEqual(mesh.consumers.filter((c) => c.missing).map((c) => c.name), others);
    assert.deepEqual(status.switches[1]!.consumers, [{ stream: "MESH_CAP", name: "cap-plan-v1", paused: true, pause_until: PAUSED_UNTIL_RESUMED }]);

    // The consumer stays paused while any switch covers it.
    const r1 = await s.request("resume", { scope: "mesh", target: "*", operator: "carol" });
    assert.equal(r1.consumers.find((c) => c.name === "coordinator-handoff")!.paused, false);
    assert.equal(r1.consumers.find((c) => c.name === "cap-plan-v1")!.paused, true);
    const r2 = await s.request("resume", { scope: "principal", target: "planner", operator: "bob" });
    assert.deepEqual(r2.consumers, [{ stream: "MESH_CAP", name: "cap-plan-v1", paused: true, pause_until: until }]);
    assert.equal((await consumerInfo(s, "MESH_CAP", "cap-plan-v1")).config.pause_until, until);
    const r3 = await s.request("resume", { scope: "capability", target: "plan.v1", operator: "alice" });
    assert.deepEqual(r3.consumers, [{ stream: "MESH_CAP", name: "cap-plan-v1", paused: false, pause_until: null }]);
    assert.deepEqual((await s.request<SwitchStatusReply>("status", {})).switches, []);
  });

  test("switches - every switch is one signed decision on MESH_DECISION that verifies; re-pausing updates the reason", async () => {
    await using s = await startSwitchMesh();
    const first = await s.request("pause", pauseBody("research.v1"));
    const again = await s.request("pause", pauseBody("research.v1", { reason: "still investigating", operator: "bob" }));
    assert.notEqual(again.decision_id, first.decision_id);
    assert.equal(again.at, first.at, "paused since the first pause");
    assert.equal(again.reason, "still investigating");
    assert.equal(again.by, "bob");
    const resumed = await s.request("resume", { scope: "capability", target: "research.v1", reason: "done", operator: "bob" });
    const noop = await s.request("resume", { scope: "capability", target: "research.v1", operator: "bob" });
    assert.equal(noop.decision_id, null, "resuming what runs decides nothing");

    const decisions = await s.decisions();
    assert.deepEqual(decisions.map((d) => d.id), [first.decision_id, again.decision_id, resumed.decision_id]);
    assert.ok(decisions.every((d) => d.principal === "coordinator"));
    assert.deepEqual(decisions.map((d) => d.data), [
      { action: "pause", scope: "capability", target: "research.v1", reason: "planner emits junk tasks", operator: "alice", principal: "operator" },
      { action: "pause", scope: "capability", target: "research.v1", reason: "still investigating", operator: "bob", principal: "operator" },
      { action: "resume", scope: "capability", target: "research.v1", reason: "done", operator: "bob", principal: "operator" },
    ]);
    // The flag names the decision that set it (history keeps each).
    const kv = await new Kvm(s.mesh.operator).open(KvBucket.Switches);
    const history: string[] = [];
    for await (const e of await kv.history({ key: "capability.research_v1" })) history.push(e.operation === "PUT" ? (e.json<SwitchValue>()).decision_id : e.operation);
    assert.deepEqual(history, [first.decision_id, again.decision_id, "DEL"]);
  });

  test("switches - invalid requests are refused with CW_ERR_SWITCH_INVALID and change nothing", async () => {
    await using s = await startSwitchMesh();
    const past = new Date(Date.now() - 60_000).toISOString();
    const cases: [string, unknown, RegExp][] = [
      ["pause", pauseBody("nope.v1"), /unknown capability "nope\.v1": the mesh declares plan\.v1, research\.v1/],
      ["pause", pauseBody("research"), /not <capability>\.v<major>/],
      ["pause", { ...pauseBody(""), scope: "principal", target: "mallory" }, /unknown principal "mallory"/],
      ["pause", { ...pauseBody(""), scope: "principal", target: "gateway" }, /gateway" serves no capability/],
      ["pause", { ...pauseBody(""), scope: "mesh", target: "planner" }, /the mesh target is "\*"/],
      ["pause", { ...pauseBody(""), scope: "galaxy", target: "*" }, /unknown scope "galaxy"/],
      ["pause", pauseBody("plan.v1", { expires_at: past }), /is not in the future/],
      ["pause", pauseBody("plan.v1", { expires_at: "tomorrow" }), /RFC 3339/],
      ["pause", pauseBody("plan.v1", { expires_at: "2999-01-01T00:00:00Z" }), /leave it out to pause until resumed/],
      ["pause", pauseBody("plan.v1", { reason: "" }), /reason is required/],
      ["pause", pauseBody("plan.v1", { operator: undefined }), /operator is required/],
      ["pause", pauseBody("plan.v1", { expiresAt: past }), /unknown field expiresAt/],
      ["pause", "not json", /not JSON/],
      ["resume", { scope: "capability", target: "plan.v1", operator: "alice", expires_at: past }, /pause only/],
      ["resume", { scope: "capability", target: "nope.v1", operator: "alice" }, /unknown capability/],
    ];
    for (const [action, body, message] of cases) {
      const err = await refusal(s.request(action, body));
      assert.equal(err.code, ErrorCode.SwitchInvalid, `${JSON.stringify(body)}: ${err.message}`);
      assert.match(err.message, message);
    }
    const kv = await new Kvm(s.mesh.operator).open(KvBucket.Switches);
    assert.equal((await kv.status()).values, 0, "no flag written");
    assert.deepEqual(await s.decisions(), []);
    // The control plane's refusal: the service error headers (the message, and the code's status) and the error body.
    const raw = await runNats(["--inbox-prefix", "_INBOX_operator", "req", "mesh.ctl.coordinator.pause", JSON.stringify(pauseBody("nope.v1"))], s.cli);
    const message = `unknown capability "nope.v1": the mesh declares ${Object.keys(defaultLayout().principals.capabilities).join(", ")}`;
    assert.match(raw.stderr, /Nats-Service-Error-Code: 400\n/);
    assert.ok(raw.stderr.includes(`Nats-Service-Error: ${message}\n`), raw.stderr);
    assert.deepEqual(JSON.parse(raw.stdout), { error: { code: "CW_ERR_SWITCH_INVALID", message } });
  });

  test("switches - the real nats req as the operator pauses and resumes", async () => {
    await using s = await startSwitchMesh();
    await s.planner();
    const body = JSON.stringify({ scope: "principal", target: "planner", reason: "runaway costs", operator: "alice" });
    const res = await runNats(["--inbox-prefix", "_INBOX_operator", "req", "mesh.ctl.coordinator.pause", body], s.cli);
    assert.equal(res.code, 0, res.stderr);
    const reply = JSON.parse(res.stdout) as SwitchReply;
    assert.equal(reply.key, "principal.planner");
    assert.deepEqual(reply.consumers, [{ stream: "MESH_CAP", name: "cap-plan-v1", paused: true, pause_until: PAUSED_UNTIL_RESUMED }]);
    assert.equal((await consumerInfo(s, "MESH_CAP", "cap-plan-v1")).paused, true);
    const status = JSON.parse((await runNats(["--inbox-prefix", "_INBOX_operator", "req", "mesh.ctl.coordinator.status", ""], s.cli)).stdout) as SwitchStatusReply;
    assert.deepEqual(status.switches.map((w) => `${w.scope}:${w.target}:${w.reason}`), ["principal:planner:runaway costs"]);
    const resumed = await runNats(["--inbox-prefix", "_INBOX_operator", "req", "mesh.ctl.coordinator.resume", JSON.stringify({ scope: "principal", target: "planner", operator: "alice" })], s.cli);
    assert.equal((JSON.parse(resumed.stdout) as SwitchReply).paused, false);
    assert.equal((await consumerInfo(s, "MESH_CAP", "cap-plan-v1")).paused ?? false, false);
    // A refusal comes back as the error body, with the service error headers.
    const refused = await runNats(["--inbox-prefix", "_INBOX_operator", "req", "mesh.ctl.coordinator.pause", JSON.stringify({ scope: "principal", target: "mallory", reason: "r", operator: "alice" })], s.cli);
    assert.equal((JSON.parse(refused.stdout) as { error: { code: string } }).error.code, ErrorCode.SwitchInvalid);
    // `nats micro info coordinator` lists the three endpoints and counts their requests.
    type Endpoints = { endpoints: { name: string; subject: string; num_requests?: number }[] };
    const micro = await runNatsJson<{ info: Endpoints; stats: Endpoints }>(["--inbox-prefix", "_INBOX_operator", "micro", "info", "coordinator", "--json"], s.cli);
    assert.deepEqual(micro.info.endpoints.map((e) => `${e.name} ${e.subject}`).sort(), [
      "pause mesh.ctl.coordinator.pause", "resume mesh.ctl.coordinator.resume", "status mesh.ctl.coordinator.status",
    ]);
    const pauseStats = micro.stats.endpoints.find((e) => e.name === "pause")!;
    assert.equal(pauseStats.num_requests, 2);
  });

  test("switches - the causeway command pauses, lists and resumes as the operator", async (t) => {
    await using s = await startSwitchMesh();
    await s.planner();
    const saved = process.env.CAUSEWAY_DATA_DIR;
    process.env.CAUSEWAY_DATA_DIR = s.mesh.dataDir;
    t.after(() => {
      if (saved === undefined) delete process.env.CAUSEWAY_DATA_DIR;
      else process.env.CAUSEWAY_DATA_DIR = saved;
    });
    const out: string[] = [];
    const err: string[] = [];
    t.mock.method(console, "log", (line: string) => { out.push(line); });
    t.mock.method(console, "error", (line: string) => { err.push(line); });
    const cmd = async (...args: string[]) => {
      out.length = 0;
      err.length = 0;
      return runSwitchCommand([...args, "--server", s.mesh.server.url]);
    };

    assert.equal(await cmd("pause", "capability", "plan.v1", "--reason", "bad prompts", "--operator", "alice"), 0);
    assert.match(out[0]!, /^✓ paused capability plan\.v1 until resumed: bad prompts \(by alice, since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\)$/);
    assert.equal(out[1], "  MESH_CAP/cap-plan-v1 paused until resumed");
    assert.match(out[2]!, /^ {2}decision [0-9a-f-]{36}$/);

    assert.equal(await cmd("pause", "mesh", "--reason", "incident 42", "--operator", "carol", "--until", "2199-01-01T00:00:00+01:00"), 0);
    assert.match(out[0]!, /^✓ paused the mesh until 2198-12-31T23:00:00Z: incident 42 \(by carol/);

    assert.equal(await cmd("switches"), 0);
    assert.match(out[0]!, /^SCOPE\s+TARGET\s+REASON\s+BY\s+SINCE\s+EXPIRES\s+CONSUMERS$/);
    // cap-plan-v1 is under both switches: paused until the later end, the capability's "until resumed".
    assert.match(out[1]!, /^mesh\s+\*\s+incident 42\s+carol\s+\S+Z\s+2198-12-31T23:00:00Z\s+cap-plan-v1 paused until resumed, cap-research-v1 not created yet, .*coordinator-handoff paused until 2198-12-31T23:00:00Z$/);
    assert.match(out[2]!, /^capability\s+plan\.v1\s+bad prompts\s+alice\s+\S+Z\s+until resumed\s+cap-plan-v1 paused until resumed$/);
    assert.equal(out.length, 3);

    assert.equal(await cmd("resume", "mesh", "--operator", "carol"), 0);
    assert.equal(out[0], "✓ resumed the mesh: resumed (by carol)");
    assert.ok(out.includes("  MESH_CAP/cap-plan-v1 paused until resumed (another switch still covers it)"), out.join("\n"));
    assert.equal(await cmd("resume", "capability", "plan.v1", "--reason", "prompts fixed", "--operator", "alice"), 0);
    assert.equal(out[0], "✓ resumed capability plan.v1: prompts fixed (by alice)");
    assert.equal(out[1], "  MESH_CAP/cap-plan-v1 running");
    assert.equal(await cmd("switches"), 0);
    assert.deepEqual(out, ["no switch is on: every capability runs"]);

    // Usage errors exit 2 before any request; refusals carry the coordinator's code.
    assert.equal(await cmd("pause", "capability", "plan.v1"), 2);
    assert.match(err[0]!, /^causeway pause: --reason is required: .*\(CW_ERR_USAGE\)\n/);
    assert.equal(await cmd("pause", "cluster", "x", "--reason", "r"), 2);
    assert.equal(await cmd("pause", "capability", "plan.v1", "--reason", "r", "--until", "2030-01-01T00:00:00"), 2);
    const refused = await refusal(cmd("pause", "capability", "nope.v1", "--reason", "r"));
    assert.equal(refused.code, ErrorCode.SwitchInvalid);
    assert.equal((await s.decisions()).length, 4);
  });

  test("switches - an agent's watcher: mesh over principal over capability, expiry, deletes, read-only access", async () => {
    await using s = await startSwitchMesh();
    const kv = await new Kvm(s.coordinator.deps.nc).open(KvBucket.Switches);
    const value = (reason: string, expires_at: string | null = null): string =>
      encodeSwitch({ paused: true, reason, by: "alice", at: new Date().toISOString(), expires_at, decision_id: uuidv7() });
    // Present before the watch starts: loaded before watchSwitches resolves.
    await kv.put("capability.plan_v1", value("capability"));
    const agentNc: NatsConnection = await s.mesh.as("planner");
    const problems: CausewayError[] = [];
    await using watcher = await watchSwitches(agentNc, { onProblem: (e) => problems.push(e) });
    const planner = { capability: "plan", major: 1, principal: "planner" };
    const other = { capability: "research", major: 1, principal: "researcher" };
    assert.equal(watcher.isPaused(planner)?.reason, "capability");
    assert.equal(watcher.isPaused({ ...planner, major: 2 }), undefined);
    assert.equal(watcher.isPaused(other), undefined);

    const changes: string[] = [];
    watcher.onChange((c) => changes.push(`${c.key}:${c.state ? "paused" : "running"}`));
    await kv.put("principal.planner", value("principal"));
    await waitFor(() => watcher.isPaused(planner)?.reason === "principal", { what: "principal over capability" });
    await kv.put("mesh", value("mesh"));
    await waitFor(() => watcher.isPaused(planner)?.reason === "mesh", { what: "mesh over principal" });
    assert.equal(watcher.isPaused(other)?.reason, "mesh");
    assert.deepEqual(watcher.list().map((w) => `${w.scope}:${w.target}`), ["mesh:*", "principal:planner", "capability:plan.v1"]);

    await kv.put("mesh", JSON.stringify({ paused: false }));
    await waitFor(() => watcher.isPaused(planner)?.reason === "principal", { what: "paused:false counts as running" });
    assert.equal(watcher.isPaused(other), undefined);
    await kv.delete("principal.planner");
    await waitFor(() => watcher.isPaused(planner)?.reason === "capability", { what: "a deleted key counts as running" });

    // An expired pause counts as resumed, with no change needed in the bucket.
    const soon = new Date(Date.now() + 60_000).toISOString().replace(/\.\d{3}Z$/, "Z");
    await kv.put("capability.plan_v1", value("until soon", soon));
    await waitFor(() => watcher.isPaused(planner)?.reason === "until soon", { what: "the expiring pause" });
    assert.equal(watcher.isPaused(planner, Date.parse(soon) - 1)?.reason, "until soon");
    assert.equal(watcher.isPaused(planner, Date.parse(soon)), undefined);
    assert.equal(watcher.isPaused(planner, new Date(Date.parse(soon) + 1)), undefined);
    assert.deepEqual(watcher.list(Date.parse(soon)), []);
    assert.equal(watcher.recorded().length, 1);

    // A value nobody can read fails closed: the target is paused, and the problem is reported.
    await kv.put("principal.researcher", "{not json");
    await waitFor(() => watcher.isPaused(other) !== undefined, { what: "the unreadable switch to pause" });
    assert.match(watcher.isPaused(other)!.reason, /unreadable switch value/);
    assert.equal(problems[0]?.code, ErrorCode.SwitchInvalid);
    assert.deepEqual(changes, ["principal.planner:paused", "mesh:paused", "mesh:running", "principal.planner:running", "capability.plan_v1:paused", "principal.researcher:paused"]);

    // Agents read the bucket; they cannot write it.
    const agentKv = await new Kvm(agentNc).open(KvBucket.Switches);
    await assert.rejects(agentKv.put("mesh", value("forged")), /permission|timeout/i);
  });

  test("switches - the isPaused lookup allocates nothing", async () => {
    await using s = await startSwitchMesh();
    const kv = await new Kvm(s.coordinator.deps.nc).open(KvBucket.Switches);
    await kv.put("capability.research_v1", encodeSwitch({ paused: true, reason: "r", by: "a", at: new Date().toISOString(), expires_at: null, decision_id: "d" }));
    await using watcher = await watchSwitches(s.coordinator.deps.nc);
    const running = { capability: "plan", major: 1, principal: "planner" };
    const paused = { capability: "research", major: 1, principal: "researcher" };
    assert.equal(watcher.isPaused(running), undefined);
    assert.equal(watcher.isPaused(paused)?.reason, "r");
    // A synchronous loop that allocates nothing cannot trigger a garbage collection; one that allocates even a
    // small object per call triggers several over a million calls (the control loop proves the probe works).
    const gcs: number[] = [];
    const observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) gcs.push(e.startTime); });
    observer.observe({ entryTypes: ["gc"] });
    const now = Date.now();
    const t0 = performance.now();
    for (let i = 0; i < 1_000_000; i++) {
      watcher.isPaused(running, now);
      watcher.isPaused(paused, now);
    }
    const t1 = performance.now();
    const sink: unknown[] = [];
    for (let i = 0; i < 1_000_000; i++) sink[i & 7] = { ...running, i };
    const t2 = performance.now();
    // Entries arrive in order, so once the control loop's have, the lookups' would have too.
    await waitFor(() => gcs.some((t) => t >= t1 && t <= t2), { what: "the allocating control loop to show a collection" });
    observer.disconnect();
    const lookups = gcs.filter((t) => t >= t0 && t <= t1).length;
    assert.equal(lookups, 0, `${lookups} collections during two million lookups`);
  });
});

describe("switch keys and values", () => {
  test("switches - keys name the scope and target", () => {
    assert.equal(switchKey("capability", "research.v1"), "capability.research_v1");
    assert.equal(switchKey("capability", "web_fetch.v12"), "capability.web_fetch_v12");
    assert.equal(switchKey("principal", "planner"), "principal.planner");
    assert.equal(switchKey("mesh", "*"), "mesh");
    assert.deepEqual(parseSwitchKey("capability.web_fetch_v12"), { scope: "capability", target: "web_fetch.v12" });
    assert.deepEqual(parseSwitchKey("principal.approver-alice"), { scope: "principal", target: "approver-alice" });
    assert.deepEqual(parseSwitchKey("mesh"), { scope: "mesh", target: "*" });
    for (const [scope, target] of [["capability", "research"], ["capability", "Research.v1"], ["capability", "research.v01"], ["principal", "Planner"], ["principal", "a.b"], ["mesh", "planner"], ["cluster", "*"]] as const) {
      assert.throws(() => switchKey(scope, target), (e: unknown) => e instanceof CausewayError && e.code === ErrorCode.SwitchInvalid, `${scope} ${target}`);
    }
    assert.throws(() => parseSwitchKey("capability.research"), /not a switch/);
  });

  test("switches - values parse strictly; paused:false is running", () => {
    const v = { paused: true, reason: "why", by: "alice", at: "2026-11-21T06:41:03.123Z", expires_at: null, decision_id: "0198" };
    const state = parseSwitch("principal.planner", encodeSwitch(v));
    assert.deepEqual(state, { key: "principal.planner", scope: "principal", target: "planner", ...v });
    assert.ok(Object.isFrozen(state));
    assert.equal(parseSwitch("mesh", JSON.stringify({ paused: false })), undefined);
    assert.equal(parseSwitch("mesh", new TextEncoder().encode(JSON.stringify({ ...v, expires_at: "2026-11-22T00:00:00+01:00" })))?.expires_at, "2026-11-22T00:00:00+01:00");
    for (const bad of [{ ...v, paused: "yes" }, { ...v, reason: "" }, { ...v, at: "yesterday" }, { ...v, expires_at: 5 }, [v], "text"]) {
      assert.throws(() => parseSwitch("mesh", JSON.stringify(bad)), (e: unknown) => e instanceof CausewayError && e.code === ErrorCode.SwitchInvalid, JSON.stringify(bad));
    }
    assert.throws(() => parseSwitch("mesh", "{"), /not JSON/);
  });
});
