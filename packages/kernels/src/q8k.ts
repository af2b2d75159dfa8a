/**
 * Q8_K activations, the input of `matmulQ8K` (ggml's block_q8_K layout): per 256 values a
 * little-endian float32 scale d, 256 int8 q, and 16 little-endian int16 sums of q over each 16
 * consecutive values (the K-quant dots use them for the min and offset terms).
 *
 * Quantization follows our Q80 rule, not llama.cpp's (which maps the signed extreme to −127):
 * float32 d = max|x| / 127, id = 1/d (0 when d is 0), q = round half to even of fround(x·id);
 * non-finite products give 0. d stays float32 (Q80 rounds it to f16).
 */
export const Q8K_BLOCK = 256;
export const Q8K_BLOCK_BYTES = 292;

const fround = Math.fround;

/** Round half to even (Math.round rounds .5 up); non-finite stays non-finite (→ 0 below). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Quantize `src` (a multiple of 256 floats) into Q8_K blocks at `dst`. */
export function quantizeQ8KRow(src: Float32Array, dst: Uint8Array): void {
  const v = new DataView(dst.buffer, dst.byteOffset, dst.byteLength);
  for (let b = 0; b < src.length / Q8K_BLOCK; b++) {
    const x0 = b * Q8K_BLOCK;
    const o = b * Q8K_BLOCK_BYTES;
    let amax = 0;
    for (let i = 0; i < Q8K_BLOCK; i++) {
      const a = Math.abs(src[x0 + i]!);
      if (a > amax) amax = a;
    }
    const d = fround(amax / 127);
    const id = d !== 0 ? fround(1 / d) : 0;
    v.setFloat32(o, d, true);
    for (let g = 0; g < 16; g++) {
      let sum = 0;
      for (let i = 0; i < 16; i++) {
        const q = roundHalfEven(fround(src[x0 + 16 * g + i]! * id)) | 0; // NaN → 0
        dst[o + 4 + 16 * g + i] = q & 0xff;
        sum += q;
      }
      v.setInt16(o + 260 + 2 * g, sum, true);
    }
  }
}

/** Q8_K blocks back to floats: q · d (one rounding). */
export function dequantizeQ8KRow(src: Uint8Array, dst: Float32Array): void {
  const v = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let b = 0; b < dst.length / Q8K_BLOCK; b++) {
    const o = b * Q8K_BLOCK_BYTES;
    const d = v.getFloat32(o, true);
    for (let i = 0; i < Q8K_BLOCK; i++) dst[b * Q8K_BLOCK + i] = fround(((src[o + 4 + i]! << 24) >> 24) * d);
  }
}
