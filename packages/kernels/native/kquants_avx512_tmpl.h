/*
 * AVX-512 K-quant and BF16 kernels, included twice by kquants_x86.c: VNNI 0 (AVX-512 F/BW/VL/DQ)
 * and VNNI 1 (plus vpdpbusd / vpdpwssd). TGT is the target attribute, FN(name) the copy's name.
 *
 * Weight super-blocks are unpacked in registers to the canonical form of kquants.h, 64 values
 * (one zmm of unsigned bytes, value order) at a time, so the Q8_K input is read in its own layout.
 * - Rows kernel (batch <= KQ_ROWS_MAX): per 64 values, vpmaddubsw (u·x pair sums, exact: u < 64) and a
 *   multiply-add with the per-16 scales as int16 (vpdpwssd with VNNI, vpmaddwd + add without);
 *   S distant weight rows at once (separate DRAM streams, as the Q40 rows kernels). The super-block
 *   integers are reduced to scalars and enter the float32 sum in order: bit-identical to the
 *   reference.
 * - Lanes kernel (larger batches): the input is transposed once per call (16 batch rows per zmm);
 *   each weight quad is broadcast and meets every batch row (vpdpbusd with VNNI, vpmaddubsw +
 *   vpmaddwd without), per sub-block sum times its scale (vpmulld), then the float32 terms lane
 *   by lane: also bit-identical.
 * - F32 input: weights are decoded to the reference's floats (the same unpack, int -> float, one
 *   multiply and one subtract per value) a super-block at a time into L1; batch <= 4 takes FMAs
 *   along the input, larger batches the transposed input with each weight value broadcast.
 */

#define INL static inline __attribute__((always_inline)) TGT

/* Values 64c..64c+63 of a Q4_K / Q5_K / Q6_K super-block as unsigned bytes (canonical u). */
INL __m512i FN(kq_u64)(int type, const uint8_t *blk, int c) {
  const __m512i lo4 = _mm512_set1_epi8(0x0f);
  if (type == FT_Q6K) {
    const uint8_t *ql = blk + 64 * (c >> 1), *qh = blk + 128 + 32 * (c >> 1);
    __m512i a = _mm512_loadu_si512(ql);
    __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qh));
    __m512i nib, hb;
    if ((c & 1) == 0) {
      /* values 0..31 of the half: ql[l] low nibble, qh bits 0-1; 32..63: ql[32+l] low, bits 2-3 */
      nib = _mm512_and_si512(a, lo4);
      hb = _mm512_sllv_epi16(h, _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1));
    } else {
      /* values 64..95: ql[l] high nibble, bits 4-5; 96..127: ql[32+l] high, bits 6-7 */
      nib = _mm512_and_si512(_mm512_srli_epi16(a, 4), lo4);
      hb = _mm512_srlv_epi16(h, _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1));
    }
    return _mm512_or_si512(nib, _mm512_and_si512(hb, _mm512_set1_epi8(0x30)));
  }
  const uint8_t *qs = blk + (type == FT_Q5K ? 48 : 16) + 32 * c;
  __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)qs));
  /* low nibbles are values 64c..64c+31, high nibbles 64c+32..64c+63 */
  __m512i u = _mm512_and_si512(_mm512_srlv_epi16(q, _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1)), lo4);
  if (type == FT_Q5K) {
    /* fifth bits: bit 2c of qh[l] for the first 32 values, 2c + 1 for the next 32; a dword
     * rotation by (4 - bit) moves that bit of every byte to bit 4 of the same byte */
    __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(blk + 16)));
    __m512i rot = _mm512_inserti64x4(_mm512_set1_epi32((4 - 2 * c) & 31), _mm256_set1_epi32((3 - 2 * c) & 31), 1);
    u = _mm512_or_si512(u, _mm512_and_si512(_mm512_rolv_epi32(h, rot), _mm512_set1_epi8(0x10)));
  }
  return u;
}

/* Per-16 scales of a super-block as 16 int16 (s16) and the per-16 correction weights as 16 int16
 * (c16: Q4_K/Q5_K the mins, Q6_K the scales themselves, the ×32 applied to the sum). */
