// Every error a user can see carries a stable code (fastify's FST_ERR_* pattern). docs/errors.md
// documents each code, and test/kit/errors.test.ts fails when one is missing there.

/**
 * Every code with the HTTP status it is answered with (fastify's `createError(code, message, status)`): over HTTP,
 * in a control endpoint's `Nats-Service-Error-Code` header, in the gateway's `status` member. No service picks
 * a status of its own; change it here and in docs/errors.md.
 */
const ERRORS = {
  // Decoding a CloudEvent from a NATS message or JSON (quarantine reason: decode_error)
  DecodeHeader: { code: "CW_ERR_DECODE_HEADER", status: 400 },
  DecodeJson: { code: "CW_ERR_DECODE_JSON", status: 400 },
  MissingAttribute: { code: "CW_ERR_MISSING_ATTRIBUTE", status: 400 },
  InvalidAttribute: { code: "CW_ERR_INVALID_ATTRIBUTE", status: 400 },
  UnsupportedSpecVersion: { code: "CW_ERR_UNSUPPORTED_SPECVERSION", status: 400 },
  PayloadTooLarge: { code: "CW_ERR_PAYLOAD_TOO_LARGE", status: 413 },
  AttributesTooLarge: { code: "CW_ERR_ATTRIBUTES_TOO_LARGE", status: 413 },
  // Verifying the DSSE material (quarantine reasons: bad_signature, unknown_key, revoked_key, unauthorized_emitter)
  Unsigned: { code: "CW_ERR_UNSIGNED", status: 403 },
  MaterialCorrupt: { code: "CW_ERR_MATERIAL_CORRUPT", status: 403 },
  UnknownPayloadType: { code: "CW_ERR_UNKNOWN_PAYLOAD_TYPE", status: 403 },
  SignedExtAttrsInvalid: { code: "CW_ERR_SIGNEDEXTATTRS_INVALID", status: 403 },
  UnknownKey: { code: "CW_ERR_UNKNOWN_KEY", status: 403 },
  BadSignature: { code: "CW_ERR_BAD_SIGNATURE", status: 403 },
  CoreDigestMismatch: { code: "CW_ERR_CORE_DIGEST_MISMATCH", status: 403 },
  ExtDigestMismatch: { code: "CW_ERR_EXT_DIGEST_MISMATCH", status: 403 },
  EnvelopeTooLarge: { code: "CW_ERR_ENVELOPE_TOO_LARGE", status: 413 },
  // The trust store: who may sign, when, what (quarantine reasons: unknown_key, revoked_key, unauthorized_emitter, policy_denied)
  KeyNotValid: { code: "CW_ERR_KEY_NOT_VALID", status: 403 },
  KeyRevoked: { code: "CW_ERR_KEY_REVOKED", status: 403 },
  UnauthorizedEmitter: { code: "CW_ERR_UNAUTHORIZED_EMITTER", status: 403 },
  UnauthorizedAddress: { code: "CW_ERR_UNAUTHORIZED_ADDRESS", status: 403 },
  TrustEntryInvalid: { code: "CW_ERR_TRUST_ENTRY_INVALID", status: 500 },
  SourceMismatch: { code: "CW_ERR_SOURCE_MISMATCH", status: 403 },
  // The agent pipeline (quarantine reasons: expired, unknown_capability, unsupported_version, policy verdicts)
  Expired: { code: "CW_ERR_EXPIRED", status: 400 },
  UnknownCapability: { code: "CW_ERR_UNKNOWN_CAPABILITY", status: 400 },
  UnsupportedVersion: { code: "CW_ERR_UNSUPPORTED_VERSION", status: 400 },
  PolicyVerdict: { code: "CW_ERR_POLICY_VERDICT", status: 403 },
  UndeclaredOutput: { code: "CW_ERR_UNDECLARED_OUTPUT", status: 500 },
  // A flow past its loop guards (quarantine reason: loop_detected)
  LoopDetected: { code: "CW_ERR_LOOP_DETECTED", status: 508 },
  // Priority lanes (issue 16): an input whose signed priority is not the one of the subject it arrived on
  // (quarantine reason: policy_denied); infra/priorities.json failing its schema
  PriorityMismatch: { code: "CW_ERR_PRIORITY_MISMATCH", status: 403 },
  PrioritiesInvalid: { code: "CW_ERR_PRIORITIES_INVALID", status: 500 },
  // Flow control (issue 16): a flow past its budget (quarantine reason: budget_exceeded); a tenant past its quota
  // and a flow shed under backpressure (the gateway's 429s, with Retry-After)
  BudgetExceeded: { code: "CW_ERR_BUDGET_EXCEEDED", status: 402 },
  QuotaExceeded: { code: "CW_ERR_QUOTA_EXCEEDED", status: 429 },
  Overloaded: { code: "CW_ERR_OVERLOADED", status: 429 },
  // The coordinator: critical handoffs, leases, approvals, quarantine operations, kill switches
  PolicyInvalid: { code: "CW_ERR_POLICY_INVALID", status: 500 },
  NoGrant: { code: "CW_ERR_NO_GRANT", status: 403 },
  LeaseHeld: { code: "CW_ERR_LEASE_HELD", status: 409 },
  LeaseExpired: { code: "CW_ERR_LEASE_EXPIRED", status: 410 },
  NotApprover: { code: "CW_ERR_NOT_APPROVER", status: 403 },
  NoPendingApproval: { code: "CW_ERR_NO_PENDING_APPROVAL", status: 404 },
  ApprovalTimeout: { code: "CW_ERR_APPROVAL_TIMEOUT", status: 410 },
  ProducerKeyRevoked: { code: "CW_ERR_PRODUCER_KEY_REVOKED", status: 409 },
  QuarantineNotFound: { code: "CW_ERR_QUARANTINE_NOT_FOUND", status: 404 },
  ReleaseRefused: { code: "CW_ERR_RELEASE_REFUSED", status: 409 },
  AlreadySettled: { code: "CW_ERR_ALREADY_SETTLED", status: 409 },
  SwitchInvalid: { code: "CW_ERR_SWITCH_INVALID", status: 400 },
  ReleaseTarget: { code: "CW_ERR_RELEASE_TARGET", status: 409 },
  // Producing signed events
  SignRefused: { code: "CW_ERR_SIGN_REFUSED", status: 403 },
  KeyInvalid: { code: "CW_ERR_KEY_INVALID", status: 400 },
  MsgIdTaken: { code: "CW_ERR_MSG_ID_TAKEN", status: 409 },
  // Schemas (quarantine reason: schema_violation)
  SchemaViolation: { code: "CW_ERR_SCHEMA_VIOLATION", status: 400 },
  UnknownSchema: { code: "CW_ERR_UNKNOWN_SCHEMA", status: 400 },
  SchemaInvalid: { code: "CW_ERR_SCHEMA_INVALID", status: 500 },
  // Subjects
  InvalidSubject: { code: "CW_ERR_INVALID_SUBJECT", status: 400 },
  InvalidToken: { code: "CW_ERR_INVALID_TOKEN", status: 400 },
  // The gateway: upstream systems publishing over HTTP and NATS
  Unauthenticated: { code: "CW_ERR_UNAUTHENTICATED", status: 401 },
  UnknownUpstream: { code: "CW_ERR_UNKNOWN_UPSTREAM", status: 403 },
  SourceNotAllowed: { code: "CW_ERR_SOURCE_NOT_ALLOWED", status: 403 },
  SignerMismatch: { code: "CW_ERR_SIGNER_MISMATCH", status: 403 },
  UpstreamContext: { code: "CW_ERR_UPSTREAM_CONTEXT", status: 403 },
  NoRoute: { code: "CW_ERR_NO_ROUTE", status: 400 },
  RateLimited: { code: "CW_ERR_RATE_LIMITED", status: 429 },
  Unstorable: { code: "CW_ERR_UNSTORABLE", status: 413 },
  Unavailable: { code: "CW_ERR_UNAVAILABLE", status: 503 },
  HttpEndpoint: { code: "CW_ERR_HTTP_ENDPOINT", status: 404 },
  HttpMethod: { code: "CW_ERR_HTTP_METHOD", status: 405 },
  UpstreamsInvalid: { code: "CW_ERR_UPSTREAMS_INVALID", status: 500 },
  TenantsInvalid: { code: "CW_ERR_TENANTS_INVALID", status: 500 },
  BackpressureInvalid: { code: "CW_ERR_BACKPRESSURE_INVALID", status: 500 },
  RoutesInvalid: { code: "CW_ERR_ROUTES_INVALID", status: 500 },
  // Configuration, identities, streams, CLI
  Config: { code: "CW_ERR_CONFIG", status: 500 },
  RouteInvalid: { code: "CW_ERR_ROUTE_INVALID", status: 400 },
  RolloutInvalid: { code: "CW_ERR_ROLLOUT_INVALID", status: 400 },
  RolloutConflict: { code: "CW_ERR_ROLLOUT_CONFLICT", status: 409 },
  PrincipalsInvalid: { code: "CW_ERR_PRINCIPALS_INVALID", status: 500 },
  UnknownPrincipal: { code: "CW_ERR_UNKNOWN_PRINCIPAL", status: 400 },
  SeedExists: { code: "CW_ERR_SEED_EXISTS", status: 409 },
  SeedMissing: { code: "CW_ERR_SEED_MISSING", status: 500 },
  NotAuthorized: { code: "CW_ERR_NOT_AUTHORIZED", status: 401 },
  ScaffoldExists: { code: "CW_ERR_SCAFFOLD_EXISTS", status: 409 },
  StreamConfigInvalid: { code: "CW_ERR_STREAM_CONFIG_INVALID", status: 500 },
  DestructiveChange: { code: "CW_ERR_DESTRUCTIVE_CHANGE", status: 409 },
  Usage: { code: "CW_ERR_USAGE", status: 400 },
  PermissionDenied: { code: "CW_ERR_PERMISSION_DENIED", status: 403 },
  // An error without a code of its own (a bug, or a library's exception): recorded and answered, never hidden
  Internal: { code: "CW_ERR_INTERNAL", status: 500 },
  // Lineage's store
  LineageStore: { code: "CW_ERR_LINEAGE_STORE", status: 503 },
  // Lineage queries and proofs
  LineageNotFound: { code: "CW_ERR_LINEAGE_NOT_FOUND", status: 404 },
  LineageAmbiguousId: { code: "CW_ERR_LINEAGE_AMBIGUOUS_ID", status: 409 },
  LineageNotCovered: { code: "CW_ERR_LINEAGE_NOT_COVERED", status: 409 },
  LineageCheckpointMismatch: { code: "CW_ERR_LINEAGE_CHECKPOINT_MISMATCH", status: 500 },
  // Lineage's API: a missing or malformed parameter, an unknown operation
  LineageQuery: { code: "CW_ERR_LINEAGE_QUERY", status: 400 },
  // Control endpoints: a request whose reply subject is not the requester's inbox is not answered
  ReplyRefused: { code: "CW_ERR_REPLY_REFUSED", status: 403 },
  // Agent implementation versions run side by side (principals.json `versions`), and their shadow replay
  UnknownVersion: { code: "CW_ERR_UNKNOWN_VERSION", status: 400 },
  VersionMismatch: { code: "CW_ERR_VERSION_MISMATCH", status: 500 },
  ReplayUnsupported: { code: "CW_ERR_REPLAY_UNSUPPORTED", status: 400 },
} as const satisfies Readonly<Record<string, { readonly code: `CW_ERR_${string}`; readonly status: number }>>;

