import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { findBytePieces } from '@airllm/format/convert';
import { parseTokenizer } from '@airllm/format';
import type { TraceEvent } from '@airllm/engine';
import { decodeBreakdown, ioBreakdown, traceSteps } from '../src/analysis.js';
import { parseArgs } from '../src/args.js';
import { UsageError } from '../src/errors.js';
import { bytesPerStep, kvBytes, segmentSizes, shapeLayout, SHAPES } from '../src/shapes.js';
import { cpuBusy, waitForQuiet } from '../src/machine.js';
import { median, Prng } from '../src/stats.js';
import { renderTimeline } from '../src/timeline.js';
import { FIRST_WORD_TOKEN, syntheticTokenizer } from '../src/tokenizer.js';

/** A trace as the engine writes it: per thread, per segment a wait (optional) then a compute span (µs). */
function fakeTrace(steps: { start: number; layerUs: number; headUs: number; waitUs: number; rows: number }[], nLayers: number, threads: number): TraceEvent[] {
  const ev: TraceEvent[] = [];
  for (const s of steps) {
    for (let t = 0; t < threads; t++) {
      let ts = s.start;
      for (let seg = 0; seg <= nLayers; seg++) {
        if (s.waitUs > 0) {
          ev.push({ name: `wait layer ${seg}`, cat: 'load-wait', ph: 'X', ts, dur: s.waitUs, pid: 1, tid: t, args: { segment: seg } });
          ts += s.waitUs;
        }
        const dur = seg === nLayers ? s.headUs : s.layerUs;
        ev.push({ name: seg === nLayers ? 'head' : `layer ${seg}`, cat: 'compute', ph: 'X', ts, dur, pid: 1, tid: t, args: { segment: seg, rows: s.rows } });
        ts += dur;
      }
    }
  }
  return ev;
}

describe('trace analysis', () => {
  it('cuts thread 0 into steps and splits a decode step', () => {
    const L = 4;
    // A prompt step (8 rows), then three decode steps 10 ms apart: 4 layers × 1.5 ms + head 1 ms + waits 0.25 ms × 5.
    const steps = [
      { start: 0, layerUs: 5000, headUs: 2000, waitUs: 0, rows: 8 },
      { start: 30_000, layerUs: 1500, headUs: 1000, waitUs: 250, rows: 1 },
      { start: 40_000, layerUs: 1500, headUs: 1000, waitUs: 250, rows: 1 },
      { start: 50_000, layerUs: 1500, headUs: 1000, waitUs: 250, rows: 1 },
    ];
    const ev = fakeTrace(steps, L, 2);
    const cut = traceSteps(ev, L);
    expect(cut.map((s) => s.rows)).toEqual([8, 1, 1, 1]);
    expect(cut[0]!.layerComputeMs).toBeCloseTo(20, 6);
    expect(cut[1]!.loadWaitMs).toBeCloseTo(1.25, 6);
    const b = decodeBreakdown(ev, L)!;
    expect(b.steps).toBe(3);
    expect(b.stepMs).toBeCloseTo(10, 6);
    expect(b.layerComputeMs).toBeCloseTo(6, 6);
    expect(b.perLayerComputeMs).toBeCloseTo(1.5, 6);
    expect(b.headComputeMs).toBeCloseTo(1, 6);
    // wall of a step = 6 + 1 + 1.25 = 8.25 ms; the rest of the 10 ms period is outside it.
    expect(b.outsideMs).toBeCloseTo(1.75, 6);
  });

  it('ends steps without a head when the layer index wraps (pipeline nodes)', () => {
    const ev: TraceEvent[] = [];
    for (let step = 0; step < 2; step++) {
      for (let seg = 0; seg < 3; seg++) ev.push({ name: `layer ${seg}`, cat: 'compute', ph: 'X', ts: step * 100 + seg * 10, dur: 10, pid: 1, tid: 0, args: { segment: seg, rows: 1 } });
    }
    expect(traceSteps(ev, 8).map((s) => s.layers)).toEqual([3, 3]);
  });
});

