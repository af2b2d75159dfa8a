/**
 * Kernel benchmark: `npm run bench -w @airllm/kernels [-- --json] [--path avx2] [--reps 7]`.
 *
 * Weights are realistic random Q40 (random nibbles, f16 scales of both signs and varied
 * magnitude) and random F32, in a pool of copies at least 3x the last-level cache: each timed
 * matvec reads the next copy, so weights come from DRAM as they do for a model larger than the
 * cache. The memory read probe (a native single-thread sum over the whole pool, read as one
 * sequential stream and as four streams in lockstep, the way the matvec kernels walk four distant
 * weight rows) runs in the same process, interleaved with the kernels, and every figure is a
 * median; ratios are taken between figures measured side by side (a batch against 32 matvecs:
 * the median of the alternating rounds' ratios). `--baseline <addon.node>` adds another build of
 * the addon to the batch-ratio rounds, interleaved (before/after); `--ratios` runs only those.
 * With --json the last line of
 * output is one JSON object holding every figure.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FloatType, Q40_BLOCK_BYTES, Q80_BLOCK_BYTES, Q_BLOCK, quantizeQ80 } from '@airllm/format';
import { assembleBackend, nativeBackend, nativePaths, readSum, type AddonOps, type NativePath } from '../native.js';
import { referenceBackend } from '../reference.js';
import { fillRandomQ40, randomFloats, rng } from '../testing/builders.js';
import { CTRL, type WorkerData } from './shared.js';

const args = process.argv.slice(2);
const json = args.includes('--json');
const argValue = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const REPS = Number(argValue('--reps') ?? 7);
const log = (s: string): void => {
  process.stdout.write(`${s}\n`);
};

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;
const time = (fn: () => void): number => {
  const t0 = nowMs();
  fn();
  return nowMs() - t0;
};
const round = (x: number, d = 3): number => Number(x.toFixed(d));

function llcBytes(): number {
  try {
    for (const idx of [3, 2]) {
      const s = readFileSync(`/sys/devices/system/cpu/cpu0/cache/index${idx}/size`, 'utf8').trim();
      const m = /^(\d+)([KMG]?)$/.exec(s);
      if (m) return Number(m[1]) * { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2] as '' | 'K' | 'M' | 'G'];
    }
  } catch {
    // not Linux, or no sysfs: assume a large server cache
  }
  return 256 * 1024 ** 2;
}

const path = (argValue('--path') as NativePath | undefined) ?? nativePaths()[0]!;
const be = nativeBackend(path);
const NOUT = 11008;
const NIN = 4096;
const Q40_BYTES = (NOUT * NIN * Q40_BLOCK_BYTES) / Q_BLOCK;
const F32_N = 4096;
const F32_BYTES = F32_N * F32_N * 4;
const LLC = llcBytes();
const POOL_TARGET = Math.min(2 * 1024 ** 3, Math.max(3 * LLC, 768 * 1024 ** 2));
const Q40_COPIES = Math.ceil(POOL_TARGET / Q40_BYTES);
const F32_COPIES = Math.ceil(POOL_TARGET / F32_BYTES);
const poolSab = new SharedArrayBuffer(Math.max(Q40_COPIES * Q40_BYTES, F32_COPIES * F32_BYTES));
const pool = new Uint8Array(poolSab);

log(`kernels bench: path ${be.path} [${be.features.join(', ')}], LLC ${(LLC / 2 ** 20).toFixed(0)} MiB, weight pool ${(pool.length / 2 ** 20).toFixed(0)} MiB`);
fillRandomQ40(pool, 1);

const MAX_BATCH = 64;
const x = randomFloats(MAX_BATCH * NIN, 2);
const xq = new Uint8Array((MAX_BATCH * NIN * Q80_BLOCK_BYTES) / Q_BLOCK);
quantizeQ80(x, xq);
const out = new Float32Array(new SharedArrayBuffer(MAX_BATCH * NOUT * 4));
let copy = 0;
const nextQ40 = (): Uint8Array => {
  copy = (copy + 1) % Q40_COPIES;
  return pool.subarray(copy * Q40_BYTES, (copy + 1) * Q40_BYTES);
};
let sink = 0;
/** Streams of the second read probe: as many as the Q40xQ80 matvec kernels walk at once. */
const PROBE_STREAMS = 4;
const probe = (streams: number): number => time(() => (sink += readSum(pool, streams)));

