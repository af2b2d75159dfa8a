/*
 * AVX-512 kernels, included twice by avx512.c: once with VNNI 0 (AVX-512 F/BW/VL/DQ; byte dots
 * through vpmaddubsw + vpmaddwd) and once with VNNI 1 (vpdpbusd). TGT is the target attribute
 * and FN(name) gives each copy its own names.
 *
 * Strategy as in avx2.c: batch <= 4 runs "rows" kernels (lanes along the input, every batch
 * row against each decoded weight block), larger batches run "lanes" kernels (activations
 * transposed once per call, 16 batch rows per register, each weight value broadcast).
 * Elementwise ops and quantization come from the AVX2 path: they are memory-light and already
 * bit-exact where they can be.
 */

#define INL static inline __attribute__((always_inline)) TGT

INL float FN(hsum16)(__m512 v) { return _mm512_reduce_add_ps(v); }

/* ---- F32-input matmul ---- */

/* 32 weights of a row starting at element i (n valid) as two vectors of floats. */
INL void FN(dec32)(int type, const uint8_t *row, int i, int n, __m512 *w) {
  if (type == FT_Q40) {
    /* (q - 8) * d through a 16-entry table of those products: vpermps only reads the low 4 bits
     * of each index, so the zero-extended bytes index the low nibbles directly and, shifted by
     * 4, the high nibbles. The table values are the reference's decoded weights exactly. */
    const uint8_t *blk = row + (size_t)(i / QK) * Q40_BYTES;
    __m512 tab = _mm512_mul_ps(_mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7),
                               _mm512_set1_ps(_cvtsh_ss(k_rd16(blk))));
    __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)));
    w[0] = _mm512_permutexvar_ps(q, tab);
    w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), tab);
  } else if (type == FT_Q80) {
    const uint8_t *blk = row + (size_t)(i / QK) * Q80_BYTES;
    __m512 d = _mm512_set1_ps(_cvtsh_ss(k_rd16(blk)));
    w[0] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)))), d);
    w[1] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18)))), d);
  } else if (type == FT_F32) {
    const float *f = (const float *)(const void *)row + i;
    if (n == 32) {
      w[0] = _mm512_loadu_ps(f);
      w[1] = _mm512_loadu_ps(f + 16);
    } else {
      w[0] = _mm512_maskz_loadu_ps(n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1), f);
      w[1] = _mm512_maskz_loadu_ps(n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1), f + 16);
    }
  } else {
    const uint16_t *h = (const uint16_t *)(const void *)(row + (size_t)i * 2);
    if (n == 32) {
      w[0] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)h));
      w[1] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + 16)));
    } else {
      w[0] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1), h));
      w[1] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1), h + 16));
    }
  }
}

INL void FN(load_x32)(const float *x, int n, __m512 *v) {
  if (n == 32) {
    v[0] = _mm512_loadu_ps(x);
    v[1] = _mm512_loadu_ps(x + 16);
  } else {
    v[0] = _mm512_maskz_loadu_ps(n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1), x);
    v[1] = _mm512_maskz_loadu_ps(n <= 16 ? 0 : (__mmask16)((1u << (n - 16)) - 1), x + 16);
  }
}

/* f16 scales of up to 16 consecutive blocks (stride bytes apart) as floats; lanes >= n are 0.
 * Each gathered dword holds d and the first two data bytes; the truncation keeps d. */
#define K_GATHER_D16_DECL INL __m512 FN(gather_d16)
K_DEFINE_GATHER_D16(K_GATHER_D16_DECL)
#undef K_GATHER_D16_DECL

/* Q40 block j of a group whose scales were gathered into ds: (q - 8) * d via the table. */
INL void FN(dec_q40_tab)(const uint8_t *blk, const float *dp, __m512 *w) {
  __m512 tab = _mm512_mul_ps(_mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7), _mm512_set1_ps(*dp));
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2)));
  w[0] = _mm512_permutexvar_ps(q, tab);
  w[1] = _mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), tab);
}

#define K_Q40_SCALES16_DECL INL __m512 FN(q40_scales16)
K_DEFINE_Q40_SCALES16(K_Q40_SCALES16_DECL)
#undef K_Q40_SCALES16_DECL

/* batch <= 4, F32/F16/Q80 weights (Q40: mm40_rows below): 32 weights decoded per step, every
 * batch row multiplied against them. Two chunks per iteration give 4 independent accumulators
 * per row when B <= 2. */
