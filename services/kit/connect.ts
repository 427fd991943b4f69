// Connecting to NATS as a principal: its NKey seed from the data dir, its name, and its private inbox prefix.
// The seed is also the principal's signing key (DSSE keyid = NKey public key), so it is read here and never
// logged or put in an error message.
//
// How a connection rides out faults is decided here, once, for every process (CONNECTION_POLICY): a server list
// (`NATS_URL=nats://a:4222,nats://b:4222`), reconnection without a give-up, pings short enough to leave a hung
// server within seconds, jittered reconnect waits, and leaving a server whose JetStream stopped answering while
// the server itself still answers pings. `watchConnection` logs what happens to it.
import { readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fromSeed } from "@nats-io/nkeys";
import { connect, errors as natsErrors, nkeyAuthenticator } from "@nats-io/transport-node";
import type { NatsConnection, NodeConnectionOptions, ReconnectToServerHandler } from "@nats-io/transport-node";
import type { Logger } from "pino";
import { ConfigError, ErrorCode } from "./errors.ts";
import { inboxPrefix } from "./subjects.ts";

/** The repository root (two levels above services/kit). */
const repoRoot = resolve(import.meta.dirname, "..", "..");

/** Server URL used when neither `servers` nor NATS_URL says otherwise. */
export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

// A principal name becomes a file name and an inbox token: one lowercase subject token, nothing else.
const principalPattern = /^[a-z0-9][a-z0-9_-]*$/;

/**
 * How every Causeway connection behaves when the server (or a cluster node) fails, in one place:
 *
 * - `pingIntervalMs` × `maxPingOut`: a server that stops answering (hung, SIGSTOPped, a network partition that
 *   keeps the socket open) is left after 2–3 unanswered pings, 4–6 s, and the client moves to another server
 *   of the list. nats.js's default, 2 min × 2, kept a mesh on a hung node for four minutes. A ping is a few
 *   bytes each way per connection every 2 s: nothing next to the mesh's traffic.
 * - `maxReconnectAttempts: -1`: reconnect without a give-up. The default (10 attempts 2 s apart) closed every
 *   connection of the mesh after a 20-second outage, and every service exited with it.
 * - `reconnectTimeWaitMs` + up to `reconnectJitterMs`: each server is tried again every 1–2 s, jittered so that
 *   the mesh's processes do not all knock at the same instant when a node comes back.
 * - `dialTimeoutMs`: a dial to a node that accepts TCP but never speaks (hung) is given up after 5 s (default 20 s).
 *
 * - `jetStreamFailover…`: a node cut off from its cluster peers but not from its clients answers pings, so the
 *   ping policy never moves its clients, while every JetStream request on it times out or finds no responder
 *   (it has no quorum; the majority elected new leaders elsewhere within seconds). A connection (one that
 *   {@link watchConnection} follows) on which one JetStream client — a stream publisher, a durable consumer —
 *   has seen at least `jetStreamFailoverMinFailures` failures in a row spread over at least
 *   `jetStreamFailoverAfterMs`, without one success in between, is checked ({@link failoverDecision}): if its
 *   server dropped its routes to most of its peers (its INFO stops advertising their URLs; routes ping every
 *   second, rendered configs), or reaches no JetStream meta leader within `jetStreamProbeTimeoutMs` (an account
 *   info request) although it lost a route, the connection moves to another server of its list
 *   ({@link jetStreamHealth}). The check is what tells a cut-off node from a leader election, which fails
 *   requests alike on every server for 4–9 s (and a cut-off meta leader goes on answering as one): a server
 *   still part of its cluster is stayed on, and checked again every `jetStreamRecheckMs` while the failures go
 *   on. So the threshold need not outlast an election: 5 s, the publish ack timeout; a cut-off node's clients
 *   move 5–7 s after the cut. The minimum count keeps a single slow ack from ever moving anyone. After a move,
 *   the next one waits twice as long each time, up to `jetStreamFailoverMaxIntervalMs`: when JetStream answers
 *   nowhere (no quorum anywhere), clients do not hop from server to server every few seconds.
 *
 * - Lame duck mode: a node being taken out (`nats-server --signal ldm=<pid>`, how an operator restarts or upgrades
 *   one) first moves its Raft leaders away and shuts its JetStream down, then tells its clients, and closes them
 *   only after its grace period, spread over its lame duck duration. nats.js reports that notice and stays; a
 *   Causeway connection moves at once to another server of its list (after up to `reconnectJitterMs`, so the
 *   node's clients do not all dial the same instant), so no request of the mesh is sent to a node on its way out.
 *
 * A server list reorders nothing by itself: nats.js tries the servers in a random order and learns a cluster's
 * other nodes from the one it reaches. A server that refuses the very first connection is dropped from that
 * connection's list (nats.js); a cluster's nodes come back through its gossip.
 */
