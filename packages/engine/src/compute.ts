import {
  ArchType,
  buildModelLayout,
  FloatType,
  parseModelHeader,
  Q80_BLOCK_BYTES,
  Q_BLOCK,
  type ModelHeader,
  type ModelLayout,
  type TensorInfo,
} from '@airllm/format';
import { dllamaNumerics, ropeForHeader, splitRange, type KernelBackend } from '@airllm/kernels';
import { Barrier } from './barrier.js';
import type { ComputeWorkerData, SequenceRows, StepTask, ThreadReport } from './shared.js';
import type { SegmentLocation, WorkerWeightSource } from './weights.js';

/** One layer's weights: read-only views into the mapped file (or a slot), owning nothing. */
interface LayerWeights {
  readonly q: Uint8Array; // (qDim, dim)
  readonly k: Uint8Array; // (kvDim, dim)
  readonly v: Uint8Array; // (kvDim, dim)
  readonly wo: Uint8Array; // (dim, qDim)
  readonly w1: Uint8Array; // (ff, dim) dense FFN gate
  readonly w2: Uint8Array; // (dim, ff) dense FFN down
  readonly w3: Uint8Array; // (ff, dim) dense FFN up
  readonly router: Uint8Array; // (nExperts, dim) F32, MoE only
  readonly experts: readonly { readonly w1: Uint8Array; readonly w2: Uint8Array; readonly w3: Uint8Array }[];
  readonly qNorm: Float32Array; // (headDim) qwen3 only
  readonly kNorm: Float32Array; // (headDim) qwen3 only
  readonly attNorm: Float32Array; // (dim)
  readonly ffnNorm: Float32Array; // (dim)
}

interface HeadWeights {
  readonly finalNorm: Float32Array; // (dim)
  readonly wcls: Uint8Array; // (vocab, dim)
}

const EMPTY_U8 = new Uint8Array(0);
const EMPTY_F32 = new Float32Array(0);

/** Q80 bytes for `n` floats. */
function q80Bytes(n: number): number {
  return (n / Q_BLOCK) * Q80_BLOCK_BYTES;
}

function f32(sab: SharedArrayBuffer): Float32Array {
  return new Float32Array(sab);
}

/**
 * One compute thread. Every thread runs the same forward functions on its own slice of each
 * matmul (block-aligned output rows) or of the heads, and the threads meet at a barrier
 * between dependent steps. Row-wise normalisations are cheap, so every thread computes them
 * for all rows into its own buffers instead of waiting for one another.
 */
export class ComputeThread {
  readonly h: ModelHeader;
  readonly layout: ModelLayout;
  readonly K: KernelBackend;
  readonly barrier: Barrier;
  /** This thread's index for the current step (tasks carry it). */
  t: number;
  readonly T: number;
  readonly q80: boolean;
  readonly eps: number;
  readonly freqs: Float32Array;
  readonly halfSplit: boolean;
  readonly weightQuantized: boolean;
  /** Rows of q/k/v a thread owns are whole heads and whole Q80 blocks. */
  readonly headAlign: number;

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

  readonly #source: WorkerWeightSource;
  readonly #firstLayer: number;
  #layerCache = new Map<number, { loc: SegmentLocation; w: LayerWeights }>();
  #headCache: { loc: SegmentLocation; w: HeadWeights } | undefined;

