/*
 * NEON path (aarch64, where NEON is always present). Matmuls decode or read each weight row once
 * per call and run every batch row against it while it is in L1. Q80-input dots are exact
 * integers: widening int8 products (vmull_s8) pairwise-accumulated into int32 (vpadalq_s16), or
 * vdotq_s32 when the compiler targets the dot-product extension. Quantization rounds with
 * FCVTNS (ties to even), bit-identical to the reference.
 */
#include "kernels.h"

#if defined(AIRLLM_NEON)
#include <arm_neon.h>
#include <math.h>

static inline float hsum4(float32x4_t v) { return vaddvq_f32(v); }

/* exp(x): the same Cephes scheme and constants as the AVX2 path (see avx2.c exp8). */
static inline float32x4_t exp4(float32x4_t x) {
  const float32x4_t lo = vdupq_n_f32(-87.33654475f);
  uint32x4_t small = vcltq_f32(x, lo);
  uint32x4_t nan = vmvnq_u32(vceqq_f32(x, x));
  x = vminq_f32(x, vdupq_n_f32(88.0f));
  x = vmaxq_f32(x, lo);
  float32x4_t fx = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
  x = vfmsq_f32(x, fx, vdupq_n_f32(0.693359375f));
  x = vfmsq_f32(x, fx, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t z = vmulq_f32(x, x);
  float32x4_t y = vdupq_n_f32(1.9875691500e-4f);
  y = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), y, x);
  y = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), y, x);
  y = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), y, x);
  y = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), y, x);
  y = vfmaq_f32(x, y, z);
  y = vaddq_f32(y, vdupq_n_f32(1.0f));
  int32x4_t n = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(fx), vdupq_n_s32(127)), 23);
  y = vmulq_f32(y, vreinterpretq_f32_s32(n));
  y = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), small));
  /* NaN in, NaN out (vmin/vmax above would have replaced it) */
  return vbslq_f32(nan, vdupq_n_f32(NAN), y);
}

static float dot(const float *a, const float *b, int n) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
    s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), vld1q_f32(b + i + 4));
    s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), vld1q_f32(b + i + 8));
    s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), vld1q_f32(b + i + 12));
  }
  for (; i + 4 <= n; i += 4) s0 = vfmaq_f32(s0, vld1q_f32(a + i), vld1q_f32(b + i));
  float s = hsum4(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

static void axpy(float *y, const float *x, float a, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vmulq_n_f32(vld1q_f32(x + i), a)));
  for (; i < n; i++) y[i] = y[i] + x[i] * a;
}

static void add(float *y, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vaddq_f32(vld1q_f32(y + i), vld1q_f32(x + i)));
  for (; i < n; i++) y[i] = y[i] + x[i];
}

static float sumsq(const float *x, int n) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = s0;
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    float32x4_t a = vld1q_f32(x + i), b = vld1q_f32(x + i + 4);
    s0 = vfmaq_f32(s0, a, a);
    s1 = vfmaq_f32(s1, b, b);
  }
  float s = hsum4(vaddq_f32(s0, s1));
  for (; i < n; i++) s += x[i] * x[i];
  return s;
}

static void rmsscale(float *out, const float *x, const float *w, float s, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, vmulq_f32(vld1q_f32(w + i), vmulq_n_f32(vld1q_f32(x + i), s)));
  for (; i < n; i++) out[i] = w[i] * (s * x[i]);
}

static void vexp(float *out, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(out + i, exp4(vld1q_f32(x + i)));
  if (i < n) {
    float t[4] = {0, 0, 0, 0};
    memcpy(t, x + i, (n - i) * 4);
    vst1q_f32(t, exp4(vld1q_f32(t)));
    memcpy(out + i, t, (n - i) * 4);
  }
}

static void softmax(float *x, int n) {
  float max = x[0];
  for (int i = 1; i < n; i++)
    if (x[i] > max) max = x[i];
  float32x4_t mv = vdupq_n_f32(max), sv = vdupq_n_f32(0);
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), mv));
    vst1q_f32(x + i, e);
    sv = vaddq_f32(sv, e);
  }
  float sum = hsum4(sv);
  if (i < n) {
    float t[4] = {0, 0, 0, 0};
    for (int j = 0; j < n - i; j++) t[j] = x[i + j] - max;
    vst1q_f32(t, exp4(vld1q_f32(t)));
    for (int j = 0; j < n - i; j++) {
      x[i + j] = t[j];
      sum += t[j];
    }
  }
  for (i = 0; i < n; i++) x[i] = x[i] / sum;
}

static void swiglu(float *out, const float *g, const float *u, size_t n) {
  const float32x4_t one = vdupq_n_f32(1.0f);
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    float32x4_t gv = vld1q_f32(g + i);
    float32x4_t silu = vmulq_f32(gv, vdivq_f32(one, vaddq_f32(one, exp4(vnegq_f32(gv)))));
    vst1q_f32(out + i, vmulq_f32(silu, vld1q_f32(u + i)));
  }
  for (; i < n; i++) {
    float t[4] = {-g[i], 0, 0, 0};
    vst1q_f32(t, exp4(vld1q_f32(t)));
    out[i] = g[i] * (1.0f / (1.0f + t[0])) * u[i];
  }
}