export const CONNECTION_POLICY = Object.freeze({
  pingIntervalMs: 2_000,
  maxPingOut: 2,
  reconnectTimeWaitMs: 1_000,
  reconnectJitterMs: 1_000,
  dialTimeoutMs: 5_000,
  jetStreamFailoverAfterMs: 5_000,
  jetStreamFailoverMinFailures: 3,
  jetStreamRecheckMs: 2_000,
  jetStreamFailoverMaxIntervalMs: 60_000,
  jetStreamProbeTimeoutMs: 2_000,
});

/** The nats.js options of {@link CONNECTION_POLICY}; {@link connectWithPolicy} sets them on every connection. */
export function connectionOptions(): Partial<NodeConnectionOptions> {
  const p = CONNECTION_POLICY;
  return {
    reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: p.reconnectTimeWaitMs,
    reconnectJitter: p.reconnectJitterMs, reconnectJitterTLS: p.reconnectJitterMs,
    pingInterval: p.pingIntervalMs, maxPingOut: p.maxPingOut, timeout: p.dialTimeoutMs,
  };
}

/** A connection's JetStream failover (CONNECTION_POLICY `jetStreamFailover…`): see {@link jetStreamHealth}. */
interface Failover extends FailoverPacing {
  /** The server the next dial must not pick: the one a failover is leaving. Cleared by that dial. */
  avoid: string | undefined;
  /** Why the connection is leaving `avoid`, for the log line of the disconnect. */
  leaving: string | undefined;
  /** The server the connection is on (set at each (re)connect): the first dial after losing it goes elsewhere. */
  onServer: string | undefined;
  /** Set by watchConnection: a connection nobody watches never fails over (and never logs). */
  log: Logger | undefined;
  /** Counts (re)connects: a failure streak belongs to the server it was seen on. */
  epoch: number;
  /** performance.now() of the last (re)connect: a request sent before it says nothing about this server. */
  connectedAt: number;
  /** A check of whether the server reaches the meta leader is under way. */
  probing: boolean;
  /** The most client URLs the server has advertised since the last (re)connect (its INFO's connect_urls). */
  peakUrls: number;
}

const failovers = new WeakMap<NatsConnection, Failover>();

/**
 * Picks the server the first dial after a disconnect goes to: nats.js redials the server it was on when that one
 * is first in its pool (always so on a connection's first reconnect), so the next other server of the pool is
 * taken instead — the server just lost is the least likely to answer (it hung, it was killed, the network cut
 * it off: a dial to it then waits out the whole dial timeout), and a failover is leaving it on purpose. Only
 * that one dial: if no other server answers, the rotation comes back to the left one, which may be all there is.
 */
function avoidingLeftServer(f: Failover): ReconnectToServerHandler {
  return (pool) => {
    const avoid = f.avoid ?? f.onServer;
    f.avoid = undefined;
    f.onServer = undefined;
    if (avoid === undefined || pool[0]?.listen !== avoid) return null;
    return pool.find((s) => s.listen !== avoid) ?? null;
  };
}

/**
 * Connects with {@link CONNECTION_POLICY} (over which `options` may set more): the one way the kit and its
 * tools connect. The connection can fail over when its JetStream stops answering, once {@link watchConnection}
 * follows it.
 */
export async function connectWithPolicy(options: NodeConnectionOptions): Promise<NatsConnection> {
  const f: Failover = { avoid: undefined, leaving: undefined, onServer: undefined, log: undefined, epoch: 0, probing: false, connectedAt: performance.now(), notBefore: 0, interval: CONNECTION_POLICY.jetStreamFailoverAfterMs, peakUrls: 0 };
  const nc = await connect({ ...connectionOptions(), ...options, reconnectToServer: avoidingLeftServer(f) });
  f.connectedAt = performance.now();
  f.onServer = nc.getServer();
  f.peakUrls = advertisedUrls(nc);
  failovers.set(nc, f);
  return nc;
}

