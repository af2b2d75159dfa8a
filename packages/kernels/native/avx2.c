/*
 * AVX2 + FMA + F16C path. Every function carries the target attribute, so this file builds
 * into the same binary as the scalar path and only runs when CPU detection chose it.
 *
 * Matmul strategy (see README "Matmul kernels"):
 * - batch <= 4 ("rows" kernels): SIMD lanes run along the input; each weight block is decoded
 *   once into registers and every batch row is multiplied against it.
 * - batch > 4 ("lanes" kernels): the activations are transposed once per call so SIMD lanes run
 *   along the batch (8 rows per register); each weight value is broadcast and feeds 8..32 batch
 *   rows at once. Either way a weight row is read from memory once per call.
 * Q80 input: unsigned x signed byte products (maddubs) on the nibble values 0..15 plus an exact
 * integer correction -8*sum(x) prepared with the activations, so block dots are exact integers.
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

/* f16 scales d of up to 8 consecutive blocks (stride bytes apart), as floats; lanes >= n are 0. */
INL __m256 gather_d8(const uint8_t *blk0, int stride, int n) {
  __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
  __m256i g = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), (const int *)(const void *)blk0, idx, tailmask8(n), 1);
  g = _mm256_and_si256(g, _mm256_set1_epi32(0xffff));
  g = _mm256_permute4x64_epi64(_mm256_packus_epi32(g, g), 0x08);
  return _mm256_cvtph_ps(_mm256_castsi256_si128(g));
}

/* Nibbles of a Q40 block as 32 unsigned bytes 0..15 in element order (low nibbles, then high). */
INL __m256i q40_nibbles(const uint8_t *blk) {
  __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)));
  return _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
}

typedef struct {
  int8_t *qs;
  int32_t *corr;
  float *dx;
} rows_prep;

static int prep_rows(kscratch *s, const uint8_t *xq, int nb, int nrows, int off, rows_prep *p) {
  size_t qsB = k_align64((size_t)nrows * nb * QK), cB = k_align64((size_t)nrows * nb * 32);
  size_t dB = k_align64((size_t)nrows * (nb + DX_PAD) * 4);
  uint8_t *m = (uint8_t *)kscratch_get(s, qsB + cB + dB);
  if (m == NULL) return 0;
  p->qs = (int8_t *)m;
  p->corr = (int32_t *)(void *)(m + qsB);
  p->dx = (float *)(void *)(m + qsB + cB);
  k_prep_q80_rows(xq, nb, nrows, off, off, p->qs, p->corr, p->dx);
  return 1;
}

/* One Q40 block k of a row against B batch rows, into accumulator column u. */
INL void q40_block_rows(int B, const rows_prep *p, const uint8_t *row, int nb, int b0, int k, const float (*sc)[8],
                        int j, __m256 (*acc)[4], int u) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i wq = q40_nibbles(row + (size_t)k * Q40_BYTES);
  for (int b = 0; b < B; b++) {
    size_t bk = (size_t)(b0 + b) * nb + k;
    __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(wq, _mm256_load_si256((const __m256i *)(p->qs + bk * QK))), ones);
    d = _mm256_add_epi32(d, _mm256_load_si256((const __m256i *)(p->corr + bk * 8)));
    acc[b][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_broadcast_ss(&sc[b][j]), acc[b][u]);
  }
}

/* One Q80 block: both sides sign-extended to int16 and multiplied exactly (madd). */
INL void q80_block_rows(int B, const rows_prep *p, const uint8_t *row, int nb, int b0, int k, const float (*sc)[8],
                        int j, __m256 (*acc)[4], int u) {
  const uint8_t *blk = row + (size_t)k * Q80_BYTES;
  __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
  __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
  for (int b = 0; b < B; b++) {
    const int8_t *xq = p->qs + ((size_t)(b0 + b) * nb + k) * QK;
    __m256i x0 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)xq));
    __m256i x1 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(xq + 16)));
    __m256i d = _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
    acc[b][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_broadcast_ss(&sc[b][j]), acc[b][u]);
  }
}

/*
 * Q40/Q80 weights x Q80 input, batch <= 4: per group of 8 blocks the weight scales are
 * gathered and multiplied by each row's dx once; U accumulators per (row, batch row) hide the
 * FMA latency (the group loop is unrolled so accumulator indices are constants). S distant rows
 * (r, r + step, ...) are computed together: S sequential weight streams, which the hardware
 * prefetchers follow in parallel, get more bytes from DRAM per core than one. U depends on B
 * only, so a row's result does not depend on the tile it falls in.
 */
