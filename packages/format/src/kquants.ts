import { f16Table32, f16ToF32, f32ToF16 } from './f16.js';

/**
 * BF16 and ggml's K-quants (Q4_K, Q5_K, Q6_K): the byte layouts of `ggml-common.h` and the
 * arithmetic of ggml's `dequantize_row_*`, in float32 step by step (every product and difference
 * rounded on its own, never fused), so a decoded weight is one exact float32 the native kernels
 * reproduce bit for bit.
 *
 * A K-quant super-block holds 256 values (QK_K) in sub-blocks with their own integer scales:
 * - Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins (8 each, packed as
 *   ggml's `get_scale_min_k4` reads them), 128 bytes of nibbles. For each 64 values, byte l
 *   holds value l (low nibble) and value 32 + l (high nibble).
 *   w = fround(fround(d·sc)·q) − fround(dmin·m), q ∈ 0..15.
 * - Q5_K (176 bytes): as Q4_K, then 32 bytes qh of fifth bits, then the 128 bytes of nibbles;
 *   bit 2c of qh[l] is the fifth bit of value 64c + l, bit 2c + 1 that of value 64c + 32 + l.
 *   q ∈ 0..31.
 * - Q6_K (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales,
 *   f16 d. Per 128 values (ql, qh advance by 64, 32): ql[l] low/high nibble → values l / 64 + l,
 *   ql[32 + l] → 32 + l / 96 + l, qh[l] bits 0-1, 2-3, 4-5, 6-7 → values l, 32 + l, 64 + l,
 *   96 + l. Scale i applies to values 16i..16i+15. w = fround(fround(d·sc)·(q − 32)).
 */
export const QK_K = 256;
export const Q4_K_BLOCK_BYTES = 144;
export const Q5_K_BLOCK_BYTES = 176;
export const Q6_K_BLOCK_BYTES = 210;

const fround = Math.fround;

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Float32 → bfloat16, round to nearest even; NaN stays a (quiet) NaN. */
export function quantizeBF16(src: Float32Array, dst: Uint8Array): void {
  for (let i = 0; i < src.length; i++) {
    f32Scratch[0] = src[i]!;
    const u = u32Scratch[0]!;
    const h = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x40 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    dst[2 * i] = h & 0xff;
    dst[2 * i + 1] = (h >>> 8) & 0xff;
  }
}

/** bfloat16 → float32: the 16 bits are the upper half of the float32 (exact). */
export function dequantizeBF16(src: Uint8Array, dst: Float32Array): void {
  for (let i = 0; i < dst.length; i++) {
    u32Scratch[0] = ((src[2 * i]! | (src[2 * i + 1]! << 8)) << 16) >>> 0;
    dst[i] = f32Scratch[0]!;
  }
}

/** 6-bit scale j (0..7) of the 12 packed bytes at `o` (ggml's get_scale_min_k4). */
export function kScale(b: Uint8Array, o: number, j: number): number {
  return j < 4 ? b[o + j]! & 63 : (b[o + j + 4]! & 0x0f) | ((b[o + j - 4]! >>> 6) << 4);
}

/** 6-bit min j (0..7) of the 12 packed bytes at `o`. */
export function kMin(b: Uint8Array, o: number, j: number): number {
  return j < 4 ? b[o + j + 4]! & 63 : (b[o + j + 4]! >>> 4) | ((b[o + j]! >>> 6) << 4);
}

/** Packs 8 scales and 8 mins (0..63) into 12 bytes at `o`, the inverse of kScale/kMin. */
function packScaleMin(b: Uint8Array, o: number, sc: ArrayLike<number>, m: ArrayLike<number>): void {
  for (let j = 0; j < 4; j++) {
    b[o + j] = (sc[j]! & 63) | ((sc[j + 4]! >>> 4) << 6);
    b[o + j + 4] = (m[j]! & 63) | ((m[j + 4]! >>> 4) << 6);
    b[o + j + 8] = (sc[j + 4]! & 0x0f) | ((m[j + 4]! & 0x0f) << 4);
  }
}