describe('I/O breakdown', () => {
  it('sums bytes and the union of load spans', () => {
    const load = (ts: number, dur: number, bytes: number, cat = 'load-prefetch'): TraceEvent => ({ name: 'load', cat, ph: 'X', ts, dur, pid: 1, tid: 'prefetch', args: { bytes } });
    // 0–10 ms and 5–15 ms overlap (15 ms busy), then 20–30 ms: 25 ms busy for 50 MB → 2 GB/s.
    const io = ioBreakdown([load(0, 10_000, 20e6), load(5000, 10_000, 10e6, 'load-demand'), load(20_000, 10_000, 20e6), { name: 'x', cat: 'compute', ph: 'X', ts: 0, dur: 99e6, pid: 1, tid: 0 }])!;
    expect(io.loads).toBe(3);
    expect(io.bytes).toBe(50e6);
    expect(io.busyMs).toBeCloseTo(25, 9);
    expect(io.windowMs).toBeCloseTo(30, 9);
    expect(io.bytesPerSecond).toBeCloseTo(2e9, 0);
    expect(ioBreakdown([])).toBeUndefined();
    // Clipped to windows 0–8 ms and 20–25 ms: 8 + 5 ms busy; bytes in proportion (16 + 6 + 10 MB).
    const w = ioBreakdown([load(0, 10_000, 20e6), load(5000, 10_000, 10e6), load(20_000, 10_000, 20e6)], [
      { start: 0, end: 8000 },
      { start: 20_000, end: 25_000 },
    ])!;
    expect(w.busyMs).toBeCloseTo(13, 9);
    expect(w.windowMs).toBeCloseTo(13, 9);
    expect(w.bytes).toBeCloseTo(16e6 + 3e6 + 10e6, 0);
    expect(w.loads).toBe(3);
  });
});

describe('timeline', () => {
  it('places spans on their thread lane at their time, with layer numbers', () => {
    const ev = fakeTrace([{ start: 1_000_000, layerUs: 10_000, headUs: 5000, waitUs: 0, rows: 1 }], 2, 2);
    ev.push({ name: 'load layer 1', cat: 'load-prefetch', ph: 'X', ts: 1_005_000, dur: 10_000, pid: 1, tid: 'prefetch', args: { bytes: 1 } });
    const svg = renderTimeline(ev, { title: 't <1>', start: 1_000_000, end: 1_025_000, nLayers: 2, width: 1120 });
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg).toContain('t &lt;1&gt;');
    for (const lane of ['compute 0', 'compute 1', 'prefetch (I/O)']) expect(svg).toContain(`>${lane}</text>`);
    // Plot: x from 120 to 1100 over 25 ms → 39.2 px per ms; lanes from y = 44, 36 px apart, spans
    // inset 2 px. Layer 1 of each thread: 10..20 ms.
    expect(svg).toContain('<rect x="512" y="46" width="392" height="22" fill="#81c784">');
    expect(svg).toContain('<rect x="512" y="82" width="392" height="22" fill="#81c784">');
    // The load on the prefetch lane (third lane): 5..15 ms.
    expect(svg).toContain('<rect x="316" y="118" width="392" height="22" fill="#64b5f6">');
    expect(svg).toMatch(/>H<\/text>/);
    expect(svg.trim().endsWith('</svg>')).toBe(true);
  });
});

describe('synthetic tokenizer', () => {
  it('is a SentencePiece-style .t with the real vocabulary size and unique pieces', () => {
    const tok = parseTokenizer(syntheticTokenizer(32000));
    expect(tok.vocab.length).toBe(32000);
    expect(tok.bosId).toBe(1);
    expect(tok.eosIds).toEqual([2]);
    expect(findBytePieces(tok.vocab)).toBe(3);
    expect(FIRST_WORD_TOKEN).toBe(3 + 256);
    const keys = new Set(tok.vocab.map((p) => Buffer.from(p).toString('latin1')));
    expect(keys.size).toBe(32000);
  });
  it('refuses vocabularies too small for the byte pieces', () => {
    expect(() => syntheticTokenizer(300)).toThrow(RangeError);
  });
});

