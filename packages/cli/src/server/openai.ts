/**
 * The OpenAI request shapes this server accepts, checked field by field into plain options, and
 * the error body OpenAI clients understand (`{"error": {message, type, param, code}}`). The
 * response bodies are in openai-response.ts.
 */
import { compileJsonSchema, JsonSchemaError, type ChatMessage, type ChatToolCall, type JsonSchema, type ToolFunction } from '@airllm/engine';
import { AirllmError } from '@airllm/format';

/**
 * A request the API answers with an HTTP error: `status`, and OpenAI's error body fields
 * (`type`, `param`, and OpenAI's own error code as `apiCode`, e.g. "context_length_exceeded").
 */
export class ApiError extends AirllmError {
  static override readonly code = 'AIRLLM_API';
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly apiCode: string | null = null,
    readonly type: string = status === 401 ? 'authentication_error' : status === 429 ? 'rate_limit_error' : status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly headers: Record<string, string> = {},
  ) {
    super(message, { status, type, param: param ?? undefined, apiCode: apiCode ?? undefined });
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.apiCode } };
  }
}

/** Most choices one request may ask for (n × prompts). */
export const MAX_CHOICES = 16;
/** OpenAI's limit on stop sequences. */
export const MAX_STOP = 4;
/** OpenAI's limits on alternatives per token: chat top_logprobs, legacy completions logprobs. */
export const MAX_TOP_LOGPROBS = 20;
export const MAX_COMPLETION_LOGPROBS = 5;

export interface SamplingRequest {
  /** Undefined: whatever room the context leaves. */
  maxTokens: number | undefined;
  temperature: number;
  topP: number;
  topK: number;
  seed: number | undefined;
  stop: string[];
  n: number;
  stream: boolean;
  includeUsage: boolean;
  /** Log-probabilities with this many alternatives per token; undefined: none. */
  logprobs: number | undefined;
  /** The output must be JSON valid against this schema (response_format); undefined: free text. */
  jsonSchema: JsonSchema | undefined;
}

/** tool_choice: let the model choose, never call, call some tool, or call this one. */
export type ToolChoice = 'auto' | 'none' | 'required' | { name: string };

export interface ChatRequest extends SamplingRequest {
  messages: ChatMessage[];
  enableThinking: boolean | undefined;
  /** The functions of `tools` (empty: none). */
  tools: ToolFunction[];
  toolChoice: ToolChoice;
}

export interface CompletionRequest extends SamplingRequest {
  prompts: (string | number[])[];
  echo: boolean;
}

type Json = Record<string, unknown>;

const bad = (param: string, message: string, code: string | null = null): ApiError => new ApiError(400, `${param}: ${message}`, param, code);

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}

export function asObject(body: unknown): Json {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError(400, `the request body must be a JSON object, got ${describe(body)}`);
  return body as Json;
}

