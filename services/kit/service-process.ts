// The one process shell of every Causeway service: connect as the principal, open the trust store, load the
// signing key and the mesh layout, start the service, and stop on SIGTERM / SIGINT or when something it depends on
// is gone (the connection, a followed bucket, a consumer: exit 1 with the reason). A service's main.ts writes only
// its start function.
//
// Starting waits for the mesh: a start that fails because the mesh is not ready yet — no server reachable,
// JetStream not answering (a leader election), a stream, consumer or bucket that operator tooling has not created
// yet (kit `isNotReady`) — is undone (its connection closed, its cleanups run) and tried again after a jittered
// backoff (0.5 s doubling to 10 s), one log line per attempt, until CAUSEWAY_START_TIMEOUT_MS (default 120 s)
// has passed. Any other failure (a configuration error, a refused permission, a bug) exits 1 at once, as does
// the last attempt; the reason goes to stderr and the log, never a seed. A process that has decided to exit
// exits: cleanups are bounded, and whatever a failed start left behind (a timer, a watcher) cannot keep it alive.
import { setTimeout as sleep } from "node:timers/promises";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { envInteger } from "./config.ts";
import { connectAs, readSeed, watchConnection, type ConnectAsOptions } from "./connect.ts";
import { ConfigError, ErrorCode, type CausewayError } from "./errors.ts";
import { signingKeyFromNkeySeed, type SigningKey } from "./keys.ts";
import { defaultLayout, type MeshLayout } from "./layout.ts";
import { createLogger } from "./log.ts";
import { drainSignal, untilStop } from "./signals.ts";
import { criticalForwardSubjects } from "./principals.ts";
import { announceStarted, detachFromSupervisor } from "./supervision.ts";
import { isNotReady, jittered } from "./transient.ts";
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
  /** nats.js connection options over the kit's connection policy (e.g. `noAsyncTraces` for a hot request path). */
  readonly connect?: ConnectAsOptions["options"];
  /**
   * Checks the service's own configuration (environment, files) before anything connects; a throw exits 1 at
   * once, however ready the mesh is. Start still reads its configuration itself: this only fails it first.
   */
  readonly check?: () => void;
}

/** The environment variable bounding how long a start waits for the mesh, in ms. */
export const START_TIMEOUT_ENV = "CAUSEWAY_START_TIMEOUT_MS";
const DEFAULT_START_TIMEOUT_MS = 120_000;
/** First and longest wait between start attempts (each jittered ±20%). */
const START_RETRY_MS = Object.freeze({ first: 500, max: 10_000 });
/** Longest a cleanup may take at stop before the next one runs. */
const CLEANUP_TIMEOUT_MS = 10_000;
/** How long a process that decided to exit may take to empty its event loop before it is made to. */
const EXIT_GRACE_MS = 2_000;

/** Set by {@link refuseServiceProcesses}: why no service may start in this process. */
let refusedBecause: string | undefined;

/**
 * Makes every later {@link runServiceProcess} in this process throw instead of starting: a tool that imports an
 * entry module for its exports (`causeway replay` loads a version's definition factory) must never start the
 * service by accident — an entry that runs at import would otherwise connect as the agent and consume live work.
 */
export function refuseServiceProcesses(why: string): void {
  refusedBecause = why;
}

