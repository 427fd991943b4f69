import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadPrincipals } from "../services/kit/index.ts";
import { loadPolicy, parsePolicy, watchPolicy } from "../services/coordinator/policy.ts";
import { waitFor } from "./harness/index.ts";

const principals = loadPrincipals();
const good = { capabilities: { "publish.v1": { critical: true, approvals: { count: 1, approvers: ["approver-alice"] }, leaseTtlMs: 60_000 } } };

test("policy - the shipped policy loads and agrees with principals.json", () => {
  const policy = loadPolicy(principals);
  assert.equal(policy.of("publish", 1)?.critical, true);
  assert.equal(policy.of("research", 1), undefined);
  // The health window: 60 s unless the policy says otherwise.
  assert.equal(policy.health.windowMs, 60_000);
  assert.equal(parsePolicy({ ...good, health: { windowMs: 5_000 } }, principals).health.windowMs, 5_000);
});

test("policy - every refusal names its JSON path and code", () => {
  const cases: [unknown, RegExp][] = [
    [{ capabilities: { "publish.v1": { critical: true } } }, /must have required property 'leaseTtlMs'/],
    [{ capabilities: { "publish.v1": { ...good.capabilities["publish.v1"], critical: false } } }, /\/capabilities\/publish\.v1: critical is false here but true in principals\.json/],
    [{ capabilities: {} }, /publish\.v1 is critical in principals\.json but has no policy here/],
    [{ capabilities: { "publish.v1": { ...good.capabilities["publish.v1"], approvals: { count: 1, approvers: ["researcher"] } } } }, /researcher is not an approver principal/],
    [{ capabilities: { "publish.v1": { ...good.capabilities["publish.v1"], approvals: { count: 2, approvers: ["approver-alice"] } } } }, /needs 2 approvals from 1 approvers/],
    [{ capabilities: { "publish.v1": { ...good.capabilities["publish.v1"], onDeadline: "escalate" } } }, /onDeadline "escalate" needs approvals and an escalation/],
    [{ capabilities: { "translate.v1": { critical: false, leaseTtlMs: 60_000 }, ...good.capabilities } }, /\/capabilities\/translate\.v1: no such capability/],
    // A window shorter than two heartbeats would often hold a single beat, and so no difference.
    [{ ...good, health: { windowMs: 1_000 } }, /\/health\/windowMs: must be >= 5000/],
    [{ ...good, health: { window: 60_000 } }, /\/health: unknown property "window"/],
  ];
  for (const [doc, message] of cases) {
    assert.throws(() => parsePolicy(doc, principals), (err: Error & { code?: string }) => err.code === "CW_ERR_POLICY_INVALID" && message.test(err.message), String(message));
  }
});

test("policy - a reload applies a good edit and keeps the last good policy on a bad one", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "causeway-policy-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "policy.json");
  writeFileSync(path, JSON.stringify(good));
  const problems: Error[] = [];
  const store = watchPolicy(principals, { path, onReload: (err) => { if (err) problems.push(err); } });
  t.after(() => store.close());
  writeFileSync(path, JSON.stringify({ capabilities: { "publish.v1": { ...good.capabilities["publish.v1"], leaseTtlMs: 90_000 } } }));
  await waitFor(() => store.policy().of("publish", 1)?.leaseTtlMs === 90_000, { what: "the reload" });
  writeFileSync(path, "{ not json");
  await waitFor(() => problems.length > 0, { what: "the refused reload" });
  assert.equal(store.policy().of("publish", 1)?.leaseTtlMs, 90_000, "the last good policy stays");
});
