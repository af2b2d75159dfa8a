/**
 * Every native op against the reference backend, for every weight dtype and every CPU path this
 * machine has (each path forced explicitly), on deterministic inputs of awkward sizes. The
 * scalar path reproduces the reference's operation order and must match it bit for bit; SIMD
 * paths sum in other orders and must stay within the bounds of tolerances.ts, except matmulQ80
 * (dllama's arithmetic, one order on every path: bit for bit everywhere). The dllama-numerics
 * ops are tested in dllama.test.ts.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DTYPES, FloatType, Q80_BLOCK_BYTES, Q_BLOCK } from '@airllm/format';
import type { KernelBackend } from '../src/backend.js';
import { referenceBackend as ref } from '../src/reference.js';
import { nativeBackend, nativePaths, readSum, type NativeBackend } from '../src/native.js';
import { ropeFrequencies } from '../src/rope.js';
import { splitRange } from '../src/split.js';
import { matrixBytes, placeAt, randomFloats, randomWeights } from '../src/testing/builders.js';
import { recipeQ80 } from './recipe.js';
import { EXP_REL, F32_SUM_REL, RMSNORM_REL, ROPE_REL, SOFTMAX_REL, SWIGLU_REL, U } from './tolerances.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURES = path.resolve(here, '../../../../shared/fixtures');

const PATHS = nativePaths();
const BACKENDS: NativeBackend[] = PATHS.map((p) => nativeBackend(p));
const SENTINEL = -12345.5;

function expectWithin(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tol: ArrayLike<number> | number): void {
  for (let i = 0; i < expected.length; i++) {
    const t = typeof tol === 'number' ? tol : tol[i]!;
    const d = Math.abs(actual[i]! - expected[i]!);
    if (!(d <= t) && !(Number.isNaN(actual[i]!) && Number.isNaN(expected[i]!))) {
      expect.fail(`${label}: element ${i} is ${actual[i]}, reference ${expected[i]} (|diff| ${d} > ${t})`);
    }
  }
}

function expectExact(label: string, actual: ArrayLike<number>, expected: ArrayLike<number>): void {
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) expect.fail(`${label}: element ${i} is ${actual[i]}, reference ${expected[i]}`);
  }
}

/** Σ_i |w_ri · x_bi| per output, from float64-decoded operands: the scale of every sum bound. */
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

function quantize(x: Float32Array): Uint8Array {
  const xq = new Uint8Array((x.length / Q_BLOCK) * Q80_BLOCK_BYTES);
  DTYPES[FloatType.Q80].quantize(x, xq);
  return xq;
}

it('this machine offers at least the scalar path', () => {
  expect(PATHS).toContain('scalar');
  for (const b of BACKENDS) expect(b.fallbacks).toEqual([]);
});

/*
 * Shapes: [nOut, nIn, batch]. Batches cover the "rows" kernels (1..4), the "lanes" kernels with
 * partial and several SIMD tiles (5, 17, 32, 33, 70) and the 256-row supertile boundary (300).
 */
const F_SHAPES: [number, number, number][] = [
  [1, 1, 1], [7, 7, 1], [33, 33, 2], [31, 7, 3], [9, 100, 4], [5, 1, 5], [9, 33, 17], [33, 64, 32], [4, 45, 33],
  [13, 31, 70], [4097, 4096, 1],
];
const Q_SHAPES: [number, number, number][] = [
  [1, 32, 1], [31, 96, 1], [33, 64, 2], [17, 96, 3], [9, 128, 4], [7, 96, 5], [5, 64, 17], [6, 160, 32], [3, 32, 33],
  [11, 96, 70], [2, 64, 300], [4097, 4096, 1], [64, 4096, 32],
  // rows kernels (batch <= 7 with VNNI) over full 16-block groups plus partial (odd) groups, nOut
  // not a multiple of the row streams: [45, 1088] has 34 blocks per row, [9, 2080] 65, [37, 672] 21
  [45, 1088, 1], [9, 2080, 1], [37, 672, 2], [19, 1056, 3], [23, 544, 4], [11, 544, 6], [13, 1088, 7],
];

const DTYPE_TABLE = [
  { type: FloatType.F32, shapes: F_SHAPES },
  { type: FloatType.F16, shapes: F_SHAPES },
  { type: FloatType.Q40, shapes: Q_SHAPES },
  { type: FloatType.Q80, shapes: Q_SHAPES },
];

