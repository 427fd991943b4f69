// Identities end to end: seeds written by the real `causeway keys` command, the accounts rendered by
// `causeway infra render`, a real nats-server running them, and the real nats CLI. Each test uses its own
// temporary data directory, never the repository's .data.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createUser, fromSeed } from "@nats-io/nkeys";
import { connect, nkeyAuthenticator, PermissionViolationError } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { Svcm } from "@nats-io/services";
import { renderInfra } from "../services/cli/commands/infra.ts";
import { repoRoot, runNats, startServer, toolPath, waitFor } from "./harness/index.ts";
import type { NatsServer } from "./harness/index.ts";
import { ErrorCode, connectAs, isCausewayError, loadPrincipals, parsePrincipals, seedPath, subjectMatches } from "../services/kit/index.ts";
import { permissionsFor } from "../services/kit/ops/index.ts";

const principals = loadPrincipals();
const names = Object.keys(principals.principals);
const cliPath = join(repoRoot, "services", "cli", "main.ts");
const publicKeyPattern = /^U[A-Z2-7]{55}$/;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real `causeway` command with CAUSEWAY_DATA_DIR = `data`. */
function causeway(args: string[], data: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [cliPath, ...args], { env: { ...process.env, CAUSEWAY_DATA_DIR: data }, timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") return reject(err);
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}

function tempDataDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "causeway-identities-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `action` and resolves with the permissions violation the server reports on `nc` for `subject`. */
async function violation(nc: NatsConnection, subject: string, action: () => unknown): Promise<PermissionViolationError> {
  const seen: PermissionViolationError[] = [];
  const status = nc.status()[Symbol.asyncIterator]();
  void (async () => {
    for (let s = await status.next(); !s.done; s = await status.next()) {
      if (s.value.type === "error" && s.value.error instanceof PermissionViolationError) seen.push(s.value.error);
    }
  })();
  try {
    await action();
    // The server answers a PUB/SUB it refuses with -ERR before the PONG of this flush.
    await nc.flush();
    return await waitFor(() => seen.find((e) => e.subject === subject), { timeoutMs: 5_000, what: `a permissions violation on ${subject}` });
  } finally {
    // Not awaited: an async generator finishes return() only after its pending next(), i.e. the next status.
    void status.return?.();
  }
}

/** Asserts that a request fails because the server refused its subject (nats.js wraps it in a RequestError). */
async function refused(request: Promise<unknown>): Promise<void> {
  await assert.rejects(request, (err: unknown) => {
    const cause = err instanceof PermissionViolationError ? err : (err as Error).cause;
    assert.ok(cause instanceof PermissionViolationError, `expected a permissions violation, got ${String(err)}`);
    return true;
  });
}

test("identities - keys new writes a 0600 seed in a 0700 directory and prints only the public key", async (t) => {
  const data = tempDataDir(t);
  const res = await causeway(["keys", "new", "researcher"], data);
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /^U[A-Z2-7]{55}\n$/);
  const path = seedPath("researcher", data);
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(statSync(join(data, "keys")).mode & 0o777, 0o700);
  const seed = readFileSync(path, "utf8").trim();
  assert.match(seed, /^SU/);
  assert.equal(fromSeed(new TextEncoder().encode(seed)).getPublicKey(), res.stdout.trim());
  assert.ok(!res.stdout.includes(seed) && !res.stderr.includes(seed), "the seed is never printed");
});

test("identities - keys new refuses to overwrite a seed unless --force", async (t) => {
  const data = tempDataDir(t);
  const first = await causeway(["keys", "new", "planner"], data);
  assert.equal(first.code, 0, first.stderr);
  const before = readFileSync(seedPath("planner", data), "utf8");

  const again = await causeway(["keys", "new", "planner"], data);
  assert.equal(again.code, 1);
  assert.equal(again.stdout, "");
  assert.match(again.stderr, /CW_ERR_SEED_EXISTS/);
  assert.equal(readFileSync(seedPath("planner", data), "utf8"), before, "the existing seed is unchanged");

  const forced = await causeway(["keys", "new", "planner", "--force"], data);
  assert.equal(forced.code, 0, forced.stderr);
  assert.match(forced.stdout.trim(), publicKeyPattern);
  assert.notEqual(forced.stdout, first.stdout, "--force creates a new identity");
  assert.equal(statSync(seedPath("planner", data)).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(join(data, "keys")), ["planner.nk"], "no temporary file is left behind");
});

