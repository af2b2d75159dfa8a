import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createServer, type AirllmServer } from '../src/index.js';
import { BIN, SlowEngine } from './helpers.js';

/**
 * Structured output from stories260K, a model that has never seen JSON: the official openai
 * client's `parse` (zod schema through zodResponseFormat) must get an object that validates on
 * every seeded request, whole and streamed; the CLI's --json-schema the same.
 */
let engine: SlowEngine;
let server: AirllmServer;
let url: string;
let client: OpenAI;
let dir: string;

beforeAll(async () => {
  engine = new SlowEngine({ maxSequences: 4 });
  await engine.initialize();
  server = createServer(engine, {});
  url = (await server.listen(0, '127.0.0.1')).url;
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  dir = mkdtempSync(join(tmpdir(), 'airllm-structured-'));
});

afterAll(async () => {
  await server?.close({ graceMs: 0 });
  await engine?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const Pet = z.object({ name: z.string(), legs: z.number().int() });
const Story = z.object({
  title: z.string(),
  mood: z.enum(['happy', 'sad', 'calm']),
  happyEnding: z.boolean(),
  pets: z.array(Pet),
  moral: z.string().nullable(),
  rating: z.number(),
  place: z.union([z.object({ town: z.string() }), z.object({ forest: z.boolean() })]),
});
const format = zodResponseFormat(Story, 'story');
const messages = [{ role: 'user' as const, content: 'Tell me a story about a cat, as JSON.' }];
const SEEDS = Array.from({ length: 20 }, (_, i) => i + 1);

describe('response_format json_schema with the openai client', () => {
  it('chat.completions.parse: 20 seeded requests out of 20 give an object that validates', async () => {
    const results = await Promise.all(
      SEEDS.map((seed) => client.chat.completions.parse({ model: 'x', messages, response_format: format, temperature: 1, seed, max_tokens: 160 })),
    );
    for (const r of results) {
      const parsed = r.choices[0]!.message.parsed;
      expect(parsed, r.choices[0]!.message.content ?? '').not.toBeNull();
      expect(Story.safeParse(parsed).success).toBe(true);
      expect(r.choices[0]!.finish_reason).toBe('stop');
    }
  });

  it('streamed: 20 seeded requests out of 20 give an object that validates', async () => {
    const results = await Promise.all(
      SEEDS.map(async (seed) => {
        const stream = client.chat.completions.stream({ model: 'x', messages, response_format: format, temperature: 1, seed: seed + 100, max_tokens: 160 });
        return stream.finalChatCompletion();
      }),
    );
    for (const r of results) {
      const parsed = r.choices[0]!.message.parsed;
      expect(parsed, r.choices[0]!.message.content ?? '').not.toBeNull();
      expect(Story.safeParse(parsed).success).toBe(true);
    }
  });

  it('json_object: a JSON object, whatever its keys', async () => {
    for (const seed of [1, 2, 3]) {
      const r = await client.chat.completions.create({ model: 'x', messages, response_format: { type: 'json_object' }, temperature: 1, seed, max_tokens: 120 });
      const v = JSON.parse(r.choices[0]!.message.content!) as unknown;
      expect(typeof v === 'object' && v !== null && !Array.isArray(v)).toBe(true);
    }
  });

  it('a schema keyword outside the subset is a 400 naming it', async () => {
    const e = await client.chat.completions
      .create({ model: 'x', messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'string', pattern: '^x' } } } } } })
      .catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OpenAI.BadRequestError);
    expect((e as Error).message).toMatch(/response_format\.json_schema\.schema: JSON schema keyword "pattern" at #\/properties\/a/);
    const f = await client.chat.completions.create({ model: 'x', messages, response_format: { type: 'yaml' } as never }).catch((x: unknown) => x);
    expect((f as Error).message).toMatch(/response_format\.type: expected "text", "json_object" or "json_schema"/);
  });
});

describe('airllm generate --json-schema', () => {
  it('prints JSON valid against the schema file; a bad schema is a clear error', () => {
    const file = join(dir, 'pet.json');
    writeFileSync(file, JSON.stringify(zodResponseFormat(Pet, 'pet').json_schema.schema));
    const r = spawnSync(process.execPath, [BIN, 'generate', '--json-schema', file, '--no-echo', '--temperature', '1', '--seed', '3', '-n', '60', 'Once upon a time'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(Pet.safeParse(JSON.parse(r.stdout)).success).toBe(true);
    writeFileSync(file, JSON.stringify({ type: 'string', format: 'email' }));
    const bad = spawnSync(process.execPath, [BIN, 'generate', '--json-schema', file, 'x'], { encoding: 'utf8', timeout: 60_000 });
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/JSON schema keyword "format" at #/);
  });
});
