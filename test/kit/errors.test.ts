import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ErrorCode, QuarantineReason } from "../../services/kit/errors.ts";
import { repoRoot } from "../harness/index.ts";

const doc = readFileSync(join(repoRoot, "docs", "errors.md"), "utf8");

test("errors - every error code is documented in docs/errors.md", () => {
  const missing = Object.values(ErrorCode).filter((code) => !doc.includes(`\`${code}\``));
  assert.deepEqual(missing, []);
});

test("errors - docs/errors.md documents no code that does not exist", () => {
  const documented = new Set(doc.match(/CW_ERR_[A-Z_]+/g));
  const known = new Set<string>(Object.values(ErrorCode));
  assert.deepEqual([...documented].filter((c) => !known.has(c)), []);
});

test("errors - codes are unique and follow CW_ERR_*", () => {
  const codes = Object.values(ErrorCode);
  assert.equal(new Set(codes).size, codes.length);
  for (const code of codes) assert.match(code, /^CW_ERR_[A-Z_]+$/);
});

test("errors - quarantine reasons are lowercase tokens", () => {
  for (const reason of Object.values(QuarantineReason)) assert.match(reason, /^[a-z_]+$/);
});
