// HTTP ingress, the CloudEvents HTTP binding: binary mode (`ce-` headers, the body is the data, Content-Type
// its datacontenttype), structured mode (`application/cloudevents+json`) and batch mode
// (`application/cloudevents-batch+json`, all or nothing). Node's own HTTP server (keep-alive); the event
// decoding is the kit's (NatsBinding, the JSON format): the ce- headers of both bindings read the same.
//
// What one client can hold: at most CAUSEWAY_GATEWAY_MAX_CONNECTIONS connections per gateway process (more are
// closed as they arrive, unanswered); nothing before it is authenticated (a 401 closes its connection, its body
// unread); and no body before its upstream's rate allows it (one token is taken before the body is read, so a
// 429 comes first and closes the connection, the body unread).
//
//   POST /events  → 202 {id, correlationid, traceid, …} | 400/401/403/413/429/503 {code, message, attribute?, violations?, retryafter?}
//                   (429: CW_ERR_RATE_LIMITED, CW_ERR_QUOTA_EXCEEDED, CW_ERR_OVERLOADED, each with Retry-After when waiting helps)
//   GET  /health  → 200 {status: "ok"} while connected to a NATS server, else 503 (reconnecting, closed)
//
// Every 503 is logged (warn) with its cause, as the NATS request path does (outcome.ts logUnavailable).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";
import {
  DecodeError, ErrorCode, STRUCTURED_CONTENT_TYPE, STRUCTURED_MARGIN_BYTES, decodeJsonBatch, decodeJsonEvent, encodeHeaderValue, encodeJsonEvent, isConnected, statusOf,
  type CloudEvent, type QuarantineOriginal,
} from "../kit/index.ts";
import { admitAndPublish } from "./admission.ts";
import { ingestOne, limited, publishOutcome, refuse } from "./ingest-one.ts";
import type { RateLimiter } from "./rate-limit.ts";
import type { IngressDeps } from "./ingress.ts";
import { IngestError, UNAVAILABLE_STATUS, logUnavailable, rejected, rejectionOf, replyBody, unavailable, type Outcome, type Rejected } from "./outcome.ts";
import type { Upstream } from "./upstreams.ts";

/** The batch-mode media type. */
const BATCH_CONTENT_TYPE = "application/cloudevents-batch+json";
/** Where upstreams POST events. */
const EVENTS_PATH = "/events";
/** The health endpoint. */
const HEALTH_PATH = "/health";

/** What the HTTP ingress needs. */
export type HttpDeps = IngressDeps;

/** A listening HTTP ingress. */
export interface HttpIngress {
  /** `http://host:port`. */
  readonly url: string;
  /**
   * Stops accepting connections, closes idle keep-alive connections, and lets requests in progress finish:
   * their responses (and those of requests still arriving on open connections) say `connection: close`.
   */
  close(): Promise<void>;
}

