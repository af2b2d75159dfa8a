/*
 * BF16 and K-quant kernels for the x86-64 paths: AVX2 here, AVX-512 and AVX-512 VNNI from
 * kquants_avx512_tmpl.h. Numerics as kquants.h: Q8_K-input results are bit-identical to the
 * reference on every path; F32-input results decode the reference's weights exactly and differ
 * only in the order of the float32 sum.
 */
#include "kquants.h"

#if defined(AIRLLM_X86)
#include <immintrin.h>

#define KQ_SUPER_ROWS 256 /* batch rows prepared per pass over the weights (lanes kernels) */
/* Largest batch of the AVX-512 rows kernels (above: lanes kernels). Q4_K x Q8_K on 11008x4096,
 * loaded VM, minima of 12 calls: rows 3.6 / 4.4 / 5.0 / 5.9 ms at batch 4-7, lanes 6.5-10.5 ms
 * at 5-16 in runs minutes apart (about flat in the batch). */
#define KQ_ROWS_MAX 7

/* Q8_K rows b0..b0+nrows-1 in the lanes layout: for block k and quad t, NL int32 holding bytes
 * 4t..4t+3 of each row (zero past the last row); the 16 per-16 sums as 8 int16 pairs per lane;
 * the scales as floats. */
static void kq_prep_lanes(const uint8_t *xq, int nb, int b0, int nrows, int NL, int32_t *xT, int32_t *bsT, float *dxT) {
  for (int k = 0; k < nb; k++)
    for (int lane = 0; lane < NL; lane++) {
      int32_t *dst = xT + (size_t)k * 64 * NL + lane;
      if (lane < nrows) {
        const uint8_t *blk = xq + ((size_t)(b0 + lane) * nb + k) * Q8K_BYTES;
        for (int t = 0; t < 64; t++) memcpy(&dst[(size_t)t * NL], blk + 4 + 4 * t, 4);
        for (int h = 0; h < 8; h++) memcpy(&bsT[((size_t)k * 8 + h) * NL + lane], blk + 260 + 4 * h, 4);
        dxT[(size_t)k * NL + lane] = kq_dx(blk);
      } else {
        for (int t = 0; t < 64; t++) dst[(size_t)t * NL] = 0;
        for (int h = 0; h < 8; h++) bsT[((size_t)k * 8 + h) * NL + lane] = 0;
        dxT[(size_t)k * NL + lane] = 0.0f;
      }
    }
}

/*
 * The 8 scales and 8 mins of a Q4_K / Q5_K block as bytes [sc0..sc7, m0..m7], from the 12 packed
 * bytes at s (kq_scale_min with byte shuffles: scalar code assembling the vector byte by byte
 * measured several times slower than the rest of a super-block). Reads 16 bytes from s (the
 * block continues past its scales).
 */
static inline __attribute__((always_inline, target("avx2"))) __m128i kq_scale_min_sse(const uint8_t *s) {
  const __m128i b = _mm_loadu_si128((const __m128i *)s);
  /* low parts: b0-3 & 63 (sc0-3), b8-11 & 15 (sc4-7 low), b4-7 & 63 (m0-3) */
  __m128i v = _mm_and_si128(_mm_shuffle_epi8(b, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, -1, -1, -1, -1)),
                            _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
  /* m4-7 low: b8-11 >> 4 */
  __m128i hi4 = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0f));
  v = _mm_or_si128(v, _mm_shuffle_epi8(hi4, _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 8, 9, 10, 11)));
  /* top two bits: (b0-3 >> 6) << 4 into sc4-7, (b4-7 >> 6) << 4 into m4-7 */
  __m128i top = _mm_and_si128(_mm_srli_epi16(b, 2), _mm_set1_epi8(0x30));
  return _mm_or_si128(v, _mm_shuffle_epi8(top, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7)));
}

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define VNNI 0
#define FN(name) name##_kq512
#include "kquants_avx512_tmpl.h"
#undef TGT
#undef VNNI
#undef FN

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define VNNI 1
#define FN(name) name##_kqvnni
#include "kquants_avx512_tmpl.h"
#undef TGT
#undef VNNI
#undef FN

