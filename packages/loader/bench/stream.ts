/**
 * `npm run bench -w @airllm/loader`: cold-cache streaming throughput of the prefetcher against
 * a plain sequential read of the same file, in the same run, plus LRU against pinning on a
 * cyclic scan (simulated and measured).
 *
 *   node dist-bench/stream.js [--json] [--repeats N] [--layers N] [--chunk-mib N] [--ahead N]
 *                             [--populate] [--dir PATH]
 *
 * The model file (≥ 2 GiB of random bytes) is written to a temp dir and deleted at the end,
 * also on errors and Ctrl-C. Every timed phase starts with the file dropped from the page
 * cache. Phases alternate order between repeats, and one untimed round runs first: on this VM
 * memory that sat free for a while is slow to touch the first time (DESIGN.md).
 */
import { randomFillSync } from 'node:crypto';
import { closeSync, fsyncSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildModelLayout, FloatType, HeaderKey, parseModelHeader, writeModelHeader, type ModelLayout } from '@airllm/format';
import { dropFileCache, pageCacheBytes } from '../dist/cache.js';
import { nativeAddon } from '../dist/native.js';
import { simulateCyclicScan } from '../dist/policy.js';
import { diskReadBytes, memoryStatus, resetPeakRss } from '../dist/proc.js';
import { LayerResidency } from '../dist/residency/residency.js';
import { MemoryMappedWeights } from '../dist/weights.js';

interface Args {
  json: boolean;
  repeats: number;
  layers: number;
  chunkMiB: number;
  ahead: number;
  populate: boolean;
  dir: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { json: false, repeats: 5, layers: 20, chunkMiB: 8, ahead: 2, populate: false, dir: undefined };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i]!;
    const num = (): number => {
      const n = Number(argv[++i]);
      if (!Number.isFinite(n) || n <= 0) throw new Error(`${v} needs a positive number`);
      return n;
    };
    if (v === '--json') a.json = true;
    else if (v === '--repeats') a.repeats = Math.round(num());
    else if (v === '--layers') a.layers = Math.round(num());
    else if (v === '--chunk-mib') a.chunkMiB = num();
    else if (v === '--ahead') a.ahead = Math.round(num());
    else if (v === '--populate') a.populate = true;
    else if (v === '--dir') a.dir = argv[++i];
    else if (v === '--') continue;
    else throw new Error(`unknown argument ${v}`);
  }
  return a;
}

const MB = 1e6;
const now = (): number => performance.now();
const median = (xs: number[]): number => {
  const s = xs.slice().sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (x: number, d = 1): number => Math.round(x * 10 ** d) / 10 ** d;

let log: (line: string) => void = (line) => process.stdout.write(line + '\n');

/** A Llama-2-7B-shaped Q40 model with a small vocabulary: 114 MB layers. */
function writeModel(path: string, nLayers: number): ModelLayout {
  const header = writeModelHeader({
    [HeaderKey.Version]: 0,
    [HeaderKey.ArchType]: 0xabcd00,
    [HeaderKey.Dim]: 4096,
    [HeaderKey.HiddenDim]: 11008,
    [HeaderKey.NLayers]: nLayers,
    [HeaderKey.NHeads]: 32,
    [HeaderKey.NKvHeads]: 32,
    [HeaderKey.VocabSize]: 4096,
    [HeaderKey.MaxSeqLen]: 2048,
    [HeaderKey.WeightsFloatType]: FloatType.Q40,
  });
  const layout = buildModelLayout(parseModelHeader(header));
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, header, 0, header.length, 0);
    const chunk = new Uint8Array(16 << 20);
    for (let o = header.length; o < layout.fileSize; o += chunk.length) {
      const part = chunk.subarray(0, Math.min(chunk.length, layout.fileSize - o));
      randomFillSync(part);
      writeSync(fd, part, 0, part.length, o);
    }
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return layout;
}

function coldStart(path: string): number {
  dropFileCache(path);
  return pageCacheBytes(path);
}

