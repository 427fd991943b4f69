// `causeway trust`: the live trust store (KV causeway_trust) that every service watches. `seed` writes an
// entry per signing principal of infra/principals.json with the public key of its seed; `ls` shows what
// services trust; `revoke` ends a key's trust at a given time, which services apply to the next message.
// Everything connects as the operator, the only principal allowed to write the bucket.
import { existsSync } from "node:fs";
import type { NatsConnection } from "@nats-io/transport-node";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";
import { connectAsOperator } from "../operator-request.ts";
import { listTrustEntries, revokeTrust, seedTrustStore, trustEntriesFromPrincipals } from "../../kit/ops/index.ts";
import {
  ConfigError, ErrorCode, KvBucket, dataDir, formatTime, loadPrincipals, normalizeTime, publicKeyOf, seedPath, type TrustEntry,
} from "../../kit/index.ts";

const USAGE = `usage: causeway trust <subcommand> [--server URL]

  trust seed [--replicas N]                                   write an entry per signing principal of infra/principals.json
                                                              (created, updated or unchanged; never un-revokes a key)
  trust ls                                                    list the entries: principal, key id, emits, window, revocation
  trust revoke <principal|keyid> [--at RFC3339] [--reason T]  revoke a key, or every key of a principal (default: now)

  --server URL    NATS server (default: $NATS_URL or nats://127.0.0.1:4222)
  --replicas N    replicas of the bucket when seed creates it: 1 (default) or 3

Connects as the operator (<data>/keys/operator.nk); <data> is $CAUSEWAY_DATA_DIR (default: <repo>/.data).`;

