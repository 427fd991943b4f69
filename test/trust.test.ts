// The live trust store on a real nats-server running the rendered accounts: the operator writes the bucket,
// an agent (the researcher) reads and watches it, and every change applies to an open store without a restart.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { createUser } from "@nats-io/nkeys";
import { Kvm } from "@nats-io/kv";
import type { KV } from "@nats-io/kv";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { createSeed } from "../services/cli/commands/keys.ts";
import { publicKeysOf, renderInfra } from "../services/cli/commands/infra.ts";
import { startOperatedMesh } from "./e2e-fixture.ts";
import { repoRoot, startServer, waitFor } from "./harness/index.ts";
import type { NatsServer } from "./harness/index.ts";
import { revokeTrust, seedTrustStore, trustEntriesFromPrincipals, type TrustChange } from "../services/kit/ops/index.ts";
import {
  ErrorCode, KvBucket, NatsBinding, QuarantineReason, VerificationError, connectAs, createEvent, criticalForwardSubjects, encodeTrustRecord, formatTime, isCausewayError, loadPrincipals, openTrustStore, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7, withAttributes, type CausewayError, type CloudEvent, type SigningKey, type TrustRecord, type TrustStore,
} from "../services/kit/index.ts";

const principals = loadPrincipals();
const signers = Object.values(principals.principals).filter((p) => p.emits.length > 0);
const HOUR = 3_600_000;

/** A data directory with a seed per principal, and a server running the accounts rendered from them. */
async function mesh(): Promise<{ data: string; server: NatsServer; as: (name: string) => Promise<NatsConnection>; dispose: () => Promise<void> }> {
  const data = mkdtempSync(join(tmpdir(), "causeway-trust-"));
  for (const name of Object.keys(principals.principals)) createSeed(name, { dir: data });
  const server = await startServer({ config: renderInfra({ dataDir: data }).text });
  return {
    data,
    server,
    as: (name) => connectAs(name, { servers: server.url, dataDir: data }),
    dispose: async () => {
      await server[Symbol.asyncDispose]();
      rmSync(data, { recursive: true, force: true });
    },
  };
}

/** A fresh signing key that exists only in the trust store (no NATS account needed to sign). */
function newKey(): SigningKey {
  return signingKeyFromNkeySeed(createUser().getSeed());
}

/** An event signed by `key` in the name of `by` (its principal: a principal signs only as causeway://<itself>). */
function signed(key: SigningKey, type: string, time?: Date | number, by = "researcher"): CloudEvent {
  const event = createEvent({
    id: uuidv7(),
    source: `causeway://${by}`,
    type,
    datacontenttype: "application/json",
    ...(time !== undefined && { time: new Date(time).toISOString() }),
    data: { n: 1 },
  });
  return signEvent(event, key);
}

function record(key: SigningKey, over: Partial<TrustRecord> = {}): TrustRecord {
  return {
    principal: "researcher",
    role: "agent",
    algorithm: "ed25519",
    public_key: key.keyid,
    emits: ["research.finding.created"],
    addresses: ["research.v1", "verify.v1"],
    not_before: formatTime(Date.now() - HOUR),
    not_after: null,
    revoked_at: null,
    ...over,
  };
}

