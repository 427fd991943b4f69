// Ingest: lineage's durable consumers over every mesh stream feed one writer. The writer examines a batch
// (decode + verify), drops what the store already holds (redelivery after a crash, or a replayed event), gives
// the rest consecutive leaf indices, appends them to the Merkle log and commits records and log state in one
// transaction — and only then acks. A crash before the commit redelivers the batch; a crash after it
// redelivers messages the store already knows. Either way: no gap, no duplicate.
import { jetstreamManager, type JetStreamManager, type JsMsg, type StoredMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { CausewayError, ErrorCode, consumeDurable, defaultLayout, readStream, type DurableConsumer, type MeshLayout, type TrustStore } from "../kit/index.ts";
import { examine, type ExaminedMessage } from "./examine.ts";
import { createMerkleLog, type MerkleLog } from "./merkle.ts";
import { encodeRecord } from "./record.ts";
import { recordKeyOf, recordKeyString, type LineageStore, type RecordKey, type StoredRecord } from "./store.ts";

/** The durables lineage records through, one per stream: those principals.json says `lineage` consumes. */
export function recordedConsumers(layout: MeshLayout = defaultLayout()): readonly { readonly stream: string; readonly durable: string }[] {
  return layout.consumersOf("lineage");
}

export interface IngestOptions {
  readonly nc: NatsConnection;
  readonly store: LineageStore;
  readonly trust: TrustStore;
  readonly log: Logger;
  /** The durables to record through. Default {@link recordedConsumers}. */
  readonly consumers?: readonly { readonly stream: string; readonly durable: string }[];
  /** Most messages per transaction. Default 512. */
  readonly batchSize?: number;
  /** Called after each commit with the log (for checkpoints). */
  readonly onCommit?: (log: MerkleLog) => void;
}

export interface IngestStats {
  /** Records in the log. */
  readonly size: number;
  /** Messages recorded, and absorbed as already recorded, since start. */
  readonly recorded: number;
  readonly absorbed: number;
  /** Of the recorded, how many failed verification. */
  readonly failed: number;
  /** Messages read back from the streams at start because the store lacked them. */
  readonly rebuilt: number;
  readonly batches: number;
  /** While batches fail to be stored (the store is down): since when, and the last error. Nothing is lost. */
  readonly failing?: { readonly since: string; readonly error: string };
}

export interface Ingest {
  /** The live Merkle log (its size is the store's size after the last commit). */
  readonly log: MerkleLog;
  stats(): IngestStats;
  /** Stops consuming, finishes the batch in hand, resolves when nothing is left in flight. */
  stop(): Promise<void>;
  /**
   * Settles (never rejects) when recording ended on its own: a consumer or stream deleted, the connection
   * closed, or the log could not be restored from the store. The process should exit non-zero with it.
   */
  readonly lost: Promise<CausewayError>;
}

/** Starts recording; resolves once every consumer is attached. */
export async function startIngest(opts: IngestOptions): Promise<Ingest> {
  const { nc, store, trust, log } = opts;
  const batchSize = opts.batchSize ?? 512;
  const leafAt = async (i: number) => (await store.leafHashes(i, i + 1))[0]!;
  const restore = async () => {
    const state = await store.state();
    return createMerkleLog({ leafAt, size: state.size, frontier: state.frontier });
  };
  let merkle = await restore();
  log.info({ size: merkle.size, store: store.kind, location: store.location }, "audit log opened");
  if (merkle.size > 0) opts.onCommit?.(merkle); // records committed before a crash may still need a checkpoint

  const counters = { recorded: 0, absorbed: 0, failed: 0, batches: 0, rebuilt: 0 };
  const pending: Delivery[] = [];
  let writing: Promise<void> | undefined;
  let failure: CausewayError | undefined;
  let failing: { since: string; error: string } | undefined;

  const writeBatch = async (batch: readonly Delivery[]) => {
    const examined = batch.map((msg) => ({ msg, content: examine(msg, trust) }));
    const keys: RecordKey[] = examined.map(({ content }) => recordKeyOf(content));
    const known = await store.known(keys);
    const records: StoredRecord[] = [];
    const next = createMerkleLog({ leafAt, size: merkle.size, frontier: merkle.frontier() });
    examined.forEach(({ content }, i) => {
      const names = recordKeyString(keys[i]!);
      if (names.some((n) => known.has(n))) {
        counters.absorbed++;
        return;
      }
      for (const n of names) known.add(n); // the same event twice in one batch is recorded once
      const encoded = encodeRecord(next.size, content);
      next.append(encoded.leafHash);
      records.push(encoded);
      if (content.verification.result === "failed") counters.failed++;
    });
    if (records.length > 0) {
      await store.append(records, { size: next.size, frontier: next.frontier() });
      merkle = next;
      counters.recorded += records.length;
      opts.onCommit?.(merkle);
    }
    counters.batches++;
    for (const { msg } of examined) msg.ack();
  };

  // Rebuild: what a stream holds up to the durable consumer's ack floor but the store lacks (a new or restored
  // store) is read by sequence and recorded before consuming resumes; nothing acked is ever missing.
  const rebuild = async (jsm: JetStreamManager, { stream, durable }: { stream: string; durable: string }, storedUpTo: number) => {
    const floor = (await jsm.consumers.info(stream, durable)).ack_floor.stream_seq;
    if (floor <= storedUpTo) return;
    log.warn({ stream, from: storedUpTo + 1, to: floor }, "the store lacks messages the consumer already acked: rebuilding them from the stream");
    let batch: Delivery[] = [];
    for await (const m of readStream(jsm, stream, storedUpTo + 1)) {
      if (m.seq > floor) break;
      batch.push(readBack(stream, m));
      if (batch.length >= batchSize) {
        await writeBatch(batch);
        counters.rebuilt += batch.length;
        batch = [];
        log.info({ stream, seq: m.seq, to: floor }, "rebuilding");
      }
    }
    if (batch.length > 0) await writeBatch(batch);
    counters.rebuilt += batch.length;
  };

  const drain = async () => {
    while (pending.length > 0 && !failure) {
      // Let the deliveries already read from the socket join the batch first: the store's calls settle in
      // microtasks, so without this turn a batch held the one or two messages that woke the writer (one
      // transaction per ~1.4 messages, a third of the consume + verify rate in the benchmark).
      if (pending.length < batchSize) await new Promise<void>((resolve) => setImmediate(resolve));
      const batch = pending.splice(0, batchSize);
      try {
        await writeBatch(batch);
        if (failing) log.info({ since: failing.since }, "audit batches are stored again");
        failing = undefined;
      } catch (err) {
        // Nothing of the batch is stored (one transaction): leave it to redelivery, and rebuild the log from
        // the store so the next batch continues exactly where the store is.
        failing = { since: failing?.since ?? new Date().toISOString(), error: (err as Error).message };
        log.error({ err, messages: batch.length, failingSince: failing.since }, "audit batch not stored; it will be redelivered");
        for (const msg of batch) msg.nak(1_000);
        try {
          merkle = await restore();
        } catch (e) {
          fail(e as Error);
        }
      } finally {
        for (const msg of batch) msg.done();
      }
    }
    // The writer stopped: what is still queued goes back to its stream.
    if (failure) for (const msg of pending.splice(0)) { msg.nak(); msg.done(); }
  };
  const kick = () => {
    writing ??= drain().finally(() => {
      writing = undefined;
      if (pending.length > 0 && !failure) kick();
    });
  };

  // Ingest that cannot go on (the log cannot be restored from the store) stops consuming and reports it on
  // `lost`, so the process exits for its supervisor, instead of queueing deliveries nobody will write.
  let markFailed: (err: CausewayError) => void = () => undefined;
  const writerLost = new Promise<CausewayError>((resolve) => { markFailed = resolve; });
  const fail = (err: Error) => {
    failure = new CausewayError(ErrorCode.LineageStore, `the audit log writer stopped: ${err.message}`, { cause: err });
    log.error({ err }, "audit log writer stopped: consumption ends");
    markFailed(failure);
    stopConsumers().catch((e: unknown) => log.error({ err: e }, "stopping the lineage consumers failed"));
  };

  const recordedBy = opts.consumers ?? recordedConsumers();
  const jsm = await jetstreamManager(nc);
  const recorded = await checkSameMesh(jsm, store, recordedBy.map((c) => c.stream));
  for (const c of recordedBy) await rebuild(jsm, c, recorded[c.stream] ?? 0);
  // One durable consumer per stream, through the kit's runtime; each message's handler settles when the
  // writer has stored (and acked) or given back its batch, so at most batchSize per stream wait in memory.
  const consumers: DurableConsumer[] = [];
  const stopConsumers = () => Promise.all(consumers.map((c) => c.stop()));
  try {
    for (const { stream, durable } of recordedBy) {
      consumers.push(await consumeDurable(nc, {
        stream, durable, concurrency: batchSize, log,
        handler: (msg) => new Promise<void>((done) => {
          pending.push(delivery(msg, done));
          kick();
        }),
      }));
    }
  } catch (err) {
    await stopConsumers();
    throw err;
  }
  const lost = Promise.race([writerLost, ...consumers.map((c) => c.lost)]);

  return {
    get log() {
      return merkle;
    },
    stats: () => ({ size: merkle.size, ...counters, ...(failing && { failing: { ...failing } }) }),
    async stop() {
      await stopConsumers();
      while (writing) await writing;
    },
    lost,
  };
}

// A store that recorded sequences a stream never reached belongs to another mesh (or to streams since
// deleted and recreated): recording into it would absorb new messages as "already recorded". Refuse.
async function checkSameMesh(jsm: JetStreamManager, store: LineageStore, streams: readonly string[]): Promise<Record<string, number>> {
  const recorded = await store.lastSequences();
  for (const stream of streams) {
    const last = (await jsm.streams.info(stream)).state.last_seq;
    const seen = recorded[stream] ?? 0;
    if (seen > last) {
      throw new CausewayError(ErrorCode.LineageStore, `the lineage store (${store.location}) recorded ${stream} up to sequence ${seen}, but the stream ends at ${last}: the store belongs to another mesh or to a stream since recreated; point lineage at a new store (LINEAGE_SQLITE_PATH, LINEAGE_DATABASE_URL) and keep this one as evidence`);
    }
  }
  return recorded;
}

/** A message to record and how to settle it: a consumer delivery, or a message read back by sequence. */
type Delivery = ExaminedMessage & { ack(): void; nak(delayMs?: number): void; done(): void };

function delivery(msg: JsMsg, done: () => void): Delivery {
  return { subject: msg.subject, headers: msg.headers, data: msg.data, info: msg.info, ack: () => msg.ack(), nak: (ms) => msg.nak(ms), done };
}

function readBack(stream: string, m: StoredMsg): Delivery {
  return { subject: m.subject, headers: m.header, data: m.data, info: { stream, streamSequence: m.seq, timestampNanos: m.time.getTime() * 1e6 }, ack() {}, nak() {}, done() {} };
}