INL void FN(mm_rows)(int type, int B, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int r0, int r1) {
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  for (int r = r0; r < r1; r++) {
    const uint8_t *row = w + (size_t)r * rowBytes;
    __m512 acc[4][4];
    for (int b = 0; b < B; b++)
      for (int u = 0; u < 4; u++) acc[b][u] = _mm512_setzero_ps();
    int i = 0;
    if (B <= 2) {
      for (; i + 64 <= nIn; i += 64) {
        /* 64 elements are 1..4 cache lines of weights depending on the dtype */
        for (size_t o = 0; o < k_row_bytes(type, 64); o += 64)
          _mm_prefetch((const char *)(row + k_row_bytes(type, (size_t)i) + K_PREFETCH_BYTES + o), _MM_HINT_T0);
        __m512 w0[2], w1[2];
        FN(dec32)(type, row, i, 32, w0);
        FN(dec32)(type, row, i + 32, 32, w1);
        for (int b = 0; b < B; b++) {
          const float *xb = x + (size_t)b * nIn + i;
          acc[b][0] = _mm512_fmadd_ps(w0[0], _mm512_loadu_ps(xb), acc[b][0]);
          acc[b][1] = _mm512_fmadd_ps(w0[1], _mm512_loadu_ps(xb + 16), acc[b][1]);
          acc[b][2] = _mm512_fmadd_ps(w1[0], _mm512_loadu_ps(xb + 32), acc[b][2]);
          acc[b][3] = _mm512_fmadd_ps(w1[1], _mm512_loadu_ps(xb + 48), acc[b][3]);
        }
      }
    }
    for (; i < nIn; i += 32) {
      int n = nIn - i < 32 ? nIn - i : 32;
      __m512 wv[2];
      FN(dec32)(type, row, i, n, wv);
      for (int b = 0; b < B; b++) {
        __m512 xv[2];
        FN(load_x32)(x + (size_t)b * nIn + i, n, xv);
        acc[b][0] = _mm512_fmadd_ps(wv[0], xv[0], acc[b][0]);
        acc[b][1] = _mm512_fmadd_ps(wv[1], xv[1], acc[b][1]);
      }
    }
    for (int b = 0; b < B; b++)
      out[(size_t)b * nOut + r] =
          FN(hsum16)(_mm512_add_ps(_mm512_add_ps(acc[b][0], acc[b][1]), _mm512_add_ps(acc[b][2], acc[b][3])));
  }
}

/*
 * Q40 weights, F32 input, batch <= 4, S distant rows at once (rows r, r + step, ...): S
 * sequential weight streams keep more DRAM lines in flight than one (see the Q80-input kernel
 * below). Per block as mm_rows: the table of (q - 8) * d, two vpermps, one FMA per half per
 * batch row; each x vector is loaded once for the S rows.
 */
INL void FN(mm40_tile)(int B, int S, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int r, int step) {
  const int nb = nIn / QK;
  const uint8_t *rows[4];
  __m512 acc[4][4][2];
  for (int s = 0; s < S; s++) {
    rows[s] = w + (size_t)(r + s * step) * nb * Q40_BYTES;
    for (int b = 0; b < B; b++) acc[s][b][0] = acc[s][b][1] = _mm512_setzero_ps();
  }
  for (int kg = 0; kg < nb; kg += 16) {
    int m = nb - kg < 16 ? nb - kg : 16;
    float ds[4][16] __attribute__((aligned(64)));
    for (int s = 0; s < S; s++) {
      const uint8_t *g = rows[s] + (size_t)kg * Q40_BYTES;
      for (int o = 0; o < 16 * Q40_BYTES; o += 64) _mm_prefetch((const char *)(g + K_PREFETCH_Q40 + o), _MM_HINT_T0);
      _mm512_store_ps(ds[s], m == 16 ? FN(q40_scales16)(g) : FN(gather_d16)(g, Q40_BYTES, m));
    }
    for (int j = 0; j < m; j++) {
      __m512 xv[4][2];
      for (int b = 0; b < B; b++) {
        const float *xb = x + (size_t)b * nIn + (size_t)(kg + j) * QK;
        xv[b][0] = _mm512_loadu_ps(xb);
        xv[b][1] = _mm512_loadu_ps(xb + 16);
      }
      for (int s = 0; s < S; s++) {
        __m512 wv[2];
        FN(dec_q40_tab)(rows[s] + (size_t)(kg + j) * Q40_BYTES, &ds[s][j], wv);
        for (int b = 0; b < B; b++) {
          acc[s][b][0] = _mm512_fmadd_ps(wv[0], xv[b][0], acc[s][b][0]);
          acc[s][b][1] = _mm512_fmadd_ps(wv[1], xv[b][1], acc[s][b][1]);
        }
      }
    }
  }
  for (int s = 0; s < S; s++)
    for (int b = 0; b < B; b++) out[(size_t)b * nOut + r + s * step] = FN(hsum16)(_mm512_add_ps(acc[s][b][0], acc[s][b][1]));
}

INL void FN(mm40_rows)(int B, int S, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int r0, int r1) {
  int part = (r1 - r0) / S;
  for (int i = 0; i < part; i++) FN(mm40_tile)(B, S, out, x, w, nIn, nOut, r0 + i, part);
  for (int r = r0 + S * part; r < r1; r++) FN(mm40_tile)(B, 1, out, x, w, nIn, nOut, r, 0);
}

/* Lanes along the batch: 16 batch rows per register, R rows x BT register columns of
 * accumulators; each decoded weight value is broadcast once per row and meets BT vectors. */
INL void FN(store_lanes)(float *out, __m512 acc, int nOut, int b0, int nrows, int r) {
  float t[16] __attribute__((aligned(64)));
  _mm512_store_ps(t, acc);
  for (int j = 0; j < 16 && j < nrows; j++) out[(size_t)(b0 + j) * nOut + r] = t[j];
}