/** Interleaves both read probes with `runs` timings of `fn` per repetition. */
function sideBySide(fn: () => void, runs: number): { probeGBs: number; probe4GBs: number; ms: number } {
  const probes: number[] = [];
  const probes4: number[] = [];
  const times: number[] = [];
  fn(); // warm up (page tables, code)
  for (let r = 0; r < REPS; r++) {
    probes.push(pool.length / probe(1) / 1e6);
    probes4.push(pool.length / probe(PROBE_STREAMS) / 1e6);
    for (let i = 0; i < runs; i++) times.push(time(fn));
  }
  return { probeGBs: median(probes), probe4GBs: median(probes4), ms: median(times) };
}

interface MatvecFigure {
  ms: number;
  GBs: number;
  probeGBs: number;
  ratioToProbe: number;
  probe4GBs: number;
  ratioToProbe4: number;
}
function matvecFigure(label: string, bytes: number, fn: () => void): MatvecFigure {
  const r = sideBySide(fn, 8);
  const GBs = bytes / r.ms / 1e6;
  log(
    `${label}: ${r.ms.toFixed(3)} ms, ${GBs.toFixed(1)} GB/s of weights = ${(GBs / r.probeGBs).toFixed(2)} x read probe ` +
      `(${r.probeGBs.toFixed(1)} GB/s), ${(GBs / r.probe4GBs).toFixed(2)} x ${PROBE_STREAMS}-stream probe (${r.probe4GBs.toFixed(1)} GB/s)`,
  );
  return {
    ms: round(r.ms),
    GBs: round(GBs, 2),
    probeGBs: round(r.probeGBs, 2),
    ratioToProbe: round(GBs / r.probeGBs),
    probe4GBs: round(r.probe4GBs, 2),
    ratioToProbe4: round(GBs / r.probe4GBs),
  };
}

// ---- batches of 4, 8, 16, 32 against as many matvecs, both layer shapes; optionally A/B against another build ----
/*
 * `--baseline <addon.node>` (another build of this addon, e.g. main's) runs the same rounds on that
 * build too, interleaved: baseline batch, baseline matvecs, this batch, these matvecs, round by round,
 * so both builds see the same machine load. Q40 weights x Q80 input from DRAM. Timed in process CPU
 * time (only this thread works meanwhile): on a shared host, time slices given to other processes
 * do not count, while stalls on memory do.
 */
const cpuMs = (fn: () => void): number => {
  const t0 = process.cpuUsage();
  fn();
  const d = process.cpuUsage(t0);
  return (d.user + d.system) / 1000;
};
const baselineFile = argValue('--baseline');
const baseBe = baselineFile
  ? assembleBackend((createRequire(import.meta.url)(baselineFile) as { create(p: NativePath): AddonOps }).create(path))
  : undefined;
