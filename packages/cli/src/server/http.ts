/**
 * The HTTP side of the server, apart from what it serves: routing (paths, methods, 404/405),
 * bearer-key auth, the body size limit, JSON responses, listening, and a shutdown that lets
 * running requests finish for a grace period.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AirllmError } from '@airllm/format';
import { checkJsonShape } from './json-shape.js';
import { ApiError } from './openai.js';

/** The client closed its connection before its request body had arrived (nothing to answer). */
export class ClientGoneError extends AirllmError {
  static override readonly code = 'AIRLLM_CLIENT_GONE';
  constructor(received: number, declared: number | undefined) {
    super('the client closed the connection while sending its request body', { actual: received, ...(declared !== undefined ? { expected: declared } : {}) });
  }
}

/** The server's shutdown grace ran out before the request finished (the reason its work is aborted with). */
export class ShutdownCutError extends AirllmError {
  static override readonly code = 'AIRLLM_SHUTDOWN_CUT';
  constructor(graceMs: number) {
    super(`the server shut down before the answer was complete (the ${graceMs / 1000} s grace ran out)`);
  }
}

/** A route's handler; an ApiError it throws before answering is the answer (a refusal). */
export type Handler = (req: IncomingMessage, res: ServerResponse, path: string) => void | Promise<void>;

export interface Route {
  /** GET routes answer HEAD too. */
  method: 'GET' | 'POST';
  handle: Handler;
}

export interface RouterOptions {
  /** Exact paths; a key ending in '/' is a prefix (`/v1/models/` serves `/v1/models/{id}`). */
  routes: Readonly<Record<string, Route>>;
  /**
   * Every request passes this first: it throws an ApiError to refuse one (Host/Origin checks),
   * and returns true when it answered the request itself (a CORS preflight).
   */
  guard?: (req: IncomingMessage, res: ServerResponse) => boolean;
  /** Requests under /v1/ must pass this (401 otherwise). */
  authorize?: (req: IncomingMessage) => boolean;
  /** Called with every refusal before it is sent. */
  onReject?: (e: ApiError) => void;
}

/**
 * The request handler for a route table: the guard's refusals, 401 for /v1 requests that fail `authorize`, 404 for
 * unknown paths, 405 for the wrong method, and the ApiError a handler throws as its answer.
 * Other errors reject (the caller answers 500).
 */
export function router(options: RouterOptions): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  const { routes, authorize } = options;
  const prefixes = Object.keys(routes)
    .filter((k) => k.endsWith('/') && k !== '/')
    .sort((a, b) => b.length - a.length);
  return async (req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '') || '/';
    try {
      if (options.guard?.(req, res)) return;
      const api = path.startsWith('/v1/');
      if (api && authorize && !authorize(req)) {
        throw new ApiError(401, 'missing or wrong API key: send Authorization: Bearer <key>', null, 'invalid_api_key', 'authentication_error', { 'www-authenticate': 'Bearer' });
      }
      const route = routes[path] ?? routes[prefixes.find((p) => path.startsWith(p)) ?? ''];
      if (!route) throw new ApiError(404, `no route ${req.method} ${path}${api ? '' : ' (the API is under /v1)'}`, null, 'not_found', 'not_found_error');
      if (req.method !== route.method && !(route.method === 'GET' && req.method === 'HEAD')) {
        throw new ApiError(405, `${req.method} is not allowed on ${path} (use ${route.method})`, null, 'method_not_allowed', 'invalid_request_error', { allow: route.method });
      }
      await route.handle(req, res, path);
    } catch (e) {
      if (!(e instanceof ApiError) || res.headersSent) throw e;
      options.onReject?.(e);
      // A body over the limit was not read: close the connection instead of draining it.
      if (e.status === 413) {
        res.setHeader('connection', 'close');
        res.once('finish', () => req.destroy());
      }
      sendError(res, e);
    }
  };
}