describe('matmul (F32 input) and matmulQ80 (Q80 input) vs the reference', () => {
  for (const { type, shapes } of DTYPE_TABLE) {
    for (const [nOut, nIn, batch] of shapes) {
      const quant = type === FloatType.Q40 || type === FloatType.Q80;
      // the reference takes seconds on the 4097-row shapes of a loaded machine
      it(`${FloatType[type]} ${nOut}x${nIn} batch ${batch}`, { timeout: 60_000 }, () => {
        const w = randomWeights(type, nOut, nIn, nOut * 31 + nIn * 7 + batch);
        const x = randomFloats(batch * nIn, nIn * 3 + batch);
        const want = new Float32Array(batch * nOut);
        ref.matmul(type, want, x, w, nIn, nOut, batch, 0, nOut);
        const scale = absScale(type, w, x, nIn, nOut, batch);
        const tol = scale.map((s) => F32_SUM_REL(nIn) * s);
        const xq = quant ? quantize(x) : undefined;
        const wantQ = new Float32Array(batch * nOut);
        if (xq) ref.matmulQ80(type, wantQ, xq, w, nIn, nOut, batch, 0, nOut);
        // a sub-range of rows: everything outside it must stay untouched
        const [r0, r1] = nOut > 2 ? [1, nOut - 1] : [0, nOut];
        for (const be of BACKENDS) {
          const got = new Float32Array(batch * nOut);
          be.matmul(type, got, x, w, nIn, nOut, batch, 0, nOut);
          if (be.path === 'scalar') expectExact(`${be.path} matmul`, got, want);
          else expectWithin(`${be.path} matmul`, got, want, tol);
          const part = new Float32Array(batch * nOut).fill(SENTINEL);
          be.matmul(type, part, x, w, nIn, nOut, batch, r0, r1);
          for (let b = 0; b < batch; b++)
            for (let r = 0; r < nOut; r++) {
              const v = part[b * nOut + r]!;
              if (r >= r0 && r < r1) expect(v).toBe(got[b * nOut + r]);
              else expect(v).toBe(SENTINEL);
            }
          if (xq) {
            const gotQ = new Float32Array(batch * nOut);
            be.matmulQ80(type, gotQ, xq, w, nIn, nOut, batch, 0, nOut);
            expectExact(`${be.path} matmulQ80`, gotQ, wantQ);
            const partQ = new Float32Array(batch * nOut).fill(SENTINEL);
            be.matmulQ80(type, partQ, xq, w, nIn, nOut, batch, r0, r1);
            for (let b = 0; b < batch; b++)
              for (let r = 0; r < nOut; r++) {
                const v = partQ[b * nOut + r]!;
                if (r >= r0 && r < r1) expect(v).toBe(gotQ[b * nOut + r]);
                else expect(v).toBe(SENTINEL);
              }
          }
        }
      });
    }
  }

  it('weights at unaligned offsets of a SharedArrayBuffer, activations on SharedArrayBuffers', () => {
    for (const type of [FloatType.F32, FloatType.F16, FloatType.Q40, FloatType.Q80]) {
      const nOut = 19;
      const nIn = 96;
      const batch = 6;
      const w = randomWeights(type, nOut, nIn, 77 + type);
      const x = randomFloats(batch * nIn, 78);
      const xs = new Float32Array(new SharedArrayBuffer(x.byteLength));
      xs.set(x);
      for (const be of BACKENDS) {
        const want = new Float32Array(batch * nOut);
        be.matmul(type, want, x, w, nIn, nOut, batch, 0, nOut);
        for (const offset of [1, 2, 3, 18]) {
          const ws = placeAt(w, offset, true);
          const out = new Float32Array(new SharedArrayBuffer(4 * batch * nOut));
          be.matmul(type, out, xs, ws, nIn, nOut, batch, 0, nOut);
          expectExact(`${be.path} ${FloatType[type]} offset ${offset}`, out, want);
        }
      }
    }
  });

  it('several threads sharing one matmul through splitRange produce the single-thread result', () => {
    const nOut = 333;
    const nIn = 128;
    const w = randomWeights(FloatType.Q40, nOut, nIn, 3);
    const xq = quantize(randomFloats(nIn * 2, 4));
    for (const be of BACKENDS) {
      const whole = new Float32Array(2 * nOut);
      be.matmulQ80(FloatType.Q40, whole, xq, w, nIn, nOut, 2, 0, nOut);
      const parts = new Float32Array(2 * nOut).fill(SENTINEL);
      for (let t = 0; t < 3; t++) {
        const [a, b] = splitRange(nOut, 3, t, 4);
        be.matmulQ80(FloatType.Q40, parts, xq, w, nIn, nOut, 2, a, b);
      }
      expectExact(`${be.path} split`, parts, whole);
    }
  });
});

