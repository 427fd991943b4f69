// The one process shell of every Causeway service: connect as the principal, open the trust store, load the
// signing key and the mesh layout, start the service, and stop on SIGTERM / SIGINT or when something it depends on
// is gone (the connection, a followed bucket, a consumer: exit 1 with the reason). A start that fails exits 1 with
// the reason on stderr and in the log, never a seed. A service's main.ts writes only its start function.
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { connectAs, readSeed, type ConnectAsOptions } from "./connect.ts";
import type { CausewayError } from "./errors.ts";
import { signingKeyFromNkeySeed, type SigningKey } from "./keys.ts";
import { defaultLayout, type MeshLayout } from "./layout.ts";
import { createLogger } from "./log.ts";
import { drainSignal, untilStop } from "./signals.ts";
import { criticalForwardSubjects } from "./principals.ts";
import { openTrustStore, type TrustStore } from "./trust.ts";

/** What a service's start function receives. */
export interface ServiceContext {
  readonly principal: string;
  readonly nc: NatsConnection;
  /** The live trust store, opened and followed. */
  readonly trust: TrustStore;
  /** The principal's signing key (its NKey seed). */
  readonly key: SigningKey;
  /** The mesh's names: prefix, durables, buckets. */
  readonly layout: MeshLayout;
  readonly log: Logger;
  /**
   * Registers what to undo at stop (and after a start that failed part way), run in reverse order of
   * registration before the connection drains.
   */
  defer(cleanup: () => Promise<unknown> | unknown): void;
}

/** What a started service hands back. */
export interface StartedService {
  /** Each settles when something the service depends on is gone (a consumer, a bucket): the process then stops, exit 1. */
  readonly lost?: readonly Promise<CausewayError>[];
}

/** Options of {@link runServiceProcess}. */
export interface ServiceProcessOptions {
  /** nats.js connection options (e.g. `noAsyncTraces` for a hot request path). */
  readonly connect?: ConnectAsOptions["options"];
}

/** Runs `start` as `principal` until a signal or a loss; sets the process exit code (0 after a clean stop, else 1). */
export async function runServiceProcess(
  principal: string,
  start: (ctx: ServiceContext) => Promise<StartedService | void>,
  opts: ServiceProcessOptions = {},
): Promise<void> {
  const log = createLogger({ name: principal });
  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const undo = async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await Promise.resolve().then(cleanup).catch((err: unknown) => log.warn({ err }, "cleanup failed"));
  };
  let nc: NatsConnection | undefined;
  // Signals are taken from the start: one during start-up stops the service once it has started, cleanly.
  void drainSignal(log);
  try {
    nc = await connectAs(principal, opts.connect ? { options: opts.connect } : {});
    const layout = defaultLayout();
    const trust = await openTrustStore(nc, {
      forwards: criticalForwardSubjects(layout.principals), onProblem: (err) => log.warn({ err }, "trust store entry ignored"),
    });
    cleanups.push(() => trust.close());
    const ctx: ServiceContext = {
      principal, nc, trust, key: signingKeyFromNkeySeed(readSeed(principal)), layout, log,
      defer: (cleanup) => void cleanups.push(cleanup),
    };
    const started = (await start(ctx)) ?? {};
    // Started means answering: the server has every endpoint's subscription before anyone is told.
    await nc.flush();
    const lost = await untilStop(log, nc, [trust.lost, ...(started.lost ?? [])]);
    await undo();
    await nc.drain().catch(() => undefined);
    if (lost) console.error(`${principal}: ${lost.message}`);
    process.exitCode = lost ? 1 : 0;
  } catch (err) {
    log.error({ err }, `${principal} failed`);
    console.error(`${principal}: ${err instanceof Error ? err.message : String(err)}`);
    await undo();
    await nc?.close().catch(() => undefined);
    process.exitCode = 1;
  }
}
