/**
 * K-quant kernel figures, one thread, weights from DRAM: per weight type (Q40 as the baseline,
 * Q4_K, Q5_K, Q6_K) and per shape (11008x4096 and 4096x11008, nOut x nIn), the matvec and the
 * batch of 32 with quantized input (Q80 for Q40, Q8_K for the K-quants) and with F32 input, and
 * the weights' effective GB/s against the single-thread read probe (one stream and four streams)
 * measured in the same rounds. Run alone: `node dist/bench/kquants.js [--json] [--path p]
 * [--reps n]`; the kernels bench (`npm run bench`) runs it too and adds its figures to its JSON.
 *
 * Weights are random bytes with realistic f16 super-block scales (both signs, 2^-12..2^-5; the
 * 6-bit and int8 sub-block scales random), one pool of copies per type, each at least 3x the
 * last-level cache: each timed call reads the next copy. Every round runs each type in turn
 * (probes, matvecs, batches), so the shared machine's drift hits all types alike; figures are
 * medians, and ratios (to the probes, to Q40) are medians of the rounds' own ratios.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DTYPES, FloatType, Q80_BLOCK_BYTES, Q_BLOCK, quantizeQ80 } from '@airllm/format';
import { nativeBackend, nativePaths, readSum, type NativeBackend, type NativePath } from '../dist/native.js';
import { Q8K_BLOCK_BYTES, quantizeQ8KRow } from '../dist/q8k.js';
import { fillRandomQ40, randomFloats, rng } from '../dist/testing/builders.js';

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
    // not Linux: assume a large server cache
  }
  return 256 * 1024 ** 2;
}

/** Random K-quant bytes with realistic super-block scales (fast for hundreds of MB). */
function fillRandomKQuant(type: FloatType, dst: Uint8Array, seed: number): void {
  const r = rng(seed);
  const words = new Uint32Array(dst.buffer, dst.byteOffset, dst.byteLength >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = (r() * 4294967296) >>> 0;
  const bpb = DTYPES[type].bytesPerBlock;
  const f16 = (): number => (r() < 0.5 ? 0x8000 : 0) | ((3 + Math.floor(r() * 7)) << 10) | Math.floor(r() * 1024);
  for (let b = 0; b + bpb <= dst.length; b += bpb) {
    const at = type === FloatType.Q6_K ? [b + 208] : [b, b + 2];
    for (const o of at) {
      const h = f16();
      dst[o] = h & 0xff;
      dst[o + 1] = h >>> 8;
    }
  }
}

export interface KQuantFigure {
  type: string;
  nOut: number;
  nIn: number;
  weightBytes: number;
  /** quantized input: Q80 for Q40, Q8_K for the K-quants; ratios to the probes of the same rounds */
  matvecQ: { ms: number; GBs: number; ratioToProbe: number; ratioToProbe4: number; relativeToQ40?: number };
  matvecF32: { ms: number; GBs: number; relativeToQ40?: number };
  /** relativeToQ40: the median over rounds of this type's time ÷ Q40's in the same round */
  batch32Q: { ms: number; relativeToQ40?: number };
  batch32F32: { ms: number; relativeToQ40?: number };
}

export interface KQuantBench {
  path: string;
  readProbe1GBs: number;
  readProbe4GBs: number;
  figures: KQuantFigure[];
}

export function runKQuantBench(be: NativeBackend, reps: number, log: (s: string) => void): KQuantBench {
  const SHAPES: [number, number][] = [
    [11008, 4096],
    [4096, 11008],
  ];
  const TYPES = [FloatType.Q40, FloatType.Q4_K, FloatType.Q5_K, FloatType.Q6_K];
  const B = 32;
  // one pool per type (each >= 3x the last-level cache), so the rounds can alternate the types
  const poolBytes = Math.max(3 * llcBytes(), 192 * 1024 ** 2);
  const pools = TYPES.map((type) => {
    const pool = new Uint8Array(new SharedArrayBuffer(poolBytes));
    if (type === FloatType.Q40) fillRandomQ40(pool, 1);
    else fillRandomKQuant(type, pool, type);
    return pool;
  });
  const out = new Float32Array(B * 11008);
  let sink = 0;
  const figures: KQuantFigure[] = [];
  const probes1: number[] = [];
  const probes4: number[] = [];
  for (const [nOut, nIn] of SHAPES) {
    const x = randomFloats(B * nIn, nIn);
    const xq80 = new Uint8Array((B * nIn * Q80_BLOCK_BYTES) / Q_BLOCK);
    quantizeQ80(x, xq80);
    const xq8k = new Uint8Array((B * nIn * Q8K_BLOCK_BYTES) / 256);
    quantizeQ8KRow(x, xq8k);
    const runs = TYPES.map((type, ti) => {
      const pool = pools[ti]!;
      const bytes = (nOut * nIn * DTYPES[type].bytesPerBlock) / DTYPES[type].blockSize;
      const n = Math.floor(pool.length / bytes);
      let c = 0;
      const next = (): Uint8Array => {
        c = (c + 1) % n;
        return pool.subarray(c * bytes, (c + 1) * bytes);
      };
      const q = (batch: number): void =>
        type === FloatType.Q40
          ? be.matmulQ80(type, out, xq80, next(), nIn, nOut, batch, 0, nOut)
          : be.matmulQ8K(type, out, xq8k, next(), nIn, nOut, batch, 0, nOut);
      const f = (batch: number): void => be.matmul(type, out, x, next(), nIn, nOut, batch, 0, nOut);
      const probe = (streams: number): number => pool.length / time(() => (sink += readSum(pool, streams))) / 1e6;
      q(1);
      f(1);
      q(B);
      f(B);
      return { type, bytes, q, f, probe, t: { q1: [] as number[], f1: [] as number[], qB: [] as number[], fB: [] as number[], p1: [] as number[], p4: [] as number[] } };
    });
    for (let r = 0; r < reps; r++) {
      for (const { q, f, probe, t } of runs) {
        t.p1.push(probe(1));
        t.p4.push(probe(4));
        const q1: number[] = [];
        const f1: number[] = [];
        for (let i = 0; i < 6; i++) q1.push(time(() => q(1)));
        for (let i = 0; i < 3; i++) f1.push(time(() => f(1)));
        t.q1.push(median(q1));
        t.f1.push(median(f1));
        t.qB.push(time(() => q(B)));
        t.fB.push(time(() => f(B)));
      }
    }
    const base = runs[0]!.t;
    const rel = (xs: number[], ys: number[]): number => round(median(xs.map((v, i) => v / ys[i]!)), 2);
    for (const { type, bytes, t } of runs) {
      probes1.push(...t.p1);
      probes4.push(...t.p4);
      const q40 = type === FloatType.Q40;
      const q1 = median(t.q1);
      const GBs = bytes / q1 / 1e6;
      const fig: KQuantFigure = {
        type: DTYPES[type].name,
        nOut,
        nIn,
        weightBytes: bytes,
        matvecQ: {
          ms: round(q1),
          GBs: round(GBs, 2),
          ratioToProbe: rel(t.p1.map((p, i) => bytes / t.q1[i]! / 1e6 / p), t.p1.map(() => 1)),
          ratioToProbe4: rel(t.p4.map((p, i) => bytes / t.q1[i]! / 1e6 / p), t.p4.map(() => 1)),
          relativeToQ40: q40 ? undefined : rel(t.q1, base.q1),
        },
        matvecF32: { ms: round(median(t.f1)), GBs: round(bytes / median(t.f1) / 1e6, 2), relativeToQ40: q40 ? undefined : rel(t.f1, base.f1) },
        batch32Q: { ms: round(median(t.qB), 2), relativeToQ40: q40 ? undefined : rel(t.qB, base.qB) },
        batch32F32: { ms: round(median(t.fB), 2), relativeToQ40: q40 ? undefined : rel(t.fB, base.fB) },
      };
      figures.push(fig);
      const vs = (v: number | undefined): string => (v === undefined ? '' : ` (${v.toFixed(2)} x Q40)`);
      log(
        `${fig.type.padEnd(4)} ${nOut}x${nIn} (${(bytes / 1e6).toFixed(1)} MB): matvec ${q40 ? 'Q80' : 'Q8_K'} input ${fig.matvecQ.ms.toFixed(3)} ms${vs(fig.matvecQ.relativeToQ40)} ` +
          `= ${fig.matvecQ.GBs.toFixed(1)} GB/s = ${fig.matvecQ.ratioToProbe.toFixed(2)} x probe, ${fig.matvecQ.ratioToProbe4.toFixed(2)} x 4-stream probe ` +
          `(${median(t.p1).toFixed(1)} / ${median(t.p4).toFixed(1)} GB/s); F32 input ${fig.matvecF32.ms.toFixed(3)} ms${vs(fig.matvecF32.relativeToQ40)}; ` +
          `batch 32: ${fig.batch32Q.ms.toFixed(2)} ms${vs(fig.batch32Q.relativeToQ40)}, F32 input ${fig.batch32F32.ms.toFixed(2)} ms${vs(fig.batch32F32.relativeToQ40)}`,
      );
    }
  }
  void sink;
  return { path: be.path, readProbe1GBs: round(median(probes1), 2), readProbe4GBs: round(median(probes4), 2), figures };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const arg = (name: string): string | undefined => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
  const be = nativeBackend((arg('--path') as NativePath | undefined) ?? nativePaths()[0]!);
  const log = (s: string): void => void process.stdout.write(`${s}\n`);
  log(`K-quant kernels bench: path ${be.path}, 1 thread, weights from DRAM`);
  const r = runKQuantBench(be, Number(arg('--reps') ?? 5), log);
  if (args.includes('--json')) log(JSON.stringify(r));
}