INL void FN(mm_lanes_tile)(int type, int R, int BT, float *out, const float *xT, int NL, int lane0, const uint8_t *w,
                           int nIn, int nOut, int b0, int nrows, int r) {
  size_t rowBytes = k_row_bytes(type, (size_t)nIn);
  __m512 acc[8][4];
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm512_setzero_ps();
  for (int i = 0; i < nIn; i += 32) {
    int n = nIn - i < 32 ? nIn - i : 32;
    float wbuf[8][32] __attribute__((aligned(64)));
    for (int rr = 0; rr < R; rr++) {
      __m512 wv[2];
      FN(dec32)(type, w + (size_t)(r + rr) * rowBytes, i, n, wv);
      _mm512_store_ps(wbuf[rr], wv[0]);
      _mm512_store_ps(wbuf[rr] + 16, wv[1]);
    }
    for (int e = 0; e < n; e++) {
      const float *xe = xT + (size_t)(i + e) * NL + lane0;
      __m512 xv[4];
      for (int bt = 0; bt < BT; bt++) xv[bt] = _mm512_load_ps(xe + 16 * bt);
      for (int rr = 0; rr < R; rr++) {
        __m512 wb = _mm512_set1_ps(wbuf[rr][e]);
        for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm512_fmadd_ps(wb, xv[bt], acc[rr][bt]);
      }
    }
  }
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++)
      FN(store_lanes)(out, acc[rr][bt], nOut, b0 + lane0 + 16 * bt, nrows - lane0 - 16 * bt, r + rr);
}

/* Rows outer, batch tiles inner: a tile of 8 weight rows (4 for 3-4 batch registers) stays in
 * L1 while every batch tile of the supertile runs against it; R x BT >= 8 independent FMA chains
 * cover the FMA latency. */
INL void FN(mm_lanes)(int type, float *out, const float *xT, int NL, const uint8_t *w, int nIn, int nOut, int b0,
                      int nrows, int r0, int r1) {
  int RT = NL <= 32 ? 8 : 4;
  for (int r = r0; r < r1; r += RT) {
    int R = r1 - r < RT ? r1 - r : RT;
    for (int lane0 = 0; lane0 < NL; lane0 += 64) {
      int BT = (NL - lane0) / 16 < 4 ? (NL - lane0) / 16 : 4;
#define MM_TILE(RR, BB) FN(mm_lanes_tile)(type, RR, BB, out, xT, NL, lane0, w, nIn, nOut, b0, nrows, r)
      if (R == 8 && BT == 1) MM_TILE(8, 1);
      else if (R == 8) MM_TILE(8, 2);
      else if (R == 4) {
        switch (BT) {
          case 1: MM_TILE(4, 1); break;
          case 2: MM_TILE(4, 2); break;
          case 3: MM_TILE(4, 3); break;
          default: MM_TILE(4, 4); break;
        }
      } else {
        for (int rr = 0; rr < R; rr++) {
          int rsave = r;
          r = rsave + rr;
          switch (BT) {
            case 1: MM_TILE(1, 1); break;
            case 2: MM_TILE(1, 2); break;
            case 3: MM_TILE(1, 3); break;
            default: MM_TILE(1, 4); break;
          }
          r = rsave;
        }
      }
#undef MM_TILE
    }
  }
}

#define SUPER_ROWS 256 /* batch rows prepared per pass over the weights */

INL void FN(mm_f32in)(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                      int r1, kscratch *s) {
  const float *x = (const float *)xv;
  if (type == FT_Q40 && batch <= 4) {
    /* streams per batch size as measured best (11008x4096 from DRAM, 1.2-1.4x over one stream) */
    switch (batch) {
      case 1: FN(mm40_rows)(1, 4, out, x, w, nIn, nOut, r0, r1); break;
      case 2: FN(mm40_rows)(2, 4, out, x, w, nIn, nOut, r0, r1); break;
      case 3: FN(mm40_rows)(3, 2, out, x, w, nIn, nOut, r0, r1); break;
      default: FN(mm40_rows)(4, 2, out, x, w, nIn, nOut, r0, r1); break;
    }
    return;
  }
  if (batch <= 4) {
    switch (batch) {
      case 1: FN(mm_rows)(type, 1, out, x, w, nIn, nOut, r0, r1); break;
      case 2: FN(mm_rows)(type, 2, out, x, w, nIn, nOut, r0, r1); break;
      case 3: FN(mm_rows)(type, 3, out, x, w, nIn, nOut, r0, r1); break;
      default: FN(mm_rows)(type, 4, out, x, w, nIn, nOut, r0, r1); break;
    }
    return;
  }
  int maxRows = batch < SUPER_ROWS ? batch : SUPER_ROWS;
  float *xT = (float *)kscratch_get(s, (size_t)nIn * (size_t)((maxRows + 15) / 16 * 16) * sizeof(float));
  if (xT == NULL) return;
  for (int b0 = 0; b0 < batch; b0 += SUPER_ROWS) {
    int nrows = batch - b0 < SUPER_ROWS ? batch - b0 : SUPER_ROWS;
    int NL = (nrows + 15) / 16 * 16;
    k_prep_f32_lanes(x, nIn, b0, nrows, NL, xT);
    FN(mm_lanes)(type, out, xT, NL, w, nIn, nOut, b0, nrows, r0, r1);
  }
}

static TGT void FN(mm_f32)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                           kscratch *s) {
  FN(mm_f32in)(FT_F32, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mm_f16)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                           kscratch *s) {
  FN(mm_f32in)(FT_F16, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mm_q40)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                           kscratch *s) {
  FN(mm_f32in)(FT_Q40, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mm_q80)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                           kscratch *s) {
  FN(mm_f32in)(FT_Q80, o, x, w, nIn, nOut, B, r0, r1, s);
}

