import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES } from './helpers.js';

const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[] };
};

describe('several sequences decoded together', () => {
  it('give each sequence the tokens it gets alone, and the BOS-only one matches llama2.c', async () => {
    const prompts = [[1], 'Once upon a time', 'Lily and Tom went to the park', 'The sun'] as const;
    const steps = 60;
    const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, threads: 2, maxSequences: 4, batchSize: 8 });
    await engine.initialize();
    try {
      const streamed: number[][] = prompts.map(() => []);
      const gen = engine.generateBatch(prompts, { maxTokens: steps, temperature: 0, stopAtEos: false });
      let r = await gen.next();
      while (!r.done) {
        streamed[r.value.index]!.push(r.value.token);
        r = await gen.next();
      }
      const results = r.value;
      expect(results.map((x) => x.tokens)).toEqual(streamed);
      expect(results[0]!.tokens).toEqual(reference.bos_only.generated_tokens.slice(0, steps));
      // Alone: each prompt in slot 0 (its cache is reset by the differing prefix).
      for (let i = 0; i < prompts.length; i++) {
        const alone: number[] = [];
        for await (const t of engine.generate(prompts[i]!, { maxTokens: steps, temperature: 0, stopAtEos: false })) alone.push(t.token);
        expect(alone, `prompt ${i}`).toEqual(results[i]!.tokens);
      }
    } finally {
      await engine.cleanup();
    }
  });
});
