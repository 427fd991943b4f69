// The network of the partitioned mesh (issue 14, item 5: "a real network partition where the machine allows
// it"): every node in a network namespace of its own, all of them and the root namespace (where the services,
// the gateway and the test run) attached by veth pairs to one Linux bridge in a "switch" namespace, on a private
// /24 (10.213.X.0/24, X picked per run among those the root namespace does not use). Two faults:
//   - isolate(i): node i's port on the bridge down: nothing reaches it and it reaches nothing, its process runs on;
//   - cut(i, peers): blackhole routes between node i and `peers` in their namespaces: the nodes cannot talk to each
//     other (a new connection fails at once, an established one goes silent), while the root namespace, the
//     clients' side, still reaches every node.
// Names carry this process's pid ("cwchaos-<pid>-<tag>-…"), so parallel runs never collide and a later run can tell
// the namespaces of an aborted one (its pid gone) and delete them. Everything made is deleted by dispose, even
// after a failure half-way through the making. tc netem and iptables are not needed (nor available here).
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";

const PREFIX = "cwchaos";

/** Runs `ip <args>`; rejects with the command and ip's own message. */
function ip(args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("ip", args, { timeout: 10_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`ip ${args.join(" ")}: ${(stderr || err.message).trim()}`));
      else resolve(stdout);
    });
  });
}

/** Thrown when the machine does not allow network namespaces here: the scenario falls back to SIGSTOP. */
export class NetnsUnavailable extends Error {}

export interface NodeNetwork extends AsyncDisposable {
  /** Node i's address (index 0 is node 1). */
  readonly hosts: readonly string[];
  /** The command that runs a program in node i's namespace (1-based), exec'ing it in place. */
  runUnder(i: number): readonly string[];
  /** Node i's bridge port down: it is cut off from everything. */
  isolate(i: number): Promise<void>;
  /** Blackhole routes both ways between node i and each of `peers` (1-based): the clients still reach every node. */
  cut(i: number, peers: readonly number[]): Promise<void>;
  /** Undoes every isolate and cut. */
  heal(): Promise<void>;
  /** One line for the notes: the nodes' addresses. */
  readonly description: string;
}

/** Pids in the names of namespaces earlier runs left behind whose process is gone: deleted before this run makes its own. */
async function sweepAbandoned(): Promise<void> {
  const names = (await ip(["netns", "list"])).split("\n").map((l) => l.split(" ")[0]!).filter((n) => n.startsWith(`${PREFIX}-`));
  for (const name of names) {
    const pid = Number(name.split("-")[1]);
    let alive = true;
    try { process.kill(pid, 0); } catch { alive = false; }
    if (!alive) await ip(["netns", "del", name]).catch(() => undefined);
  }
}

/** A /24 of 10.213.0.0/16 no address of the root namespace is in. */
async function freeSubnet(): Promise<string> {
  const used = new Set([...(await ip(["-o", "-4", "addr", "show"])).matchAll(/inet 10\.213\.(\d+)\./g)].map((m) => Number(m[1])));
  const free = Array.from({ length: 256 }, (_, x) => x).filter((x) => !used.has(x));
  if (free.length === 0) throw new NetnsUnavailable("every /24 of 10.213.0.0/16 is in use in the root namespace");
  return `10.213.${free[randomBytes(1)[0]! % free.length]}`;
}

/**
 * Makes the network for `size` nodes. Throws {@link NetnsUnavailable} with the reason when namespaces cannot be
 * had (not root, no `ip`, a creation that fails); what was made before the failure is deleted first.
 */
