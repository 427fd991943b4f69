// Exports of a flow (correlation id), an index range or an event-time range, in four forms:
//
// JSONL, checkable offline. Line 1 is the header: {"checkpoint": <signed note>, "publicKey": <lineage's NKey
// public key or null>, "format": "causeway-lineage-export/1", "origin", "size", "root", "records", "omitted"}.
// Every other line is one record: {"index", "leafHash", "record": <canonical bytes as a JSON string>,
// "proof": [base64 audit path]} against that checkpoint.
//
// CSV, checkable offline. Comment lines first (the note has line breaks, so it travels in base64):
//   # causeway-lineage-export/1 csv
//   # publicKey: <NKey public key or ->
//   # checkpoint: <base64 of the signed note>
//   # records: <n>
// then the header row `index,stream,seq,source,id,type,time,principal,keyid,verified,leaf_hash,record,proof`
// and one row per record: the display columns, the leaf hash (base64), the canonical record bytes (base64),
// and the audit path (base64 nodes separated by spaces). Cells are RFC 4180 quoted when needed; line breaks in
// display columns are written as `\n` so every record is one line. The record column is authoritative: the
// checker re-hashes it and checks every display column against it.
//
// Records recorded after the checkpoint cannot be proved against it: they are left out and counted in
// `omitted`. `checkExport` verifies the signed checkpoint once, then every line (re-hash, index, path),
// and reports the first failing line by number. The public key in an export is for information only: the
// auditor passes the key they trust.
//
// W3C PROV-JSON (entities = events, activities = the handling step that produced each event and each
// quarantine, agents = principals) and OpenLineage run events (one run per step) describe the same records
// for lineage tools; they carry no proofs.
import { hash } from "node:crypto";
import type { Checkpoint } from "./checkpoint.ts";
import { auditPaths, ProofRejection, signedCheckpoint, verifyInclusionAgainst, type LineagePublicKey, type ProofRejectionValue } from "./proofs.ts";
import { groupEvents, stepsOf, summarize, type EventStep } from "./queries.ts";
import { decodeRecord } from "./record.ts";
import { MAX_LIST_LIMIT, type LineageStore, type StoredCheckpoint, type StoredRecord } from "./store.ts";
import { CausewayError, ErrorCode, SubjectKind, parseSubject, type ParsedSubject } from "../kit/index.ts";

/** What to export: a flow, leaf indices [fromIndex, toIndex), or events whose `time` is in [fromMs, toMs). */
export type ExportSelection =
  | { readonly correlationId: string }
  | { readonly fromIndex: number; readonly toIndex: number }
  | { readonly fromMs: number; readonly toMs: number };

/** Options of the checkable exports. */
export interface ProvableExportOptions {
  /** Lineage's NKey public key, written in the header for information. Default: none. */
  readonly publicKey?: string;
}

/** The format tag of JSONL and CSV exports. */
export const EXPORT_FORMAT = "causeway-lineage-export/1";

/** The CSV header row. */
export const CSV_COLUMNS = ["index", "stream", "seq", "source", "id", "type", "time", "principal", "keyid", "verified", "leaf_hash", "record", "proof"] as const;

/** Why {@link checkExport} rejected a line: a proof rejection, or one of these. */
export const ExportRejection = {
  ...ProofRejection,
  /** A CSV display column disagrees with the record it shows. */
  ColumnMismatch: "column_mismatch",
  /** Fewer or more record lines than the header says, or indices not strictly increasing (a line removed, repeated or moved). */
  Count: "count_mismatch",
} as const;
export type ExportRejectionValue = ProofRejectionValue | "column_mismatch" | "count_mismatch";

/** The outcome of {@link checkExport}. */
export type ExportCheck =
  | { readonly ok: true; readonly format: "jsonl" | "csv"; readonly records: number; readonly checkpoint: Checkpoint }
  | {
    readonly ok: false;
    readonly format: "jsonl" | "csv" | null;
    /** Record lines that passed before the failure. */
    readonly records: number;
    /** 1-based line number of the first failure. */
    readonly line: number;
    readonly reason: ExportRejectionValue;
    readonly message: string;
  };

