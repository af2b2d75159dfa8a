/**
 * An independent forward pass for tests, written straight from FORMAT.md §e in float64 with
 * plain loops: one token at a time, no threads, no batching, none of the engine's code or
 * kernels. dllama's Q80 casts are emulated by quantizing and dequantizing with the format
 * package's codecs (mathematically the same as its integer block dot products).
 */
import { readFileSync } from 'node:fs';
import { ArchType, dequantizeQ80, FloatType, quantizeQ80, Q80_BLOCK_BYTES, Q_BLOCK, readModelFile } from '@airllm/format';
import { dllamaNumerics, referenceBackend, ropeForHeader } from '@airllm/kernels';

export interface OracleConfig {
  arch: 'llama' | 'qwen3' | 'qwen3_moe';
  dim: number;
  ffDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  vocabSize: number;
  eps: number;
  ropeTheta: number;
  /** LLAMA (adjacent pairs) or FALCON (half split). */
  halfSplit: boolean;
  /** Llama-3.1 scaling, when the factor is not 1. */
  scaling?: { factor: number; low: number; high: number; origMaxSeqLen: number };
  nExperts?: number;
  nActiveExperts?: number;
  q80?: boolean;
}

/** Tensors by the layout's names: embedding, layers.L.q, layers.L.experts.E.w1, final_norm, wcls… */
export type WeightLookup = (name: string) => Float32Array;

function matvec(w: Float32Array, x: Float64Array, nIn: number, nOut: number): Float64Array<ArrayBufferLike> {
  const out = new Float64Array(nOut);
  for (let r = 0; r < nOut; r++) {
    let s = 0;
    for (let i = 0; i < nIn; i++) s += w[r * nIn + i]! * x[i]!;
    out[r] = s;
  }
  return out;
}

function rmsnorm(x: Float64Array, w: Float32Array, eps: number, off = 0, n = x.length): void {
  let ss = 0;
  for (let i = 0; i < n; i++) ss += x[off + i]! ** 2;
  const inv = 1 / Math.sqrt(ss / n + eps);
  for (let i = 0; i < n; i++) x[off + i] = w[i]! * (inv * x[off + i]!);
}

function softmax(x: Float64Array): void {
  const max = Math.max(...x);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] = Math.exp(x[i]! - max);
  for (let i = 0; i < x.length; i++) x[i] = x[i]! / s;
}

/** Quantize to Q80 and back (identity when q80 is off). */
function cast(x: Float64Array<ArrayBufferLike>, q80: boolean): Float64Array<ArrayBufferLike> {
  if (!q80) return x;
  const f = Float32Array.from(x);
  const q = new Uint8Array((f.length / Q_BLOCK) * Q80_BLOCK_BYTES);
  quantizeQ80(f, q);
  dequantizeQ80(q, f);
  return Float64Array.from(f);
}

function frequencies(c: OracleConfig): number[] {
  const out: number[] = [];
  for (let j = 0; j < c.headDim / 2; j++) {
    let f = Math.pow(c.ropeTheta, (-2 * j) / c.headDim);
    const s = c.scaling;
    if (!c.halfSplit && s && s.factor !== 1) {
      // Meta's reference apply_scaling (llama3 reference_impl/model.py).
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < s.origMaxSeqLen / s.high) {
        /* unchanged */
      } else if (wavelen > s.origMaxSeqLen / s.low) f = f / s.factor;
      else {
        const smooth = (s.origMaxSeqLen / wavelen - s.low) / (s.high - s.low);
        f = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
    // dllama keeps the table in float32; so does the oracle, since under Q80 casts a last-bit
    // difference in an angle can move an activation across a rounding boundary.
    out.push(Math.fround(f));
  }
  return out;
}

function rope(v: Float64Array, heads: number, c: OracleConfig, pos: number, freqs: number[]): void {
  const hd = c.headDim;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < hd / 2; j++) {
      const a = Math.fround(pos * freqs[j]!);
      const [i0, i1] = c.halfSplit ? [h * hd + j, h * hd + j + hd / 2] : [h * hd + 2 * j, h * hd + 2 * j + 1];
      const x0 = v[i0]!;
      const x1 = v[i1]!;
      v[i0] = x0 * Math.cos(a) - x1 * Math.sin(a);
      v[i1] = x0 * Math.sin(a) + x1 * Math.cos(a);
    }
  }
}