/** What a JetStream client (a stream publisher, a durable consumer) tells {@link jetStreamHealth} of its requests. */
export interface JetStreamHealth {
  /** JetStream answered (an ack, a message, a heartbeat, even a refusal): it works on this server. */
  answered(): void;
  /**
   * A request sent at `sentAt` (performance.now()) got no answer from JetStream: a timeout, no responders,
   * heartbeats missed.
   */
  silent(sentAt: number): void;
}

const NOT_FOLLOWED: JetStreamHealth = Object.freeze({ answered() {}, silent() {} });

/**
 * The health of JetStream as one client (`what`, for the log) on `nc` sees it. After
 * `jetStreamFailoverMinFailures` failures in a row spanning at least `jetStreamFailoverAfterMs` (from the first
 * failed request's sending) with no answer in between, while the connection is up, and if its server then
 * proves cut off from its cluster ({@link failoverDecision}), the connection leaves that server for another of
 * its list (`nc.reconnect()`, the next dial avoiding that server), with a warning naming the server. One
 * client's streak is enough: on a node cut off from its peers, a consumer whose leader is still that node keeps
 * getting heartbeats while every publish fails. Failures of requests sent before the last (re)connect, or while
 * disconnected, do not count. A check that stays is repeated `jetStreamRecheckMs` later while the streak goes on
 * (logged once a streak); a move is followed by a wait of `jetStreamFailoverAfterMs`, doubled by each further
 * move until something succeeds (at most `jetStreamFailoverMaxIntervalMs`). Without another server in the list,
 * the warning says so (paced as moves) and nothing moves.
 * A no-op for a connection {@link connectWithPolicy} did not make or {@link watchConnection} does not follow.
 */
export function jetStreamHealth(nc: NatsConnection, what: string): JetStreamHealth {
  const f = failovers.get(nc);
  if (f === undefined) return NOT_FOLLOWED;
  let epoch = f.epoch;
  const streak: FailureStreak = { since: undefined, failures: 0 };
  let stayLogged = false;
  return {
    answered() {
      stayLogged = false;
      jetStreamAnswered(streak, f);
    },
    silent(sentAt) {
      const log = f.log;
      if (log === undefined || !isConnected(nc) || sentAt < f.connectedAt) return;
      if (epoch !== f.epoch) {
        // A streak belongs to the server it was seen on.
        epoch = f.epoch;
        streak.since = undefined;
        streak.failures = 0;
        stayLogged = false;
      }
      const due = jetStreamSilent(streak, f, sentAt, performance.now());
      if (due === undefined || f.probing) return;
      const server = nc.getServer();
      const silentFor = `${(due.silentForMs / 1000).toFixed(1)} s`;
      const others = nc.getServers().filter((s) => s.listen !== server).length;
      if (others === 0) {
        const waitMs = jetStreamChecked(streak, f, "moved", performance.now());
        log.warn({ server, client: what, silentForMs: due.silentForMs, nextCheckInMs: waitMs }, `JetStream has not answered ${what} for ${silentFor} on ${server}, and the connection knows no other server to move to`);
        return;
      }
      f.probing = true;
      const urls = { peak: f.peakUrls, now: advertisedUrls(nc) };
      void failoverDecision(urls.peak, urls.now, () => reachesMetaLeader(nc)).then((decision) => {
        f.probing = false;
        if (!decision.move) {
          // An election somewhere (a stream's, a consumer's, the meta group's): every server would answer the
          // same, so moving would gain nothing.
          const waitMs = jetStreamChecked(streak, f, "stayed", performance.now());
          if (!stayLogged) log.info({ server, client: what, silentForMs: due.silentForMs, nextCheckInMs: waitMs, advertisedUrls: urls }, `JetStream has not answered ${what} for ${silentFor}, but ${server} is still part of its cluster (an election under way?): staying (checking again every ${waitMs / 1000} s while it does not answer)`);
          stayLogged = true;
          return;
        }
        if (!isConnected(nc) || nc.getServer() !== server) return; // already moved on by itself
        const waitMs = jetStreamChecked(streak, f, "moved", performance.now());
        stayLogged = false;
        log.warn({ server, client: what, silentForMs: due.silentForMs, otherServers: others, noFailoverForMs: waitMs, advertisedUrls: urls },
          `JetStream has not answered ${what} for ${silentFor} on ${server}, which answers pings but ${decision.why} (cut off from its cluster?): moving to another server`);
        f.avoid = server;
        f.leaving = "its JetStream does not answer";
        nc.reconnect().catch(() => undefined); // closed or draining: nothing to move
      });
    },
  };
}

