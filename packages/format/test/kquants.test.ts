/**
 * BF16 and the K-quants against ggml's published block definitions (ggml-common.h structs,
 * ggml-quants.c dequantize_row_*). The expected values come from a decoder written here straight
 * from those definitions, in ggml's own loop form and with its own f16 decode by arithmetic (no
 * code shared with src/), and from blocks computed by hand.
 */
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  byteSize,
  DTYPES,
  FloatType,
  HeaderKey,
  InvalidValueError,
  isModelFileFloatType,
  readModelFile,
} from '../src/index.js';
import { headerValues } from '../src/header.js';
import { ModelFileWriter } from '../src/convert.js';
import { Rng } from '../src/testing/index.js';
import { expectFormatRejection, Q40_FIXTURE, tempDir } from './helpers.js';

const f = Math.fround;

/** IEEE binary16 by its definition. */
function half(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 31;
  const m = h & 1023;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 31) return m ? NaN : sign * Infinity;
  return sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** ggml's get_scale_min_k4(j, q): [scale, min]. */
function getScaleMinK4(j: number, q: Uint8Array): [number, number] {
  if (j < 4) return [q[j]! & 63, q[j + 4]! & 63];
  return [(q[j + 4]! & 0xf) | ((q[j - 4]! >> 6) << 4), (q[j + 4]! >> 4) | ((q[j]! >> 6) << 4)];
}

/** dequantize_row_q4_K over block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128]; }. */
function ggmlQ4K(bytes: Uint8Array, nb: number): Float32Array {
  const y = new Float32Array(nb * 256);
  let yi = 0;
  for (let i = 0; i < nb; i++) {
    const x = bytes.subarray(i * 144, i * 144 + 144);
    const d = half(x[0]! | (x[1]! << 8));
    const min = half(x[2]! | (x[3]! << 8));
    const scales = x.subarray(4, 16);
    let q = 16;
    let is = 0;
    for (let j = 0; j < 256; j += 64) {
      let [sc, m] = getScaleMinK4(is + 0, scales);
      const d1 = f(d * sc);
      const m1 = f(min * m);
      [sc, m] = getScaleMinK4(is + 1, scales);
      const d2 = f(d * sc);
      const m2 = f(min * m);
      for (let l = 0; l < 32; ++l) y[yi++] = f(f(d1 * (x[q + l]! & 0xf)) - m1);
      for (let l = 0; l < 32; ++l) y[yi++] = f(f(d2 * (x[q + l]! >> 4)) - m2);
      q += 32;
      is += 2;
    }
  }
  return y;
}

/** dequantize_row_q5_K over block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; }. */
function ggmlQ5K(bytes: Uint8Array, nb: number): Float32Array {
  const y = new Float32Array(nb * 256);
  let yi = 0;
  for (let i = 0; i < nb; i++) {
    const x = bytes.subarray(i * 176, i * 176 + 176);
    const d = half(x[0]! | (x[1]! << 8));
    const min = half(x[2]! | (x[3]! << 8));
    const scales = x.subarray(4, 16);
    const qh = x.subarray(16, 48);
    let ql = 48;
    let is = 0;
    let u1 = 1;
    let u2 = 2;
    for (let j = 0; j < 256; j += 64) {
      let [sc, m] = getScaleMinK4(is + 0, scales);
      const d1 = f(d * sc);
      const m1 = f(min * m);
      [sc, m] = getScaleMinK4(is + 1, scales);
      const d2 = f(d * sc);
      const m2 = f(min * m);
      for (let l = 0; l < 32; ++l) y[yi++] = f(f(d1 * ((x[ql + l]! & 0xf) + (qh[l]! & u1 ? 16 : 0))) - m1);
      for (let l = 0; l < 32; ++l) y[yi++] = f(f(d2 * ((x[ql + l]! >> 4) + (qh[l]! & u2 ? 16 : 0))) - m2);
      ql += 32;
      is += 2;
      u1 <<= 2;
      u2 <<= 2;
    }
  }
  return y;
}

