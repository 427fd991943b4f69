// Issue 12, findings 1 and 7, on the server side: with the permissions `causeway infra render` writes, on a live
// server with the mesh applied as operators do it.
// - A service that answered any reply subject (a blind micro service registered as the service principal, i.e.
//   the code check bypassed) cannot publish its answer onto a KV key, a decision or a critical capability subject
//   outside its own grants: the server refuses it and nothing lands.
// - Legitimate answers still arrive: every control endpoint of the services' contracts answers each principal
//   whose grants reach it, and the operator's `nats micro ls/info/stats` work.
// - KV writes are scoped by key space: the gateway cannot write the publisher's processed marks, the publisher
//   cannot write a gateway mark or another capability's lease.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  GATEWAY_MARK_PREFIX, KvBucket, addControlEndpoint, agentStatsEndpoint, capabilityKeyPrefix, createLogger, leaseKey, loadPrincipals,
  seedPath, subjectMatches, subjectsFor, type ControlEndpoint,
} from "../../services/kit/index.ts";
import { permissionsFor, subjectIntersection } from "../../services/kit/ops/index.ts";
import * as coordinatorContract from "../../services/coordinator/contract.ts";
import * as gatewayContract from "../../services/gateway/contract.ts";
import { LINEAGE_OPERATIONS, lineageEndpoint, type LineageOperationName } from "../../services/lineage/contract.ts";
import { startOperatedMesh, type OperatedMesh } from "../e2e-fixture.ts";
import { runNats, waitFor } from "../harness/index.ts";
import { isPermissionRefusal, startBlindResponders, type BlindResponder } from "./live.ts";

const principals = loadPrincipals();
const prefix = principals.prefix;
const services = Object.values(principals.principals).filter((p) => p.service !== undefined);

/** Whether `principal`'s rendered publish grants cover `subject`. */
const mayPublish = (principal: string, subject: string) => permissionsFor(principals, principal).publish.some((g) => subjectMatches(g.subject, subject));

describe("server permissions - services answer only their requesters' inboxes (issue 12, finding 1)", () => {
  let mesh: OperatedMesh;
  let responders: BlindResponder[];
  before(async () => {
    mesh = await startOperatedMesh();
    responders = await startBlindResponders(principals, mesh.as);
  });
  after(async () => {
    for (const r of responders ?? []) r.violations.stop();
    await mesh?.[Symbol.asyncDispose]();
  });

  test("server permissions - a blind service cannot answer onto a KV key, a decision or a critical capability subject", async () => {
    const jsm = await jetstreamManager(mesh.operator);
    const kvm = new Kvm(mesh.operator);
    const critical = Object.values(principals.capabilities).find((c) => c.critical)!;
    const targets = [
      { reply: `$KV.${KvBucket.Trust}.UFORGED`, landed: async () => (await (await kvm.open(KvBucket.Trust)).get("UFORGED")) !== null },
      { reply: `$KV.${KvBucket.Switches}.mesh`, landed: async () => (await (await kvm.open(KvBucket.Switches)).get("mesh")) !== null },
      { reply: `$KV.${KvBucket.Processed}.${capabilityKeyPrefix(critical.name, critical.major)}.forged`, landed: async () => (await (await kvm.open(KvBucket.Processed)).get(`${capabilityKeyPrefix(critical.name, critical.major)}.forged`)) !== null },
      { reply: `${prefix}.decision.grant`, landed: async () => (await jsm.streams.info("MESH_DECISION")).state.messages > 0 },
      { reply: `${prefix}.cap.${critical.name}.v${critical.major}`, landed: async () => (await jsm.streams.info("MESH_CAP")).state.messages > 0 },
    ];
    let tried = 0;
    for (const responder of responders) {
      const served = `${prefix}.ctl.${principals.principals[responder.principal]!.service!}.status`;
      for (const { reply, landed } of targets) {
        // A subject the service may publish on anyway (the coordinator's own decisions) is not an injection the
        // server can refuse; control.ts refuses those (test/control-reply.test.ts).
        if (mayPublish(responder.principal, reply)) continue;
        const before = responder.answered();
        mesh.operator.publish(served, "{}", { reply });
        await waitFor(() => responder.answered() > before, { what: `${responder.principal} to get the request` });
        await waitFor(async () => responder.violations.has("publish", reply) || (await landed()), { what: `${responder.principal}'s answer onto ${reply} to be refused or to land` });
        assert.equal(await landed(), false, `${responder.principal}'s answer landed on ${reply}`);
        tried++;
      }
    }
    // Discovery, answered by the micro library itself.
    mesh.operator.publish("$SRV.PING", "", { reply: targets[0]!.reply });
    for (const r of responders) await waitFor(() => r.violations.seen.filter((e) => e.subject === targets[0]!.reply).length >= 2, { what: `${r.principal}'s discovery answer to be refused` });
    assert.ok(tried >= responders.length * 3, `tried ${tried}`);
    for (const { reply, landed } of targets) assert.equal(await landed(), false, `something landed on ${reply}`);
  });

  test("server permissions - the operator's nats micro ls, info and stats still work", async () => {
    const nkey = seedPath("operator", mesh.dataDir);
    const ls = await runNats(["--inbox-prefix", "_INBOX_operator", "micro", "ls", "--json"], { server: mesh.server.url, nkey });
    assert.equal(ls.code, 0, ls.stderr);
    const names = (JSON.parse(ls.stdout) as { name: string }[]).map((i) => i.name).sort();
    assert.deepEqual(names, services.map((s) => s.service!).sort());
    for (const verb of ["info", "stats"]) {
      const res = await runNats(["--inbox-prefix", "_INBOX_operator", "micro", verb, "coordinator", "--json"], { server: mesh.server.url, nkey });
      assert.equal(res.code, 0, `${verb}: ${res.stderr}`);
      assert.match(res.stdout, /"name":\s*"coordinator"/);
    }
  });
});