/**
 * Rows split as threads split them, and odd ranges: `run` writes rows [r0, r1) of a call into
 * `part`; each must be bit-identical to the whole call `got`, and the other rows untouched.
 */
function expectRangesAsWhole(got: Float32Array, nOut: number, batch: number, run: (part: Float32Array, r0: number, r1: number) => void): void {
  const ranges: [number, number][] = [[0, 1], [1, nOut], [Math.min(5, nOut), Math.min(nOut, 22)], [nOut >> 1, nOut]];
  for (const parts of [2, 3]) for (let t = 0; t < parts; t++) ranges.push(splitRange(nOut, parts, t, 4));
  for (const [r0, r1] of ranges) {
    const part = new Float32Array(batch * nOut).fill(SENTINEL);
    run(part, r0, r1);
    for (let b = 0; b < batch; b++)
      for (let r = 0; r < nOut; r++) {
        const v = part[b * nOut + r]!;
        const e = r >= r0 && r < r1 ? got[b * nOut + r]! : SENTINEL;
        if (!Object.is(v, e)) expect.fail(`[${r0}, ${r1}) batch row ${b}, row ${r}: ${v}, whole call ${e}`);
      }
  }
}

/** The CPU flags Linux lists in /proc/cpuinfo ('' elsewhere). */
const CPU_FLAGS = ((): string => {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
})();
function cpuHasAmx(): boolean {
  return /\bamx_int8\b/.test(CPU_FLAGS) && /\bamx_tile\b/.test(CPU_FLAGS) && /\bavx512vbmi\b/.test(CPU_FLAGS);
}
/** addon.c's rule: AIRLLM_KERNELS_NO_AMX set to anything but '' or '0' hides the AMX path. */
const AMX_HIDDEN = !['', '0'].includes(process.env.AIRLLM_KERNELS_NO_AMX ?? '');

/*
 * The AMX path (avx512amx): batched Q40xQ80 and Q80xQ80 on tiles of 16 weight rows x 16 batch
 * rows. On a CPU whose /proc/cpuinfo lists AMX-INT8 the path must be offered and chosen first
 * (unless AIRLLM_KERNELS_NO_AMX hides it), so a silent fallback to VNNI fails here. Shapes cover
 * partial row tiles (1, 15, 17, 31, 33, 4097 rows), partial batch tiles (6, 17, 33), several
 * batch tiles (32, 64), block counts that are not multiples of the 4-block steps or 16-block
 * chunks (nIn 96, 544, 1088), and sub-ranges that must be bit-identical to the whole call.
 */
describe('AMX path (avx512amx)', () => {
  it('is offered first when the CPU has AMX-INT8, and names its features', () => {
    if (!cpuHasAmx() || AMX_HIDDEN) {
      expect(PATHS).not.toContain(AMX_HIDDEN ? 'avx512amx' : 'no such path');
      return;
    }
    expect(PATHS[0]).toBe('avx512amx');
    const amx = BACKENDS[0]!;
    expect(amx.features).toContain('amx-int8');
    expect(amx.features).toContain('amx-tile');
  });

  const AMX_SHAPES: [number, number, number][] = [
    [23, 160, 5], [1, 32, 6], [16, 96, 16], [15, 544, 17], [17, 1088, 32], [31, 128, 33], [33, 544, 64], [4097, 128, 17],
    [40, 4096, 32], [2, 96, 300],
  ];
  const amx = BACKENDS.find((b) => b.path === 'avx512amx');
  for (const type of [FloatType.Q40, FloatType.Q80]) {
    for (const [nOut, nIn, batch] of AMX_SHAPES) {
      it.runIf(amx !== undefined)(`${FloatType[type]} ${nOut}x${nIn} batch ${batch}: reference bit for bit, sub-ranges`, () => {
        const be = amx!;
        const w = randomWeights(type, nOut, nIn, nOut * 13 + nIn + batch + type);
        const xq = quantize(randomFloats(batch * nIn, nIn + 5 * batch));
        const want = new Float32Array(batch * nOut);
        ref.matmulQ80(type, want, xq, w, nIn, nOut, batch, 0, nOut);
        const got = new Float32Array(batch * nOut).fill(SENTINEL);
        be.matmulQ80(type, got, xq, w, nIn, nOut, batch, 0, nOut);
        // the tile epilogue is acc = fma(float(block dot), dw * dx, acc) per row in block order: dllama's
        expectExact(`${be.path} matmulQ80`, got, want);
        expectRangesAsWhole(got, nOut, batch, (part, r0, r1) => be.matmulQ80(type, part, xq, w, nIn, nOut, batch, r0, r1));
      });
    }
  }
});

