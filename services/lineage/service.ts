// The lineage service, assembled: ingest (consumers → verify → Merkle → store), the checkpointer, and the
// auditor's API on NATS micro-service endpoints and HTTP. main.ts runs it as a process; tests and benchmarks
// start it in-process with their own store.
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Svcm, type Service } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import {
  CausewayError, ErrorCode, StreamName, defaultLayout, ensureTokenFile, readStream, tokenDigestHex, type MeshLayout, type ServedControlEndpoint, type SigningKey,
  type TrustStore,
} from "../kit/index.ts";
import { createLineageApi, type LineageApi } from "./api.ts";
import { startCheckpointer, type Checkpointer } from "./checkpointer.ts";
import type { LineageConfig } from "./config.ts";
import { addLineageEndpoints } from "./endpoints.ts";
import { startLineageHttp, type LineageHttp } from "./http.ts";
import { recordedConsumers, startIngest, type Ingest } from "./ingest.ts";
import type { LineageStore } from "./store.ts";

export interface LineageServiceOptions {
  readonly nc: NatsConnection;
  readonly store: LineageStore;
  readonly trust: TrustStore;
  /** Lineage's key: signs checkpoints; its public half verifies them. */
  readonly key: SigningKey;
  readonly config: LineageConfig;
  readonly log: Logger;
  /** The mesh's names (subjects, the durables lineage records through). Default: the repository's. */
  readonly layout?: MeshLayout;
}

export interface LineageService {
  readonly ingest: Ingest;
  readonly checkpointer: Checkpointer;
  readonly api: LineageApi;
  /** The HTTP API, unless turned off. */
  readonly http?: LineageHttp;
  /** Settles (never rejects) when ingest ended on its own (kit `untilStop` takes it). */
  readonly lost: Promise<CausewayError>;
  /** Stops consuming, publishes a final checkpoint, closes the endpoints (not the store or connection). */
  stop(): Promise<void>;
}

export async function startLineageService(opts: LineageServiceOptions): Promise<LineageService> {
  const { nc, store, config, log } = opts;
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const layout = opts.layout ?? defaultLayout();
  const subjects = layout.subjects;
  const published = async () => {
    const notes: string[] = [];
    for await (const m of readStream(jsm, StreamName.Audit, 1, subjects.checkpoint())) {
      const note = m.string();
      if (note.startsWith(`${config.origin}\n`)) notes.push(note); // this log's checkpoints, not an earlier log's
    }
    return notes;
  };
  await refuseSilentRebuild(store, config.origin, published);
  const checkpointer = await startCheckpointer({
    js, jsm, store, key: opts.key, origin: config.origin, subject: subjects.checkpoint(), every: config.checkpointEvery,
    intervalMs: config.checkpointIntervalMs, log,
  });
  const ingest = await startIngest({ nc, store, trust: opts.trust, log, batchSize: config.batchSize, onCommit: (merkle) => checkpointer.grew(merkle), consumers: recordedConsumers(layout) });
  const api = createLineageApi({ store, publicKey: opts.key, published, ingest, checkpointNow: () => checkpointer.publishNow() });
  let service: Service | undefined;
  let endpoints: ServedControlEndpoint | undefined;
  let http: LineageHttp | undefined;
  try {
    service = await new Svcm(nc).add({
      name: "lineage", version: "1.0.0",
      description: "Tamper-evident audit log: why, trace, impact, listings, verify, prove, exports",
      metadata: { store: store.kind },
    });
    endpoints = addLineageEndpoints(service, api, subjects, log);
    if (config.httpPort >= 0) http = await startLineageHttp(api, { host: config.httpHost, port: config.httpPort, tokenDigests: httpTokens(config, log) }, log);
  } catch (err) {
    await ingest.stop();
    await checkpointer.stop().catch(() => undefined);
    await service?.stop().catch(() => undefined);
    throw err;
  }
  await nc.flush(); // the endpoints are subscribed on the server before "started"
  log.info({ http: http?.url, size: ingest.log.size }, "lineage started");
  return {
    ingest, checkpointer, api, ...(http && { http }),
    lost: ingest.lost,
    async stop() {
      await endpoints?.stop();
      await ingest.stop();
      await checkpointer.stop();
      await service?.stop().catch(() => undefined);
      await http?.close();
    },
  };
}

// An empty store under a log name that already has published checkpoints would rebuild a log those
// checkpoints cannot vouch for (the streams interleave differently the second time): a rebuilt log is a new
// log and needs its own name.
async function refuseSilentRebuild(store: LineageStore, origin: string, published: () => Promise<string[]>): Promise<void> {
  if ((await store.state()).size > 0) return;
  const notes = await published();
  if (notes.length === 0) return;
  const newest = notes.at(-1)!.split("\n")[1];
  throw new CausewayError(ErrorCode.LineageStore, `the store (${store.location}) is empty, but MESH_AUDIT holds ${notes.length} checkpoints of the log "${origin}" (up to size ${newest}): to rebuild the store from the streams, give the rebuilt log its own name, e.g. LINEAGE_ORIGIN=${origin}/2, and keep the old store as the evidence for the old checkpoints`);
}

/** The bearer tokens the HTTP API accepts: the configured digests, else the development token (created once). */
function httpTokens(config: LineageConfig, log: Logger): readonly string[] {
  if (config.httpTokenDigests.length > 0) return config.httpTokenDigests;
  const { token, created } = ensureTokenFile(config.httpTokenFile);
  log.info({ file: config.httpTokenFile, created }, "HTTP API: the development bearer token is in this file (set LINEAGE_HTTP_TOKEN_SHA256 in production)");
  return [tokenDigestHex(token)];
}