/* ---- AVX2 ---- */

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

/* Values 32v..32v+31 of a super-block as unsigned bytes (canonical u). */
INL __m256i kq_u32_avx2(int type, const uint8_t *blk, int v) {
  const __m256i lo4 = _mm256_set1_epi8(0x0f);
  if (type == FT_Q6K) {
    int half = v >> 2, k = v & 3;
    __m256i q = _mm256_loadu_si256((const __m256i *)(blk + 64 * half + 32 * (k & 1)));
    __m256i nib = k < 2 ? _mm256_and_si256(q, lo4) : _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4);
    __m256i h = _mm256_loadu_si256((const __m256i *)(blk + 128 + 32 * half));
    h = _mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * k));
    return _mm256_or_si256(nib, _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(3)), 4));
  }
  __m256i q = _mm256_loadu_si256((const __m256i *)(blk + (type == FT_Q5K ? 48 : 16) + 32 * (v >> 1)));
  __m256i u = v & 1 ? _mm256_and_si256(_mm256_srli_epi16(q, 4), lo4) : _mm256_and_si256(q, lo4);
  if (type == FT_Q5K) {
    /* the fifth bit of value 32v + l is bit v of qh[l] */
    __m256i h = _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(blk + 16)), _mm_cvtsi32_si128(v));
    u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi8(1)), 4));
  }
  return u;
}

/* Per-16 scales s and correction weights c of a super-block (see kquants.h), d and dmin. */
INL void kq_scales_avx2(int type, const uint8_t *blk, int16_t *s, int16_t *c, float *d, float *dmin) {
  if (type == FT_Q6K) {
    for (int g = 0; g < 16; g++) s[g] = c[g] = (int8_t)blk[192 + g];
    *d = _cvtsh_ss(k_rd16(blk + 208));
    *dmin = 0.0f;
    return;
  }
  __m128i sm = kq_scale_min_sse(blk + 4);
  _mm256_storeu_si256((__m256i *)s, _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7))));
  _mm256_storeu_si256((__m256i *)c, _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15))));
  *d = _cvtsh_ss(k_rd16(blk));
  *dmin = _cvtsh_ss(k_rd16(blk + 2));
}

INL int32_t hsum8i(__m256i v) {
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
  return _mm_cvtsi128_si32(t);
}

/*
 * Q8_K input: per weight row and super-block the 256 values are unpacked once into 8 registers
 * and the per-32 scale pairs built once, then every batch row (up to 8 at a time, their sums in
 * order over the super-blocks) takes vpmaddubsw (exact: u < 64) and vpmaddwd with the scales.
 */
INL void kq_mmk_avx2(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                     int r1) {
  const uint8_t *xq = (const uint8_t *)xv;
  const int nb = nIn / QKK, bb = kq_block_bytes(type);
  for (int r = r0; r < r1; r++) {
    const uint8_t *row = w + (size_t)r * nb * bb;
    for (int b0 = 0; b0 < batch; b0 += 8) {
      int nbt = batch - b0 < 8 ? batch - b0 : 8;
      float sum[8] = {0};
      for (int k = 0; k < nb; k++) {
        const uint8_t *blk = row + (size_t)k * bb;
        _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES), _MM_HINT_T0);
        _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES + 64), _MM_HINT_T0);
        _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES + 128), _MM_HINT_T0);
        int16_t s[16], c[16];
        float d, dmin;
        kq_scales_avx2(type, blk, s, c, &d, &dmin);
        __m256i u[8], sc[8];
        for (int v = 0; v < 8; v++) {
          u[v] = kq_u32_avx2(type, blk, v);
          sc[v] = _mm256_set_m128i(_mm_set1_epi16(s[2 * v + 1]), _mm_set1_epi16(s[2 * v]));
        }
        __m256i c16 = _mm256_loadu_si256((const __m256i *)c);
        for (int j = 0; j < nbt; j++) {
          const uint8_t *xb = xq + ((size_t)(b0 + j) * nb + k) * Q8K_BYTES;
          __m256i acc = _mm256_setzero_si256();
          for (int v = 0; v < 8; v++) {
            __m256i p = _mm256_maddubs_epi16(u[v], _mm256_loadu_si256((const __m256i *)(xb + 4 + 32 * v)));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc[v]));
          }
          int32_t i1 = hsum8i(acc);
          int32_t i2 = hsum8i(_mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xb + 260)), c16));
          if (type == FT_Q6K) i2 *= 32;
          sum[j] = sum[j] + kq_term(type, kq_dx(xb), d, dmin, i1, i2);
        }
      }
      for (int j = 0; j < nbt; j++) out[(size_t)(b0 + j) * nOut + r] = sum[j];
    }
  }
}