/*
 * The AMX-BF16 kernel (avx512amx where the CPU has AMX-BF16): Q40 and Q80 weights with F32 input
 * from batch 5, every activation split exactly into three bf16 pieces. Against the reference within
 * the F32 sum bound, sub-ranges bit-identical to the whole call; inputs the tile unit would flush
 * (a magnitude below 2^-96) or non-finite ones must go to the VNNI kernel instead, so those
 * results equal avx512vnni's bit for bit, while ordinary inputs must not (the tiles ran).
 */
function cpuHasAmxBf16(): boolean {
  return cpuHasAmx() && /\bamx_bf16\b/.test(CPU_FLAGS) && /\bavx512_bf16\b/.test(CPU_FLAGS);
}

describe('AMX-BF16: Q40 and Q80 weights x F32 input', () => {
  const amx = BACKENDS.find((b) => b.path === 'avx512amx');
  const vnni = BACKENDS.find((b) => b.path === 'avx512vnni');
  const run = amx !== undefined && vnni !== undefined && cpuHasAmxBf16();

  it('is part of the AMX path when the CPU has AMX-BF16', () => {
    if (amx === undefined) return;
    expect(amx.features.includes('amx-bf16')).toBe(cpuHasAmxBf16());
  });

  const SHAPES: [number, number, number][] = [
    [23, 160, 5], [1, 32, 6], [16, 96, 16], [15, 544, 17], [17, 1088, 32], [31, 128, 33], [33, 544, 64],
    [4097, 128, 17], [40, 4096, 32], [3, 96, 65], [2, 96, 300],
    // rows longer than one chunk (at most 128 blocks): 130 blocks in 2 chunks, 257 in 3 (the last odd)
    [9, 4160, 33], [37, 8224, 17],
  ];
  const TYPES = [FloatType.Q40, FloatType.Q80];
  for (const type of TYPES) for (const [nOut, nIn, batch] of SHAPES) {
    it.runIf(run)(`${FloatType[type]} ${nOut}x${nIn} batch ${batch}: reference, sub-ranges, not the VNNI kernel`, () => {
      const w = randomWeights(type, nOut, nIn, nOut * 17 + nIn + batch + type);
      const x = randomFloats(batch * nIn, nIn + 3 * batch);
      const want = new Float32Array(batch * nOut);
      ref.matmul(type, want, x, w, nIn, nOut, batch, 0, nOut);
      const tol = absScale(type, w, x, nIn, nOut, batch).map((s) => F32_SUM_REL(nIn) * s);
      const got = new Float32Array(batch * nOut).fill(SENTINEL);
      amx!.matmul(type, got, x, w, nIn, nOut, batch, 0, nOut);
      expectWithin(`avx512amx matmul ${FloatType[type]}`, got, want, tol);
      expectRangesAsWhole(got, nOut, batch, (part, r0, r1) => amx!.matmul(type, part, x, w, nIn, nOut, batch, r0, r1));
      if (nIn >= 128) {
        const v = new Float32Array(batch * nOut);
        vnni!.matmul(type, v, x, w, nIn, nOut, batch, 0, nOut);
        expect(got.some((g, i) => !Object.is(g, v[i])), 'identical to the VNNI kernel: the tiles did not run').toBe(true);
      }
    });
  }

  const edge: [string, (x: Float32Array) => void][] = [
    ['one input of 1e-35', (x) => { x[77] = 1e-35; }],
    ['all inputs scaled by 2^-110', (x) => { for (let i = 0; i < x.length; i++) x[i]! *= 2 ** -110; }],
    ['one infinite input', (x) => { x[5] = Infinity; }],
    ['one NaN input', (x) => { x[x.length - 1] = NaN; }],
  ];
  for (const type of TYPES) for (const [what, edit] of edge) {
    it.runIf(run)(`${FloatType[type]}, ${what}: the VNNI kernel's result, bit for bit`, () => {
      const [nOut, nIn, batch] = [19, 256, 20];
      const w = randomWeights(type, nOut, nIn, 901 + type);
      const x = randomFloats(batch * nIn, 902);
      edit(x);
      const got = new Float32Array(batch * nOut);
      amx!.matmul(type, got, x, w, nIn, nOut, batch, 0, nOut);
      const v = new Float32Array(batch * nOut);
      vnni!.matmul(type, v, x, w, nIn, nOut, batch, 0, nOut);
      expectExact('avx512amx vs avx512vnni', got, v);
      if (Number.isFinite(x[5]!) && !x.some(Number.isNaN)) {
        const want = new Float32Array(batch * nOut);
        ref.matmul(type, want, x, w, nIn, nOut, batch, 0, nOut);
        const tol = absScale(type, w, x, nIn, nOut, batch).map((s) => F32_SUM_REL(nIn) * s);
        expectWithin(`avx512amx matmul ${FloatType[type]}`, got, want, tol);
      }
    });
  }
});

