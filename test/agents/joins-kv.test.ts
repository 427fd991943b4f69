// The reporter's KV join store against a real nats-server: the same semantics as the memory store, state that
// outlives the process, and compare-and-set writes under concurrent replicas.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Kvm, type KV } from "@nats-io/kv";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { CorruptJoinError, createKvJoinStore, createMemoryJoinStore, joinKey, openKvJoinStore, type JoinMeta, type JoinStore, type JoinedFinding } from "../../services/agents/reporter/joins.ts";
import { startServer } from "../harness/index.ts";
import { ConfigError, KvBucket, MESH_BUCKETS } from "../../services/kit/index.ts";
import { ensureMeshBuckets } from "../../services/kit/ops/index.ts";

const meta = (deadline = "2026-03-01T10:00:10.000Z", totalTasks = 3): JoinMeta => ({
  totalTasks, deadline, topic: "T", cause: { id: "cause-1", source: "causeway://verifier", correlationid: "req-1", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
});
const finding = (i: number): JoinedFinding => ({ findingId: `finding-${i}`, taskIndex: i, verdict: "supported", confidence: 0.8, claim: `claim ${i}`, query: `query ${i}` });
const T = Date.parse("2026-03-01T10:00:10.000Z");

/** The behaviour both stores share, step by step. */
async function exercise(store: JoinStore): Promise<void> {
  const a = await store.add("req-1", finding(0), meta());
  assert.deepEqual(a.findings.map((f) => f.findingId), ["finding-0"]);
  assert.equal(a.published, false);
  assert.equal(a.topic, "T");
  // The same finding again is not added; a later meta does not change the join.
  const again = await store.add("req-1", finding(0), meta("2030-01-01T00:00:00.000Z", 9));
  assert.deepEqual(again, a);
  const b = await store.add("req-1", finding(2), meta());
  assert.deepEqual(b.findings.map((f) => f.taskIndex), [0, 2]);
  await store.add("req-2", finding(0), meta("2026-03-01T10:00:05.000Z"));
  await store.add("id with spaces/ü", finding(1), meta("2026-03-01T10:00:20.000Z"));

  assert.deepEqual((await store.due(T - 10_000)).map((s) => s.requestId), []);
  assert.deepEqual((await store.due(T)).map((s) => s.requestId), ["req-2", "req-1"], "earliest deadline first");
  assert.deepEqual((await store.due(T + 10_000)).map((s) => s.requestId), ["req-2", "req-1", "id with spaces/ü"]);

  await store.markPublished("req-1");
  await store.markPublished("req-1");
  await store.markPublished("never-seen");
  assert.deepEqual((await store.due(T + 10_000)).map((s) => s.requestId), ["req-2", "id with spaces/ü"]);
  const late = await store.add("req-1", finding(1), meta());
  assert.equal(late.published, true);
  assert.deepEqual(late.findings.map((f) => f.taskIndex), [0, 2], "nothing is added to a published join");
}

test("joins - the memory store: dedupe by findingId, deadlines, publish is terminal", async () => {
  await exercise(createMemoryJoinStore());
});

test("joins kv - the KV store behaves like the memory store, and its state outlives the store instance", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  await ensureMeshBuckets(nc);
  await exercise(await openKvJoinStore(nc));

  const restarted = await openKvJoinStore(nc);
  assert.deepEqual((await restarted.due(T + 10_000)).map((s) => s.requestId), ["req-2", "id with spaces/ü"]);
  const kv = await new Kvm(nc).open(KvBucket.Joins);
  const keys: string[] = [];
  for await (const key of await kv.keys()) keys.push(key);
  assert.deepEqual(keys.sort(), [joinKey("id with spaces/ü"), "r.req-1", "r.req-2"].sort());
  assert.match(joinKey("id with spaces/ü"), /^x\.[A-Za-z0-9_-]+$/);
});

