// Property-based tests of decode + verify (issue 12): a random mutation of a valid signed event, in binary or
// structured mode — any header, attribute, extension, data byte, signature, envelope field — is refused with a
// typed CausewayError code, or it changed only an unsigned part that strict mode drops. Never an untyped throw,
// never a verified event whose signed values differ from the original's.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { createUser } from "@nats-io/nkeys";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import {
  CausewayError, DSSE_MATERIAL, DSSE_MAX_SIGNATURES, ErrorCode, NatsBinding, createEvent, createKeyring, signEvent, signingKeyFromNkeySeed, verifyEvent, type CloudEvent,
} from "../../services/kit/index.ts";

const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
const ring = createKeyring([key]);
const RUNS = 2_000;

const original = signEvent(createEvent({
  id: "evt-1", source: "https://crm.example/requests", type: "report.requested", time: "2026-01-01T00:00:00.000Z",
  datacontenttype: "application/json", dataschema: "https://causeway.dev/schemas/report.requested/1.0.0", subject: "s1",
  extensions: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", correlationid: "c-1", priority: 3 },
  data: '{"topic":"grid storage","n":1}',
}), key);
const signedExtensions = Object.keys(original.extensions).filter((n) => n !== DSSE_MATERIAL);

/** What strict verification returns: core attributes, data and signed extensions (as strings, as binary mode carries them). */
function signedView(e: CloudEvent): Record<string, string> {
  const view: Record<string, string> = {
    id: e.id, source: e.source, type: e.type, specversion: e.specversion, datacontenttype: e.datacontenttype ?? "",
    dataschema: e.dataschema ?? "", subject: e.subject ?? "", time: e.time === undefined ? "" : new Date(e.time).toISOString().slice(0, 19),
    data: Buffer.from(e.data).toString("base64"),
  };
  for (const n of signedExtensions) view[`ext:${n}`] = e.extensions[n] === undefined ? "" : String(e.extensions[n]);
  return view;
}
const expected = signedView(original);

/** Decode and verify; the outcome is a verified event or a typed error (its code returned); anything else fails the property. */
function check(msg: { headers?: MsgHdrs; data: Uint8Array }): string | undefined {
  let verified;
  try {
    verified = verifyEvent(NatsBinding.toEvent(msg), ring);
  } catch (err) {
    if (err instanceof CausewayError && typeof err.code === "string" && err.code.startsWith("CW_ERR_")) return err.code;
    throw new Error(`untyped throw: ${String(err)}`, { cause: err });
  }
  // Accepted: every signed value is the original's, and nothing unsigned reaches a strict consumer.
  assert.deepEqual(signedView(verified.event), expected);
  assert.deepEqual(Object.keys(verified.event.extensions).sort(), [...signedExtensions].sort());
  return undefined;
}

const bytes = (s: string) => Buffer.from(s, "utf8");
const headerList = (h: MsgHdrs) => [...h].map(([k, v]) => [k, v[0]!] as [string, string]);
const toHeaders = (list: [string, string][]) => {
  const h = natsHeaders();
  for (const [k, v] of list) h.append(k, v);
  return h;
};

/** A mutation of a string: flip, insert, delete or replace characters, or replace it whole. */
const stringMutation = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 6 }) }),
  fc.record({ kind: fc.constant("insert" as const), at: fc.nat(), text: fc.string({ maxLength: 4 }) }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), n: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ kind: fc.constant("replace" as const), text: fc.oneof(fc.string({ maxLength: 40 }), fc.base64String({ maxLength: 120 })) }),
);
type StringMutation = typeof stringMutation extends fc.Arbitrary<infer T> ? T : never;

function mutate(s: string, m: StringMutation): string {
  switch (m.kind) {
    case "flip": {
      if (s.length === 0) return "x";
      const i = m.at % s.length;
      return s.slice(0, i) + String.fromCharCode(s.charCodeAt(i) ^ (1 << m.bit)) + s.slice(i + 1);
    }
    case "insert": {
      const i = m.at % (s.length + 1);
      return s.slice(0, i) + m.text + s.slice(i);
    }
    case "delete": {
      const i = m.at % Math.max(1, s.length);
      return s.slice(0, i) + s.slice(i + m.n);
    }
    case "replace":
      return m.text;
  }
}

/** Mutates the DSSE envelope inside dssematerial: a field of the JSON, a signature, or the signature list. */
const envelopeMutation = fc.record({
  field: fc.constantFrom("payloadType", "payload", "sig", "keyid", "signatures", "extra", "dup"),
  m: stringMutation,
  count: fc.integer({ min: 0, max: 8 }),
});
function mutateEnvelope(material: string, e: { field: string; m: StringMutation; count: number }): string {
  const env = JSON.parse(Buffer.from(material, "base64").toString("utf8")) as Record<string, unknown> & { signatures: Record<string, unknown>[] };
  const sig0 = env.signatures[0]!;
  switch (e.field) {
    case "payloadType": env.payloadType = mutate(String(env.payloadType), e.m); break;
    case "payload": env.payload = mutate(String(env.payload), e.m); break;
    case "sig": sig0.sig = mutate(String(sig0.sig), e.m); break;
    case "keyid": sig0.keyid = mutate(String(sig0.keyid), e.m); break;
    case "signatures": env.signatures = Array.from({ length: e.count }, () => ({ ...sig0, sig: mutate(String(sig0.sig), e.m) })); break;
    case "extra": env[mutate("x", e.m) || "y"] = e.count; break;
    case "dup": env.signatures = [...Array.from({ length: e.count }, () => ({ keyid: sig0.keyid, sig: mutate(String(sig0.sig), e.m) })), sig0]; break;
  }
  return Buffer.from(JSON.stringify(env)).toString("base64");
}

