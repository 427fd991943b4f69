// `causeway infra render`: the nats-server accounts of the mesh, generated from infra/principals.json and the
// public keys of the seeds in <data>/keys. Nothing here is hand-maintained: each principal's permissions
// come from permissionsFor(), and each allowed subject is written with the reason it exists.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { CLUSTER_NAME, clusterDir, nodeName } from "../processes.ts";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import {
  Account, ConfigError, ErrorCode, dataDir as defaultDataDir, defaultLayout, publicKeyOf, seedPath, type AccountValue, type Principals,
} from "../../kit/index.ts";
import { permissionsFor, type Grant } from "../../kit/ops/index.ts";

const USAGE = `usage: causeway infra render [--out FILE] [--full] [--prefix PREFIX]
       causeway infra render --cluster N [--out DIR] [--prefix PREFIX] [--client-port P] [--monitor-port P] [--cluster-port P] [--hosts H1,…,HN]

  --out FILE       where to write (default: <data>/nats/accounts.conf, or <data>/nats/dev.conf with --full)
  --full           a complete dev server config (listen 127.0.0.1:4222, monitor 127.0.0.1:8222, JetStream
                   store under <data>/nats/store) instead of the accounts fragment alone
  --cluster N      one complete config per node of an N-node JetStream cluster (3 to 7) on this host, written to
                   <dir>/causeway-<i>.conf (default dir: <data>/nats/cluster): server_name causeway-<i>, client,
                   monitoring and route ports the base ports + i - 1, its own JetStream store
                   <data>/nats/cluster/causeway-<i>/store, routes to every node with a generated route password
  --client-port P, --monitor-port P, --cluster-port P
                   the first node's ports with --cluster (default 4222, 8222, 6222)
  --hosts H1,…,HN  with --cluster, the address each node listens on and is routed to, one per node in order
                   (default 127.0.0.1 for all): nodes on addresses of their own, e.g. each in a network namespace
  --prefix PREFIX  subject prefix of the mesh (default: the prefix infra/principals.json is written with)

<data> is $CAUSEWAY_DATA_DIR (default: <repo>/.data). Every principal needs a seed: \`causeway keys ensure\`.`;

/** The first node's ports of a rendered cluster; node i has each plus i - 1. */
export const DEFAULT_CLUSTER_PORTS: Readonly<NodePorts> = Object.freeze({ client: 4222, monitor: 8222, cluster: 6222 });

/** One node's ports. */
export interface NodePorts {
  readonly client: number;
  readonly monitor: number;
  readonly cluster: number;
}

/** A server of a rendered config: what {@link renderServerConfig} writes around the accounts. */
export interface ServerNode {
  readonly name: string;
  readonly host: string;
  /** -1 for a port the server picks (its ports file says which). */
  readonly ports: { readonly client: number; readonly monitor: number };
  readonly storeDir: string;
  /** Its cluster: listen port, the route URLs of every node, the route credentials. */
  readonly cluster?: { readonly name: string; readonly port: number; readonly routes: readonly string[]; readonly user: string; readonly password: string };
}

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
        prefix: { type: "string" },
        cluster: { type: "string" },
        "client-port": { type: "string" },
        "monitor-port": { type: "string" },
        "cluster-port": { type: "string" },
        hosts: { type: "string" },
      });
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  if (positionals.length !== 1 || positionals[0] !== "render") {
    return usageError(positionals.length === 0 ? "missing subcommand" : `unknown subcommand "${positionals.join(" ")}"`);
  }
  if (values.prefix !== undefined && !/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(values.prefix)) {
    return usageError(`--prefix must be lowercase [a-z0-9_-] tokens separated by dots, got "${values.prefix}"`);
  }
  if (values.cluster !== undefined) {
    if (values.full) return usageError("--cluster writes complete configs already: drop --full");
    const size = parseClusterSize(values.cluster);
    if (typeof size === "string") return usageError(size);
    const ports = parseBasePorts(values);
    if (typeof ports === "string") return usageError(ports);
    const hosts = parseHosts(values.hosts, size);
    if (typeof hosts === "string") return usageError(hosts);
    const result = renderClusterInfra({ size, ports, ...(hosts ? { hosts } : {}), dir: values.out, prefix: values.prefix });
    for (const node of result.nodes) {
      console.log(`wrote ${node.path}  (${node.name}: client ${node.clientUrl}, monitoring ${node.monitorUrl}, routes ${node.routePort})`);
    }
    printAccounts(result.accounts);
    console.log(`  cluster ${CLUSTER_NAME}: ${size} nodes, routes authenticated with the password in ${result.passwordFile}; JetStream stores fsync every write (sync_interval: always)`);
    return 0;
  }
  if (values["client-port"] !== undefined || values["monitor-port"] !== undefined || values["cluster-port"] !== undefined || values.hosts !== undefined) {
    return usageError("--client-port, --monitor-port, --cluster-port and --hosts go with --cluster");
  }
  const result = renderInfra({ out: values.out, full: values.full, prefix: values.prefix });
  console.log(`wrote ${result.path}`);
  printAccounts(result.accounts);
  return 0;
}