test("joins kv - two replicas adding findings of one request at once lose none", async (t) => {
  await using server = await startServer();
  const one = await connect({ servers: server.url });
  const two = await connect({ servers: server.url });
  t.after(async () => {
    await one.close();
    await two.close();
  });
  await ensureMeshBuckets(one);
  const a = await openKvJoinStore(one);
  const b = await openKvJoinStore(two);
  const total = 40;
  const adds = Array.from({ length: total }, (_, i) => (i % 2 === 0 ? a : b).add("req-race", finding(i), meta(undefined, total)));
  await Promise.all(adds);
  const [state] = await b.due(T);
  assert.equal(state!.findings.length, total);
  assert.deepEqual(state!.findings.map((f) => f.taskIndex), Array.from({ length: total }, (_, i) => i));
});

/** `kv`, except that right after its first read of a key `interfere` writes that key through another store. */
function interfering(kv: KV, interfere: () => Promise<unknown>): KV {
  let done = false;
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "get") {
        return async (key: string) => {
          const entry = await target.get(key);
          if (!done) {
            done = true;
            await interfere();
          }
          return entry;
        };
      }
      const value: unknown = Reflect.get(target, prop);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

test("joins kv - a write that loses the compare-and-set is retried from a fresh read (create and update)", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  await ensureMeshBuckets(nc);
  const other = await openKvJoinStore(nc);
  const kv = await new Kvm(nc).open(KvBucket.Joins);

  // Both find no join; the other replica creates it first.
  const creating = createKvJoinStore(interfering(kv, () => other.add("req-c", finding(1), meta())));
  assert.deepEqual((await creating.add("req-c", finding(0), meta())).findings.map((f) => f.findingId), ["finding-0", "finding-1"]);

  // Both read revision n; the other replica updates first.
  await other.add("req-u", finding(0), meta());
  const updating = createKvJoinStore(interfering(kv, () => other.add("req-u", finding(2), meta())));
  assert.deepEqual((await updating.add("req-u", finding(1), meta())).findings.map((f) => f.findingId), ["finding-0", "finding-1", "finding-2"]);

  // Same for publishing: the other replica's finding lands first, and the mark survives the retry.
  const publishing = createKvJoinStore(interfering(kv, () => other.add("req-u", finding(5), meta())));
  await publishing.markPublished("req-u");
  const final = await other.add("req-u", finding(6), meta());
  assert.equal(final.published, true);
  assert.deepEqual(final.findings.map((f) => f.taskIndex), [0, 1, 2, 5]);
});

test("joins kv - the sweep skips a corrupt join and reports it; its own request fails loudly", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const problems: Error[] = [];
  await ensureMeshBuckets(nc);
  const store = createKvJoinStore(await new Kvm(nc).open(KvBucket.Joins), { onProblem: (err) => problems.push(err) });
  await store.add("req-ok", finding(0), meta());
  await (await new Kvm(nc).open(KvBucket.Joins)).put(joinKey("req-bad"), "{not json");
  assert.deepEqual((await store.due(T)).map((s) => s.requestId), ["req-ok"]);
  assert.equal(problems.length, 1);
  assert.ok(problems[0] instanceof CorruptJoinError);
  await assert.rejects(store.add("req-bad", finding(0), meta()), /join req-bad in causeway_joins is corrupt: not JSON/);
});

test("joins kv - a missing bucket is never created by the store: a clear error; the operator's ensureMeshBuckets creates it from the table", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const table = MESH_BUCKETS[KvBucket.Joins];
  await assert.rejects(openKvJoinStore(nc), (err: unknown) =>
    err instanceof ConfigError && err.code === "CW_ERR_CONFIG"
    && err.message.includes(`KV bucket ${KvBucket.Joins}`) && err.message.includes("does not exist") && err.message.includes(`\`${table.createdBy}\``));
  const jsm = await jetstreamManager(nc);
  await assert.rejects(jsm.streams.info(`KV_${KvBucket.Joins}`), /stream not found/, "the failed open created nothing");
  assert.ok((await ensureMeshBuckets(nc)).created.includes(KvBucket.Joins));
  await openKvJoinStore(nc);
  const status = await (await new Kvm(nc).open(KvBucket.Joins)).status();
  assert.equal(status.history, table.history);
  assert.equal(status.ttl, table.ttlMs);
  assert.ok(table.ttlMs > 0, "joins expire");
});