/**
 * Moves `nc` off `server`, which announced lame duck mode (CONNECTION_POLICY): after a jitter of up to
 * `reconnectJitterMs`, unless the connection already left it (the node closed it, or it moved by itself).
 */
function leaveLameDuck(nc: NatsConnection, server: string): void {
  const f = failovers.get(nc);
  const timer = setTimeout(() => {
    if (!isConnected(nc) || nc.getServer() !== server) return;
    if (f !== undefined) {
      f.avoid = server;
      f.leaving = "it is in lame duck mode";
    }
    nc.reconnect().catch(() => undefined); // closed or draining: nothing to move
  }, Math.random() * CONNECTION_POLICY.reconnectJitterMs);
  timer.unref();
}

/** How many client URLs `nc`'s server advertises now: its own and those of the peers it has routes to. */
function advertisedUrls(nc: NatsConnection): number {
  return nc.info?.connect_urls?.length ?? 0;
}

/**
 * Whether a server that advertised `peak` client URLs at best, and `now` URLs now, has lost its routes to most of
 * its cluster: a server advertises its own URLs and those of every peer it has a route to (its INFO's
 * connect_urls), so a node of three that lost both routes goes from 3 to 1.
 */
export function lostMostPeers(peak: number, now: number): boolean {
  return peak > 1 && now * 2 <= peak;
}

/**
 * Whether a client whose JetStream requests keep failing stays on its server or moves, from what the server
 * advertises (`peak` and `now` client URLs, {@link lostMostPeers}) and whether it reaches the JetStream meta
 * leader (`reachesMetaLeader`, a question asked only when the URLs do not decide):
 * - it lost its routes to most of its peers (they ping each other every second): cut off, move — also when it
 *   answers as meta leader, which a cut-off meta leader goes on doing;
 * - it reaches the meta leader: a stream's or consumer's election somewhere, which every server fails alike: stay;
 * - it reaches none while still routed to every peer it had: the whole cluster is electing a meta leader (after
 *   a partition heals, a rejoining node's higher Raft term makes the leaders step down): stay; otherwise move.
 */
export async function failoverDecision(peak: number, now: number, reachesMetaLeader: () => Promise<boolean>): Promise<FailoverDecision> {
  if (lostMostPeers(peak, now)) return { move: true, why: "lost its routes to most of its peers" };
  if (await reachesMetaLeader()) return { move: false };
  return peak > 1 && now >= peak ? { move: false } : { move: true, why: "reaches no JetStream meta leader" };
}

/** What {@link failoverDecision} decided, and why a move. */
export type FailoverDecision = { readonly move: false } | { readonly move: true; readonly why: string };

/**
 * Whether the server `nc` is on reaches the JetStream meta leader: in a cluster only the meta leader answers an
 * account info request (`$JS.API.INFO`, which every principal may send), and a server that knows no leader
 * answers 503.
 */
async function reachesMetaLeader(nc: NatsConnection): Promise<boolean> {
  try {
    const res = await nc.request("$JS.API.INFO", "", { timeout: CONNECTION_POLICY.jetStreamProbeTimeoutMs });
    return (res.json<{ error?: unknown }>()).error === undefined;
  } catch {
    return false; // a timeout, no responders, a closed connection
  }
}

/** One JetStream client's failures in a row since its last answer ({@link jetStreamHealth}). */
export interface FailureStreak {
  /** When the first failed request of the streak was sent (performance.now()). */
  since: number | undefined;
  failures: number;
}

/** How a connection's failover checks are paced: none before `notBefore`; the next one waits `interval` more. */
export interface FailoverPacing {
  notBefore: number;
  interval: number;
}

/** An answer: the streak ends, and the pacing starts over (JetStream works here). */
export function jetStreamAnswered(streak: FailureStreak, pacing: FailoverPacing): void {
  const p = CONNECTION_POLICY;
  if (streak.failures === 0 && pacing.interval === p.jetStreamFailoverAfterMs) return; // the hot path: nothing to reset
  streak.since = undefined;
  streak.failures = 0;
  pacing.notBefore = 0;
  pacing.interval = p.jetStreamFailoverAfterMs;
}