  constructor(data: ComputeWorkerData, kernels: KernelBackend, source: WorkerWeightSource) {
    const h = parseModelHeader(data.headerBytes);
    this.h = h;
    this.layout = buildModelLayout(h);
    // q80 activations compute with dllama's own arithmetic, so Q40 models give its numbers
    this.K = data.activations === 'q80' ? dllamaNumerics(kernels) : kernels;
    this.t = 0;
    this.T = data.threads;
    this.barrier = new Barrier(new Int32Array(data.buffers.barrier), data.threads, data.spin);
    this.q80 = data.activations === 'q80';
    this.eps = h.normEpsilon;
    const rope = ropeForHeader(h);
    this.freqs = rope.freqs;
    this.halfSplit = rope.halfSplit;
    this.weightQuantized = h.weightType === FloatType.Q40 || h.weightType === FloatType.Q80;
    this.headAlign = lcm(h.headDim, Q_BLOCK);
    this.#source = source;
    this.#firstLayer = data.firstLayer;

    const b = data.buffers;
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
    this.kCache = b.kv.map((slot) => slot.map((c) => f32(c.k)));
    this.vCache = b.kv.map((slot) => slot.map((c) => f32(c.v)));

    const R = data.maxRows;
    const q80 = this.q80;
    this.xb = new Float32Array(R * h.dim);
    this.xbq = q80 ? new Uint8Array(q80Bytes(R * h.dim)) : EMPTY_U8;
    this.zf = q80 ? new Float32Array(R * h.qDim) : EMPTY_F32;
    this.zq = q80 ? new Uint8Array(q80Bytes(R * h.qDim)) : EMPTY_U8;
    this.castScratch = q80 ? new Uint8Array(q80Bytes(R * Math.max(h.dim, h.ffDim))) : EMPTY_U8;
    this.att = new Float32Array(data.seqLen);
    const moe = h.nExperts > 0;
    this.eo = moe ? new Float32Array(R * h.dim) : EMPTY_F32;
    this.ye = moe ? new Float32Array(R * h.dim) : EMPTY_F32;
    this.yeq = moe && q80 ? new Uint8Array(q80Bytes(R * h.dim)) : EMPTY_U8;
    this.routerLogits = new Float32Array(moe ? R * h.nExperts : 0);
    this.routeExperts = new Int32Array(moe ? R * h.nActiveExperts : 0);
    this.routeWeights = new Float32Array(moe ? R * h.nActiveExperts : 0);
    this.expertRows = new Int32Array(moe ? R : 0);
    this.expertScales = new Float32Array(moe ? R : 0);
    this.expertRanks = new Int32Array(moe ? R : 0);
    this.eoRank = new Float32Array(moe && q80 ? R * h.nActiveExperts * h.dim : 0);
  }

  /** Run one step: the task's layers, then the logits it asks for. */
  run(task: StepTask): ThreadReport {
    this.t = task.thread;
    const spans: number[] = [];
    const clock = (): number => performance.timeOrigin + performance.now();
    try {
      for (let l = task.layerStart; l < task.layerEnd; l++) {
        const waitStart = clock();
        const w = this.#layer(l);
        const waitEnd = clock();
        this.forwardLayer(w, l, task);
        // Every thread has passed the layer's last barrier, so its weights are no longer read.
        if (this.t === 0) this.#source.release(l);
        spans.push(l, waitStart, waitEnd, clock());
      }
      if (task.logitRows.length > 0) {
        const waitStart = clock();
        const w = this.#head();
        const waitEnd = clock();
        this.final(w, task);
        if (this.t === 0) this.#source.release(this.h.nLayers);
        spans.push(this.h.nLayers, waitStart, waitEnd, clock());
      }
    } catch (e) {
      this.barrier.abort();
      throw e;
    }
    return { thread: this.t, spans };
  }

  forwardLayer(w: LayerWeights, l: number, task: StepTask): void {
    switch (this.h.archType) {
      case ArchType.LLAMA:
        return this.llamaLayer(w, l, task);
      case ArchType.QWEN3:
        return this.qwen3Layer(w, l, task);
      case ArchType.QWEN3_MOE:
        return this.qwen3MoeLayer(w, l, task);
    }
  }

  // --- architectures -------------------------------------------------------------------

  /** Llama: attention (LLAMA rope, optionally Llama-3.1 scaled) + SwiGLU FFN. */
  llamaLayer(w: LayerWeights, l: number, task: StepTask): void {
    this.attention(w, l, task, false);
    this.denseFfn(w, task);
  }

  /** Qwen3: per-head RMSNorm of q and k before FALCON rope + SwiGLU FFN. */
  qwen3Layer(w: LayerWeights, l: number, task: StepTask): void {
    this.attention(w, l, task, true);
    this.denseFfn(w, task);
  }

  /** Qwen3-MoE: Qwen3 attention + routed experts (softmax, top-k, renormalised). */
  qwen3MoeLayer(w: LayerWeights, l: number, task: StepTask): void {
    this.attention(w, l, task, true);
    this.moeFfn(w, task);
  }

