// The gateway's process entry: the kit's service shell (connect as `gateway`, trust store, drain on SIGTERM /
// SIGINT, exit 1 when something it depends on is gone) around the gateway's own start: load the upstreams and
// the routing table, open the processed-set bucket, start the HTTP and NATS ingress, register the `gateway`
// micro service (its metadata carries the HTTP URL: `nats micro info gateway`). With CAUSEWAY_GATEWAY_WORKERS > 1
// this process only supervises that many workers (workers.ts), each a whole gateway.
import { jetstream } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import {
  startRouter,
  KvBucket, addControlEndpoint, loadBackpressure, loadTenants, createLogger, createSchemaRegistry, createStreamPublisher, dataDir, defaultLayout, inboxPrefix, openMeshBucket, runServiceProcess,
} from "../kit/index.ts";
import { startAdmission, type Admission } from "./admission.ts";
import { loadConfig } from "./config.ts";
import { health } from "./contract.ts";
import { startHttp } from "./http.ts";
import { createLedger } from "./ledger.ts";
import { startNatsIngress } from "./nats-ingress.ts";
import { startNatsRequests } from "./nats-requests.ts";
import { createNotary } from "./notarize.ts";
import { createRateLimiter } from "./rate-limit.ts";
import { loadRoutes } from "./routes.ts";
import { loadCheckedUpstreams, watchUpstreams } from "./upstreams.ts";
import { isWorker, releaseWorker, superviseWorkers } from "./workers.ts";

const PRINCIPAL = "gateway";

const run = () => runServiceProcess(PRINCIPAL, async ({ principal, nc, trust, key, layout, log, defer }) => {
  const config = loadConfig();
  const schemas = createSchemaRegistry();
  // Followed live; every upstream's tenant is one of the tenants admission has in force (infra/tenants.json, followed
  // by admission; read once here for the first load): CW_ERR_UPSTREAMS_INVALID names the one that is not.
  let admitting: Admission | undefined;
  const upstreams = watchUpstreams(config.upstreamsPath, layout.principals, dataDir(), { tenants: () => admitting?.tenants() ?? loadTenants(config.tenantsPath), log });
  defer(() => upstreams.close());
  for (const warning of upstreams.warnings) log.warn(warning);
  const routes = loadRoutes(config.routesPath, layout.principals, principal, schemas);
  const processed = layout.buckets[KvBucket.Processed].name;
  const kv = await openMeshBucket(nc, processed, "the gateway's dedupe marks");
  const subjects = layout.subjects;
  const router = await startRouter(nc, subjects, { log });
  defer(() => router.close());
  const js = jetstream(nc);
  const admission = await startAdmission({
    nc, js, upstreams, tenantsPath: config.tenantsPath, backpressurePath: config.backpressurePath, principal, key, prefix: layout.prefix,
    buckets: { quotas: layout.buckets[KvBucket.Quotas].name, pressure: layout.buckets[KvBucket.Pressure].name }, log,
  });
  admitting = admission;
  defer(() => admission.close()); // last: the ingress has stopped, so the last refusals are summed up
  const deps = {
    config, nc, js, subjects, upstreams, limiter: createRateLimiter(isWorker() ? config.workers : 1), principal, key, log, admission,
    notary: createNotary({ trust, schemas, routes, key, epoch: () => router.epoch() }),
    ledger: createLedger({ publisher: createStreamPublisher(nc, inboxPrefix(principal)), kv, bucket: processed, duplicateWindowMs: config.duplicateWindowMs,
      maxPayload: () => nc.info?.max_payload, owner: { principal, key }, router, log,
    }),
  };
  const http = await startHttp(deps);
  defer(() => http.close());
  const ingress = await startNatsIngress({ ...deps, layout });
  defer(() => ingress.stop());
  const service = await new Svcm(nc).add({
    name: principal, version: "1.0.0",
    description: `Ingress for upstream systems: HTTP (CloudEvents HTTP binding), NATS requests (${subjects.control(principal, "publish")}.<upstream>) and NATS publishes (${subjects.prefix}.ingest.<upstream>.>, stored in MESH_INGEST), notarized and routed`,
    metadata: { http: http.url, routes: [...routes.values()].map((r) => `${r.type}→${r.ref}`).join(","), upstreams: upstreams.list().map((u) => u.name).join(",") },
  });
  const healthUrl = http.url;
  addControlEndpoint(service, health, { subjects, log, handle: () => Promise.resolve({ status: "ok", http: healthUrl }) });
  const requests = startNatsRequests(deps, service, principal);
  // At stop, in this order: the service takes no more requests, those in progress finish, then NATS ingress
  // and HTTP stop (deferred cleanups run last first).
  defer(() => requests.settled());
  defer(() => service.stop());
  await nc.flush(); // every endpoint is subscribed on the server before "started"
  log.info({ http: http.url, requests: requests.subject, upstreams: upstreams.list().length, routes: routes.size }, "gateway started");
  return { lost: [ingress.lost] };
}, {
  // No async stack traces: nats.js would otherwise build an Error (a captured stack) per request, ~10% of the
  // gateway's CPU under load; request errors still carry their message and cause.
  connect: { noAsyncTraces: true },
  // Its settings and upstreams are refused at once when invalid, before the gateway waits for the mesh.
  check: () => {
    const config = loadConfig();
    loadCheckedUpstreams(config.upstreamsPath, defaultLayout().principals, dataDir(), loadTenants(config.tenantsPath));
    loadBackpressure(config.backpressurePath);
  },
});

const { workers } = loadConfig();
if (workers > 1 && !isWorker()) process.exitCode = await superviseWorkers(workers, createLogger({ name: PRINCIPAL }));
else {
  await run();
  releaseWorker();
}
