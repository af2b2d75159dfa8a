import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LayerWiseInferenceEngine, type EngineOptions } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES, maxAbsDiff } from './helpers.js';

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

/** A fresh engine on the F32 fixture for `fn`, cleaned up after. */
async function withEngine(options: EngineOptions, fn: (engine: LayerWiseInferenceEngine) => Promise<void>): Promise<void> {
  const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, ...options });
  await engine.initialize();
  try {
    await fn(engine);
  } finally {
    await engine.cleanup();
  }
}

describe('sequences that join and leave a running batch (beginSequence, forwardSequences)', () => {
  const prompts = ['Once upon a time', 'Lily and Tom went to the park', 'The sun', 'A big dog'];

  /** Greedy tokens of a prompt decoded alone in slot 0. */
  async function alone(engine: LayerWiseInferenceEngine, prompt: string, maxTokens: number): Promise<number[]> {
    const out: number[] = [];
    for await (const t of engine.generate(prompt, { maxTokens, temperature: 0, stopAtEos: false })) out.push(t.token);
    return out;
  }

  for (const activations of ['f32', 'q80'] as const) {
    it(`staggered joins, prompt chunks and early leavers get their alone tokens (${activations})`, async () => {
      await withEngine({ threads: 2, activations, maxSequences: 4, batchSize: 8 }, async (engine) => {
        const lengths = [40, 12, 30, 25];
        const want = [];
        for (let i = 0; i < prompts.length; i++) want.push(await alone(engine, prompts[i]!, lengths[i]!));
        // Sequence i joins at step 3·i; the step cap of 6 rows splits the longer prompts into chunks.
        const seqs = prompts.map((p, i) => ({ at: 3 * i, seq: engine.beginSequence(p, { slot: i, maxTokens: lengths[i], temperature: 0, stopAtEos: false }) }));
        const streamed: number[][] = prompts.map(() => []);
        let maxRan = 0;
        for (let step = 0; seqs.some((s) => !s.seq.finished); step++) {
          const running = seqs.filter((s) => s.at <= step && !s.seq.finished).map((s) => s.seq);
          maxRan = Math.max(maxRan, await engine.forwardSequences(running, { maxRows: 6 }));
          for (const s of running) {
            const t = s.advance();
            if (t) streamed[s.slot]!.push(t.token);
          }
        }
        expect(maxRan).toBe(4);
        expect(streamed).toEqual(want);
        expect(seqs.map((s) => s.seq.result({}).finishReason)).toEqual(['length', 'length', 'length', 'length']);
      });
    });
  }

  it("a row's logits depend on how many rows share the step, in the last bits only", async () => {
    // The native kernels walk several rows at once, so the accumulation order (and the last
    // bits) of a row depend on the step's row count: batched greedy output equals the alone
    // output only as long as no two top logits are that close.
    await withEngine({ threads: 2, maxSequences: 8, batchSize: 8 }, async (engine) => {
      const ids = engine.encode('Once upon a time');
      const firsts: Float32Array[] = [];
      for (const n of [1, 2, 4, 8]) {
        for (let s = 0; s < n; s++) await engine.forwardBatch([{ slot: s, pos: 0, tokens: ids }]);
        firsts.push((await engine.forwardBatch(Array.from({ length: n }, (_, s) => ({ slot: s, pos: ids.length, tokens: [5 + s] }))))[0]!);
      }
      for (const l of firsts) expect(maxAbsDiff(l, firsts[0]!)).toBeLessThan(1e-4);
    });
  });

  it('checks its inputs: slot range, one sequence per slot, the context', async () => {
    await withEngine({ threads: 1, maxSequences: 2, maxSeqLen: 16 }, async (engine) => {
      expect(() => engine.beginSequence('Once', { slot: 2 })).toThrow(/slot: must be 0\.\.1, got 2/);
      expect(() => engine.beginSequence('the cat sat on the mat and the dog sat on the log'.repeat(3))).toThrow(/context holds 16/);
      const a = engine.beginSequence('Once', { slot: 1 });
      const b = engine.beginSequence('The sun', { slot: 1 });
      await expect(engine.forwardSequences([a, b])).rejects.toThrow(/two sequences use slot 1/);
      // A second sequence in a slot reuses the KV rows of the common prefix.
      await engine.forwardSequences([a]);
      expect(engine.cachedPrefix(1, a.promptTokens)).toBe(a.promptTokens.length);
      expect(engine.beginSequence(a.promptTokens, { slot: 1 }).cached).toBe(a.promptTokens.length - 1);
    });
  });
});