/** dequantize_row_q6_K over block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; }. */
function ggmlQ6K(bytes: Uint8Array, nb: number): Float32Array {
  const y = new Float32Array(nb * 256);
  for (let i = 0; i < nb; i++) {
    const x = bytes.subarray(i * 210, i * 210 + 210);
    const d = half(x[208]! | (x[209]! << 8));
    let ql = 0;
    let qh = 128;
    let sc = 192;
    let yo = i * 256;
    const s8 = (v: number): number => (v << 24) >> 24;
    for (let n = 0; n < 256; n += 128) {
      for (let l = 0; l < 32; ++l) {
        const is = Math.floor(l / 16);
        const q1 = ((x[ql + l]! & 0xf) | (((x[qh + l]! >> 0) & 3) << 4)) - 32;
        const q2 = ((x[ql + l + 32]! & 0xf) | (((x[qh + l]! >> 2) & 3) << 4)) - 32;
        const q3 = ((x[ql + l]! >> 4) | (((x[qh + l]! >> 4) & 3) << 4)) - 32;
        const q4 = ((x[ql + l + 32]! >> 4) | (((x[qh + l]! >> 6) & 3) << 4)) - 32;
        y[yo + l + 0] = f(f(d * s8(x[sc + is + 0]!)) * q1);
        y[yo + l + 32] = f(f(d * s8(x[sc + is + 2]!)) * q2);
        y[yo + l + 64] = f(f(d * s8(x[sc + is + 4]!)) * q3);
        y[yo + l + 96] = f(f(d * s8(x[sc + is + 6]!)) * q4);
      }
      yo += 128;
      ql += 64;
      qh += 32;
      sc += 8;
    }
  }
  return y;
}

const GGML_DECODERS = {
  [FloatType.Q4_K]: ggmlQ4K,
  [FloatType.Q5_K]: ggmlQ5K,
  [FloatType.Q6_K]: ggmlQ6K,
} as const;
const KQUANTS = [FloatType.Q4_K, FloatType.Q5_K, FloatType.Q6_K] as const;

function decode(type: FloatType, bytes: Uint8Array): Float32Array {
  const info = DTYPES[type];
  const out = new Float32Array((bytes.length / info.bytesPerBlock) * info.blockSize);
  info.dequantize(bytes, out);
  return out;
}

function expectSameBits(label: string, got: Float32Array, want: Float32Array): void {
  expect(got.length).toBe(want.length);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) expect.fail(`${label}: value ${i} is ${got[i]}, ggml's definition gives ${want[i]}`);
  }
}

/** f16 d / dmin values at the edges: largest finite (±), smallest subnormal (±), ±0, 1. */
const F16_EDGES = [0x7bff, 0xfbff, 0x0001, 0x8001, 0x0000, 0x8000, 0x3c00, 0x0400];

describe('dtype table rows for BF16 and the K-quants', () => {
  it('sizes: BF16 1 value / 2 bytes; Q4_K, Q5_K, Q6_K 256 values / 144, 176, 210 bytes', () => {
    const want: [FloatType, string, number, number][] = [
      [FloatType.BF16, 'BF16', 1, 2],
      [FloatType.Q4_K, 'Q4_K', 256, 144],
      [FloatType.Q5_K, 'Q5_K', 256, 176],
      [FloatType.Q6_K, 'Q6_K', 256, 210],
    ];
    for (const [t, name, bs, bpb] of want) {
      expect([t, DTYPES[t].name, DTYPES[t].blockSize, DTYPES[t].bytesPerBlock]).toEqual([t, name, bs, bpb]);
      expect(isModelFileFloatType(t)).toBe(false);
    }
    // the lead's fixed numbers
    expect([FloatType.BF16, FloatType.Q4_K, FloatType.Q5_K, FloatType.Q6_K]).toEqual([4, 5, 6, 7]);
    expect(byteSize(FloatType.Q4_K, 4096 * 11008)).toBe(4096 * 43 * 144);
    expect(byteSize(FloatType.Q6_K, 4096 * 4096)).toBe(4096 * 16 * 210);
    expect(() => byteSize(FloatType.Q5_K, 4096 + 32)).toThrow(InvalidValueError);
    for (const t of [FloatType.F32, FloatType.F16, FloatType.Q40, FloatType.Q80]) expect(isModelFileFloatType(t)).toBe(true);
  });

  it('a .m writer refuses a header declaring BF16 or a K-quant', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const values = headerValues(readModelFile(Q40_FIXTURE).header);
      for (const t of [FloatType.BF16, ...KQUANTS]) {
        const err = await expectFormatRejection(ModelFileWriter.open(join(dir, `m${t}.m`), { ...values, [HeaderKey.WeightsFloatType]: t }), InvalidValueError);
        expect(err.field).toBe('weights_float_type');
      }
    } finally {
      cleanup();
    }
  });
});