type ErrorTable = typeof ERRORS;

/** Stable error codes, by name. Never rename one: operators and upstream systems match on them. */
export const ErrorCode = Object.freeze(Object.fromEntries(Object.entries(ERRORS).map(([name, e]) => [name, e.code]))) as {
  readonly [K in keyof ErrorTable]: ErrorTable[K]["code"];
};

/** One of the stable error codes. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

const STATUS: ReadonlyMap<string, number> = new Map(Object.values(ERRORS).map((e) => [e.code, e.status]));

/** The HTTP status `code` is answered with. */
export function statusOf(code: ErrorCodeValue): number {
  return STATUS.get(code)!;
}

/** True when `value` is one of the stable error codes (e.g. one read from a reply). */
export function isErrorCode(value: unknown): value is ErrorCodeValue {
  return typeof value === "string" && STATUS.has(value);
}

/** Why a message went to quarantine; the typed reasons of DESIGN.md's pipeline table. */
export const QuarantineReason = {
  DecodeError: "decode_error",
  BadSignature: "bad_signature",
  UnknownKey: "unknown_key",
  RevokedKey: "revoked_key",
  UnauthorizedEmitter: "unauthorized_emitter",
  Expired: "expired",
  SchemaViolation: "schema_violation",
  UnknownCapability: "unknown_capability",
  UnsupportedVersion: "unsupported_version",
  PolicyDenied: "policy_denied",
  LowConfidence: "low_confidence",
  MissingEvidence: "missing_evidence",
  MaxDeliveries: "max_deliveries",
  Terminated: "terminated",
  ApprovalTimeout: "approval_timeout",
  /** A flow past its loop guards: too deep a causal chain, or too many events for one capability (loop-guards.ts). */
  LoopDetected: "loop_detected",
  /** Work of a flow that would spend past the flow's budget (cost units, tokens or steps; budgets.ts). */
  BudgetExceeded: "budget_exceeded",
} as const;

