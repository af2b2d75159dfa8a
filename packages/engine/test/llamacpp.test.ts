import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getLlama, LlamaLogLevel, type ControlledEvaluateIndexOutput, type ControlledEvaluateInputItem, type Llama, type Token } from 'node-llama-cpp';
import { Rng } from '@airllm/format/testing';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { tempDir } from './helpers.js';
import { writeKQuantGguf, type KQuantModelShape } from './kquant-gguf.js';

/**
 * The same random-weight Q4_K_M-like GGUF through llama.cpp (node-llama-cpp's prebuilt CPU
 * build) and through airllm in place: next-token logits at each of 64 positions of one
 * teacher-forced token sequence, compared as log-probabilities (logits up to each position's
 * constant, which no prediction depends on).
 */
const POSITIONS = 64;

const SHAPES: KQuantModelShape[] = [
  { arch: 'llama', dim: 256, ff: 768, layers: 4, heads: 4, kvHeads: 2, headDim: 64, vocab: 512, context: 128 },
  { arch: 'qwen3', dim: 256, ff: 512, layers: 4, heads: 8, kvHeads: 2, headDim: 64, vocab: 512, context: 128 },
  { arch: 'qwen2', dim: 256, ff: 768, layers: 4, heads: 4, kvHeads: 2, headDim: 64, vocab: 512, context: 128 },
];
const SEEDS: Record<KQuantModelShape['arch'], number> = { llama: 11, qwen3: 12, qwen2: 13 };

const tmp = tempDir('airllm-llamacpp-');
let llama: Llama;
beforeAll(async () => {
  // Prebuilt binaries only: a test never downloads or compiles llama.cpp.
  llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, progressLogs: false, logLevel: LlamaLogLevel.error, maxThreads: 1 });
}, 60_000);
afterAll(async () => {
  await llama?.dispose();
  tmp.cleanup();
});

/**
 * llama.cpp's next-token distribution after each of `tokens`, as log-probabilities (its logits
 * less each position's log-sum-exp: node-llama-cpp 3.21 hands out probabilities, not logits), by
 * both of its paths: `batch` evaluates all tokens in one call (its prompt path), `decode` one
 * token per call (its generation path, as airllm runs here).
 */
