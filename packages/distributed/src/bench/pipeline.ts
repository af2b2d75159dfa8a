/**
 * `npm run bench -w @airllm/distributed`: one process against a root with two `airllm worker`
 * processes on this machine, same model, side by side. Prints decode tokens/s (one sequence
 * and a batch of four), transport bytes per token against activations × hops, and each
 * worker's peak RSS against the model size (a worker loads only its layers).
 *
 * All processes share this machine's cores, so the pipeline cannot be faster here; the figures
 * show its overhead and that nodes overlap (micro-batches in flight), not a speed-up.
 * Options: --layers N (default 12), --dim D (default 512), --tokens T (default 32), --runs R (default 3).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArchType, FloatType, HeaderKey } from '@airllm/format';
import { generateSyntheticModel } from '@airllm/format/convert';
import { LayerWiseInferenceEngine, type EngineOptions } from '@airllm/engine';
import { DistributedEngine } from '../index.js';

const CLI = fileURLToPath(new URL('../../../cli/bin/airllm.js', import.meta.url));

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

async function startWorker(model: string): Promise<{ proc: ChildProcess; address: string }> {
  const proc = spawn(process.execPath, [CLI, 'worker', '--model', model, '--port', '0', '--threads', '1'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) resolve((JSON.parse(out.split('\n')[0]!) as { port: number }).port);
    });
    proc.once('exit', (c) => reject(new Error(`worker exited with ${c}`)));
  });
  return { proc, address: `127.0.0.1:${port}` };
}

/** Bytes of `file` resident in process `pid`'s mappings (pages it touched), from /proc/pid/smaps. */
function mappedRss(pid: number, file: string): number {
  let total = 0;
  let inFile = false;
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inFile = line.endsWith(file);
    else if (inFile && line.startsWith('Rss:')) total += Number(/(\d+) kB/.exec(line)![1]) * 1024;
  }
  return total;
}

/** Decode tokens/s of `engine` for `prompts` (greedy), and the tokens (to check they agree). */
async function decode(engine: LayerWiseInferenceEngine, prompts: number[][], tokens: number): Promise<{ tps: number; out: number[][] }> {
  const out: number[][] = prompts.map(() => []);
  let first = 0;
  let n = 0;
  for await (const t of engine.generateBatch(prompts, { temperature: 0, maxTokens: tokens, stopAtEos: false })) {
    out[t.index]!.push(t.token);
    // Time from the first sampled token: prefill excluded.
    if (++n === prompts.length) first = performance.now();
  }
  return { tps: (n - prompts.length) / ((performance.now() - first) / 1000), out };
}

async function main(): Promise<void> {
  const layers = arg('layers', 12);
  const dim = arg('dim', 512);
  const tokens = arg('tokens', 32);
  const runs = arg('runs', 3);
  const dir = mkdtempSync(join(tmpdir(), 'airllm-bench-distributed-'));
  const workers: { proc: ChildProcess; address: string }[] = [];
  try {
    const model = join(dir, 'model.m');
    const layout = await generateSyntheticModel(model, {
      [HeaderKey.ArchType]: ArchType.LLAMA,
      [HeaderKey.Dim]: dim,
      [HeaderKey.HiddenDim]: dim * 3,
      [HeaderKey.NLayers]: layers,
      [HeaderKey.NHeads]: dim / 64,
      [HeaderKey.NKvHeads]: dim / 128,
      [HeaderKey.VocabSize]: 4096,
      [HeaderKey.MaxSeqLen]: 256,
      [HeaderKey.WeightsFloatType]: FloatType.Q40,
    });
    const opts: EngineOptions = { threads: 1, activations: 'q80', maxSequences: 4, batchSize: 32, maxSeqLen: 256 };
    const one = [[1, 5, 9]];
    const four = [[1, 5, 9], [1, 7], [1, 2, 3, 4], [1, 11]];
    console.log(`model: Llama-shaped Q40, dim ${dim}, ${layers} layers, ${(layout.fileSize / 2 ** 20).toFixed(1)} MiB (layer ${(layout.layerBytes / 2 ** 20).toFixed(2)} MiB); q80 activations, f32 on the wire; ${tokens} tokens, ${runs} runs, 1 thread per process`);

    const single = new LayerWiseInferenceEngine(model, opts);
    await single.initialize();
    workers.push(await startWorker(model), await startWorker(model));
    const dist = new DistributedEngine(model, opts, { workers: workers.map((w) => w.address), wire: 'f32' });
    await dist.initialize();
    const rows: string[] = [];
    try {
      for (const [name, prompts] of [['1 sequence', one], ['4 sequences', four]] as const) {
        const s: number[] = [];
        const d: number[] = [];
        let same = true;
        let bytesPerToken = 0;
        for (let r = 0; r < runs; r++) {
          // Alternate, so drift of the shared machine hits both alike.
          const a = await decode(single, prompts.map((p) => [...p]), tokens);
          const before = await dist.transportStats();
          const b = await decode(dist, prompts.map((p) => [...p]), tokens);
          const after = await dist.transportStats();
          s.push(a.tps);
          d.push(b.tps);
          same &&= JSON.stringify(a.out) === JSON.stringify(b.out);
          bytesPerToken = (after.totalBytesSent - before.totalBytesSent) / (tokens * prompts.length);
        }
        const ideal = dim * 4 * 3;
        rows.push(
          `${name}: decode ${median(s).toFixed(1)} tok/s in one process, ${median(d).toFixed(1)} tok/s root + 2 workers (ratio ${(median(d) / median(s)).toFixed(2)}); ` +
            `${bytesPerToken.toFixed(0)} bytes/token on the wire vs ${ideal} activations × 3 hops (${(bytesPerToken / ideal).toFixed(3)}×); tokens identical: ${same}`,
        );
      }
      rows.push(`pipeline: ${JSON.stringify(dist.plan.map((n) => `${n.node} ${n.layers.start}-${n.layers.end - 1}`))}, stats ${JSON.stringify(dist.pipelineStats)}`);
      for (const [i, w] of workers.entries()) {
        const l = dist.plan[i + 1]!.layers;
        const share = ((l.end - l.start) * layout.layerBytes) / 2 ** 20;
        rows.push(
          `worker ${i + 1} (layers ${l.start}-${l.end - 1}, ${share.toFixed(1)} MiB of weights): ${(mappedRss(w.proc.pid!, model) / 2 ** 20).toFixed(1)} MiB of the ${(layout.fileSize / 2 ** 20).toFixed(1)} MiB model file resident in its mappings`,
        );
      }
    } finally {
      await dist.cleanup();
      await single.cleanup();
    }
    for (const r of rows) console.log(r);
  } finally {
    for (const w of workers) w.proc.kill('SIGTERM');
    await Promise.all(workers.map((w) => new Promise((r) => (w.proc.exitCode !== null ? r(null) : w.proc.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
