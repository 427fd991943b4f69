// The chat-completions adapter against a real HTTP server on loopback: what it sends, and how each failure is
// classified for the agent pipeline.
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test, type TestContext } from "node:test";
import { ModelAnswerError, completeJson, createModelFromEnv } from "../../services/agents/model.ts";
import { ConfigError, RetryableError } from "../../services/kit/index.ts";

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: unknown;
}

/** A loopback server answering every request with `reply`; records what it received. */
async function modelServer(t: TestContext, reply: (res: ServerResponse, seen: Seen) => void): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const s = { method: req.method ?? "", url: req.url ?? "", headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown };
      seen.push(s);
      reply(res, s);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, seen };
}

const completion = (content: string) => JSON.stringify({ id: "c1", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }] });

function answer(status: number, body: string, headers: Record<string, string> = {}) {
  return (res: ServerResponse) => {
    res.writeHead(status, { "content-type": "application/json", ...headers });
    res.end(body);
  };
}

test("model - off unless both CAUSEWAY_MODEL_URL and CAUSEWAY_MODEL are set", () => {
  assert.equal(createModelFromEnv({}), undefined);
  assert.equal(createModelFromEnv({ CAUSEWAY_MODEL_URL: "http://127.0.0.1:1/v1" }), undefined);
  assert.equal(createModelFromEnv({ CAUSEWAY_MODEL: "m" }), undefined);
  assert.equal(createModelFromEnv({ CAUSEWAY_MODEL_URL: " ", CAUSEWAY_MODEL: "m" }), undefined);
  assert.equal(createModelFromEnv({ CAUSEWAY_MODEL_URL: "http://127.0.0.1:1/v1", CAUSEWAY_MODEL: "m" })?.name, "m");
});

test("model - a bad URL or timeout fails naming the variable and the expected form", () => {
  assert.throws(() => createModelFromEnv({ CAUSEWAY_MODEL_URL: "not a url", CAUSEWAY_MODEL: "m" }), (err: unknown) =>
    err instanceof ConfigError && err.code === "CW_ERR_CONFIG" && /CAUSEWAY_MODEL_URL/.test(err.message) && /http\(s\) URL/.test(err.message));
  assert.throws(() => createModelFromEnv({ CAUSEWAY_MODEL_URL: "ftp://x/v1", CAUSEWAY_MODEL: "m" }), /CAUSEWAY_MODEL_URL/);
  assert.throws(() => createModelFromEnv({ CAUSEWAY_MODEL_URL: "http://127.0.0.1/v1", CAUSEWAY_MODEL: "m", CAUSEWAY_MODEL_TIMEOUT_MS: "5s" }), (err: unknown) =>
    err instanceof ConfigError && /CAUSEWAY_MODEL_TIMEOUT_MS="5s"/.test(err.message) && /positive integer/.test(err.message));
});

test("model - posts a chat completion with the model, both prompts, the bearer key and JSON mode", async (t) => {
  const server = await modelServer(t, answer(200, completion('{"ok":true}')));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: `${server.url}/`, CAUSEWAY_MODEL: "test-model", CAUSEWAY_MODEL_API_KEY: "sk-secret" })!;
  assert.equal(await model.complete({ system: "be brief", user: "hello", json: true }), '{"ok":true}');
  assert.equal(await model.complete({ system: "s", user: "u" }), '{"ok":true}');
  const [first, second] = server.seen;
  assert.equal(first!.method, "POST");
  assert.equal(first!.url, "/v1/chat/completions");
  assert.equal(first!.headers.authorization, "Bearer sk-secret");
  assert.equal(first!.headers["content-type"], "application/json");
  assert.deepEqual(first!.body, {
    model: "test-model",
    messages: [{ role: "system", content: "be brief" }, { role: "user", content: "hello" }],
    response_format: { type: "json_object" },
  });
  assert.equal((second!.body as { response_format?: unknown }).response_format, undefined, "no JSON mode unless asked");
});

