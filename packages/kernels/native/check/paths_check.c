/*
 * Developer check, outside the npm build: runs every CPU path compiled for this target against
 * the scalar path (itself bit-identical to the TypeScript reference, see test/native.test.ts) on
 * seeded random inputs. Its purpose is the NEON path, which can be checked on x86-64 under
 * qemu:
 *
 *   aarch64-linux-gnu-gcc -O3 -ffp-contract=off -march=armv8-a -Inative native/check/paths_check.c \
 *     native/ops.c native/dllama.c native/scalar.c native/neon.c -lm -static -o /tmp/check && qemu-aarch64 /tmp/check
 *   gcc -O3 -ffp-contract=off -Inative native/check/paths_check.c native/ops.c native/dllama.c native/scalar.c \
 *     native/avx2.c native/avx512.c native/amx.c -lm -o /tmp/check && /tmp/check
 *
 * Exit status 0 when every comparison is within its tolerance.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static float frand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)((double)(rng >> 11) / (double)(1ULL << 53)) * 2.0f - 1.0f;
}

static int failures = 0;

/* Unit roundoff of float32. A sum of n terms in any order is within n * U of the exact value,
 * relative to the sum of |terms| (recursive-summation bound); two orders differ by at most 2n U. */
#define U 5.9604645e-8f

/* |a - b| <= tol * scale, element-wise. */
static void expect_close(const char *what, const char *path, const float *a, const float *b, size_t n, const float *scale,
                         float tol) {
  for (size_t i = 0; i < n; i++) {
    float s = scale ? scale[i] : 1.0f;
    if (!(fabsf(a[i] - b[i]) <= tol * s)) {
      printf("FAIL %s [%s] at %zu: %.9g vs %.9g (tol %.3g)\n", what, path, i, a[i], b[i], tol * s);
      failures++;
      return;
    }
  }
}

static void make_weights(int type, uint8_t *w, int nOut, int nIn) {
  size_t rb = k_row_bytes(type, (size_t)nIn);
  for (int r = 0; r < nOut; r++) {
    uint8_t *row = w + (size_t)r * rb;
    if (type == FT_F32) {
      for (int i = 0; i < nIn; i++) {
        float f = frand();
        memcpy(row + 4 * i, &f, 4);
      }
    } else if (type == FT_F16) {
      for (int i = 0; i < nIn; i++) {
        uint16_t h = k_f32_to_f16(frand());
        memcpy(row + 2 * i, &h, 2);
      }
    } else {
      int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
      for (int k = 0; k < nIn / QK; k++) {
        uint8_t *blk = row + (size_t)k * bb;
        uint16_t d = k_f32_to_f16(frand() * 0.05f);
        memcpy(blk, &d, 2);
        for (int j = 2; j < bb; j++) blk[j] = (uint8_t)(rng = rng * 6364136223846793005ULL + 1, rng >> 56);
      }
    }
  }
}

/* Bound on the accumulation error of row r, batch b: sum of |w| * |x| (decoded weights). */
static void bound(int type, const uint8_t *w, const float *x, int nIn, int nOut, int batch, float *scale, kscratch *s) {
  float *wabs = malloc((size_t)nIn * 4), *xabs = malloc((size_t)batch * nIn * 4);
  for (size_t i = 0; i < (size_t)batch * nIn; i++) xabs[i] = fabsf(x[i]);
  float *tmp = malloc((size_t)batch * nOut * 4);
  uint8_t *one = malloc(k_row_bytes(FT_F32, (size_t)nIn));
  for (int r = 0; r < nOut; r++) {
    /* decode row r with the scalar path by multiplying against unit vectors would be slow; use
       the scalar F32 matmul on |decoded| instead */
    float *unit = calloc((size_t)nIn, 4);
    for (int i = 0; i < nIn; i++) {
      unit[i] = 1.0f;
      kpath_scalar()->matmul[type](tmp, unit, w + (size_t)r * k_row_bytes(type, (size_t)nIn), nIn, 1, 1, 0, 1, s);
      wabs[i] = fabsf(tmp[0]);
      unit[i] = 0.0f;
    }
    free(unit);
    memcpy(one, wabs, (size_t)nIn * 4);
    kpath_scalar()->matmul[FT_F32](tmp, xabs, one, nIn, 1, batch, 0, 1, s);
    for (int b = 0; b < batch; b++) scale[(size_t)b * nOut + r] = tmp[b] + 1e-30f;
  }
  free(wabs);
  free(xabs);
  free(tmp);
  free(one);
}

