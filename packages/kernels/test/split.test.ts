import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { splitRange } from '../src/split.js';

describe('splitRange', () => {
  it('covers [0, n) exactly, in order, with aligned boundaries and even sizes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 100000 }), fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 64 }), (n, parts, align) => {
        let next = 0;
        const sizes: number[] = [];
        for (let i = 0; i < parts; i++) {
          const [a, b] = splitRange(n, parts, i, align);
          expect(a).toBe(next); // contiguous, no gap or overlap
          expect(b).toBeGreaterThanOrEqual(a);
          if (a < n) expect(a % align).toBe(0); // every start is aligned
          if (b < n) expect(b % align).toBe(0); // every end except n is aligned
          sizes.push(b - a);
          next = b;
        }
        expect(next).toBe(n);
        // even: the aligned units differ by at most one between parts
        const units = sizes.map((s) => Math.ceil(s / align));
        expect(Math.max(...units) - Math.min(...units)).toBeLessThanOrEqual(1);
      }),
    );
  });

  it('examples: 11008 rows over 2 threads, 4097 rows in blocks of 4', () => {
    expect(splitRange(11008, 2, 0)).toEqual([0, 5504]);
    expect(splitRange(11008, 2, 1)).toEqual([5504, 11008]);
    expect(splitRange(4097, 2, 0, 4)).toEqual([0, 2052]);
    expect(splitRange(4097, 2, 1, 4)).toEqual([2052, 4097]);
    expect(splitRange(3, 4, 3)).toEqual([3, 3]);
  });

  it('rejects a bad part index', () => {
    expect(() => splitRange(10, 2, 2)).toThrow(RangeError);
    expect(() => splitRange(10, 0, 0)).toThrow(RangeError);
  });
});
