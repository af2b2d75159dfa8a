import { generateSyntheticModel, exportGguf } from '@airllm/format';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os'; import { join } from 'node:path';
import { SHAPES } from './dist/shapes.js';
import { syntheticTokenizer } from './dist/tokenizer.js';
const shape = process.argv[2] ?? 'mini';
const d = mkdtempSync(join(tmpdir(), 'peert-'));
const m = join(d, 'm.m'), t = join(d, 'v.t'), g = join(d, 'm.gguf');
await generateSyntheticModel(m, SHAPES[shape].header, { seed: 1 });
writeFileSync(t, syntheticTokenizer(SHAPES[shape].header[9]));
await exportGguf(m, g, { tokenizerPath: t, fsync: false });
const { getLlama } = await import(join(process.env.HOME, '.cache/airllm-bench/node-llama-cpp/node_modules/node-llama-cpp/dist/index.js'));
const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, progressLogs: false, maxThreads: 2, logLevel: 'warn' });
console.log('cpuMathCores', llama.cpuMathCores, 'maxThreads', llama.maxThreads);
const model = await llama.loadModel({ modelPath: g, gpuLayers: 0 });
const ctx = await model.createContext({ contextSize: 64, threads: Number(process.argv[3] ?? 2), sequences: 1 });
console.log('ctx threads', ctx.currentThreads, ctx.idealThreads);
const seq = ctx.getSequence();
for (let r = 0; r < 3; r++) {
  await seq.clearHistory();
  const toks = Array.from({ length: 8 }, (_, i) => 300 + i * 7 + r);
  let t0 = performance.now(); let n = 0; const times = [];
  for await (const tok of seq.evaluate(toks, { temperature: 0 })) { const t1 = performance.now(); times.push((t1 - t0).toFixed(1)); t0 = t1; if (++n >= 8) break; }
  console.log('run', r, times.join(' '));
}
await ctx.dispose(); await model.dispose(); await llama.dispose(); rmSync(d, { recursive: true });
