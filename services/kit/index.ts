// The table of contents of the kit: everything a Causeway service builds on, one named export at a time.
// Outside services/kit this is the only module of the kit anyone imports (the lint rule in eslint.config.js):
// operator tooling takes ./ops/index.ts as well, tests ./internal.ts. Services never import each other's folders.

// Errors with stable codes (documented in docs/errors.md) and the quarantine reasons they map to
export {
  CausewayError, ConfigError, DecodeError, ErrorCode, NotReadyError, QuarantineReason, SchemaError, SubjectError, VerificationError,
  isCausewayError, isErrorCode, permissionDenied, quarantineReasonOf, statusOf,
} from "./errors.ts";
export type { ErrorCodeValue, QuarantineReasonValue } from "./errors.ts";
// Faults that pass by themselves (a leader election, a restart): retried shortly, answered CW_ERR_UNAVAILABLE
export { TRANSIENT_RETRY_MS, UNAVAILABLE_RETRY, asUnavailable, isNotReady, isTransient, jittered, transientRetryDelayMs } from "./transient.ts";

// CloudEvents: the immutable event, the NATS binding, the JSON format
export { CORE_ATTRIBUTES, createEvent, dataJson, dataText, normalizeTime, withAttributes } from "./event.ts";
export type { CloudEvent, EventInit, ExtensionValue } from "./event.ts";
export { DEFAULT_MAX_DATA_BYTES, MAX_ATTRIBUTE_BYTES, NatsBinding, STRUCTURED_CONTENT_TYPE, STRUCTURED_MARGIN_BYTES, binaryHeaderBytes, headerBytes } from "./binding.ts";
export type { DecodeOptions, NatsMessage } from "./binding.ts";
export { decodeJsonBatch, decodeJsonEvent, encodeJsonEvent, isJsonContentType } from "./json-format.ts";
export { decodeHeaderValue, encodeHeaderValue } from "./percent.ts";

// Signing and verification: the Verifiability extension (DSSE) and keys
export { DSSE_MATERIAL, DSSE_MATERIAL_MAX_BYTES, DSSE_MAX_SIGNATURES, DSSE_PAYLOAD_TYPE, coreDigest, extDigest, openEnvelope, pae, signBytes, signEvent, verifyBytes, verifyEvent } from "./verifiability.ts";
export type { SignOptions, Verification, VerifiedEvent, VerifyOptions } from "./verifiability.ts";
export { createKeyring, p256Key, signingKeyFromNkeySeed, verificationKeyFromNkey } from "./keys.ts";
export type { KeyResolver, SigningKey, VerificationKey } from "./keys.ts";

// Context that flows from input to output: ids, correlation and causation, trace context, expiry
export {
  ContextExtension, PRIORITIES, Priority, budgetOf, flowContextOf, childTraceparent, correlationIdOf, countExtension, flowDepthOf, flowIdOf, deriveEventId, expiryIn, isBounded,
  isExpired, newTraceparent, outputEventInit, parseTraceparent, principalSource, priorityOf, spentOf, uuidv7,
} from "./context.ts";
export type { FlowBudget, PriorityValue, Spend, TraceParent } from "./context.ts";

// The live trust store: who may sign what, when, and address whom (KV causeway_trust)
export { KEY_NOT_BEFORE_SKEW_MS, UPSTREAM_EXTENSION, emitsCover, encodeTrustRecord, formatTime, loadUpstreamSources, openTrustStore, storedMessage } from "./trust.ts";
export type {
  OpenTrustStoreOptions, StoredMessage, TrustEntry, TrustRecord, TrustStore, TrustVerifyOptions, TrustedEvent, UpstreamSources, VerifyMessageOptions,
} from "./trust.ts";

