/**
 * BF16 and K-quant weights (Q4_K, Q5_K, Q6_K) and Q8_K activations, on the reference and on
 * every native CPU path this machine has, looping over the dtype table.
 *
 * - Q8_K quantization: every path bit-identical to the reference, and the reference to the rule
 *   written out here independently.
 * - matmulQ8K: integer-exact per super-block, then a fixed float32 sequence: every path must give
 *   the reference's bits (no tolerance); the reference is checked against a float64 formula.
 * - matmul (F32 input): the weights decode to the reference's floats exactly; SIMD paths sum in
 *   another order, within F32_SUM_REL (tolerances.ts); the scalar path is bit-identical.
 * Shapes are awkward on purpose: nOut not a multiple of the row streams or tiles, batches 1, 3,
 * 17, 32 (rows and lanes kernels, partial batch registers), row ranges as threads split them.
 */
import { describe, expect, it } from 'vitest';
import { DTYPES, FloatType, kMin, kScale } from '@airllm/format';
import { referenceBackend as ref } from '../src/reference.js';
import { nativeBackend, nativePaths, type NativeBackend } from '../src/native.js';
import { dequantizeQ8KRow, Q8K_BLOCK_BYTES, quantizeQ8KRow } from '../src/q8k.js';
import { splitRange } from '../src/split.js';
import { matrixBytes, placeAt, randomFloats, randomWeights } from '../src/testing/builders.js';
import type { KernelBackend } from '../src/backend.js';
import { F32_SUM_REL, Q8K_SUM_REL } from './tolerances.js';

const BACKENDS: NativeBackend[] = nativePaths().map((p) => nativeBackend(p));
const ALL: KernelBackend[] = [ref, ...BACKENDS];
const SENTINEL = -12345.5;
const KQUANTS = [FloatType.Q4_K, FloatType.Q5_K, FloatType.Q6_K];
const NEW_TYPES = [FloatType.BF16, ...KQUANTS];

function expectExact(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) expect.fail(`${label}: element ${i} is ${actual[i]}, reference ${expected[i]}`);
  }
}

function q8k(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 256) * Q8K_BLOCK_BYTES);
  quantizeQ8KRow(x, out);
  return out;
}

/** The Q8_K rule written out independently: amax/127 in float32, 1/d, ties to even, sums of 16. */
function recipeQ8K(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 256) * 292);
  const v = new DataView(out.buffer);
  for (let b = 0; b < x.length / 256; b++) {
    let amax = 0;
    for (let i = 0; i < 256; i++) if (Math.abs(x[b * 256 + i]!) > amax) amax = Math.abs(x[b * 256 + i]!);
    const d = Math.fround(amax / 127);
    const id = d === 0 ? 0 : Math.fround(1 / d);
    v.setFloat32(b * 292, d, true);
    for (let g = 0; g < 16; g++) {
      let s = 0;
      for (let i = 0; i < 16; i++) {
        const t = Math.fround(x[b * 256 + 16 * g + i]! * id);
        let q = 0;
        if (Number.isFinite(t)) {
          const f = Math.floor(t);
          q = t - f > 0.5 ? f + 1 : t - f < 0.5 ? f : f % 2 === 0 ? f : f + 1;
        }
        out[b * 292 + 4 + 16 * g + i] = q & 0xff;
        s += q;
      }
      v.setInt16(b * 292 + 260 + 2 * g, s, true);
    }
  }
  return out;
}

describe('Q8_K quantization', () => {
  it('the reference follows the rule; every path is bit-identical to it (ties, zeros, NaN, infinities, tiny scales)', () => {
    const x = randomFloats(256 * 9, 5, 3);
    x.fill(0, 256, 512); // zero block
    for (let i = 512; i < 768; i++) x[i] = ((i % 9) - 4) * 0.5 * (127 / 4); // exact .5 ties after scaling
    x[768] = NaN;
    x[1024 + 3] = Infinity;
    for (let i = 1280; i < 1536; i++) x[i] = (i - 1400) * 1e-41; // subnormal inputs, huge 1/d
    const want = q8k(x);
    expectExact('reference vs recipe', want, recipeQ8K(x));
    for (const be of BACKENDS) {
      const got = new Uint8Array(want.length).fill(0xa5);
      be.quantizeQ8K(got, x, 256 * 3, 0, 3);
      expectExact(`${be.path} quantizeQ8K`, got, want);
      // a row range: only its bytes are written
      const part = new Uint8Array(want.length).fill(0xa5);
      be.quantizeQ8K(part, x, 256 * 3, 1, 2);
      expectExact(`${be.path} row 1`, part.subarray(3 * 292, 6 * 292), want.subarray(3 * 292, 6 * 292));
      expect(part.subarray(0, 3 * 292).every((b) => b === 0xa5) && part.subarray(6 * 292).every((b) => b === 0xa5)).toBe(true);
    }
  });
});

