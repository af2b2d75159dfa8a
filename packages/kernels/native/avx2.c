/*
 * AVX2 + FMA + F16C path. Every function carries the target attribute, so this file builds
 * into the same binary as the scalar path and only runs when CPU detection chose it.
 *
 * Matmul strategy (see README "Matmul kernels"), F32 input:
 * - batch <= 4 ("rows" kernels): SIMD lanes run along the input; each weight block is decoded
 *   once into registers and every batch row is multiplied against it.
 * - batch > 4 ("lanes" kernels): the activations are transposed once per call so SIMD lanes run
 *   along the batch (8 rows per register); each weight value is broadcast and feeds 8..32 batch
 *   rows at once. Either way a weight row is read from memory once per call.
 * Q80 input ("weight lanes", dllama's order, below): SIMD lanes run along 8 output rows;
 * unsigned x signed byte products (maddubs) on the nibble values 0..15 plus an exact integer
 * correction -8*sum(x), so block dots are exact integers.
 */
#include "kernels.h"

#if defined(AIRLLM_X86)
#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

INL float hsum8(__m256 v) {
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

INL float hmax8(__m256 v) {
  __m128 lo = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

/* Mask of the first n (0..8) lanes, for tails. */
INL __m256i tailmask8(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/*
 * exp(x), Cephes expf: x = n*ln2 + r with |r| <= ln2/2 (ln2 split in two constants), a degree-5
 * polynomial for e^r, scaled by 2^n through the exponent bits. Inputs below -87.3365 (where
 * e^x leaves the normal range) give 0, inputs above 88 are clamped to 88 (e^88 ~ 1.65e38, no
 * overflow to infinity), NaN stays NaN. Max relative error measured over [-87, 88]: see the
 * README (tests check it stays below EXP_REL).
 */
INL __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.33654475f);
  __m256 small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(88.0f), x); /* operand order keeps NaN */
  x = _mm256_max_ps(lo, x);
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 z = _mm256_mul_ps(x, x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, z, x);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(n));
  return _mm256_andnot_ps(small, y);
}

/* ---- element-wise ops ---- */

TGT float k_avx2_dot(const float *a, const float *b, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
  }
  for (; i < n; i += 8) {
    __m256i m = tailmask8(n - i);
    s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m), s0);
  }
  return hsum8(_mm256_add_ps(s0, s1));
}

TGT void k_avx2_axpy(float *y, const float *x, float a, size_t n) {
  __m256 av = _mm256_set1_ps(a);
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_mul_ps(_mm256_loadu_ps(x + i), av)));
  for (; i < n; i++) y[i] = y[i] + x[i] * a;
}

TGT void k_avx2_add(float *y, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
  for (; i < n; i++) y[i] = y[i] + x[i];
}

TGT float k_avx2_sumsq(const float *x, int n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    s0 = _mm256_fmadd_ps(a, a, s0);
    s1 = _mm256_fmadd_ps(b, b, s1);
  }
  for (; i < n; i += 8) {
    __m256 a = _mm256_maskload_ps(x + i, tailmask8(n - i));
    s0 = _mm256_fmadd_ps(a, a, s0);
  }
  return hsum8(_mm256_add_ps(s0, s1));
}

TGT void k_avx2_rmsscale(float *out, const float *x, const float *w, float s, int n) {
  __m256 sv = _mm256_set1_ps(s);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(sv, _mm256_loadu_ps(x + i))));
  for (; i < n; i++) out[i] = w[i] * (s * x[i]);
}

TGT void k_avx2_vexp(float *out, const float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, exp8(_mm256_loadu_ps(x + i)));
  if (i < n) {
    __m256i m = tailmask8((int)(n - i));
    _mm256_maskstore_ps(out + i, m, exp8(_mm256_maskload_ps(x + i, m)));
  }
}