static void check_path(const kpath *p) {
  kscratch s1 = {0}, s2 = {0};
  const kpath *ref = kpath_scalar();
  static const int shapes[][3] = {{33, 96, 1}, {17, 64, 2}, {9, 128, 3}, {7, 96, 4},   {5, 64, 5},
                                  {6, 96, 17}, {3, 32, 40}, {37, 96, 9}, {19, 64, 33}, {40, 2080, 12}};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
    int nOut = shapes[si][0], nIn = shapes[si][1], batch = shapes[si][2];
    float *x = malloc((size_t)batch * nIn * 4);
    for (int i = 0; i < batch * nIn; i++) x[i] = frand();
    uint8_t *xq = malloc((size_t)batch * nIn / QK * Q80_BYTES);
    ref->quantize_q80(xq, x, (size_t)batch * nIn / QK);
    float *a = malloc((size_t)batch * nOut * 4), *b = malloc((size_t)batch * nOut * 4), *sc = malloc((size_t)batch * nOut * 4);
    for (int type = 0; type < 4; type++) {
      uint8_t *w = malloc((size_t)nOut * k_row_bytes(type, (size_t)nIn));
      make_weights(type, w, nOut, nIn);
      bound(type, w, x, nIn, nOut, batch, sc, &s1);
      ref->matmul[type](a, x, w, nIn, nOut, batch, 0, nOut, &s1);
      p->matmul[type](b, x, w, nIn, nOut, batch, 0, nOut, &s2);
      char what[64];
      snprintf(what, sizeof what, "matmul t%d %dx%d b%d", type, nOut, nIn, batch);
      expect_close(what, p->name, a, b, (size_t)batch * nOut, sc, 2.0f * nIn * U);
      if (type >= FT_Q40) {
        ref->matmulq[type](a, xq, w, nIn, nOut, batch, 0, nOut, &s1);
        p->matmulq[type](b, xq, w, nIn, nOut, batch, 0, nOut, &s2);
        snprintf(what, sizeof what, "matmulQ80 t%d %dx%d b%d", type, nOut, nIn, batch);
        expect_close(what, p->name, a, b, (size_t)batch * nOut, NULL, 0.0f); /* dllama's order: exact */
      }
      free(w);
    }
    free(x);
    free(xq);
    free(a);
    free(b);
    free(sc);
  }
  /* quantization: bit-identical, including exact .5 ties */
  {
    enum { NB = 64 };
    float x[NB * QK];
    for (int i = 0; i < NB * QK; i++) x[i] = frand() * (float)(1 + i % 7);
    for (int i = 0; i < QK; i++) x[i] = (float)(i - 16) * 0.5f; /* d = 8/127: many ties after x*id? */
    for (int i = 0; i < QK; i++) x[QK + i] = i == 0 ? 127.0f : (float)i + 0.5f; /* id == 1: exact .5 ties */
    uint8_t qa[NB * Q80_BYTES], qb[NB * Q80_BYTES];
    ref->quantize_q80(qa, x, NB);
    p->quantize_q80(qb, x, NB);
    if (memcmp(qa, qb, sizeof qa) != 0) {
      printf("FAIL quantize_q80 [%s] not bit-identical\n", p->name);
      failures++;
    }
    float da[NB * QK], db[NB * QK];
    ref->dequantize_q80(da, qa, NB);
    p->dequantize_q80(db, qa, NB);
    expect_close("dequantize_q80", p->name, da, db, NB * QK, NULL, 0.0f);
  }
  /* element-wise */
  {
    enum { N = 1031 };
    float x[N], y[N], g[N], u[N], ya[N], yb[N], ones[N];
    for (int i = 0; i < N; i++) {
      x[i] = frand() * 4;
      y[i] = frand();
      g[i] = frand() * 12;
      u[i] = frand();
      ones[i] = 1.0f;
    }
    float d1 = ref->dot(x, y, N), d2 = p->dot(x, y, N);
    float sabs = 0;
    for (int i = 0; i < N; i++) sabs += fabsf(x[i] * y[i]);
    expect_close("dot", p->name, &d1, &d2, 1, &sabs, 2.0f * N * U);
    memcpy(ya, y, sizeof y);
    memcpy(yb, y, sizeof y);
    ref->axpy(ya, x, 0.37f, N);
    p->axpy(yb, x, 0.37f, N);
    expect_close("axpy", p->name, ya, yb, N, NULL, 0.0f);
    ref->add(ya, x, N);
    p->add(yb, x, N);
    expect_close("add", p->name, ya, yb, N, NULL, 0.0f);
    ref->rmsscale(ya, x, y, 0.77f, N);
    p->rmsscale(yb, x, y, 0.77f, N);
    expect_close("rmsscale", p->name, ya, yb, N, NULL, 0.0f);
    float s1v = ref->sumsq(x, N), s2v = p->sumsq(x, N);
    expect_close("sumsq", p->name, &s1v, &s2v, 1, &s1v, 2.0f * N * U);
    ref->vexp(ya, g, N);
    p->vexp(yb, g, N);
    expect_close("exp", p->name, ya, yb, N, ya, 4e-7f);
    memcpy(ya, g, sizeof g);
    memcpy(yb, g, sizeof g);
    ref->softmax(ya, N);
    p->softmax(yb, N);
    expect_close("softmax", p->name, ya, yb, N, ya, 2.0f * N * U + 1e-6f);
    ref->swiglu(ya, g, u, N);
    p->swiglu(yb, g, u, N);
    for (int i = 0; i < N; i++) ones[i] = fabsf(ya[i]) + 1e-30f;
    expect_close("swiglu", p->name, ya, yb, N, ones, 1e-6f);

    /* dllama's numerics: the path's implementation against the portable one, bit for bit */
    const kdl_ops *dr = k_dl_ops(ref), *dp = k_dl_ops(p);
    for (int n = 1; n <= N; n += n < 40 ? 1 : 97) {
      float r1 = dr->dot(x, y, n), r2 = dp->dot(x, y, n);
      expect_close("dllama dot", p->name, &r1, &r2, 1, NULL, 0.0f);
      memcpy(ya, g, (size_t)n * 4);
      memcpy(yb, g, (size_t)n * 4);
      dr->softmax(ya, n);
      dp->softmax(yb, n);
      expect_close("dllama softmax", p->name, ya, yb, (size_t)n, NULL, 0.0f);
      dr->rmsnorm(ya, x, y, n, 1e-5f);
      dp->rmsnorm(yb, x, y, n, 1e-5f);
      expect_close("dllama rmsnorm", p->name, ya, yb, (size_t)n, NULL, 0.0f);
      dr->silu_mul(ya, g, u, (size_t)n);
      dp->silu_mul(yb, g, u, (size_t)n);
      expect_close("dllama silu_mul", p->name, ya, yb, (size_t)n, NULL, 0.0f);
      memcpy(ya, y, (size_t)n * 4);
      memcpy(yb, y, (size_t)n * 4);
      dr->axpy(ya, x, 0.37f, n);
      dp->axpy(yb, x, 0.37f, n);
      expect_close("dllama axpy", p->name, ya, yb, (size_t)n, NULL, 0.0f);
    }
    uint8_t blk[Q80_BYTES];
    ref->quantize_q80(blk, g, 1);
    memcpy(ya, y, QK * 4);
    memcpy(yb, y, QK * 4);
    dr->merge_q80(ya, blk);
    dp->merge_q80(yb, blk);
    expect_close("dllama merge_q80", p->name, ya, yb, QK, NULL, 0.0f);
  }
  free(s1.buf);
  free(s2.buf);
  printf("%s: checked\n", p->name);
}

int main(void) {
#if defined(AIRLLM_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    check_path(kpath_avx2());
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq")) {
    check_path(kpath_avx512());
    if (__builtin_cpu_supports("avx512vnni")) check_path(kpath_avx512vnni());
    if (__builtin_cpu_supports("avx512vnni") && k_amx_available()) check_path(kpath_avx512amx());
  }
#endif
#if defined(AIRLLM_NEON)
  check_path(kpath_neon());
#endif
  printf(failures ? "%d FAILURES\n" : "all paths match the scalar path\n", failures);
  return failures ? 1 : 0;
}