/** [nOut, nIn, batch]: K-quant rows are whole super-blocks; BF16 rows any length. */
const K_SHAPES: [number, number, number][] = [
  [1, 256, 1], [37, 512, 1], [9, 1024, 1], [6, 256, 2], [13, 768, 3], [10, 512, 4], [7, 256, 5], [11, 512, 6],
  [9, 768, 7], [6, 256, 8], [5, 512, 17],
  [33, 256, 32], [3, 1280, 33], [2, 256, 70], [301, 4096, 1], [19, 4096, 3], [20, 2048, 32],
];
const BF16_SHAPES: [number, number, number][] = [
  [1, 1, 1], [7, 7, 1], [33, 33, 3], [9, 300, 17], [5, 257, 32], [65, 4096, 1],
];

/** Σ|w·x| per output in float64 (the scale of the F32 sum bound). */
function absScale(type: FloatType, w: Uint8Array, x: Float32Array, nIn: number, nOut: number, batch: number): Float64Array {
  const wd = new Float32Array(nOut * nIn);
  DTYPES[type].dequantize(w.subarray(0, matrixBytes(type, nOut, nIn)), wd);
  const s = new Float64Array(batch * nOut);
  for (let b = 0; b < batch; b++)
    for (let r = 0; r < nOut; r++) {
      let a = 0;
      for (let i = 0; i < nIn; i++) a += Math.abs(wd[r * nIn + i]! * x[b * nIn + i]!);
      s[b * nOut + r] = a + Number.MIN_VALUE;
    }
  return s;
}

/** Rows [r0, r1) of a call must equal the whole call there and leave the rest untouched. */
function expectRanges(label: string, whole: Float32Array, nOut: number, batch: number, run: (out: Float32Array, r0: number, r1: number) => void): void {
  const ranges: [number, number][] = [[0, 1], [Math.min(1, nOut), nOut], [nOut >> 1, nOut]];
  for (const parts of [2, 3]) for (let t = 0; t < parts; t++) ranges.push(splitRange(nOut, parts, t, 4));
  for (const [r0, r1] of ranges) {
    const part = new Float32Array(batch * nOut).fill(SENTINEL);
    run(part, r0, r1);
    for (let b = 0; b < batch; b++)
      for (let r = 0; r < nOut; r++) {
        const e = r >= r0 && r < r1 ? whole[b * nOut + r]! : SENTINEL;
        if (!Object.is(part[b * nOut + r], e)) expect.fail(`${label} [${r0}, ${r1}) batch row ${b}, row ${r}: ${part[b * nOut + r]}, whole call ${e}`);
      }
  }
}

describe('matmul (F32 input) with BF16 and K-quant weights vs the reference', () => {
  for (const type of NEW_TYPES) {
    for (const [nOut, nIn, batch] of type === FloatType.BF16 ? BF16_SHAPES : K_SHAPES) {
      it(`${FloatType[type]} ${nOut}x${nIn} batch ${batch}`, () => {
        const w = randomWeights(type, nOut, nIn, nOut * 31 + nIn * 7 + batch + type);
        const x = randomFloats(batch * nIn, nIn * 3 + batch);
        const want = new Float32Array(batch * nOut);
        ref.matmul(type, want, x, w, nIn, nOut, batch, 0, nOut);
        const tol = absScale(type, w, x, nIn, nOut, batch).map((s) => F32_SUM_REL(nIn) * s);
        for (const be of BACKENDS) {
          const got = new Float32Array(batch * nOut);
          be.matmul(type, got, x, w, nIn, nOut, batch, 0, nOut);
          if (be.path === 'scalar') expectExact(`${be.path} matmul`, got, want);
          else
            for (let i = 0; i < want.length; i++) {
              if (!(Math.abs(got[i]! - want[i]!) <= tol[i]!)) expect.fail(`${be.path}: element ${i} is ${got[i]}, reference ${want[i]} (tol ${tol[i]})`);
            }
          expectRanges(`${be.path} matmul`, got, nOut, batch, (o, r0, r1) => be.matmul(type, o, x, w, nIn, nOut, batch, r0, r1));
        }
      });
    }
  }
});

