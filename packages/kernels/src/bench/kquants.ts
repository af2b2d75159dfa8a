/**
 * K-quant kernel figures, one thread, weights from DRAM: per weight type (Q40 as the baseline,
 * Q4_K, Q5_K, Q6_K) and per shape (11008x4096 and 4096x11008, nOut x nIn), the matvec and the
 * batch of 32 with quantized input (Q80 for Q40, Q8_K for the K-quants) and with F32 input, and
 * the weights' effective GB/s against the single-thread read probe (one stream and four streams)
 * measured in the same rounds. Run alone: `node dist/bench/kquants.js [--json] [--path p]
 * [--reps n]`; the kernels bench (`npm run bench`) runs it too and adds its figures to its JSON.
 *
 * Weights are random bytes with realistic f16 super-block scales (both signs, 2^-12..2^-5; the
 * 6-bit and int8 sub-block scales random), in a pool of copies at least 3x the last-level cache:
 * each timed call reads the next copy. Rounds alternate the types, so drift of the shared machine
 * spreads over all of them; every figure is a median.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DTYPES, FloatType, Q80_BLOCK_BYTES, Q_BLOCK, quantizeQ80 } from '@airllm/format';
import { nativeBackend, nativePaths, readSum, type NativeBackend, type NativePath } from '../native.js';
import { Q8K_BLOCK_BYTES, quantizeQ8KRow } from '../q8k.js';
import { fillRandomQ40, randomFloats, rng } from '../testing/builders.js';

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
  /** quantized input: Q80 for Q40, Q8_K for the K-quants */
  matvecQ: { ms: number; GBs: number; ratioToProbe: number; ratioToProbe4: number };
  matvecF32: { ms: number; GBs: number };
  batch32Q: { ms: number; relativeToQ40: number | undefined };
  batch32F32: { ms: number };
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
  const maxBytes = Math.max(...TYPES.map((t) => (11008 * 4096 * DTYPES[t].bytesPerBlock) / DTYPES[t].blockSize));
  const target = Math.min(2 * 1024 ** 3, Math.max(3 * llcBytes(), 768 * 1024 ** 2));
  const copies = Math.ceil(target / maxBytes);
  const pool = new Uint8Array(new SharedArrayBuffer(copies * maxBytes));
  const B = 32;
  const out = new Float32Array(B * 11008);
  let sink = 0;
  const probe = (streams: number): number => pool.length / time(() => (sink += readSum(pool, streams))) / 1e6;
  const figures: KQuantFigure[] = [];
  const probes1: number[] = [];
  const probes4: number[] = [];
  for (const [nOut, nIn] of SHAPES) {
    const x = randomFloats(B * nIn, nIn);
    const xq80 = new Uint8Array((B * nIn * Q80_BLOCK_BYTES) / Q_BLOCK);
    quantizeQ80(x, xq80);
    const xq8k = new Uint8Array((B * nIn * Q8K_BLOCK_BYTES) / 256);
    quantizeQ8KRow(x, xq8k);
    let q40Batch = 0;
    for (const type of TYPES) {
      if (type === FloatType.Q40) fillRandomQ40(pool, 1);
      else fillRandomKQuant(type, pool, type);
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
      q(1);
      f(1);
      q(B);
      f(B);
      const t = { q1: [] as number[], f1: [] as number[], qB: [] as number[], fB: [] as number[], p1: [] as number[], p4: [] as number[] };
      for (let r = 0; r < reps; r++) {
        t.p1.push(probe(1));
        t.p4.push(probe(4));
        for (let i = 0; i < 6; i++) t.q1.push(time(() => q(1)));
        for (let i = 0; i < 3; i++) t.f1.push(time(() => f(1)));
        t.qB.push(time(() => q(B)));
        t.fB.push(time(() => f(B)));
      }
      probes1.push(...t.p1);
      probes4.push(...t.p4);
      const p1 = median(t.p1);
      const p4 = median(t.p4);
      const q1 = median(t.q1);
      const GBs = bytes / q1 / 1e6;
      const qB = median(t.qB);
      if (type === FloatType.Q40) q40Batch = qB;
      const fig: KQuantFigure = {
        type: DTYPES[type].name,
        nOut,
        nIn,
        weightBytes: bytes,
        matvecQ: { ms: round(q1), GBs: round(GBs, 2), ratioToProbe: round(GBs / p1), ratioToProbe4: round(GBs / p4) },
        matvecF32: { ms: round(median(t.f1)), GBs: round(bytes / median(t.f1) / 1e6, 2) },
        batch32Q: { ms: round(qB, 2), relativeToQ40: type === FloatType.Q40 ? undefined : round(qB / q40Batch, 2) },
        batch32F32: { ms: round(median(t.fB), 2) },
      };
      figures.push(fig);
      log(
        `${fig.type.padEnd(4)} ${nOut}x${nIn} (${(bytes / 1e6).toFixed(1)} MB): matvec ${type === FloatType.Q40 ? 'Q80' : 'Q8_K'} input ${fig.matvecQ.ms.toFixed(3)} ms ` +
          `= ${fig.matvecQ.GBs.toFixed(1)} GB/s = ${fig.matvecQ.ratioToProbe.toFixed(2)} x probe (${p1.toFixed(1)}), ${fig.matvecQ.ratioToProbe4.toFixed(2)} x 4-stream probe (${p4.toFixed(1)}); ` +
          `F32 input ${fig.matvecF32.ms.toFixed(3)} ms; batch 32: ${fig.batch32Q.ms.toFixed(2)} ms` +
          `${fig.batch32Q.relativeToQ40 !== undefined ? ` (${fig.batch32Q.relativeToQ40.toFixed(2)} x Q40)` : ''}, F32 input ${fig.batch32F32.ms.toFixed(2)} ms`,
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
