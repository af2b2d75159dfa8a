import OpenAI, { APIError, AuthenticationError, BadRequestError, RateLimitError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type AirllmServer } from '../src/index.js';
import { Reference, SlowEngine, sleep, until } from './helpers.js';

/**
 * The OpenAI-compatible server, in process, on port 0, driven by the official openai client
 * (and raw fetch for malformed requests). Every greedy answer is compared with a single-request
 * run of the same prompt on a separate engine.
 */
let engine: SlowEngine;
let ref: Reference;
let server: AirllmServer;
let url: string;
let client: OpenAI;
const opened: AirllmServer[] = [];

async function start(options: Parameters<typeof createServer>[1] = {}): Promise<{ server: AirllmServer; url: string }> {
  const s = createServer(engine, options);
  opened.push(s);
  const a = await s.listen(0, '127.0.0.1');
  return { server: s, url: a.url };
}

const openai = (base: string, apiKey = 'unused'): OpenAI => new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

beforeAll(async () => {
  engine = new SlowEngine({ maxSequences: 4 });
  ref = new Reference();
  await Promise.all([engine.initialize(), ref.init()]);
  ({ server, url } = await start());
  client = openai(url);
});

afterAll(async () => {
  for (const s of opened) await s.close({ graceMs: 0 });
  await engine?.cleanup();
  await ref?.cleanup();
});

const post = (base: string, path: string, body: string | object, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });

describe('models and health', () => {
  it('lists the model and reports health', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['stories260K']);
    expect((await client.models.retrieve('stories260K')).id).toBe('stories260K');
    await expect(client.models.retrieve('gpt-4')).rejects.toMatchObject({ status: 404 });
    const h = (await (await fetch(`${url}/health`)).json()) as Record<string, unknown>;
    expect(h).toMatchObject({ status: 'ok', model: 'stories260K', contextLength: 512, parallel: 4 });
  });
});

describe('chat completions', () => {
  const messages = [
    { role: 'system' as const, content: 'You tell short stories.' },
    { role: 'user' as const, content: 'Tell me about a cat.' },
  ];

  it('non-streaming: the single-request answer, usage and finish reason', async () => {
    const want = await ref.chat(messages, 40);
    const r = await client.chat.completions.create({ model: 'stories260K', messages, max_tokens: 40, temperature: 0 });
    expect(r.object).toBe('chat.completion');
    expect(r.choices).toHaveLength(1);
    expect(r.choices[0]!.message).toMatchObject({ role: 'assistant', content: want.text });
    expect(r.choices[0]!.finish_reason).toBe(want.finishReason === 'length' ? 'length' : 'stop');
    expect(r.usage).toEqual({ prompt_tokens: want.promptTokens, completion_tokens: want.tokens, total_tokens: want.promptTokens + want.tokens });
  });

  it('streaming: role first, deltas add up to the same answer, then finish reason and usage', async () => {
    const want = await ref.chat(messages, 40);
    const stream = await client.chat.completions.create({ model: 'x', messages, max_tokens: 40, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let role: string | undefined;
    let finish: string | null = null;
    let usage: unknown;
    let contentChunks = 0;
    for await (const c of stream) {
      if (c.usage) usage = c.usage;
      const ch = c.choices[0];
      if (!ch) continue;
      if (ch.delta.role) role ??= ch.delta.role;
      if (ch.delta.content) {
        text += ch.delta.content;
        contentChunks++;
      }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    expect(role).toBe('assistant');
    expect(text).toBe(want.text);
    expect(contentChunks).toBeGreaterThan(5);
    expect(finish).toBe(want.finishReason === 'length' ? 'length' : 'stop');
    expect(usage).toEqual({ prompt_tokens: want.promptTokens, completion_tokens: want.tokens, total_tokens: want.promptTokens + want.tokens });
  });

  it('text held back as a possible stop string is still streamed when max_tokens ends the answer', async () => {
    const full = await ref.completion('Once upon a time', 30);
    // A stop string starting with the answer's last characters: the tail is held back while it
    // could still become the stop string, and must reach the stream when the answer ends.
    const stop = `${full.text.slice(-3)}\u0007never`;
    const want = await ref.completion('Once upon a time', 30, [stop]);
    expect(want.text).toBe(full.text);
    const r = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stop: [stop] });
    expect(r.choices[0]!.text).toBe(want.text);
    const stream = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stop: [stop], stream: true });
    let text = '';
    for await (const c of stream) text += c.choices[0]?.text ?? '';
    expect(text).toBe(want.text);
  });

  it('a stop sequence ends the answer before it, with finish_reason stop', async () => {
    const full = await ref.chat(messages, 40);
    const word = full.text.trim().split(/\s+/)[3]!;
    const r = await client.chat.completions.create({ model: 'x', messages, max_tokens: 40, temperature: 0, stop: [word] });
    expect(r.choices[0]!.message.content).toBe(full.text.slice(0, full.text.indexOf(word)));
    expect(r.choices[0]!.finish_reason).toBe('stop');
  });

  it('n > 1 gives n choices (greedy: identical)', async () => {
    const want = await ref.chat(messages, 10);
    const r = await client.chat.completions.create({ model: 'x', messages, max_tokens: 10, temperature: 0, n: 3 });
    expect(r.choices.map((c) => c.index)).toEqual([0, 1, 2]);
    for (const c of r.choices) expect(c.message.content).toBe(want.text);
    expect(r.usage?.prompt_tokens).toBe(want.promptTokens);
    expect(r.usage?.completion_tokens).toBe(3 * want.tokens);
  });
});

