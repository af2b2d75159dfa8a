import { Q80_BLOCK_BYTES, Q_BLOCK, RopeType, type ModelConfig } from '@airllm/format';
import { Q8K_BLOCK, Q8K_BLOCK_BYTES, ropeFrequencies, type KernelBackend } from '@airllm/kernels';
import { Barrier } from './barrier.js';
import { CTRL_INTS, reportDoubles, taskInts } from './channel.js';
import type { EngineConfig } from './config.js';
import type { SharedBuffers } from './shared.js';

/** Q80 bytes for `n` floats. */
export function q80Bytes(n: number): number {
  return (n / Q_BLOCK) * Q80_BLOCK_BYTES;
}

/** Q8_K bytes for `n` floats (whole super-blocks of 256; none for a width that is not). */
export function q8kBytes(n: number): number {
  return Math.floor(n / Q8K_BLOCK) * Q8K_BLOCK_BYTES;
}

/**
 * The run state every compute thread shares: activations, the step channel and the KV cache,
 * allocated once (SharedArrayBuffers; the garbage collector frees them with the engine).
 */
export function createRunState(c: EngineConfig): SharedBuffers {
  const m = c.model;
  const R = c.batchSize;
  const f = (n: number): SharedArrayBuffer => new SharedArrayBuffer(n * 4);
  // KV memory is committed by the OS only as positions are written.
  const kv = Array.from({ length: c.maxSequences }, () =>
    Array.from({ length: c.layers.end - c.layers.start }, () => ({ k: f(c.seqLen * m.kvDim), v: f(c.seqLen * m.kvDim) })),
  );
  return {
    x: f(R * m.dim),
    q: f(R * m.qDim),
    kTmp: f(R * m.kvDim),
    vTmp: f(R * m.kvDim),
    z: f(R * m.qDim),
    o: f(R * m.dim),
    hb: f(R * m.ffDim),
    hb2: f(R * m.ffDim),
    hq: new SharedArrayBuffer(c.activations === 'q80' ? q80Bytes(R * m.ffDim) : 0),
    logits: f(R * m.vocabSize),
    barrier: Barrier.createState().buffer as SharedArrayBuffer,
    control: new SharedArrayBuffer(CTRL_INTS * 4),
    task: new SharedArrayBuffer(taskInts(R) * 4),
    reports: new SharedArrayBuffer(c.threads * reportDoubles(c.layers.end - c.layers.start + 1) * 8),
    kv,
  };
}

const EMPTY_U8 = new Uint8Array(0);
const EMPTY_F32 = new Float32Array(0);

function f32(sab: SharedArrayBuffer): Float32Array {
  return new Float32Array(sab);
}

/** RoPE frequencies and pairing of a model. FALCON rope is never frequency-scaled. */
export function ropeOf(m: ModelConfig): { freqs: Float32Array; halfSplit: boolean } {
  const halfSplit = m.rope.type === RopeType.FALCON;
  return { freqs: ropeFrequencies(m.headDim, m.rope.theta, halfSplit ? undefined : m.rope.scaling), halfSplit };
}

/**
 * The run state as one compute thread sees it: the shared activations and KV cache, this
 * thread's private scratch, its kernels and the barrier it meets the others at.
 */
export class ThreadState {
  readonly m: ModelConfig;
  readonly K: KernelBackend;
  readonly barrier: Barrier;
  /** This thread's index for the current step (tasks carry it), of T threads. */
  t = 0;
  readonly T: number;
  readonly q80: boolean;
  readonly eps: number;
  readonly freqs: Float32Array;
  readonly halfSplit: boolean;
  /** Rows of q/k/v a thread owns are whole heads and whole Q80 blocks. */
  readonly headAlign: number;
  /** First layer served: KV caches are indexed by layer − firstLayer. */
  readonly firstLayer: number;

  // Shared activations (see SharedBuffers for shapes).
  readonly x: Float32Array;
  readonly q: Float32Array;
  readonly kTmp: Float32Array;
  readonly vTmp: Float32Array;
  readonly z: Float32Array;
  readonly o: Float32Array;
  readonly hb: Float32Array;
  readonly hb2: Float32Array;
  readonly hq: Uint8Array;
  readonly logits: Float32Array;
  readonly kCache: readonly (readonly Float32Array[])[]; // [slot][layer - firstLayer] (seqLen, kvDim)
  readonly vCache: readonly (readonly Float32Array[])[];

