// `causeway tokens ensure`: the development bearer tokens of the upstreams that infra/upstreams.json marks
// `dev_token`, one file per upstream under <data>/tokens (0600, in a 0700 directory). Like NKey seeds, a token
// is a secret: written once, never printed, never logged. Production upstreams declare their token's SHA-256
// in infra/upstreams.json instead and keep the token themselves.
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parseCommand, usageError } from "../usage.ts";
import { dataDir, devTokenPath, ensureTokenFile } from "../../kit/index.ts";

const USAGE = `usage: causeway tokens ensure

  tokens ensure   create the missing development bearer tokens of infra/upstreams.json (dev_token: true)

Tokens live in <data>/tokens/<upstream>.token; <data> is $CAUSEWAY_DATA_DIR (default: <repo>/.data).
Use one as: curl -H "Authorization: Bearer $(cat <data>/tokens/<upstream>.token)" …`;

// Where the gateway reads an upstream's development token (re-exported for the CLI's other commands).
export { devTokenPath };

const upstreamsPath = resolve(import.meta.dirname, "..", "..", "..", "infra", "upstreams.json");

/** Creates each missing development token; returns the upstreams it created one for. */
export function ensureDevTokens(dir: string = dataDir()): string[] {
  const doc = JSON.parse(readFileSync(upstreamsPath, "utf8")) as { upstreams: Record<string, { bearer?: { dev_token?: boolean } }> };
  const created: string[] = [];
  for (const [name, u] of Object.entries(doc.upstreams)) {
    if (u.bearer?.dev_token !== true || !/^[a-z0-9][a-z0-9_-]*$/.test(name)) continue;
    if (ensureTokenFile(devTokenPath(dir, name)).created) created.push(name);
  }
  return created;
}

/** Runs `causeway tokens <args>`. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("tokens", USAGE, args, {});
  if (parsed.exit !== undefined) return parsed.exit;
  if (parsed.positionals.length !== 1 || parsed.positionals[0] !== "ensure") return usageError("tokens", USAGE, "expected `tokens ensure`");
  const created = ensureDevTokens();
  console.log(created.length > 0 ? `✓ created ${created.map((n) => devTokenPath(dataDir(), n)).join(", ")}` : "✓ every development token exists");
  return 0;
}