describe("server permissions - every control endpoint answers the principals who may call it", () => {
  test("server permissions - each endpoint of the contracts, served as its service principal, answers each caller on its inbox", async () => {
    await using mesh = await startOperatedMesh();
    const endpoints: ControlEndpoint<unknown, unknown>[] = [
      ...Object.values(coordinatorContract).flatMap((v: unknown) => (isEndpoint(v) ? [v] : [])),
      ...Object.values(gatewayContract).flatMap((v: unknown) => (isEndpoint(v) ? [v] : [])),
      ...(Object.keys(LINEAGE_OPERATIONS) as LineageOperationName[]).map((name) => lineageEndpoint(name) as ControlEndpoint<unknown, unknown>),
      ...services.filter((s) => s.role === "agent").map((s) => agentStatsEndpoint(s.service!) as ControlEndpoint<unknown, unknown>),
    ];
    assert.ok(endpoints.length >= 10, `found ${endpoints.length} endpoints`);
    const subjects = subjectsFor(prefix);
    const log = createLogger({ name: "server-permissions", level: "silent" });
    const served = new Map<string, { nc: NatsConnection; service: Awaited<ReturnType<Svcm["add"]>> }>();
    for (const s of services) {
      const nc = await mesh.as(s.name);
      served.set(s.service!, { nc, service: await new Svcm(nc).add({ name: s.service!, version: "0.0.1" }) });
    }
    for (const endpoint of endpoints) {
      addControlEndpoint(served.get(endpoint.service)!.service, endpoint, { handle: () => Promise.resolve({ ok: true }), subjects, log });
    }
    for (const { nc } of served.values()) await nc.flush();

    const callers = new Map<string, NatsConnection>();
    const as = async (name: string): Promise<NatsConnection> => {
      const known = callers.get(name);
      if (known) return known;
      const nc = await mesh.as(name);
      callers.set(name, nc);
      return nc;
    };
    const unreachable: string[] = [];
    let calls = 0;
    for (const endpoint of endpoints) {
      let reached = false;
      for (const name of Object.keys(principals.principals)) {
        const subject = endpoint.perCaller ? `${subjects.control(endpoint.service, endpoint.action)}.${name}` : subjects.control(endpoint.service, endpoint.action);
        if (!mayPublish(name, subject)) continue;
        const answer = await (await as(name)).request(subject, "{}", { timeout: 5_000 });
        assert.ok(answer.data.length > 0, `${name} → ${subject}: an empty answer`);
        reached = true;
        calls++;
      }
      if (!reached) unreachable.push(`${endpoint.service}.${endpoint.action}`);
    }
    assert.deepEqual(unreachable, [], "endpoints no principal may call");
    assert.ok(calls >= endpoints.length);
  });
});

