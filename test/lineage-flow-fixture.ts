// A recorded reference-workflow flow for lineage tests, as the ingest would write it: a report request
// notarized by the gateway (its raw upstream copy on MESH_INGEST failed verification: unsigned), the planner's
// three tasks, three findings (one quarantined for low confidence), a forged finding (bad signature, also
// quarantined), two verified findings, the report on the critical handoff subject, the coordinator's
// approval request, the approver's approval, the grant, the forward of the report to the publisher, and the
// release. Signed timings (`startedat`, `emittedat`) are set on every verified output, `emittedat` alone on
// decisions and the notarized request, so expected queue waits and processing times are known exactly.
//
// Flow control (issue 16): the notarized request carries the flow's priority and budget, every agent output
// inherits them with its `flowdepth`, and carries what its run spent: the planner's run (5 cost units, 300 tokens)
// emitted three tasks, each researcher run 40 units and 1200 tokens, each verifier run 2 units; the forged finding
// claims 9999 units. Decisions carry none of it.
//
// Also: an orphan whose input was never recorded, and one id recorded under two sources.
import type { TestContext } from "node:test";
import { lineageStoreKinds, type LineageStoreKind } from "./lineage-stores.ts";
import { createUser } from "@nats-io/nkeys";
import { signCheckpoint } from "../services/lineage/checkpoint.ts";
import { createMerkleLog, rootOf } from "../services/lineage/merkle.ts";
import { dataDigest, encodeRecord, type RecordContent } from "../services/lineage/record.ts";
import type { LineageStore, StoredCheckpoint } from "../services/lineage/store.ts";
import { QuarantineHeader, deriveEventId, flowIdOf, signingKeyFromNkeySeed, uuidv7, type SigningKey } from "../services/kit/index.ts";

/** The lineage log's name in test checkpoints. */
export const ORIGIN = "causeway.test/lineage";

/** A fresh store of `kind` (default SQLite), closed and removed after the test. */
export async function tempStore(t: TestContext, kind: LineageStoreKind = lineageStoreKinds[0]!): Promise<LineageStore> {
  const opened = await kind.open();
  t.after(() => opened.dispose());
  return opened.store;
}

/** A new Ed25519 key from a fresh NKey user seed. */
export function newKey(): SigningKey {
  return signingKeyFromNkeySeed(new TextDecoder().decode(createUser().getSeed()));
}

/** Appends `contents` as records continuing the store's log, with the log state after them. */
export async function populate(store: LineageStore, contents: readonly RecordContent[]): Promise<void> {
  const state = await store.state();
  const leaves = await store.leafHashes(0, state.size);
  const log = createMerkleLog({ leafAt: (i) => leaves[i]!, size: state.size, frontier: state.frontier });
  const records = contents.map((c, i) => encodeRecord(state.size + i, c));
  for (const r of records) {
    leaves.push(r.leafHash);
    log.append(r.leafHash);
  }
  await store.append(records, { size: log.size, frontier: log.frontier() });
}

/** A signed checkpoint of the store's first `size` leaves (default: all), saved in the store. */
export async function checkpoint(store: LineageStore, key: SigningKey, size?: number, time = "2026-05-13T10:00:00Z"): Promise<StoredCheckpoint> {
  const n = size ?? (await store.state()).size;
  const root = rootOf(await store.leafHashes(0, n)).toString("base64");
  const note = signCheckpoint({ origin: ORIGIN, size: n, root, time }, key);
  const stored = { size: n, root, time, note, auditSeq: n };
  await store.saveCheckpoint(stored);
  return stored;
}

/** Principals of the flow and their key ids (NKey public keys). */
export const PRINCIPALS = ["gateway", "planner", "researcher", "verifier", "reporter", "coordinator", "approver", "publisher"] as const;
export type Principal = (typeof PRINCIPALS)[number];

/** One event of the fixture, as built. */
export interface FixtureEvent {
  readonly id: string;
  readonly source: string;
  readonly type: string;
  readonly attributes: Readonly<Record<string, string>>;
}

/** The flow and what the tests need to know about it. */
export interface FlowFixture {
  /** Records in append order. */
  readonly contents: readonly RecordContent[];
  readonly correlationId: string;
  readonly keyids: Readonly<Record<Principal, string>>;
  readonly request: FixtureEvent;
  readonly tasks: readonly FixtureEvent[];
  /** findings[2] is quarantined (low_confidence). */
  readonly findings: readonly FixtureEvent[];
  /** A finding with a bad signature (failed verification), quarantined as bad_signature. */
  readonly forged: FixtureEvent;
  readonly verified: readonly FixtureEvent[];
  readonly report: FixtureEvent;
  readonly approvalRequested: FixtureEvent;
  readonly approval: FixtureEvent;
  readonly grant: FixtureEvent;
  readonly released: FixtureEvent;
  /** Another flow's event whose input lineage never recorded. */
  readonly orphan: FixtureEvent;
  /** The id `ambiguousId` is recorded under these two sources. */
  readonly ambiguousId: string;
  readonly ambiguousSources: readonly string[];
}

