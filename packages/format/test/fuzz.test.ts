import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  buildModelLayout,
  checkFileSize,
  FormatError,
  MAX_MODEL_HEADER_BYTES,
  parseModelHeader,
  parseTokenizer,
} from '../src/index.js';
import { convertLlama2cTokenizer, parseLlama2cHeader } from '../src/convert.js';
import { rawModelHeader } from '../src/testing/index.js';
import { F32_FIXTURE, Q40_FIXTURE, readBytes, STORIES_BIN, TOK512_BIN, TOKENIZER_FIXTURE } from './helpers.js';

/** What `readModelFile` does, over bytes in memory. */
function checkModel(bytes: Uint8Array): void {
  const layout = buildModelLayout(parseModelHeader(bytes.subarray(0, Math.min(bytes.length, MAX_MODEL_HEADER_BYTES))));
  checkFileSize(layout, bytes.length);
  expect(layout.fileSize).toBe(bytes.length);
}

/** Run fn; anything but success or a FormatError fails the property. */
function onlyTyped(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    // A typed error always says where.
    expect(e.field !== undefined || e.path !== undefined).toBe(true);
  }
}

type Corruption =
  | { kind: 'flip'; at: number[]; values: number[] }
  | { kind: 'truncate'; length: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'duplicate'; at: number; count: number };

/** Random corruptions, with positions biased toward the first `hot` bytes (the headers). */
function corruption(size: number, hot: number): fc.Arbitrary<Corruption> {
  const pos = fc.oneof(fc.integer({ min: 0, max: Math.min(hot, size) - 1 }), fc.integer({ min: 0, max: size - 1 }));
  return fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.array(pos, { minLength: 1, maxLength: 4 }), values: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }) }),
    fc.record({ kind: fc.constant('truncate' as const), length: fc.oneof(fc.integer({ min: 0, max: hot }), fc.integer({ min: 0, max: size })) }),
    fc.record({ kind: fc.constant('insert' as const), at: pos, bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }),
    fc.record({ kind: fc.constant('delete' as const), at: pos, count: fc.integer({ min: 1, max: 64 }) }),
    fc.record({ kind: fc.constant('duplicate' as const), at: pos, count: fc.integer({ min: 1, max: 64 }) }),
  );
}

function apply(src: Uint8Array, c: Corruption): Uint8Array {
  switch (c.kind) {
    case 'flip': {
      const out = src.slice();
      c.at.forEach((a, i) => (out[a] = c.values[i]!));
      return out;
    }
    case 'truncate':
      return src.subarray(0, c.length);
    case 'insert':
      return Buffer.concat([src.subarray(0, c.at), c.bytes, src.subarray(c.at)]);
    case 'delete':
      return Buffer.concat([src.subarray(0, c.at), src.subarray(c.at + c.count)]);
    case 'duplicate':
      return Buffer.concat([src.subarray(0, c.at + c.count), src.subarray(c.at)]);
  }
}

const RUNS = { numRuns: 1500, interruptAfterTimeLimit: 20_000 };

describe('random corruptions: only typed FormatErrors or success, never a crash or hang', () => {
  for (const path of [F32_FIXTURE, Q40_FIXTURE]) {
    const bytes = readBytes(path);
    it(`model fixture ${path.split('/').pop()}`, () => {
      fc.assert(fc.property(corruption(bytes.length, 128), (c) => onlyTyped(() => checkModel(apply(bytes, c)))), RUNS);
    });
  }

  it('random model headers (any keys, extreme values)', () => {
    const value = fc.oneof(fc.constantFrom(0, 1, -1, 2, 5, 6, 8, 32, 64, 192, 512, 0xabcd00, 0xabcd01, 0xabcd02, 2 ** 31 - 1, -(2 ** 31), 1 << 20, 1 << 17), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }));
    const pairs = fc.array(fc.tuple(fc.integer({ min: -1, max: 23 }), value), { maxLength: 24 });
    fc.assert(
      fc.property(pairs, fc.nat(), (p, extra) =>
        onlyTyped(() => {
          const h = parseModelHeader(rawModelHeader(p));
          const layout = buildModelLayout(h);
          checkFileSize(layout, extra);
        }),
      ),
      { numRuns: 3000 },
    );
  });

  it('tokenizer fixture', () => {
    const bytes = readBytes(TOKENIZER_FIXTURE);
    fc.assert(fc.property(corruption(bytes.length, 96), (c) => onlyTyped(() => parseTokenizer(apply(bytes, c)))), RUNS);
  });

  it('llama2.c checkpoint header and tokenizer.bin', () => {
    const ck = readBytes(STORIES_BIN);
    fc.assert(
      fc.property(corruption(ck.length, 40), (c) =>
        onlyTyped(() => {
          const b = apply(ck, c);
          parseLlama2cHeader(b.subarray(0, 256), b.length);
        }),
      ),
      RUNS,
    );
    const tok = readBytes(TOK512_BIN);
    fc.assert(fc.property(corruption(tok.length, 64), fc.integer({ min: 0, max: 600 }), (c, n) => onlyTyped(() => convertLlama2cTokenizer(apply(tok, c), n))), RUNS);
  });
});
