// `causeway infra render`: the nats-server accounts of the mesh, generated from infra/principals.json and the
// public keys of the seeds in <data>/keys. Nothing here is hand-maintained: each principal's permissions
// come from permissionsFor(), and each allowed subject is written with the reason it exists.
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import {
  Account, ConfigError, ErrorCode, dataDir as defaultDataDir, defaultLayout, publicKeyOf, seedPath, type AccountValue, type Principals,
} from "../../kit/index.ts";
import { permissionsFor, type Grant } from "../../kit/ops/index.ts";

const USAGE = `usage: causeway infra render [--out FILE] [--full] [--prefix PREFIX]

  --out FILE       where to write (default: <data>/nats/accounts.conf, or <data>/nats/dev.conf with --full)
  --full           a complete dev server config (listen 127.0.0.1:4222, monitor 127.0.0.1:8222, JetStream
                   store under <data>/nats/store) instead of the accounts fragment alone
  --prefix PREFIX  subject prefix of the mesh (default: the prefix infra/principals.json is written with)

<data> is $CAUSEWAY_DATA_DIR (default: <repo>/.data). Every principal needs a seed: \`causeway keys ensure\`.`;

/** Options for {@link renderInfra}. */
export interface RenderInfraOptions {
  /** Output file. Default: `<data>/nats/accounts.conf`, or `<data>/nats/dev.conf` with `full`. */
  out?: string;
  /** Render a complete dev server config rather than the accounts fragment. Default false. */
  full?: boolean;
  /** Data directory (seeds, store). Default: dataDir(). */
  dataDir?: string;
  /** Subject prefix. Default: the prefix principals.json is written with. */
  prefix?: string;
  /** Principals to render. Default: those of the mesh layout (infra/principals.json, checked against streams/). */
  principals?: Principals;
}

/** What {@link renderInfra} wrote. */
export interface RenderInfraResult {
  readonly path: string;
  readonly text: string;
  /** Principal names per account. */
  readonly accounts: Readonly<Record<AccountValue, readonly string[]>>;
}

/** Runs `causeway infra <args>`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("infra", USAGE, args, {
        out: { type: "string" },
        full: { type: "boolean", default: false },
        prefix: { type: "string" }
      });
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  if (positionals.length !== 1 || positionals[0] !== "render") {
    return usageError(positionals.length === 0 ? "missing subcommand" : `unknown subcommand "${positionals.join(" ")}"`);
  }
  if (values.prefix !== undefined && !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(values.prefix)) {
    return usageError(`--prefix must be lowercase [a-z0-9_-] tokens separated by dots, got "${values.prefix}"`);
  }
  const result = renderInfra({ out: values.out, full: values.full, prefix: values.prefix });
  const total = Object.values(result.accounts).reduce((n, names) => n + names.length, 0);
  console.log(`wrote ${result.path}`);
  console.log(`  ${total} principals in ${Object.keys(result.accounts).length} accounts, NKey authentication, anonymous connections refused`);
  for (const [account, names] of Object.entries(result.accounts)) {
    console.log(`  ${account.padEnd(4)} ${String(names.length).padStart(2)} ${names.length === 1 ? "user: " : "users:"} ${names.join(", ")}`);
  }
  return 0;
}

/** Renders the accounts fragment (or, with `full`, the dev server config) and writes it. */
export function renderInfra(opts: RenderInfraOptions = {}): RenderInfraResult {
  const data = opts.dataDir ?? defaultDataDir();
  // The layout checks that principals.json and streams/ agree before any permission is rendered from them.
  const principals = opts.principals ?? defaultLayout().principals;
  const keys = publicKeysOf(principals, data);
  const accountsText = renderAccounts(principals, keys, { prefix: opts.prefix });
  const text = opts.full ? renderDevConfig(accountsText, { dataDir: data }) : accountsText;
  const path = resolve(opts.out ?? join(data, "nats", opts.full ? "dev.conf" : "accounts.conf"));
  mkdirSync(dirname(path), { recursive: true });
  // Write then rename: a server (re)loading the file never reads half of it.
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
  return { path, text, accounts: accountsOf(principals) };
}

/**
 * The public key of every principal's seed. ConfigError CW_ERR_SEED_MISSING names all principals without
 * one and the command that creates them.
 */
