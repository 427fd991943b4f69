// The operator side of the kit: what `causeway` and test fixtures use to set a mesh up and administer it.
// Services never import it; they read what it writes through the runtime in ../index.ts.

// Trust administration: seed records from principals.json, seed, revoke, list (KV causeway_trust)
export { listTrustEntries, revokeTrust, seedTrustStore, trustEntriesFromPrincipals } from "./trust-admin.ts";
export type { RevokeOptions, SeedTrustOptions, TrustChange, TrustListing, TrustRevocation } from "./trust-admin.ts";
