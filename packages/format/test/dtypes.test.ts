import { describe, expect, it } from 'vitest';
import {
  byteSize,
  DTYPES,
  f16ToF32,
  f32ToF16,
  FloatType,
  InvalidValueError,
  parseFloatType,
  Q_BLOCK,
  quantizeQ40,
  quantizeQ80,
  SizeOverflowError,
} from '../src/index.js';
import { dtypeInfo, roundHalfEven } from '../src/dtypes.js';
import { Rng } from '../src/testing/index.js';
import { expectFormatError } from './helpers.js';

/** Deterministic test vectors with varied magnitudes, signs, zeros and outliers. */
function vector(n: number, seed: number): Float32Array {
  const r = new Rng(seed, n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const kind = r.nextU32() % 10;
    const scale = 10 ** ((r.nextU32() % 9) - 6); // 1e-6 … 1e2
    out[i] = kind === 0 ? 0 : kind === 1 ? (r.nextFloat() - 0.5) * 1000 * scale : (r.nextFloat() * 2 - 1) * scale;
  }
  // A block of zeros and a block with an exact ±tie of the extremes.
  if (n >= 96) {
    out.fill(0, 32, 64);
    for (let i = 66; i < 96; i++) out[i] = (i - 80) / 10;
    out[64] = 3.5;
    out[65] = -3.5;
  }
  return out;
}

const LENGTHS_ANY = [1, 2, 31, 33, 1023, 4096];
const LENGTHS_BLOCKS = [32, 64, 96, 1024, 32 * 33];

