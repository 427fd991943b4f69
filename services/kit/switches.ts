// Kill switches (KV causeway_switches): the state the coordinator writes and agents watch. A key per switched
// target — `mesh`, `capability.<capability>_v<major>`, `principal.<principal>` — holding
// `{ paused, reason, by, at, expires_at, decision_id }`; a deleted key or `paused: false` means running. The
// coordinator also pauses the JetStream consumers concerned, so the server stops delivering; the flag is the
// agent-side guard (and what a consumer created after the pause is checked against).
import type { KvWatchEntry } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { CausewayError, ErrorCode } from "./errors.ts";
import { normalizeTime } from "./event.ts";
import { followBucket, type Following } from "./kv-follow.ts";
import { KvBucket, MESH_BUCKETS } from "./buckets.ts";

/** What a switch applies to. */
export const SwitchScope = {
  Capability: "capability",
  Principal: "principal",
  Mesh: "mesh",
} as const;
/** One of the switch scopes. */
export type SwitchScopeValue = (typeof SwitchScope)[keyof typeof SwitchScope];

/**
 * The `pause_until` of a consumer paused until resumed: JetStream needs a date, and this one reads as what it
 * means in `nats consumer info`. Not later: past ~292 years from now the remaining time overflows a Go
 * duration, and `nats consumer info` fails on the consumer.
 */
export const PAUSED_UNTIL_RESUMED = "2199-12-31T23:59:59Z";

/** The target of a mesh-wide switch. */
export const MESH_TARGET = "*";

/** The value stored under a switch key, in its JSON field names. */
export interface SwitchValue {
  readonly paused: boolean;
  /** Why, as the operator gave it. */
  readonly reason: string;
  /** The operator who switched it. */
  readonly by: string;
  /** Since when it is paused (RFC 3339). */
  readonly at: string;
  /** When the pause ends by itself (RFC 3339), or null: until resumed. */
  readonly expires_at: string | null;
  /** The id of the signed decision.switch event that paused it. */
  readonly decision_id: string;
}

/** A pause as recorded in the bucket, with what it applies to. Frozen. */
export interface SwitchState extends SwitchValue {
  readonly paused: true;
  /** Its key in the bucket. */
  readonly key: string;
  readonly scope: SwitchScopeValue;
  /** `research.v1`, `planner` or `*`. */
  readonly target: string;
}

/** Who is asking whether it is paused: an agent's capability, major version and principal. */
export interface SwitchSubject {
  readonly capability: string;
  readonly major: number;
  readonly principal: string;
}

/** A switch that changed: `state` is the new pause, or undefined when the target runs again. */
export interface SwitchChange {
  readonly key: string;
  readonly scope: SwitchScopeValue;
  readonly target: string;
  readonly state: SwitchState | undefined;
  /** The bucket revision of the change. */
  readonly revision: number;
}

/** The live view of the switches. */
export interface SwitchWatcher extends AsyncDisposable {
  /**
   * The pause in effect for `subject` at `now` (default: the current time), or undefined when it may run. The
   * mesh switch wins over the principal's, which wins over the capability's; an expired pause counts as
   * resumed. Allocates nothing: it may run per message.
   */
  isPaused(subject: SwitchSubject, now?: number | Date): SwitchState | undefined;
  /** Every pause in effect at `now`: mesh first, then principals, then capabilities, each sorted by target. */
  list(now?: number | Date): readonly SwitchState[];
  /** Every pause recorded in the bucket, expired ones included (the coordinator resumes those). */
  recorded(): readonly SwitchState[];
  /** Calls `listener` after each change applied from the bucket; returns a function that unsubscribes. */
  onChange(listener: (change: SwitchChange) => void): () => void;
  /** Stops watching; the last known state stays readable. */
  close(): Promise<void>;
  /** Settles with CW_ERR_CONFIG if the bucket is deleted or replaced: pauses can no longer arrive. Never rejects. */
  readonly lost: Promise<CausewayError>;
}

/** Options for {@link watchSwitches}. */
export interface WatchSwitchesOptions {
  /** The bucket. Default `causeway_switches`. */
  bucket?: string;
  /** How long to wait for the initial state. Default 10000 ms. */
  timeoutMs?: number;
  /** How often to check that the bucket still exists. Default 5000 ms. */
  checkMs?: number;
  /**
   * Called with a CW_ERR_SWITCH_INVALID error for an unreadable value (which counts as paused: a kill switch
   * fails closed) and a CW_ERR_CONFIG error when the watch stops. Default: process.emitWarning.
   */
  onProblem?: (err: CausewayError) => void;
}

