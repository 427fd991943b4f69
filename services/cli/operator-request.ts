// One request, as the operator, to a control endpoint of a service (the coordinator's, mostly): connect with the
// operator's key, send, return the typed reply or throw the service's CausewayError, close. The commands that
// change the mesh through the coordinator (pause, resume, switches, rollout) share it.
import type { NatsConnection } from "@nats-io/transport-node";
import { ConfigError, DEFAULT_NATS_URL, ErrorCode, connectAs, controlRequest, type ControlEndpoint } from "../kit/index.ts";

const REQUEST_TIMEOUT_MS = 10_000;

/** Sends `body` to the coordinator's endpoint as the operator; a refusal throws its CausewayError. */
export async function requestAsOperator<Req, Reply>(server: string | undefined, endpoint: ControlEndpoint<Req, Reply>, body: Req): Promise<Reply> {
  const where = server ?? (process.env.NATS_URL || DEFAULT_NATS_URL);
  const nc: NatsConnection = await connectAs("operator", { ...(server !== undefined && { servers: server }), name: `causeway ${endpoint.name}` }).catch((err: unknown) => {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(ErrorCode.Config, `cannot connect to ${where} as the operator: ${(err as Error).message}`, { cause: err });
  });
  try {
    return await controlRequest(nc, endpoint, body, { timeout: REQUEST_TIMEOUT_MS });
  } finally {
    await nc.drain().catch(() => nc.close());
  }
}

