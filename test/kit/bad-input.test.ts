// Bad input never crashes: thousands of corrupted messages through decode + verify, and every failure is a
// CausewayError with a stable, documented code (never a TypeError or RangeError from deep inside).
import assert from "node:assert/strict";
import { test } from "node:test";
import { createUser } from "@nats-io/nkeys";
import { headers } from "@nats-io/transport-node";
import {
  CausewayError, ErrorCode, NatsBinding, STRUCTURED_CONTENT_TYPE, createEvent, createKeyring, signEvent, signingKeyFromNkeySeed, verifyEvent,
} from "../../services/kit/index.ts";

const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
const ring = createKeyring([key]);
const event = signEvent(createEvent({
  id: "e-1", source: "causeway://planner", type: "research.task.created", datacontenttype: "application/json",
  time: "2026-11-21T10:00:00Z", subject: "task é", extensions: { correlationid: "c", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
  data: '{"query":"what","index":0}',
}), key);
const codes = new Set<string>(Object.values(ErrorCode));

// A deterministic generator, so a failure reproduces.
let state = 0x2545f491;
const rand = (n: number) => {
  state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
  return (state >>> 0) % n;
};
const junk = ["", " ", "%", "%zz", "%C0%A0", '"', '"\\', "\u00ff", "😀", "null", "{", "[]", "1.0", "-1", "A".repeat(300), "=", "====", "\t"];

function mutate(text: string): string {
  const chars = [...text];
  switch (rand(4)) {
    case 0: chars[rand(chars.length || 1)] = String.fromCharCode(rand(0x3000)); break;
    case 1: chars.splice(rand(chars.length || 1), 1 + rand(5)); break;
    case 2: chars.splice(rand(chars.length || 1), 0, junk[rand(junk.length)]!); break;
    default: return junk[rand(junk.length)]!;
  }
  return chars.join("");
}

function outcome(msg: Parameters<typeof NatsBinding.toEvent>[0]): string {
  try {
    verifyEvent(NatsBinding.toEvent(msg), ring);
    return "verified";
  } catch (err) {
    assert.ok(err instanceof CausewayError, `not a CausewayError: ${String(err)}\n${(err as Error).stack}`);
    assert.ok(codes.has(err.code), `unknown code ${err.code}`);
    return err.code;
  }
}

test("bad input - corrupted binary-mode headers end in a typed error, never a crash", () => {
  const { headers: original, data } = NatsBinding.binary(event);
  const names = original.keys();
  const seen = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const h = headers();
    for (const name of names) {
      const drop = rand(40) === 0;
      if (!drop) h.append(name, rand(3) === 0 ? mutate(original.get(name)) : original.get(name));
    }
    if (rand(10) === 0) h.append(`ce-${mutate("ext")}`.toLowerCase().replace(/[^a-z0-9-]/g, "") || "ce-x", mutate("v"));
    seen.add(outcome({ headers: h, data: rand(5) === 0 ? Buffer.from(mutate(Buffer.from(data).toString())) : data }));
  }
  // The mutations reach decoding, header, material and digest checks alike.
  for (const code of [ErrorCode.DecodeHeader, ErrorCode.InvalidAttribute, ErrorCode.MaterialCorrupt, ErrorCode.CoreDigestMismatch, ErrorCode.ExtDigestMismatch]) {
    assert.ok(seen.has(code), `no mutation produced ${code}; saw ${[...seen].join(", ")}`);
  }
});

test("bad input - corrupted structured-mode payloads end in a typed error, never a crash", () => {
  const text = Buffer.from(NatsBinding.structured(event).data).toString();
  const seen = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    const h = headers();
    h.append("content-type", STRUCTURED_CONTENT_TYPE);
    let body = text;
    for (let k = 0, n = 1 + rand(3); k < n; k++) body = mutate(body);
    seen.add(outcome({ headers: h, data: Buffer.from(body) }));
  }
  assert.ok(seen.has(ErrorCode.DecodeJson), [...seen].join(", "));
  assert.ok(seen.size >= 4, `only ${[...seen].join(", ")}`);
});

test("bad input - random bytes and random headers end in a typed error", () => {
  for (let i = 0; i < 2000; i++) {
    const h = headers();
    for (let k = 0; k < rand(6); k++) h.append(rand(2) ? `ce-${["id", "source", "type", "specversion", "time", "dssematerial"][rand(6)]}` : "content-type", mutate(junk[rand(junk.length)]!));
    const bytes = Buffer.from(Array.from({ length: rand(64) }, () => rand(256)));
    const result = outcome({ headers: rand(8) === 0 ? undefined : h, data: bytes });
    assert.notEqual(result, "verified");
  }
});
