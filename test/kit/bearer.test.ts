// Bearer tokens: digest matching in constant time for any number of tokens, and private development token files.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { lineageConfig } from "../../services/lineage/config.ts";
import { bearerMatcher, ensureTokenFile, isTokenDigest, tokenDigestHex } from "../../services/kit/index.ts";

test("bearer - a presented token matches the digest it hashes to, and nothing else does", () => {
  const match = bearerMatcher([tokenDigestHex("alpha"), tokenDigestHex("beta").toUpperCase()]);
  assert.equal(match("Bearer alpha"), 0);
  assert.equal(match("bearer   beta"), 1, "scheme case-insensitive, digests in either case");
  for (const header of [undefined, "", "Bearer", "Bearer gamma", "Basic alpha", "Bearer alpha extra", "Bearer alph"]) {
    assert.equal(match(header), undefined, String(header));
  }
  assert.equal(bearerMatcher([])("Bearer alpha"), undefined);
});

test("bearer - a development token file is created once, private, in a private directory, and read back", () => {
  const dir = mkdtempSync(join(tmpdir(), "causeway-tokens-"));
  const path = join(dir, "tokens", "lineage-http.token");
  const first = ensureTokenFile(path);
  assert.equal(first.created, true);
  assert.match(first.token, /^[A-Za-z0-9_-]{43}$/, "32 random bytes, base64url");
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, "tokens")).mode & 0o777, 0o700);
  const again = ensureTokenFile(path);
  assert.deepEqual(again, { token: first.token, created: false });
  assert.equal(readFileSync(path, "utf8"), `${first.token}\n`);
  assert.ok(isTokenDigest(tokenDigestHex(first.token)));
});

test("bearer - lineage takes its accepted token digests from LINEAGE_HTTP_TOKEN_SHA256 and refuses anything else", () => {
  const d1 = tokenDigestHex("one"), d2 = tokenDigestHex("two");
  assert.deepEqual(lineageConfig({ LINEAGE_HTTP_TOKEN_SHA256: ` ${d1},${d2.toUpperCase()} ` }).httpTokenDigests, [d1, d2]);
  assert.deepEqual(lineageConfig({}).httpTokenDigests, []);
  assert.equal(lineageConfig({ LINEAGE_HTTP_TOKEN_FILE: "/run/secrets/lineage.token" }).httpTokenFile, "/run/secrets/lineage.token");
  assert.throws(() => lineageConfig({ LINEAGE_HTTP_TOKEN_SHA256: "my-token" }), (err: Error & { code?: string }) => err.code === "CW_ERR_CONFIG" && /"my-token" is not a SHA-256 digest/.test(err.message));
});