function rejectsWith(fn: () => unknown, code: string, reason: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VerificationError, `expected a VerificationError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.equal(err.reason, reason);
    return true;
  });
}

describe("trust - on a server running the rendered accounts", () => {
  let env: Awaited<ReturnType<typeof mesh>>;
  let operator: NatsConnection;
  let researcher: NatsConnection;
  let writable: KV;
  let seeded: readonly TrustChange[];
  const problems: CausewayError[] = [];
  let store: TrustStore;

  before(async () => {
    env = await mesh();
    operator = await env.as("operator");
    researcher = await env.as("researcher");
    // Valid from an hour ago, so events stamped "a minute ago" fall inside every seeded window.
    seeded = await seedTrustStore(operator, trustEntriesFromPrincipals(principals, publicKeysOf(principals, env.data), { now: Date.now() - HOUR }));
    writable = await new Kvm(operator).open(KvBucket.Trust);
    // The agent reads and watches the bucket the operator writes.
    store = await openTrustStore(researcher, { onProblem: (err) => problems.push(err) });
  });

  after(async () => {
    await store?.close();
    await researcher?.close();
    await operator?.close();
    await env?.dispose();
  });

  test("trust - seeding writes one entry per signing principal, and seeding again changes nothing", async () => {
    assert.deepEqual(seeded.map((c) => [c.principal, c.status]), signers.map((p) => [p.name, "created"]));
    assert.ok(!seeded.some((c) => c.principal === "operator" || c.principal === "sysadmin"), "principals that sign nothing get no entry");
    assert.equal(store.size, signers.length);

    const again = await seedTrustStore(operator, trustEntriesFromPrincipals(principals, publicKeysOf(principals, env.data)));
    assert.deepEqual(again.map((c) => c.status), signers.map(() => "unchanged"), "a later not_before does not rewrite an existing entry");

    const coordinator = store.entry(publicKeysOf(principals, env.data).coordinator!)!;
    assert.deepEqual(coordinator.emits, ["decision.*"]);
    assert.equal(coordinator.role, "coordinator");
    assert.ok(Object.isFrozen(coordinator) && Object.isFrozen(coordinator.emits));
    const reporter = store.entry(publicKeysOf(principals, env.data).reporter!)!;
    assert.deepEqual(reporter.addresses, ["report.v1", "publish.v1"], "the capabilities it serves, then those it addresses");
    assert.equal(reporter.notAfter, undefined);
    assert.equal(reporter.revokedAt, undefined);
  });

  test("trust - the agent verifies a signed event from each principal", () => {
    for (const p of signers) {
      const key = signingKeyFromNkeySeed(readSeed(p.name, env.data));
      const type = p.emits[0]!.replace(/\*$/, "grant");
      const trusted = store.verify(signed(key, type, Date.now() - 60_000, p.name), { receivedAt: "now" });
      assert.equal(trusted.entry.principal, p.name);
      assert.equal(trusted.verification.keyid, key.keyid);
      assert.equal(trusted.event.type, type);
      // Without a time, the event is authorized now.
      assert.equal(store.verify(signed(key, type, undefined, p.name), { receivedAt: "now" }).entry.principal, p.name);
    }
  });

  test("trust - a key id that is not in the store fails with unknown_key", () => {
    rejectsWith(() => store.verify(signed(newKey(), "research.finding.created"), { receivedAt: "now" }), ErrorCode.UnknownKey, QuarantineReason.UnknownKey);
    assert.equal(store.key(newKey().keyid), undefined);
  });

  test("trust - verification still checks signature and digests first", () => {
    const key = signingKeyFromNkeySeed(readSeed("researcher", env.data));
    const event = signed(key, "research.finding.created");
    rejectsWith(() => store.verify(withAttributes(event, { data: { n: 2 } }), { receivedAt: "now" }), ErrorCode.CoreDigestMismatch, QuarantineReason.BadSignature);
    rejectsWith(() => store.verify(createEvent({ id: "1", source: "causeway://test", type: "research.finding.created" }), { receivedAt: "now" }), ErrorCode.Unsigned, QuarantineReason.BadSignature);
  });

  test("trust - events stamped outside the key's validity window fail with CW_ERR_KEY_NOT_VALID", async () => {
    const key = newKey();
    const start = Date.now() - 10 * 60_000;
    await writable.put(key.keyid, encodeTrustRecord(record(key, { not_before: formatTime(start), not_after: formatTime(start + 5 * 60_000) })));
    await waitFor(() => store.entry(key.keyid), { what: "the windowed key" });
    // Received inside the window (a message read back from a stream), so only the signed time decides here.
    const inside = { receivedAt: start + 60_000 };
    assert.equal(store.verify(signed(key, "research.finding.created", start + 60_000), inside).entry.keyid, key.keyid);
    rejectsWith(() => store.verify(signed(key, "research.finding.created", start - 1_000), inside), ErrorCode.KeyNotValid, QuarantineReason.UnknownKey);
    rejectsWith(() => store.verify(signed(key, "research.finding.created", start + 6 * 60_000), inside), ErrorCode.KeyNotValid, QuarantineReason.UnknownKey);
    rejectsWith(() => store.verify(signed(key, "research.finding.created"), { receivedAt: "now" }), ErrorCode.KeyNotValid, QuarantineReason.UnknownKey);
  });

  test("trust - a revocation applies to the open store: later events fail with CW_ERR_KEY_REVOKED, earlier ones still verify", async () => {
    const key = newKey();
    await writable.put(key.keyid, encodeTrustRecord(record(key)));
    await waitFor(() => store.entry(key.keyid), { what: "the new key" });
    const beforeAt = Date.now() - 60_000;
    const before = signed(key, "research.finding.created", beforeAt);
    assert.equal(store.verify(before, { receivedAt: "now" }).entry.keyid, key.keyid);
    const receivedBefore = { receivedAt: beforeAt }; // stored in a stream then, read back later

    const [revocation] = await revokeTrust(operator, key.keyid, { reason: "key compromised" });
    assert.equal(revocation!.status, "revoked");
    const entry = await waitFor(() => store.entry(key.keyid)?.revokedAt !== undefined && store.entry(key.keyid), { what: "the revocation" });
    assert.equal(entry.revokedAt, revocation!.revokedAt);
    assert.equal(entry.revocationReason, "key compromised");

    rejectsWith(() => store.verify(signed(key, "research.finding.created", Date.now()), { receivedAt: "now" }), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);
    rejectsWith(() => store.verify(signed(key, "research.finding.created"), { receivedAt: "now" }), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);
    rejectsWith(() => store.verify(signed(key, "research.finding.created", Date.now() + HOUR), { receivedAt: "now" }), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);
    assert.equal(store.verify(before, receivedBefore).entry.keyid, key.keyid, "an event signed and received before the revocation still verifies");
    assert.ok(store.key(key.keyid), "a revoked key still resolves, so the error says revoked, not unknown");

    // Revoking again later keeps the earlier time; revoking earlier moves it back.
    const [later] = await revokeTrust(operator, key.keyid, { at: Date.now() + HOUR });
    assert.equal(later!.status, "already revoked");
    assert.equal(later!.revokedAt, revocation!.revokedAt);
    const [earlier] = await revokeTrust(operator, key.keyid, { at: Date.now() - 2 * 60_000 });
    assert.equal(earlier!.status, "revoked");
    await waitFor(() => store.entry(key.keyid)?.revokedAt === earlier!.revokedAt, { what: "the earlier revocation" });
    rejectsWith(() => store.verify(before, receivedBefore), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);
  });

  test("trust - a stolen key cannot backdate past its revocation or expiry: the time the mesh received the message decides too", async () => {
    const key = newKey();
    const start = Date.now() - 10 * 60_000;
    await writable.put(key.keyid, encodeTrustRecord(record(key, { not_before: formatTime(start), not_after: formatTime(start + 5 * 60_000) })));
    await waitFor(() => store.entry(key.keyid), { what: "the windowed key" });
    const backdated = signed(key, "research.finding.created", start + 60_000); // inside the window, by its own claim
    assert.equal(store.verify(backdated, { receivedAt: start + 61_000 }).entry.keyid, key.keyid, "received inside the window");
    const lastSecond = Math.floor((start + 5 * 60_000) / 1000) * 1000; // entry times count whole seconds
    assert.equal(store.verify(backdated, { receivedAt: lastSecond + 999 }).entry.keyid, key.keyid, "received in the last second of the window");
    rejectsWith(() => store.verify(backdated, { receivedAt: lastSecond + 1_000 }), ErrorCode.KeyNotValid, QuarantineReason.UnknownKey);
    rejectsWith(() => store.verify(backdated, { receivedAt: Date.now() }), ErrorCode.KeyNotValid, QuarantineReason.UnknownKey);

    const stolen = newKey();
    await writable.put(stolen.keyid, encodeTrustRecord(record(stolen)));
    await waitFor(() => store.entry(stolen.keyid), { what: "the key" });
    const stampedEarlier = signed(stolen, "research.finding.created", Date.now() - 60_000);
    const [revocation] = await revokeTrust(operator, stolen.keyid, { reason: "key stolen" });
    await waitFor(() => store.entry(stolen.keyid)?.revokedAt !== undefined, { what: "the revocation" });
    assert.equal(store.verify(stampedEarlier, { receivedAt: "forwarded" }).entry.keyid, stolen.keyid, "as a forward (checked at its handoff) only its claimed time counts");
    assert.equal(store.verify(stampedEarlier, { receivedAt: revocation!.revokedAt - 1 }).entry.keyid, stolen.keyid, "it reached the mesh before the revocation");
    assert.throws(() => store.verify(stampedEarlier, { receivedAt: Date.now() }), (err: unknown) =>
      err instanceof VerificationError && err.code === ErrorCode.KeyRevoked && err.reason === QuarantineReason.RevokedKey &&
      /key stolen.*reached the mesh at .*whatever time it claims/.test(err.message));
    // A message arriving now (a request) says so, and is judged now.
    rejectsWith(() => store.verify(stampedEarlier, { receivedAt: "now" }), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);

    // A stream consumer states nothing: verifyMessage derives the time from the stored message, by one rule.
    const stored = (stream: string, subject: string, at: number) => ({ subject, ...NatsBinding.binary(stampedEarlier), info: { stream, timestampNanos: at * 1e6 } });
    const [forward] = [...criticalForwardSubjects(principals)];
    assert.ok(forward, "principals.json declares a critical capability");
    const ordinary = `${principals.prefix}.cap.verify.v1`;
    const handoff = forward.replace(`${principals.prefix}.cap.`, `${principals.prefix}.handoff.`);
    const afterRevocation = revocation!.revokedAt + 1_000;
    assert.equal(store.receivedAt(stored("MESH_CAP", forward, afterRevocation)), "forwarded", "the coordinator's forward of critical work");
    assert.equal(store.receivedAt(stored("MESH_HANDOFF", handoff, afterRevocation)), afterRevocation, "the handoff itself: its stored time");
    assert.equal(store.verifyMessage(stored("MESH_CAP", forward, afterRevocation)).entry.keyid, stolen.keyid);
    assert.equal(store.verifyMessage(stored("MESH_CAP", ordinary, revocation!.revokedAt - 1_000)).entry.keyid, stolen.keyid, "stored before the revocation");
    rejectsWith(() => store.verifyMessage(stored("MESH_CAP", ordinary, afterRevocation)), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);
    rejectsWith(() => store.verifyMessage(stored("MESH_HANDOFF", handoff, afterRevocation)), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);
  });

  test("trust - a rotated key verifies as soon as it is put, without reopening the store", async () => {
    const old = signingKeyFromNkeySeed(readSeed("planner", env.data));
    const rotated = newKey();
    await writable.put(rotated.keyid, encodeTrustRecord(record(rotated, { principal: "planner", emits: ["research.task.created"], addresses: ["plan.v1", "research.v1"] })));
    await waitFor(() => store.entry(rotated.keyid), { what: "the rotated key" });
    assert.equal(store.verify(signed(rotated, "research.task.created", undefined, "planner"), { receivedAt: "now" }).entry.principal, "planner");
    assert.equal(store.verify(signed(old, "research.task.created", undefined, "planner"), { receivedAt: "now" }).entry.principal, "planner", "the old key works until it is revoked");
  });

  test("trust - a deleted or purged key becomes unknown", async () => {
    for (const remove of [(k: string) => writable.delete(k), (k: string) => writable.purge(k)]) {
      const key = newKey();
      await writable.put(key.keyid, encodeTrustRecord(record(key)));
      await waitFor(() => store.entry(key.keyid), { what: "the new key" });
      const size = store.size;
      await remove(key.keyid);
      await waitFor(() => store.entry(key.keyid) === undefined, { what: "the removal" });
      assert.equal(store.size, size - 1);
      rejectsWith(() => store.verify(signed(key, "research.finding.created"), { receivedAt: "now" }), ErrorCode.UnknownKey, QuarantineReason.UnknownKey);
    }
  });

  test("trust - emitting a type the principal may not emit fails with unauthorized_emitter", () => {
    const researcherKey = signingKeyFromNkeySeed(readSeed("researcher", env.data));
    rejectsWith(() => store.verify(signed(researcherKey, "report.published"), { receivedAt: "now" }), ErrorCode.UnauthorizedEmitter, QuarantineReason.UnauthorizedEmitter);
    // decision.* covers every type under decision., on whole tokens only.
    const coordinatorKey = signingKeyFromNkeySeed(readSeed("coordinator", env.data));
    for (const type of ["decision.grant", "decision.approval", "decision.kill.switch"]) assert.equal(store.verify(signed(coordinatorKey, type, undefined, "coordinator"), { receivedAt: "now" }).entry.principal, "coordinator");
    for (const type of ["decision", "decisions.grant", "report.published"]) {
      rejectsWith(() => store.verify(signed(coordinatorKey, type, undefined, "coordinator"), { receivedAt: "now" }), ErrorCode.UnauthorizedEmitter, QuarantineReason.UnauthorizedEmitter);
    }
  });

  test("trust - mayAddress allows the capabilities a principal serves and addresses, at their major version", () => {
    const keys = publicKeysOf(principals, env.data);
    const researcherEntry = store.entry(keys.researcher!)!;
    assert.equal(store.mayAddress(researcherEntry, "verify", 1), true);
    assert.equal(store.mayAddress(researcherEntry, "research", 1), true);
    assert.equal(store.mayAddress(researcherEntry, "verify", 2), false);
    assert.equal(store.mayAddress(researcherEntry, "plan", 1), false);
    assert.equal(store.mayAddress(researcherEntry, "publish", 1), false);
    assert.equal(store.mayAddress(store.entry(keys.reporter!)!, "publish", 1), true);
    assert.equal(store.mayAddress(store.entry(keys.gateway!)!, "plan", 1), true);
    assert.equal(store.mayAddress(store.entry(keys.lineage!)!, "plan", 1), false);
  });

  test("trust - a malformed entry is reported through onProblem and ignored, even where a valid one was", async (t) => {
    const valid = newKey();
    await writable.put(valid.keyid, encodeTrustRecord(record(valid)));
    await waitFor(() => store.entry(valid.keyid), { what: "the valid key" });
    // Each case under its own fresh key id, except the first, which breaks the valid key's entry.
    const bad = (over: Partial<TrustRecord>, extra: Record<string, unknown> = {}): [string, string] => {
      const k = newKey();
      return [k.keyid, JSON.stringify({ ...JSON.parse(encodeTrustRecord(record(k, over))), ...extra })];
    };
    const cases: [string, string, RegExp][] = [
      [valid.keyid, "{not json", /not UTF-8 JSON/],
      [...bad({}, { revokedAt: "2026-01-01T00:00:00Z" }), /\/revokedAt: unknown field/],
      [...bad({ public_key: newKey().keyid }), /differs from the entry's key/],
      [...bad({ not_before: "yesterday" }), /not_before/],
      [...bad({ emits: ["Research.Finding"] }), /\/emits\/0/],
      [...bad({ algorithm: "rsa" as "ed25519" }), /\/algorithm/],
    ];
    const seen = problems.length;
    const size = store.size;
    for (const [keyid, text] of cases) await writable.put(keyid, text);
    t.after(async () => {
      for (const [keyid] of cases) await writable.purge(keyid);
    });
    await waitFor(() => problems.length - seen >= cases.length, { what: "a problem per malformed entry" });
    for (const [i, [keyid, , expected]] of cases.entries()) {
      const problem = problems[seen + i]!;
      assert.ok(isCausewayError(problem, ErrorCode.TrustEntryInvalid), problem.message);
      assert.match(problem.message, new RegExp(keyid));
      assert.match(problem.message, expected);
      assert.equal(store.entry(keyid), undefined);
    }
    assert.equal(store.size, size - 1, "the key whose entry turned malformed verifies nothing");
    rejectsWith(() => store.verify(signed(valid, "research.finding.created"), { receivedAt: "now" }), ErrorCode.UnknownKey, QuarantineReason.UnknownKey);

    // A store opened now reports them too, and still loads the rest.
    const atOpen: CausewayError[] = [];
    await using reopened = await openTrustStore(researcher, { onProblem: (err) => atOpen.push(err) });
    assert.equal(atOpen.length, cases.length);
    assert.equal(reopened.size, store.size);
  });

  test("trust - only the operator writes the trust store; an upstream cannot read it", async () => {
    const key = newKey();
    await assert.rejects(seedTrustStore(researcher, [record(key)]), (err: unknown) => isCausewayError(err, ErrorCode.PermissionDenied));
    const target = publicKeysOf(principals, env.data).planner!;
    await assert.rejects(revokeTrust(researcher, target), (err: unknown) => isCausewayError(err, ErrorCode.PermissionDenied));
    assert.equal(store.entry(target)?.revokedAt, undefined);

    await using upstream = await env.as("upstream-demo");
    await assert.rejects(openTrustStore(upstream, { timeoutMs: 5_000 }), (err: unknown) => isCausewayError(err, ErrorCode.PermissionDenied));
  });

  test("trust - opening a bucket that does not exist says to run causeway trust seed", async () => {
    await assert.rejects(openTrustStore(operator, { bucket: "causeway_trust_missing" }), (err: unknown) => {
      assert.ok(isCausewayError(err, ErrorCode.Config), String(err));
      assert.match(err.message, /causeway_trust_missing does not exist/);
      assert.match(err.message, /causeway trust seed/);
      return true;
    });
  });
});

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

// Runs `causeway trust …` the way services/cli/main.ts does: the command's run(), known errors printed with
// their code and exit 1.
const runner = `
import { run } from ${JSON.stringify(pathToFileURL(join(repoRoot, "services", "cli", "commands", "trust.ts")).href)};
import { CausewayError } from ${JSON.stringify(pathToFileURL(join(repoRoot, "services", "kit", "errors.ts")).href)};
try {
  process.exitCode = await run(JSON.parse(process.argv[1]));
} catch (err) {
  if (err instanceof CausewayError) console.error("causeway: " + err.message + " (" + err.code + ")");
  else console.error("causeway: unexpected error", err);
  process.exitCode = 1;
}
`;

function trustCli(args: string[], env: { data: string; server: NatsServer }): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ["--input-type=module", "-e", runner, JSON.stringify(args)],
      { env: { ...process.env, CAUSEWAY_DATA_DIR: env.data, NATS_URL: env.server.url }, timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== "number") return reject(err);
        resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
      },
    );
  });
}

test("trust - causeway trust seed, ls and revoke end to end", async (t) => {
  const env = await mesh();
  t.after(() => env.dispose());
  const keys = publicKeysOf(principals, env.data);

  const empty = await trustCli(["ls"], env);
  assert.equal(empty.code, 1);
  assert.match(empty.stderr, /causeway_trust does not exist: run `causeway trust seed`.*\(CW_ERR_CONFIG\)/);

  const seed = await trustCli(["seed"], env);
  assert.equal(seed.code, 0, seed.stderr);
  assert.equal(seed.stdout, signers.map((p) => `✓ ${p.name} ${keys[p.name]} created\n`).join(""));
  assert.match(seed.stderr, new RegExp(`^${signers.length} created, 0 updated, 0 unchanged, in causeway_trust\n$`));
  const again = await trustCli(["seed"], env);
  assert.equal(again.stdout, signers.map((p) => `✓ ${p.name} ${keys[p.name]} unchanged\n`).join(""));

  // An agent's open store sees the CLI's revocation.
  await using researcher = await env.as("researcher");
  await using store = await openTrustStore(researcher);
  assert.equal(store.size, signers.length);

  const revoke = await trustCli(["revoke", "researcher", "--reason", "key compromised"], env);
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.match(revoke.stdout, new RegExp(`^✓ researcher ${keys.researcher} revoked at \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ\n$`));
  await waitFor(() => store.entry(keys.researcher!)?.revokedAt !== undefined, { what: "the CLI's revocation in the agent's store" });
  const signer = signingKeyFromNkeySeed(readSeed("researcher", env.data));
  rejectsWith(() => store.verify(signed(signer, "research.finding.created"), { receivedAt: "now" }), ErrorCode.KeyRevoked, QuarantineReason.RevokedKey);

  const byKey = await trustCli(["revoke", keys.researcher!, "--at", "2020-01-01T00:00:00+01:00"], env);
  assert.equal(byKey.code, 0, byKey.stderr);
  assert.equal(byKey.stdout, `✓ researcher ${keys.researcher} revoked at 2019-12-31T23:00:00Z\n`);

  const reseed = await trustCli(["seed"], env);
  assert.match(reseed.stdout, new RegExp(`^✓ researcher ${keys.researcher} unchanged$`, "m"), "seeding never un-revokes a key");

  const ls = await trustCli(["ls"], env);
  assert.equal(ls.code, 0, ls.stderr);
  const lines = ls.stdout.trimEnd().split("\n");
  assert.match(lines[0]!, /^PRINCIPAL +KEYID +EMITS +WINDOW +REVOKED$/);
  assert.equal(lines.length, signers.length + 1);
  assert.match(ls.stdout, new RegExp(`^researcher +${keys.researcher} +research\\.finding\\.created +\\S+Z → ∞ +2019-12-31T23:00:00Z \\(key compromised\\)$`, "m"));
  assert.match(ls.stdout, new RegExp(`^coordinator +${keys.coordinator} +decision\\.\\* +\\S+Z → ∞ +-$`, "m"));

  for (const [args, code, expected] of [
    [["revoke"], 2, /CW_ERR_USAGE/],
    [["revoke", "researcher", "--at", "yesterday"], 2, /--at needs an RFC 3339 time with a zone/],
    [["seed", "--at", "2026-01-01T00:00:00Z"], 2, /trust seed does not take --at/],
    [["rotate"], 2, /unknown subcommand "rotate"/],
    [["revoke", "mallory"], 1, /no trust store entry for principal "mallory".*CW_ERR_UNKNOWN_PRINCIPAL/],
    [["revoke", createUser().getPublicKey()], 1, /CW_ERR_UNKNOWN_KEY/],
  ] as const) {
    const res = await trustCli([...args], env);
    assert.equal(res.code, code, `${args.join(" ")}: ${res.stderr}`);
    assert.match(res.stderr, expected);
  }
});

describe("trust - a deleted followed bucket (trust store, kill switches)", () => {
  test("trust - the open store notices that its bucket was deleted (the watch itself says nothing) and reports it as lost", async () => {
    await using server = await startServer();
    const nc = await connect({ servers: server.url });
    try {
      const kv = await new Kvm(nc).create("trust_probe");
      const problems: CausewayError[] = [];
      const store = await openTrustStore(nc, { bucket: "trust_probe", checkMs: 100, onProblem: (err) => problems.push(err) });
      await kv.destroy();
      const lost = await store.lost;
      assert.equal(lost.code, ErrorCode.Config);
      assert.match(lost.message, /the trust store bucket trust_probe was deleted.*rotations and revocations can no longer be followed; restore it \(`causeway trust seed`\)/);
      assert.deepEqual(problems, [lost], "reported once, through onProblem");
      await store.close();
    } finally {
      await nc.close();
    }
  });

  test("trust - an agent process whose trust store bucket is deleted stops with exit code 1, says why, and does not start again until it is restored", async () => {
    await using mesh = await startOperatedMesh();
    const planner = mesh.spawn("services/agents/planner/main.ts", {});
    const jsm = await jetstreamManager(mesh.operator);
    // Its durable consumer exists once it runs (the trust store is open by then).
    await waitFor(() => jsm.consumers.info("MESH_CAP", "cap-plan-v1").then(() => true, () => false), { what: "the planner to start", timeoutMs: 15_000 });
    await jsm.streams.delete(`KV_${KvBucket.Trust}`);
    assert.equal(await planner.exited, 1);
    assert.match(planner.output(), /the trust store bucket causeway_trust was deleted/);
    // Restarted, it waits for the bucket rather than run without revocations, saying why, and gives up at its
    // start timeout (a short one here; 120 s by default) with the reason.
    const again = mesh.spawn("services/agents/planner/main.ts", { CAUSEWAY_START_TIMEOUT_MS: "2000" });
    assert.equal(await again.exited, 1);
    assert.match(again.output(), /trust store bucket causeway_trust does not exist: run `causeway trust seed`/);
    assert.match(again.output(), /the mesh was not ready within \d+ s/);
  });

  test("trust - the coordinator stops the same way when the kill switch bucket is deleted", async () => {
    await using mesh = await startOperatedMesh();
    const coordinator = mesh.spawn("services/coordinator/main.ts", { LOG_LEVEL: "info" });
    const jsm = await jetstreamManager(mesh.operator);
    await waitFor(() => /"msg":"coordinator started"/.test(coordinator.output()), { what: "every coordinator module started", timeoutMs: 15_000 });
    await jsm.streams.delete(`KV_${KvBucket.Switches}`);
    assert.equal(await coordinator.exited, 1);
    assert.match(coordinator.output(), /the kill switches bucket causeway_switches was deleted: pauses and resumes can no longer be followed/);
  });
});