  // --- blocks --------------------------------------------------------------------------

  attention(w: LayerWeights, l: number, task: StepTask, qkNorm: boolean): void {
    const { K, h } = this;
    const { dim, qDim, kvDim, headDim: hd, nHeads, nKvHeads } = h;
    const rows = task.rows;
    const li = l - this.#firstLayer;

    // attention rmsnorm (all rows, into this thread's xb)
    K.rmsnorm(this.xb, this.x, w.attNorm, dim, this.eps, 0, rows);
    const xbq = this.castIn(this.xb, this.xbq, dim, rows);

    // q, k, v for this thread's heads; k and v go straight into the cache when one sequence
    const [q0, q1] = splitRange(qDim, this.T, this.t, this.headAlign);
    const [k0, k1] = splitRange(kvDim, this.T, this.t, this.headAlign);
    const single = task.seqs.length === 1 ? task.seqs[0]! : undefined;
    const kOut = single ? this.kCache[single.slot]![li]!.subarray(single.pos0 * kvDim) : this.kTmp;
    const vOut = single ? this.vCache[single.slot]![li]!.subarray(single.pos0 * kvDim) : this.vTmp;
    this.matmul(w.q, this.xb, xbq, this.q, dim, qDim, rows, q0, q1);
    this.matmul(w.k, this.xb, xbq, kOut, dim, kvDim, rows, k0, k1);
    this.matmul(w.v, this.xb, xbq, vOut, dim, kvDim, rows, k0, k1);

    // qwen3: per-head rmsnorm of q and k, before rope
    if (qkNorm) {
      for (let b = 0; b < rows; b++) {
        K.rmsnorm(this.q, this.q, w.qNorm, hd, this.eps, b * nHeads + q0 / hd, b * nHeads + q1 / hd);
        K.rmsnorm(kOut, kOut, w.kNorm, hd, this.eps, b * nKvHeads + k0 / hd, b * nKvHeads + k1 / hd);
      }
    }

    // rope at each sequence's positions
    for (const s of task.seqs) {
      K.rope(this.q.subarray(s.row0 * qDim), nHeads, hd, s.pos0, s.rows, this.freqs, this.halfSplit, q0 / hd, q1 / hd);
      K.rope(kOut.subarray(s.row0 * kvDim), nKvHeads, hd, s.pos0, s.rows, this.freqs, this.halfSplit, k0 / hd, k1 / hd);
      if (!single) this.storeKv(s, li, k0, k1);
    }
    this.barrier.wait();

    // multi-head attention over each sequence's cache, this thread's query heads
    const [h0, h1] = splitRange(nHeads, this.T, this.t);
    for (const s of task.seqs) {
      K.attention(
        this.z.subarray(s.row0 * qDim),
        this.q.subarray(s.row0 * qDim),
        this.kCache[s.slot]![li]!,
        this.vCache[s.slot]![li]!,
        this.att,
        nHeads,
        nKvHeads,
        hd,
        s.pos0,
        s.rows,
        h0,
        h1,
      );
    }
    this.barrier.wait();

    // output projection, then residual: this thread's rows of x
    // (with float weights the cast rewrites the floats, so it works on a private copy)
    const zIn = this.q80 && !this.weightQuantized ? this.zf : this.z;
    if (zIn !== this.z) zIn.set(this.z.subarray(0, rows * qDim));
    const zq = this.castIn(zIn, this.zq, qDim, rows);
    const [d0, d1] = splitRange(dim, this.T, this.t, Q_BLOCK);
    this.matmul(w.wo, zIn, zq, this.o, qDim, dim, rows, d0, d1);
    this.residual(dim, rows, d0, d1);
    this.barrier.wait();
  }