/* ---- Q80-input matmul ---- */

/* 32 unsigned weight bytes of block k in element order: Q40 nibbles 0..15, or Q80 bytes ^ 0x80
 * (q + 128, so the signed product is recovered with corr = -128 * sum(x)). */
INL __m256i FN(wbytes)(int type, const uint8_t *blk) {
  if (type == FT_Q40) {
    __m256i q = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)));
    return _mm256_and_si256(_mm256_srlv_epi64(q, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0f));
  }
  return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + 2)), _mm256_set1_epi8((char)0x80));
}

/* acc + exact dot of 32 unsigned bytes with 32 signed bytes, as 8 int32 lane sums. */
INL __m256i FN(dot32)(__m256i acc, __m256i u, __m256i s) {
#if VNNI
  return _mm256_dpbusd_epi32(acc, u, s);
#else
  /* only for Q40 nibbles (u <= 15): the int16 pair sums cannot saturate */
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/*
 * Rows-kernel weight bytes. With VNNI the Q40 block is expanded without a shift: [qs & 0x0F |
 * qs & 0xF0] = [lo | 16 * hi], one AND on a broadcast load. vpdpbusd does not saturate, so the
 * upper four lanes simply hold 16x their value (their correction is -128 * sum(x), prepared
 * with the activations) and are scaled by 1/16, exactly, once per row in the final reduction.
 * This drops a shift from the per-block work, which is bound by the vector ALU ports.
 */
INL __m256i FN(wbytes_rows)(int type, const uint8_t *blk) {
#if VNNI
  if (type == FT_Q40)
    return _mm256_and_si256(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2))),
                            _mm256_setr_epi64x(0x0f0f0f0f0f0f0f0fLL, 0x0f0f0f0f0f0f0f0fLL, (long long)0xf0f0f0f0f0f0f0f0ULL,
                                               (long long)0xf0f0f0f0f0f0f0f0ULL));
#endif
  return FN(wbytes)(type, blk);
}

/* Horizontal sum of a rows-kernel accumulator (undoing the 16x of the upper lanes, see above). */
INL float FN(rows_sum)(int type, __m256 t) {
#if VNNI
  if (type == FT_Q40) t = _mm256_mul_ps(t, _mm256_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f));
#endif
  __m128 lo = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

typedef struct {
  int8_t *qs;
  int32_t *corr;
  float *dx;
} FN(rows_prep);

static int FN(prep_rows)(kscratch *s, const uint8_t *xq, int nb, int nrows, int off, FN(rows_prep) * p) {
  size_t qsB = k_align64((size_t)nrows * nb * QK), cB = k_align64((size_t)nrows * nb * 32);
  size_t dB = k_align64((size_t)nrows * (nb + DX_PAD) * 4);
  uint8_t *m = (uint8_t *)kscratch_get(s, qsB + cB + dB);
  if (m == NULL) return 0;
  p->qs = (int8_t *)m;
  p->corr = (int32_t *)(void *)(m + qsB);
  p->dx = (float *)(void *)(m + qsB + cB);
  k_prep_q80_rows(xq, nb, nrows, off, VNNI && off == 8 ? 128 : off, p->qs, p->corr, p->dx);
  return 1;
}

INL void FN(q_block_rows)(int type, int B, const FN(rows_prep) * p, const uint8_t *row, int nb, int b0, int k,
                          const float (*sc)[16], int j, __m256 (*acc)[4], int u) {
  int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
#if !VNNI
  if (type == FT_Q80) {
    /* signed x signed without VNNI: sign-extend both sides to int16 and use vpmaddwd (exact) */
    const uint8_t *blk = row + (size_t)k * bb;
    __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
    __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
    for (int b = 0; b < B; b++) {
      const int8_t *xq = p->qs + ((size_t)(b0 + b) * nb + k) * QK;
      __m256i x0 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)xq));
      __m256i x1 = _mm256_cvtepi8_epi16(_mm_load_si128((const __m128i *)(xq + 16)));
      __m256i d = _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
      acc[b][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_broadcast_ss(&sc[b][j]), acc[b][u]);
    }
    return;
  }
#endif
  __m256i wq = FN(wbytes_rows)(type, row + (size_t)k * bb);
  for (int b = 0; b < B; b++) {
    size_t bk = (size_t)(b0 + b) * nb + k;
    __m256i d = FN(dot32)(_mm256_load_si256((const __m256i *)(p->corr + bk * 8)), wq,
                          _mm256_load_si256((const __m256i *)(p->qs + bk * QK)));
    acc[b][u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_broadcast_ss(&sc[b][j]), acc[b][u]);
  }
}

/* batch <= 4 (Q80 weights, or Q40 without VNNI): per group of 16 blocks the weight scales are
 * fetched once and multiplied by each batch row's dx; per block one exact integer dot per batch
 * row. S distant rows (r, r + step, ...) at once, for S weight streams (see the VNNI Q40 kernel
 * below for why). */