/** Starts the HTTP ingress on the configured host and port. */
export async function startHttp(deps: HttpDeps): Promise<HttpIngress> {
  // While closing, every response closes its connection: a keep-alive connection would otherwise stay open (and
  // the server with it) until keepAliveTimeout. Responses not yet written when close() is called are marked then.
  let closing = false;
  const pending = new Set<ServerResponse>();
  const server: Server = createServer({ keepAliveTimeout: 65_000, requestTimeout: 30_000 }, (req, res) => {
    if (closing) res.setHeader("connection", "close");
    else {
      pending.add(res);
      res.once("close", () => pending.delete(res));
    }
    handle(deps, req, res).catch((err: unknown) => {
      if (err instanceof ClientGoneError) {
        // The client's doing, not the gateway's: nobody is left to answer.
        deps.log.debug({ err }, "HTTP client went away mid-request");
        res.destroy();
        return;
      }
      deps.log.error({ err }, "HTTP request failed");
      if (!res.headersSent) send(deps, res, unavailable(err));
      else res.destroy();
    });
  });
  // Over the cap Node closes a new connection at once, before reading anything from it.
  server.maxConnections = deps.config.maxConnections;
  let dropped = 0;
  server.on("drop", () => {
    // One warning per 1000 refused connections: a flood must not flood the log too.
    if (dropped++ % 1000 === 0) deps.log.warn({ maxConnections: deps.config.maxConnections, dropped }, "HTTP connection refused: at the connection cap (CAUSEWAY_GATEWAY_MAX_CONNECTIONS)");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(deps.config.port, deps.config.host, () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address.includes(":") ? `[${address}]` : address}:${port}`,
    close: () => new Promise<void>((resolve) => {
      closing = true;
      for (const res of pending) if (!res.headersSent) res.setHeader("connection", "close");
      pending.clear();
      server.close(() => resolve());
      server.closeIdleConnections();
    }),
  };
}

async function handle(deps: HttpDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? "/").split("?", 1)[0];
  if (path === HEALTH_PATH && (req.method === "GET" || req.method === "HEAD")) {
    // Up while connected to a server: reconnecting (a node died, the server restarts) or closed is a 503.
    const up = isConnected(deps.nc);
    const status = up ? "ok" : deps.nc.isClosed() ? "nats connection closed" : "nats disconnected: reconnecting";
    if (!up) deps.log.warn({ path, status }, `health answered 503: ${status}`);
    res.writeHead(up ? 200 : 503, { "content-type": "application/json" }).end(JSON.stringify({ status }));
    return;
  }
  if (path !== EVENTS_PATH || req.method !== "POST") {
    const code = path === EVENTS_PATH || path === HEALTH_PATH ? ErrorCode.HttpMethod : ErrorCode.HttpEndpoint;
    req.resume();
    send(deps, res, rejected(code, `${req.method} ${path}: the gateway takes POST ${EVENTS_PATH} and GET ${HEALTH_PATH}`));
    return;
  }
  const upstream = deps.upstreams.authenticate(req.headers.authorization);
  if (upstream === undefined) {
    // The body is not read and the connection is closed: an unauthenticated client holds nothing open.
    const message = req.headers.authorization === undefined ? "no Authorization header: send Authorization: Bearer <token>" : "the bearer token matches no upstream";
    send(deps, res, rejected(ErrorCode.Unauthenticated, message), { "www-authenticate": 'Bearer realm="causeway"', connection: "close" });
    return;
  }
  // The rate before the body: one token now (an event, or the first of a batch), so an upstream over its rate is
  // refused without its body being read; the connection is closed, as the unread body may still be coming.
  const over = limited(deps, upstream, 1);
  if (over) {
    send(deps, res, over, { connection: "close" });
    return;
  }
  const contentType = (req.headers["content-type"] ?? "").trim();
  const mediaType = contentType.split(";", 1)[0]!.trim().toLowerCase();
  const batch = mediaType === BATCH_CONTENT_TYPE;
  const structured = !batch && mediaType.startsWith("application/cloudevents");
  const limit = batch ? deps.config.maxBatchBytes : deps.config.maxDataBytes + (structured ? STRUCTURED_MARGIN_BYTES : 0);
  const body = await readBody(req, limit);
  if (body === undefined) {
    send(deps, res, rejected(ErrorCode.PayloadTooLarge,
      `the request body is over ${limit} bytes (${batch ? "batch limit" : `event data limit ${deps.config.maxDataBytes} bytes`}); send large content by reference`,
      { attribute: "data" }), { connection: "close" });
    return;
  }
  const original: QuarantineOriginal = {
    subject: deps.subjects.ingest(upstream.name, "http"), stream: "", seq: 0, consumer: "",
    headers: batch || structured ? contentTypeHeaders(contentType) : binaryHeaders(req), data: body,
  };
  if (batch) await ingestBatch(deps, upstream, original, res);
  else send(deps, res, await ingestOne({ ...deps, limiter: paid(deps.limiter) }, upstream, original));
}

/** A limiter whose first take of one token is granted: the token the request already took before its body. */
function paid(limiter: RateLimiter): RateLimiter {
  let owed = true;
  return {
    take: (upstream, n, now) => (owed && n === 1 ? ((owed = false), 0) : limiter.take(upstream, n, now)),
    capacity: (upstream) => limiter.capacity(upstream),
  };
}

/**
 * 429 when the upstream is over its rate for a batch of `n` events, of which one token was taken before the body;
 * else undefined (the other n - 1 are taken).
 */
function batchLimited(deps: HttpDeps, upstream: Upstream, n: number): Rejected | undefined {
  // More than the bucket ever holds: limited() says so (and takes nothing).
  if (n > deps.limiter.capacity(upstream)) return limited(deps, upstream, n);
  return n > 1 ? limited(deps, upstream, n - 1) : undefined;
}

async function ingestBatch(deps: HttpDeps, upstream: Upstream, original: QuarantineOriginal, res: ServerResponse): Promise<void> {
  let events: CloudEvent[];
  try {
    events = decodeJsonBatch(batchText(original.data));
    const big = events.findIndex((e) => e.data.length > deps.config.maxDataBytes);
    if (big >= 0) {
      throw new IngestError(ErrorCode.PayloadTooLarge, `event ${big} of the batch has ${events[big]!.data.length} bytes of data; the limit is ${deps.config.maxDataBytes}`, { attribute: "data" });
    }
  } catch (err) {
    // Its one token was taken before the body.
    const refusal = await refuse(deps, original, rejectionOf(err));
    const index = failingIndex(original.data);
    send(deps, res, index === undefined ? refusal : { ...refusal, message: `event ${index} of the batch: ${refusal.message}`, index });
    return;
  }
  const over = batchLimited(deps, upstream, events.length);
  if (over) return send(deps, res, over);
  const checked = [];
  const errors: (Rejected & { index: number })[] = [];
  for (const [index, event] of events.entries()) {
    try {
      checked.push(deps.notary.check(event, upstream, "now"));
    } catch (err) {
      // Each refused event is kept on its own, in structured mode with its exact data bytes.
      const copy = { ...original, headers: contentTypeHeaders(STRUCTURED_CONTENT_TYPE), data: Buffer.from(encodeJsonEvent(event)) };
      errors.push({ ...(await refuse(deps, copy, rejectionOf(err))), index });
    }
  }
  if (errors.length > 0) {
    const first = errors[0]!;
    const unavailableStatus = statusOf(ErrorCode.Unavailable);
    const status = errors.some((e) => e.status === unavailableStatus) ? unavailableStatus : first.status;
    send(deps, res, { status, code: first.code, message: `${errors.length} of ${events.length} events refused (first: event ${first.index}: ${first.message}); nothing in the batch was accepted`, errors });
    return;
  }
  // The batch's new flows are admitted together or not at all (429, nothing accepted, nothing kept).
  const publishing = await admitAndPublish(deps, upstream, checked);
  if (!Array.isArray(publishing)) {
    send(deps, res, { ...publishing, message: `the batch of ${events.length} events was not admitted, nothing in it was accepted: ${publishing.message}` });
    return;
  }
  const results: Outcome[] = await Promise.all(checked.map((c, i) => {
    // An event the mesh cannot store is kept on its own, as a refused one is (structured mode, exact data bytes).
    const copy = { ...original, headers: contentTypeHeaders(STRUCTURED_CONTENT_TYPE), data: Buffer.from(encodeJsonEvent(c.event)) };
    return publishOutcome(deps, copy, publishing[i]!);
  }));
  // 503 (retry) when any publish may pass on a retry; else the status of the first permanent refusal.
  const unavailableStatus = statusOf(ErrorCode.Unavailable);
  const failed = results.find((r) => r.status !== 202);
  const retry = results.some((r) => r.status === unavailableStatus);
  send(deps, res, { status: retry ? unavailableStatus : failed?.status ?? 202, results, ...(retry && { retryafter: 1 }) });
}

function send(deps: Pick<HttpDeps, "log">, res: ServerResponse, body: Outcome | (Rejected & Record<string, unknown>) | { status: number; results: readonly Outcome[]; retryafter?: number }, extra: Record<string, string> = {}): void {
  // Every 503 is logged with its cause: an upstream told to retry is an operator's signal (NATS down, JetStream electing).
  if (body.status === UNAVAILABLE_STATUS) logUnavailable(deps.log, "HTTP", body);
  const headers: Record<string, string> = { "content-type": "application/json", ...extra };
  const retry = (body as { retryafter?: number }).retryafter;
  if (retry !== undefined) headers["retry-after"] = String(retry);
  res.writeHead(body.status, headers).end(replyBody(body as Outcome));
}

/** The client went away before its request body was complete. */
class ClientGoneError extends Error {}

/**
 * Reads the body, or undefined as soon as it is over `limit` bytes (Content-Length or counted). Events, not
 * `for await`: the async iterator costs ~10 µs more per request, on the gateway's hottest path.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.resolve(undefined);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.off("data", onData);
        req.resume(); // discard the rest
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    let ended = false;
    req.on("data", onData);
    req.once("end", () => {
      ended = true;
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    });
    // An error or a close before "end" is the client going away mid-body. After "end" they mean nothing, and no
    // error is built: an Error captures a stack, and "close" fires after every request.
    req.once("error", (err) => {
      if (!ended) reject(new ClientGoneError(`the request failed before its body was complete: ${err.message}`, { cause: err }));
    });
    req.once("close", () => {
      if (!ended) reject(new ClientGoneError("the client closed the connection before the body was complete"));
    });
  });
}

// Binary mode: the ce- headers as they came (duplicates kept, so the decoder refuses them), Content-Type as
// ce-datacontenttype — the HTTP binding carries datacontenttype there.
function binaryHeaders(req: IncomingMessage): MsgHdrs {
  const h = natsHeaders();
  const raw = req.rawHeaders; // name, value, name, value, … as received
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name.startsWith("ce-")) h.append(name, raw[i + 1]!);
  }
  const ct = req.headers["content-type"];
  if (ct !== undefined && !h.has("ce-datacontenttype")) h.append("ce-datacontenttype", encodeHeaderValue(ct));
  return h;
}

function contentTypeHeaders(contentType: string): MsgHdrs {
  const h = natsHeaders();
  h.set("Content-Type", contentType);
  return h;
}

// Strict, as in structured mode: invalid UTF-8 is refused, never replaced with U+FFFD (the gateway would sign
// bytes the upstream never sent); a BOM is kept, so JSON.parse refuses it.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A batch body as text; DecodeError CW_ERR_DECODE_JSON (quarantined as decode_error) when it is not UTF-8. */
function batchText(body: Uint8Array): string {
  try {
    return strictUtf8.decode(body);
  } catch (err) {
    throw new DecodeError(ErrorCode.DecodeJson, "the batch is not valid UTF-8", undefined, { cause: err });
  }
}

// Which element of a batch failed to decode (only on the error path): the first that fails on its own.
function failingIndex(body: Uint8Array): number | undefined {
  let items: unknown;
  try {
    items = JSON.parse(batchText(body));
  } catch {
    return undefined;
  }
  if (!Array.isArray(items)) return undefined;
  for (const [i, item] of items.entries()) {
    try {
      decodeJsonEvent(JSON.stringify(item));
    } catch {
      return i;
    }
  }
  return undefined;
}

