import { f16Table32, FloatType, Q80_BLOCK_BYTES, Q_BLOCK, quantizeQ80 } from '@airllm/format';
import type { KernelBackend } from './backend.js';
import { cosf, expf, fmaf, sinf } from './libm.js';

/**
 * Distributed-Llama's own arithmetic, for `--activations q80` (FORMAT.md §e): the reference
 * versions of the `…Dllama` ops and the fused Q80 ops of KernelBackend.
 *
 * dllama (commit 8d624a7b, built for x86-64 with `-O3 -march=native`, one thread) computes:
 * - sums of squares (RMSNorm), attention scores and F32 matmuls (the MoE router) in 8 lanes of
 *   FMAs over groups of 8 elements, then adds the lanes as ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7));
 * - exp in softmax and SiLU with a float32 polynomial for every full group of 8 elements and the C
 *   library's expf for the elements left over;
 * - SiLU as x / (1 + e^-x) (the polynomial's last scaling fused with the + 1), times the up
 *   projection in a separate rounding;
 * - attention outputs accumulated over positions with FMA;
 * - FALCON rope (qwen3) with FMA, LLAMA rope without; the angles' cos and sin from the C
 *   library's cosf and sinf;
 * - the residual merge of a Q80-cast result as x = fma(q, f16(d), x).
 * Where dllama requires a length to be a multiple of 8 and we do not, the elements past the last
 * group of 8 are added after the lanes, one FMA each, in order (our choice; dllama would abort).
 */

const fround = Math.fround;

// ---- lane helpers ----------------------------------------------------------------------------

const lanes = new Float64Array(8);

/** dllama's horizontal sum of 8 float32 lanes (AVX2: high half + low half, then pairs). */
function hsum8(l: Float64Array): number {
  return fround(fround(fround(l[0]! + l[4]!) + fround(l[2]! + l[6]!)) + fround(fround(l[1]! + l[5]!) + fround(l[3]! + l[7]!)));
}

/** Σ a[i]·b[i] over n elements: 8 FMA lanes, their horizontal sum, then the tail one FMA each. */
function dot8(a: ArrayLike<number>, ao: number, b: ArrayLike<number>, bo: number, n: number): number {
  const n8 = n - (n % 8);
  lanes.fill(0);
  for (let i = 0; i < n8; i += 8) for (let j = 0; j < 8; j++) lanes[j] = fmaf(a[ao + i + j]!, b[bo + i + j]!, lanes[j]!);
  let s = hsum8(lanes);
  for (let i = n8; i < n; i++) s = fmaf(a[ao + i]!, b[bo + i]!, s);
  return s;
}

// ---- dllama's vectorised exp -------------------------------------------------------------------

const LOG2E = fround(1.4426950408889634);
const P1 = fround(0.6931471805599453);
const P2 = fround(0.2402265069591007);
const P3 = fround(0.05550410866482158);
const P4 = fround(0.009618129107628477);

/** 2^n of the last expPoly call (0 when n = -127, which the exponent bits make of it). */
let polyScale = 0;

/**
 * dllama's AVX2 exp without its last multiplication: x clamped to [-88, 88], y = x·log2(e)
 * rounded, n = y rounded to the nearest integer (ties to even), f = y − n, a quartic in f by
 * FMAs. Returns the polynomial p; e^x ≈ p · polyScale.
 */
function expPoly(x: number): number {
  x = x > -88 ? x : -88;
  x = x < 88 ? x : 88;
  const y = fround(x * LOG2E);
  let n = Math.round(y);
  if (n - y === 0.5 && (n & 1) !== 0) n -= 1; // Math.round rounds halves up; the CPU to even
  const f = fround(y - n);
  let p = fmaf(P4, f, P3);
  p = fmaf(p, f, P2);
  p = fmaf(p, f, P1);
  p = fmaf(f, p, 1);
  polyScale = n === -127 ? 0 : 2 ** n;
  return p;
}

// ---- row ops ---------------------------------------------------------------------------------