test("identities - keys new refuses unknown principals", async (t) => {
  const data = tempDataDir(t);
  for (const name of ["mallory", "../researcher"]) {
    const res = await causeway(["keys", "new", name], data);
    assert.equal(res.code, 1);
    assert.equal(res.stdout, "");
    assert.match(res.stderr, /CW_ERR_UNKNOWN_PRINCIPAL/);
  }
  assert.throws(() => readdirSync(join(data, "keys")), { code: "ENOENT" });
});

test("identities - keys ensure creates every missing seed and is idempotent", async (t) => {
  const data = tempDataDir(t);
  await causeway(["keys", "new", "gateway"], data);
  const gatewayKey = readFileSync(seedPath("gateway", data), "utf8");
  const first = await causeway(["keys", "ensure"], data);
  assert.equal(first.code, 0, first.stderr);
  const lines = first.stdout.trim().split("\n");
  assert.deepEqual(lines.map((l) => l.split(" ")[1]), names);
  for (const line of lines) assert.match(line, /^✓ [a-z0-9-]+ U[A-Z2-7]{55}$/);
  assert.equal(readFileSync(seedPath("gateway", data), "utf8"), gatewayKey, "an existing seed is kept");

  const second = await causeway(["keys", "ensure"], data);
  assert.equal(second.code, 0, second.stderr);
  assert.equal(second.stdout, first.stdout);

  const list = await causeway(["keys", "list"], data);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^PRINCIPAL +ROLE +PUBLIC KEY\n/);
  for (const line of lines) {
    const [, name, key] = line.split(" ");
    assert.match(list.stdout, new RegExp(`^${name} +${principals.principals[name!]!.role} +${key}$`, "m"));
  }
});

test("identities - infra render names the missing seeds and the fix", async (t) => {
  const data = tempDataDir(t);
  await causeway(["keys", "new", "operator"], data);
  const res = await causeway(["infra", "render"], data);
  assert.equal(res.code, 1);
  assert.match(res.stderr, /CW_ERR_SEED_MISSING/);
  assert.match(res.stderr, /causeway keys ensure/);
  assert.match(res.stderr, /coordinator/);
  assert.doesNotMatch(res.stderr, /\boperator\b/);
});

test("identities - connectAs without a seed says how to create it: principal add on a running mesh, keys new without one; its path as seen from here", async (t) => {
  const data = tempDataDir(t);
  const refused = (path: string) => (err: unknown) => {
    assert.ok(isCausewayError(err, ErrorCode.SeedMissing));
    assert.ok(err.message.startsWith(`no seed for principal "researcher" at ${path}. On a running development mesh run \`causeway principal add researcher\` (creates the seed, `), err.message);
    assert.match(err.message, /; without a running mesh, `causeway keys new researcher` creates the seed alone$/);
    return true;
  };
  await assert.rejects(connectAs("researcher", { dataDir: data, servers: "nats://127.0.0.1:1" }), refused(seedPath("researcher", data)));
  // Below the working directory, the path is relative to it (as `causeway` shows .data/keys/<principal>.nk).
  const cwd = process.cwd();
  process.chdir(data);
  try {
    await assert.rejects(connectAs("researcher", { dataDir: data, servers: "nats://127.0.0.1:1" }), refused(join("keys", "researcher.nk")));
  } finally {
    process.chdir(cwd);
  }
});