/** The selected records, in index order. Throws CW_ERR_LINEAGE_NOT_FOUND for an unknown flow. */
export async function selectRecords(store: LineageStore, selection: ExportSelection): Promise<StoredRecord[]> {
  if ("correlationId" in selection) {
    const records = await store.byCorrelation(selection.correlationId);
    if (records.length === 0) throw new CausewayError(ErrorCode.LineageNotFound, `no recorded flow has the correlation id "${selection.correlationId}"`);
    return records;
  }
  if ("fromIndex" in selection) return store.range(selection.fromIndex, selection.toIndex);
  const out: StoredRecord[] = [];
  for (let afterIndex: number | undefined; ;) {
    const page = await store.list({ fromMs: selection.fromMs, toMs: selection.toMs, limit: MAX_LIST_LIMIT, ...(afterIndex !== undefined && { afterIndex }) });
    out.push(...page);
    if (page.length < MAX_LIST_LIMIT) return out;
    afterIndex = page[page.length - 1]!.columns.index;
  }
}

/** A JSONL export of `selection` with inclusion proofs against `checkpoint` (see the top of this file). */
export async function exportJsonl(store: LineageStore, selection: ExportSelection, checkpoint: StoredCheckpoint, opts: ProvableExportOptions = {}): Promise<string> {
  const { lines, omitted } = await provedRecords(store, selection, checkpoint);
  const header = {
    checkpoint: checkpoint.note, publicKey: opts.publicKey ?? null, format: EXPORT_FORMAT, origin: checkpoint.note.split("\n", 1)[0],
    size: checkpoint.size, root: checkpoint.root, records: lines.length, omitted,
  };
  const body = lines.map((l) => JSON.stringify({ index: l.index, leafHash: l.leafHash, record: l.bytes.toString("utf8"), proof: l.proof }));
  return [JSON.stringify(header), ...body].join("\n") + "\n";
}

/** A CSV export of `selection` with inclusion proofs against `checkpoint` (see the top of this file). */
export async function exportCsv(store: LineageStore, selection: ExportSelection, checkpoint: StoredCheckpoint, opts: ProvableExportOptions = {}): Promise<string> {
  const { lines } = await provedRecords(store, selection, checkpoint);
  const out = [
    `# ${EXPORT_FORMAT} csv`,
    `# publicKey: ${opts.publicKey ?? "-"}`,
    `# checkpoint: ${Buffer.from(checkpoint.note, "utf8").toString("base64")}`,
    `# records: ${lines.length}`,
    CSV_COLUMNS.join(","),
  ];
  for (const l of lines) out.push([...displayColumns(l.stored, l.bytes), l.leafHash, l.bytes.toString("base64"), l.proof.join(" ")].map(csvCell).join(","));
  return out.join("\n") + "\n";
}

/**
 * Checks a JSONL or CSV export offline against lineage's public key: the checkpoint's signature once, then
 * every record line (re-hashed, index, audit path; for CSV every display column too), the count and order.
 * Never throws.
 */
export function checkExport(text: string, publicKey: LineagePublicKey): ExportCheck {
  const lines = text.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const first = lines[0] ?? "";
  if (first.startsWith("{")) return checkLines("jsonl", lines, publicKey);
  if (first.startsWith("#")) return checkLines("csv", lines, publicKey);
  return failed(null, 0, 1, ExportRejection.Malformed, "not a lineage export: the first line is neither a JSON header nor a # comment");
}

