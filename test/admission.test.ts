// Admission decisions of the gateway (issue 16, items 2 and 4), in process: which priority is shed at which level,
// a tenant's fair share, stale pressure failing open, Retry-After from the drain rate, quotas exact under
// processes racing on one real KV bucket, a refund taking back a flow, and the signed summaries. The gateway
// process end to end is test/gateway-admission.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { JetStreamClient } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, type MsgHdrs } from "@nats-io/transport-node";
import { createUser } from "@nats-io/nkeys";
import {
  ErrorCode, KvBucket, MESH_BUCKETS, NatsBinding, Priority, createLogger, createKeyring, dataJson, parseBackpressure, parseTenants, periodOf, quotaCounter, quotaKey, signingKeyFromNkeySeed,
  PRESSURE_KEY, followPressure, loadTenants, tenantProblems, verifyEvent, watchInfraFile, watchPressure, type Pressure, type PriorityValue, type QuotaCounter,
} from "../services/kit/index.ts";
import { FairShares, admitAndPublish, createAdmission, retryAfterSeconds, type AdmittedPublish } from "../services/gateway/admission.ts";
import type { Checked } from "../services/gateway/notarize.ts";
import type { Upstream } from "../services/gateway/upstreams.ts";
import { startServer, waitFor } from "./harness/index.ts";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const log = createLogger({ name: "admission-test", level: process.env.LOG_LEVEL ?? "silent" });
const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));

const tenants = parseTenants({
  tenants: {
    acme: { description: "a", quotas: { period: "hour", flows: 5, cost: 1000 }, weight: 1 },
    beta: { description: "b", weight: 1 },
    gamma: { description: "c", weight: 2 },
  },
}, "test-tenants.json");
const thresholds = parseBackpressure({ default: { soft: 10, hard: 20 }, staleMs: 5000, fairShareWindowMs: 10_000, summaryIntervalMs: 60_000 }, "test-backpressure.json");

const upstream = (name: string, tenant: string): Upstream => ({ name, tenant, budget: { cost: 100 } }) as unknown as Upstream;
let n = 0;
const flow = (priority: PriorityValue, cost = 100): Checked => ({
  event: { id: `e-${n++}` }, route: { capability: "plan", major: 1 }, priority, budget: { cost }, key: `k-${n}`,
}) as unknown as Checked;

/** A pressure view that reads what the test sets. */
function fakePressure(initial: Partial<Pressure> = {}) {
  let current: Pressure = { level: "ok", backlog: 0, thresholds: { soft: 10, hard: 20 }, streamFill: 0, drainPerSecond: 5, stale: false, ageMs: 0, ...initial };
  return { of: () => current, set: (p: Partial<Pressure>) => { current = { ...current, ...p }; } };
}

/** Quotas that admit everything (the shedding cases). */
const noQuotas: QuotaCounter = {
  charge: (_t, c) => Promise.resolve({ admitted: true, use: c, period: { start: 0, end: 1 }, refund: () => Promise.resolve() }),
  use: () => Promise.resolve({ flows: 0, cost: 0, period: undefined }),
};

type Published = { subject: string; data: Uint8Array; headers: MsgHdrs };

function admissionWith(pressure: ReturnType<typeof fakePressure>, quotas: QuotaCounter = noQuotas, published: Published[] = []) {
  const js = {
    publish: (subject: string, data: Uint8Array, opts: { headers: MsgHdrs }) => {
      published.push({ subject, data, headers: opts.headers });
      return Promise.resolve({ stream: "MESH_DECISION", seq: published.length, duplicate: false });
    },
  } as unknown as JetStreamClient;
  return createAdmission({ tenants: () => tenants, backpressure: () => thresholds, quotas, pressure, js, principal: "gateway", key, prefix: "mesh", log });
}

