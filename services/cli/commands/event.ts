// `causeway event send`: put one signed event on the mesh by hand, as a principal would, and see how it ended. It
// signs with the principal's own seed (so it is for development meshes, whose data directory holds every seed),
// validates the data against the type's schema before anything is sent, publishes through JetStream with that
// principal's own credentials — so the server's permissions apply and a refusal is reported as one, which `nats
// req` does not do — then follows the event as the operator: processed (an event it caused appears), handled
// without outputs (its consumers acked it), quarantined (with the reason), or still pending when the wait ends.
import { readFileSync } from "node:fs";
import { jetstream, jetstreamManager, type JetStreamManager, type StoredMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ConfigError, DEFAULT_NATS_URL, ErrorCode, MsgIdKind, NatsBinding, QuarantineHeader, Role, SchemaError, StreamName, connectAs, createEvent,
  createSchemaRegistry, dataDir, emitsCover, flowIdOf, getPrincipal, loadLayout, loadUpstreamSources, msgId, newTraceparent, newestSchemaOf,
  parseSchemaVersion, parseTraceparent, permissionDenied, principalSource, readAcceptsDeclaration, readSeed, readStream, seedPath, signEvent,
  signingKeyFromNkeySeed, subjectMatches, uuidv7, capabilityDurable, type CloudEvent, type MeshLayout, type MsgIdOwner, type PrincipalSpec,
} from "../../kit/index.ts";
import { shown } from "../table.ts";
import { parseCommand, usageError as sharedUsageError } from "../usage.ts";

const USAGE = `usage: causeway event send --as <principal> --type <type> --data <json|@file> [--to <subject>]
                           [--dataschema <id>] [--server URL] [--wait SECONDS]

Signs an event as <principal> (its seed from <data>/keys: development meshes only), validates its data against
the type's schema, publishes it through JetStream with that principal's own credentials, prints where it went
(stream and sequence), then follows it as the operator until it ends:
  processed      an event it caused appeared (its causationid is the event's id)          exit 0
  handled        its consumers acked it and it caused nothing                             exit 0
  quarantined    a copy is in MESH_QUARANTINE, with the reason and who detected it        exit 1
  still pending  nothing of the above within --wait                                       exit 3

  --as           the principal that signs and publishes (infra/principals.json)
  --type         the CloudEvents type, e.g. report.requested
  --data         the data as JSON, or @file to read it from a file
  --to           the subject (default: the capability the principal addresses that accepts the type, as its
                 agent declared when it started; else the fact subject <prefix>.evt.<type>.v<major>)
  --dataschema   the schema version (default: the newest of the type in schemas/)
  --wait         how long to follow it, in seconds (default 10; 0: print where it went and stop)
  --server URL   NATS server (default: $NATS_URL or ${DEFAULT_NATS_URL})

A publish the server refuses (the principal may not publish there) fails with CW_ERR_PERMISSION_DENIED.
(\`nats req\` hides that refusal: it exits 0 and prints nothing.)`;

/** Exit code of an event still pending when the wait ended. */
const STILL_PENDING = 3;

/** Runs `causeway event <args>`; resolves with the exit code. */
export async function run(args: string[]): Promise<number> {
  const parsed = parseCommand("event", USAGE, args, {
    as: { type: "string" }, type: { type: "string" }, data: { type: "string" }, to: { type: "string" },
    dataschema: { type: "string" }, server: { type: "string" }, wait: { type: "string" },
  });
  if (parsed.exit !== undefined) return parsed.exit;
  const { values, positionals } = parsed;
  const [sub, extra] = positionals;
  if (sub !== "send") return usageError(sub === undefined ? "missing subcommand: event send" : `unknown subcommand "${sub}"`);
  if (extra !== undefined) return usageError(`unexpected argument "${extra}"`);
  for (const required of ["as", "type", "data"] as const) if (values[required] === undefined) return usageError(`--${required} is required`);
  const waitS = values.wait === undefined ? 10 : Number(values.wait);
  if (!Number.isFinite(waitS) || waitS < 0 || waitS > 3600) return usageError(`--wait must be a number of seconds from 0 to 3600, got "${values.wait}"`);
  let data: unknown;
  try {
    data = JSON.parse(values.data!.startsWith("@") ? readFileSync(values.data!.slice(1), "utf8") : values.data!);
  } catch (err) {
    return usageError(`--data must be JSON or @file with JSON: ${(err as Error).message}`);
  }
  return sendEvent({
    as: values.as!, type: values.type!, data, to: values.to, dataschema: values.dataschema,
    server: values.server ?? (process.env.NATS_URL || DEFAULT_NATS_URL), waitMs: waitS * 1000,
  });
}

