import { describe, expect, it } from 'vitest';
import { OptionError, Sampler } from '@airllm/engine';

describe('Sampler', () => {
  it("xorshift64* gives llama2.c's sequence (values from an independent Python implementation)", () => {
    const s = new Sampler(4, { seed: 42 });
    expect([1, 2, 3, 4, 5].map(() => s.nextU32())).toEqual([1456360119, 3359763283, 3393612768, 4054632243, 3283045847]);
  });

  it('greedy takes the first maximum', () => {
    const s = new Sampler(5, { temperature: 0 });
    expect(s.sample(Float32Array.of(0, 3, 1, 3, -1))).toBe(1);
  });

  it('only looks at the tokenizer vocabulary, not extra logits', () => {
    const s = new Sampler(3, { temperature: 0 });
    expect(s.sample(Float32Array.of(0, 2, 1, 99))).toBe(1);
  });

  it('follows softmax(logits / T) with temperature', () => {
    const logits = Float32Array.of(1, 2, 0.5, -1);
    const T = 0.7;
    const s = new Sampler(4, { temperature: T, seed: 7 });
    const counts = [0, 0, 0, 0];
    const n = 20000;
    for (let i = 0; i < n; i++) counts[s.sample(logits)]!++;
    const e = Array.from(logits, (l) => Math.exp(l / T));
    const z = e.reduce((a, b) => a + b);
    e.forEach((v, i) => expect(Math.abs(counts[i]! / n - v / z)).toBeLessThan(0.015));
  });

  it('top-k 1 is greedy at any temperature; top-k keeps only the k best', () => {
    const logits = Float32Array.of(0.1, 0.3, 0.2, 0.25);
    const one = new Sampler(4, { temperature: 5, topK: 1, seed: 1 });
    for (let i = 0; i < 200; i++) expect(one.sample(logits)).toBe(1);
    const two = new Sampler(4, { temperature: 5, topK: 2, seed: 1 });
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) seen.add(two.sample(logits));
    expect([...seen].sort()).toEqual([1, 3]);
  });

  it('top-p never picks outside the nucleus', () => {
    // probabilities ≈ 0.64, 0.24, 0.09, 0.03: p = 0.8 keeps the first two
    const logits = Float32Array.of(3, 2, 1, 0);
    const s = new Sampler(4, { temperature: 1, topP: 0.8, seed: 3 });
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(s.sample(logits));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('reproduces with the same seed', () => {
    const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const a = new Sampler(50, { temperature: 1, seed: 123 });
    const b = new Sampler(50, { temperature: 1, seed: 123 });
    expect(Array.from({ length: 50 }, () => a.sample(logits))).toEqual(Array.from({ length: 50 }, () => b.sample(logits)));
  });

  it('rejects bad options with a typed error naming the option', () => {
    expect(() => new Sampler(4, { temperature: -1 })).toThrow(OptionError);
    expect(() => new Sampler(4, { topP: 2 })).toThrow(/topP/);
    expect(() => new Sampler(4, { topK: 1.5 })).toThrow(/topK/);
  });
});
