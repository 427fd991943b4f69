// Shadow replay (issue 15, item 7): recorded inputs of a capability, re-run through a candidate version's handler
// in this process, compared with what the version that handled them emitted.
//
// What it reads: the inputs on the capability's subjects of MESH_CAP (the plain one and every lane), selected by
// flow and/or by the time the stream stored them, each verified with the trust store before anything of it is
// parsed (a forged or tampered input is reported as refused and never run), then taken through the runtime's own
// steps — may the signer address the capability, does the candidate accept its type and version, does its data
// validate, what does the candidate's policy say — before the handler runs. What it compares with: the outputs
// the recorded run published (on MESH_CAP, MESH_HANDOFF and MESH_EVT: events of the agent's source whose
// causationid is the input's, verified too) or the input's quarantine copy on MESH_QUARANTINE. A candidate output
// and a recorded one are the same output when their ids are: ids derive from the input and the output's index (or
// its key, services/kit/context.ts), whichever version emits them.
//
// What it never does: publish, write a KV key, claim a lease. The handler gets a context with nothing to act
// through — no connection, no lease — and its emits are captured and built into events by the runtime's own
// function (kit outputInits), never signed or sent. Definitions that act outside the mesh (`critical`,
// `sideEffects`) are refused, as are entries that cannot build their definition without a connection.
import { pathToFileURL } from "node:url";
import type { JsMsg } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import {
  ConfigError, ContextExtension, DSSE_MATERIAL, ErrorCode, NatsBinding, QuarantineHeader, QuarantineReason, Role, StreamName, checkVersion, compileAccepts,
  compileEmits, correlationIdOf, createEvent, createLogger, createSchemaRegistry, dataJson, outputInits, principalSource, refuseServiceProcesses, spendMeter, unknownPressure,
  type AgentDefinition, type CloudEvent, type Emit, type HandlerContext, type HandlerInput, type MeshLayout, type MeshService, type TrustStore,
} from "../kit/index.ts";
import { streamMessages } from "./flow.ts";

/** A candidate's definition, loaded from its version's entry module, and where it came from. */
export interface LoadedVersion {
  readonly definition: AgentDefinition;
  readonly service: MeshService;
}

/**
 * The definition of `version` of the agent serving `capability` (`research.v1`): from the entry of the
 * principal's `versions[version]`, or from its own entry when that runs `version`. The entry module is imported
 * for its exported `definition` factory, with every service process refused in this process first: an entry
 * that would start its agent at import fails instead of consuming live work. CW_ERR_UNKNOWN_CAPABILITY,
 * CW_ERR_UNKNOWN_VERSION, CW_ERR_REPLAY_UNSUPPORTED (critical, side effects, no factory), CW_ERR_VERSION_MISMATCH.
 */
export async function loadVersion(layout: MeshLayout, capability: string, version: string): Promise<LoadedVersion> {
  const cap = Object.hasOwn(layout.principals.capabilities, capability) ? layout.principals.capabilities[capability]! : undefined;
  if (cap === undefined) {
    throw new ConfigError(ErrorCode.UnknownCapability, `no capability "${capability}" in ${layout.sources.principals} (capabilities: ${Object.keys(layout.principals.capabilities).join(", ")})`);
  }
  if (cap.critical) {
    throw new ConfigError(ErrorCode.ReplayUnsupported, `${capability} is critical: its handler acts outside the mesh under a coordinator grant, so replay never runs it`);
  }
  const servers = layout.services.filter((s) => s.role === Role.Agent && layout.principals.principals[s.principal]!.serves.includes(capability));
  if (servers.length === 0) throw new ConfigError(ErrorCode.UnknownVersion, `no agent with an entry serves ${capability} in ${layout.sources.principals}`);
  refuseServiceProcesses("causeway replay loads a version's definition factory");
  const declared = layout.versions.find((v) => servers.some((s) => s.principal === v.principal) && v.version === version);
  const found: string[] = [];
  for (const service of declared ? [declared] : servers) {
    const definition = await buildDefinition(service);
    if (definition.capability !== cap.name || definition.major !== cap.major) {
      throw new ConfigError(ErrorCode.VersionMismatch, `${service.entry} defines ${definition.capability}.v${definition.major}, not ${capability}`);
    }
    if (service.version !== undefined) checkVersion(definition, layout, service.version);
    if (definition.version !== version) {
      found.push(`${service.name} runs ${definition.version} (${service.entry})`);
      continue;
    }
    if (definition.critical || definition.sideEffects) {
      throw new ConfigError(ErrorCode.ReplayUnsupported, `${service.name} ${version} declares ${definition.critical ? "critical" : "sideEffects"}: its handler acts outside the mesh, so replay never runs it`);
    }
    return { definition, service };
  }
  const versions = layout.versions.filter((v) => servers.some((s) => s.principal === v.principal)).map((v) => `${v.name} (${v.entry})`);
  throw new ConfigError(ErrorCode.UnknownVersion, `no version ${version} of ${capability}: ${[...found, ...versions].join("; ")}`);
}