const MAX_TEXT = 2000;
const CAPABILITY_KEY = /^capability\.([a-z0-9_-]+)_v(0|[1-9][0-9]*)$/;
const PRINCIPAL_KEY = /^principal\.([a-z0-9][a-z0-9_-]*)$/;
const CAPABILITY_REF = /^([a-z0-9_-]+)\.v(0|[1-9][0-9]*)$/;
const PRINCIPAL_NAME = /^[a-z0-9][a-z0-9_-]*$/;
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The bucket key of a switch: `switchKey("capability", "research.v1")` → `capability.research_v1`,
 * `switchKey("principal", "planner")` → `principal.planner`, `switchKey("mesh", "*")` → `mesh`. Throws
 * CausewayError CW_ERR_SWITCH_INVALID for an unknown scope or a target of the wrong form.
 */
export function switchKey(scope: string, target: string): string {
  switch (scope) {
    case SwitchScope.Capability: {
      const m = typeof target === "string" ? CAPABILITY_REF.exec(target) : null;
      if (!m) throw invalid(`capability target ${JSON.stringify(target)} is not <capability>.v<major>, e.g. research.v1`);
      return `capability.${m[1]}_v${m[2]}`;
    }
    case SwitchScope.Principal:
      if (typeof target !== "string" || !PRINCIPAL_NAME.test(target)) throw invalid(`principal target ${JSON.stringify(target)} is not a principal name, e.g. planner`);
      return `principal.${target}`;
    case SwitchScope.Mesh:
      if (target !== MESH_TARGET) throw invalid(`the mesh target is "${MESH_TARGET}", got ${JSON.stringify(target)}`);
      return "mesh";
    default:
      throw invalid(`unknown scope ${JSON.stringify(scope)}: one of ${Object.values(SwitchScope).join(", ")}`);
  }
}

/** The scope and target of a bucket key; CW_ERR_SWITCH_INVALID for a key that is not a switch. */
export function parseSwitchKey(key: string): { scope: SwitchScopeValue; target: string } {
  if (key === "mesh") return { scope: SwitchScope.Mesh, target: MESH_TARGET };
  const c = CAPABILITY_KEY.exec(key);
  if (c) return { scope: SwitchScope.Capability, target: `${c[1]}.v${c[2]}` };
  const p = PRINCIPAL_KEY.exec(key);
  if (p) return { scope: SwitchScope.Principal, target: p[1]! };
  throw invalid(`key ${JSON.stringify(key)} is not a switch: mesh, capability.<capability>_v<major> or principal.<principal>`);
}

/**
 * Parses the value stored under `key`: the pause it records, or undefined when it records `paused: false`.
 * Throws CausewayError CW_ERR_SWITCH_INVALID naming the field at fault.
 */
export function parseSwitch(key: string, value: Uint8Array | string): SwitchState | undefined {
  const { scope, target } = parseSwitchKey(key);
  let doc: unknown;
  try {
    doc = JSON.parse(typeof value === "string" ? value : utf8.decode(value));
  } catch (err) {
    throw invalid(`switch ${key}: the value is not JSON (${(err as Error).message})`);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) throw invalid(`switch ${key}: the value is not a JSON object`);
  const v = doc as Record<string, unknown>;
  if (typeof v.paused !== "boolean") throw invalid(`switch ${key}: paused must be true or false`);
  if (!v.paused) return undefined;
  const text = (field: string, allowEmpty = false): string => {
    const s = v[field];
    if (typeof s !== "string" || (!allowEmpty && s === "") || s.length > MAX_TEXT) throw invalid(`switch ${key}: ${field} must be a${allowEmpty ? "" : " non-empty"} string of at most ${MAX_TEXT} characters`);
    return s;
  };
  const time = (field: string): string => {
    const s = text(field);
    try {
      normalizeTime(s, field);
    } catch {
      throw invalid(`switch ${key}: ${field} ${JSON.stringify(s)} is not an RFC 3339 time`);
    }
    return s;
  };
  const expires = v.expires_at ?? null;
  if (expires !== null && typeof expires !== "string") throw invalid(`switch ${key}: expires_at must be an RFC 3339 time or null`);
  return Object.freeze({
    key, scope, target, paused: true,
    reason: text("reason"), by: text("by", true), at: time("at"),
    expires_at: expires === null ? null : time("expires_at"),
    decision_id: text("decision_id", true),
  });
}

/** The bytes stored for a value (field order as documented). */
export function encodeSwitch(value: SwitchValue): string {
  const { paused, reason, by, at, expires_at, decision_id } = value;
  return JSON.stringify({ paused, reason, by, at, expires_at, decision_id });
}

/** Milliseconds since the epoch at which `state` ends by itself; Infinity when it lasts until resumed. */
export function switchExpiry(state: Pick<SwitchValue, "expires_at">): number {
  return state.expires_at === null ? Infinity : Date.parse(normalizeTime(state.expires_at, "expires_at"));
}

/**
 * Watches the switch bucket and resolves once the state present when the watch began is loaded. Agents only
 * need read access (`kv.read: causeway_switches` in principals.json). ConfigError CW_ERR_CONFIG when the bucket
 * does not exist, CW_ERR_PERMISSION_DENIED when the connection may not read it.
 */