/**
 * A failure of a request sent at `sentAt`, seen at `now` (both performance.now()): whether the connection's
 * server is checked now (and left if it proves cut off) by CONNECTION_POLICY's `jetStreamFailover…`
 * rules, with how long the streak has lasted. What the check found goes to {@link jetStreamChecked}.
 */
export function jetStreamSilent(streak: FailureStreak, pacing: FailoverPacing, sentAt: number, now: number): { silentForMs: number } | undefined {
  const p = CONNECTION_POLICY;
  const since = (streak.since ??= sentAt);
  streak.failures++;
  if (streak.failures < p.jetStreamFailoverMinFailures || now - since < p.jetStreamFailoverAfterMs || now < pacing.notBefore) return undefined;
  return { silentForMs: Math.round(now - since) };
}

/**
 * What a check found, at `now`: `stayed` (the server is part of its cluster: an election somewhere) keeps the
 * streak and allows the next check `jetStreamRecheckMs` later; `moved` (the connection left the server, or had
 * nowhere to go) starts the streak over, and the next check waits the pacing's interval, which doubles (up to
 * `jetStreamFailoverMaxIntervalMs`). Returns how long the next check waits.
 */
export function jetStreamChecked(streak: FailureStreak, pacing: FailoverPacing, found: "stayed" | "moved", now: number): number {
  const p = CONNECTION_POLICY;
  if (found === "stayed") {
    pacing.notBefore = now + p.jetStreamRecheckMs;
    return p.jetStreamRecheckMs;
  }
  const waitMs = pacing.interval;
  pacing.notBefore = now + waitMs;
  pacing.interval = Math.min(p.jetStreamFailoverMaxIntervalMs, pacing.interval * 2);
  streak.since = undefined;
  streak.failures = 0;
  return waitMs;
}

/**
 * The servers of a `NATS_URL` or `--server` value: a comma-separated list (`nats://a:4222,nats://b:4222`),
 * spaces around the commas allowed. CW_ERR_CONFIG naming the entry for an empty list or an entry that is no
 * server address (`nats://host:port`, `tls://…`, `ws://…`, `wss://…`, or `host:port`).
 */
export function parseServers(value: string | readonly string[], source = "NATS_URL"): string[] {
  const entries = (typeof value === "string" ? [value] : [...value]).flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== "");
  if (entries.length === 0) throw new ConfigError(ErrorCode.Config, `${source} names no server: expected e.g. ${DEFAULT_NATS_URL}, or several separated by commas`);
  for (const entry of entries) {
    let ok: boolean;
    try {
      const url = new URL(/^[a-z]+:\/\//i.test(entry) ? entry : `nats://${entry}`);
      ok = ["nats:", "tls:", "ws:", "wss:"].includes(url.protocol) && url.hostname !== "" && !/\s/.test(entry);
    } catch {
      ok = false;
    }
    if (!ok) throw new ConfigError(ErrorCode.Config, `${source}: ${JSON.stringify(entry)} is not a NATS server address (nats://host:port; several separated by commas)`);
  }
  return entries;
}

/** Options for {@link connectAs}. */
export interface ConnectAsOptions {
  /** Server URL(s); a string may list several, comma-separated. Default: env NATS_URL, else nats://127.0.0.1:4222. */
  servers?: string | string[];
  /** Data directory holding keys/<principal>.nk. Default: {@link dataDir}(). */
  dataDir?: string;
  /** Connection name shown by `nats server report connections`. Default: the principal. */
  name?: string;
  /** Further connection options over {@link CONNECTION_POLICY}. Identity fields are always set by connectAs. */
  options?: Omit<NodeConnectionOptions, "servers" | "name" | "authenticator" | "inboxPrefix" | "user" | "pass" | "token">;
}

/** The runtime data directory: env CAUSEWAY_DATA_DIR, else `<repo>/.data`. */
export function dataDir(): string {
  const fromEnv = process.env.CAUSEWAY_DATA_DIR;
  return fromEnv !== undefined && fromEnv !== "" ? resolve(fromEnv) : join(repoRoot, ".data");
}

/** A path relative to the working directory when it is below it (`.data/keys/planner.nk`), else as given: how messages show paths. */
export function shownPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel !== "" && !rel.startsWith("..") ? rel : path;
}