INL void FN(mmq_tile)(int type, int B, int S, float *out, const FN(rows_prep) * p, const uint8_t *w, int nb, int nOut,
                      int b0, int r, int step) {
  /* accumulators per (row, batch row): a function of B only, never of S, so a row's result does
   * not depend on which tile it falls in (a sub-range or a thread's share is bit-identical) */
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
  for (int kg = 0; kg < nb; kg += 16) {
    int m = nb - kg < 16 ? nb - kg : 16;
    float sc[4][4][16] __attribute__((aligned(64)));
    for (int s = 0; s < S; s++) {
      const uint8_t *g = rows[s] + (size_t)kg * bb;
      for (int o = 0; o < 16 * bb; o += 64) _mm_prefetch((const char *)(g + pf + o), _MM_HINT_T0);
      __m512 dw = type == FT_Q40 && m == 16 ? FN(q40_scales16)(g) : FN(gather_d16)(g, bb, m);
      for (int b = 0; b < B; b++)
        _mm512_store_ps(sc[s][b], _mm512_mul_ps(dw, _mm512_loadu_ps(p->dx + (size_t)(b0 + b) * (nb + DX_PAD) + kg)));
    }
    if (m == 16) {
#pragma GCC unroll 16
      for (int j = 0; j < 16; j++)
        for (int s = 0; s < S; s++)
          FN(q_block_rows)(type, B, p, rows[s], nb, b0, kg + j, (const float(*)[16])sc[s], j, acc[s], j % U);
    } else {
      for (int j = 0; j < m; j++)
        for (int s = 0; s < S; s++) FN(q_block_rows)(type, B, p, rows[s], nb, b0, kg + j, (const float(*)[16])sc[s], j, acc[s], 0);
    }
  }
  for (int s = 0; s < S; s++)
    for (int b = 0; b < B; b++)
      out[(size_t)(b0 + b) * nOut + r + s * step] = FN(rows_sum)(
          type, _mm256_add_ps(_mm256_add_ps(acc[s][b][0], acc[s][b][1]), _mm256_add_ps(acc[s][b][2], acc[s][b][3])));
}

INL void FN(mmq_rows)(int type, int B, int S, float *out, const FN(rows_prep) * p, const uint8_t *w, int nb, int nOut,
                      int b0, int r0, int r1) {
  int part = (r1 - r0) / S;
  for (int i = 0; i < part; i++) FN(mmq_tile)(type, B, S, out, p, w, nb, nOut, b0, r0 + i, part);
  for (int r = r0 + S * part; r < r1; r++) FN(mmq_tile)(type, B, 1, out, p, w, nb, nOut, b0, r, 0);
}

#if VNNI
/*
 * Q40 x Q80 rows kernel with VNNI (batch <= 7), written for weights that stream from DRAM.
 *
 * Two blocks per 512-bit register. 128-bit lanes 0..3 hold [qs_k & 0x0F | qs_k & 0xF0 |
 * qs_k+1 & 0x0F | qs_k+1 & 0xF0]: two broadcast loads and one AND. That is two of the ymm
 * layout above side by side, so the prepared activations (qs and corr of consecutive blocks are
 * contiguous) are read unchanged, and the upper quarter of each block is again 16x its value,
 * undone by 1/16 in the final sum. Per pair of blocks: AND, vpdpbusd, cvt, vpermps (the two
 * blocks' scales, 8 lanes each), FMA: half the vector instructions per block of the ymm form,
 * on cores where 512-bit and 256-bit integer multiplies and FMAs both issue 2 per cycle.
 *
 * The scales of 16 blocks come from four loads and one word permute (q40_scales16). Partial
 * groups (row ends) use the masked gather, which never reads past the row.
 *
 * S rows far apart (one from each of S equal parts of [r0, r1)) are computed together: S
 * independent sequential streams. The hardware prefetchers follow each stream, so one core keeps
 * more lines in flight from DRAM than with one stream (the read probe measured 16 GB/s with one
 * stream, 21 GB/s with four, on the 2-core VM). Adjacent rows would not do: they are one stream.
 * This, more than the instruction count, is what took batch 1 from ~12 to ~18 GB/s per thread;
 * with one stream the two-block kernel is no faster than the ymm one from DRAM. Each stream is
 * also prefetched K_PREFETCH_Q40 bytes ahead (2 KiB measured best with 4 streams; 4 KiB, the
 * single-stream distance, is slightly worse).
 */


/* Blocks k and k+1 of a row (blk points at block k) in the two-block layout: a broadcast of
 * block k's 16 bytes to all four lanes, block k+1's merged into lanes 2-3, one AND. With two == 0
 * only block k (lanes 8..15 zero). */
INL __m512i FN(q40_pair)(const uint8_t *blk, int two) {
  const __m512i m = _mm512_setr_epi64(0x0f0f0f0f0f0f0f0fLL, 0x0f0f0f0f0f0f0f0fLL, (long long)0xf0f0f0f0f0f0f0f0ULL,
                                      (long long)0xf0f0f0f0f0f0f0f0ULL, 0x0f0f0f0f0f0f0f0fLL, 0x0f0f0f0f0f0f0f0fLL,
                                      (long long)0xf0f0f0f0f0f0f0f0ULL, (long long)0xf0f0f0f0f0f0f0f0ULL);
  if (!two) return _mm512_maskz_and_epi32(0x00ff, _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + 2))), m);
  __m512i a = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + 2)));
  a = _mm512_mask_broadcast_i32x4(a, 0xff00, _mm_loadu_si128((const __m128i *)(blk + 2 + Q40_BYTES)));
  return _mm512_and_si512(a, m);
}

