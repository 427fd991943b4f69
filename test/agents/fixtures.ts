// What the agent tests share: a handler context without I/O, handler inputs built from real CloudEvents, a
// stand-in for the runtime's output step (derived ids, context carried, binary binding round trip so extensions
// arrive as strings as they do off the wire), a scripted model, and the checks every output must pass.
import { Writable } from "node:stream";
import type { Model, ModelRequest } from "../../services/agents/model.ts";
import {
  NatsBinding, compileEmits, createEvent, createLogger, createSchemaRegistry, deriveEventId, outputEventInit, principalSource, subjectsFor, unknownPressure, type AgentDefinition, type CloudEvent, type Emit, type EventInit, type HandlerContext, type HandlerInput,
} from "../../services/kit/index.ts";

export const schemas = createSchemaRegistry();
export const subjects = subjectsFor("mesh");

/** A handler context whose log lines are captured as parsed JSON objects. */
export function fakeContext(): { ctx: HandlerContext; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line.trim() !== "") lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const log = createLogger({ name: "test", level: "debug", pretty: false, destination }, {});
  const ctx: HandlerContext = { log, subjects, deliveryCount: 1, signal: new AbortController().signal, working: () => undefined, spend: () => undefined, pressure: unknownPressure };
  return { ctx, lines };
}

/** The report.requested an upstream sends. */
export function requestEvent(data: Record<string, unknown>, overrides: Partial<EventInit> = {}): CloudEvent {
  return createEvent({
    id: "req-0001",
    source: "causeway://gateway",
    type: "report.requested",
    time: "2026-03-01T10:00:00.000Z",
    dataschema: "https://causeway.dev/schemas/report.requested/1.0.0",
    datacontenttype: "application/json",
    extensions: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
    data,
    ...overrides,
  });
}

/** A handler input for `event`, its data parsed the way the runtime does. */
export function inputOf<T>(event: CloudEvent, signer = "test-signer"): HandlerInput<T> {
  return {
    event,
    data: JSON.parse(Buffer.from(event.data).toString("utf8")) as T,
    verification: {
      keyid: "UTESTKEY", algorithm: "ed25519", extensions: "verified", signedExtensions: Object.keys(event.extensions),
      unsignedExtensions: [], dataDigest: "", coreDigest: "",
    },
    signer,
  };
}

/**
 * The events the runtime would publish for `emits` caused by `cause`, as a consumer decodes them: every type
 * declared, every data valid against its dataschema, ids derived (or keyed), then a binary binding round trip.
 */
export function outputs(def: AgentDefinition<never>, cause: CloudEvent, emits: readonly Emit[]): CloudEvent[] {
  // The runtime's own choice of each output's declared dataschema (it throws for an undeclared type).
  const declared = compileEmits(schemas, def.emits, def.principal, subjects);
  return emits.map((emit, index) => {
    const { dataschema } = declared.choose(emit);
    schemas.validate(dataschema, emit.data);
    const init = outputEventInit(cause, def.principal, index, {
      type: emit.type, data: emit.data, dataschema,
      ...(emit.subject !== undefined && { subject: emit.subject }),
      ...(emit.extensions !== undefined && { extensions: emit.extensions }),
    });
    if (emit.key !== undefined) init.id = deriveEventId({ source: principalSource(def.principal), id: emit.key }, def.principal, 0);
    return NatsBinding.toEvent(NatsBinding.binary(createEvent(init)));
  });
}

/** Runs one input through `def` as the pipeline would: policy first (a verdict stops it), then the handler. */
export async function run<T>(def: AgentDefinition<T>, event: CloudEvent, ctx = fakeContext().ctx) {
  const input = inputOf<T>(event);
  const verdict = def.policy?.(input);
  if (verdict) return { verdict, emits: [] as readonly Emit[], events: [] as CloudEvent[] };
  const emits = await def.handler(input, ctx);
  return { verdict: undefined, emits, events: outputs(def, event, emits) };
}

/** The data of an event. */
export function dataOf<T>(event: CloudEvent): T {
  return JSON.parse(Buffer.from(event.data).toString("utf8")) as T;
}

/** A model that answers from a script (a string, or an error to throw) and records each request. */
export function scriptedModel(...answers: (string | Error)[]): Model & { requests: ModelRequest[] } {
  const requests: ModelRequest[] = [];
  return {
    name: "scripted",
    requests,
    complete(req: ModelRequest) {
      requests.push(req);
      const next = answers.shift();
      if (next === undefined) return Promise.reject(new Error("the scripted model has no answer left"));
      return next instanceof Error ? Promise.reject(next) : Promise.resolve(next);
    },
  };
}
