import { connect } from 'node:net';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type AirllmServer } from '../src/index.js';
import { SlowEngine, sleep, until } from './helpers.js';

/**
 * What a hostile or unlucky client does to `serve` (issue #24): aborting mid-body and a shutdown
 * whose grace runs out mid-answer. The server runs in process on port 0, driven over real sockets.
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
