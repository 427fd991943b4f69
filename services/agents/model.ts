// The optional language model behind the reference agents: an OpenAI-compatible chat-completions adapter.
// It is off unless CAUSEWAY_MODEL_URL and CAUSEWAY_MODEL are both set, so the mesh runs deterministically by
// default. Failures are classified for the agent pipeline: what may succeed later (429, 5xx, timeouts, network)
// is a RetryableError, so the input is nak'ed with backoff; the rest is a plain Error. The API key lives in a
// closure only: never logged, never in an error message (a server echoing it back is redacted).
import { ConfigError, ErrorCode, RetryableError, type HandlerContext, type Spend } from "../kit/index.ts";

/** One completion request: a system prompt, a user prompt, and whether the answer must be a JSON object. */
export interface ModelRequest {
  system: string;
  user: string;
  /** Ask for a JSON object (`response_format: {type: "json_object"}`). Default false. */
  json?: boolean;
  /** The most tokens the answer may take (`max_tokens`): what the flow's budget leaves. Default: the model's. */
  maxTokens?: number;
  /**
   * Told what the request spent, from the answer's `usage` (prompt and completion tokens, and cost units at the
   * adapter's price): pass the handler's `ctx.spend`, so the flow's ledger and the output carry it.
   */
  spend?: (spent: Partial<Spend>) => void;
}

/** A language model: one prompt in, the text of one answer out. */
export interface Model {
  /** The model id, e.g. `gpt-4o-mini` (never the URL's credentials or the key). */
  readonly name: string;
  /** Throws RetryableError for rate limits, server errors, timeouts and network failures; Error otherwise. */
  complete(req: ModelRequest, signal?: AbortSignal): Promise<string>;
}

/** The environment variables the adapter reads. */
export const ModelEnv = {
  /** Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1` (`/chat/completions` is appended). */
  Url: "CAUSEWAY_MODEL_URL",
  /** Model id sent as `model`. */
  Model: "CAUSEWAY_MODEL",
  /** Bearer token; optional (local servers often need none). */
  ApiKey: "CAUSEWAY_MODEL_API_KEY",
  /** Milliseconds before a request is abandoned as retryable. Default {@link DEFAULT_MODEL_TIMEOUT_MS}. */
  TimeoutMs: "CAUSEWAY_MODEL_TIMEOUT_MS",
  /** Cost units charged per 1,000 tokens of a request (rounded up per request). Default {@link DEFAULT_COST_PER_1K_TOKENS}. */
  CostPer1kTokens: "CAUSEWAY_MODEL_COST_PER_1K_TOKENS",
} as const;

/** Default price: 1 cost unit per 1,000 tokens. */
export const DEFAULT_COST_PER_1K_TOKENS = 1;

/** Default request timeout: 30 s. */
export const DEFAULT_MODEL_TIMEOUT_MS = 30_000;

/** Options for {@link createChatCompletionsModel}. */
export interface ChatCompletionsOptions {
  /** Base URL; `/chat/completions` is appended. */
  url: string;
  /** Model id. */
  model: string;
  /** Bearer token. Default none. */
  apiKey?: string;
  /** Request timeout in milliseconds. Default {@link DEFAULT_MODEL_TIMEOUT_MS}. */
  timeoutMs?: number;
  /** Cost units per 1,000 tokens. Default {@link DEFAULT_COST_PER_1K_TOKENS}. */
  costPer1kTokens?: number;
}

/** A 2xx answer that is not a chat completion with text content. Agents treat it like a malformed answer. */
export class ModelAnswerError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ModelAnswerError";
  }
}

/**
 * The model configured by the environment, or undefined when CAUSEWAY_MODEL_URL or CAUSEWAY_MODEL is unset
 * (the agents then run their deterministic logic). Throws ConfigError CW_ERR_CONFIG naming the variable for a
 * URL that is not http(s) or a timeout that is not a positive integer.
 */