export async function createNodeNetwork(size: number): Promise<NodeNetwork> {
  if (process.getuid?.() !== 0) throw new NetnsUnavailable(`not root (uid ${process.getuid?.() ?? "unknown"}): network namespaces need CAP_NET_ADMIN`);
  try {
    await ip(["-V"]);
    await sweepAbandoned();
  } catch (err) {
    throw new NetnsUnavailable(`no usable \`ip\` (iproute2): ${(err as Error).message}`);
  }
  const tag = randomBytes(3).toString("hex");
  const base = `${PREFIX}-${process.pid}-${tag}`;
  const sw = `${base}-sw`;
  const nodeNs = Array.from({ length: size }, (_, i) => `${base}-n${i + 1}`);
  // Interface names have at most 15 characters: "cw" + tag + a role.
  const rootIf = `cw${tag}r`;
  const portOf = (i: number) => `cw${tag}p${i}`; // node i's port on the bridge (in the switch namespace)
  const made: string[] = [];
  let rootIfMade = false;
  const dispose = async () => {
    const problems: string[] = [];
    // The root end first: deleting it deletes its peer; a namespace's deletion is asynchronous in the kernel.
    if (rootIfMade) await ip(["link", "del", rootIf]).catch((err: Error) => { if (!/Cannot find device/.test(err.message)) problems.push(err.message); });
    for (const ns of made.reverse()) await ip(["netns", "del", ns]).catch((err: Error) => problems.push(err.message));
    if (problems.length > 0) throw new Error(`tearing down the chaos network: ${problems.join("; ")}`);
  };
  try {
    const subnet = await freeSubnet();
    const hosts = nodeNs.map((_, i) => `${subnet}.${11 + i}`);
    for (const ns of [sw, ...nodeNs]) {
      await ip(["netns", "add", ns]);
      made.push(ns);
    }
    await ip(["-n", sw, "link", "add", "br0", "type", "bridge"]);
    await ip(["-n", sw, "link", "set", "br0", "up"]);
    await ip(["link", "add", rootIf, "type", "veth", "peer", "name", portOf(0), "netns", sw]);
    rootIfMade = true;
    await ip(["-n", sw, "link", "set", portOf(0), "master", "br0", "up"]);
    await ip(["addr", "add", `${subnet}.1/24`, "dev", rootIf]);
    await ip(["link", "set", rootIf, "up"]);
    for (const [i, ns] of nodeNs.entries()) {
      // Made in the node's namespace, its peer moved to the switch's: nothing of it is ever in the root namespace.
      await ip(["-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", portOf(i + 1), "netns", sw]);
      await ip(["-n", sw, "link", "set", portOf(i + 1), "master", "br0", "up"]);
      await ip(["-n", ns, "addr", "add", `${hosts[i]}/24`, "dev", "eth0"]);
      await ip(["-n", ns, "link", "set", "eth0", "up"]);
      await ip(["-n", ns, "link", "set", "lo", "up"]);
    }
    const cuts: { ns: string; to: string }[] = [];
    const isolated = new Set<number>();
    return {
      hosts,
      description: `nodes on ${hosts.join(", ")}, a network namespace each, one bridge`,
      runUnder: (i) => ["ip", "netns", "exec", nodeNs[i - 1]!],
      async isolate(i) {
        await ip(["-n", sw, "link", "set", portOf(i), "down"]);
        isolated.add(i);
      },
      async cut(i, peers) {
        for (const p of peers) {
          for (const [from, to] of [[i, p], [p, i]] as const) {
            await ip(["-n", nodeNs[from - 1]!, "route", "add", "blackhole", `${hosts[to - 1]}/32`]);
            cuts.push({ ns: nodeNs[from - 1]!, to: hosts[to - 1]! });
          }
        }
      },
      async heal() {
        for (const i of isolated) await ip(["-n", sw, "link", "set", portOf(i), "up"]);
        isolated.clear();
        for (const c of cuts.splice(0)) await ip(["-n", c.ns, "route", "del", "blackhole", `${c.to}/32`]);
      },
      [Symbol.asyncDispose]: dispose,
    };
  } catch (err) {
    await dispose().catch(() => undefined);
    throw err instanceof NetnsUnavailable ? err : new NetnsUnavailable(`making the network namespaces failed: ${(err as Error).message}`);
  }
}
