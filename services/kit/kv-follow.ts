// Following a KV bucket live: open it, apply every entry present when the watch began, resolve once that
// initial state is complete (or fail after a timeout), then keep applying changes. Shared by the trust store
// and the kill switches, which differ only in what they do with an entry.
import { KvWatchInclude, Kvm, type KV, type KvStatus, type KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { ConfigError, ErrorCode, NotReadyError, permissionDenied, type CausewayError } from "./errors.ts";
import { isStreamNotFound } from "./jetstream-errors.ts";

/** What {@link followBucket} needs. */
export interface FollowOptions {
  bucket: string;
  /** What the bucket holds, for messages: "the trust store". */
  what: string;
  /** The command that creates the bucket when it is missing. */
  createdBy: string;
  /** What stops applying if the watch dies: "rotations and revocations". */
  consequence: string;
  /** Applies one change; must not throw (report problems through `report`). */
  apply(change: KvWatchEntry, report: (err: CausewayError) => void): void;
  /** Problems that do not stop the watch (a malformed entry, the watch ending). Default: a process warning. */
  onProblem?: (err: CausewayError) => void;
  /** Milliseconds for the initial state to load. Default 10000. */
  timeoutMs?: number;
  /** How often to check that the bucket still exists (a deleted bucket's watch just goes quiet). Default 5000. */
  checkMs?: number;
  /** Apply every value the bucket keeps (its history), oldest first, not only each key's last. Default false. */
  history?: boolean;
}

/**
 * Opens a bucket that must already exist (`Kvm.open` alone does not check). NotReadyError CW_ERR_CONFIG naming
 * `createdBy` when it is missing (a starting service waits for it), CW_ERR_PERMISSION_DENIED when the connection may not read it.
 */
export async function openExistingBucket(nc: NatsConnection, bucket: string, what: string, createdBy: string): Promise<{ kv: KV; status: KvStatus }> {
  const kv = await new Kvm(nc).open(bucket);
  const status = await kv.status().catch((err: unknown) => {
    if (isStreamNotFound(err)) {
      throw new NotReadyError(ErrorCode.Config, `${what} bucket ${bucket} does not exist: run \`${createdBy}\` to create it`, { cause: err });
    }
    throw permissionDenied(err, `reading ${what} ${bucket}`) ?? err;
  });
  return { kv, status };
}

/** A followed bucket; close it to stop watching. */
export interface Following {
  close(): Promise<void>;
  /**
   * Settles (never rejects) with CW_ERR_CONFIG when the bucket is deleted, or deleted and created again: the
   * watch then says nothing, so what was loaded can no longer be kept current. A service should stop.
   */
  readonly lost: Promise<ConfigError>;
}

const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Follows `opts.bucket`. Resolves once every entry present when the watch began has been applied. ConfigError
 * CW_ERR_CONFIG when the bucket does not exist or does not load in time, CW_ERR_PERMISSION_DENIED when the
 * connection may not read it.
 */
export async function followBucket(nc: NatsConnection, opts: FollowOptions): Promise<Following> {
  const { bucket, what } = opts;
  const onProblem = opts.onProblem ?? ((err: CausewayError) => process.emitWarning(err.message, { code: err.code }));
  const report = (err: CausewayError) => {
    try {
      onProblem(err);
    } catch {
      // A failing callback must not stop the watch.
    }
  };
  const who = `reading ${what} ${bucket}`;
  const { kv, status } = await openExistingBucket(nc, bucket, what, opts.createdBy);
  // The watcher delivers the last value of every key present when it starts; the stream's last message is one
  // of them, so once a revision at least that high has been applied (a later one is an update) the initial
  // state is complete.
  const initialRevision = status.values === 0 ? 0 : status.streamInfo.state.last_seq;
  const watch = await kv.watch(opts.history ? { include: KvWatchInclude.AllHistory } : {}).catch((err: unknown) => {
    throw permissionDenied(err, who) ?? err;
  });

  let ready: { resolve: () => void; reject: (err: Error) => void } | undefined;
  const initialized = new Promise<void>((resolve, reject) => { ready = { resolve, reject }; });
  initialized.catch(() => {}); // observed below; never an unhandled rejection
  let highest = 0;
  let closed = false;
  const checkReady = () => {
    if (ready !== undefined && highest >= initialRevision) {
      ready.resolve();
      ready = undefined;
    }
  };
  checkReady();
  const done = (async () => {
    try {
      for await (const change of watch) {
        opts.apply(change, report);
        if (change.revision > highest) highest = change.revision;
        checkReady();
      }
    } catch (err) {
      report(new ConfigError(ErrorCode.Config, `the watch on ${what} ${bucket} failed: ${(err as Error).message}`, { cause: err }));
    }
    if (ready !== undefined) {
      ready.reject(new NotReadyError(ErrorCode.Config, `the watch on ${what} ${bucket} stopped before its entries were loaded`));
      ready = undefined;
    } else if (!closed && !nc.isClosed() && !nc.isDraining()) {
      // Entries stay as last seen, but changes no longer arrive: the service must restart.
      report(new ConfigError(ErrorCode.Config, `the watch on ${what} ${bucket} stopped: ${opts.consequence} no longer apply until the service restarts`));
    }
  })();
  // A deleted stream ends no watch and raises no error (nats.js's ordered consumer waits for it quietly), so the
  // bucket is checked now and then: gone, or replaced by a new one (its creation time changed), it is lost.
  let markLost: (err: ConfigError) => void = () => undefined;
  const lost = new Promise<ConfigError>((resolve) => { markLost = resolve; });
  const created = status.streamInfo.created;
  let checking = false; // one check at a time: a slow server must not pile them up
  const check = setInterval(() => {
    if (checking || nc.isClosed()) return;
    checking = true;
    kv.status().then((now) => {
      if (now.streamInfo.created !== created) loseIt("was deleted and created again");
    }, (err: unknown) => {
      if (isStreamNotFound(err)) loseIt("was deleted");
      // anything else (a timeout, a reconnect) is transient: checked again next time
    }).finally(() => { checking = false; });
  }, opts.checkMs ?? 5_000);
  check.unref();
  void nc.closed().then(() => clearInterval(check));
  const loseIt = (what: string) => {
    if (closed) return;
    clearInterval(check);
    const err = new ConfigError(ErrorCode.Config, `${opts.what} bucket ${bucket} ${what}: ${opts.consequence} can no longer be followed; restore it (\`${opts.createdBy}\`) and restart the service`);
    report(err);
    markLost(err);
  };
  const close = async () => {
    closed = true;
    clearInterval(check);
    watch.stop();
    await done;
  };

  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new NotReadyError(ErrorCode.Config, `${what} ${bucket} did not load within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([initialized, timeout]);
  } catch (err) {
    await close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return { close, lost };
}
