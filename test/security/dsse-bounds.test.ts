// Issue 12, finding 2: DSSE signature-count amplification. An envelope is bounded before any crypto (at most
// DSSE_MAX_SIGNATURES signatures, a dssematerial of at most DSSE_MATERIAL_MAX_BYTES), and at most one signature
// per keyid is verified; the binding bounds the attributes (dssematerial included) in either mode.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createUser } from "@nats-io/nkeys";
import { headers } from "@nats-io/transport-node";
import {
  DSSE_MATERIAL, DSSE_MATERIAL_MAX_BYTES, DSSE_MAX_SIGNATURES, DecodeError, ErrorCode, MAX_ATTRIBUTE_BYTES, NatsBinding, QuarantineReason, STRUCTURED_CONTENT_TYPE,
  VerificationError, createEvent, createKeyring, encodeJsonEvent, signEvent, signingKeyFromNkeySeed, verifyEvent, type CloudEvent, type KeyResolver,
} from "../../services/kit/index.ts";

const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
const other = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));

function signed(): CloudEvent {
  return signEvent(createEvent({
    id: "evt-1", source: "https://crm.example", type: "report.requested", time: "2026-01-01T00:00:00Z",
    extensions: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" }, data: '{"topic":"x"}',
  }), key);
}

/** The event with its envelope's signatures replaced by `make(original signature)`. */
function withSignatures(event: CloudEvent, make: (sig: { keyid: string; sig: string }) => { keyid: string; sig: string }[]): CloudEvent {
  const envelope = JSON.parse(Buffer.from(String(event.extensions[DSSE_MATERIAL]), "base64").toString("utf8")) as { signatures: { keyid: string; sig: string }[] };
  envelope.signatures = make(envelope.signatures[0]!);
  const material = Buffer.from(JSON.stringify(envelope)).toString("base64");
  return { ...event, extensions: { ...event.extensions, [DSSE_MATERIAL]: material } };
}

/** A resolver that counts lookups (one per signature considered, so one per verification at most). */
function counting(resolver: KeyResolver): KeyResolver & { lookups: number } {
  const r = { lookups: 0, key: (id: string) => { r.lookups++; return resolver.key(id); } };
  return r;
}

const bogus = (sig: { keyid: string; sig: string }) => ({ keyid: sig.keyid, sig: Buffer.alloc(64, 7).toString("base64") });

function refusedWith(fn: () => unknown, code: string): VerificationError | DecodeError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof VerificationError || err instanceof DecodeError, `a typed error, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${code}`);
}