function printAccounts(accounts: Readonly<Record<AccountValue, readonly string[]>>): void {
  const total = Object.values(accounts).reduce((n, names) => n + names.length, 0);
  console.log(`  ${total} principals in ${Object.keys(accounts).length} accounts, NKey authentication, anonymous connections refused`);
  for (const [account, names] of Object.entries(accounts)) {
    console.log(`  ${account.padEnd(4)} ${String(names.length).padStart(2)} ${names.length === 1 ? "user: " : "users:"} ${names.join(", ")}`);
  }
}

/** The node count of `--cluster N`, or the problem with it. */
export function parseClusterSize(value: string): number | string {
  const size = Number(value);
  if (!/^[0-9]+$/.test(value) || size < 3 || size > 7) {
    return `--cluster ${value}: a cluster has 3 to 7 nodes (fewer cannot keep R3 streams through the loss of a node)`;
  }
  return size;
}

/** The first node's ports from `--client-port`, `--monitor-port`, `--cluster-port`, or the problem with one. */
export function parseBasePorts(values: { "client-port"?: string; "monitor-port"?: string; "cluster-port"?: string }): NodePorts | string {
  const out: Record<keyof NodePorts, number> = { ...DEFAULT_CLUSTER_PORTS };
  for (const key of ["client", "monitor", "cluster"] as const) {
    const given = values[`${key}-port`];
    if (given === undefined) continue;
    const port = Number(given);
    if (!/^[0-9]+$/.test(given) || port < 1 || port > 65_000) return `--${key}-port ${given} is not a port number`;
    out[key] = port;
  }
  return out;
}

/** The per-node hosts of `--hosts H1,…,HN` (undefined without it), or the problem with them. */
export function parseHosts(value: string | undefined, size: number): readonly string[] | undefined | string {
  if (value === undefined) return undefined;
  const hosts = value.split(",");
  if (hosts.length !== size) return `--hosts ${value}: ${hosts.length} host${hosts.length === 1 ? "" : "s"} for ${size} nodes (one per node, comma-separated)`;
  const bad = hosts.find((h) => !/^[A-Za-z0-9.:_-]+$/.test(h));
  if (bad !== undefined) return `--hosts ${value}: "${bad}" is not a host name or address`;
  return hosts;
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
  writeAtomically(path, text);
  return { path, text, accounts: accountsOf(principals) };
}

/** Options for {@link renderClusterInfra}. */
export interface RenderClusterOptions {
  /** Number of nodes, 3 to 7. */
  size: number;
  /**
   * The first node's ports (node i has each + i - 1), or every node's own; a client or monitoring port of -1 lets
   * the server pick one (tests). Default {@link DEFAULT_CLUSTER_PORTS}.
   */
  ports?: NodePorts | readonly NodePorts[];
  /** Interface every node listens on. Default 127.0.0.1. */
  host?: string;
  /** The interface of each node, in order, instead of one `host` for all (nodes on addresses of their own). */
  hosts?: readonly string[];
  /** Directory of the configs. Default: {@link clusterDir}(data). */
  dir?: string;
  dataDir?: string;
  prefix?: string;
  principals?: Principals;
}

