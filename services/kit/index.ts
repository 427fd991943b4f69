// The table of contents of the kit: everything a Causeway service builds on, one named export at a time.
// Services import from here, never from each other's folders.

// Errors with stable codes (documented in docs/errors.md) and the quarantine reasons they map to
export {
  CausewayError, ConfigError, DecodeError, ErrorCode, QuarantineReason, SchemaError, SubjectError, VerificationError,
  isCausewayError, isErrorCode, permissionDenied, quarantineReasonOf, statusOf,
} from "./errors.ts";
export type { CausewayErrorOptions, ErrorCodeValue, QuarantineReasonValue } from "./errors.ts";

// CloudEvents: the immutable event, the NATS binding, the JSON format
export { CORE_ATTRIBUTES, createEvent, dataJson, dataText, isCoreAttribute, isExtensionName, normalizeTime, withAttributes } from "./event.ts";
export type { CloudEvent, EventInit, ExtensionValue } from "./event.ts";
export { DEFAULT_MAX_DATA_BYTES, NatsBinding, STRUCTURED_CONTENT_TYPE, STRUCTURED_MARGIN_BYTES } from "./binding.ts";
export type { DecodeOptions, NatsMessage } from "./binding.ts";
export { decodeJsonBatch, decodeJsonEvent, encodeJsonEvent, isJsonContentType } from "./json-format.ts";
export { decodeHeaderValue, encodeHeaderValue } from "./percent.ts";

// Signing and verification: the Verifiability extension (DSSE) and keys
export {
  ConsumerMode, DSSE_MATERIAL, DSSE_PAYLOAD_TYPE, KNOWN_EXTENSION_TYPES, canonicalValue, coreDigest, extDigest, openEnvelope, pae,
  parseVerificationMaterial, signBytes, signEvent, signedExtAttrsProblem, verifyBytes, verifyEvent,
} from "./verifiability.ts";
export type {
  AttributeType, ConsumerModeValue, DsseEnvelope, SignOptions, Verification, VerificationMaterial, VerifiedEvent, VerifyOptions,
} from "./verifiability.ts";
export { SignatureAlgorithm, createKeyring, p256Key, signingKeyFromNkeySeed, verificationKeyFromNkey } from "./keys.ts";
export type { KeyResolver, SignatureAlgorithmValue, SigningKey, VerificationKey } from "./keys.ts";

// Context that flows from input to output: ids, correlation and causation, trace context, expiry
export {
  ContextExtension, childTraceparent, correlationIdOf, deriveEventId, expiryIn, isExpired, newTraceparent, outputEventInit,
  parseTraceparent, principalSource, uuidv7,
} from "./context.ts";
export type { OutputSpec, TraceParent } from "./context.ts";

// The live trust store: who may sign what, when, and address whom (KV causeway_trust)
export {
  encodeTrustRecord, formatTime, openTrustStore, parseTrustEntry, storedMessage,
} from "./trust.ts";
export type {
  OpenTrustStoreOptions, StoredMessage, TrustEntry, TrustRecord, TrustStore, TrustVerifyOptions, TrustedEvent, VerifyMessageOptions,
} from "./trust.ts";

// Agents: the contract, the runtime, the process entry, quarantine and replay protection
export { RetryableError, agentStatsEndpoint } from "./agent-api.ts";
export type { Agent, AgentDefinition, AgentStats, Cause, Emit, HandlerContext, HandlerInput, PolicyVerdict } from "./agent-api.ts";
export { startAgent } from "./agent.ts";
export type { AgentOptions } from "./agent.ts";
export { runAgentProcess } from "./agent-process.ts";
export { consumeDurable } from "./consumer.ts";
export type { ConsumeOptions, DurableConsumer } from "./consumer.ts";
export { drainSignal, untilStop } from "./signals.ts";
export { QuarantineHeader, originalOf, publishQuarantineCopy, quarantine, quarantineHeaders } from "./quarantine.ts";
export type { QuarantineNote, QuarantineOriginal } from "./quarantine.ts";
export { openProcessedSet } from "./processed.ts";
export { encodeLease, leaseKey, openLeases, readLease } from "./leases.ts";
export type { Lease, LeaseState } from "./leases.ts";
export type { ProcessedSet } from "./processed.ts";

// Telemetry and logs (import services/kit/telemetry.ts with --import to start the SDK)
export { MessagingOperation, SpanAttribute, TRACER_NAME, endSpan, startProcessSpan, startSendSpan, traceparentOf, tracestateOf } from "./tracing.ts";
export type { MessagingOperationValue, ProcessSpanOptions, TracedEvent } from "./tracing.ts";
export { AgentMetric, AgentMetricAttribute, METER_NAME, createAgentMetrics } from "./metrics.ts";
export type { AgentMetrics } from "./metrics.ts";
export { LOG_LEVELS, REDACTED_FIELDS, createLogger, eventLogger } from "./log.ts";
export type { EventLogFields, LoggerOptions } from "./log.ts";

