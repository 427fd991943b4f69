// Signed CloudEvents through real JetStream: published as one principal, consumed and verified as another.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import { connect } from "@nats-io/transport-node";
import { startServer } from "./harness/index.ts";
import {
  NatsBinding, VerificationError, createEvent, createKeyring, outputEventInit, signEvent, signingKeyFromNkeySeed, uuidv7, verificationKeyFromNkey, verifyEvent, type CloudEvent,
} from "../services/kit/index.ts";

const seedOf = () => new TextDecoder().decode(createUser().getSeed());

test("jetstream - signed events published in binary and structured mode are consumed and verified; duplicates absorbed", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "MESH_EVT", subjects: ["mesh.evt.>"], duplicate_window: 120_000_000_000 });
  await jsm.consumers.add("MESH_EVT", { durable_name: "verifier", ack_policy: AckPolicy.Explicit });
  const js = jetstream(nc);

  const planner = signingKeyFromNkeySeed(seedOf());
  const root = createEvent({ id: uuidv7(), source: "https://crm.example", type: "report.requested", time: new Date().toISOString(), data: '{"topic":"x"}' });
  const sent: CloudEvent[] = [];
  for (let i = 0; i < 20; i++) {
    const e = signEvent(createEvent(outputEventInit(root, "planner", i, { type: "research.task.created", subject: `task ${i} ü`, data: { index: i } })), planner);
    sent.push(e);
    const { headers, data } = i % 2 === 0 ? NatsBinding.binary(e) : NatsBinding.structured(e);
    const ack = await js.publish("mesh.evt.research.task", data, { headers, msgID: e.id });
    assert.equal(ack.duplicate, false);
  }
  // A redelivered input republishes the same derived ids: JetStream absorbs them.
  const again = NatsBinding.binary(sent[3]!);
  assert.equal((await js.publish("mesh.evt.research.task", again.data, { headers: again.headers, msgID: sent[3]!.id })).duplicate, true);

  const ring = createKeyring([verificationKeyFromNkey(planner.keyid)]);
  const consumer = await js.consumers.get("MESH_EVT", "verifier");
  const received: CloudEvent[] = [];
  const messages = await consumer.fetch({ max_messages: 20, expires: 5_000 });
  for await (const m of messages) {
    const verified = verifyEvent(NatsBinding.toEvent(m), ring);
    assert.equal(verified.verification.keyid, planner.keyid);
    received.push(verified.event);
    m.ack();
  }
  assert.deepEqual(received.map((e) => e.id), sent.map((e) => e.id));
  assert.deepEqual(received.map((e) => e.subject), sent.map((e) => e.subject));
  assert.deepEqual(received.map((e) => JSON.parse(Buffer.from(e.data).toString()).index), sent.map((_, i) => i));
  assert.equal((await jsm.streams.info("MESH_EVT")).state.messages, 20);
});

test("jetstream - an event tampered with in the stream path is rejected by the consumer", async (t) => {
  await using server = await startServer();
  const nc = await connect({ servers: server.url });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: "MESH_EVT", subjects: ["mesh.evt.>"] });
  const js = jetstream(nc);
  const producer = signingKeyFromNkeySeed(seedOf());
  const e = signEvent(createEvent({ id: uuidv7(), source: "causeway://researcher", type: "research.finding.created", data: '{"confidence":0.2}' }), producer);
  const { headers } = NatsBinding.binary(e);
  // An intermediary raises the confidence before the message reaches the stream.
  await js.publish("mesh.evt.research.finding", Buffer.from('{"confidence":0.9}'), { headers });
  const msg = await (await js.consumers.get("MESH_EVT")).next({ expires: 5_000 });
  assert.ok(msg);
  assert.throws(() => verifyEvent(NatsBinding.toEvent(msg), createKeyring([producer])), (err: unknown) => err instanceof VerificationError && err.code === "CW_ERR_CORE_DIGEST_MISMATCH");
});
