/**
 * The forward pass, one function per architecture, run by every compute thread on its own
 * slice of each matmul (block-aligned output rows) or of the heads; the threads meet at a
 * barrier between dependent steps. Row-wise normalisations are cheap, so every thread computes
 * them for all rows into its own buffers instead of waiting for one another.
 */
import { ArchType, FloatType, Q_BLOCK } from '@airllm/format';
import { splitRange } from '@airllm/kernels';
import type { SequenceRows, StepTask } from './shared.js';
import { q80Bytes, q8kBytes, type ThreadState } from './state.js';
import type { HeadWeights, LayerWeights, Matrix } from './weights.js';

/** One layer of an architecture, on this thread's share of the work. */
export type LayerForward = (s: ThreadState, w: LayerWeights, step: StepTask, layer: number) => void;

/** Llama: attention (LLAMA rope, optionally Llama-3.1 scaled; qwen2: FALCON rope and q/k/v biases) + SwiGLU FFN. */
export function forwardLlama(s: ThreadState, w: LayerWeights, step: StepTask, layer: number): void {
  attention(s, w, step, layer, false);
  denseFfn(s, w, step);
}

/** Qwen3: per-head RMSNorm of q and k before FALCON rope + SwiGLU FFN. */
export function forwardQwen3(s: ThreadState, w: LayerWeights, step: StepTask, layer: number): void {
  attention(s, w, step, layer, true);
  denseFfn(s, w, step);
}

/** Qwen3-MoE: Qwen3 attention + routed experts (softmax, top-k, renormalised). */
export function forwardQwen3Moe(s: ThreadState, w: LayerWeights, step: StepTask, layer: number): void {
  attention(s, w, step, layer, true);
  moeFfn(s, w, step);
}

export const FORWARD: Readonly<Record<ArchType, LayerForward>> = {
  [ArchType.LLAMA]: forwardLlama,
  [ArchType.QWEN3]: forwardQwen3,
  [ArchType.QWEN3_MOE]: forwardQwen3Moe,
};

// --- blocks --------------------------------------------------------------------------

function attention(s: ThreadState, w: LayerWeights, step: StepTask, layer: number, qkNorm: boolean): void {
  const { K, m } = s;
  const { dim, qDim, kvDim, headDim: hd, nHeads, nKvHeads } = m;
  const rows = step.rows;
  const li = layer - s.firstLayer;

  // attention rmsnorm (all rows, into this thread's xb)
  K.rmsnorm(s.xb, s.x, w.attNorm, dim, s.eps, 0, rows);
  const xbq = castIn(s, s.xb, s.xbq, dim, rows, w.q) ?? q8kIn(s, s.xb, dim, rows, w.q, w.k, w.v);

  // q, k, v for this thread's heads; k and v go straight into the cache when one sequence
  const [q0, q1] = splitRange(qDim, s.T, s.t, s.headAlign);
  const [k0, k1] = splitRange(kvDim, s.T, s.t, s.headAlign);
  const single = step.seqs.length === 1 ? step.seqs[0]! : undefined;
  const kOut = single ? s.kCache[single.slot]![li]!.subarray(single.pos0 * kvDim) : s.kTmp;
  const vOut = single ? s.vCache[single.slot]![li]!.subarray(single.pos0 * kvDim) : s.vTmp;
  matmul(s, w.q, s.xb, xbq, s.q, rows, q0, q1);
  matmul(s, w.k, s.xb, xbq, kOut, rows, k0, k1);
  matmul(s, w.v, s.xb, xbq, vOut, rows, k0, k1);

  // qwen2: q/k/v biases on this thread's rows
  if (w.bq !== undefined) {
    for (let b = 0; b < rows; b++) {
      K.addScaled(s.q.subarray(b * qDim), w.bq, 1, q0, q1);
      K.addScaled(kOut.subarray(b * kvDim), w.bk!, 1, k0, k1);
      K.addScaled(vOut.subarray(b * kvDim), w.bv!, 1, k0, k1);
    }
  }

  // qwen3: per-head rmsnorm of q and k, before rope
  if (qkNorm) {
    for (let b = 0; b < rows; b++) {
      K.rmsnorm(s.q, s.q, w.qNorm!, hd, s.eps, b * nHeads + q0 / hd, b * nHeads + q1 / hd);
      K.rmsnorm(kOut, kOut, w.kNorm!, hd, s.eps, b * nKvHeads + k0 / hd, b * nKvHeads + k1 / hd);
    }
  }

  // rope at each sequence's positions
  for (const seq of step.seqs) {
    K.rope(s.q.subarray(seq.row0 * qDim), nHeads, hd, seq.pos0, seq.rows, s.freqs, s.halfSplit, q0 / hd, q1 / hd);
    K.rope(kOut.subarray(seq.row0 * kvDim), nKvHeads, hd, seq.pos0, seq.rows, s.freqs, s.halfSplit, k0 / hd, k1 / hd);
    if (!single) storeKv(s, seq, li, k0, k1);
  }
  s.barrier.wait();

  // multi-head attention over each sequence's cache, this thread's query heads
  const [h0, h1] = splitRange(nHeads, s.T, s.t);
  for (const seq of step.seqs) {
    K.attention(
      s.z.subarray(seq.row0 * qDim),
      s.q.subarray(seq.row0 * qDim),
      s.kCache[seq.slot]![li]!,
      s.vCache[seq.slot]![li]!,
      s.att,
      nHeads,
      nKvHeads,
      hd,
      seq.pos0,
      seq.rows,
      h0,
      h1,
    );
  }
  s.barrier.wait();

  // output projection, then residual: this thread's rows of x
  // (with float weights the cast rewrites the floats, so it works on a private copy)
  const zIn = s.q80 && !takesQ80(w.wo.dtype) ? s.zf : s.z;
  if (zIn !== s.z) zIn.set(s.z.subarray(0, rows * qDim));
  const zq = castIn(s, zIn, s.zq, qDim, rows, w.wo) ?? q8kIn(s, zIn, qDim, rows, w.wo);
  const [d0, d1] = splitRange(dim, s.T, s.t, Q_BLOCK);
  matmul(s, w.wo, zIn, zq, s.o, rows, d0, d1);
  residual(s, dim, rows, d0, d1);
  s.barrier.wait();
}

