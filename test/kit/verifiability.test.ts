import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { createUser } from "@nats-io/nkeys";
import { repoRoot } from "../harness/index.ts";
import {
  DSSE_PAYLOAD_TYPE, ErrorCode, QuarantineReason, VerificationError, coreDigest, createEvent, createKeyring, extDigest, openEnvelope, p256Key, pae, signBytes, signEvent, signingKeyFromNkeySeed, verificationKeyFromNkey, verifyBytes, verifyEvent, type CloudEvent,
} from "../../services/kit/index.ts";

interface VectorCase {
  case: string;
  event: Record<string, unknown>;
  signedextattrs?: string[];
  dssematerial: string;
}
// The extension's published vectors, kept as a fixture; its README lists the defects the tests below observe.
const vectors = JSON.parse(readFileSync(join(repoRoot, "test", "fixtures", "verifiability", "vectors.json"), "utf8")) as {
  key: { keyid: string; x: string; y: string; d: string };
  cases: VectorCase[];
  must_discard: Record<string, unknown>;
};
const vectorKey = p256Key(vectors.key.keyid, vectors.key);
const vectorRing = createKeyring([vectorKey]);
const byCase = new Map(vectors.cases.map((c) => [c.case, c]));

/** A vector's event with its material attached; JSON data is serialized compactly (the spec does not fix it). */
function vectorEvent(c: VectorCase): CloudEvent {
  const { data, data_base64, specversion: _s, id, source, type, datacontenttype, subject, time, ...extensions } = c.event;
  return createEvent({
    id: id as string, source: source as string, type: type as string,
    datacontenttype: datacontenttype as string,
    ...(typeof subject === "string" && subject !== "" && { subject }),
    ...(typeof time === "string" && { time }),
    extensions: { ...(extensions as Record<string, string>), dssematerial: c.dssematerial },
    data: typeof data_base64 === "string" ? Buffer.from(data_base64, "base64") : data,
  });
}

