// Issue 12, finding 12: a state the mesh fails closed on must be visible to the operator, with the repair. An
// unreadable kill switch value pauses what it names for every agent (fail closed); `causeway switches` used to
// skip it and say "no switch is on: every capability runs".
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { test } from "node:test";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Svcm } from "@nats-io/services";
import {
  KvBucket, createLogger, createSchemaRegistry, defaultLayout, openTrustStore, publicKeyOf, readSeed, signingKeyFromNkeySeed, startRouter, switchKey, watchSwitches,
} from "../../services/kit/index.ts";
import { loadPolicy } from "../../services/coordinator/policy.ts";
import { start } from "../../services/coordinator/switches.ts";
import { run as runSwitchCommand } from "../../services/cli/commands/switch.ts";
import { startOperatedMesh } from "../e2e-fixture.ts";
import { repoRoot, waitFor } from "../harness/index.ts";

test("fail closed - an unreadable switch value that agents treat as a pause is listed by causeway switches, with the repair that clears it", async (t) => {
  await using mesh = await startOperatedMesh();
  const nc = await mesh.as("coordinator");
  const trust = await openTrustStore(nc);
  t.after(() => trust.close());
  const service = await new Svcm(nc).add({ name: "coordinator", version: "1.0.0" });
  const quiet = createLogger({ name: "coordinator", level: "silent" });
  const layout = defaultLayout();
  const module = await start({
    nc, js: jetstream(nc), jsm: await jetstreamManager(nc), trust, key: signingKeyFromNkeySeed(readSeed("coordinator", mesh.dataDir)), principal: "coordinator",
    layout, subjects: layout.subjects, schemas: createSchemaRegistry(), policy: { policy: () => loadPolicy(layout.principals), close: () => undefined }, service, log: quiet,
    router: await startRouter(nc, layout.subjects, { log: quiet }),
  });
  t.after(async () => {
    await module.stop();
    await service.stop();
  });
  await nc.flush();

  // Junk where a switch value belongs: what a reply injected onto $KV.causeway_switches.<key> leaves behind.
  const key = switchKey("capability", "research.v1");
  await (await new Kvm(nc).open(KvBucket.Switches)).put(key, "junk"); // only the coordinator may write it
  const agentView = await watchSwitches(await mesh.as("researcher"), { onProblem: () => undefined });
  t.after(() => agentView.close());
  const target = { capability: "research", major: 1, principal: "researcher" };
  await waitFor(() => agentView.isPaused(target) !== undefined, { what: "agents to treat the unreadable value as a pause" });

  const saved = process.env.CAUSEWAY_DATA_DIR;
  process.env.CAUSEWAY_DATA_DIR = mesh.dataDir;
  t.after(() => {
    if (saved === undefined) delete process.env.CAUSEWAY_DATA_DIR;
    else process.env.CAUSEWAY_DATA_DIR = saved;
  });
  const out: string[] = [];
  t.mock.method(console, "log", (line: string) => { out.push(line); });
  const cmd = async (...args: string[]) => {
    out.length = 0;
    return runSwitchCommand([...args, "--server", mesh.server.url]);
  };

  assert.equal(await cmd("switches"), 0);
  assert.notDeepEqual(out, ["no switch is on: every capability runs"], "the operator is not told everything runs");
  assert.match(out[1]!, /^capability\s+research\.v1\s+unreadable switch value \(agents treat it as paused until it is repaired with `causeway resume`\): switch capability\.research_v1: the value is not JSON/);
  assert.equal(out[2], `! the switch ${key} cannot be read, so agents treat it as paused until it is repaired: bin/causeway resume capability research.v1 --reason "repair an unreadable switch"`);

  // The repair it names works: the value is gone and agents run again.
  assert.equal(await cmd("resume", "capability", "research.v1", "--reason", "repair an unreadable switch", "--operator", "alice"), 0);
  await waitFor(() => agentView.isPaused(target) === undefined, { what: "agents to run again" });
  assert.equal(await cmd("switches"), 0);
  assert.deepEqual(out, ["no switch is on: every capability runs"]);
});

test("fail closed - a malformed trust entry, whose key then verifies nothing, is reported by causeway trust ls with the repair that works", async () => {
  await using mesh = await startOperatedMesh();
  const causeway = (...args: string[]) => new Promise<{ code: number; stdout: string; stderr: string }>((resolve, reject) => {
    execFile(join(repoRoot, "bin", "causeway"), args, { env: { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir, NATS_URL: mesh.server.url }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
  const planner = publicKeyOf("planner", mesh.dataDir);
  const trust = await new Kvm(mesh.operator).open(KvBucket.Trust);
  await trust.put(planner, "{\"principal\":\"planner\"}"); // junk over the planner's entry
  const ls = await causeway("trust", "ls");
  assert.equal(ls.code, 1, ls.stderr);
  assert.match(ls.stderr, new RegExp(`^✗ trust store entry ${planner} is invalid and ignored: .*\\(CW_ERR_TRUST_ENTRY_INVALID\\): events signed with ${planner} fail as unknown_key until it is repaired: nats kv del causeway_trust ${planner}, then bin/causeway trust seed$`, "m"));

  // The repair it names.
  await trust.delete(planner);
  const seed = await causeway("trust", "seed");
  assert.equal(seed.code, 0, seed.stderr);
  const again = await causeway("trust", "ls");
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`^planner +${planner} `, "m"));
});