describe('Q80 quantization and dequantization', () => {
  it('quantizeQ80 is bit-identical to the reference (and so to FORMAT.md), incl. .5 ties, NaN and infinities', () => {
    for (const n of [32, 96, 4096]) {
      const rows = 3;
      const x = randomFloats(rows * n, n, 50);
      for (let i = 0; i < 32; i++) x[i] = i === 0 ? 127 : (i % 2 ? 1 : -1) * (i + 0.5); // d = 1: exact ties
      for (let i = 32; i < 64; i++) x[i] = i === 32 ? 63.5 : (i % 3) * 0.25 - 0.25; // d = 0.5: ties at 0.25, 0.75
      if (n > 64) {
        x[70] = NaN; // NaN: skipped by amax, quantized to 0
        x[100] = Infinity; // the whole block becomes d = inf, q = 0
        x.fill(0, 128, 160);
        x[170] = 1e-30; // subnormal scale
      }
      const want = new Uint8Array(rows * (n / 32) * 34);
      ref.quantizeQ80(want, x, n, 0, rows);
      const recipe = recipeQ80(x.map((v) => (Number.isFinite(v) ? v : 0)));
      for (const be of BACKENDS) {
        const got = new Uint8Array(want.length).fill(0xa5);
        be.quantizeQ80(got, x, n, 0, rows);
        expect(Buffer.from(got).equals(Buffer.from(want)), `${be.path} n=${n}`).toBe(true);
        if (n <= 64) expect(Buffer.from(got).equals(Buffer.from(recipe)), `${be.path} n=${n} vs FORMAT.md recipe`).toBe(true);
        const part = new Uint8Array(want.length).fill(0xa5);
        be.quantizeQ80(part, x, n, 1, 2);
        const rb = (n / 32) * 34;
        expect(part.subarray(0, rb).every((v) => v === 0xa5)).toBe(true);
        expect(Buffer.from(part.subarray(rb, 2 * rb)).equals(Buffer.from(want.subarray(rb, 2 * rb)))).toBe(true);
        expect(part.subarray(2 * rb).every((v) => v === 0xa5)).toBe(true);
        const deq = new Float32Array(rows * n);
        const deqRef = new Float32Array(rows * n);
        be.dequantizeQ80(deq, want, n, 0, rows);
        ref.dequantizeQ80(deqRef, want, n, 0, rows);
        expectExact(`${be.path} dequantizeQ80`, deq, deqRef);
      }
    }
  });

  it("Q40 fixture's first block decodes to FORMAT.md §c.1's worked example", () => {
    const file = readFileSync(path.join(FIXTURES, 'dllama_model_stories260k_hidden192_q40.m'));
    const block = file.subarray(131168, 131168 + 18);
    expect(Array.from(block).map((b) => b.toString(16).padStart(2, '0')).join(' ')).toBe(
      'ce 28 69 2a 78 59 59 b7 89 b8 82 80 37 08 7b 7b a4 49',
    );
    const w = new Uint8Array(block);
    const d = 0.03753662109375; // f16 0x28CE
    for (const be of [ref as KernelBackend, ...BACKENDS]) {
      // one-hot inputs read the decoded weights back exactly (w·1 + 0 + ... = w)
      const decoded: number[] = [];
      for (let i = 0; i < 32; i++) {
        const x = new Float32Array(32);
        x[i] = 1;
        const out = new Float32Array(1);
        be.matmul(FloatType.Q40, out, x, w, 32, 1, 1, 0, 1);
        decoded.push(out[0]!);
      }
      expect(decoded[0], be.name).toBe(d); // (9 - 8)·d
      expect(decoded[16]).toBe(-2 * d); // (6 - 8)·d
      expect(decoded.slice(0, 3).map((v) => v.toFixed(4))).toEqual(['0.0375', '0.0751', '0.0000']);
    }
  });
});

