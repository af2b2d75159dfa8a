/**
 * dllama's numerics (src/dllama.ts, src/libm.ts, native/dllama.c):
 * - the reference's exact float helpers and its versions of glibc's expf, sinf and cosf, against
 *   known exact cases, the native versions and (on glibc) the C library itself;
 * - the reference ops against float64 formulas, so they compute the functions they claim;
 * - every native path against the reference, bit for bit, on awkward sizes, ranges honoured.
 * The end-to-end check against dllama's own output is packages/engine/test/dllama.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { DTYPES, FloatType, Q80_BLOCK_BYTES, Q_BLOCK } from '@airllm/format';
import { dllamaNumerics } from '../src/dllama.js';
import { cosf, expf, fmaf, sinf } from '../src/libm.js';
import { loadAddon, nativeBackend, nativePaths, type NativeBackend } from '../src/native.js';
import { referenceBackend as ref } from '../src/reference.js';
import { ropeFrequencies } from '../src/rope.js';
import { randomFloats, rng } from '../src/testing/builders.js';
import { DLLAMA_EXP_REL, F64_SUM_REL, RMSNORM_REL, ROPE_REL, U } from './tolerances.js';

const BACKENDS: NativeBackend[] = nativePaths().map((p) => nativeBackend(p));
const SENTINEL = -12345.5;
const fround = Math.fround;

function expectExact(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i]) && !(Number.isNaN(actual[i]!) && Number.isNaN(expected[i]!))) {
      expect.fail(`${label}: element ${i} is ${actual[i]}, reference ${expected[i]}`);
    }
  }
}

function expectWithin(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol: (i: number) => number): void {
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= tol(i))) expect.fail(`${label}: element ${i} is ${actual[i]}, expected ${expected[i]} (|diff| ${d} > ${tol(i)})`);
  }
}

/** Inputs for the float32 functions: a dense grid where they are used, every 2^12-th bit pattern, edges. */
function mathInputs(): Float32Array {
  const xs: number[] = [];
  for (let i = 0; i <= 200_000; i++) xs.push(-110 + (210 * i) / 200_000);
  const bits = new Uint32Array(1 << 20);
  for (let i = 0; i < bits.length; i++) bits[i] = (i << 12) | (i * 2654435761) >>> 20;
  for (const v of new Float32Array(bits.buffer)) xs.push(v);
  const edges = [0, -0, Infinity, -Infinity, NaN, 2 ** -149, -(2 ** -149), 2 ** -126, 88.72283172607422, 88.7228, -103.97207641601562, -103.27892303466797, -87.33654, 120, -120, 119.99999, Math.PI / 4, 3e38, -3e38, 2 ** -12, 1e-5, 1e6];
  for (const e of edges) xs.push(e, fround(e) * (1 + 2 ** -23), fround(e) * (1 - 2 ** -23));
  return Float32Array.from(xs);
}

