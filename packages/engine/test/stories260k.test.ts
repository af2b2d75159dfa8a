import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FloatType } from '@airllm/format';
import { importLlama2c } from '@airllm/format/convert';
import { readLegacyLlama2c } from '@airllm/format/testing';
import { LayerWiseInferenceEngine, type EngineOptions } from '@airllm/engine';
import { oracleLogits } from './oracle.js';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES, LLAMA2C_MODEL, LLAMA2C_TOKENIZER, maxAbsDiff, tempDir } from './helpers.js';

const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[]; text: string };
  encodings: Record<string, number[]>;
};
const EXPECTED = reference.bos_only.generated_tokens;

async function greedy(model: string, options: EngineOptions, steps = EXPECTED.length): Promise<{ tokens: number[]; text: string }> {
  const engine = new LayerWiseInferenceEngine(model, options);
  await engine.initialize();
  try {
    const tokens: number[] = [];
    let text = '';
    for await (const t of engine.generate([1], { maxTokens: steps, temperature: 0, stopAtEos: false })) {
      tokens.push(t.token);
      text += t.text;
    }
    return { tokens, text };
  } finally {
    await engine.cleanup();
  }
}

const tmp = tempDir();
let converted = '';
let convertedTokenizer = '';

beforeAll(async () => {
  converted = join(tmp.dir, 'stories260K.m');
  convertedTokenizer = join(tmp.dir, 'stories260K.t');
  await importLlama2c(
    { checkpoint: LLAMA2C_MODEL, tokenizer: LLAMA2C_TOKENIZER, model: converted, tokenizerOut: convertedTokenizer },
    { dtype: FloatType.F32 },
  );
});
afterAll(() => tmp.cleanup());

describe('stories260K greedy generation matches llama2.c token for token', () => {
  const modes: EngineOptions[] = [
    { mode: 'resident' },
    { mode: 'stream', maxMemory: 2 * 197120 },
    { mode: 'sequential' },
  ];
  for (const m of modes) {
    for (const threads of [1, 2]) {
      it(`official F32 fixture, ${m.mode}, ${threads} thread(s)`, async () => {
        const { tokens, text } = await greedy(F32_MODEL, { ...m, threads, tokenizerPath: FIXTURE_TOKENIZER });
        expect(tokens).toEqual(EXPECTED);
        // run.c prints a final newline after the story.
        expect(text).toBe(reference.bos_only.text.replace(/\n$/, ''));
      });
    }
  }

  it('our own conversion of the llama2.c checkpoint (and its tokenizer)', async () => {
    const { tokens, text } = await greedy(converted, { threads: 2, tokenizerPath: convertedTokenizer });
    expect(tokens).toEqual(EXPECTED);
    expect(text).toBe(reference.bos_only.text.replace(/\n$/, ''));
  });
});

describe('stories260K logits', () => {
  it('are within 1e-4 of an independent float64 forward pass over the llama2.c checkpoint', async () => {
    const ckpt = readLegacyLlama2c(readFileSync(LLAMA2C_MODEL));
    const D = ckpt.dim;
    const byName = (name: string): Float32Array => {
      if (name === 'embedding' || name === 'wcls') return ckpt.output ?? ckpt.tokEmbeddings;
      if (name === 'final_norm') return ckpt.norm;
      const [, l, t] = name.split('.') as [string, string, string];
      const map = { q: ckpt.wq, k: ckpt.wk, v: ckpt.wv, wo: ckpt.wo, w1: ckpt.w1, w2: ckpt.w2, w3: ckpt.w3, att_norm: ckpt.attentionNorm, ffn_norm: ckpt.ffnNorm } as Record<string, Float32Array[]>;
      return map[t]![Number(l)]!;
    };
    const prompt = [1, ...EXPECTED.slice(0, 40)];
    const want = oracleLogits(
      { arch: 'llama', dim: D, ffDim: ckpt.hiddenDim, nLayers: ckpt.nLayers, nHeads: ckpt.nHeads, nKvHeads: ckpt.nKvHeads, headDim: D / ckpt.nHeads, vocabSize: ckpt.vocabSize, eps: 1e-5, ropeTheta: 10000, halfSplit: false },
      byName,
      prompt,
    );
    const engine = new LayerWiseInferenceEngine(F32_MODEL, { threads: 2, batchSize: 16 });
    await engine.initialize();
    try {
      // Batched prefill (three chunks) for the last position, then decode steps one by one.
      const last = await engine.forward(prompt, 0);
      expect(maxAbsDiff(last, want[prompt.length - 1]!)).toBeLessThan(1e-4);
      for (let pos = 0; pos < 8; pos++) {
        const logits = await engine.forward([prompt[pos]!], pos);
        expect(maxAbsDiff(logits, want[pos]!)).toBeLessThan(1e-4);
      }
    } finally {
      await engine.cleanup();
    }
  });
});