  denseFfn(w: LayerWeights, task: StepTask): void {
    const { K, h } = this;
    const { dim, ffDim: ff } = h;
    const rows = task.rows;

    // ffn rmsnorm
    K.rmsnorm(this.xb, this.x, w.ffnNorm, dim, this.eps, 0, rows);
    const yq = this.castIn(this.xb, this.xbq, dim, rows);

    // w1 (gate), w3 (up) and SwiGLU on this thread's hidden rows
    const [f0, f1] = splitRange(ff, this.T, this.t, Q_BLOCK);
    this.matmul(w.w1, this.xb, yq, this.hb, dim, ff, rows, f0, f1);
    this.matmul(w.w3, this.xb, yq, this.hb2, dim, ff, rows, f0, f1);
    for (let b = 0; b < rows; b++) K.swiglu(this.hb, this.hb, this.hb2, b * ff + f0, b * ff + f1);
    const hq = this.castHidden(ff, rows, f0, f1);
    this.barrier.wait();

    // w2 (down), then residual
    const [d0, d1] = splitRange(dim, this.T, this.t, Q_BLOCK);
    this.matmul(w.w2, this.hb, hq, this.o, ff, dim, rows, d0, d1);
    this.residual(dim, rows, d0, d1);
    this.barrier.wait();
  }

  moeFfn(w: LayerWeights, task: StepTask): void {
    const { K, h } = this;
    const { dim, ffDim: ff, nExperts: E, nActiveExperts: k } = h;
    const rows = task.rows;

    // ffn rmsnorm
    K.rmsnorm(this.xb, this.x, w.ffnNorm, dim, this.eps, 0, rows);

    // router on the unquantized input; every thread routes every row (deterministic, so all
    // threads agree without a barrier)
    K.matmul(FloatType.F32, this.routerLogits, this.xb, w.router, dim, E, rows, 0, E);
    K.moeRoute(this.routeExperts, this.routeWeights, this.routerLogits, E, k, 0, rows);
    const yq = this.castIn(this.xb, this.xbq, dim, rows);

    // f = Σ weight · w2(swiglu(w1 y, w3 y)) over each row's experts, accumulated in o
    const [f0, f1] = splitRange(ff, this.T, this.t, Q_BLOCK);
    const [d0, d1] = splitRange(dim, this.T, this.t, Q_BLOCK);
    for (let b = 0; b < rows; b++) this.o.fill(0, b * dim + d0, b * dim + d1);
    for (let e = 0; e < E; e++) {
      const n = this.gatherExpertRows(e, rows, k, yq);
      if (n === 0) continue;
      const ex = w.experts[e]!;
      const yeq = yq ? this.yeq : undefined;
      this.matmul(ex.w1, this.ye, yeq, this.hb, dim, ff, n, f0, f1);
      this.matmul(ex.w3, this.ye, yeq, this.hb2, dim, ff, n, f0, f1);
      for (let j = 0; j < n; j++) K.swiglu(this.hb, this.hb, this.hb2, j * ff + f0, j * ff + f1);
      const hq = this.castHidden(ff, n, f0, f1);
      this.barrier.wait();
      this.matmul(ex.w2, this.hb, hq, this.eo, ff, dim, n, d0, d1);
      for (let j = 0; j < n; j++) {
        const r = this.expertRows[j]!;
        // dllama adds the weighted expert outputs in top-k order: keep them until all are known
        const acc = this.q80 ? this.eoRank.subarray((r * k + this.expertRanks[j]!) * dim) : this.o.subarray(r * dim);
        if (this.q80) acc.fill(0, d0, d1);
        K.addScaled(acc, this.eo.subarray(j * dim), this.expertScales[j]!, d0, d1);
      }
      // hb is rewritten by the next expert: wait until everyone has read it
      this.barrier.wait();
    }
    if (this.q80) {
      for (let r = 0; r < rows; r++)
        for (let j = 0; j < k; j++) K.addScaled(this.o.subarray(r * dim), this.eoRank.subarray((r * k + j) * dim), 1, d0, d1);
    }
    this.residual(dim, rows, d0, d1);
    this.barrier.wait();
  }

  /** Final norm and classifier for the rows the task asks logits for. */
  final(w: HeadWeights, task: StepTask): void {
    const { K, h } = this;
    const { dim, vocabSize: V } = h;
    const n = task.logitRows.length;
    task.logitRows.forEach((r, i) => this.xb.set(this.x.subarray(r * dim, (r + 1) * dim), i * dim));
    K.rmsnorm(this.xb, this.xb, w.finalNorm, dim, this.eps, 0, n);
    const xq = this.castIn(this.xb, this.xbq, dim, n);
    const [v0, v1] = splitRange(V, this.T, this.t, Q_BLOCK);
    this.matmul(w.wcls, this.xb, xq, this.logits, dim, V, n, v0, v1);
    this.barrier.wait();
  }