TGT void k_avx2_softmax(float *x, int n) {
  __m256 mv = _mm256_set1_ps(x[0]);
  int i = 0;
  for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(_mm256_loadu_ps(x + i), mv);
  float max = hmax8(mv);
  for (; i < n; i++)
    if (x[i] > max) max = x[i];
  mv = _mm256_set1_ps(max);
  __m256 sv = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    _mm256_storeu_ps(x + i, e);
    sv = _mm256_add_ps(sv, e);
  }
  if (i < n) {
    __m256i m = tailmask8(n - i);
    __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), mv)), _mm256_castsi256_ps(m));
    _mm256_maskstore_ps(x + i, m, e);
    sv = _mm256_add_ps(sv, e);
  }
  __m256 sum = _mm256_set1_ps(hsum8(sv));
  for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), sum));
  float s = _mm256_cvtss_f32(sum);
  for (; i < n; i++) x[i] = x[i] / s;
}

TGT void k_avx2_swiglu(float *out, const float *g, const float *u, size_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 gv = _mm256_loadu_ps(g + i);
    __m256 silu = _mm256_mul_ps(gv, _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, neg)))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
  }
  if (i < n) {
    __m256i m = tailmask8((int)(n - i));
    __m256 gv = _mm256_maskload_ps(g + i, m);
    __m256 silu = _mm256_mul_ps(gv, _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_xor_ps(gv, neg)))));
    _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(silu, _mm256_maskload_ps(u + i, m)));
  }
}

/*
 * Q80 quantization, bit-identical to the reference: amax over |x| (NaN skipped, as the
 * reference's `a > amax` does), scalar d/id/f16 exactly as the scalar path, then x*id rounded
 * half to even by the rounding instruction (independent of MXCSR). Non-finite products give 0.
 */
TGT void k_avx2_quantize_q80(uint8_t *out, const float *x, size_t nBlocks) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 big = _mm256_set1_ps(1e9f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (size_t b = 0; b < nBlocks; b++) {
    const float *xb = x + b * QK;
    uint8_t *ob = out + b * Q80_BYTES;
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 4; j++) {
      v[j] = _mm256_loadu_ps(xb + 8 * j);
      m = _mm256_max_ps(_mm256_and_ps(v[j], absmask), m); /* NaN in the first operand -> m */
    }
    float id;
    uint16_t d16;
    k_q80_scale(hmax8(m), &id, &d16);
    ob[0] = (uint8_t)(d16 & 0xff);
    ob[1] = (uint8_t)(d16 >> 8);
    __m256 idv = _mm256_set1_ps(id);
    __m256i q[4];
    for (int j = 0; j < 4; j++) {
      __m256 r = _mm256_mul_ps(v[j], idv);
      r = _mm256_and_ps(r, _mm256_cmp_ps(_mm256_and_ps(r, absmask), big, _CMP_LE_OQ));
      q[j] = _mm256_cvtps_epi32(_mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i *)(ob + 2), _mm256_permutevar8x32_epi32(p, perm));
  }
}

TGT void k_avx2_dequantize_q80(float *out, const uint8_t *xq, size_t nBlocks) {
  for (size_t b = 0; b < nBlocks; b++) {
    const uint8_t *blk = xq + b * Q80_BYTES;
    __m256 d = _mm256_set1_ps(k_f16_to_f32(k_rd16(blk)));
    for (int j = 0; j < 4; j++) {
      __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * j)));
      _mm256_storeu_ps(out + b * QK + 8 * j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
    }
  }
}

/*
 * Read probe over `streams` equal parts of the buffer read in lockstep (128 bytes of each part in
 * turn), like the matmul kernels that walk several distant weight rows at once: the hardware
 * prefetchers follow each sequential stream, so one core keeps more lines in flight with a few
 * streams than with one. streams == 1 is the plain sequential read.
 */
