/**
 * An OpenAI-compatible HTTP API over one engine, on node:http:
 *
 *   POST /v1/chat/completions, POST /v1/completions  (stream: SSE `data: {...}` chunks, `data: [DONE]`)
 *   GET  /v1/models, /v1/models/{id}, /health, and the web chat page at /
 *
 * This file puts the server together; each concern has its own file: routing, auth, body
 * limits and shutdown (http.ts), the completion endpoints (completions.ts), request checking
 * (openai.ts), response bodies (openai-response.ts), server-sent events (sse.ts) and the
 * admission queue (queue.ts). Requests share the engine's forward steps through the engine's
 * BatchScheduler (continuous batching).
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { basename } from 'node:path';
import { BatchScheduler, ChatFormatter, ChatTemplateError, type LayerWiseInferenceEngine, type SequenceOptions } from '@airllm/engine';
import { completionsHandler, type Counts } from './completions.js';
import { bearerAuth, ClientGoneError, listen, noteOutcome, outcome, router, sendError, sendJson, shutdown, type InFlight } from './http.js';
import { ApiError } from './openai.js';
import { originPolicy } from './origin.js';
import { FairQueue } from './queue.js';

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
  /**
   * Host names accepted besides this server's address, localhost, 127.0.0.1 and [::1] (and this
   * machine's addresses when listening on every interface); `.example.com` includes subdomains,
   * `*` accepts any Host. Other Host headers get 403 (DNS rebinding).
   */
  allowedHosts?: readonly string[];
  /**
   * Origins allowed to call the server from a browser page of theirs (CORS, preflights answered);
   * `*` allows any. Other cross-origin requests get 403; the server's own chat page is same-origin.
   */
  corsOrigins?: readonly string[];
  /** One line per finished request (default: silent). */
  log?: (line: string) => void;
  /** Speculative decoding for every request: 'ngram' or a draft model engine (see SequenceOptions.draft), and draftMax. */
  draft?: Pick<SequenceOptions, 'draft' | 'draftMax'>;
}

export interface ServerStats {
  /** Generation requests that passed validation and entered the queue. */
  accepted: number;
  completed: number;
  /** Ended because the client went away (while sending its body, queued or generating). */
  cancelled: number;
  /** Refused with 4xx before queueing (validation, auth, size, queue full). */
  rejected: number;
  /** Ended by an error, or cut off when the shutdown grace ran out (answered 503 / an error event). */
  failed: number;
  generatedTokens: number;
  /** Tokens drafted and accepted (speculative decoding with the draft option; 0 without). */
  draftedTokens: number;
  acceptedTokens: number;
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
   * (default 10 s), then cut the rest off (a 503 error response, or an error event and `[DONE]`
   * on a stream) and close every connection. The engine stays open: it
   * belongs to the caller.
   */
  close(options?: { graceMs?: number }): Promise<void>;
}

const DEFAULT_MAX_QUEUE = 32;
const DEFAULT_MAX_BODY = 1024 * 1024;

const WEB_PAGE = new URL('../../web/chat.html', import.meta.url);
/** Everything on the page is inline; nothing may be loaded from elsewhere. */
const PAGE_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

