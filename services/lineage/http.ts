// The lineage API over HTTP (JSON), on Node's own server: `GET /v1/<operation>?param=…` (path segments after
// the operation fill its required parameters in order: `/v1/why/<event-id>`), `GET /healthz`. Answers are
// the same objects the NATS endpoints return; a refusal is `{"error":{"code","message","details"?}}` with the
// code's status from services/kit/errors.ts, as the control endpoints answer. Read-only: no other method is accepted. Every request but
// `/healthz` needs `Authorization: Bearer <token>` (401 CW_ERR_UNAUTHENTICATED otherwise): the audit log holds
// every event's data, so "bound to localhost" is not enough on a shared machine.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { ErrorCode, bearerMatcher, isCausewayError, statusOf, type ControlErrorBody, type ErrorCodeValue } from "../kit/index.ts";
import { Document, type LineageApi } from "./api.ts";
import type { LineageOperationName, Params } from "./contract.ts";

export interface LineageHttp {
  /** The base URL, e.g. `http://127.0.0.1:7480`. */
  readonly url: string;
  close(): Promise<void>;
}

/** Where the HTTP API listens and whom it lets in. */
export interface LineageHttpOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** The SHA-256 (hex) of each accepted bearer token; at least one. */
  readonly tokenDigests: readonly string[];
}

export async function startLineageHttp(api: LineageApi, opts: LineageHttpOptions, log: Logger): Promise<LineageHttp> {
  if (opts.tokenDigests.length === 0) throw new Error("the lineage HTTP API needs at least one bearer token digest");
  const authorized = bearerMatcher(opts.tokenDigests);
  const server: Server = createServer((req, res) => {
    answer(api, req, res, log, (authorization) => authorized(authorization) !== undefined).catch((err: unknown) => {
      // Never an unhandled rejection (it would end the process): answer what can still be answered.
      log.error({ err, path: req.url }, "lineage HTTP request failed");
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json; charset=utf-8" });
      res.end();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
  return {
    url,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    }),
  };
}

async function answer(api: LineageApi, req: IncomingMessage, res: ServerResponse, log: Logger, authorized: (authorization: string | undefined) => boolean): Promise<void> {
  const url = new URL(req.url ?? "/", "http://lineage");
  const send = (status: number, body: unknown) => {
    const text = JSON.stringify(body, null, 2) + "\n";
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
    res.end(text);
  };
  const refuse = (code: ErrorCodeValue, message: string, details?: Readonly<Record<string, unknown>>) =>
    send(statusOf(code), { error: { code, message, ...(details !== undefined && { details }) } } satisfies ControlErrorBody);
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    return refuse(ErrorCode.HttpMethod, `${req.method} is not supported: the lineage API is read-only (GET)`);
  }
  if (url.pathname === "/healthz") {
    // Unhealthy while audit batches cannot be stored (they wait in the streams): a supervisor or load
    // balancer sees it, not only the log. Since when only: the error itself (which may name hosts) is for
    // those with a token (`/v1/stats`) and the log.
    const stats = await api.stats.run({});
    return stats.failing ? send(503, { ok: false, failingSince: stats.failing.since }) : send(200, { ok: true });
  }
  if (!authorized(req.headers.authorization)) {
    res.setHeader("www-authenticate", 'Bearer realm="causeway-lineage"');
    return refuse(ErrorCode.Unauthenticated, req.headers.authorization === undefined
      ? "no Authorization header: send Authorization: Bearer <token> (one whose SHA-256 is in LINEAGE_HTTP_TOKEN_SHA256, or the development token in the file lineage names at start)"
      : "the bearer token is not one the lineage HTTP API accepts");
  }
  let segments: string[];
  try {
    segments = url.pathname.split("/").filter((seg) => seg !== "").map(decodeURIComponent);
  } catch {
    return refuse(ErrorCode.LineageQuery, `the path ${url.pathname} is not valid percent-encoding`);
  }
  const [version, name, ...rest] = segments;
  const op = version === "v1" && name !== undefined && Object.hasOwn(api, name) ? api[name as LineageOperationName] : undefined;
  if (!op) {
    return refuse(ErrorCode.HttpEndpoint, `no operation at ${url.pathname}; try /v1/{${Object.keys(api).join(",")}}`);
  }
  const params: Record<string, string> = Object.fromEntries(url.searchParams);
  rest.forEach((value, i) => {
    const p = op.params[i];
    if (p !== undefined) params[p] = value;
  });
  let result: unknown;
  try {
    result = await op.run(params as Params);
  } catch (err) {
    if (isCausewayError(err)) return refuse(err.code, err.message, err.details);
    // An error without a code may name hosts, paths or a driver's text: the log has it, the client does not.
    log.error({ err, path: url.pathname }, "lineage query failed");
    return refuse(ErrorCode.Internal, `internal error in lineage ${String(name)}; its log has the details`);
  }
  if (result instanceof Document) {
    res.writeHead(200, { "content-type": result.contentType, "content-length": Buffer.byteLength(result.body), "cache-control": "no-store" });
    res.end(result.body);
    return;
  }
  send(200, result);
}
