// Ack and flow control subjects on nats-server 2.14+ (issue 14, item 0). The server can send a consumer's messages
// with v1 reply subjects (`$JS.ACK.<stream>.<consumer>.…`, its default) or, with the feature flag js_ack_fc_v2,
// v2 ones (`$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.…`), and the same for push consumers' flow control
// (`$JS.FC.…`). On a server in each mode, with the permissions `causeway infra render` writes:
// - an agent's acks, working() and double acks on its own durable land, and the reply subject is the form its
//   grants name (the account hash rendered by permissions.ts is the server's own);
// - a KV watch past the server's flow control window (the trust store and switches are watched this way) keeps
//   receiving: its flow control replies are allowed, else the server stalls it;
// - an agent cannot reach another durable's ack subscription. The server keeps a v1 subscription for every
//   consumer and does not check the names in an ack, so a v2 grant with wildcards for domain and account
//   (`$JS.ACK.*.*.<stream>.<durable>.>`) would let `$JS.ACK.<their stream>.<their durable>.<stream>.<durable>.1.1.1`
//   pull (`+NXT`) from any consumer of the account. The operator, whose grant covers every ack subject, shows on
//   the same server that such a subject does deliver another durable's message.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { jetstream, jetstreamManager, type ConsumerConfig, type JsMsg } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { createInbox } from "@nats-io/transport-node";
import { Account, KvBucket, capabilityKeyPrefix, defaultLayout, loadPrincipals } from "../../services/kit/index.ts";
import { NO_JETSTREAM_DOMAIN, accountHash, permissionsFor } from "../../services/kit/ops/index.ts";
import { startOperatedMesh, type OperatedMesh } from "../e2e-fixture.ts";
import { waitFor } from "../harness/index.ts";
import { watchViolations } from "./live.ts";

const principals = loadPrincipals();
const layout = defaultLayout();
const prefix = principals.prefix;
const plan = layout.capabilityConsumer("plan", 1);

/** The subject the server told the client to ack on (the message's reply subject; JsMsg's type leaves it out). */
const replyOf = (m: JsMsg): string => (m as JsMsg & { readonly reply: string }).reply;

/** A pull request for one message, as a consumer's ack subject takes it (`+NXT` then the request). */
const NEXT_ONE = '+NXT {"batch":1}';

const modes = [
  { name: "v1 subjects (the server's default)", config: "", v2: false },
  { name: "v2 subjects (feature flag js_ack_fc_v2)", config: "feature_flags { js_ack_fc_v2: true }", v2: true },
];

test("ack subjects - the rendered v2 grants name a concrete domain and account, never wildcards", () => {
  for (const name of Object.keys(principals.principals)) {
    const perms = permissionsFor(principals, name);
    for (const g of perms.publish.filter((x) => /^\$JS\.(ACK|FC)\./.test(x.subject))) {
      if (name === "operator") continue; // $JS.ACK.> and $JS.FC.>: it administers every consumer
      const tokens = g.subject.split(".");
      const v2 = tokens[2] === NO_JETSTREAM_DOMAIN;
      if (v2) assert.equal(tokens[3], accountHash(perms.account), `${name}: ${g.subject}`);
      // Stream and consumer (or, for flow control, stream) tokens are never wildcards.
      const named = v2 ? tokens.slice(2, tokens[1] === "ACK" ? 6 : 5) : tokens.slice(2, tokens[1] === "ACK" ? 4 : 3);
      assert.ok(named.every((t) => t !== "*" && t !== ">"), `${name}: ${g.subject}`);
    }
  }
  const planner = permissionsFor(principals, "planner").publish.map((g) => g.subject);
  assert.ok(planner.includes(`$JS.ACK.MESH_CAP.${plan.durable_name}.>`), planner.join(", "));
  assert.ok(planner.includes(`$JS.ACK._.${accountHash(Account.Mesh)}.MESH_CAP.${plan.durable_name}.*.*.*.*.>`), planner.join(", "));
});