/** Logits for every position of `tokens` (run one by one with a KV cache). */
export function oracleLogits(c: OracleConfig, w: WeightLookup, tokens: readonly number[]): Float64Array[] {
  const { dim: D, ffDim: F, headDim: hd, nHeads, nKvHeads, vocabSize: V } = c;
  const qDim = nHeads * hd;
  const kvDim = nKvHeads * hd;
  const q80 = c.q80 ?? false;
  const freqs = frequencies(c);
  const kc: Float64Array[][] = Array.from({ length: c.nLayers }, () => []);
  const vc: Float64Array[][] = Array.from({ length: c.nLayers }, () => []);
  const emb = w('embedding');
  const out: Float64Array[] = [];
  tokens.forEach((tok, pos) => {
    const x = Float64Array.from(emb.subarray(tok * D, (tok + 1) * D));
    for (let l = 0; l < c.nLayers; l++) {
      const p = `layers.${l}.`;
      let y: Float64Array<ArrayBufferLike> = Float64Array.from(x);
      rmsnorm(y, w(p + 'att_norm'), c.eps);
      y = cast(y, q80);
      const q = matvec(w(p + 'q'), y, D, qDim);
      const k = matvec(w(p + 'k'), y, D, kvDim);
      const v = matvec(w(p + 'v'), y, D, kvDim);
      if (c.arch !== 'llama') {
        for (let h = 0; h < nHeads; h++) rmsnorm(q, w(p + 'q_norm'), c.eps, h * hd, hd);
        for (let h = 0; h < nKvHeads; h++) rmsnorm(k, w(p + 'k_norm'), c.eps, h * hd, hd);
      }
      rope(q, nHeads, c, pos, freqs);
      rope(k, nKvHeads, c, pos, freqs);
      kc[l]!.push(k);
      vc[l]!.push(v);
      let z: Float64Array<ArrayBufferLike> = new Float64Array(qDim);
      for (let h = 0; h < nHeads; h++) {
        const g = Math.floor(h / (nHeads / nKvHeads));
        const att = new Float64Array(pos + 1);
        for (let t = 0; t <= pos; t++) {
          let s = 0;
          for (let i = 0; i < hd; i++) s += q[h * hd + i]! * kc[l]![t]![g * hd + i]!;
          att[t] = s / Math.sqrt(hd);
        }
        softmax(att);
        for (let t = 0; t <= pos; t++) for (let i = 0; i < hd; i++) z[h * hd + i] += att[t]! * vc[l]![t]![g * hd + i]!;
      }
      z = cast(z, q80);
      const o = cast(matvec(w(p + 'wo'), z, qDim, D), q80);
      for (let i = 0; i < D; i++) x[i] += o[i]!;

      const yf = Float64Array.from(x);
      rmsnorm(yf, w(p + 'ffn_norm'), c.eps);
      const ffn = (pe: string, input: Float64Array): Float64Array => {
        const a = matvec(w(pe + 'w1'), input, D, F);
        const b = matvec(w(pe + 'w3'), input, D, F);
        let hh: Float64Array<ArrayBufferLike> = new Float64Array(F);
        for (let i = 0; i < F; i++) hh[i] = (a[i]! / (1 + Math.exp(-a[i]!))) * b[i]!;
        hh = cast(hh, q80);
        return matvec(w(pe + 'w2'), hh, F, D);
      };
      let f: Float64Array;
      if (c.arch === 'qwen3_moe') {
        const E = c.nExperts!;
        const g = matvec(w(p + 'moe_gate'), yf, D, E);
        softmax(g);
        const order = [...g.keys()].sort((a, b) => g[b]! - g[a]! || a - b).slice(0, c.nActiveExperts!);
        const total = order.reduce((s, e) => s + g[e]!, 0);
        const yq = cast(yf, q80);
        f = new Float64Array(D);
        for (const e of order) {
          const oe = ffn(`${p}experts.${e}.`, yq);
          for (let i = 0; i < D; i++) f[i] += (g[e]! / total) * oe[i]!;
        }
      } else {
        f = ffn(p, cast(yf, q80));
      }
      f = cast(f, q80);
      for (let i = 0; i < D; i++) x[i] += f[i]!;
    }
    let y: Float64Array<ArrayBufferLike> = Float64Array.from(x);
    rmsnorm(y, w('final_norm'), c.eps);
    y = cast(y, q80);
    out.push(matvec(w('wcls'), y, D, V));
  });
  return out;
}

/**
 * A second oracle for dllama's exact float32 numerics (Q80 casts included): the same forward
 * pass, one token at a time, written here directly on the reference kernels' ops with batch 1,
 * one thread and the file's raw tensor bytes — none of the engine's scheduling, batching,
 * row splitting or buffer management. With the reference backend the engine must agree
 * bit for bit, whatever its threads and batch sizes. With q80 it computes with dllama's
 * arithmetic (the kernels' dllamaNumerics, the residual merge by FMA, experts summed in top-k
 * order), as the engine does in q80 mode.
 */