/** A W3C PROV-JSON document (https://www.w3.org/submissions/prov-json/). */
export interface ProvDocument {
  readonly prefix: Readonly<Record<string, string>>;
  readonly entity: Readonly<Record<string, ProvAttributes>>;
  readonly activity: Readonly<Record<string, ProvAttributes>>;
  readonly agent: Readonly<Record<string, ProvAttributes>>;
  readonly used: Readonly<Record<string, ProvAttributes>>;
  readonly wasGeneratedBy: Readonly<Record<string, ProvAttributes>>;
  readonly wasDerivedFrom: Readonly<Record<string, ProvAttributes>>;
  readonly wasAssociatedWith: Readonly<Record<string, ProvAttributes>>;
}
export type ProvAttributes = Readonly<Record<string, string | number | boolean | readonly string[]>>;

/** Namespaces of the PROV-JSON export. */
export const PROV_PREFIXES = {
  prov: "http://www.w3.org/ns/prov#",
  xsd: "http://www.w3.org/2001/XMLSchema#",
  cw: "https://causeway.dev/ns/lineage#",
  event: "urn:causeway:event:",
  step: "urn:causeway:step:",
  principal: "causeway://",
} as const;

/**
 * `selection` as W3C PROV-JSON: each event an entity (`event:<id>`), the handling step that produced it an
 * activity (`step:<id>`, start = signed startedat, end = signed emittedat), each principal an agent
 * (`principal:<name>`); `wasGeneratedBy` (event ← its step), `used` (step → its input event),
 * `wasDerivedFrom` (event ← its input), `wasAssociatedWith` (step → the verified principal). A quarantine
 * is an activity of the detecting principal that used the event. Inputs outside the selection are entities
 * with `cw:inExport` false.
 */
export async function exportProv(store: LineageStore, selection: ExportSelection): Promise<ProvDocument> {
  const steps = stepsOf(groupEvents(await selectRecords(store, selection)));
  const names = entityNames(steps);
  const entity: Record<string, ProvAttributes> = {}, activity: Record<string, ProvAttributes> = {}, agent: Record<string, ProvAttributes> = {};
  const used: Record<string, ProvAttributes> = {}, wasGeneratedBy: Record<string, ProvAttributes> = {};
  const wasDerivedFrom: Record<string, ProvAttributes> = {}, wasAssociatedWith: Record<string, ProvAttributes> = {};
  let n = 0;
  const relation = (into: Record<string, ProvAttributes>, attrs: ProvAttributes): void => {
    into[`_:r${++n}`] = attrs;
  };
  const agentOf = (principal: string, keyid: string | null): string => {
    const id = `principal:${qname(principal)}`;
    agent[id] ??= { "prov:type": "prov:SoftwareAgent", "cw:principal": principal, ...(keyid !== null && { "cw:keyid": keyid }) };
    return id;
  };
  for (const s of steps) {
    const e = names.get(s)!;
    entity[e] = {
      "prov:type": "cw:Event", "cw:id": s.id, "cw:source": s.source, ...(s.type !== null && { "cw:type": s.type }),
      ...(s.time !== null && { "cw:time": s.time }), "cw:verified": s.verification.result === "verified",
      ...(s.keyid !== null && { "cw:keyid": s.keyid }), "cw:leafIndex": s.appearances[0]!.index,
      "cw:streams": s.appearances.map((a) => a.stream),
    };
    const act = `step:${qname(s.id)}`;
    activity[act] = {
      "prov:type": "cw:Step",
      ...(s.startedAt !== null && { "prov:startTime": s.startedAt }),
      ...((s.emittedAt ?? s.time) !== null && { "prov:endTime": (s.emittedAt ?? s.time)! }),
    };
    relation(wasGeneratedBy, { "prov:entity": e, "prov:activity": act, ...(s.emittedAt !== null && { "prov:time": s.emittedAt }) });
    if (s.principal !== null) relation(wasAssociatedWith, { "prov:activity": act, "prov:agent": agentOf(s.principal, s.keyid) });
    for (const input of s.inputs) {
      const parent = steps.find((p) => p.id === input);
      const inputName = parent ? names.get(parent)! : `event:${qname(input)}`;
      if (!parent) entity[inputName] ??= { "prov:type": "cw:Event", "cw:id": input, "cw:inExport": false };
      relation(used, { "prov:activity": act, "prov:entity": inputName, ...(s.startedAt !== null && { "prov:time": s.startedAt }) });
      relation(wasDerivedFrom, { "prov:generatedEntity": e, "prov:usedEntity": inputName, "prov:activity": act });
    }
    for (const a of s.appearances) {
      if (!a.quarantine) continue;
      const q = `step:quarantine-${a.index}`;
      activity[q] = {
        "prov:type": "cw:Quarantine", ...(a.quarantine.detectedAt !== null && { "prov:endTime": a.quarantine.detectedAt }),
        ...(a.quarantine.reason !== null && { "cw:reason": a.quarantine.reason }), ...(a.quarantine.detail !== null && { "cw:detail": a.quarantine.detail }),
      };
      relation(used, { "prov:activity": q, "prov:entity": e });
      if (a.quarantine.detectedBy !== null) relation(wasAssociatedWith, { "prov:activity": q, "prov:agent": agentOf(a.quarantine.detectedBy, null) });
    }
  }
  return { prefix: PROV_PREFIXES, entity, activity, agent, used, wasGeneratedBy, wasDerivedFrom, wasAssociatedWith };
}