test("identities - principals.json errors name the JSON path", () => {
  const doc = () => JSON.parse(readFileSync(join(repoRoot, "infra", "principals.json"), "utf8")) as { principals: Record<string, Record<string, unknown>> };
  const cases: [string, (d: ReturnType<typeof doc>) => void, RegExp][] = [
    ["unknown role", (d) => { d.principals.researcher!.role = "wizard"; }, /\/principals\/researcher\/role: "wizard" is not one of/],
    ["unknown property", (d) => { d.principals.researcher!.publsh = []; }, /\/principals\/researcher: unknown property "publsh"/],
    ["bad subject", (d) => { d.principals.researcher!.publish = ["mesh.evt.Research.>"]; }, /\/principals\/researcher\/publish\/0: "mesh\.evt\.Research\.>" is not valid/],
    ["unknown capability", (d) => { d.principals.researcher!.addresses = ["translate.v1"]; }, /\/principals\/researcher\/addresses\/0: unknown capability "translate\.v1"/],
    ["critical capability", (d) => { d.principals.reporter!.publish = ["mesh.cap.>"]; }, /\/principals\/reporter\/publish\/0: "mesh\.cap\.>" covers mesh\.cap\.publish\.v1 of critical capability publish\.v1/],
    ["upstream outside its ingest", (d) => { d.principals["upstream-demo"]!.publish = ["mesh.ingest.*.>"]; }, /\/principals\/upstream-demo\/publish\/0: "mesh\.ingest\.\*\.>" is outside mesh\.ingest\.upstream-demo\.>/],
    ["trust write", (d) => { d.principals.researcher!.kv = { write: ["causeway_trust"] }; }, /\/principals\/researcher\/kv\/write\/0: only the operator writes causeway_trust/],
    ["agent fetching", (d) => { d.principals.researcher!.fetches = ["MESH_CAP"]; }, /\/principals\/researcher\/fetches: only the coordinator and lineage/],
    ["field not allowed for the role", (d) => { d.principals["upstream-demo"]!.service = "upstream"; }, /\/principals\/upstream-demo\/service: not allowed for this role/],
    ["a person runs no process", (d) => { d.principals["approver-alice"]!.entry = "services/agents/planner/main.ts"; }, /\/principals\/approver-alice\/entry: not allowed for this role/],
    ["entry outside the repository", (d) => { d.principals.planner!.entry = "../elsewhere/main.ts"; }, /\/principals\/planner\/entry: "\.\.\/elsewhere\/main\.ts" is not valid: The process that runs this principal/],
    ["replicas without an entry", (d) => { delete d.principals.planner!.entry; }, /\/principals\/planner: must have property entry when property replicas is present/],
    ["an entry without a micro service to wait for", (d) => { delete d.principals.planner!.service; }, /\/principals\/planner: must have property service when property entry is present/],
    ["no replicas", (d) => { d.principals.planner!.replicas = 0; }, /\/principals\/planner\/replicas: must be >= 1/],
  ];
  for (const [what, mutate, expected] of cases) {
    const d = doc();
    mutate(d);
    assert.throws(() => parsePrincipals(d, "test.json"), (err: unknown) => {
      assert.ok(isCausewayError(err, ErrorCode.PrincipalsInvalid), what);
      assert.match(err.message, expected, what);
      return true;
    }, what);
  }
});

test("identities - permissions follow the prefix", () => {
  const perms = permissionsFor(principals, "researcher", { prefix: "acme.mesh" });
  const publish = perms.publish.map((g) => g.subject);
  assert.ok(publish.includes("acme.mesh.cap.verify.v1"));
  assert.ok(publish.includes("$JS.API.CONSUMER.CREATE.MESH_CAP.cap-research-v1.acme.mesh.cap.research.v1"));
  assert.ok(!publish.some((s) => s.startsWith("mesh.")), publish.join(", "));
});

test("identities - an upstream's request subject on the gateway: only that upstream may publish there, and the gateway serves it", () => {
  const own = "mesh.ctl.gateway.publish.upstream-demo";
  for (const name of names) {
    const perms = permissionsFor(principals, name);
    const may = perms.publish.some((g) => subjectMatches(g.subject, own));
    assert.equal(may, name === "upstream-demo", `${name} ${may ? "may" : "may not"} publish on ${own}`);
  }
  assert.ok(permissionsFor(principals, "gateway").subscribe.some((g) => subjectMatches(g.subject, own)), "the gateway subscribes to it");
  assert.ok(permissionsFor(principals, "upstream-demo", { prefix: "acme.mesh" }).publish.some((g) => g.subject === "acme.mesh.ctl.gateway.publish.upstream-demo"), "under the prefix");
});