/** What {@link sendEvent} sends. */
export interface SendOptions {
  readonly as: string;
  readonly type: string;
  readonly data: unknown;
  readonly to?: string | undefined;
  readonly dataschema?: string | undefined;
  readonly server: string;
  readonly waitMs: number;
  /** The data directory. Default: dataDir(). */
  readonly dataDir?: string;
}

/** `event send`: sign, validate, publish, follow; resolves with the exit code. */
export async function sendEvent(opts: SendOptions): Promise<number> {
  const data = opts.dataDir ?? dataDir();
  const layout = loadLayout();
  const spec = getPrincipal(layout.principals, opts.as);
  let seed: Uint8Array;
  try {
    seed = readSeed(spec.name, data);
  } catch (err) {
    if (err instanceof ConfigError && err.code === ErrorCode.SeedMissing) {
      throw new ConfigError(ErrorCode.SeedMissing, `event send signs as ${spec.name} with ${spec.name}'s own seed, and there is none at ${shown(seedPath(spec.name, data))}: it is for development meshes, whose data directory holds every principal's seed (\`causeway up\` creates them, \`causeway keys new ${spec.name}\` one)`, { cause: err });
    }
    throw err;
  }

  const schemas = createSchemaRegistry();
  const dataschema = opts.dataschema ?? newestSchemaOf(schemas.list(), opts.type);
  if (dataschema === undefined || !schemas.has(dataschema)) {
    throw new SchemaError(ErrorCode.UnknownSchema, `${dataschema === undefined ? `no schema for ${opts.type}` : `no schema has $id ${dataschema}`} in schemas/: nothing was sent`);
  }
  try {
    schemas.validate(dataschema, opts.data);
  } catch (err) {
    if (err instanceof SchemaError) throw new SchemaError(err.code, `${err.message}; nothing was sent`, err.violations, { cause: err });
    throw err;
  }
  if (!emitsCover(spec.emits, opts.type)) {
    console.log(`! ${spec.name} may not emit ${opts.type} (infra/principals.json: ${spec.emits.join(", ") || "nothing"}): whoever consumes it will quarantine it as unauthorized_emitter`);
  }

  const operator = await connectAs("operator", { servers: opts.server, dataDir: data, name: "causeway event send" }).catch((err: unknown) => {
    if (err instanceof ConfigError && err.code === ErrorCode.SeedMissing) return undefined; // sent, but not followed
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(ErrorCode.Unavailable, `cannot reach the NATS server ${opts.server} (${(err as Error).message}): \`make up\` starts one, or pass --server`, { cause: err });
  });
  try {
    const jsm = operator === undefined ? undefined : await jetstreamManager(operator);
    const major = parseSchemaVersion(dataschema)?.major ?? 1;
    const to = opts.to ?? await defaultSubject(layout, spec, opts.type, major, jsm);
    try {
      layout.subjects.parse(to);
    } catch (err) {
      throw new ConfigError(ErrorCode.InvalidSubject, `--to ${to}: ${(err as Error).message}`, { cause: err });
    }
    const key = signingKeyFromNkeySeed(seed);
    const event = signEvent(createEvent({
      id: uuidv7(), source: sourceOf(spec), type: opts.type, time: new Date().toISOString(), datacontenttype: "application/json", dataschema,
      data: JSON.stringify(opts.data), extensions: { traceparent: newTraceparent() },
    }), key);
    const cursors = jsm === undefined ? undefined : await streamEnds(jsm);

    const ack = await publishAs({ principal: spec.name, key }, opts.server, data, to, event);
    const trace = parseTraceparent(String(event.extensions.traceparent))?.traceId;
    console.log(`✓ sent ${event.type} ${event.id} as ${spec.name} to ${to} — stream ${ack.stream}, seq ${ack.seq}${ack.duplicate ? " (a duplicate: JetStream kept the first copy)" : ""}`);
    console.log(`  flow ${flowIdOf(event)}, trace ${trace}, dataschema ${dataschema}`);
    if (operator === undefined || jsm === undefined || cursors === undefined) {
      console.log(`= not followed: no operator seed at ${shown(seedPath("operator", data))} to read the streams with`);
      return 0;
    }
    if (opts.waitMs === 0) return 0;
    const outcome = await follow(jsm, { event, subject: to, stream: ack.stream, seq: ack.seq }, cursors, opts.waitMs);
    return report(outcome, event, opts.waitMs);
  } finally {
    await operator?.close();
  }
}