function payloadJson(c: VectorCase): Record<string, unknown> | undefined {
  try {
    return JSON.parse(Buffer.from(openEnvelope(c.dssematerial).payload).toString("utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function signatureVerifies(c: VectorCase): boolean {
  const env = openEnvelope(c.dssematerial);
  return verifyBytes(vectorKey, pae(env.payloadType, env.payload), env.signatures[0]!.sig);
}

function rejects(fn: () => unknown, code: string, reason?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof VerificationError, `expected VerificationError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (reason) assert.equal(err.reason, reason);
    return true;
  });
}

describe("vectors (test/fixtures/verifiability/vectors.json, as their observed notes say)", () => {
  test("vectors - cases 3, 4, 5, 7: signature verifies and the payload is a {core[, ext, signedextattrs]} object", () => {
    for (const id of ["3", "4", "5", "7"]) {
      const c = byCase.get(id)!;
      assert.equal(signatureVerifies(c), true, `case ${id}`);
      const p = payloadJson(c);
      assert.ok(p, `case ${id} payload is JSON`);
      assert.equal(Buffer.from(p.core as string, "base64").length, 32);
      assert.equal(p.ext === undefined, p.signedextattrs === undefined);
    }
  });

  test("vectors - case 5: the core digest reproduces exactly and the event verifies", () => {
    const c = byCase.get("5")!;
    const event = vectorEvent(c);
    assert.equal(coreDigest(event).core, payloadJson(c)!.core);
    const verified = verifyEvent(event, vectorRing);
    assert.equal(verified.verification.keyid, "testkey");
    assert.equal(verified.verification.algorithm, "ecdsa-p256");
    assert.equal(verified.verification.extensions, "none");
    assert.deepEqual(Buffer.from(verified.event.data), Buffer.from("8J+koQ==", "base64"));
  });

  test("vectors - case 7: the ext digest reproduces exactly", () => {
    const c = byCase.get("7")!;
    const p = payloadJson(c)!;
    assert.deepEqual(p.signedextattrs, ["exta", "extb"]);
    assert.equal(extDigest(vectorEvent(c), ["exta", "extb"]), p.ext);
  });

  test("vectors - cases 3 and 4 carry the same material (time normalization)", () => {
    const three = byCase.get("3")!, four = byCase.get("4")!;
    assert.equal(openEnvelope(three.dssematerial).payload.toString(), openEnvelope(four.dssematerial).payload.toString());
    const a = createEvent({ id: "1", source: "s", type: "t", time: "2020-06-18T17:24:53Z" });
    const b = createEvent({ id: "1", source: "s", type: "t", time: "2020-06-18T19:24:53+02:00" });
    assert.deepEqual(coreDigest(a).core, coreDigest(b).core);
  });

  test("vectors - cases 1 and 2: signature verifies but the 32-byte raw payload is discarded as corrupt material", () => {
    for (const id of ["1", "2"]) {
      const c = byCase.get(id)!;
      assert.equal(signatureVerifies(c), true);
      assert.equal(openEnvelope(c.dssematerial).payload.length, 32);
      rejects(() => verifyEvent(vectorEvent(c), vectorRing), ErrorCode.MaterialCorrupt, QuarantineReason.BadSignature);
    }
  });

  test("vectors - cases 6a and 6b: the payload has a stray '=' so the signature check fails", () => {
    for (const id of ["6a", "6b"]) {
      const c = byCase.get(id)!;
      const payload = openEnvelope(c.dssematerial).payload;
      assert.equal(payload.length, 135);
      assert.equal(payload.at(-1), "=".charCodeAt(0));
      // The signature covers the 134 bytes without the stray '='.
      const env = openEnvelope(c.dssematerial);
      assert.equal(verifyBytes(vectorKey, pae(env.payloadType, payload.subarray(0, 134)), env.signatures[0]!.sig), true);
      rejects(() => verifyEvent(vectorEvent(c), vectorRing), ErrorCode.BadSignature, QuarantineReason.BadSignature);
      const ext = JSON.parse(payload.subarray(0, 134).toString()) as { ext: string };
      const inner = createHashOfHash("value1");
      assert.equal(ext.ext, inner);
    }
  });

  test("vectors - JSON-data cases reproduce on our own round trip with the vector key", () => {
    for (const id of ["3", "7"]) {
      const c = byCase.get(id)!;
      const { dssematerial: _m, ...ext } = vectorEvent(c).extensions;
      const unsigned = createEvent({ ...vectorEvent(c), extensions: ext });
      const signed = signEvent(unsigned, vectorKey, { signedExtensions: c.signedextattrs ?? [] });
      const v = verifyEvent(signed, vectorRing);
      assert.deepEqual(v.verification.signedExtensions, c.signedextattrs ?? []);
    }
  });
});

function createHashOfHash(value: string): string {
  const inner = createHash("sha256").update(value).digest();
  return createHash("sha256").update(inner).digest("base64");
}

describe("must_discard cases 8a-8f", () => {
  const base = createEvent({ id: "1", source: "example/uri", type: "example.type", extensions: { exta: "value1" }, data: "{}" });
  const digest = Buffer.alloc(32, 7).toString("base64");
  /** Wraps a crafted VERIFICATION_MATERIAL object in an envelope validly signed by the vector key. */
  function craft(material: Record<string, unknown>): CloudEvent {
    const payload = Buffer.from(JSON.stringify(material));
    const sig = signBytes(vectorKey, pae(DSSE_PAYLOAD_TYPE, payload)).toString("base64");
    const envelope = { payloadType: DSSE_PAYLOAD_TYPE, payload: payload.toString("base64"), signatures: [{ keyid: "testkey", sig }] };
    return createEvent({ ...base, extensions: { ...base.extensions, dssematerial: Buffer.from(JSON.stringify(envelope)).toString("base64") } });
  }
  const cases: [string, Record<string, unknown>][] = [
    ["8a duplicate entries", { core: digest, ext: digest, signedextattrs: ["exta", "exta"] }],
    ["8b a context attribute name", { core: digest, ext: digest, signedextattrs: ["exta", "id"] }],
    ["8c dssematerial", { core: digest, ext: digest, signedextattrs: ["dssematerial"] }],
    ["8d signedextattrs without ext", { core: digest, signedextattrs: ["exta"] }],
    ["8e ext without signedextattrs", { core: digest, ext: digest }],
  ];
  for (const [name, material] of cases) {
    test(`must_discard - ${name}: discarded even though the DSSE signature is valid`, () => {
      rejects(() => verifyEvent(craft(material), vectorRing), ErrorCode.SignedExtAttrsInvalid, QuarantineReason.BadSignature);
    });
    if (Array.isArray(material.signedextattrs) && material.ext) {
      test(`must_discard - ${name}: the signer refuses to produce it`, () => {
        rejects(() => signEvent(base, vectorKey, { signedExtensions: material.signedextattrs as string[] }), ErrorCode.SignRefused);
      });
    }
  }
  test("must_discard - 8f a signed attribute without a canonical form is refused at signing and discarded at verification", () => {
    const typed = { exta: "Boolean" } as const;
    rejects(() => signEvent(base, vectorKey, { extensionTypes: typed }), ErrorCode.SignRefused);
    const signed = signEvent(base, vectorKey);
    rejects(() => verifyEvent(signed, vectorRing, { extensionTypes: typed }), ErrorCode.ExtDigestMismatch);
  });
  test("must_discard - core or ext digests that are not 32 bytes are corrupt material", () => {
    rejects(() => verifyEvent(craft({ core: Buffer.alloc(31).toString("base64") }), vectorRing), ErrorCode.MaterialCorrupt);
    rejects(() => verifyEvent(craft({ core: digest, ext: "AAAA", signedextattrs: ["exta"] }), vectorRing), ErrorCode.MaterialCorrupt);
  });
});

describe("sign and verify with NKey identities", () => {
  const user = createUser();
  const key = signingKeyFromNkeySeed(new TextDecoder().decode(user.getSeed()));
  const ring = createKeyring([verificationKeyFromNkey(user.getPublicKey())]);
  const event = createEvent({
    id: "0192f0c1-0000-7000-8000-000000000001", source: "causeway://planner", type: "research.task.created",
    datacontenttype: "application/json", dataschema: "https://causeway.dev/schemas/research.task.created/1.0.0",
    subject: "task-1", time: "2026-11-21T10:00:00.123Z",
    extensions: { correlationid: "corr-1", causationid: "cause-1", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", expirytime: "2026-11-22T00:00:00Z" },
    data: '{"query":"q","index":0}',
  });
  const signed = signEvent(event, key);

  test("keys - the DSSE keyid is the principal's NKey public key and the Ed25519 key matches nkeys.js", () => {
    assert.equal(key.keyid, user.getPublicKey());
    assert.equal(key.algorithm, "ed25519");
    const msg = Buffer.from("interop");
    assert.equal(user.verify(msg, signBytes(key, msg)), true);
  });

  test("keys - an invalid seed fails with CW_ERR_KEY_INVALID and the message does not echo it", () => {
    // A real seed with one character changed: the CRC no longer matches.
    const good = new TextDecoder().decode(createUser().getSeed());
    const bad = good.slice(0, 10) + (good[10] === "A" ? "B" : "A") + good.slice(11);
    assert.throws(() => signingKeyFromNkeySeed(bad), (err: Error & { code?: string }) => err.code === ErrorCode.KeyInvalid && !err.message.includes(bad));
  });

  test("verify - a signed event verifies with every extension signed by default", () => {
    const v = verifyEvent(signed, ring);
    assert.equal(v.verification.keyid, user.getPublicKey());
    assert.equal(v.verification.extensions, "verified");
    assert.deepEqual([...v.verification.signedExtensions].sort(), ["causationid", "correlationid", "expirytime", "traceparent"]);
    assert.deepEqual(Object.keys(v.event.extensions).sort(), ["causationid", "correlationid", "expirytime", "traceparent"]);
    assert.equal(Object.isFrozen(v.event), true);
  });

  test("verify - flipping any byte of the data is rejected as a core digest mismatch", () => {
    for (let i = 0; i < signed.data.length; i++) {
      const data = Buffer.from(signed.data);
      data[i]! ^= 0x01;
      rejects(() => verifyEvent({ ...signed, data }, ring), ErrorCode.CoreDigestMismatch, QuarantineReason.BadSignature);
    }
  });

  test("verify - changing any core attribute is rejected", () => {
    const changes: Partial<CloudEvent>[] = [
      { id: signed.id + "x" }, { source: "causeway://intruder" }, { type: "research.task.deleted" },
      { datacontenttype: "text/plain" }, { dataschema: "https://causeway.dev/schemas/x/1.0.0" }, { subject: "task-2" },
      { time: "2026-11-21T10:00:01Z" },
    ];
    for (const change of changes) rejects(() => verifyEvent({ ...signed, ...change }, ring), ErrorCode.CoreDigestMismatch);
    const { subject: _s, ...withoutSubject } = signed;
    rejects(() => verifyEvent(withoutSubject as CloudEvent, ring), ErrorCode.CoreDigestMismatch);
  });

  test("verify - sub-second changes to time are not covered (the spec hashes time to the second)", () => {
    assert.doesNotThrow(() => verifyEvent({ ...signed, time: "2026-11-21T10:00:00.999Z" }, ring));
  });

  test("verify - changing, removing or adding a signed extension is rejected as an ext digest mismatch", () => {
    const ext = signed.extensions;
    rejects(() => verifyEvent({ ...signed, extensions: { ...ext, correlationid: "corr-2" } }, ring), ErrorCode.ExtDigestMismatch);
    const { causationid: _c, ...without } = ext;
    rejects(() => verifyEvent({ ...signed, extensions: without }, ring), ErrorCode.ExtDigestMismatch);
    rejects(() => verifyEvent({ ...signed, extensions: { ...ext, expirytime: "2027-01-01T00:00:00Z" } }, ring), ErrorCode.ExtDigestMismatch);
  });

  test("verify - flipping any byte of the material is rejected with a typed reason", () => {
    const material = Buffer.from(signed.extensions.dssematerial as string, "base64");
    const seen = new Set<string>();
    for (let i = 0; i < material.length; i++) {
      const m = Buffer.from(material);
      m[i]! ^= 0x01;
      const tampered = { ...signed, extensions: { ...signed.extensions, dssematerial: m.toString("base64") } };
      assert.throws(() => verifyEvent(tampered, ring), (err: unknown) => {
        assert.ok(err instanceof VerificationError, String(err));
        assert.ok(err.reason === QuarantineReason.BadSignature || err.reason === QuarantineReason.UnknownKey, err.message);
        seen.add(err.code);
        return true;
      });
    }
    // Flips land in the envelope JSON, the payload, the signature and the keyid.
    for (const code of [ErrorCode.MaterialCorrupt, ErrorCode.BadSignature, ErrorCode.UnknownKey]) assert.ok(seen.has(code), `saw ${[...seen]}`);
  });

  test("verify - an unsigned event is rejected as bad_signature", () => {
    rejects(() => verifyEvent(event, ring), ErrorCode.Unsigned, QuarantineReason.BadSignature);
  });

  test("verify - a key outside the acceptable set is unknown_key; a wrong payloadType is refused", () => {
    const stranger = signEvent(event, signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed())));
    rejects(() => verifyEvent(stranger, ring), ErrorCode.UnknownKey, QuarantineReason.UnknownKey);
    const env = JSON.parse(Buffer.from(signed.extensions.dssematerial as string, "base64").toString()) as Record<string, unknown>;
    const other = Buffer.from(JSON.stringify({ ...env, payloadType: "application/vnd.in-toto+json" })).toString("base64");
    rejects(() => verifyEvent({ ...signed, extensions: { ...signed.extensions, dssematerial: other } }, ring), ErrorCode.UnknownPayloadType);
  });

  test("verify - a signature by an acceptable key over another event's material is rejected", () => {
    const second = signEvent(createEvent({ ...event, id: "other" }), key);
    const swapped = { ...signed, extensions: { ...signed.extensions, dssematerial: second.extensions.dssematerial! } };
    rejects(() => verifyEvent(swapped, ring), ErrorCode.CoreDigestMismatch);
  });

  test("modes - strict drops unsigned extensions, passthrough marks them, core-only drops every extension", () => {
    const partly = signEvent(createEvent({ ...event, extensions: { ...event.extensions } }), key, { signedExtensions: ["correlationid"] });
    const withExtra = { ...partly, extensions: { ...partly.extensions, injected: "evil" } };
    const strict = verifyEvent(withExtra, ring);
    assert.deepEqual(Object.keys(strict.event.extensions), ["correlationid"]);
    assert.deepEqual([...strict.verification.unsignedExtensions].sort(), ["causationid", "expirytime", "injected", "traceparent"]);
    assert.equal(strict.unverified, undefined);
    const pass = verifyEvent(withExtra, ring, { mode: "passthrough" });
    assert.deepEqual(Object.keys(pass.event.extensions), ["correlationid"]);
    assert.equal(pass.unverified?.injected, "evil");
    const coreOnly = verifyEvent(withExtra, ring, { mode: "core-only" });
    assert.deepEqual(coreOnly.event.extensions, {});
    assert.equal(coreOnly.verification.extensions, "skipped");
  });

  test("verify - a signed extension absent from the event hashes as empty (absent and empty are the same, per spec)", () => {
    const s = signEvent(event, key, { signedExtensions: ["correlationid", "missing"] });
    assert.equal(verifyEvent(s, ring).verification.extensions, "verified");
    rejects(() => verifyEvent({ ...s, extensions: { ...s.extensions, missing: "now-present" } }, ring), ErrorCode.ExtDigestMismatch);
  });

  test("verify - the data digest returned is SHA-256 of the data bytes", () => {
    assert.equal(verifyEvent(signed, ring).verification.dataDigest, createHash("sha256").update(signed.data).digest("hex"));
  });
});
