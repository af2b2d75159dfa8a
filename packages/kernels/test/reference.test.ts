/**
 * The oracle checked against independent float64 formulas: naive dot products over weights
 * decoded by @airllm/format's dtype table, softmax, RMSNorm, rope rotation, attention, SwiGLU,
 * MoE routing. Tolerances are the float32 error bounds from tolerances.ts.
 */
import { describe, expect, it } from 'vitest';
import { DTYPES, FloatType, Q80_BLOCK_BYTES, Q_BLOCK } from '@airllm/format';
import { referenceBackend as ref } from '../src/reference.js';
import { ropeFrequencies } from '../src/rope.js';
import { randomFloats, randomWeights, rng } from '../src/testing/builders.js';
import { recipeQ80 } from './recipe.js';
import { F64_SUM_REL, RMSNORM_REL, ROPE_REL, SOFTMAX_REL, SWIGLU_REL, U } from './tolerances.js';

const fround = Math.fround;

/** Weights decoded to float64 by the format package's dtype table (not the kernels' decoder). */
function decode(type: FloatType, w: Uint8Array, rows: number, nIn: number): Float64Array {
  const f = new Float32Array(rows * nIn);
  DTYPES[type].dequantize(w, f);
  return Float64Array.from(f);
}

/** Assert |actual - expected| <= tol[i] for every i, naming the worst element. */
function expectWithin(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol: ArrayLike<number>): void {
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const excess = Math.abs(actual[i]! - expected[i]!) - tol[i]!;
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(`${label}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} ± ${tol[worst]}`);
  }
}

const DTYPE_CASES: { type: FloatType; name: string; shapes: [nOut: number, nIn: number, batch: number][] }[] = [
  { type: FloatType.F32, name: 'F32', shapes: [[1, 1, 1], [7, 7, 2], [33, 33, 3], [31, 257, 1]] },
  { type: FloatType.F16, name: 'F16', shapes: [[1, 1, 1], [7, 7, 2], [33, 33, 3], [31, 257, 1]] },
  { type: FloatType.Q40, name: 'Q40', shapes: [[1, 32, 1], [31, 96, 2], [33, 64, 3], [5, 4096, 1]] },
  { type: FloatType.Q80, name: 'Q80', shapes: [[1, 32, 1], [31, 96, 2], [33, 64, 3], [5, 4096, 1]] },
];

describe('reference matmul vs float64 dot products', () => {
  for (const { type, name, shapes } of DTYPE_CASES) {
    for (const [nOut, nIn, batch] of shapes) {
      it(`${name} ${nOut}x${nIn}, batch ${batch}`, () => {
        const w = randomWeights(type, nOut, nIn, nOut * 7 + nIn);
        const x = randomFloats(batch * nIn, nIn + batch);
        const out = new Float32Array(batch * nOut);
        ref.matmul(type, out, x, w, nIn, nOut, batch, 0, nOut);
        const wd = decode(type, w, nOut, nIn);
        const exp = new Float64Array(batch * nOut);
        const tol = new Float64Array(batch * nOut);
        for (let b = 0; b < batch; b++) {
          for (let r = 0; r < nOut; r++) {
            let s = 0;
            let sa = 0;
            for (let i = 0; i < nIn; i++) {
              s += wd[r * nIn + i]! * x[b * nIn + i]!;
              sa += Math.abs(wd[r * nIn + i]! * x[b * nIn + i]!);
            }
            exp[b * nOut + r] = s;
            tol[b * nOut + r] = F64_SUM_REL(nIn) * sa;
          }
        }
        expectWithin(`${name} matmul`, out, exp, tol);
      });
    }
  }

  for (const type of [FloatType.Q40, FloatType.Q80]) {
    it(`${FloatType[type]} x Q80 equals the float64 sum of f16(dw)·f16(dx)·(integer block dot)`, () => {
      const nOut = 9;
      const nIn = 160;
      const batch = 3;
      const w = randomWeights(type, nOut, nIn, 11);
      const x = randomFloats(batch * nIn, 12);
      const xq = new Uint8Array((batch * nIn * Q80_BLOCK_BYTES) / Q_BLOCK);
      DTYPES[FloatType.Q80].quantize(x, xq);
      const out = new Float32Array(batch * nOut);
      ref.matmulQ80(type, out, xq, w, nIn, nOut, batch, 0, nOut);
      const wd = decode(type, w, nOut, nIn);
      const xd = decode(FloatType.Q80, xq, batch, nIn);
      for (let b = 0; b < batch; b++) {
        for (let r = 0; r < nOut; r++) {
          let s = 0;
          let sa = 0;
          for (let i = 0; i < nIn; i++) {
            s += wd[r * nIn + i]! * xd[b * nIn + i]!;
            sa += Math.abs(wd[r * nIn + i]! * xd[b * nIn + i]!);
          }
          expect(Math.abs(out[b * nOut + r]! - s)).toBeLessThanOrEqual(F64_SUM_REL(nIn / Q_BLOCK + 2) * sa);
        }
      }
    });
  }

  it('F32 weights at an offset that is not a multiple of 4 give the same result as aligned ones', () => {
    // .m tensors are packed back to back: an F32 tensor after Q40 data can start at any even offset.
    const nOut = 17;
    const nIn = 45;
    const w = randomWeights(FloatType.F32, nOut, nIn, 5);
    const x = randomFloats(2 * nIn, 6);
    const aligned = new Float32Array(2 * nOut);
    ref.matmul(FloatType.F32, aligned, x, w, nIn, nOut, 2, 0, nOut);
    for (const offset of [1, 2, 3]) {
      const buf = new Uint8Array(w.length + offset);
      buf.set(w, offset);
      const out = new Float32Array(2 * nOut);
      ref.matmul(FloatType.F32, out, x, buf.subarray(offset), nIn, nOut, 2, 0, nOut);
      expect(Array.from(out)).toEqual(Array.from(aligned));
    }
  });
});