/** The reference flow's priority and budget (signed on the notarized request, inherited by every output). */
export const FLOW_CONTEXT = { priority: "critical", budgetcost: "500", budgettokens: "100000", budgetsteps: "12" } as const;
/** What each run of the reference flow spent (signed into each of its outputs). */
export const RUN_SPEND = { planner: { cost: 5, tokens: 300 }, researcher: { cost: 40, tokens: 1200 }, verifier: { cost: 2, tokens: 0 } } as const;
const spentExt = (s: { cost: number; tokens: number }) => ({ spentcost: String(s.cost), spenttokens: String(s.tokens) });

/** Epoch ms of the flow's start. */
export const T0 = Date.parse("2026-05-13T09:00:00.000Z");
const iso = (ms: number): string => new Date(ms).toISOString();
const seconds = (ms: number): string => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(".000Z", "Z");

/** Builds the reference flow (fresh ids and keys each call). */
export function referenceFlow(): FlowFixture {
  const keyids = Object.fromEntries(PRINCIPALS.map((p) => [p, newKey().keyid])) as Record<Principal, string>;
  const contents: RecordContent[] = [];
  const seqs = new Map<string, number>();
  let recordedMs = T0;

  interface Spec {
    stream: string;
    subject: string;
    id: string;
    source: string;
    type: string;
    atMs: number;
    principal?: Principal;
    failed?: { code: string; detail: string; keyid?: string };
    correlationid?: string;
    causationid?: string;
    startedMs?: number;
    emittedMs?: number;
    extra?: Record<string, string>;
    headers?: Record<string, string>;
    data: unknown;
  }
  const record = (s: Spec): FixtureEvent => {
    const seq = (seqs.get(s.stream) ?? 0) + 1;
    seqs.set(s.stream, seq);
    const data = Buffer.from(JSON.stringify(s.data));
    const attributes: Record<string, string> = {
      specversion: "1.0",
      id: s.id,
      source: s.source,
      type: s.type,
      time: seconds(s.atMs),
      datacontenttype: "application/json",
      dataschema: `https://causeway.dev/schemas/${s.type}/1.0.0`,
      ...(s.correlationid !== undefined && { correlationid: s.correlationid }),
      ...(s.causationid !== undefined && { causationid: s.causationid }),
      traceparent: `00-${"ab".repeat(16)}-${s.id.replaceAll("-", "").slice(0, 16)}-01`,
      ...(s.startedMs !== undefined && { startedat: iso(s.startedMs) }),
      ...(s.emittedMs !== undefined && { emittedat: iso(s.emittedMs) }),
      ...s.extra,
    };
    const keyid = s.principal !== undefined ? keyids[s.principal] : s.failed?.keyid;
    attributes.dssematerial = Buffer.from(JSON.stringify({
      payloadType: "https://cloudevents.io/verifiability/dsse/v0.1",
      payload: Buffer.from(`${s.id}`).toString("base64"),
      signatures: keyid !== undefined ? [{ keyid, sig: Buffer.from(`sig:${s.id}`).toString("base64") }] : [],
    })).toString("base64");
    recordedMs += 7;
    contents.push({
      stream: s.stream,
      seq,
      subject: s.subject,
      recorded: iso(Math.max(recordedMs, (s.emittedMs ?? s.atMs) + 20)),
      verification: s.failed
        ? { result: "failed", ...(s.failed.keyid !== undefined && { keyid: s.failed.keyid }), code: s.failed.code, detail: s.failed.detail }
        : { result: "verified", keyid: keyid!, principal: s.principal! },
      attributes,
      headers: { "Nats-Msg-Id": s.id, ...s.headers },
      datadigest: dataDigest(data),
      data: data.toString("base64"),
    });
    return { id: s.id, source: s.source, type: s.type, attributes };
  };
  // A second record of an event already recorded (a forward, a quarantine copy): same attributes.
  const again = (e: FixtureEvent, stream: string, subject: string, headers: Record<string, string> = {}, failed?: Spec["failed"]): void => {
    const last = contents.findLast((c) => c.attributes?.id === e.id && c.attributes.source === e.source)!;
    const seq = (seqs.get(stream) ?? 0) + 1;
    seqs.set(stream, seq);
    recordedMs += 7;
    contents.push({
      ...last,
      stream,
      seq,
      subject,
      recorded: iso(recordedMs),
      ...(failed && { verification: { result: "failed", code: failed.code, detail: failed.detail } }),
      headers: { ...last.headers, ...headers },
    });
  };
  const src = (p: Principal): string => `causeway://${p}`;
  const out = (input: FixtureEvent, p: Principal, i: number): string => deriveEventId(input, p, i);
  // The quarantine reason headers of `e`'s copy of its record on MESH_CAP.
  const quarantineHeaders = (e: FixtureEvent, reason: string, code: string, detail: string, by: Principal, atMs: number) => ({
    [QuarantineHeader.Reason]: reason,
    [QuarantineHeader.Detail]: detail,
    [QuarantineHeader.Code]: code,
    [QuarantineHeader.OriginalSubject]: "mesh.cap.verify.v1",
    [QuarantineHeader.OriginalStream]: "MESH_CAP",
    [QuarantineHeader.OriginalSequence]: String(contents.find((c) => c.stream === "MESH_CAP" && c.attributes?.id === e.id)!.seq),
    [QuarantineHeader.Consumer]: "verify-v1",
    [QuarantineHeader.DetectedBy]: by,
    [QuarantineHeader.DetectedAt]: iso(atMs),
  });

  // The upstream request: raw on MESH_INGEST (unsigned), notarized by the gateway onto the planner's subject.
  const requestEventId = uuidv7(T0);
  // The planner's tasks carry the implementation version it signed, as every agent output does.
  const PLANNER_VERSION = "1.4.2";
  const requestSource = "https://crm.example/requests";
  // The flow the request starts: the gateway's correlation id and the planner's request id.
  const requestId = flowIdOf({ source: requestSource, id: requestEventId });
  const requestData = { topic: "lineage", requester: "ada@example.com" };
  const requestAttrs: Omit<Spec, "stream" | "subject"> = {
    id: requestEventId, source: requestSource, type: "report.requested", atMs: T0, emittedMs: T0 + 3, data: requestData,
  };
  record({ ...requestAttrs, stream: "MESH_INGEST", subject: "mesh.ingest.crm.report", failed: { code: "CW_ERR_UNSIGNED", detail: "no dssematerial" } });
  const flow = { correlationid: requestId };
  const request = record({ ...requestAttrs, ...flow, stream: "MESH_CAP", subject: "mesh.cap.plan.v1", principal: "gateway", extra: { ...FLOW_CONTEXT } });
  // What an agent's output inherits, at its causal depth, with what its run spent.
  const context = (depth: number, spent?: { cost: number; tokens: number }) => ({ ...FLOW_CONTEXT, flowdepth: String(depth), ...(spent && spentExt(spent)) });

  const tasks = [0, 1, 2].map((i) => record({
    stream: "MESH_CAP", subject: "mesh.cap.research.v1", id: out(request, "planner", i), source: src("planner"), type: "research.task.created",
    atMs: T0 + 95 + i, principal: "planner", ...flow, causationid: requestEventId, startedMs: T0 + 40, emittedMs: T0 + 95 + i, extra: { agentversion: PLANNER_VERSION, ...context(1, RUN_SPEND.planner) },
    data: { requestId, taskIndex: i, totalTasks: 3, query: `q${i}` },
  }));
  const findings = tasks.map((task, i) => {
    const started = T0 + 95 + i + 10 + i;
    return record({
      stream: "MESH_CAP", subject: "mesh.cap.verify.v1", id: out(task, "researcher", 0), source: src("researcher"), type: "research.finding.created",
      atMs: started + 500 + 100 * i, principal: "researcher", ...flow, causationid: task.id, startedMs: started, emittedMs: started + 500 + 100 * i,
      extra: context(2, RUN_SPEND.researcher),
      data: { requestId, taskIndex: i, claim: `claim ${i}`, confidence: i === 2 ? 0.2 : 0.9 },
    });
  });
  // Someone without the researcher's key claims a finding for task 0: recorded as failed, then quarantined.
  const forged = record({
    stream: "MESH_CAP", subject: "mesh.cap.verify.v1", id: uuidv7(T0 + 700), source: src("researcher"), type: "research.finding.created",
    atMs: T0 + 700, ...flow, causationid: tasks[0]!.id, startedMs: T0 + 650, emittedMs: T0 + 700,
    extra: { ...context(2, { cost: 9999, tokens: 9999 }), priority: "background", budgetcost: "1000000" },
    failed: { code: "CW_ERR_BAD_SIGNATURE", detail: "the DSSE signature does not verify", keyid: keyids.researcher },
    data: { requestId, taskIndex: 0, claim: "forged", confidence: 1 },
  });
  again(forged, "MESH_QUARANTINE", "mesh.quarantine.bad_signature.verify",
    quarantineHeaders(forged, "bad_signature", "CW_ERR_BAD_SIGNATURE", "the DSSE signature does not verify", "verifier", T0 + 760),
    { code: "CW_ERR_BAD_SIGNATURE", detail: "the DSSE signature does not verify" });
  const verified = findings.slice(0, 2).map((finding, i) => {
    const emitted = Date.parse(finding.attributes.emittedat!);
    return record({
      stream: "MESH_CAP", subject: "mesh.cap.report.v1", id: out(finding, "verifier", 0), source: src("verifier"), type: "research.finding.verified",
      atMs: emitted + 250, principal: "verifier", ...flow, causationid: finding.id, startedMs: emitted + 30 + i, emittedMs: emitted + 250 + i,
      extra: context(3, RUN_SPEND.verifier),
      data: { requestId, taskIndex: i, verdict: "supported" },
    });
  });
  const low = findings[2]!;
  again(low, "MESH_QUARANTINE", "mesh.quarantine.low_confidence.verify",
    quarantineHeaders(low, "low_confidence", "CW_ERR_POLICY_VERDICT", "confidence 0.2 is below 0.5", "verifier", Date.parse(low.attributes.emittedat!) + 45));

  const lastVerified = verified[1]!;
  const reportStart = Date.parse(lastVerified.attributes.emittedat!) + 15;
  const report = record({
    stream: "MESH_HANDOFF", subject: "mesh.handoff.publish.v1", id: out(lastVerified, "reporter", 0), source: src("reporter"), type: "report.published",
    atMs: reportStart + 1200, principal: "reporter", ...flow, causationid: lastVerified.id, startedMs: reportStart, emittedMs: reportStart + 1200,
    extra: context(4),
    data: { requestId, title: "lineage", findings: 2 },
  });
  const reportEmitted = reportStart + 1200;
  const decision = (kind: string, p: Principal, atMs: number, data: unknown): FixtureEvent => record({
    stream: "MESH_DECISION", subject: `mesh.decision.${kind.replaceAll(".", "_")}`, id: deriveEventId({ source: src(p), id: `decision/${kind}/${report.id}` }, p, 0),
    source: src(p), type: `decision.${kind}`, atMs, principal: p, ...flow, causationid: report.id, emittedMs: atMs, data,
  });
  const approvalRequested = decision("approval.requested", "coordinator", reportEmitted + 60, { eventId: report.id, approvers: ["approver"] });
  const approval = decision("approval", "approver", reportEmitted + 95_000, { eventId: report.id, approved: true });
  const grant = decision("grant", "coordinator", reportEmitted + 95_040, { eventId: report.id, lease: 7 });
  again(report, "MESH_CAP", "mesh.cap.publish.v1");
  const publishStart = reportEmitted + 95_070;
  const released = record({
    stream: "MESH_EVT", subject: "mesh.evt.report.released.v1", id: out(report, "publisher", 0), source: src("publisher"), type: "report.released",
    atMs: publishStart + 310, principal: "publisher", ...flow, causationid: report.id, startedMs: publishStart, emittedMs: publishStart + 310,
    extra: context(5),
    data: { requestId, url: "https://reports.example/lineage" },
  });

  // Another flow: an event whose input was never recorded.
  const orphanFlow = uuidv7(T0 + 5000);
  const orphan = record({
    stream: "MESH_CAP", subject: "mesh.cap.verify.v1", id: uuidv7(T0 + 5100), source: src("researcher"), type: "research.finding.created",
    atMs: T0 + 5100, principal: "researcher", correlationid: orphanFlow, causationid: uuidv7(T0 + 5050), startedMs: T0 + 5060, emittedMs: T0 + 5100,
    data: { requestId: orphanFlow, taskIndex: 0, claim: "orphan", confidence: 0.9 },
  });
  // One id under two upstream sources (ids are unique per source only).
  const ambiguousId = "order-42";
  const ambiguousSources = ["https://shop-a.example", "https://shop-b.example"];
  for (const [i, source] of ambiguousSources.entries()) {
    record({
      stream: "MESH_CAP", subject: "mesh.cap.plan.v1", id: ambiguousId, source, type: "report.requested", atMs: T0 + 9000 + i, principal: "gateway",
      emittedMs: T0 + 9000 + i, data: { topic: `order ${i}`, requester: "shop" },
    });
  }

  return {
    contents, correlationId: requestId, keyids, request, tasks, findings, forged, verified, report, approvalRequested, approval, grant, released,
    orphan, ambiguousId, ambiguousSources,
  };
}

/** Signed ms of a fixture event's timing attribute. */
export function ms(e: FixtureEvent, name: "startedat" | "emittedat"): number {
  const v = e.attributes[name];
  if (v === undefined) throw new Error(`${e.type} ${e.id} has no ${name}`);
  return Date.parse(v);
}
