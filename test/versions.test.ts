// Issue 15, item 8: a second implementation version of an agent, run beside the first under the same principal.
// infra/principals.json declares researcher 1.1.0 under `versions`; `causeway start researcher@1.1.0` runs it (its
// own pid files and log), `causeway agents` lists both versions of research.v1, `causeway stop researcher@1.1.0`
// stops only it. The layout and the start-time check refuse what would make two services claim one version.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { ErrorCode, checkVersion, defaultLayout, loadLayout, parsePrincipals, type MeshLayout } from "../services/kit/index.ts";
import type { CapabilityInstances } from "../services/cli/commands/agents.ts";
import { loadVersion } from "../services/cli/replay.ts";
import { runCli, startOperatedMesh } from "./e2e-fixture.ts";
import { waitFor } from "./harness/index.ts";

const layout = defaultLayout();

/** infra/principals.json with the researcher's `versions` replaced. */
function layoutWithVersions(versions: Record<string, { entry: string }>): MeshLayout {
  const file = JSON.parse(readFileSync(layout.sources.principals, "utf8")) as { principals: { researcher: Record<string, unknown> } };
  file.principals.researcher.versions = versions;
  return loadLayout({ principals: parsePrincipals(file, "test principals") });
}

describe("agent versions side by side", () => {
  test("versions - the layout names each declared version <principal>@<version>; an undeclared one is CW_ERR_UNKNOWN_VERSION; a bad key is refused by the schema", () => {
    const v = layout.service("researcher@1.1.0");
    assert.deepEqual([v.name, v.principal, v.version, v.service, v.entry], ["researcher@1.1.0", "researcher", "1.1.0", "researcher", "services/agents/researcher/v1.1/main.ts"]);
    assert.ok(!layout.services.includes(v), "`causeway up` and a start of everything never run a version");
    assert.equal(layout.service("researcher").version, undefined);
    assert.throws(() => layout.service("researcher@2.0.0"), (err: { code?: string; message: string }) => err.code === ErrorCode.UnknownVersion && /its "versions": 1\.1\.0/.test(err.message));
    assert.throws(() => layout.service("nobody@1.0.0"), { code: ErrorCode.UnknownPrincipal });
    assert.throws(() => layoutWithVersions({ "1.1": { entry: "services/agents/researcher/v1.1/main.ts" } }), { code: ErrorCode.PrincipalsInvalid });
    assert.throws(() => layoutWithVersions({ "1.2.0": { entry: "services/agents/researcher/main.ts" } }), (err: Error) => /is the principal's own entry/.test(err.message));
    assert.throws(() => layoutWithVersions({ "1.2.0": { entry: "services/agents/researcher/v9/main.ts" } }), (err: Error) => /researcher@1\.2\.0's entry .* does not exist/.test(err.message));
  });

  test("versions - a process must run the version it was started as, and the principal's entry one not declared under versions (CW_ERR_VERSION_MISMATCH)", () => {
    assert.doesNotThrow(() => checkVersion({ principal: "researcher", version: "1.1.0" }, layout, "1.1.0"));
    assert.doesNotThrow(() => checkVersion({ principal: "researcher", version: "1.0.0" }, layout, undefined));
    assert.throws(() => checkVersion({ principal: "researcher", version: "1.0.0" }, layout, "1.1.0"), (err: { code?: string; message: string }) => err.code === ErrorCode.VersionMismatch && /started as researcher@1\.1\.0, but services\/agents\/researcher\/v1\.1\/main\.ts defines version 1\.0\.0/.test(err.message));
    assert.throws(() => checkVersion({ principal: "researcher", version: "1.1.0" }, layout, undefined), (err: { code?: string; message: string }) => err.code === ErrorCode.VersionMismatch && /causeway start researcher@1\.1\.0/.test(err.message));
  });

  test("versions - replay loads a version's definition from its entry without starting it; an entry that starts at import is refused, never run", async () => {
    assert.equal((await loadVersion(layout, "research.v1", "1.1.0")).definition.version, "1.1.0");
    assert.equal((await loadVersion(layout, "research.v1", "1.0.0")).service.name, "researcher");
    await assert.rejects(loadVersion(layout, "report.v1", "1.0.0"), (err: { code?: string; message: string }) => err.code === ErrorCode.ReplayUnsupported && /exports no `definition` factory/.test(err.message));
    // An entry written the old way (it runs at import): the import fails in the kit before anything connects.
    const old = layoutWithVersions({ "1.9.0": { entry: "test/fixtures/replay/starts-at-import.ts" } });
    await assert.rejects(loadVersion(old, "research.v1", "1.9.0"), (err: { code?: string; message: string }) => err.code === ErrorCode.ReplayUnsupported && /must run the process only under `if \(import\.meta\.main\)`/.test(err.message));
  });

  test("versions - causeway start researcher@1.1.0 runs it beside 1.0.0; agents lists both versions; stop researcher@1.1.0 stops only it", async () => {
    await using mesh = await startOperatedMesh();
    const env = { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir, NATS_URL: mesh.server.url, LOG_LEVEL: "info" };
    const causeway = (...args: string[]) => runCli(args, env);
    const research = async () => {
      const r = await causeway("agents", "--json");
      assert.equal(r.code, 0, r.stderr);
      return (JSON.parse(r.stdout) as CapabilityInstances[]).find((c) => c.capability === "research.v1")!;
    };

    const stable = await causeway("start", "researcher");
    assert.equal(stable.code, 0, stable.stdout + stable.stderr);
    const candidate = await causeway("start", "researcher@1.1.0");
    assert.equal(candidate.code, 0, candidate.stdout + candidate.stderr);
    assert.match(candidate.stdout, /^✓ researcher@1\.1\.0 — started replica 1 \(pid \d+\)/m, "ready once a 1.1.0 process answers, not the 1.0.0 one");
    assert.match(candidate.stdout, /^! researcher@1\.1\.0 serves research\.v1, which no route table routes yet/m);

    const ps = JSON.parse((await causeway("ps", "--json")).stdout) as { service: string; replica: number | null; state: string; log: string }[];
    assert.deepEqual(ps.filter((r) => r.service.startsWith("researcher")).map((r) => [r.service, r.replica, r.state]), [["researcher", 1, "running"], ["researcher@1.1.0", 1, "running"]]);
    assert.match(ps.find((r) => r.service === "researcher@1.1.0")!.log, /researcher@1\.1\.0\.log$/);

    const both = await waitFor(async () => { const r = await research(); return r.versions.length === 2 && r; }, { what: "both researcher versions heartbeating" });
    assert.deepEqual(both.versions, ["1.0.0", "1.1.0"]);
    assert.deepEqual(both.instances.map((i) => i.principal), ["researcher", "researcher"]);

    const stopped = await causeway("stop", "researcher@1.1.0");
    assert.equal(stopped.code, 0, stopped.stdout);
    assert.match(stopped.stdout, /^✓ stopped researcher@1\.1\.0\.1 \(pid \d+\) — drained in/m);
    assert.deepEqual((await research()).versions, ["1.0.0"], "a clean stop removes its instance at once; 1.0.0 runs on");

    const unknown = await causeway("start", "researcher@2.0.0");
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /researcher declares no version "2\.0\.0" .*\(CW_ERR_UNKNOWN_VERSION\)/);
  });
});