/** Runs `causeway trust <args>`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("trust", USAGE, args, {
    server: { type: "string" },
    replicas: { type: "string" },
    at: { type: "string" },
    reason: { type: "string" },
  });
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const [sub, ...rest] = positionals;
  const only = (allowed: readonly string[]) => {
    const extra = (["replicas", "at", "reason"] as const).filter((k) => values[k] !== undefined && !allowed.includes(k));
    return extra.length === 0 ? undefined : usageError(`trust ${sub} does not take ${extra.map((k) => `--${k}`).join(", ")}`);
  };
  switch (sub) {
    case "seed": {
      if (rest.length !== 0) return usageError("trust seed takes no arguments");
      const refused = only(["replicas"]);
      if (refused !== undefined) return refused;
      if (values.replicas !== undefined && values.replicas !== "1" && values.replicas !== "3") {
        return usageError(`--replicas must be 1 or 3, got "${values.replicas}"`);
      }
      return withOperator(values.server, (nc) => seed(nc, values.replicas === "3" ? 3 : 1));
    }
    case "ls": {
      if (rest.length !== 0) return usageError("trust ls takes no arguments");
      return only([]) ?? withOperator(values.server, list);
    }
    case "revoke": {
      if (rest.length !== 1) return usageError("trust revoke takes exactly one principal or key id");
      const refused = only(["at", "reason"]);
      if (refused !== undefined) return refused;
      let at: number | undefined;
      if (values.at !== undefined) {
        // A time without a zone would be read as UTC, which is rarely what a person typing it meant.
        if (!/([Zz]|[+-]\d\d:\d\d)$/.test(values.at)) return usageError(`--at needs an RFC 3339 time with a zone, e.g. 2026-11-21T06:41:03Z, got "${values.at}"`);
        try {
          at = Date.parse(normalizeTime(values.at, "--at"));
        } catch {
          return usageError(`--at must be an RFC 3339 time, e.g. 2026-11-21T06:41:03Z, got "${values.at}"`);
        }
      }
      if (values.reason !== undefined && values.reason.trim() === "") return usageError("--reason must not be empty");
      return withOperator(values.server, (nc) => revoke(nc, rest[0]!, at, values.reason));
    }
    case undefined:
      return usageError("missing subcommand");
    default:
      return usageError(`unknown subcommand "${sub}"`);
  }
}

async function seed(nc: NatsConnection, replicas: 1 | 3): Promise<number> {
  const principals = loadPrincipals();
  const dir = dataDir();
  const signers = Object.values(principals.principals).filter((p) => p.emits.length > 0).map((p) => p.name);
  const missing = signers.filter((name) => !existsSync(seedPath(name, dir)));
  if (missing.length > 0) {
    throw new ConfigError(ErrorCode.SeedMissing, `no seed for ${missing.join(", ")} in ${dir}/keys: run \`causeway keys ensure\` to create the missing seeds`);
  }
  const publicKeys = Object.fromEntries(signers.map((name) => [name, publicKeyOf(name, dir)]));
  const changes = await seedTrustStore(nc, trustEntriesFromPrincipals(principals, publicKeys), { replicas });
  const counts = { created: 0, updated: 0, unchanged: 0, invalid: 0 };
  for (const c of changes) {
    counts[c.status]++;
    if (c.problem === undefined) console.log(`✓ ${c.principal} ${c.keyid} ${c.status}`);
    else console.log(`✗ ${c.principal} ${c.keyid} left unchanged: ${c.problem.message} (${c.problem.code}); fix or delete it (nats kv del ${KvBucket.Trust} ${c.keyid}), then seed again`);
  }
  console.error(`${counts.created} created, ${counts.updated} updated, ${counts.unchanged} unchanged${counts.invalid > 0 ? `, ${counts.invalid} invalid` : ""}, in ${KvBucket.Trust}`);
  return counts.invalid > 0 ? 1 : 0;
}

async function list(nc: NatsConnection): Promise<number> {
  const { entries, problems } = await listTrustEntries(nc);
  // In principals.json order (as `keys list` and `trust seed` print them), a principal's keys oldest first.
  const order = Object.keys(loadPrincipals().principals);
  const rank = (name: string) => (order.includes(name) ? order.indexOf(name) : order.length);
  const rows = [...entries]
    .sort((a, b) => rank(a.principal) - rank(b.principal) || a.principal.localeCompare(b.principal) || a.notBefore - b.notBefore || a.keyid.localeCompare(b.keyid))
    .map((e) => [e.principal, e.keyid, e.emits.join(",") || "-", window(e), revoked(e)]);
  const header = ["PRINCIPAL", "KEYID", "EMITS", "WINDOW", "REVOKED"];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: readonly string[]) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ");
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  // A malformed entry verifies nothing (its key fails closed): say so, and how to repair it.
  for (const p of problems) {
    console.error(`✗ ${p.error.message} (${p.error.code}): events signed with ${p.keyid} fail as unknown_key until it is repaired: nats kv del ${KvBucket.Trust} ${p.keyid}, then bin/causeway trust seed`);
  }
  return problems.length > 0 ? 1 : 0;
}

async function revoke(nc: NatsConnection, target: string, at: number | undefined, reason: string | undefined): Promise<number> {
  const results = await revokeTrust(nc, target, { at, reason });
  for (const r of results) {
    const when = formatTime(r.revokedAt);
    console.log(r.status === "revoked" ? `✓ ${r.principal} ${r.keyid} revoked at ${when}` : `✓ ${r.principal} ${r.keyid} already revoked at ${when}`);
  }
  return 0;
}

function window(e: TrustEntry): string {
  return `${formatTime(e.notBefore)} → ${e.notAfter === undefined ? "∞" : formatTime(e.notAfter)}`;
}

function revoked(e: TrustEntry): string {
  if (e.revokedAt === undefined) return "-";
  return e.revocationReason === undefined ? formatTime(e.revokedAt) : `${formatTime(e.revokedAt)} (${e.revocationReason})`;
}

async function withOperator(server: string | undefined, action: (nc: NatsConnection) => Promise<number>): Promise<number> {
  const nc = await connectAsOperator(server, "trust");
  try {
    return await action(nc);
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

function usageError(problem: string): number {
  return sharedUsageError("trust", USAGE, problem);
}
