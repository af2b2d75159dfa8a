/**
 * An OpenAI-compatible HTTP API over one engine, on node:http:
 *
 *   POST /v1/chat/completions, POST /v1/completions  (stream: SSE `data: {...}` chunks, `data: [DONE]`)
 *   GET  /v1/models, /v1/models/{id}, /health, and the web chat page at /
 *
 * Requests are checked before they queue (helpful 400s), then wait their turn in a bounded FIFO
 * queue (429 with Retry-After when it is full). Up to `parallel` requests run at once: their
 * sequences share the engine's forward steps (continuous batching, scheduler.ts). A client that
 * goes away cancels its request, queued or running, through an AbortSignal, so its place and its
 * KV cache slot are freed at once.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename } from 'node:path';
import {
  ChatFormatter,
  ChatTemplateError,
  ContextOverflowError,
  TokenizerError,
  type LayerWiseInferenceEngine,
  type SequenceOptions,
} from '@airllm/engine';
import { ApiError, finishReason, parseChatRequest, parseCompletionRequest, type SamplingRequest } from './openai.js';
import { FairQueue, QueueClosedError, QueueFullError, WaitCancelledError } from './queue.js';
import { BatchScheduler, type SequenceResult } from './scheduler.js';

export interface ServerOptions {
  /** The id clients see in /v1/models and responses (default: the model file's name). */
  modelName?: string;
  /** Require `Authorization: Bearer <apiKey>` on /v1/*. */
  apiKey?: string;
  /** Chat format override (llama2, llama3, chatml); default: from the tokenizer's template. */
  chatTemplate?: string;
  /** Requests that may wait behind the running ones (default 32); more get 429. */
  maxQueue?: number;
  /**
   * Sequences decoded together (KV cache slots used, and requests running at once); at most the
   * engine's maxSequences, which is also the default. 1 runs one request at a time.
   */
  parallel?: number;
  /** Largest request body in bytes (default 1 MiB); larger gets 413. */
  maxBodyBytes?: number;
  /** Serve the web chat page at / (default true). */
  webPage?: boolean;
  /** One line per finished request (default: silent). */
  log?: (line: string) => void;
}

export interface ServerStats {
  /** Generation requests that passed validation and entered the queue. */
  accepted: number;
  completed: number;
  /** Ended because the client went away (while queued or while generating). */
  cancelled: number;
  /** Refused with 4xx before queueing (validation, auth, size, queue full). */
  rejected: number;
  failed: number;
  generatedTokens: number;
  /** Requests running (holding a turn); at most `parallel`. */
  running: number;
  /** Requests waiting for a turn in the queue. */
  waiting: number;
  /** Sequences decoded together at most (--parallel). */
  parallel: number;
  /** Sequences in a KV cache slot now. */
  activeSequences: number;
  /** Forward steps run. */
  steps: number;
  /** Most sequences that ran in one forward step (> 1: requests were batched). */
  maxBatch: number;
}

export interface AirllmServer {
  readonly http: Server;
  readonly stats: Readonly<ServerStats>;
  /** Start listening (port 0: any free port); resolves with the address. */
  listen(port?: number, host?: string): Promise<{ host: string; port: number; url: string }>;
  /**
   * Stop accepting, fail queued requests with 503, let running ones finish for up to `graceMs`
   * (default 10 s), cancel the rest and close every connection. The engine stays open: it
   * belongs to the caller.
   */
  close(options?: { graceMs?: number }): Promise<void>;
}

const DEFAULT_MAX_QUEUE = 32;
const DEFAULT_MAX_BODY = 1024 * 1024;
/** A client that lets this much stream output pile up unread is dropped (it would hold the engine). */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

const WEB_PAGE = new URL('../../web/chat.html', import.meta.url);