describe('dtype table', () => {
  it('each row has the size arithmetic of FORMAT.md §a.5', () => {
    const expected: Record<FloatType, [number, number]> = {
      [FloatType.F32]: [1, 4],
      [FloatType.F16]: [1, 2],
      [FloatType.Q40]: [32, 18],
      [FloatType.Q80]: [32, 34],
    };
    for (const t of [FloatType.F32, FloatType.F16, FloatType.Q40, FloatType.Q80]) {
      const row = dtypeInfo(t);
      expect([row.blockSize, row.bytesPerBlock]).toEqual(expected[t]);
      expect(DTYPES[t]).toBe(row);
      for (const n of [0, 32, 4096, 32 * 11008]) expect(byteSize(t, n)).toBe((n / row.blockSize) * row.bytesPerBlock);
      expect(parseFloatType(row.name.toLowerCase())).toBe(t);
    }
    expect(byteSize(FloatType.Q40, 4096 * 4096)).toBe(9437184);
    expect(byteSize(FloatType.Q80, 4096 * 11008)).toBe(47906816);
    const e = expectFormatError(() => byteSize(FloatType.Q40, 33, 'layers.0.q'), InvalidValueError);
    expect(e.field).toBe('layers.0.q');
    expectFormatError(() => byteSize(FloatType.Q80, 2 ** 53), SizeOverflowError);
    expectFormatError(() => dtypeInfo(7 as FloatType), InvalidValueError);
    expectFormatError(() => parseFloatType('q4_k'), InvalidValueError);
  });

  it('F32 round-trips exactly, little-endian', () => {
    for (const n of LENGTHS_ANY) {
      const x = vector(n, 1);
      const bytes = new Uint8Array(4 * n);
      DTYPES[FloatType.F32].quantize(x, bytes);
      const dv = new DataView(bytes.buffer);
      for (let i = 0; i < n; i++) expect(dv.getFloat32(4 * i, true)).toBe(x[i]);
      // Decoding from an unaligned position (tensors in a .m file are not 4-byte aligned).
      const shifted = new Uint8Array(bytes.length + 1);
      shifted.set(bytes, 1);
      const back = new Float32Array(n);
      DTYPES[FloatType.F32].dequantize(shifted.subarray(1), back);
      expect(back).toEqual(x);
    }
  });

  it('F16 round-trips within relative 2^-11 (absolute 2^-25 below the normal range)', () => {
    for (const n of LENGTHS_ANY) {
      const x = vector(n, 2);
      const bytes = new Uint8Array(2 * n);
      DTYPES[FloatType.F16].quantize(x, bytes);
      const back = new Float32Array(n);
      DTYPES[FloatType.F16].dequantize(bytes, back);
      for (let i = 0; i < n; i++) {
        const a = Math.abs(x[i]!);
        const bound = a >= 2 ** -14 ? a * 2 ** -11 : 2 ** -25;
        expect(Math.abs(back[i]! - x[i]!)).toBeLessThanOrEqual(bound);
        expect(new DataView(bytes.buffer).getUint16(2 * i, true)).toBe(f32ToF16(x[i]!));
      }
    }
  });

  it('Q80 round-trips within d/2 per element, plus the f16 rounding of d (d = max|x|/127 per block)', () => {
    for (const n of LENGTHS_BLOCKS) {
      const x = vector(n, 3);
      const bytes = new Uint8Array((n / 32) * 34);
      quantizeQ80(x, bytes);
      const back = new Float32Array(n);
      DTYPES[FloatType.Q80].dequantize(bytes, back);
      for (let b = 0; b < n / Q_BLOCK; b++) {
        let amax = 0;
        for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]!));
        const d = Math.fround(amax / 127);
        const d16 = f16ToF32(bytes[b * 34]! | (bytes[b * 34 + 1]! << 8));
        expect(d16).toBe(f16ToF32(f32ToF16(d)));
        expect(d16).toBeGreaterThanOrEqual(0);
        for (let i = 0; i < 32; i++) {
          const q = (bytes[b * 34 + 2 + i]! << 24) >> 24;
          expect(Math.abs(q)).toBeLessThanOrEqual(127);
          // x·(1/d) is rounded twice in float32: at most 2^-16·d on top of d/2.
          const bound = d / 2 + d * 2 ** -16 + Math.abs(q) * Math.abs(d16 - d);
          expect(Math.abs(back[b * 32 + i]! - x[b * 32 + i]!)).toBeLessThanOrEqual(bound);
        }
      }
      // The zero block decodes to zeros with d = 0.
      if (n >= 96) expect(Array.from(bytes.subarray(34, 68))).toEqual(new Array(34).fill(0));
    }
  });

  it('Q40 round-trips within |d| per element plus the f16 rounding of d (d = m/−8), |d|/2 where not clamped', () => {
    for (const n of LENGTHS_BLOCKS) {
      const x = vector(n, 4);
      const bytes = new Uint8Array((n / 32) * 18);
      quantizeQ40(x, bytes);
      const back = new Float32Array(n);
      DTYPES[FloatType.Q40].dequantize(bytes, back);
      for (let b = 0; b < n / Q_BLOCK; b++) {
        const blk = x.subarray(b * 32, b * 32 + 32);
        const max = Math.max(...blk);
        const min = Math.min(...blk);
        const m = -min > max ? min : max; // exact ties pick the positive extreme (numpy recipe)
        const d = Math.fround(m / -8);
        const d16 = f16ToF32(bytes[b * 18]! | (bytes[b * 18 + 1]! << 8));
        expect(d16).toBe(f16ToF32(f32ToF16(d)));
        for (let i = 0; i < 32; i++) {
          const nib = i < 16 ? bytes[b * 18 + 2 + i]! & 15 : bytes[b * 18 + 2 + i - 16]! >> 4;
          const err = Math.abs(back[b * 32 + i]! - blk[i]!);
          const f16part = 8 * Math.abs(d16 - d);
          expect(err).toBeLessThanOrEqual(Math.abs(d) * (1 + 2 ** -16) + f16part);
          if (d !== 0 && blk[i]! / d <= 7.5) expect(err).toBeLessThanOrEqual((Math.abs(d) / 2) * (1 + 2 ** -15) + f16part);
          // The extreme element itself maps to nibble 0 (value −8·d = m).
          if (blk[i] === m && d !== 0) expect(nib).toBe(0);
        }
      }
      if (n >= 96) {
        // Zero block: every nibble is 8 (value 0) and d = +0/−8 = −0, stored as f16 0x8000,
        // exactly as numpy does (the official Q40 fixture's zero-padded w1 rows hold 00 80 88…).
        expect(Array.from(bytes.subarray(18, 36))).toEqual([0x00, 0x80, ...new Array(16).fill(0x88)]);
        // Tie block (max = −min = 3.5): the positive extreme wins, so d = 3.5/−8 < 0.

        expect(f16ToF32(bytes[36]! | (bytes[37]! << 8))).toBeLessThan(0);
      }
    }
  });

  it('roundHalfEven rounds exact halves to even, everything else to nearest', () => {
    const cases: [number, number][] = [
      [0.5, 0],
      [1.5, 2],
      [2.5, 2],
      [-0.5, -0],
      [-1.5, -2],
      [-2.5, -2],
      [2.4999, 2],
      [2.5001, 3],
      [-126.5, -126],
      [127.49, 127],
    ];
    for (const [x, want] of cases) expect(roundHalfEven(x) === want || (want === 0 && roundHalfEven(x) === 0)).toBe(true);
  });
});
