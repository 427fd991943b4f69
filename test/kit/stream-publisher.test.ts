// The kit's StreamPublisher against a real nats-server: PubAcks in order with many in flight, msg-id
// deduplication, KV-style create-only publishes, and every way a publish can fail with a reason.
import assert from "node:assert/strict";
import { test } from "node:test";
import { JetStreamApiCodes, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect, headers } from "@nats-io/transport-node";
import { startServer } from "../harness/index.ts";
import { StreamPublishError, createStreamPublisher } from "../../services/kit/index.ts";

test("stream publisher - acks, duplicates, create-only, and each failure with its reason", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "WORK", subjects: ["work.>"], duplicate_window: 120_000_000_000 });
  const publisher = createStreamPublisher(nc, "_INBOX");

  await t.test("500 publishes in flight are each acknowledged with their own sequence, headers kept", async () => {
    const acks = await Promise.all(Array.from({ length: 500 }, (_, i) => {
      const h = headers();
      h.set("ce-id", `e-${i}`);
      return publisher.publish("work.a", `payload ${i}`, { headers: h, msgID: `id-${i}` });
    }));
    assert.deepEqual(acks.map((a) => a.seq), Array.from({ length: 500 }, (_, i) => i + 1));
    assert.ok(acks.every((a) => a.stream === "WORK" && !a.duplicate));
    const stored = await jsm.streams.getMessage("WORK", { seq: 437 });
    assert.equal(stored?.string(), "payload 436");
    assert.equal(stored?.header.get("ce-id"), "e-436");
    assert.equal(stored?.header.get("Nats-Msg-Id"), "id-436");
  });

  await t.test("a msg id the stream holds is acknowledged as a duplicate and not stored again", async () => {
    const ack = await publisher.publish("work.a", "again", { msgID: "id-7" });
    assert.deepEqual(ack, { stream: "WORK", seq: 8, duplicate: true });
    assert.equal((await jsm.streams.info("WORK")).state.messages, 500);
  });

  await t.test("create-only: the second publish to a subject fails with JetStream's wrong last sequence (10071)", async () => {
    await publisher.publish("work.mark.k1", "first", { expectedLastSubjectSequence: 0 });
    const err = await publisher.publish("work.mark.k1", "second", { expectedLastSubjectSequence: 0 }).then(() => undefined, (e: unknown) => e);
    assert.ok(err instanceof StreamPublishError);
    assert.equal(err.errCode, JetStreamApiCodes.StreamWrongLastSequence);
    assert.match(err.message, /wrong last sequence/);
  });

  await t.test("a KV create through the KV subject is what nats.js's KV reads", async () => {
    const kv = await new Kvm(nc).create("marks", { history: 1 });
    await publisher.publish("$KV.marks.gateway.abc", '{"n":1}', { expectedLastSubjectSequence: 0 });
    assert.deepEqual((await kv.get("gateway.abc"))?.json(), { n: 1 });
    await assert.rejects(kv.create("gateway.abc", "x"));
  });

  await t.test("a subject no stream takes: rejected as such, not left to time out", async () => {
    await assert.rejects(publisher.publish("nowhere.x", "x"), (err: unknown) => err instanceof StreamPublishError && /no stream takes this subject/.test(err.message));
  });

  await t.test("a responder that never answers: rejected after the timeout", async () => {
    const silent = nc.subscribe("silent.x", { callback: () => undefined });
    t.after(() => silent.unsubscribe());
    const quick = createStreamPublisher(nc, "_INBOX", { timeoutMs: 200 });
    t.after(() => quick.close());
    await assert.rejects(quick.publish("silent.x", "x"), (err: unknown) => err instanceof StreamPublishError && /no ack within 200 ms/.test(err.message));
  });

  await t.test("closing the connection rejects what is pending; a closed publisher refuses", async () => {
    const other = await connect({ servers: server.url });
    const silent = other.subscribe("silent.y", { callback: () => undefined });
    await other.flush();
    const own = await connect({ servers: server.url });
    const p = createStreamPublisher(own, "_INBOX");
    const pending = p.publish("silent.y", "x");
    await own.flush();
    await own.close();
    await assert.rejects(pending, /the NATS connection closed/);
    silent.unsubscribe();
    await other.close();
    publisher.close();
    await assert.rejects(publisher.publish("work.a", "x"), /the publisher is closed/);
  });
});

test("stream publisher - a publish the connection's permissions refuse is rejected as such, not left to the (30 s) timeout", async (t) => {
  await using server = await startServer({
    config: `
accounts: {
  APP: {
    jetstream: enabled
    users: [
      { user: admin, password: admin }
      { user: narrow, password: narrow, permissions: { publish: { allow: ["work.allowed"] }, subscribe: { allow: ["_INBOX.>"] } } }
    ]
  }
}`,
  });
  const admin = await connect({ servers: server.url, user: "admin", pass: "admin" });
  t.after(() => admin.close());
  await (await jetstreamManager(admin)).streams.add({ name: "WORK", subjects: ["work.>"] });
  const narrow = await connect({ servers: server.url, user: "narrow", pass: "narrow" });
  t.after(() => narrow.close());
  const publisher = createStreamPublisher(narrow, "_INBOX", { timeoutMs: 30_000 });
  t.after(() => publisher.close());
  const [allowed, refused] = await Promise.allSettled([publisher.publish("work.allowed", "x"), publisher.publish("work.other", "x")]);
  assert.equal(allowed.status, "fulfilled");
  assert.equal(refused.status, "rejected");
  assert.ok(refused.reason instanceof StreamPublishError);
  assert.match(refused.reason.message, /permission denied: this connection may not publish to work\.other/);
});