INL void FN(kq_scales)(int type, const uint8_t *blk, __m256i *s16, __m256i *c16, float *d, float *dmin) {
  if (type == FT_Q6K) {
    __m128i sc = _mm_loadu_si128((const __m128i *)(blk + 192));
    *s16 = *c16 = _mm256_cvtepi8_epi16(sc);
    *d = _cvtsh_ss(k_rd16(blk + 208));
    *dmin = 0.0f;
    return;
  }
  __m128i sm = kq_scale_min_sse(blk + 4);
  *s16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));
  *c16 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(sm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15)));
  *d = _cvtsh_ss(k_rd16(blk));
  *dmin = _cvtsh_ss(k_rd16(blk + 2));
}

/* acc + Σ pairs of (u·x pair sums) · scale, as int32: exact (|pair| <= 2·63·127, |scale| <= 128). */
INL __m512i FN(kq_madd)(__m512i acc, __m512i u, __m512i x, __m512i sc) {
  __m512i p = _mm512_maddubs_epi16(u, x);
#if VNNI
  return _mm512_dpwssd_epi32(acc, p, sc);
#else
  return _mm512_add_epi32(acc, _mm512_madd_epi16(p, sc));
#endif
}

/* Horizontal sums of a (16 lanes) and b (8 lanes), exact. */
INL void FN(kq_hsum2)(__m512i a, __m256i b, int32_t *sa, int32_t *sb) {
  __m256i a8 = _mm256_add_epi32(_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1));
  __m256i h = _mm256_hadd_epi32(a8, b); /* [a01 a23 b01 b23 | a45 a67 b45 b67] */
  h = _mm256_hadd_epi32(h, h);          /* [a0-3 b0-3 . . | a4-7 b4-7 . .] */
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  *sa = _mm_cvtsi128_si32(t);
  *sb = _mm_extract_epi32(t, 1);
}

/* ---- Q8_K input, rows kernel ---- */

/* Rows r, r + step, ... (S of them) against B batch rows of Q8_K input. */
INL void FN(kq_rows_tile)(int type, int B, int S, float *out, const uint8_t *xq, const uint8_t *w, int nb, int nOut,
                          int r, int step) {
  const int bb = kq_block_bytes(type);
  const uint8_t *rows[4];
  float sum[4][8];
  for (int s = 0; s < S; s++) {
    rows[s] = w + (size_t)(r + s * step) * nb * bb;
    for (int b = 0; b < B; b++) sum[s][b] = 0.0f;
  }
  /* int16 lane i of chunk c covers values 64c + 2i, 2i + 1: group 4c + i/8 */
  const __m512i gidx = _mm512_setr_epi64(0x0000000000000000LL, 0x0000000000000000LL, 0x0001000100010001LL,
                                         0x0001000100010001LL, 0x0002000200020002LL, 0x0002000200020002LL,
                                         0x0003000300030003LL, 0x0003000300030003LL);
  for (int k = 0; k < nb; k++) {
    for (int s = 0; s < S; s++) {
      const uint8_t *blk = rows[s] + (size_t)k * bb;
      for (int o = 0; o < bb; o += 64) _mm_prefetch((const char *)(blk + K_PREFETCH_Q40 + o), _MM_HINT_T0);
      __m256i s16, c16;
      float d, dmin;
      FN(kq_scales)(type, blk, &s16, &c16, &d, &dmin);
      __m512i s512 = _mm512_castsi256_si512(s16);
      __m512i acc[8];
      for (int b = 0; b < B; b++) acc[b] = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int c = 0; c < 4; c++) {
        __m512i u = FN(kq_u64)(type, blk, c);
        __m512i sc = _mm512_permutexvar_epi16(_mm512_add_epi16(gidx, _mm512_set1_epi16((short)(4 * c))), s512);
        for (int b = 0; b < B; b++) {
          const uint8_t *xb = xq + ((size_t)b * nb + k) * Q8K_BYTES;
          acc[b] = FN(kq_madd)(acc[b], u, _mm512_loadu_si512(xb + 4 + 64 * c), sc);
        }
      }
      for (int b = 0; b < B; b++) {
        const uint8_t *xb = xq + ((size_t)b * nb + k) * Q8K_BYTES;
        int32_t i1, i2;
        FN(kq_hsum2)(acc[b], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(xb + 260)), c16), &i1, &i2);
        if (type == FT_Q6K) i2 *= 32;
        sum[s][b] = sum[s][b] + kq_term(type, kq_dx(xb), d, dmin, i1, i2);
      }
    }
  }
  for (int s = 0; s < S; s++)
    for (int b = 0; b < B; b++) out[(size_t)b * nOut + r + s * step] = sum[s][b];
}