describe('row ops vs the reference', () => {
  it('rmsnorm (rows 1, 31, 33, 4097 wide), range honoured', () => {
    for (const n of [1, 31, 33, 4097]) {
      const rows = 3;
      const x = randomFloats(rows * n, n, 4);
      const w = randomFloats(n, n + 1, 2);
      const want = new Float32Array(rows * n).fill(SENTINEL);
      ref.rmsnorm(want, x, w, n, 1e-5, 1, 3);
      for (const be of BACKENDS) {
        const got = new Float32Array(rows * n).fill(SENTINEL);
        be.rmsnorm(got, x, w, n, 1e-5, 1, 3);
        if (be.path === 'scalar') expectExact('rmsnorm', got, want);
        else expectWithin(`${be.path} rmsnorm`, got, want, Array.from(want, (v) => 2 * RMSNORM_REL(n) * Math.abs(v)));
        expect(got.subarray(0, n).every((v) => v === SENTINEL)).toBe(true);
      }
    }
  });

  it('softmax (1, 7, 33, 4097), range honoured', () => {
    for (const n of [1, 7, 33, 4097]) {
      const x = randomFloats(3 * n, n, 20);
      const want = Float32Array.from(x);
      ref.softmax(want, n, 0, 2);
      for (const be of BACKENDS) {
        const got = Float32Array.from(x);
        be.softmax(got, n, 0, 2);
        expectWithin(`${be.path} softmax`, got.subarray(0, 2 * n), want.subarray(0, 2 * n), Array.from(want.subarray(0, 2 * n), (v) => 2 * SOFTMAX_REL(n) * v));
        expectExact('untouched row', got.subarray(2 * n), x.subarray(2 * n));
      }
    }
  });

  it('rope, adjacent pairs and half split, head range honoured', () => {
    for (const [headDim, nHeads] of [[2, 1], [8, 5], [64, 3], [128, 2]] as const) {
      const freqs = ropeFrequencies(headDim, 10000);
      for (const halfSplit of [false, true]) {
        const batch = 3;
        const x = randomFloats(batch * nHeads * headDim, headDim + nHeads, 2);
        const want = Float32Array.from(x);
        ref.rope(want, nHeads, headDim, 1000, batch, freqs, halfSplit, 0, nHeads);
        for (const be of BACKENDS) {
          const got = Float32Array.from(x);
          be.rope(got, nHeads, headDim, 1000, batch, freqs, halfSplit, 0, nHeads);
          expectWithin(`${be.path} rope`, got, want, Array.from(x, (v) => 2 * ROPE_REL * (Math.abs(v) + 2)));
          const part = Float32Array.from(x);
          be.rope(part, nHeads, headDim, 1000, batch, freqs, halfSplit, nHeads - 1, nHeads);
          for (let b = 0; b < batch; b++)
            for (let i = 0; i < (nHeads - 1) * headDim; i++) expect(part[b * nHeads * headDim + i]).toBe(x[b * nHeads * headDim + i]);
        }
      }
    }
  });

  it('attention: GQA, one position and a causal batch, head range honoured, out may alias q', () => {
    for (const [nHeads, nKv, hd, pos0, batch] of [[1, 1, 1, 0, 1], [4, 2, 8, 0, 1], [8, 2, 16, 30, 3], [6, 3, 64, 100, 5], [4, 4, 33, 7, 1]] as const) {
      const T = pos0 + batch;
      const q = randomFloats(batch * nHeads * hd, hd, 2);
      const k = randomFloats(T * nKv * hd, hd + 1, 2);
      const v = randomFloats(T * nKv * hd, hd + 2);
      const want = new Float32Array(batch * nHeads * hd);
      ref.attention(want, q, k, v, new Float32Array(T), nHeads, nKv, hd, pos0, batch, 0, nHeads);
      // bound: score sums of hd products (|q||k| ≤ 4 each) shift probabilities by ≤ 2δ relative
      const scoreErr = (F32_SUM_REL(hd) * hd * 4) / Math.sqrt(hd);
      const tol = 2 * scoreErr + SOFTMAX_REL(T) + F32_SUM_REL(T);
      for (const be of BACKENDS) {
        const got = new Float32Array(batch * nHeads * hd);
        be.attention(got, q, k, v, new Float32Array(T), nHeads, nKv, hd, pos0, batch, 0, nHeads);
        expectWithin(`${be.path} attention`, got, want, tol);
        const inPlace = Float32Array.from(q);
        be.attention(inPlace, inPlace, k, v, new Float32Array(T), nHeads, nKv, hd, pos0, batch, 0, nHeads);
        expectExact(`${be.path} attention in place`, inPlace, got);
        if (nHeads > 1) {
          const part = new Float32Array(batch * nHeads * hd).fill(SENTINEL);
          be.attention(part, q, k, v, new Float32Array(T), nHeads, nKv, hd, pos0, batch, 1, nHeads);
          for (let b = 0; b < batch; b++) for (let i = 0; i < hd; i++) expect(part[b * nHeads * hd + i]).toBe(SENTINEL);
        }
      }
    }
  });

  it('swiglu (1, 7, 33, 4097 elements; out may be gate), range honoured', () => {
    for (const n of [1, 7, 33, 4097]) {
      const g = randomFloats(n, n, 12);
      const u = randomFloats(n, n + 1, 3);
      const want = new Float32Array(n);
      ref.swiglu(want, g, u, 0, n);
      for (const be of BACKENDS) {
        const got = Float32Array.from(g);
        be.swiglu(got, got, u, 0, n);
        expectWithin(`${be.path} swiglu`, got, want, Array.from(want, (v) => 2 * SWIGLU_REL * Math.abs(v) + 1e-45));
        const part = new Float32Array(n).fill(SENTINEL);
        be.swiglu(part, g, u, Math.floor(n / 2), n);
        for (let i = 0; i < Math.floor(n / 2); i++) expect(part[i]).toBe(SENTINEL);
      }
    }
    // far tails: silu(g) -> 0 for g << 0, -> g for g >> 0
    const g = new Float32Array([-200, -90, 90, 200]);
    const u = new Float32Array([1, 1, 1, 1]);
    for (const be of BACKENDS) {
      const out = new Float32Array(4);
      be.swiglu(out, g, u, 0, 4);
      expect(Math.abs(out[0]!)).toBeLessThan(1e-30);
      expect(Math.abs(out[1]!)).toBeLessThan(1e-30);
      expect(out[2]).toBe(90);
      expect(out[3]).toBe(200);
    }
  });

  it('addScaled is exact (one rounding for the product, one for the sum), scale rounded to float32', () => {
    for (const scale of [1, 0.1, -3.25]) {
      const n = 1031;
      const out0 = randomFloats(n, 1);
      const x = randomFloats(n, 2, 5);
      const want = Float32Array.from(out0);
      ref.addScaled(want, x, scale, 3, n - 2);
      for (const be of BACKENDS) {
        const got = Float32Array.from(out0);
        be.addScaled(got, x, scale, 3, n - 2);
        expectExact(`${be.path} addScaled ${scale}`, got, want);
      }
    }
  });

  it('argmax returns the first maximal index', () => {
    for (const n of [1, 2, 31, 4097, 32000]) {
      const x = randomFloats(n, n);
      if (n > 10) x[n - 3] = x[7] = 9; // two equal maxima: the first wins
      for (const be of BACKENDS) expect(be.argmax(x, n)).toBe(ref.argmax(x, n));
    }
  });

  it('moeRoute: same experts, weights within softmax tolerance, range honoured', () => {
    for (const [nE, k] of [[1, 1], [8, 2], [128, 8], [33, 33]] as const) {
      const rows = 3;
      const logits = randomFloats(rows * nE, nE, 4);
      const wantLogits = Float32Array.from(logits);
      const wantE = new Int32Array(rows * k).fill(-7);
      const wantW = new Float32Array(rows * k);
      ref.moeRoute(wantE, wantW, wantLogits, nE, k, 1, rows);
      for (const be of BACKENDS) {
        const l = Float32Array.from(logits);
        const e = new Int32Array(rows * k).fill(-7);
        const w = new Float32Array(rows * k);
        be.moeRoute(e, w, l, nE, k, 1, rows);
        expect(Array.from(e)).toEqual(Array.from(wantE));
        expectWithin(`${be.path} moe weights`, w, wantW, Array.from(wantW, (v) => 2 * (SOFTMAX_REL(nE) + (k + 2) * U) * v));
        expectExact('row 0 untouched', l.subarray(0, nE), logits.subarray(0, nE));
      }
    }
  });
});