/** A ready engine (initialize() done) behind an OpenAI-compatible API. */
export function createServer(engine: LayerWiseInferenceEngine, options: ServerOptions = {}): AirllmServer {
  // Both throw when the engine is not initialized or has no tokenizer: fail here, not per request.
  const seqLen = engine.maxSeqLen;
  const tokenizer = engine.tokenizer;
  // Long prompts are encoded on the tokenizer's worker: start it before the first one arrives.
  tokenizer.startWorker();
  const modelName = options.modelName ?? basename(engine.modelPath).replace(/\.m$/, '');
  const created = Math.floor(Date.now() / 1000);
  const parallel = options.parallel ?? engine.maxSequences;
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > engine.maxSequences) {
    throw new RangeError(`parallel must be 1..${engine.maxSequences} (the engine's maxSequences), got ${options.parallel}`);
  }
  const queue = new FairQueue(parallel, options.maxQueue ?? DEFAULT_MAX_QUEUE);
  const scheduler = new BatchScheduler(engine, parallel);
  const page = options.webPage === false ? undefined : readFileSync(WEB_PAGE);
  const log = options.log ?? ((): void => {});
  let chat: ChatFormatter | ApiError;
  try {
    chat = new ChatFormatter(tokenizer, options.chatTemplate);
  } catch (e) {
    if (!(e instanceof ChatTemplateError)) throw e;
    chat = new ApiError(400, `this model cannot chat: ${e.message}; start the server with a chat template override`, 'messages', 'no_chat_template');
  }
  const counts: Counts = { accepted: 0, completed: 0, cancelled: 0, rejected: 0, failed: 0, generatedTokens: 0, draftedTokens: 0, acceptedTokens: 0 };
  const inflight = new Set<InFlight>();
  let closing = false;

  const completions = completionsHandler({
    modelName,
    seqLen,
    vocabSize: engine.header.vocabSize,
    tokenizer,
    chat,
    scheduler,
    queue,
    maxBodyBytes: options.maxBodyBytes ?? DEFAULT_MAX_BODY,
    counts,
    inflight,
    closing: () => closing,
    draft: options.draft ?? {},
  });
  const modelObject = (): Record<string, unknown> => ({ id: modelName, object: 'model', created, owned_by: 'airllm', context_length: seqLen });

  const handle = router({
    guard: originPolicy(options, () => {
      const a = http.address();
      return a !== null && typeof a === 'object' ? a.address : undefined;
    }),
    authorize: options.apiKey !== undefined ? bearerAuth(options.apiKey) : undefined,
    onReject: () => counts.rejected++,
    routes: {
      ...(page && {
        '/': {
          method: 'GET',
          handle: (req, res) => {
            res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': page.length, 'content-security-policy': PAGE_CSP, 'x-content-type-options': 'nosniff' });
            res.end(req.method === 'HEAD' ? undefined : page);
          },
        },
      }),
      '/health': {
        method: 'GET',
        handle: (_req, res) => sendJson(res, closing ? 503 : 200, { status: closing ? 'shutting down' : 'ok', model: modelName, contextLength: seqLen, ...stats() }),
      },
      '/v1/models': { method: 'GET', handle: (_req, res) => sendJson(res, 200, { object: 'list', data: [modelObject()] }) },
      '/v1/models/': {
        method: 'GET',
        handle: (_req, res, path) => {
          let id: string;
          try {
            id = decodeURIComponent(path.slice('/v1/models/'.length));
          } catch {
            throw new ApiError(400, 'the model id in the path is not valid percent-encoding', 'model');
          }
          if (id !== modelName) throw new ApiError(404, `model "${id}" does not exist; this server has "${modelName}"`, 'model', 'model_not_found', 'not_found_error');
          sendJson(res, 200, modelObject());
        },
      },
      '/v1/chat/completions': { method: 'POST', handle: (req, res) => completions(req, res, true) },
      '/v1/completions': { method: 'POST', handle: (req, res) => completions(req, res, false) },
    },
  });

  const http = createHttpServer((req, res) => {
    const t0 = performance.now();
    const done = handle(req, res).catch((e: unknown) => {
      if (e instanceof ClientGoneError) {
        // Nobody to answer: not a server failure.
        counts.cancelled++;
        noteOutcome(res, `cancelled: ${e.message}`);
        res.destroy();
        return;
      }
      counts.failed++;
      if (!res.headersSent) sendError(res, new ApiError(500, `internal error: ${e instanceof Error ? e.message : String(e)}`));
      else res.destroy();
    });
    void done.then(() => log(`${req.method} ${req.url} ${outcome(res)} ${Math.round(performance.now() - t0)} ms`));
  });
  // Stream answers can take long; only the request itself must arrive in time.
  http.requestTimeout = 60_000;

  function stats(): ServerStats {
    const b = scheduler.stats;
    return { ...counts, running: queue.running, waiting: queue.waiting, parallel, activeSequences: b.active, steps: b.steps, maxBatch: b.maxBatch };
  }

  return {
    http,
    get stats() {
      return stats();
    },
    listen: (port = 0, host = '127.0.0.1') => listen(http, port, host),
    async close({ graceMs = 10_000 } = {}) {
      closing = true;
      queue.close();
      await shutdown(http, inflight, graceMs);
    },
  };
}