/** (a) fs.readSync over the whole file in 16 MiB chunks. */
function plainRead(path: string, size: number, buf: Uint8Array): { mbps: number; disk: number; cached: number } {
  const cached = coldStart(path);
  const d0 = diskReadBytes() ?? NaN;
  const t0 = now();
  const fd = openSync(path, 'r');
  try {
    for (let o = 0; o < size; ) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, size - o), o);
      if (n === 0) throw new Error('short read');
      o += n;
    }
  } finally {
    closeSync(fd);
  }
  const t = (now() - t0) / 1000;
  return { mbps: size / MB / t, disk: (diskReadBytes() ?? NaN) - d0, cached };
}

/** (b) the residency's prefetcher streams every segment in order; the main thread just acquires and releases. */
async function prefetchStream(
  path: string,
  layout: ModelLayout,
  args: Args,
  backend: 'mmap' | 'read',
): Promise<{ mbps: number; disk: number; cached: number; bytes: number; peakGrowth: number; waitMs: number }> {
  const cached = coldStart(path);
  const w = await new MemoryMappedWeights(path, { backend }).open();
  try {
    const base = memoryStatus();
    resetPeakRss();
    const d0 = diskReadBytes() ?? NaN;
    const t0 = now();
    const r = await LayerResidency.create(w, {
      mode: 'stream',
      budgetBytes: 2 * layout.layerBytes,
      chunkBytes: args.chunkMiB * (1 << 20),
      readaheadChunks: args.ahead,
      populate: args.populate,
    });
    let bytes = 0;
    try {
      for (let seg = 0; seg < r.segments.length; seg++) {
        await r.acquireAsync(seg);
        bytes += r.segments[seg]!.size;
        r.release(seg);
      }
      const t = (now() - t0) / 1000;
      const st = r.stats();
      const peak = memoryStatus();
      return {
        mbps: bytes / MB / t,
        disk: (diskReadBytes() ?? NaN) - d0,
        cached,
        bytes,
        peakGrowth: base && peak ? peak.peakRss - base.rss : NaN,
        waitMs: st.waitNs / 1e6,
      };
    } finally {
      await r.close();
    }
  } finally {
    w.close();
  }
}

/**
 * A real cyclic scan of the file's segments through a cache of `capacity` segments, with a
 * policy: LRU, or pin (capacity − 2 segments pinned, the rest through 2 slots). An evicted
 * segment is dropped from this process (MADV_DONTNEED) and from the page cache
 * (POSIX_FADV_DONTNEED), so a miss is a real disk read. Returns disk bytes per warm pass.
 */