export function createModelFromEnv(env: NodeJS.ProcessEnv = process.env): Model | undefined {
  const url = nonEmpty(env[ModelEnv.Url]);
  const model = nonEmpty(env[ModelEnv.Model]);
  if (url === undefined || model === undefined) return undefined;
  const timeout = nonEmpty(env[ModelEnv.TimeoutMs]);
  let timeoutMs = DEFAULT_MODEL_TIMEOUT_MS;
  if (timeout !== undefined) {
    timeoutMs = Number(timeout);
    if (!/^[1-9][0-9]*$/.test(timeout) || !Number.isSafeInteger(timeoutMs)) {
      throw new ConfigError(ErrorCode.Config, `${ModelEnv.TimeoutMs}=${JSON.stringify(timeout)} is invalid: expected a positive integer of milliseconds, e.g. 30000`);
    }
  }
  const price = nonEmpty(env[ModelEnv.CostPer1kTokens]);
  let costPer1kTokens = DEFAULT_COST_PER_1K_TOKENS;
  if (price !== undefined) {
    costPer1kTokens = Number(price);
    if (!/^[0-9]+$/.test(price) || !Number.isSafeInteger(costPer1kTokens)) {
      throw new ConfigError(ErrorCode.Config, `${ModelEnv.CostPer1kTokens}=${JSON.stringify(price)} is invalid: expected a non-negative integer of cost units, e.g. 1`);
    }
  }
  const apiKey = nonEmpty(env[ModelEnv.ApiKey]);
  return createChatCompletionsModel({ url, model, timeoutMs, costPer1kTokens, ...(apiKey !== undefined && { apiKey }) });
}

/** An OpenAI-compatible chat-completions model. Throws ConfigError for a URL that is not http(s). */
export function createChatCompletionsModel(opts: ChatCompletionsOptions): Model {
  let base: URL;
  try {
    base = new URL(opts.url);
  } catch {
    throw new ConfigError(ErrorCode.Config, `${ModelEnv.Url} is invalid: expected an http(s) URL such as https://api.openai.com/v1`);
  }
  if ((base.protocol !== "http:" && base.protocol !== "https:") || base.username !== "" || base.password !== "") {
    throw new ConfigError(ErrorCode.Config, `${ModelEnv.Url} is invalid: expected an http(s) URL without credentials, such as https://api.openai.com/v1`);
  }
  if (opts.model.trim() === "") throw new ConfigError(ErrorCode.Config, `${ModelEnv.Model} is empty: expected a model id such as gpt-4o-mini`);
  const endpoint = `${base.href.replace(/\/+$/, "")}/chat/completions`;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_MODEL_TIMEOUT_MS;
  const apiKey = opts.apiKey;
  const costPer1k = opts.costPer1kTokens ?? DEFAULT_COST_PER_1K_TOKENS;
  const redact = (text: string) => (apiKey ? text.replaceAll(apiKey, "[redacted]") : text);

  const complete = async (req: ModelRequest, signal?: AbortSignal): Promise<string> => {
    const timeout = AbortSignal.timeout(timeoutMs);
    const body = {
      model: opts.model,
      messages: [
        { role: "system", content: req.system },
        { role: "user", content: req.user },
      ],
      ...(req.json === true && { response_format: { type: "json_object" } }),
      ...(req.maxTokens !== undefined && { max_tokens: req.maxTokens }),
    };
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    if (apiKey !== undefined) headers.authorization = `Bearer ${apiKey}`;
    let status: number;
    let text: string;
    let retryAfter: string | null;
    try {
      const res = await fetch(endpoint, {
        method: "POST",
        headers,
        body: JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
      status = res.status;
      retryAfter = res.headers.get("retry-after");
      text = await res.text();
    } catch (err) {
      if (timeout.aborted) throw new RetryableError(`model ${opts.model}: no answer within ${timeoutMs} ms`, { cause: err });
      if (signal?.aborted) throw new RetryableError(`model ${opts.model}: request aborted`, { cause: err });
      throw new RetryableError(`model ${opts.model}: request failed: ${redact(describeNetworkError(err))}`, { cause: err });
    }
    if (status === 429 || status === 408 || status >= 500) {
      const delayMs = retryAfterMs(retryAfter);
      throw new RetryableError(`model ${opts.model}: HTTP ${status}${excerpt(redact(text))}`, delayMs === undefined ? {} : { delayMs });
    }
    if (status < 200 || status > 299) throw new Error(`model ${opts.model}: HTTP ${status}${excerpt(redact(text))}`);
    const { content, tokens } = answerOf(text, opts.model);
    // What the answer says it used; an answer without `usage` is charged nothing.
    if (tokens !== undefined) req.spend?.({ tokens, cost: Math.ceil((tokens * costPer1k) / 1000) });
    return content;
  };

  return Object.freeze({ name: opts.model, complete });
}

/** Fewest tokens a model call is worth making with: below it, an agent takes its deterministic path. */
const MIN_MODEL_TOKENS = 256;

/** Whether the flow's budget leaves enough for a model call (no budget: it does). */
export function affordsModel(ctx: Pick<HandlerContext, "budget">): boolean {
  const left = ctx.budget?.remaining;
  return (left?.tokens === undefined || left.tokens >= MIN_MODEL_TOKENS) && (left?.cost === undefined || left.cost > 0);
}

/** The part of a request the flow's budget decides: the answer's token bound, and where the spend is reported. */
export function modelBudget(ctx: Pick<HandlerContext, "budget" | "spend">): Pick<ModelRequest, "maxTokens" | "spend"> {
  const tokens = ctx.budget?.remaining.tokens;
  return { spend: (s) => ctx.spend(s), ...(tokens !== undefined && { maxTokens: tokens }) };
}

/** What {@link completeJson} returns: the validated answer, or why the answer was unusable. */
export type JsonAnswer<T> = { ok: true; value: T } | { ok: false; problem: string };

/**
 * Asks `model` for a JSON object and checks it with `parse` (which throws, with a message saying what is
 * wrong, when the shape is not the expected one). A malformed answer — not JSON, the wrong shape, or not a
 * chat completion — comes back as `{ok: false}` so the caller can fall back; RetryableError and other
 * failures of the request itself propagate.
 */
export async function completeJson<T>(model: Model, req: Omit<ModelRequest, "json">, parse: (value: unknown) => T, signal?: AbortSignal): Promise<JsonAnswer<T>> {
  let text: string;
  try {
    text = await model.complete({ ...req, json: true }, signal);
  } catch (err) {
    if (err instanceof ModelAnswerError) return { ok: false, problem: err.message };
    throw err;
  }
  let value: unknown;
  try {
    value = JSON.parse(stripCodeFence(text));
  } catch {
    return { ok: false, problem: `model ${model.name} answered text that is not JSON${excerpt(text)}` };
  }
  try {
    return { ok: true, value: parse(value) };
  } catch (err) {
    return { ok: false, problem: `model ${model.name} answered JSON of the wrong shape: ${(err as Error).message}` };
  }
}

/** A chat completion's text content and the tokens it says it used (parsed once). */
function answerOf(text: string, model: string): { content: string; tokens: number | undefined } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ModelAnswerError(`model ${model}: the answer is not JSON${excerpt(text)}`, { cause: err });
  }
  const choice = (parsed as { choices?: unknown } | null)?.choices;
  const content = Array.isArray(choice) ? (choice[0] as { message?: { content?: unknown } } | undefined)?.message?.content : undefined;
  if (typeof content !== "string") throw new ModelAnswerError(`model ${model}: the answer has no choices[0].message.content string`);
  return { content, tokens: tokensOf(parsed as { usage?: unknown }) };
}

