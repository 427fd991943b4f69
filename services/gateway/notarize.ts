// Checking and notarizing an upstream event. The checks: the source belongs to the upstream, the type has a
// route, the event has not expired, the data matches the route's schema, and a signed event verifies under
// the upstream's own key. Notarizing signs the upstream's event as the gateway, keeping its data bytes and
// attributes, and adds signed extensions: `upstream` (who sent it), `emittedat` (when it entered the mesh),
// `traceparent` when absent, and `correlationid`. A signed upstream event is forwarded as it came.
//
// Correlation and causation are the mesh's, never an upstream's (issue 12, finding 10): a flow an upstream
// starts is correlated by its flow id (the kit's flowIdOf: the event's id and a tag over its source and id), so no
// upstream can graft its events into a flow another one started, even by reusing another upstream's event id (lineage's `trace`, the agents' logs, the coordinator's approvals all key on `correlationid`), nor
// point `causationid` at a mesh event (lineage's `why`). An unsigned event's own values are kept, signed, as
// `upstreamcorrelation` / `upstreamcausation`; a signed event, which the gateway cannot change, is refused with
// CW_ERR_UPSTREAM_CONTEXT when it carries a causationid or a correlationid other than its flow id.
import { hash } from "node:crypto";
import {
  ContextExtension, DSSE_MATERIAL, DecodeError, ErrorCode, Priority, QuarantineReason, countExtension, createEvent, dataJson, expiryIn, flowIdOf, isExpired, isJsonContentType,
  parseTraceparent, priorityOf, signEvent, type CloudEvent, type FlowBudget, type PriorityValue, type StoredMessage, type ExtensionValue, type SchemaRegistry,
  type SigningKey, type TrustStore,
} from "../kit/index.ts";
import { IngestError } from "./outcome.ts";
import type { Routes, Route } from "./routes.ts";
import { sourceAllowed, type Upstream } from "./upstreams.ts";

/** The signed extension naming the upstream a notarized event came from. */
const UPSTREAM_EXTENSION = "upstream";

/** Where a notarized event keeps the correlation and causation ids its upstream sent (which the mesh does not use). */
export const UpstreamContextExtension = { Correlation: "upstreamcorrelation", Causation: "upstreamcausation" } as const;

/** An event that passed every check, ready to be published. */
export interface Checked {
  readonly event: CloudEvent;
  readonly upstream: Upstream;
  readonly route: Route;
  /** SHA-256 (hex) of (source, id): the dedupe key, the JetStream msg id and the seed of a derived trace id. */
  readonly key: string;
  /** The flow the event starts (the kit's flowIdOf): its `correlationid` once notarized, and the 202's. */
  readonly flow: string;
  /** Signed by the upstream itself: forwarded unchanged. */
  readonly signed: boolean;
  readonly traceparent: string;
  /**
   * The route tables' revision the flow is routed by (kit routing.ts): the gateway's latest, signed into a notarized
   * event as `routeepoch`; undefined for an event the upstream signed (its first agent stamps the flow).
   */
  readonly epoch?: number;
  /** The flow's priority, from the upstream's policy (infra/upstreams.json). */
  readonly priority: PriorityValue;
  /** The flow's budget: what the event asked for, or the upstream's cap; {} when unbounded. */
  readonly budget: FlowBudget;
  /** The flow's `expirytime` when the gateway sets it (the upstream's deadline; the event carried none). */
  readonly expirytime?: string;
}

/** What notarizing needs. */
export interface NotaryDeps {
  readonly trust: TrustStore;
  readonly schemas: SchemaRegistry;
  readonly routes: Routes;
  readonly key: SigningKey;
  /** The route tables' latest revision (the gateway's Router.epoch). */
  readonly epoch: () => number;
}