async function buildDefinition(service: MeshService): Promise<AgentDefinition> {
  let module: { definition?: unknown };
  try {
    module = (await import(pathToFileURL(service.entryPath).href)) as { definition?: unknown };
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(ErrorCode.ReplayUnsupported, `${service.entry} could not be loaded: ${(err as Error).message}`, { cause: err });
  }
  if (typeof module.definition !== "function") {
    throw new ConfigError(ErrorCode.ReplayUnsupported, `${service.entry} exports no \`definition\` factory: replay builds a version's definition without a connection (services/kit/agent-process.ts DefinitionFactory); an agent whose definition needs its connection cannot be replayed`);
  }
  return (await (module.definition as () => unknown)()) as AgentDefinition;
}

/** Which recorded inputs to replay. */
export interface ReplaySelection {
  /** Only inputs of these flows (correlation ids). */
  readonly flows?: ReadonlySet<string>;
  /** Only inputs the stream stored at or after this time. */
  readonly since?: Date;
  /** At most this many inputs; the report says when more matched. */
  readonly limit: number;
}

/** What a version did with one input: its outputs, a quarantine (and why), or a failure. */
export type Outcome =
  | { readonly kind: "outputs"; readonly outputs: readonly OutputView[] }
  | { readonly kind: "quarantined"; readonly reason: string; readonly detail: string }
  | { readonly kind: "failed"; readonly error: string }
  /** Nothing on the streams: not handled yet, or its outputs are no longer kept. */
  | { readonly kind: "none" };

/** One output as compared: the attributes a version decides, data parsed. */
export interface OutputView {
  readonly id: string;
  readonly type: string;
  /** Where it was addressed: a capability's subject without the version lane routing may have added. */
  readonly to: string;
  readonly dataschema: string | undefined;
  readonly subject: string | undefined;
  readonly extensions: Readonly<Record<string, string>>;
  readonly data: unknown;
}

/** One difference between the recorded and the candidate's outcome. */
export interface Difference {
  /** `outcome`, or the output (`output <id>`) and the path in it (`data.confidence`). */
  readonly at: string;
  readonly recorded: unknown;
  readonly candidate: unknown;
}

/** One replayed input. */
export interface ReplayedInput {
  readonly input: { readonly id: string; readonly source: string; readonly type: string; readonly flow: string; readonly subject: string; readonly seq: number; readonly storedAt: string };
  /** same / differs; refused: it did not verify and was not run; unrecorded: nothing recorded to compare with. */
  readonly result: "same" | "differs" | "refused" | "unrecorded";
  readonly refused?: { readonly code: string; readonly message: string };
  readonly recorded?: Outcome & { readonly version: string | null };
  readonly candidate?: Outcome;
  readonly differences: readonly Difference[];
}