  // --- helpers -------------------------------------------------------------------------

  /** out = W·x for this thread's rows, with Q80 input when the activations are cast. */
  matmul(w: Uint8Array, xf: Float32Array, xq: Uint8Array | undefined, out: Float32Array, nIn: number, nOut: number, rows: number, r0: number, r1: number): void {
    if (r0 >= r1 || rows === 0) return;
    const wt = this.h.weightType;
    if (xq !== undefined && this.weightQuantized) this.K.matmulQ80(wt, out, xq, w, nIn, nOut, rows, r0, r1);
    else this.K.matmul(wt, out, xf, w, nIn, nOut, rows, r0, r1);
  }

  /**
   * dllama's Q80 cast of a private input buffer: quantize; with quantized weights the matmul
   * takes the Q80 bytes, otherwise the floats are replaced by their dequantized values.
   */
  castIn(xf: Float32Array, xq: Uint8Array, n: number, rows: number): Uint8Array | undefined {
    if (!this.q80) return undefined;
    this.K.quantizeQ80(xq, xf, n, 0, rows);
    if (this.weightQuantized) return xq;
    this.K.dequantizeQ80(xf, xq, n, 0, rows);
    return undefined;
  }

  /** Q80 cast in place of this thread's block-aligned columns [c0, c1) of each row. */
  castOut(buf: Float32Array, n: number, rows: number, c0: number, c1: number): void {
    if (!this.q80 || c0 >= c1) return;
    for (let b = 0; b < rows; b++) {
      const blk0 = (b * n + c0) / Q_BLOCK;
      const blk1 = (b * n + c1) / Q_BLOCK;
      this.K.quantizeQ80(this.castScratch, buf, Q_BLOCK, blk0, blk1);
      this.K.dequantizeQ80(buf, this.castScratch, Q_BLOCK, blk0, blk1);
    }
  }

  /** Q80 cast of this thread's part of the SwiGLU product, into the shared hq (or hb itself). */
  castHidden(ff: number, rows: number, f0: number, f1: number): Uint8Array | undefined {
    if (!this.q80) return undefined;
    if (!this.weightQuantized) {
      this.castOut(this.hb, ff, rows, f0, f1);
      return undefined;
    }
    if (f0 < f1) {
      for (let b = 0; b < rows; b++) this.K.quantizeQ80(this.hq, this.hb, Q_BLOCK, (b * ff + f0) / Q_BLOCK, (b * ff + f1) / Q_BLOCK);
    }
    return this.hq;
  }

  /** x += o on this thread's columns; in q80 mode o is Q80-cast and merged as dllama does. */
  residual(dim: number, rows: number, d0: number, d1: number): void {
    if (this.q80) {
      for (let b = 0; b < rows; b++) this.K.residualQ80(this.x, this.o, b * dim + d0, b * dim + d1);
      return;
    }
    for (let b = 0; b < rows; b++) this.K.addScaled(this.x, this.o, 1, b * dim + d0, b * dim + d1);
  }

  /** Copy the kTmp/vTmp rows of one sequence into its cache (this thread's columns). */
  storeKv(s: SequenceRows, li: number, c0: number, c1: number): void {
    const kvDim = this.h.kvDim;
    const kc = this.kCache[s.slot]![li]!;
    const vc = this.vCache[s.slot]![li]!;
    for (let i = 0; i < s.rows; i++) {
      const src = (s.row0 + i) * kvDim;
      const dst = (s.pos0 + i) * kvDim;
      kc.set(this.kTmp.subarray(src + c0, src + c1), dst + c0);
      vc.set(this.vTmp.subarray(src + c0, src + c1), dst + c0);
    }
  }