async function llamaCppLogProbs(path: string, tokens: number[], vocab: number): Promise<{ batch: Float32Array[]; decode: Float32Array[] }> {
  const model = await llama.loadModel({ modelPath: path, gpuLayers: 0 });
  try {
    // A float32 KV cache, as airllm keeps (llama.cpp's default F16 cache rounds every k and v).
    // One thread: llama.cpp's threads spin while they wait, and the machine is shared.
    const ctx = await model.createContext({
      contextSize: tokens.length + 16,
      batchSize: tokens.length,
      sequences: 1,
      threads: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: 'F32',
      experimentalKvCacheValueType: 'F32',
    });
    try {
      const seq = ctx.getSequence();
      // Temperature 1 and no top-k/top-p/min-p cut: the probabilities are softmax(logits) over the whole vocabulary.
      const item = (t: number): ControlledEvaluateInputItem => [t as Token, { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }];
      const rows = (out: (ControlledEvaluateIndexOutput | undefined)[]): Float32Array[] =>
        out.map((o, i) => {
          const m = o?.next.probabilities;
          if (m === undefined || m.size !== vocab) throw new Error(`llama.cpp returned ${m?.size ?? 'no'} probabilities at position ${i}, expected ${vocab}`);
          const row = new Float32Array(vocab);
          for (const [id, p] of m) row[id] = Math.log(p);
          return row;
        });
      const batch = rows(await seq.controlledEvaluate(tokens.map(item)));
      await seq.clearHistory();
      const decode: (ControlledEvaluateIndexOutput | undefined)[] = [];
      for (const t of tokens) decode.push((await seq.controlledEvaluate([item(t)]))[0]);
      return { batch, decode: rows(decode) };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

/** log-softmax: logits less their log-sum-exp (what llama.cpp's probabilities give back). */
function logSoftmax(x: Float32Array): Float32Array {
  let max = -Infinity;
  for (const v of x) max = Math.max(max, v);
  let sum = 0;
  for (const v of x) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return x.map((v) => v - lse);
}

/** airllm's logits for the same positions, token by token (decode steps), the GGUF read in place. */
async function airllmLogits(path: string, tokens: number[]): Promise<Float32Array[]> {
  const engine = new LayerWiseInferenceEngine(path, { threads: 2, maxSeqLen: tokens.length });
  await engine.initialize();
  try {
    const rows: Float32Array[] = [];
    for (let p = 0; p < tokens.length; p++) rows.push(await engine.forward([tokens[p]!], p));
    return rows;
  } finally {
    await engine.cleanup();
  }
}

const argmax = (a: Float32Array): number => a.reduce((best, v, i) => (v > a[best]! ? i : best), 0);

/** Positions whose top-1 token agrees, the largest |Δ| of the log-probabilities, and their largest per-position standard deviation (of b: the logits' spread). */
function compare(a: Float32Array[], b: Float32Array[]): { top1: number; maxDiff: number; spread: number; equal: number } {
  let top1 = 0;
  let maxDiff = 0;
  let spread = 0;
  let equal = 0;
  a.forEach((x, p) => {
    const y = b[p]!;
    if (argmax(x) === argmax(y)) top1++;
    // Equal up to float32 rounding: |Δ| < 1e-3 on every token.
    if (x.every((v, i) => Math.abs(v - y[i]!) < 1e-3)) equal++;
    let mean = 0;
    for (let i = 0; i < y.length; i++) mean += y[i]! / y.length;
    let sq = 0;
    for (let i = 0; i < y.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(x[i]! - y[i]!));
      sq += (y[i]! - mean) ** 2;
    }
    spread = Math.max(spread, Math.sqrt(sq / y.length));
  });
  return { top1, maxDiff, spread, equal };
}

describe('random-weight Q4_K_M-like GGUFs: airllm in place against llama.cpp on the same file', () => {
  for (const shape of SHAPES) {
    it(`${shape.arch}: next-token logits under teacher forcing over ${POSITIONS} positions`, async () => {
      const path = join(tmp.dir, `${shape.arch}.gguf`);
      const { types } = writeKQuantGguf(path, shape, SEEDS[shape.arch]);
      // The file mixes both K-quants, as a Q4_K_M file does.
      expect(types.Q4_K).toBeGreaterThan(0);
      expect(types.Q6_K).toBeGreaterThan(0);
      const rng = new Rng(5, 1);
      const tokens = [1, ...Array.from({ length: POSITIONS - 1 }, () => 3 + (rng.nextU32() % (shape.vocab - 3)))];
      const t0 = performance.now();
      const { batch, decode } = await llamaCppLogProbs(path, tokens, shape.vocab);
      const t1 = performance.now();
      const ours = (await airllmLogits(path, tokens)).map(logSoftmax);
      const t2 = performance.now();
      const vsDecode = compare(ours, decode);
      const vsBatch = compare(ours, batch);
      // llama.cpp against itself: its prompt path and its generation path do not give the same bits.
      const self = compare(batch, decode);
      const f = (c: { top1: number; maxDiff: number; equal: number }): string => `top-1 ${c.top1}/${POSITIONS}, max |Δlogit| (shift removed) ${c.maxDiff.toFixed(4)}, equal within 1e-3 at ${c.equal}/${POSITIONS}`;
      console.log(
        `${shape.arch} (${Object.entries(types).map(([k, v]) => `${v} ${k}`).join(', ')}; logits' standard deviation up to ${vsDecode.spread.toFixed(3)}): ` +
          `airllm vs llama.cpp decode ${f(vsDecode)}; vs llama.cpp batch ${f(vsBatch)}; llama.cpp batch vs its decode ${f(self)} (llama.cpp ${((t1 - t0) / 1000).toFixed(1)} s, airllm ${((t2 - t1) / 1000).toFixed(1)} s)`,
      );
      // airllm runs these positions token by token: llama.cpp's generation path is its counterpart.
      expect(vsDecode.top1 / POSITIONS).toBeGreaterThanOrEqual(0.98);
      expect(vsDecode.maxDiff).toBeLessThan(0.1 * vsDecode.spread);
      // Same arithmetic: at most positions airllm's numbers are one of llama.cpp's paths' own up to
      // float32 rounding. Where they part (as llama.cpp's two paths part from each other), one
      // rounding decision came out the other way and the difference runs on through the KV cache.
      expect(Math.max(vsDecode.equal, vsBatch.equal)).toBeGreaterThanOrEqual(0.75 * POSITIONS);
    }, 60_000);
  }
});