describe("server permissions - KV writers are confined to their key spaces (issue 12, finding 7)", () => {
  test("server permissions - the gateway cannot mark the publisher's inputs; the publisher cannot write a gateway mark or another capability's lease", async () => {
    await using mesh = await startOperatedMesh();
    const critical = Object.values(principals.capabilities).find((c) => c.critical)!;
    const other = Object.values(principals.capabilities).find((c) => !c.critical)!;
    const event = { source: "urn:test", id: "e-1" };
    // Keys as the services build them: a processed mark has the lease key's form (processed.ts), `<capability>_v<major>.<hash>`.
    const publisherMark = leaseKey(critical.name, critical.major, event);
    assert.ok(publisherMark.startsWith(`${capabilityKeyPrefix(critical.name, critical.major)}.`));
    const gatewayMark = `${GATEWAY_MARK_PREFIX}.e-1`;
    const ownLease = leaseKey(critical.name, critical.major, event);
    const foreignLease = leaseKey(other.name, other.major, event);

    const gateway = await mesh.as("gateway");
    const publisher = await mesh.as("publisher");
    const gwProcessed = await new Kvm(gateway).open(KvBucket.Processed);
    const pubProcessed = await new Kvm(publisher).open(KvBucket.Processed);
    const pubLeases = await new Kvm(publisher).open(KvBucket.Leases);
    const refused = async (what: string, write: Promise<unknown>) => {
      await assert.rejects(write, (err: unknown) => isPermissionRefusal(err), what);
    };

    await refused("the gateway creates a publisher processed mark", gwProcessed.create(publisherMark, "1"));
    await refused("the gateway puts a publisher processed mark", gwProcessed.put(publisherMark, "1"));
    await refused("the publisher creates a gateway mark", pubProcessed.create(gatewayMark, "1"));
    await refused("the publisher deletes a gateway mark", pubProcessed.delete(gatewayMark));
    await refused("the publisher creates another capability's lease", pubLeases.create(foreignLease, "{}"));
    // Their own key spaces still work.
    assert.ok((await gwProcessed.create(gatewayMark, "1")) > 0);
    assert.ok((await pubProcessed.create(publisherMark, "1")) > 0);
    assert.ok((await pubLeases.put(ownLease, "{}")) > 0);

    const operatorView = await new Kvm(mesh.operator).open(KvBucket.Leases);
    assert.equal(await operatorView.get(foreignLease), null, "no foreign lease was written");
  });
});

function isEndpoint(value: unknown): value is ControlEndpoint<unknown, unknown> {
  return typeof value === "object" && value !== null && "service" in value && "action" in value && "perCaller" in value && "parse" in value;
}

// Keeps the intersection helper honest on the shapes the permissions use.
test("server permissions - subjectIntersection", () => {
  assert.equal(subjectIntersection("mesh.ctl.*.*", "mesh.ctl.lineage.>"), "mesh.ctl.lineage.*");
  assert.equal(subjectIntersection("$SRV.>", "$SRV.*.gateway"), "$SRV.*.gateway");
  assert.equal(subjectIntersection("mesh.ctl.gateway.publish.upstream-demo", "mesh.ctl.gateway.*.*"), "mesh.ctl.gateway.publish.upstream-demo");
  assert.equal(subjectIntersection("mesh.ctl.*.*", "mesh.ctl.gateway.*.*"), undefined);
  assert.equal(subjectIntersection("mesh.ctl.coordinator.approve", "mesh.ctl.coordinator.*"), "mesh.ctl.coordinator.approve");
  assert.equal(subjectIntersection("a.>", "a"), undefined);
});