type RatioFigure = { shape: string; batch: number; batchedMs: number; matvecsMs: number; speedup: number; baseline?: { batchedMs: number; matvecsMs: number; speedup: number } };
function batchRatios(): RatioFigure[] {
  const figures: RatioFigure[] = [];
  for (const [nOut, nIn] of [[NOUT, NIN], [NIN, NOUT]] as const) {
    const rowQ2 = (nIn / Q_BLOCK) * Q80_BLOCK_BYTES;
    const xq = new Uint8Array(32 * rowQ2);
    quantizeQ80(randomFloats(32 * nIn, 4), xq);
    for (const n of [4, 8, 16, 32]) {
      const timers = (k: typeof be): [() => number, () => number] => [
        () => cpuMs(() => k.matmulQ80(FloatType.Q40, out, xq, nextQ40(), nIn, nOut, n, 0, nOut)),
        () => cpuMs(() => {
          for (let b = 0; b < n; b++) k.matmulQ80(FloatType.Q40, out.subarray(b * nOut), xq.subarray(b * rowQ2), nextQ40(), nIn, nOut, 1, 0, nOut);
        }),
      ];
      const [tb, tm] = timers(be);
      const [bb, bm] = baseBe ? timers(baseBe) : [undefined, undefined];
      const mine: [number[], number[]] = [[], []];
      const theirs: [number[], number[]] = [[], []];
      tb();
      bb?.();
      for (let r = 0; r < Math.max(5, REPS); r++) {
        if (bb && bm) {
          theirs[0].push(bb());
          theirs[1].push(bm());
        }
        mine[0].push(tb());
        mine[1].push(tm());
      }
      const fig = (t: [number[], number[]]): { batchedMs: number; matvecsMs: number; speedup: number } => ({
        batchedMs: round(median(t[0]), 2),
        matvecsMs: round(median(t[1]), 2),
        speedup: round(median(t[1].map((m, i) => m / t[0][i]!)), 2),
      });
      const f: RatioFigure = { shape: `${nOut}x${nIn}`, batch: n, ...fig(mine), ...(baseBe ? { baseline: fig(theirs) } : {}) };
      figures.push(f);
      log(
        `Q40xQ80 ${f.shape} batch ${n} (CPU time): ${f.batchedMs.toFixed(2)} ms vs ${n} matvecs ${f.matvecsMs.toFixed(2)} ms = ${f.speedup.toFixed(2)}x` +
          (f.baseline ? `; baseline ${f.baseline.batchedMs.toFixed(2)} vs ${f.baseline.matvecsMs.toFixed(2)} ms = ${f.baseline.speedup.toFixed(2)}x` : ''),
      );
    }
  }
  return figures;
}
if (args.includes('--ratios')) {
  // only the batch-ratio rounds (quick before/after checks with --baseline)
  const r = batchRatios();
  if (json) process.stdout.write(`${JSON.stringify({ path: be.path, q40q80BatchRatios: r })}\n`);
  process.exit(0);
}

// ---- single thread, weights from DRAM ----
const q40q80 = matvecFigure('Q40xQ80 matvec 11008x4096, 1 thread', Q40_BYTES, () =>
  be.matmulQ80(FloatType.Q40, out, xq, nextQ40(), NIN, NOUT, 1, 0, NOUT),
);
const q40f32 = matvecFigure('Q40xF32 matvec 11008x4096, 1 thread', Q40_BYTES, () =>
  be.matmul(FloatType.Q40, out, x, nextQ40(), NIN, NOUT, 1, 0, NOUT),
);

// ---- Q40xQ80 cost by batch size (weights from DRAM; on avx512amx, AMX from batch 5) ----
const SWEEP = [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64];
type SweepFigure = { batch: number; ms: number; relativeToBatch1: number; tokensPerMatvecTime: number };
function batchSweep(k: typeof be): SweepFigure[] {
  const times = new Map<number, number[]>(SWEEP.map((b) => [b, []]));
  for (const b of SWEEP) k.matmulQ80(FloatType.Q40, out, xq, nextQ40(), NIN, NOUT, b, 0, NOUT);
  for (let r = 0; r < Math.max(3, REPS - 2); r++)
    for (const b of SWEEP) for (let i = 0; i < 3; i++) times.get(b)!.push(time(() => k.matmulQ80(FloatType.Q40, out, xq, nextQ40(), NIN, NOUT, b, 0, NOUT)));
  const t1 = median(times.get(1)!);
  return SWEEP.map((b) => {
    const ms = median(times.get(b)!);
    // batch rows served in the time of one matvec: the decode speed-up of b sequences together
    return { batch: b, ms: round(ms), relativeToBatch1: round(ms / t1, 2), tokensPerMatvecTime: round((b * t1) / ms, 2) };
  });
}
const sweepLine = (f: SweepFigure[]): string => f.map((g) => `${g.batch}: ${g.ms.toFixed(2)} (${g.relativeToBatch1}x)`).join(', ');
const sweep = batchSweep(be);
log(`Q40xQ80 11008x4096 by batch (ms, x batch 1): ${sweepLine(sweep)}`);
// On the AMX path, the same sweep on the avx512vnni kernels it replaces (A/B in one process).
const vnniBe = be.path === 'avx512amx' && nativePaths().includes('avx512vnni') ? nativeBackend('avx512vnni') : undefined;
const sweepVnni = vnniBe ? batchSweep(vnniBe) : undefined;
if (sweepVnni) log(`  same on avx512vnni (ms, x batch 1): ${sweepLine(sweepVnni)}`);