/** One OpenLineage RunEvent (https://openlineage.io/spec/2-0-2/OpenLineage.json). */
export interface OpenLineageRunEvent {
  readonly eventType: "START" | "COMPLETE" | "FAIL";
  readonly eventTime: string;
  readonly run: { readonly runId: string; readonly facets?: Readonly<Record<string, unknown>> };
  readonly job: { readonly namespace: string; readonly name: string };
  readonly inputs: readonly { readonly namespace: string; readonly name: string }[];
  readonly outputs: readonly { readonly namespace: string; readonly name: string }[];
  readonly producer: string;
  readonly schemaURL: string;
}

/** Options of {@link exportOpenLineage}. */
export interface OpenLineageOptions {
  /** The `producer` URI. Default {@link OPENLINEAGE_PRODUCER}. */
  readonly producer?: string;
}

export const OPENLINEAGE_NAMESPACE = "causeway";
export const OPENLINEAGE_PRODUCER = "https://causeway.dev/lineage";
export const OPENLINEAGE_SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";
const ERROR_FACET_SCHEMA_URL = "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet";

/**
 * `selection` as OpenLineage run events, by time. One run per step (runId = the event id when it is a UUID,
 * else a UUID derived from source and id); job `<principal>/<capability>` in namespace `causeway` (the
 * capability from the subject its input was addressed on, else the event type); inputs and outputs are
 * datasets named by event type. A verified step gives START at its signed `startedat` (when it has one) and
 * COMPLETE at its signed `emittedat` (else its `time`); a step that failed verification gives FAIL at its
 * `time` under `unverified/…`; a quarantine gives a FAIL run of the detecting principal at its detection time,
 * with an errorMessage facet.
 */