describe('vectorised exp', () => {
  it(`max relative error over [-87, 88] stays within EXP_REL (${EXP_REL.toExponential(2)})`, () => {
    const n = 200001;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = -87 + (175 * i) / (n - 1);
    for (const be of BACKENDS) {
      const out = new Float32Array(n);
      be.vexp(out, x, n);
      let worst = 0;
      for (let i = 0; i < n; i++) {
        const e = Math.exp(x[i]!);
        worst = Math.max(worst, Math.abs(out[i]! - e) / e);
      }
      expect(worst, be.path).toBeLessThanOrEqual(EXP_REL);
      const edge = new Float32Array([-1000, -88, 0, NaN]);
      const eo = new Float32Array(4);
      be.vexp(eo, edge, 4);
      expect(eo[0]).toBe(0);
      expect(eo[1]).toBeLessThan(1e-37);
      expect(eo[2]).toBe(1);
      expect(Number.isNaN(eo[3])).toBe(true);
    }
  });
});

describe('readSum (memory read probe)', () => {
  it('sums every 64-bit word once, with one stream or several', () => {
    // 4 KiB: with 1, 2 and 4 streams every part is a whole number of 128-byte steps, so each
    // variant adds the same little-endian words; the expected value is computed independently
    const buf = new Uint8Array(4096);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 131 + 7) & 255;
    let want = 0n;
    for (const w of new BigUint64Array(buf.buffer)) want = (want + w) & 0xffffffffffffffffn;
    const expected = Number(want & ((1n << 53n) - 1n));
    for (const streams of [undefined, 1, 2, 4]) expect(readSum(buf, streams), `streams ${streams}`).toBe(expected);
    expect(() => readSum(buf, 0)).toThrow(RangeError);
    expect(() => readSum(buf, 17)).toThrow(RangeError);
  });
});

