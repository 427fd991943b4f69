// One request, as the operator, to a control endpoint of a service (the coordinator's, mostly): connect with the
// operator's key, send, return the typed reply or throw the service's CausewayError, close. The commands that
// change the mesh through the coordinator (pause, resume, switches, rollout) share it.
import type { NatsConnection } from "@nats-io/transport-node";
import { ConfigError, DEFAULT_NATS_URL, ErrorCode, connectAs, controlRequest, type ControlEndpoint } from "../kit/index.ts";

const REQUEST_TIMEOUT_MS = 10_000;

/**
 * Connects as the operator to `server` (else NATS_URL, else the default), named `causeway <command>` in the
 * server's connection list: the one way a command connects as the operator. A key problem stays the ConfigError
 * it is; a server that cannot be reached is CW_ERR_UNAVAILABLE naming it.
 */
export async function connectAsOperator(server: string | undefined, command: string): Promise<NatsConnection> {
  return connectAs("operator", { ...(server !== undefined && { servers: server }), name: `causeway ${command}` }).catch((err: unknown) => {
    if (err instanceof ConfigError) throw err;
    const where = server ?? (process.env.NATS_URL || DEFAULT_NATS_URL);
    throw new ConfigError(ErrorCode.Unavailable, `cannot connect to ${where} as the operator: ${(err as Error).message}`, { cause: err });
  });
}

/** Sends `body` to the coordinator's endpoint as the operator; a refusal throws its CausewayError. */
export async function requestAsOperator<Req, Reply>(server: string | undefined, endpoint: ControlEndpoint<Req, Reply>, body: Req): Promise<Reply> {
  const nc = await connectAsOperator(server, endpoint.name);
  try {
    return await controlRequest(nc, endpoint, body, { timeout: REQUEST_TIMEOUT_MS });
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

