// `causeway keys`: the NKey seeds of the principals in infra/principals.json, one file per principal under
// <data>/keys (0600, in a 0700 directory). A seed is the principal's NATS credential and its signing key, so
// it is written once, never printed, and never overwritten without --force.
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { createUser } from "@nats-io/nkeys";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import { ConfigError, ErrorCode, dataDir, getPrincipal, loadPrincipals, publicKeyOf, seedPath } from "../../kit/index.ts";

const USAGE = `usage: causeway keys <subcommand>

  keys new <principal> [--force]   create the principal's NKey seed (0600) and print its public key
  keys ensure                      create every missing seed; print "✓ <principal> <public key>" for each
  keys list                        print each principal's role and public key

Seeds live in <data>/keys/<principal>.nk; <data> is $CAUSEWAY_DATA_DIR (default: <repo>/.data).`;

/** Runs `causeway keys <args>`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("keys", USAGE, args, { force: { type: "boolean", default: false } });
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const [sub, ...rest] = positionals;
  switch (sub) {
    case "new":
      if (rest.length !== 1) return usageError("keys new takes exactly one principal");
      return keysNew(rest[0]!, values.force);
    case "ensure":
      if (rest.length !== 0 || values.force) return usageError("keys ensure takes no arguments");
      return keysEnsure();
    case "list":
      if (rest.length !== 0 || values.force) return usageError("keys list takes no arguments");
      return keysList();
    case undefined:
      return usageError("missing subcommand");
    default:
      return usageError(`unknown subcommand "${sub}"`);
  }
}

/** Result of {@link createSeed}. */
export interface CreatedSeed {
  readonly principal: string;
  readonly path: string;
  readonly publicKey: string;
}

/**
 * Writes a new NKey user seed for `principal` to `<dir>/keys/<principal>.nk` (mode 0600; the keys
 * directory 0700). Without `force` an existing seed is never replaced (ConfigError CW_ERR_SEED_EXISTS); with
 * it the new seed replaces the old one atomically, so a crash never leaves a half-written key.
 */
export function createSeed(principal: string, opts: { dir?: string; force?: boolean } = {}): CreatedSeed {
  const path = seedPath(principal, opts.dir ?? dataDir());
  ensureKeysDir(dirname(path));
  const user = createUser();
  const seed = user.getSeed();
  try {
    if (opts.force) {
      const tmp = join(dirname(path), `.${principal}.nk.${process.pid}.tmp`);
      try {
        writeNew(tmp, seed);
        renameSync(tmp, path);
      } finally {
        rmSync(tmp, { force: true });
      }
    } else {
      try {
        writeNew(path, seed);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EEXIST") {
          throw new ConfigError(ErrorCode.SeedExists, `a seed for "${principal}" already exists at ${path}; it was left unchanged (use --force to replace it, which changes the principal's identity)`);
        }
        throw err;
      }
    }
    return { principal, path, publicKey: user.getPublicKey() };
  } finally {
    seed.fill(0);
    user.clear();
  }
}

function keysNew(principal: string, force: boolean): number {
  getPrincipal(loadPrincipals(), principal); // refuses unknown principals before touching the disk
  const created = createSeed(principal, { force });
  // stdout carries only the public key, so `$(causeway keys new x)` captures it.
  process.stdout.write(`${created.publicKey}\n`);
  console.error(`${force ? "replaced" : "created"} the seed of ${principal} at ${created.path} (mode 0600); its public key is on stdout`);
  return 0;
}

function keysEnsure(): number {
  const principals = loadPrincipals();
  const dir = dataDir();
  let created = 0;
  for (const name of Object.keys(principals.principals)) {
    let publicKey: string;
    if (existsSync(seedPath(name, dir))) {
      publicKey = publicKeyOf(name, dir); // also proves the existing file holds a valid seed
    } else {
      publicKey = createSeed(name, { dir }).publicKey;
      created++;
    }
    console.log(`✓ ${name} ${publicKey}`);
  }
  const total = Object.keys(principals.principals).length;
  console.error(`${created} created, ${total - created} already present, in ${join(dir, "keys")}`);
  return 0;
}

function keysList(): number {
  const principals = loadPrincipals();
  const dir = dataDir();
  const rows = Object.values(principals.principals).map((p) => [p.name, p.role, existsSync(seedPath(p.name, dir)) ? publicKeyOf(p.name, dir) : "(no seed: causeway keys ensure)"] as const);
  const widths = [0, 1].map((i) => Math.max(i === 0 ? "PRINCIPAL".length : "ROLE".length, ...rows.map((r) => r[i].length)));
  const line = (r: readonly string[]) => `${r[0]!.padEnd(widths[0]!)}  ${r[1]!.padEnd(widths[1]!)}  ${r[2]}`;
  console.log(line(["PRINCIPAL", "ROLE", "PUBLIC KEY"]));
  for (const r of rows) console.log(line(r));
  return 0;
}

function ensureKeysDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // mkdir leaves an existing directory's mode alone, and the umask may have widened a new one.
  chmodSync(dir, 0o700);
}

// O_EXCL: fails with EEXIST instead of replacing, so two concurrent `keys new` never both "win".
function writeNew(path: string, seed: Uint8Array): void {
  const fd = openSync(path, "wx", 0o600);
  try {
    writeSync(fd, seed);
    writeSync(fd, "\n");
  } finally {
    closeSync(fd);
  }
  chmodSync(path, 0o600);
}

function usageError(problem: string): number {
  return sharedUsageError("keys", USAGE, problem);
}
