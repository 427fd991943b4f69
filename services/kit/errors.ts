// Every error a user can see carries a stable code (fastify's FST_ERR_* pattern). docs/errors.md
// documents each code, and test/kit/errors.test.ts fails when one is missing there.

/** Stable error codes. Never rename one: operators and upstream systems match on them. */
export const ErrorCode = {
  // Decoding a CloudEvent from a NATS message or JSON (quarantine reason: decode_error)
  DecodeHeader: "CW_ERR_DECODE_HEADER",
  DecodeJson: "CW_ERR_DECODE_JSON",
  MissingAttribute: "CW_ERR_MISSING_ATTRIBUTE",
  InvalidAttribute: "CW_ERR_INVALID_ATTRIBUTE",
  UnsupportedSpecVersion: "CW_ERR_UNSUPPORTED_SPECVERSION",
  PayloadTooLarge: "CW_ERR_PAYLOAD_TOO_LARGE",
  // Verifying the DSSE material (quarantine reasons: bad_signature, unknown_key, revoked_key, unauthorized_emitter)
  Unsigned: "CW_ERR_UNSIGNED",
  MaterialCorrupt: "CW_ERR_MATERIAL_CORRUPT",
  UnknownPayloadType: "CW_ERR_UNKNOWN_PAYLOAD_TYPE",
  SignedExtAttrsInvalid: "CW_ERR_SIGNEDEXTATTRS_INVALID",
  UnknownKey: "CW_ERR_UNKNOWN_KEY",
  BadSignature: "CW_ERR_BAD_SIGNATURE",
  CoreDigestMismatch: "CW_ERR_CORE_DIGEST_MISMATCH",
  ExtDigestMismatch: "CW_ERR_EXT_DIGEST_MISMATCH",
  // The trust store: who may sign, when, what (quarantine reasons: unknown_key, revoked_key, unauthorized_emitter, policy_denied)
  KeyNotValid: "CW_ERR_KEY_NOT_VALID",
  KeyRevoked: "CW_ERR_KEY_REVOKED",
  UnauthorizedEmitter: "CW_ERR_UNAUTHORIZED_EMITTER",
  UnauthorizedAddress: "CW_ERR_UNAUTHORIZED_ADDRESS",
  TrustEntryInvalid: "CW_ERR_TRUST_ENTRY_INVALID",
  // The agent pipeline (quarantine reasons: expired, unknown_capability, policy verdicts)
  Expired: "CW_ERR_EXPIRED",
  UnknownCapability: "CW_ERR_UNKNOWN_CAPABILITY",
  PolicyVerdict: "CW_ERR_POLICY_VERDICT",
  UndeclaredOutput: "CW_ERR_UNDECLARED_OUTPUT",
  // The coordinator: critical handoffs, leases, approvals, quarantine operations, kill switches
  PolicyInvalid: "CW_ERR_POLICY_INVALID",
  NoGrant: "CW_ERR_NO_GRANT",
  LeaseHeld: "CW_ERR_LEASE_HELD",
  LeaseExpired: "CW_ERR_LEASE_EXPIRED",
  NotApprover: "CW_ERR_NOT_APPROVER",
  NoPendingApproval: "CW_ERR_NO_PENDING_APPROVAL",
  ApprovalTimeout: "CW_ERR_APPROVAL_TIMEOUT",
  QuarantineNotFound: "CW_ERR_QUARANTINE_NOT_FOUND",
  ReleaseRefused: "CW_ERR_RELEASE_REFUSED",
  AlreadySettled: "CW_ERR_ALREADY_SETTLED",
  SwitchInvalid: "CW_ERR_SWITCH_INVALID",
  // Producing signed events
  SignRefused: "CW_ERR_SIGN_REFUSED",
  KeyInvalid: "CW_ERR_KEY_INVALID",
  // Schemas (quarantine reason: schema_violation)
  SchemaViolation: "CW_ERR_SCHEMA_VIOLATION",
  UnknownSchema: "CW_ERR_UNKNOWN_SCHEMA",
  SchemaInvalid: "CW_ERR_SCHEMA_INVALID",
  // Subjects
  InvalidSubject: "CW_ERR_INVALID_SUBJECT",
  InvalidToken: "CW_ERR_INVALID_TOKEN",
  // The gateway: upstream systems publishing over HTTP and NATS
  Unauthenticated: "CW_ERR_UNAUTHENTICATED",
  UnknownUpstream: "CW_ERR_UNKNOWN_UPSTREAM",
  SourceNotAllowed: "CW_ERR_SOURCE_NOT_ALLOWED",
  SignerMismatch: "CW_ERR_SIGNER_MISMATCH",
  NoRoute: "CW_ERR_NO_ROUTE",
  RateLimited: "CW_ERR_RATE_LIMITED",
  Unavailable: "CW_ERR_UNAVAILABLE",
  HttpEndpoint: "CW_ERR_HTTP_ENDPOINT",
  UpstreamsInvalid: "CW_ERR_UPSTREAMS_INVALID",
  RoutesInvalid: "CW_ERR_ROUTES_INVALID",
  // Configuration, identities, streams, CLI
  Config: "CW_ERR_CONFIG",
  PrincipalsInvalid: "CW_ERR_PRINCIPALS_INVALID",
  UnknownPrincipal: "CW_ERR_UNKNOWN_PRINCIPAL",
  SeedExists: "CW_ERR_SEED_EXISTS",
  SeedMissing: "CW_ERR_SEED_MISSING",
  StreamConfigInvalid: "CW_ERR_STREAM_CONFIG_INVALID",
  DestructiveChange: "CW_ERR_DESTRUCTIVE_CHANGE",
  Usage: "CW_ERR_USAGE",
  PermissionDenied: "CW_ERR_PERMISSION_DENIED",
  // An error without a code of its own (a bug, or a library's exception): recorded and answered, never hidden
  Internal: "CW_ERR_INTERNAL",
  // Lineage's store
  LineageStore: "CW_ERR_LINEAGE_STORE",
  // Lineage queries and proofs
  LineageNotFound: "CW_ERR_LINEAGE_NOT_FOUND",
  LineageAmbiguousId: "CW_ERR_LINEAGE_AMBIGUOUS_ID",
  LineageNotCovered: "CW_ERR_LINEAGE_NOT_COVERED",
  LineageCheckpointMismatch: "CW_ERR_LINEAGE_CHECKPOINT_MISMATCH",
  // Lineage's API: a missing or malformed parameter, an unknown operation
  LineageQuery: "CW_ERR_LINEAGE_QUERY",
} as const;

/** One of the stable error codes. */
export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

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
  PolicyDenied: "policy_denied",
  LowConfidence: "low_confidence",
  MissingEvidence: "missing_evidence",
  MaxDeliveries: "max_deliveries",
  Terminated: "terminated",
  ApprovalTimeout: "approval_timeout",
} as const;

/** One of the quarantine reasons. */
export type QuarantineReasonValue = (typeof QuarantineReason)[keyof typeof QuarantineReason];

/** Base of every Causeway error: a stable `code`, a human message, an optional `cause`. */
export class CausewayError extends Error {
  readonly code: ErrorCodeValue;
  constructor(code: ErrorCodeValue, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
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
