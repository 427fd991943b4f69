// The coordinator's process entry: connect as `coordinator`, open the trust store, load the policy, register
// the `coordinator` micro service, start every module, drain on SIGTERM / SIGINT. Two replicas may run:
// leases and create-only writes keep each decision single.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  untilStop, connectAs, createLogger, createSchemaRegistry, loadLayout, openTrustStore, readSeed, signingKeyFromNkeySeed,
} from "../kit/index.ts";
import type { CoordinatorModule, StartModule } from "./module.ts";
import { watchPolicy } from "./policy.ts";
import { start as startHandoffs } from "./handoffs.ts";
import { start as startQuarantine } from "./quarantine-ops.ts";
import { start as startDeadLetters } from "./dead-letters.ts";
import { start as startSwitches } from "./switches.ts";

const PRINCIPAL = "coordinator";
const MODULES: readonly StartModule[] = [startSwitches, startHandoffs, startQuarantine, startDeadLetters];

async function main(): Promise<void> {
  const log = createLogger({ name: PRINCIPAL });
  let nc: NatsConnection | undefined;
  const started: CoordinatorModule[] = [];
  try {
    nc = await connectAs(PRINCIPAL);
    const layout = loadLayout();
    const principals = layout.principals;
    const policy = watchPolicy(principals, { onReload: (err) => (err ? log.error({ err }, "policy reload refused; the last good policy stays") : log.info("policy reloaded")) });
    const trust = await openTrustStore(nc, { onProblem: (err) => log.warn({ err }, "trust store entry ignored") });
    const service = await new Svcm(nc).add({
      name: PRINCIPAL, version: "1.0.0",
      description: "Critical handoffs (grants, leases, approvals), quarantine operations, dead letters, kill switches",
      metadata: { critical: Object.keys(policy.policy().capabilities).join(",") },
    });
    const deps = {
      nc, js: jetstream(nc), jsm: await jetstreamManager(nc), trust, key: signingKeyFromNkeySeed(readSeed(PRINCIPAL)), principal: PRINCIPAL,
      layout, subjects: layout.subjects, schemas: createSchemaRegistry(), policy, service, log,
    };
    for (const start of MODULES) started.push(await start(deps));
    await nc.flush(); // every module's endpoints are subscribed on the server before "started"
    log.info({ modules: started.map((m) => m.name) }, "coordinator started");
    const lost = await untilStop(log, nc, [trust.lost, ...started.flatMap((m) => (m.lost ? [m.lost] : []))]);
    for (const m of started.reverse()) await m.stop();
    await service.stop();
    policy.close();
    await trust.close();
    await nc.drain();
    if (lost) console.error(`coordinator: ${lost.message}`);
    process.exitCode = lost ? 1 : 0;
  } catch (err) {
    log.error({ err }, "coordinator failed");
    console.error(`coordinator: ${err instanceof Error ? err.message : String(err)}`);
    for (const m of started.reverse()) await m.stop().catch(() => undefined);
    await nc?.close().catch(() => undefined);
    process.exitCode = 1;
  }
}

await main();
