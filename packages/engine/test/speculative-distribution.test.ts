import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readModelFile } from '@airllm/format';
import { LayerWiseInferenceEngine, lookup, Sampler, verifyDraft, type Draft, type GenerateOptions } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, tempDir } from './helpers.js';

/**
 * Seeded sampling with a draft must follow the model's own distribution. The reference is
 * computed here, independently of the sampler: softmax(logits / T) over the top K in float64,
 * from the model's logits at fixed positions; samples over many fixed seeds are compared with a
 * chi-square test at α = 1e-4 (deterministic: the seeds are fixed). The same test run on two
 * broken acceptance rules fails, which shows it can.
 *
 * The draft model is stories260K with its final norm weights scaled by 2.5 (its logits are the
 * model's × 2.5: the same top K, sharper), so drafts are often accepted and often rejected; the
 * Q40 file is too close to the model to exercise rejections.
 */
const T = 2.5;
const K = 4;
const SAMPLING = { temperature: T, topK: K } as const;
/** Text that repeats, so prompt lookup has something to propose (" b" → "all", " r" → "ed"). */
const PROMPT = 'Tom had a big red ball. Tom had a big red';
const DRAFT_SCALE = 2.5;
/** Seeds of the end-to-end runs. */
const N = 2500;

/** The reference: softmax(logits / T) over the K largest logits, float64. */
function targetDist(logits: Float32Array, vocab: number): Map<number, number> {
  const ids = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b).slice(0, K);
  const max = logits[ids[0]!]!;
  const w = ids.map((i) => Math.exp((logits[i]! - max) / T));
  const sum = w.reduce((a, b) => a + b, 0);
  return new Map(ids.map((id, j) => [id, w[j]! / sum]));
}

/** Well-mixed 64-bit seeds (splitmix64 of 1, 2, …), so neighbouring runs share no structure. */
function seeds(n: number): bigint[] {
  const out: bigint[] = [];
  let x = 0x1234_5678n;
  const M = (1n << 64n) - 1n;
  for (let i = 0; i < n; i++) {
    x = (x + 0x9e3779b97f4a7c15n) & M;
    let z = x;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    out.push(z ^ (z >> 31n));
  }
  return out;
}

/**
 * Pearson's chi-square of observed counts against expected probabilities (cells expected below
 * 5 pooled, outcomes outside the support counted against a cell of probability 0), and whether it
 * stays under the α = 1e-4 critical value (Wilson–Hilferty).
 */
function chiSquare(counts: Map<string, number>, expected: Map<string, number>, n: number): { stat: number; df: number; critical: number; ok: boolean } {
  let stat = 0;
  let cells = 0;
  let pooledE = 0;
  let pooledO = 0;
  for (const [key, p] of expected) {
    const e = p * n;
    const o = counts.get(key) ?? 0;
    if (e < 5) {
      pooledE += e;
      pooledO += o;
      continue;
    }
    stat += (o - e) ** 2 / e;
    cells++;
  }
  const outside = [...counts].filter(([k]) => !expected.has(k)).reduce((a, [, c]) => a + c, 0);
  if (outside > 0) return { stat: Infinity, df: cells, critical: 0, ok: false };
  if (pooledE > 0) {
    stat += (pooledO - pooledE) ** 2 / pooledE;
    cells++;
  }
  const df = cells - 1;
  const z = 3.719; // one-sided normal quantile of 1 − 1e-4
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { stat, df, critical, ok: stat < critical };
}

let engine: LayerWiseInferenceEngine;
let draftModel: LayerWiseInferenceEngine;
let vocab = 0;
let prompt: number[] = [];
const tmp = tempDir();

/** A copy of the F32 model whose final norm weights are scaled by DRAFT_SCALE. */
function scaledModel(): string {
  const path = join(tmp.dir, 'scaled.m');
  const bytes = readFileSync(F32_MODEL);
  const t = readModelFile(F32_MODEL).layout.finalNorm;
  const w = new DataView(bytes.buffer, bytes.byteOffset + t.offset, t.byteLength);
  for (let i = 0; i < t.byteLength; i += 4) w.setFloat32(i, w.getFloat32(i, true) * DRAFT_SCALE, true);
  writeFileSync(path, bytes);
  return path;
}

beforeAll(async () => {
  engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 64, threads: 1 });
  draftModel = new LayerWiseInferenceEngine(scaledModel(), { tokenizerPath: FIXTURE_TOKENIZER, maxSeqLen: 64, threads: 1 });
  await engine.initialize();
  await draftModel.initialize();
  vocab = engine.config.vocabSize;
  prompt = engine.encode(PROMPT);
});
afterAll(async () => {
  await engine.cleanup();
  await draftModel.cleanup();
  tmp.cleanup();
});

/** Every row's logits of `tokens` from position 0 (one item with allLogits). */
async function rowLogits(tokens: number[]): Promise<Float32Array[]> {
  const [all] = await engine.forwardBatch([{ slot: 0, pos: 0, tokens, allLogits: true }]);
  return tokens.map((_, i) => all!.subarray(i * vocab, (i + 1) * vocab));
}