  /** Gather the rows routed to expert e (and their weights) into ye / yeq; returns how many. */
  gatherExpertRows(e: number, rows: number, k: number, yq: Uint8Array | undefined): number {
    const dim = this.h.dim;
    const qb = q80Bytes(dim);
    let n = 0;
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < k; j++) {
        if (this.routeExperts[r * k + j] !== e) continue;
        this.expertRows[n] = r;
        this.expertScales[n] = this.routeWeights[r * k + j]!;
        this.expertRanks[n] = j;
        this.ye.set(this.xb.subarray(r * dim, (r + 1) * dim), n * dim);
        if (yq) this.yeq.set(yq.subarray(r * qb, (r + 1) * qb), n * qb);
        n++;
      }
    }
    return n;
  }

  // --- weights -------------------------------------------------------------------------

  #layer(l: number): LayerWeights {
    const loc = this.#source.acquire(l);
    const cached = this.#layerCache.get(l);
    if (cached && cached.loc.buffer === loc.buffer && cached.loc.byteOffset === loc.byteOffset) return cached.w;
    const info = this.layout.layers[l]!;
    const get = (name: string): TensorInfo => this.layout.tensor(`layers.${l}.${name}`);
    const bytes = (t: TensorInfo): Uint8Array => new Uint8Array(loc.buffer, loc.byteOffset + t.offset - info.offset, t.byteLength);
    const vec = (t: TensorInfo): Float32Array => floats(loc.buffer, loc.byteOffset + t.offset - info.offset, t.byteLength);
    const moe = this.h.nExperts > 0;
    const qwen = this.h.archType !== ArchType.LLAMA;
    const w: LayerWeights = {
      q: bytes(get('q')),
      k: bytes(get('k')),
      v: bytes(get('v')),
      wo: bytes(get('wo')),
      w1: moe ? EMPTY_U8 : bytes(get('w1')),
      w2: moe ? EMPTY_U8 : bytes(get('w2')),
      w3: moe ? EMPTY_U8 : bytes(get('w3')),
      router: moe ? bytes(get('moe_gate')) : EMPTY_U8,
      experts: moe
        ? Array.from({ length: this.h.nExperts }, (_, e) => ({
            w1: bytes(get(`experts.${e}.w1`)),
            w2: bytes(get(`experts.${e}.w2`)),
            w3: bytes(get(`experts.${e}.w3`)),
          }))
        : [],
      qNorm: qwen ? vec(get('q_norm')) : EMPTY_F32,
      kNorm: qwen ? vec(get('k_norm')) : EMPTY_F32,
      attNorm: vec(get('att_norm')),
      ffnNorm: vec(get('ffn_norm')),
    };
    // Views stay valid while the source keeps the segment at the same place; copies of
    // unaligned vectors would go stale in a reused slot, so those layers are not cached.
    if (isAligned(loc, this.layout.layers[l]!.tensors, info.offset)) this.#layerCache.set(l, { loc, w });
    return w;
  }

  #head(): HeadWeights {
    const loc = this.#source.acquire(this.h.nLayers);
    const c = this.#headCache;
    if (c && c.loc.buffer === loc.buffer && c.loc.byteOffset === loc.byteOffset) return c.w;
    const base = this.layout.finalNorm.offset;
    const fn = this.layout.finalNorm;
    const wc = this.layout.wcls;
    const w: HeadWeights = {
      finalNorm: floats(loc.buffer, loc.byteOffset + fn.offset - base, fn.byteLength),
      wcls: new Uint8Array(loc.buffer, loc.byteOffset + wc.offset - base, wc.byteLength),
    };
    if ((loc.byteOffset + fn.offset - base) % 4 === 0) this.#headCache = { loc, w };
    return w;
  }
}

/** A float view when aligned, else a private copy (norm vectors can sit at any byte offset). */
function floats(buffer: SharedArrayBuffer | ArrayBuffer, byteOffset: number, byteLength: number): Float32Array {
  if (byteOffset % 4 === 0) return new Float32Array(buffer, byteOffset, byteLength / 4);
  const copy = new Float32Array(byteLength / 4);
  new Uint8Array(copy.buffer).set(new Uint8Array(buffer, byteOffset, byteLength));
  return copy;
}

function isAligned(loc: SegmentLocation, tensors: readonly TensorInfo[], segStart: number): boolean {
  return tensors.every((t) => t.dtype !== FloatType.F32 || (loc.byteOffset + t.offset - segStart) % 4 === 0);
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}
function lcm(a: number, b: number): number {
  return (a / gcd(a, b)) * b;
}