/** Where an event of `type` goes by default, and why (printed when it is not obvious). */
async function defaultSubject(layout: MeshLayout, spec: PrincipalSpec, type: string, major: number, jsm: JetStreamManager | undefined): Promise<string> {
  const fact = layout.subjects.event(type, major);
  const addressed = spec.addresses.map((ref) => layout.principals.capabilities[ref]!);
  const accepting = [];
  if (jsm !== undefined) {
    for (const cap of addressed) {
      const declared = await readAcceptsDeclaration(jsm, StreamName.Cap, capabilityDurable(cap.name, cap.major));
      if (declared !== undefined && Object.hasOwn(declared.accepts, type)) accepting.push(cap);
    }
  }
  const subjectOf = (cap: (typeof addressed)[number]) => (cap.critical ? layout.subjects.handoff(cap.name, cap.major) : layout.subjects.capability(cap.name, cap.major));
  if (accepting.length === 1) return subjectOf(accepting[0]!);
  if (accepting.length > 1) {
    throw new ConfigError(ErrorCode.Usage, `${spec.name} addresses ${accepting.map((c) => c.ref).join(" and ")}, which all accept ${type}: choose one with --to (${accepting.map(subjectOf).join(", ")})`);
  }
  const mayPublishFact = spec.publish.some((p) => subjectMatches(p.startsWith(`${layout.principals.prefix}.`) ? `${layout.prefix}${p.slice(layout.principals.prefix.length)}` : p, fact));
  if (!mayPublishFact && addressed.length === 1) {
    console.log(`= no agent of ${addressed[0]!.ref} has declared what it accepts yet; sending to it, the one capability ${spec.name} addresses`);
    return subjectOf(addressed[0]!);
  }
  return fact;
}

/** The source a principal signs under: `causeway://<principal>`, or an upstream's first declared source. */
function sourceOf(spec: PrincipalSpec): string {
  if (spec.role !== Role.Upstream) return principalSource(spec.name);
  const declared = loadUpstreamSources().get(spec.name)?.[0];
  if (declared === undefined) throw new ConfigError(ErrorCode.UpstreamsInvalid, `upstream ${spec.name} declares no source in infra/upstreams.json`);
  return declared.endsWith("/") ? `${declared}causeway-cli` : declared;
}

/** Publishes as the principal itself; a refusal by the server is CW_ERR_PERMISSION_DENIED naming the subject. */
async function publishAs(owner: MsgIdOwner & { principal: string }, server: string, data: string, subject: string, event: CloudEvent): Promise<{ stream: string; seq: number; duplicate: boolean }> {
  const { principal } = owner;
  const nc: NatsConnection = await connectAs(principal, { servers: server, dataDir: data, name: "causeway event send" });
  try {
    const { headers, data: body } = NatsBinding.binary(event);
    return await jetstream(nc).publish(subject, body, { headers, msgID: msgId(owner, MsgIdKind.Output, "send", event.id), timeout: 10_000 });
  } catch (err) {
    const denied = permissionDenied(err, `${principal}'s publish to ${subject}`);
    if (denied) {
      throw new ConfigError(ErrorCode.PermissionDenied, `${denied.message}: ${principal} may publish only where infra/principals.json lets it (its publish list, the capabilities it addresses; \`causeway infra render\` prints every grant with its reason); nothing was sent`, { cause: err });
    }
    if (/no responders/i.test(String((err as Error).message)) || (err as Error).cause instanceof Error && /no responders/i.test(((err as Error).cause as Error).message)) {
      throw new ConfigError(ErrorCode.Unavailable, `no stream stores ${subject} on ${server} (\`causeway streams apply\`); nothing was sent`, { cause: err });
    }
    throw err;
  } finally {
    await nc.close();
  }
}

/** The streams an event's outcome shows up in: where its outputs go, and quarantine. */
const WATCHED = [StreamName.Cap, StreamName.Handoff, StreamName.Evt, StreamName.Decision, StreamName.Quarantine] as const;

/** The next sequence of each watched stream: only what is stored from now on is read. */
async function streamEnds(jsm: JetStreamManager): Promise<Map<string, number>> {
  const ends = new Map<string, number>();
  for (const s of WATCHED) ends.set(s, (await jsm.streams.info(s)).state.last_seq + 1);
  return ends;
}

/** How a sent event ended. */
type Outcome =
  | { readonly kind: "processed"; readonly outputs: readonly Caused[] }
  | { readonly kind: "handled"; readonly by: readonly string[] }
  | { readonly kind: "quarantined"; readonly reason: string; readonly detail: string; readonly by: string; readonly subject: string; readonly seq: number }
  | { readonly kind: "pending"; readonly consumers: readonly { name: string; acked: boolean; delivered: boolean }[] };

