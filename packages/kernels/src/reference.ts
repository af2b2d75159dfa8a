import { DTYPES, f16Table32, FloatType, Q40_BLOCK_BYTES, Q80_BLOCK_BYTES, Q_BLOCK, quantizeQ80 as quantizeQ80Row } from '@airllm/format';
import type { KernelBackend } from './backend.js';
import { dllamaReferenceOps } from './dllama.js';
import { fmaf } from './libm.js';

/**
 * The reference backend: plain TypeScript that reads like the math and is the oracle for
 * every other backend. Arithmetic is float32 step by step (`Math.fround` after every operation)
 * in llama2.c's order — sequential sums, `expf`-style exponentials — so an F32 model reproduces
 * llama2.c's numbers, not just approximately the same ones.
 */

const fround = Math.fround;

/** Scratch for one decoded weight row, grown on demand (never per call once warm). */
let rowScratch: Float32Array = new Float32Array(0);
function scratchRow(n: number): Float32Array {
  if (rowScratch.length < n) rowScratch = new Float32Array(n);
  return rowScratch;
}

/**
 * Decode weight row r (nIn values) of a matrix of dtype wType into dst, with format's reference
 * codecs (each value is the f16 scale times the quant, rounded once to float32, as llama2.c and
 * dllama compute it; F32 rows are copied bytewise, so they need no alignment).
 */
function decodeRow(wType: FloatType, w: Uint8Array, r: number, nIn: number, dst: Float32Array): void {
  const info = DTYPES[wType];
  if (info === undefined) throw new RangeError(`unsupported weight type ${wType}`);
  const rowBytes = (nIn / info.blockSize) * info.bytesPerBlock;
  info.dequantize(w.subarray(r * rowBytes, (r + 1) * rowBytes), dst.length === nIn ? dst : dst.subarray(0, nIn));
}

function matmul(
  wType: FloatType,
  out: Float32Array,
  x: Float32Array,
  w: Uint8Array,
  nIn: number,
  nOut: number,
  batch: number,
  r0: number,
  r1: number,
): void {
  const row = scratchRow(nIn);
  for (let r = r0; r < r1; r++) {
    decodeRow(wType, w, r, nIn, row);
    for (let b = 0; b < batch; b++) {
      const xo = b * nIn;
      let sum = 0;
      for (let i = 0; i < nIn; i++) sum = fround(sum + fround(row[i]! * x[xo + i]!));
      out[b * nOut + r] = sum;
    }
  }
}

function matmulQ80(
  wType: FloatType,
  out: Float32Array,
  xq: Uint8Array,
  w: Uint8Array,
  nIn: number,
  nOut: number,
  batch: number,
  r0: number,
  r1: number,
): void {
  if (wType !== FloatType.Q40 && wType !== FloatType.Q80) {
    throw new RangeError(`matmulQ80 needs Q40 or Q80 weights, got ${wType}`);
  }
  const t = f16Table32();
  const nb = nIn / Q_BLOCK;
  const wBlock = wType === FloatType.Q40 ? Q40_BLOCK_BYTES : Q80_BLOCK_BYTES;
  for (let r = r0; r < r1; r++) {
    for (let b = 0; b < batch; b++) {
      let sum = 0;
      for (let k = 0; k < nb; k++) {
        const wo = (r * nb + k) * wBlock;
        const xo = (b * nb + k) * Q80_BLOCK_BYTES;
        let isum = 0;
        if (wType === FloatType.Q40) {
          for (let j = 0; j < 16; j++) {
            const q = w[wo + 2 + j]!;
            isum += ((q & 0x0f) - 8) * ((xq[xo + 2 + j]! << 24) >> 24);
            isum += ((q >>> 4) - 8) * ((xq[xo + 2 + j + 16]! << 24) >> 24);
          }
        } else {
          for (let j = 0; j < 32; j++) isum += ((w[wo + 2 + j]! << 24) >> 24) * ((xq[xo + 2 + j]! << 24) >> 24);
        }
        const dw = t[w[wo]! | (w[wo + 1]! << 8)]!;
        const dx = t[xq[xo]! | (xq[xo + 1]! << 8)]!;
        sum = fmaf(isum, fround(dw * dx), sum);
      }
      out[b * nOut + r] = sum;
    }
  }
}

function quantizeQ80(out: Uint8Array, x: Float32Array, n: number, r0: number, r1: number): void {
  const rowBytes = (n / Q_BLOCK) * Q80_BLOCK_BYTES;
  quantizeQ80Row(x.subarray(r0 * n, r1 * n), out.subarray(r0 * rowBytes, r1 * rowBytes));
}

function dequantizeQ80(out: Float32Array, xq: Uint8Array, n: number, r0: number, r1: number): void {
  const rowBytes = (n / Q_BLOCK) * Q80_BLOCK_BYTES;
  DTYPES[FloatType.Q80].dequantize(xq.subarray(r0 * rowBytes, r1 * rowBytes), out.subarray(r0 * n, r1 * n));
}

function rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, n: number, eps: number, r0: number, r1: number): void {
  for (let r = r0; r < r1; r++) {
    const o = r * n;
    let ss = 0;
    for (let i = 0; i < n; i++) ss = fround(ss + fround(x[o + i]! * x[o + i]!));
    ss = fround(ss / n);
    ss = fround(ss + fround(eps));
    const inv = fround(1 / fround(Math.sqrt(ss)));
    for (let i = 0; i < n; i++) out[o + i] = fround(weight[i]! * fround(inv * x[o + i]!));
  }
}

