// What counts as a fault that passes by itself (kit transient.ts), and the server lists of NATS_URL (connect.ts).
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  CausewayError, ConfigError, ErrorCode, NotReadyError, TRANSIENT_RETRY_MS, asUnavailable, isNotReady, isTransient, parseServers, transientRetryDelayMs,
} from "../../services/kit/index.ts";

const named = (name: string, message = name, extra: Record<string, unknown> = {}) => Object.assign(new Error(message), { name }, extra);

describe("transient faults", () => {
  test("transient - timeouts, no responders, JetStream not answering, closed or refused connections, 503s and CW_ERR_UNAVAILABLE are transient; refusals are not", () => {
    for (const err of [
      named("TimeoutError", "timeout"), named("NoRespondersError", "no responders: nobody.home"), named("JetStreamNotEnabled", "jetstream is not enabled"),
      named("ClosedConnectionError", "closed connection"), named("ConnectionError", "connection refused"), named("Error", "connect ECONNREFUSED", { code: "ECONNREFUSED" }),
      named("JetStreamApiError", "JetStream system temporarily unavailable", { apiError: () => ({ code: 503, err_code: 10008 }) }),
      named("JetStreamStatusError", "no responders", { code: 503 }),
      named("StreamPublishError", "no ack within 5000 ms", { transient: true }),
      new CausewayError(ErrorCode.Unavailable, "the coordinator did not answer"),
      new CausewayError(ErrorCode.Config, "consumer x is missing (jetstream is not enabled)", { cause: named("JetStreamNotEnabled", "jetstream is not enabled") }),
    ]) assert.equal(isTransient(err), true, `${err.name}: ${err.message}`);
    for (const err of [
      new Error("boom"), named("PermissionViolationError", "Permissions Violation for Publish to x"), named("AuthorizationError", "Authorization Violation"),
      named("JetStreamApiError", "stream not found", { apiError: () => ({ code: 404, err_code: 10059 }) }),
      named("StreamPublishError", "maximum messages exceeded", { transient: false }),
      new CausewayError(ErrorCode.SchemaViolation, "data does not match"), "a string", undefined,
    ]) assert.equal(isTransient(err), false, String(err));
  });

  test("transient - not ready: transient faults, and what operator tooling has not created yet (NotReadyError, stream or consumer not found); other config errors are not", () => {
    assert.equal(isNotReady(named("TimeoutError")), true);
    assert.equal(isNotReady(new NotReadyError(ErrorCode.Config, "KV bucket causeway_joins does not exist")), true);
    assert.equal(isNotReady(named("StreamNotFoundError", "stream not found", { apiError: () => ({ code: 404, err_code: 10059 }) })), true);
    assert.equal(isNotReady(named("ConsumerNotFoundError", "consumer not found", { apiError: () => ({ code: 404, err_code: 10014 }) })), true);
    assert.equal(isNotReady(new ConfigError(ErrorCode.Config, "LINEAGE_ORIGIN is invalid")), false);
    assert.equal(isNotReady(new ConfigError(ErrorCode.PermissionDenied, "the server refused", { cause: named("PermissionViolationError") })), false);
  });

  test("transient - retries wait 250 ms to 2 s, longer with each attempt, jittered", () => {
    for (let attempt = 1; attempt <= 12; attempt++) {
      for (let i = 0; i < 50; i++) {
        const ms = transientRetryDelayMs(attempt);
        assert.ok(ms >= TRANSIENT_RETRY_MS.min && ms <= TRANSIENT_RETRY_MS.max, `attempt ${attempt}: ${ms}`);
      }
    }
    const first = Array.from({ length: 50 }, () => transientRetryDelayMs(1));
    assert.ok(Math.max(...first) <= 313, "the first retry comes soon");
    assert.ok(new Set(first).size > 1, "jittered");
  });

  test("transient - asUnavailable maps a transient fault to CW_ERR_UNAVAILABLE with the retry message, and leaves others alone", () => {
    const mapped = asUnavailable(named("JetStreamNotEnabled", "jetstream is not enabled"), "reading approvals");
    assert.equal(mapped?.code, ErrorCode.Unavailable);
    assert.equal(mapped.message, "reading approvals: JetStream is not available right now (leader election?): retry");
    assert.equal(asUnavailable(new Error("boom")), undefined);
  });
});

describe("server lists", () => {
  test("connect - NATS_URL lists servers separated by commas; an empty list or an entry that is no address is CW_ERR_CONFIG", () => {
    assert.deepEqual(parseServers("nats://a:4222"), ["nats://a:4222"]);
    assert.deepEqual(parseServers("nats://a:4222, nats://b:4222,tls://c:4443"), ["nats://a:4222", "nats://b:4222", "tls://c:4443"]);
    assert.deepEqual(parseServers(["nats://a:1,nats://b:2", "c:3"]), ["nats://a:1", "nats://b:2", "c:3"]);
    assert.deepEqual(parseServers("nats://a:4222,"), ["nats://a:4222"]);
    assert.throws(() => parseServers(" , "), (err: CausewayError) => err.code === ErrorCode.Config && /names no server/.test(err.message));
    assert.throws(() => parseServers("nats://a:4222,http://b:80"), (err: CausewayError) => err.code === ErrorCode.Config && /"http:\/\/b:80" is not a NATS server address/.test(err.message));
    assert.throws(() => parseServers("nats://a b:4222", "--server"), (err: CausewayError) => /^--server: /.test(err.message));
  });
});