for (const mode of modes) {
  describe(`ack subjects - ${mode.name}`, () => {
    let mesh: OperatedMesh;
    before(async () => {
      mesh = await startOperatedMesh({ serverConfig: mode.config });
    });
    after(async () => {
      await mesh?.[Symbol.asyncDispose]();
    });

    test(`ack subjects - ${mode.name}: an agent's working(), ack and double ack on its durable land`, async () => {
      const planner = await mesh.as("planner");
      const violations = watchViolations(planner);
      try {
        const jsm = await jetstreamManager(planner);
        await jsm.consumers.add("MESH_CAP", structuredClone(plan) as ConsumerConfig);
        const gateway = jetstream(await mesh.as("gateway"));
        for (const i of [1, 2]) await gateway.publish(`${prefix}.cap.plan.v1`, `task ${i}`);

        const consumer = await jetstream(planner).consumers.get("MESH_CAP", plan.durable_name);
        const first = await consumer.next({ expires: 5_000 });
        assert.ok(first, "a message was delivered");
        const tokens = replyOf(first).split(".");
        if (mode.v2) {
          assert.deepEqual(tokens.slice(0, 6), ["$JS", "ACK", NO_JETSTREAM_DOMAIN, accountHash(Account.Mesh), "MESH_CAP", plan.durable_name], replyOf(first));
          assert.ok(tokens.length >= 11, replyOf(first));
        } else {
          assert.deepEqual(tokens.slice(0, 4), ["$JS", "ACK", "MESH_CAP", plan.durable_name], replyOf(first));
          assert.equal(tokens.length, 9, replyOf(first));
        }
        first.working();
        assert.equal(await first.ackAck({ timeout: 5_000 }), true, "the double ack is confirmed");
        const second = await consumer.next({ expires: 5_000 });
        assert.ok(second, "the second message was delivered");
        second.ack();
        await violations.settle();
        assert.deepEqual(violations.seen.map((e) => e.message), [], "no permission violation");
        await waitFor(async () => {
          const info = await jsm.consumers.info("MESH_CAP", plan.durable_name);
          return info.num_ack_pending === 0 && info.ack_floor.stream_seq >= 2;
        }, { what: "both acks to reach the consumer" });
      } finally {
        violations.stop();
      }
    });

    test(`ack subjects - ${mode.name}: a KV watch past the flow control window keeps receiving`, async () => {
      const planner = await mesh.as("planner");
      const violations = watchViolations(planner);
      try {
        // The server asks for a flow control reply past 1 MiB pending and stalls the watch at 2 MiB without one.
        const kv = await new Kvm(planner).open(KvBucket.Processed);
        const keyPrefix = `${capabilityKeyPrefix("plan", 1)}.fc-${mode.v2 ? "v2" : "v1"}`;
        const value = new Uint8Array(512 * 1024).fill(0x61);
        const count = 10;
        for (let i = 0; i < count; i++) await kv.put(`${keyPrefix}.${i}`, value);
        const seen = new Set<string>();
        const watch = await kv.watch({ key: `${keyPrefix}.*` });
        const reading = (async () => {
          for await (const e of watch) seen.add(e.key);
        })();
        try {
          await waitFor(() => seen.size === count, { what: `all ${count} entries (5 MiB) through the watch, ${seen.size} so far`, timeoutMs: 15_000 });
        } finally {
          watch.stop();
          await reading;
        }
        await violations.settle();
        assert.deepEqual(violations.seen.map((e) => e.message), [], "no permission violation");
      } finally {
        violations.stop();
      }
    });

    test(`ack subjects - ${mode.name}: an agent cannot pull from another durable through an ack subject`, async () => {
      // A decision for lineage's MESH_DECISION durable to hold; the planner may not read MESH_DECISION.
      const coordinator = jetstream(await mesh.as("coordinator"));
      await coordinator.publish(`${prefix}.decision.grant`, "a decision the planner may not read");
      const victim = { stream: "MESH_DECISION", durable: layout.durableOf("lineage", "MESH_DECISION") };
      // Shapes that reach the victim's v1 subscription `$JS.ACK.<stream>.<durable>.*.*.*.*.*` (or its v2 one) while
      // ending like the planner's own ack subjects.
      const hash = accountHash(Account.Mesh);
      const attempts = [
        `$JS.ACK.${victim.stream}.${victim.durable}.MESH_CAP.${plan.durable_name}.1.1.1`,
        `$JS.ACK.${NO_JETSTREAM_DOMAIN}.${hash}.${victim.stream}.${victim.durable}.1.1.1.1.1`,
        `$JS.ACK.${NO_JETSTREAM_DOMAIN}.${hash}.${victim.stream}.${victim.durable}.MESH_CAP.${plan.durable_name}.1.1.1`,
      ];

      // The operator may publish on every ack subject: the first shape really pulls the victim's message.
      const operator = mesh.operator;
      const reply = createInbox("_INBOX_operator");
      const sub = operator.subscribe(reply, { max: 1, timeout: 5_000 });
      const stolen = (async () => {
        for await (const m of sub) return m.string();
        return undefined;
      })();
      operator.publish(attempts[0]!, NEXT_ONE, { reply });
      assert.equal(await stolen, "a decision the planner may not read", "the attack shape delivers another durable's message");

      const jsm = await jetstreamManager(operator);
      const delivered = async () => (await jsm.consumers.info(victim.stream, victim.durable)).delivered.consumer_seq;
      const before = await delivered();
      await jetstream(await mesh.as("coordinator")).publish(`${prefix}.decision.grant`, "a second decision");
      const planner = await mesh.as("planner");
      const violations = watchViolations(planner);
      try {
        for (const subject of attempts) {
          planner.publish(subject, NEXT_ONE, { reply: createInbox("_INBOX_planner") });
          await violations.settle();
          assert.ok(violations.has("publish", subject), `the server refused ${subject}`);
        }
      } finally {
        violations.stop();
      }
      // A refused publish never reaches the consumer: it delivered nothing more.
      await operator.flush();
      assert.equal(await delivered(), before, "the victim's consumer delivered nothing to the planner");
    });
  });
}