/** A checker for `Authorization: Bearer <apiKey>`, in constant time (both sides hashed to equal length first). */
export function bearerAuth(apiKey: string): (req: IncomingMessage) => boolean {
  const keyHash = sha256(apiKey);
  return (req) => {
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const given = sha256(m ? m[1]!.trim() : '');
    return timingSafeEqual(given, keyHash) && m !== null;
  };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

/** The error as OpenAI clients expect it (nothing if the response has started). */
export function sendError(res: ServerResponse, e: ApiError): void {
  if (res.headersSent) return;
  sendJson(res, e.status, e.body(), e.headers);
}

/**
 * The whole body, refusing more than `limit` bytes (413) without buffering them. A client that
 * closes the connection before the body is complete rejects with ClientGoneError.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = (): ApiError => new ApiError(413, `the request body is larger than ${limit} bytes`, null, 'request_too_large');
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, rejectBody) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    let ended = false;
    const gone = (): void => rejectBody(new ClientGoneError(size, Number.isFinite(declared) ? declared : undefined));
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
      ended = true;
      if (!over) resolve(Buffer.concat(chunks));
    });
    // Node reports a body cut short as an 'aborted' error (ECONNRESET) and then 'close'.
    req.on('error', (e) => (req.readableAborted || (e as NodeJS.ErrnoException).code === 'ECONNRESET' ? gone() : rejectBody(e)));
    req.on('close', () => {
      if (!ended) gone();
    });
  });
}

/**
 * The body parsed as JSON: 413 beyond `limit` bytes, 400 when it does not parse or has a shape
 * that would take long to parse (json-shape.ts).
 */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const body = await readBody(req, limit);
  checkJsonShape(body);
  await nextTurn();
  try {
    return JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON: ${e instanceof Error ? e.message : String(e)}`, null, 'invalid_json');
  }
}

/**
 * Let other requests (a /health check, a stream's next event) in before continuing: each step
 * of handling a large body (scan, JSON.parse, checking) then holds the event loop alone.
 */
export function nextTurn(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

const notes = new WeakMap<ServerResponse, string>();

/** Say how a request ended when its status code alone does not (for the request log). */
export function noteOutcome(res: ServerResponse, note: string): void {
  notes.set(res, note);
}

/** The request log's word on a response: its status, and how it ended if it did not end normally. */
export function outcome(res: ServerResponse): string {
  const note = notes.get(res);
  if (note !== undefined) return res.headersSent ? `${res.statusCode} ${note}` : note;
  return res.writableEnded ? String(res.statusCode) : res.headersSent ? `${res.statusCode} connection closed before the response ended` : 'connection closed without a response';
}

/** Start listening (port 0: any free port); resolves with the address. */
export function listen(http: Server, port: number, host: string): Promise<{ host: string; port: number; url: string }> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => reject(e);
    http.once('error', onError);
    http.listen(port, host, () => {
      http.off('error', onError);
      const a = http.address() as AddressInfo;
      const h = a.family === 'IPv6' ? `[${a.address}]` : a.address;
      resolve({ host: a.address, port: a.port, url: `http://${h}:${a.port}` });
    });
  });
}

/** A request in progress: aborting it cancels its work; `done` settles when its handler returns. */
export interface InFlight {
  abort: AbortController;
  done: Promise<void>;
}

/**
 * Stop accepting connections, give the requests in flight up to `graceMs` to finish, abort the
 * rest (with a ShutdownCutError as the reason, so they can tell the client), wait for them, then
 * close every connection.
 */
export async function shutdown(http: Server, inflight: ReadonlySet<InFlight>, graceMs: number): Promise<void> {
  const closed = new Promise<void>((r) => http.close(() => r()));
  http.closeIdleConnections();
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<void>((r) => (timer = setTimeout(r, graceMs)));
  await Promise.race([Promise.all([...inflight].map((e) => e.done)), grace]);
  clearTimeout(timer);
  for (const e of inflight) e.abort.abort(new ShutdownCutError(graceMs));
  await Promise.all([...inflight].map((e) => e.done));
  http.closeAllConnections();
  await closed;
}
