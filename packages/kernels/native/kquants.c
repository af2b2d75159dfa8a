/*
 * BF16 and K-quant kernels of the scalar path, in the reference's operation order (bit-identical
 * to it; built with -ffp-contract=off like scalar.c), and the row-decode F32-input kernel the
 * SIMD paths build on with their own dot product.
 */
#include <math.h>

#include "kquants.h"

/* F32 input: each weight row is decoded once into scratch (the reference's values), then every
 * batch row takes its dot product with `dot` (the scalar path: sequential, as the reference). */
void k_kq_mm_decode(int type, float (*dot)(const float *, const float *, int), float *out, const float *x,
                    const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1, kscratch *s) {
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  float *row = (float *)kscratch_get(s, (size_t)nIn * sizeof(float));
  if (row == NULL) return;
  for (int r = r0; r < r1; r++) {
    kq_decode_row(type, w + (size_t)r * rowBytes, nIn, row);
    for (int b = 0; b < batch; b++) out[(size_t)b * nOut + r] = dot(row, x + (size_t)b * nIn, nIn);
  }
}

static float dot_seq(const float *a, const float *b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; i++) s = s + a[i] * b[i];
  return s;
}

static void mm_bf16(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_BF16, dot_seq, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q4k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_Q4K, dot_seq, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q5k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_Q5K, dot_seq, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q6k(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  k_kq_mm_decode(FT_Q6K, dot_seq, o, (const float *)x, w, nIn, nOut, B, r0, r1, s);
}

/* Q8_K input: per super-block the exact integers from the canonical form, then kq_term. */
static void mmk(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                kscratch *s) {
  (void)s;
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QKK, bb = kq_block_bytes(type);
  uint8_t u[QKK];
  int32_t sg[16], cg[16];
  for (int r = r0; r < r1; r++) {
    for (int b = 0; b < batch; b++) {
      float sum = 0.0f;
      for (int k = 0; k < nb; k++) {
        float d, dmin;
        kq_unpack(type, w + ((size_t)r * nb + k) * bb, u, sg, cg, &d, &dmin);
        const uint8_t *xb = xq + ((size_t)b * nb + k) * Q8K_BYTES;
        const int8_t *q = kq_xq(xb);
        int32_t i1 = 0, i2 = 0;
        for (int g = 0; g < 16; g++) {
          int32_t t = 0;
          for (int i = 0; i < 16; i++) t += (int32_t)u[16 * g + i] * q[16 * g + i];
          i1 += sg[g] * t;
          i2 += cg[g] * kq_bsum(xb, g);
        }
        sum = sum + kq_term(type, kq_dx(xb), d, dmin, i1, i2);
      }
      out[(size_t)b * nOut + r] = sum;
    }
  }
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

static void quantize_q8k(uint8_t *out, const float *x, size_t nBlocks) {
  for (size_t b = 0; b < nBlocks; b++) {
    const float *xb = x + b * QKK;
    float amax = 0.0f;
    for (int i = 0; i < QKK; i++) {
      float a = fabsf(xb[i]);
      if (a > amax) amax = a;
    }
    kq_quantize_block(out + b * Q8K_BYTES, xb, amax);
  }
}

const kqops k_kq_scalar = {
    .matmul = {[FT_BF16] = mm_bf16, [FT_Q4K] = mm_q4k, [FT_Q5K] = mm_q5k, [FT_Q6K] = mm_q6k},
    .matmulk = {[FT_Q4K] = mmk_q4k, [FT_Q5K] = mmk_q5k, [FT_Q6K] = mmk_q6k},
    .quantize_q8k = quantize_q8k,
};