TGT uint64_t k_avx2_readsum(const uint8_t *p, size_t n, int streams) {
  __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
  size_t part = n / (size_t)streams / 128 * 128;
  for (size_t i = 0; i < part; i += 128) {
    for (int s = 0; s < streams; s++) {
      const uint8_t *q = p + (size_t)s * part + i;
      _mm_prefetch((const char *)(q + K_PREFETCH_BYTES), _MM_HINT_T0);
      _mm_prefetch((const char *)(q + K_PREFETCH_BYTES + 64), _MM_HINT_T0);
      a = _mm256_add_epi64(a, _mm256_loadu_si256((const __m256i *)q));
      b = _mm256_add_epi64(b, _mm256_loadu_si256((const __m256i *)(q + 32)));
      c = _mm256_add_epi64(c, _mm256_loadu_si256((const __m256i *)(q + 64)));
      d = _mm256_add_epi64(d, _mm256_loadu_si256((const __m256i *)(q + 96)));
    }
  }
  a = _mm256_add_epi64(_mm256_add_epi64(a, b), _mm256_add_epi64(c, d));
  uint64_t t[4];
  _mm256_storeu_si256((__m256i *)t, a);
  uint64_t sum = t[0] + t[1] + t[2] + t[3];
  for (size_t i = (size_t)streams * part; i < n; i++) sum += p[i];
  return sum;
}

/* ---- weight decoding ---- */

/* Q40 block -> 32 floats (q - 8) * d, exactly the reference's decoded values. */
INL void dec_q40(const uint8_t *blk, __m256 *w) {
  __m256 d = _mm256_set1_ps(_cvtsh_ss(k_rd16(blk)));
  __m128i q = _mm_loadu_si128((const __m128i *)(blk + 2));
  __m128i lo = _mm_and_si128(q, _mm_set1_epi8(0x0f));
  __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), _mm_set1_epi8(0x0f));
  const __m256 eight = _mm256_set1_ps(8.0f);
  w[0] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), eight), d);
  w[1] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), eight), d);
  w[2] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), eight), d);
  w[3] = _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), eight), d);
}

INL void dec_q80(const uint8_t *blk, __m256 *w) {
  __m256 d = _mm256_set1_ps(_cvtsh_ss(k_rd16(blk)));
  for (int j = 0; j < 4; j++)
    w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + 8 * j)))), d);
}

/* 32 weights starting at element i of a row (n valid, n <= 32; the rest is zero). */
INL void dec_chunk(int type, const uint8_t *row, int i, int n, __m256 *w) {
  if (type == FT_Q40) {
    dec_q40(row + (size_t)(i / QK) * Q40_BYTES, w);
  } else if (type == FT_Q80) {
    dec_q80(row + (size_t)(i / QK) * Q80_BYTES, w);
  } else if (type == FT_F32) {
    const float *f = (const float *)(const void *)row + i;
    for (int j = 0; j < 4; j++) {
      int m = n - 8 * j;
      w[j] = m >= 8 ? _mm256_loadu_ps(f + 8 * j) : m > 0 ? _mm256_maskload_ps(f + 8 * j, tailmask8(m)) : _mm256_setzero_ps();
    }
  } else {
    const uint8_t *h = row + (size_t)i * 2;
    for (int j = 0; j < 4; j++) {
      int m = n - 8 * j;
      if (m >= 8) {
        w[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + 16 * j)));
      } else if (m > 0) {
        uint16_t tmp[8] = {0};
        memcpy(tmp, h + 16 * j, (size_t)m * 2);
        w[j] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp));
      } else {
        w[j] = _mm256_setzero_ps();
      }
    }
  }
}

/* x[i .. i+32) with n valid values (zero past them). */
INL void load_x32(const float *x, int n, __m256 *v) {
  for (int j = 0; j < 4; j++) {
    int m = n - 8 * j;
    v[j] = m >= 8 ? _mm256_loadu_ps(x + 8 * j) : m > 0 ? _mm256_maskload_ps(x + 8 * j, tailmask8(m)) : _mm256_setzero_ps();
  }
}