describe('completions', () => {
  it('non-streaming and streaming give the single-request text; echo prepends the prompt', async () => {
    const want = await ref.completion('Once upon a time', 30);
    const r = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 30, temperature: 0 });
    expect(r.object).toBe('text_completion');
    expect(r.choices[0]!.text).toBe(want.text);
    expect(r.usage).toEqual({ prompt_tokens: want.promptTokens, completion_tokens: want.tokens, total_tokens: want.promptTokens + want.tokens });
    const s = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, stream: true });
    let text = '';
    for await (const c of s) text += c.choices[0]?.text ?? '';
    expect(text).toBe(want.text);
    const e = await client.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, echo: true });
    expect(e.choices[0]!.text).toBe(`Once upon a time${want.text}`);
  });

  it('several prompts give one choice each, in order', async () => {
    const prompts = ['Tom had a dog', 'The sun was hot'];
    const want = await Promise.all(prompts.map((p) => ref.completion(p, 12)));
    const r = await client.completions.create({ model: 'x', prompt: prompts, max_tokens: 12, temperature: 0 });
    expect(r.choices.map((c) => [c.index, c.text])).toEqual(want.map((w, i) => [i, w.text]));
  });
});

describe('concurrency', () => {
  it('8 concurrent clients (chat and completions, streaming and not) each get their own single-request answer', async () => {
    engine.delayMs = 1;
    const subjects = ['a cat', 'a dog', 'the sea', 'a red ball', 'a big tree', 'a little bird', 'the moon', 'a fast car'];
    const jobs = subjects.map((s, i) => ({ chat: i % 2 === 0, stream: i % 4 < 2, text: i % 2 === 0 ? `Tell me about ${s}.` : `Once upon a time, ${s}`, max: 24 + i }));
    const want = await Promise.all(jobs.map((j) => (j.chat ? ref.chat([{ role: 'user', content: j.text }], j.max) : ref.completion(j.text, j.max))));
    const before = server.stats.completed;
    const got = await Promise.all(
      jobs.map(async (j) => {
        const c = openai(url);
        if (j.chat) {
          const messages = [{ role: 'user' as const, content: j.text }];
          if (!j.stream) return (await c.chat.completions.create({ model: 'x', messages, max_tokens: j.max, temperature: 0 })).choices[0]!.message.content;
          let t = '';
          for await (const ch of await c.chat.completions.create({ model: 'x', messages, max_tokens: j.max, temperature: 0, stream: true })) t += ch.choices[0]?.delta.content ?? '';
          return t;
        }
        if (!j.stream) return (await c.completions.create({ model: 'x', prompt: j.text, max_tokens: j.max, temperature: 0 })).choices[0]!.text;
        let t = '';
        for await (const ch of await c.completions.create({ model: 'x', prompt: j.text, max_tokens: j.max, temperature: 0, stream: true })) t += ch.choices[0]?.text ?? '';
        return t;
      }),
    );
    engine.delayMs = 0;
    expect(got).toEqual(want.map((w) => w.text));
    // The answers differ from each other, so an interleaving would have shown.
    expect(new Set(got).size).toBe(8);
    expect(server.stats.completed - before).toBe(8);
  });
});