/** What a replay found. */
export interface ReplayReport {
  readonly capability: string;
  readonly candidate: { readonly version: string; readonly service: string; readonly entry: string };
  readonly inputs: readonly ReplayedInput[];
  readonly summary: { readonly replayed: number; readonly same: number; readonly differs: number; readonly refused: number; readonly unrecorded: number; readonly undecodable: number; readonly truncated: boolean };
}

/** Longest a candidate's handler may take on one input before it counts as failed. */
export const REPLAY_HANDLER_TIMEOUT_MS = 60_000;
/** Differences listed per input; the rest are counted. */
const MAX_DIFFERENCES = 50;
/** Extensions that differ on every run by design (times, trace spans) or that the signer adds: never compared. */
const PER_RUN_EXTENSIONS = new Set<string>([
  ContextExtension.EmittedAt, ContextExtension.StartedAt, ContextExtension.TraceParent, ContextExtension.TraceState, ContextExtension.AgentVersion, DSSE_MATERIAL,
  // Which route tables' revision the flow was routed by: the live runtime's, not the replay's concern.
  ContextExtension.RouteEpoch,
]);

/** Options of {@link replay}. */
export interface ReplayOptions {
  readonly nc: NatsConnection;
  readonly trust: TrustStore;
  readonly layout: MeshLayout;
  readonly capability: string;
  readonly loaded: LoadedVersion;
  readonly selection: ReplaySelection;
  /** Called as inputs are replayed (progress for long runs). */
  readonly onProgress?: (done: number, differs: number) => void;
  /** Aborts the handler runs (Ctrl-C). */
  readonly signal?: AbortSignal;
}

/** Replays the selected inputs of `capability` through the loaded candidate; publishes nothing. */
export async function replay(opts: ReplayOptions): Promise<ReplayReport> {
  const { nc, trust, layout, capability, selection } = opts;
  const def = opts.loaded.definition;
  const cap = layout.principals.capabilities[capability]!;
  const schemas = createSchemaRegistry();
  const accepted = compileAccepts(schemas, def.accepts, `${capability} ${def.version} (replay)`);
  const declared = compileEmits(schemas, def.emits, def.principal, layout.subjects);
  const plain = layout.subjects.capability(cap.name, cap.major);

  // 1. The selected inputs, each once (a copy stored twice is one input), in stream order.
  const selected: { msg: JsMsg; event: CloudEvent; flow: string }[] = [];
  const seen = new Set<string>();
  let undecodable = 0, truncated = false;
  for await (const msg of streamMessages(nc, StreamName.Cap, { subjects: [plain, `${plain}.*`], ...(selection.since && { since: selection.since }) })) {
    let event: CloudEvent;
    try {
      // Headers only (the binding bounds their size and the data's): nothing of the data is parsed before verification.
      event = NatsBinding.toEvent(msg);
    } catch {
      undecodable++;
      continue;
    }
    const flow = correlationIdOf(event);
    if (selection.flows !== undefined && !selection.flows.has(flow)) continue;
    const key = `${event.source}\0${event.id}`;
    if (seen.has(key)) continue;
    if (selected.length === selection.limit) {
      truncated = true;
      break;
    }
    seen.add(key);
    selected.push({ msg, event, flow });
  }

  // 2. What was recorded for them: outputs by causation, quarantine copies by id.
  const recorded = await recordedOutcomes(opts, selected.map((s) => s.event), selected[0] ? new Date(selected[0].msg.info.timestampNanos / 1e6) : undefined);

  // 3. Each input through the candidate, compared.
  const inputs: ReplayedInput[] = [];
  let differing = 0;
  const log = createLogger({ name: `${def.principal}@${def.version}-replay`, destination: process.stderr, pretty: false, level: process.env.LOG_LEVEL ?? "warn" });
  for (const { msg, event, flow } of selected) {
    const input = { id: event.id, source: event.source, type: event.type, flow, subject: msg.subject, seq: msg.seq, storedAt: new Date(msg.info.timestampNanos / 1e6).toISOString() };
    let trusted;
    try {
      trusted = trust.verifyMessage(msg, { event });
    } catch (err) {
      const e = err as { code?: string; message: string };
      inputs.push({ input, result: "refused", refused: { code: e.code ?? ErrorCode.Internal, message: e.message }, differences: [] });
      differing++;
      opts.onProgress?.(inputs.length, differing);
      continue;
    }
    const candidate = await runCandidate(def, trusted, { accepted, declared, trust, layout, log, ...(opts.signal && { signal: opts.signal }) });
    const rec = recorded.get(outcomeKey(trusted.event)) ?? { kind: "none" as const, version: null };
    const differences = compare(rec, candidate);
    const result = rec.kind === "none" ? "unrecorded" : differences.length === 0 ? "same" : "differs";
    if (result !== "same") differing++;
    inputs.push({ input, result, recorded: rec, candidate, differences });
    opts.onProgress?.(inputs.length, differing);
  }
  const count = (r: ReplayedInput["result"]) => inputs.filter((i) => i.result === r).length;
  return {
    capability,
    candidate: { version: def.version, service: opts.loaded.service.name, entry: opts.loaded.service.entry },
    inputs,
    summary: { replayed: inputs.length, same: count("same"), differs: count("differs"), refused: count("refused"), unrecorded: count("unrecorded"), undecodable, truncated },
  };
}

