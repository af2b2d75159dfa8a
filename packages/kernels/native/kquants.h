/*
 * BF16 and K-quant helpers shared by the scalar, x86 and NEON kernels (kquants*.c). Block
 * layouts and numerics: @airllm/format src/kquants.ts (decoded weights) and src/reference.ts
 * matmulQ8K (the Q8_K-input sums).
 *
 * Every path computes the Q8_K-input product from one canonical form of a weight super-block:
 * 256 unsigned integers u (Q4_K: q, Q5_K: q, Q6_K: q + 32, all < 64) in value order, and per
 * 16 values a scale s_g and a correction weight c_g, so that with the input's integers x and its
 * per-16 sums bsum_g:
 *   I1 = Σ_g s_g · Σ_{i<16} u·x,   I2 = Σ_g c_g · bsum_g   (exact int32)
 *   Q4_K / Q5_K: s_g = sc_{g/2}, c_g = m_{g/2}: isc = I1, imin = I2 (reference.ts)
 *   Q6_K: s_g = sc_g, c_g = 32·sc_g: isc = I1 − I2 (the −32 offset of every q)
 * Magnitudes: |I1| ≤ 16·128·16·63·127 < 2^29, |I2| ≤ 16·32·128·2032 < 2^28.
 */
#ifndef AIRLLM_KQUANTS_H
#define AIRLLM_KQUANTS_H

#include "kernels.h"

static inline int kq_block_bytes(int type) {
  return type == FT_Q4K ? Q4K_BYTES : type == FT_Q5K ? Q5K_BYTES : Q6K_BYTES;
}

/* The 8 six-bit scales and 8 mins of a Q4_K / Q5_K block (12 packed bytes at s), as ggml's
 * get_scale_min_k4 reads them: j < 4 in the low 6 bits of bytes j and j + 4; j >= 4 split
 * between a nibble of byte j + 4 and the top 2 bits of bytes j − 4 and j. */
