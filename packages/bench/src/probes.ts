/**
 * Hardware limits measured in the same run as the scenarios: memory read bandwidth (the floor
 * of resident decode) and the cold sequential read bandwidth of the model file itself (the floor
 * of streaming).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { sep } from 'node:path';
import { Worker } from 'node:worker_threads';
import { readSum } from '@airllm/kernels';
import { diskReadBytes, dropFileCache } from '@airllm/loader';
import { median } from './stats.js';

export interface DramProbe {
  /**
   * Bytes per second: the best round of the better method. Interference (other work, a page
   * not yet warm) only ever slows a read down, so the best round is the closest to what the
   * hardware does, and the strictest floor to hold the engine to.
   */
  readonly bytesPerSecond: number;
  /** Median per method. */
  readonly byMethod: Readonly<Partial<Record<'native' | 'memcmp', number>>>;
  readonly runs: readonly number[];
  /** The method behind bytesPerSecond. `native`: the kernels addon's readSum (widest loads); `memcmp`: libc memcmp via Buffer.equals (no addon). */
  readonly method: 'native' | 'memcmp';
  readonly threads: number;
  readonly bufferBytes: number;
}

function workerScript(): string {
  const p = fileURLToPath(new URL('./probe-worker.js', import.meta.url));
  if (existsSync(p)) return p;
  return p.replace(`${sep}src${sep}probe-worker.js`, `${sep}dist${sep}probe-worker.js`);
}

/** Whether the kernels' native read probe works here (its addon loads). */
export function nativeReadProbeAvailable(): boolean {
  try {
    readSum(new Uint8Array(4096));
    return true;
  } catch {
    return false;
  }
}

/**
 * Memory read bandwidth with `threads` threads: the kernels' native probe when the package
 * exports it, and libc memcmp (no addon needed) always; the floor uses the best round of either.
 */
export async function probeDram(o: { threads: number; bufferBytes: number; rounds: number }): Promise<DramProbe> {
  const methods: ('native' | 'memcmp')[] = nativeReadProbeAvailable() ? ['native', 'memcmp'] : ['memcmp'];
  const byMethod: Partial<Record<'native' | 'memcmp', number>> = {};
  let best: { method: 'native' | 'memcmp'; bytesPerSecond: number; runs: number[]; bufferBytes: number } | undefined;
  for (const method of methods) {
    const r = await probeDramWith({ ...o, method });
    byMethod[method] = r.bytesPerSecond;
    const top = Math.max(...r.runs);
    if (!best || top > best.bytesPerSecond) best = { method, ...r, bytesPerSecond: top };
  }
  return { bytesPerSecond: best!.bytesPerSecond, byMethod, runs: best!.runs, method: best!.method, threads: o.threads, bufferBytes: best!.bufferBytes };
}

/**
 * Read bandwidth with `threads` threads over a buffer far larger than the caches. Each round
 * starts every worker at once (Atomics), and the round's time runs from the first start to the
 * last finish.
 */
async function probeDramWith(o: { threads: number; bufferBytes: number; rounds: number; method: 'native' | 'memcmp' }): Promise<{ bytesPerSecond: number; runs: number[]; bufferBytes: number }> {
  const method = o.method;
  // Slices of whole 64 KiB blocks, split in two equal halves for memcmp.
  const per = Math.floor(o.bufferBytes / o.threads / (1 << 17)) * (1 << 17);
  const buffer = new SharedArrayBuffer(per * o.threads);
  // Touch every page (and make the halves equal) before timing.
  new Uint8Array(buffer).fill(0x5a);
  const control = new SharedArrayBuffer(4);
  const ctrl = new Int32Array(control);
  const workers = Array.from({ length: o.threads }, (_, i) => new Worker(workerScript(), { workerData: { buffer, control, start: i * per, length: per, method } }));
  try {
    const round = (r: number): Promise<number> =>
      new Promise<number>((resolve, reject) => {
        const done: { t0: number; t1: number }[] = [];
        const onMsg = (m: { round: number; t0: number; t1: number }): void => {
          if (m.round !== r) return;
          done.push(m);
          if (done.length === workers.length) {
            for (const w of workers) w.off('message', onMsg).off('error', reject);
            const t0 = Math.min(...done.map((x) => x.t0));
            const t1 = Math.max(...done.map((x) => x.t1));
            resolve(buffer.byteLength / ((t1 - t0) / 1000));
          }
        };
        for (const w of workers) w.on('message', onMsg).on('error', reject);
        Atomics.store(ctrl, 0, r);
        Atomics.notify(ctrl, 0);
      });
    await round(1); // untimed: first touch by these threads, JIT
    const runs: number[] = [];
    for (let r = 0; r < o.rounds; r++) runs.push(await round(r + 2));
    return { bytesPerSecond: median(runs), runs, bufferBytes: buffer.byteLength };
  } finally {
    Atomics.store(ctrl, 0, -1);
    Atomics.notify(ctrl, 0);
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

export interface DiskProbe {
  /** The best run (see DramProbe.bytesPerSecond for why the best). */
  readonly bytesPerSecond: number;
  readonly medianBytesPerSecond: number;
  /** Bytes read per timed run (the file's first bytes: at most PROBE_BYTES). */
  readonly probeBytes: number;
  readonly runs: readonly number[];
  /** Bytes /proc/self/io says came from the device per timed read (≈ file size when truly cold). */
  readonly diskBytes: readonly number[];
  readonly fileBytes: number;
}

const READ_CHUNK = 16 << 20;
/** A sequential read this long gives the device's rate; reading a 38 GB file four times would not add to it. */
export const DISK_PROBE_BYTES = 4 * 2 ** 30;

/**
 * Cold sequential read of `path` (its first 4 GiB at most) with read(2) in 16 MiB chunks, the file dropped from the page
 * cache before each read. One untimed read first: on these VMs memory that sat free is slow to
 * touch the first time (DESIGN.md), which would flatter neither side.
 */
export function probeDisk(path: string, fileSize: number, rounds: number, o: { warm: boolean } = { warm: true }): DiskProbe {
  const fileBytes = Math.min(fileSize, DISK_PROBE_BYTES);
  const buf = new Uint8Array(READ_CHUNK);
  buf.fill(1);
  const once = (): { bps: number; disk: number } => {
    dropFileCache(path);
    const d0 = diskReadBytes() ?? 0;
    const t0 = performance.now();
    const fd = openSync(path, 'r');
    try {
      for (let o = 0; o < fileBytes; ) {
        const n = readSync(fd, buf, 0, Math.min(buf.length, fileBytes - o), o);
        if (n === 0) throw new Error(`${path}: short read at ${o}`);
        o += n;
      }
    } finally {
      closeSync(fd);
    }
    return { bps: fileBytes / ((performance.now() - t0) / 1000), disk: (diskReadBytes() ?? 0) - d0 };
  };
  if (o.warm) once();
  const runs: number[] = [];
  const diskBytes: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const x = once();
    runs.push(x.bps);
    diskBytes.push(x.disk);
  }
  return { bytesPerSecond: Math.max(...runs), medianBytesPerSecond: median(runs), probeBytes: fileBytes, runs, diskBytes, fileBytes: fileSize };
}

/** Two probes' runs as one (e.g. before and after the streaming scenarios, whose disk drifts). */
export function mergeDiskProbes(a: DiskProbe, b: DiskProbe): DiskProbe {
  const runs = [...a.runs, ...b.runs];
  return { ...a, runs, diskBytes: [...a.diskBytes, ...b.diskBytes], bytesPerSecond: Math.max(...runs), medianBytesPerSecond: median(runs) };
}