/** One of the quarantine reasons. */
export type QuarantineReasonValue = (typeof QuarantineReason)[keyof typeof QuarantineReason];

/** Options of a {@link CausewayError}: the standard `cause`, and `details` a reply may carry. */
export interface CausewayErrorOptions extends ErrorOptions {
  /** Structured facts for the requester (answered as `error.details`); never secrets, never a stack. */
  readonly details?: Readonly<Record<string, unknown>>;
}

/** Base of every Causeway error: a stable `code`, a human message, optional `details` and `cause`. */
export class CausewayError extends Error {
  readonly code: ErrorCodeValue;
  readonly details: Readonly<Record<string, unknown>> | undefined;
  constructor(code: ErrorCodeValue, message: string, options?: CausewayErrorOptions) {
    super(message, options);
    this.code = code;
    this.details = options?.details;
    this.name = new.target.name;
  }

  /** The HTTP status of the code (services/kit/errors.ts's table). */
  get status(): number {
    return statusOf(this.code);
  }
}

/** A message could not be decoded into a valid CloudEvent. */
export class DecodeError extends CausewayError {
  /** The attribute (or header) at fault, when one is. */
  readonly attribute: string | undefined;
  constructor(code: ErrorCodeValue, message: string, attribute?: string, options?: ErrorOptions) {
    super(code, message, options);
    this.attribute = attribute;
  }
}

