// The lineage API over HTTP (JSON), on Node's own server: `GET /v1/<operation>?param=…` (path segments after
// the operation fill its required parameters in order: `/v1/why/<event-id>`), `GET /healthz`. Answers are
// the same objects the NATS endpoints return; errors carry the same codes, with 400 for a bad query, 404 for
// an unknown event or operation, 500 otherwise. Read-only: no other method is accepted.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { ErrorCode } from "../kit/index.ts";
import { Document, type LineageApi, type Params } from "./api.ts";
import { errorReply } from "./endpoints.ts";

export interface LineageHttp {
  /** The base URL, e.g. `http://127.0.0.1:7480`. */
  readonly url: string;
  close(): Promise<void>;
}

const STATUS: Readonly<Record<string, number>> = {
  [ErrorCode.LineageQuery]: 400,
  [ErrorCode.LineageNotFound]: 404,
  [ErrorCode.LineageAmbiguousId]: 409,
  [ErrorCode.LineageNotCovered]: 409,
};

export async function startLineageHttp(api: LineageApi, host: string, port: number, log: Logger): Promise<LineageHttp> {
  const server: Server = createServer((req, res) => {
    answer(api, req, res, log).catch((err: unknown) => {
      // Never an unhandled rejection (it would end the process): answer what can still be answered.
      log.error({ err, path: req.url }, "lineage HTTP request failed");
      if (!res.headersSent) res.writeHead(500, { "content-type": "application/json; charset=utf-8" });
      res.end();
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
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

async function answer(api: LineageApi, req: IncomingMessage, res: ServerResponse, log: Logger): Promise<void> {
  const url = new URL(req.url ?? "/", "http://lineage");
  const send = (status: number, body: unknown) => {
    const text = JSON.stringify(body, null, 2) + "\n";
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text), "cache-control": "no-store" });
    res.end(text);
  };
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    return send(405, { ok: false, code: ErrorCode.LineageQuery, error: `${req.method} is not supported: the lineage API is read-only (GET)` });
  }
  if (url.pathname === "/healthz") return send(200, { ok: true });
  let segments: string[];
  try {
    segments = url.pathname.split("/").filter((seg) => seg !== "").map(decodeURIComponent);
  } catch {
    return send(400, { ok: false, code: ErrorCode.LineageQuery, error: `the path ${url.pathname} is not valid percent-encoding` });
  }
  const [version, name, ...rest] = segments;
  const op = version === "v1" && name !== undefined ? api[name] : undefined;
  if (!op) {
    return send(404, { ok: false, code: ErrorCode.LineageQuery, error: `no operation at ${url.pathname}; try /v1/{${Object.keys(api).join(",")}}` });
  }
  const params: Record<string, string> = Object.fromEntries(url.searchParams);
  rest.forEach((value, i) => {
    const p = op.params[i];
    if (p !== undefined) params[p] = value;
  });
  try {
    const result = await op.run(params as Params);
    if (result instanceof Document) {
      res.writeHead(200, { "content-type": result.contentType, "content-length": Buffer.byteLength(result.body), "cache-control": "no-store" });
      res.end(result.body);
      return;
    }
    send(200, { ok: true, result });
  } catch (err) {
    const reply = errorReply(err);
    const status = STATUS[reply.code] ?? 500;
    if (status === 500) log.error({ err, path: url.pathname }, "lineage query failed");
    send(status, reply);
  }
}