/* F32 input: the row decoded to the reference's floats (scratch), then AVX2 dots. */
INL void kq_decode256_avx2(int type, const uint8_t *blk, float *y) {
  if (type == FT_BF16) {
    for (int i = 0; i < QKK; i += 8)
      _mm256_storeu_ps(y + i, _mm256_castsi256_ps(_mm256_slli_epi32(
                                  _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(blk + 2 * i))), 16)));
    return;
  }
  int16_t s[16], c[16];
  float d, dmin;
  kq_scales_avx2(type, blk, s, c, &d, &dmin);
  for (int v = 0; v < 8; v++) {
    __m256i u = kq_u32_avx2(type, blk, v);
    for (int q = 0; q < 4; q++) {
      int g = 2 * v + (q >> 1);
      __m128i b8 = q & 1 ? _mm_srli_si128(_mm256_extracti128_si256(u, q >> 1), 8) : _mm256_extracti128_si256(u, q >> 1);
      __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b8));
      __m256 ds = _mm256_set1_ps(d * (float)s[g]);
      if (type == FT_Q6K) f = _mm256_mul_ps(ds, _mm256_sub_ps(f, _mm256_set1_ps(32.0f)));
      else f = _mm256_sub_ps(_mm256_mul_ps(ds, f), _mm256_set1_ps(dmin * (float)c[g]));
      _mm256_storeu_ps(y + 32 * v + 8 * q, f);
    }
  }
}

INL void kq_mmf_avx2(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                     int r1, kscratch *s) {
  const float *x = (const float *)xv;
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  size_t step = type == FT_BF16 ? 2 * QKK : (size_t)kq_block_bytes(type);
  float *row = (float *)kscratch_get(s, (size_t)nIn * sizeof(float));
  if (row == NULL) return;
  for (int r = r0; r < r1; r++) {
    const uint8_t *wr = w + (size_t)r * rowBytes;
    int i = 0;
    for (; i + QKK <= nIn; i += QKK) {
      const uint8_t *blk = wr + (size_t)(i / QKK) * step;
      for (size_t o = 0; o < step; o += 64) _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES + o), _MM_HINT_T0);
      kq_decode256_avx2(type, blk, row + i);
    }
    for (; i < nIn; i++) row[i] = k_bf16_to_f32(k_rd16(wr + 2 * (size_t)i));
    for (int b = 0; b < batch; b++) out[(size_t)b * nOut + r] = k_avx2_dot(row, x + (size_t)b * nIn, nIn);
  }
}