INL void FN(kq_rows)(int type, int B, int S, float *out, const uint8_t *xq, const uint8_t *w, int nb, int nOut, int r0,
                     int r1) {
  int part = (r1 - r0) / S;
  for (int i = 0; i < part; i++) FN(kq_rows_tile)(type, B, S, out, xq, w, nb, nOut, r0 + i, part);
  for (int r = r0 + S * part; r < r1; r++) FN(kq_rows_tile)(type, B, 1, out, xq, w, nb, nOut, r, 0);
}

/* ---- Q8_K input, lanes kernel ---- */

/* A tile of R weight rows x BT registers of 16 batch rows (from lane lane0). Per super-block the
 * R rows are unpacked once (canonical u as 64 quads, the scales as int32, the mins/corrections
 * as int16 pairs) and every batch register meets them. */
INL void FN(kq_lanes_tile)(int type, int R, int BT, float *out, const int32_t *xT, const int32_t *bsT, const float *dxT,
                           int NL, int lane0, const uint8_t *w, int nb, int nOut, int batch, int r) {
  const int bb = kq_block_bytes(type);
  const int G = type == FT_Q6K ? 16 : 32; /* values per scale */
  __m512 sum[4][2];
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) sum[rr][bt] = _mm512_setzero_ps();
  for (int k = 0; k < nb; k++) {
    int32_t wq[4][64] __attribute__((aligned(64)));
    int32_t sg[4][16] __attribute__((aligned(64)));
    int32_t cp[4][8] __attribute__((aligned(32)));
    float d[4], dmin[4];
    for (int rr = 0; rr < R; rr++) {
      const uint8_t *blk = w + ((size_t)(r + rr) * nb + k) * bb;
      _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES), _MM_HINT_T0);
      _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES + 64), _MM_HINT_T0);
      _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES + 128), _MM_HINT_T0);
      for (int c = 0; c < 4; c++) _mm512_store_si512(wq[rr] + 16 * c, FN(kq_u64)(type, blk, c));
      __m256i s16, c16;
      FN(kq_scales)(type, blk, &s16, &c16, &d[rr], &dmin[rr]);
      _mm512_store_si512(sg[rr], _mm512_cvtepi16_epi32(s16));
      _mm256_store_si256((__m256i *)cp[rr], c16); /* int16 pairs (c_2h, c_2h+1) */
    }
    const int32_t *xk = xT + (size_t)k * 64 * NL + lane0;
    __m512i i1[4][2];
    for (int rr = 0; rr < R; rr++)
      for (int bt = 0; bt < BT; bt++) i1[rr][bt] = _mm512_setzero_si512();
    for (int g = 0; g < QKK / G; g++) {
      __m512i is[4][2];
      for (int rr = 0; rr < R; rr++)
        for (int bt = 0; bt < BT; bt++) is[rr][bt] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int tq = 0; tq < G / 4; tq++) {
        const int t = g * (G / 4) + tq;
        __m512i xv[2];
        for (int bt = 0; bt < BT; bt++) xv[bt] = _mm512_load_si512((const void *)(xk + (size_t)t * NL + 16 * bt));
        for (int rr = 0; rr < R; rr++) {
          __m512i wt = _mm512_set1_epi32(wq[rr][t]);
          for (int bt = 0; bt < BT; bt++) {
#if VNNI
            is[rr][bt] = _mm512_dpbusd_epi32(is[rr][bt], wt, xv[bt]);
#else
            is[rr][bt] = _mm512_add_epi32(is[rr][bt], _mm512_madd_epi16(_mm512_maddubs_epi16(wt, xv[bt]), _mm512_set1_epi16(1)));
#endif
          }
        }
      }
      /* one scale per G values: group g of Q4_K/Q5_K is sub-block g (scales duplicated per 16) */
      for (int rr = 0; rr < R; rr++) {
        __m512i scv = _mm512_set1_epi32(sg[rr][g * G / 16]);
        for (int bt = 0; bt < BT; bt++) i1[rr][bt] = _mm512_add_epi32(i1[rr][bt], _mm512_mullo_epi32(is[rr][bt], scv));
      }
    }
    for (int bt = 0; bt < BT; bt++) {
      __m512 dx = _mm512_load_ps(dxT + (size_t)k * NL + lane0 + 16 * bt);
      for (int rr = 0; rr < R; rr++) {
        __m512i i2 = _mm512_setzero_si512();
        for (int h = 0; h < 8; h++) {
          __m512i bs = _mm512_load_si512((const void *)(bsT + ((size_t)k * 8 + h) * NL + lane0 + 16 * bt));
#if VNNI
          i2 = _mm512_dpwssd_epi32(i2, bs, _mm512_set1_epi32(cp[rr][h]));
#else
          i2 = _mm512_add_epi32(i2, _mm512_madd_epi16(bs, _mm512_set1_epi32(cp[rr][h])));
#endif
        }
        __m512 term;
        if (type == FT_Q6K) {
          __m512i isc = _mm512_sub_epi32(i1[rr][bt], _mm512_slli_epi32(i2, 5));
          term = _mm512_mul_ps(_mm512_mul_ps(dx, _mm512_set1_ps(d[rr])), _mm512_cvtepi32_ps(isc));
        } else {
          term = _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(dx, _mm512_set1_ps(d[rr])), _mm512_cvtepi32_ps(i1[rr][bt])),
                               _mm512_mul_ps(_mm512_mul_ps(dx, _mm512_set1_ps(dmin[rr])), _mm512_cvtepi32_ps(i2)));
        }
        sum[rr][bt] = _mm512_add_ps(sum[rr][bt], term);
      }
    }
  }
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) {
      float t[16] __attribute__((aligned(64)));
      _mm512_store_ps(t, sum[rr][bt]);
      int first = lane0 + 16 * bt;
      for (int j = 0; j < 16 && first + j < batch; j++) out[(size_t)(first + j) * nOut + r + rr] = t[j];
    }
}

