import assert from "node:assert/strict";
import { test } from "node:test";
import {
  ContextExtension, PRIORITIES, budgetOf, childTraceparent, correlationIdOf, createEvent, flowIdOf, deriveEventId, expiryIn, isExpired, newTraceparent, outputEventInit,
  parseTraceparent, principalSource, priorityOf, spentOf, uuidv7,
} from "../../services/kit/index.ts";
import { readFileSync } from "node:fs";

const input = createEvent({
  id: "in-1", source: "https://crm.example/upstream", type: "report.requested", time: "2026-11-21T10:00:00Z",
  extensions: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "vendor=1", expirytime: "2030-01-01T00:00:00Z" },
  data: "{}",
});

test("ids - derived output ids are deterministic per (input source, input id, principal, index) and distinct otherwise", () => {
  const a = deriveEventId(input, "planner", 0);
  assert.equal(a, deriveEventId(input, "planner", 0));
  const others = [deriveEventId(input, "planner", 1), deriveEventId(input, "researcher", 0), deriveEventId({ ...input, id: "in-2" }, "planner", 0), deriveEventId({ ...input, source: "other" }, "planner", 0)];
  assert.equal(new Set([a, ...others]).size, 5);
  assert.match(a, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.throws(() => deriveEventId(input, "planner", -1), RangeError);
});

test("ids - uuidv7 is version 7, unique and ordered by time", () => {
  const first = uuidv7(1_700_000_000_000), second = uuidv7(1_700_000_000_001);
  assert.match(first, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.ok(first < second);
  assert.equal(new Set(Array.from({ length: 1000 }, () => uuidv7())).size, 1000);
});

test("trace - traceparent parsing rejects malformed, all-zero and version ff values", () => {
  assert.equal(parseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")?.traceId, "0af7651916cd43dd8448eb211c80319c");
  for (const bad of ["", "00-xyz", "00-00000000000000000000000000000000-b7ad6b7169203331-01", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 42]) {
    assert.equal(parseTraceparent(bad), undefined, String(bad));
  }
  assert.ok(parseTraceparent(newTraceparent()));
});

test("trace - a child continues the trace with a new span; no parent starts a new trace", () => {
  const parent = input.extensions.traceparent as string;
  const child = parseTraceparent(childTraceparent(parent))!;
  assert.equal(child.traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.notEqual(child.spanId, "b7ad6b7169203331");
  assert.notEqual(parseTraceparent(childTraceparent(undefined))!.traceId, child.traceId);
});

test("context - outputs carry causation = input id, the flow's correlation, continued trace and inherited expiry", () => {
  const out = outputEventInit(input, "planner", 2, { type: "research.task.created", data: { q: 1 }, dataschema: "https://causeway.dev/schemas/research.task.created/1.0.0" }, new Date("2026-11-21T10:00:01Z"));
  assert.equal(out.id, deriveEventId(input, "planner", 2));
  assert.equal(out.source, "causeway://planner");
  assert.equal(out.extensions!.causationid, "in-1");
  assert.equal(out.extensions!.correlationid, flowIdOf(input), "a root event starts the flow: its flow id (source, id) is the correlation id");
  assert.equal(parseTraceparent(out.extensions!.traceparent)!.traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.equal(out.extensions!.tracestate, "vendor=1");
  assert.equal(out.extensions!.expirytime, "2030-01-01T00:00:00Z");
  assert.equal(out.extensions!.emittedat, "2026-11-21T10:00:01.000Z", "the millisecond emit time travels as a signed extension");
  assert.equal(out.extensions!.startedat, undefined, "no handling start unless the runtime gives one");
  const timed = outputEventInit(input, "planner", 0, { type: "research.task.created", startedAt: "2026-11-21T10:00:00.250Z" });
  assert.equal(timed.extensions!.startedat, "2026-11-21T10:00:00.250Z");
  const next = createEvent(outputEventInit(createEvent(out), "researcher", 0, { type: "research.finding.created" }));
  assert.equal(correlationIdOf(next), flowIdOf(input));
  assert.equal(next.extensions.causationid, out.id);
});

test("context - priority and budget are inherited as the input has them; a handler can neither set them nor say what it spent", () => {
  const flowControl = { priority: "background", budgetcost: "90", budgettokens: "5000", budgetsteps: "7" };
  const budgeted = createEvent({ ...input, extensions: { ...input.extensions, ...flowControl } });
  // A handler trying to move its flow to critical, raise its budget and claim it spent nothing.
  const forged = { priority: "critical", budgetcost: "1000000", budgetsteps: "1000", spentcost: "0", spenttokens: "0" };
  const out = createEvent(outputEventInit(budgeted, "planner", 0, { type: "research.task.created", extensions: forged }));
  assert.equal(priorityOf(out), "background");
  assert.deepEqual(budgetOf(out), { cost: 90, tokens: 5000, steps: 7 });
  assert.equal(out.extensions[ContextExtension.SpentCost], undefined, "a run that reported nothing says nothing");
  const spent = createEvent(outputEventInit(budgeted, "planner", 0, { type: "research.task.created", extensions: forged, spent: { cost: 12, tokens: 340 } }));
  assert.deepEqual(spentOf(spent), { cost: 12, tokens: 340 }, "only the runtime's figures");
  // Without flow control on the input, a handler cannot add any.
  const plain = createEvent(outputEventInit(input, "planner", 0, { type: "research.task.created", extensions: forged }));
  assert.equal(plain.extensions[ContextExtension.Priority], undefined);
  assert.deepEqual(budgetOf(plain), {});
  // Malformed values are refused, never read as another number or priority.
  for (const bad of ["-1", "1.5", "07", "lots"]) assert.equal(budgetOf(createEvent({ id: "b", source: "s", type: "t", extensions: { budgetsteps: bad } })), undefined, bad);
  assert.equal(priorityOf(createEvent({ id: "p", source: "s", type: "t", extensions: { priority: "urgent" } })), undefined);
  assert.equal(priorityOf(createEvent({ id: "p", source: "s", type: "t" })), "normal", "absent is normal");
});

test("context - the priorities upstreams.json allows are the kit's", () => {
  const schema = JSON.parse(readFileSync(new URL("../../infra/upstreams.schema.json", import.meta.url), "utf8")) as { $defs: { priority: { enum: string[] } } };
  assert.deepEqual(schema.$defs.priority.enum, [...PRIORITIES]);
});

test("expiry - events expire at their expirytime; malformed expiry counts as expired; none never expires", () => {
  const now = Date.parse("2026-11-21T10:00:00Z");
  assert.equal(isExpired(createEvent({ id: "1", source: "s", type: "t", extensions: { expirytime: expiryIn(1000, now) } }), now), false);
  assert.equal(isExpired(createEvent({ id: "1", source: "s", type: "t", extensions: { expirytime: expiryIn(-1, now) } }), now), true);
  assert.equal(isExpired(createEvent({ id: "1", source: "s", type: "t", extensions: { expirytime: "soon" } }), now), true);
  assert.equal(isExpired(createEvent({ id: "1", source: "s", type: "t" }), now), false);
});

test("context - principal sources reject tokens outside [a-z0-9_-]", () => {
  assert.equal(principalSource("reporter"), "causeway://reporter");
  assert.throws(() => principalSource("Reporter"), /principal/);
});

test("context - a flow id is unique per (source, id): the id, then a tag over both, at most 200 characters; it is the correlation id of an event that starts a flow", () => {
  const a = flowIdOf({ source: "https://a.example/requests", id: "req-1" });
  assert.match(a, /^req-1\.[A-Za-z0-9_-]{16}$/);
  assert.equal(flowIdOf({ source: "https://a.example/requests", id: "req-1" }), a, "stable");
  assert.notEqual(flowIdOf({ source: "https://b.example/requests", id: "req-1" }), a, "another source, another flow");
  const long = flowIdOf({ source: "s", id: "x".repeat(1000) });
  assert.equal(long.length, 200);
  assert.notEqual(flowIdOf({ source: "s", id: `${"x".repeat(999)}y` }), long, "ids that share the kept prefix still differ");
  assert.equal(correlationIdOf({ source: "https://a.example/requests", id: "req-1", extensions: {} }), a);
});