// Agents: the contract, the runtime, the process entry, quarantine and replay protection
export { RetryableError, agentStatsEndpoint } from "./agent-api.ts";
export type { Agent, AgentDefinition, AgentStats, BudgetOver, Cause, Emit, HandlerContext, HandlerInput, PolicyVerdict } from "./agent-api.ts";
export { startAgent } from "./agent.ts";
export type { AgentOptions } from "./agent.ts";
export { AGENT_VERSION_ENV, checkVersion, runAgentProcess } from "./agent-process.ts";
export { outputInits, spendMeter } from "./outputs.ts";
export type { OutputInit } from "./outputs.ts";
export type { DefinitionFactory } from "./agent-process.ts";
export { START_TIMEOUT_ENV, refuseServiceProcesses, runServiceProcess } from "./service-process.ts";
export { STARTED_MESSAGE, announceStarted, detachFromSupervisor, isStartedMessage } from "./supervision.ts";
export type { StartedMessage } from "./supervision.ts";
export type { ServiceContext, ServiceProcessOptions, StartedService } from "./service-process.ts";
export { consumeDurable } from "./consumer.ts";
export { ensureConsumer, isConsumerNotFound, isStreamNotFound, isWrongRevision } from "./jetstream-errors.ts";
export type { ConsumeOptions, DurableConsumer, WeightedDurable } from "./consumer.ts";
export { drainSignal, untilStop } from "./signals.ts";
export {
  QUARANTINE_DETAIL_MAX_BYTES, QUARANTINE_FIELD_MAX_BYTES, QuarantineHeader, TRUNCATED_MARKER, boundedText, isQuarantineCopyOf, publishQuarantineCopy, quarantine, quarantineHeaders, quarantineMsgId,
} from "./quarantine.ts";
export type { QuarantineNote, QuarantineOriginal, QuarantinePublisher } from "./quarantine.ts";
export { openProcessedSet } from "./processed.ts";
export { DEFAULT_LOOP_GUARDS_PATH, loadLoopGuards, parseLoopGuards } from "./loop-guards.ts";
export type { LoopGuards } from "./loop-guards.ts";
// The flow ledger: each flow's runs per capability and what they spent (KV causeway_flow_ledger)
export { openFlowLedger } from "./flow-ledger.ts";
export type { AdmitRequest, FlowLedger, FlowTotals, InputRef, LedgerAdmission, LedgerBound } from "./flow-ledger.ts";
export { encodeLease, leaseKey, openLeases, readLease } from "./leases.ts";
export { GATEWAY_MARK_PREFIX, capabilityKeyPrefix } from "./kv-keys.ts";
export type { Lease } from "./leases.ts";
export type { ProcessedSet } from "./processed.ts";

// Configuration from the environment: each bad value names its variable and the expected form
export { envFraction, envInteger } from "./config.ts";

// Telemetry and logs (import services/kit/telemetry.ts with --import to start the SDK)
export { SpanAttribute, endSpan, startProcessSpan, startSendSpan, traceparentOf, tracestateOf } from "./tracing.ts";
export { createLogger, eventLogger } from "./log.ts";
export type { LoggerOptions } from "./log.ts";

// Schemas and subjects
export { SCHEMA_DIALECT, SCHEMA_LOCK_FILE, createSchemaRegistry, defaultSchemaDir } from "./schemas.ts";
export type { DataValidator, SchemaRegistry, SchemaRegistryOptions, SchemaViolation } from "./schemas.ts";
// Schema versions: which versions a consumer reads (the agent's step 5 and the release pre-check), which one an output takes
export {
  ACCEPTS_METADATA, SCHEMA_ID_BASE, acceptanceOf, compileAccepts, compileEmits, declareAccepts, describeAccepted, newestSchemaOf, parseSchemaVersion, readAcceptsDeclaration,
  readsVersion, schemaIdOf,
} from "./schema-versions.ts";
export type { AcceptRefusal, Acceptance, AcceptedInputs, Accepts, AcceptsDeclaration, DeclaredOutputs, Emits, SchemaVersion } from "./schema-versions.ts";
export {
  LANES, PRIORITY_TOKENS, StreamName, SubjectKind, capabilitySubject, priorityTail, checkpointSubject, controlSubject, decisionSubject, eventSubject, handoffSubject, inboxPrefix,
  ingestSubject, parseSubject, quarantineSubject, streamFor, subjectsFor,
} from "./subjects.ts";
export type { EvtSubject, Lane, MeshSubjects, ParsedSubject, StreamNameValue } from "./subjects.ts";

// Reading a stream by sequence (direct get)
export { readStream } from "./stream-read.ts";

// Bearer tokens for the HTTP APIs: digests compared in constant time, development token files
export { bearerMatcher, devTokenPath, ensureTokenFile, isTokenDigest, tokenDigestHex } from "./bearer.ts";

// Publishing to streams with many acks in flight (one inbox subscription, not one request per message)
export { PUBLISH_ACK_TIMEOUT_MS, StreamPublishError, createStreamPublisher } from "./stream-publisher.ts";
export type { PubAck, StreamPublishOptions, StreamPublisher } from "./stream-publisher.ts";

// Message ids: namespaced by their publisher, tagged with its key; a duplicate ack confirmed before it counts
export { MsgIdKind, confirmDuplicate, msgId, sameBytes, signedWith } from "./msg-ids.ts";
export type { AckLike, MsgIdKindValue, MsgIdOwner } from "./msg-ids.ts";

// Decisions: signed grants, approvals, releases, rejections, kill switches (MESH_DECISION)
export { DecisionKind, decisionEvent, decisionMsgId, decisionSchema, decisionSubjectOf, publishDecision } from "./decisions.ts";
export type { DecisionKindValue, DecisionOptions, DecisionPublisher } from "./decisions.ts";

// Kill switches: the state the coordinator writes and agents watch (KV causeway_switches); the coordinator's
// endpoints that switch them are in services/coordinator/contract.ts
export {
  MESH_TARGET, PAUSED_UNTIL_RESUMED, SwitchScope, encodeSwitch, parseSwitch, parseSwitchKey, switchExpiry, switchKey, watchSwitches,
} from "./switches.ts";
export type { SwitchScopeValue, SwitchState, SwitchValue, SwitchWatcher, WatchSwitchesOptions } from "./switches.ts";

