import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createUser } from "@nats-io/nkeys";
import { headers } from "@nats-io/transport-node";
import {
  DecodeError, ErrorCode, NatsBinding, STRUCTURED_CONTENT_TYPE, createEvent, createKeyring, dataJson, dataText, decodeHeaderValue, decodeJsonBatch, decodeJsonEvent, encodeHeaderValue, encodeJsonEvent, signEvent, signingKeyFromNkeySeed, verifyEvent, type CloudEvent,
} from "../../services/kit/index.ts";

const key = signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
const ring = createKeyring([key]);

function message(pairs: [string, string][], data: Uint8Array | string = ""): { headers: ReturnType<typeof headers>; data: Uint8Array } {
  const h = headers();
  for (const [k, v] of pairs) h.append(k, v);
  return { headers: h, data: typeof data === "string" ? Buffer.from(data) : data };
}

function decodeFails(fn: () => unknown, code: string, attribute?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof DecodeError, `expected DecodeError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (attribute !== undefined) assert.equal(err.attribute, attribute);
    return true;
  });
}

const samples: [string, CloudEvent][] = [
  ["JSON data with whitespace and unicode", createEvent({ id: "e1", source: "causeway://planner", type: "report.requested", datacontenttype: "application/json", time: "2026-11-21T10:00:00.5+01:00", extensions: { correlationid: "c" }, data: '{ "topic" : "Grüße \\u00e9 😀",\n "n": [1, 2.50, -0] }' })],
  ["JSON data with surrounding whitespace (travels as data_base64)", createEvent({ id: "e2", source: "s", type: "t", datacontenttype: "application/json", data: ' {"a":1}\n' })],
  ["text data", createEvent({ id: "e3", source: "s", type: "t", datacontenttype: "text/plain; charset=utf-8", data: 'line 1\nline "2" €' })],
  ["binary data", createEvent({ id: "e4", source: "s", type: "t", datacontenttype: "application/octet-stream", data: new Uint8Array([0, 255, 0xc0, 0xa0, 10]) })],
  ["no data", createEvent({ id: "e5", source: "s", type: "t" })],
  ["+json media type with a scalar", createEvent({ id: "e6", source: "s", type: "t", datacontenttype: "application/vnd.example+json", data: "42" })],
  ["invalid UTF-8 under a JSON media type", createEvent({ id: "e7", source: "s", type: "t", datacontenttype: "application/json", data: new Uint8Array([0x22, 0xff, 0x22]) })],
];

describe("binding round trips keep a valid signature", () => {
  for (const [name, event] of samples) {
    test(`binding - ${name}: binary → structured → binary keeps bytes and signature`, () => {
      const signed = signEvent(event, key);
      const fromBinary = NatsBinding.toEvent(NatsBinding.binary(signed));
      const structured = NatsBinding.structured(fromBinary);
      const fromStructured = NatsBinding.toEvent(structured);
      const again = NatsBinding.toEvent(NatsBinding.binary(fromStructured));
      for (const e of [fromBinary, fromStructured, again]) {
        assert.deepEqual(Buffer.from(e.data), Buffer.from(signed.data));
        assert.equal(verifyEvent(e, ring).verification.keyid, key.keyid);
      }
    });
  }

  test("binding - binary mode puts every attribute in a ce- header and data in the payload", () => {
    const signed = signEvent(samples[0]![1], key);
    const { headers: h, data } = NatsBinding.binary(signed);
    assert.deepEqual(h.keys().sort(), ["ce-correlationid", "ce-datacontenttype", "ce-dssematerial", "ce-id", "ce-source", "ce-specversion", "ce-time", "ce-type"]);
    assert.equal(Buffer.from(data).toString(), Buffer.from(signed.data).toString());
  });

  test("binding - structured mode is marked by Content-Type and is the JSON format", () => {
    const s = NatsBinding.structured(samples[0]![1]);
    assert.equal(s.headers.get("Content-Type"), STRUCTURED_CONTENT_TYPE);
    const parsed = JSON.parse(Buffer.from(s.data).toString()) as Record<string, unknown>;
    assert.equal(parsed.specversion, "1.0");
    assert.equal((parsed.data as { topic: string }).topic, "Grüße é 😀");
  });

  test("binding - isEvent recognises both modes and nothing else", () => {
    assert.equal(NatsBinding.isEvent(NatsBinding.binary(samples[0]![1])), true);
    assert.equal(NatsBinding.isEvent(NatsBinding.structured(samples[0]![1])), true);
    assert.equal(NatsBinding.isEvent(message([["content-type", "application/json"]], "{}")), false);
    assert.equal(NatsBinding.isEvent({ data: new Uint8Array() }), false);
  });
});

describe("headers", () => {
  test("percent - spaces, quotes, percent and non-ASCII are encoded; surrogate pairs are one character", () => {
    assert.equal(encodeHeaderValue("Euro € 😀"), "Euro%20%E2%82%AC%20%F0%9F%98%80");
    assert.equal(encodeHeaderValue('say "hi" 100%'), "say%20%22hi%22%20100%25");
    assert.equal(encodeHeaderValue("tab\there\u007f"), "tab%09here%7F");
    assert.equal(encodeHeaderValue("plain-ascii:/?#[]@!$&'()*+,;=~"), "plain-ascii:/?#[]@!$&'()*+,;=~");
  });

  test("percent - decoding accepts lower-case hex and unnecessary encoding, and round-trips every sample", () => {
    assert.equal(decodeHeaderValue("Euro%20%e2%82%ac", "ce-x"), "Euro €");
    assert.equal(decodeHeaderValue("%41%42C", "ce-x"), "ABC");
    for (const v of ["", " ", "%", "%%25", '"', "a\"b'c", "Grüße", "😀😀", "\u0000\u001f", "100 % sure"]) {
      assert.equal(decodeHeaderValue(encodeHeaderValue(v), "ce-x"), v);
    }
  });

  test("percent - one round only: an encoded percent stays a literal escape", () => {
    assert.equal(decodeHeaderValue("%2541", "ce-x"), "%41");
  });

  test("percent - double-quoted values from older producers are unquoted before decoding", () => {
    assert.equal(decodeHeaderValue('"hello world"', "ce-x"), "hello world");
    assert.equal(decodeHeaderValue('"say \\"hi\\""', "ce-x"), 'say "hi"');
    assert.equal(decodeHeaderValue('"a%20b"', "ce-x"), "a b");
  });

  test("percent - overlong or invalid UTF-8 and malformed escapes are rejected naming the header", () => {
    decodeFails(() => decodeHeaderValue("%C0%A0", "ce-subject"), ErrorCode.DecodeHeader, "ce-subject");
    decodeFails(() => decodeHeaderValue("%FF", "ce-subject"), ErrorCode.DecodeHeader);
    decodeFails(() => decodeHeaderValue("%E2%82", "ce-subject"), ErrorCode.DecodeHeader);
    decodeFails(() => decodeHeaderValue("%G1", "ce-subject"), ErrorCode.DecodeHeader);
    decodeFails(() => decodeHeaderValue("abc%4", "ce-subject"), ErrorCode.DecodeHeader);
    decodeFails(() => decodeHeaderValue('"a"b"', "ce-subject"), ErrorCode.DecodeHeader);
  });

  test("binding - header names are read case-insensitively", () => {
    const e = NatsBinding.toEvent(message([["CE-SPECVERSION", "1.0"], ["Ce-Id", "x"], ["ce-SOURCE", "s"], ["Ce-Type", "t"], ["CE-CorrelationId", "c"]], "{}"));
    assert.equal(e.id, "x");
    assert.equal(e.source, "s");
    assert.equal(e.extensions.correlationid, "c");
  });
});

describe("bad input gets a typed error", () => {
  const ok: [string, string][] = [["ce-specversion", "1.0"], ["ce-id", "1"], ["ce-source", "s"], ["ce-type", "t"]];
  const without = (name: string) => ok.filter(([k]) => k !== name);

  test("decode - each missing required attribute is named", () => {
    for (const name of ["id", "source", "type"]) decodeFails(() => NatsBinding.toEvent(message(without(`ce-${name}`))), ErrorCode.MissingAttribute, name);
    decodeFails(() => NatsBinding.toEvent(message(without("ce-specversion"))), ErrorCode.MissingAttribute, "specversion");
    decodeFails(() => NatsBinding.toEvent({ data: new Uint8Array() }), ErrorCode.MissingAttribute);
  });

  test("decode - invalid attribute values are named", () => {
    decodeFails(() => NatsBinding.toEvent(message([...without("ce-specversion"), ["ce-specversion", "0.3"]])), ErrorCode.UnsupportedSpecVersion, "specversion");
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-time", "yesterday"]])), ErrorCode.InvalidAttribute, "time");
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-time", "2026-02-30T00:00:00Z"]])), ErrorCode.InvalidAttribute, "time");
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-dataschema", "not a uri"]])), ErrorCode.InvalidAttribute, "dataschema");
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-datacontenttype", "json"]])), ErrorCode.InvalidAttribute, "datacontenttype");
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-bad_name", "x"]])), ErrorCode.InvalidAttribute, "bad_name");
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-waytoolongextensionname", "x"]])), ErrorCode.InvalidAttribute);
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-subject", ""]])), ErrorCode.InvalidAttribute, "subject");
  });

  test("decode - a repeated ce- header is ambiguous and rejected", () => {
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["ce-id", "2"]])), ErrorCode.DecodeHeader, "id");
    decodeFails(() => NatsBinding.toEvent(message([...ok, ["CE-ID", "2"]])), ErrorCode.DecodeHeader, "id");
  });

  test("decode - structured payloads that are not JSON, not objects or ambiguous are rejected", () => {
    const structured = (body: string | Uint8Array) => message([["content-type", "application/cloudevents+json; charset=utf-8"]], body);
    decodeFails(() => NatsBinding.toEvent(structured("{not json")), ErrorCode.DecodeJson);
    decodeFails(() => NatsBinding.toEvent(structured("[1]")), ErrorCode.DecodeJson);
    decodeFails(() => NatsBinding.toEvent(structured(new Uint8Array([0x7b, 0xff, 0x7d]))), ErrorCode.DecodeJson);
    const base = '"specversion":"1.0","id":"1","source":"s","type":"t"';
    decodeFails(() => NatsBinding.toEvent(structured(`{${base},"data":{"a":1},"data":{"a":2}}`)), ErrorCode.DecodeJson, "data");
    decodeFails(() => NatsBinding.toEvent(structured(`{${base},"data":1,"data_base64":"AA=="}`)), ErrorCode.InvalidAttribute, "data");
    decodeFails(() => NatsBinding.toEvent(structured(`{${base},"data_base64":"***"}`)), ErrorCode.InvalidAttribute, "data_base64");
    decodeFails(() => NatsBinding.toEvent(structured(`{${base},"ext":{"nested":true}}`)), ErrorCode.InvalidAttribute, "ext");
    decodeFails(() => NatsBinding.toEvent(structured(`{${base},"id":7}`)), ErrorCode.DecodeJson);
    decodeFails(() => NatsBinding.toEvent(structured(`{"specversion":"1.0","id":7,"source":"s","type":"t"}`)), ErrorCode.InvalidAttribute, "id");
  });

  test("decode - data over the limit is refused in both modes", () => {
    const big = new Uint8Array(1024 * 1024 + 1);
    decodeFails(() => NatsBinding.toEvent(message(ok, big)), ErrorCode.PayloadTooLarge, "data");
    decodeFails(() => NatsBinding.toEvent(message(ok, "12345"), { maxDataBytes: 4 }), ErrorCode.PayloadTooLarge);
    const json = encodeJsonEvent(createEvent({ id: "1", source: "s", type: "t", datacontenttype: "text/plain", data: "x".repeat(100) }));
    decodeFails(() => NatsBinding.toEvent(message([["content-type", STRUCTURED_CONTENT_TYPE]], json), { maxDataBytes: 50 }), ErrorCode.PayloadTooLarge);
  });

  test("event - dataText and dataJson read the data bytes as they are", () => {
    const e = createEvent({ id: "1", source: "s", type: "t", data: '{"a": [1, "é"]}' });
    assert.equal(dataText(e), '{"a": [1, "é"]}');
    assert.deepEqual(dataJson(e), { a: [1, "é"] });
    assert.throws(() => dataJson(createEvent({ id: "1", source: "s", type: "t", data: "not json" })), SyntaxError);
  });

  test("json format - null members are absent, the exact data text is kept, and batches decode per element", () => {
    const e = decodeJsonEvent('{"specversion":"1.0","id":"1","source":"s","type":"t","subject":null,"data" : [ 1,2 ] }');
    assert.equal(e.subject, undefined);
    assert.equal(Buffer.from(e.data).toString(), "[ 1,2 ]");
    const batch = decodeJsonBatch('[{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"x": 1}}, {"specversion":"1.0","id":"b","source":"s","type":"t","data":"s"}]');
    assert.deepEqual(batch.map((b) => Buffer.from(b.data).toString()), ['{"x": 1}', '"s"']);
    decodeFails(() => decodeJsonBatch('{"not":"an array"}'), ErrorCode.DecodeJson);
  });
});
