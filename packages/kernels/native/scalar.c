/*
 * The scalar path: portable C in the reference backend's exact operation order (sequential
 * float32 sums, decode-then-multiply), so on every input it gives the reference's bits. It is
 * the fallback on CPUs without a SIMD path and the baseline the SIMD paths are tested against.
 * Built with -ffp-contract=off so the compiler never fuses a multiply and an add.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"

float k_scalar_exp(float x) { return (float)exp((double)x); }

/* Decode one weight row to floats exactly as the reference's decodeRow does. */
static void decode_row(int type, const uint8_t *row, int nIn, float *dst) {
  switch (type) {
    case FT_F32:
      memcpy(dst, row, (size_t)nIn * 4);
      return;
    case FT_F16:
      for (int i = 0; i < nIn; i++) dst[i] = k_f16_to_f32(k_rd16(row + 2 * i));
      return;
    case FT_Q40:
      for (int b = 0; b < nIn / QK; b++) {
        const uint8_t *blk = row + (size_t)b * Q40_BYTES;
        float d = k_f16_to_f32(k_rd16(blk));
        for (int k = 0; k < 16; k++) {
          dst[b * 32 + k] = (float)((blk[2 + k] & 0x0f) - 8) * d;
          dst[b * 32 + k + 16] = (float)((blk[2 + k] >> 4) - 8) * d;
        }
      }
      return;
    case FT_Q80:
      for (int b = 0; b < nIn / QK; b++) {
        const uint8_t *blk = row + (size_t)b * Q80_BYTES;
        float d = k_f16_to_f32(k_rd16(blk));
        for (int k = 0; k < 32; k++) dst[b * 32 + k] = (float)(int8_t)blk[2 + k] * d;
      }
      return;
  }
}

/*
 * F32 input, any weight dtype: each row is decoded once into scratch and every batch row runs
 * against it, so the weights are read from memory once per call whatever the batch.
 */
static void mm_any(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                   int r1, kscratch *s) {
  const float *x = (const float *)xv;
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  float *row = (float *)kscratch_get(s, (size_t)nIn * sizeof(float));
  if (row == NULL) return;
  for (int r = r0; r < r1; r++) {
    decode_row(type, w + (size_t)r * rowBytes, nIn, row);
    for (int b = 0; b < batch; b++) {
      const float *xb = x + (size_t)b * nIn;
      float sum = 0.0f;
      for (int i = 0; i < nIn; i++) sum = sum + row[i] * xb[i];
      out[(size_t)b * nOut + r] = sum;
    }
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

/* Q80 input, dllama's arithmetic: exact integer dot per block, acc = fma(dot, f16(dw)·f16(dx), acc). */
static void mmq_q40(float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                    kscratch *s) {
  (void)s;
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  for (int r = r0; r < r1; r++) {
    const uint8_t *row = w + (size_t)r * nb * Q40_BYTES;
    for (int b = 0; b < batch; b++) {
      const uint8_t *xr = xq + (size_t)b * nb * Q80_BYTES;
      float sum = 0.0f;
      for (int k = 0; k < nb; k++) {
        const uint8_t *wb = row + (size_t)k * Q40_BYTES;
        const uint8_t *xb = xr + (size_t)k * Q80_BYTES;
        int isum = 0;
        for (int j = 0; j < 16; j++) {
          isum += ((wb[2 + j] & 0x0f) - 8) * (int8_t)xb[2 + j];
          isum += ((wb[2 + j] >> 4) - 8) * (int8_t)xb[2 + j + 16];
        }
        float dw = k_f16_to_f32(k_rd16(wb));
        float dx = k_f16_to_f32(k_rd16(xb));
        sum = fmaf((float)isum, dw * dx, sum);
      }
      out[(size_t)b * nOut + r] = sum;
    }
  }
}

static void mmq_q80(float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                    kscratch *s) {
  (void)s;
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  for (int r = r0; r < r1; r++) {
    const uint8_t *row = w + (size_t)r * nb * Q80_BYTES;
    for (int b = 0; b < batch; b++) {
      const uint8_t *xr = xq + (size_t)b * nb * Q80_BYTES;
      float sum = 0.0f;
      for (int k = 0; k < nb; k++) {
        const uint8_t *wb = row + (size_t)k * Q80_BYTES;
        const uint8_t *xb = xr + (size_t)k * Q80_BYTES;
        int isum = 0;
        for (int j = 0; j < 32; j++) isum += (int8_t)wb[2 + j] * (int8_t)xb[2 + j];
        float dw = k_f16_to_f32(k_rd16(wb));
        float dx = k_f16_to_f32(k_rd16(xb));
        sum = fmaf((float)isum, dw * dx, sum);
      }
      out[(size_t)b * nOut + r] = sum;
    }
  }
}

static void quantize_q80(uint8_t *out, const float *x, size_t nBlocks) {
  for (size_t b = 0; b < nBlocks; b++) {
    const float *xb = x + b * QK;
    uint8_t *ob = out + b * Q80_BYTES;
    float amax = 0.0f;
    for (int i = 0; i < QK; i++) {
      float a = fabsf(xb[i]);
      if (a > amax) amax = a;
    }
    float id;
    uint16_t d16;
    k_q80_scale(amax, &id, &d16);
    ob[0] = (uint8_t)(d16 & 0xff);
    ob[1] = (uint8_t)(d16 >> 8);
    for (int i = 0; i < QK; i++) ob[2 + i] = (uint8_t)(int8_t)k_round_half_even(xb[i] * id);
  }
}

static void dequantize_q80(float *out, const uint8_t *xq, size_t nBlocks) {
  for (size_t b = 0; b < nBlocks; b++) {
    const uint8_t *xb = xq + b * Q80_BYTES;
    float d = k_f16_to_f32(k_rd16(xb));
    for (int i = 0; i < QK; i++) out[b * QK + i] = (float)(int8_t)xb[2 + i] * d;
  }
}

static float dot(const float *a, const float *b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; i++) s = s + a[i] * b[i];
  return s;
}

static void axpy(float *y, const float *x, float a, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] = y[i] + x[i] * a;
}

static void add(float *y, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] = y[i] + x[i];
}

static float sumsq(const float *x, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; i++) s = s + x[i] * x[i];
  return s;
}

static void rmsscale(float *out, const float *x, const float *w, float s, int n) {
  for (int i = 0; i < n; i++) out[i] = w[i] * (s * x[i]);
}

static void softmax(float *x, int n) {
  float max = x[0];
  for (int i = 1; i < n; i++)
    if (x[i] > max) max = x[i];
  float sum = 0.0f;
  for (int i = 0; i < n; i++) {
    float e = k_scalar_exp(x[i] - max);
    x[i] = e;
    sum = sum + e;
  }
  for (int i = 0; i < n; i++) x[i] = x[i] / sum;
}

static void swiglu(float *out, const float *g, const float *u, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float gi = g[i];
    float silu = gi * (1.0f / (1.0f + k_scalar_exp(-gi)));
    out[i] = silu * u[i];
  }
}

static void vexp(float *out, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = k_scalar_exp(x[i]);
}

static const kpath SCALAR = {
    .name = "scalar",
    .features = "",
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

const kpath *kpath_scalar(void) { return &SCALAR; }
