// The short chaos suite (issue 14, item 5): two scenarios of `make chaos` with a dozen flows each, on a fresh
// 3-node mesh (`causeway up --cluster 3`, every stream and bucket at R3): the MESH_CAP leader node SIGKILLed and
// started again, and an agent SIGKILLed mid-flow (restarted by `causeway start` unless a supervisor did). Every
// flow the gateway accepted completes exactly once, and lineage's log verifies against its signed checkpoints.
// Every process a scenario starts is killed when it ends, failed or not (the mesh's dispose).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { agentKill, leaderKill, renderTable, runScenario, type Load } from "./chaos/scenarios.ts";

const SHORT: Load = { flows: 12, rate: 1.5, faultAfterMs: 3_000, afterHealMs: 3_000, quiesceMs: 40_000 };

describe("chaos - short scenarios on a 3-node mesh", () => {
  for (const scenario of [leaderKill(5_000), agentKill(5_000)]) {
    test(`chaos - ${scenario.name}: nothing accepted is lost or duplicated, lineage verifies`, async () => {
      const r = await runScenario(scenario, SHORT);
      const table = renderTable([r]);
      assert.equal(r.error, undefined, table);
      assert.ok(r.posted >= SHORT.flows, table);
      assert.ok(r.accepted > 0, table);
      assert.equal(r.lost, 0, table);
      assert.equal(r.completed, r.accepted, table);
      assert.equal(r.duplicated, 0, table);
      assert.equal(r.lineageVerify, "pass", `${table}\n${r.lineageDetail}`);
    });
  }
});