INL void mmq_tile(int type, int B, int S, float *out, const rows_prep *p, const uint8_t *w, int nb, int nOut, int b0,
                  int r, int step) {
  const int U = B == 1 ? 2 : 1;
  const int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  const int pf = S == 1 ? K_PREFETCH_BYTES : K_PREFETCH_Q40;
  const uint8_t *rows[4];
  __m256 acc[4][4][4];
  for (int s = 0; s < S; s++) {
    rows[s] = w + (size_t)(r + s * step) * nb * bb;
    for (int b = 0; b < B; b++)
      for (int u = 0; u < 4; u++) acc[s][b][u] = _mm256_setzero_ps();
  }
  for (int kg = 0; kg < nb; kg += 8) {
    int m = nb - kg < 8 ? nb - kg : 8;
    float sc[4][4][8] __attribute__((aligned(32)));
    for (int s = 0; s < S; s++) {
      const uint8_t *g = rows[s] + (size_t)kg * bb;
      for (int o = 0; o < 8 * bb; o += 64) _mm_prefetch((const char *)(g + pf + o), _MM_HINT_T0);
      __m256 dw = gather_d8(g, bb, m);
      for (int b = 0; b < B; b++)
        _mm256_store_ps(sc[s][b], _mm256_mul_ps(dw, _mm256_loadu_ps(p->dx + (size_t)(b0 + b) * (nb + DX_PAD) + kg)));
    }
    if (m == 8) {
#pragma GCC unroll 8
      for (int j = 0; j < 8; j++)
        for (int s = 0; s < S; s++) {
          if (type == FT_Q40) q40_block_rows(B, p, rows[s], nb, b0, kg + j, (const float(*)[8])sc[s], j, acc[s], j % U);
          else q80_block_rows(B, p, rows[s], nb, b0, kg + j, (const float(*)[8])sc[s], j, acc[s], j % U);
        }
    } else {
      for (int j = 0; j < m; j++)
        for (int s = 0; s < S; s++) {
          if (type == FT_Q40) q40_block_rows(B, p, rows[s], nb, b0, kg + j, (const float(*)[8])sc[s], j, acc[s], 0);
          else q80_block_rows(B, p, rows[s], nb, b0, kg + j, (const float(*)[8])sc[s], j, acc[s], 0);
        }
    }
  }
  for (int s = 0; s < S; s++)
    for (int b = 0; b < B; b++)
      out[(size_t)(b0 + b) * nOut + r + s * step] =
          hsum8(_mm256_add_ps(_mm256_add_ps(acc[s][b][0], acc[s][b][1]), _mm256_add_ps(acc[s][b][2], acc[s][b][3])));
}

INL void mmq_rows(int type, int B, int S, float *out, const rows_prep *p, const uint8_t *w, int nb, int nOut, int b0,
                  int r0, int r1) {
  int part = (r1 - r0) / S;
  for (int i = 0; i < part; i++) mmq_tile(type, B, S, out, p, w, nb, nOut, b0, r0 + i, part);
  for (int r = r0 + S * part; r < r1; r++) mmq_tile(type, B, 1, out, p, w, nb, nOut, b0, r, 0);
}

/* Q40 x Q80, batch > 4: lanes along the batch, a tile of R weight rows x BT registers
 * of 8 batch rows. Per block, 8 broadcast quads of nibbles meet 8 quads of every batch row;
 * int16 partial sums stay exact (8 * 2 * 15 * 128 < 32768) and are widened once per block. */
