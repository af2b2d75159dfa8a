import { roundHalfEven } from '../dtypes.js';

/** The weights of a llama2.c model as float32 arrays, in llama2.c's own naming. */
export interface Llama2cWeights {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  tokEmbeddings: Float32Array;
  /** Per layer. */
  attentionNorm: Float32Array[];
  wq: Float32Array[];
  wk: Float32Array[];
  wv: Float32Array[];
  wo: Float32Array[];
  ffnNorm: Float32Array[];
  w1: Float32Array[];
  w2: Float32Array[];
  w3: Float32Array[];
  norm: Float32Array;
  /** Undefined when the classifier is the embedding. */
  output: Float32Array | undefined;
}

/**
 * Read a legacy (version 0) llama2.c checkpoint into arrays: a test-side reader written from
 * export.py's legacy_export, independent of the importer.
 */
export function readLegacyLlama2c(bytes: Uint8Array): Llama2cWeights {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const h = [0, 1, 2, 3, 4, 5, 6].map((i) => v.getInt32(4 * i, true));
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabRaw, seqLen] = h as [number, number, number, number, number, number, number];
  const vocabSize = Math.abs(vocabRaw);
  const kvDim = (dim / nHeads) * nKvHeads;
  let o = 28;
  const take = (n: number): Float32Array => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = v.getFloat32(o + 4 * i, true);
    o += 4 * n;
    return out;
  };
  const perLayer = (n: number): Float32Array[] => Array.from({ length: nLayers }, () => take(n));
  const tokEmbeddings = take(vocabSize * dim);
  const attentionNorm = perLayer(dim);
  const wq = perLayer(dim * dim);
  const wk = perLayer(kvDim * dim);
  const wv = perLayer(kvDim * dim);
  const wo = perLayer(dim * dim);
  const ffnNorm = perLayer(dim);
  const w1 = perLayer(hiddenDim * dim);
  const w2 = perLayer(dim * hiddenDim);
  const w3 = perLayer(hiddenDim * dim);
  const norm = take(dim);
  o += 2 * 4 * seqLen * (dim / nHeads / 2);
  const output = vocabRaw < 0 ? take(vocabSize * dim) : undefined;
  return { dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen, tokEmbeddings, attentionNorm, wq, wk, wv, wo, ffnNorm, w1, w2, w3, norm, output };
}

function f32Bytes(arrays: readonly Float32Array[]): Uint8Array[] {
  return arrays.map((a) => {
    const out = new Uint8Array(a.length * 4);
    const dv = new DataView(out.buffer);
    a.forEach((x, i) => dv.setFloat32(4 * i, x, true));
    return out;
  });
}

/** export.py quantize_q80: per group scale = max|w|/127 (f32), q = round_half_even(w / scale). */
export function llama2cQuantizeQ80(w: Float32Array, groupSize: number): { q: Int8Array; s: Float32Array } {
  const q = new Int8Array(w.length);
  const s = new Float32Array(w.length / groupSize);
  for (let g = 0; g < s.length; g++) {
    let wmax = 0;
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) wmax = Math.max(wmax, Math.abs(w[i]!));
    const scale = Math.fround(wmax / 127);
    s[g] = scale;
    for (let i = g * groupSize; i < (g + 1) * groupSize; i++) q[i] = scale === 0 ? 0 : roundHalfEven(Math.fround(w[i]! / scale));
  }
  return { q, s };
}

/**
 * Write weights as llama2.c's "ak42" export (export.py version1_export / version2_export):
 * 256-byte header {u32 magic, i32 version, 7 × i32, u8 shared_classifier, [i32 group_size]},
 * then the norms, then the matrices (float32 for version 1; int8 + f32 group scales for 2).
 */
export function writeVersionedLlama2c(w: Llama2cWeights, version: 1 | 2, groupSize = 64): Uint8Array {
  const header = new Uint8Array(256);
  const hv = new DataView(header.buffer);
  hv.setUint32(0, 0x616b3432, true);
  hv.setInt32(4, version, true);
  [w.dim, w.hiddenDim, w.nLayers, w.nHeads, w.nKvHeads, w.vocabSize, w.seqLen].forEach((x, i) => hv.setInt32(8 + 4 * i, x, true));
  header[36] = w.output === undefined ? 1 : 0;
  let gs = groupSize;
  while (w.dim % gs !== 0) gs = Math.floor(gs / 2);
  if (version === 2) hv.setInt32(37, gs, true);
  const norms = [...w.attentionNorm, ...w.ffnNorm, w.norm];
  const mats = [w.tokEmbeddings, ...w.wq, ...w.wk, ...w.wv, ...w.wo, ...w.w1, ...w.w2, ...w.w3, ...(w.output ? [w.output] : [])];
  const parts: Uint8Array[] = [header, ...f32Bytes(norms)];
  if (version === 1) {
    parts.push(...f32Bytes(mats));
  } else {
    for (const m of mats) {
      const { q, s } = llama2cQuantizeQ80(m, gs);
      parts.push(new Uint8Array(q.buffer), ...f32Bytes([s]));
    }
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