/** Stream a completion, returning its text; `onChunk` sees the count of text chunks so far. */
async function streamText(c: OpenAI, body: { prompt: string; max_tokens: number; temperature?: number; seed?: number }, signal?: AbortSignal, onChunk?: (n: number) => void): Promise<string> {
  let text = '';
  let n = 0;
  for await (const ch of await c.completions.create({ model: 'x', temperature: 0, ...body, stream: true }, { signal })) {
    text += ch.choices[0]?.text ?? '';
    onChunk?.(++n);
  }
  return text;
}

describe('continuous batching', () => {
  const prompts = ['Once upon a time, a cat', 'Tom had a red ball', 'The sun was hot and', 'Lily saw a big tree', 'A little bird sang', 'The moon was bright'];

  it('6 streaming clients on 4 slots are decoded together, each gets its alone answer', async () => {
    const s = await start();
    const want = await Promise.all(prompts.map((p, i) => ref.completion(p, 30 + 3 * i)));
    engine.delayMs = 2;
    try {
      const got = await Promise.all(prompts.map((p, i) => streamText(openai(s.url), { prompt: p, max_tokens: 30 + 3 * i })));
      expect(got).toEqual(want.map((w) => w.text));
    } finally {
      engine.delayMs = 0;
    }
    const h = (await (await fetch(`${s.url}/health`)).json()) as { maxBatch: number; steps: number; generatedTokens: number; parallel: number; activeSequences: number };
    expect(h.parallel).toBe(4);
    expect(h.maxBatch).toBe(4);
    expect(h.activeSequences).toBe(0);
    // One step per token would be generatedTokens steps; batching needs far fewer.
    expect(h.steps).toBeLessThan(h.generatedTokens * 0.6);
  });

  it('a request that arrives mid-stream joins the running batch and finishes first', async () => {
    const s = await start();
    const longWant = await ref.completion('Once upon a time', 200);
    const shortWant = await ref.completion('Tom had a red ball', 10);
    engine.delayMs = 5;
    try {
      let longChunksAtShortDone = -1;
      let longChunks = 0;
      let startShort!: () => void;
      const started = new Promise<void>((r) => (startShort = r));
      const long = streamText(openai(s.url), { prompt: 'Once upon a time', max_tokens: 200 }, undefined, (n) => {
        longChunks = n;
        if (n === 5) startShort();
      });
      await started;
      const short = await openai(s.url).completions.create({ model: 'x', prompt: 'Tom had a red ball', max_tokens: 10, temperature: 0 });
      longChunksAtShortDone = longChunks;
      expect(short.choices[0]!.text).toBe(shortWant.text);
      expect(await long).toBe(longWant.text);
      // The long stream was still going when the short request ended: they ran side by side.
      expect(longChunksAtShortDone).toBeLessThan(longChunks);
      expect(s.server.stats.maxBatch).toBe(2);
    } finally {
      engine.delayMs = 0;
    }
  });

  it('a client that disconnects mid-stream frees its slot for a waiting request', async () => {
    const s = await start({ parallel: 2 });
    const want = await ref.completion('Lily saw a big tree', 8);
    engine.delayMs = 10; // 400 tokens would take ≥ 4 s
    const acs = [new AbortController(), new AbortController()];
    try {
      const firstChunk: (() => void)[] = [];
      const begun = acs.map(() => new Promise<void>((r) => firstChunk.push(r)));
      const streams = acs.map((ac, i) =>
        streamText(openai(s.url), { prompt: prompts[i]!, max_tokens: 400 }, ac.signal, (n) => n === 1 && firstChunk[i]!()).catch((e: unknown) => e),
      );
      await Promise.all(begun);
      expect(s.server.stats.running).toBe(2);
      const waiting = openai(s.url).completions.create({ model: 'x', prompt: 'Lily saw a big tree', max_tokens: 8, temperature: 0 });
      await until(() => s.server.stats.waiting === 1, 5_000, 'the third request to queue');
      acs[0]!.abort();
      const r = await waiting;
      // It ran in the freed slot, not after the first stream's 400 tokens: the server has counted
      // the cancelled stream's few tokens and these 8 (the second stream is still running).
      expect(s.server.stats.generatedTokens).toBeLessThan(400);
      expect(r.choices[0]!.text).toBe(want.text);
      expect(s.server.stats.cancelled).toBe(1);
      // The second stream is still running beside it.
      expect(s.server.stats.running).toBe(1);
      acs[1]!.abort();
      await Promise.all(streams);
      await until(() => s.server.stats.running === 0 && s.server.stats.activeSequences === 0, 5_000, 'the second stream to stop');
      expect(s.server.stats.cancelled).toBe(2);
    } finally {
      for (const ac of acs) ac.abort();
      engine.delayMs = 0;
    }
  });

  it('sampling with a seed gives the same text alone, batched, and with --parallel 1', async () => {
    const body = { prompt: 'Once upon a time', max_tokens: 40, temperature: 0.9, seed: 1234 };
    const batched = await start();
    const single = await start({ parallel: 1 });
    const alone = (await openai(batched.url).completions.create({ model: 'x', ...body })).choices[0]!.text;
    expect(batched.server.stats.maxBatch).toBe(1);
    engine.delayMs = 5;
    let together: string;
    try {
      const others = prompts.slice(0, 3).map((p, i) => streamText(openai(batched.url), { prompt: p, max_tokens: 60, temperature: 1, seed: i }));
      await until(() => batched.server.stats.activeSequences === 3, 5_000, 'three other sequences to run');
      together = await streamText(openai(batched.url), body);
      await Promise.all(others);
    } finally {
      engine.delayMs = 0;
    }
    expect(batched.server.stats.maxBatch).toBe(4);
    const one = (await openai(single.url).completions.create({ model: 'x', ...body })).choices[0]!.text;
    expect(together).toBe(alone);
    expect(one).toBe(alone);
    // And the seed matters (the comparison above would hold trivially for a constant answer).
    const other = (await openai(batched.url).completions.create({ model: 'x', ...body, seed: 99 })).choices[0]!.text;
    expect(other).not.toBe(alone);
  });

  it('--parallel 1 runs one sequence at a time, in arrival order, with the same answers', async () => {
    const s = await start({ parallel: 1 });
    const want = await Promise.all(prompts.slice(0, 3).map((p) => ref.completion(p, 20)));
    engine.delayMs = 10; // the first request runs ≥ 200 ms: the others arrive meanwhile
    const order: number[] = [];
    try {
      const got = await Promise.all(
        prompts.slice(0, 3).map(async (p, i) => {
          if (i > 0) await until(() => s.server.stats.running + s.server.stats.waiting === i, 5_000, `request ${i} to arrive`);
          const t = await streamText(openai(s.url), { prompt: p, max_tokens: 20 });
          order.push(i);
          return t;
        }),
      );
      expect(got).toEqual(want.map((w) => w.text));
    } finally {
      engine.delayMs = 0;
    }
    expect(order).toEqual([0, 1, 2]);
    expect(s.server.stats.maxBatch).toBe(1);
    expect(() => createServer(engine, { parallel: 5 })).toThrow(/parallel must be 1\.\.4/);
  });
});