describe('reference row ops vs float64 formulas', () => {
  it('softmax', () => {
    for (const n of [1, 7, 33, 1000]) {
      const x = randomFloats(2 * n, n, 12);
      const r = Float64Array.from(x);
      ref.softmax(x, n, 0, 2);
      for (let row = 0; row < 2; row++) {
        const o = row * n;
        let max = -Infinity;
        for (let i = 0; i < n; i++) max = Math.max(max, r[o + i]!);
        let sum = 0;
        for (let i = 0; i < n; i++) sum += Math.exp(r[o + i]! - max);
        const exp = Array.from({ length: n }, (_, i) => Math.exp(r[o + i]! - max) / sum);
        expectWithin('softmax', x.subarray(o, o + n), exp, exp.map((v) => SOFTMAX_REL(n) * v));
      }
    }
  });

  it('rmsnorm', () => {
    for (const n of [1, 31, 64, 4097]) {
      const x = randomFloats(3 * n, n, 3);
      const w = randomFloats(n, n + 1, 2);
      const out = new Float32Array(3 * n);
      ref.rmsnorm(out, x, w, n, 1e-5, 0, 3);
      for (let row = 0; row < 3; row++) {
        let ss = 0;
        for (let i = 0; i < n; i++) ss += x[row * n + i]! ** 2;
        const inv = 1 / Math.sqrt(ss / n + fround(1e-5));
        const exp = Array.from({ length: n }, (_, i) => w[i]! * x[row * n + i]! * inv);
        expectWithin('rmsnorm', out.subarray(row * n, (row + 1) * n), exp, exp.map((v) => RMSNORM_REL(n) * Math.abs(v)));
      }
    }
  });

  it('rope rotates each pair by pos·f (LLAMA adjacent pairs and FALCON halves)', () => {
    const headDim = 16;
    const nHeads = 3;
    const freqs = ropeFrequencies(headDim, 10000);
    for (const halfSplit of [false, true]) {
      const pos0 = 37;
      const batch = 2;
      const x = randomFloats(batch * nHeads * headDim, halfSplit ? 1 : 2);
      const orig = Float64Array.from(x);
      ref.rope(x, nHeads, headDim, pos0, batch, freqs, halfSplit, 0, nHeads);
      for (let b = 0; b < batch; b++) {
        for (let h = 0; h < nHeads; h++) {
          for (let j = 0; j < headDim / 2; j++) {
            const base = (b * nHeads + h) * headDim;
            const i0 = base + (halfSplit ? j : 2 * j);
            const i1 = base + (halfSplit ? j + headDim / 2 : 2 * j + 1);
            // the angle is defined as a float32 product (llama2.c, dllama); the rotation is exact math
            const angle = fround((pos0 + b) * freqs[j]!);
            const v0 = orig[i0]!;
            const v1 = orig[i1]!;
            const tol = ROPE_REL * (Math.abs(v0) + Math.abs(v1));
            expect(Math.abs(x[i0]! - (v0 * Math.cos(angle) - v1 * Math.sin(angle)))).toBeLessThanOrEqual(tol);
            expect(Math.abs(x[i1]! - (v0 * Math.sin(angle) + v1 * Math.cos(angle)))).toBeLessThanOrEqual(tol);
          }
        }
      }
    }
  });

  it('ropeFrequencies: theta^(-2j/d), Llama-3.1 scaling bands', () => {
    const f = ropeFrequencies(128, 500000);
    for (let j = 0; j < 64; j++) expect(Math.abs(f[j]! - 500000 ** (-(2 * j) / 128))).toBeLessThanOrEqual(4 * U * f[j]!);
    const s = { factor: 8, lowFreqFactor: 1, highFreqFactor: 4, origMaxSeqLen: 8192 };
    const g = ropeFrequencies(128, 500000, s);
    for (let j = 0; j < 64; j++) {
      const wl = (2 * Math.PI) / f[j]!;
      if (wl < 8192 / 4) expect(g[j]).toBe(f[j]);
      else if (wl > 8192 / 1) expect(Math.abs(g[j]! - f[j]! / 8)).toBeLessThanOrEqual(2 * U * g[j]!);
      else {
        const sm = (8192 / wl - 1) / (4 - 1);
        expect(Math.abs(g[j]! - ((1 - sm) * f[j]!) / 8 - sm * f[j]!)).toBeLessThanOrEqual(64 * U * f[j]!);
      }
    }
  });

  it('attention with grouped KV heads over a causal batch', () => {
    const nHeads = 4;
    const nKv = 2;
    const hd = 8;
    const pos0 = 5;
    const batch = 3;
    const T = pos0 + batch;
    const q = randomFloats(batch * nHeads * hd, 1, 2);
    const k = randomFloats(T * nKv * hd, 2, 2);
    const v = randomFloats(T * nKv * hd, 3);
    const out = new Float32Array(batch * nHeads * hd);
    ref.attention(out, q, k, v, new Float32Array(T), nHeads, nKv, hd, pos0, batch, 0, nHeads);
    for (let b = 0; b < batch; b++) {
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / (nHeads / nKv));
        const n = pos0 + b + 1;
        const sc: number[] = [];
        let scoreErr = 0;
        for (let t = 0; t < n; t++) {
          let s = 0;
          let sa = 0;
          for (let i = 0; i < hd; i++) {
            s += q[(b * nHeads + h) * hd + i]! * k[(t * nKv + g) * hd + i]!;
            sa += Math.abs(q[(b * nHeads + h) * hd + i]! * k[(t * nKv + g) * hd + i]!);
          }
          sc.push(s / Math.sqrt(hd));
          scoreErr = Math.max(scoreErr, (F64_SUM_REL(hd) * sa) / Math.sqrt(hd));
        }
        const max = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - max));
        const sum = e.reduce((p, c) => p + c, 0);
        const a = e.map((x) => x / sum);
        // a score error δ changes each probability by a factor within e^(±2δ)
        const aRel = 2 * scoreErr + SOFTMAX_REL(n);
        for (let i = 0; i < hd; i++) {
          let s = 0;
          let sa = 0;
          for (let t = 0; t < n; t++) {
            s += a[t]! * v[(t * nKv + g) * hd + i]!;
            sa += a[t]! * Math.abs(v[(t * nKv + g) * hd + i]!);
          }
          const got = out[(b * nHeads + h) * hd + i]!;
          expect(Math.abs(got - s)).toBeLessThanOrEqual((aRel + F64_SUM_REL(n)) * sa);
        }
      }
    }
  });

  it('swiglu', () => {
    const n = 1001;
    const g = randomFloats(n, 4, 12);
    const u = randomFloats(n, 5, 3);
    const out = new Float32Array(n);
    ref.swiglu(out, g, u, 0, n);
    const exp = Array.from(g, (gi, i) => (gi / (1 + Math.exp(-gi))) * u[i]!);
    expectWithin('swiglu', out, exp, exp.map((v) => SWIGLU_REL * Math.abs(v)));
  });

  it('addScaled rounds the scale to float32 first', () => {
    const n = 64;
    const out = randomFloats(n, 8);
    const x = randomFloats(n, 9);
    const o64 = Float64Array.from(out);
    ref.addScaled(out, x, 0.1, 0, n);
    for (let i = 0; i < n; i++) {
      const exact = o64[i]! + x[i]! * fround(0.1);
      expect(Math.abs(out[i]! - exact)).toBeLessThanOrEqual(2 * U * (Math.abs(o64[i]!) + Math.abs(x[i]! * 0.1)));
    }
  });

  it('argmax returns the first maximal index', () => {
    const x = new Float32Array([1, 5, -2, 5, 4]);
    expect(ref.argmax(x, 5)).toBe(1);
    expect(ref.argmax(x, 1)).toBe(0);
    const y = randomFloats(4097, 10);
    let best = 0;
    for (let i = 1; i < y.length; i++) if (y[i]! > y[best]!) best = i;
    expect(ref.argmax(y, y.length)).toBe(best);
  });

  it('moeRoute: softmax, top-k by probability (lower id first on ties), renormalised', () => {
    const nE = 16;
    const k = 4;
    const rows = 3;
    const logits = randomFloats(rows * nE, 7, 3);
    logits[2 * nE + 3] = logits[2 * nE + 9] = 10; // an exact tie in row 2
    const l64 = Float64Array.from(logits);
    const experts = new Int32Array(rows * k);
    const weights = new Float32Array(rows * k);
    ref.moeRoute(experts, weights, logits, nE, k, 0, rows);
    for (let r = 0; r < rows; r++) {
      const row = Array.from(l64.subarray(r * nE, (r + 1) * nE));
      const max = Math.max(...row);
      const e = row.map((v) => Math.exp(v - max));
      const sum = e.reduce((p, c) => p + c, 0);
      const p = e.map((v) => v / sum);
      const order = p.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
      const top = order.slice(0, k);
      const total = top.reduce((s, [v]) => s + v, 0);
      expect(Array.from(experts.subarray(r * k, (r + 1) * k))).toEqual(top.map(([, i]) => i));
      for (let j = 0; j < k; j++) {
        const want = top[j]![0] / total;
        expect(Math.abs(weights[r * k + j]! - want)).toBeLessThanOrEqual((SOFTMAX_REL(nE) * 2 + 2 * (k + 2) * U) * want);
      }
    }
    expect(Array.from(experts.subarray(2 * k, 2 * k + 2))).toEqual([3, 9]);
  });
});

