// Compare-and-set cells in a KV bucket: a value per key changed only by an update at the revision it was read at,
// so writers in several processes (replicas, gateway workers) never overwrite each other's changes. The tenants'
// quota counters (tenants.ts) are built on it; the flow ledger (flow-ledger.ts) keeps its own compare-and-set over
// a whole flow, the candidate to fold into this one.
//
// On the hot path a change costs one KV round trip: each process remembers the revision it last wrote or read per
// key (a bounded cache) and updates at it; only when another writer wrote in between is the key read again and
// the change decided anew on what is there. A decision to change nothing (a refusal) is always taken on a value
// read from the bucket, never on a remembered one another writer may have lowered since. Changes one process asks for on one key while a write is in flight
// are applied together, in the order asked, by the next single write, so a busy key (a tenant's counter under
// load) costs one write per round trip, not one per change, and the processes contend only with each other.
import type { KV, KvEntry } from "@nats-io/kv";
import { CausewayError, ErrorCode } from "./errors.ts";
import { isWrongRevision } from "./jetstream-errors.ts";

/** What a step decides on a key's current value: a new value to write (or none: nothing changes), and its result. */
export interface CasStep<T, R> {
  readonly next?: T;
  readonly result: R;
}

/** A bucket of compare-and-set cells holding values of type T. */
export interface CasCells<T> {
  /**
   * Applies `step` to the current value of `key` (undefined when the key holds none: never written, deleted or
   * purged) and writes what it returns, deciding again on the value then there whenever another writer won the
   * compare-and-set. Resolves with the step's result once its value is written (or it changed nothing). Throws when
   * the bucket cannot be read or written, or CW_ERR_UNAVAILABLE when the key kept changing (retry shortly).
   */
  update<R>(key: string, step: (current: T | undefined) => CasStep<T, R>): Promise<R>;
  /** The key's value as the bucket holds it now (undefined when none). */
  read(key: string): Promise<T | undefined>;
}

/** How a bucket's values are read and written. */
export interface CasCellsOptions<T> {
  /** The value of an entry (a PUT). Throws on a malformed value: the change fails. */
  decode(entry: KvEntry): T;
  encode(value: T): string;
  /** Keys whose revision one process remembers; past it, it starts over. Default 4096. */
  cacheLimit?: number;
  /** Compare-and-set rounds before giving up for this change (only writers racing on one key conflict). Default 8. */
  attempts?: number;
  /** What a key holds, for the CW_ERR_UNAVAILABLE message: "the count of flow f for research_v1". */
  describe?: (key: string) => string;
}

interface Known<T> {
  readonly revision: number;
  readonly value: T;
}

interface Waiting<T> {
  readonly step: (current: T | undefined) => CasStep<T, unknown>;
  readonly resolve: (result: unknown) => void;
  readonly reject: (err: unknown) => void;
}

/** Compare-and-set cells over `kv` (a bucket that exists). */
export function casCells<T>(kv: KV, opts: CasCellsOptions<T>): CasCells<T> {
  const cacheLimit = opts.cacheLimit ?? 4096;
  const attempts = opts.attempts ?? 8;
  const known = new Map<string, Known<T> | null>(); // null: the key holds nothing (as last seen)
  const remember = (key: string, k: Known<T> | null) => {
    if (known.size >= cacheLimit && !known.has(key)) known.clear();
    known.set(key, k);
  };
  const readEntry = async (key: string): Promise<Known<T> | null> => {
    const entry = await kv.get(key);
    return entry === null || entry.operation !== "PUT" ? null : { revision: entry.revision, value: opts.decode(entry) };
  };
  // Per key: the changes waiting for the write in flight to finish.
  const queues = new Map<string, Waiting<T>[]>();

  const run = async (key: string, batch: Waiting<T>[]) => {
    // undefined: not known to this process (a key never seen is tried as new: a create).
    let current: Known<T> | null | undefined = known.get(key);
    let fresh = false; // read from the bucket in this run, not remembered
    for (let attempt = 0; attempt < attempts; attempt++) {
      let value = current?.value;
      let changed = false;
      const results: unknown[] = [];
      for (const w of batch) {
        const decided = w.step(value);
        results.push(decided.result);
        if (decided.next !== undefined) {
          value = decided.next;
          changed = true;
        }
      }
      if (!changed) {
        // A decision to change nothing (a refusal, an input counted before) is taken on what the bucket holds now,
        // never on a remembered value another writer may have lowered since (a refund, an operator's reset).
        if (fresh) return results;
        current = await readEntry(key);
        remember(key, current);
        fresh = true;
        continue;
      }
      try {
        const text = opts.encode(value!);
        const revision = current === undefined || current === null ? await kv.create(key, text) : await kv.update(key, text, current.revision);
        remember(key, { revision, value: value! });
        return results;
      } catch (err) {
        // Anything but a lost compare-and-set fails the changes; a lost one means someone wrote the key since
        // (another process, or an expired cache): decide again on what is there now. A deleted key (an operator
        // reset it) reads as none, and kv.create writes over its marker.
        if (!isWrongRevision(err)) throw err;
        current = await readEntry(key);
        remember(key, current);
        fresh = true;
      }
    }
    throw new CausewayError(ErrorCode.Unavailable, `${opts.describe?.(key) ?? `KV key ${key}`} kept changing under ${attempts} compare-and-set attempts`);
  };

  const drain = (key: string) => {
    const batch = queues.get(key);
    if (batch === undefined || batch.length === 0) {
      queues.delete(key);
      return;
    }
    queues.set(key, []); // changes asked from now on wait for this write
    void run(key, batch).then(
      (results) => batch.forEach((w, i) => w.resolve(results[i])),
      (err: unknown) => batch.forEach((w) => w.reject(err)),
    ).finally(() => drain(key));
  };

  return {
    update<R>(key: string, step: (current: T | undefined) => CasStep<T, R>): Promise<R> {
      return new Promise<R>((resolve, reject) => {
        const waiting: Waiting<T> = { step, resolve: resolve as (r: unknown) => void, reject };
        const queue = queues.get(key);
        if (queue !== undefined) queue.push(waiting);
        else {
          queues.set(key, [waiting]);
          drain(key);
        }
      });
    },
    async read(key) {
      const k = await readEntry(key);
      return k?.value;
    },
  };
}
