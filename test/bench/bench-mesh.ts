// A mesh for benchmarks: a local nats-server, the mesh streams, bench principals hop1..hopN (each may emit
// `bench.hop` and address the next hop) in the trust store, and a one-file schema registry for `bench.hop`.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager, type JetStreamManager } from "@nats-io/jetstream";
import { createUser } from "@nats-io/nkeys";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  createEvent, createSchemaRegistry, formatTime, newTraceparent, openTrustStore, signEvent, signingKeyFromNkeySeed, uuidv7, type CloudEvent, type SchemaRegistry, type SigningKey, type TrustRecord, type TrustStore,
} from "../../services/kit/index.ts";
import { applyMeshInfra } from "../../services/cli/bootstrap.ts";
import { startServer, type NatsServer } from "../harness/index.ts";
import { seedTrustStore } from "../../services/kit/ops/index.ts";

export const HOP_TYPE = "bench.hop";
export const HOP_SCHEMA = "https://causeway.dev/schemas/bench.hop/1.0.0";

/** A benchmark mesh with `hops` agent principals plus a `source` principal that feeds hop 1. */
export interface BenchMesh extends AsyncDisposable {
  readonly server: NatsServer;
  readonly nc: NatsConnection;
  readonly jsm: JetStreamManager;
  readonly trust: TrustStore;
  readonly schemas: SchemaRegistry;
  /** Signing keys by principal: `source`, `hop1` … `hopN`. */
  readonly keys: Readonly<Record<string, SigningKey>>;
  /** A ~1 KiB signed input for hop 1. */
  /** A signed source event, each of a flow of its own; `extensions` adds to its context (a budget, a priority). */
  input(extensions?: Record<string, string>): CloudEvent;
}

export async function startBenchMesh(hops: number): Promise<BenchMesh> {
  const server = await startServer();
  const nc = await connect({ servers: server.url });
  const jsm = await jetstreamManager(nc);
  await applyMeshInfra(nc);
  const keys: Record<string, SigningKey> = {};
  const records: TrustRecord[] = [];
  const notBefore = formatTime(Date.now() - 60_000);
  for (let i = 0; i <= hops; i++) {
    const name = i === 0 ? "source" : `hop${i}`;
    keys[name] = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
    // Each principal serves its own hop (if any) and addresses the next; the chain's baseline uses bhop*.
    const addresses = [`hop${i + 1}.v1`, `bhop${i + 1}.v1`, ...(i > 0 ? [`hop${i}.v1`, `bhop${i}.v1`] : [])];
    records.push({ principal: name, role: "agent", algorithm: "ed25519", public_key: keys[name]!.keyid, emits: [HOP_TYPE], addresses, not_before: notBefore, not_after: null, revoked_at: null });
  }
  await seedTrustStore(nc, records);
  const trust = await openTrustStore(nc);
  const schemaDir = mkdtempSync(join(tmpdir(), "causeway-bench-schemas-"));
  writeFileSync(join(schemaDir, "bench.hop.v1.json"), JSON.stringify({
    $schema: "https://json-schema.org/draft/2020-12/schema", $id: HOP_SCHEMA, type: "object", additionalProperties: false,
    required: ["seq", "payload"], properties: { seq: { type: "integer", minimum: 0 }, payload: { type: "string", maxLength: 4096 }, hop: { type: "integer" } },
  }));
  const schemas = createSchemaRegistry({ dir: schemaDir });
  let seq = 0;
  const payload = "x".repeat(1000);
  return {
    server, nc, jsm, trust, schemas, keys,
    input(extensions = {}) {
      return signEvent(createEvent({
        id: uuidv7(), source: "causeway://source", type: HOP_TYPE, time: new Date().toISOString(), datacontenttype: "application/json",
        dataschema: HOP_SCHEMA, extensions: { traceparent: newTraceparent(), ...extensions }, data: JSON.stringify({ seq: seq++, payload }),
      }), keys.source!);
    },
    async [Symbol.asyncDispose]() {
      await trust.close();
      await nc.close();
      await server[Symbol.asyncDispose]();
      rmSync(schemaDir, { recursive: true, force: true });
    },
  };
}
