/**
 * The time of one streamed pass verifying N rows (speculative decoding: the last token and
 * N − 1 drafted ones, every row's logits) ÷ one pass of 1 row, on a synthetic model of a real
 * shape (measured, not a test). Stream mode with a budget of two layers (nothing pinned), the
 * model file evicted from the page cache before every pass, the two kinds alternated. The same
 * measurement as the bench's streaming phase, alone (the full bench also runs every other scenario).
 *
 *   node packages/bench/bench/verify-pass.mjs [--shape 7b|tinyllama|mini] [--rows 9] [--repeats 3] [--dir DIR]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSyntheticModel } from '@airllm/format/convert';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { dropFileCache } from '@airllm/loader';
import { SHAPES, bytesPerStep, shapeLayout } from '@airllm/bench';

const arg = (name, fallback) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : fallback);
const shape = SHAPES[arg('--shape', '7b')];
const rows = Number(arg('--rows', '9'));
const repeats = Number(arg('--repeats', '3'));
const dir = mkdtempSync(join(arg('--dir', tmpdir()), 'airllm-verify-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
try {
  const model = join(dir, `${shape.name}.m`);
  const layout = await generateSyntheticModel(model, shape.header, { seed: 1 });
  const layerBytes = Math.max(...layout.layers.map((l) => l.extents.reduce((a, e) => a + e.size, 0)));
  const engine = new LayerWiseInferenceEngine(model, { mode: 'stream', maxMemory: 2 * layerBytes, threads: 2, activations: 'q80', maxSeqLen: 64, batchSize: 16, trace: true });
  await engine.initialize({ warmup: true });
  const tokens = Array.from({ length: rows }, (_, i) => 300 + 17 * i);
  /** Thread 0's compute and load-wait time in the trace since `mark` (ms; trace durations are µs). */
  const split = (mark) => {
    const ev = engine.trace.events.slice(mark).filter((e) => e.tid === 0);
    const sum = (cat) => ev.filter((e) => e.cat === cat).reduce((a, e) => a + e.dur / 1000, 0);
    return `compute ${sum('compute').toFixed(0)} ms, load wait ${sum('load-wait').toFixed(0)} ms`;
  };
  const pass = async (n) => {
    dropFileCache(model);
    engine.trace.clear();
    const t = performance.now();
    await engine.forwardBatch([{ slot: 0, pos: 0, tokens: tokens.slice(0, n), allLogits: n > 1 }]);
    const ms = performance.now() - t;
    console.log(`  ${n} row${n > 1 ? 's' : ''}: ${ms.toFixed(0)} ms (thread 0: ${split(0)})`);
    return ms;
  };
  await pass(1); // first pass: thread start-up and first touches, not timed
  const many = [];
  const one = [];
  for (let i = 0; i < repeats; i++) {
    for (const n of i % 2 === 0 ? [rows, 1] : [1, rows]) (n === 1 ? one : many).push(await pass(n));
  }
  await engine.cleanup();
  const r = median(many) / median(one);
  const { loadavg } = await import('node:os');
  console.log(`${shape.name} (${(bytesPerStep(shapeLayout(shape)) / 1e9).toFixed(2)} GB per pass, stream, cold cache): ${rows} rows ${median(many).toFixed(0)} ms ÷ 1 row ${median(one).toFixed(0)} ms = ${r.toFixed(3)} (target ≤ 1.15); load average ${loadavg()[0].toFixed(1)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