describe('sampling with a draft follows the model’s distribution (stories260K, T = 1, top-k 4)', () => {
  /** The exact distributions of the first two and first three generated tokens, enumerated branch by branch. */
  async function exactJoints(): Promise<{ two: Map<string, number>; three: Map<string, number> }> {
    const two = new Map<string, number>();
    const three = new Map<string, number>();
    const d1 = targetDist((await rowLogits(prompt)).at(-1)!, vocab);
    for (const [t1, p1] of d1) {
      const d2 = targetDist((await rowLogits([...prompt, t1])).at(-1)!, vocab);
      for (const [t2, p2] of d2) {
        two.set(`${t1},${t2}`, p1 * p2);
        const d3 = targetDist((await rowLogits([...prompt, t1, t2])).at(-1)!, vocab);
        for (const [t3, p3] of d3) three.set(`${t1},${t2},${t3}`, p1 * p2 * p3);
      }
    }
    return { two, three };
  }

  for (const which of ['ngram', 'draft model'] as const) {
    it(`first two and three tokens over ${N} seeds, --draft ${which}`, async () => {
      const exact = await exactJoints();
      const two = new Map<string, number>();
      const three = new Map<string, number>();
      let drafted = 0;
      let accepted = 0;
      const list = seeds(N);
      for (const seed of list) {
        const options: GenerateOptions = { ...SAMPLING, seed, maxTokens: 3, stopAtEos: false, draft: which === 'ngram' ? 'ngram' : draftModel, draftMax: 4 };
        const gen = engine.generate(prompt, options);
        let r = await gen.next();
        while (!r.done) r = await gen.next();
        const t = r.value.tokens;
        const k2 = t.slice(0, 2).join(',');
        const k3 = t.join(',');
        two.set(k2, (two.get(k2) ?? 0) + 1);
        three.set(k3, (three.get(k3) ?? 0) + 1);
        drafted += r.value.stats.draftedTokens;
        accepted += r.value.stats.acceptedTokens;
      }
      // The rule was exercised both ways: drafts accepted and drafts rejected.
      expect(accepted).toBeGreaterThan(list.length / 8);
      expect(drafted - accepted).toBeGreaterThan(list.length / 8);
      for (const [counts, reference] of [[two, exact.two], [three, exact.three]] as const) {
        const chi = chiSquare(counts, reference, list.length);
        expect(chi.df).toBeGreaterThan(5);
        expect(chi.stat, JSON.stringify(chi)).toBeLessThan(chi.critical);
      }
    });
  }
});

type Rule = (sampler: Sampler, logits: Float32Array, draft: Draft) => number;

/** Broken on purpose: every draft token accepted. */
const acceptAll: Rule = (_s, _l, draft) => draft.tokens[0]!;
/** Broken on purpose: a rejected token replaced by a draw from p instead of norm(max(0, p − q)). */
const resampleFromP: Rule = (sampler, logits, draft) => {
  const p = sampler.distribution(logits.subarray(0, vocab));
  const d = draft.tokens[0]!;
  const qd = draft.probs ? draft.probs[0]![d]! : 1;
  return sampler.nextF32() * qd < p[d]! ? d : sampler.pick(p);
};
const realRule: Rule = (sampler, logits, draft) => verifyDraft(sampler, logits, draft, vocab).tokens[0]!;

describe('the acceptance rule at a fixed position, and two broken ones (8000 seeds)', () => {
  /**
   * The first token a verification pass emits, over many seeds, against the model's
   * distribution at that position. `q` = the draft's distribution (the same logits × DRAFT_SCALE,
   * as the flattened draft model gives); absent = prompt lookup.
   */
  async function firstTokenTest(rule: Rule, withQ: boolean): Promise<ReturnType<typeof chiSquare>> {
    const rows = await rowLogits(prompt);
    const last = rows.at(-1)!;
    const p = targetDist(last, vocab);
    const proposal = lookup(prompt, 1, 3);
    expect(proposal.length).toBe(1);
    const logits = new Float32Array(2 * vocab);
    logits.set(last, 0);
    logits.set(last, vocab); // the bonus row: not looked at (only the first emitted token is)
    const counts = new Map<string, number>();
    const list = seeds(8000);
    const qRow = last.map((x) => x * DRAFT_SCALE);
    for (const seed of list) {
      const sampler = new Sampler(vocab, { ...SAMPLING, seed });
      let draft: Draft = { tokens: proposal };
      if (withQ) {
        const q = sampler.distribution(qRow);
        draft = { tokens: [sampler.pick(q)], probs: [q] };
      }
      const t = String(rule(sampler, logits, draft));
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    return chiSquare(counts, new Map([...p].map(([k, v]) => [String(k), v])), list.length);
  }

  for (const withQ of [false, true]) {
    const what = withQ ? 'a sampled draft (q)' : 'a deterministic draft (prompt lookup)';
    it(`${what}: the real rule passes, accept-all and resample-from-p fail`, async () => {
      const real = await firstTokenTest(realRule, withQ);
      expect(real.ok, JSON.stringify(real)).toBe(true);
      expect((await firstTokenTest(acceptAll, withQ)).ok).toBe(false);
      const broken = await firstTokenTest(resampleFromP, withQ);
      expect(broken.ok, JSON.stringify(broken)).toBe(false);
    });
  }
});