/** A ready engine (initialize() done) behind an OpenAI-compatible API. */
export function createServer(engine: LayerWiseInferenceEngine, options: ServerOptions = {}): AirllmServer {
  // Both throw when the engine is not initialized or has no tokenizer: fail here, not per request.
  const seqLen = engine.maxSeqLen;
  const tokenizer = engine.tokenizer;
  // Long prompts are encoded on this thread's worker: start it before the first one arrives.
  tokenizer.startWorker();
  const vocabSize = engine.header.vocabSize;
  const modelName = options.modelName ?? basename(engine.modelPath).replace(/\.m$/, '');
  const created = Math.floor(Date.now() / 1000);
  const parallel = options.parallel ?? engine.maxSequences;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > engine.maxSequences) {
    throw new RangeError(`parallel must be 1..${engine.maxSequences} (the engine's maxSequences), got ${options.parallel}`);
  }
  const queue = new FairQueue(parallel, options.maxQueue ?? DEFAULT_MAX_QUEUE);
  const scheduler = new BatchScheduler(engine, parallel);
  const maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const keyHash = options.apiKey !== undefined ? sha256(options.apiKey) : undefined;
  const page = options.webPage === false ? undefined : readFileSync(WEB_PAGE);
  const log = options.log ?? ((): void => {});
  let chat: ChatFormatter | ApiError;
  try {
    chat = new ChatFormatter(tokenizer, options.chatTemplate);
  } catch (e) {
    if (!(e instanceof ChatTemplateError)) throw e;
    chat = new ApiError(400, `this model cannot chat: ${e.message}; start the server with a chat template override`, 'messages', 'no_chat_template');
  }
  const counts = { accepted: 0, completed: 0, cancelled: 0, rejected: 0, failed: 0, generatedTokens: 0 };
  const inflight = new Set<{ abort: AbortController; done: Promise<void> }>();
  let closing = false;

  const http = createHttpServer((req, res) => {
    const t0 = performance.now();
    const done = handle(req, res).catch((e: unknown) => {
      counts.failed++;
      if (!res.headersSent) sendError(res, new ApiError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`));
      else res.destroy();
    });
    void done.then(() => log(`${req.method} ${req.url} ${res.statusCode} ${Math.round(performance.now() - t0)} ms`));
  });
  // Stream answers can take long; only the request itself must arrive in time.
  http.requestTimeout = 60_000;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    const route = (method: string): boolean => {
      if (req.method === method || (method === 'GET' && req.method === 'HEAD')) return true;
      reject(res, new ApiError(405, `${req.method} is not allowed on ${path} (use ${method})`, null, 'method_not_allowed', 'invalid_request_error', { allow: method }));
      return false;
    };
    if (path === '/' && page) {
      if (!route('GET')) return;
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': page.length,
        // Everything is inline; nothing may be loaded from elsewhere.
        'content-security-policy': "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        'x-content-type-options': 'nosniff',
      });
      res.end(req.method === 'HEAD' ? undefined : page);
      return;
    }
    if (path === '/health') {
      if (!route('GET')) return;
      sendJson(res, closing ? 503 : 200, { status: closing ? 'shutting down' : 'ok', model: modelName, contextLength: seqLen, ...stats() });
      return;
    }
    if (!path.startsWith('/v1/')) {
      reject(res, new ApiError(404, `no route ${req.method} ${path} (the API is under /v1)`, null, 'not_found', 'not_found_error'));
      return;
    }
    if (keyHash && !authorized(req.headers.authorization, keyHash)) {
      reject(res, new ApiError(401, 'missing or wrong API key: send Authorization: Bearer <key>', null, 'invalid_api_key', 'authentication_error', { 'www-authenticate': 'Bearer' }));
      return;
    }
    if (path === '/v1/models') {
      if (route('GET')) sendJson(res, 200, { object: 'list', data: [modelObject()] });
      return;
    }
    if (path.startsWith('/v1/models/')) {
      if (!route('GET')) return;
      let id: string;
      try {
        id = decodeURIComponent(path.slice('/v1/models/'.length));
      } catch {
        reject(res, new ApiError(400, 'the model id in the path is not valid percent-encoding', 'model'));
        return;
      }
      if (id === modelName) sendJson(res, 200, modelObject());
      else reject(res, new ApiError(404, `model "${id}" does not exist; this server has "${modelName}"`, 'model', 'model_not_found', 'not_found_error'));
      return;
    }
    if (path === '/v1/chat/completions' || path === '/v1/completions') {
      if (!route('POST')) return;
      await generation(req, res, path === '/v1/chat/completions');
      return;
    }
    reject(res, new ApiError(404, `no route ${req.method} ${path}`, null, 'not_found', 'not_found_error'));
  }

  function modelObject(): Record<string, unknown> {
    return { id: modelName, object: 'model', created, owned_by: 'airllm', context_length: seqLen };
  }

  function reject(res: ServerResponse, e: ApiError): void {
    counts.rejected++;
    sendError(res, e);
  }

  /** One validated request: the prompts' token ids and the engine options of each choice. */
  interface Plan {
    jobs: { prompt: number[]; index: number; echo: string }[];
    options: SequenceOptions;
    req: SamplingRequest;
  }

  async function plan(body: unknown, isChat: boolean): Promise<Plan> {
    const r = isChat ? parseChatRequest(body) : parseCompletionRequest(body, vocabSize);
    const prompts: { ids: number[]; echo: string }[] = [];
    // Refused before encoding when even the fewest tokens the text can make do not fit; long
    // texts are encoded on the tokenizer's worker thread, so /health and streams go on.
    const fits = (text: string, param: 'messages' | 'prompt'): void => {
      const least = tokenizer.minTokens(text);
      if (least >= seqLen) {
        throw new ApiError(400, `This model's maximum context length is ${seqLen} tokens. However, your ${param} has ${Buffer.byteLength(text)} bytes, at least ${least} tokens. Please reduce the length of the ${param}.`, param, 'context_length_exceeded');
      }
    };
    try {
      if ('messages' in r) {
        if (chat instanceof ApiError) throw chat;
        const options = r.enableThinking === undefined ? {} : { enableThinking: r.enableThinking };
        fits(chat.render(r.messages, options), 'messages');
        prompts.push({ ids: await chat.encodeAsync(r.messages, options), echo: '' });
      } else {
        for (const p of r.prompts) {
          if (typeof p === 'string') fits(p, 'prompt');
          prompts.push(typeof p === 'string' ? { ids: await tokenizer.encodeAsync(p), echo: p } : { ids: p, echo: tokenizer.decode(p) });
        }
      }
    } catch (e) {
      if (e instanceof ChatTemplateError) throw new ApiError(400, `messages: ${e.message}`, 'messages');
      if (e instanceof TokenizerError) throw new ApiError(400, `${'messages' in r ? 'messages' : 'prompt'}: ${e.message}`, 'messages' in r ? 'messages' : 'prompt');
      throw e;
    }
    let maxTokens = r.maxTokens;
    for (const p of prompts) {
      if (p.ids.length === 0) throw new ApiError(400, 'prompt: encodes to no tokens', 'prompt');
      const room = seqLen - p.ids.length;
      if (room < 1 || (r.maxTokens !== undefined && r.maxTokens > room)) {
        throw new ApiError(
          400,
          `This model's maximum context length is ${seqLen} tokens. However, you requested ${p.ids.length + (r.maxTokens ?? 1)} tokens ` +
            `(${p.ids.length} in the ${'messages' in r ? 'messages' : 'prompt'}, ${r.maxTokens ?? 1} in the completion). ` +
            `Please reduce the length of the ${'messages' in r ? 'messages' : 'prompt'} or completion.`,
          r.maxTokens !== undefined && room >= 1 ? 'max_tokens' : 'messages' in r ? 'messages' : 'prompt',
          'context_length_exceeded',
        );
      }
      // No max_tokens: as many as the context leaves for the longest prompt.
      if (r.maxTokens === undefined) maxTokens = Math.min(maxTokens ?? room, room);
    }
    const stop = 'messages' in r && !(chat instanceof ApiError) ? [...chat.stop, ...r.stop] : r.stop;
    const jobs = prompts.flatMap((p, pi) => Array.from({ length: r.n }, (_, k) => ({ prompt: p.ids, index: pi * r.n + k, echo: 'echo' in r && r.echo ? p.echo : '' })));
    return {
      jobs,
      req: r,
      options: { maxTokens, temperature: r.temperature, topP: r.topP, topK: r.topK, stop, ...(r.seed !== undefined ? { seed: r.seed } : {}) },
    };
  }

  async function generation(req: IncomingMessage, res: ServerResponse, isChat: boolean): Promise<void> {
    let p: Plan;
    try {
      const body = await readBody(req, maxBody);
      let json: unknown;
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch (e) {
        throw new ApiError(400, `the request body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`, null, 'invalid_json');
      }
      p = await plan(json, isChat);
    } catch (e) {
      if (e instanceof ApiError) {
        if (e.status === 413) res.setHeader('connection', 'close');
        reject(res, e);
        if (e.status === 413) res.once('finish', () => req.destroy());
        return;
      }
      throw e;
    }
    if (closing) {
      reject(res, new ApiError(503, 'the server is shutting down', null, 'shutting_down'));
      return;
    }
    const abort = new AbortController();
    // 'close' before the response ended = the client went away (or the server is closing).
    const onClose = (): void => {
      if (!res.writableFinished) abort.abort();
    };
    res.once('close', onClose);
    let release: (() => void) | undefined;
    try {
      release = await queue.acquire(abort.signal);
    } catch (e) {
      res.off('close', onClose);
      if (e instanceof QueueFullError) {
        reject(res, new ApiError(429, `${e.message}; retry in about ${e.retryAfterSeconds} s`, null, 'queue_full', 'rate_limit_error', { 'retry-after': String(e.retryAfterSeconds) }));
      } else if (e instanceof QueueClosedError) reject(res, new ApiError(503, 'the server is shutting down', null, 'shutting_down'));
      else if (e instanceof WaitCancelledError) counts.cancelled++;
      else throw e;
      return;
    }
    counts.accepted++;
    let finished!: () => void;
    const entry = { abort, done: new Promise<void>((r) => (finished = r)) };
    inflight.add(entry);
    try {
      if (abort.signal.aborted) counts.cancelled++;
      else await (p.req.stream ? stream(res, p, isChat, abort) : respond(res, p, isChat, abort));
    } finally {
      res.off('close', onClose);
      release();
      inflight.delete(entry);
      finished();
    }
  }

  /**
   * Run every choice of a plan (each a sequence of its own, decoded beside the other requests');
   * `onText` gets streamed pieces. Undefined when the client went away.
   */
  async function runChoices(
    p: Plan,
    abort: AbortController,
    onText: (index: number, text: string) => void,
    onDone: (index: number, r: SequenceResult) => void,
  ): Promise<SequenceResult[] | undefined> {
    // One failed choice ends the others too (the request fails as a whole).
    const own = new AbortController();
    const signal = AbortSignal.any([abort.signal, own.signal]);
    const settled = await Promise.allSettled(
      p.jobs.map(async (job) => {
        // Different seeds per choice, so n > 1 samples differ (and reproduce with a seed).
        const seed = p.req.seed !== undefined ? p.req.seed + job.index : Number(randomBytes(4).readUInt32LE(0));
        try {
          const r = await scheduler.run({ prompt: job.prompt, options: { ...p.options, seed }, signal, onText: (text) => onText(job.index, text) });
          counts.generatedTokens += r.tokens.length;
          if (r.finishReason !== 'cancelled') onDone(job.index, r);
          return r;
        } catch (e) {
          own.abort();
          throw e;
        }
      }),
    );
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
    const results = settled.map((r) => (r as PromiseFulfilledResult<SequenceResult>).value);
    return results.some((r) => r.finishReason === 'cancelled') ? undefined : results;
  }

  function usage(p: Plan, results: readonly SequenceResult[]): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
    // A prompt is counted once however many choices were sampled from it.
    const promptTokens = results.filter((_, i) => p.jobs[i]!.index % p.req.n === 0).reduce((n, r) => n + r.promptTokens.length, 0);
    const completion = results.reduce((n, r) => n + r.tokens.length, 0);
    return { prompt_tokens: promptTokens, completion_tokens: completion, total_tokens: promptTokens + completion };
  }

  async function respond(res: ServerResponse, p: Plan, isChat: boolean, abort: AbortController): Promise<void> {
    let results: SequenceResult[] | undefined;
    try {
      results = await runChoices(p, abort, () => {}, () => {});
    } catch (e) {
      const api = toApiError(e);
      if (!api) throw e;
      counts.failed++;
      sendError(res, api);
      return;
    }
    if (!results) {
      counts.cancelled++;
      return;
    }
    counts.completed++;
    const id = `${isChat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const choices = results.map((r, i) =>
      isChat
        ? { index: p.jobs[i]!.index, message: { role: 'assistant', content: r.text, refusal: null }, logprobs: null, finish_reason: finishReason(r.finishReason) }
        : { index: p.jobs[i]!.index, text: p.jobs[i]!.echo + r.text, logprobs: null, finish_reason: finishReason(r.finishReason) },
    );
    sendJson(res, 200, { id, object: isChat ? 'chat.completion' : 'text_completion', created: now(), model: modelName, choices, usage: usage(p, results) });
  }

  async function stream(res: ServerResponse, p: Plan, isChat: boolean, abort: AbortController): Promise<void> {
    const id = `${isChat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const t = now();
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    res.flushHeaders();
    const send = (data: unknown): void => {
      if (res.destroyed || res.writableEnded) return;
      res.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
      if (res.writableLength > MAX_BUFFERED_BYTES) {
        abort.abort();
        res.destroy();
      }
    };
    const chunk = (choice: Record<string, unknown>): Record<string, unknown> => ({
      id,
      object: isChat ? 'chat.completion.chunk' : 'text_completion',
      created: t,
      model: modelName,
      choices: [choice],
    });
    const started = new Set<number>();
    const begin = (index: number): void => {
      if (started.has(index)) return;
      started.add(index);
      const echo = p.jobs.find((j) => j.index === index)!.echo;
      if (isChat) send(chunk({ index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }));
      else if (echo) send(chunk({ index, text: echo, logprobs: null, finish_reason: null }));
    };
    let results: SequenceResult[] | undefined;
    try {
      results = await runChoices(
        p,
        abort,
        (index, text) => {
          begin(index);
          send(chunk(isChat ? { index, delta: { content: text }, logprobs: null, finish_reason: null } : { index, text, logprobs: null, finish_reason: null }));
        },
        (index, r) => {
          begin(index);
          const reason = finishReason(r.finishReason);
          send(chunk(isChat ? { index, delta: {}, logprobs: null, finish_reason: reason } : { index, text: '', logprobs: null, finish_reason: reason }));
        },
      );
    } catch (e) {
      const api = toApiError(e) ?? new ApiError(500, `generation failed: ${e instanceof Error ? e.message : String(e)}`);
      counts.failed++;
      send(api.body());
      res.end();
      return;
    }
    if (!results) {
      counts.cancelled++;
      res.end();
      return;
    }
    counts.completed++;
    if (p.req.includeUsage) send({ id, object: isChat ? 'chat.completion.chunk' : 'text_completion', created: t, model: modelName, choices: [], usage: usage(p, results) });
    send('[DONE]');
    res.end();
  }

  function stats(): ServerStats {
    const b = scheduler.stats;
    return { ...counts, running: queue.running, waiting: queue.waiting, parallel, activeSequences: b.active, steps: b.steps, maxBatch: b.maxBatch };
  }

  return {
    http,
    get stats() {
      return stats();
    },
    listen(port = 0, host = '127.0.0.1') {
      return new Promise((resolve, rejectListen) => {
        const onError = (e: Error): void => rejectListen(e);
        http.once('error', onError);
        http.listen(port, host, () => {
          http.off('error', onError);
          const a = http.address() as AddressInfo;
          const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
          resolve({ host: a.address, port: a.port, url: `http://${h}:${a.port}` });
        });
      });
    },
    async close({ graceMs = 10_000 } = {}) {
      closing = true;
      queue.close();
      const closed = new Promise<void>((r) => http.close(() => r()));
      http.closeIdleConnections();
      const running = [...inflight];
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
      await Promise.race([Promise.all(running.map((e) => e.done)), grace]);
      clearTimeout(timer);
      for (const e of inflight) e.abort.abort();
      await Promise.all([...inflight].map((e) => e.done));
      http.closeAllConnections();
      await closed;
    },
  };
}

function toApiError(e: unknown): ApiError | undefined {
  if (e instanceof ApiError) return e;
  if (e instanceof ContextOverflowError) return new ApiError(400, e.message, 'messages', 'context_length_exceeded');
  if (e instanceof TokenizerError) return new ApiError(400, e.message, 'prompt');
  return undefined;
}

function now(): number {
  return Math.floor(Date.now() / 1000);
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** Bearer token check in constant time (both sides hashed to equal length first). */
function authorized(header: string | undefined, keyHash: Buffer): boolean {
  const m = /^Bearer\s+(.+)$/i.exec(header ?? '');
  const given = sha256(m ? m[1]!.trim() : '');
  return timingSafeEqual(given, keyHash) && m !== null;
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function sendError(res: ServerResponse, e: ApiError): void {
  if (res.headersSent) return;
  sendJson(res, e.status, e.body(), e.headers);
}

/** The whole body, refusing more than `limit` bytes (413) without buffering them. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): ApiError => new ApiError(413, `the request body is larger than ${limit} bytes`, null, 'request_too_large');
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, rejectBody) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        rejectBody(tooLarge());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!over) resolve(Buffer.concat(chunks));
    });
    req.on('error', (e) => rejectBody(e));
  });
}
