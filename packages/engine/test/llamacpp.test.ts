import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getLlama, LlamaLogLevel, type Llama, type Token } from 'node-llama-cpp';
import { Rng } from '@airllm/format/testing';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { tempDir } from './helpers.js';
import { writeKQuantGguf, type KQuantModelShape } from './kquant-gguf.js';

/**
 * The same random-weight Q4_K_M-like GGUF through llama.cpp (node-llama-cpp's prebuilt CPU
 * build) and through airllm in place: next-token logits at each of 64 positions of one
 * teacher-forced token sequence.
 */
const POSITIONS = 64;

const SHAPES: KQuantModelShape[] = [
  { arch: 'llama', dim: 256, ff: 768, layers: 4, heads: 4, kvHeads: 2, headDim: 64, vocab: 512, context: 128 },
  { arch: 'qwen3', dim: 256, ff: 512, layers: 4, heads: 8, kvHeads: 2, headDim: 64, vocab: 512, context: 128 },
];

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
 * llama.cpp's logits for the next token after each of `tokens`, by both of its paths: `batch`
 * evaluates them all in one call (its prompt path), `decode` one token per call (its generation
 * path, as airllm runs here).
 */
async function llamaCppLogits(path: string, tokens: number[], vocab: number): Promise<{ batch: Float32Array[]; decode: Float32Array[] }> {
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
      const item = (t: number): [Token, { generateNext: { logits: true } }] => [t as Token, { generateNext: { logits: true } }];
      const rows = (out: ({ next: { logits?: Map<Token, number> } } | undefined)[]): Float32Array[] =>
        out.map((o, i) => {
          const m = o?.next.logits;
          if (m === undefined) throw new Error(`llama.cpp returned no logits at position ${i}`);
          const row = new Float32Array(vocab);
          for (const [id, v] of m) row[id] = v;
          return row;
        });
      const batch = rows(await seq.controlledEvaluate(tokens.map(item)));
      await seq.clearHistory();
      const decode = [];
      for (const t of tokens) decode.push((await seq.controlledEvaluate([item(t)]))[0]);
      return { batch, decode: rows(decode) };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
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

/** Positions whose top-1 token agrees, the largest |Δlogit|, and the logits' largest per-position standard deviation (of b). */
function compare(a: Float32Array[], b: Float32Array[]): { top1: number; maxDiff: number; spread: number } {
  let top1 = 0;
  let maxDiff = 0;
  let spread = 0;
  a.forEach((x, p) => {
    const y = b[p]!;
    if (argmax(x) === argmax(y)) top1++;
    let mean = 0;
    for (let i = 0; i < y.length; i++) mean += y[i]! / y.length;
    let sq = 0;
    for (let i = 0; i < y.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(x[i]! - y[i]!));
      sq += (y[i]! - mean) ** 2;
    }
    spread = Math.max(spread, Math.sqrt(sq / y.length));
  });
  return { top1, maxDiff, spread };
}

describe('random-weight Q4_K_M-like GGUFs: airllm in place against llama.cpp on the same file', () => {
  for (const shape of SHAPES) {
    it(`${shape.arch}: next-token logits under teacher forcing over ${POSITIONS} positions`, async () => {
      const path = join(tmp.dir, `${shape.arch}.gguf`);
      const { types } = writeKQuantGguf(path, shape, shape.arch === 'llama' ? 11 : 12);
      // The file mixes both K-quants, as a Q4_K_M file does.
      expect(types.Q4_K).toBeGreaterThan(0);
      expect(types.Q6_K).toBeGreaterThan(0);
      const rng = new Rng(5, 1);
      const tokens = [1, ...Array.from({ length: POSITIONS - 1 }, () => 3 + (rng.nextU32() % (shape.vocab - 3)))];
      const t0 = performance.now();
      const { batch, decode } = await llamaCppLogits(path, tokens, shape.vocab);
      const t1 = performance.now();
      const ours = await airllmLogits(path, tokens);
      const t2 = performance.now();
      const vsDecode = compare(ours, decode);
      const vsBatch = compare(ours, batch);
      // llama.cpp against itself: its prompt path and its generation path do not give the same bits.
      const self = compare(batch, decode);
      const f = (c: { top1: number; maxDiff: number }): string => `top-1 ${c.top1}/${POSITIONS}, max |Δlogit| ${c.maxDiff.toFixed(4)}`;
      console.log(
        `${shape.arch} (${Object.entries(types).map(([k, v]) => `${v} ${k}`).join(', ')}; logits' standard deviation up to ${vsDecode.spread.toFixed(3)}): ` +
          `airllm vs llama.cpp decode ${f(vsDecode)}; vs llama.cpp batch ${f(vsBatch)}; llama.cpp batch vs its decode ${f(self)} (llama.cpp ${((t1 - t0) / 1000).toFixed(1)} s, airllm ${((t2 - t1) / 1000).toFixed(1)} s)`,
      );
      // airllm runs these positions token by token: llama.cpp's generation path is its counterpart.
      expect(vsDecode.top1 / POSITIONS).toBeGreaterThanOrEqual(0.98);
      expect(vsDecode.maxDiff).toBeLessThan(0.1 * vsDecode.spread);
      // No farther from llama.cpp than llama.cpp's two paths are from each other (plus a float32 margin).
      expect(vsDecode.maxDiff).toBeLessThanOrEqual(self.maxDiff + 0.02);
    }, 60_000);
  }
});