/** Runs `start` as `principal` until a signal or a loss; sets the process exit code (0 after a clean stop, else 1). */
export async function runServiceProcess(
  principal: string,
  start: (ctx: ServiceContext) => Promise<StartedService | void>,
  opts: ServiceProcessOptions = {},
): Promise<void> {
  if (refusedBecause !== undefined) throw new ConfigError(ErrorCode.ReplayUnsupported, `${principal}'s process was asked to start inside a tool that only loads entry modules (${refusedBecause}): its entry must run the process only under \`if (import.meta.main)\``);
  const log = createLogger({ name: principal });
  // A supervisor's channel must never be what keeps this process alive (supervision.ts).
  detachFromSupervisor();
  // Signals are taken from the start: one during start-up stops the service once it has started, cleanly.
  let stopSignal = false;
  const stopWaiting = new AbortController();
  void drainSignal(log).then(() => {
    stopSignal = true;
    stopWaiting.abort();
  });

  const fail = (err: unknown, why: string): void => {
    log.error({ err }, `${principal} failed`);
    console.error(`${principal}: ${why}${err instanceof Error ? err.message : String(err)}`);
    exitSoon(1, log);
  };

  let layout: MeshLayout;
  let timeoutMs: number;
  try {
    // Configuration first: a bad value is reported at once, not after waiting for the mesh.
    timeoutMs = envInteger(process.env, START_TIMEOUT_ENV, 0, 24 * 3600 * 1000, DEFAULT_START_TIMEOUT_MS, " ms");
    layout = defaultLayout();
    opts.check?.();
    readSeed(principal).fill(0);
  } catch (err) {
    fail(err, "");
    return;
  }

  const began = Date.now();
  let lastServer: string | undefined;
  for (let attempt = 1; ; attempt++) {
    const cleanups: (() => Promise<unknown> | unknown)[] = [];
    let nc: NatsConnection | undefined;
    try {
      nc = await connectAs(principal, opts.connect ? { options: opts.connect } : {});
      // "connected" once per server: a start that retries reconnects each attempt and says so only on a change.
      const quiet = nc.getServer() === lastServer;
      lastServer = nc.getServer();
      watchConnection(nc, log, { quiet });
      const conn = nc;
      const trust = await openTrustStore(conn, {
        forwards: criticalForwardSubjects(layout.principals), onProblem: (err) => log.warn({ err }, "trust store entry ignored"),
      });
      cleanups.push(() => trust.close());
      const ctx: ServiceContext = {
        principal, nc: conn, trust, key: signingKeyFromNkeySeed(readSeed(principal)), layout, log,
        defer: (cleanup) => void cleanups.push(cleanup),
      };
      const started = (await start(ctx)) ?? {};
      // Started means answering: the server has every endpoint's subscription before anyone is told.
      await conn.flush();
      if (attempt > 1) log.info({ attempts: attempt, waitedMs: Date.now() - began }, `${principal} started once the mesh was ready`);
      announceStarted();
      await run(principal, log, conn, trust, started, cleanups);
      return;
    } catch (err) {
      await undo(cleanups, log);
      await nc?.close().catch(() => undefined);
      if (stopSignal) {
        log.info("stopped while starting");
        exitSoon(0, log);
        return;
      }
      const waited = Date.now() - began;
      const wait = jittered(Math.min(START_RETRY_MS.max, START_RETRY_MS.first * 2 ** Math.min(attempt - 1, 10)));
      if (!isNotReady(err)) {
        fail(err, "");
        return;
      }
      if (waited + wait > timeoutMs) {
        fail(err, `the mesh was not ready within ${Math.round(waited / 1000)} s (${attempt} attempts, ${START_TIMEOUT_ENV}=${timeoutMs}): `);
        return;
      }
      log.warn({ attempt, retryInMs: wait, waitedMs: waited, timeoutMs, reason: (err as Error).message },
        `${principal} cannot start yet, the mesh is not ready: ${(err as Error).message}; retrying in ${(wait / 1000).toFixed(1)} s`);
      await sleep(wait, undefined, { signal: stopWaiting.signal }).catch(() => undefined);
      if (stopSignal) {
        log.info("stopped while waiting for the mesh");
        exitSoon(0, log);
        return;
      }
    }
  }
}

/** Runs a started service until a signal or a loss, then stops it; sets the exit code. */
async function run(principal: string, log: Logger, nc: NatsConnection, trust: TrustStore, started: StartedService, cleanups: (() => Promise<unknown> | unknown)[]): Promise<void> {
  const lost = await untilStop(log, nc, [trust.lost, ...(started.lost ?? [])]);
  await undo(cleanups, log);
  await nc.drain().catch(() => undefined);
  if (lost) console.error(`${principal}: ${lost.message}`);
  exitSoon(lost ? 1 : 0, log);
}

/** Runs `cleanups` last first, each bounded: a cleanup that hangs (a drain on a dead connection) is left behind. */
async function undo(cleanups: (() => Promise<unknown> | unknown)[], log: Logger): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => { timer = setTimeout(() => resolve("late"), CLEANUP_TIMEOUT_MS); });
    const done = Promise.resolve().then(cleanup).then(() => "done" as const, (err: unknown) => {
      log.warn({ err }, "cleanup failed");
      return "done" as const;
    });
    if ((await Promise.race([done, late])) === "late") log.warn({ timeoutMs: CLEANUP_TIMEOUT_MS }, "a cleanup did not finish in time; stopping anyway");
    clearTimeout(timer);
  }
}

/**
 * Sets the exit code and makes sure the process does exit: if something still holds the event loop
 * `EXIT_GRACE_MS` later (a watcher or timer a failed start left), it is named in the log and the process exits.
 */
function exitSoon(code: number, log: Logger): void {
  process.exitCode = code;
  setTimeout(() => {
    log.warn({ code, resources: process.getActiveResourcesInfo() }, `still running ${EXIT_GRACE_MS} ms after it stopped: exiting`);
    process.exit(code);
  }, EXIT_GRACE_MS).unref();
}