/** Checks and notarizes upstream events. */
export interface Notary {
  /**
   * Every check of the event from `upstream`; throws IngestError, DecodeError, SchemaError or VerificationError.
   * `received`: `"now"` for a request (HTTP, a NATS request), or the MESH_INGEST message it was decoded from
   * (the trust store derives when the mesh got it); a signed event's key must have been good then, whatever
   * time the event claims.
   */
  check(event: CloudEvent, upstream: Upstream, received: StoredMessage | "now"): Checked;
  /** The event to publish: signed by the gateway, or the upstream's own signed event unchanged. */
  notarize(checked: Checked, now?: Date): CloudEvent;
}

/** The dedupe key of an event: SHA-256 over its source and id (ids are unique per source only). */
export function dedupeKey(event: Pick<CloudEvent, "source" | "id">): string {
  return hash("sha256", `causeway/ingest/v1\0${event.source}\0${event.id}`, "hex");
}

/** A notary over the trust store, schemas and routes. */
export function createNotary(deps: NotaryDeps): Notary {
  return {
    check(event, upstream, received) {
      if (!sourceAllowed(upstream, event.source)) {
        throw new IngestError(ErrorCode.SourceNotAllowed, `source "${event.source}" is not one of upstream ${upstream.name}'s sources (${upstream.sources.join(", ")})`, {
          reason: QuarantineReason.PolicyDenied, attribute: "source",
        });
      }
      const route = deps.routes.get(event.type);
      if (route === undefined) {
        throw new IngestError(ErrorCode.NoRoute, `no route for type "${event.type}": the gateway routes ${[...deps.routes.keys()].join(", ")}`, {
          reason: QuarantineReason.UnknownCapability, attribute: "type",
        });
      }
      if (isExpired(event)) {
        throw new IngestError(ErrorCode.Expired, `the event expired at ${String(event.extensions[ContextExtension.ExpiryTime])}`, {
          reason: QuarantineReason.Expired, attribute: ContextExtension.ExpiryTime,
        });
      }
      const signed = event.extensions[DSSE_MATERIAL] !== undefined;
      const flow = flowIdOf(event);
      if (signed) {
        const trusted = received === "now" ? deps.trust.verify(event, { receivedAt: "now" }) : deps.trust.verifyMessage(received, { event });
        if (trusted.entry.principal !== upstream.name) {
          throw new IngestError(ErrorCode.SignerMismatch, `signed by ${trusted.entry.principal}, but sent by upstream ${upstream.name}`, {
            reason: QuarantineReason.PolicyDenied, attribute: DSSE_MATERIAL,
          });
        }
        if (!deps.trust.mayAddress(trusted.entry, route.capability, route.major)) {
          throw new IngestError(ErrorCode.UnauthorizedAddress, `${upstream.name}'s key may not address ${route.ref} (its trust store entry)`, {
            reason: QuarantineReason.PolicyDenied, attribute: "type",
          });
        }
        // Its signature covers every attribute: nothing can be moved, so a context pointing elsewhere is refused.
        const correlation = event.extensions[ContextExtension.CorrelationId];
        if (event.extensions[ContextExtension.CausationId] !== undefined || (correlation !== undefined && String(correlation) !== flow)) {
          throw new IngestError(ErrorCode.UpstreamContext, `a signed upstream event may not carry causationid, nor a correlationid other than its flow id ("${flow}", from its source and id): the gateway correlates the flows upstreams start`, {
            reason: QuarantineReason.PolicyDenied, attribute: event.extensions[ContextExtension.CausationId] !== undefined ? ContextExtension.CausationId : ContextExtension.CorrelationId,
          });
        }
        // Nothing can be filled in either, so it must be complete.
        for (const name of ["dataschema", "time"] as const) {
          if (event[name] === undefined) throw new DecodeError(ErrorCode.MissingAttribute, `a signed upstream event must carry "${name}"`, name);
        }
      }
      const admission = admit(event, upstream, signed);
      // The mesh counts a flow's causal depth from the event the gateway admits (0, `flowdepth` absent): an upstream
      // that set one could start its flow past the loop guard's bound, or claim a depth below what it is.
      if (event.extensions[ContextExtension.FlowDepth] !== undefined) {
        throw new IngestError(ErrorCode.UpstreamContext, `an upstream event may not carry ${ContextExtension.FlowDepth}: the mesh counts a flow's causal depth from the event the gateway admits`, {
          reason: QuarantineReason.PolicyDenied, attribute: ContextExtension.FlowDepth,
        });
      }
      // Which versions a flow runs on is the control plane's choice: an upstream that set the epoch could pick one.
      if (event.extensions[ContextExtension.RouteEpoch] !== undefined) {
        throw new IngestError(ErrorCode.UpstreamContext, `an upstream event may not carry ${ContextExtension.RouteEpoch}: the mesh routes a flow by the version tables in force when it is admitted`, {
          reason: QuarantineReason.PolicyDenied, attribute: ContextExtension.RouteEpoch,
        });
      }
      const dataschema = event.dataschema ?? route.dataschema;
      if (dataschema !== route.dataschema) {
        throw new IngestError(ErrorCode.UnknownCapability, `type ${event.type} goes to ${route.ref}, which accepts dataschema ${route.dataschema}, not ${dataschema}`, {
          reason: QuarantineReason.UnknownCapability, attribute: "dataschema",
        });
      }
      if (!isJsonContentType(event.datacontenttype)) {
        throw new DecodeError(ErrorCode.InvalidAttribute, `attribute "datacontenttype" must be JSON for ${dataschema}, not ${event.datacontenttype}`, "datacontenttype");
      }
      let data: unknown;
      try {
        data = dataJson(event);
      } catch (err) {
        throw new DecodeError(ErrorCode.DecodeJson, `the data is not valid JSON: ${(err as Error).message}`, "data", { cause: err });
      }
      deps.schemas.validator(dataschema)(data);
      const key = dedupeKey(event);
      const upstreamTrace = event.extensions[ContextExtension.TraceParent];
      const traceparent = parseTraceparent(upstreamTrace) ? String(upstreamTrace) : derivedTraceparent(key);
      return { event, upstream, route, key, flow, signed, traceparent, ...(!signed && { epoch: deps.epoch() }), ...admission };
    },

    notarize(checked, now = new Date()) {
      if (checked.signed) return checked.event;
      const e = checked.event;
      // Binary mode carries every extension as a string, so sign the strings consumers will read.
      // The upstream's correlation and causation are kept under names of their own; the mesh's are set below.
      // (Built without `delete`, which would turn the object into a slow dictionary on the hot path.)
      const extensions: Record<string, ExtensionValue> = {};
      for (const [name, value] of Object.entries(e.extensions)) {
        if (name === ContextExtension.CorrelationId) extensions[UpstreamContextExtension.Correlation] = String(value);
        else if (name === ContextExtension.CausationId) extensions[UpstreamContextExtension.Causation] = String(value);
        else extensions[name] = String(value);
      }
      extensions[UPSTREAM_EXTENSION] = checked.upstream.name;
      extensions[ContextExtension.EmittedAt] = now.toISOString();
      extensions[ContextExtension.TraceParent] = checked.traceparent;
      extensions[ContextExtension.CorrelationId] = checked.flow;
      if (checked.epoch !== undefined) extensions[ContextExtension.RouteEpoch] = String(checked.epoch);
      // Absent is normal: the common case costs no header on any event of the flow.
      if (checked.priority !== Priority.Normal) extensions[ContextExtension.Priority] = checked.priority;
      for (const [bound, name] of BUDGET_EXTENSIONS) {
        const value = checked.budget[bound];
        if (value !== undefined) extensions[name] = String(value);
      }
      if (checked.expirytime !== undefined) extensions[ContextExtension.ExpiryTime] = checked.expirytime;
      return signEvent(createEvent({
        ...e, time: e.time ?? now.toISOString(), dataschema: checked.route.dataschema, extensions, data: e.data,
      }), deps.key);
    },
  };
}

