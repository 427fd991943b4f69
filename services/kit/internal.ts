// What tests reach inside the kit for, beyond its public index (as nats.js has internal_mod.ts): module
// internals a test checks directly. Only test/ imports this file (the lint rule in eslint.config.js).

// The agents' OpenTelemetry instruments, checked by the telemetry tests
export { AgentMetric, AgentMetricAttribute, HANDLER_DURATION_BOUNDARIES_MS, createAgentMetrics, handlerDurationBucket } from "./metrics.ts";

// The JetStream failover's rules (streaks of failures, the pacing of checks), checked with fake times
export { jetStreamAnswered, jetStreamChecked, jetStreamSilent, failoverDecision, lostMostPeers } from "./connect.ts";
export type { FailoverPacing, FailureStreak } from "./connect.ts";

// The stream files' own prefix and the capability consumer template, checked by the layout tests
export { CAPABILITY_TEMPLATE, FILES_PREFIX } from "./stream-files.ts";
