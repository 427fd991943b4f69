// Issue 13, item 1: agents subscribe to the facts they need. A fact on <prefix>.evt.<type>.v<major> reaches every
// agent whose principals.json entry subscribes to it, each through a durable of its own (fan-out across agents,
// queue semantics across one agent's replicas), with the whole pipeline; the producer's code and entry never
// name its listeners. The reference listener is the summarizer (report.published → report.summarized); a second
// subscriber, `listener`, is added to a copy of principals.json the way a new agent would be.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { jetstream, jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  DEFAULT_PRINCIPALS_PATH, ErrorCode, NatsBinding, controlRequest, QuarantineHeader, QuarantineReason, StreamName, createEvent, createLogger, isCausewayError,
  loadLayout, newTraceparent, openTrustStore, parsePrincipals, readSeed, signEvent, signingKeyFromNkeySeed, startAgent, subscriptionDurable, uuidv7,
  type Agent, type AgentDefinition, type CloudEvent, type MeshLayout, type Principals,
} from "../services/kit/index.ts";
import { createSummarizerDefinition, SummarizerSchema, type ReportSummarized } from "../services/agents/summarizer/definition.ts";
import { readMessages } from "../services/cli/flow.ts";
import { startOperatedMesh, type OperatedMesh } from "./e2e-fixture.ts";
import { startCoordinator } from "./coordinator-fixture.ts";
import { start as startSwitches } from "../services/coordinator/switches.ts";
import { pause, resume } from "../services/coordinator/contract.ts";
import { waitFor } from "./harness/index.ts";

const REPORT = SummarizerSchema["report.published"];
const FACT = { type: "report.published", major: 1 } as const;
const quiet = (name: string) => createLogger({ name, level: process.env.LOG_LEVEL ?? "silent" });

/** infra/principals.json plus `listener`: a second agent subscribing to report.published, entered as a new agent would be. */
function withListener(): Principals {
  const doc = JSON.parse(readFileSync(DEFAULT_PRINCIPALS_PATH, "utf8")) as { capabilities: Record<string, unknown>; principals: Record<string, Record<string, unknown>> };
  doc.capabilities["listen.v1"] = { description: "A test listener's capability" };
  doc.principals.listener = {
    role: "agent", description: "A second subscriber to report.published", service: "listener", serves: ["listen.v1"],
    subscribes: [`${FACT.type}.v${FACT.major}`], kv: doc.principals.summarizer!.kv, // what every agent reads and writes
  };
  return parsePrincipals(doc, "principals.json + listener");
}

/** The listener: records what it is given, emits nothing. */
function listenerDefinition(seen: string[]): AgentDefinition {
  return {
    principal: "listener", capability: "listen", major: 1, version: "0.0.1", description: "records report.published facts",
    accepts: { [FACT.type]: REPORT }, subscribes: { [FACT.type]: REPORT }, emits: {}, concurrency: 1,
    handler(input) {
      seen.push(input.event.id);
      return [];
    },
  };
}

/** A report.published as the reporter signs it. */
function report(mesh: OperatedMesh, title: string, signer = "reporter"): CloudEvent {
  const now = new Date().toISOString();
  return signEvent(createEvent({
    id: uuidv7(), source: `causeway://${signer}`, type: FACT.type, time: now, datacontenttype: "application/json", dataschema: REPORT,
    extensions: { traceparent: newTraceparent(), correlationid: `flow-${title}`, emittedat: now },
    data: JSON.stringify({ requestId: `req-${title}`, title, sections: [{ heading: "Finding", body: `${title} holds. More detail follows.` }], findingsCount: 1, complete: true }),
  }), signingKeyFromNkeySeed(readSeed(signer, mesh.dataDir)));
}

async function publish(nc: NatsConnection, subject: string, e: CloudEvent): Promise<void> {
  const { headers, data } = NatsBinding.binary(e);
  await jetstream(nc).publish(subject, data, { headers, msgID: e.id });
}

interface Subscribers {
  readonly mesh: OperatedMesh;
  readonly layout: MeshLayout;
  readonly subject: string;
  readonly jsm: JetStreamManager;
  /** A summarizer replica on a connection of its own. */
  summarizer(): Promise<Agent>;
  listener(seen: string[]): Promise<Agent>;
  /** report.summarized facts so far, by the report they summarize. */
  summaries(): Promise<ReportSummarized[]>;
}

