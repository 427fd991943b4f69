// The mesh layout (services/kit/layout.ts): every name derived from infra/ and streams/, frozen, rendered for
// any prefix; durables that exist as files; buckets that only operator tooling creates. Expectations are read
// from the same files, never listed here.
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect } from "@nats-io/transport-node";
import { repoRoot, startServer } from "./harness/index.ts";
import {
  ConfigError, ErrorCode, KvBucket, LANES, MESH_BUCKETS, PUBLISH_ACK_TIMEOUT_MS, STREAMS_APPLY, isCausewayError, loadLayout, loadPrincipals, parsePrincipals, openLeases, openMeshBucket, openProcessedSet, type MeshLayout,
} from "../services/kit/index.ts";
import { ensureMeshBuckets } from "../services/kit/ops/index.ts";
import { CAPABILITY_TEMPLATE, FILES_PREFIX } from "../services/kit/internal.ts";

const streamsDir = join(repoRoot, "streams");
const consumersDir = join(streamsDir, "consumers");
const readJson = (path: string) => JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
const jsonIn = (dir: string) => readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
const consumerFiles = () => jsonIn(consumersDir).filter((f) => !f.endsWith(".template.json"));

function assertDeepFrozen(value: unknown, path: string): void {
  if (typeof value !== "object" || value === null) return;
  assert.ok(Object.isFrozen(value), `${path} is frozen`);
  for (const [k, v] of Object.entries(value)) assertDeepFrozen(v, `${path}.${k}`);
}

/** Every subject field of the layout's streams and consumers, and of the capability consumers of principals.json. */
function subjectsOf(layout: MeshLayout): string[] {
  const out: string[] = [];
  for (const def of Object.values(layout.streams)) out.push(...(def.config.subjects ?? []));
  for (const c of layout.consumers) out.push(...(c.config.filter_subject === undefined ? [] : [c.config.filter_subject]), ...(c.config.filter_subjects ?? []));
  for (const cap of Object.values(layout.principals.capabilities)) out.push(layout.capabilityConsumer(cap.name, cap.major).filter_subject!);
  return out;
}

/** A private copy of streams/ to break; removed on dispose. */
function copyOfStreams(): { dir: string } & Disposable {
  const dir = mkdtempSync(join(tmpdir(), "causeway-layout-"));
  cpSync(streamsDir, dir, { recursive: true });
  return { dir, [Symbol.dispose]: () => rmSync(dir, { recursive: true, force: true }) };
}

test("layout - frozen, and every stream, durable and capability consumer is the one its file declares", () => {
  const layout = loadLayout();
  assertDeepFrozen(layout, "layout");
  assert.equal(layout.prefix, loadPrincipals().prefix, "the prefix is the one infra/principals.json declares");
  assert.equal(layout.subjects.prefix, layout.prefix);
  assert.deepEqual(Object.keys(layout.streams), jsonIn(streamsDir).map((f) => f.replace(/\.json$/, "")));
  for (const file of jsonIn(streamsDir)) {
    const declared = readJson(join(streamsDir, file));
    assert.deepEqual(layout.stream(declared.name as string), declared, `${file} at the files' prefix is used as written`);
  }
  assert.deepEqual(layout.consumers.map((c) => `${c.stream}.${c.config.durable_name}.json`).sort(), consumerFiles());
  for (const file of consumerFiles()) {
    const [stream, durable] = file.replace(/\.json$/, "").split(/\.(.*)/) as [string, string];
    assert.deepEqual(layout.durable(stream, durable), readJson(join(consumersDir, file)), file);
  }
  const template = readFileSync(join(consumersDir, CAPABILITY_TEMPLATE), "utf8");
  for (const cap of Object.values(layout.principals.capabilities)) {
    const expected = JSON.parse(template.replaceAll("{capability}", cap.name).replaceAll("{major}", String(cap.major))) as unknown;
    assert.deepEqual(layout.capabilityConsumer(cap.name, cap.major), expected, cap.ref);
  }
  assert.equal(layout.buckets, MESH_BUCKETS);
  assert.throws(() => layout.durable("MESH_EVT", "nobody"), (err: unknown) => isCausewayError(err, ErrorCode.Config) && /MESH_EVT\.nobody\.json/.test((err as Error).message));
});

