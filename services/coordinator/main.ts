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
import { start as startRollout } from "./rollout.ts";
import { start as startPressure } from "./pressure.ts";

const MODULES: readonly StartModule[] = [startSwitches, startHandoffs, startQuarantine, startDeadLetters, startPressure];

await runServiceProcess("coordinator", async ({ principal, nc, trust, key, layout, log, defer }) => {
  const policy = watchPolicy(layout.principals, { log });
  defer(() => policy.close());
  const service = await new Svcm(nc).add({
    name: principal, version: "1.0.0",
    description: "Critical handoffs (grants, leases, approvals), quarantine operations, dead letters, kill switches, agent health per version, routing by version (rollouts, fallbacks), the backlog of every capability (backpressure)",
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
  const run = <M extends CoordinatorModule>(module: M): M => {
    started.push(module);
    defer(() => module.stop());
    return module;
  };
  for (const start of MODULES) run(await start(deps));
  // Rollouts and circuits judge versions on the health module's figures.
  run(await startRollout({ ...deps, health: run(await startHealth(deps)).health }));
  await nc.flush(); // every endpoint is subscribed on the server before "started"
  log.info({ modules: started.map((m) => m.name) }, "coordinator started");
  return { lost: started.flatMap((m) => (m.lost ? [m.lost] : [])) };
}, {
  // An invalid policy is refused at once, before the coordinator waits for the mesh.
  check: () => void loadPolicy(defaultLayout().principals),
});