/** Each bound of a flow budget and the signed extension that carries it. */
const BUDGET_EXTENSIONS = [
  ["cost", ContextExtension.BudgetCost], ["tokens", ContextExtension.BudgetTokens], ["steps", ContextExtension.BudgetSteps],
] as const satisfies readonly (readonly [keyof FlowBudget, string])[];

/**
 * The flow control an upstream's event gets (issue 16): its priority and budget come from the upstream's policy. An
 * event may ask for a smaller budget (`budgetcost` …) and an earlier deadline (`expirytime`), never a larger one,
 * nor its own priority, nor say what it spent. A signed event, which the gateway cannot change, must carry them
 * itself: the upstream's priority (absent is normal) and every bound of its budget, within the caps.
 */
function admit(event: CloudEvent, upstream: Upstream, signed: boolean, now = Date.now()): Pick<Checked, "priority" | "budget" | "expirytime"> {
  const refuse = (attribute: string, why: string) => new IngestError(ErrorCode.UpstreamContext, `${attribute}: ${why}`, { reason: QuarantineReason.PolicyDenied, attribute });
  const priority = upstream.priorityOf(event.type);
  for (const name of [ContextExtension.SpentCost, ContextExtension.SpentTokens]) {
    if (event.extensions[name] !== undefined) throw refuse(name, "an upstream event may not say what the mesh spent");
  }
  if (event.extensions[ContextExtension.Priority] !== undefined && !(signed && priorityOf(event) === priority)) {
    throw refuse(ContextExtension.Priority, `the gateway sets a flow's priority from upstream ${upstream.name}'s policy (${priority} for ${event.type})${signed ? "; a signed event must carry exactly that" : ""}`);
  }
  if (signed && priorityOf(event) !== priority) throw refuse(ContextExtension.Priority, `a signed event of upstream ${upstream.name} must carry priority "${priority}" (its policy for ${event.type})`);
  const budget: { cost?: number; tokens?: number; steps?: number } = {};
  for (const [bound, name] of BUDGET_EXTENSIONS) {
    const asked = countExtension(event, name);
    const cap = upstream.budget[bound];
    if (asked === undefined) throw new DecodeError(ErrorCode.InvalidAttribute, `${name} ${JSON.stringify(event.extensions[name])} is not a non-negative integer`, name);
    if (asked !== "absent" && cap !== undefined && asked > cap) throw refuse(name, `asks for ${asked}, more than upstream ${upstream.name}'s cap of ${cap}`);
    if (asked === "absent" && signed && cap !== undefined) throw refuse(name, `a signed event of upstream ${upstream.name} must carry its budget (at most ${cap})`);
    const value = asked === "absent" ? cap : asked;
    if (value !== undefined) budget[bound] = value;
  }
  if (upstream.deadlineMs === undefined) return { priority, budget };
  const latest = now + upstream.deadlineMs;
  const expiry = event.extensions[ContextExtension.ExpiryTime];
  if (expiry === undefined) {
    if (signed) throw refuse(ContextExtension.ExpiryTime, `a signed event of upstream ${upstream.name} must carry its deadline (at most ${upstream.deadlineMs} ms ahead)`);
    return { priority, budget, expirytime: expiryIn(upstream.deadlineMs, now) };
  }
  // isExpired already refused a malformed or past expiry.
  if (Date.parse(String(expiry)) > latest) throw refuse(ContextExtension.ExpiryTime, `${String(expiry)} is later than upstream ${upstream.name}'s deadline allows (${upstream.deadlineMs} ms after admission)`);
  return { priority, budget };
}

/** The W3C trace id of a traceparent. */
export function traceIdOf(traceparent: string): string {
  return traceparent.slice(3, 35);
}

// An event without a traceparent gets one derived from its dedupe key, so a resubmission reports the same trace.
function derivedTraceparent(key: string): string {
  const h = hash("sha256", `causeway/trace/v1\0${key}`, "hex");
  return `00-${h.slice(0, 32)}-${h.slice(32, 48)}-01`;
}