test("layout - a non-default prefix renders every stream and consumer subject token-wise, leaving no files' prefix behind", () => {
  const files = loadLayout();
  for (const prefix of ["acme", "tenant_a.mesh"]) {
    const layout = loadLayout({ prefix });
    assert.equal(layout.prefix, prefix);
    const before = subjectsOf(files);
    const after = subjectsOf(layout);
    assert.equal(after.length, before.length);
    after.forEach((subject, i) => {
      const original = before[i]!;
      if (original.split(".")[0] === FILES_PREFIX) assert.equal(subject, `${prefix}${original.slice(FILES_PREFIX.length)}`, original);
      else assert.equal(subject, original, "subjects outside the mesh ($JS.EVENT…) are kept");
      assert.ok(!subject.startsWith(`${FILES_PREFIX}.`) || prefix.startsWith(`${FILES_PREFIX}.`), `${subject} left under ${FILES_PREFIX}`);
    });
    assert.ok(after.some((s) => s.startsWith(`${prefix}.`)));
    assert.ok(!/"mesh\./.test(JSON.stringify(Object.values(layout.streams))) || prefix.startsWith("mesh."), `no mesh. subject under ${prefix}`);
  }
  assert.throws(() => loadLayout({ prefix: "Bad Prefix" }), (err: unknown) => isCausewayError(err, ErrorCode.InvalidToken));
});

test("layout - every durable principals.json and the services name exists as a file", () => {
  const layout = loadLayout();
  for (const p of Object.values(layout.principals.principals)) {
    for (const c of p.consumes) {
      // Derived consumers come from the templates: a capability's, a subscription's; the others from their files.
      const subscription = c.stream === "MESH_EVT" ? layout.subscriptionConsumers(p.name).find((s) => s.config.durable_name === c.durable) : undefined;
      const config = c.stream === "MESH_CAP" && c.durable.startsWith("cap-")
        ? capabilityConsumerOf(layout, c.durable)
        : subscription?.config ?? layout.durable(c.stream, c.durable);
      assert.equal(config.durable_name, c.durable, `${p.name}: ${c.stream}/${c.durable}`);
      if (c.filter !== undefined) assert.equal(config.filter_subject, c.filter, `${p.name}: ${c.stream}/${c.durable} filter`);
    }
  }
  // Services take their durables from the layout (consumersOf): each is one of the files.
  for (const p of Object.values(layout.principals.principals)) {
    for (const c of layout.consumersOf(p.name)) assert.equal(layout.durable(c.stream, c.durable).durable_name, layout.durableOf(p.name, c.stream));
  }
  // And no service names a durable in code: a literal (or a string constant) beside a consumer call would be a
  // second source of truth.
  assert.deepEqual(namedInCode(), []);
});

test("layout - the principals schema's stream and bucket names are the layout's", () => {
  const layout = loadLayout();
  const schema = readJson(join(repoRoot, "infra", "principals.schema.json")) as { $defs: Record<string, { enum: string[] }> };
  assert.deepEqual([...schema.$defs.stream!.enum].sort(), Object.keys(layout.streams).sort());
  assert.deepEqual([...schema.$defs.bucket!.enum].sort(), Object.keys(layout.buckets).sort());
  for (const [name, b] of Object.entries(layout.buckets)) assert.equal(b.name, name);
});

test("layout - the gateway's durable file lets the gateway run its default concurrency", () => {
  const layout = loadLayout();
  const gateway = layout.durable("MESH_INGEST", layout.durableOf("gateway", "MESH_INGEST"));
  assert.equal(gateway.ack_policy, "explicit");
  assert.equal(gateway.deliver_policy, "all");
  assert.equal(gateway.max_deliver, -1);
  // A delivery outlives one store attempt (the publish's ack timeout) with room for a retry, so a slow ack is
  // not also a redelivery; a crashed gateway's work comes back within seconds.
  assert.ok(gateway.ack_wait! >= 2 * PUBLISH_ACK_TIMEOUT_MS * 1e6, `ack_wait ${gateway.ack_wait} ns outlasts two publish attempts`);
  const source = readFileSync(join(repoRoot, "services", "gateway", "config.ts"), "utf8");
  const concurrency = Number(/CAUSEWAY_GATEWAY_CONCURRENCY", \d+, \d+, (\d+)\)/.exec(source)?.[1]);
  assert.ok(gateway.max_ack_pending! >= concurrency, `max_ack_pending ${gateway.max_ack_pending} holds ${concurrency} messages in flight`);
});

test("layout - files that disagree are refused, naming the file", () => {
  {
    using copy = copyOfStreams();
    unlinkSync(join(copy.dir, "consumers", "MESH_INGEST.gateway.json"));
    assert.throws(() => loadLayout({ streamsDir: copy.dir }), (err: unknown) =>
      err instanceof ConfigError && err.code === ErrorCode.Config && err.message.includes("gateway consumes MESH_INGEST/gateway, which has no file streams/consumers/MESH_INGEST.gateway.json"));
  }
  {
    using copy = copyOfStreams();
    writeFileSync(join(copy.dir, "consumers", "MESH_EVT.orphan.json"), JSON.stringify({ durable_name: "orphan", ack_policy: "explicit" }));
    assert.throws(() => loadLayout({ streamsDir: copy.dir }), (err: unknown) =>
      isCausewayError(err, ErrorCode.Config) && (err as Error).message.includes(`${join(copy.dir, "consumers", "MESH_EVT.orphan.json")} is consumed by no principal`));
  }
  {
    using copy = copyOfStreams();
    const file = join(copy.dir, "consumers", "MESH_HANDOFF.coordinator-handoff.json");
    writeFileSync(file, JSON.stringify({ ...readJson(file), filter_subject: "mesh.handoff.publish.v1" }));
    assert.throws(() => loadLayout({ streamsDir: copy.dir }), (err: unknown) =>
      isCausewayError(err, ErrorCode.Config) && /coordinator consumes MESH_HANDOFF\/coordinator-handoff with filter mesh\.handoff\.>, but .* declares mesh\.handoff\.publish\.v1/.test((err as Error).message));
  }
});

test("layout - the services are the principals with an entry, each an existing file; a missing one is refused", () => {
  const layout = loadLayout();
  const withEntry = Object.values(layout.principals.principals).filter((p) => p.entry !== undefined);
  assert.deepEqual(layout.services.map((s) => s.name), withEntry.map((p) => p.name));
  for (const s of layout.services) {
    assert.ok(existsSync(s.entryPath), `${s.name}: ${s.entry}`);
    assert.equal(s.entryPath, join(repoRoot, s.entry));
    assert.equal(s.service, layout.principals.principals[s.name]!.service);
    assert.equal(layout.service(s.name), s);
  }
  // Every principal that registers a micro service of the mesh and is not a person or an upstream is run by it.
  const people = new Set(["approver", "operator", "sysadmin", "upstream", "auditor"]);
  assert.deepEqual(Object.values(layout.principals.principals).filter((p) => p.service !== undefined && !people.has(p.role) && p.entry === undefined).map((p) => p.name), []);
  assert.throws(() => layout.service("operator"), (err: unknown) => isCausewayError(err, ErrorCode.UnknownPrincipal) && /principal "operator" runs no process/.test((err as Error).message));

  const doc = JSON.parse(readFileSync(join(repoRoot, "infra", "principals.json"), "utf8")) as { principals: Record<string, { entry?: string }> };
  doc.principals.planner!.entry = "services/agents/planner/missing.ts";
  assert.throws(() => loadLayout({ principals: parsePrincipals(doc, "test.json") }), (err: unknown) =>
    isCausewayError(err, ErrorCode.Config) && (err as Error).message.includes("planner's entry services/agents/planner/missing.ts does not exist"));
});

test("layout - services open buckets and never create them: a clear error naming the bucket and the command", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const refused = (bucket: string) => (err: unknown) =>
    err instanceof ConfigError && err.code === ErrorCode.Config && err.message.includes(`KV bucket ${bucket}`)
    && err.message.includes(`\`${MESH_BUCKETS[bucket as keyof typeof MESH_BUCKETS].createdBy}\``);
  await assert.rejects(openProcessedSet(nc, "publish", 1), refused(KvBucket.Processed));
  await assert.rejects(openLeases(nc), refused(KvBucket.Leases));
  await assert.rejects(openMeshBucket(nc, KvBucket.Trust), refused(KvBucket.Trust));
  assert.deepEqual((await jsm.streams.names().next()).filter((n) => n.startsWith("KV_")), [], "no bucket was created");

  // Operator tooling creates every bucket of the table with its settings (the trust store is `causeway trust seed`'s).
  const { created, raised } = await ensureMeshBuckets(nc);
  const applied = Object.values(MESH_BUCKETS).filter((b) => b.createdBy === STREAMS_APPLY);
  assert.deepEqual(created.sort(), applied.map((b) => b.name).sort());
  assert.deepEqual(raised, []);
  for (const b of applied) {
    const status = await (await new Kvm(nc).open(b.name)).status();
    assert.equal(status.history, b.history, b.name);
    assert.equal(status.ttl, b.ttlMs, b.name);
    assert.equal(status.description, b.description, b.name);
  }
  const set = await openProcessedSet(nc, "publish", 1);
  await set.mark({ source: "s", id: "1" });
  assert.equal(await set.has({ source: "s", id: "1" }), true);
  assert.deepEqual(await ensureMeshBuckets(nc), { created: [], raised: [] }, "existing buckets are left alone");
});

/** A capability's consumer, or one of its lanes', by durable name. */
function capabilityConsumerOf(layout: MeshLayout, durable: string): ReturnType<MeshLayout["capabilityConsumer"]> {
  for (const c of Object.values(layout.principals.capabilities)) {
    for (const config of [layout.capabilityConsumer(c.name, c.major), ...LANES.map((lane) => layout.laneConsumer(c.name, c.major, lane))]) {
      if (config.durable_name === durable) return config;
    }
  }
  assert.fail(`${durable} is the consumer of a capability of principals.json or of one of its lanes`);
}


/** `[file, stream, durable]` for each durable a service names with a literal: `consumers.get|info(STREAM, "name")`, `durable_name: NAME`. */
function namedInCode(): [string, string, string][] {
  const found: [string, string, string][] = [];
  const streamOf = (token: string) => (token.startsWith("StreamName.") ? `MESH_${token.slice("StreamName.".length).toUpperCase()}` : token.replaceAll('"', ""));
  const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : []);
  for (const file of walk(join(repoRoot, "services"))) {
    const source = readFileSync(file, "utf8");
    const constants = new Map([...source.matchAll(/const (\w+) = "([a-z0-9-]+)";/g)].map((m) => [m[1]!, m[2]!]));
    for (const m of source.matchAll(/consumers\.(?:get|info|add)\(\s*(StreamName\.\w+|"MESH_\w+")\s*,\s*(?:\{\s*durable_name:\s*)?("([a-z0-9-]+)"|\w+)/g)) {
      const durable = m[3] ?? constants.get(m[2]!);
      if (durable !== undefined) found.push([file, streamOf(m[1]!), durable]);
    }
  }
  return found;
}
