// The operator side of the kit: what `causeway` and test fixtures use to set a mesh up and administer it —
// render permissions, apply stream files, create buckets, seed and revoke keys. Services never import it; they
// read what it writes through the runtime in ../index.ts.

// Least-privilege NATS permissions of each principal, rendered from infra/principals.json
export { NO_JETSTREAM_DOMAIN, accountHash, ackSubjectV2, flowControlSubjectV2, permissionsFor, subjectIntersection } from "./permissions.ts";
export type { Grant, PermissionOptions, Permissions } from "./permissions.ts";

// Stream and consumer files (streams/), applied idempotently
export { defaultStreamsDir, loadStreamDefinitions } from "../stream-files.ts";
export type { ConsumerDefinition, ConsumerFileConfig, StreamDefinition, StreamFileConfig } from "../stream-files.ts";
export { applyStreams } from "./streams-apply.ts";
export type { ApplyOptions, ApplyReport, ApplyResult, ApplyTarget, ChangeEffect, FieldChange } from "./streams-apply.ts";

// The mesh's KV buckets, created from the one bucket table
export { ensureMeshBuckets } from "./buckets-admin.ts";
export type { EnsureBucketsOptions } from "./buckets-admin.ts";

// Trust administration: seed records from principals.json, seed, revoke, list (KV causeway_trust)
export { listTrustEntries, revokeTrust, seedTrustStore, trustEntriesFromPrincipals } from "./trust-admin.ts";
export type { RevokeOptions, SeedTrustOptions, TrustChange, TrustListing, TrustRevocation } from "./trust-admin.ts";

// Published schemas are immutable: the lockfile of their digests (schemas/schemas.lock.json), checked and extended
export { canonicalJson, checkSchemaLock, lockSchemas, readSchemaLock, schemaDigest, schemaLockPath } from "./schema-lock.ts";
export type { SchemaLock, SchemaLockProblem } from "./schema-lock.ts";
// The schema documents as files (the registry compiles them; the scaffold reads them)
export { readSchemaDocuments } from "../schemas.ts";
export type { SchemaDocument } from "../schemas.ts";
