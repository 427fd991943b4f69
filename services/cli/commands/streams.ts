// `causeway streams apply`: create or update the JetStream streams and consumers of streams/*.json (rendered
// for the mesh's prefix, from infra/principals.json) and the mesh's KV buckets, idempotently, printing one line
// per stream, consumer or bucket. Exit 0 when everything declared is in effect, 1 when anything was refused,
// 2 on a usage error.
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { nkeyAuthenticator } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import { ConfigError, DEFAULT_PRINCIPALS_PATH, ErrorCode, connectAs, connectWithPolicy, loadLayout, parseServers, permissionDenied } from "../../kit/index.ts";
import { applyStreams, defaultStreamsDir, ensureMeshBuckets } from "../../kit/ops/index.ts";

const DEFAULT_SERVER = "nats://127.0.0.1:4222";

const USAGE = `usage: causeway streams apply [--force] [--replicas N] [--server URL] [--as PRINCIPAL | --nkey SEEDFILE] [--dir DIR] [--principals FILE]

  --force         apply destructive changes (shrinking limits, removing subjects, lowering replicas)
  --replicas N    replicas for every stream, overriding the files (1 in the files; 3 in production)
  --server URL    NATS server (default: $NATS_URL or ${DEFAULT_SERVER})
  --as PRINCIPAL  connect as this principal of infra/principals.json (its seed, its private inbox), e.g. operator
  --nkey FILE     NKey seed file to authenticate with (default: $CAUSEWAY_NKEY); uses the default _INBOX prefix
  --dir DIR       definitions directory (default: the streams/ directory of Causeway)
  --principals FILE  principals file whose prefix the subjects are rendered for (default: infra/principals.json)`;

/** Runs `causeway streams <args>`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("streams", USAGE, args, {
        force: { type: "boolean", default: false },
        replicas: { type: "string" },
        server: { type: "string" },
        nkey: { type: "string" },
        as: { type: "string" },
        dir: { type: "string" },
        principals: { type: "string" }
      });
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  if (positionals.length !== 1 || positionals[0] !== "apply") {
    return usageError(positionals.length === 0 ? "missing subcommand" : `unknown subcommand "${positionals.join(" ")}"`);
  }
  let replicas: number | undefined;
  if (values.replicas !== undefined) {
    if (!/^[1-5]$/.test(values.replicas)) return usageError(`--replicas must be an integer from 1 to 5, got "${values.replicas}"`);
    replicas = Number(values.replicas);
  }

  const layout = loadLayout({
    streamsDir: values.dir === undefined ? defaultStreamsDir : resolve(values.dir),
    principalsPath: values.principals === undefined ? DEFAULT_PRINCIPALS_PATH : resolve(values.principals),
  });
  const server = values.server ?? process.env.NATS_URL ?? DEFAULT_SERVER;
  if (values.as !== undefined && values.nkey !== undefined) return usageError("--as and --nkey are alternatives");
  const nkey = values.nkey ?? process.env.CAUSEWAY_NKEY;

  const nc = values.as !== undefined ? await connectAs(values.as, { servers: server }) : await connectTo(server, nkey);
  try {
    const jsm = await jetstreamManager(nc).catch((err: unknown) => {
      throw new ConfigError(ErrorCode.Config, `JetStream is not available at ${server}: ${(err as Error).message}`, { cause: err });
    });
    const report = await applyStreams(jsm, Object.values(layout.streams), { force: values.force, replicas, log: (line) => console.log(line) }).catch((err: unknown) => {
      throw permissionDenied(err, `${values.as ?? "this identity"} managing streams`) ?? err;
    });
    if (report.ok) {
      const { created, raised } = await ensureMeshBuckets(nc, { replicas, buckets: layout.buckets }).catch((err: unknown) => {
        throw permissionDenied(err, `${values.as ?? "this identity"} creating KV buckets`) ?? err;
      });
      for (const name of created) console.log(`✓ KV ${name} created`);
      for (const name of raised) console.log(`✓ KV ${name} raised to ${replicas} replicas`);
    }
    if (!report.ok) {
      const destructive = report.results.some((r) => r.status === "refused" && r.error.code === ErrorCode.DestructiveChange);
      console.error(`causeway: some definitions were not applied${destructive ? ` (${ErrorCode.DestructiveChange})` : ""}`);
    }
    return report.ok ? 0 : 1;
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

async function connectTo(server: string, nkeyFile: string | undefined): Promise<NatsConnection> {
  let seed: Uint8Array | undefined;
  if (nkeyFile !== undefined) {
    const text = await readFile(nkeyFile, "utf8").catch((err: unknown) => {
      throw new ConfigError(ErrorCode.SeedMissing, `cannot read the NKey seed ${nkeyFile}: ${(err as Error).message}`, { cause: err });
    });
    seed = new TextEncoder().encode(text.trim());
  }
  try {
    return await connectWithPolicy({ servers: parseServers(server), name: "causeway streams", ...(seed ? { authenticator: nkeyAuthenticator(seed) } : {}) });
  } catch (err) {
    throw new ConfigError(ErrorCode.Config, `cannot connect to ${server}: ${(err as Error).message}`, { cause: err });
  }
}

function usageError(problem: string): number {
  return sharedUsageError("streams", USAGE, problem);
}
