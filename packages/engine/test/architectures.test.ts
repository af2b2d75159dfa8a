import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ArchType, FloatType, HeaderKey, readModelFile, type HeaderValues } from '@airllm/format';
import { TINY_LLAMA31, TINY_QWEN3, TINY_QWEN3_MOE, withDtype, writeTinyModel } from '@airllm/format/testing';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { oracleLogits, referenceKernelLogits, type OracleConfig } from './oracle.js';
import { maxAbsDiff, tempDir } from './helpers.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

function oracleConfig(path: string, q80: boolean): OracleConfig {
  const h = readModelFile(path).header;
  return {
    arch: h.archType === ArchType.LLAMA ? 'llama' : h.archType === ArchType.QWEN3 ? 'qwen3' : 'qwen3_moe',
    dim: h.dim,
    ffDim: h.ffDim,
    nLayers: h.nLayers,
    nHeads: h.nHeads,
    nKvHeads: h.nKvHeads,
    headDim: h.headDim,
    vocabSize: h.vocabSize,
    eps: h.normEpsilon,
    ropeTheta: h.ropeTheta,
    halfSplit: h.archType !== ArchType.LLAMA,
    scaling: {
      factor: h.ropeScalingFactor,
      low: h.ropeScalingLowFreqFactor,
      high: h.ropeScalingHighFreqFactor,
      origMaxSeqLen: h.ropeScalingOrigMaxSeqLen,
    },
    nExperts: h.nExperts,
    nActiveExperts: h.nActiveExperts,
    q80,
  };
}

/** Token sequence long enough to pass Llama-3.1's original context (32) in TINY_LLAMA31. */
const TOKENS = Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % 128);

/**
 * Tolerance against the float64 oracle for float32 activations: float32 accumulation over ≤ 2
 * layers of width ≤ 128. With Q80 casts a float32-vs-float64 difference of one last bit can move
 * a value across a Q80 rounding boundary (one quantum, ~1% of the block's max), so Q80 runs are
 * compared bit for bit with the reference-kernel oracle instead.
 */
const F64_TOL = 2e-4;

const cases: { name: string; values: HeaderValues }[] = [
  { name: 'llama with Llama-3.1 rope scaling', values: TINY_LLAMA31 },
  { name: 'qwen3 (q/k norm, FALCON rope)', values: TINY_QWEN3 },
  { name: 'qwen3_moe (router, top-2 of 4 experts)', values: TINY_QWEN3_MOE },
];

describe.each(cases)('$name against an independent forward pass', ({ name, values }) => {
  const variants = [
    { dtype: FloatType.F32, activations: 'f32' as const },
    { dtype: FloatType.Q40, activations: 'f32' as const },
    { dtype: FloatType.Q40, activations: 'q80' as const },
    { dtype: FloatType.Q80, activations: 'q80' as const },
  ];
  for (const { dtype, activations } of variants) {
    for (const threads of [1, 2]) {
      it(`${FloatType[dtype]} weights, ${activations} activations, ${threads} thread(s)`, async () => {
        const path = join(tmp.dir, `${name.replace(/\W+/g, '_')}-${dtype}.m`);
        const model = await writeTinyModel(path, withDtype(values, dtype), { seed: 7, overwrite: true });
        const exact = referenceKernelLogits(path, TOKENS, activations === 'q80');
        const want = activations === 'f32' ? oracleLogits(oracleConfig(path, false), (n) => model.weights.get(n)!, TOKENS) : undefined;
        const engine = new LayerWiseInferenceEngine(path, { threads, activations, batchSize: 16, kernels: 'reference' });
        await engine.initialize();
        try {
          // Prefill in chunks of 16 rows (batched matmuls, causal attention inside a chunk).
          const last = await engine.forward(TOKENS, 0);
          expect(Array.from(last)).toEqual(Array.from(exact[TOKENS.length - 1]!));
          if (want) expect(maxAbsDiff(last, want[TOKENS.length - 1]!)).toBeLessThan(F64_TOL);
          // Decode steps, one token each, reusing the cache written by the prefill above.
          for (const pos of [0, 1, 31, 32, 39]) {
            const logits = await engine.forward([TOKENS[pos]!], pos);
            expect(Array.from(logits), `position ${pos}`).toEqual(Array.from(exact[pos]!));
            if (want) expect(maxAbsDiff(logits, want[pos]!), `position ${pos}`).toBeLessThan(F64_TOL);
          }
        } finally {
          await engine.cleanup();
        }
      });
    }
  }
});

it('the tiny models really exercise what they claim', () => {
  expect(TINY_LLAMA31[HeaderKey.RopeScalingFactor]).not.toBe(1);
  expect(TOKENS.length).toBeGreaterThan(TINY_LLAMA31[HeaderKey.RopeScalingOrigMaxSeqLen]!);
  expect(TINY_QWEN3_MOE[HeaderKey.NActiveExperts]).toBeLessThan(TINY_QWEN3_MOE[HeaderKey.NExperts]!);
});