describe('Q80 quantization (reference)', () => {
  it('equals FORMAT.md §c.2 recipe, including exact .5 ties (round half to even)', () => {
    const x = randomFloats(32 * 40, 21, 3);
    // block 1: amax 127 -> d = 1, id = 1: x·id lands exactly on .5 ties
    const ties = [127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.5, -3.5, 4.5];
    for (let i = 0; i < 32; i++) x[32 + i] = ties[i] ?? i - 16;
    // block 2: amax 63.5 -> d = 0.5, id = 2: 0.25 -> 0.5 -> 0, 0.75 -> 1.5 -> 2
    for (let i = 0; i < 32; i++) x[64 + i] = i === 0 ? 63.5 : (i % 2 ? 0.25 : -0.75) * (1 + (i % 5));
    x.fill(0, 96, 128); // all-zero block: d = 0, q = 0
    x[160] = 1e-6; // tiny scale
    const got = new Uint8Array((x.length / 32) * 34);
    ref.quantizeQ80(got, x, x.length, 0, 1);
    expect(Buffer.from(got).equals(Buffer.from(recipeQ80(x)))).toBe(true);
    expect(Array.from(got.subarray(36, 36 + 12)).map((b) => (b << 24) >> 24)).toEqual([
      127, 0, 2, 2, 0, -2, -2, 126, -126, 4, -4, 4,
    ]);
  });
});
