import { DTYPES, FloatType, Q40_BLOCK_BYTES, Q_BLOCK } from '@airllm/format';

/** Deterministic xorshift32 generator in [0, 1). */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 4294967296;
  };
}

/** n floats uniform in [-scale, scale). */
export function randomFloats(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (r() * 2 - 1) * scale;
  return out;
}

/** Byte size of a [rows][nIn] matrix of the dtype. */
export function matrixBytes(type: FloatType, rows: number, nIn: number): number {
  const info = DTYPES[type];
  return ((rows * nIn) / info.blockSize) * info.bytesPerBlock;
}

/**
 * A [rows][nIn] weight matrix of the dtype, from float weights whose magnitude varies per
 * 32-value block (factor 2^-3 .. 2^3), so quantized blocks get varied scales of both signs, as
 * real weights have (DESIGN.md: constant scales flatter some kernels).
 */
export function randomWeights(type: FloatType, rows: number, nIn: number, seed: number): Uint8Array {
  const r = rng(seed);
  const f = new Float32Array(rows * nIn);
  for (let i = 0; i < f.length; i += Q_BLOCK) {
    const mag = 2 ** (r() * 6 - 3) * 0.05;
    for (let j = i; j < Math.min(f.length, i + Q_BLOCK); j++) f[j] = (r() * 2 - 1) * mag;
  }
  return encodeWeights(type, f);
}

/** Encode float weights in a dtype with the format package's reference encoders. */
export function encodeWeights(type: FloatType, f: Float32Array): Uint8Array {
  const out = new Uint8Array(matrixBytes(type, 1, f.length));
  DTYPES[type].quantize(f, out);
  return out;
}

/**
 * Benchmark-style Q40 bytes filled directly: random nibbles and random f16 scales of both signs
 * with exponents spread over 2^-7 .. 2^-2 (fast to generate for hundreds of megabytes).
 */
export function fillRandomQ40(dst: Uint8Array, seed: number): void {
  const r = rng(seed);
  const words = new Uint32Array(dst.buffer, dst.byteOffset, dst.byteLength >>> 2);
  for (let i = 0; i < words.length; i++) words[i] = (r() * 4294967296) >>> 0;
  for (let b = 0; b + Q40_BLOCK_BYTES <= dst.length; b += Q40_BLOCK_BYTES) {
    const h = (r() < 0.5 ? 0x8000 : 0) | ((8 + Math.floor(r() * 6)) << 10) | Math.floor(r() * 1024);
    dst[b] = h & 0xff;
    dst[b + 1] = h >>> 8;
  }
}

/** Copy bytes into a fresh view at `byteOffset` of a new buffer (Shared if asked). */
export function placeAt(bytes: Uint8Array, byteOffset: number, shared = false): Uint8Array {
  const buf = shared ? new SharedArrayBuffer(bytes.length + byteOffset + 8) : new ArrayBuffer(bytes.length + byteOffset + 8);
  const view = new Uint8Array(buf, byteOffset, bytes.length);
  view.set(bytes);
  return view;
}
