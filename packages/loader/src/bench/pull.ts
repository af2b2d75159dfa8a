/**
 * `node dist/bench/pull.js [--mib N] [--rounds N]`: how fast `pullModel` brings a file from a
 * hub-like server on this machine, against curl fetching the same URL in the same run (plain,
 * and piped through sha256sum, which is the work a verified pull does), and the pulling
 * process's peak RSS (which must not grow with the file).
 *
 * The server (FakeHub, in this process) holds an N MiB file in memory and answers on loopback;
 * each pull runs in its own Node process. The three clients alternate round by round and the
 * ratios are medians of per-round ratios, since this machine is shared and its speed drifts.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { FakeHub } from '../testing/fake-hub.js';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

const mib = arg('--mib', 1024);
const rounds = arg('--rounds', 5);
const work = mkdtempSync(join(tmpdir(), 'airllm-bench-pull-'));
const content = new Uint8Array(mib << 20);
for (let off = 0; off < content.length; off += 1 << 16) randomFillSync(content, off, Math.min(1 << 16, content.length - off));
const hub = await FakeHub.start({ repos: [{ id: 'bench/model', files: [{ path: 'model.gguf', content }] }] });
const index = fileURLToPath(new URL('../index.js', import.meta.url));
const url = `${hub.url}/bench/model/resolve/main/model.gguf`;

// A child that pulls and reports its time and peak RSS as JSON. The peak is VmHWM, not
// getrusage's ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child of this process
// (which holds the whole file) would report this process's size.
const child = `
const { pullModel, memoryStatus } = await import(${JSON.stringify(index)});
const t = performance.now();
await pullModel('hf:bench/model/model.gguf', { endpoint: process.argv[1], cacheDir: process.argv[2] });
process.stdout.write(JSON.stringify({ ms: performance.now() - t, maxRssKiB: memoryStatus().peakRss / 1024 }));
`;

// Children run asynchronously: the server answering them lives on this process's event loop.
const run = promisify(execFile);

async function ours(dir: string): Promise<{ ms: number; maxRssKiB: number }> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', child, hub.url, dir], { encoding: 'utf8' });
  return JSON.parse(stdout) as { ms: number; maxRssKiB: number };
}

async function timed(cmd: string, args: string[]): Promise<number> {
  const t = performance.now();
  await run(cmd, args);
  return performance.now() - t;
}

const rows: { ours: number; curl: number; curlSha: number; rss: number }[] = [];
try {
  for (let round = 0; round < rounds; round++) {
    const dir = join(work, `r${round}`);
    const file = join(work, `curl-${round}`);
    const a = await ours(dir);
    const curl = await timed('curl', ['-sfL', '-o', file, url]);
    rmSync(file, { force: true });
    const curlSha = await timed('sh', ['-c', `curl -sfL '${url}' | tee '${file}' | sha256sum > /dev/null`]);
    rmSync(file, { force: true });
    rmSync(dir, { recursive: true, force: true });
    rows.push({ ours: a.ms, curl, curlSha, rss: a.maxRssKiB });
    process.stderr.write(`round ${round + 1}: pullModel ${a.ms.toFixed(0)} ms (peak RSS ${(a.maxRssKiB / 1024).toFixed(0)} MiB), curl ${curl.toFixed(0)} ms, curl | sha256sum ${curlSha.toFixed(0)} ms\n`);
  }
} finally {
  await hub.close();
  rmSync(work, { recursive: true, force: true });
}
const mbps = (ms: number): string => `${((mib * 1.048576) / (ms / 1000)).toFixed(0)} MB/s`;
console.log(`file ${mib} MiB over loopback, ${rounds} rounds (medians)`);
console.log(`pullModel (download + sha256 + fsync + rename): ${mbps(median(rows.map((r) => r.ours)))}, peak RSS ${(median(rows.map((r) => r.rss)) / 1024).toFixed(0)} MiB (max ${(Math.max(...rows.map((r) => r.rss)) / 1024).toFixed(0)})`);
console.log(`curl -o: ${mbps(median(rows.map((r) => r.curl)))}; curl | tee | sha256sum: ${mbps(median(rows.map((r) => r.curlSha)))}`);
console.log(`time ratio pullModel ÷ curl: ${median(rows.map((r) => r.ours / r.curl)).toFixed(2)}; ÷ curl | sha256sum: ${median(rows.map((r) => r.ours / r.curlSha)).toFixed(2)}`);