describe('argument validation: typed errors, never a crash', () => {
  const be = BACKENDS[0]!;
  const w = randomWeights(FloatType.Q40, 4, 64, 1);
  const x = randomFloats(64, 2);
  const out = new Float32Array(4);
  const cases: [string, () => void, string][] = [
    ['w too short', () => be.matmul(FloatType.Q40, out, x, w.subarray(0, 100), 64, 4, 1, 0, 4), 'RangeError'],
    ['x too short', () => be.matmul(FloatType.Q40, out, x.subarray(0, 63), w, 64, 4, 1, 0, 4), 'RangeError'],
    ['out too short', () => be.matmul(FloatType.Q40, out.subarray(0, 3), x, w, 64, 4, 1, 0, 4), 'RangeError'],
    ['r1 > nOut', () => be.matmul(FloatType.Q40, out, x, w, 64, 4, 1, 0, 5), 'RangeError'],
    ['nIn not a multiple of 32', () => be.matmul(FloatType.Q40, out, x, w, 60, 4, 1, 0, 4), 'RangeError'],
    ['bad dtype', () => be.matmul(7 as FloatType, out, x, w, 64, 4, 1, 0, 4), 'RangeError'],
    ['F32 weights for matmulQ80', () => be.matmulQ80(FloatType.F32, out, new Uint8Array(68), w, 64, 4, 1, 0, 4), 'RangeError'],
    ['x not a Float32Array', () => be.matmul(FloatType.Q40, out, new Float64Array(64) as unknown as Float32Array, w, 64, 4, 1, 0, 4), 'TypeError'],
    ['fractional size', () => be.softmax(x, 2.5, 0, 1), 'RangeError'],
    ['negative row', () => be.softmax(x, 8, -1, 1), 'RangeError'],
    ['attention cache too short', () => be.attention(out, x, x, x, x, 2, 2, 2, 100, 1, 0, 2), 'RangeError'],
    ['moe k > nExperts', () => be.moeRoute(new Int32Array(4), new Float32Array(4), x, 2, 3, 0, 1), 'RangeError'],
    ['rope halfSplit not boolean', () => be.rope(x, 1, 8, 0, 1, x, 1 as unknown as boolean, 0, 1), 'TypeError'],
  ];
  for (const [what, call, kind] of cases) {
    it(what, () => {
      let err: unknown;
      try {
        call();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(kind === 'RangeError' ? RangeError : TypeError);
      expect((err as { code?: string }).code).toBe('AIRLLM_KERNELS_ARG');
    });
  }
});