describe('matmulQ8K: every path gives the reference bits', () => {
  for (const type of KQUANTS) {
    for (const [nOut, nIn, batch] of K_SHAPES) {
      it(`${FloatType[type]} ${nOut}x${nIn} batch ${batch}`, () => {
        const w = randomWeights(type, nOut, nIn, nOut * 13 + nIn + batch + type);
        const xq = q8k(randomFloats(batch * nIn, nIn + 5 * batch, 2));
        const want = new Float32Array(batch * nOut);
        ref.matmulQ8K(type, want, xq, w, nIn, nOut, batch, 0, nOut);
        for (const be of BACKENDS) {
          const got = new Float32Array(batch * nOut);
          be.matmulQ8K(type, got, xq, w, nIn, nOut, batch, 0, nOut);
          expectExact(`${be.path} matmulQ8K`, got, want);
          expectRanges(`${be.path} matmulQ8K`, got, nOut, batch, (o, r0, r1) => be.matmulQ8K(type, o, xq, w, nIn, nOut, batch, r0, r1));
        }
      });
    }
  }

  it('weights with edge scales (f16 extremes, zero and maximal 6-bit scales, negative dmin, int8 scale -128)', () => {
    const nIn = 512;
    const nOut = 23;
    for (const type of KQUANTS) {
      const bpb = DTYPES[type].bytesPerBlock;
      const w = randomWeights(type, nOut, nIn, 99 + type);
      const edges = [0x7bff, 0xfbff, 0x0001, 0x8001, 0x0000, 0x3c00];
      for (let blk = 0; blk < (nOut * nIn) / 256; blk++) {
        const o = blk * bpb;
        const e = edges[blk % edges.length]!;
        if (type === FloatType.Q6_K) {
          w[o + 208] = e & 0xff;
          w[o + 209] = e >> 8;
          if (blk % 3 === 0) w.fill(0x80, o + 192, o + 208);
        } else {
          w[o] = e & 0xff;
          w[o + 1] = e >> 8;
          const m = edges[(blk + 2) % edges.length]!;
          w[o + 2] = m & 0xff;
          w[o + 3] = m >> 8;
          if (blk % 3 === 0) w.fill(0xff, o + 4, o + 16);
          if (blk % 3 === 1) w.fill(0x00, o + 4, o + 16);
        }
      }
      for (const batch of [1, 3, 17]) {
        const xq = q8k(randomFloats(batch * nIn, batch, 100));
        const want = new Float32Array(batch * nOut);
        ref.matmulQ8K(type, want, xq, w, nIn, nOut, batch, 0, nOut);
        for (const be of BACKENDS) {
          const got = new Float32Array(batch * nOut);
          be.matmulQ8K(type, got, xq, w, nIn, nOut, batch, 0, nOut);
          expectExact(`${be.path} ${FloatType[type]} batch ${batch}`, got, want);
        }
      }
    }
  });

  it('weights at unaligned offsets of a SharedArrayBuffer; all backends agree', () => {
    const nIn = 768;
    const nOut = 11;
    for (const type of KQUANTS) {
      const w = randomWeights(type, nOut, nIn, 7 + type);
      const xq = q8k(randomFloats(6 * nIn, 8));
      const want = new Float32Array(6 * nOut);
      ref.matmulQ8K(type, want, xq, w, nIn, nOut, 6, 0, nOut);
      for (const be of ALL)
        for (const offset of [1, 3, 18]) {
          const got = new Float32Array(new SharedArrayBuffer(4 * 6 * nOut));
          be.matmulQ8K(type, got, placeAt(xq, offset, true), placeAt(w, offset, true), nIn, nOut, 6, 0, nOut);
          expectExact(`${be.name} ${FloatType[type]} offset ${offset}`, got, want);
        }
    }
  });

  it('the reference is the float64 product of the decoded weights and inputs, within its rounding bound', () => {
    const nIn = 1024;
    const nOut = 9;
    const batch = 2;
    for (const type of KQUANTS) {
      const w = randomWeights(type, nOut, nIn, 3 + type);
      const xq = q8k(randomFloats(batch * nIn, 4));
      const got = new Float32Array(batch * nOut);
      ref.matmulQ8K(type, got, xq, w, nIn, nOut, batch, 0, nOut);
      const xd = new Float32Array(batch * nIn);
      dequantizeQ8KRow(xq, xd);
      const bpb = DTYPES[type].bytesPerBlock;
      for (let r = 0; r < nOut; r++) {
        // float64 weights from the block fields (no float32 rounding at all)
        const w64 = new Float64Array(nIn);
        const wf = new Float32Array(256);
        for (let k = 0; k < nIn / 256; k++) {
          const o = (r * (nIn / 256) + k) * bpb;
          // integers q by decoding with d = 1, dmin = 0 through the format table
          const blk = w.slice(o, o + bpb);
          const half = f16;
          if (type === FloatType.Q6_K) {
            const d = half(blk[208]! | (blk[209]! << 8));
            blk[208] = 0x00;
            blk[209] = 0x3c;
            DTYPES[type].dequantize(blk, wf); // sc·(q − 32), exact
            for (let i = 0; i < 256; i++) w64[256 * k + i] = d * wf[i]!;
          } else {
            const d = half(blk[0]! | (blk[1]! << 8));
            const dmin = half(blk[2]! | (blk[3]! << 8));
            blk.set([0x00, 0x3c, 0x00, 0x00]);
            DTYPES[type].dequantize(blk, wf); // sc·q, exact
            for (let i = 0; i < 256; i++) w64[256 * k + i] = d * wf[i]! - dmin * kMin(w, o + 4, i >> 5);
            expect(kScale(w, o + 4, 0)).toBeGreaterThanOrEqual(0);
          }
        }
        for (let b = 0; b < batch; b++) {
          let exact = 0;
          let mag = 0;
          for (let i = 0; i < nIn; i++) {
            exact += w64[i]! * xd[b * nIn + i]!;
            mag += Math.abs(w64[i]! * xd[b * nIn + i]!);
          }
          const bound = Q8K_SUM_REL(nIn / 256) * mag + Number.MIN_VALUE;
          const diff = Math.abs(got[b * nOut + r]! - exact);
          if (!(diff <= bound)) expect.fail(`${FloatType[type]} row ${r} batch ${b}: ${got[b * nOut + r]} vs ${exact} (diff ${diff} > ${bound})`);
        }
      }
    }
  });
});

