/*
 * BF16 and K-quant kernels for the NEON path. Per weight row and super-block the canonical form
 * (kquants.h) is unpacked once with NEON (nibble masks and shifts, 16 values per register) and
 * every batch row (up to 8 at a time) takes exact int32 dots per 16 values (vdotq_s32 with the
 * dot-product extension, else vmull_s8 + vpadalq_s16), scaled per 16 in integers; the float32
 * terms follow in the reference's order, so results are bit-identical to the reference. F32
 * input: the row decoded to the reference's floats, then NEON FMA dots.
 */
#include "kquants.h"

#if defined(AIRLLM_NEON)
#include <arm_neon.h>

/* Canonical u of a super-block, 16 registers of 16 values in value order. */
static inline void kq_unpack_neon(int type, const uint8_t *blk, uint8x16_t *u) {
  const uint8x16_t lo4 = vdupq_n_u8(0x0f);
  if (type == FT_Q6K) {
    for (int h = 0; h < 2; h++) {
      const uint8_t *ql = blk + 64 * h, *qh = blk + 128 + 32 * h;
      for (int p = 0; p < 2; p++) { /* 16 of the 32 l's */
        uint8x16_t a = vld1q_u8(ql + 16 * p), b = vld1q_u8(ql + 32 + 16 * p), hb = vld1q_u8(qh + 16 * p);
        u[8 * h + 0 + p] = vorrq_u8(vandq_u8(a, lo4), vshlq_n_u8(vandq_u8(hb, vdupq_n_u8(3)), 4));
        u[8 * h + 2 + p] = vorrq_u8(vandq_u8(b, lo4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 2), vdupq_n_u8(3)), 4));
        u[8 * h + 4 + p] = vorrq_u8(vshrq_n_u8(a, 4), vshlq_n_u8(vandq_u8(vshrq_n_u8(hb, 4), vdupq_n_u8(3)), 4));
        u[8 * h + 6 + p] = vorrq_u8(vshrq_n_u8(b, 4), vshlq_n_u8(vshrq_n_u8(hb, 6), 4));
      }
    }
    return;
  }
  const uint8_t *qs = blk + (type == FT_Q5K ? 48 : 16);
  for (int c = 0; c < 4; c++)
    for (int p = 0; p < 2; p++) {
      uint8x16_t q = vld1q_u8(qs + 32 * c + 16 * p);
      uint8x16_t l = vandq_u8(q, lo4), hi = vshrq_n_u8(q, 4);
      if (type == FT_Q5K) {
        uint8x16_t hb = vld1q_u8(blk + 16 + 16 * p);
        /* fifth bits: bit 2c of qh[l] for value 64c + l, bit 2c + 1 for 64c + 32 + l */
        l = vorrq_u8(l, vshlq_n_u8(vandq_u8(vshlq_u8(hb, vdupq_n_s8((int8_t)(-2 * c))), vdupq_n_u8(1)), 4));
        hi = vorrq_u8(hi, vshlq_n_u8(vandq_u8(vshlq_u8(hb, vdupq_n_s8((int8_t)(-2 * c - 1))), vdupq_n_u8(1)), 4));
      }
      u[4 * c + p] = l;
      u[4 * c + 2 + p] = hi;
    }
}

/* Exact int32 dot of 16 unsigned (< 64) and 16 signed bytes, as 4 lanes. */
static inline int32x4_t kq_dot16(uint8x16_t u, int8x16_t x) {
  int8x16_t a = vreinterpretq_s8_u8(u);
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(vdupq_n_s32(0), a, x);
#else
  int32x4_t acc = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(x)));
  return vpadalq_s16(acc, vmull_s8(vget_high_s8(a), vget_high_s8(x)));
#endif
}

static void mmk(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                kscratch *s) {
  (void)s;
  const uint8_t *xq = (const uint8_t *)xv;
  const int nb = nIn / QKK, bb = kq_block_bytes(type);
  for (int r = r0; r < r1; r++) {
    const uint8_t *row = w + (size_t)r * nb * bb;
    for (int b0 = 0; b0 < batch; b0 += 8) {
      int nbt = batch - b0 < 8 ? batch - b0 : 8;
      float sum[8] = {0};
      for (int k = 0; k < nb; k++) {
        const uint8_t *blk = row + (size_t)k * bb;
        uint8x16_t u[16];
        kq_unpack_neon(type, blk, u);
        int32_t sg[16], cg[16];
        float d, dmin;
        kq_unpack_scales(type, blk, sg, cg, &d, &dmin);
        for (int j = 0; j < nbt; j++) {
          const uint8_t *xb = xq + ((size_t)(b0 + j) * nb + k) * Q8K_BYTES;
          const int8_t *x = kq_xq(xb);
          int32x4_t acc = vdupq_n_s32(0);
          for (int g = 0; g < 16; g++) acc = vmlaq_n_s32(acc, kq_dot16(u[g], vld1q_s8(x + 16 * g)), sg[g]);
          int32_t i1 = vaddvq_s32(acc), i2 = 0;
          for (int g = 0; g < 16; g++) i2 += cg[g] * kq_bsum(xb, g);
          sum[j] = sum[j] + kq_term(type, kq_dx(xb), d, dmin, i1, i2);
        }
      }
      for (int j = 0; j < nbt; j++) out[(size_t)(b0 + j) * nOut + r] = sum[j];
    }
  }
}

static float dot_neon(const float *a, const float *b, int n) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
    s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
  }
  for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
  float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

static void mm_bf16(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_BF16, dot_neon, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q4k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_Q4K, dot_neon, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q5k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_Q5K, dot_neon, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q6k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_Q6K, dot_neon, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}
static void mmk_q4k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mmk(FT_Q4K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mmk_q5k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mmk(FT_Q5K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mmk_q6k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mmk(FT_Q6K, o, x, w, nIn, nOut, B, r0, r1, s);
}

/* Q8_K quantization: NEON max, then the scalar rule (FCVTNS would also do, but the block is
 * small next to the matmuls). */
static void quantize_q8k(uint8_t *out, const float *x, size_t nBlocks) {
  for (size_t b = 0; b < nBlocks; b++) {
    const float *xb = x + b * QKK;
    float32x4_t m = vdupq_n_f32(0);
    /* vmaxnm ignores NaN, like the reference's `a > amax` */
    for (int i = 0; i < QKK; i += 4) m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(xb + i)));
    kq_quantize_block(out + b * Q8K_BYTES, xb, vmaxnmvq_f32(m));
  }
}

const kqops k_kq_neon = {
    .matmul = {[FT_BF16] = mm_bf16, [FT_Q4K] = mm_q4k, [FT_Q5K] = mm_q5k, [FT_Q6K] = mm_q6k},
    .matmulk = {[FT_Q4K] = mmk_q4k, [FT_Q5K] = mmk_q5k, [FT_Q6K] = mmk_q6k},
    .quantize_q8k = quantize_q8k,
};

#endif
