import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FloatType, HeaderKey, type HeaderValues } from '@airllm/format';
import { TINY_LLAMA31, TINY_QWEN3, TINY_QWEN3_MOE, withDtype, writeTinyModel } from '@airllm/format/testing';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { REPO, tempDir } from './helpers.js';

/**
 * `--activations q80` against dllama's own output on random-weight Q40 models (fixtures/dllama,
 * see its README): qwen3 (q/k norms, FALCON rope), qwen3_moe (router, top-k, expert sums) and
 * Llama-3.1 rope scaling. All 64 greedy ids and the top-5 logits at every position.
 */
interface Fixture {
  model: { base: 'TINY_QWEN3' | 'TINY_QWEN3_MOE' | 'TINY_LLAMA31'; overrides: Record<string, number>; seed: number; sha256: string };
  token_ids: number[];
  top5_logits: [number, number][][];
}

const DIR = join(REPO, 'packages/engine/test/fixtures/dllama');
const BASES = { TINY_QWEN3, TINY_QWEN3_MOE, TINY_LLAMA31 };
const LOGIT_TOL = 1e-5;
const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe.each(['qwen3', 'qwen3_moe', 'qwen3_moe_8x3', 'llama31'])("%s Q40: dllama's 64 greedy tokens", (name) => {
  const fx = JSON.parse(readFileSync(join(DIR, `${name}_q40.json`), 'utf8')) as Fixture;
  for (const threads of [1, 2]) {
    it(`native kernels, ${threads} thread(s)`, { timeout: 120_000 }, async () => {
      const path = join(tmp.dir, `${name}-${threads}.m`);
      const overrides: HeaderValues = {};
      for (const [k, v] of Object.entries(fx.model.overrides)) overrides[HeaderKey[k as keyof typeof HeaderKey]] = v;
      await writeTinyModel(path, withDtype(BASES[fx.model.base], FloatType.Q40, overrides), { seed: fx.model.seed, overwrite: true });
      expect(createHash('sha256').update(readFileSync(path)).digest('hex'), 'the model dllama ran').toBe(fx.model.sha256);
      const engine = new LayerWiseInferenceEngine(path, { activations: 'q80', threads });
      await engine.initialize();
      try {
        let token = 1;
        for (let pos = 0; pos < fx.token_ids.length; pos++) {
          const logits = await engine.forward([token], pos);
          let best = 0;
          for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
          expect(best, `position ${pos}`).toBe(fx.token_ids[pos]);
          for (const [id, value] of fx.top5_logits[pos]!) {
            if (!(Math.abs(logits[id]! - value) <= LOGIT_TOL)) expect.fail(`position ${pos}, token ${id}: logit ${logits[id]}, dllama ${value}`);
          }
          token = best;
        }
      } finally {
        await engine.cleanup();
      }
    });
  }
});
