/*
 * The BF16 / K-quant kernels of every CPU path compiled for this target against the scalar path
 * (itself bit-identical to the TypeScript reference, see kquants.test.ts): Q8_K quantization and
 * matmulQ8K bit-identical, F32-input matmuls within the two-orders summation bound.
 * test/paths.test.ts builds and runs it like paths_check.c: on this machine linked with the
 * addon's own objects, and for aarch64 under qemu (the NEON path). Exit status 0 when every
 * comparison holds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kquants.h"

static uint64_t rng = 0x2545f4914f6cdd1dULL;
static uint32_t next32(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 32);
}
static float frand(void) { return (float)next32() / 4294967296.0f * 2.0f - 1.0f; }

static int failures = 0;
#define U 5.9604645e-8f

/* Random super-blocks: random bytes, then realistic f16 scales (both signs, 2^-12..2^-5). */
static void random_weights(int type, uint8_t *w, size_t nBlocks) {
  int bb = type == FT_BF16 ? 2 : kq_block_bytes(type);
  for (size_t i = 0; i < nBlocks * (size_t)bb; i++) w[i] = (uint8_t)next32();
  if (type == FT_BF16) {
    for (size_t i = 0; i < nBlocks; i++) {
      float f = frand();
      uint32_t bits;
      memcpy(&bits, &f, 4);
      uint16_t h = (uint16_t)(bits >> 16);
      memcpy(w + 2 * i, &h, 2);
    }
    return;
  }
  for (size_t b = 0; b < nBlocks; b++) {
    uint8_t *blk = w + b * bb;
    uint16_t d = (uint16_t)((next32() & 0x8000) | ((3 + next32() % 7) << 10) | (next32() & 0x3ff));
    uint16_t m = (uint16_t)((next32() & 0x8000) | ((3 + next32() % 7) << 10) | (next32() & 0x3ff));
    if (type == FT_Q6K) memcpy(blk + 208, &d, 2);
    else {
      memcpy(blk, &d, 2);
      memcpy(blk + 2, &m, 2);
    }
  }
}

static void check(const char *name, const kqops *p, const kqops *ref, kscratch *s) {
  static const int shapes[][3] = {{1, 256, 1}, {37, 512, 1}, {13, 768, 3}, {10, 512, 4}, {7, 256, 5}, {11, 512, 6}, {9, 768, 7},
                                  {5, 512, 17}, {33, 256, 32}, {3, 1280, 33}, {2, 256, 70}, {19, 4096, 3}};
  for (int type = FT_BF16; type <= FT_Q6K; type++) {
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
      int nOut = shapes[si][0], nIn = shapes[si][1], batch = shapes[si][2];
      size_t wBytes = (size_t)nOut * k_row_bytes(type, (size_t)nIn);
      uint8_t *w = malloc(wBytes);
      float *x = malloc(sizeof(float) * (size_t)batch * nIn);
      uint8_t *xq = malloc((size_t)batch * (nIn / QKK) * Q8K_BYTES), *xq2 = malloc((size_t)batch * (nIn / QKK) * Q8K_BYTES);
      float *o1 = malloc(sizeof(float) * (size_t)batch * nOut), *o2 = malloc(sizeof(float) * (size_t)batch * nOut);
      float *scale = malloc(sizeof(float) * (size_t)batch * nOut);
      random_weights(type, w, type == FT_BF16 ? (size_t)nOut * nIn : wBytes / kq_block_bytes(type));
      for (int i = 0; i < batch * nIn; i++) x[i] = frand();
      /* Q8_K quantization */
      ref->quantize_q8k(xq, x, (size_t)batch * (nIn / QKK));
      p->quantize_q8k(xq2, x, (size_t)batch * (nIn / QKK));
      if (memcmp(xq, xq2, (size_t)batch * (nIn / QKK) * Q8K_BYTES) != 0) {
        printf("FAIL %s quantize_q8k %d x %d\n", name, batch, nIn);
        failures++;
      }
      /* F32 input */
      ref->matmul[type](o1, x, w, nIn, nOut, batch, 0, nOut, s);
      p->matmul[type](o2, x, w, nIn, nOut, batch, 0, nOut, s);
      float *row = malloc(sizeof(float) * nIn);
      for (int r = 0; r < nOut; r++) {
        kq_decode_row(type, w + (size_t)r * k_row_bytes(type, (size_t)nIn), nIn, row);
        for (int b = 0; b < batch; b++) {
          double a = 0;
          for (int i = 0; i < nIn; i++) a += fabs((double)row[i] * x[(size_t)b * nIn + i]);
          scale[(size_t)b * nOut + r] = (float)a;
        }
      }
      free(row);
      for (int i = 0; i < batch * nOut; i++)
        if (!(fabsf(o1[i] - o2[i]) <= 2.0f * (nIn + 2) * U * scale[i])) {
          printf("FAIL %s matmul type %d %dx%d batch %d at %d: %.9g vs %.9g\n", name, type, nOut, nIn, batch, i, o2[i], o1[i]);
          failures++;
          break;
        }
      /* Q8_K input: bit-identical */
      if (type >= FT_Q4K) {
        ref->matmulk[type](o1, xq, w, nIn, nOut, batch, 0, nOut, s);
        p->matmulk[type](o2, xq, w, nIn, nOut, batch, 0, nOut, s);
        if (memcmp(o1, o2, sizeof(float) * (size_t)batch * nOut) != 0) {
          printf("FAIL %s matmulk type %d %dx%d batch %d\n", name, type, nOut, nIn, batch);
          failures++;
        }
      }
      free(w);
      free(x);
      free(xq);
      free(xq2);
      free(o1);
      free(o2);
      free(scale);
    }
  }
  printf("%s: checked\n", name);
}

int main(void) {
  kscratch s = {0};
  const kqops *ref = &k_kq_scalar;
#if defined(AIRLLM_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) check("avx2", &k_kq_avx2, ref, &s);
  if (__builtin_cpu_supports("avx512bw")) check("avx512", &k_kq_avx512, ref, &s);
  if (__builtin_cpu_supports("avx512vnni")) check("avx512vnni", &k_kq_avx512vnni, ref, &s);
#elif defined(AIRLLM_NEON)
#if defined(__ARM_FEATURE_DOTPROD)
  check("neon (dotprod)", &k_kq_neon, ref, &s);
#else
  check("neon", &k_kq_neon, ref, &s);
#endif
#endif
  free(s.buf);
  printf(failures ? "%d failures\n" : "all equal\n", failures);
  return failures != 0;
}