/* ---- F32-input matmul, batch <= 4: lanes along the input ---- */
INL void mm_rows(int type, int B, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int b0, int r0,
                 int r1) {
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  for (int r = r0; r < r1; r++) {
    const uint8_t *row = w + (size_t)r * rowBytes;
    /* 4 independent FMA chains per batch row when B <= 2, 2 otherwise (register budget). */
    const int U = B <= 2 ? 4 : 2;
    __m256 acc[4][4];
    for (int b = 0; b < B; b++)
      for (int u = 0; u < 4; u++) acc[b][u] = _mm256_setzero_ps();
    for (int i = 0; i < nIn; i += 32) {
      int n = nIn - i < 32 ? nIn - i : 32;
      for (size_t o = 0; o < k_row_bytes(type, 32); o += 64)
        _mm_prefetch((const char *)(row + k_row_bytes(type, (size_t)i) + K_PREFETCH_BYTES + o), _MM_HINT_T0);
      __m256 wv[4];
      dec_chunk(type, row, i, n, wv);
      for (int b = 0; b < B; b++) {
        __m256 xv[4];
        load_x32(x + (size_t)(b0 + b) * nIn + i, n, xv);
        for (int j = 0; j < 4; j++) acc[b][j % U] = _mm256_fmadd_ps(wv[j], xv[j], acc[b][j % U]);
      }
    }
    for (int b = 0; b < B; b++)
      out[(size_t)(b0 + b) * nOut + r] =
          hsum8(_mm256_add_ps(_mm256_add_ps(acc[b][0], acc[b][1]), _mm256_add_ps(acc[b][2], acc[b][3])));
  }
}

/* ---- F32-input matmul, batch > 4: lanes along the batch (8 rows per register) ---- */

/* A tile of R (1..4) weight rows x BT (1..2) registers of 8 batch rows, starting at lane lane0. */
INL void mm_lanes_tile(int type, int R, int BT, float *out, const float *xT, int NL, int lane0, const uint8_t *w,
                       int nIn, int nOut, int b0, int nrows, int r) {
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  __m256 acc[4][2];
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm256_setzero_ps();
  for (int i = 0; i < nIn; i += 32) {
    int n = nIn - i < 32 ? nIn - i : 32;
    float wbuf[4][32] __attribute__((aligned(32)));
    for (int rr = 0; rr < R; rr++) {
      __m256 wv[4];
      dec_chunk(type, w + (size_t)(r + rr) * rowBytes, i, n, wv);
      for (int j = 0; j < 4; j++) _mm256_store_ps(wbuf[rr] + 8 * j, wv[j]);
    }
    for (int e = 0; e < n; e++) {
      const float *xe = xT + (size_t)(i + e) * NL + lane0;
      __m256 xv[2];
      for (int bt = 0; bt < BT; bt++) xv[bt] = _mm256_load_ps(xe + 8 * bt);
      for (int rr = 0; rr < R; rr++) {
        __m256 wb = _mm256_broadcast_ss(&wbuf[rr][e]);
        for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm256_fmadd_ps(wb, xv[bt], acc[rr][bt]);
      }
    }
  }
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) {
      float t[8] __attribute__((aligned(32)));
      _mm256_store_ps(t, acc[rr][bt]);
      int first = lane0 + 8 * bt;
      for (int j = 0; j < 8 && first + j < nrows; j++) out[(size_t)(b0 + first + j) * nOut + r + rr] = t[j];
    }
}

/* Rows outer, batch tiles of 16 inner, so a tile of 4 weight rows stays in L1 while every batch
 * tile runs against it (4 rows x 2 registers: 8 FMAs per 2 activation loads and 4 broadcasts). */