INL void mmq40_lanes_tile(int R, int BT, float *out, const int32_t *xT, const int32_t *corrT, const float *dxT, int NL,
                          int lane0, const uint8_t *w, int nb, int nOut, int b0, int nrows, int r) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[2][4];
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm256_setzero_ps();
  for (int k = 0; k < nb; k++) {
    int32_t wq[2][8] __attribute__((aligned(32)));
    float dw[2];
    for (int rr = 0; rr < R; rr++) {
      const uint8_t *blk = w + ((size_t)(r + rr) * nb + k) * Q40_BYTES;
      _mm256_store_si256((__m256i *)wq[rr], q40_nibbles(blk));
      dw[rr] = _cvtsh_ss(k_rd16(blk));
    }
    __m256i s16[2][4];
    for (int rr = 0; rr < R; rr++)
      for (int bt = 0; bt < BT; bt++) s16[rr][bt] = _mm256_setzero_si256();
    const int32_t *xk = xT + (size_t)k * 8 * NL + lane0;
    for (int t = 0; t < 8; t++) {
      __m256i xv[4];
      for (int bt = 0; bt < BT; bt++) xv[bt] = _mm256_load_si256((const __m256i *)(xk + (size_t)t * NL + 8 * bt));
      for (int rr = 0; rr < R; rr++) {
        __m256i wt = _mm256_set1_epi32(wq[rr][t]);
        for (int bt = 0; bt < BT; bt++) s16[rr][bt] = _mm256_add_epi16(s16[rr][bt], _mm256_maddubs_epi16(wt, xv[bt]));
      }
    }
    for (int bt = 0; bt < BT; bt++) {
      __m256i c = _mm256_load_si256((const __m256i *)(corrT + (size_t)k * NL + lane0 + 8 * bt));
      __m256 dx = _mm256_load_ps(dxT + (size_t)k * NL + lane0 + 8 * bt);
      for (int rr = 0; rr < R; rr++) {
        __m256i d = _mm256_add_epi32(_mm256_madd_epi16(s16[rr][bt], ones), c);
        acc[rr][bt] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(_mm256_set1_ps(dw[rr]), dx), acc[rr][bt]);
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

INL void mmq40_lanes(float *out, const int32_t *xT, const int32_t *corrT, const float *dxT, int NL, const uint8_t *w,
                     int nb, int nOut, int b0, int nrows, int r0, int r1) {
  /* one weight row x up to 4 registers (32 batch rows): the register budget of AVX2 */
  for (int r = r0; r < r1; r++) {
    for (int lane0 = 0; lane0 < NL; lane0 += 32) {
      switch ((NL - lane0) / 8 < 4 ? (NL - lane0) / 8 : 4) {
        case 1: mmq40_lanes_tile(1, 1, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, b0, nrows, r); break;
        case 2: mmq40_lanes_tile(1, 2, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, b0, nrows, r); break;
        case 3: mmq40_lanes_tile(1, 3, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, b0, nrows, r); break;
        default: mmq40_lanes_tile(1, 4, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, b0, nrows, r); break;
      }
    }
  }
}

/* Q80-input matmul driver: rows kernels for small batches (and, for Q80 weights, in groups of
 * 4 batch rows with the row hot in L1), lanes kernels for larger Q40 batches. */
INL void mmq(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
             kscratch *s) {
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  if (type == FT_Q40 && batch > 4) {
    int maxNL = ((batch < SUPER_ROWS ? batch : SUPER_ROWS) + 7) / 8 * 8;
    size_t xB = k_align64((size_t)nb * 8 * maxNL * 4), cB = k_align64((size_t)nb * maxNL * 4);
    uint8_t *m = (uint8_t *)kscratch_get(s, xB + 2 * cB);
    if (m == NULL) return;
    int32_t *xT = (int32_t *)(void *)m;
    int32_t *corrT = (int32_t *)(void *)(m + xB);
    float *dxT = (float *)(void *)(m + xB + cB);
    for (int b0 = 0; b0 < batch; b0 += SUPER_ROWS) {
      int nrows = batch - b0 < SUPER_ROWS ? batch - b0 : SUPER_ROWS;
      int NL = (nrows + 7) / 8 * 8;
      k_prep_q80_lanes(xq, nb, b0, nrows, NL, 8, xT, corrT, dxT);
      mmq40_lanes(out, xT, corrT, dxT, NL, w, nb, nOut, b0, nrows, r0, r1);
    }
    return;
  }
  rows_prep p;
  if (!prep_rows(s, xq, nb, batch, type == FT_Q40 ? 8 : 0, &p)) return;
  if (batch <= 4) {
    /* row streams as measured best on 11008x4096 from DRAM (1.2-1.5x over one stream) */
    switch (batch) {
      case 1: mmq_rows(type, 1, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
      case 2: mmq_rows(type, 2, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
      case 3: mmq_rows(type, 3, 2, out, &p, w, nb, nOut, 0, r0, r1); break;
      default: mmq_rows(type, 4, 2, out, &p, w, nb, nOut, 0, r0, r1); break;
    }
    return;
  }
  /* Q80 weights, batch > 4: per row, groups of 4 batch rows (the row stays in L1). */
  for (int r = r0; r < r1; r++) {
    int b0 = 0;
    for (; b0 + 4 <= batch; b0 += 4) mmq_rows(FT_Q80, 4, 1, out, &p, w, nb, nOut, b0, r, r + 1);
    for (; b0 < batch; b0++) mmq_rows(FT_Q80, 1, 1, out, &p, w, nb, nOut, b0, r, r + 1);
  }
}

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
    .kq = &k_kq_avx2,
};

const kpath *kpath_avx2(void) { return &AVX2; }

#endif