// ---- batched 32 tokens vs 32 matvecs (each matvec on the next copy: weights re-read) ----
type BatchFigure = { batchedMs: number; matvecsMs: number; speedup: number; rounds: number };
/**
 * A batch of 32 against 32 matvecs in alternating rounds (after one untimed batch), each timer
 * returning milliseconds: their medians, and the speed-up as the median of the rounds' ratios
 * (each round's two figures are measured moments apart).
 */
function batchVsMatvecs(batched: () => number, matvecs: () => number): BatchFigure {
  const tb: number[] = [];
  const t1: number[] = [];
  batched();
  for (let r = 0; r < Math.max(3, REPS - 2); r++) {
    tb.push(batched());
    t1.push(matvecs());
  }
  return { batchedMs: round(median(tb), 2), matvecsMs: round(median(t1), 2), speedup: round(median(t1.map((m, i) => m / tb[i]!)), 2), rounds: tb.length };
}
function batchFigure(label: string, batched: () => void, single: (b: number) => void): BatchFigure {
  const f = batchVsMatvecs(
    () => time(batched),
    () =>
      time(() => {
        for (let b = 0; b < 32; b++) single(b);
      }),
  );
  log(`${label}: batch of 32 ${f.batchedMs.toFixed(2)} ms vs 32 matvecs ${f.matvecsMs.toFixed(2)} ms = ${f.speedup.toFixed(2)}x (median of ${f.rounds} rounds' ratios)`);
  return f;
}
const rowQ = (NIN / Q_BLOCK) * Q80_BLOCK_BYTES;
const batchQ80 = batchFigure(
  'Q40xQ80 11008x4096',
  () => be.matmulQ80(FloatType.Q40, out, xq, nextQ40(), NIN, NOUT, 32, 0, NOUT),
  (b) => be.matmulQ80(FloatType.Q40, out.subarray(b * NOUT), xq.subarray(b * rowQ), nextQ40(), NIN, NOUT, 1, 0, NOUT),
);
const batchQ80Vnni = vnniBe
  ? batchFigure(
      '  same on avx512vnni',
      () => vnniBe.matmulQ80(FloatType.Q40, out, xq, nextQ40(), NIN, NOUT, 32, 0, NOUT),
      (b) => vnniBe.matmulQ80(FloatType.Q40, out.subarray(b * NOUT), xq.subarray(b * rowQ), nextQ40(), NIN, NOUT, 1, 0, NOUT),
    )
  : undefined;
const batchF32 = batchFigure(
  'Q40xF32 11008x4096',
  () => be.matmul(FloatType.Q40, out, x, nextQ40(), NIN, NOUT, 32, 0, NOUT),
  (b) => be.matmul(FloatType.Q40, out.subarray(b * NOUT), x.subarray(b * NIN), nextQ40(), NIN, NOUT, 1, 0, NOUT),
);
// On the AMX path with AMX-BF16 the batch runs on bf16 tiles: the avx512vnni lanes kernel beside it.
const batchF32Vnni = vnniBe && be.features.includes('amx-bf16')
  ? batchFigure(
      '  same on avx512vnni',
      () => vnniBe.matmul(FloatType.Q40, out, x, nextQ40(), NIN, NOUT, 32, 0, NOUT),
      (b) => vnniBe.matmul(FloatType.Q40, out.subarray(b * NOUT), x.subarray(b * NIN), nextQ40(), NIN, NOUT, 1, 0, NOUT),
    )
  : undefined;

const ratios = batchRatios();