INL void FN(kq_lanes)(int type, float *out, const int32_t *xT, const int32_t *bsT, const float *dxT, int NL,
                      const uint8_t *w, int nb, int nOut, int batch, int r0, int r1) {
  for (int r = r0; r < r1; r += 4) {
    int R = r1 - r < 4 ? r1 - r : 4;
    for (int lane0 = 0; lane0 < NL; lane0 += 32) {
      int two = NL - lane0 >= 32;
      if (R == 4) {
        if (two) FN(kq_lanes_tile)(type, 4, 2, out, xT, bsT, dxT, NL, lane0, w, nb, nOut, batch, r);
        else FN(kq_lanes_tile)(type, 4, 1, out, xT, bsT, dxT, NL, lane0, w, nb, nOut, batch, r);
      } else {
        for (int rr = 0; rr < R; rr++) {
          if (two) FN(kq_lanes_tile)(type, 1, 2, out, xT, bsT, dxT, NL, lane0, w, nb, nOut, batch, r + rr);
          else FN(kq_lanes_tile)(type, 1, 1, out, xT, bsT, dxT, NL, lane0, w, nb, nOut, batch, r + rr);
        }
      }
    }
  }
}

INL void FN(kq_mmk)(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                    int r1, kscratch *s) {
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QKK;
  if (batch <= KQ_ROWS_MAX) {
    switch (batch) {
      case 1: FN(kq_rows)(type, 1, 4, out, xq, w, nb, nOut, r0, r1); break;
      case 2: FN(kq_rows)(type, 2, 4, out, xq, w, nb, nOut, r0, r1); break;
      case 3: FN(kq_rows)(type, 3, 2, out, xq, w, nb, nOut, r0, r1); break;
      case 4: FN(kq_rows)(type, 4, 2, out, xq, w, nb, nOut, r0, r1); break;
      case 5: FN(kq_rows)(type, 5, 2, out, xq, w, nb, nOut, r0, r1); break;
      case 6: FN(kq_rows)(type, 6, 2, out, xq, w, nb, nOut, r0, r1); break;
      default: FN(kq_rows)(type, 7, 2, out, xq, w, nb, nOut, r0, r1); break;
    }
    return;
  }
  int maxNL = (batch < KQ_SUPER_ROWS ? batch : KQ_SUPER_ROWS) + 15;
  maxNL -= maxNL % 16;
  size_t xB = k_align64((size_t)nb * 64 * maxNL * 4), bB = k_align64((size_t)nb * 8 * maxNL * 4);
  uint8_t *m = (uint8_t *)kscratch_get(s, xB + bB + k_align64((size_t)nb * maxNL * 4));
  if (m == NULL) return;
  int32_t *xT = (int32_t *)(void *)m;
  int32_t *bsT = (int32_t *)(void *)(m + xB);
  float *dxT = (float *)(void *)(m + xB + bB);
  for (int b0 = 0; b0 < batch; b0 += KQ_SUPER_ROWS) {
    int nrows = batch - b0 < KQ_SUPER_ROWS ? batch - b0 : KQ_SUPER_ROWS;
    int NL = (nrows + 15) / 16 * 16;
    kq_prep_lanes(xq, nb, b0, nrows, NL, xT, bsT, dxT);
    FN(kq_lanes)(type, out + (size_t)b0 * nOut, xT, bsT, dxT, NL, w, nb, nOut, nrows, r0, r1);
  }
}

