// Publishes lineage's signed checkpoints to MESH_AUDIT (deny_delete, deny_purge: once published, a checkpoint
// stays) when the log has grown by `every` records, or every `intervalMs` when it has grown at all, and on stop.
// A copy goes to the store so `verify` can compare the two. One publication at a time, in size order.
//
// What MESH_AUDIT keeps and what the store keeps are the same bytes, whatever fails in between: each size is
// signed once, and a retry (after a publish whose ack was lost, a store that failed) publishes that same note
// under the same message id. When the stream answers "duplicate" anyway — an earlier try stored a note this
// process no longer holds (it restarted) — the note the stream holds is read back, checked (lineage's signature,
// this size, this root) and kept instead of the new one. A re-signed note under a taken id would be dropped by
// the stream while the store kept it, and `verify` would report the mismatch forever.
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Logger } from "pino";
import { CausewayError, ErrorCode, formatTime, type SigningKey } from "../kit/index.ts";
import { signCheckpoint, verifyCheckpoint } from "./checkpoint.ts";
import type { MerkleLog } from "./merkle.ts";
import type { LineageStore, StoredCheckpoint } from "./store.ts";

export interface CheckpointerOptions {
  readonly js: JetStreamClient;
  /** Reads MESH_AUDIT back (direct get) when a publish is answered as a duplicate. */
  readonly jsm: Pick<JetStreamManager, "direct">;
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

  // The note signed for a size not yet both published and stored: every retry of that size sends these bytes.
  let signed: { readonly size: number; readonly root: string; readonly time: string; readonly note: string } | undefined;

  const publish = async (): Promise<StoredCheckpoint | undefined> => {
    const log = current;
    // Size and root are read together, from one committed state of the log.
    const size = log?.size ?? 0;
    if (!log || size === 0 || (last !== undefined && size <= last.size)) return last;
    const root = log.root().toString("base64");
    if (signed === undefined || signed.size !== size || signed.root !== root) {
      const checkpoint = { origin: opts.origin, size, root, time: formatTime(Date.now()) };
      signed = { size, root, time: checkpoint.time, note: signCheckpoint(checkpoint, opts.key) };
    }
    // The msgID makes a retried publication of the same size one message; the note is the same bytes each time.
    const msgID = `${opts.origin}/${size}`;
    const ack = await opts.js.publish(opts.subject, signed.note, { msgID });
    const kept = ack.duplicate ? await storedNote(ack.stream, ack.seq, size, root) : signed;
    const saved: StoredCheckpoint = { size, root, time: kept.time, note: kept.note, auditSeq: ack.seq };
    await opts.store.saveCheckpoint(saved);
    last = saved;
    signed = undefined;
    opts.log.info({ size, root, seq: ack.seq, ...(ack.duplicate && { duplicate: true }) }, ack.duplicate ? "checkpoint already published (an earlier try); kept the stored note" : "checkpoint published");
    return saved;
  };

  /** The checkpoint MESH_AUDIT holds at `seq`: lineage's own signed note of this size and root, or an error. */
  const storedNote = async (stream: string, seq: number, size: number, root: string): Promise<{ time: string; note: string }> => {
    const stored = await opts.jsm.direct.getMessage(stream, { seq });
    const note = stored?.string() ?? "";
    const verdict = verifyCheckpoint(note, opts.key);
    if (stored === null || !verdict.ok || verdict.checkpoint.origin !== opts.origin || verdict.checkpoint.size !== size || verdict.checkpoint.root !== root) {
      throw new CausewayError(ErrorCode.MsgIdTaken, `${stream} answered the checkpoint of size ${size} as a duplicate of #${seq}, which is not lineage's checkpoint of this size and root${verdict.ok ? "" : ` (${verdict.message})`}: nothing stored`);
    }
    return { time: verdict.checkpoint.time, note };
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
