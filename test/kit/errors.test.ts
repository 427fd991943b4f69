import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { repoRoot } from "../harness/index.ts";
import { CausewayError, ErrorCode, QuarantineReason, isErrorCode, statusOf } from "../../services/kit/index.ts";

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

test("errors - every code has an HTTP status, and docs/errors.md states the same one", () => {
  // Each table row is | `CODE` | status | …
  const documented = new Map([...doc.matchAll(/^\| `(CW_ERR_[A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])]));
  for (const code of Object.values(ErrorCode)) {
    const status = statusOf(code);
    assert.ok(Number.isInteger(status) && status >= 400 && status <= 599, `${code}: ${status} is not an HTTP error status`);
    assert.equal(documented.get(code), status, `${code}: docs/errors.md says ${documented.get(code)}, the table ${status}`);
  }
});

test("errors - a CausewayError's status is its code's; unknown strings are not codes", () => {
  assert.equal(new CausewayError(ErrorCode.QuarantineNotFound, "x").status, 404);
  assert.equal(new CausewayError(ErrorCode.Unavailable, "x").status, 503);
  assert.equal(isErrorCode("CW_ERR_USAGE"), true);
  assert.equal(isErrorCode("CW_ERR_NOPE"), false);
  assert.equal(isErrorCode(400), false);
});

test("errors - codes are unique and follow CW_ERR_*", () => {
  const codes = Object.values(ErrorCode);
  assert.equal(new Set(codes).size, codes.length);
  for (const code of codes) assert.match(code, /^CW_ERR_[A-Z_]+$/);
});

test("errors - quarantine reasons are lowercase tokens", () => {
  for (const reason of Object.values(QuarantineReason)) assert.match(reason, /^[a-z_]+$/);
});