describe("decode + verify under random mutation", () => {
  test("property - binary mode: a mutated header name or value, an added or removed header, a flipped data byte", () => {
    const base = NatsBinding.binary(original);
    const list = headerList(base.headers);
    fc.assert(fc.property(
      fc.oneof(
        fc.record({ op: fc.constant("value" as const), i: fc.nat(), m: stringMutation }),
        fc.record({ op: fc.constant("name" as const), i: fc.nat(), m: stringMutation }),
        fc.record({ op: fc.constant("remove" as const), i: fc.nat() }),
        fc.record({ op: fc.constant("add" as const), name: fc.oneof(fc.constantFrom("ce-id", "ce-time", "ce-priority", "ce-extra", "ce-dssematerial", "content-type"), fc.string({ minLength: 1, maxLength: 12 }).map((s) => `ce-${s}`)), value: fc.string({ maxLength: 30 }) }),
        fc.record({ op: fc.constant("data" as const), i: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      ),
      (mut) => {
        const l = list.map(([k, v]) => [k, v] as [string, string]);
        let data: Uint8Array = base.data;
        switch (mut.op) {
          case "value": { const i = mut.i % l.length; l[i] = [l[i]![0], mutate(l[i]![1], mut.m)]; break; }
          case "name": { const i = mut.i % l.length; const name = mutate(l[i]![0], mut.m); if (!/^[!-9;-~]+$/.test(name)) return; l[i] = [name, l[i]![1]]; break; }
          case "remove": l.splice(mut.i % l.length, 1); break;
          case "add": if (!/^[!-9;-~]+$/.test(mut.name) || /[\r\n]/.test(mut.value)) return; l.push([mut.name, mut.value]); break;
          case "data": { const d = Buffer.from(base.data); if (d.length === 0) return; d[mut.i % d.length]! ^= 1 << mut.bit; data = d; break; }
        }
        let h: MsgHdrs;
        try {
          h = toHeaders(l);
        } catch {
          return; // nats.js refuses the header itself: such a message cannot be sent
        }
        check({ headers: h, data });
      },
    ), { numRuns: RUNS });
  });

  test("property - binary and structured mode: a mutated DSSE envelope (payloadType, payload, sig, keyid, signature list, extra fields, repeated keyids)", () => {
    fc.assert(fc.property(envelopeMutation, fc.boolean(), (e, structured) => {
      const event = { ...original, extensions: { ...original.extensions, [DSSE_MATERIAL]: mutateEnvelope(String(original.extensions[DSSE_MATERIAL]), e) } };
      const code = check(structured ? NatsBinding.structured(event) : NatsBinding.binary(event));
      // More signatures than DSSE_MAX_SIGNATURES: refused as such before any is verified, whatever they hold.
      const signatures = e.field === "signatures" ? e.count : e.field === "dup" ? e.count + 1 : 1;
      if (signatures > DSSE_MAX_SIGNATURES) assert.equal(code, ErrorCode.EnvelopeTooLarge);
    }), { numRuns: RUNS });
  });

  test("property - structured mode: a mutated JSON byte, member value, or an added member", () => {
    const text = Buffer.from(NatsBinding.structured(original).data).toString("utf8");
    const json = JSON.parse(text) as Record<string, unknown>;
    const members = Object.keys(json);
    fc.assert(fc.property(
      fc.oneof(
        fc.record({ op: fc.constant("text" as const), m: stringMutation }),
        fc.record({ op: fc.constant("member" as const), i: fc.nat(), value: fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.boolean(), fc.constant(null), fc.jsonValue({ maxDepth: 2 })) }),
        fc.record({ op: fc.constant("add" as const), name: fc.oneof(fc.constantFrom("extra", "priority", "data_base64", "dssematerial", "time"), fc.string({ maxLength: 10 })), value: fc.jsonValue({ maxDepth: 1 }) }),
        fc.record({ op: fc.constant("remove" as const), i: fc.nat() }),
      ),
      (mut) => {
        let body: string;
        if (mut.op === "text") body = mutate(text, mut.m);
        else {
          const copy: Record<string, unknown> = { ...json };
          if (mut.op === "member") copy[members[mut.i % members.length]!] = mut.value;
          else if (mut.op === "add") copy[mut.name] = mut.value;
          else delete copy[members[mut.i % members.length]!];
          body = JSON.stringify(copy);
        }
        const h = natsHeaders();
        h.set("content-type", "application/cloudevents+json");
        check({ headers: h, data: bytes(body) });
      },
    ), { numRuns: RUNS });
  });

  test("property - an unsigned extension added in either mode is dropped by strict mode, never verified", () => {
    fc.assert(fc.property(fc.stringMatching(/^[a-z0-9]{1,20}$/), fc.string({ minLength: 1, maxLength: 30 }), fc.boolean(), (name, value, structured) => {
      if (name in original.extensions || ["id", "source", "type", "specversion", "datacontenttype", "dataschema", "subject", "time", "data"].includes(name)) return;
      const event = { ...original, extensions: { ...original.extensions, [name]: value } };
      const verified = verifyEvent(NatsBinding.toEvent(structured ? NatsBinding.structured(event) : NatsBinding.binary(event)), ring);
      assert.equal(verified.event.extensions[name], undefined);
      assert.deepEqual(verified.verification.unsignedExtensions, [name]);
      assert.deepEqual(signedView(verified.event), expected);
    }), { numRuns: RUNS });
  });
});
