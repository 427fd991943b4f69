// The gateway's process entry: connect as `gateway`, load the upstreams and the routing table, open the trust
// store and the processed-set bucket, start the HTTP and NATS ingress, register the `gateway` micro service
// (its metadata carries the HTTP URL: `nats micro info gateway`), and drain on SIGTERM / SIGINT. With
// CAUSEWAY_GATEWAY_WORKERS > 1 this process only supervises that many workers (workers.ts), each a whole gateway.
import { jetstream } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  KvBucket, addControlEndpoint, untilStop, connectAs, createLogger, createSchemaRegistry, createStreamPublisher, dataDir, inboxPrefix, loadLayout, openMeshBucket,
  openTrustStore, readSeed, signingKeyFromNkeySeed,
} from "../kit/index.ts";
import { loadConfig } from "./config.ts";
import { health } from "./contract.ts";
import { startHttp, type HttpIngress } from "./http.ts";
import { createLedger } from "./ledger.ts";
import { startNatsIngress, type NatsIngress } from "./nats-ingress.ts";
import { startNatsRequests, type NatsRequests } from "./nats-requests.ts";
import { createNotary } from "./notarize.ts";
import { createRateLimiter } from "./rate-limit.ts";
import { loadRoutes } from "./routes.ts";
import { loadUpstreams } from "./upstreams.ts";
import { isWorker, releaseWorker, superviseWorkers } from "./workers.ts";

const PRINCIPAL = "gateway";

async function main(): Promise<void> {
  const log = createLogger({ name: PRINCIPAL });
  let nc: NatsConnection | undefined;
  let http: HttpIngress | undefined;
  let ingress: NatsIngress | undefined;
  let requests: NatsRequests | undefined;
  try {
    const config = loadConfig();
    const layout = loadLayout();
    const principals = layout.principals;
    const schemas = createSchemaRegistry();
    const upstreams = loadUpstreams(config.upstreamsPath, principals, dataDir());
    for (const warning of upstreams.warnings) log.warn(warning);
    const routes = loadRoutes(config.routesPath, principals, PRINCIPAL, schemas);
    // No async stack traces: nats.js would otherwise build an Error (a captured stack) per request, ~10% of
    // the gateway's CPU under load; request errors still carry their message and cause.
    nc = await connectAs(PRINCIPAL, { options: { noAsyncTraces: true } });
    const trust = await openTrustStore(nc, { onProblem: (err) => log.warn({ err }, "trust store entry ignored") });
    const js = jetstream(nc);
    const processed = layout.buckets[KvBucket.Processed].name;
    const kv = await openMeshBucket(nc, processed, "the gateway's dedupe marks");
    const subjects = layout.subjects;
    const deps = {
      config, nc, js, subjects, upstreams, limiter: createRateLimiter(isWorker() ? config.workers : 1), principal: PRINCIPAL, log,
      notary: createNotary({ trust, schemas, routes, key: signingKeyFromNkeySeed(readSeed(PRINCIPAL)) }),
      ledger: createLedger({ publisher: createStreamPublisher(nc, inboxPrefix(PRINCIPAL)), kv, bucket: processed, duplicateWindowMs: config.duplicateWindowMs, log }),
    };
    http = await startHttp(deps);
    ingress = await startNatsIngress({ ...deps, layout });
    const service = await new Svcm(nc).add({
      name: PRINCIPAL, version: "1.0.0",
      description: `Ingress for upstream systems: HTTP (CloudEvents HTTP binding), NATS requests (${subjects.control(PRINCIPAL, "publish")}.<upstream>) and NATS publishes (${subjects.prefix}.ingest.<upstream>.>, stored in MESH_INGEST), notarized and routed`,
      metadata: { http: http.url, routes: [...routes.values()].map((r) => `${r.type}→${r.ref}`).join(","), upstreams: upstreams.list().map((u) => u.name).join(",") },
    });
    const healthUrl = http.url;
    addControlEndpoint(service, health, { subjects, log, handle: () => Promise.resolve({ status: "ok", http: healthUrl }) });
    requests = startNatsRequests(deps, service, PRINCIPAL);
    await nc.flush(); // the endpoints are subscribed on the server before "started"
    log.info({ http: http.url, requests: requests.subject, upstreams: upstreams.list().length, routes: routes.size }, "gateway started");
    const lost = await untilStop(log, nc, [trust.lost, ingress.lost]);
    await http.close();
    await service.stop(); // takes no more requests
    await requests.settled();
    await ingress.stop();
    await trust.close();
    await nc.drain();
    if (lost) console.error(`gateway: ${lost.message}`);
    process.exitCode = lost ? 1 : 0;
  } catch (err) {
    log.error({ err }, "gateway failed");
    console.error(`gateway: ${err instanceof Error ? err.message : String(err)}`);
    await http?.close().catch(() => undefined);
    await ingress?.stop().catch(() => undefined);
    await nc?.close().catch(() => undefined);
    process.exitCode = 1;
  }
}

const { workers } = loadConfig();
if (workers > 1 && !isWorker()) process.exitCode = await superviseWorkers(workers, createLogger({ name: PRINCIPAL }));
else {
  await main();
  releaseWorker();
}