describe('exact float helpers and the C library functions dllama uses', () => {
  it('fmaf rounds once, also where a double sum lands exactly halfway between two floats', () => {
    // a·b = 2^-24 − 2^-54: a·b + c in double is the midpoint 1 + 3·2^-24, the exact value is below it
    const a = fround(1 + 2 ** -15);
    const b = fround(2 ** -24 * (1 - 2 ** -15));
    expect(fmaf(a, b, fround(1 + 2 ** -23))).toBe(fround(1 + 2 ** -23));
    expect(fround(a * b + fround(1 + 2 ** -23))).toBe(fround(1 + 2 ** -22)); // what double then float gives
    expect(fmaf(-a, b, fround(-(1 + 2 ** -23)))).toBe(fround(-(1 + 2 ** -23)));
    expect(fmaf(3, 5, 7)).toBe(22);
    expect(fmaf(fround(0.1), 10, -1)).toBe(fround(fround(0.1) * 10 - 1)); // exact product, exact difference
  });

  const x = mathInputs();
  const addon = loadAddon();
  const kinds = [
    ['expf', 0, expf],
    ['sinf', 1, sinf],
    ['cosf', 2, cosf],
  ] as const;
  for (const [name, kind, fn] of kinds) {
    it(`${name}: the reference equals the native version on ${x.length} inputs`, { timeout: 60_000 }, () => {
      const native = new Float32Array(x.length);
      addon.mathf(kind, native, x, false);
      expectExact(name, Float32Array.from(x, fn), native);
    });
  }

  // The C versions are glibc's algorithms as built for x86-64 with FMA (which dllama's builds pick);
  // elsewhere the C library's own results differ from them in the last bit for some inputs.
  const glibcFma =
    process.platform === 'linux' &&
    process.arch === 'x64' &&
    Boolean((process.report?.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime) &&
    nativePaths().includes('avx2');
  for (const [name, kind] of kinds) {
    it.runIf(glibcFma)(`${name}: the native version equals this glibc's on every one of those inputs`, { timeout: 60_000 }, () => {
      const mine = new Float32Array(x.length);
      const libm = new Float32Array(x.length);
      addon.mathf(kind, mine, x, false);
      addon.mathf(kind, libm, x, true);
      expectExact(`${name} vs libm`, mine, libm);
    });
  }

  it('expf, sinf and cosf are within 1 ulp of the float64 functions', { timeout: 60_000 }, () => {
    for (let i = 0; i < 200_000; i += 7) {
      const v = x[i]!;
      for (const [f, g] of [[expf, Math.exp], [sinf, Math.sin], [cosf, Math.cos]] as const) {
        const want = g(v);
        if (Math.abs(want) < 2 ** -126 || Math.abs(want) > 3.4e38) continue; // float32 subnormals and overflow
        expect(Math.abs(f(v) - want)).toBeLessThanOrEqual(2 * U * Math.abs(want));
      }
    }
  });
});

// ---- the reference ops against float64 ----------------------------------------------------------

describe('reference dllama ops compute what they claim (float64 formulas)', () => {
  it('softmaxDllama: vector groups and tails, within the polynomial exp and sum bounds', () => {
    for (const n of [1, 5, 8, 9, 16, 31, 100]) {
      const v = randomFloats(n, n + 11, 8);
      const got = Float32Array.from(v);
      ref.softmaxDllama(got, n, 0, 1);
      const max = Math.max(...v);
      const e = Array.from(v, (t) => Math.exp(t - max));
      const s = e.reduce((a, b) => a + b, 0);
      expectWithin(`softmaxDllama n=${n}`, got, e.map((t) => t / s), (i) => (2 * DLLAMA_EXP_REL + (n + 4) * U) * (e[i]! / s));
    }
  });

  it('rmsnormDllama within the RMSNorm bound, plain formula', () => {
    for (const n of [8, 13, 64, 100]) {
      const v = randomFloats(2 * n, n, 3);
      const w = randomFloats(n, n + 1, 2);
      const got = new Float32Array(2 * n);
      ref.rmsnormDllama(got, v, w, n, 1e-5, 0, 2);
      for (let r = 0; r < 2; r++) {
        let ss = 0;
        for (let i = 0; i < n; i++) ss += v[r * n + i]! ** 2;
        const inv = 1 / Math.sqrt(ss / n + fround(1e-5));
        expectWithin(`rmsnormDllama n=${n}`, got.subarray(r * n, (r + 1) * n), Array.from({ length: n }, (_, i) => w[i]! * inv * v[r * n + i]!), (i) => RMSNORM_REL(n) * Math.abs(got[r * n + i]!) + 1e-30);
      }
    }
  });

  it('swigluDllama = g/(1 + e^-g)·u within the polynomial exp bound (groups of 8) and 1 ulp of expf (tail)', () => {
    const n = 45;
    const g = randomFloats(n, 5, 12);
    const u = randomFloats(n, 6, 1);
    const got = new Float32Array(n);
    ref.swigluDllama(got, g, u, 0, n);
    const want = Array.from(g, (t, i) => (t / (1 + Math.exp(-t))) * u[i]!);
    expectWithin('swigluDllama', got, want, (i) => (DLLAMA_EXP_REL + 8 * U) * Math.abs(want[i]!) + 1e-30);
  });

  it('ropeDllama rotates by pos·f_j, both pairings, within ROPE_REL', () => {
    const hd = 16;
    const freqs = ropeFrequencies(hd, 10000);
    for (const halfSplit of [false, true]) {
      const v = randomFloats(3 * 2 * hd, 9, 2);
      const got = Float32Array.from(v);
      ref.ropeDllama(got, 2, hd, 100, 3, freqs, halfSplit, 0, 2);
      for (let b = 0; b < 3; b++)
        for (let h = 0; h < 2; h++)
          for (let j = 0; j < hd / 2; j++) {
            const o = (b * 2 + h) * hd;
            const [i0, i1] = halfSplit ? [o + j, o + j + hd / 2] : [o + 2 * j, o + 2 * j + 1];
            const a = fround((100 + b) * freqs[j]!);
            const [x0, x1] = [v[i0]!, v[i1]!];
            const tol = ROPE_REL * (Math.abs(x0) + Math.abs(x1));
            expect(Math.abs(got[i0]! - (x0 * Math.cos(a) - x1 * Math.sin(a)))).toBeLessThanOrEqual(tol);
            expect(Math.abs(got[i1]! - (x0 * Math.sin(a) + x1 * Math.cos(a)))).toBeLessThanOrEqual(tol);
          }
    }
  });

  it('matmulF32Dllama and attentionDllama within the float32 sum bounds', () => {
    const [nOut, nIn] = [7, 37];
    const w = randomFloats(nOut * nIn, 1, 1);
    const xv = randomFloats(2 * nIn, 2, 1);
    const out = new Float32Array(2 * nOut);
    ref.matmulF32Dllama(out, xv, new Uint8Array(w.buffer), nIn, nOut, 2, 0, nOut);
    for (let b = 0; b < 2; b++)
      for (let r = 0; r < nOut; r++) {
        let s = 0;
        let a = 0;
        for (let i = 0; i < nIn; i++) {
          s += w[r * nIn + i]! * xv[b * nIn + i]!;
          a += Math.abs(w[r * nIn + i]! * xv[b * nIn + i]!);
        }
        expect(Math.abs(out[b * nOut + r]! - s)).toBeLessThanOrEqual(F64_SUM_REL(nIn) * a);
      }
    const [nH, nKv, hd, pos] = [4, 2, 8, 12];
    const q = randomFloats(nH * hd, 3, 1);
    const kc = randomFloats((pos + 1) * nKv * hd, 4, 1);
    const vc = randomFloats((pos + 1) * nKv * hd, 5, 1);
    const z = new Float32Array(nH * hd);
    ref.attentionDllama(z, q, kc, vc, new Float32Array(pos + 1), nH, nKv, hd, pos, 1, 0, nH);
    for (let h = 0; h < nH; h++) {
      const g = Math.floor(h / 2);
      const sc = Array.from({ length: pos + 1 }, (_, t) => {
        let s = 0;
        for (let i = 0; i < hd; i++) s += q[h * hd + i]! * kc[(t * nKv + g) * hd + i]!;
        return s / Math.sqrt(hd);
      });
      const m = Math.max(...sc);
      const e = sc.map((s) => Math.exp(s - m));
      const tot = e.reduce((a, b) => a + b, 0);
      for (let i = 0; i < hd; i++) {
        let o = 0;
        for (let t = 0; t <= pos; t++) o += (e[t]! / tot) * vc[(t * nKv + g) * hd + i]!;
        expect(Math.abs(z[h * hd + i]! - o)).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('residualQ80 adds the Q80 cast of o (quantize, dequantize) to x with one rounding', () => {
    const n = 96;
    const x = randomFloats(n, 1, 4);
    const o = randomFloats(n, 2, 0.3);
    const q = new Uint8Array((n / Q_BLOCK) * Q80_BLOCK_BYTES);
    DTYPES[FloatType.Q80].quantize(o, q);
    const oq = new Float32Array(n);
    DTYPES[FloatType.Q80].dequantize(q, oq);
    const got = Float32Array.from(x);
    ref.residualQ80(got, o, 32, 96);
    expectExact('untouched block', got.subarray(0, 32), x.subarray(0, 32));
    // the exact sum x + q·d rounded once: within half an ulp of it
    expectWithin('residualQ80', got.subarray(32), Array.from(x.subarray(32), (v, i) => v + oq[32 + i]!), (i) => U * Math.abs(got[32 + i]!));
  });

  it('the fused Q80 ops are their parts: rmsnormQ80 = rmsnormDllama + quantizeQ80, swigluQ80 = swigluDllama + quantizeQ80', () => {
    const n = 64;
    const v = randomFloats(3 * n, 7, 2);
    const w = randomFloats(n, 8, 1);
    const want = new Float32Array(3 * n);
    ref.rmsnormDllama(want, v, w, n, 1e-6, 1, 3);
    const wantQ = new Uint8Array((3 * n * Q80_BLOCK_BYTES) / Q_BLOCK);
    ref.quantizeQ80(wantQ, want, n, 1, 3);
    const got = new Float32Array(3 * n);
    const gotQ = new Uint8Array(wantQ.length);
    ref.rmsnormQ80(got, gotQ, v, w, n, 1e-6, 1, 3);
    expectExact('rmsnormQ80 floats', got, want);
    expect(Buffer.from(gotQ).equals(Buffer.from(wantQ))).toBe(true);
    const up = v.map((t) => t * 0.5);
    const sw = new Float32Array(3 * n);
    ref.swigluDllama(sw, v, up, 32, 160);
    const sq = new Uint8Array(wantQ.length);
    ref.quantizeQ80(sq, sw, 32, 1, 5); // blocks 1..4 = elements [32, 160)
    const fused = new Float32Array(3 * n);
    const fusedQ = new Uint8Array(wantQ.length);
    ref.swigluQ80(fused, fusedQ, v, up, 32, 160);
    expectExact('swigluQ80 floats', fused, sw);
    expect(Buffer.from(fusedQ).equals(Buffer.from(sq))).toBe(true);
  });

  it('dllamaNumerics swaps in the dllama ops and keeps the rest', () => {
    const d = dllamaNumerics(ref);
    expect(dllamaNumerics(ref)).toBe(d);
    expect(d.rmsnorm).toBe(ref.rmsnormDllama);
    expect(d.softmax).toBe(ref.softmaxDllama);
    expect(d.attention).toBe(ref.attentionDllama);
    expect(d.swiglu).toBe(ref.swigluDllama);
    expect(d.rope).toBe(ref.ropeDllama);
    expect(d.moeRoute).toBe(ref.moeRouteDllama);
    expect(d.matmulQ80).toBe(ref.matmulQ80);
    expect(d.quantizeQ80).toBe(ref.quantizeQ80);
    const w = randomFloats(3 * 16, 1, 1);
    const xv = randomFloats(16, 2, 1);
    const a = new Float32Array(3);
    const b = new Float32Array(3);
    d.matmul(FloatType.F32, a, xv, new Uint8Array(w.buffer), 16, 3, 1, 0, 3);
    ref.matmulF32Dllama(b, xv, new Uint8Array(w.buffer), 16, 3, 1, 0, 3);
    expectExact('F32 matmul', a, b);
  });
});

// ---- every native path against the reference, bit for bit --------------------------------------------

const SIZES = [1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 257, 1031];

describe.each(BACKENDS.map((be) => ({ path: be.path, be })))('$path: dllama ops equal the reference bit for bit', ({ be }) => {
  it('rmsnormDllama and rmsnormQ80, range honoured', () => {
    for (const n of SIZES) {
      const rows = 3;
      const v = randomFloats(rows * n, n, 3);
      const w = randomFloats(n, n + 1, 2);
      const want = new Float32Array(rows * n).fill(SENTINEL);
      ref.rmsnormDllama(want, v, w, n, 1e-5, 1, 3);
      const got = new Float32Array(rows * n).fill(SENTINEL);
      be.rmsnormDllama(got, v, w, n, 1e-5, 1, 3);
      expectExact(`rmsnormDllama n=${n}`, got, want);
      if (n % 32 === 0) {
        const wq = new Uint8Array((rows * n * Q80_BLOCK_BYTES) / Q_BLOCK).fill(0xa5);
        const gq = new Uint8Array(wq.length).fill(0xa5);
        const wf = new Float32Array(rows * n).fill(SENTINEL);
        const gf = new Float32Array(rows * n).fill(SENTINEL);
        ref.rmsnormQ80(wf, wq, v, w, n, 1e-6, 1, 3);
        be.rmsnormQ80(gf, gq, v, w, n, 1e-6, 1, 3);
        expectExact(`rmsnormQ80 n=${n}`, gf, wf);
        expect(Buffer.from(gq).equals(Buffer.from(wq)), `rmsnormQ80 bytes n=${n}`).toBe(true);
      }
    }
  });

  it('softmaxDllama (large negative inputs too: exp underflow), range honoured', () => {
    for (const n of SIZES) {
      const v = randomFloats(3 * n, n, 30);
      if (n > 3) v[n + 2] = -200;
      const want = Float32Array.from(v);
      ref.softmaxDllama(want, n, 1, 3);
      const got = Float32Array.from(v);
      be.softmaxDllama(got, n, 1, 3);
      expectExact(`softmaxDllama n=${n}`, got, want);
      expectExact('untouched row', got.subarray(0, n), v.subarray(0, n));
    }
  });

  it('swigluDllama and swigluQ80 (groups of 8 counted from i0), out may be gate', () => {
    for (const n of SIZES) {
      for (const i0 of [0, 3]) {
        const g = randomFloats(n + i0, n, 12);
        const u = randomFloats(n + i0, n + 1, 1);
        const want = new Float32Array(n + i0).fill(SENTINEL);
        ref.swigluDllama(want, g, u, i0, n + i0);
        const got = new Float32Array(n + i0).fill(SENTINEL);
        be.swigluDllama(got, g, u, i0, n + i0);
        expectExact(`swigluDllama n=${n} i0=${i0}`, got, want);
        const inPlace = Float32Array.from(g);
        be.swigluDllama(inPlace, inPlace, u, i0, n + i0);
        expectExact(`swigluDllama in place n=${n}`, inPlace.subarray(i0), want.subarray(i0));
      }
      if (n % 32 === 0) {
        const g = randomFloats(n + 64, n, 12);
        const u = randomFloats(n + 64, n + 1, 1);
        const wq = new Uint8Array(((n + 64) * Q80_BLOCK_BYTES) / Q_BLOCK).fill(0xa5);
        const gq = new Uint8Array(wq.length).fill(0xa5);
        const wf = new Float32Array(n + 64).fill(SENTINEL);
        const gf = new Float32Array(n + 64).fill(SENTINEL);
        ref.swigluQ80(wf, wq, g, u, 32, n + 32);
        be.swigluQ80(gf, gq, g, u, 32, n + 32);
        expectExact(`swigluQ80 n=${n}`, gf, wf);
        expect(Buffer.from(gq).equals(Buffer.from(wq)), `swigluQ80 bytes n=${n}`).toBe(true);
      }
    }
  });

  it('ropeDllama, both pairings, large positions (the long argument reduction), head range honoured', () => {
    for (const [hd, theta] of [[8, 10000], [64, 1e6], [128, 500000]] as const) {
      const freqs = ropeFrequencies(hd, theta);
      for (const pos0 of [0, 7, 1000, 40_000]) {
        for (const halfSplit of [false, true]) {
          const v = randomFloats(3 * 4 * hd, hd + pos0, 2);
          const want = Float32Array.from(v);
          ref.ropeDllama(want, 4, hd, pos0, 3, freqs, halfSplit, 1, 3);
          const got = Float32Array.from(v);
          be.ropeDllama(got, 4, hd, pos0, 3, freqs, halfSplit, 1, 3);
          expectExact(`ropeDllama hd=${hd} pos0=${pos0} halfSplit=${halfSplit}`, got, want);
        }
      }
    }
  });

  it('attentionDllama: GQA, one position and a causal batch, head range honoured, out may alias q', () => {
    for (const [nH, nKv, hd, pos0, batch] of [[4, 2, 8, 0, 1], [4, 2, 8, 13, 3], [6, 3, 12, 30, 2], [2, 1, 64, 70, 1], [8, 8, 5, 9, 4]] as const) {
      const q = randomFloats(batch * nH * hd, hd + pos0, 1);
      const kc = randomFloats((pos0 + batch) * nKv * hd, 2, 1);
      const vc = randomFloats((pos0 + batch) * nKv * hd, 3, 1);
      const want = new Float32Array(batch * nH * hd).fill(SENTINEL);
      ref.attentionDllama(want, q, kc, vc, new Float32Array(pos0 + batch), nH, nKv, hd, pos0, batch, 1, nH);
      const got = new Float32Array(batch * nH * hd).fill(SENTINEL);
      be.attentionDllama(got, q, kc, vc, new Float32Array(pos0 + batch), nH, nKv, hd, pos0, batch, 1, nH);
      expectExact(`attentionDllama ${nH}/${nKv}x${hd} pos0=${pos0}`, got, want);
      const alias = Float32Array.from(q);
      be.attentionDllama(alias, alias, kc, vc, new Float32Array(pos0 + batch), nH, nKv, hd, pos0, batch, 0, nH);
      const wantAll = new Float32Array(batch * nH * hd);
      ref.attentionDllama(wantAll, q, kc, vc, new Float32Array(pos0 + batch), nH, nKv, hd, pos0, batch, 0, nH);
      expectExact('attentionDllama out = q', alias, wantAll);
    }
  });

  it('moeRouteDllama and matmulF32Dllama (weights at unaligned offsets too)', () => {
    for (const [nE, k] of [[4, 2], [8, 8], [13, 3], [128, 8]] as const) {
      const logits = randomFloats(3 * nE, nE, 4);
      const we = new Int32Array(3 * k);
      const ww = new Float32Array(3 * k);
      const wl = Float32Array.from(logits);
      ref.moeRouteDllama(we, ww, wl, nE, k, 0, 3);
      const ge = new Int32Array(3 * k);
      const gw = new Float32Array(3 * k);
      const gl = Float32Array.from(logits);
      be.moeRouteDllama(ge, gw, gl, nE, k, 0, 3);
      expect(Array.from(ge)).toEqual(Array.from(we));
      expectExact('moeRouteDllama weights', gw, ww);
      expectExact('moeRouteDllama probabilities', gl, wl);
    }
    for (const [nOut, nIn, batch] of [[1, 1, 1], [5, 7, 2], [9, 64, 3], [33, 100, 5], [4, 1031, 1]] as const) {
      const w = randomFloats(nOut * nIn, nIn, 1);
      const xv = randomFloats(batch * nIn, nIn + 1, 1);
      for (const offset of [0, 2]) {
        const bytes = new Uint8Array(w.byteLength + offset);
        bytes.set(new Uint8Array(w.buffer), offset);
        const wb = bytes.subarray(offset);
        const want = new Float32Array(batch * nOut).fill(SENTINEL);
        ref.matmulF32Dllama(want, xv, wb, nIn, nOut, batch, 1, nOut);
        const got = new Float32Array(batch * nOut).fill(SENTINEL);
        be.matmulF32Dllama(got, xv, wb, nIn, nOut, batch, 1, nOut);
        expectExact(`matmulF32Dllama ${nOut}x${nIn} offset ${offset}`, got, want);
      }
    }
  });

  it('residualQ80, blocks range honoured', () => {
    const r = rng(5);
    for (const blocks of [1, 2, 7, 33]) {
      const n = blocks * Q_BLOCK;
      const x = randomFloats(n + 64, blocks, 4);
      const o = Float32Array.from({ length: n + 64 }, () => (r() - 0.5) * 2 ** Math.floor(r() * 12 - 6));
      const want = Float32Array.from(x);
      ref.residualQ80(want, o, 32, n + 32);
      const got = Float32Array.from(x);
      be.residualQ80(got, o, 32, n + 32);
      expectExact(`residualQ80 ${blocks} blocks`, got, want);
      expectExact('outside the range', got.subarray(0, 32), x.subarray(0, 32));
    }
  });

  it('argument errors are typed, never a crash', () => {
    const f = new Float32Array(64);
    expect(() => be.residualQ80(f, f, 1, 33)).toThrow(RangeError);
    expect(() => be.swigluQ80(f, new Uint8Array(68), f, f, 0, 48)).toThrow(RangeError);
    expect(() => be.rmsnormQ80(f, new Uint8Array(10), f, f, 32, 1e-5, 0, 2)).toThrow(RangeError);
    expect(() => be.matmulF32Dllama(f, f, new Uint8Array(8), 4, 4, 1, 0, 4)).toThrow(RangeError);
    expect(() => be.softmaxDllama(f, 65, 0, 1)).toThrow(RangeError);
  });
});
