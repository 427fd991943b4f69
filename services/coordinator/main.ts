// The coordinator's process entry: the kit's service shell (connect as `coordinator`, trust store, drain on
// SIGTERM / SIGINT, exit 1 when something it depends on is gone) around the coordinator's own start: load the
// policy, register the `coordinator` micro service, start every module. Two replicas may run: leases and
// create-only writes keep each decision single.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import { createSchemaRegistry, defaultLayout, runServiceProcess, startRouter } from "../kit/index.ts";
import type { CoordinatorModule, StartModule } from "./module.ts";
import { loadPolicy, watchPolicy } from "./policy.ts";
import { start as startHandoffs } from "./handoffs.ts";
import { start as startQuarantine } from "./quarantine-ops.ts";
import { start as startDeadLetters } from "./dead-letters.ts";
import { start as startSwitches } from "./switches.ts";
import { start as startHealth } from "./health.ts";

const MODULES: readonly StartModule[] = [startSwitches, startHandoffs, startQuarantine, startDeadLetters, startHealth];

await runServiceProcess("coordinator", async ({ principal, nc, trust, key, layout, log, defer }) => {
  const policy = watchPolicy(layout.principals, { onReload: (err) => (err ? log.error({ err }, "policy reload refused; the last good policy stays") : log.info("policy reloaded")) });
  defer(() => policy.close());
  const service = await new Svcm(nc).add({
    name: principal, version: "1.0.0",
    description: "Critical handoffs (grants, leases, approvals), quarantine operations, dead letters, kill switches, agent health per version",
    metadata: { critical: Object.keys(policy.policy().capabilities).join(",") },
  });
  defer(() => service.stop());
  const router = await startRouter(nc, layout.subjects, { log });
  defer(() => router.close());
  const deps = {
    nc, js: jetstream(nc), jsm: await jetstreamManager(nc), trust, key, principal,
    layout, subjects: layout.subjects, schemas: createSchemaRegistry(), policy, service, router, log,
  };
  const started: CoordinatorModule[] = [];
  for (const start of MODULES) {
    const module = await start(deps);
    started.push(module);
    defer(() => module.stop());
  }
  await nc.flush(); // every endpoint is subscribed on the server before "started"
  log.info({ modules: started.map((m) => m.name) }, "coordinator started");
  return { lost: started.flatMap((m) => (m.lost ? [m.lost] : [])) };
}, {
  // An invalid policy is refused at once, before the coordinator waits for the mesh.
  check: () => void loadPolicy(defaultLayout().principals),
});