describe('bad requests get a 4xx with a message, and the server keeps serving', () => {
  const cases: [string, string | object, RegExp, string?][] = [
    ['malformed JSON', '{"messages": [', /not valid JSON/],
    ['a body that is not an object', '[1, 2]', /must be a JSON object, got an array/],
    ['missing messages', { model: 'x' }, /messages: is required/],
    ['messages of the wrong type', { messages: 'hi' }, /messages: expected an array, got the string "hi"/],
    ['empty messages', { messages: [] }, /messages: must not be empty/],
    ['an unknown role', { messages: [{ role: 'wizard', content: 'hi' }] }, /messages\[0\]\.role: unknown role "wizard"/],
    ['a tool message to a template without tools', { messages: [{ role: 'tool', content: 'hi', tool_call_id: 'c1' }] }, /messages: message 0: tool messages need a Jinja template with tools/],
    ['tools for a template without tool calls', { messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }] }, /tools: .* has no tool calls/],
    ['response_format of an unknown type', { messages: [{ role: 'user', content: 'hi' }], response_format: { type: 'xml' } }, /response_format\.type: expected "text", "json_object" or "json_schema"/],
    ['content of the wrong type', { messages: [{ role: 'user', content: 42 }] }, /messages\[0\]\.content: expected a string or an array of text parts, got number 42/],
    ['roles the template forbids', { messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }] }, /roles must alternate/],
    ['temperature as a string', { messages: [{ role: 'user', content: 'hi' }], temperature: 'hot' }, /temperature: expected a number, got the string "hot"/],
    ['temperature out of range', { messages: [{ role: 'user', content: 'hi' }], temperature: 7 }, /temperature: must be between 0 and 2, got 7/],
    ['top_p out of range', { messages: [{ role: 'user', content: 'hi' }], top_p: 1.5 }, /top_p: must be between 0 and 1/],
    ['n = 0', { messages: [{ role: 'user', content: 'hi' }], n: 0 }, /n: must be between 1 and 16, got 0/],
    ['n not whole', { messages: [{ role: 'user', content: 'hi' }], n: 1.5 }, /n: expected a whole number/],
    ['too many stop sequences', { messages: [{ role: 'user', content: 'hi' }], stop: ['a', 'b', 'c', 'd', 'e'] }, /stop: at most 4/],
    ['an empty stop sequence', { messages: [{ role: 'user', content: 'hi' }], stop: [''] }, /stop\[0\]: must not be empty/],
    ['stop of the wrong type', { messages: [{ role: 'user', content: 'hi' }], stop: 5 }, /stop: expected a string or an array of strings/],
    ['negative max_tokens', { messages: [{ role: 'user', content: 'hi' }], max_tokens: -1 }, /max_tokens: must be between 1/],
    ['huge max_tokens', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 1_000_000 }, /maximum context length is 512 tokens.*1000000 in the completion/],
    ['a prompt over the context', { messages: [{ role: 'user', content: 'the cat sat on the mat. '.repeat(200) }] }, /maximum context length is 512 tokens/],
    ['stream not boolean', { messages: [{ role: 'user', content: 'hi' }], stream: 'yes' }, /stream: expected true or false/],
    ['stream_options without stream', { messages: [{ role: 'user', content: 'hi' }], stream_options: { include_usage: true } }, /stream_options: only allowed when stream is true/],
    ['top_logprobs over 20', { messages: [{ role: 'user', content: 'hi' }], logprobs: true, top_logprobs: 21 }, /top_logprobs: must be between 0 and 20, got 21/],
    ['top_logprobs without logprobs', { messages: [{ role: 'user', content: 'hi' }], top_logprobs: 3 }, /top_logprobs: requires logprobs: true/],
    ['logprobs not boolean', { messages: [{ role: 'user', content: 'hi' }], logprobs: 3 }, /logprobs: expected true or false/],
  ];
  for (const [name, body, message] of cases) {
    it(name, async () => {
      const r = await post(url, '/v1/chat/completions', body);
      expect(r.status).toBe(400);
      const j = (await r.json()) as { error: { message: string; type: string } };
      expect(j.error.type).toBe('invalid_request_error');
      expect(j.error.message).toMatch(message);
    });
  }
  it('completions: missing prompt, token ids outside the vocabulary, a prompt over the context', async () => {
    for (const [body, message] of [
      [{ max_tokens: 5 }, /prompt: is required/],
      [{ prompt: [1, 99999] }, /prompt\[1\]: token id 99999 is outside the vocabulary 0\.\.511/],
      [{ prompt: 'a '.repeat(600) }, /maximum context length/],
      [{ prompt: 'hi', best_of: 3 }, /best_of: only 1/],
      [{ prompt: 'hi', logprobs: 6 }, /logprobs: must be between 0 and 5, got 6/],
      [{ prompt: 'hi', tools: [{ type: 'function', function: { name: 'f' } }] }, /tools: only \/v1\/chat\/completions takes tools/],
      [{ prompt: 'hi', logprobs: 2, echo: true }, /logprobs: log-probabilities of an echoed prompt are not supported/],
    ] as const) {
      const r = await post(url, '/v1/completions', body);
      expect(r.status).toBe(400);
      expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(message);
    }
  });
  it('the openai client sees BadRequestError with the message', async () => {
    const e = await client.chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100_000 }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BadRequestError);
    expect((e as BadRequestError).message).toMatch(/maximum context length is 512 tokens/);
    expect((e as BadRequestError).code).toBe('context_length_exceeded');
  });
  it('unknown routes are 404, wrong methods 405', async () => {
    expect((await fetch(`${url}/v1/nothing`)).status).toBe(404);
    expect((await fetch(`${url}/v1/models/%E0%A4%A`)).status).toBe(400);
    const r = await fetch(`${url}/v1/chat/completions`);
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('POST');
  });
  it('still answers correctly after all of that', async () => {
    const want = await ref.completion('Lily and Tom', 16);
    const r = await client.completions.create({ model: 'x', prompt: 'Lily and Tom', max_tokens: 16, temperature: 0 });
    expect(r.choices[0]!.text).toBe(want.text);
    expect(server.stats.rejected).toBeGreaterThanOrEqual(cases.length);
  });
});

