// Reading a stream by sequence: direct batch gets from a cursor until the stream has nothing more. Needs only
// the direct-get permission the coordinator and lineage hold (no consumer is created).
import type { JetStreamManager, StoredMsg } from "@nats-io/jetstream";

const SCAN_BATCH = 256;

/** The messages of `stream` from sequence `from` on (optionally only those on `subject`), in order. */
export async function* readStream(jsm: JetStreamManager, stream: string, from = 1, subject?: string): AsyncGenerator<StoredMsg> {
  let seq = from;
  for (;;) {
    let got = 0, pending = 0;
    try {
      const batch = await jsm.direct.getBatch(stream, { seq, batch: SCAN_BATCH, ...(subject !== undefined && { next_by_subj: subject }) });
      for await (const m of batch) {
        got++;
        pending = m.pending;
        seq = m.seq + 1;
        yield m;
      }
    } catch (err) {
      if ((err as { code?: unknown }).code === 404) return; // nothing at or after `seq`
      throw err;
    }
    if (got === 0 || pending === 0) return;
  }
}
