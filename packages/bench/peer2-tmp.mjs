import { generateSyntheticModel, exportGguf } from '@airllm/format';
import { memoryStatus } from '@airllm/loader';
import { writeFileSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os'; import { join } from 'node:path';
import { SHAPES } from './dist/shapes.js';
import { syntheticTokenizer } from './dist/tokenizer.js';
const shape = process.argv[2] ?? 'tinyllama';
const d = '/tmp/peert-' + shape; 
const m = join(d, 'm.m'), t = join(d, 'v.t'), g = join(d, 'm.gguf');
if (!existsSync(g)) {
  (await import('node:fs')).mkdirSync(d, { recursive: true });
  await generateSyntheticModel(m, SHAPES[shape].header, { seed: 1, overwrite: true });
  writeFileSync(t, syntheticTokenizer(SHAPES[shape].header[9]));
  await exportGguf(m, g, { tokenizerPath: t, fsync: false, overwrite: true });
}
const { getLlama } = await import(join(process.env.HOME, '.cache/airllm-bench/node-llama-cpp/node_modules/node-llama-cpp/dist/index.js'));
const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, progressLogs: false, maxThreads: 2, logLevel: 'warn' });
const opts = JSON.parse(process.argv[3] ?? '{}');
const model = await llama.loadModel({ modelPath: g, gpuLayers: 0, ...opts });
const ms = memoryStatus(); console.log(JSON.stringify(opts), 'after load anon', (ms.rssAnon/1e9).toFixed(2), 'file', (ms.rssFile/1e9).toFixed(2));
const ctx = await model.createContext({ contextSize: 64, threads: Number(process.argv[4] ?? 2), sequences: 1 });
const seq = ctx.getSequence();
for (let r = 0; r < 2; r++) {
  await seq.clearHistory();
  const toks = Array.from({ length: 16 }, (_, i) => 300 + i * 7 + r);
  let t0 = performance.now(); let n = 0; const times = [];
  for await (const tok of seq.evaluate(toks, { temperature: 0 })) { const t1 = performance.now(); times.push((t1 - t0).toFixed(0)); t0 = t1; if (++n >= 8) break; }
  console.log('run', r, times.join(' '));
}
const ms2 = memoryStatus(); console.log('end anon', (ms2.rssAnon/1e9).toFixed(2), 'file', (ms2.rssFile/1e9).toFixed(2), 'hwm', (ms2.peakRss/1e9).toFixed(2));
await ctx.dispose(); await model.dispose(); await llama.dispose();