/** Where a principal's NKey seed lives: `<data>/keys/<principal>.nk`. */
export function seedPath(principal: string, dir: string = dataDir()): string {
  checkPrincipalName(principal);
  return join(dir, "keys", `${principal}.nk`);
}

/**
 * Reads a principal's NKey user seed (`SU…`). ConfigError CW_ERR_SEED_MISSING when there is no seed file,
 * CW_ERR_KEY_INVALID when the file does not hold a user seed.
 */
export function readSeed(principal: string, dir: string = dataDir()): Uint8Array {
  const path = seedPath(principal, dir);
  let text: string;
  try {
    text = readFileSync(path, "utf8").trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      // `keys new` alone leaves a running server refusing the new key: `principal add` also renders, reloads and seeds trust.
      throw new ConfigError(
        ErrorCode.SeedMissing,
        `no seed for principal "${principal}" at ${shownPath(path)}. On a running development mesh run \`causeway principal add ${principal}\` ` +
          `(creates the seed, renders the server's accounts, reloads it, seeds the trust store, starts the service); ` +
          `without a running mesh, \`causeway keys new ${principal}\` creates the seed alone`,
        { cause: err },
      );
    }
    throw new ConfigError(ErrorCode.SeedMissing, `cannot read the seed of "${principal}" at ${shownPath(path)}: ${(err as Error).message}`, { cause: err });
  }
  const seed = new TextEncoder().encode(text);
  try {
    if (!text.startsWith("SU")) throw new Error("not a user seed (SU…)");
    fromSeed(seed).getPublicKey();
  } catch (err) {
    // Never echo the file's content: it is a private key.
    throw new ConfigError(ErrorCode.KeyInvalid, `${shownPath(path)} does not hold a valid NKey user seed (${(err as Error).message}); recreate it with \`causeway keys new ${principal} --force\``);
  }
  return seed;
}

/** The NKey public key (`U…`) of a principal's seed: its NATS user and its DSSE keyid. */
export function publicKeyOf(principal: string, dir: string = dataDir()): string {
  const seed = readSeed(principal, dir);
  try {
    return fromSeed(seed).getPublicKey();
  } finally {
    seed.fill(0);
  }
}

/**
 * Connects as `principal`: NKey authentication with its seed, `name` = the principal, and its private inbox
 * prefix `_INBOX_<principal>` (the only inbox its permissions let it subscribe to), with {@link CONNECTION_POLICY}.
 * Each server of the list is tried once; none reachable rejects (a service's shell retries: service-process.ts).
 * The connection is AsyncDisposable: `await using nc = await connectAs("researcher")`.
 */
export async function connectAs(principal: string, opts: ConnectAsOptions = {}): Promise<NatsConnection> {
  const seed = readSeed(principal, opts.dataDir);
  const servers = opts.servers !== undefined ? parseServers(opts.servers, "--server") : parseServers(process.env.NATS_URL || DEFAULT_NATS_URL);
  try {
    return await connectWithPolicy({
      ...opts.options,
      servers,
      name: opts.name ?? principal,
      authenticator: nkeyAuthenticator(seed),
      inboxPrefix: inboxPrefix(principal),
    });
  } catch (err) {
    throw notAuthorized(err, principal, servers, opts.dataDir) ?? err;
  }
}

/**
 * The server's bare "Authorization Violation" as what it means here: the server does not know this principal's key
 * (a principal added, or a seed created or replaced, since the server's accounts were rendered), with the commands
 * that fix it. Undefined for any other error.
 */
export function notAuthorized(err: unknown, principal: string, servers: string | string[], dir?: string): ConfigError | undefined {
  let auth: Error | undefined;
  for (let e: unknown = err; e instanceof Error && auth === undefined; e = e.cause) if (e instanceof natsErrors.AuthorizationError) auth = e;
  if (auth === undefined) return undefined;
  let key = "";
  try {
    key = ` ${publicKeyOf(principal, dir)}`;
  } catch {
    // The seed was readable a moment ago; the message stays useful without the key.
  }
  const where = Array.isArray(servers) ? servers.join(", ") : servers;
  return new ConfigError(
    ErrorCode.NotAuthorized,
    `the NATS server at ${where} refused principal "${principal}" (${auth.message}): it does not know its key${key}. ` +
      `On a development mesh run \`causeway principal add ${principal}\` (renders the server's accounts, reloads it, seeds the trust store, starts the service); ` +
      `by hand: \`causeway infra render\` (\`--full\` for the server of \`causeway up\`), reload the server (\`nats-server --signal reload=<pid>\`), \`causeway trust seed\``,
    { cause: err },
  );
}