test("identities - the rendered dev config is valid for nats-server", async (t) => {
  const data = tempDataDir(t);
  assert.equal((await causeway(["keys", "ensure"], data)).code, 0);
  const res = await causeway(["infra", "render", "--full"], data);
  assert.equal(res.code, 0, res.stderr);
  const path = join(data, "nats", "dev.conf");
  assert.match(res.stdout, new RegExp(`wrote ${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`));
  const text = readFileSync(path, "utf8");
  assert.match(text, /^\s*sync_interval: always$/m);
  assert.match(text, /^listen: "127\.0\.0\.1:4222"$/m);
  const check = await new Promise<Run>((resolve) => {
    execFile(toolPath("nats-server"), ["-t", "-c", path], (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr }));
  });
  assert.equal(check.code, 0, check.stderr);
});

describe("identities - on a server running the rendered accounts", () => {
  let data: string;
  let server: NatsServer;
  let operator: NatsConnection;
  const as = (name: string) => connectAs(name, { servers: server.url, dataDir: data });
  const messages = async (stream: string) => (await (await jetstreamManager(operator)).streams.info(stream)).state.messages;

  before(async () => {
    data = mkdtempSync(join(tmpdir(), "causeway-identities-"));
    const ensured = await causeway(["keys", "ensure"], data);
    assert.equal(ensured.code, 0, ensured.stderr);
    const { text } = renderInfra({ dataDir: data });
    server = await startServer({ config: text });
    operator = await as("operator");
    const jsm = await jetstreamManager(operator);
    for (const [name, subject] of [["MESH_CAP", "mesh.cap.>"], ["MESH_HANDOFF", "mesh.handoff.>"], ["MESH_DECISION", "mesh.decision.>"], ["MESH_INGEST", "mesh.ingest.>"]] as const) {
      await jsm.streams.add({ name, subjects: [subject], allow_direct: true });
    }
  });

  after(async () => {
    await operator?.close();
    await server?.[Symbol.asyncDispose]();
    if (data) rmSync(data, { recursive: true, force: true });
  });

  test("identities - every principal connects with its own seed", async () => {
    for (const name of names) {
      await using nc = await as(name);
      await nc.flush();
      assert.equal(nc.isClosed(), false, name);
    }
  });

  test("identities - anonymous and unknown-key connections are refused", async () => {
    await assert.rejects(connect({ servers: server.url, reconnect: false }), /Authorization Violation/i);
    const stranger = createUser();
    await assert.rejects(connect({ servers: server.url, reconnect: false, authenticator: nkeyAuthenticator(stranger.getSeed()) }), /Authorization Violation/i);
    const cli = await runNats(["stream", "ls"], { server: server.url });
    assert.notEqual(cli.code, 0);
  });

  test("identities - an agent publishing outside its permissions is refused and the stream is unchanged", async () => {
    await using researcher = await as("researcher");
    const decisions = await messages("MESH_DECISION");
    const grant = await violation(researcher, "mesh.decision.grant", () => researcher.publish("mesh.decision.grant", "forged"));
    assert.equal(grant.operation, "publish");
    assert.equal(await messages("MESH_DECISION"), decisions);

    const work = await messages("MESH_CAP");
    await violation(researcher, "mesh.cap.plan.v1", () => researcher.publish("mesh.cap.plan.v1", "not my capability to address"));
    assert.equal(await messages("MESH_CAP"), work);
    // A JetStream publish on a refused subject fails too, instead of waiting for a PubAck that never comes.
    await refused(jetstream(researcher).publish("mesh.decision.grant", "forged"));
    assert.equal(await messages("MESH_DECISION"), decisions);

    // The subjects it may address still work: the refusals above are permissions, not a broken connection.
    const ack = await jetstream(researcher).publish("mesh.cap.verify.v1", "a finding to verify");
    assert.equal(ack.stream, "MESH_CAP");
    assert.equal(await messages("MESH_CAP"), work + 1);
  });

  test("identities - only the coordinator publishes on a critical capability's subject", async () => {
    await using reporter = await as("reporter");
    await using coordinator = await as("coordinator");
    const work = await messages("MESH_CAP");
    await violation(reporter, "mesh.cap.publish.v1", () => reporter.publish("mesh.cap.publish.v1", "skip the grant"));
    assert.equal(await messages("MESH_CAP"), work);
    assert.equal((await jetstream(reporter).publish("mesh.handoff.publish.v1", "held until granted")).stream, "MESH_HANDOFF");
    assert.equal((await jetstream(coordinator).publish("mesh.cap.publish.v1", "granted")).stream, "MESH_CAP");
  });

  test("identities - a principal cannot subscribe to another principal's inbox", async () => {
    await using researcher = await as("researcher");
    for (const subject of ["_INBOX_coordinator.>", "_INBOX.>", "mesh.cap.plan.v1"]) {
      let sub: ReturnType<NatsConnection["subscribe"]> | undefined;
      const err = await violation(researcher, subject, () => {
        sub = researcher.subscribe(subject);
      });
      assert.equal(err.operation, "subscription");
      // The client closes the refused subscription with the server's error.
      assert.ok((await sub!.closed) instanceof PermissionViolationError, subject);
    }
    // Its own inbox still works: a request to JetStream is answered there.
    assert.ok((await jetstreamManager(researcher).then((jsm) => jsm.getAccountInfo())).streams >= 1);
  });

  test("identities - the upstream publishes only on its own ingest subjects", async () => {
    await using upstream = await as("upstream-demo");
    const ingest = await messages("MESH_INGEST");
    const ack = await jetstream(upstream).publish("mesh.ingest.upstream-demo.orders", JSON.stringify({ order: 1 }));
    assert.equal(ack.stream, "MESH_INGEST");
    await violation(upstream, "mesh.ingest.upstream-other.orders", () => upstream.publish("mesh.ingest.upstream-other.orders", "spoofed source"));
    await violation(upstream, "mesh.cap.plan.v1", () => upstream.publish("mesh.cap.plan.v1", "past the gateway"));
    await violation(upstream, "$JS.API.STREAM.LIST", () => upstream.publish("$JS.API.STREAM.LIST"));
    assert.equal(await messages("MESH_INGEST"), ingest + 1);
    // The real CLI, as an upstream system would use it.
    const cli = await runNats(["--inbox-prefix", "_INBOX_upstream-demo", "request", "mesh.ingest.upstream-demo.orders", '{"order":2}'], { server: server.url, nkey: seedPath("upstream-demo", data) });
    assert.equal(cli.code, 0, cli.stderr);
    assert.match(cli.stdout + cli.stderr, /"stream":\s*"MESH_INGEST"/);
  });

  test("identities - an agent creates and reads its own capability consumer, and no other", async () => {
    await using planner = await as("planner");
    await using researcher = await as("researcher");
    const ownConfig = { durable_name: "cap-research-v1", filter_subject: "mesh.cap.research.v1", ack_policy: AckPolicy.Explicit };
    await (await jetstreamManager(planner)).consumers.add("MESH_CAP", { durable_name: "cap-plan-v1", filter_subject: "mesh.cap.plan.v1", ack_policy: AckPolicy.Explicit });
    const jsm = await jetstreamManager(researcher);
    await jsm.consumers.add("MESH_CAP", ownConfig);
    // Re-pointing its consumer at another capability's subject is refused: the filter is part of the API subject.
    await refused(jsm.consumers.add("MESH_CAP", { ...ownConfig, filter_subject: "mesh.cap.plan.v1" }));
    await refused(jsm.consumers.add("MESH_CAP", { durable_name: "cap-plan-v1", filter_subject: "mesh.cap.plan.v1", ack_policy: AckPolicy.Explicit }));
    await refused(jetstream(researcher).consumers.get("MESH_CAP", "cap-plan-v1"));

    await jetstream(planner).publish("mesh.cap.research.v1", "task 1");
    const consumer = await jetstream(researcher).consumers.get("MESH_CAP", "cap-research-v1");
    const msg = await consumer.next({ expires: 5_000 });
    assert.ok(msg, "the task is delivered");
    assert.equal(msg.string(), "task 1");
    msg.working();
    assert.equal(await msg.ackAck(), true);
    assert.equal((await consumer.info()).num_ack_pending, 0);
  });

  test("identities - everyone reads the trust store, only the operator writes it; agents watch switches the coordinator sets", async () => {
    const kvm = new Kvm(operator);
    const trust = await kvm.create("causeway_trust");
    await trust.put("UKEY", JSON.stringify({ principal: "researcher" }));
    await kvm.create("causeway_switches");

    await using researcher = await as("researcher");
    const readTrust = await new Kvm(researcher).open("causeway_trust");
    assert.equal((await readTrust.get("UKEY"))?.string(), JSON.stringify({ principal: "researcher" }));
    await refused(readTrust.put("UKEY", "forged"));

    // Kill switches are set by the coordinator (a signed decision first), and watched by every agent.
    await using coordinator = await as("coordinator");
    const switches = await new Kvm(researcher).open("causeway_switches");
    const watch = await switches.watch();
    await (await new Kvm(coordinator).open("causeway_switches")).put("capability.research", "paused");
    for await (const entry of watch) {
      assert.equal(entry.key, "capability.research");
      assert.equal(entry.string(), "paused");
      break;
    }
    await refused(switches.put("capability.research", "resumed"));
    assert.equal((await readTrust.get("UKEY"))?.string(), JSON.stringify({ principal: "researcher" }));
  });

  test("identities - coordinator and lineage read streams by sequence; agents cannot", async () => {
    await using lineage = await as("lineage");
    await using researcher = await as("researcher");
    const first = await (await jetstreamManager(lineage)).direct.getMessage("MESH_CAP", { seq: 1 });
    assert.ok(first);
    await refused((await jetstreamManager(researcher)).direct.getMessage("MESH_CAP", { seq: 1 }));
  });

  test("identities - services answer discovery: the operator sees them with nats micro ls", async () => {
    await using researcher = await as("researcher");
    // @nats-io/services ships its own copy of nats-core, so its NatsConnection type differs from ours (not its shape).
    const service = await new Svcm(researcher).add({ name: "researcher", version: "1.0.0", description: "research.v1" });
    await researcher.flush(); // the server has its discovery subscriptions before the CLI pings
    try {
      const res = await runNats(["--inbox-prefix", "_INBOX_operator", "micro", "ls", "--json"], { server: server.url, nkey: seedPath("operator", data) });
      assert.equal(res.code, 0, res.stderr);
      const infos = JSON.parse(res.stdout) as { name: string; id: string }[];
      assert.ok(infos.some((i) => i.name === "researcher"), res.stdout);
    } finally {
      await service.stop();
    }
  });

  test("identities - the operator lists streams with the nats CLI", async () => {
    const res = await runNats(["--inbox-prefix", "_INBOX_operator", "stream", "ls", "--names"], { server: server.url, nkey: seedPath("operator", data) });
    assert.equal(res.code, 0, res.stderr);
    for (const stream of ["MESH_CAP", "MESH_DECISION", "MESH_HANDOFF", "MESH_INGEST"]) assert.match(res.stdout, new RegExp(`^${stream}$`, "m"));
    // An agent has no stream listing API.
    const agent = await runNats(["--inbox-prefix", "_INBOX_researcher", "--timeout", "1s", "stream", "ls", "--names"], { server: server.url, nkey: seedPath("researcher", data) });
    assert.notEqual(agent.code, 0);
  });

  test("identities - the sysadmin runs nats server report jetstream", async () => {
    const res = await runNats(["--inbox-prefix", "_INBOX_sysadmin", "server", "report", "jetstream"], { server: server.url, nkey: seedPath("sysadmin", data) });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /JetStream Summary/);
    assert.match(res.stdout, new RegExp(server.name));
  });
});