describe('shapes', () => {
  it('have the real models’ sizes', () => {
    // Llama-2-7B in Q40: 32 layers of 4·4096² + 3·4096·11008 weights at 18 bytes per 32, norms in F32.
    const l7 = shapeLayout(SHAPES['7b']);
    const layer = ((4 * 4096 * 4096 + 3 * 4096 * 11008) / 32) * 18 + 2 * 4096 * 4;
    expect(l7.layerBytes).toBe(layer);
    const head = 4096 * 4 + ((32000 * 4096) / 32) * 18;
    expect(segmentSizes(l7).at(-1)).toBe(head);
    expect(bytesPerStep(l7)).toBe(32 * layer + head);
    expect(l7.fileSize).toBe(l7.header.headerSize + 32000 * 4096 * 4 + 32 * layer + head);
    const tiny = shapeLayout(SHAPES.tinyllama);
    expect(tiny.header.kvDim).toBe(256);
    expect(kvBytes(tiny, 10)).toBe(10 * 256 * 2 * 4 * 22);
    // 70B is ~38 GB (DESIGN.md: 38.8 GB for llama.cpp's Q4_0 file, which keeps the embedding in Q4_0).
    expect(shapeLayout(SHAPES['70b']).fileSize / 1e9).toBeGreaterThan(37);
  });
});

describe('arguments', () => {
  it('parses shapes, flags and numbers', () => {
    const a = parseArgs(['--quick', '--no-peer', '--shape', '7b,tinyllama', '--shape', '7b', '--json', '--runs', '5', '--activations', 'f32']);
    expect(a.json).toBe(true);
    expect(a.options.quick).toBe(true);
    expect(a.options.peer).toBe(false);
    expect(a.options.shapes).toEqual(['7b', 'tinyllama']);
    expect(a.options.runs).toBe(5);
    expect(a.options.activations).toBe('f32');
    expect(parseArgs([]).options.shapes).toEqual(['tinyllama', '7b']);
    expect(parseArgs(['--quick']).options.shapes).toEqual(['mini']);
  });
  it('rejects what it does not know', () => {
    expect(() => parseArgs(['--shape', '13b'])).toThrow(UsageError);
    expect(() => parseArgs(['--runs', '0'])).toThrow(UsageError);
    expect(() => parseArgs(['--runs'])).toThrow(UsageError);
    expect(() => parseArgs(['--frobnicate'])).toThrow(UsageError);
  });
});

describe('stats', () => {
  it('median and a seeded generator', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(Number.isNaN(median([]))).toBe(true);
    const a = new Prng(7);
    const b = new Prng(7);
    const xs = Array.from({ length: 1000 }, () => a.below(10));
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b.below(10)));
    expect(new Set(xs).size).toBe(10);
  });
});

describe('machine quietness', () => {
  it('samples the CPUs’ busy share and waits no longer than allowed', async () => {
    const b = await cpuBusy(100);
    expect(b).toBeGreaterThanOrEqual(0);
    expect(b).toBeLessThanOrEqual(1);
    const easy = await waitForQuiet({ threshold: 1, sampleMs: 50, maxWaitMs: 10_000 });
    expect(easy.quiet).toBe(true);
    expect(easy.waitedMs).toBeLessThan(2000);
    // A threshold nothing can meet while this test itself spins on the other core.
    const spin = new Worker(new URL('data:text/javascript,for(;;){}'));
    try {
      const t0 = performance.now();
      const hard = await waitForQuiet({ threshold: 0.3, sampleMs: 100, maxWaitMs: 300 });
      expect(hard.quiet).toBe(false);
      expect(hard.busy!).toBeGreaterThan(0.3);
      expect(performance.now() - t0).toBeLessThan(3000);
    } finally {
      await spin.terminate();
    }
  });
});