function rope(
  x: Float32Array,
  nHeads: number,
  headDim: number,
  pos0: number,
  batch: number,
  freqs: Float32Array,
  halfSplit: boolean,
  h0: number,
  h1: number,
): void {
  const half = headDim / 2;
  const width = nHeads * headDim;
  for (let b = 0; b < batch; b++) {
    const pos = pos0 + b;
    for (let h = h0; h < h1; h++) {
      const base = b * width + h * headDim;
      for (let j = 0; j < half; j++) {
        const val = fround(pos * freqs[j]!);
        const fcr = fround(Math.cos(val));
        const fci = fround(Math.sin(val));
        const i0 = halfSplit ? base + j : base + 2 * j;
        const i1 = halfSplit ? base + j + half : base + 2 * j + 1;
        const v0 = x[i0]!;
        const v1 = x[i1]!;
        x[i0] = fround(fround(v0 * fcr) - fround(v1 * fci));
        x[i1] = fround(fround(v0 * fci) + fround(v1 * fcr));
      }
    }
  }
}

function softmaxRow(x: Float32Array, o: number, n: number): void {
  let max = x[o]!;
  for (let i = 1; i < n; i++) if (x[o + i]! > max) max = x[o + i]!;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = fround(Math.exp(fround(x[o + i]! - max)));
    x[o + i] = e;
    sum = fround(sum + e);
  }
  for (let i = 0; i < n; i++) x[o + i] = fround(x[o + i]! / sum);
}

function softmax(x: Float32Array, n: number, r0: number, r1: number): void {
  for (let r = r0; r < r1; r++) softmaxRow(x, r * n, n);
}

function attention(
  out: Float32Array,
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  att: Float32Array,
  nHeads: number,
  nKvHeads: number,
  headDim: number,
  pos0: number,
  batch: number,
  h0: number,
  h1: number,
): void {
  const kvDim = nKvHeads * headDim;
  const qDim = nHeads * headDim;
  const group = nHeads / nKvHeads;
  const scale = fround(Math.sqrt(headDim));
  for (let b = 0; b < batch; b++) {
    const pos = pos0 + b;
    for (let h = h0; h < h1; h++) {
      const qo = b * qDim + h * headDim;
      const kvo = Math.floor(h / group) * headDim;
      for (let t = 0; t <= pos; t++) {
        const ko = t * kvDim + kvo;
        let score = 0;
        for (let i = 0; i < headDim; i++) score = fround(score + fround(q[qo + i]! * kCache[ko + i]!));
        att[t] = fround(score / scale);
      }
      softmaxRow(att, 0, pos + 1);
      const oo = b * qDim + h * headDim;
      for (let i = 0; i < headDim; i++) out[oo + i] = 0;
      for (let t = 0; t <= pos; t++) {
        const vo = t * kvDim + kvo;
        const a = att[t]!;
        for (let i = 0; i < headDim; i++) out[oo + i] = fround(out[oo + i]! + fround(a * vCache[vo + i]!));
      }
    }
  }
}

function swiglu(out: Float32Array, gate: Float32Array, up: Float32Array, i0: number, i1: number): void {
  for (let i = i0; i < i1; i++) {
    const g = gate[i]!;
    const silu = fround(g * fround(1 / fround(1 + fround(Math.exp(-g)))));
    out[i] = fround(silu * up[i]!);
  }
}

/** The scale is a float32 kernel argument: it is rounded to float32 before use. */
function addScaled(out: Float32Array, x: Float32Array, scale: number, i0: number, i1: number): void {
  const s = fround(scale);
  if (s === 1) for (let i = i0; i < i1; i++) out[i] = fround(out[i]! + x[i]!);
  else for (let i = i0; i < i1; i++) out[i] = fround(out[i]! + fround(x[i]! * s));
}

function argmax(x: Float32Array, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

function moeRoute(
  experts: Int32Array,
  weights: Float32Array,
  logits: Float32Array,
  nExperts: number,
  k: number,
  r0: number,
  r1: number,
): void {
  for (let r = r0; r < r1; r++) {
    const o = r * nExperts;
    softmaxRow(logits, o, nExperts);
    // Selection by repeated maximum keeps the lower index first among equal probabilities.
    let total = 0;
    for (let j = 0; j < k; j++) {
      let best = -1;
      for (let e = 0; e < nExperts; e++) {
        let taken = false;
        for (let i = 0; i < j; i++) if (experts[r * k + i] === e) taken = true;
        if (!taken && (best < 0 || logits[o + e]! > logits[o + best]!)) best = e;
      }
      experts[r * k + j] = best;
      weights[r * k + j] = logits[o + best]!;
      total = fround(total + logits[o + best]!);
    }
    for (let j = 0; j < k; j++) weights[r * k + j] = fround(weights[r * k + j]! / total);
  }
}

export const referenceBackend: KernelBackend = Object.freeze({
  name: 'reference',
  features: Object.freeze([]) as readonly string[],
  matmul,
  matmulQ80,
  quantizeQ80,
  dequantizeQ80,
  rmsnorm,
  rope,
  attention,
  softmax,
  swiglu,
  addScaled,
  argmax,
  moeRoute,
  ...dllamaReferenceOps,
});