function checkPrincipalName(principal: string): void {
  if (!principalPattern.test(principal)) {
    throw new ConfigError(ErrorCode.UnknownPrincipal, `invalid principal name ${JSON.stringify(principal)}: a principal is one lowercase token [a-z0-9_-]`);
  }
}

/** What {@link watchConnection} knows of a connection. */
export interface ConnectionWatch {
  /** False between a disconnect and the reconnect (and once closed). */
  readonly connected: boolean;
  /** The server the connection is on (the last one it reached). */
  readonly server: string;
}

const watched = new WeakMap<NatsConnection, ConnectionWatch>();

/**
 * True while `nc` is connected to a server: false while it reconnects, and once closed. Precise for connections
 * a {@link watchConnection} follows; for others, "not closed".
 */
export function isConnected(nc: NatsConnection): boolean {
  return watched.get(nc)?.connected ?? !nc.isClosed();
}

/**
 * Logs what happens to `nc`, one line per event, each naming the server: connected (now), disconnected,
 * reconnected (with the attempts and how long it was down), a server that stopped answering pings (stale), a
 * server in lame duck mode, the cluster's servers changing, errors the server reports, closed. The one place
 * every service learns and says which server it is on (`quiet`: not the first line, e.g. on a start's retry).
 * It also turns on the connection's JetStream failover ({@link jetStreamHealth}), which logs here.
 * Returns the live state; ends when the connection closes.
 */
export function watchConnection(nc: NatsConnection, log: Logger, opts: { quiet?: boolean } = {}): ConnectionWatch {
  const state = { connected: true, server: nc.getServer() };
  watched.set(nc, state);
  const failover = failovers.get(nc);
  if (failover !== undefined) failover.log = log;
  if (!opts.quiet) log.info({ server: state.server }, "connected to NATS");
  let downSince = 0;
  let attempts = 0;
  let forced = false;
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case "forceReconnect":
          forced = true;
          break;
        case "disconnect":
          state.connected = false;
          downSince = Date.now();
          attempts = 0;
          if (forced) log.info({ server: s.server }, `left the NATS server (${failover?.leaving ?? "asked to"}); reconnecting to another server of the list`);
          else log.warn({ server: s.server }, "disconnected from NATS; reconnecting (to any server of the list)");
          forced = false;
          if (failover !== undefined) failover.leaving = undefined;
          break;
        case "reconnecting":
          attempts++;
          break;
        case "reconnect":
          state.connected = true;
          state.server = s.server;
          if (failover !== undefined) {
            failover.epoch++;
            failover.connectedAt = performance.now();
            failover.onServer = s.server;
            failover.peakUrls = advertisedUrls(nc);
          }
          log.info({ server: s.server, attempts, downMs: downSince ? Date.now() - downSince : 0 }, "reconnected to NATS");
          break;
        case "staleConnection":
          log.warn({ server: state.server, pingIntervalMs: CONNECTION_POLICY.pingIntervalMs, maxPingOut: CONNECTION_POLICY.maxPingOut }, "the NATS server stopped answering pings: leaving it");
          break;
        case "ldm":
          log.warn({ server: s.server }, "the NATS server is entering lame duck mode: moving to another");
          leaveLameDuck(nc, s.server);
          break;
        case "update":
          if (failover !== undefined) failover.peakUrls = Math.max(failover.peakUrls, advertisedUrls(nc));
          // nats.js also reports an update that changes nothing (each INFO after a reconnect): not worth a line.
          if ((s.added?.length ?? 0) + (s.deleted?.length ?? 0) > 0) log.info({ server: state.server, added: s.added ?? [], deleted: s.deleted ?? [] }, "the NATS cluster's servers changed");
          break;
        case "error":
          log.warn({ server: state.server, err: s.error }, "the NATS server reported an error");
          break;
        case "close":
          state.connected = false;
          break;
        default:
          break; // pings, slow consumers: nothing an operator acts on
      }
    }
  })().catch(() => undefined);
  return state;
}