  // Private scratch of this thread.
  readonly xb: Float32Array; // (maxRows, dim) normalised input of a block
  readonly xbq: Uint8Array; // (maxRows, dim) as Q80
  readonly zf: Float32Array; // (maxRows, qDim) attention output after the Q80 cast
  readonly zq: Uint8Array; // (maxRows, qDim) as Q80
  readonly castScratch: Uint8Array; // Q80 scratch for in-place casts
  readonly xk: Uint8Array; // (maxRows, widest input) Q8_K input of K-quant matmuls (f32 mode)
  readonly att: Float32Array; // (seqLen) attention scores
  readonly eo: Float32Array; // (maxRows, dim) one expert's output rows
  readonly ye: Float32Array; // (maxRows, dim) rows routed to one expert
  readonly yeq: Uint8Array; // (maxRows, dim) as Q80
  readonly routerLogits: Float32Array; // (maxRows, nExperts)
  readonly routeExperts: Int32Array; // (maxRows, nActiveExperts)
  readonly routeWeights: Float32Array; // (maxRows, nActiveExperts)
  readonly expertRows: Int32Array; // (maxRows) rows routed to the current expert
  readonly expertScales: Float32Array; // (maxRows) their routing weights
  readonly expertRanks: Int32Array; // (maxRows) the expert's place in each row's top-k
  readonly eoRank: Float32Array; // (maxRows, nActiveExperts, dim) weighted expert outputs (q80 mode)

  constructor(c: EngineConfig, b: SharedBuffers, kernels: KernelBackend, spin: number) {
    const m = c.model;
    this.m = m;
    this.K = kernels;
    this.T = c.threads;
    this.barrier = new Barrier(new Int32Array(b.barrier), c.threads, spin);
    this.q80 = c.activations === 'q80';
    this.eps = m.normEpsilon;
    const rope = ropeOf(m);
    this.freqs = rope.freqs;
    this.halfSplit = rope.halfSplit;
    this.headAlign = lcm(m.headDim, Q_BLOCK);
    this.firstLayer = c.layers.start;

    this.x = f32(b.x);
    this.q = f32(b.q);
    this.kTmp = f32(b.kTmp);
    this.vTmp = f32(b.vTmp);
    this.z = f32(b.z);
    this.o = f32(b.o);
    this.hb = f32(b.hb);
    this.hb2 = f32(b.hb2);
    this.hq = new Uint8Array(b.hq);
    this.logits = f32(b.logits);
    this.kCache = b.kv.map((slot) => slot.map((kv) => f32(kv.k)));
    this.vCache = b.kv.map((slot) => slot.map((kv) => f32(kv.v)));

    const R = c.batchSize;
    const q80 = this.q80;
    this.xb = new Float32Array(R * m.dim);
    this.xbq = q80 ? new Uint8Array(q80Bytes(R * m.dim)) : EMPTY_U8;
    this.zf = q80 ? new Float32Array(R * m.qDim) : EMPTY_F32;
    this.zq = q80 ? new Uint8Array(q80Bytes(R * m.qDim)) : EMPTY_U8;
    this.castScratch = q80 ? new Uint8Array(q80Bytes(R * Math.max(m.dim, m.ffDim))) : EMPTY_U8;
    // One buffer serves every input in turn (q/k/v, wo, w1/w3, w2, head: never two at once).
    this.xk = q80 ? EMPTY_U8 : new Uint8Array(R * Math.max(q8kBytes(m.dim), q8kBytes(m.qDim), q8kBytes(m.ffDim)));
    this.att = new Float32Array(c.seqLen);
    const moe = m.nExperts > 0;
    this.eo = moe ? new Float32Array(R * m.dim) : EMPTY_F32;
    this.ye = moe ? new Float32Array(R * m.dim) : EMPTY_F32;
    this.yeq = moe && q80 ? new Uint8Array(q80Bytes(R * m.dim)) : EMPTY_U8;
    this.routerLogits = new Float32Array(moe ? R * m.nExperts : 0);
    this.routeExperts = new Int32Array(moe ? R * m.nActiveExperts : 0);
    this.routeWeights = new Float32Array(moe ? R * m.nActiveExperts : 0);
    this.expertRows = new Int32Array(moe ? R : 0);
    this.expertScales = new Float32Array(moe ? R : 0);
    this.expertRanks = new Int32Array(moe ? R : 0);
    this.eoRank = new Float32Array(moe && q80 ? R * m.nActiveExperts * m.dim : 0);
  }
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}