describe("DSSE envelope bounds", () => {
  test("dsse - 5,000 bogus signatures under the sender's own keyid are refused before any verification (CW_ERR_ENVELOPE_TOO_LARGE, bad_signature, 413)", () => {
    const event = withSignatures(signed(), (s) => [...Array.from({ length: 5_000 }, () => bogus(s)), s]);
    const ring = counting(createKeyring([key]));
    const started = performance.now();
    const err = refusedWith(() => verifyEvent(event, ring), ErrorCode.EnvelopeTooLarge) as VerificationError;
    const ms = performance.now() - started;
    assert.equal(ring.lookups, 0, "no key looked up, so no signature verified");
    assert.equal(err.reason, QuarantineReason.BadSignature);
    assert.equal(err.status, 413);
    assert.match(err.message, /5001 signatures; the limit is 4|over \d+ bytes|limit is 32768/);
    assert.ok(ms < 100, `refused in ${ms.toFixed(1)} ms`);
  });

  test("dsse - up to DSSE_MAX_SIGNATURES signatures verify; one more is refused", () => {
    const good = signed();
    const four = withSignatures(good, (s) => [bogus({ keyid: other.keyid, sig: "" }), bogus({ keyid: "nobody", sig: "" }), bogus({ keyid: "nobody2", sig: "" }), s]);
    assert.equal(DSSE_MAX_SIGNATURES, 4);
    assert.equal(verifyEvent(four, createKeyring([key, other])).verification.keyid, key.keyid);
    const five = withSignatures(good, (s) => [bogus(s), bogus(s), bogus(s), bogus(s), s]);
    refusedWith(() => verifyEvent(five, createKeyring([key])), ErrorCode.EnvelopeTooLarge);
  });

  test("dsse - at most one signature per keyid is verified: a second one under a tried keyid is skipped", () => {
    // Four signatures under the signer's keyid, the good one last: only the first (bogus) one is tried.
    const event = withSignatures(signed(), (s) => [bogus(s), bogus(s), bogus(s), s]);
    const ring = counting(createKeyring([key]));
    refusedWith(() => verifyEvent(event, ring), ErrorCode.BadSignature);
    assert.equal(ring.lookups, 1, "one key lookup (one verification) for four signatures under one keyid");
    // The good signature first verifies as before.
    const first = withSignatures(signed(), (s) => [s, bogus(s)]);
    assert.equal(verifyEvent(first, createKeyring([key])).verification.keyid, key.keyid);
  });

  test("dsse - a dssematerial over DSSE_MATERIAL_MAX_BYTES is refused before it is decoded", () => {
    const good = signed();
    const material = String(good.extensions[DSSE_MATERIAL]);
    // Valid base64 of an envelope padded with whitespace: under the old code it decodes and verifies.
    const envelope = Buffer.from(material, "base64").toString("utf8");
    const padded = Buffer.from(envelope + " ".repeat(DSSE_MATERIAL_MAX_BYTES)).toString("base64");
    const event = { ...good, extensions: { ...good.extensions, [DSSE_MATERIAL]: padded } };
    const ring = counting(createKeyring([key]));
    const err = refusedWith(() => verifyEvent(event, ring), ErrorCode.EnvelopeTooLarge);
    assert.match(err.message, new RegExp(`the limit is ${DSSE_MATERIAL_MAX_BYTES}`));
    assert.equal(ring.lookups, 0);
  });

  test("dsse - a structured event carrying thousands of signatures is refused at decode (CW_ERR_ATTRIBUTES_TOO_LARGE), naming the limit", () => {
    const event = withSignatures(signed(), (s) => [...Array.from({ length: 5_000 }, () => bogus(s)), s]);
    const h = headers();
    h.set("content-type", STRUCTURED_CONTENT_TYPE);
    const msg = { headers: h, data: Buffer.from(encodeJsonEvent(event as CloudEvent)) };
    assert.ok(msg.data.length < 1024 * 1024 + 64 * 1024, "fits the structured-mode size limit");
    const err = refusedWith(() => NatsBinding.toEvent(msg), ErrorCode.AttributesTooLarge);
    assert.match(err.message, new RegExp(`the limit is ${MAX_ATTRIBUTE_BYTES}`));
    assert.equal(err.status, 413);
  });

  test("binding - a binary-mode message whose headers exceed MAX_ATTRIBUTE_BYTES is refused before its values are decoded", () => {
    const { headers: h, data } = NatsBinding.binary(signed());
    h.set("ce-padding", "x".repeat(MAX_ATTRIBUTE_BYTES));
    refusedWith(() => NatsBinding.toEvent({ headers: h, data }), ErrorCode.AttributesTooLarge);
    // Non-CloudEvents headers count too: they travel with the message into every stream and quarantine copy.
    const plain = NatsBinding.binary(signed());
    plain.headers.set("X-Junk", "%zz".repeat(MAX_ATTRIBUTE_BYTES / 3));
    refusedWith(() => NatsBinding.toEvent(plain), ErrorCode.AttributesTooLarge);
    // The mesh's own events are far below it and decode as before.
    const ok = NatsBinding.binary(signed());
    assert.equal(NatsBinding.toEvent(ok).id, "evt-1");
  });
});
