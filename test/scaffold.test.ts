// `causeway new agent` in a copy of the repository (so nothing is left in this one): it writes the agent folder, its
// test, a locked schema stub and its infra/principals.json entries, and the generated test passes as generated, on a
// real nats-server; it refuses to overwrite anything, and then writes nothing at all.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { Svcm } from "@nats-io/services";
import {
  ConfigError, ErrorCode, KvBucket, Role, createSchemaRegistry, emitsCover, loadPrincipals, parseFactRef, schemaIdOf, subscribersOf,
} from "../services/kit/index.ts";
import { checkSchemaLock, readSchemaLock } from "../services/kit/ops/index.ts";
import { planAgent, writePlan } from "../services/cli/scaffold.ts";
import { agentScript, runCli, startOperatedMesh, type CliRun } from "./e2e-fixture.ts";
import { repoRoot, toolsBin, waitFor } from "./harness/index.ts";

/** What a copy of the repository needs to run the CLI, the tests and the typechecker; node_modules is linked. */
const COPIED = ["bin", "services", "schemas", "infra", "streams", "test", "package.json", "tsconfig.json"];

function repoCopy(): string {
  const root = mkdtempSync(join(tmpdir(), "causeway-scaffold-"));
  for (const entry of COPIED) cpSync(join(repoRoot, entry), join(root, entry), { recursive: true });
  symlinkSync(join(repoRoot, "node_modules"), join(root, "node_modules"));
  return root;
}

/** Every file of the copy (node_modules aside) with its digest: what "nothing was written" is checked against. */
function tree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of readdirSync(root, { recursive: true, withFileTypes: true })) {
    const path = join(e.parentPath, e.name);
    if (!e.isFile() || relative(root, path).startsWith("node_modules")) continue;
    out[relative(root, path)] = createHash("sha256").update(readFileSync(path)).digest("hex");
  }
  return out;
}

function run(command: string, args: readonly string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<CliRun> {
  // A `node --test` run inside this one would report to it (NODE_TEST_CONTEXT) instead of printing.
  const { NODE_TEST_CONTEXT: _inherited, ...outer } = process.env;
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd, env: { ...outer, ...env }, timeout: 120_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}

// The reference principals, before any scaffold: what the new entry is derived from.
const original = loadPrincipals();
const runningAgents = Object.values(original.principals).filter((p) => p.role === Role.Agent && p.entry !== undefined);
const FACT = "report.published.v1";
const { type: factType, major: factMajor } = parseFactRef(FACT)!;

/** The `event send` command the next steps print (their note, when it is on the line above, left out). */
function printedSend(stdout: string): string {
  const line = stdout.split("\n").map((l) => l.trim()).find((l) => l.startsWith("bin/causeway event send "));
  assert.ok(line, stdout);
  return line;
}

/** Its inline `--data '<json>'`, parsed, after checking it is quoted for a shell as one word. */
function printedData(send: string): unknown {
  const m = / --data '([^']*)'(?:\s|$)/.exec(send);
  assert.ok(m, `inline data in ${send}`);
  return JSON.parse(m[1]!);
}

