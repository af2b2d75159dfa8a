import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type AirllmServer } from '../src/index.js';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { MODEL, SlowEngine, TOKENIZER, sleep, until } from './helpers.js';

/**
 * What a hostile or unlucky client does to `serve` (issue #24): aborting mid-body, a shutdown
 * whose grace runs out mid-answer, foreign Host and Origin headers, a 130,000-character message. The server runs in process on port 0, driven over real sockets.
 */
let engine: SlowEngine;
const opened: AirllmServer[] = [];

async function start(options: Parameters<typeof createServer>[1] = {}): Promise<{ server: AirllmServer; url: string; log: string[] }> {
  const log: string[] = [];
  const s = createServer(engine, { log: (l) => log.push(l), ...options });
  opened.push(s);
  const a = await s.listen(0, '127.0.0.1');
  return { server: s, url: a.url, log };
}

beforeAll(async () => {
  engine = new SlowEngine({ maxSequences: 4 });
  await engine.initialize();
});

afterAll(async () => {
  for (const s of opened) await s.close({ graceMs: 0 });
  await engine?.cleanup();
});

describe('a client that aborts while sending its body (D4)', () => {
  it('is counted as cancelled, not failed, and not logged as a 500', async () => {
    const { server, url, log } = await start();
    const { port } = new URL(url);
    await new Promise<void>((resolve, reject) => {
      const sock = connect(Number(port), '127.0.0.1', () => {
        sock.write('POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt":"');
        setTimeout(() => sock.destroy(), 50);
      });
      sock.on('close', () => resolve());
      sock.on('error', reject);
    });
    await until(() => log.length === 1, 10_000, 'the request to be logged');
    expect(log[0]).toMatch(/^POST \/v1\/completions cancelled: the client closed the connection while sending its request body \(expected 100, got 11\) \d+ ms$/);
    expect(server.stats).toMatchObject({ failed: 0, cancelled: 1, accepted: 0 });
    const h = (await (await fetch(`${url}/health`)).json()) as Record<string, unknown>;
    expect(h).toMatchObject({ status: 'ok', failed: 0, cancelled: 1 });
  });
});