/* ---- F32 input ---- */

/* Per-16 float factors of a super-block: fs = d·s_g and fm = dmin·c_g (one rounding each, the
 * reference's d1 and m1; Q6_K: fs = d·sc_g). */
INL void FN(kq_fscales)(int type, const uint8_t *blk, __m512 *fs, __m512 *fm) {
  __m256i s16, c16;
  float d, dmin;
  FN(kq_scales)(type, blk, &s16, &c16, &d, &dmin);
  *fs = _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(s16)));
  *fm = _mm512_mul_ps(_mm512_set1_ps(dmin), _mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(c16)));
}

/* The reference's decoded weights of values 64c + 16q .. + 15 (u: kq_u64 of chunk c). Q4_K and
 * Q5_K go through a table of the sub-block's 16 (32) values fround(fround(d1·q) − m1), as the
 * Q40 kernels do, so each value costs a widening and one permute. */
INL __m512 FN(kq_w16)(int type, __m512i u, int c, int q, __m512 fs, __m512 fm) {
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i idx;
  switch (q) {
    case 0: idx = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 0)); break;
    case 1: idx = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 1)); break;
    case 2: idx = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 2)); break;
    default: idx = _mm512_cvtepu8_epi32(_mm512_extracti32x4_epi32(u, 3)); break;
  }
  __m512i g = _mm512_set1_epi32(4 * c + q);
  __m512 d1 = _mm512_permutexvar_ps(g, fs);
  if (type == FT_Q6K) return _mm512_mul_ps(d1, _mm512_sub_ps(_mm512_cvtepi32_ps(idx), _mm512_set1_ps(32.0f)));
  __m512 m1 = _mm512_permutexvar_ps(g, fm);
  __m512 lo = _mm512_sub_ps(_mm512_mul_ps(d1, iota), m1);
  if (type == FT_Q4K) return _mm512_permutexvar_ps(idx, lo);
  __m512 hi = _mm512_sub_ps(_mm512_mul_ps(d1, _mm512_add_ps(iota, _mm512_set1_ps(16.0f))), m1);
  return _mm512_permutex2var_ps(lo, idx, hi);
}

/* Decode one super-block (or 256 BF16 values) to the reference's floats. */
INL void FN(kq_decode256)(int type, const uint8_t *blk, float *y) {
  if (type == FT_BF16) {
    for (int i = 0; i < QKK; i += 16)
      _mm512_storeu_ps(y + i, _mm512_castsi512_ps(_mm512_slli_epi32(
                                  _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(blk + 2 * i))), 16)));
    return;
  }
  __m512 fs, fm;
  FN(kq_fscales)(type, blk, &fs, &fm);
  for (int c = 0; c < 4; c++) {
    __m512i u = FN(kq_u64)(type, blk, c);
    for (int q = 0; q < 4; q++) _mm512_storeu_ps(y + 64 * c + 16 * q, FN(kq_w16)(type, u, c, q, fs, fm));
  }
}