describe("new agent", () => {
  let root: string;
  const causeway = (...args: string[]) => runCli(args, { ...process.env, CAUSEWAY_DATA_DIR: join(root, ".data") }, root);

  before(() => { root = repoCopy(); });
  after(() => { if (root) rmSync(root, { recursive: true, force: true }); });

  test("new agent - writes the folder, its test, a locked stub schema and its principals.json entries; prints the next commands", async () => {
    const r = await causeway("new", "agent", "digester", "--capability", "digest.v1", "--accepts", factType, "--emits", "report.digested");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const files = ["services/agents/digester/definition.ts", "services/agents/digester/config.ts", "services/agents/digester/main.ts", "test/agents/digester.test.ts", "schemas/report/report.digested.v1.json"];
    for (const f of files) {
      assert.ok(existsSync(join(root, f)), f);
      assert.match(r.stdout, new RegExp(`\\+ +${f.replaceAll(".", "\\.")}`));
    }
    assert.match(r.stdout, /~ +infra\/principals\.json +capability digest\.v1, principal digester/);
    assert.match(r.stdout, /~ +schemas\/schemas\.lock\.json +locks https:\/\/causeway\.dev\/schemas\/report\.digested\/1\.0\.0/);
    // Nobody addresses digest.v1 yet, so the command names a placeholder sender; its data is valid as printed.
    const send = printedSend(r.stdout);
    assert.match(send, new RegExp(`--type ${factType.replaceAll(".", "\\.")} --data '`));
    createSchemaRegistry({ dir: join(root, "schemas") }).validate(schemaIdOf(factType, `${factMajor}.0.0`), printedData(send));
    for (const next of ["bin/causeway principal add digester", "bin/causeway keys new digester", "bin/causeway infra render --full", "nats-server --signal reload=", "bin/causeway trust seed", "bin/causeway start digester", "micro ls", "bin/causeway lineage trace"]) {
      assert.ok(r.stdout.includes(next), `the next commands name ${next}`);
    }

    const doc = JSON.parse(readFileSync(join(root, "infra/principals.json"), "utf8")) as { capabilities: Record<string, unknown>; principals: Record<string, Record<string, unknown>> };
    assert.deepEqual(Object.keys(doc.principals).at(-1), "digester", "appended");
    assert.deepEqual(doc.capabilities["digest.v1"], { description: "Work for digester" });
    const entry = doc.principals.digester!;
    assert.deepEqual({ ...entry, kv: undefined }, {
      role: "agent", description: "Serves digest.v1; emits report.digested", service: "digester", entry: "services/agents/digester/main.ts", replicas: 1,
      serves: ["digest.v1"], emits: ["report.digested"], publish: [`${original.prefix}.evt.report.digested.>`], kv: undefined,
    });
    // The KV grants every running agent has, derived from them: the kill switches it reads, the processed set it writes.
    const kv = entry.kv as { read: string[]; write: string[] };
    assert.ok(kv.read.includes(KvBucket.Switches) && kv.write.includes(KvBucket.Processed));
    for (const side of ["read", "write"] as const) for (const b of kv[side]) assert.ok(runningAgents.every((a) => a.kv[side].includes(b as never)), `${side} ${b}`);
    // The rest of the file is as it was, byte for byte in its JSON (2-space, key order kept).
    const before = JSON.parse(readFileSync(join(repoRoot, "infra/principals.json"), "utf8")) as typeof doc;
    assert.deepEqual(Object.keys(doc.principals).slice(0, -1), Object.keys(before.principals));
    assert.equal(readFileSync(join(root, "infra/principals.json"), "utf8"), `${JSON.stringify({ ...before, capabilities: { ...before.capabilities, "digest.v1": doc.capabilities["digest.v1"] }, principals: { ...before.principals, digester: entry } }, null, 2)}\n`);

    const stub = schemaIdOf("report.digested", "1.0.0");
    assert.equal((JSON.parse(readFileSync(join(root, "schemas/report/report.digested.v1.json"), "utf8")) as { $id: string }).$id, stub);
    assert.ok(Object.hasOwn(readSchemaLock(join(root, "schemas")).schemas, stub));
    assert.deepEqual(checkSchemaLock(join(root, "schemas")), []);
    // The mesh runs it: the layout (entry, consumers, schemas) loads with it, and ps lists it.
    const ps = await causeway("ps", "--json");
    assert.equal(ps.code, 0, ps.stderr);
    assert.ok((JSON.parse(ps.stdout) as { service: string }[]).some((row) => row.service === "digester"));
  });

  test("new agent - the generated code typechecks, and the generated test passes as generated on a real nats-server", async () => {
    writeFileSync(join(root, "tsconfig.generated.json"), JSON.stringify({ extends: "./tsconfig.json", include: ["services/agents/digester/*.ts", "test/agents/digester.test.ts"] }));
    const tsc = await run(process.execPath, [join(repoRoot, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", "tsconfig.generated.json"], root);
    assert.equal(tsc.code, 0, tsc.stdout + tsc.stderr);
    const t = await run(process.execPath, ["--test", "--test-reporter=tap", "test/agents/digester.test.ts"], root, { CAUSEWAY_TOOLS_BIN: toolsBin });
    assert.equal(t.code, 0, t.stdout + t.stderr);
    assert.match(t.stdout, /# pass 1\n# fail 0/);
  });

  test("new agent - refuses to overwrite anything, and then writes nothing", async () => {
    const unchanged = tree(root);
    const refusals: [string[], RegExp][] = [
      [["digester", "--capability", "other.v1", "--accepts", factType, "--emits", "report.other"], /already declares a principal "digester"/],
      [[runningAgents[0]!.name, "--capability", "other.v1", "--accepts", factType, "--emits", "report.other"], new RegExp(`already declares a principal "${runningAgents[0]!.name}"`)],
      [["another", "--capability", runningAgents[0]!.serves[0]!, "--accepts", factType, "--emits", "report.other"], new RegExp(`${runningAgents[0]!.name} already serves ${runningAgents[0]!.serves[0]!.replaceAll(".", "\\.")}`)],
    ];
    for (const [args, message] of refusals) {
      const r = await causeway("new", "agent", ...args);
      assert.equal(r.code, 1, `${args.join(" ")}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, message);
      assert.match(r.stderr, new RegExp(`nothing was written .*\\(${ErrorCode.ScaffoldExists}\\)`));
    }
    mkdirSync(join(root, "services/agents/lurker"));
    const folder = await causeway("new", "agent", "lurker", "--capability", "lurk.v1", "--accepts", factType, "--emits", "report.lurked");
    assert.match(folder.stderr, new RegExp(`services/agents/lurker exists; nothing was written .*\\(${ErrorCode.ScaffoldExists}\\)`));
    rmSync(join(root, "services/agents/lurker"), { recursive: true });
    for (const [args, message] of [
      [["Summarizer", "--capability", "x.v1", "--accepts", factType, "--emits", "a.b"], /the agent's name must be one lowercase token/],
      [["fine", "--capability", "x", "--accepts", factType, "--emits", "a.b"], /--capability must be <capability>\.v<major>/],
      [["fine", "--capability", "x.v1", "--emits", "a.b"], /name what x\.v1 accepts/],
    ] as const) {
      const r = await causeway("new", "agent", ...args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.match(r.stderr, new RegExp(ErrorCode.Usage));
    }
    const unknown = await causeway("new", "agent", "fine", "--capability", "x.v1", "--accepts", "no.such.type", "--emits", "a.b");
    assert.match(unknown.stderr, new RegExp(`no schema for no\\.such\\.type .*\\(${ErrorCode.UnknownSchema}\\)`));
    assert.deepEqual(tree(root), unchanged, "nothing was written by any refusal");
  });

  test("new agent - a file that appears between the checks and the writes: everything written is undone", () => {
    const unchanged = tree(root);
    const plan = planAgent({ root, name: "racer", capability: "race.v1", accepts: [factType], emits: ["report.raced"] });
    writeFileSync(join(root, "test/agents/racer.test.ts"), "// someone else's\n");
    assert.throws(() => writePlan(plan), (err: unknown) => err instanceof ConfigError && err.code === ErrorCode.ScaffoldExists);
    rmSync(join(root, "test/agents/racer.test.ts"));
    assert.deepEqual(tree(root), unchanged);
  });

  test("new agent --subscribes: the principal subscribes to the fact, the definition declares it, the test publishes it as its producer", async () => {
    const r = await causeway("new", "agent", "listener", "--capability", "listen.v1", "--subscribes", FACT, "--emits", "report.heard");
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const entry = (JSON.parse(readFileSync(join(root, "infra/principals.json"), "utf8")) as { principals: Record<string, { serves: string[]; subscribes: string[] }> }).principals.listener!;
    assert.deepEqual([entry.serves, entry.subscribes], [["listen.v1"], [FACT]]);
    const dataschema = schemaIdOf(factType, `${factMajor}.0.0`);
    const definition = readFileSync(join(root, "services/agents/listener/definition.ts"), "utf8");
    assert.ok(definition.includes(`subscribes: { "${factType}": ListenerSchema["${factType}"] }`));
    assert.ok(definition.includes(`accepts: { "${factType}": ListenerSchema["${factType}"] }`), "the capability accepts what it subscribes to");
    assert.ok(definition.includes(`"${factType}": "${dataschema}"`));
    const generated = readFileSync(join(root, "test/agents/listener.test.ts"), "utf8");
    assert.ok(generated.includes(`mesh.publishFact("${factType}", ${factMajor}, REPORT_PUBLISHED)`));
    // The next commands name who can send it a fact now: a principal that emits it.
    const producer = Object.values(original.principals).find((p) => p.role !== Role.Upstream && emitsCover(p.emits, factType))!;
    assert.match(r.stdout, new RegExp(`# the fact it subscribes to, with the example data of its test:\n +bin/causeway event send --as ${producer.name} --type ${factType} --to ${original.prefix}\\.evt\\.${factType.replaceAll(".", "\\.")}\\.v${factMajor} --data '`));
    // That command works as printed: run by a shell from the repository against a mesh (the reference agents' own,
    // the copy's agents not in it), its data validates and the fact is processed by the agent that reads it now.
    const send = printedSend(r.stdout);
    createSchemaRegistry({ dir: join(root, "schemas") }).validate(schemaIdOf(factType, `${factMajor}.0.0`), printedData(send));
    {
      await using mesh = await startOperatedMesh();
      const reader = subscribersOf(original, { type: factType, major: factMajor }).find((p) => p.entry !== undefined)!;
      mesh.spawn(agentScript(reader.name));
      await waitFor(async () => {
        for await (const _ of await new Svcm(mesh.operator).client({ strategy: "timer", maxWait: 300 }).ping(reader.service!)) return true;
        return false;
      }, { what: `${reader.name} to answer`, timeoutMs: 20_000 });
      const sent = await run("sh", ["-c", send], root, { CAUSEWAY_DATA_DIR: mesh.dataDir, NATS_URL: mesh.server.url, LOG_LEVEL: "warn" });
      assert.equal(sent.code, 0, sent.stdout + sent.stderr);
      assert.match(sent.stdout, new RegExp(`✓ sent ${factType.replaceAll(".", "\\.")} \\S+ as ${producer.name} to \\S+ — stream MESH_EVT`));
      assert.match(sent.stdout, new RegExp(`✓ processed: 1 event\\(s\\) caused by it\n +\\S+ → \\S+ \\(MESH_EVT seq \\d+\\) from ${reader.name}`));
    }
    // As generated, it typechecks and its test passes: the fact reaches it through its own durable.
    writeFileSync(join(root, "tsconfig.listener.json"), JSON.stringify({ extends: "./tsconfig.json", include: ["services/agents/listener/*.ts", "test/agents/listener.test.ts"] }));
    const tsc = await run(process.execPath, [join(repoRoot, "node_modules/typescript/bin/tsc"), "--noEmit", "-p", "tsconfig.listener.json"], root);
    assert.equal(tsc.code, 0, tsc.stdout + tsc.stderr);
    const t = await run(process.execPath, ["--test", "--test-reporter=tap", "test/agents/listener.test.ts"], root, { CAUSEWAY_TOOLS_BIN: toolsBin });
    assert.equal(t.code, 0, t.stdout + t.stderr);
    assert.match(t.stdout, /# pass [1-9]\d*\n# fail 0/);
  });
});