describe('the shutdown grace runs out mid-answer (D9)', () => {
  it('a stream ends with an error event and [DONE]; a non-stream request gets a 503 error; both logged as such', async () => {
    const { server, url, log } = await start({ parallel: 2 });
    engine.delayMs = 20; // 400 tokens would take ≥ 8 s: both are still running when the grace ends
    try {
      const streamed = fetch(`${url}/v1/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 400, temperature: 0, stream: true }),
      });
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const whole = client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 400, temperature: 0 }).catch((e: unknown) => e);
      await until(() => server.stats.running === 2 && server.stats.generatedTokens === 0 && server.stats.steps > 3, 10_000, 'both requests to run');
      const res = await streamed;
      expect(res.status).toBe(200);
      const closing = server.close({ graceMs: 300 });
      const text = await res.text();
      const events = text.split('\n\n').filter((e) => e !== '').map((e) => e.replace(/^data: /, ''));
      expect(events.length).toBeGreaterThan(2);
      expect(events.at(-1)).toBe('[DONE]');
      const error = JSON.parse(events.at(-2)!) as { error: { message: string; code: string; type: string } };
      expect(error.error).toMatchObject({ code: 'shutting_down', type: 'server_error' });
      expect(error.error.message).toMatch(/shut down before the answer was complete/);
      // Every event before it is a completion chunk with text and no finish reason.
      for (const e of events.slice(0, -2)) expect(JSON.parse(e)).toMatchObject({ object: 'text_completion', choices: [{ finish_reason: null }] });
      const e = await whole;
      expect(e).toBeInstanceOf(APIError);
      expect((e as APIError).status).toBe(503);
      expect((e as APIError).message).toMatch(/shut down before the answer was complete/);
      await closing;
      await sleep(10);
      expect(log.filter((l) => l.startsWith('POST /v1/completions ')).map((l) => l.replace(/ \d+ ms$/, '')).sort()).toEqual([
        'POST /v1/completions 200 stream cut off by the shutdown (error event sent)',
        'POST /v1/completions 503',
      ]);
      expect(server.stats).toMatchObject({ failed: 2, completed: 0, cancelled: 0 });
    } finally {
      engine.delayMs = 0;
    }
  });
});

/** A raw HTTP request (node:http, so Host and Origin can be anything). */
function raw(url: string, path: string, o: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: o.method ?? 'GET', headers: o.headers ?? {} }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

const completion = JSON.stringify({ prompt: 'Once', max_tokens: 2, temperature: 0 });

describe('Host and Origin checks (D5)', () => {
  it('refuses a Host that does not name the server (DNS rebinding), on every path', async () => {
    const { server, url } = await start();
    const port = new URL(url).port;
    for (const path of ['/', '/health', '/v1/models']) {
      const r = await raw(url, path, { headers: { host: `attacker.com:${port}` } });
      expect(r.status).toBe(403);
      expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'forbidden_host', type: 'permission_error' } });
      expect(JSON.parse(r.body).error.message).toMatch(/--allowed-hosts attacker\.com/);
    }
    const before = server.stats.accepted;
    const r = await raw(url, '/v1/completions', { method: 'POST', headers: { host: 'attacker.com', 'content-type': 'text/plain' }, body: completion });
    expect(r.status).toBe(403);
    expect(server.stats.accepted).toBe(before);
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`, 'LOCALHOST', 'localhost.', `app.localhost:${port}`]) {
      expect((await raw(url, '/health', { headers: { host } })).status, host).toBe(200);
    }
    expect((await raw(url, '/health', { headers: { host: 'bad host' } })).status).toBe(400);
  });

  it('accepts names given with allowedHosts (".name" with its subdomains, "*" any)', async () => {
    const { url } = await start({ allowedHosts: ['models.example', '.lan'] });
    for (const [host, status] of [['models.example', 200], ['models.example:8080', 200], ['x.lan', 200], ['lan', 200], ['other.example', 403], ['models.example.evil', 403]] as const) {
      expect((await raw(url, '/health', { headers: { host } })).status, host).toBe(status);
    }
    const any = await start({ allowedHosts: ['*'] });
    expect((await raw(any.url, '/health', { headers: { host: 'anything.example' } })).status).toBe(200);
  });

  it('listening on every interface: any address of this machine is a name of the server, others are not', async () => {
    const s = createServer(engine, { log: () => {} });
    opened.push(s);
    const { port } = await s.listen(0, '0.0.0.0');
    const url = `http://127.0.0.1:${port}`;
    const own = Object.values(networkInterfaces()).flatMap((l) => l ?? []).map((i) => (i.family === 'IPv6' ? `[${i.address}]` : i.address));
    expect(own.length).toBeGreaterThan(0);
    for (const a of own) expect((await raw(url, '/health', { headers: { host: `${a}:${port}` } })).status, a).toBe(200);
    // A documentation address (RFC 5737) that this machine does not have.
    const foreign = ['203.0.113.7', '198.51.100.7', '192.0.2.77'].find((a) => !own.includes(a))!;
    expect((await raw(url, '/health', { headers: { host: `${foreign}:${port}` } })).status).toBe(403);
  });

  it('refuses a cross-origin POST, even a "simple" text/plain one, and cross-origin reads', async () => {
    const { server, url } = await start();
    const before = server.stats.accepted;
    const r = await raw(url, '/v1/completions', { method: 'POST', headers: { origin: 'https://evil.example', 'content-type': 'text/plain' }, body: completion });
    expect(r.status).toBe(403);
    expect(JSON.parse(r.body)).toMatchObject({ error: { code: 'forbidden_origin', type: 'permission_error' } });
    expect(r.headers['access-control-allow-origin']).toBeUndefined();
    expect(server.stats.accepted).toBe(before);
    expect((await raw(url, '/v1/models', { headers: { origin: 'https://evil.example' } })).status).toBe(403);
    expect((await raw(url, '/v1/models', { headers: { origin: 'null' } })).status).toBe(403);
    // A preflight from a foreign origin gets no CORS permission.
    const pre = await raw(url, '/v1/chat/completions', { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(pre.status).toBe(403);
    expect(pre.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('same-origin requests (the chat page) and clients without Origin pass', async () => {
    const { url } = await start();
    const r = await raw(url, '/v1/completions', { method: 'POST', headers: { origin: url, 'content-type': 'application/json' }, body: completion });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ object: 'text_completion' });
    const port = new URL(url).port;
    expect((await raw(url, '/v1/models', { headers: { host: `localhost:${port}`, origin: `http://localhost:${port}` } })).status).toBe(200);
    // The same name on another port is another origin.
    expect((await raw(url, '/v1/models', { headers: { origin: 'http://127.0.0.1:1' } })).status).toBe(403);
  });

  it('corsOrigins: CORS headers on the answers and preflights answered for that origin only', async () => {
    const { url } = await start({ corsOrigins: ['https://app.example'], apiKey: 'k' });
    const pre = await raw(url, '/v1/chat/completions', {
      method: 'OPTIONS',
      headers: { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(pre.status).toBe(204);
    expect(pre.headers).toMatchObject({
      'access-control-allow-origin': 'https://app.example',
      'access-control-allow-methods': 'GET, HEAD, POST',
      'access-control-allow-headers': 'authorization, content-type',
      vary: 'Origin',
    });
    const r = await raw(url, '/v1/completions', { method: 'POST', headers: { origin: 'https://app.example', authorization: 'Bearer k', 'content-type': 'application/json' }, body: completion });
    expect(r.status).toBe(200);
    expect(r.headers['access-control-allow-origin']).toBe('https://app.example');
    // The key is still required, and a refusal carries the CORS header so the page can read it.
    const denied = await raw(url, '/v1/models', { headers: { origin: 'https://app.example' } });
    expect(denied.status).toBe(401);
    expect(denied.headers['access-control-allow-origin']).toBe('https://app.example');
    expect((await raw(url, '/v1/models', { headers: { origin: 'https://other.example', authorization: 'Bearer k' } })).status).toBe(403);
    // Requested header names are reflected only when they are plain ASCII.
    const odd = await raw(url, '/v1/models', { method: 'OPTIONS', headers: { origin: 'https://app.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'x-\u00e9' } });
    expect(odd.status).toBe(204);
    expect(odd.headers['access-control-allow-headers']).toBe('authorization, content-type');
    const any = await start({ corsOrigins: ['*'] });
    const a = await raw(any.url, '/v1/models', { headers: { origin: 'https://whatever.example' } });
    expect(a.status).toBe(200);
    expect(a.headers['access-control-allow-origin']).toBe('https://whatever.example');
  });
});

describe('a chat message of 130,000 characters (D3)', () => {
  it('is a 400 for its length, not a 500 "Maximum call stack size exceeded"', async () => {
    // The reproduction, end to end (engine/test/long-input.test.ts checks the encoding
    // itself on the main thread, where the spread overflowed). The bundled model with a context
    // of 200,000 in its header (the weights do not depend on it), served with 130,000: 130,000
    // 'a's are 130,001 tokens, too many only once encoded.
    const dir = mkdtempSync(join(tmpdir(), 'airllm-long-chat-'));
    const model = join(dir, 'long.m');
    copyFileSync(MODEL, model);
    const bytes = readFileSync(model);
    const headerSize = bytes.readInt32LE(4);
    let patched = false;
    for (let at = 8; at < headerSize; at += 8) {
      if (bytes.readInt32LE(at) === 10) {
        bytes.writeInt32LE(200_000, at + 4);
        patched = true;
      }
    }
    expect(patched).toBe(true);
    writeFileSync(model, bytes);
    const long = new LayerWiseInferenceEngine(model, { threads: 1, maxSequences: 1, maxSeqLen: 130_000, tokenizerPath: TOKENIZER });
    try {
      await long.initialize();
      const s = createServer(long, { log: () => {} });
      opened.push(s);
      const { url } = await s.listen(0, '127.0.0.1');
      const r = await fetch(`${url}/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'a'.repeat(130_000) }], max_tokens: 4 }),
      });
      const body = (await r.json()) as { error: { message: string; code: string } };
      expect(r.status, body.error.message).toBe(400);
      expect(body.error.code).toBe('context_length_exceeded');
      expect(body.error.message).toMatch(/maximum context length is 130000 tokens\. However, you requested 1300\d\d tokens/);
      expect(s.stats.failed).toBe(0);
      await s.close({ graceMs: 0 });
    } finally {
      await long.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