/* One pair (or a last single block) of S rows x B batch rows. scv[s][b] holds the 16 products
 * dw * dx of the group; j is the pair's first block within the group. */
INL void FN(q40_pair_step)(int B, int S, const FN(rows_prep) * p, const uint8_t *const *rows, int nb, int b0, int k,
                           int j, int two, __m512 (*scv)[4], __m512 (*acc)[4]) {
  __m512i xv[4], cv[4];
  for (int b = 0; b < B; b++) {
    size_t bk = (size_t)(b0 + b) * nb + k;
    xv[b] = two ? _mm512_loadu_si512(p->qs + bk * QK) : _mm512_maskz_loadu_epi32(0x00ff, p->qs + bk * QK);
    cv[b] = two ? _mm512_loadu_si512(p->corr + bk * 8) : _mm512_maskz_loadu_epi32(0x00ff, p->corr + bk * 8);
  }
  /* lanes 0..7 take the scale of block j, lanes 8..15 that of block j + 1 */
  __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(j), _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
  for (int s = 0; s < S; s++) {
    __m512i wq = FN(q40_pair)(rows[s] + (size_t)k * Q40_BYTES, two);
    for (int b = 0; b < B; b++)
      acc[s][b] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(cv[b], wq, xv[b])),
                                  _mm512_permutexvar_ps(idx, scv[s][b]), acc[s][b]);
  }
}

/* Rows r, r + step, ..., r + (S - 1) * step against B batch rows. */
INL void FN(mmq40_tile)(int B, int S, float *out, const FN(rows_prep) * p, const uint8_t *w, int nb, int nOut, int b0,
                        int r, int step) {
  const uint8_t *rows[4];
  __m512 acc[4][4];
  for (int s = 0; s < S; s++) {
    rows[s] = w + (size_t)(r + s * step) * nb * Q40_BYTES;
    for (int b = 0; b < B; b++) acc[s][b] = _mm512_setzero_ps();
  }
  for (int kg = 0; kg < nb; kg += 16) {
    int m = nb - kg < 16 ? nb - kg : 16;
    __m512 scv[4][4];
    for (int s = 0; s < S; s++) {
      const uint8_t *g = rows[s] + (size_t)kg * Q40_BYTES;
      for (int o = 0; o < 16 * Q40_BYTES; o += 64) _mm_prefetch((const char *)(g + K_PREFETCH_Q40 + o), _MM_HINT_T0);
      __m512 dw = m == 16 ? FN(q40_scales16)(g) : FN(gather_d16)(g, Q40_BYTES, m);
      for (int b = 0; b < B; b++) scv[s][b] = _mm512_mul_ps(dw, _mm512_loadu_ps(p->dx + (size_t)(b0 + b) * (nb + DX_PAD) + kg));
    }
    if (m == 16) {
#pragma GCC unroll 8
      for (int j = 0; j < 16; j += 2) FN(q40_pair_step)(B, S, p, rows, nb, b0, kg + j, j, 1, scv, acc);
    } else {
      for (int j = 0; j < m; j += 2) FN(q40_pair_step)(B, S, p, rows, nb, b0, kg + j, j, j + 1 < m, scv, acc);
    }
  }
  const __m512 unscale = _mm512_setr_ps(1, 1, 1, 1, 0.0625f, 0.0625f, 0.0625f, 0.0625f, 1, 1, 1, 1, 0.0625f, 0.0625f,
                                        0.0625f, 0.0625f);
  for (int s = 0; s < S; s++)
    for (int b = 0; b < B; b++) out[(size_t)(b0 + b) * nOut + r + s * step] = _mm512_reduce_add_ps(_mm512_mul_ps(acc[s][b], unscale));
}

INL void FN(mmq40_rows)(int B, int S, float *out, const FN(rows_prep) * p, const uint8_t *w, int nb, int nOut, int b0,
                        int r0, int r1) {
  int part = (r1 - r0) / S;
  for (int i = 0; i < part; i++) FN(mmq40_tile)(B, S, out, p, w, nb, nOut, b0, r0 + i, part);
  for (int r = r0 + S * part; r < r1; r++) FN(mmq40_tile)(B, 1, out, p, w, nb, nOut, b0, r, 0);
}

/* batch 5..7: per tile of S rows, batch rows 0-3 then the rest; the second pass finds the
 * rows in L1. */
INL void FN(mmq40_rows8)(int B2, int S, float *out, const FN(rows_prep) * p, const uint8_t *w, int nb, int nOut,
                         int r0, int r1) {
  int part = (r1 - r0) / S;
  for (int i = 0; i < part; i++) {
    FN(mmq40_tile)(4, S, out, p, w, nb, nOut, 0, r0 + i, part);
    FN(mmq40_tile)(B2, S, out, p, w, nb, nOut, 4, r0 + i, part);
  }
  for (int r = r0 + S * part; r < r1; r++) {
    FN(mmq40_tile)(4, 1, out, p, w, nb, nOut, 0, r, 0);
    FN(mmq40_tile)(B2, 1, out, p, w, nb, nOut, 4, r, 0);
  }
}
#endif

