import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { FIXTURE_TOKENIZER, FIXTURES, Q40_MODEL } from './helpers.js';

/**
 * `--activations q80` reproduces Distributed-Llama: stories260K Q40 from BOS, greedy, against
 * dllama's own output (its 128 token ids and the five largest logits at every position, printed
 * with %.9g by dllama at commit 8d624a7b, 1 node, 1 thread; see the fixture's `about`).
 */
const reference = JSON.parse(readFileSync(join(FIXTURES, 'dllama_reference_s260_q40.json'), 'utf8')) as {
  prompt_tokens: number[];
  token_ids: number[];
  top5_logits: [number, number][][];
};

/** Logits within this of dllama's: its %.9g printing is exact to ~1e-7 at these magnitudes. */
const LOGIT_TOL = 1e-5;

async function greedyLogits(kernels: 'native' | 'reference', threads: number, steps: number): Promise<{ ids: number[]; logits: Float32Array[] }> {
  const engine = new LayerWiseInferenceEngine(Q40_MODEL, { activations: 'q80', kernels, threads, tokenizerPath: FIXTURE_TOKENIZER });
  await engine.initialize();
  try {
    const ids: number[] = [];
    const logits: Float32Array[] = [];
    let token = reference.prompt_tokens[0]!;
    for (let pos = 0; pos < steps; pos++) {
      const l = Float32Array.from(await engine.forward([token], pos));
      let best = 0;
      for (let i = 1; i < l.length; i++) if (l[i]! > l[best]!) best = i;
      ids.push(best);
      logits.push(l);
      token = best;
    }
    return { ids, logits };
  } finally {
    await engine.cleanup();
  }
}

describe("q80 activations give dllama's numbers (stories260K Q40, BOS only)", () => {
  it('the reference is a BOS-only run of 128 tokens', () => {
    expect(reference.prompt_tokens).toEqual([1]);
    expect(reference.token_ids).toHaveLength(128);
  });
  const cases = [
    { kernels: 'native' as const, threads: 1, steps: 128 },
    { kernels: 'native' as const, threads: 2, steps: 128 },
    { kernels: 'reference' as const, threads: 1, steps: 128 },
    { kernels: 'reference' as const, threads: 2, steps: 128 },
  ];
  for (const { kernels, threads, steps } of cases) {
    it(`${kernels} kernels, ${threads} thread(s): all ${steps} ids, top-5 logits within ${LOGIT_TOL}`, { timeout: 120_000 }, async () => {
      const { ids, logits } = await greedyLogits(kernels, threads, steps);
      expect(ids).toEqual(reference.token_ids.slice(0, steps));
      for (let pos = 0; pos < steps; pos++) {
        for (const [id, value] of reference.top5_logits[pos]!) {
          const got = logits[pos]![id]!;
          if (!(Math.abs(got - value) <= LOGIT_TOL)) expect.fail(`position ${pos}, token ${id}: logit ${got}, dllama ${value}`);
        }
      }
    });
  }
});
