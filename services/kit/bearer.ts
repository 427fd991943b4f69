// Bearer tokens for the HTTP APIs (the gateway's upstreams, lineage's auditors). A service knows only the
// SHA-256 of each token it accepts; a presented token is hashed and compared with every known digest in
// constant time, so timing says nothing about which one was close. Development tokens are files under
// <data>/tokens (0600, in a 0700 directory), like NKey seeds: never logged, never committed.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { randomBytes, hash, timingSafeEqual } from "node:crypto";
import { dirname, join } from "node:path";

/** The SHA-256 of a token, as hex (how tokens are declared in configuration). */
export function tokenDigestHex(token: string): string {
  return hash("sha256", token, "hex");
}

/** True when `hex` is a SHA-256 digest written as 64 hex digits. */
export function isTokenDigest(hex: string): boolean {
  return /^[0-9a-f]{64}$/i.test(hex);
}

/**
 * Matches the token in an Authorization header (`Bearer <token>`) against `digests` (SHA-256, hex):
 * returns the index of the digest it hashes to, or undefined (no header, another scheme, no match).
 */
export function bearerMatcher(digests: readonly string[]): (authorization: string | undefined) => number | undefined {
  const known = digests.map((hex) => Buffer.from(hex, "hex"));
  return (authorization) => {
    const m = authorization === undefined ? null : /^Bearer +(\S+) *$/i.exec(authorization);
    if (!m) return undefined;
    const presented = hash("sha256", m[1]!, "buffer");
    let found: number | undefined;
    for (const [i, digest] of known.entries()) if (timingSafeEqual(digest, presented)) found = i;
    return found;
  };
}

/** Where a development bearer token lives: `<data>/tokens/<name>.token` (the gateway's upstreams, `causeway tokens ensure`). */
export function devTokenPath(dataDir: string, name: string): string {
  return join(dataDir, "tokens", `${name}.token`);
}

/** Reads the token in `path`, creating it first (32 random bytes, base64url, mode 0600) when it is missing. */
export function ensureTokenFile(path: string): { token: string; created: boolean } {
  let created = false;
  if (!existsSync(path)) {
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    try {
      const fd = openSync(path, "wx", 0o600);
      try {
        writeSync(fd, `${randomBytes(32).toString("base64url")}\n`);
      } finally {
        closeSync(fd);
      }
      created = true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err; // another process made it first
    }
  }
  return { token: readFileSync(path, "utf8").trim(), created };
}