/** Key of an input's recorded outcome: its flow and id (its outputs carry both as correlationid and causationid). */
function outcomeKey(event: CloudEvent): string {
  return `${correlationIdOf(event)}\0${event.id}`;
}

/**
 * What the mesh recorded for `inputs`: the outputs the agent's source published with each as their cause (verified;
 * one that does not verify is not the agent's and is left out), or the input's quarantine copy.
 */
async function recordedOutcomes(opts: ReplayOptions, inputs: readonly CloudEvent[], from: Date | undefined): Promise<Map<string, Outcome & { version: string | null }>> {
  const out = new Map<string, Outcome & { version: string | null }>();
  if (from === undefined) return out;
  const { nc, trust, layout } = opts;
  const def = opts.loaded.definition;
  const wanted = new Set(inputs.map(outcomeKey));
  const byId = new Map(inputs.map((e) => [`${e.source}\0${e.id}`, e]));
  const source = principalSource(def.principal);
  const outputs = new Map<string, { views: Map<string, OutputView>; versions: Set<string> }>();
  for (const stream of [StreamName.Cap, StreamName.Handoff, StreamName.Evt, StreamName.Quarantine]) {
    for await (const msg of streamMessages(nc, stream, { since: from })) {
      let event: CloudEvent;
      try {
        event = NatsBinding.toEvent(msg);
      } catch {
        continue;
      }
      if (stream === StreamName.Quarantine) {
        // A quarantine copy keeps the input's bytes and adds the reason headers.
        const input = byId.get(`${event.source}\0${event.id}`);
        const by = msg.headers?.get(QuarantineHeader.DetectedBy);
        if (input === undefined || by !== def.principal) continue;
        const reason = msg.headers?.get(QuarantineHeader.Reason) ?? "";
        // A max_deliveries quarantine is the handler failing, not the pipeline refusing: the version that ran is unknown.
        out.set(outcomeKey(input), reason === QuarantineReason.MaxDeliveries
          ? { kind: "failed", error: msg.headers?.get(QuarantineHeader.Detail) ?? "", version: null }
          : { kind: "quarantined", reason, detail: msg.headers?.get(QuarantineHeader.Detail) ?? "", version: null });
        continue;
      }
      if (event.source !== source) continue;
      const key = `${String(event.extensions[ContextExtension.CorrelationId] ?? "")}\0${String(event.extensions[ContextExtension.CausationId] ?? "")}`;
      if (!wanted.has(key)) continue;
      let verified: CloudEvent;
      try {
        verified = trust.verifyMessage(msg, { event }).event;
      } catch {
        continue; // not what the agent emitted: never compared with
      }
      const entry = outputs.get(key) ?? { views: new Map(), versions: new Set() };
      outputs.set(key, entry);
      entry.views.set(verified.id, viewOf(verified, addressedSubject(layout, msg.subject)));
      entry.versions.add(String(verified.extensions[ContextExtension.AgentVersion] ?? "?"));
    }
  }
  for (const [key, { views, versions }] of outputs) {
    if (out.has(key)) continue; // quarantined after all (a later delivery): the quarantine is the outcome
    out.set(key, { kind: "outputs", outputs: [...views.values()], version: [...versions].sort().join(", ") });
  }
  return out;
}