/* Broadcast a 32-bit word from memory. Written as asm so the compiler keeps it a load-port
 * broadcast instead of rebuilding it from a register with shuffles (which compete with
 * vpdpbusd for the vector ports). */
INL __m512i FN(bcast_mem)(const int32_t *p) {
  __m512i r;
  __asm__("vpbroadcastd %1, %0" : "=v"(r) : "m"(*p));
  return r;
}

/*
 * Lanes along the batch: a tile of R weight rows x BT registers of 16 batch rows. Per block the
 * weight bytes of the R rows are expanded once into a small buffer; each of their 8 quads is
 * broadcast from it and meets the matching quad of every batch row (one load of x serves R
 * rows). VNNI: vpdpbusd accumulates exact int32 sums seeded with the correction. Without VNNI
 * (Q40 only) int16 pair sums are accumulated over the 8 quads (8 * 2 * 15 * 128 < 32768,
 * exact) and widened once per block. Then per (row, register): int -> float, times
 * f16(dw) * f16(dx), accumulated in float.
 */
INL void FN(mmq_lanes_tile)(int type, int R, int BT, float *out, const int32_t *xT, const int32_t *corrT,
                            const float *dxT, int NL, int lane0, const uint8_t *w, int nb, int nOut, int batch, int r) {
  const int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  __m512 acc[4][2];
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++) acc[rr][bt] = _mm512_setzero_ps();
  const uint8_t *row0 = w + (size_t)r * nb * bb;
  /* the f16 scales of 16 blocks per row come from one gather; per block they are broadcast from
   * memory (a load, not a shuffle) */
  float dws[4][16] __attribute__((aligned(64)));
  for (int k = 0; k < nb; k++) {
    if (k % 16 == 0)
      for (int rr = 0; rr < R; rr++)
        _mm512_store_ps(dws[rr], FN(gather_d16)(row0 + (size_t)rr * nb * bb + (size_t)k * bb, bb, nb - k));
    if (k % 4 == 0) /* 4 blocks are >= one cache line of each of the R weight streams */
      for (int rr = 0; rr < R; rr++)
        _mm_prefetch((const char *)(row0 + (size_t)rr * nb * bb + (size_t)k * bb + K_PREFETCH_BYTES), _MM_HINT_T0);
    int32_t wq[4][8] __attribute__((aligned(32)));
    const float *dw[4];
    for (int rr = 0; rr < R; rr++) {
      const uint8_t *blk = row0 + (size_t)rr * nb * bb + (size_t)k * bb;
      _mm256_store_si256((__m256i *)wq[rr], FN(wbytes)(type, blk));
      dw[rr] = &dws[rr][k % 16];
    }
    const int32_t *xk = xT + (size_t)k * 8 * NL + lane0;
    __m512i is[4][2];
#if VNNI
    for (int bt = 0; bt < BT; bt++) {
      __m512i c = _mm512_load_si512((const void *)(corrT + (size_t)k * NL + lane0 + 16 * bt));
      for (int rr = 0; rr < R; rr++) is[rr][bt] = c;
    }
    for (int t = 0; t < 8; t++) {
      __m512i xv[2];
      for (int bt = 0; bt < BT; bt++) xv[bt] = _mm512_load_si512((const void *)(xk + (size_t)t * NL + 16 * bt));
      for (int rr = 0; rr < R; rr++) {
        __m512i wt = FN(bcast_mem)(&wq[rr][t]);
        for (int bt = 0; bt < BT; bt++) is[rr][bt] = _mm512_dpbusd_epi32(is[rr][bt], wt, xv[bt]);
      }
    }
#else
    for (int rr = 0; rr < R; rr++)
      for (int bt = 0; bt < BT; bt++) is[rr][bt] = _mm512_setzero_si512();
    for (int t = 0; t < 8; t++) {
      __m512i xv[2];
      for (int bt = 0; bt < BT; bt++) xv[bt] = _mm512_load_si512((const void *)(xk + (size_t)t * NL + 16 * bt));
      for (int rr = 0; rr < R; rr++) {
        __m512i wt = FN(bcast_mem)(&wq[rr][t]);
        for (int bt = 0; bt < BT; bt++) is[rr][bt] = _mm512_add_epi16(is[rr][bt], _mm512_maddubs_epi16(wt, xv[bt]));
      }
    }
    for (int bt = 0; bt < BT; bt++) {
      __m512i c = _mm512_load_si512((const void *)(corrT + (size_t)k * NL + lane0 + 16 * bt));
      for (int rr = 0; rr < R; rr++)
        is[rr][bt] = _mm512_add_epi32(_mm512_madd_epi16(is[rr][bt], _mm512_set1_epi16(1)), c);
    }
#endif
    for (int bt = 0; bt < BT; bt++) {
      __m512 dx = _mm512_load_ps(dxT + (size_t)k * NL + lane0 + 16 * bt);
      for (int rr = 0; rr < R; rr++)
        acc[rr][bt] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is[rr][bt]), _mm512_mul_ps(_mm512_set1_ps(*dw[rr]), dx), acc[rr][bt]);
    }
  }
  for (int rr = 0; rr < R; rr++)
    for (int bt = 0; bt < BT; bt++)
      FN(store_lanes)(out, acc[rr][bt], nOut, lane0 + 16 * bt, batch - lane0 - 16 * bt, r + rr);
}

