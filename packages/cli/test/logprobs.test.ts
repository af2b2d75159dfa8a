import { ChatFormatter, LayerWiseInferenceEngine } from '@airllm/engine';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type AirllmServer } from '../src/index.js';
import { MODEL, SlowEngine } from './helpers.js';

/**
 * logprobs / top_logprobs through the official openai client, checked against the log-softmax
 * of the logits that a separate engine computes for the same tokens (engine.forward, one
 * position at a time), worked out here in double precision.
 */
let engine: SlowEngine;
let ref: LayerWiseInferenceEngine;
let chat: ChatFormatter;
let server: AirllmServer;
let client: OpenAI;

beforeAll(async () => {
  engine = new SlowEngine({ maxSequences: 2 });
  ref = new LayerWiseInferenceEngine(MODEL, { threads: 1 });
  await Promise.all([engine.initialize(), ref.initialize()]);
  chat = new ChatFormatter(ref.tokenizer);
  server = createServer(engine, {});
  const a = await server.listen(0, '127.0.0.1');
  client = new OpenAI({ baseURL: `${a.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
});

afterAll(async () => {
  await server?.close({ graceMs: 0 });
  await engine?.cleanup();
  await ref?.cleanup();
});

const messages = [
  { role: 'system' as const, content: 'You tell short stories.' },
  { role: 'user' as const, content: 'Tell me about a dog.' },
];

/** log-softmax of logits, in double precision. */
function logSoftmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits, (v) => v - lse);
}

/** The generated tokens of the reference engine, and the log-softmax at each of their positions. */
async function reference(prompt: number[], options: { maxTokens: number; temperature?: number; seed?: number; stop?: readonly string[] }): Promise<{ ids: number[]; lps: Float64Array[] }> {
  const gen = ref.generate(prompt, { temperature: 0, ...options });
  let r = await gen.next();
  while (!r.done) r = await gen.next();
  const ids = r.value.tokens;
  const lps = [logSoftmax(await ref.forward(prompt, 0))];
  for (let i = 0; i + 1 < ids.length; i++) lps.push(logSoftmax(await ref.forward([ids[i]!], prompt.length + i)));
  return { ids, lps };
}

const bytesOf = (id: number): number[] => Array.from(ref.tokenizer.pieces[id]!);

/** The `k` most likely ids, most likely first. */
function topIds(lp: Float64Array, k: number): number[] {
  return Array.from(lp.keys())
    .sort((a, b) => lp[b]! - lp[a]! || a - b)
    .slice(0, k);
}

type Content = { token: string; logprob: number; bytes: number[] | null; top_logprobs: { token: string; logprob: number; bytes: number[] | null }[] }[];

function expectMatches(content: Content, want: { ids: number[]; lps: Float64Array[] }, top: number): void {
  expect(content).toHaveLength(want.ids.length);
  content.forEach((c, i) => {
    const id = want.ids[i]!;
    const lp = want.lps[i]!;
    expect(c.bytes).toEqual(bytesOf(id));
    expect(c.token).toBe(new TextDecoder().decode(ref.tokenizer.pieces[id]!));
    expect(Math.abs(c.logprob - lp[id]!)).toBeLessThan(1e-4);
    const ids = topIds(lp, top);
    expect(c.top_logprobs).toHaveLength(top);
    c.top_logprobs.forEach((t, k) => {
      expect(t.bytes).toEqual(bytesOf(ids[k]!));
      expect(Math.abs(t.logprob - lp[ids[k]!]!)).toBeLessThan(1e-4);
    });
  });
}

describe('chat logprobs', () => {
  it('top_logprobs 5: the log-softmax of the logits at each position, whole and streamed', async () => {
    const want = await reference(chat.encode(messages), { maxTokens: 12, stop: chat.stop });
    const r = await client.chat.completions.create({ model: 'x', messages, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 5 });
    const content = r.choices[0]!.logprobs!.content as Content;
    expectMatches(content, want, 5);
    expect(content.map((c) => c.token).join('')).toBe(r.choices[0]!.message.content);

    const stream = await client.chat.completions.create({ model: 'x', messages, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 5, stream: true });
    const streamed: Content = [];
    for await (const c of stream) streamed.push(...((c.choices[0]?.logprobs?.content ?? []) as Content));
    // The second request reuses the cached prompt, so its sums differ in the last bits: compare with the reference again.
    expectMatches(streamed, want, 5);
  });

  it('temperature changes what is drawn, not the values: still the log-softmax of the unscaled logits', async () => {
    const want = await reference(chat.encode(messages), { maxTokens: 10, temperature: 1.5, seed: 7, stop: chat.stop });
    const r = await client.chat.completions.create({ model: 'x', messages, max_tokens: 10, temperature: 1.5, seed: 7, logprobs: true, top_logprobs: 2 });
    expectMatches(r.choices[0]!.logprobs!.content as Content, want, 2);
  });

  it('without top_logprobs: each token with an empty list; without logprobs: null', async () => {
    const r = await client.chat.completions.create({ model: 'x', messages, max_tokens: 4, temperature: 0, logprobs: true });
    expect(r.choices[0]!.logprobs!.content!.length).toBeGreaterThan(0);
    for (const c of r.choices[0]!.logprobs!.content!) expect(c.top_logprobs).toEqual([]);
    const plain = await client.chat.completions.create({ model: 'x', messages, max_tokens: 4, temperature: 0 });
    expect(plain.choices[0]!.logprobs).toBeNull();
  });
});

describe('completions logprobs', () => {
  it('tokens, token_logprobs, top_logprobs and text_offset, whole and streamed', async () => {
    const prompt = 'Once upon a time';
    const want = await reference(ref.tokenizer.encode(prompt), { maxTokens: 10 });
    const r = await client.completions.create({ model: 'x', prompt, max_tokens: 10, temperature: 0, logprobs: 3 });
    const lp = r.choices[0]!.logprobs!;
    expect(lp.tokens).toHaveLength(want.ids.length);
    expect(lp.tokens!.join('')).toBe(r.choices[0]!.text);
    lp.token_logprobs!.forEach((v, i) => expect(Math.abs(v - want.lps[i]![want.ids[i]!]!)).toBeLessThan(1e-4));
    lp.top_logprobs!.forEach((top, i) => {
      const ids = topIds(want.lps[i]!, 3);
      expect(Object.keys(top)).toEqual(ids.map((id) => new TextDecoder().decode(ref.tokenizer.pieces[id]!)));
      ids.forEach((id) => expect(Math.abs(top[new TextDecoder().decode(ref.tokenizer.pieces[id]!)]! - want.lps[i]![id]!)).toBeLessThan(1e-4));
    });
    let offset = 0;
    lp.text_offset!.forEach((o, i) => {
      expect(o).toBe(offset);
      offset += lp.tokens![i]!.length;
    });

    const stream = await client.completions.create({ model: 'x', prompt, max_tokens: 10, temperature: 0, logprobs: 3, stream: true });
    const tokens: string[] = [];
    const offsets: number[] = [];
    for await (const c of stream) {
      tokens.push(...(c.choices[0]?.logprobs?.tokens ?? []));
      offsets.push(...(c.choices[0]?.logprobs?.text_offset ?? []));
    }
    expect(tokens).toEqual(lp.tokens);
    expect(offsets).toEqual(lp.text_offset);
  });
});