// ---- two threads (worker_threads, Atomics start/stop) vs a two-thread read probe ----
async function twoThreads(): Promise<{
  probeGBs: number;
  probe4GBs: number;
  ms: number;
  GBs: number;
  ratioToProbe: number;
  ratioToProbe4: number;
  speedupVs1: number;
  batch32Ms: number;
  batch32: BatchFigure;
}> {
  const control = new SharedArrayBuffer(CTRL.SIZE * 4);
  const ctrl = new Int32Array(control);
  const script = fileURLToPath(new URL('./mt-worker.js', import.meta.url));
  const workers = [0, 1].map((index) => {
    const data: WorkerData = { path, index, threads: 2, control, pool: poolSab, copyBytes: Q40_BYTES, xq, out, nIn: NIN, nOut: NOUT };
    return new Worker(script, { workerData: data });
  });
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once('message', resolve))));
  let gen = 0;
  // Start one job on both workers and wait (blocking, no spin) until both report done.
  const job = (kind: number): number => {
    Atomics.store(ctrl, CTRL.KIND, kind);
    Atomics.store(ctrl, CTRL.COPY, (copy = (copy + 1) % Q40_COPIES));
    Atomics.store(ctrl, CTRL.DONE, 0);
    const t0 = nowMs();
    Atomics.store(ctrl, CTRL.GENERATION, ++gen);
    Atomics.notify(ctrl, CTRL.GENERATION);
    for (let d = Atomics.load(ctrl, CTRL.DONE); d < 2; d = Atomics.load(ctrl, CTRL.DONE)) Atomics.wait(ctrl, CTRL.DONE, d);
    return nowMs() - t0;
  };
  try {
    const probes: number[] = [];
    const probes4: number[] = [];
    const times: number[] = [];
    job(0);
    for (let r = 0; r < REPS; r++) {
      probes.push(pool.length / job(1) / 1e6);
      probes4.push(pool.length / job(2) / 1e6);
      for (let i = 0; i < 8; i++) times.push(job(0));
    }
    const probeGBs = median(probes);
    const probe4GBs = median(probes4);
    const ms = median(times);
    // A batch of 32 against 32 matvecs (each on the next copy), both on the two workers, in
    // alternating rounds as batchFigure does on one thread: what batching gains where the engine
    // runs its matmuls.
    const batch32 = batchVsMatvecs(
      () => job(3),
      () => {
        let t = 0;
        for (let b = 0; b < 32; b++) t += job(0);
        return t;
      },
    );
    const GBs = Q40_BYTES / ms / 1e6;
    log(
      `Q40xQ80 matvec 11008x4096, 2 threads: ${ms.toFixed(3)} ms, ${GBs.toFixed(1)} GB/s = ${(GBs / probeGBs).toFixed(2)} x 2-thread read probe ` +
        `(${probeGBs.toFixed(1)} GB/s), ${(GBs / probe4GBs).toFixed(2)} x 2-thread ${PROBE_STREAMS}-stream probe (${probe4GBs.toFixed(1)} GB/s), ${(q40q80.ms / ms).toFixed(2)}x one thread`,
    );
    log(
      `Q40xQ80 11008x4096 batch of 32, 2 threads: ${batch32.batchedMs.toFixed(2)} ms, ${(batchQ80.batchedMs / batch32.batchedMs).toFixed(2)}x one thread; ` +
        `vs 32 matvecs on 2 threads ${batch32.matvecsMs.toFixed(2)} ms = ${batch32.speedup.toFixed(2)}x`,
    );
    return {
      probeGBs: round(probeGBs, 2),
      probe4GBs: round(probe4GBs, 2),
      ms: round(ms),
      GBs: round(GBs, 2),
      ratioToProbe: round(GBs / probeGBs),
      ratioToProbe4: round(GBs / probe4GBs),
      speedupVs1: round(q40q80.ms / ms, 2),
      batch32Ms: batch32.batchedMs,
      batch32,
    };
  } finally {
    Atomics.store(ctrl, CTRL.GENERATION, -1);
    Atomics.notify(ctrl, CTRL.GENERATION);
    await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve))));
  }
}
const two = await twoThreads();