function rd16(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
function wr16(b: Uint8Array, o: number, h: number): void {
  b[o] = h & 0xff;
  b[o + 1] = h >>> 8;
}

/** Q4_K (`withHigh` false) or Q5_K (true) super-blocks → floats. */
function dequantizeKMin(src: Uint8Array, dst: Float32Array, withHigh: boolean): void {
  const t = f16Table32();
  const bytes = withHigh ? Q5_K_BLOCK_BYTES : Q4_K_BLOCK_BYTES;
  const qsAt = withHigh ? 48 : 16;
  for (let b = 0; b < dst.length / QK_K; b++) {
    const o = b * bytes;
    const d = t[rd16(src, o)]!;
    const dmin = t[rd16(src, o + 2)]!;
    for (let c = 0; c < 4; c++) {
      const d1 = fround(d * kScale(src, o + 4, 2 * c));
      const m1 = fround(dmin * kMin(src, o + 4, 2 * c));
      const d2 = fround(d * kScale(src, o + 4, 2 * c + 1));
      const m2 = fround(dmin * kMin(src, o + 4, 2 * c + 1));
      const y = b * QK_K + 64 * c;
      for (let l = 0; l < 32; l++) {
        const q = src[o + qsAt + 32 * c + l]!;
        const h = withHigh ? src[o + 16 + l]! >>> (2 * c) : 0;
        dst[y + l] = fround(fround(d1 * ((q & 0x0f) | ((h & 1) << 4))) - m1);
        dst[y + 32 + l] = fround(fround(d2 * ((q >>> 4) | ((h & 2) << 3))) - m2);
      }
    }
  }
}

export function dequantizeQ4K(src: Uint8Array, dst: Float32Array): void {
  dequantizeKMin(src, dst, false);
}
export function dequantizeQ5K(src: Uint8Array, dst: Float32Array): void {
  dequantizeKMin(src, dst, true);
}

export function dequantizeQ6K(src: Uint8Array, dst: Float32Array): void {
  const t = f16Table32();
  for (let b = 0; b < dst.length / QK_K; b++) {
    const o = b * Q6_K_BLOCK_BYTES;
    const d = t[rd16(src, o + 208)]!;
    for (let h = 0; h < 2; h++) {
      const ql = o + 64 * h;
      const qh = o + 128 + 32 * h;
      const y = b * QK_K + 128 * h;
      for (let l = 0; l < 32; l++) {
        const bits = src[qh + l]!;
        for (let k = 0; k < 4; k++) {
          // value 32k + l: low nibble of ql[l] (k 0) or ql[32 + l] (k 1), high nibbles for k 2, 3
          const byte = src[ql + 32 * (k & 1) + l]!;
          const q = (k < 2 ? byte & 0x0f : byte >>> 4) | (((bits >>> (2 * k)) & 3) << 4);
          const e = 32 * k + l;
          const sc = (src[o + 192 + 8 * h + (e >>> 4)]! << 24) >> 24;
          dst[y + e] = fround(fround(d * sc) * (q - 32));
        }
      }
    }
  }
}

/**
 * The f16 nearest to v at least as large in magnitude (largest finite f16 at most), with v's
 * sign: a scale rounded this way never makes a quantized range fall short of the data.
 */
function f16AtLeast(v: number): number {
  const a = Math.abs(v);
  let h = f32ToF16(a);
  if (f16ToF32(h) < a) h++;
  if (h >= 0x7c00) h = 0x7bff;
  return v < 0 ? h | 0x8000 : h;
}

/**
 * Q4_K / Q5_K super-blocks from floats. A plain covering quantizer, not llama.cpp's (which
 * searches scales to minimise a weighted error): per sub-block of 32 the offset is its minimum,
 * clamped to ≤ 0 as ggml does unless every sub-block minimum of the super-block is positive (then
 * dmin is negative and the offsets positive, so both signs of minimums occur); d and dmin are
 * rounded away from zero to f16 and the 6-bit scales and mins rounded so that the lattice
 * [offset, offset + nmax·step] covers every value of the sub-block. Every value then decodes
 * within half a step (plus float32 rounding) of the input.
 */
function quantizeKMin(src: Float32Array, dst: Uint8Array, withHigh: boolean): void {
  const nmax = withHigh ? 31 : 15;
  const bytes = withHigh ? Q5_K_BLOCK_BYTES : Q4_K_BLOCK_BYTES;
  const qsAt = withHigh ? 48 : 16;
  const mn = new Float64Array(8);
  const mx = new Float64Array(8);
  const sc = new Uint8Array(8);
  const m = new Uint8Array(8);
  const L = new Uint8Array(QK_K);
  for (let b = 0; b < src.length / QK_K; b++) {
    const x0 = b * QK_K;
    let allPositive = true;
    for (let j = 0; j < 8; j++) {
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = 0; i < 32; i++) {
        const v = src[x0 + 32 * j + i]!;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      mn[j] = lo;
      mx[j] = hi;
      if (!(lo > 0)) allPositive = false;
    }
    let maxOff = 0;
    for (let j = 0; j < 8; j++) maxOff = Math.max(maxOff, Math.abs(allPositive ? mn[j]! : Math.min(mn[j]!, 0)));
    const dminH = maxOff > 0 && Number.isFinite(maxOff) ? f16AtLeast(allPositive ? -maxOff / 63 : maxOff / 63) : 0;
    const dmin = f16ToF32(dminH);
    let maxRange = 0;
    const range = new Float64Array(8);
    const mm = new Float64Array(8);
    for (let j = 0; j < 8; j++) {
      const off = allPositive ? mn[j]! : Math.min(mn[j]!, 0);
      // offset −dmin·m at or below the sub-block minimum
      const r = dmin === 0 ? 0 : Math.abs(off) / Math.abs(dmin);
      m[j] = Math.min(63, Math.max(0, allPositive ? Math.floor(r) : Math.ceil(r))) || 0;
      mm[j] = fround(dmin * m[j]!);
      range[j] = mx[j]! + mm[j]!;
      if (range[j]! > maxRange) maxRange = range[j]!;
    }
    const dH = maxRange > 0 && Number.isFinite(maxRange) ? f16AtLeast(maxRange / (nmax * 63)) : 0;
    const d = f16ToF32(dH);
    for (let j = 0; j < 8; j++) {
      sc[j] = d === 0 ? 0 : Math.min(63, Math.max(0, Math.ceil(range[j]! / (nmax * d)))) || 0;
      const step = fround(d * sc[j]!);
      for (let i = 0; i < 32; i++) {
        const q = step === 0 ? 0 : Math.round((src[x0 + 32 * j + i]! + mm[j]!) / step);
        L[32 * j + i] = Math.min(nmax, Math.max(0, q)) || 0;
      }
    }
    const o = b * bytes;
    dst.fill(0, o, o + bytes);
    wr16(dst, o, dH);
    wr16(dst, o + 2, dminH);
    packScaleMin(dst, o + 4, sc, m);
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) {
        const q1 = L[64 * c + l]!;
        const q2 = L[64 * c + 32 + l]!;
        dst[o + qsAt + 32 * c + l] = (q1 & 0x0f) | ((q2 & 0x0f) << 4);
        if (withHigh) dst[o + 16 + l]! |= ((q1 >>> 4) << (2 * c)) | ((q2 >>> 4) << (2 * c + 1));
      }
    }
  }
}