/** The subject a handler addressed, from the one it was stored on: a capability lane's routing undone. */
function addressedSubject(layout: MeshLayout, subject: string): string {
  try {
    const parsed = layout.subjects.parse(subject);
    if (parsed.kind === "cap" && parsed.lane !== undefined) return layout.subjects.capability(parsed.capability, parsed.major);
  } catch {
    // not one of the mesh's subjects: compared as stored
  }
  return subject;
}

function viewOf(event: CloudEvent, to: string): OutputView {
  let data: unknown;
  try {
    data = dataJson(event);
  } catch {
    data = Buffer.from(event.data).toString("base64");
  }
  const extensions = Object.fromEntries(Object.entries(event.extensions).filter(([name]) => !PER_RUN_EXTENSIONS.has(name)).map(([n, v]) => [n, String(v)]).sort(([a], [b]) => a!.localeCompare(b!)));
  return { id: event.id, type: event.type, to, dataschema: event.dataschema, subject: event.subject, extensions, data };
}

/** The candidate's outcome for a verified input: the runtime's pipeline steps 2b and 5–6, its handler, its output step. */
async function runCandidate(
  def: AgentDefinition,
  trusted: ReturnType<TrustStore["verifyMessage"]>,
  env: { accepted: ReturnType<typeof compileAccepts>; declared: ReturnType<typeof compileEmits>; trust: TrustStore; layout: MeshLayout; log: ReturnType<typeof createLogger>; signal?: AbortSignal },
): Promise<Outcome> {
  const event = trusted.event;
  if (!env.trust.mayAddress(trusted.entry, def.capability, def.major)) {
    return { kind: "quarantined", reason: QuarantineReason.PolicyDenied, detail: `${trusted.entry.principal} may not address ${def.capability}.v${def.major}` };
  }
  // Expiry is not checked: replaying yesterday's inputs is the point, and their expiry has passed.
  const check = env.accepted.check(event);
  if (!check.ok) return { kind: "quarantined", reason: check.reason, detail: check.detail };
  let data: unknown;
  try {
    data = dataJson(event);
  } catch (err) {
    return { kind: "quarantined", reason: QuarantineReason.DecodeError, detail: `data is not JSON: ${(err as Error).message}` };
  }
  try {
    check.validate(data);
  } catch (err) {
    return { kind: "quarantined", reason: QuarantineReason.SchemaViolation, detail: (err as Error).message };
  }
  const input: HandlerInput = { event, data, verification: trusted.verification, signer: trusted.entry.principal };
  const verdict = def.policy?.(input);
  if (verdict) return { kind: "quarantined", reason: verdict.reason, detail: verdict.detail };
  // A context with nothing to act through: no connection, no lease; `working` has no delivery to extend.
  const timeout = AbortSignal.timeout(REPLAY_HANDLER_TIMEOUT_MS);
  const signal = env.signal ? AbortSignal.any([env.signal, timeout]) : timeout;
  const meter = spendMeter(def);
  const ctx: HandlerContext = { log: env.log.child({ eventId: event.id }), subjects: env.layout.subjects, deliveryCount: 1, signal, working: () => undefined, spend: meter.spend, pressure: unknownPressure };
  const startedAt = new Date().toISOString();
  try {
    const emits = await Promise.race([
      Promise.resolve(def.handler(input, ctx)),
      new Promise<never>((_, reject) => signal.addEventListener("abort", () => reject(new Error(`the handler did not finish within ${REPLAY_HANDLER_TIMEOUT_MS / 1000} s`)), { once: true })),
    ]) as readonly Emit[];
    // The runtime's output step, up to signing: the same ids, context and checks; then the binary binding's round
    // trip, so extensions compare as the recorded ones read off the wire.
    const outputs = outputInits(def, env.declared, event, emits, startedAt, { spent: meter.spent() }).map(({ to, init }) => viewOf(NatsBinding.toEvent(NatsBinding.binary(createEvent(init))), to));
    return { kind: "outputs", outputs };
  } catch (err) {
    return { kind: "failed", error: (err as Error).message };
  }
}