// Version routing: the tables the coordinator writes (KV causeway_routes), the flows' pins, the producers' router.
export { continuingVersions, parseRouteTable, routeEpochOf, routeKey, shareBucket, startRouter, versionForBucket, watchRouteTables } from "./routing.ts";
export type { Circuit, RetiringVersion, RolloutPlan, RouteTable, RouteTables, Router } from "./routing.ts";

// The mesh's KV buckets: one table; services only open them (operator tooling creates them: ./ops/index.ts)
export { KvBucket, MESH_BUCKETS, STREAMS_APPLY, openMeshBucket } from "./buckets.ts";
export { followBucket } from "./kv-follow.ts";
export type { Following } from "./kv-follow.ts";
export type { BucketSpec, KvBucketValue } from "./buckets.ts";

// The mesh layout: prefix, streams, durables and buckets, read once from infra/ and streams/
export { defaultLayout, loadLayout, versionedName } from "./layout.ts";
export type { LayoutOptions, MeshLayout, MeshService } from "./layout.ts";
export { HEARTBEAT_MS, MAX_BEAT_BYTES, checkBeat, listInstances, parseBeat } from "./heartbeat.ts";
export type { BeatCheck, InstanceBeat } from "./heartbeat.ts";
// The agents' metric names and the handler-duration buckets their heartbeats count in (the coordinator's health)
export { AgentMetricAttribute, HANDLER_DURATION_BOUNDARIES_MS, METER_NAME } from "./metrics.ts";

// The control plane: one contract for every request/reply endpoint on <prefix>.ctl.<service>.<action>
export { addControlEndpoint, controlEndpoint, controlRequest, isInboxOf, jsonObjectBody } from "./control.ts";
export type { ControlEndpoint, ControlErrorBody, ControlRequestOptions, ControlServeOptions, ServedControlEndpoint } from "./control.ts";

// Identities: principals (infra/principals.json) and connecting as one (their permissions: ./ops/index.ts)
export {
  Account, DEFAULT_PRINCIPALS_PATH, Role, capabilityDurable, criticalForwardSubjects, laneDurable, getPrincipal, loadPrincipals, parseFactRef, parsePrincipals,
  subjectMatches, subscribersOf, subscriptionDurable,
} from "./principals.ts";
export type { AccountValue, FactRef, PrincipalSpec, Principals, RoleValue } from "./principals.ts";
export {
  CONNECTION_POLICY, DEFAULT_NATS_URL, connectAs, connectWithPolicy, connectionOptions, dataDir, isConnected, jetStreamHealth, notAuthorized, parseServers, publicKeyOf, readSeed, seedPath, shownPath,
  watchConnection,
} from "./connect.ts";
export type { ConnectAsOptions, ConnectionWatch, JetStreamHealth } from "./connect.ts";

// infra/ JSON files read against their schemas (the gateway's routes and upstreams, the loop guards)
export { checkInfraDoc, infraDir, invalidFile, readInfraFile, watchInfraFile } from "./infra-file.ts";
export type { WatchInfraOptions, WatchedInfraFile } from "./infra-file.ts";
// Priority lanes (issue 16): the weights and aging agents serve their priority durables by (infra/priorities.json).
export { loadPriorities, watchPriorities } from "./priorities.ts";
export type { PriorityWeights } from "./priorities.ts";

// Compare-and-set cells in KV (the tenants' quotas)
export { casCells } from "./kv-cas.ts";
export type { CasCells, CasCellsOptions, CasStep } from "./kv-cas.ts";

// Tenants and their quotas per period (infra/tenants.json, KV causeway_quotas)
export {
  DEFAULT_TENANTS_PATH, checkTenantMembers, describePeriod, loadTenants, openQuotaCounter, parseTenants, periodOf, quotaCounter, quotaKey, tenantProblems,
} from "./tenants.ts";
export type { PeriodSpec, QuotaCounter, QuotaGrant, QuotaPeriod, QuotaRefusal, QuotaUse, Tenant, TenantMember, TenantQuotas, Tenants } from "./tenants.ts";
// Mesh-wide backpressure: the coordinator's backlog reports (KV causeway_pressure), the thresholds (infra/backpressure.json), the handler's accessor
export {
  DEFAULT_BACKPRESSURE_PATH, PRESSURE_KEY, PressureLevel, followPressure, loadBackpressure, parseBackpressure, unknownPressure, watchPressure,
} from "./pressure.ts";
export type {
  Backpressure, CapabilityBacklog, FollowedPressure, Pressure, PressureAccessor, PressureLevelValue, PressureReport, PressureView, Thresholds, WatchPressureOptions,
} from "./pressure.ts";
