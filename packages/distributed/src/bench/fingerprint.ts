/**
 * `node dist/bench/fingerprint.js [--gib N] [--rounds R]`: what the model fingerprint costs.
 *
 * Writes a synthetic model of about N GiB (default 2) into a temp dir and measures, in one run:
 * - CRC-32 (zlib) and SHA-256 on data in memory, in GB per CPU-second (one core);
 * - with the file evicted from the page cache: `cat file > /dev/null` (the disk's read speed, the
 *   physical limit) against modelFingerprint, interleaved, R rounds each, wall time and CPU time
 *   (user + system; on a busy machine the CPU time is the steadier figure);
 * - with the file in the page cache: modelFingerprint again;
 * - a start whose sums are cached: modelFingerprint with a cache entry.
 */
import { spawnSync } from 'node:child_process';
import { randomFillSync, createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { ArchType, buildModelLayout, FloatType, HeaderKey, parseModelHeader, writeModelHeader } from '@airllm/format';
import { dropFileCache } from '@airllm/loader';
import { modelFingerprint } from '../fingerprint.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const gbps = (bytes: number, ms: number): string => (bytes / 1e6 / ms).toFixed(2);

/** A valid .m file of about `gib` GiB: a real header, then random bytes as tensor data. */
function writeModel(path: string, gib: number): number {
  const base = { [HeaderKey.ArchType]: ArchType.LLAMA, [HeaderKey.Dim]: 2048, [HeaderKey.HiddenDim]: 5632, [HeaderKey.NHeads]: 16, [HeaderKey.NKvHeads]: 16, [HeaderKey.VocabSize]: 32000, [HeaderKey.MaxSeqLen]: 2048, [HeaderKey.WeightsFloatType]: FloatType.F32 };
  const layerBytes = buildModelLayout(parseModelHeader(writeModelHeader({ ...base, [HeaderKey.NLayers]: 1 }))).layerBytes;
  const nLayers = Math.max(1, Math.round((gib * 2 ** 30) / layerBytes));
  const header = writeModelHeader({ ...base, [HeaderKey.NLayers]: nLayers });
  const size = buildModelLayout(parseModelHeader(header)).fileSize;
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, header);
    const chunk = randomFillSync(Buffer.alloc(8 << 20));
    for (let at = header.length; at < size; ) {
      const n = Math.min(chunk.length, size - at);
      writeSync(fd, chunk, 0, n, at);
      chunk.writeUInt32LE(at >>> 0, 0);
      at += n;
    }
  } finally {
    closeSync(fd);
  }
  return size;
}

/** GB per CPU-second of `fn` over `bytes` (CPU time, so other load on the machine matters less). */
function cpuRate(bytes: number, fn: () => void): string {
  const c0 = process.cpuUsage();
  fn();
  const c = process.cpuUsage(c0);
  return gbps(bytes, (c.user + c.system) / 1000);
}

async function main(): Promise<void> {
  const gib = arg('gib', 2);
  const rounds = arg('rounds', 3);
  const dir = mkdtempSync(join(tmpdir(), 'airllm-fingerprint-bench-'));
  try {
    const file = join(dir, 'model.m');
    const size = writeModel(file, gib);
    console.log(`model: ${(size / 2 ** 30).toFixed(2)} GiB; load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} on ${spawnSync('nproc').stdout.toString().trim()} cores`);

    const buf = randomFillSync(Buffer.alloc(8 << 20));
    const reps = 128;
    const crc = cpuRate(reps * buf.length, () => {
      let c = 0;
      for (let i = 0; i < reps; i++) c = crc32(buf, c);
    });
    const sha = cpuRate(reps * buf.length, () => {
      const h = createHash('sha256');
      for (let i = 0; i < reps; i++) h.update(buf);
      h.digest();
    });
    console.log(`in memory, one core: CRC-32 (zlib) ${crc} GB per CPU-second, SHA-256 ${sha} GB per CPU-second`);

    const cold = { cat: [] as number[], catCpu: [] as number[], fingerprint: [] as number[], fingerprintCpu: [] as number[] };
    for (let r = 0; r < rounds; r++) {
      dropFileCache(file);
      let t = performance.now();
      // `times` prints the shell's own and then its children's user and system time.
      const cat = spawnSync('sh', ['-c', 'cat "$1" > /dev/null; times', 'sh', file], { encoding: 'utf8' });
      if (cat.status !== 0) throw new Error(`cat failed: ${cat.stderr}`);
      cold.cat.push(performance.now() - t);
      const child = (cat.stdout.trim().split('\n')[1] ?? '').split(/\s+/).map((x) => {
        const m = /^(\d+)m([\d.]+)s$/.exec(x);
        return m ? Number(m[1]) * 60_000 + Number(m[2]) * 1000 : NaN;
      });
      cold.catCpu.push(child[0]! + child[1]!);
      dropFileCache(file);
      const c0 = process.cpuUsage();
      t = performance.now();
      await modelFingerprint(file, { cacheDir: null });
      cold.fingerprint.push(performance.now() - t);
      const c = process.cpuUsage(c0);
      cold.fingerprintCpu.push((c.user + c.system) / 1000);
    }
    const catMs = median(cold.cat);
    const fpMs = median(cold.fingerprint);
    console.log(`cold page cache, median of ${rounds} interleaved rounds: cat ${gbps(size, catMs)} GB/s (${(catMs / 1000).toFixed(2)} s), fingerprint ${gbps(size, fpMs)} GB/s (${(fpMs / 1000).toFixed(2)} s); fingerprint ÷ cat time ${(fpMs / catMs).toFixed(2)}`);
    const catCpu = median(cold.catCpu);
    const fpCpu = median(cold.fingerprintCpu);
    console.log(`CPU time (user + system): cat ${(catCpu / 1000).toFixed(2)} s, fingerprint ${(fpCpu / 1000).toFixed(2)} s (${(((fpCpu / 1000) * 1e9) / size).toFixed(2)} CPU-seconds per GB)`);

    const warm: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const t = performance.now();
      await modelFingerprint(file, { cacheDir: null });
      warm.push(performance.now() - t);
    }
    console.log(`warm page cache: fingerprint ${gbps(size, median(warm))} GB/s (${(median(warm) / 1000).toFixed(2)} s)`);

    const cacheDir = join(dir, 'checksums');
    await modelFingerprint(file, { cacheDir });
    const t = performance.now();
    await modelFingerprint(file, { cacheDir });
    console.log(`cached sums: ${(performance.now() - t).toFixed(1)} ms`);
    console.log(`40 GB at these rates: ${((40e9 / size) * (fpMs / 1000)).toFixed(0)} s cold (cat: ${((40e9 / size) * (catMs / 1000)).toFixed(0)} s), once per file and node`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
