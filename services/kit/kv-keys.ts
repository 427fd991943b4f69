// Who owns which keys of a shared KV bucket. Leases (causeway_leases) and the processed-set (causeway_processed)
// hold keys of several writers in one bucket; each writer's keys start with its own first token, so the
// server's permissions can grant a writer exactly its key space (`$KV.<bucket>.<prefix>.>`, rendered by
// ops/permissions.ts) instead of the whole bucket. The code that builds the keys and the permissions that
// scope them both take the prefix from here: they cannot drift apart.

/**
 * The first key token of a capability's keys in causeway_leases and causeway_processed:
 * `<capability>_v<major>` (a lease or a processed mark is `<capability>_v<major>.<sha256 of source and id>`).
 */
export function capabilityKeyPrefix(capability: string, major: number): string {
  return `${capability}_v${major}`;
}

/**
 * The first key token of the gateway's dedupe marks in causeway_processed (`gateway.<dedupe key>`). It cannot
 * collide with a capability's prefix, which always ends in `_v<major>`.
 */
export const GATEWAY_MARK_PREFIX = "gateway";
