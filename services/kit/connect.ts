// Connecting to NATS as a principal: its NKey seed from the data dir, its name, and its private inbox prefix.
// The seed is also the principal's signing key (DSSE keyid = NKey public key), so it is read here and never
// logged or put in an error message.
import { readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import { fromSeed } from "@nats-io/nkeys";
import { connect, errors as natsErrors, nkeyAuthenticator } from "@nats-io/transport-node";
import type { NatsConnection, NodeConnectionOptions } from "@nats-io/transport-node";
import { ConfigError, ErrorCode } from "./errors.ts";
import { inboxPrefix } from "./subjects.ts";

/** The repository root (two levels above services/kit). */
const repoRoot = resolve(import.meta.dirname, "..", "..");

/** Server URL used when neither `servers` nor NATS_URL says otherwise. */
export const DEFAULT_NATS_URL = "nats://127.0.0.1:4222";

// A principal name becomes a file name and an inbox token: one lowercase subject token, nothing else.
const principalPattern = /^[a-z0-9][a-z0-9_-]*$/;

/** Options for {@link connectAs}. */
export interface ConnectAsOptions {
  /** Server URL(s). Default: env NATS_URL, else nats://127.0.0.1:4222. */
  servers?: string | string[];
  /** Data directory holding keys/<principal>.nk. Default: {@link dataDir}(). */
  dataDir?: string;
  /** Connection name shown by `nats server report connections`. Default: the principal. */
  name?: string;
  /** Further connection options (timeouts, reconnect policy). Identity fields are always set by connectAs. */
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
 * prefix `_INBOX_<principal>` (the only inbox its permissions let it subscribe to). The connection is
 * AsyncDisposable: `await using nc = await connectAs("researcher")`.
 */
export async function connectAs(principal: string, opts: ConnectAsOptions = {}): Promise<NatsConnection> {
  const seed = readSeed(principal, opts.dataDir);
  const servers = opts.servers ?? (process.env.NATS_URL || DEFAULT_NATS_URL);
  try {
    return await connect({
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