async function subscribers(mesh: OperatedMesh, principals: Principals): Promise<Subscribers> {
  const layout = loadLayout({ principals });
  const run = async <In>(principal: string, def: AgentDefinition<In>) => {
    const nc = await mesh.as(principal);
    const trust = await openTrustStore(nc);
    const agent = await startAgent(nc, def, { trust, layout, signingKey: signingKeyFromNkeySeed(readSeed(principal, mesh.dataDir)), log: quiet(principal) });
    const stop = agent.stop;
    return Object.assign(agent, { stop: async () => { await stop(); await trust.close(); } });
  };
  return {
    mesh, layout, subject: layout.subjects.event(FACT.type, FACT.major), jsm: await jetstreamManager(mesh.operator),
    summarizer: () => run("summarizer", createSummarizerDefinition({ concurrency: 1 })),
    listener: (seen) => run("listener", listenerDefinition(seen)),
    summaries: async () => (await readMessages(mesh.operator, StreamName.Evt, layout.subjects.event("report.summarized", 1)))
      .map((m) => mesh.trust.verify(NatsBinding.toEvent(m), { receivedAt: "now" }))
      .map((t) => JSON.parse(Buffer.from(t.event.data).toString("utf8")) as ReportSummarized),
  };
}

describe("agents subscribe to facts", () => {
  test("subscriptions - each subscribing agent gets every fact published after its durable exists once; replicas split them; stopped, nothing is lost", async () => {
    const principals = withListener();
    await using mesh = await startOperatedMesh({ principals });
    const s = await subscribers(mesh, principals);
    const reporter = await mesh.as("reporter");
    // Before any subscriber's durable exists: not delivered to them later (a subscriber starts at "new").
    const early = report(mesh, "early");
    await publish(reporter, s.subject, early);

    const seen: string[] = [];
    let a = await s.summarizer();
    let listener = await s.listener(seen);
    const first = Array.from({ length: 6 }, (_, i) => report(mesh, `first-${i}`));
    for (const e of first) await publish(reporter, s.subject, e);
    await waitFor(async () => seen.length === first.length && (await s.summaries()).length === first.length, { what: "both subscribers to get the first facts" });

    // A second replica of the summarizer shares its durable: together they handle each fact once.
    const b = await s.summarizer();
    const second = Array.from({ length: 40 }, (_, i) => report(mesh, `second-${i}`));
    for (const e of second) await publish(reporter, s.subject, e);
    const all = [...first, ...second];
    await waitFor(async () => seen.length === all.length && (await s.summaries()).length === all.length, { what: "both subscribers to get the second facts", timeoutMs: 20_000 });
    assert.equal(a.stats().processed + b.stats().processed, all.length, "each fact handled once by one replica");
    assert.ok(a.stats().processed > 0 && b.stats().processed > 0, `replicas split the facts: ${a.stats().processed} and ${b.stats().processed}`);
    assert.deepEqual([...seen].sort(), all.map((e) => e.id).sort(), "the other subscriber got every fact once");
    const summaries = await s.summaries();
    assert.deepEqual(summaries.map((x) => x.reportId).sort(), all.map((e) => e.id).sort(), "one summary per fact");
    assert.ok(!summaries.some((x) => x.reportId === early.id) && !seen.includes(early.id), "a fact from before the durable existed is not delivered");

    // Stopped subscribers lose nothing: their durables keep what arrives meanwhile.
    await Promise.all([a.stop(), b.stop(), listener.stop()]);
    const third = Array.from({ length: 5 }, (_, i) => report(mesh, `third-${i}`));
    for (const e of third) await publish(reporter, s.subject, e);
    for (const principal of ["summarizer", "listener"]) {
      const info = await s.jsm.consumers.info(StreamName.Evt, subscriptionDurable(principal, FACT));
      assert.equal(info.num_pending, third.length, `${principal}'s durable keeps the facts published while it was stopped`);
    }
    a = await s.summarizer();
    listener = await s.listener(seen);
    await waitFor(async () => seen.length === all.length + third.length && (await s.summaries()).length === all.length + third.length, { what: "the facts published while stopped" });
    await Promise.all([a.stop(), listener.stop()]);
  });

  test("subscriptions - pausing an agent pauses its subscriptions on the server too: facts wait in its durable, then run on resume", async () => {
    await using mesh = await startOperatedMesh();
    await using _coordinator = await startCoordinator(mesh, [startSwitches]);
    const s = await subscribers(mesh, loadLayout().principals);
    const summarizer = await s.summarizer();
    try {
      const durable = subscriptionDurable("summarizer", FACT);
      await controlRequest(mesh.operator, pause, { scope: "principal", target: "summarizer", reason: "a bad prompt", operator: "test" });
      const info = await s.jsm.consumers.info(StreamName.Evt, durable);
      assert.equal(info.paused, true, `${durable} is paused on the server`);
      const fact = report(mesh, "during-pause");
      await publish(await mesh.as("reporter"), s.subject, fact);
      await waitFor(async () => (await s.jsm.consumers.info(StreamName.Evt, durable)).num_pending === 1, { what: "the fact stored for the paused durable" });
      const held = await s.jsm.consumers.info(StreamName.Evt, durable);
      assert.deepEqual([held.delivered.consumer_seq, held.num_ack_pending, summarizer.stats().processed], [info.delivered.consumer_seq, 0, 0], "nothing delivered while paused");
      await controlRequest(mesh.operator, resume, { scope: "principal", target: "summarizer", operator: "test" });
      await waitFor(async () => (await s.summaries()).some((x) => x.reportId === fact.id), { what: "the fact handled after the resume" });
      assert.equal((await s.jsm.consumers.info(StreamName.Evt, durable)).delivered.consumer_seq, info.delivered.consumer_seq + 1, "delivered once");
    } finally {
      await summarizer.stop();
    }
  });

  test("subscriptions - refused: a fact of another type on the subject, a type its signer may not emit, a re-pointed durable, a definition that disagrees with principals.json", async () => {
    await using mesh = await startOperatedMesh();
    const principals = loadLayout().principals;
    const s = await subscribers(mesh, principals);
    const summarizer = await s.summarizer();
    try {
      const publisherNc = await mesh.as("publisher");
      // The publisher may publish on mesh.evt.report.> (its report.released): its own type on report.published's subject…
      const released = signEvent(createEvent({
        id: uuidv7(), source: "causeway://publisher", type: "report.released", time: new Date().toISOString(), datacontenttype: "application/json",
        dataschema: "https://causeway.dev/schemas/report.released/1.0.0", extensions: { traceparent: newTraceparent() },
        data: JSON.stringify({ requestId: "r", location: "file:///x", leaseRevision: 1 }),
      }), signingKeyFromNkeySeed(readSeed("publisher", mesh.dataDir)));
      await publish(publisherNc, s.subject, released);
      // …and a report.published it signs, which only the reporter may emit.
      const forged = report(mesh, "forged", "publisher");
      await publish(publisherNc, s.subject, forged);
      await waitFor(() => summarizer.stats().quarantined === 2, { what: "both to be quarantined" });
      const entries = (await readMessages(mesh.operator, StreamName.Quarantine, "mesh.quarantine.>")).map((m) => ({
        subject: m.subject, reason: m.headers?.get(QuarantineHeader.Reason), original: m.headers?.get(QuarantineHeader.OriginalSubject),
      }));
      const capability = principals.principals.summarizer!.serves[0]!.split(".")[0]!;
      assert.deepEqual(entries.map((e) => [e.reason, e.subject, e.original]).sort(), [
        [QuarantineReason.UnauthorizedEmitter, `mesh.quarantine.${QuarantineReason.UnauthorizedEmitter}.${capability}`, s.subject],
        [QuarantineReason.UnknownCapability, `mesh.quarantine.${QuarantineReason.UnknownCapability}.${capability}`, s.subject],
      ].sort());
      assert.equal(summarizer.stats().processed, 0, "the handler never ran");

      // The server pins each subscription durable to its fact: the summarizer cannot widen it to every fact.
      const own = await jetstreamManager(await mesh.as("summarizer"));
      const durable = subscriptionDurable("summarizer", FACT);
      await assert.rejects(own.consumers.add(StreamName.Evt, { ...s.layout.subscriptionConsumers("summarizer")[0]!.config, filter_subject: "mesh.evt.>" } as never),
        (err: unknown) => /permission|authorization/i.test(String(err)), `${durable} re-pointed at mesh.evt.>`);

      // A definition subscribing to what principals.json does not declare is refused at start, with the fix.
      const nc = await mesh.as("summarizer");
      const trust = await openTrustStore(nc);
      try {
        const def = { ...createSummarizerDefinition(), subscribes: { "report.released": "https://causeway.dev/schemas/report.released/1.0.0" } };
        await assert.rejects(startAgent(nc, def, { trust, signingKey: signingKeyFromNkeySeed(readSeed("summarizer", mesh.dataDir)), log: quiet("summarizer") }),
          (err: unknown) => isCausewayError(err, ErrorCode.Config) && /add "report\.released\.v1" to its "subscribes"/.test(err.message) && /report\.published\.v1 would have a durable nobody consumes/.test(err.message));
      } finally {
        await trust.close();
      }
    } finally {
      await summarizer.stop();
    }
  });
});