export async function watchSwitches(nc: NatsConnection, opts: WatchSwitchesOptions = {}): Promise<SwitchWatcher> {
  const watcher = new LiveSwitches();
  watcher.following = await followBucket(nc, {
    bucket: opts.bucket ?? KvBucket.Switches, what: "the kill switches", createdBy: MESH_BUCKETS[KvBucket.Switches].createdBy,
    consequence: "pauses and resumes", apply: (change, report) => watcher.apply(change, report),
    ...(opts.onProblem && { onProblem: opts.onProblem }), ...(opts.timeoutMs !== undefined && { timeoutMs: opts.timeoutMs }),
    ...(opts.checkMs !== undefined && { checkMs: opts.checkMs }),
  });
  return watcher;
}


/** A recorded pause with its expiry parsed once, so isPaused compares numbers. */
interface Held {
  readonly state: SwitchState;
  readonly until: number;
}

class LiveSwitches implements SwitchWatcher {
  #mesh: Held | undefined;
  readonly #principals = new Map<string, Held>();
  readonly #capabilities = new Map<string, Map<number, Held>>();
  readonly #listeners = new Set<(change: SwitchChange) => void>();
  /** Set by watchSwitches once the bucket's initial state is applied. */
  following: Following | undefined;

  get lost(): Promise<CausewayError> {
    return this.following?.lost ?? new Promise<never>(() => undefined);
  }

  isPaused(subject: SwitchSubject, now?: number | Date): SwitchState | undefined {
    const t = now === undefined ? Date.now() : typeof now === "number" ? now : now.getTime();
    const mesh = this.#mesh;
    if (mesh !== undefined && mesh.until > t) return mesh.state;
    const principal = this.#principals.get(subject.principal);
    if (principal !== undefined && principal.until > t) return principal.state;
    const capability = this.#capabilities.get(subject.capability)?.get(subject.major);
    if (capability !== undefined && capability.until > t) return capability.state;
    return undefined;
  }

  list(now?: number | Date): readonly SwitchState[] {
    const t = now === undefined ? Date.now() : typeof now === "number" ? now : now.getTime();
    return this.#all().filter((h) => h.until > t).map((h) => h.state);
  }

  recorded(): readonly SwitchState[] {
    return this.#all().map((h) => h.state);
  }

  onChange(listener: (change: SwitchChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async close(): Promise<void> {
    await this.following?.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }


  #all(): Held[] {
    const byTarget = (a: Held, b: Held) => a.state.target.localeCompare(b.state.target);
    const capabilities = [...this.#capabilities.values()].flatMap((m) => [...m.values()]);
    return [...(this.#mesh ? [this.#mesh] : []), ...[...this.#principals.values()].sort(byTarget), ...capabilities.sort(byTarget)];
  }



  /** One change of the bucket, then the listeners. */
  apply(change: KvWatchEntry, report: (err: CausewayError) => void): void {
    let where: { scope: SwitchScopeValue; target: string };
    try {
      where = parseSwitchKey(change.key);
    } catch (err) {
      report(err as CausewayError); // a key that is no switch switches nothing
      return;
    }
    let state: SwitchState | undefined;
    if (change.operation === "PUT") {
      try {
        state = parseSwitch(change.key, change.value);
      } catch (err) {
        // Fail closed: an unreadable switch pauses what it names until it is rewritten or deleted.
        report(err as CausewayError);
        state = Object.freeze({
          key: change.key, ...where, paused: true, reason: `unreadable switch value: ${(err as Error).message}`, by: "", at: change.created.toISOString(),
          expires_at: null, decision_id: "",
        });
      }
    }
    const held = state === undefined ? undefined : { state, until: safeExpiry(state) };
    switch (where.scope) {
      case SwitchScope.Mesh:
        this.#mesh = held;
        break;
      case SwitchScope.Principal:
        if (held) this.#principals.set(where.target, held);
        else this.#principals.delete(where.target);
        break;
      case SwitchScope.Capability: {
        const [name, v] = where.target.split(".") as [string, string];
        const major = Number(v.slice(1));
        let byMajor = this.#capabilities.get(name);
        if (held) {
          if (byMajor === undefined) this.#capabilities.set(name, (byMajor = new Map()));
          byMajor.set(major, held);
        } else if (byMajor !== undefined) {
          byMajor.delete(major);
          if (byMajor.size === 0) this.#capabilities.delete(name);
        }
        break;
      }
    }
    const event: SwitchChange = Object.freeze({ key: change.key, ...where, state, revision: change.revision });
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A failing listener must not stop the watch.
      }
    }
  }

}

function safeExpiry(state: SwitchState): number {
  try {
    return switchExpiry(state);
  } catch {
    return Infinity; // parseSwitch validated it; an unparsable expiry would fail closed anyway
  }
}

function invalid(message: string): CausewayError {
  return new CausewayError(ErrorCode.SwitchInvalid, message);
}


