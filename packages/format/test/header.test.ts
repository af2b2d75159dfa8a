import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  ArchType,
  BadMagicError,
  FloatType,
  FormatError,
  HeaderKey,
  InvalidValueError,
  OldFormatError,
  parseModelHeader,
  TruncatedError,
  UnknownKeyError,
  writeModelHeader,
  type HeaderValues,
} from '../src/index.js';
import { headerValues, MODEL_MAGIC } from '../src/header.js';
import { rawModelHeader } from '../src/testing/index.js';
import { expectFormatError, Q40_FIXTURE, readBytes, TOK512_BIN } from './helpers.js';

const K = HeaderKey;
/** stories260K's header (the fixture's pairs in the converter's order). */
const BASE: [number, number][] = [
  [K.Dim, 64],
  [K.NLayers, 5],
  [K.NHeads, 8],
  [K.NKvHeads, 4],
  [K.VocabSize, 512],
  [K.MaxSeqLen, 512],
  [K.ArchType, ArchType.LLAMA],
  [K.NExperts, 0],
  [K.NActiveExperts, 0],
  [K.WeightsFloatType, FloatType.Q40],
  [K.HiddenDim, 192],
];
/** BASE with some keys replaced (in place) or appended; `undefined` removes the key. */
function withPairs(changes: [number, number | undefined][]): [number, number][] {
  const out = BASE.map(([k, v]) => [k, v] as [number, number | undefined]);
  for (const [k, v] of changes) {
    const i = out.findIndex(([kk]) => kk === k);
    if (i >= 0) out[i]![1] = v;
    else out.push([k, v]);
  }
  return out.filter(([, v]) => v !== undefined) as [number, number][];
}
/** Byte offset of key k's value in a header built from `pairs`. */
const valueOffset = (pairs: [number, number][], k: number): number => 8 + 8 * pairs.findIndex(([kk]) => kk === k) + 4;

function bad(changes: [number, number | undefined][]): { err: InvalidValueError; pairs: [number, number][] } {
  const pairs = withPairs(changes);
  return { err: expectFormatError(() => parseModelHeader(rawModelHeader(pairs)), InvalidValueError), pairs };
}

describe('parseModelHeader: valid headers', () => {
  it('applies the defaults of FORMAT.md §a.2 to absent keys', () => {
    const h = parseModelHeader(rawModelHeader(BASE));
    expect([h.version, h.hiddenAct, h.ropeTheta, h.ropeScalingFactor, h.ropeType, h.headDim, h.normEpsilonCode, h.normEpsilon, h.moeHiddenDim]).toEqual([
      0, 1, 10000, 1, 0, 8, 5, 1e-5, 0,
    ]);
    expect(h.headerSize).toBe(96);
  });

  it('parses the same values whatever the key order (fixture header reversed and shuffled)', () => {
    const ref = parseModelHeader(readBytes(Q40_FIXTURE).subarray(0, 96));
    const strip = ({ pairs: _p, ...rest }: ReturnType<typeof parseModelHeader>) => rest;
    fc.assert(
      fc.property(fc.shuffledSubarray(BASE, { minLength: BASE.length, maxLength: BASE.length }), (order) => {
        const h = parseModelHeader(rawModelHeader(order));
        expect(strip(h)).toEqual(strip(ref));
        expect(h.pairs.map(([k]) => k)).toEqual(order.map(([k]) => k));
      }),
      { numRuns: 200 },
    );
  });

  it('round-trips values through writeModelHeader in any key order', () => {
    const values = fc.record({
      heads: fc.constantFrom(1, 2, 4, 8),
      kvDiv: fc.constantFrom(1, 2, 4),
      headDim: fc.constantFrom(32, 64, 128),
      hidden: fc.integer({ min: 1, max: 400 }).map((n) => n * 32),
      layers: fc.integer({ min: 1, max: 100 }),
      vocab: fc.integer({ min: 1, max: 200000 }),
      seq: fc.integer({ min: 1, max: 1 << 20 }),
      dtype: fc.constantFrom(0, 1, 2, 3),
      theta: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
      eps: fc.constantFrom(5, 6),
      explicitHeadDim: fc.boolean(),
    });
    fc.assert(
      fc.property(values, fc.infiniteStream(fc.nat()), (v, rnd) => {
        const kv = Math.max(1, v.heads / v.kvDiv);
        const vals: HeaderValues = {
          [K.ArchType]: ArchType.LLAMA,
          [K.Dim]: v.heads * v.headDim,
          [K.HiddenDim]: v.hidden,
          [K.NLayers]: v.layers,
          [K.NHeads]: v.heads,
          [K.NKvHeads]: kv,
          [K.VocabSize]: v.vocab,
          [K.MaxSeqLen]: v.seq,
          [K.WeightsFloatType]: v.dtype,
          [K.RopeTheta]: v.theta,
          [K.NormEpsilon]: v.eps,
        };
        if (v.explicitHeadDim) vals[K.HeadDim] = v.headDim;
        const keys = Object.keys(vals).map(Number) as HeaderKey[];
        const it = rnd[Symbol.iterator]();
        const order = keys.map((k) => [k, it.next().value as number] as const).sort((a, b) => a[1] - b[1]).map(([k]) => k);
        const bytes = writeModelHeader(vals, order);
        const h = parseModelHeader(bytes);
        expect(h.pairs.map(([k]) => k)).toEqual(order);
        expect(headerValues(h)).toEqual(vals);
        expect([h.dim, h.headDim, h.qDim, h.kvDim, h.ffDim]).toEqual([v.heads * v.headDim, v.headDim, v.heads * v.headDim, kv * v.headDim, v.hidden]);
        // And back to identical bytes.
        expect(writeModelHeader(headerValues(h), order)).toEqual(bytes);
      }),
      { numRuns: 300 },
    );
  });

  it('writeModelHeader: unlisted keys follow the given order in ascending id; non-i32 values are refused', () => {
    const vals = Object.fromEntries(BASE) as HeaderValues;
    const h = parseModelHeader(writeModelHeader(vals, [K.HiddenDim, K.Dim]));
    expect(h.pairs.map(([k]) => k)).toEqual([K.HiddenDim, K.Dim, K.ArchType, K.NLayers, K.NHeads, K.NKvHeads, K.NExperts, K.NActiveExperts, K.VocabSize, K.MaxSeqLen, K.WeightsFloatType]);
    for (const v of [1.5, 2 ** 31, -(2 ** 31) - 1, NaN]) {
      const e = expectFormatError(() => writeModelHeader({ ...vals, [K.RopeTheta]: v }), InvalidValueError);
      expect(e.field).toBe('rope_theta');
    }
    // An invalid combination is refused by the writer too (it parses its own output).
    expectFormatError(() => writeModelHeader({ ...vals, [K.NKvHeads]: 3 }), InvalidValueError);
  });
});

