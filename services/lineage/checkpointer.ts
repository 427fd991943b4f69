// Publishes lineage's signed checkpoints to MESH_AUDIT (deny_delete, deny_purge: once published, a checkpoint
// stays) when the log has grown by `every` records, or every `intervalMs` when it has grown at all, and on stop.
// A copy goes to the store so `verify` can compare the two. One publication at a time, in size order.
import type { JetStreamClient } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { formatTime, type SigningKey } from "../kit/index.ts";
import { signCheckpoint } from "./checkpoint.ts";
import type { MerkleLog } from "./merkle.ts";
import type { LineageStore, StoredCheckpoint } from "./store.ts";

export interface CheckpointerOptions {
  readonly js: JetStreamClient;
  readonly store: LineageStore;
  readonly key: SigningKey;
  /** The log's name in every note, e.g. `causeway.local/lineage`. */
  readonly origin: string;
  /** `mesh.audit.checkpoint` under the mesh's prefix. */
  readonly subject: string;
  readonly every: number;
  readonly intervalMs: number;
  readonly log: Logger;
}

export interface Checkpointer {
  /** Tells the checkpointer the log grew: `log` is the log as just committed. */
  grew(log: MerkleLog): void;
  /** Publishes a checkpoint now if the log grew since the last one; resolves with it (or the last one). */
  publishNow(): Promise<StoredCheckpoint | undefined>;
  /** Stops the timer and publishes a final checkpoint if the log grew. */
  stop(): Promise<void>;
}

export async function startCheckpointer(opts: CheckpointerOptions): Promise<Checkpointer> {
  const stored = await opts.store.checkpoints();
  let last: StoredCheckpoint | undefined = stored.at(-1);
  let publishing: Promise<StoredCheckpoint | undefined> = Promise.resolve(last);
  let current: MerkleLog | undefined; // the log as last committed
  let queued = false; // a publication is waiting: more growth before it runs needs no second one

  const publish = async (): Promise<StoredCheckpoint | undefined> => {
    const log = current;
    // Size and root are read together, from one committed state of the log.
    const size = log?.size ?? 0;
    if (!log || size === 0 || (last !== undefined && size <= last.size)) return last;
    const checkpoint = { origin: opts.origin, size, root: log.root().toString("base64"), time: formatTime(Date.now()) };
    const note = signCheckpoint(checkpoint, opts.key);
    // The msgID makes a retried publication of the same size one message.
    const ack = await opts.js.publish(opts.subject, note, { msgID: `${opts.origin}/${size}` });
    const saved: StoredCheckpoint = { size, root: checkpoint.root, time: checkpoint.time, note, auditSeq: ack.seq };
    await opts.store.saveCheckpoint(saved);
    last = saved;
    opts.log.info({ size, root: checkpoint.root, seq: ack.seq }, "checkpoint published");
    return saved;
  };
  const schedule = (): Promise<StoredCheckpoint | undefined> => {
    if (queued) return publishing;
    queued = true;
    const run = () => {
      queued = false;
      return publish();
    };
    publishing = publishing.then(run, run).catch((err: unknown) => {
      opts.log.error({ err }, "checkpoint not published; the next trigger retries");
      return last;
    });
    return publishing;
  };
  const timer = setInterval(() => void schedule(), opts.intervalMs);
  timer.unref();

  return {
    grew(log) {
      current = log;
      if (log.size - (last?.size ?? 0) >= opts.every) void schedule();
    },
    publishNow: schedule,
    async stop() {
      clearInterval(timer);
      await schedule();
    },
  };
}