function optNumber(o: Json, key: string, min: number, max: number, fallback: number): number {
  const v = o[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(key, `expected a number, got ${describe(v)}`);
  if (v < min || v > max) throw bad(key, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

function optInteger(o: Json, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw bad(key, `expected a whole number, got ${describe(v)}`);
  if (v < min || v > max) throw bad(key, `must be between ${min} and ${max}, got ${v}`);
  return v;
}

function optBoolean(o: Json, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw bad(key, `expected true or false, got ${describe(v)}`);
  return v;
}

/** Fields that would change the answer in ways this server cannot honour: refused, not ignored. */
function refuseUnsupported(o: Json): void {
  if (o.functions !== undefined && o.functions !== null) throw bad('functions', 'the deprecated function calling is not supported; use tools');
  // Accepted for compatibility and ignored (their neutral values are what this server does).
  for (const key of ['presence_penalty', 'frequency_penalty']) optNumber(o, key, -2, 2, 0);
}

/**
 * Chat: `logprobs` true/false and `top_logprobs` 0..20 (only with logprobs). Completions:
 * `logprobs` a whole number 0..5 of alternatives.
 */
function logprobsOf(o: Json, isChat: boolean): number | undefined {
  if (!isChat) return optInteger(o, 'logprobs', 0, MAX_COMPLETION_LOGPROBS);
  const on = optBoolean(o, 'logprobs') ?? false;
  const top = optInteger(o, 'top_logprobs', 0, MAX_TOP_LOGPROBS);
  if (top !== undefined && !on) throw bad('top_logprobs', 'requires logprobs: true');
  return on ? (top ?? 0) : undefined;
}

/**
 * `response_format`: text (none), json_object (any JSON object) or json_schema (its `schema`,
 * compiled here so that a keyword outside the supported subset is a 400 naming it).
 */
function responseFormat(o: Json): JsonSchema | undefined {
  const rf = o.response_format;
  if (rf === undefined || rf === null) return undefined;
  const f = asObjectParam(rf, 'response_format');
  if (f.type === 'text') return undefined;
  if (f.type === 'json_object') return { type: 'object' };
  if (f.type !== 'json_schema') throw bad('response_format.type', `expected "text", "json_object" or "json_schema", got ${describe(f.type)}`);
  const js = asObjectParam(f.json_schema, 'response_format.json_schema');
  if (js.schema === undefined || js.schema === null) throw bad('response_format.json_schema.schema', 'is required');
  const schema = js.schema;
  if (schema !== true && (typeof schema !== 'object' || Array.isArray(schema))) throw bad('response_format.json_schema.schema', `expected a JSON schema object, got ${describe(schema)}`);
  try {
    compileJsonSchema(schema as JsonSchema);
  } catch (e) {
    if (e instanceof JsonSchemaError) throw bad('response_format.json_schema.schema', e.message);
    throw e;
  }
  return schema as JsonSchema;
}

function sampling(o: Json, isChat: boolean): SamplingRequest {
  refuseUnsupported(o);
  if (o.model !== undefined && typeof o.model !== 'string') throw bad('model', `expected a string, got ${describe(o.model)}`);
  const maxTokens = optInteger(o, 'max_completion_tokens', 1, Number.MAX_SAFE_INTEGER) ?? optInteger(o, 'max_tokens', 1, Number.MAX_SAFE_INTEGER);
  const temperature = optNumber(o, 'temperature', 0, 2, 1);
  const topP = optNumber(o, 'top_p', 0, 1, 1);
  const topK = optInteger(o, 'top_k', 0, Number.MAX_SAFE_INTEGER) ?? 0;
  const seed = optInteger(o, 'seed', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const n = optInteger(o, 'n', 1, MAX_CHOICES) ?? 1;
  let stop: string[] = [];
  const s = o.stop;
  if (typeof s === 'string') stop = [s];
  else if (Array.isArray(s)) stop = s as string[];
  else if (s !== undefined && s !== null) throw bad('stop', `expected a string or an array of strings, got ${describe(s)}`);
  if (stop.length > MAX_STOP) throw bad('stop', `at most ${MAX_STOP} stop sequences, got ${stop.length}`);
  stop.forEach((x, i) => {
    if (typeof x !== 'string') throw bad(`stop[${i}]`, `expected a string, got ${describe(x)}`);
    if (x.length === 0) throw bad(`stop[${i}]`, 'must not be empty');
  });
  const stream = optBoolean(o, 'stream') ?? false;
  let includeUsage = false;
  const so = o.stream_options;
  if (so !== undefined && so !== null) {
    if (!stream) throw bad('stream_options', 'only allowed when stream is true');
    includeUsage = optBoolean(asObjectParam(so, 'stream_options'), 'include_usage') ?? false;
  }
  // top_p 0 keeps only the most likely token: greedy.
  const logprobs = logprobsOf(o, isChat);
  const jsonSchema = responseFormat(o);
  return { maxTokens, temperature: topP === 0 ? 0 : temperature, topP, topK, seed, stop, n, stream, includeUsage, logprobs, jsonSchema };
}

function asObjectParam(v: unknown, param: string): Json {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(param, `expected an object, got ${describe(v)}`);
  return v as Json;
}

/** Message content: a string, or text parts `[{type: "text", text}]` joined. */
function content(v: unknown, param: string, role: string): string {
  if (typeof v === 'string') return v;
  if ((v === null || v === undefined) && role === 'assistant') return '';
  if (Array.isArray(v)) {
    return v
      .map((p, i) => {
        const part = asObjectParam(p, `${param}[${i}]`);
        if (part.type !== 'text') throw bad(`${param}[${i}].type`, `only text parts are supported, got ${describe(part.type)}`);
        if (typeof part.text !== 'string') throw bad(`${param}[${i}].text`, `expected a string, got ${describe(part.text)}`);
        return part.text;
      })
      .join('');
  }
  throw bad(param, `expected a string or an array of text parts, got ${describe(v)}`);
}

/** `tools`: function definitions, each name unique, its parameters a schema this server can enforce. */
function parseTools(v: unknown): ToolFunction[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw bad('tools', `expected an array, got ${describe(v)}`);
  const names = new Set<string>();
  return v.map((raw, i) => {
    const t = asObjectParam(raw, `tools[${i}]`);
    if (t.type !== 'function') throw bad(`tools[${i}].type`, `only "function" is supported, got ${describe(t.type)}`);
    const f = asObjectParam(t.function, `tools[${i}].function`);
    if (typeof f.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(f.name)) throw bad(`tools[${i}].function.name`, `expected 1 to 64 letters, digits, _ or -, got ${describe(f.name)}`);
    if (names.has(f.name)) throw bad(`tools[${i}].function.name`, `"${f.name}" is defined twice`);
    names.add(f.name);
    if (f.description !== undefined && typeof f.description !== 'string') throw bad(`tools[${i}].function.description`, `expected a string, got ${describe(f.description)}`);
    const fn: ToolFunction = { name: f.name, ...(typeof f.description === 'string' ? { description: f.description } : {}) };
    if (f.parameters !== undefined && f.parameters !== null) {
      const params = asObjectParam(f.parameters, `tools[${i}].function.parameters`);
      try {
        compileJsonSchema(params);
      } catch (e) {
        if (e instanceof JsonSchemaError) throw bad(`tools[${i}].function.parameters`, e.message);
        throw e;
      }
      fn.parameters = params;
    }
    return fn;
  });
}

function parseToolChoice(v: unknown, tools: readonly ToolFunction[]): ToolChoice {
  if (v === undefined || v === null) return tools.length > 0 ? 'auto' : 'none';
  if (v === 'auto' || v === 'none' || v === 'required') {
    if (v === 'required' && tools.length === 0) throw bad('tool_choice', '"required" needs tools');
    return v;
  }
  const c = asObjectParam(v, 'tool_choice');
  const name = typeof c.function === 'object' && c.function !== null ? (c.function as Json).name : undefined;
  if (c.type !== 'function' || typeof name !== 'string') throw bad('tool_choice', 'expected "auto", "none", "required" or {"type": "function", "function": {"name": …}}');
  if (!tools.some((t) => t.name === name)) throw bad('tool_choice', `names the function "${name}", which is not in tools`);
  return { name };
}

/** An assistant message's `tool_calls`: arguments (JSON text in OpenAI's API) as objects for the template. */
function parseToolCallsParam(v: unknown, param: string): ChatToolCall[] {
  if (!Array.isArray(v)) throw bad(param, `expected an array, got ${describe(v)}`);
  return v.map((raw, i) => {
    const c = asObjectParam(raw, `${param}[${i}]`);
    const f = asObjectParam(c.function, `${param}[${i}].function`);
    if (typeof f.name !== 'string') throw bad(`${param}[${i}].function.name`, `expected a string, got ${describe(f.name)}`);
    let args: Record<string, unknown> | string = typeof f.arguments === 'string' ? f.arguments : '{}';
    try {
      const parsed = JSON.parse(args) as unknown;
      if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) args = parsed as Record<string, unknown>;
    } catch {
      // Not JSON: the template gets the text as it is.
    }
    return { ...(typeof c.id === 'string' ? { id: c.id } : {}), name: f.name, arguments: args };
  });
}

export function parseChatRequest(body: unknown): ChatRequest {
  const o = asObject(body);
  const m = o.messages;
  if (m === undefined || m === null) throw bad('messages', 'is required (a non-empty array of {role, content})');
  if (!Array.isArray(m)) throw bad('messages', `expected an array, got ${describe(m)}`);
  if (m.length === 0) throw bad('messages', 'must not be empty');
  const messages = m.map((raw, i): ChatMessage => {
    const msg = asObjectParam(raw, `messages[${i}]`);
    const role = msg.role;
    if (typeof role !== 'string') throw bad(`messages[${i}].role`, `expected a string, got ${describe(role)}`);
    if (role === 'function') throw bad(`messages[${i}].role`, '"function" messages (the deprecated function calling) are not supported; use tools');
    // "developer" is OpenAI's newer name for the system role.
    const r = role === 'developer' ? 'system' : role;
    if (r !== 'system' && r !== 'user' && r !== 'assistant' && r !== 'tool') throw bad(`messages[${i}].role`, `unknown role "${role}" (expected system, developer, user, assistant or tool)`);
    const m: ChatMessage = { role: r, content: content(msg.content, `messages[${i}].content`, r) };
    if (r === 'assistant' && msg.tool_calls !== undefined && msg.tool_calls !== null) m.toolCalls = parseToolCallsParam(msg.tool_calls, `messages[${i}].tool_calls`);
    if (r === 'tool') {
      if (typeof msg.tool_call_id !== 'string') throw bad(`messages[${i}].tool_call_id`, `is required for a tool message (a string), got ${describe(msg.tool_call_id)}`);
      m.toolCallId = msg.tool_call_id;
    }
    return m;
  });
  const base = sampling(o, true);
  const tools = parseTools(o.tools);
  const toolChoice = parseToolChoice(o.tool_choice, tools);
  optBoolean(o, 'parallel_tool_calls');
  if (toolChoice !== 'none' && base.jsonSchema !== undefined) throw bad('response_format', 'cannot be combined with tools (a tool call is JSON of its own schema)');
  return { ...base, messages, enableThinking: optBoolean(o, 'enable_thinking'), tools, toolChoice };
}

export function parseCompletionRequest(body: unknown, vocabSize: number): CompletionRequest {
  const o = asObject(body);
  const p = o.prompt;
  if (p === undefined || p === null) throw bad('prompt', 'is required (a string, an array of strings, or token ids)');
  let prompts: (string | number[])[];
  const isTokens = (a: unknown[]): boolean => a.length > 0 && a.every((t) => typeof t === 'number');
  if (typeof p === 'string') prompts = [p];
  else if (Array.isArray(p) && isTokens(p)) prompts = [p as number[]];
  else if (Array.isArray(p) && p.length > 0) {
    // Refused before looking at each one (a 1 MiB body holds 250,000 one-letter prompts).
    if (p.length > MAX_CHOICES) throw bad('prompt', `at most ${MAX_CHOICES} prompts, got ${p.length}`);
    prompts = p.map((x, i) => {
      if (typeof x === 'string') return x;
      if (Array.isArray(x) && isTokens(x)) return x as number[];
      throw bad(`prompt[${i}]`, `expected a string or an array of token ids, got ${describe(x)}`);
    });
  } else throw bad('prompt', `expected a string, an array of strings, or token ids, got ${describe(p)}`);
  prompts.forEach((q, i) => {
    if (typeof q === 'string') return;
    q.forEach((t, j) => {
      if (!Number.isInteger(t) || t < 0 || t >= vocabSize) throw bad(`prompt${prompts.length > 1 || Array.isArray(p[0]) ? `[${i}]` : ''}[${j}]`, `token id ${t} is outside the vocabulary 0..${vocabSize - 1}`);
    });
  });
  if (typeof o.suffix === 'string' && o.suffix !== '') throw bad('suffix', 'is not supported by this server');
  for (const key of ['tools', 'tool_choice']) if (o[key] !== undefined && o[key] !== null) throw bad(key, 'only /v1/chat/completions takes tools');
  const bestOf = optInteger(o, 'best_of', 1, MAX_CHOICES);
  if (bestOf !== undefined && bestOf > 1) throw bad('best_of', 'only 1 is supported');
  const base = sampling(o, false);
  const echo = optBoolean(o, 'echo') ?? false;
  if (echo && base.logprobs !== undefined) throw bad('logprobs', 'log-probabilities of an echoed prompt are not supported (use echo or logprobs)');
  if (prompts.length * base.n > MAX_CHOICES) throw bad('n', `prompts × n must be at most ${MAX_CHOICES}, got ${prompts.length * base.n}`);
  return { ...base, prompts, echo };
}