function softmaxRow(x: Float32Array, o: number, n: number): void {
  if (n === 0) return;
  const n8 = n - (n % 8);
  let max: number;
  let i: number;
  if (n8 >= 8) {
    for (let j = 0; j < 8; j++) lanes[j] = x[o + j]!;
    for (i = 8; i < n8; i += 8) for (let j = 0; j < 8; j++) lanes[j] = lanes[j]! > x[o + i + j]! ? lanes[j]! : x[o + i + j]!;
    max = Math.max(Math.max(lanes[0]!, lanes[4]!), Math.max(lanes[1]!, lanes[5]!), Math.max(lanes[2]!, lanes[6]!), Math.max(lanes[3]!, lanes[7]!));
  } else {
    max = x[o]!;
    i = 1;
  }
  for (; i < n; i++) if (x[o + i]! > max) max = x[o + i]!;
  lanes.fill(0);
  for (i = 0; i < n8; i += 8) {
    for (let j = 0; j < 8; j++) {
      const p = expPoly(fround(x[o + i + j]! - max));
      const e = fround(p * polyScale);
      x[o + i + j] = e;
      lanes[j] = fround(lanes[j]! + e);
    }
  }
  let sum = hsum8(lanes);
  for (; i < n; i++) {
    const e = expf(fround(x[o + i]! - max));
    x[o + i] = e;
    sum = fround(sum + e);
  }
  if (sum === 0) sum = fround(0.000001);
  const inv = fround(1 / sum);
  for (i = 0; i < n; i++) x[o + i] = fround(x[o + i]! * inv);
}

function softmaxDllama(x: Float32Array, n: number, r0: number, r1: number): void {
  for (let r = r0; r < r1; r++) softmaxRow(x, r * n, n);
}

function rmsnormRow(out: Float32Array, x: Float32Array, weight: Float32Array, o: number, n: number, eps: number): void {
  let ss = dot8(x, o, x, o, n);
  ss = fround(ss / n);
  ss = fround(ss + fround(eps));
  const inv = fround(1 / fround(Math.sqrt(ss)));
  for (let i = 0; i < n; i++) out[o + i] = fround(fround(x[o + i]! * inv) * weight[i]!);
}

function rmsnormDllama(out: Float32Array, x: Float32Array, weight: Float32Array, n: number, eps: number, r0: number, r1: number): void {
  for (let r = r0; r < r1; r++) rmsnormRow(out, x, weight, r * n, n, eps);
}

function attentionDllama(
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
  const root = fround(Math.sqrt(headDim));
  for (let b = 0; b < batch; b++) {
    const pos = pos0 + b;
    for (let h = h0; h < h1; h++) {
      const qo = b * qDim + h * headDim;
      const kvo = Math.floor(h / group) * headDim;
      for (let t = 0; t <= pos; t++) att[t] = fround(dot8(q, qo, kCache, t * kvDim + kvo, headDim) / root);
      softmaxRow(att, 0, pos + 1);
      // out may alias q: q's head h has been fully read above
      for (let i = 0; i < headDim; i++) out[qo + i] = 0;
      for (let t = 0; t <= pos; t++) {
        const vo = t * kvDim + kvo;
        const a = att[t]!;
        for (let i = 0; i < headDim; i++) out[qo + i] = fmaf(a, vCache[vo + i]!, out[qo + i]!);
      }
    }
  }
}

function swigluDllama(out: Float32Array, gate: Float32Array, up: Float32Array, i0: number, i1: number): void {
  const end8 = i1 - ((i1 - i0) % 8);
  let i = i0;
  for (; i < end8; i++) {
    const g = gate[i]!;
    const p = expPoly(fround(0 - g));
    out[i] = fround(fround(g / fmaf(p, polyScale, 1)) * up[i]!);
  }
  for (; i < i1; i++) {
    const g = gate[i]!;
    out[i] = fround(fround(g / fround(1 + expf(-g))) * up[i]!);
  }
}

function ropeDllama(
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
    for (let j = 0; j < half; j++) {
      const val = fround(pos * freqs[j]!);
      const fcr = cosf(val);
      const fci = sinf(val);
      for (let h = h0; h < h1; h++) {
        const base = b * width + h * headDim;
        if (halfSplit) {
          const v0 = x[base + j]!;
          const v1 = x[base + j + half]!;
          x[base + j] = fmaf(v0, fcr, -fround(v1 * fci));
          x[base + j + half] = fmaf(v0, fci, fround(v1 * fcr));
        } else {
          const v0 = x[base + 2 * j]!;
          const v1 = x[base + 2 * j + 1]!;
          x[base + 2 * j] = fround(fround(v0 * fcr) - fround(v1 * fci));
          x[base + 2 * j + 1] = fround(fround(v0 * fci) + fround(v1 * fcr));
        }
      }
    }
  }
}