test("model - reports the answer's token usage and its cost at the configured price, and bounds the answer by the budget's tokens", async (t) => {
  const withUsage = (content: string, usage: unknown) => JSON.stringify({ ...JSON.parse(completion(content)) as object, usage });
  const answers = [withUsage("a", { prompt_tokens: 900, completion_tokens: 1601, total_tokens: 2501 }), withUsage("b", { prompt_tokens: 10, completion_tokens: 5 }), completion("c")];
  const server = await modelServer(t, (res) => answer(200, answers.shift()!)(res));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m", CAUSEWAY_MODEL_COST_PER_1K_TOKENS: "4" })!;
  const spent: unknown[] = [];
  await model.complete({ system: "s", user: "u", maxTokens: 700, spend: (s) => spent.push(s) });
  await model.complete({ system: "s", user: "u", spend: (s) => spent.push(s) });
  await model.complete({ system: "s", user: "u", spend: (s) => spent.push(s) });
  // 2501 tokens at 4 units per 1,000: 10.004, rounded up per request; prompt + completion when no total; no usage, no charge.
  assert.deepEqual(spent, [{ tokens: 2501, cost: 11 }, { tokens: 15, cost: 1 }]);
  assert.equal((server.seen[0]!.body as { max_tokens?: number }).max_tokens, 700);
  assert.equal((server.seen[1]!.body as { max_tokens?: number }).max_tokens, undefined);
  assert.throws(() => createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m", CAUSEWAY_MODEL_COST_PER_1K_TOKENS: "0.5" }), /CAUSEWAY_MODEL_COST_PER_1K_TOKENS="0.5" is invalid/);
});

test("model - no authorization header without CAUSEWAY_MODEL_API_KEY", async (t) => {
  const server = await modelServer(t, answer(200, completion("hi")));
  await createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m" })!.complete({ system: "s", user: "u" });
  assert.equal(server.seen[0]!.headers.authorization, undefined);
});

test("model - 429 is retryable with the server's Retry-After as the delay", async (t) => {
  const server = await modelServer(t, answer(429, '{"error":"slow down"}', { "retry-after": "7" }));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m" })!;
  await assert.rejects(model.complete({ system: "s", user: "u" }), (err: unknown) => err instanceof RetryableError && err.delayMs === 7000 && /HTTP 429/.test(err.message));
});

test("model - 5xx is retryable", async (t) => {
  const server = await modelServer(t, answer(503, "unavailable"));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m" })!;
  await assert.rejects(model.complete({ system: "s", user: "u" }), (err: unknown) => err instanceof RetryableError && err.delayMs === undefined);
});

test("model - 400 is not retryable, and a key the server echoes back is redacted", async (t) => {
  const server = await modelServer(t, answer(400, '{"error":{"message":"bad request for key sk-secret"}}'));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m", CAUSEWAY_MODEL_API_KEY: "sk-secret" })!;
  await assert.rejects(model.complete({ system: "s", user: "u" }), (err: unknown) =>
    err instanceof Error && !(err instanceof RetryableError) && /HTTP 400/.test(err.message) && !err.message.includes("sk-secret"));
});

test("model - no answer within the timeout is retryable", async (t) => {
  const server = await modelServer(t, () => undefined); // never answers
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m", CAUSEWAY_MODEL_TIMEOUT_MS: "50" })!;
  await assert.rejects(model.complete({ system: "s", user: "u" }), (err: unknown) => err instanceof RetryableError && /no answer within 50 ms/.test(err.message));
});

test("model - a refused connection is retryable", async () => {
  // A port that was just listening and is closed now: the connection is refused.
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: `http://127.0.0.1:${port}/v1`, CAUSEWAY_MODEL: "m" })!;
  await assert.rejects(model.complete({ system: "s", user: "u" }), (err: unknown) => err instanceof RetryableError && /request failed/.test(err.message));
});

test("model - an aborted signal ends the request as retryable", async (t) => {
  const server = await modelServer(t, () => undefined);
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m" })!;
  const controller = new AbortController();
  const pending = model.complete({ system: "s", user: "u" }, controller.signal);
  controller.abort();
  await assert.rejects(pending, (err: unknown) => err instanceof RetryableError && /aborted/.test(err.message));
});

test("model - a 200 that is not a chat completion is a ModelAnswerError", async (t) => {
  const server = await modelServer(t, answer(200, '{"unexpected":true}'));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m" })!;
  await assert.rejects(model.complete({ system: "s", user: "u" }), ModelAnswerError);
});

test("model - completeJson validates the shape and reports malformed answers instead of throwing", async (t) => {
  const answers = ['{"n": 3}', "```json\n{\"n\": 4}\n```", "not json", '{"n": "three"}'];
  const server = await modelServer(t, (res) => answer(200, completion(answers.shift()!))(res));
  const model = createModelFromEnv({ CAUSEWAY_MODEL_URL: server.url, CAUSEWAY_MODEL: "m" })!;
  const parse = (v: unknown) => {
    const n = (v as { n?: unknown }).n;
    if (typeof n !== "number") throw new Error("n must be a number");
    return n;
  };
  assert.deepEqual(await completeJson(model, { system: "s", user: "u" }, parse), { ok: true, value: 3 });
  assert.deepEqual(await completeJson(model, { system: "s", user: "u" }, parse), { ok: true, value: 4 });
  const notJson = await completeJson(model, { system: "s", user: "u" }, parse);
  assert.equal(notJson.ok, false);
  assert.match(!notJson.ok ? notJson.problem : "", /not JSON/);
  const wrong = await completeJson(model, { system: "s", user: "u" }, parse);
  assert.match(!wrong.ok ? wrong.problem : "", /wrong shape: n must be a number/);
  assert.ok(server.seen.every((s) => (s.body as { response_format?: { type: string } }).response_format?.type === "json_object"));
});