describe('parseModelHeader: bad input is a typed error naming the field and byte offset', () => {
  it('wrong magic (a tokenizer.bin, zeros, text)', () => {
    for (const bytes of [readBytes(TOK512_BIN), new Uint8Array(96), new TextEncoder().encode('{"not": "a model", "at": "all"}')]) {
      const e = expectFormatError(() => parseModelHeader(bytes), BadMagicError);
      expect([e.field, e.offset]).toEqual(['magic', 0]);
    }
  });

  it('both old-format magics', () => {
    for (const magic of [0xabcd00, 0xabcd01]) {
      const e = expectFormatError(() => parseModelHeader(rawModelHeader(BASE, { magic })), OldFormatError);
      expect([e.field, e.offset]).toEqual(['magic', 0]);
      expect(e.message).toContain('old');
    }
  });

  it('truncated header: shorter than magic + size, and cut inside the pairs', () => {
    const full = rawModelHeader(BASE);
    for (const n of [0, 3, 7]) {
      const e = expectFormatError(() => parseModelHeader(full.subarray(0, n)), TruncatedError);
      expect([e.field, e.offset]).toEqual(['magic', 0]);
    }
    for (const n of [8, 12, 50, 95]) {
      const e = expectFormatError(() => parseModelHeader(full.subarray(0, n)), TruncatedError);
      expect([e.field, e.offset, e.expected]).toEqual(['headerSize', n, '96 bytes']);
    }
  });

  it('claimed header size that is not 8 + 8·pairs or is absurd (checked before use)', () => {
    for (const headerSize of [0, 4, 7, 12, 100, 8 + 8 * 65, 2 ** 31 - 1, -8]) {
      const e = expectFormatError(() => parseModelHeader(rawModelHeader(BASE, { headerSize })), InvalidValueError);
      expect([e.field, e.offset, e.actual]).toEqual(['headerSize', 4, headerSize]);
    }
  });

  it('unknown key', () => {
    for (const key of [22, 99, -1, 0x7fffffff]) {
      const pairs = withPairs([[key, 1]]);
      const e = expectFormatError(() => parseModelHeader(rawModelHeader(pairs)), UnknownKeyError);
      expect([e.field, e.offset]).toEqual([`key ${key}`, 8 + 8 * BASE.length]);
    }
  });

  it('duplicate key', () => {
    const pairs: [number, number][] = [...BASE, [K.Dim, 64]];
    const e = expectFormatError(() => parseModelHeader(rawModelHeader(pairs)), InvalidValueError);
    expect([e.field, e.offset]).toEqual(['dim', 8 + 8 * BASE.length]);
  });

  it('zero, negative and absurd dimensions', () => {
    const cases: [HeaderKey, number, string][] = [
      [K.Dim, 0, 'dim'],
      [K.Dim, -64, 'dim'],
      [K.Dim, 2 ** 30, 'dim'],
      [K.NLayers, 0, 'n_layers'],
      [K.NLayers, -1, 'n_layers'],
      [K.NLayers, 1 << 20, 'n_layers'],
      [K.NHeads, 0, 'n_heads'],
      [K.NKvHeads, 0, 'n_kv_heads'],
      [K.NKvHeads, -4, 'n_kv_heads'],
      [K.VocabSize, 0, 'vocab_size'],
      [K.VocabSize, 2 ** 31 - 1, 'vocab_size'],
      [K.MaxSeqLen, 0, 'max_seq_len'],
      [K.HiddenDim, 0, 'hidden_dim'],
      [K.HiddenDim, -192, 'hidden_dim'],
      [K.HiddenDim, 2 ** 31 - 32, 'hidden_dim'],
      [K.NExperts, -1, 'n_experts'],
      [K.HiddenAct, 2, 'hidden_act'],
      [K.RopeType, 3, 'rope_type'],
      [K.RopeTheta, 0, 'rope_theta'],
      [K.NormEpsilon, 7, 'norm_epsilon'],
      [K.WeightsFloatType, 4, 'weights_float_type'],
      [K.WeightsFloatType, -1, 'weights_float_type'],
      [K.ArchType, 0, 'arch_type'],
      [K.ArchType, 0xabcd03, 'arch_type'],
    ];
    for (const [key, value, field] of cases) {
      const { err, pairs } = bad([[key, value]]);
      expect([err.field, err.offset, err.actual], `${field}=${value}`).toEqual([field, valueOffset(pairs, key), value]);
    }
  });

  it('required keys absent', () => {
    for (const [key, field] of [
      [K.WeightsFloatType, 'weights_float_type'],
      [K.Dim, 'dim'],
      [K.VocabSize, 'vocab_size'],
      [K.ArchType, 'arch_type'],
      [K.HiddenDim, 'hidden_dim'],
    ] as const) {
      const { err } = bad([[key, undefined]]);
      expect([err.field, err.offset], field).toEqual([field, 8]);
    }
  });

  it('heads not dividing', () => {
    const { err, pairs } = bad([[K.NKvHeads, 3]]);
    expect([err.field, err.offset]).toEqual(['n_kv_heads', valueOffset(pairs, K.NKvHeads)]);
  });

  it('head_dim inconsistent: dim not a multiple of n_heads without head_dim, odd, negative or absurd head_dim', () => {
    let r = bad([
      [K.NHeads, 6],
      [K.NKvHeads, 3],
    ]);
    expect([r.err.field, r.err.offset]).toEqual(['n_heads', valueOffset(r.pairs, K.NHeads)]);
    for (const hd of [7, -8, 1 << 13]) {
      r = bad([
        [K.WeightsFloatType, FloatType.F32],
        [K.HeadDim, hd],
      ]);
      expect([r.err.field, r.err.offset], `head_dim ${hd}`).toEqual(['head_dim', valueOffset(r.pairs, K.HeadDim)]);
    }
    // Q40 rows must be whole blocks: head_dim 12 × 8 heads = 96 is fine, 10 × 8 = 80 is not.
    r = bad([[K.HeadDim, 10]]);
    expect(r.err.field).toBe('head_dim');
  });

  it('quantized weights with rows that are not whole blocks', () => {
    let r = bad([[K.HiddenDim, 172]]);
    expect([r.err.field, r.err.offset]).toEqual(['hidden_dim', valueOffset(r.pairs, K.HiddenDim)]);
    r = bad([
      [K.Dim, 48],
      [K.NHeads, 6],
      [K.NKvHeads, 3],
    ]);
    expect(r.err.field).toBe('dim');
    // The same shapes are fine in F32.
    expect(() => parseModelHeader(rawModelHeader(withPairs([[K.HiddenDim, 172], [K.WeightsFloatType, 0]])))).not.toThrow();
  });

  it('experts only for QWEN3_MOE, and a consistent MoE header', () => {
    let r = bad([[K.NExperts, 4]]);
    expect(r.err.field).toBe('n_experts');
    const moe: [number, number | undefined][] = [
      [K.ArchType, ArchType.QWEN3_MOE],
      [K.NExperts, 8],
      [K.NActiveExperts, 2],
      [K.MoeHiddenDim, 64],
    ];
    expect(parseModelHeader(rawModelHeader(withPairs(moe))).ffDim).toBe(64);
    r = bad([...moe, [K.NActiveExperts, 9]]);
    expect([r.err.field, r.err.offset]).toEqual(['n_active_experts', valueOffset(r.pairs, K.NActiveExperts)]);
    r = bad([...moe, [K.NExperts, 0]]);
    expect(r.err.field).toBe('n_experts');
    r = bad([...moe, [K.MoeHiddenDim, undefined]]);
    expect(r.err.field).toBe('moe_hidden_dim');
  });

  it('every error is a FormatError with a one-line message naming field and offset', () => {
    const { err } = bad([[K.NKvHeads, 3]]);
    expect(err).toBeInstanceOf(FormatError);
    expect(err.message).not.toContain('\n');
    expect(err.message).toContain('field n_kv_heads');
    expect(err.message).toMatch(/byte offset \d+/);
    expect(MODEL_MAGIC).toBe(0x0a00abcd);
  });
});
