// Connecting to NATS as a principal: its NKey seed from the data dir, its name, and its private inbox prefix.
// The seed is also the principal's signing key (DSSE keyid = NKey public key), so it is read here and never
// logged or put in an error message.
//
// How a connection rides out faults is decided here, once, for every process (CONNECTION_POLICY): a server list
// (`NATS_URL=nats://a:4222,nats://b:4222`), reconnection without a give-up, pings short enough to leave a hung
// server within seconds, jittered reconnect waits. `watchConnection` logs what happens to it.
import { readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fromSeed } from "@nats-io/nkeys";
import { connect, errors as natsErrors, nkeyAuthenticator } from "@nats-io/transport-node";
import type { NatsConnection, NodeConnectionOptions } from "@nats-io/transport-node";
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
});

/** The nats.js options of {@link CONNECTION_POLICY}; connectAs sets them on every connection. */
export function connectionOptions(): Partial<NodeConnectionOptions> {
  const p = CONNECTION_POLICY;
  return {
    reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: p.reconnectTimeWaitMs,
    reconnectJitter: p.reconnectJitterMs, reconnectJitterTLS: p.reconnectJitterMs,
    pingInterval: p.pingIntervalMs, maxPingOut: p.maxPingOut, timeout: p.dialTimeoutMs,
  };
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
    return await connect({
      ...connectionOptions(),
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
 * Returns the live state; ends when the connection closes.
 */
export function watchConnection(nc: NatsConnection, log: Logger, opts: { quiet?: boolean } = {}): ConnectionWatch {
  const state = { connected: true, server: nc.getServer() };
  watched.set(nc, state);
  if (!opts.quiet) log.info({ server: state.server }, "connected to NATS");
  let downSince = 0;
  let attempts = 0;
  void (async () => {
    for await (const s of nc.status()) {
      switch (s.type) {
        case "disconnect":
          state.connected = false;
          downSince = Date.now();
          attempts = 0;
          log.warn({ server: s.server }, "disconnected from NATS; reconnecting (to any server of the list)");
          break;
        case "reconnecting":
          attempts++;
          break;
        case "reconnect":
          state.connected = true;
          state.server = s.server;
          log.info({ server: s.server, attempts, downMs: downSince ? Date.now() - downSince : 0 }, "reconnected to NATS");
          break;
        case "staleConnection":
          log.warn({ server: state.server, pingIntervalMs: CONNECTION_POLICY.pingIntervalMs, maxPingOut: CONNECTION_POLICY.maxPingOut }, "the NATS server stopped answering pings: leaving it");
          break;
        case "ldm":
          log.warn({ server: s.server }, "the NATS server is entering lame duck mode: moving to another");
          break;
        case "update":
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
          break; // pings, forced reconnects, slow consumers: nothing an operator acts on
      }
    }
  })().catch(() => undefined);
  return state;
}
