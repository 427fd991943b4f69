// The gateway's control contract: its one NATS micro endpoint. (What upstreams send and get back over HTTP and
// NATS ingest is docs/upstream.md's contract, in outcome.ts.)
import { controlEndpoint } from "../kit/index.ts";

/** What `health` answers while the gateway runs. */
export interface GatewayHealth {
  readonly status: "ok";
  /** The HTTP ingress's base URL. */
  readonly http: string;
}

/** `mesh.ctl.gateway.health`, no parameters. */
export const health = controlEndpoint<Record<string, never>, GatewayHealth>({
  service: "gateway", name: "health", description: "the gateway runs; its HTTP ingress URL", parse: () => ({}),
});