export async function exportOpenLineage(store: LineageStore, selection: ExportSelection, opts: OpenLineageOptions = {}): Promise<OpenLineageRunEvent[]> {
  const producer = opts.producer ?? OPENLINEAGE_PRODUCER;
  const steps = stepsOf(groupEvents(await selectRecords(store, selection)));
  const byId = new Map(steps.map((s) => [s.id, s]));
  const dataset = (name: string) => ({ namespace: OPENLINEAGE_NAMESPACE, name });
  const events: OpenLineageRunEvent[] = [];
  const run = (eventType: OpenLineageRunEvent["eventType"], eventTime: string, runId: string, job: string, inputs: string[], outputs: string[], facets?: Record<string, unknown>): void => {
    events.push({
      eventType, eventTime, run: { runId, ...(facets && { facets }) }, job: { namespace: OPENLINEAGE_NAMESPACE, name: job },
      inputs: inputs.map(dataset), outputs: outputs.map(dataset), producer, schemaURL: OPENLINEAGE_SCHEMA_URL,
    });
  };
  for (const s of steps) {
    const input = s.inputs[0] === undefined ? undefined : byId.get(s.inputs[0]);
    const capability = capabilityOf(input) ?? s.type ?? "unknown";
    const inputs = input?.type ? [input.type] : [];
    const outputs = s.type ? [s.type] : [];
    const runId = runIdOf(s.source, s.id);
    if (s.verification.result === "verified") {
      const job = `${s.principal}/${capability}`;
      if (s.startedAt !== null) run("START", s.startedAt, runId, job, inputs, outputs);
      const end = s.emittedAt ?? s.time;
      if (end !== null) run("COMPLETE", end, runId, job, inputs, outputs);
    } else if (s.time !== null) {
      run("FAIL", s.time, runId, `unverified/${capability}`, inputs, outputs, errorFacet(producer, `${s.verification.code ?? "failed"}: ${s.verification.detail ?? "verification failed"}`));
    }
    for (const a of s.appearances) {
      if (!a.quarantine || a.quarantine.detectedAt === null) continue;
      const capability = capabilityOf(s) ?? s.type ?? "unknown";
      run("FAIL", a.quarantine.detectedAt, runIdOf(a.stream, String(a.seq)), `${a.quarantine.detectedBy ?? "unknown"}/${capability}`, outputs, [],
        errorFacet(producer, `${a.quarantine.reason ?? "quarantined"}: ${a.quarantine.detail ?? ""}`));
    }
  }
  return events.sort((a, b) => Date.parse(a.eventTime) - Date.parse(b.eventTime));
}

// ---------------------------------------------------------------------------------------------------------

interface ProvedLine {
  readonly stored: StoredRecord;
  readonly bytes: Buffer;
  readonly index: number;
  readonly leafHash: string;
  readonly proof: string[];
}

async function provedRecords(store: LineageStore, selection: ExportSelection, checkpoint: StoredCheckpoint): Promise<{ lines: ProvedLine[]; omitted: number }> {
  const records = await selectRecords(store, selection);
  const covered = records.filter((r) => r.columns.index < checkpoint.size);
  const paths = await auditPaths(store, covered, checkpoint);
  const lines = covered.map((stored, k) => ({
    stored,
    bytes: stored.bytes,
    index: stored.columns.index,
    leafHash: stored.leafHash.toString("base64"),
    proof: paths[k]!.map((h) => h.toString("base64")),
  }));
  return { lines, omitted: records.length - covered.length };
}

// The display columns of a record (CSV: index … verified), from its bytes, line breaks escaped.
function displayColumns(stored: Pick<StoredRecord, "columns">, bytes: Buffer): string[] {
  const s = summarize(stored as StoredRecord, decodeRecord(bytes));
  return [s.index, s.stream, s.seq, s.source, s.id, s.type, s.time, s.principal, s.keyid, s.verified].map((v) => String(v ?? "").replace(/\r?\n|\r/g, "\\n"));
}

function csvCell(value: string): string {
  return /[",\r\n]|^\s|\s$/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

// One line of CSV (no line breaks inside: the writer escapes them), or undefined when the quoting is broken.
function parseCsvLine(line: string): string[] | undefined {
  const cells: string[] = [];
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let cell = "";
      for (i++; ; i++) {
        if (i >= line.length) return undefined;
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            cell += '"';
            i++;
          } else break;
        } else cell += line[i];
      }
      cells.push(cell);
      i++;
      if (i < line.length && line[i] !== ",") return undefined;
    } else {
      const comma = line.indexOf(",", i);
      cells.push(line.slice(i, comma < 0 ? line.length : comma));
      i = comma < 0 ? line.length : comma;
    }
    if (i >= line.length) return cells;
    i++; // the comma
  }
}