describe('BF16', () => {
  it('decodes as the upper half of a float32 and encodes with round to nearest even', () => {
    const bytes = new Uint8Array([0x80, 0x3f, 0x00, 0xc0, 0x7f, 0x7f, 0x01, 0x00, 0x80, 0x7f, 0x00, 0x80, 0xc0, 0x7f]);
    const got = decode(FloatType.BF16, bytes);
    expect(Array.from(got.subarray(0, 6))).toEqual([1, -2, f(3.3895313892515355e38), f(2 ** -133), Infinity, -0]);
    expect(Number.isNaN(got[6])).toBe(true);
    const enc = (x: number): number => {
      const b = new Uint8Array(2);
      DTYPES[FloatType.BF16].quantize(new Float32Array([x]), b);
      return b[0]! | (b[1]! << 8);
    };
    expect(enc(1)).toBe(0x3f80);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even (1); 1 + 3·2^-8 rounds up to 1 + 2^-6
    expect(enc(1 + 2 ** -8)).toBe(0x3f80);
    expect(enc(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(enc(1 + 2 ** -8 + 2 ** -20)).toBe(0x3f81);
    expect(enc(-Infinity)).toBe(0xff80);
    expect(enc(3.4e38)).toBe(0x7f80); // rounds up to infinity, as RNE does
    const nan = enc(NaN);
    expect((nan & 0x7f80) === 0x7f80 && (nan & 0x7f) !== 0).toBe(true);
  });
});

describe('K-quant dequantization equals ggml definitions', () => {
  it('Q4_K hand-computed block', () => {
    const b = new Uint8Array(144);
    b.set([0x00, 0x40, 0x00, 0x3c]); // d = 2, dmin = 1
    b.set([0x01, 0x02, 0xc3, 0x04, 0x05, 0x46, 0x07, 0x08, 0x9a, 0xbc, 0xde, 0xf0], 4);
    // scales: 1 2 3 4 10 12 62 0; mins: 5 6 7 8 9 27 13 15 (worked out from the packing by hand)
    b[16 + 96] = 0x5a; // chunk 3, byte 0: value 192 (sub-block 6) nibble 10, value 224 (sub-block 7) nibble 5
    b[16 + 64 + 5] = 0xf1; // chunk 2, byte 5: value 133 (sub-block 4) nibble 1, value 165 (sub-block 5) nibble 15
    const y = decode(FloatType.Q4_K, b);
    expect(y[192]).toBe(2 * 62 * 10 - 13);
    expect(y[224]).toBe(2 * 0 * 5 - 15);
    expect(y[133]).toBe(2 * 10 * 1 - 9);
    expect(y[165]).toBe(2 * 12 * 15 - 27);
    expect(y[0]).toBe(-5);
    expect(y[63]).toBe(-6);
    expect(y[100]).toBe(-8);
    expectSameBits('Q4_K hand block', y, ggmlQ4K(b, 1));
  });

  it('Q5_K hand-computed block', () => {
    const b = new Uint8Array(176);
    b.set([0x00, 0x38, 0x00, 0xb8]); // d = 0.5, dmin = −0.5 (a negative minimum)
    b.set([0x01, 0x02, 0xc3, 0x04, 0x05, 0x46, 0x07, 0x08, 0x9a, 0xbc, 0xde, 0xf0], 4); // as the Q4_K block
    b[16 + 0] = 0b1001_0000; // qh[0]: bit 4 → value 128 (sub-block 4) +16, bit 7 → value 224 (sub-block 7) +16
    b[16 + 3] = 0b0000_0001; // qh[3]: bit 0 → value 3 (sub-block 0) +16
    b[48 + 64] = 0x3f; // chunk 2 byte 0: value 128 low nibble 15, value 160 high nibble 3
    b[48 + 3] = 0x02; // value 3 nibble 2
    const y = decode(FloatType.Q5_K, b);
    expect(y[128]).toBe(0.5 * 10 * 31 + 0.5 * 9);
    expect(y[160]).toBe(0.5 * 12 * 3 + 0.5 * 27);
    expect(y[224]).toBe(0.5 * 0 * 16 + 0.5 * 15);
    expect(y[3]).toBe(0.5 * 1 * 18 + 0.5 * 5);
    expect(y[4]).toBe(0.5 * 5);
    expectSameBits('Q5_K hand block', y, ggmlQ5K(b, 1));
  });

  it('Q6_K hand-computed block', () => {
    const b = new Uint8Array(210);
    b[208] = 0x00;
    b[209] = 0x38; // d = 0.5
    b[192 + 0] = 0xfd; // scale 0 = −3
    b[192 + 4] = 7;
    b[192 + 5] = 127;
    b[192 + 15] = 0x80; // scale 15 = −128
    b[0] = 0x21; // value 0 low 1, value 64 high 2
    b[128 + 0] = 0b0011_0010; // qh[0]: value 0 bits 2, value 64 bits 3
    b[16] = 0xf0; // value 80 high nibble 15
    b[128 + 16] = 0b0011_0000; // value 80 bits 3
    const y = decode(FloatType.Q6_K, b);
    expect(y[0]).toBe(0.5 * -3 * (1 + 32 - 32)); // q = 1 | 2 << 4 = 33
    expect(y[64]).toBe(0.5 * 7 * (2 + 48 - 32));
    expect(y[80]).toBe(0.5 * 127 * (15 + 48 - 32));
    expect(y[255]).toBe(0.5 * -128 * -32);
    expect(y[1]).toBe(0.5 * -3 * -32);
    expect(y[20]).toBe(-0); // scale 1 is 0: (0.5 · 0) · −32
    expectSameBits('Q6_K hand block', y, ggmlQ6K(b, 1));
  });

  for (const type of KQUANTS) {
    it(`${FloatType[type]}: random blocks with edge scales and f16 extremes equal the ggml decoder bit for bit`, () => {
      const bpb = DTYPES[type].bytesPerBlock;
      const r = new Rng(type * 101, 1);
      const blocks: Uint8Array[] = [];
      for (const dBits of F16_EDGES) {
        for (const minBits of F16_EDGES) {
          for (const scaleFill of [-1, 0x00, 0xff, 0x80]) {
            const b = new Uint8Array(bpb);
            for (let i = 0; i < bpb; i++) b[i] = r.nextU32() & 0xff;
            if (type === FloatType.Q6_K) {
              b[208] = dBits & 0xff;
              b[209] = dBits >> 8;
              if (scaleFill >= 0) b.fill(scaleFill, 192, 208); // 0, −1, −128 for every sub-block
            } else {
              b[0] = dBits & 0xff;
              b[1] = dBits >> 8;
              b[2] = minBits & 0xff;
              b[3] = minBits >> 8;
              if (scaleFill >= 0) b.fill(scaleFill, 4, 16); // all scales and mins 0, 63, or mixed
            }
            blocks.push(b);
          }
          if (type === FloatType.Q6_K) break; // no dmin
        }
      }
      const all = new Uint8Array(blocks.length * bpb);
      blocks.forEach((b, i) => all.set(b, i * bpb));
      expectSameBits(FloatType[type], decode(type, all), GGML_DECODERS[type](all, blocks.length));
      // all scales 63 and mins 63 (0xff fill) really decode with 63: spot-check one value
      if (type !== FloatType.Q6_K) {
        const b = new Uint8Array(bpb).fill(0xff);
        b.set([0x00, 0x3c, 0x00, 0x3c]); // d = dmin = 1
        expect(decode(type, b)[0]).toBe(63 * (type === FloatType.Q4_K ? 15 : 31) - 63);
      }
    });
  }
});

/** Test vectors: varied magnitudes per sub-block, both signs, some all-positive / all-zero super-blocks. */
function vector(n: number, seed: number): Float32Array {
  const r = new Rng(seed, n);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i += 16) {
    const scale = 10 ** ((r.nextU32() % 7) - 4);
    for (let j = i; j < i + 16; j++) x[j] = (r.nextFloat() * 2 - 1) * scale;
  }
  x.fill(0, 256, 512); // a zero super-block
  for (let i = 512; i < 768; i++) x[i] = 1 + (i % 17) / 16; // all positive: offsets > 0, dmin < 0
  for (let i = 768; i < 1024; i++) x[i] = -3 - (i % 5); // all negative
  x[1024 + 7] = 40; // an outlier in a sub-block of small values
  return x;
}

describe('K-quant reference quantizers', () => {
  for (const type of KQUANTS) {
    it(`${FloatType[type]}: each value decodes to the nearest point of its sub-block lattice, within the stated bound`, () => {
      const n = 256 * 12;
      const x = vector(n, 7 + type);
      const info = DTYPES[type];
      const bytes = new Uint8Array(byteSize(type, n));
      info.quantize(x, bytes);
      const y = GGML_DECODERS[type](bytes, n / 256);
      expectSameBits('table decoder', decode(type, bytes), y);
      let negMin = 0;
      let posMin = 0;
      for (let b = 0; b < n / 256; b++) {
        const o = b * info.bytesPerBlock;
        const blk = bytes.subarray(o, o + info.bytesPerBlock);
        const sub = type === FloatType.Q6_K ? 16 : 32;
        for (let j = 0; j < 256 / sub; j++) {
          // the sub-block lattice from the stored scales: value(q) for every q
          let step: number;
          let offset: number;
          let qs: number[];
          if (type === FloatType.Q6_K) {
            step = f(half(blk[208]! | (blk[209]! << 8)) * ((blk[192 + j]! << 24) >> 24));
            offset = 0;
            qs = Array.from({ length: 64 }, (_, q) => q - 32);
          } else {
            const [sc, m] = getScaleMinK4(j, blk.subarray(4, 16));
            const dmin = half(blk[2]! | (blk[3]! << 8));
            step = f(half(blk[0]! | (blk[1]! << 8)) * sc);
            offset = -f(dmin * m);
            qs = Array.from({ length: type === FloatType.Q4_K ? 16 : 32 }, (_, q) => q);
            if (m > 0 && dmin < 0) posMin++;
            if (m > 0 && dmin > 0) negMin++;
          }
          const lattice = qs.map((q) => f(f(step * q) + offset));
          for (let i = 0; i < sub; i++) {
            const k = b * 256 + j * sub + i;
            const err = Math.abs(y[k]! - x[k]!);
            const best = Math.min(...lattice.map((v) => Math.abs(v - x[k]!)));
            // nearest lattice point (up to the float32 rounding of (x + offset) / step)
            if (!(err <= best + 2 ** -22 * (Math.abs(x[k]!) + Math.abs(offset)))) expect.fail(`value ${k}: error ${err}, nearest point ${best}`);
            // the lattice covers the sub-block: half a step (Q6_K: 1.26 steps where clamped at 31)
            const bound = Math.abs(step) * (type === FloatType.Q6_K ? 1.26 : 0.5) + 2 ** -22 * (Math.abs(x[k]!) + Math.abs(offset));
            if (!(err <= bound)) expect.fail(`value ${k}: error ${err} > bound ${bound} (step ${step})`);
          }
        }
      }
      // the zero super-block decodes to zeros
      for (let i = 256; i < 512; i++) expect(Math.abs(y[i]!)).toBe(0);
      if (type !== FloatType.Q6_K) {
        expect(posMin).toBeGreaterThan(0); // the all-positive super-block: dmin < 0
        expect(negMin).toBeGreaterThan(0);
      }
    });
  }
});
