import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TINY_LLAMA31, writeTinyModel } from '@airllm/format/testing';
import { DraftModelError, LayerWiseInferenceEngine, lookup, OptionError, type EngineOptions, type GenerateOptions, type GenerationResult } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, Q40_MODEL, tempDir } from './helpers.js';

/** llama2.c's run.c on five prompts, each run greedily until it samples BOS (fixtures/llama2c/README.md). */
const runc = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'llama2c', 'stories260k_prompts.json'), 'utf8')) as {
  cases: { prompt: string; prompt_tokens: number[]; generated_tokens: number[] }[];
};

async function run(engine: LayerWiseInferenceEngine, prompt: string | number[], options: GenerateOptions): Promise<GenerationResult> {
  const gen = engine.generate(prompt, options);
  let r = await gen.next();
  let text = '';
  while (!r.done) {
    text += r.value.text;
    r = await gen.next();
  }
  expect(text).toBe(r.value.text);
  return r.value;
}

describe('prompt lookup', () => {
  it('proposes what followed the latest earlier occurrence of the longest matching tail', () => {
    expect(lookup([5, 6, 7, 8, 1, 6, 7], 4, 3)).toEqual([8, 1, 6, 7]);
    expect(lookup([5, 6, 7, 9, 6, 7, 8, 2, 6, 7], 2, 3)).toEqual([8, 2]);
    // A 3-gram match wins over a later 2-gram one.
    expect(lookup([1, 2, 3, 4, 9, 2, 3, 5, 1, 2, 3], 3, 3)).toEqual([4, 9, 2]);
    expect(lookup([1, 2, 3], 4, 3)).toEqual([]);
    expect(lookup([4], 4, 3)).toEqual([]);
  });
});

const MODES: EngineOptions[] = [{ mode: 'resident' }, { mode: 'stream', maxMemory: 2 * 197120 }, { mode: 'sequential' }];

for (const mode of MODES) {
  describe(`greedy decoding with a draft gives llama2.c's ids (${mode.mode})`, () => {
    let engine: LayerWiseInferenceEngine;
    let draft: LayerWiseInferenceEngine;
    beforeAll(async () => {
      engine = new LayerWiseInferenceEngine(F32_MODEL, { ...mode, tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 512, threads: 2 });
      draft = new LayerWiseInferenceEngine(Q40_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 512, threads: 1 });
      await engine.initialize();
      await draft.initialize();
    });
    afterAll(async () => {
      await engine.cleanup();
      await draft.cleanup();
    });

    for (const c of runc.cases) {
      it(`"${c.prompt}" with --draft ngram and with the Q40 draft model`, async () => {
        for (const d of ['ngram', draft] as const) {
          const r = await run(engine, c.prompt, { maxTokens: 512, temperature: 0, draft: d });
          expect(r.promptTokens).toEqual(c.prompt_tokens);
          expect(r.tokens).toEqual(c.generated_tokens);
          expect(r.finishReason).toBe('bos');
          const s = r.stats;
          expect(s.draftedTokens).toBeGreaterThan(0);
          expect(s.acceptedTokens).toBeGreaterThan(0);
          expect(s.acceptedTokens).toBeLessThanOrEqual(s.draftedTokens);
          // The prompt's pass, then each decode pass decides its accepted drafts plus one token of
          // the model's own (up to the BOS that ends the text; what a pass decided after it is dropped).
          expect(s.passes).toBeGreaterThanOrEqual(1 + c.generated_tokens.length - s.acceptedTokens);
          expect(s.passes).toBeLessThan(1 + c.generated_tokens.length - s.acceptedTokens + 9);
        }
      });
    }
  });
}

describe('drafts that cannot be used are refused with typed errors', () => {
  const tmp = tempDir();
  let engine: LayerWiseInferenceEngine;
  let tiny: LayerWiseInferenceEngine;
  beforeAll(async () => {
    const path = join(tmp.dir, 'tiny.m');
    await writeTinyModel(path, TINY_LLAMA31);
    engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 64, threads: 1, batchSize: 8 });
    tiny = new LayerWiseInferenceEngine(path, { threads: 1 });
    await engine.initialize();
    await tiny.initialize();
  });
  afterAll(async () => {
    await engine.cleanup();
    await tiny.cleanup();
    tmp.cleanup();
  });

  it('a draft model with another vocabulary: DraftModelError naming the file and the sizes', async () => {
    const gen = engine.generate('Once', { maxTokens: 4, draft: tiny });
    const error = await gen.next().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DraftModelError);
    const e = error as DraftModelError;
    expect(e.code).toBe('AIRLLM_DRAFT_MODEL');
    expect(e.path).toBe(tiny.modelPath);
    expect(e.field).toBe('vocabSize');
    expect([e.expected, e.actual]).toEqual([512, 128]);
  });

  it('a draft model whose tokenizer spells one token differently: DraftModelError naming the token', async () => {
    const bytes = readFileSync(FIXTURE_TOKENIZER);
    const at = bytes.indexOf(' Lily');
    expect(at).toBeGreaterThan(0);
    bytes[at + 4] = 'x'.charCodeAt(0);
    const tok = join(tmp.dir, 'other.t');
    writeFileSync(tok, bytes);
    const other = new LayerWiseInferenceEngine(Q40_MODEL, { tokenizerPath: tok, threads: 1 });
    await other.initialize();
    try {
      const id = Array.from({ length: engine.tokenizer.vocabSize }, (_, i) => i).filter((i) => engine.tokenizer.tokenText(i) === ' Lily');
      expect(id).toHaveLength(1);
      expect(() => engine.beginSequence('Once', { draft: other })).toThrow(DraftModelError);
      expect(() => engine.beginSequence('Once', { draft: other })).toThrow(new RegExp(`field token ${id[0]}: the draft model has a different vocabulary \\(expected " Lily", got " Lilx"\\)`));
    } finally {
      await other.cleanup();
    }
  });

  it('a model that cannot return every row’s logits (a ModelForward without rowLogits): OptionError naming draft', async () => {
    class Wrapped extends LayerWiseInferenceEngine {
      override async initialize(): Promise<void> {
        await super.initialize();
        const inner = this.model;
        this.model = { forward: (items) => inner.forward(items) };
      }
    }
    const wrapped = new Wrapped(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 64, threads: 1 });
    await wrapped.initialize();
    try {
      expect(() => wrapped.beginSequence('Once', { draft: 'ngram' })).toThrow(/option draft: .*cannot return every row's logits/);
      expect(() => wrapped.beginSequence('Once', {})).not.toThrow();
    } finally {
      await wrapped.cleanup();
    }
  });

  it('draftMax beyond batchSize − 1, or a draft that is neither ngram nor an engine: OptionError', async () => {
    expect(() => engine.beginSequence('Once', { draft: 'ngram', draftMax: 8 })).toThrow(OptionError);
    expect(() => engine.beginSequence('Once', { draft: 'ngram', draftMax: 7 })).not.toThrow();
    expect(() => engine.beginSequence('Once', { draft: 'bigram' as 'ngram' })).toThrow(/option draft/);
    expect(() => engine.beginSequence('Once', { draft: engine })).toThrow(/another engine/);
  });
});