static TGT void mm_bf16_avx2(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  kq_mmf_avx2(FT_BF16, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mm_q4k_avx2(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  kq_mmf_avx2(FT_Q4K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mm_q5k_avx2(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  kq_mmf_avx2(FT_Q5K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mm_q6k_avx2(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  kq_mmf_avx2(FT_Q6K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void mmk_q4k_avx2(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  (void)s;
  kq_mmk_avx2(FT_Q4K, o, x, w, nIn, nOut, B, r0, r1);
}
static TGT void mmk_q5k_avx2(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  (void)s;
  kq_mmk_avx2(FT_Q5K, o, x, w, nIn, nOut, B, r0, r1);
}
static TGT void mmk_q6k_avx2(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  (void)s;
  kq_mmk_avx2(FT_Q6K, o, x, w, nIn, nOut, B, r0, r1);
}

/*
 * Q8_K quantization, bit-identical to the reference: amax over |x| (NaN skipped), d and id as the
 * scalar rule, x·id rounded half to even by the rounding instruction; non-finite products and
 * magnitudes above 1e9 give 0, as k_round_half_even does. Shared by every x86 path.
 */
static TGT void quantize_q8k_avx2(uint8_t *out, const float *x, size_t nBlocks) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 big = _mm256_set1_ps(1e9f);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (size_t b = 0; b < nBlocks; b++) {
    const float *xb = x + b * QKK;
    uint8_t *ob = out + b * Q8K_BYTES;
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < QKK; i += 8) m = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(xb + i), absmask), m);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float amax = _mm_cvtss_f32(m4);
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    memcpy(ob, &d, 4);
    __m256 idv = _mm256_set1_ps(id);
    for (int i = 0; i < QKK; i += 32) {
      __m256i q[4];
      for (int j = 0; j < 4; j++) {
        __m256 r = _mm256_mul_ps(_mm256_loadu_ps(xb + i + 8 * j), idv);
        r = _mm256_and_ps(r, _mm256_cmp_ps(_mm256_and_ps(r, absmask), big, _CMP_LE_OQ));
        q[j] = _mm256_cvtps_epi32(_mm256_round_ps(r, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      }
      __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
      p = _mm256_permutevar8x32_epi32(p, perm);
      _mm256_storeu_si256((__m256i *)(ob + 4 + i), p);
      /* per-16 sums: bytes widened to int16 and summed in pairs of 8 */
      __m256i lo = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(p));
      __m256i hi = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(p, 1));
      int16_t t[32];
      _mm256_storeu_si256((__m256i *)t, lo);
      _mm256_storeu_si256((__m256i *)(t + 16), hi);
      for (int g = 0; g < 2; g++) {
        int sum = 0;
        for (int e = 0; e < 16; e++) sum += t[16 * g + e];
        int16_t s16 = (int16_t)sum;
        memcpy(ob + 260 + 2 * (i / 16 + g), &s16, 2);
      }
    }
  }
}

#undef INL
#undef TGT

const kqops k_kq_avx2 = {
    .matmul = {[FT_BF16] = mm_bf16_avx2, [FT_Q4K] = mm_q4k_avx2, [FT_Q5K] = mm_q5k_avx2, [FT_Q6K] = mm_q6k_avx2},
    .matmulk = {[FT_Q4K] = mmk_q4k_avx2, [FT_Q5K] = mmk_q5k_avx2, [FT_Q6K] = mmk_q6k_avx2},
    .quantize_q8k = quantize_q8k_avx2,
};

const kqops k_kq_avx512 = {
    .matmul = {[FT_BF16] = mm_bf16_kq512, [FT_Q4K] = mm_q4k_kq512, [FT_Q5K] = mm_q5k_kq512, [FT_Q6K] = mm_q6k_kq512},
    .matmulk = {[FT_Q4K] = mmk_q4k_kq512, [FT_Q5K] = mmk_q5k_kq512, [FT_Q6K] = mmk_q6k_kq512},
    .quantize_q8k = quantize_q8k_avx2,
};

const kqops k_kq_avx512vnni = {
    .matmul = {[FT_BF16] = mm_bf16_kqvnni, [FT_Q4K] = mm_q4k_kqvnni, [FT_Q5K] = mm_q5k_kqvnni, [FT_Q6K] = mm_q6k_kqvnni},
    .matmulk = {[FT_Q4K] = mmk_q4k_kqvnni, [FT_Q5K] = mmk_q5k_kqvnni, [FT_Q6K] = mmk_q6k_kqvnni},
    .quantize_q8k = quantize_q8k_avx2,
};

#endif
