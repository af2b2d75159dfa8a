import { describe, expect, it } from 'vitest';
import { f16ToF32, f32ToF16 } from '../src/index.js';
import { roundToF16 } from '../src/f16.js';

// Independent decoder: build the binary32 bit pattern of a normal binary16 value directly.
const u32 = new Uint32Array(1);
const f32 = new Float32Array(u32.buffer);
function refDecode(h: number): number {
  const sign = h >> 15;
  const exp = (h >> 10) & 31;
  const mant = h & 1023;
  if (exp === 31) return mant ? NaN : sign ? -Infinity : Infinity;
  if (exp === 0) return (sign ? -1 : 1) * mant * Math.pow(2, -24);
  u32[0] = ((sign << 31) | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  return f32[0]!;
}

// Sorted positive finite values (codes 0..0x7bff are increasing), for a search-based encoder.
const POS = Float64Array.from({ length: 0x7c00 }, (_, c) => refDecode(c));
/** Reference binary32 → binary16: nearest by search, ties to the even code, overflow per IEEE. */
function refEncode(x: number): number {
  const v = Math.fround(x);
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  // 65520 is halfway between 65504 (0x7bff, odd) and 2^16 (the next step): ties go to infinity.
  if (a >= 65520) return sign | 0x7c00;
  let lo = 0;
  let hi = 0x7bff;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (POS[mid]! <= a) lo = mid;
    else hi = mid - 1;
  }
  if (POS[lo] === a) return sign | lo;
  const up = lo + 1 <= 0x7bff ? POS[lo + 1]! : 65536;
  const dLo = a - POS[lo]!;
  const dUp = up - a;
  const c = dLo < dUp ? lo : dUp < dLo ? lo + 1 : lo % 2 === 0 ? lo : lo + 1;
  return sign | c;
}

describe('f16', () => {
  it('decodes all 65536 codes like an independent bit-level decoder', () => {
    for (let h = 0; h < 65536; h++) {
      const want = refDecode(h);
      const got = f16ToF32(h);
      if (Number.isNaN(want)) expect(Number.isNaN(got)).toBe(true);
      else if (!Object.is(got, want)) expect([h, got]).toEqual([h, want]);
    }
  });

  it('encodes every non-NaN code back to itself, NaN to a NaN', () => {
    for (let h = 0; h < 65536; h++) {
      const v = f16ToF32(h);
      const back = f32ToF16(v);
      if (Number.isNaN(v)) expect((back & 0x7c00) === 0x7c00 && (back & 0x3ff) !== 0).toBe(true);
      else if (back !== h) expect([h, back]).toEqual([h, h]);
    }
  });

  it('rounds every midpoint between neighbours to the even code, and their f32 neighbours to the nearer side', () => {
    const below = (x: number): number => {
      f32[0] = x;
      u32[0] = u32[0]! - 1;
      return f32[0]!;
    };
    const above = (x: number): number => {
      f32[0] = x;
      u32[0] = u32[0]! + 1;
      return f32[0]!;
    };
    let ties = 0;
    const bad: string[] = [];
    for (const sign of [1, -1]) {
      for (let c = 0; c < 0x7bff; c++) {
        const lo = POS[c]!;
        const hi = POS[c + 1]!;
        const mid = (lo + hi) / 2; // exact in binary32 (12 significant bits)
        if (Math.fround(mid) !== mid) bad.push(`midpoint ${c} not exact`);
        const s = sign < 0 ? 0x8000 : 0;
        const even = c % 2 === 0 ? c : c + 1;
        if (f32ToF16(sign * mid) !== (s | even)) bad.push(`midpoint ${c}`);
        const m = Math.abs(mid);
        if (f32ToF16(sign * below(m)) !== (s | c)) bad.push(`below midpoint ${c}`);
        if (f32ToF16(sign * above(m)) !== (s | (c + 1))) bad.push(`above midpoint ${c}`);
        ties++;
      }
    }
    expect(bad).toEqual([]);
    expect(ties).toBe(2 * 0x7bff);
    // Overflow: the tie at 65520 goes to infinity, just below it stays at 65504.
    expect(f32ToF16(65520)).toBe(0x7c00);
    expect(f32ToF16(below(65520))).toBe(0x7bff);
    expect(f32ToF16(-1e9)).toBe(0xfc00);
    // Smallest subnormal 2^-24: half of it ties to 0 (even), 1.5× ties to 2^-23 (even code 2).
    expect(f32ToF16(2 ** -25)).toBe(0);
    expect(f32ToF16(above(2 ** -25))).toBe(1);
    expect(f32ToF16(3 * 2 ** -25)).toBe(2);
    expect(f32ToF16(-0)).toBe(0x8000);
    // Carry out of the subnormal range into the smallest normal 2^-14.
    expect(f32ToF16(2 ** -14 - 2 ** -26)).toBe(0x0400);
  });

  it('matches the search-based reference encoder on 300k random float32 bit patterns', () => {
    let s = 0x12345678;
    for (let i = 0; i < 300_000; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      // Bias exponents toward the f16 range half of the time.
      u32[0] = i % 2 === 0 ? s : (s & 0x807fffff) | ((((s >>> 23) % 48) + 96) << 23);
      const x = f32[0]!;
      const want = refEncode(x);
      const got = f32ToF16(x);
      if (Number.isNaN(x)) continue;
      if (got !== want) expect([x, got]).toEqual([x, want]);
    }
  });

  it('roundToF16 has relative error ≤ 2^-11 in the normal range', () => {
    for (const x of [1, 1 / 3, Math.PI, -12345.678, 6.1e-5, 65504, 0.1]) {
      expect(Math.abs(roundToF16(x) - x) / Math.abs(x)).toBeLessThanOrEqual(2 ** -11);
    }
  });
});
