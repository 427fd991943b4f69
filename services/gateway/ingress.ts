// What both ingress paths (HTTP and NATS) are built from: one identity, one connection, the same checks.
import type { JetStreamClient } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { MeshSubjects, SigningKey } from "../kit/index.ts";
import type { Admission } from "./admission.ts";
import type { GatewayConfig } from "./config.ts";
import type { Ledger } from "./ledger.ts";
import type { Notary } from "./notarize.ts";
import type { RateLimiter } from "./rate-limit.ts";
import type { Upstreams } from "./upstreams.ts";

/** Shared by the HTTP and the NATS ingress. */
export interface IngressDeps {
  readonly config: GatewayConfig;
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly subjects: MeshSubjects;
  readonly upstreams: Upstreams;
  readonly limiter: RateLimiter;
  readonly notary: Notary;
  readonly ledger: Ledger;
  /** Whether a new flow is admitted now: backpressure and the tenant's quotas (admission.ts). */
  readonly admission: Admission;
  /** "gateway": the detecting principal on quarantine entries. */
  readonly principal: string;
  /** The gateway's signing key: tags its quarantine copies' msg ids (services/kit/msg-ids.ts). */
  readonly key: SigningKey;
  readonly log: Logger;
}