INL void mm_lanes(int type, float *out, const float *xT, int NL, const uint8_t *w, int nIn, int nOut, int b0,
                  int nrows, int r0, int r1) {
  for (int r = r0; r < r1; r += 4) {
    int R = r1 - r < 4 ? r1 - r : 4;
    for (int lane0 = 0; lane0 < NL; lane0 += 16) {
      int two = NL - lane0 >= 16;
      if (R == 4) {
        if (two) mm_lanes_tile(type, 4, 2, out, xT, NL, lane0, w, nIn, nOut, b0, nrows, r);
        else mm_lanes_tile(type, 4, 1, out, xT, NL, lane0, w, nIn, nOut, b0, nrows, r);
      } else {
        for (int rr = 0; rr < R; rr++) {
          if (two) mm_lanes_tile(type, 1, 2, out, xT, NL, lane0, w, nIn, nOut, b0, nrows, r + rr);
          else mm_lanes_tile(type, 1, 1, out, xT, NL, lane0, w, nIn, nOut, b0, nrows, r + rr);
        }
      }
    }
  }
}

#define SUPER_ROWS 256 /* batch rows prepared per pass over the weights */

INL void mm_f32in(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                  kscratch *s) {
  const float *x = (const float *)xv;
  if (batch <= 4) {
    switch (batch) {
      case 1: mm_rows(type, 1, out, x, w, nIn, nOut, 0, r0, r1); break;
      case 2: mm_rows(type, 2, out, x, w, nIn, nOut, 0, r0, r1); break;
      case 3: mm_rows(type, 3, out, x, w, nIn, nOut, 0, r0, r1); break;
      default: mm_rows(type, 4, out, x, w, nIn, nOut, 0, r0, r1); break;
    }
    return;
  }
  int maxRows = batch < SUPER_ROWS ? batch : SUPER_ROWS;
  float *xT = (float *)kscratch_get(s, (size_t)nIn * (size_t)((maxRows + 7) / 8 * 8) * sizeof(float));
  if (xT == NULL) return;
  for (int b0 = 0; b0 < batch; b0 += SUPER_ROWS) {
    int nrows = batch - b0 < SUPER_ROWS ? batch - b0 : SUPER_ROWS;
    int NL = (nrows + 7) / 8 * 8;
    k_prep_f32_lanes(x, nIn, b0, nrows, NL, xT);
    mm_lanes(type, out, xT, NL, w, nIn, nOut, b0, nrows, r0, r1);
  }
}

