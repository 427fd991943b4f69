// Where the project's pinned NATS binaries live. `make tools` builds them into .tools/bin; tests and the
// CLI never fall back to a system nats-server (Debian ships 2.9, too old for consumer pause and TTLs).
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

/** The repository root (two levels above test/harness). */
export const repoRoot = resolve(import.meta.dirname, "..", "..");

/** Directory of the pinned `nats-server` and `nats` binaries. */
export const toolsBin = process.env.CAUSEWAY_TOOLS_BIN ?? join(repoRoot, ".tools", "bin");

/** Absolute path of a pinned binary; throws with the fix when it is missing. */
export function toolPath(name: "nats-server" | "nats"): string {
  const path = join(toolsBin, name);
  if (!existsSync(path)) {
    throw new Error(`${name} not found at ${path}: run \`make tools\` to build the pinned NATS binaries`);
  }
  return path;
}
