// The steps that bring a mesh up, shared by `causeway demo` and `causeway up`: identities, the mesh's
// streams and KV buckets, and the trust store — each idempotent, each run as the operator.
import { existsSync } from "node:fs";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { createSeed } from "./commands/keys.ts";
import { seedTrustStore, trustEntriesFromPrincipals, applyStreams, ensureMeshBuckets } from "../kit/ops/index.ts";
import { CausewayError, ErrorCode, defaultLayout, isTransient, publicKeyOf, seedPath, type MeshLayout, type Principals } from "../kit/index.ts";

/** Creates the seed of every principal that has none; returns how many it created. */
export function ensureIdentities(principals: Principals, dataDir: string): number {
  let created = 0;
  for (const name of Object.keys(principals.principals)) {
    if (!existsSync(seedPath(name, dataDir))) {
      createSeed(name, { dir: dataDir });
      created++;
    }
  }
  return created;
}

/** Options of {@link applyMeshInfra} and {@link seedTrust}. */
export interface BootstrapOptions {
  /**
   * Replicas of every stream (overriding the files' `num_replicas`, which stay as they are) and of every KV bucket
   * created: 3 on a cluster (`causeway up --cluster`). Default: the files' (1), and 1 for new buckets.
   */
  replicas?: 1 | 3 | 5;
}

/**
 * Applies the layout's streams and durable consumers (streams/, rendered for its prefix) and creates its KV
 * buckets; throws when a definition is refused. Default: the repository's layout. Consumers take their stream's
 * replicas (their files set none).
 */
export async function applyMeshInfra(operator: NatsConnection, layout: MeshLayout = defaultLayout(), opts: BootstrapOptions = {}): Promise<string> {
  const report = await applyStreams(await jetstreamManager(operator), Object.values(layout.streams), { replicas: opts.replicas });
  if (!report.ok) {
    throw new Error(report.results.filter((r) => r.status === "refused").map((r) => `${r.name}: ${r.reason}`).join("; "));
  }
  const buckets = await ensureMeshBuckets(operator, { buckets: layout.buckets, replicas: opts.replicas });
  const raised = buckets.raised.length > 0 ? `, ${buckets.raised.length} raised to ${opts.replicas} replicas` : "";
  if ((opts.replicas ?? 1) > 1) await replicasReady(operator);
  const count = (kind: string, status: string) => report.results.filter((r) => r.kind === kind && r.status === status).length;
  return `${count("stream", "created")} streams, ${count("consumer", "created")} consumers, ${buckets.created.length} KV buckets created${raised}; ${report.results.filter((r) => r.status === "unchanged").length} unchanged`;
}

/** Seeds the trust store from infra/principals.json and the principals' public keys. */
export async function seedTrust(operator: NatsConnection, principals: Principals, dataDir: string, opts: BootstrapOptions = {}): Promise<string> {
  const keys = Object.fromEntries(Object.keys(principals.principals).map((name) => [name, publicKeyOf(name, dataDir)]));
  // A minute of slack, so events signed this second are inside the new keys' windows whatever the clock skew.
  const records = trustEntriesFromPrincipals(principals, keys, { now: Date.now() - 60_000 });
  const seed = () => seedTrustStore(operator, records, { replicas: opts.replicas });
  // A trust bucket just created on a cluster answers reads once its replicas are up: a transient error until then.
  const changes = await seed().catch(async (err: unknown) => {
    if (!isTransient(err)) throw err;
    await replicasReady(operator);
    return seed();
  });
  return `${changes.length} keys (${changes.filter((c) => c.status !== "unchanged").length} new or updated)`;
}

/** How long a freshly created replicated stream may take to elect its leader and bring its replicas up. */
const REPLICAS_READY_MS = 30_000;

/**
 * Waits until every stream of the account (KV buckets included) has a leader and every replica current: a stream
 * just created at R3 answers direct gets, and so KV reads, only from then on. CW_ERR_UNAVAILABLE naming the streams
 * still waiting after REPLICAS_READY_MS.
 */
async function replicasReady(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + REPLICAS_READY_MS;
  for (let delay = 100; ; delay = Math.min(delay * 2, 1_000)) {
    const waiting: string[] = [];
    for await (const info of jsm.streams.list()) {
      const c = info.cluster;
      if ((info.config.num_replicas ?? 1) > 1 && (!c?.leader || (c.replicas ?? []).some((r) => !r.current))) waiting.push(info.config.name);
    }
    if (waiting.length === 0) return;
    if (Date.now() > deadline) throw new CausewayError(ErrorCode.Unavailable, `streams without a leader or with replicas behind after ${REPLICAS_READY_MS / 1000} s: ${waiting.join(", ")}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
