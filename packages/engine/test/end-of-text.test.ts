import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER } from './helpers.js';

/** llama2.c's run.c on five prompts, each run until it samples BOS (fixtures/llama2c/README.md). */
const runc = JSON.parse(readFileSync(join(import.meta.dirname, 'fixtures', 'llama2c', 'stories260k_prompts.json'), 'utf8')) as {
  cases: { prompt: string; prompt_tokens: number[]; generated_tokens: number[]; stdout: string }[];
};

describe('stories260K ends where llama2.c ends: at BOS', () => {
  let engine: LayerWiseInferenceEngine;
  beforeAll(async () => {
    engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 512 });
    await engine.initialize();
  });
  afterAll(async () => {
    await engine.cleanup();
  });

  it('has the five reference prompts', () => {
    expect(runc.cases.length).toBe(5);
    expect(engine.tokenizer.endsOnBos).toBe(true);
  });
  for (const c of runc.cases) {
    it(`"${c.prompt}": same prompt ids, same ${c.generated_tokens.length} ids, finish reason bos`, async () => {
      const gen = engine.generate(c.prompt, { maxTokens: 512, temperature: 0 });
      let text = '';
      let r = await gen.next();
      while (!r.done) {
        text += r.value.text;
        r = await gen.next();
      }
      const result = r.value;
      expect(result.promptTokens).toEqual(c.prompt_tokens);
      expect(result.tokens).toEqual(c.generated_tokens);
      expect(result.finishReason).toBe('bos');
      expect(text).toBe(result.text);
      // run.c echoes the prompt's pieces, then the story, then a newline.
      expect(engine.tokenizer.decode(c.prompt_tokens) + result.text + '\n').toBe(c.stdout);
    });
  }
});