/** One rendered node. */
export interface RenderedNode {
  readonly name: string;
  /** The address it listens on (client, monitoring, routes). */
  readonly host: string;
  readonly path: string;
  readonly text: string;
  readonly ports: NodePorts;
  /** `nats://host:port`; with a client port of -1, the server's ports file says which. */
  readonly clientUrl: string;
  readonly monitorUrl: string;
  readonly routePort: number;
  readonly storeDir: string;
}

/** What {@link renderClusterInfra} wrote. */
export interface RenderClusterResult {
  readonly nodes: readonly RenderedNode[];
  /** The route password every node's `cluster { authorization }` checks (0600, made once, then reused). */
  readonly passwordFile: string;
  readonly accounts: Readonly<Record<AccountValue, readonly string[]>>;
}

/**
 * Renders one complete config per node of a local JetStream cluster (`causeway infra render --cluster N`): the same
 * accounts as the single server, each node with its server_name, ports, JetStream store and routes to every node.
 * Routes authenticate with a password made once per data directory: a route is fully trusted by the cluster (it sees
 * every account), so an open route port would let any local process join and bypass the NKey authentication.
 */
export function renderClusterInfra(opts: RenderClusterOptions): RenderClusterResult {
  const data = opts.dataDir ?? defaultDataDir();
  const principals = opts.principals ?? defaultLayout().principals;
  const accountsText = renderAccounts(principals, publicKeysOf(principals, data), { prefix: opts.prefix });
  if (opts.hosts !== undefined && opts.hosts.length !== opts.size) throw new ConfigError(ErrorCode.Config, `${opts.hosts.length} hosts for ${opts.size} nodes`);
  const hostOf = (i: number) => opts.hosts?.[i] ?? opts.host ?? "127.0.0.1";
  const given = opts.ports ?? DEFAULT_CLUSTER_PORTS;
  const ports: NodePorts[] = Array.from({ length: opts.size }, (_, i) => {
    if (Array.isArray(given)) return given[i] ?? (() => { throw new ConfigError(ErrorCode.Config, `no ports for node ${i + 1} of ${opts.size}`); })();
    const base = given as NodePorts;
    const next = (p: number) => (p === -1 ? -1 : p + i);
    return { client: next(base.client), monitor: next(base.monitor), cluster: base.cluster + i };
  });
  const dir = resolve(opts.dir ?? clusterDir(data));
  const passwordFile = join(clusterDir(data), "route-password");
  const password = routePassword(passwordFile);
  const routes = ports.map((p, i) => `nats-route://${ROUTE_USER}:${password}@${hostOf(i)}:${p.cluster}`);
  const nodes = ports.map((p, i) => {
    const name = nodeName(i + 1);
    const host = hostOf(i);
    const storeDir = join(resolve(clusterDir(data)), name, "store");
    const text = renderServerConfig(accountsText, {
      name, host, ports: { client: p.client, monitor: p.monitor }, storeDir,
      cluster: { name: CLUSTER_NAME, port: p.cluster, routes, user: ROUTE_USER, password },
    }, `node ${i + 1} of the ${opts.size}-node cluster ${CLUSTER_NAME}, generated by \`causeway infra render --cluster ${opts.size}\``);
    const path = join(dir, `${name}.conf`);
    // The route password is in it.
    writeAtomically(path, text, 0o600);
    return {
      name, host, path, text, ports: p, storeDir, routePort: p.cluster,
      clientUrl: `nats://${host}:${p.client}`, monitorUrl: `http://${host}:${p.monitor}`,
    };
  });
  return { nodes, passwordFile, accounts: accountsOf(principals) };
}

const ROUTE_USER = "causeway-route";