// ---- native / reference, on a smaller matrix for the reference, per weight byte ----
function refRatio(label: string, bytes: number, native: number, fn: () => void): { referenceGBs: number; nativeOverReference: number } {
  fn();
  const ms = median(Array.from({ length: 3 }, () => time(fn)));
  const GBs = bytes / ms / 1e6;
  log(`${label}: reference ${GBs.toFixed(3)} GB/s; native ${native.toFixed(1)} GB/s = ${(native / GBs).toFixed(1)}x reference`);
  return { referenceGBs: round(GBs, 4), nativeOverReference: round(native / GBs, 1) };
}
const REF_ROWS = 512;
const refW = pool.subarray(0, (REF_ROWS * NIN * Q40_BLOCK_BYTES) / Q_BLOCK);
const refQ80 = refRatio(`Q40xQ80 ${REF_ROWS}x4096`, refW.length, q40q80.GBs, () =>
  referenceBackend.matmulQ80(FloatType.Q40, out, xq, refW, NIN, REF_ROWS, 1, 0, REF_ROWS),
);
const refF32in = refRatio(`Q40xF32 ${REF_ROWS}x4096`, refW.length, q40f32.GBs, () =>
  referenceBackend.matmul(FloatType.Q40, out, x, refW, NIN, REF_ROWS, 1, 0, REF_ROWS),
);

// ---- F32 weights 4096x4096 (the pool refilled with finite random floats) ----
{
  const r = rng(3);
  const f = new Float32Array(poolSab, 0, (F32_COPIES * F32_BYTES) / 4);
  for (let i = 0; i < f.length; i++) f[i] = r() * 2 - 1;
}
let fcopy = 0;
const nextF32 = (): Uint8Array => {
  fcopy = (fcopy + 1) % F32_COPIES;
  return pool.subarray(fcopy * F32_BYTES, (fcopy + 1) * F32_BYTES);
};
const f32 = matvecFigure('F32 matvec 4096x4096, 1 thread', F32_BYTES, () => be.matmul(FloatType.F32, out, x, nextF32(), F32_N, F32_N, 1, 0, F32_N));
const refF32W = pool.subarray(0, REF_ROWS * F32_N * 4);
const refF32 = refRatio(`F32 ${REF_ROWS}x4096`, refF32W.length, f32.GBs, () =>
  referenceBackend.matmul(FloatType.F32, out, x, refF32W, F32_N, REF_ROWS, 1, 0, REF_ROWS),
);

const result = {
  path: be.path,
  features: be.features,
  llcBytes: LLC,
  poolBytes: pool.length,
  reps: REPS,
  readProbe1GBs: q40q80.probeGBs,
  readProbe1x4StreamsGBs: q40q80.probe4GBs,
  q40q80Matvec: q40q80,
  q40f32Matvec: q40f32,
  f32Matvec: f32,
  twoThreadsQ40q80: two,
  q40q80ByBatch: sweep,
  q40q80ByBatchVnni: sweepVnni,
  batch32Q40q80: batchQ80,
  batch32Q40q80Vnni: batchQ80Vnni,
  batch32Q40f32: batchF32,
  batch32Q40f32Vnni: batchF32Vnni,
  q40q80BatchRatios: ratios,
  nativeOverReference: { q40q80: refQ80, q40f32: refF32in, f32: refF32 },
  targets: {
    q40q80RatioToProbeAtLeast: 0.6,
    q40q80RatioToProbeMet: q40q80.ratioToProbe >= 0.6,
    // absolute targets set for the project's 2-core VM (single-stream DRAM probe ~16-18 GB/s)
    q40q80OneThreadGBsAtLeast: 15,
    q40q80OneThreadGBsMet: q40q80.GBs >= 15,
    q40q80TwoThreadsGBsAtLeast: 30,
    q40q80TwoThreadsGBsMet: two.GBs >= 30,
    batch32SpeedupAtLeast: 8,
    batch32Q40q80SpeedupMet: batchQ80.speedup >= 8,
    batch32Q40f32SpeedupMet: batchF32.speedup >= 8,
    batch32Q40q80TwoThreadsSpeedupMet: two.batch32.speedup >= 8,
  },
  sink: sink % 7,
};
if (json) process.stdout.write(`${JSON.stringify(result)}\n`);