export function quantizeQ4K(src: Float32Array, dst: Uint8Array): void {
  quantizeKMin(src, dst, false);
}
export function quantizeQ5K(src: Float32Array, dst: Uint8Array): void {
  quantizeKMin(src, dst, true);
}

/**
 * Q6_K super-blocks from floats (a plain quantizer, not llama.cpp's): per sub-block of 16 the
 * value of largest magnitude maps to q = −32 (positive on exact ties, as Q40), giving a signed
 * sub-block scale; d maps the largest-magnitude scale to −128 (rounded away from zero to f16) and
 * each int8 scale is rounded away from zero, so no sub-block step falls short of its data except
 * through the int8 range's 127 on the positive side. Values decode within half a step unless
 * clamped at q = 31 (then within 1.26 steps).
 */
export function quantizeQ6K(src: Float32Array, dst: Uint8Array): void {
  const s = new Float64Array(16);
  const L = new Uint8Array(QK_K);
  for (let b = 0; b < src.length / QK_K; b++) {
    const x0 = b * QK_K;
    let sMax = 0;
    for (let j = 0; j < 16; j++) {
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = 0; i < 16; i++) {
        const v = src[x0 + 16 * j + i]!;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const e = -lo > hi ? lo : hi;
      s[j] = Number.isFinite(e) ? e / -32 : 0;
      if (Math.abs(s[j]!) > Math.abs(sMax)) sMax = s[j]!;
    }
    const dH = sMax !== 0 ? f16AtLeast(sMax / -128) : 0;
    const d = f16ToF32(dH);
    const o = b * Q6_K_BLOCK_BYTES;
    dst.fill(0, o, o + Q6_K_BLOCK_BYTES);
    for (let j = 0; j < 16; j++) {
      const r = d === 0 ? 0 : s[j]! / d;
      const sc = Math.max(-128, Math.min(127, Math.sign(r) * Math.ceil(Math.abs(r)))) || 0;
      dst[o + 192 + j] = sc & 0xff;
      const step = fround(d * sc);
      for (let i = 0; i < 16; i++) {
        const q = step === 0 ? 0 : Math.round(src[x0 + 16 * j + i]! / step);
        L[16 * j + i] = (Math.min(31, Math.max(-32, q)) || 0) + 32;
      }
    }
    for (let h = 0; h < 2; h++) {
      for (let l = 0; l < 32; l++) {
        const v = [L[128 * h + l]!, L[128 * h + 32 + l]!, L[128 * h + 64 + l]!, L[128 * h + 96 + l]!];
        dst[o + 64 * h + l] = (v[0]! & 0x0f) | ((v[2]! & 0x0f) << 4);
        dst[o + 64 * h + 32 + l] = (v[1]! & 0x0f) | ((v[3]! & 0x0f) << 4);
        dst[o + 128 + 32 * h + l] = (v[0]! >>> 4) | ((v[1]! >>> 4) << 2) | ((v[2]! >>> 4) << 4) | ((v[3]! >>> 4) << 6);
      }
    }
    wr16(dst, o + 208, dH);
  }
}