/** The cluster's route password from `file`, made (32 random bytes, hex, 0600) when there is none. */
function routePassword(file: string): string {
  if (existsSync(file)) {
    const text = readFileSync(file, "utf8").trim();
    if (/^[0-9a-f]{64}$/.test(text)) return text;
    throw new ConfigError(ErrorCode.Config, `${file} does not hold a route password (64 hex digits): remove it to make a new one, then render and restart every node`);
  }
  const password = randomBytes(32).toString("hex");
  writeAtomically(file, `${password}\n`, 0o600);
  return password;
}

// Write then rename: a server (re)loading the file never reads half of it.
function writeAtomically(path: string, text: string, mode = 0o644): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode });
  renameSync(tmp, path);
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

/** Lame duck mode of every Causeway server (renderServerConfig). */
const LAME_DUCK = Object.freeze({ gracePeriod: "2s", duration: "30s" });
/** Route pings of every cluster node (renderServerConfig). */
const ROUTE_PINGS = Object.freeze({ interval: "1s", max: 3 });

/** A complete single-node development config around an accounts fragment. */
export function renderDevConfig(accountsText: string, opts: { dataDir: string }): string {
  return renderServerConfig(accountsText, {
    name: "causeway-dev", host: "127.0.0.1", ports: { client: 4222, monitor: 8222 }, storeDir: join(resolve(opts.dataDir), "nats", "store"),
  }, "development server, generated by `causeway infra render --full`");
}

/**
 * A complete server config around an accounts fragment: the one place the settings every Causeway server needs
 * are written (the dev server, each cluster node, the demo's server).
 */
export function renderServerConfig(accountsText: string, node: ServerNode, what: string): string {
  const c = node.cluster;
  return [
    `# Causeway ${what}. Do not edit: render again.`,
    `server_name: ${quote(node.name)}`,
    `listen: ${quote(`${node.host}:${node.ports.client}`)}`,
    `http: ${quote(`${node.host}:${node.ports.monitor}`)}`,
    "# Streams accept 1 MiB of event data plus ce- headers and DSSE material (max_msg_size 1 MiB + 64 KiB);",
    "# the gateway refuses larger data at the edge with a clear error.",
    "max_payload: 2MB",
    "jetstream {",
    `  store_dir: ${quote(node.storeDir)}`,
    "  # fsync every write before acknowledging it: with the default lazy fsync (every 2 minutes) a coordinated",
    "  # power loss can lose writes JetStream has already acknowledged, and the mesh promises none is lost.",
    "  sync_interval: always",
    "}",
    "# Lame duck mode (`nats-server --signal ldm=<pid>`: how a node is restarted or upgraded) moves the node's Raft",
    "# leaders away, shuts its JetStream down and tells its clients, which move to another node at once (Causeway's",
    "# do); the rest are closed after the grace period, spread over the duration (defaults 10 s and 2 min; the",
    "# duration's least is 30 s).",
    `lame_duck_grace_period: "${LAME_DUCK.gracePeriod}"`,
    `lame_duck_duration: "${LAME_DUCK.duration}"`,
    ...(c === undefined ? [] : [
      "# Routes are trusted with every account: they authenticate with the cluster's password.",
      "cluster {",
      `  name: ${quote(c.name)}`,
      `  listen: ${quote(`${node.host}:${c.port}`)}`,
      `  authorization { user: ${quote(c.user)}, password: ${quote(c.password)} }`,
      "  # A route that misses 3 pings 1 s apart is dropped and redialled (default 2 min × 2): a peer cut off by the",
      "  # network is noticed within ~4 s (and so are its clients: it stops advertising its peers' URLs to them),",
      "  # and its route is back within a second or two of the network healing.",
      `  ping_interval: "${ROUTE_PINGS.interval}"`,
      `  ping_max: ${ROUTE_PINGS.max}`,
      "  routes: [",
      ...c.routes.map((r) => `    ${quote(r)}`),
      "  ]",
      "}",
    ]),
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