/** The tokens a chat completion says it used: `usage.total_tokens`, else prompt + completion; undefined when it says nothing usable. */
function tokensOf(answer: { usage?: unknown }): number | undefined {
  const usage = answer.usage as { total_tokens?: unknown; prompt_tokens?: unknown; completion_tokens?: unknown } | undefined;
  const count = (v: unknown) => (typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : undefined);
  const total = count(usage?.total_tokens);
  if (total !== undefined) return total;
  const prompt = count(usage?.prompt_tokens), completion = count(usage?.completion_tokens);
  return prompt !== undefined && completion !== undefined ? prompt + completion : undefined;
}

// Some models wrap JSON in a Markdown fence even in JSON mode.
function stripCodeFence(text: string): string {
  const m = /^\s*```(?:json)?\s*\n([\s\S]*?)\n?```\s*$/.exec(text);
  return m ? m[1]! : text;
}

function retryAfterMs(value: string | null): number | undefined {
  if (value === null) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function describeNetworkError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err.cause as { code?: unknown } | undefined)?.code;
  return typeof code === "string" ? `${err.message} (${code})` : err.message;
}

function excerpt(text: string): string {
  const t = text.replace(/\s+/g, " ").trim();
  if (t === "") return "";
  return `: ${t.length > 200 ? `${t.slice(0, 200)}…` : t}`;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}