/** A signature or its material did not verify; `reason` is the quarantine reason it maps to. */
export class VerificationError extends CausewayError {
  readonly reason: QuarantineReasonValue;
  constructor(code: ErrorCodeValue, message: string, reason: QuarantineReasonValue = QuarantineReason.BadSignature, options?: ErrorOptions) {
    super(code, message, options);
    this.reason = reason;
  }
}

/** Event data did not match its schema, or the schema is unknown or malformed. */
export class SchemaError extends CausewayError {
  /** Each failed check: the JSON pointer into the instance and what was expected there. */
  readonly violations: readonly { instancePath: string; message: string }[];
  constructor(code: ErrorCodeValue, message: string, violations: readonly { instancePath: string; message: string }[] = [], options?: ErrorOptions) {
    super(code, message, options);
    this.violations = violations;
  }
}

/** A subject or subject token does not follow the grammar. */
export class SubjectError extends CausewayError {}

/** Bad configuration, identities, stream definitions or command-line usage. */
export class ConfigError extends CausewayError {}

/**
 * Something the mesh's operator tooling creates is not there (yet): a stream, a durable consumer, a KV bucket,
 * or a bucket that did not load in time. Its code stays CW_ERR_CONFIG and its message names the command that
 * creates it; a starting service waits for it (`isNotReady`, services/kit/transient.ts) instead of exiting at once.
 */
export class NotReadyError extends ConfigError {}

/** True when `err` is a Causeway error (optionally with the given code). */
export function isCausewayError(err: unknown, code?: ErrorCodeValue): err is CausewayError {
  return err instanceof CausewayError && (code === undefined || err.code === code);
}

/**
 * The NATS server refused a publish or subscribe under the connection's permissions, or undefined when `err`
 * is something else. nats.js reports it as a PermissionViolationError, sometimes as the cause of another error.
 */
export function permissionDenied(err: unknown, who: string): ConfigError | undefined {
  for (let e: unknown = err; e instanceof Error; e = e.cause) {
    if (e.name === "PermissionViolationError") {
      return new ConfigError(ErrorCode.PermissionDenied, `the server refused ${who}: ${e.message}`, { cause: err });
    }
  }
  return undefined;
}

/** The quarantine reason for a failure in pipeline steps 1–6. */
export function quarantineReasonOf(err: unknown): QuarantineReasonValue {
  if (err instanceof VerificationError) return err.reason;
  if (err instanceof SchemaError) return QuarantineReason.SchemaViolation;
  return QuarantineReason.DecodeError;
}