/* Rows outer, batch tiles inner: a tile of 4 weight rows stays in L1 while every batch tile
 * runs against it, so the weights are read from memory once whatever the batch. */
INL void FN(mmq_lanes)(int type, float *out, const int32_t *xT, const int32_t *corrT, const float *dxT, int NL,
                       const uint8_t *w, int nb, int nOut, int batch, int r0, int r1) {
  for (int r = r0; r < r1; r += 4) {
    int R = r1 - r < 4 ? r1 - r : 4;
    for (int lane0 = 0; lane0 < NL; lane0 += 32) {
      int two = NL - lane0 >= 32;
      if (R == 4) {
        if (two) FN(mmq_lanes_tile)(type, 4, 2, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, batch, r);
        else FN(mmq_lanes_tile)(type, 4, 1, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, batch, r);
      } else {
        for (int rr = 0; rr < R; rr++) {
          if (two) FN(mmq_lanes_tile)(type, 1, 2, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, batch, r + rr);
          else FN(mmq_lanes_tile)(type, 1, 1, out, xT, corrT, dxT, NL, lane0, w, nb, nOut, batch, r + rr);
        }
      }
    }
  }
}

INL void FN(mmq)(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                 kscratch *s) {
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  int off = type == FT_Q40 ? 8 : VNNI ? 128 : 0;
  /* With VNNI, Q40 batches up to 7 take the rows kernel (two passes per tile above 4): it costs
   * about 0.8 ms per batch row on 11008x4096 where the lanes kernel costs ~6 ms flat for 5..16. */
  int rowsMax = VNNI && type == FT_Q40 ? 7 : 4;
  if (batch > rowsMax && (VNNI || type == FT_Q40)) {
    int maxNL = (batch < SUPER_ROWS ? batch : SUPER_ROWS) + 15;
    maxNL -= maxNL % 16;
    size_t xB = k_align64((size_t)nb * 8 * maxNL * 4), cB = k_align64((size_t)nb * maxNL * 4);
    uint8_t *m = (uint8_t *)kscratch_get(s, xB + 2 * cB);
    if (m == NULL) return;
    int32_t *xT = (int32_t *)(void *)m;
    int32_t *corrT = (int32_t *)(void *)(m + xB);
    float *dxT = (float *)(void *)(m + xB + cB);
    for (int b0 = 0; b0 < batch; b0 += SUPER_ROWS) {
      int nrows = batch - b0 < SUPER_ROWS ? batch - b0 : SUPER_ROWS;
      int NL = (nrows + 15) / 16 * 16;
      k_prep_q80_lanes(xq, nb, b0, nrows, NL, off, xT, corrT, dxT);
      FN(mmq_lanes)(type, out + (size_t)b0 * nOut, xT, corrT, dxT, NL, w, nb, nOut, nrows, r0, r1);
    }
    return;
  }
  FN(rows_prep) p;
  if (!FN(prep_rows)(s, xq, nb, batch, off, &p)) return;
#if VNNI
  if (type == FT_Q40 && batch > 4) { /* 5..7, see rowsMax */
    switch (batch) {
      case 5: FN(mmq40_rows8)(1, 2, out, &p, w, nb, nOut, r0, r1); break;
      case 6: FN(mmq40_rows8)(2, 2, out, &p, w, nb, nOut, r0, r1); break;
      default: FN(mmq40_rows8)(3, 2, out, &p, w, nb, nOut, r0, r1); break;
    }
    return;
  }
  if (type == FT_Q40 && batch <= 4) {
    switch (batch) {
      case 1: FN(mmq40_rows)(1, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
      case 2: FN(mmq40_rows)(2, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
      case 3: FN(mmq40_rows)(3, 2, out, &p, w, nb, nOut, 0, r0, r1); break;
      default: FN(mmq40_rows)(4, 2, out, &p, w, nb, nOut, 0, r0, r1); break;
    }
    return;
  }
#endif
  if (batch <= 4) {
    /* 4 streams measured best for every batch here (1.2-1.4x over one from DRAM) */
    switch (batch) {
      case 1: FN(mmq_rows)(type, 1, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
      case 2: FN(mmq_rows)(type, 2, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
      case 3: FN(mmq_rows)(type, 3, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
      default: FN(mmq_rows)(type, 4, 4, out, &p, w, nb, nOut, 0, r0, r1); break;
    }
    return;
  }
  /* remaining case: Q80 weights without VNNI, batch > 4: groups of 4 batch rows per weight row
   * (the row stays in L1 between groups) */
  for (int r = r0; r < r1; r++) {
    int b0 = 0;
    for (; b0 + 4 <= batch; b0 += 4) FN(mmq_rows)(type, 4, 1, out, &p, w, nb, nOut, b0, r, r + 1);
    for (; b0 < batch; b0++) FN(mmq_rows)(type, 1, 1, out, &p, w, nb, nOut, b0, r, r + 1);
  }
}

static TGT void FN(mmq_q40)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                            kscratch *s) {
  FN(mmq)(FT_Q40, o, x, w, nIn, nOut, B, r0, r1, s);
}
static TGT void FN(mmq_q80)(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                            kscratch *s) {
  FN(mmq)(FT_Q80, o, x, w, nIn, nOut, B, r0, r1, s);
}

#undef INL