static void quantize_q80(uint8_t *out, const float *x, size_t nBlocks) {
  const float32x4_t big = vdupq_n_f32(1e9f);
  for (size_t b = 0; b < nBlocks; b++) {
    const float *xb = x + b * QK;
    uint8_t *ob = out + b * Q80_BYTES;
    float32x4_t v[8];
    float32x4_t m = vdupq_n_f32(0);
    for (int j = 0; j < 8; j++) {
      v[j] = vld1q_f32(xb + 4 * j);
      /* vmaxnm ignores NaN, like the reference's `a > amax` */
      m = vmaxnmq_f32(m, vabsq_f32(v[j]));
    }
    float id;
    uint16_t d16;
    k_q80_scale(vmaxnmvq_f32(m), &id, &d16);
    ob[0] = (uint8_t)(d16 & 0xff);
    ob[1] = (uint8_t)(d16 >> 8);
    int16x8_t h[4];
    for (int j = 0; j < 4; j++) {
      float32x4_t r0 = vmulq_n_f32(v[2 * j], id), r1 = vmulq_n_f32(v[2 * j + 1], id);
      /* non-finite products give 0, as in the reference */
      int32x4_t q0 = vandq_s32(vcvtnq_s32_f32(r0), vreinterpretq_s32_u32(vcaleq_f32(r0, big)));
      int32x4_t q1 = vandq_s32(vcvtnq_s32_f32(r1), vreinterpretq_s32_u32(vcaleq_f32(r1, big)));
      h[j] = vcombine_s16(vqmovn_s32(q0), vqmovn_s32(q1));
    }
    vst1q_s8((int8_t *)(ob + 2), vcombine_s8(vqmovn_s16(h[0]), vqmovn_s16(h[1])));
    vst1q_s8((int8_t *)(ob + 18), vcombine_s8(vqmovn_s16(h[2]), vqmovn_s16(h[3])));
  }
}

static void dequantize_q80(float *out, const uint8_t *xq, size_t nBlocks) {
  for (size_t b = 0; b < nBlocks; b++) {
    const uint8_t *blk = xq + b * Q80_BYTES;
    float d = k_f16_to_f32(k_rd16(blk));
    for (int h = 0; h < 2; h++) {
      int8x16_t q = vld1q_s8((const int8_t *)(blk + 2 + 16 * h));
      int16x8_t lo = vmovl_s8(vget_low_s8(q)), hi = vmovl_s8(vget_high_s8(q));
      float *o = out + b * QK + 16 * h;
      vst1q_f32(o, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))), d));
      vst1q_f32(o + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))), d));
      vst1q_f32(o + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))), d));
      vst1q_f32(o + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))), d));
    }
  }
}

/* Decode one weight row to floats (the reference's decoded values), into L1-resident scratch. */
static void decode_row(int type, const uint8_t *row, int nIn, float *dst) {
  switch (type) {
    case FT_F32:
      memcpy(dst, row, (size_t)nIn * 4);
      return;
    case FT_F16: {
      int i = 0;
      for (; i + 4 <= nIn; i += 4) {
        uint16_t h[4];
        memcpy(h, row + 2 * i, 8);
        vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h))));
      }
      for (; i < nIn; i++) dst[i] = k_f16_to_f32(k_rd16(row + 2 * i));
      return;
    }
    case FT_Q40:
      for (int b = 0; b < nIn / QK; b++) {
        const uint8_t *blk = row + (size_t)b * Q40_BYTES;
        float d = k_f16_to_f32(k_rd16(blk));
        uint8x16_t q = vld1q_u8(blk + 2);
        int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
        int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
        int8x16_t parts[2] = {lo, hi};
        for (int h = 0; h < 2; h++) {
          int16x8_t a = vmovl_s8(vget_low_s8(parts[h])), c = vmovl_s8(vget_high_s8(parts[h]));
          float *o = dst + b * QK + 16 * h;
          vst1q_f32(o, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(a))), d));
          vst1q_f32(o + 4, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(a))), d));
          vst1q_f32(o + 8, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(c))), d));
          vst1q_f32(o + 12, vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_high_s16(c))), d));
        }
      }
      return;
    case FT_Q80:
      dequantize_q80(dst, row, (size_t)(nIn / QK));
      return;
  }
}

