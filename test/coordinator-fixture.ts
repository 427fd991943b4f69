// Coordinator modules run in-process against an operated mesh (rendered accounts, real identities), for tests
// that need to see inside; the process-level tests spawn services/coordinator/main.ts instead.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import { createLogger, createSchemaRegistry, defaultLayout, loadPrincipals, openTrustStore, readSeed, signingKeyFromNkeySeed, startRouter } from "../services/kit/index.ts";
import type { CoordinatorDeps, CoordinatorModule, StartModule } from "../services/coordinator/module.ts";
import { loadPolicy, parsePolicy, type PolicyStore } from "../services/coordinator/policy.ts";
import type { OperatedMesh } from "./e2e-fixture.ts";

/**
 * Starts `modules` as the coordinator; `policy` overrides infra/policy.json (e.g. a short deadline), and
 * `failPublish` makes the coordinator's JetStream publishes to matching subjects fail (fault injection).
 */
export async function startCoordinator(mesh: OperatedMesh, modules: StartModule[], policy?: unknown, failPublish?: (subject: string) => boolean): Promise<AsyncDisposable & { deps: CoordinatorDeps }> {
  const nc = await mesh.as("coordinator");
  const principals = loadPrincipals();
  const fixed = policy === undefined ? loadPolicy(principals) : parsePolicy(policy, principals, "test policy");
  const store: PolicyStore = { policy: () => fixed, close: () => undefined };
  const trust = await openTrustStore(nc);
  const service = await new Svcm(nc).add({ name: "coordinator", version: "1.0.0" });
  const realJs = jetstream(nc);
  const js = failPublish === undefined ? realJs : new Proxy(realJs, {
    get(target, prop, receiver) {
      if (prop !== "publish") return Reflect.get(target, prop, receiver) as unknown;
      return (subject: string, ...rest: Parameters<typeof realJs.publish> extends [string, ...infer R] ? R : never) =>
        failPublish(subject) ? Promise.reject(new Error(`injected failure publishing on ${subject}`)) : target.publish(subject, ...rest);
    },
  });
  const deps: CoordinatorDeps = {
    nc, js, jsm: await jetstreamManager(nc), trust, key: signingKeyFromNkeySeed(readSeed("coordinator", mesh.dataDir)),
    principal: "coordinator", layout: defaultLayout(), subjects: defaultLayout().subjects, schemas: createSchemaRegistry(), policy: store, service,
    log: createLogger({ name: "coordinator", level: process.env.LOG_LEVEL ?? "silent" }),
    router: await startRouter(nc, defaultLayout().subjects, { log: createLogger({ name: "coordinator", level: "silent" }) }),
  };
  const started: CoordinatorModule[] = [];
  for (const start of modules) started.push(await start(deps));
  await nc.flush(); // the modules' subscriptions are on the server before a test asks, as the coordinator process does
  return {
    deps,
    async [Symbol.asyncDispose]() {
      for (const m of started.reverse()) await m.stop();
      await service.stop();
      await trust.close();
    },
  };
}