interface Caused {
  readonly type: string;
  readonly subject: string;
  readonly stream: string;
  readonly seq: number;
  readonly from: string;
}

/** Reads what was stored after `cursors` until the event is processed, handled, quarantined, or `waitMs` passed. */
async function follow(jsm: JetStreamManager, sent: { event: CloudEvent; subject: string; stream: string; seq: number }, cursors: Map<string, number>, waitMs: number): Promise<Outcome> {
  const deadline = Date.now() + waitMs;
  const outputs: Caused[] = [];
  let settleUntil: number | undefined;
  for (;;) {
    // The consumers first, then the streams: a consumer acks only after its outputs or quarantine copy are stored.
    const consumers = await consumersOf(jsm, sent);
    for (const stream of WATCHED) {
      for await (const m of readStream(jsm, stream, cursors.get(stream)!)) {
        cursors.set(stream, m.seq + 1);
        const h = (name: string) => m.header?.get(name) ?? "";
        if (stream === StreamName.Quarantine) {
          if (h("ce-id") === sent.event.id && h("ce-source") === sent.event.source) {
            return { kind: "quarantined", reason: h(QuarantineHeader.Reason), detail: h(QuarantineHeader.Detail), by: h(QuarantineHeader.DetectedBy), subject: m.subject, seq: m.seq };
          }
        } else if (h("ce-causationid") === sent.event.id) {
          outputs.push({ type: h("ce-type"), subject: m.subject, stream, seq: m.seq, from: fromOf(m) });
        }
      }
    }
    const acked = consumers.length > 0 && consumers.every((c) => c.acked);
    if (outputs.length > 0) {
      // Every output of one handler run is stored before its input is acked: wait for that, briefly.
      settleUntil ??= Date.now() + 1_000;
      if (acked || Date.now() > settleUntil) return { kind: "processed", outputs };
    } else if (acked) {
      return { kind: "handled", by: consumers.map((c) => c.name) };
    }
    if (Date.now() > deadline) return { kind: "pending", consumers };
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The durables that consume the event's subject (those with a filter: not lineage, which records everything), and whether each has acked it. */
async function consumersOf(jsm: JetStreamManager, sent: { subject: string; stream: string; seq: number }): Promise<{ name: string; acked: boolean; delivered: boolean }[]> {
  const out: { name: string; acked: boolean; delivered: boolean }[] = [];
  for await (const info of jsm.consumers.list(sent.stream)) {
    const filters = info.config.filter_subjects ?? (info.config.filter_subject ? [info.config.filter_subject] : []);
    if (!filters.some((f) => subjectMatches(f, sent.subject))) continue;
    out.push({ name: info.name, acked: info.ack_floor.stream_seq >= sent.seq, delivered: info.delivered.stream_seq >= sent.seq });
  }
  return out;
}

function fromOf(m: StoredMsg): string {
  const source = m.header?.get("ce-source") ?? "";
  return source.startsWith("causeway://") ? source.slice("causeway://".length) : source;
}

function report(outcome: Outcome, event: CloudEvent, waitMs: number): number {
  switch (outcome.kind) {
    case "processed":
      console.log(`✓ processed: ${outcome.outputs.length} event(s) caused by it`);
      for (const o of outcome.outputs) console.log(`    ${o.type} → ${o.subject} (${o.stream} seq ${o.seq}) from ${o.from}`);
      console.log(`  the whole flow: causeway lineage trace ${flowIdOf(event)}`);
      return 0;
    case "handled":
      console.log(`✓ handled by ${outcome.by.join(", ")}: acked, and it caused no event`);
      return 0;
    case "quarantined":
      console.log(`✗ quarantined by ${outcome.by}: ${outcome.reason} — ${outcome.detail}`);
      console.log(`  ${outcome.subject}, MESH_QUARANTINE seq ${outcome.seq}: causeway quarantine show ${outcome.seq}`);
      return 1;
    case "pending": {
      const where = outcome.consumers.length === 0
        ? "no agent consumes its subject (no durable filters it)"
        : outcome.consumers.map((c) => `${c.name} ${c.acked ? "acked it" : c.delivered ? "has it in hand, not acked" : "has not delivered it yet (is its agent running?)"}`).join("; ");
      console.log(`… still pending after ${waitMs / 1000} s: ${where}. Later: causeway lineage why ${event.id}, causeway quarantine ls`);
      return STILL_PENDING;
    }
  }
}

function usageError(problem: string): number {
  return sharedUsageError("event", USAGE, problem);
}