describe('limits', () => {
  it('a body over the limit is 413, and the server keeps serving', async () => {
    const s = await start({ maxBodyBytes: 1024 });
    const r = await post(s.url, '/v1/chat/completions', { messages: [{ role: 'user', content: 'x'.repeat(4096) }] });
    expect(r.status).toBe(413);
    expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(/larger than 1024 bytes/);
    const ok = await openai(s.url).completions.create({ model: 'x', prompt: 'Hi', max_tokens: 3, temperature: 0 });
    expect(ok.choices[0]!.text.length).toBeGreaterThan(0);
  });

  it('with --api-key: 401 without or with a wrong key, 200 with it; /health and / need none', async () => {
    const s = await start({ apiKey: 'sekret-key' });
    await expect(openai(s.url, 'wrong').models.list()).rejects.toBeInstanceOf(AuthenticationError);
    const raw = await fetch(`${s.url}/v1/models`);
    expect(raw.status).toBe(401);
    expect(raw.headers.get('www-authenticate')).toBe('Bearer');
    expect(((await raw.json()) as { error: { message: string } }).error.message).toMatch(/API key/);
    const r = await openai(s.url, 'sekret-key').chat.completions.create({ model: 'x', messages: [{ role: 'user', content: 'hi' }], max_tokens: 3, temperature: 0 });
    expect(r.choices).toHaveLength(1);
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
    expect((await fetch(`${s.url}/`)).status).toBe(200);
  });

  it('a full queue answers 429 with Retry-After; a queued client that leaves frees its place', async () => {
    // One request at a time (--parallel 1), so the second one has to queue.
    const s = await start({ maxQueue: 1, parallel: 1 });
    const c = openai(s.url);
    engine.delayMs = 10;
    try {
      const first = new AbortController();
      const stream = await c.chat.completions.create(
        { model: 'x', messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 400, temperature: 0, stream: true },
        { signal: first.signal },
      );
      const it1 = stream[Symbol.asyncIterator]();
      await it1.next(); // running now
      const second = new AbortController();
      const queued = c.completions.create({ model: 'x', prompt: 'Once', max_tokens: 5 }, { signal: second.signal }).catch((e: unknown) => e);
      await until(() => s.server.stats.waiting === 1, 10_000, 'the second request to queue');
      const r = await post(s.url, '/v1/completions', { prompt: 'Once', max_tokens: 5 });
      expect(r.status).toBe(429);
      expect(Number(r.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(/queue is full/);
      await expect(c.completions.create({ model: 'x', prompt: 'Once', max_tokens: 5 })).rejects.toBeInstanceOf(RateLimitError);
      // The queued client gives up: its place is free again at once.
      second.abort();
      await queued;
      await until(() => s.server.stats.waiting === 0, 5_000, 'the queued request to leave');
      first.abort();
      await until(() => s.server.stats.running === 0, 5_000, 'the running request to stop');
      expect(s.server.stats.cancelled).toBe(2);
    } finally {
      engine.delayMs = 0;
    }
  });
});

describe('cancellation', () => {
  it('a client that disconnects mid-stream cancels its generation; the next request starts at once', async () => {
    const s = await start();
    engine.delayMs = 10; // 400 tokens would take ≥ 4 s
    try {
      const ac = new AbortController();
      const stream = await openai(s.url).chat.completions.create(
        { model: 'x', messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 400, temperature: 0, stream: true },
        { signal: ac.signal },
      );
      let chunks = 0;
      const tokensBefore = s.server.stats.generatedTokens;
      try {
        for await (const _ of stream) if (++chunks === 5) ac.abort();
      } catch (e) {
        expect((e as Error).name).toMatch(/Abort/);
      }
      await until(() => s.server.stats.cancelled === 1 && s.server.stats.running === 0, 10_000, 'the cancelled request to stop');
      const next = await openai(s.url).completions.create({ model: 'x', prompt: 'Once', max_tokens: 5, temperature: 0 });
      expect(next.choices[0]!.finish_reason).toBe('length');
      // The cancelled stream stopped far short of its 400 tokens (counted without the clock).
      const generated = s.server.stats.generatedTokens - tokensBefore - 5;
      expect(generated).toBeGreaterThanOrEqual(4);
      expect(generated).toBeLessThan(100);
    } finally {
      engine.delayMs = 0;
    }
  });

  it('close(): the running request finishes within the grace period, queued ones get 503, new connections are refused', async () => {
    const s = await start({ parallel: 1 });
    engine.delayMs = 5;
    try {
      const c = openai(s.url);
      const running = c.completions.create({ model: 'x', prompt: 'Once upon a time', max_tokens: 40, temperature: 0 });
      await until(() => s.server.stats.running === 1, 5_000, 'the request to start');
      const queued = c.completions.create({ model: 'x', prompt: 'Once', max_tokens: 5 }).catch((e: unknown) => e);
      await until(() => s.server.stats.waiting === 1, 5_000, 'the second request to queue');
      const closing = s.server.close({ graceMs: 20_000 });
      const q = await queued;
      expect(q).toBeInstanceOf(APIError);
      expect((q as APIError).status).toBe(503);
      const r = await running;
      expect(r.choices[0]!.text).toBe((await ref.completion('Once upon a time', 40)).text);
      await closing;
      await expect(fetch(`${s.url}/health`)).rejects.toThrow();
    } finally {
      engine.delayMs = 0;
    }
  });
});

describe('web page', () => {
  it('is one self-contained HTML page', async () => {
    const r = await fetch(`${url}/`);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/text\/html/);
    expect(r.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
    const html = await r.text();
    expect(html).toMatch(/<script>/);
    expect(html).toMatch(/\/v1\/chat\/completions/);
    // Nothing loaded from elsewhere.
    expect(html).not.toMatch(/\b(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/@import|url\(\s*["']?https?:/i);
  });
});

void sleep;