static TGT void mm_f32(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_f32in(FT_F32, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mm_f16(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_f32in(FT_F16, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mm_q40(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_f32in(FT_Q40, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mm_q80(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mm_f32in(FT_Q80, o, x, w, nIn, nOut, B, r0, r1, s);
}

/* ---- Q80-input matmul ---- */

/*
 * dllama's exact arithmetic: each output is the chain acc = fma(float(block dot), dw * dx, acc)
 * over its blocks in order, so SIMD lanes run along the output rows (see the AVX-512 "weight
 * lanes" kernel in avx512_tmpl.h for the idea): per block, the 8 rows of a tile are transposed
 * so that lane i holds row i (2 x 4 rows into the 128-bit halves of 4 registers, 8 unpacks),
 * and every batch row meets them with vpmaddubsw (Q40 nibbles 0..15 x int8: 8 quads summed in
 * int16 cannot overflow; the -8 * sum(x) correction seeds the int32 sum) or, for Q80 weights,
 * with vpmaddwd on both sides sign-extended to int16 (exact, no saturation anywhere). The 8 scales
 * come from one gather. Batches above WL_BT rows go through chunks of WL_KC blocks whose
 * transposed weights are kept in a buffer for the other batch tiles; the accumulators pass from
 * chunk to chunk through the output, so the bits are those of one pass.
 */
#define WL_BT 4
#define WL_KC 64

typedef struct {
  __m256i q[16]; /* Q40: quad t of each row (unsigned bytes); Q80: even / odd bytes of quad t as int16 */
  __m256 dw;
} wl_blk;

typedef struct {
  int32_t *corr; /* (batch, nb) -8 * sum of the block's activation bytes (Q40), else 0 */
  float *dx;     /* (batch, nb) */
  int32_t *xs16; /* Q80 weights: (batch, nb, 16) even / odd activation byte pairs as int16 */
  wl_blk *buf;   /* WL_KC transposed blocks */
} wl_prep;

static inline int32_t ld32(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

static int wl_prepare(kscratch *s, int type, const uint8_t *xq, int nb, int batch, wl_prep *p) {
  size_t n = (size_t)batch * nb;
  size_t bufB = k_align64((size_t)WL_KC * sizeof(wl_blk));
  size_t cB = k_align64(n * 4), xB = type == FT_Q80 ? k_align64(n * 64) : 0;
  uint8_t *m = (uint8_t *)kscratch_get(s, bufB + 2 * cB + xB);
  if (m == NULL) return 0;
  p->buf = (wl_blk *)(void *)m;
  p->corr = (int32_t *)(void *)(m + bufB);
  p->dx = (float *)(void *)(m + bufB + cB);
  p->xs16 = (int32_t *)(void *)(m + bufB + 2 * cB);
  for (size_t i = 0; i < n; i++) {
    const uint8_t *blk = xq + i * Q80_BYTES;
    int sum = 0;
    for (int j = 0; j < QK; j++) sum += (int8_t)blk[2 + j];
    p->corr[i] = type == FT_Q40 ? -8 * sum : 0;
    p->dx[i] = k_f16_to_f32(k_rd16(blk));
    if (type == FT_Q80)
      for (int t = 0; t < 8; t++) {
        const int8_t *q = (const int8_t *)blk + 2 + 4 * t;
        p->xs16[i * 16 + 2 * t] = (int32_t)(((uint32_t)(uint16_t)q[2] << 16) | (uint16_t)q[0]);
        p->xs16[i * 16 + 2 * t + 1] = (int32_t)(((uint32_t)(uint16_t)q[3] << 16) | (uint16_t)q[1]);
      }
  }
  return 1;
}

/* 16 bytes at each of p[0..7] -> T[0..3], lane i of T[j] = dword j of p[i] */
INL void t8x4(const uint8_t *const *p, __m256i *T) {
  __m256i z[4];
  for (int g = 0; g < 4; g++) /* z[g] = [row g | row 4 + g] */
    z[g] = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p[g])),
                                   _mm_loadu_si128((const __m128i *)p[4 + g]), 1);
  __m256i t0 = _mm256_unpacklo_epi32(z[0], z[1]), t1 = _mm256_unpackhi_epi32(z[0], z[1]);
  __m256i t2 = _mm256_unpacklo_epi32(z[2], z[3]), t3 = _mm256_unpackhi_epi32(z[2], z[3]);
  T[0] = _mm256_unpacklo_epi64(t0, t2);
  T[1] = _mm256_unpackhi_epi64(t0, t2);
  T[2] = _mm256_unpacklo_epi64(t1, t3);
  T[3] = _mm256_unpackhi_epi64(t1, t3);
}

/* Block k (byte offset koff in each row) of the tile's 8 rows, transposed into o. */
INL void wl_block(int type, const uint8_t *const *rowp, size_t koff, __m256i gidx, wl_blk *o) {
  const uint8_t *p[8];
  for (int i = 0; i < 8; i++) p[i] = rowp[i] + koff + 2;
  __m256i T[4];
  t8x4(p, T);
  if (type == FT_Q40) {
    const __m256i m = _mm256_set1_epi8(0x0f);
    for (int j = 0; j < 4; j++) {
      o->q[j] = _mm256_and_si256(T[j], m);
      o->q[4 + j] = _mm256_and_si256(_mm256_srli_epi16(T[j], 4), m);
    }
  } else {
    __m256i T2[4];
    for (int i = 0; i < 8; i++) p[i] += 16;
    t8x4(p, T2);
    for (int j = 0; j < 4; j++) {
      o->q[2 * j] = _mm256_srai_epi16(_mm256_slli_epi16(T[j], 8), 8);
      o->q[2 * j + 1] = _mm256_srai_epi16(T[j], 8);
      o->q[8 + 2 * j] = _mm256_srai_epi16(_mm256_slli_epi16(T2[j], 8), 8);
      o->q[8 + 2 * j + 1] = _mm256_srai_epi16(T2[j], 8);
    }
  }
  /* the gathered dwords hold d and two data bytes; d is their low half */
  __m256i g = _mm256_i32gather_epi32((const int *)(const void *)(rowp[0] + koff), gidx, 1);
  g = _mm256_and_si256(g, _mm256_set1_epi32(0xffff));
  g = _mm256_permute4x64_epi64(_mm256_packus_epi32(g, g), 0x08);
  o->dw = _mm256_cvtph_ps(_mm256_castsi256_si128(g));
}

/* The 8 block dots of one batch row (its Q80 block at xb), as floats. */
INL __m256 wl_dot(int type, const wl_blk *W, const uint8_t *xb, int32_t corr, const int32_t *xs16) {
  if (type == FT_Q40) {
    /* int16 sums of all 8 quads stay exact: |sum| <= 8 * 2 * 15 * 128 < 32768 */
    __m256i s0 = _mm256_maddubs_epi16(W->q[0], _mm256_set1_epi32(ld32(xb + 2)));
    __m256i s1 = _mm256_maddubs_epi16(W->q[1], _mm256_set1_epi32(ld32(xb + 6)));
    for (int t = 2; t < 8; t += 2) {
      s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(W->q[t], _mm256_set1_epi32(ld32(xb + 2 + 4 * t))));
      s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(W->q[t + 1], _mm256_set1_epi32(ld32(xb + 6 + 4 * t))));
    }
    __m256i is = _mm256_madd_epi16(_mm256_add_epi16(s0, s1), _mm256_set1_epi16(1));
    return _mm256_cvtepi32_ps(_mm256_add_epi32(is, _mm256_set1_epi32(corr)));
  }
  __m256i i0 = _mm256_setzero_si256(), i1 = _mm256_setzero_si256();
  for (int t = 0; t < 16; t += 2) {
    i0 = _mm256_add_epi32(i0, _mm256_madd_epi16(W->q[t], _mm256_set1_epi32(xs16[t])));
    i1 = _mm256_add_epi32(i1, _mm256_madd_epi16(W->q[t + 1], _mm256_set1_epi32(xs16[t + 1])));
  }
  return _mm256_cvtepi32_ps(_mm256_add_epi32(i0, i1));
}

INL __m256i lanemask8(int n) { return tailmask8(n); }

/* Batch rows [b0, b0 + B) of the tile at row r (n valid lanes) over blocks [kc, kc + kn). mode:
 * 0 transpose each block, 1 also keep it in the chunk buffer, 2 read it from there. */
INL void wl_run(int type, int B, int mode, float *out, const uint8_t *xq, const wl_prep *p, const uint8_t *const *rowp,
                __m256i gidx, int nv, int nb, int nOut, int r, int b0, int kc, int kn, int fresh) {
  const int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  const __m256i mask = lanemask8(nv);
  __m256 acc[WL_BT];
#pragma GCC unroll 4
  for (int b = 0; b < B; b++)
    acc[b] = fresh ? _mm256_setzero_ps() : _mm256_maskload_ps(out + (size_t)(b0 + b) * nOut + r, mask);
  /* the next tile (8 adjacent rows, one contiguous region) is fetched into L2 as one linear stream
   * while this one computes, as in the AVX-512 kernel */
  const uint8_t *next = rowp[0] + 8 * (size_t)nb * bb;
  const size_t per = (8 * (size_t)bb + 63) / 64 * 64;
  for (int k = kc; k < kc + kn; k++) {
    if (mode != 2)
      for (size_t o = 0; o < per; o += 64) _mm_prefetch((const char *)(next + (size_t)k * per + o), _MM_HINT_T1);
    wl_blk W;
    if (mode == 2) W = p->buf[k - kc];
    else wl_block(type, rowp, (size_t)k * bb, gidx, &W);
    if (mode == 1) p->buf[k - kc] = W;
#pragma GCC unroll 4
    for (int b = 0; b < B; b++) {
      size_t bk = (size_t)(b0 + b) * nb + k;
      __m256 f = wl_dot(type, &W, xq + bk * Q80_BYTES, p->corr[bk], p->xs16 + bk * 16);
      acc[b] = _mm256_fmadd_ps(f, _mm256_mul_ps(W.dw, _mm256_set1_ps(p->dx[bk])), acc[b]);
    }
  }
#pragma GCC unroll 4
  for (int b = 0; b < B; b++) _mm256_maskstore_ps(out + (size_t)(b0 + b) * nOut + r, mask, acc[b]);
}

#define WL_RUN(BN, MODE, ...)                                                                                         \
  switch (BN) {                                                                                                       \
    case 1: wl_run(type, 1, MODE, __VA_ARGS__); break;                                                                \
    case 2: wl_run(type, 2, MODE, __VA_ARGS__); break;                                                                \
    case 3: wl_run(type, 3, MODE, __VA_ARGS__); break;                                                                \
    default: wl_run(type, 4, MODE, __VA_ARGS__); break;                                                               \
  }

INL void mmq(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
             kscratch *s) {
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  wl_prep p;
  if (!wl_prepare(s, type, xq, nb, batch, &p)) return;
  const size_t rowBytes = (size_t)nb * (type == FT_Q40 ? Q40_BYTES : Q80_BYTES);
  for (int r = r0; r < r1; r += 8) {
    int nv = r1 - r < 8 ? r1 - r : 8;
    const uint8_t *rowp[8];
    int32_t gi[8] __attribute__((aligned(32)));
    for (int i = 0; i < 8; i++) {
      int ii = i < nv ? i : nv - 1; /* lanes past the range repeat its last row, never stored */
      rowp[i] = w + (size_t)(r + ii) * rowBytes;
      gi[i] = (int32_t)((size_t)ii * rowBytes);
    }
    __m256i gidx = _mm256_load_si256((const __m256i *)gi);
    if (batch <= WL_BT) {
      WL_RUN(batch, 0, out, xq, &p, rowp, gidx, nv, nb, nOut, r, 0, 0, nb, 1)
      continue;
    }
    for (int kc = 0; kc < nb; kc += WL_KC) {
      int kn = nb - kc < WL_KC ? nb - kc : WL_KC;
      for (int b0 = 0; b0 < batch; b0 += WL_BT) {
        int bn = batch - b0 < WL_BT ? batch - b0 : WL_BT;
        if (b0 == 0) {
          WL_RUN(bn, 1, out, xq, &p, rowp, gidx, nv, nb, nOut, r, b0, kc, kn, kc == 0)
        } else {
          WL_RUN(bn, 2, out, xq, &p, rowp, gidx, nv, nb, nOut, r, b0, kc, kn, kc == 0)
        }
      }
    }
  }
}
#undef WL_RUN

static TGT void mmq_q40(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mmq(FT_Q40, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mmq_q80(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  mmq(FT_Q80, o, x, w, nIn, nOut, B, r0, r1, s);
}

static const kpath AVX2 = {
    .name = "avx2",
    .features = "avx2,fma,f16c",
    .matmul = {mm_f32, mm_f16, mm_q40, mm_q80},
    .matmulq = {NULL, NULL, mmq_q40, mmq_q80},
    K_AVX2_VECTOR_OPS,
};

const kpath *kpath_avx2(void) { return &AVX2; }

#endif