static void mm_any(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                   int r1, kscratch *s) {
  const float *x = (const float *)xv;
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  float *row = (float *)kscratch_get(s, (size_t)nIn * sizeof(float));
  if (row == NULL) return;
  for (int r = r0; r < r1; r++) {
    const float *wr;
    if (type == FT_F32) {
      /* F32 rows are used in place (unaligned loads are fine on aarch64) */
      wr = (const float *)(const void *)(w + (size_t)r * rowBytes);
    } else {
      decode_row(type, w + (size_t)r * rowBytes, nIn, row);
      wr = row;
    }
    for (int b = 0; b < batch; b++) out[(size_t)b * nOut + r] = dot(wr, x + (size_t)b * nIn, nIn);
  }
}

static void mm_f32(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_any(FT_F32, o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_f16(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_any(FT_F16, o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q40(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_any(FT_Q40, o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q80(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_any(FT_Q80, o, x, w, nIn, nOut, B, r0, r1, s);
}

/* Exact int32 dot of 16 signed bytes. */
static inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
  return vpadalq_s16(acc, vmull_s8(vget_high_s8(a), vget_high_s8(b)));
#endif
}

/*
 * Q80 input in dllama's exact arithmetic: each output is the chain acc = fma(float(block dot),
 * dw * dx, acc) over its blocks in order. Lanes run along the output rows: a tile of 4 weight rows
 * gets its 4 exact block dots of block k into one vector (pairwise adds), then one vfmaq_f32
 * advances the 4 chains. Each block of the tile is decoded once for a tile of 8 batch rows.
 */
/* The 32 weight values of a block as two int8 vectors (elements 0..15, 16..31). */
static inline void block_weights(int type, const uint8_t *wb, int8x16_t *w) {
  if (type == FT_Q40) {
    uint8x16_t q = vld1q_u8(wb + 2);
    w[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f))), vdupq_n_s8(8));
    w[1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), vdupq_n_s8(8));
  } else {
    w[0] = vld1q_s8((const int8_t *)(wb + 2));
    w[1] = vld1q_s8((const int8_t *)(wb + 18));
  }
}

#define NEON_BT 8 /* batch rows per tile */

static void mmq(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                kscratch *s) {
  (void)s;
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  for (int r = r0; r < r1; r += 4) {
    int nv = r1 - r < 4 ? r1 - r : 4;
    const uint8_t *rows[4];
    for (int i = 0; i < 4; i++) rows[i] = w + (size_t)(r + (i < nv ? i : nv - 1)) * nb * bb;
    for (int b0 = 0; b0 < batch; b0 += NEON_BT) {
      int bn = batch - b0 < NEON_BT ? batch - b0 : NEON_BT;
      float32x4_t acc[NEON_BT];
      for (int b = 0; b < bn; b++) acc[b] = vdupq_n_f32(0);
      for (int k = 0; k < nb; k++) {
        int8x16_t wv[4][2];
        float dw[4];
        for (int i = 0; i < 4; i++) {
          const uint8_t *wb = rows[i] + (size_t)k * bb;
          block_weights(type, wb, wv[i]);
          dw[i] = k_f16_to_f32(k_rd16(wb));
        }
        float32x4_t dwv = vld1q_f32(dw);
        for (int b = 0; b < bn; b++) {
          const uint8_t *xb = xq + ((size_t)(b0 + b) * nb + k) * Q80_BYTES;
          int8x16_t x0 = vld1q_s8((const int8_t *)(xb + 2)), x1 = vld1q_s8((const int8_t *)(xb + 18));
          int32x4_t d[4];
          for (int i = 0; i < 4; i++) d[i] = dot16(dot16(vdupq_n_s32(0), wv[i][0], x0), wv[i][1], x1);
          int32x4_t sums = vpaddq_s32(vpaddq_s32(d[0], d[1]), vpaddq_s32(d[2], d[3]));
          acc[b] = vfmaq_f32(acc[b], vcvtq_f32_s32(sums), vmulq_n_f32(dwv, k_f16_to_f32(k_rd16(xb))));
        }
      }
      for (int b = 0; b < bn; b++) {
        float a[4];
        vst1q_f32(a, acc[b]);
        for (int i = 0; i < nv; i++) out[(size_t)(b0 + b) * nOut + r + i] = a[i];
      }
    }
  }
}

static void mmq_q40(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mmq(FT_Q40, o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mmq_q80(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mmq(FT_Q80, o, x, w, nIn, nOut, B, r0, r1, s);
}

static const kpath NEON = {
    .name = "neon",
#if defined(__ARM_FEATURE_DOTPROD)
    .features = "neon,dotprod",
#else
    .features = "neon",
#endif
    .matmul = {mm_f32, mm_f16, mm_q40, mm_q80},
    .matmulq = {NULL, NULL, mmq_q40, mmq_q80},
    .quantize_q80 = quantize_q80,
    .dequantize_q80 = dequantize_q80,
    .dot = dot,
    .axpy = axpy,
    .add = add,
    .sumsq = sumsq,
    .rmsscale = rmsscale,
    .softmax = softmax,
    .swiglu = swiglu,
    .vexp = vexp,
};

const kpath *kpath_neon(void) { return &NEON; }

#endif