/* Values 256k.. of a weight row (n of them, n < 256 only at a BF16 row's end) as floats, zero
 * past n. */
INL void FN(kq_decode_at)(int type, const uint8_t *row, int k, int n, float *y) {
  size_t step = type == FT_BF16 ? 2 * QKK : (size_t)kq_block_bytes(type);
  const uint8_t *blk = row + (size_t)k * step;
  if (n == QKK) {
    FN(kq_decode256)(type, blk, y);
    return;
  }
  for (int i = 0; i < QKK; i++) y[i] = i < n ? k_bf16_to_f32(k_rd16(blk + 2 * i)) : 0.0f;
}

/* batch <= KQ_ROWS_MAX: per super-block the weights are decoded (in registers, BF16 into L1) and
 * every batch row takes its FMAs against them (4, 2 or 1 accumulators per batch row by B). */
INL void FN(kq_mmf_rows)(int type, int B, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int r0,
                         int r1) {
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  size_t step = type == FT_BF16 ? 2 * QKK : (size_t)kq_block_bytes(type);
  int nk = (nIn + QKK - 1) / QKK;
  for (int r = r0; r < r1; r++) {
    const uint8_t *row = w + (size_t)r * rowBytes;
    const int UM = B <= 2 ? 3 : B <= 4 ? 1 : 0; /* accumulator index mask */
    __m512 acc[8][4];
    for (int b = 0; b < B; b++)
      for (int j = 0; j < 4; j++) acc[b][j] = _mm512_setzero_ps();
    for (int k = 0; k < nk; k++) {
      for (size_t o = 0; o < step; o += 64) _mm_prefetch((const char *)(row + (size_t)k * step + K_PREFETCH_BYTES + o), _MM_HINT_T0);
      int n = nIn - k * QKK < QKK ? nIn - k * QKK : QKK;
      if (type != FT_BF16) {
        /* K-quants: decoded in registers, 64 values at a time */
        const uint8_t *blk = row + (size_t)k * step;
        __m512 fs, fm;
        FN(kq_fscales)(type, blk, &fs, &fm);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++) {
          __m512i u = FN(kq_u64)(type, blk, c);
#pragma GCC unroll 4
          for (int q = 0; q < 4; q++) {
            __m512 wv = FN(kq_w16)(type, u, c, q, fs, fm);
            for (int b = 0; b < B; b++)
              acc[b][q & UM] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + (size_t)b * nIn + (size_t)k * QKK + 64 * c + 16 * q), acc[b][q & UM]);
          }
        }
        continue;
      }
      float y[QKK] __attribute__((aligned(64)));
      FN(kq_decode_at)(type, row, k, n, y);
      for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * nIn + (size_t)k * QKK;
        for (int i = 0; i < n; i += 16) {
          __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
          acc[b][(i >> 4) & UM] = _mm512_fmadd_ps(_mm512_load_ps(y + i), _mm512_maskz_loadu_ps(m, xb + i), acc[b][(i >> 4) & UM]);
        }
      }
    }
    for (int b = 0; b < B; b++)
      out[(size_t)b * nOut + r] =
          _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[b][0], acc[b][1]), _mm512_add_ps(acc[b][2], acc[b][3])));
  }
}

/* batch >= 5: lanes along the batch (the input transposed once per call, 16 rows per register);
 * per super-block R weight rows are decoded into L1 and each value is broadcast against BT
 * registers of batch rows. */
