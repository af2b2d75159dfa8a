import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY_LLAMA31, writeTinyModel } from '@airllm/format/testing';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { createServer, type AirllmServer } from '../src/index.js';
import { BIN, FIXTURES, MODEL, Reference } from './helpers.js';

/** Speculative decoding from the command line and the server: greedy answers are the ones without a draft. */
const F32 = join(FIXTURES, 'dllama_model_stories260k_hidden192_f32.m');
const Q40 = join(FIXTURES, 'dllama_model_stories260k_hidden192_q40.m');
const TOK = join(FIXTURES, 'dllama_tokenizer_stories260k.t');
const llama2c = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as { bos_only: { generated_tokens: number[] } };

function airllm(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const tmp = mkdtempSync(join(tmpdir(), 'airllm-draft-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('generate --draft', () => {
  for (const draft of ['ngram', Q40]) {
    it(`--draft ${draft === 'ngram' ? 'ngram' : 'q40 model'}: llama2.c's greedy ids, and passes / drafted / accepted in --json`, () => {
      const r = airllm(['generate', '-m', F32, '-t', TOK, '--prompt', '', '--steps', '120', '--json', '--draft', draft, '--draft-max', '6']);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout) as { tokens: number[]; stats: { passes: number; draftedTokens: number; acceptedTokens: number } };
      expect(j.tokens).toEqual(llama2c.bos_only.generated_tokens.slice(0, 120));
      expect(j.stats.draftedTokens).toBeGreaterThan(0);
      expect(j.stats.acceptedTokens).toBeGreaterThan(0);
      // Prompt pass + decode passes, each deciding its accepted drafts and one more token.
      expect(j.stats.passes).toBe(1 + 119 - j.stats.acceptedTokens);
    });
  }

  it('--stats names the draft and its figures on stderr', () => {
    const r = airllm(['generate', '-m', F32, '-t', TOK, 'Once upon a time', '-n', '30', '--draft', Q40, '--stats']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/draft: .*q40\.m: \d+ passes over the model, \d+ tokens drafted, \d+ accepted/);
  });

  it('a draft model with another vocabulary, a missing file, --draft-max alone: one-line errors', async () => {
    const tiny = join(tmp, 'tiny.m');
    await writeTinyModel(tiny, TINY_LLAMA31);
    for (const [args, pattern] of [
      [['--draft', tiny], /tiny\.m, field vocabSize: the draft model has a different vocabulary size \(expected 512, got 128\)/],
      [['--draft', join(tmp, 'none.m')], /--draft .*none\.m: no such file/],
      [['--draft-max', '3'], /--draft-max needs --draft/],
      [['--draft', 'ngram', '--draft-max', '300'], /--draft-max: expected a whole number 0\.\.127, got "300"/],
    ] as const) {
      const r = airllm(['generate', 'Tom', '-n', '5', ...args]);
      expect(r.code).not.toBe(0);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(pattern);
    }
  });
});

describe('chat --draft', () => {
  it('answers two turns as it does without a draft (greedy), with ngram and with a draft model', () => {
    const chat = (extra: string[]): { code: number | null; stdout: string; stderr: string } => {
      const r = spawnSync(process.execPath, [BIN, 'chat', '--temperature', '0', '--steps', '40', ...extra], { encoding: 'utf8', timeout: 60_000, input: 'Hello\nTell me more\n/exit\n' });
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    const plain = chat([]);
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout.length).toBeGreaterThan(40);
    for (const draft of ['ngram', MODEL]) {
      const r = chat(['--draft', draft]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(plain.stdout);
    }
  });
});

describe('serve with a draft', () => {
  const prompts = ['Once upon a time, a cat', 'Tom had a red ball', 'The sun was hot and', 'Lily saw a big tree', 'A little bird sang', 'The moon was bright'];
  let engine: LayerWiseInferenceEngine;
  let draftModel: LayerWiseInferenceEngine;
  let ref: Reference;
  const servers: AirllmServer[] = [];
  beforeAll(async () => {
    engine = new LayerWiseInferenceEngine(MODEL, { threads: 1, maxSequences: 4 });
    draftModel = new LayerWiseInferenceEngine(MODEL, { threads: 1, maxSequences: 4 });
    ref = new Reference();
    await Promise.all([engine.initialize(), draftModel.initialize(), ref.init()]);
  });
  afterAll(async () => {
    for (const s of servers) await s.close({ graceMs: 0 });
    await engine?.cleanup();
    await draftModel?.cleanup();
    await ref?.cleanup();
  });

  for (const which of ['ngram', 'draft model'] as const) {
    it(`6 streaming openai clients on 4 slots with --draft ${which} each get their single-request greedy answer`, async () => {
      const s = createServer(engine, { draft: { draft: which === 'ngram' ? 'ngram' : draftModel, draftMax: 4 } });
      servers.push(s);
      const { url } = await s.listen(0, '127.0.0.1');
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
      const want = await Promise.all(prompts.map((p, i) => ref.completion(p, 30 + 3 * i)));
      const got = await Promise.all(
        prompts.map(async (p, i) => {
          let text = '';
          for await (const chunk of await client.completions.create({ model: 'm', prompt: p, max_tokens: 30 + 3 * i, temperature: 0, stream: true })) text += chunk.choices[0]?.text ?? '';
          return text;
        }),
      );
      expect(got).toEqual(want.map((w) => w.text));
      const h = (await (await fetch(`${url}/health`)).json()) as { steps: number; generatedTokens: number; draftedTokens: number; acceptedTokens: number };
      expect(h.generatedTokens).toBe(want.reduce((n, w) => n + w.tokens, 0));
      expect(h.draftedTokens).toBeGreaterThan(0);
      expect(h.acceptedTokens).toBeGreaterThan(0);
      expect(h.acceptedTokens).toBeLessThanOrEqual(h.draftedTokens);
      // The draft model is the model itself: every draft is accepted, so the longest answer
      // needs fewer steps than it has tokens (without a draft, a step gives a sequence one token).
      if (which === 'draft model') expect(h.steps).toBeLessThan(Math.max(...want.map((w) => w.tokens)));
    });
  }
});