async function cacheScan(path: string, layout: ModelLayout, policy: 'lru' | 'pin', capacity: number, passes: number): Promise<{ diskPerPass: number; missesPerPass: number; secondsPerPass: number }> {
  const addon = nativeAddon()!;
  dropFileCache(path);
  const w = await new MemoryMappedWeights(path, { backend: 'mmap' }).open();
  const map = w.mapping!;
  // A .m layer is one extent.
  const segs = [...layout.layers.map((l) => l.extents[0]!)];
  const n = segs.length;
  const pinned = new Set<number>();
  if (policy === 'pin') for (let j = 0; j < capacity - 2; j++) pinned.add(Math.floor(((j + 0.5) * n) / (capacity - 2)));
  const cache = new Map<number, true>(); // insertion order = recency (LRU) / arrival (slots)
  const load = (i: number): void => {
    addon.advise(map, segs[i]!.offset, segs[i]!.size, 'willneed');
    addon.touch(map, segs[i]!.offset, segs[i]!.size);
  };
  const evict = (i: number): void => {
    addon.advise(map, segs[i]!.offset, segs[i]!.size, 'dontneed');
    addon.dropFileCache(path, segs[i]!.offset, segs[i]!.size);
  };
  let warmDisk = 0;
  let warmMisses = 0;
  let warmSeconds = 0;
  try {
    for (let p = 0; p < passes; p++) {
      const d0 = diskReadBytes() ?? NaN;
      const t0 = now();
      let misses = 0;
      for (let i = 0; i < n; i++) {
        const hit = cache.delete(i);
        if (!hit) {
          misses++;
          load(i);
        }
        if (policy === 'lru') {
          cache.set(i, true);
          if (cache.size > capacity) {
            const victim = cache.keys().next().value!;
            cache.delete(victim);
            evict(victim);
          }
        } else if (pinned.has(i)) {
          cache.set(i, true);
        } else {
          // Streamed: used, then released at once (the engine releases after the layer).
          evict(i);
        }
      }
      if (p > 0) {
        warmDisk += (diskReadBytes() ?? NaN) - d0;
        warmMisses += misses;
        warmSeconds += (now() - t0) / 1000;
      }
    }
  } finally {
    w.close();
  }
  const warm = passes - 1;
  return { diskPerPass: warmDisk / warm, missesPerPass: warmMisses / warm, secondsPerPass: warmSeconds / warm };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.json) log = (line) => process.stderr.write(line + '\n');
  if (nativeAddon() === undefined) throw new Error('the native addon is not built: the benchmark measures the mmap prefetcher');

  const dir = mkdtempSync(join(args.dir ?? tmpdir(), 'airllm-loader-bench-'));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  process.on('exit', cleanup);
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      cleanup();
      process.exit(130);
    });
  }
  try {
    const path = join(dir, 'model.m');
    const tw = now();
    const layout = writeModel(path, args.layers);
    const streamed = layout.fileSize - layout.layers[0]!.extents[0]!.offset;
    log(`model: ${layout.layers.length} layers × ${round(layout.layerBytes / MB)} MB, file ${round(layout.fileSize / MB)} MB (streamed segments ${round(streamed / MB)} MB), written in ${round((now() - tw) / 1000)} s`);
    if (layout.fileSize < 2 ** 31) throw new Error('benchmark file must be ≥ 2 GiB (use more --layers)');

    const buf = new Uint8Array(16 << 20);
    buf.fill(1); // warm the read buffer
    // Untimed warm-up round: touches the memory the page cache will reuse.
    plainRead(path, layout.fileSize, buf);
    await prefetchStream(path, layout, args, 'mmap');

    const plain: number[] = [];
    const stream: number[] = [];
    const fallback: number[] = [];
    const extras: { plainDisk: number[]; streamDisk: number[]; peak: number[]; wait: number[]; cached: number[] } = { plainDisk: [], streamDisk: [], peak: [], wait: [], cached: [] };
    for (let r = 0; r < args.repeats; r++) {
      const order = r % 2 === 0 ? ['plain', 'stream', 'fallback'] : ['fallback', 'stream', 'plain'];
      for (const phase of order) {
        if (phase === 'plain') {
          const x = plainRead(path, layout.fileSize, buf);
          plain.push(x.mbps);
          extras.plainDisk.push(x.disk);
          extras.cached.push(x.cached);
          log(`  run ${r + 1}: plain sequential read   ${round(x.mbps)} MB/s (disk ${round(x.disk / MB)} MB, cached at start ${x.cached} B)`);
        } else {
          const backend = phase === 'stream' ? 'mmap' : 'read';
          const x = await prefetchStream(path, layout, args, backend);
          (backend === 'mmap' ? stream : fallback).push(x.mbps);
          if (backend === 'mmap') {
            extras.streamDisk.push(x.disk);
            extras.peak.push(x.peakGrowth);
            extras.wait.push(x.waitMs);
          }
          extras.cached.push(x.cached);
          log(
            `  run ${r + 1}: ${backend === 'mmap' ? 'prefetcher (mmap)  ' : 'prefetcher (pread) '}    ${round(x.mbps)} MB/s (disk ${round(x.disk / MB)} MB, ` +
              `peak RSS +${round(x.peakGrowth / MB)} MB for a ${round((2 * layout.layerBytes) / MB)} MB budget, acquire waited ${round(x.waitMs)} ms)`,
          );
        }
      }
    }
    const plainMed = median(plain);
    const streamMed = median(stream);
    const ratio = streamMed / plainMed;
    // The shared disk drifts between runs: the ratio within each round (measured back to back)
    // is the steadier figure.
    const paired = stream.map((x, i) => x / plain[i]!);
    const pairedRatio = median(paired);
    log(
      `cold streaming, medians of ${args.repeats}: plain read ${round(plainMed)} MB/s, prefetcher ${round(streamMed)} MB/s, ratio ${round(ratio, 3)}; ` +
        `median of per-round ratios ${round(pairedRatio, 3)} (target ≥ 0.9); pread fallback ${round(median(fallback))} MB/s`,
    );

    // LRU against pinning: 21 segments... here the layers only, capacity ~40% of them.
    const capacity = Math.max(3, Math.round(layout.layers.length * 0.4));
    const passes = 3;
    const simLru = simulateCyclicScan('lru', layout.layers.length, capacity, 10);
    const simPin = simulateCyclicScan('pin', layout.layers.length, capacity, 10);
    log(`cyclic scan of ${layout.layers.length} layers, cache of ${capacity}: simulated warm misses per pass LRU ${simLru.warmMissesPerPass}, pin ${simPin.warmMissesPerPass}`);
    const lru = await cacheScan(path, layout, 'lru', capacity, passes);
    const pin = await cacheScan(path, layout, 'pin', capacity, passes);
    log(
      `  measured per warm pass: LRU ${lru.missesPerPass} misses, ${round(lru.diskPerPass / MB)} MB from disk, ${round(lru.secondsPerPass, 2)} s; ` +
        `pin ${pin.missesPerPass} misses, ${round(pin.diskPerPass / MB)} MB from disk, ${round(pin.secondsPerPass, 2)} s`,
    );

    const result = {
      bench: '@airllm/loader stream',
      fileBytes: layout.fileSize,
      streamedBytes: streamed,
      layerBytes: layout.layerBytes,
      repeats: args.repeats,
      chunkBytes: args.chunkMiB * (1 << 20),
      readaheadChunks: args.ahead,
      populate: args.populate,
      plainReadMBps: round(plainMed),
      prefetchStreamMBps: round(streamMed),
      ratio: round(ratio, 3),
      pairedRatioMedian: round(pairedRatio, 3),
      pairedRatios: paired.map((x) => round(x, 3)),
      fallbackStreamMBps: round(median(fallback)),
      plainReadRunsMBps: plain.map((x) => round(x)),
      prefetchStreamRunsMBps: stream.map((x) => round(x)),
      fallbackStreamRunsMBps: fallback.map((x) => round(x)),
      maxPageCacheBytesAtColdStart: Math.max(...extras.cached),
      plainDiskBytesMedian: median(extras.plainDisk),
      streamDiskBytesMedian: median(extras.streamDisk),
      streamPeakRssGrowthBytesMedian: median(extras.peak),
      streamBudgetBytes: 2 * layout.layerBytes,
      streamAcquireWaitMsMedian: round(median(extras.wait)),
      cyclicScan: {
        segments: layout.layers.length,
        capacity,
        simulatedWarmMissesPerPass: { lru: simLru.warmMissesPerPass, pin: simPin.warmMissesPerPass },
        measuredWarmMissesPerPass: { lru: lru.missesPerPass, pin: pin.missesPerPass },
        measuredDiskBytesPerPass: { lru: lru.diskPerPass, pin: pin.diskPerPass },
        measuredSecondsPerPass: { lru: round(lru.secondsPerPass, 3), pin: round(pin.secondsPerPass, 3) },
      },
    };
    if (args.json) process.stdout.write(JSON.stringify(result) + '\n');
  } finally {
    cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exitCode = 1;
});