function checkLines(format: "jsonl" | "csv", lines: readonly string[], publicKey: LineagePublicKey): ExportCheck {
  const header = format === "jsonl" ? jsonlHeader(lines[0]!) : csvHeader(lines);
  if ("problem" in header) return failed(format, 0, header.line ?? 1, ExportRejection.Malformed, header.problem);
  const signed = signedCheckpoint(header.note, publicKey);
  if (!("checkpoint" in signed)) return failed(format, 0, header.line, signed.reason, signed.message);
  const cp = signed.checkpoint;
  let checked = 0, lastIndex = -1;
  for (let n = header.firstRecord; n < lines.length; n++) {
    const lineNo = n + 1;
    const parsed = format === "jsonl" ? jsonlRecord(lines[n]!) : csvRecord(lines[n]!);
    if ("problem" in parsed) return failed(format, checked, lineNo, ExportRejection.Malformed, parsed.problem);
    const verdict = verifyInclusionAgainst({ ...parsed.proof, size: cp.size, root: cp.root, checkpoint: header.note }, cp);
    if (!verdict.ok) return failed(format, checked, lineNo, verdict.reason, `record ${parsed.proof.index}: ${verdict.message}`);
    if (parsed.columns) {
      const bytes = Buffer.from(parsed.proof.record, "utf8");
      const expected = displayColumns({ columns: { index: parsed.proof.index } as StoredRecord["columns"] }, bytes);
      const wrong = expected.findIndex((v, i) => v !== parsed.columns![i]);
      if (wrong >= 0) return failed(format, checked, lineNo, ExportRejection.ColumnMismatch, `column ${CSV_COLUMNS[wrong]} is "${parsed.columns[wrong]}", the record says "${expected[wrong]}"`);
    }
    if (parsed.proof.index <= lastIndex) return failed(format, checked, lineNo, ExportRejection.Count, `record ${parsed.proof.index} comes after record ${lastIndex}: a line was repeated or moved`);
    lastIndex = parsed.proof.index;
    checked++;
  }
  if (checked !== header.records) {
    return failed(format, checked, header.line, ExportRejection.Count, `the header says ${header.records} records, the export has ${checked}: lines were removed or added`);
  }
  return { ok: true, format, records: checked, checkpoint: cp };
}

interface Header { readonly note: string; readonly records: number; readonly line: number; readonly firstRecord: number }
type Parsed<T> = T | { readonly problem: string; readonly line?: number };
interface RecordLine { readonly proof: { index: number; record: string; leafHash: string; proof: string[] }; readonly columns?: readonly string[] }

function jsonlHeader(line: string): Parsed<Header> {
  const h = parseJson(line) as { checkpoint?: unknown; format?: unknown; records?: unknown } | undefined;
  if (h?.format !== EXPORT_FORMAT || typeof h.checkpoint !== "string" || !isCount(h.records)) {
    return { problem: `the header must be a JSON object with format "${EXPORT_FORMAT}", checkpoint and records` };
  }
  return { note: h.checkpoint, records: h.records, line: 1, firstRecord: 1 };
}

function jsonlRecord(line: string): Parsed<RecordLine> {
  const r = parseJson(line) as { index?: unknown; record?: unknown; leafHash?: unknown; proof?: unknown } | undefined;
  if (!isCount(r?.index) || typeof r.record !== "string" || typeof r.leafHash !== "string" || !Array.isArray(r.proof) || !r.proof.every((p) => typeof p === "string")) {
    return { problem: "a record line must be a JSON object with index, record, leafHash and proof" };
  }
  return { proof: { index: r.index, record: r.record, leafHash: r.leafHash, proof: r.proof as string[] } };
}