function denseFfn(s: ThreadState, w: LayerWeights, step: StepTask): void {
  const { K, m } = s;
  const { dim, ffDim: ff } = m;
  const rows = step.rows;
  const w1 = w.w1!;
  const w2 = w.w2!;

  // ffn rmsnorm
  K.rmsnorm(s.xb, s.x, w.ffnNorm, dim, s.eps, 0, rows);
  const yq = castIn(s, s.xb, s.xbq, dim, rows, w1) ?? q8kIn(s, s.xb, dim, rows, w1, w.w3!);

  // w1 (gate), w3 (up) and SwiGLU on this thread's hidden rows
  const [f0, f1] = splitRange(ff, s.T, s.t, Q_BLOCK);
  matmul(s, w1, s.xb, yq, s.hb, rows, f0, f1);
  matmul(s, w.w3!, s.xb, yq, s.hb2, rows, f0, f1);
  for (let b = 0; b < rows; b++) K.swiglu(s.hb, s.hb, s.hb2, b * ff + f0, b * ff + f1);
  const hcast = castHidden(s, ff, rows, f0, f1, w2);
  s.barrier.wait();

  // w2 (down), then residual (K-quant w2: each thread quantizes all of hb to Q8_K itself)
  const hq = hcast ?? q8kIn(s, s.hb, ff, rows, w2);
  const [d0, d1] = splitRange(dim, s.T, s.t, Q_BLOCK);
  matmul(s, w2, s.hb, hq, s.o, rows, d0, d1);
  residual(s, dim, rows, d0, d1);
  s.barrier.wait();
}