describe("admission", () => {
  test("admission - ok admits every priority; soft sheds background only; hard sheds everything but critical; each refusal is 429 CW_ERR_OVERLOADED with Retry-After", async () => {
    const pressure = fakePressure();
    const a = admissionWith(pressure);
    const u = upstream("up", "beta");
    const verdicts = async () => Object.fromEntries(await Promise.all(([Priority.Critical, Priority.Normal, Priority.Background] as const).map(async (p) => {
      const v = await a.admit(u, [flow(p)]);
      return [p, v.admitted ? "admitted" : `${v.refusal.status} ${v.refusal.code} ${v.refusal.retryafter}`];
    })));
    assert.deepEqual(await verdicts(), { critical: "admitted", normal: "admitted", background: "admitted" });
    pressure.set({ level: "soft", backlog: 12 });
    assert.deepEqual(await verdicts(), { critical: "admitted", normal: "admitted", background: "429 CW_ERR_OVERLOADED 1" });
    pressure.set({ level: "hard", backlog: 40 });
    assert.deepEqual(await verdicts(), { critical: "admitted", normal: "429 CW_ERR_OVERLOADED 5", background: "429 CW_ERR_OVERLOADED 7" });
    const v = await a.admit(u, [flow(Priority.Background)]);
    assert.ok(!v.admitted);
    assert.match(v.refusal.message, /plan\.v1, where this flow would start, has 40 waiting \(soft 10, hard 20\); above its hard threshold only critical flows are admitted\. This background flow of upstream up \(tenant beta\) was not admitted; retry after 7 s/);
    await a.close();
  });

  test("admission - a batch is admitted whole or not at all: one background flow in it refuses it above soft", async () => {
    const a = admissionWith(fakePressure({ level: "soft", backlog: 15 }));
    const v = await a.admit(upstream("up", "beta"), [flow(Priority.Normal), flow(Priority.Background)]);
    assert.equal(v.admitted, false);
    await a.close();
  });

  test("admission - a refused flow that turns out a resubmission is published as it was then, and its refusal is neither logged nor summed up; a new one is both", async () => {
    const pressure = fakePressure({ level: "soft", backlog: 12 });
    const published: Published[] = [];
    const a = admissionWith(pressure, noQuotas, published);
    const seen = new Set<string>();
    const deps = (before: boolean) => ({
      admission: a,
      ledger: { acceptedBefore: () => Promise.resolve(before), publish: (c: Checked) => Promise.resolve({ id: c.event.id, duplicate: before }) },
      notary: { notarize: (c: Checked) => c },
    }) as unknown as AdmittedPublish;
    const resubmitted = flow(Priority.Background);
    const answer = await admitAndPublish(deps(true), upstream("up", "beta"), [resubmitted]);
    assert.ok(Array.isArray(answer), "published, not refused");
    assert.deepEqual(await Promise.all(answer), [{ id: resubmitted.event.id, duplicate: true }]);
    const fresh = await admitAndPublish(deps(false), upstream("up", "beta"), [flow(Priority.Background)]);
    assert.ok(!Array.isArray(fresh) && fresh.status === 429 && fresh.code === ErrorCode.Overloaded);
    await a.close();
    for (const p of published) seen.add((dataJson(NatsBinding.toEvent({ data: p.data, headers: p.headers })) as { action: string; count: number }).action);
    assert.equal(published.length, 1, "one summary: the new flow's shedding");
    assert.equal((dataJson(NatsBinding.toEvent({ data: published[0]!.data, headers: published[0]!.headers })) as { count: number }).count, 1);
    assert.deepEqual([...seen], ["shed"]);
  });

  test("admission - stale or missing pressure data admits everything (fail open)", async () => {
    const pressure = fakePressure({ level: "ok", stale: true, ageMs: Infinity });
    const a = admissionWith(pressure);
    for (const p of [Priority.Background, Priority.Normal]) assert.equal((await a.admit(upstream("up", "beta"), [flow(p)])).admitted, true);
    await a.close();
  });

  test("admission - above soft a tenant past its fair share has its normal flows shed, a tenant within it is admitted; alone, a tenant may use it all", async () => {
    const pressure = fakePressure();
    const a = admissionWith(pressure);
    const beta = upstream("b", "beta");
    const gamma = upstream("g", "gamma");
    // Before the pressure rises, beta takes 8 admissions of plan.v1, gamma 2.
    for (let i = 0; i < 8; i++) assert.ok((await a.admit(beta, [flow(Priority.Normal)])).admitted);
    for (let i = 0; i < 2; i++) assert.ok((await a.admit(gamma, [flow(Priority.Normal)])).admitted);
    pressure.set({ level: "soft", backlog: 11 });
    // beta: 80 % of the admissions, its fair share 1 / (1 + 2) = 33 %: shed. gamma: 20 % of a 67 % share: admitted.
    const shed = await a.admit(beta, [flow(Priority.Normal)]);
    assert.ok(!shed.admitted);
    assert.equal(shed.refusal.code, ErrorCode.Overloaded);
    assert.match(shed.refusal.message, /tenant beta took 80 % of plan\.v1's recent admissions, its share is 33\.3 %/);
    assert.ok((await a.admit(gamma, [flow(Priority.Normal)])).admitted);
    // Critical flows are never shed for fairness.
    assert.ok((await a.admit(beta, [flow(Priority.Critical)])).admitted);
    await a.close();

    const alone = admissionWith(fakePressure());
    for (let i = 0; i < 5; i++) assert.ok((await alone.admit(beta, [flow(Priority.Normal)])).admitted);
    const fresh = fakePressure({ level: "soft", backlog: 11 });
    const b = admissionWith(fresh);
    for (let i = 0; i < 5; i++) assert.ok((await b.admit(beta, [flow(Priority.Normal)])).admitted, "alone at a capability, a tenant is never past its share");
    await alone.close();
    await b.close();
  });

  test("admission - fair shares forget admissions older than the window", () => {
    let now = 0;
    const shares = new FairShares(() => 10_000, () => now);
    for (let i = 0; i < 9; i++) shares.admitted("plan.v1", "a");
    shares.admitted("plan.v1", "b");
    assert.deepEqual(shares.of("plan.v1", "a", () => 1), { used: 0.9, fair: 0.5 });
    now = 11_000;
    shares.admitted("plan.v1", "b");
    assert.equal(shares.of("plan.v1", "b", () => 1), undefined, "only b's admission is left: alone");
    assert.deepEqual(shares.of("plan.v1", "a", () => 1), { used: 0, fair: 0.5 });
  });

  test("admission - Retry-After: the time to drain below the priority's threshold at the measured rate, 1 … 60 s, 10 s when nothing drains", () => {
    const p = { backlog: 120, thresholds: { soft: 100, hard: 200 }, drainPerSecond: 7 };
    assert.equal(retryAfterSeconds(p, Priority.Background), 3); // 21 over soft at 7/s
    assert.equal(retryAfterSeconds({ ...p, backlog: 260 }, Priority.Normal), 9); // 61 over hard
    assert.equal(retryAfterSeconds({ ...p, backlog: 100_000 }, Priority.Background), 60);
    assert.equal(retryAfterSeconds({ ...p, drainPerSecond: 0 }, Priority.Background), 10);
  });

  test("tenants - periods: calendar units in UTC and lengths aligned to the epoch; an upstream's tenant must be declared", () => {
    const t = Date.UTC(2026, 11, 6, 21, 58, 30, 5); // Sunday
    assert.deepEqual(periodOf("minute", t), { start: Date.UTC(2026, 11, 6, 21, 58), end: Date.UTC(2026, 11, 6, 21, 59) });
    assert.deepEqual(periodOf("day", t), { start: Date.UTC(2026, 11, 6), end: Date.UTC(2026, 11, 7) });
    assert.deepEqual(periodOf("week", t), { start: Date.UTC(2026, 10, 30), end: Date.UTC(2026, 11, 7) });
    assert.deepEqual(periodOf("month", t), { start: Date.UTC(2026, 11, 1), end: Date.UTC(2027, 0, 1) });
    assert.deepEqual(periodOf(90_000, t), { start: Math.floor(t / 90_000) * 90_000, end: Math.floor(t / 90_000) * 90_000 + 90_000 });
    assert.deepEqual(tenantProblems(tenants, [
      { name: "u1", tenant: "acme", budget: { cost: 10 } }, { name: "u2", tenant: "nobody", budget: {} }, { name: "u3", tenant: "acme", budget: {} },
    ]), [
      '/upstreams/u2/tenant: tenant "nobody" is not declared in test-tenants.json (an upstream without "tenant" is its own tenant, named like it)',
      '/upstreams/u3/budget/cost: tenant "acme" has a cost quota, so its upstreams\' flows need a cost budget to be counted',
    ]);
    assert.throws(() => parseTenants({ tenants: { x: { description: "x", quotas: { period: "fortnight", flows: 1 } } } }, "bad.json"),
      (err: Error & { code?: string }) => err.code === ErrorCode.TenantsInvalid && /bad\.json is invalid:[\s\S]*\/tenants\/x\/quotas\/period/.test(err.message));
    assert.throws(() => parseBackpressure({ default: { soft: 10, hard: 5 } }, "bp.json"),
      (err: Error & { code?: string }) => err.code === ErrorCode.BackpressureInvalid && /bp\.json is invalid:\n {2}\/default: hard \(5\) is below soft \(10\)/.test(err.message));
  });

  test("quotas - four counters racing on one real KV bucket admit exactly the quota; a refund takes a flow back; a refused charge counts nothing", async () => {
    await using server = await startServer();
    const ncs = await Promise.all(Array.from({ length: 4 }, () => connect({ servers: server.url })));
    try {
      const spec = MESH_BUCKETS[KvBucket.Quotas];
      const kv = await new Kvm(ncs[0]!).create(spec.name, { history: spec.history, ttl: spec.ttlMs });
      const counters = await Promise.all(ncs.map(async (nc) => quotaCounter(await new Kvm(nc).open(spec.name))));
      const acme = tenants.get("acme")!;
      const now = Date.now();
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) => counters[i % 4]!.charge(acme, { flows: 1, cost: 10 }, now)));
      const admitted = results.filter((r) => r.admitted);
      assert.equal(admitted.length, 5, "exactly the quota of 5 flows, whatever the race");
      const period = periodOf("hour", now);
      assert.deepEqual((await kv.get(quotaKey("acme", period.start)))!.json(), { flows: 5, cost: 50 });
      const refused = results.find((r) => !r.admitted)!;
      assert.deepEqual(refused, { admitted: false, quota: "flows", use: 5, limit: 5, asked: 1, period });
      if (!admitted[0]!.admitted) throw new Error("unreachable");
      await admitted[0]!.refund();
      assert.deepEqual(await counters[1]!.use(acme, now), { flows: 4, cost: 40, period });
      // The cost quota: 960 would take it past 1000, nothing is counted.
      const over = await counters[2]!.charge(acme, { flows: 1, cost: 961 }, now);
      assert.deepEqual(over, { admitted: false, quota: "cost", use: 40, limit: 1000, asked: 961, period });
      assert.deepEqual(await counters[3]!.use(acme, now), { flows: 4, cost: 40, period });
      // Another period starts from zero.
      assert.equal((await counters[0]!.charge(acme, { flows: 1, cost: 10 }, period.end)).admitted, true);
      assert.deepEqual(await counters[0]!.use(acme, period.end), { flows: 1, cost: 10, period: periodOf("hour", period.end) });
    } finally {
      for (const nc of ncs) await nc.close();
    }
  });

  test("quotas - charges arriving at once count ahead once, not once each: a process never holds more than a sixteenth of what was left", async () => {
    await using server = await startServer();
    const nc = await connect({ servers: server.url });
    try {
      const spec = MESH_BUCKETS[KvBucket.Quotas];
      const kv = await new Kvm(nc).create(spec.name, { history: spec.history, ttl: spec.ttlMs });
      const big = parseTenants({ tenants: { big: { description: "a large quota", quotas: { period: "hour", flows: 1000 }, weight: 1 } } }, "big.json").get("big")!;
      const counter = quotaCounter(kv);
      const now = Date.now();
      // 50 charges at once: they share compare-and-sets; only one of them may count ahead.
      const results = await Promise.all(Array.from({ length: 50 }, () => counter.charge(big, { flows: 1, cost: 0 }, now)));
      assert.ok(results.every((r) => r.admitted));
      const counted = (await kv.get(quotaKey("big", periodOf("hour", now).start)))!.json<{ flows: number }>().flows;
      assert.ok(counted >= 50 && counted <= 50 + Math.floor((1000 - 1) / 16), `counted ${counted}: the 50 charged and at most one sixteenth ahead`);
    } finally {
      await nc.close();
    }
  });

  test("quotas - over quota: 429 CW_ERR_QUOTA_EXCEEDED naming the quota, use, limit and reset, Retry-After until the reset; released flows are refunded; refusals are summed up in one signed decision per tenant", async () => {
    const use = { flows: 0, cost: 0 };
    const period = periodOf("hour", Date.now());
    const quotas: QuotaCounter = {
      charge(tenant, c) {
        const q = tenant.quotas!;
        if (use.flows + c.flows > q.flows!) return Promise.resolve({ admitted: false, quota: "flows", use: use.flows, limit: q.flows!, asked: c.flows, period });
        use.flows += c.flows;
        use.cost += c.cost;
        return Promise.resolve({ admitted: true, use: { ...use }, period, refund: (part = c) => { use.flows -= part.flows; use.cost -= part.cost; return Promise.resolve(); } });
      },
      use: () => Promise.resolve({ ...use, period }),
    };
    const published: Published[] = [];
    const a = admissionWith(fakePressure(), quotas, published);
    const acme = upstream("u-acme", "acme");
    const admitted = await a.admit(acme, [flow(Priority.Normal), flow(Priority.Normal), flow(Priority.Normal)]);
    assert.ok(admitted.admitted);
    await admitted.release(1); // a duplicate: taken back
    await admitted.release(1); // once
    assert.deepEqual(use, { flows: 2, cost: 200 });
    assert.ok((await a.admit(acme, [flow(Priority.Normal), flow(Priority.Normal), flow(Priority.Normal)])).admitted);
    const refused = await a.admit(acme, [flow(Priority.Background)]);
    assert.ok(!refused.admitted);
    refused.report(); // final: no resubmission in it (admitAndPublish decides that)
    assert.equal(refused.refusal.status, 429);
    assert.equal(refused.refusal.code, ErrorCode.QuotaExceeded);
    const resets = new Date(period.end).toISOString();
    assert.match(refused.refusal.message, new RegExp(`tenant acme \\(upstream u-acme\\) is over its flows quota: 5 of 5 flows used this period \\(hour, .* to ${resets}\\); a new flow would exceed it\\. The quota resets at ${resets}: retry after \\d+ s`));
    assert.ok(refused.refusal.retryafter! >= 1 && refused.refusal.retryafter! <= 3600);
    const again = await a.admit(acme, [flow(Priority.Normal)]);
    assert.ok(!again.admitted);
    again.report();
    // A refusal not reported (one that turned out a resubmission's) is not summed up.
    assert.equal((await a.admit(acme, [flow(Priority.Normal)])).admitted, false);
    // Another tenant is not affected.
    assert.ok((await a.admit(upstream("u-beta", "beta"), [flow(Priority.Normal)])).admitted);
    assert.equal(published.length, 0, "summed up, not one decision per refusal");
    await a.close();
    assert.equal(published.length, 1);
    assert.equal(published[0]!.subject, "mesh.decision.admission");
    const decision = NatsBinding.toEvent({ data: published[0]!.data, headers: published[0]!.headers });
    assert.equal(decision.type, "decision.admission");
    assert.equal(verifyEvent(decision, createKeyring([key])).verification.keyid, key.keyid, "signed by the gateway");
    const data = dataJson(decision) as Record<string, unknown>;
    assert.equal(data.action, "quota");
    assert.equal(data.tenant, "acme");
    assert.equal(data.count, 2);
    assert.deepEqual(data.upstreams, { "u-acme": 2 });
    assert.deepEqual(data.priorities, { background: 1, normal: 1 });
    assert.deepEqual((data.quotas as Record<string, unknown>).flows, { count: 2, limit: 5, use: 5, periodStart: new Date(period.start).toISOString(), periodEnd: resets });
  });

  test("tenants - the file reloads live: an edit applies, a bad edit (invalid, or dropping an upstream's tenant) keeps the last good and is reported, a save by rename is seen", async () => {
    const dir = mkdtempSync(join(tmpdir(), "causeway-tenants-"));
    const path = join(dir, "tenants.json");
    const doc = (flows: number, extra: Record<string, unknown> = {}) => JSON.stringify({ tenants: { demo: { description: "d", quotas: { period: "day", flows } }, ...extra } });
    writeFileSync(path, doc(10));
    const errors: Error[] = [];
    const reloads: number[] = [];
    const watched = watchInfraFile(path, (p) => {
      const t = loadTenants(p);
      if (tenantProblems(t, [{ name: "upstream-demo", tenant: "demo", budget: {} }]).length > 0) throw new Error("demo is gone");
      return t;
    }, { what: "the tenants", onReload: (err) => (err ? errors.push(err) : reloads.push(watched.current().get("demo")!.quotas!.flows!)) });
    try {
      assert.equal(watched.current().get("demo")!.quotas!.flows, 10);
      writeFileSync(path, doc(20));
      await waitFor(() => watched.current().get("demo")!.quotas!.flows === 20, { what: "the edit applied" });
      writeFileSync(path, "{ not json");
      await waitFor(() => errors.length === 1, { what: "the bad edit reported" });
      assert.match(errors[0]!.message, /is not valid JSON/);
      assert.equal(watched.current().get("demo")!.quotas!.flows, 20, "the last good tenants stay");
      writeFileSync(path, JSON.stringify({ tenants: { other: { description: "o" } } }));
      await waitFor(() => errors.length === 2, { what: "dropping demo refused" });
      assert.equal(watched.current().get("demo")!.quotas!.flows, 20);
      // An editor's save: a new file renamed over the old one.
      writeFileSync(join(dir, "tenants.json.tmp"), doc(30));
      renameSync(join(dir, "tenants.json.tmp"), path);
      await waitFor(() => watched.current().get("demo")!.quotas!.flows === 30, { what: "the renamed file applied" });
      assert.deepEqual(reloads, [20, 30]);
    } finally {
      watched.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("pressure - a handler's view of the coordinator's report on a real bucket: levels by the thresholds file, the stream's fill, stale once the reports stop", async () => {
    await using server = await startServer();
    const nc = await connect({ servers: server.url });
    const dir = mkdtempSync(join(tmpdir(), "causeway-pressure-"));
    try {
      const spec = MESH_BUCKETS[KvBucket.Pressure];
      const kv = await new Kvm(nc).create(spec.name, { history: spec.history });
      const path = join(dir, "backpressure.json");
      writeFileSync(path, JSON.stringify({ default: { soft: 10, hard: 20 }, capabilities: { "research.v1": { soft: 2, hard: 4 } }, stream: { soft: 0.5, hard: 0.9 }, staleMs: 1000 }));
      const report = (research: number, fill = 0) => JSON.stringify({
        at: new Date().toISOString(), intervalMs: 1000, stream: { name: "MESH_CAP", messages: 0, bytes: 0, maxMsgs: -1, maxBytes: -1, fill },
        capabilities: { "research.v1": { backlog: research, pending: research, ackPending: 0, drainPerSecond: 0, durables: {} }, "plan.v1": { backlog: 3, pending: 3, ackPending: 0, drainPerSecond: 0, durables: {} } },
      });
      const followed = await followPressure(nc, { backpressurePath: path });
      assert.deepEqual(followed.pressure("research", 1), { level: "ok", backlog: 0, stale: true }, "no report yet: ok, stale");
      await kv.put(PRESSURE_KEY, report(3));
      await waitFor(() => followed.pressure("research", 1).level === "soft", { what: "research at soft" });
      assert.deepEqual(followed.pressure("research", 1), { level: "soft", backlog: 3, stale: false });
      assert.deepEqual(followed.pressure("plan", 1), { level: "ok", backlog: 3, stale: false });
      await kv.put(PRESSURE_KEY, report(5));
      await waitFor(() => followed.pressure("research", 1).level === "hard", { what: "research at hard" });
      await kv.put(PRESSURE_KEY, report(0, 0.95));
      await waitFor(() => followed.pressure("plan", 1).level === "hard", { what: "a nearly full MESH_CAP: every capability at hard" });
      await followed.close();
      // Staleness by the reader's clock: fresh while the reports keep coming, stale once they stop.
      let now = Date.now();
      const view = await watchPressure(nc, { thresholds: () => parseBackpressure({ default: { soft: 10, hard: 20 }, staleMs: 1000 }), now: () => now });
      assert.equal(view.of("plan", 1).stale, false);
      now += 1500;
      assert.deepEqual([view.of("plan", 1).stale, view.of("plan", 1).level], [true, "ok"]);
      await view.close();
    } finally {
      await nc.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