export function referenceKernelLogits(path: string, tokens: readonly number[], q80: boolean): Float32Array[] {
  const { layout } = readModelFile(path);
  const h = layout.header;
  const file = readFileSync(path);
  const K = q80 ? dllamaNumerics(referenceBackend) : referenceBackend;
  const bytes = (name: string): Uint8Array => {
    const t = layout.tensor(name);
    return new Uint8Array(file.buffer, file.byteOffset + t.offset, t.byteLength);
  };
  const floats = (name: string): Float32Array => {
    const b = bytes(name);
    return new Float32Array(Uint8Array.from(b).buffer);
  };
  const { dim: D, qDim, kvDim, headDim: hd, nHeads, nKvHeads, ffDim: F, vocabSize: V, nExperts: E, nActiveExperts: k } = h;
  const quantized = h.weightType === FloatType.Q40 || h.weightType === FloatType.Q80;
  const { freqs, halfSplit } = ropeForHeader(h);
  const eps = h.normEpsilon;
  const seq = tokens.length;
  const kc = Array.from({ length: h.nLayers }, () => new Float32Array(seq * kvDim));
  const vc = Array.from({ length: h.nLayers }, () => new Float32Array(seq * kvDim));
  const qb = (n: number): Uint8Array => new Uint8Array((n / Q_BLOCK) * Q80_BLOCK_BYTES);
  /** W·x with dllama's input cast: Q80 bytes into quantized weights, a dequantized copy otherwise. */
  const mm = (w: Uint8Array, x: Float32Array, nIn: number, nOut: number): Float32Array => {
    const out = new Float32Array(nOut);
    if (q80) {
      const xq = qb(nIn);
      K.quantizeQ80(xq, x, nIn, 0, 1);
      if (quantized) {
        K.matmulQ80(h.weightType, out, xq, w, nIn, nOut, 1, 0, nOut);
        return out;
      }
      const xc = new Float32Array(nIn);
      K.dequantizeQ80(xc, xq, nIn, 0, 1);
      x = xc;
    }
    K.matmul(h.weightType, out, x, w, nIn, nOut, 1, 0, nOut);
    return out;
  };
  /** x += o, o Q80-cast and merged by FMA in q80 mode (dllama's merge-add). */
  const residual = (x: Float32Array, o: Float32Array): void => {
    if (q80) K.residualQ80(x, o, 0, x.length);
    else K.addScaled(x, o, 1, 0, x.length);
  };
  const out: Float32Array[] = [];
  const emb = floats('embedding');
  tokens.forEach((tok, pos) => {
    const x = emb.slice(tok * D, (tok + 1) * D);
    for (let l = 0; l < h.nLayers; l++) {
      const p = `layers.${l}.`;
      const y = new Float32Array(D);
      K.rmsnorm(y, x, floats(p + 'att_norm'), D, eps, 0, 1);
      const q = mm(bytes(p + 'q'), y, D, qDim);
      const kk = mm(bytes(p + 'k'), y, D, kvDim);
      const v = mm(bytes(p + 'v'), y, D, kvDim);
      if (h.archType !== ArchType.LLAMA) {
        K.rmsnorm(q, q, floats(p + 'q_norm'), hd, eps, 0, nHeads);
        K.rmsnorm(kk, kk, floats(p + 'k_norm'), hd, eps, 0, nKvHeads);
      }
      K.rope(q, nHeads, hd, pos, 1, freqs, halfSplit, 0, nHeads);
      K.rope(kk, nKvHeads, hd, pos, 1, freqs, halfSplit, 0, nKvHeads);
      kc[l]!.set(kk, pos * kvDim);
      vc[l]!.set(v, pos * kvDim);
      const z = new Float32Array(qDim);
      // The kernel attends positions 0..pos0 for one row: pass the cache with pos0 = pos.
      K.attention(z, q, kc[l]!, vc[l]!, new Float32Array(seq), nHeads, nKvHeads, hd, pos, 1, 0, nHeads);
      const o = mm(bytes(p + 'wo'), z, qDim, D);
      residual(x, o);

      const yf = new Float32Array(D);
      K.rmsnorm(yf, x, floats(p + 'ffn_norm'), D, eps, 0, 1);
      const expertOut = (pe: string, weight: number, acc: Float32Array): void => {
        const a = mm(bytes(pe + 'w1'), yf, D, F);
        const b = mm(bytes(pe + 'w3'), yf, D, F);
        K.swiglu(a, a, b, 0, F);
        const f = mm(bytes(pe + 'w2'), a, F, D);
        K.addScaled(acc, f, weight, 0, D);
      };
      const f = new Float32Array(D);
      if (E > 0) {
        const g = new Float32Array(E);
        K.matmul(FloatType.F32, g, yf, bytes(p + 'moe_gate'), D, E, 1, 0, E);
        const ids = new Int32Array(k);
        const ws = new Float32Array(k);
        K.moeRoute(ids, ws, g, E, k, 0, 1);
        // Experts are summed in increasing expert order, as the engine's gather does; dllama (q80)
        // sums them in top-k order.
        const order = q80 ? [...ids.keys()] : [...ids.keys()].sort((a, b) => ids[a]! - ids[b]!);
        for (const j of order) expertOut(`${p}experts.${ids[j]}.`, ws[j]!, f);
      } else {
        expertOut(p, 1, f);
      }
      residual(x, f);
    }
    const y = new Float32Array(D);
    K.rmsnorm(y, x, floats('final_norm'), D, eps, 0, 1);
    out.push(mm(bytes('wcls'), y, D, V));
  });
  return out;
}
