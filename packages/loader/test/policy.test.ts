import { describe, expect, it } from 'vitest';
import { simulateCyclicScan } from '../src/policy.js';

describe('cyclic scan: LRU against pinning', () => {
  it('LRU smaller than the scan misses on every access once warm', () => {
    for (const [segments, capacity] of [
      [20, 2],
      [20, 10],
      [20, 19],
      [81, 40],
    ] as const) {
      const lru = simulateCyclicScan('lru', segments, capacity, 5);
      expect(lru.hits).toBe(0);
      expect(lru.warmMissesPerPass).toBe(segments);
    }
  });

  it('LRU as large as the scan hits everything after the first pass', () => {
    const lru = simulateCyclicScan('lru', 20, 20, 4);
    expect(lru.misses).toBe(20);
    expect(lru.warmMissesPerPass).toBe(0);
  });

  it('pinning hits on every pinned segment: warm misses = segments − (capacity − slots)', () => {
    for (const [segments, capacity] of [
      [20, 2],
      [20, 10],
      [20, 19],
      [81, 40],
    ] as const) {
      const pin = simulateCyclicScan('pin', segments, capacity, 5, 2);
      expect(pin.warmMissesPerPass).toBe(segments - Math.max(0, capacity - 2));
    }
    expect(simulateCyclicScan('pin', 20, 20, 3).warmMissesPerPass).toBe(0);
  });

  it('rejects nonsense sizes', () => {
    expect(() => simulateCyclicScan('lru', 0, 1, 1)).toThrow(RangeError);
    expect(() => simulateCyclicScan('pin', 3, 1.5, 1)).toThrow(RangeError);
  });
});