INL void FN(kq_mmf_lanes_tile)(int type, int R, int BT, float *out, const float *xT, int NL, int lane0,
                               const uint8_t *w, int nIn, int nOut, int b0, int nrows, int r) {
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  int nk = (nIn + QKK - 1) / QKK;
  __m512 acc[8][2];
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm512_setzero_ps();
  for (int k = 0; k < nk; k++) {
    int n = nIn - k * QKK < QKK ? nIn - k * QKK : QKK;
    float y[8][QKK] __attribute__((aligned(64)));
    for (int rr = 0; rr < R; rr++) FN(kq_decode_at)(type, w + (size_t)(r + rr) * rowBytes, k, n, y[rr]);
    const float *xk = xT + (size_t)k * QKK * NL + lane0;
    for (int e = 0; e < n; e++) {
      __m512 xv[2];
      for (int bt = 0; bt < BT; bt++) xv[bt] = _mm512_load_ps(xk + (size_t)e * NL + 16 * bt);
      for (int rr = 0; rr < R; rr++) {
        __m512 wb = _mm512_set1_ps(y[rr][e]);
        for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm512_fmadd_ps(wb, xv[bt], acc[rr][bt]);
      }
    }
  }
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) {
      float t[16] __attribute__((aligned(64)));
      _mm512_store_ps(t, acc[rr][bt]);
      int first = lane0 + 16 * bt;
      for (int j = 0; j < 16 && first + j < nrows; j++) out[(size_t)(b0 + first + j) * nOut + r + rr] = t[j];
    }
}

INL void FN(kq_mmf)(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                    int r1, kscratch *s) {
  const float *x = (const float *)xv;
  if (batch <= KQ_ROWS_MAX) {
    switch (batch) {
      case 1: FN(kq_mmf_rows)(type, 1, out, x, w, nIn, nOut, r0, r1); break;
      case 2: FN(kq_mmf_rows)(type, 2, out, x, w, nIn, nOut, r0, r1); break;
      case 3: FN(kq_mmf_rows)(type, 3, out, x, w, nIn, nOut, r0, r1); break;
      case 4: FN(kq_mmf_rows)(type, 4, out, x, w, nIn, nOut, r0, r1); break;
      case 5: FN(kq_mmf_rows)(type, 5, out, x, w, nIn, nOut, r0, r1); break;
      case 6: FN(kq_mmf_rows)(type, 6, out, x, w, nIn, nOut, r0, r1); break;
      default: FN(kq_mmf_rows)(type, 7, out, x, w, nIn, nOut, r0, r1); break;
    }
    return;
  }
  int maxRows = batch < KQ_SUPER_ROWS ? batch : KQ_SUPER_ROWS;
  int nk = (nIn + QKK - 1) / QKK;
  /* rows padded to whole super-blocks, zero past nIn (the decoded tail is zero there too) */
  float *xT = (float *)kscratch_get(s, (size_t)nk * QKK * (size_t)((maxRows + 15) / 16 * 16) * sizeof(float));
  if (xT == NULL) return;
  for (int b0 = 0; b0 < batch; b0 += KQ_SUPER_ROWS) {
    int nrows = batch - b0 < KQ_SUPER_ROWS ? batch - b0 : KQ_SUPER_ROWS;
    int NL = (nrows + 15) / 16 * 16;
    k_prep_f32_lanes(x, nIn, b0, nrows, NL, xT);
    for (int r = r0; r < r1;) {
      int R = r1 - r >= 8 ? 8 : r1 - r >= 4 ? 4 : 1;
      for (int lane0 = 0; lane0 < NL; lane0 += 32) {
        int two = NL - lane0 >= 32;
#define KQ_F_TILE(RR, BB) FN(kq_mmf_lanes_tile)(type, RR, BB, out, xT, NL, lane0, w, nIn, nOut, b0, nrows, r)
        if (R == 8) { if (two) KQ_F_TILE(8, 2); else KQ_F_TILE(8, 1); }
        else if (R == 4) { if (two) KQ_F_TILE(4, 2); else KQ_F_TILE(4, 1); }
        else { if (two) KQ_F_TILE(1, 2); else KQ_F_TILE(1, 1); }
#undef KQ_F_TILE
      }
      r += R;
    }
  }
}

static TGT void FN(mm_bf16)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  FN(kq_mmf)(FT_BF16, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mm_q4k)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  FN(kq_mmf)(FT_Q4K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mm_q5k)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  FN(kq_mmf)(FT_Q5K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mm_q6k)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  FN(kq_mmf)(FT_Q6K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mmk_q4k)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  FN(kq_mmk)(FT_Q4K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mmk_q5k)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  FN(kq_mmk)(FT_Q5K, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mmk_q6k)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1, kscratch *s) {
  FN(kq_mmk)(FT_Q6K, o, x, w, nIn, nOut, B, r0, r1, s);
}

#undef INL