/** The differences between what was recorded and what the candidate did; empty when they are the same. */
export function compare(recorded: Outcome, candidate: Outcome): Difference[] {
  const out: Difference[] = [];
  if (recorded.kind !== candidate.kind) {
    out.push({ at: "outcome", recorded: summary(recorded), candidate: summary(candidate) });
    return out;
  }
  if (recorded.kind === "quarantined" && candidate.kind === "quarantined") {
    if (recorded.reason !== candidate.reason) out.push({ at: "quarantine reason", recorded: recorded.reason, candidate: candidate.reason });
    return out;
  }
  if (recorded.kind !== "outputs" || candidate.kind !== "outputs") return out; // failed / none on both sides
  const mine = new Map(candidate.outputs.map((o) => [o.id, o]));
  for (const r of recorded.outputs) {
    const c = mine.get(r.id);
    if (c === undefined) {
      out.push({ at: `output ${r.id} (${r.type})`, recorded: "emitted", candidate: "(not emitted)" });
      continue;
    }
    mine.delete(r.id);
    const at = `output ${r.id} (${r.type})`;
    for (const field of ["type", "to", "dataschema", "subject"] as const) {
      if (r[field] !== c[field]) out.push({ at: `${at} ${field}`, recorded: r[field] ?? null, candidate: c[field] ?? null });
    }
    diffValues(`${at} extensions`, r.extensions, c.extensions, out);
    diffValues(`${at} data`, r.data, c.data, out);
  }
  for (const c of mine.values()) out.push({ at: `output ${c.id} (${c.type})`, recorded: "(not emitted)", candidate: "emitted" });
  return out.length > MAX_DIFFERENCES ? [...out.slice(0, MAX_DIFFERENCES), { at: "…", recorded: null, candidate: `${out.length - MAX_DIFFERENCES} more differences` }] : out;
}

function summary(o: Outcome): string {
  switch (o.kind) {
    case "outputs": return `${o.outputs.length} output${o.outputs.length === 1 ? "" : "s"}`;
    case "quarantined": return `quarantined (${o.reason})`;
    case "failed": return `failed: ${o.error}`;
    case "none": return "nothing recorded";
  }
}

/** Walks two JSON values, recording each path where they differ (a missing member or item as "(absent)"). */
function diffValues(path: string, a: unknown, b: unknown, out: Difference[]): void {
  if (out.length > MAX_DIFFERENCES) return;
  if (Array.isArray(a) && Array.isArray(b)) {
    for (let i = 0; i < Math.max(a.length, b.length); i++) diffValues(`${path}[${i}]`, i < a.length ? a[i] : ABSENT, i < b.length ? b[i] : ABSENT, out);
    return;
  }
  if (isObject(a) && isObject(b)) {
    for (const k of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()) {
      diffValues(`${path}.${k}`, Object.hasOwn(a, k) ? a[k] : ABSENT, Object.hasOwn(b, k) ? b[k] : ABSENT, out);
    }
    return;
  }
  if (a === b) return;
  out.push({ at: path, recorded: a === ABSENT ? "(absent)" : a, candidate: b === ABSENT ? "(absent)" : b });
}

const ABSENT = Symbol("absent");

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