function moeRouteDllama(
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
    // dllama sorts with std::sort (ties unspecified); on equal probability the lower id comes first here
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

/** F32 weights with 4-byte alignment, viewed in place; unaligned ones copied row by row. */
let rowCopy = new Float32Array(0);
function f32Row(w: Uint8Array, r: number, nIn: number): { f: Float32Array; o: number } {
  if (w.byteOffset % 4 === 0) return { f: new Float32Array(w.buffer, w.byteOffset, w.byteLength >> 2), o: r * nIn };
  if (rowCopy.length < nIn) rowCopy = new Float32Array(nIn);
  new Uint8Array(rowCopy.buffer).set(w.subarray(r * nIn * 4, (r + 1) * nIn * 4));
  return { f: rowCopy, o: 0 };
}

function matmulF32Dllama(out: Float32Array, x: Float32Array, w: Uint8Array, nIn: number, nOut: number, batch: number, r0: number, r1: number): void {
  for (let r = r0; r < r1; r++) {
    const { f, o } = f32Row(w, r, nIn);
    for (let b = 0; b < batch; b++) out[b * nOut + r] = dot8(x, b * nIn, f, o, nIn);
  }
}

// ---- fused ops with Q80 casts ---------------------------------------------------------------------

const blockScratch = new Uint8Array(Q80_BLOCK_BYTES);

/**
 * x[i] = fma(q_i, f16(d), x[i]) for i ∈ [i0, i1) (multiples of 32), where (d, q) is the Q80 block
 * of o holding i: dllama's Q80 cast of a matmul result followed by its merge into the residual.
 */
function residualQ80(x: Float32Array, o: Float32Array, i0: number, i1: number): void {
  const t = f16Table32();
  for (let b = i0; b < i1; b += Q_BLOCK) {
    quantizeQ80(o.subarray(b, b + Q_BLOCK), blockScratch);
    const d = t[blockScratch[0]! | (blockScratch[1]! << 8)]!;
    for (let i = 0; i < Q_BLOCK; i++) x[b + i] = fmaf((blockScratch[2 + i]! << 24) >> 24, d, x[b + i]!);
  }
}

/** Quantize blocks [b0, b1) of x (32 floats each) into Q80 blocks [b0, b1) of out. */
function quantizeBlocks(out: Uint8Array, x: Float32Array, b0: number, b1: number): void {
  quantizeQ80(x.subarray(b0 * Q_BLOCK, b1 * Q_BLOCK), out.subarray(b0 * Q80_BLOCK_BYTES, b1 * Q80_BLOCK_BYTES));
}

/** rmsnormDllama of rows [r0, r1) into out, and the same rows quantized to Q80 into outq. */
function rmsnormQ80(out: Float32Array, outq: Uint8Array, x: Float32Array, weight: Float32Array, n: number, eps: number, r0: number, r1: number): void {
  rmsnormDllama(out, x, weight, n, eps, r0, r1);
  quantizeBlocks(outq, out, (r0 * n) / Q_BLOCK, (r1 * n) / Q_BLOCK);
}

/** swigluDllama on [i0, i1) (multiples of 32) into out, and those blocks quantized into outq. */
function swigluQ80(out: Float32Array, outq: Uint8Array, gate: Float32Array, up: Float32Array, i0: number, i1: number): void {
  swigluDllama(out, gate, up, i0, i1);
  quantizeBlocks(outq, out, i0 / Q_BLOCK, i1 / Q_BLOCK);
}

/** The reference versions of KernelBackend's dllama-numerics ops. */
export const dllamaReferenceOps = {
  rmsnormDllama,
  softmaxDllama,
  attentionDllama,
  swigluDllama,
  ropeDllama,
  moeRouteDllama,
  matmulF32Dllama,
  residualQ80,
  rmsnormQ80,
  swigluQ80,
} satisfies Partial<KernelBackend>;

/**
 * A backend computing with dllama's numerics: `rmsnorm`, `softmax`, `attention`, `swiglu`,
 * `rope`, `moeRoute` and `matmul` with F32 weights are replaced by their `…Dllama` versions; the
 * rest (matmulQ80, quantization, argmax…) is shared, as it already is dllama's arithmetic. The
 * engine computes with it in q80 mode. Built once per backend.
 */
export function dllamaNumerics(k: KernelBackend): KernelBackend {
  const hit = cache.get(k);
  if (hit !== undefined) return hit;
  const d: KernelBackend = Object.freeze({
    ...k,
    rmsnorm: k.rmsnormDllama,
    softmax: k.softmaxDllama,
    attention: k.attentionDllama,
    swiglu: k.swigluDllama,
    rope: k.ropeDllama,
    moeRoute: k.moeRouteDllama,
    matmul: (wType: FloatType, out: Float32Array, x: Float32Array, w: Uint8Array, nIn: number, nOut: number, batch: number, r0: number, r1: number): void =>
      wType === FloatType.F32 ? k.matmulF32Dllama(out, x, w, nIn, nOut, batch, r0, r1) : k.matmul(wType, out, x, w, nIn, nOut, batch, r0, r1),
  });
  cache.set(k, d);
  return d;
}
const cache = new WeakMap<KernelBackend, KernelBackend>();
