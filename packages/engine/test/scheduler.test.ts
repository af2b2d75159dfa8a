import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BatchScheduler, ContextOverflowError, LayerWiseInferenceEngine, type SequenceResult } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES } from './helpers.js';

const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[]; text: string };
};
const want = reference.bos_only.generated_tokens;

describe('BatchScheduler: sequences join and leave the running batch', () => {
  let engine: LayerWiseInferenceEngine;
  beforeAll(async () => {
    engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: FIXTURE_TOKENIZER, threads: 2, maxSequences: 2, batchSize: 8 });
    await engine.initialize();
  });
  afterAll(() => engine.cleanup());

  /** A BOS-only greedy job; its streamed pieces are collected. */
  function job(maxTokens: number, signal = new AbortController().signal, onPiece?: (n: number) => void) {
    const pieces: string[] = [];
    return {
      pieces,
      run: (s: BatchScheduler): Promise<SequenceResult> =>
        s.run({
          prompt: [1],
          options: { maxTokens, temperature: 0, stopAtEos: false },
          signal,
          onText: (t) => {
            pieces.push(t);
            onPiece?.(pieces.length);
          },
        }),
    };
  }

  it("more jobs than slots: each waits its turn and gets llama2.c's greedy tokens", async () => {
    const s = new BatchScheduler(engine, 2);
    const lengths = [40, 12, 30, 25];
    const jobs = lengths.map((n) => job(n));
    const results = await Promise.all(jobs.map((j) => j.run(s)));
    results.forEach((r, i) => {
      expect(r.tokens, `job ${i}`).toEqual(want.slice(0, lengths[i]));
      expect(r.finishReason).toBe('length');
      expect(jobs[i]!.pieces.join('')).toBe(r.text);
      expect(reference.bos_only.text.startsWith(r.text.trimStart()), r.text).toBe(true);
    });
    // The third job got the slot the second (the shortest) freed: it waited at least that long.
    expect(results[2]!.stats.waitMs).toBeGreaterThanOrEqual(results[1]!.stats.prefillMs + results[1]!.stats.decodeMs);
    expect(s.stats).toMatchObject({ slots: 2, active: 0, queued: 0, maxBatch: 2 });
    expect(s.stats.steps).toBeGreaterThanOrEqual(40);
  });

  it('a cancelled job leaves after the step it is in, the others finish', async () => {
    const s = new BatchScheduler(engine, 2);
    const abort = new AbortController();
    const cancelled = job(60, abort.signal, (n) => n === 5 && abort.abort());
    const other = job(30);
    const early = new AbortController();
    early.abort();
    const [c, o, e] = await Promise.all([cancelled.run(s), other.run(s), job(10, early.signal).run(s)]);
    expect(c.finishReason).toBe('cancelled');
    expect(c.tokens.length).toBeLessThan(60);
    expect(c.tokens).toEqual(want.slice(0, c.tokens.length));
    expect(o.tokens).toEqual(want.slice(0, 30));
    expect(e).toMatchObject({ finishReason: 'cancelled', tokens: [] });
  });

  it("a job that cannot start rejects with the engine's error; the rest run", async () => {
    const s = new BatchScheduler(engine, 2);
    const tooLong = s.run({ prompt: Array(engine.maxSeqLen + 1).fill(5), options: {}, signal: new AbortController().signal, onText: () => {} });
    const fine = job(8).run(s);
    await expect(tooLong).rejects.toThrow(ContextOverflowError);
    expect((await fine).tokens).toEqual(want.slice(0, 8));
  });

  it("an onText that throws fails its own job only", async () => {
    const s = new BatchScheduler(engine, 2);
    const boom = s.run({
      prompt: [1],
      options: { maxTokens: 20, temperature: 0, stopAtEos: false },
      signal: new AbortController().signal,
      onText: () => {
        throw new Error('client write failed');
      },
    });
    const fine = job(20).run(s);
    await expect(boom).rejects.toThrow('client write failed');
    expect((await fine).tokens).toEqual(want.slice(0, 20));
  });
});
