// A principal the running server does not know yet — here an agent whose seed is newer than the server's rendered
// accounts, as after `causeway new agent` + `keys new` — is refused with an "Authorization Violation" that now says
// what to run, and `causeway principal add` makes it connect: accounts rendered again, the server reloaded (as
// sysadmin), the trust store seeded, its service started. On a real nats-server that includes the accounts file.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  ConfigError, ErrorCode, Role, connectAs, defaultLayout, publicKeyOf, type MeshService,
} from "../services/kit/index.ts";
import { createSeed } from "../services/cli/commands/keys.ts";
import { agentScript, runCli, startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { waitFor } from "./harness/index.ts";

const layout = defaultLayout();
/** An agent of the layout, playing the new principal. */
const agent: MeshService = layout.services.find((s) => s.role === Role.Agent)!;

/** A mesh whose server includes <data>/nats/accounts.conf (whatever the test started is killed on dispose). */
const meshWithAccountsFile = (): Promise<OperatedMesh> => startOperatedMesh({ includeAccounts: true });

describe("principal add", () => {
  test("principal add - a principal the server does not know is told what to run, then connects after principal add", async () => {
    await using mesh = await meshWithAccountsFile();
    const env = { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir, NATS_URL: mesh.server.url, LOG_LEVEL: "warn" };
    const key = createSeed(agent.name, { dir: mesh.dataDir, force: true }).publicKey; // newer than the server's accounts

    await assert.rejects(connectAs(agent.name, { servers: mesh.server.url, dataDir: mesh.dataDir, options: { reconnect: false } }), (err: unknown) =>
      err instanceof ConfigError && err.code === ErrorCode.NotAuthorized && err.message.includes(`refused principal "${agent.name}" (Authorization Violation)`) &&
      err.message.includes(key) && err.message.includes(`\`causeway principal add ${agent.name}\``) && err.message.includes("`causeway trust seed`"));
    // Its process says the same on stderr, and exits 1.
    const early = mesh.spawn(agentScript(agent.name));
    assert.equal(await early.exited, 1);
    assert.match(early.output(), new RegExp(`${agent.name}: the NATS server at .* refused principal "${agent.name}".*causeway principal add ${agent.name}`));
    // And `causeway start` reports that line whole, the fix to its last command, not cut mid-sentence.
    const refused = await runCli(["start", agent.name], env);
    assert.equal(refused.code, 1, refused.stdout + refused.stderr);
    assert.match(refused.stdout, new RegExp(`^✗ ${agent.name}\\.1 exited \\(code 1\\) before it answered: ${agent.name}: the NATS server at \\S+ refused principal "${agent.name}" ` +
      `\\(Authorization Violation\\): it does not know its key ${key}\\. On a development mesh run \`causeway principal add ${agent.name}\` \\([^)]*\\); ` +
      `by hand: .*\`causeway trust seed\`; log \\S+${agent.name}\\.log \\(${ErrorCode.Unavailable}\\)$`, "m"));

    const added = await runCli(["principal", "add", agent.name], env);
    assert.equal(added.code, 0, added.stdout + added.stderr);
    assert.match(added.stdout, new RegExp(`✓ ${agent.name}'s identity — seed kept in .*, public key ${key}`));
    assert.match(added.stdout, /✓ server accounts — .*nats\/accounts\.conf \(/);
    assert.match(added.stdout, /✓ server reload — \$SYS\.REQ\.SERVER\.\S+\.RELOAD as sysadmin/);
    assert.match(added.stdout, new RegExp(`✓ ${agent.name} connects — ${mesh.server.url.replaceAll(".", "\\.")} accepts its key`));
    assert.match(added.stdout, /✓ trust store — \d+ keys \(1 new or updated\)/);
    assert.match(added.stdout, new RegExp(`✓ ${agent.name} — started replica 1 \\(pid \\d+\\)`));

    const nc = await connectAs(agent.name, { servers: mesh.server.url, dataDir: mesh.dataDir });
    await nc.close();
    await waitFor(() => mesh.trust.entry(publicKeyOf(agent.name, mesh.dataDir)), { what: "the new key in the trust store" });

    // Again: nothing to render, nothing to reload, nothing to start.
    const again = await runCli(["principal", "add", agent.name], env);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stdout, /✓ server accounts — .*accounts\.conf, unchanged/);
    assert.doesNotMatch(again.stdout, /server reload/);
    assert.match(again.stdout, new RegExp(`= already running: ${agent.name} \\(pid \\d+\\)`));
    assert.equal((await runCli(["stop", agent.name], env)).code, 0);
  });

  test("principal add - a name infra/principals.json does not declare is refused before anything is written", async () => {
    await using mesh = await meshWithAccountsFile();
    const r = await runCli(["principal", "add", "nobody"], { ...process.env, CAUSEWAY_DATA_DIR: mesh.dataDir, NATS_URL: mesh.server.url });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`unknown principal "nobody".*\\(${ErrorCode.UnknownPrincipal}\\)`));
  });
});