static inline void kq_scale_min(const uint8_t *s, uint8_t *sc, uint8_t *m) {
  for (int j = 0; j < 4; j++) {
    sc[j] = s[j] & 63;
    m[j] = s[j + 4] & 63;
    sc[j + 4] = (uint8_t)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
    m[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}

/* The per-16 scales s[16] and correction weights c[16] of a super-block, d and dmin. */
static inline void kq_unpack_scales(int type, const uint8_t *blk, int32_t *s, int32_t *c, float *d, float *dmin) {
  if (type == FT_Q6K) {
    *d = k_f16_to_f32(k_rd16(blk + 208));
    *dmin = 0.0f;
    for (int g = 0; g < 16; g++) {
      s[g] = (int8_t)blk[192 + g];
      c[g] = 32 * s[g];
    }
    return;
  }
  *d = k_f16_to_f32(k_rd16(blk));
  *dmin = k_f16_to_f32(k_rd16(blk + 2));
  uint8_t sc[8], m[8];
  kq_scale_min(blk + 4, sc, m);
  for (int j = 0; j < 8; j++) {
    s[2 * j] = s[2 * j + 1] = sc[j];
    c[2 * j] = c[2 * j + 1] = m[j];
  }
}

/* Canonical form of one super-block (see the file comment): u[256], s[16], c[16], d, dmin. */
static inline void kq_unpack(int type, const uint8_t *blk, uint8_t *u, int32_t *s, int32_t *c, float *d,
                             float *dmin) {
  kq_unpack_scales(type, blk, s, c, d, dmin);
  if (type == FT_Q6K) {
    for (int h = 0; h < 2; h++) {
      const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
      uint8_t *y = u + 128 * h;
      for (int l = 0; l < 32; l++) {
        y[l] = (uint8_t)((ql[l] & 0x0f) | ((qh[l] & 3) << 4));
        y[32 + l] = (uint8_t)((ql[32 + l] & 0x0f) | (((qh[l] >> 2) & 3) << 4));
        y[64 + l] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
        y[96 + l] = (uint8_t)((ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4));
      }
    }
    return;
  }
  const int q5 = type == FT_Q5K;
  const uint8_t *qs = blk + (q5 ? 48 : 16);
  for (int cc = 0; cc < 4; cc++)
    for (int l = 0; l < 32; l++) {
      uint8_t q = qs[32 * cc + l];
      uint8_t h = q5 ? (uint8_t)(blk[16 + l] >> (2 * cc)) : 0;
      u[64 * cc + l] = (uint8_t)((q & 0x0f) | ((h & 1) << 4));
      u[64 * cc + 32 + l] = (uint8_t)((q >> 4) | ((h & 2) << 3));
    }
}

/* One super-block's term of the float32 sum, from its exact integers (reference.ts matmulQ8K). */
static inline float kq_term(int type, float dx, float d, float dmin, int32_t i1, int32_t i2) {
  if (type == FT_Q6K) return (dx * d) * (float)(i1 - i2);
  return (dx * d) * (float)i1 - (dx * dmin) * (float)i2;
}

/* Decode one super-block (256 values) of a K-quant to the reference's float32 values. */
static inline void kq_decode_block(int type, const uint8_t *blk, float *y) {
  uint8_t u[QKK];
  int32_t s[16], c[16];
  float d, dmin;
  kq_unpack(type, blk, u, s, c, &d, &dmin);
  for (int g = 0; g < 16; g++) {
    if (type == FT_Q6K) {
      float ds = d * (float)s[g];
      for (int i = 0; i < 16; i++) y[16 * g + i] = ds * (float)((int)u[16 * g + i] - 32);
    } else {
      float ds = d * (float)s[g], dm = dmin * (float)c[g];
      for (int i = 0; i < 16; i++) y[16 * g + i] = ds * (float)u[16 * g + i] - dm;
    }
  }
}

static inline float k_bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* Decode a weight row of a BF16 or K-quant type (nIn values) to floats, the reference's values. */
static inline void kq_decode_row(int type, const uint8_t *row, int nIn, float *dst) {
  if (type == FT_BF16) {
    for (int i = 0; i < nIn; i++) dst[i] = k_bf16_to_f32(k_rd16(row + 2 * i));
    return;
  }
  int bb = kq_block_bytes(type);
  for (int k = 0; k < nIn / QKK; k++) kq_decode_block(type, row + (size_t)k * bb, dst + (size_t)k * QKK);
}

/* Q8_K block accessors (little-endian host). */
static inline float kq_dx(const uint8_t *xb) { return k_rdf32(xb); }
static inline const int8_t *kq_xq(const uint8_t *xb) { return (const int8_t *)(xb + 4); }
static inline int16_t kq_bsum(const uint8_t *xb, int g) {
  int16_t v;
  memcpy(&v, xb + 260 + 2 * g, 2);
  return v;
}

/* Scalar Q8_K quantization of one block (the reference's rule), shared by every path. */
static inline void kq_quantize_block(uint8_t *ob, const float *xb, float amax) {
  float d = amax / 127.0f;
  float id = d != 0.0f ? 1.0f / d : 0.0f;
  memcpy(ob, &d, 4);
  for (int g = 0; g < 16; g++) {
    int sum = 0;
    for (int i = 0; i < 16; i++) {
      int q = k_round_half_even(xb[16 * g + i] * id);
      ob[4 + 16 * g + i] = (uint8_t)(int8_t)q;
      sum += q;
    }
    int16_t s16 = (int16_t)sum;
    memcpy(ob + 260 + 2 * g, &s16, 2);
  }
}

/* Mixed scalar helpers: the F32-input kernels built on a path's dot product. */
void k_kq_mm_decode(int type, float (*dot)(const float *, const float *, int), float *out, const float *x,
                    const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1, kscratch *s);

#endif