function f16(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  return e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
}

describe('argument checks for the new types', () => {
  it('refuses K-quant rows that are not whole super-blocks, and non-K weights for matmulQ8K', () => {
    for (const be of BACKENDS) {
      const out = new Float32Array(4);
      expect(() => be.matmul(FloatType.Q4_K, out, new Float32Array(288), new Uint8Array(1000), 288, 1, 1, 0, 1)).toThrow(/multiple of 256/);
      expect(() => be.matmulQ8K(FloatType.Q40, out, new Uint8Array(292), new Uint8Array(1000), 256, 1, 1, 0, 1)).toThrow(/Q4_K/);
      expect(() => be.matmulQ8K(FloatType.Q6_K, out, new Uint8Array(291), new Uint8Array(210), 256, 1, 1, 0, 1)).toThrow(/xq is too short/);
      expect(() => be.matmulQ8K(FloatType.Q6_K, out, new Uint8Array(292), new Uint8Array(209), 256, 1, 1, 0, 1)).toThrow(/w is too short/);
      expect(() => be.quantizeQ8K(new Uint8Array(292), new Float32Array(256), 128, 0, 1)).toThrow(/multiple of 256/);
      expect(() => be.matmul(8 as FloatType, out, new Float32Array(256), new Uint8Array(1000), 256, 1, 1, 0, 1)).toThrow(/wType/);
    }
    expect(() => ref.matmulQ8K(FloatType.Q80, new Float32Array(1), new Uint8Array(292), new Uint8Array(34 * 8), 256, 1, 1, 0, 1)).toThrow(RangeError);
  });
});
