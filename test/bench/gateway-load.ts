// The gateway benchmark's second process: a load generator driven over IPC by gateway.bench.ts. It holds its
// connections across rounds, so a round measures traffic, not process start-up.
//   {mode: "http", n}     POST n events to the gateway (keep-alive, CONCURRENCY requests in flight); done when all are 202
//   {mode: "nats", n}     publish n raw events on mesh.ingest.upstream-demo.bench as upstream-demo; done when flushed
//   {mode: "baseline", n} the hand-written JetStream publisher: sign each event as the gateway, publish to
//                         mesh.cap.plan.v1 with a msg id (nats.js js.publish), PUBLISH_WINDOW in flight; done when every ack is in
//   {mode: "tuned", n}    the same through the gateway's own publish path (the kit's StreamPublisher, a connection
//                         without async traces): for reference, how much of the gap is the client library
import { Pool } from "undici";
import { jetstream } from "@nats-io/jetstream";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import {
  NatsBinding, connectAs, createEvent, createStreamPublisher, inboxPrefix, newTraceparent, readSeed, signEvent, signingKeyFromNkeySeed, uuidv7,
} from "../../services/kit/index.ts";

const CONCURRENCY = 64;
const PUBLISH_WINDOW = 256;
const SOURCE = "https://demo.causeway.dev/bench";
const SCHEMA = "https://causeway.dev/schemas/report.requested/1.0.0";
// ~1 KiB of JSON data, like the other benchmarks' events.
const DATA = JSON.stringify({ topic: "Benchmark", requester: "bench@example.com", questions: ["a".repeat(450), "b".repeat(450)] });

const { GATEWAY_URL, GATEWAY_TOKEN, NATS_URL } = process.env as Record<string, string>;
const upstream = await connectAs("upstream-demo", { servers: NATS_URL });
const gateway = await connectAs("gateway", { servers: NATS_URL });
const js = jetstream(gateway);
const gatewayTuned = await connectAs("gateway", { servers: NATS_URL, options: { noAsyncTraces: true } });
const publisher = createStreamPublisher(gatewayTuned, inboxPrefix("gateway"));
const key = signingKeyFromNkeySeed(readSeed("gateway"));
// undici (the engine of Node's fetch) rather than node:http's client: it costs the machine a third as much CPU
// per request, and on a 2-core machine every cycle the load generator spends is taken from the gateway.
const pool = new Pool(GATEWAY_URL, { connections: CONCURRENCY, pipelining: 1 });

async function post(id: string): Promise<number> {
  const res = await pool.request({
    path: "/events", method: "POST", body: DATA,
    headers: {
      authorization: `Bearer ${GATEWAY_TOKEN}`, "content-type": "application/json",
      "ce-specversion": "1.0", "ce-id": id, "ce-source": SOURCE, "ce-type": "report.requested", "ce-dataschema": SCHEMA,
    },
  });
  await res.body.dump();
  return res.statusCode;
}

async function http(n: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      const status = await post(uuidv7());
      if (status !== 202) throw new Error(`the gateway answered ${status}`);
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
}

async function nats(n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const h = natsHeaders();
    h.append("ce-specversion", "1.0");
    h.append("ce-id", uuidv7());
    h.append("ce-source", SOURCE);
    h.append("ce-type", "report.requested");
    h.append("ce-datacontenttype", "application/json");
    h.append("ce-dataschema", SCHEMA);
    upstream.publish("mesh.ingest.upstream-demo.bench", DATA, { headers: h });
  }
  await upstream.flush();
}

type Publish = (subject: string, data: Uint8Array, opts: { headers: MsgHdrs; msgID: string }) => Promise<unknown>;

const baseline = (n: number) => signAndPublish(n, (subject, data, opts) => js.publish(subject, data, opts));
const tuned = (n: number) => signAndPublish(n, (subject, data, opts) => publisher.publish(subject, data, opts));

async function signAndPublish(n: number, publish: Publish): Promise<void> {
  // At the window the loop waits for one ack (a counter and a wake-up, not Promise.race over the whole window).
  let inFlight = 0;
  let wake: (() => void) | undefined;
  let failed: unknown;
  for (let i = 0; i < n; i++) {
    const now = new Date().toISOString();
    const event = signEvent(createEvent({
      id: uuidv7(), source: SOURCE, type: "report.requested", time: now, datacontenttype: "application/json", dataschema: SCHEMA,
      extensions: { upstream: "upstream-demo", emittedat: now, traceparent: newTraceparent() }, data: DATA,
    }), key);
    const { headers, data } = NatsBinding.binary(event);
    inFlight++;
    publish("mesh.cap.plan.v1", data, { headers, msgID: event.id }).then(undefined, (err: unknown) => { failed ??= err; }).finally(() => {
      inFlight--;
      const w = wake;
      wake = undefined;
      w?.();
    });
    while (inFlight >= PUBLISH_WINDOW) await new Promise<void>((resolve) => { wake = resolve; });
    if (failed !== undefined) throw failed;
  }
  while (inFlight > 0) await new Promise<void>((resolve) => { wake = resolve; });
  if (failed !== undefined) throw failed;
}

const modes = { http, nats, baseline, tuned } as const;
process.on("message", (msg: { mode: keyof typeof modes; n: number } | "exit") => {
  if (msg === "exit") {
    void Promise.all([pool.close(), upstream.close(), gateway.close(), gatewayTuned.close()]).then(() => process.exit(0));
    return;
  }
  const started = performance.now();
  modes[msg.mode](msg.n).then(
    () => process.send!({ ok: true, ms: performance.now() - started }),
    (err: unknown) => process.send!({ ok: false, error: String(err) }),
  );
});
process.send!("ready");