export function publicKeysOf(principals: Principals, dir: string = defaultDataDir()): Record<string, string> {
  const names = Object.keys(principals.principals);
  const missing = names.filter((name) => !existsSync(seedPath(name, dir)));
  if (missing.length > 0) {
    throw new ConfigError(
      ErrorCode.SeedMissing,
      `no seed for ${missing.join(", ")} in ${join(dir, "keys")}: run \`causeway keys ensure\` to create the missing seeds`,
    );
  }
  return Object.fromEntries(names.map((name) => [name, publicKeyOf(name, dir)]));
}

/**
 * The nats-server configuration fragment: an `accounts` block with SYS (the system account) and MESH
 * (JetStream enabled), one NKey user per principal with its derived permissions, and `system_account`.
 * There is no `no_auth_user`, so a client without valid credentials is refused. It can be appended to a
 * config that has its own `listen`, `jetstream` and `server_name`.
 */
export function renderAccounts(principals: Principals, publicKeys: Readonly<Record<string, string>>, opts: { prefix?: string } = {}): string {
  const out: string[] = [
    "# NATS accounts of the Causeway mesh, generated by `causeway infra render` from infra/principals.json and",
    "# the public keys of the principals' seeds. Do not edit: change principals.json and render again.",
    "# Every user authenticates with its NKey; there is no no_auth_user, so anonymous connections are refused.",
    "accounts {",
  ];
  const byAccount = accountsOf(principals);
  for (const account of [Account.System, Account.Mesh]) {
    out.push(`  ${account} {`);
    if (account === Account.Mesh) out.push("    jetstream: enabled");
    out.push("    users: [");
    for (const name of byAccount[account]) {
      const key = publicKeys[name];
      if (key === undefined) throw new ConfigError(ErrorCode.SeedMissing, `no public key for ${name}: run \`causeway keys ensure\``);
      const perms = permissionsFor(principals, name, opts);
      out.push(`      # ${name} (${perms.role}): ${oneLine(principals.principals[name]!.description)}`);
      out.push("      {");
      out.push(`        nkey: ${quote(key)}`);
      out.push("        permissions: {");
      out.push(...renderDirection("publish", perms.publish));
      out.push(...renderDirection("subscribe", perms.subscribe));
      out.push("        }");
      out.push("      }");
    }
    out.push("    ]");
    out.push("  }");
  }
  out.push("}");
  out.push("# SYS is the system account: only its users may make server-wide monitoring requests ($SYS.REQ…).");
  out.push(`system_account: ${Account.System}`);
  return out.join("\n") + "\n";
}

/** A complete single-node development config around an accounts fragment. */
export function renderDevConfig(accountsText: string, opts: { dataDir: string }): string {
  const store = join(resolve(opts.dataDir), "nats", "store");
  return [
    "# Causeway development server, generated by `causeway infra render --full`. Do not edit: render again.",
    "server_name: causeway-dev",
    'listen: "127.0.0.1:4222"',
    'http: "127.0.0.1:8222"',
    "# Streams accept 1 MiB of event data plus ce- headers and DSSE material (max_msg_size 1 MiB + 64 KiB);",
    "# the gateway refuses larger data at the edge with a clear error.",
    "max_payload: 2MB",
    "jetstream {",
    `  store_dir: ${quote(store)}`,
    "  # fsync every write before acknowledging it: with the default lazy fsync (every 2 minutes) a coordinated",
    "  # power loss can lose writes JetStream has already acknowledged, and the mesh promises none is lost.",
    "  sync_interval: always",
    "}",
    "",
    accountsText,
  ].join("\n");
}

function renderDirection(direction: "publish" | "subscribe", grants: readonly Grant[]): string[] {
  // An empty allow list means "no restriction" to nats-server, so "nothing" must be an explicit deny.
  if (grants.length === 0) return [`          ${direction}: { deny: [">"] }`];
  const width = Math.max(...grants.map((g) => quote(g.subject).length));
  return [
    `          ${direction}: {`,
    "            allow: [",
    ...grants.map((g) => `              ${quote(g.subject).padEnd(width)}  # ${oneLine(g.why)}`),
    "            ]",
    "          }",
  ];
}

function accountsOf(principals: Principals): Record<AccountValue, string[]> {
  const accounts: Record<AccountValue, string[]> = { [Account.System]: [], [Account.Mesh]: [] };
  for (const p of Object.values(principals.principals)) accounts[p.account].push(p.name);
  return accounts;
}

// Subjects are always quoted: unquoted, `$JS.API.INFO` would be read as a variable reference.
function quote(value: string): string {
  return JSON.stringify(value);
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}

function usageError(problem: string): number {
  return sharedUsageError("infra", USAGE, problem);
}