function csvHeader(lines: readonly string[]): Parsed<Header> {
  const comments = new Map<string, string>();
  let n = 0;
  for (; n < lines.length && lines[n]!.startsWith("#"); n++) {
    const m = /^# ([a-zA-Z]+): (.*)$/.exec(lines[n]!);
    if (m) comments.set(m[1]!, m[2]!);
  }
  if (lines[0] !== `# ${EXPORT_FORMAT} csv`) return { problem: `the first line must be "# ${EXPORT_FORMAT} csv"` };
  const note = comments.get("checkpoint");
  const records = Number(comments.get("records"));
  if (note === undefined || !isCount(records)) return { problem: "the comment lines must carry checkpoint and records" };
  if (lines[n] !== CSV_COLUMNS.join(",")) return { problem: `the header row must be ${CSV_COLUMNS.join(",")}`, line: n + 1 };
  return { note: Buffer.from(note, "base64").toString("utf8"), records, line: 1, firstRecord: n + 1 };
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function csvRecord(line: string): Parsed<RecordLine> {
  const cells = parseCsvLine(line);
  if (cells?.length !== CSV_COLUMNS.length) return { problem: `a row must have ${CSV_COLUMNS.length} cells (${CSV_COLUMNS.join(",")})` };
  const [index, leaf, record, proof] = [cells[0]!, cells[10]!, cells[11]!, cells[12]!];
  const bytes = Buffer.from(record, "base64");
  let text: string;
  try {
    text = strictUtf8.decode(bytes);
  } catch {
    return { problem: "the record column is not base64 of UTF-8 bytes" };
  }
  if (!/^\d+$/.test(index) || bytes.toString("base64") !== record) return { problem: "index must be a number and record standard base64" };
  return { proof: { index: Number(index), record: text, leafHash: leaf, proof: proof === "" ? [] : proof.split(" ") }, columns: cells.slice(0, 10) };
}

function failed(format: "jsonl" | "csv" | null, records: number, line: number, reason: ExportRejectionValue, message: string): ExportCheck {
  return { ok: false, format, records, line, reason, message };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const isCount = (n: unknown): n is number => typeof n === "number" && Number.isSafeInteger(n) && n >= 0;

// PROV qualified names: ids go in the local part, percent-encoded.
function qname(local: string): string {
  return encodeURIComponent(local);
}

// Entity names: event:<id>, made unique when two sources share an id.
function entityNames(steps: readonly EventStep[]): Map<EventStep, string> {
  const names = new Map<EventStep, string>();
  const taken = new Set<string>();
  for (const s of steps) {
    let name = `event:${qname(s.id)}`;
    for (let k = 2; taken.has(name); k++) name = `event:${qname(s.id)}.${k}`;
    taken.add(name);
    names.set(s, name);
  }
  return names;
}

// The capability an event was addressed to, from its first capability or handoff subject: `<name>.v<major>`.
function capabilityOf(step: EventStep | undefined): string | undefined {
  for (const a of step?.appearances ?? []) {
    const subject = parsedSubject(a.subject);
    if (subject?.kind === SubjectKind.Cap || subject?.kind === SubjectKind.Handoff) return `${subject.capability}.v${subject.major}`;
  }
  return undefined;
}

function parsedSubject(subject: string): ParsedSubject | undefined {
  try {
    return parseSubject(subject);
  } catch {
    return undefined; // a recorded subject outside the grammar (a forgery's) names no capability
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

// A run id: the event id when it is a UUID, else a UUIDv8 from SHA-256 of (scope, id).
function runIdOf(scope: string, id: string): string {
  if (UUID.test(id)) return id.toLowerCase();
  const b = hash("sha256", `causeway/openlineage-run/v1\0${scope}\0${id}`, "buffer").subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x80;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function errorFacet(producer: string, message: string): Record<string, unknown> {
  return { errorMessage: { _producer: producer, _schemaURL: ERROR_FACET_SCHEMA_URL, message, programmingLanguage: "TypeScript" } };
}