function moeFfn(s: ThreadState, w: LayerWeights, step: StepTask): void {
  const { K, m } = s;
  const { dim, ffDim: ff, nExperts: E, nActiveExperts: k } = m;
  const rows = step.rows;
  const router = w.router!;

  // ffn rmsnorm
  K.rmsnorm(s.xb, s.x, w.ffnNorm, dim, s.eps, 0, rows);

  // router on the unquantized input; every thread routes every row (deterministic, so all
  // threads agree without a barrier)
  K.matmul(router.dtype, s.routerLogits, s.xb, router.bytes, dim, E, rows, 0, E);
  K.moeRoute(s.routeExperts, s.routeWeights, s.routerLogits, E, k, 0, rows);
  const yq = castIn(s, s.xb, s.xbq, dim, rows, w.experts[0]!.w1);

  // f = Σ weight · w2(swiglu(w1 y, w3 y)) over each row's experts, accumulated in o
  const [f0, f1] = splitRange(ff, s.T, s.t, Q_BLOCK);
  const [d0, d1] = splitRange(dim, s.T, s.t, Q_BLOCK);
  for (let b = 0; b < rows; b++) s.o.fill(0, b * dim + d0, b * dim + d1);
  for (let e = 0; e < E; e++) {
    const n = gatherExpertRows(s, e, rows, k, yq);
    if (n === 0) continue;
    const ex = w.experts[e]!;
    const yeq = yq ? s.yeq : q8kIn(s, s.ye, dim, n, ex.w1, ex.w3);
    matmul(s, ex.w1, s.ye, yeq, s.hb, n, f0, f1);
    matmul(s, ex.w3, s.ye, yeq, s.hb2, n, f0, f1);
    for (let j = 0; j < n; j++) K.swiglu(s.hb, s.hb, s.hb2, j * ff + f0, j * ff + f1);
    const hcast = castHidden(s, ff, n, f0, f1, ex.w2);
    s.barrier.wait();
    const hq = hcast ?? q8kIn(s, s.hb, ff, n, ex.w2);
    matmul(s, ex.w2, s.hb, hq, s.eo, n, d0, d1);
    for (let j = 0; j < n; j++) {
      const r = s.expertRows[j]!;
      // dllama adds the weighted expert outputs in top-k order: keep them until all are known
      const acc = s.q80 ? s.eoRank.subarray((r * k + s.expertRanks[j]!) * dim) : s.o.subarray(r * dim);
      if (s.q80) acc.fill(0, d0, d1);
      K.addScaled(acc, s.eo.subarray(j * dim), s.expertScales[j]!, d0, d1);
    }
    // hb is rewritten by the next expert: wait until everyone has read it
    s.barrier.wait();
  }
  if (s.q80) {
    for (let r = 0; r < rows; r++)
      for (let j = 0; j < k; j++) K.addScaled(s.o.subarray(r * dim), s.eoRank.subarray((r * k + j) * dim), 1, d0, d1);
  }
  residual(s, dim, rows, d0, d1);
  s.barrier.wait();
}

/** Final norm and classifier for the rows the step asks logits for. */
export function forwardHead(s: ThreadState, w: HeadWeights, step: StepTask): void {
  const { K, m } = s;
  const { dim, vocabSize: V } = m;
  const n = step.logitRows.length;
  step.logitRows.forEach((r, i) => s.xb.set(s.x.subarray(r * dim, (r + 1) * dim), i * dim));

  // final rmsnorm
  K.rmsnorm(s.xb, s.xb, w.finalNorm, dim, s.eps, 0, n);
  const xq = castIn(s, s.xb, s.xbq, dim, n, w.wcls) ?? q8kIn(s, s.xb, dim, n, w.wcls);

  // classifier into logits, this thread's vocabulary rows
  const [v0, v1] = splitRange(V, s.T, s.t, Q_BLOCK);
  matmul(s, w.wcls, s.xb, xq, s.logits, n, v0, v1);
  s.barrier.wait();
}

// --- helpers -------------------------------------------------------------------------

/**
 * Whether a matmul with weights of this dtype takes Q80 activations (q80 mode): Q40 and Q80
 * do (ggml pairs them with Q8_0), float weights take the floats, and so do K-quants (their
 * floats then carry the Q80 cast; dllama has no K-quants to follow).
 */
export function takesQ80(dtype: FloatType): boolean {
  return dtype === FloatType.Q40 || dtype === FloatType.Q80;
}

/** Whether a matmul with weights of this dtype takes Q8_K activations (f32 mode): the K-quants. */
export function takesQ8K(dtype: FloatType): boolean {
  return dtype === FloatType.Q4_K || dtype === FloatType.Q5_K || dtype === FloatType.Q6_K;
}

/**
 * out = W·x for this thread's output rows [r0, r1). `xq` is the input as Q80 (q80 mode) or as
 * Q8_K (f32 mode, from q8kIn); each matrix takes the form its dtype multiplies with.
 */
function matmul(s: ThreadState, w: Matrix, xf: Float32Array, xq: Uint8Array | undefined, out: Float32Array, rows: number, r0: number, r1: number): void {
  if (r0 >= r1 || rows === 0) return;
  if (xq !== undefined && s.q80 && takesQ80(w.dtype)) s.K.matmulQ80(w.dtype, out, xq, w.bytes, w.cols, w.rows, rows, r0, r1);
  else if (xq !== undefined && !s.q80 && takesQ8K(w.dtype)) s.K.matmulQ8K(w.dtype, out, xq, w.bytes, w.cols, w.rows, rows, r0, r1);
  else s.K.matmul(w.dtype, out, xf, w.bytes, w.cols, w.rows, rows, r0, r1);
}

