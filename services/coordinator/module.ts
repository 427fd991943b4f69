// What every coordinator module receives and returns. The coordinator is one process made of modules —
// handoffs and approvals, quarantine operations, dead letters, kill switches — that share one connection, one
// identity, one trust store and one NATS micro service (`nats micro ls` shows `coordinator` with an endpoint
// per operation).
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type { Service } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import type { Logger } from "pino";
import type { CausewayError, MeshLayout, MeshSubjects, Router, SchemaRegistry, SigningKey, TrustStore } from "../kit/index.ts";
import type { PolicyStore } from "./policy.ts";

/** Shared by every module. */
export interface CoordinatorDeps {
  readonly nc: NatsConnection;
  readonly js: JetStreamClient;
  readonly jsm: JetStreamManager;
  readonly trust: TrustStore;
  /** The coordinator's signing key (its NKey); decisions are signed with it. */
  readonly key: SigningKey;
  /** Always "coordinator" (the principal); decisions carry `causeway://coordinator` as source. */
  readonly principal: string;
  /** The mesh layout: prefix, durables (streams/consumers/), buckets. */
  readonly layout: MeshLayout;
  /** `layout.subjects`. */
  readonly subjects: MeshSubjects;
  readonly schemas: SchemaRegistry;
  readonly policy: PolicyStore;
  /** The coordinator's micro service: modules serve their endpoints of contract.ts on it (`addControlEndpoint`). */
  readonly service: Service;
  /** Routes granted critical work by version when its capability is routed (kit routing.ts). */
  readonly router: Router;
  readonly log: Logger;
}

/** A started module. */
export interface CoordinatorModule {
  readonly name: string;
  /** Settles when a bucket the module follows is deleted: the coordinator then stops (exit code 1). */
  readonly lost?: Promise<CausewayError>;
  /** Stops consuming and timers; in-flight work finishes. */
  stop(): Promise<void>;
}

/** Starts a module. */
export type StartModule = (deps: CoordinatorDeps) => Promise<CoordinatorModule>;