// Schemas and subjects
export { SCHEMA_DIALECT, createSchemaRegistry, defaultSchemaDir } from "./schemas.ts";
export type { DataValidator, SchemaRegistry, SchemaRegistryOptions, SchemaViolation } from "./schemas.ts";
export {
  DEFAULT_PREFIX, StreamName, SubjectKind, SubjectToken, TOKEN_RULE, capabilitySubject, checkpointSubject, controlSubject, decisionSubject,
  eventSubject, handoffSubject, ingestSubject, parseSubject, quarantineSubject, streamFor, subjectsFor,
} from "./subjects.ts";
export type {
  CapSubject, CheckpointSubject, CtlSubject, DecisionSubject, EvtSubject, HandoffSubject, IngestSubject, MeshSubjects, ParsedSubject,
  QuarantineSubject, StreamNameValue, SubjectKindValue,
} from "./subjects.ts";

// Reading a stream by sequence (direct get)
export { readStream } from "./stream-read.ts";

// Bearer tokens for the HTTP APIs: digests compared in constant time, development token files
export { bearerMatcher, devTokenPath, ensureTokenFile, isTokenDigest, tokenDigestHex } from "./bearer.ts";

// Publishing to streams with many acks in flight (one inbox subscription, not one request per message)
export { StreamPublishError, WRONG_LAST_SEQUENCE, createStreamPublisher } from "./stream-publisher.ts";
export type { PubAck, StreamPublishOptions, StreamPublisher } from "./stream-publisher.ts";

// Streams and consumers as files, applied idempotently
export {
  CAPABILITY_TEMPLATE, FILES_PREFIX, applyStreams, capabilityConsumerConfig, defaultStreamsDir, describeResult, diffConfig, loadCapabilityTemplate,
  loadStreamDefinitions, loadStreamDefinitionsSync, parseConsumerConfig, parseStreamConfig, renderCapabilityConsumer, renderConsumerConfig,
  renderStreamConfig, renderStreamDefinitions, renderSubject,
} from "./streams.ts";
export type {
  ApplyOptions, ApplyReport, ApplyResult, ApplyTarget, ChangeEffect, ConsumerDefinition, ConsumerFileConfig, FieldChange, StreamDefinition,
  StreamFileConfig,
} from "./streams.ts";

// Decisions: signed grants, approvals, releases, rejections, kill switches (MESH_DECISION)
export { DecisionKind, decisionEvent, decisionSchema, decisionSubjectOf, publishDecision } from "./decisions.ts";
export type { DecisionAbout, DecisionKindValue, DecisionOptions } from "./decisions.ts";

// Kill switches: the state the coordinator writes and agents watch (KV causeway_switches); the coordinator's
// endpoints that switch them are in services/coordinator/contract.ts
export {
  MESH_TARGET, PAUSED_UNTIL_RESUMED, SwitchScope, encodeSwitch, parseSwitch, parseSwitchKey, switchExpiry, switchKey, watchSwitches,
} from "./switches.ts";
export type {
  SwitchChange, SwitchScopeValue, SwitchState, SwitchSubject, SwitchValue, SwitchWatcher, WatchSwitchesOptions,
} from "./switches.ts";

// The mesh's KV buckets: one table; operator tooling creates them, services only open them
export { MESH_BUCKETS, STREAMS_APPLY, TRUST_SEED, bucketSpec, createMeshBucket, ensureMeshBuckets, openMeshBucket } from "./buckets.ts";
export type { BucketSpec, EnsureBucketsOptions } from "./buckets.ts";

// The mesh layout: prefix, streams, durables and buckets, read once from infra/ and streams/
export { defaultLayout, loadLayout } from "./layout.ts";
export type { LayoutOptions, MeshLayout } from "./layout.ts";

// The control plane: one contract for every request/reply endpoint on <prefix>.ctl.<service>.<action>
export {
  addControlEndpoint, controlEndpoint, controlRequest, controlSubjectOf, isInboxOf, isNoResponders, jsonObjectBody,
} from "./control.ts";
export type {
  ControlEndpoint, ControlEndpointSpec, ControlErrorBody, ControlRequestOptions, ControlServeOptions, ServedControlEndpoint,
} from "./control.ts";

// Identities: principals, their permissions, and connecting as one
export {
  Account, DEFAULT_PRINCIPALS_PATH, KvBucket, Role, accountOf, capabilityDurable, criticalForwardSubjects, getPrincipal, inboxPrefix, loadPrincipals, parsePrincipals,
  permissionsFor, serverPermissions, subjectMatches,
} from "./principals.ts";
export type {
  AccountValue, CapabilitySpec, ConsumerSpec, Grant, KvBucketValue, PermissionOptions, Permissions, PrincipalSpec, Principals, RoleValue,
  ServerPermissions,
} from "./principals.ts";
export { DEFAULT_NATS_URL, connectAs, dataDir, publicKeyOf, readSeed, seedPath } from "./connect.ts";
export type { ConnectAsOptions } from "./connect.ts";