/**
 * f32 mode: the input of K-quant matrices as Q8_K, as llama.cpp multiplies K-quants (integer
 * dots, see DESIGN.md for why), into this thread's `xk`; undefined when none of `ws` is a
 * K-quant. Every thread quantizes all rows itself (a few µs per row), so no barrier is added.
 */
function q8kIn(s: ThreadState, xf: Float32Array, n: number, rows: number, ...ws: Matrix[]): Uint8Array | undefined {
  if (s.q80 || !ws.some((w) => takesQ8K(w.dtype))) return undefined;
  s.K.quantizeQ8K(s.xk, xf, n, 0, rows);
  return s.xk.subarray(0, rows * q8kBytes(n));
}

/**
 * dllama's Q80 cast of a private input buffer, for the matmuls that read it (`w`: the first of
 * them; the others have its dtype in every model so far): quantize; with quantized weights the
 * matmul takes the Q80 bytes, otherwise the floats are replaced by their dequantized values.
 */
function castIn(s: ThreadState, xf: Float32Array, xq: Uint8Array, n: number, rows: number, w: Matrix): Uint8Array | undefined {
  if (!s.q80) return undefined;
  s.K.quantizeQ80(xq, xf, n, 0, rows);
  if (takesQ80(w.dtype)) return xq;
  s.K.dequantizeQ80(xf, xq, n, 0, rows);
  return undefined;
}

/** Q80 cast in place of this thread's block-aligned columns [c0, c1) of each row. */
function castOut(s: ThreadState, buf: Float32Array, n: number, rows: number, c0: number, c1: number): void {
  if (!s.q80 || c0 >= c1) return;
  for (let b = 0; b < rows; b++) {
    const blk0 = (b * n + c0) / Q_BLOCK;
    const blk1 = (b * n + c1) / Q_BLOCK;
    s.K.quantizeQ80(s.castScratch, buf, Q_BLOCK, blk0, blk1);
    s.K.dequantizeQ80(buf, s.castScratch, Q_BLOCK, blk0, blk1);
  }
}

/** Q80 cast of this thread's part of the SwiGLU product for `w2`, into the shared hq (or hb itself). */
function castHidden(s: ThreadState, ff: number, rows: number, f0: number, f1: number, w2: Matrix): Uint8Array | undefined {
  if (!s.q80) return undefined;
  if (!takesQ80(w2.dtype)) {
    castOut(s, s.hb, ff, rows, f0, f1);
    return undefined;
  }
  if (f0 < f1) {
    for (let b = 0; b < rows; b++) s.K.quantizeQ80(s.hq, s.hb, Q_BLOCK, (b * ff + f0) / Q_BLOCK, (b * ff + f1) / Q_BLOCK);
  }
  return s.hq;
}

/** x += o on this thread's columns; in q80 mode o is Q80-cast and merged as dllama does. */
function residual(s: ThreadState, dim: number, rows: number, d0: number, d1: number): void {
  if (s.q80) {
    for (let b = 0; b < rows; b++) s.K.residualQ80(s.x, s.o, b * dim + d0, b * dim + d1);
    return;
  }
  for (let b = 0; b < rows; b++) s.K.addScaled(s.x, s.o, 1, b * dim + d0, b * dim + d1);
}

/** Copy the kTmp/vTmp rows of one sequence into its cache (this thread's columns). */
function storeKv(s: ThreadState, seq: SequenceRows, li: number, c0: number, c1: number): void {
  const kvDim = s.m.kvDim;
  const kc = s.kCache[seq.slot]![li]!;
  const vc = s.vCache[seq.slot]![li]!;
  for (let i = 0; i < seq.rows; i++) {
    const src = (seq.row0 + i) * kvDim;
    const dst = (seq.pos0 + i) * kvDim;
    kc.set(s.kTmp.subarray(src + c0, src + c1), dst + c0);
    vc.set(s.vTmp.subarray(src + c0, src + c1), dst + c0);
  }
}

/** Gather the rows routed to expert e (and their weights) into ye / yeq; returns how many. */
function gatherExpertRows(s: ThreadState, e: number, rows: number, k: number, yq: Uint8Array | undefined): number {
  const dim = s.m.dim;
  const qb = q80Bytes(dim);
  let n = 0;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < k; j++) {
      if (s.routeExperts[r * k + j] !== e) continue;
      s.expertRows[n] = r;
      s.expertScales[n] = s.routeWeights[r * k + j]!;
      s.expertRanks[n] = j;
      s.ye.set(s.xb.subarray(r * dim, (r + 1) * dim), n * dim);
      if (yq) s.yeq.set(yq.subarray(r * qb, (r + 1) * qb), n * qb);
      n++;
    }
  }
  return n;
}

