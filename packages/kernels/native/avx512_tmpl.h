/*
 * AVX-512 kernels, included twice by avx512.c: once with VNNI 0 (AVX-512 F/BW/VL/DQ; byte dots
 * through vpmaddubsw + vpmaddwd) and once with VNNI 1 (vpdpbusd). TGT is the target attribute
 * and FN(name) gives each copy its own names.
 *
 * F32 input, as in avx2.c: batch <= 4 runs "rows" kernels (lanes along the input, every batch
 * row against each decoded weight block), larger batches run "lanes" kernels (activations
 * transposed once per call, 16 batch rows per register, each weight value broadcast). Q80 input
 * runs the "weight lanes" kernel at every batch (lanes along the output rows, dllama's order).
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

/*
 * Q80-input matmul in dllama's exact arithmetic ("weight lanes" kernel). Every output is the
 * chain acc = fma(float(block dot), dw * dx, acc) over its blocks in order, which cannot be
 * reassociated, so SIMD lanes run along the OUTPUT rows: a tile of 16 weight rows is transposed
 * block by block so that lane i holds row i, and one vector FMA advances the 16 chains by one
 * block. Per block of the tile the 16 rows' 16 quantized bytes are loaded (4 x 4 rows into the
 * 128-bit lanes of 4 registers) and transposed with 8 unpacks into 4 registers of dwords, lane i
 * = row i; Q40 nibbles are split with 2 ANDs and a shift each (8 registers, quad t = elements
 * 4t..4t+3). The 16 scales come from one gather. Then for every batch row of the register tile:
 * 8 vpdpbusd against the row's 8 activation quads broadcast from memory (seeded with -off *
 * sum(x), exact integers), a convert, dw * dx and the FMA. So the weights are loaded and
 * transposed once per block for all batch rows, and the integer units do 64 useful MACs per
 * instruction whatever the batch. Without VNNI: vpmaddubsw into int16 (8 quads of nibbles x
 * int8 cannot overflow), or for Q80 weights both sides sign-extended into int16 halves (vpmaddwd).
 *
 * Batches above WL_BT rows take the 16-row tile through chunks of WL_KC blocks: the first batch
 * tile transposes the chunk into a buffer (L1), the others read it back; the accumulators pass
 * from chunk to chunk through the output, so the chains (and the bits) are those of one pass.
 */
#define WL_BT 8  /* batch rows per register tile */
#define WL_KC 32 /* blocks per chunk when the transposed weights are reused */

typedef struct {
  __m512i q[VNNI ? 8 : 16]; /* quad t of each row (unsigned bytes); non-VNNI Q80: q[2t], q[2t + 1] even / odd int16 */
  __m512 dw;     /* f16(d) of each row */
} FN(wl_blk);

typedef struct {
  int32_t *corr;  /* (batch, nb) -off * sum of the block's 32 activation bytes */
  float *dx;      /* (batch, nb) f16(d) of the activation block */
  int32_t *xs16;  /* non-VNNI Q80 weights: (batch, nb, 16) even / odd byte pairs as int16 */
  FN(wl_blk) *buf; /* WL_KC transposed blocks */
} FN(wl_prep);

static inline int32_t FN(ld32)(const uint8_t *p) {
  int32_t v;
  memcpy(&v, p, 4);
  return v;
}

static int FN(wl_prepare)(kscratch *s, int type, const uint8_t *xq, int nb, int batch, FN(wl_prep) * p) {
  int off = type == FT_Q40 ? 8 : VNNI ? 128 : 0;
  int s16 = !VNNI && type == FT_Q80;
  size_t n = (size_t)batch * nb;
  size_t bufB = batch > WL_BT ? (size_t)WL_KC * sizeof(FN(wl_blk)) : 0;
  size_t cB = k_align64(n * 4), xB = s16 ? k_align64(n * 64) : 0;
  uint8_t *m = (uint8_t *)kscratch_get(s, bufB + 2 * cB + xB);
  if (m == NULL) return 0;
  p->buf = (FN(wl_blk) *)(void *)m;
  p->corr = (int32_t *)(void *)(m + bufB);
  p->dx = (float *)(void *)(m + bufB + cB);
  p->xs16 = (int32_t *)(void *)(m + bufB + 2 * cB);
  for (size_t i = 0; i < n; i++) {
    const uint8_t *blk = xq + i * Q80_BYTES;
    int sum = 0;
    for (int j = 0; j < QK; j++) sum += (int8_t)blk[2 + j];
    p->corr[i] = -off * sum;
    p->dx[i] = k_f16_to_f32(k_rd16(blk));
    if (s16)
      for (int t = 0; t < 8; t++) {
        const int8_t *q = (const int8_t *)blk + 2 + 4 * t;
        p->xs16[i * 16 + 2 * t] = (int32_t)(((uint32_t)(uint16_t)q[2] << 16) | (uint16_t)q[0]);
        p->xs16[i * 16 + 2 * t + 1] = (int32_t)(((uint32_t)(uint16_t)q[3] << 16) | (uint16_t)q[1]);
      }
  }
  return 1;
}

/* 16 bytes at each of p[0..15] -> T[0..3], lane i of T[j] = dword j of p[i] */
INL void FN(t16x4)(const uint8_t *const *p, __m512i *T) {
  __m512i z[4];
  for (int g = 0; g < 4; g++) { /* z[g] = [row g | row 4 + g | row 8 + g | row 12 + g] */
    /* two 256-bit inserts and one 512-bit: fewer 512-bit shuffles than three 128-bit inserts */
    __m256i lo = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p[g])),
                                         _mm_loadu_si128((const __m128i *)p[4 + g]), 1);
    __m256i hi = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p[8 + g])),
                                         _mm_loadu_si128((const __m128i *)p[12 + g]), 1);
    z[g] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
  __m512i t0 = _mm512_unpacklo_epi32(z[0], z[1]), t1 = _mm512_unpackhi_epi32(z[0], z[1]);
  __m512i t2 = _mm512_unpacklo_epi32(z[2], z[3]), t3 = _mm512_unpackhi_epi32(z[2], z[3]);
  T[0] = _mm512_unpacklo_epi64(t0, t2);
  T[1] = _mm512_unpackhi_epi64(t0, t2);
  T[2] = _mm512_unpacklo_epi64(t1, t3);
  T[3] = _mm512_unpackhi_epi64(t1, t3);
}

/* Block k (byte offset koff in each row) of the tile's 16 rows, transposed into o. */
INL void FN(wl_block)(int type, const uint8_t *const *rowp, size_t koff, __m512i gidx, FN(wl_blk) * o) {
  const uint8_t *p[16];
  for (int i = 0; i < 16; i++) p[i] = rowp[i] + koff + 2;
  __m512i T[4];
  FN(t16x4)(p, T);
  if (type == FT_Q40) {
    const __m512i m = _mm512_set1_epi8(0x0f);
    for (int j = 0; j < 4; j++) {
      o->q[j] = _mm512_and_si512(T[j], m);
      o->q[4 + j] = _mm512_and_si512(_mm512_srli_epi16(T[j], 4), m);
    }
  } else {
    __m512i T2[4];
    for (int i = 0; i < 16; i++) p[i] += 16;
    FN(t16x4)(p, T2);
#if VNNI
    const __m512i f = _mm512_set1_epi8((char)0x80);
    for (int j = 0; j < 4; j++) {
      o->q[j] = _mm512_xor_si512(T[j], f);
      o->q[4 + j] = _mm512_xor_si512(T2[j], f);
    }
#else
    for (int j = 0; j < 4; j++) {
      o->q[2 * j] = _mm512_srai_epi16(_mm512_slli_epi16(T[j], 8), 8);
      o->q[2 * j + 1] = _mm512_srai_epi16(T[j], 8);
      o->q[8 + 2 * j] = _mm512_srai_epi16(_mm512_slli_epi16(T2[j], 8), 8);
      o->q[8 + 2 * j + 1] = _mm512_srai_epi16(T2[j], 8);
    }
#endif
  }
  /* the gathered dwords hold d and two data bytes; the truncation to 16 bits keeps d */
  __m512i g = _mm512_i32gather_epi32(gidx, (const void *)(rowp[0] + koff), 1);
  o->dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));
}

/* The 16 block dots of one batch row (its Q80 block at xb), as floats. Two accumulators halve
 * the chain of dependent integer multiply-adds. */
INL __m512 FN(wl_dot)(int type, const FN(wl_blk) * W, const uint8_t *xb, int32_t corr, const int32_t *xs16) {
#if VNNI
  (void)xs16;
  __m512i i0 = _mm512_set1_epi32(corr), i1 = _mm512_setzero_si512();
  for (int t = 0; t < 8; t += 2) {
    i0 = _mm512_dpbusd_epi32(i0, W->q[t], _mm512_set1_epi32(FN(ld32)(xb + 2 + 4 * t)));
    i1 = _mm512_dpbusd_epi32(i1, W->q[t + 1], _mm512_set1_epi32(FN(ld32)(xb + 6 + 4 * t)));
  }
  return _mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1));
#else
  if (type == FT_Q40) {
    /* int16 sums of all 8 quads stay exact: |sum| <= 8 * 2 * 15 * 128 < 32768 */
    __m512i s0 = _mm512_maddubs_epi16(W->q[0], _mm512_set1_epi32(FN(ld32)(xb + 2)));
    __m512i s1 = _mm512_maddubs_epi16(W->q[1], _mm512_set1_epi32(FN(ld32)(xb + 6)));
    for (int t = 2; t < 8; t += 2) {
      s0 = _mm512_add_epi16(s0, _mm512_maddubs_epi16(W->q[t], _mm512_set1_epi32(FN(ld32)(xb + 2 + 4 * t))));
      s1 = _mm512_add_epi16(s1, _mm512_maddubs_epi16(W->q[t + 1], _mm512_set1_epi32(FN(ld32)(xb + 6 + 4 * t))));
    }
    __m512i is = _mm512_madd_epi16(_mm512_add_epi16(s0, s1), _mm512_set1_epi16(1));
    return _mm512_cvtepi32_ps(_mm512_add_epi32(is, _mm512_set1_epi32(corr)));
  }
  __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512();
  for (int t = 0; t < 16; t += 2) {
    i0 = _mm512_add_epi32(i0, _mm512_madd_epi16(W->q[t], _mm512_set1_epi32(xs16[t])));
    i1 = _mm512_add_epi32(i1, _mm512_madd_epi16(W->q[t + 1], _mm512_set1_epi32(xs16[t + 1])));
  }
  return _mm512_cvtepi32_ps(_mm512_add_epi32(i0, i1));
#endif
}

/* Batch rows [b0, b0 + B) of the tile at row r (lanes in mask) over blocks [kc, kc + kn). mode:
 * 0 transpose each block in registers, 1 also keep it in the chunk buffer, 2 read it from there. */
INL void FN(wl_run)(int type, int B, int mode, float *out, const uint8_t *xq, const FN(wl_prep) * p,
                    const uint8_t *const *rowp, __m512i gidx, __mmask16 mask, int nb, int nOut, int r, int b0, int kc,
                    int kn, int fresh) {
  const int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  __m512 acc[WL_BT];
#pragma GCC unroll 8
  for (int b = 0; b < B; b++)
    acc[b] = fresh ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask, out + (size_t)(b0 + b) * nOut + r);
  /* The tile's 16 rows are adjacent, so the next tile is one contiguous region: it is fetched into
   * L2 as one linear stream while this one computes (its 16 rows read in step would be 16 short
   * streams that the hardware prefetchers pick up late): 2.2 -> 1.6 ms for 11008x4096 from DRAM. */
  const uint8_t *next = rowp[0] + 16 * (size_t)nb * bb;
  const size_t per = (16 * (size_t)bb + 63) / 64 * 64; /* bytes of it per block step, whole lines */
  for (int k = kc; k < kc + kn; k++) {
    if (mode != 2)
      for (size_t o = 0; o < per; o += 64) _mm_prefetch((const char *)(next + (size_t)k * per + o), _MM_HINT_T1);
    FN(wl_blk) W;
    if (mode == 2) W = p->buf[k - kc];
    else FN(wl_block)(type, rowp, (size_t)k * bb, gidx, &W);
    if (mode == 1) p->buf[k - kc] = W;
#pragma GCC unroll 8
    for (int b = 0; b < B; b++) {
      size_t bk = (size_t)(b0 + b) * nb + k;
      __m512 f = FN(wl_dot)(type, &W, xq + bk * Q80_BYTES, p->corr[bk], p->xs16 + bk * 16);
      acc[b] = _mm512_fmadd_ps(f, _mm512_mul_ps(W.dw, _mm512_set1_ps(p->dx[bk])), acc[b]);
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < B; b++) _mm512_mask_storeu_ps(out + (size_t)(b0 + b) * nOut + r, mask, acc[b]);
}

#define WL_RUN(BN, MODE, ...)                                                                                         \
  switch (BN) {                                                                                                       \
    case 1: FN(wl_run)(type, 1, MODE, __VA_ARGS__); break;                                                            \
    case 2: FN(wl_run)(type, 2, MODE, __VA_ARGS__); break;                                                            \
    case 3: FN(wl_run)(type, 3, MODE, __VA_ARGS__); break;                                                            \
    case 4: FN(wl_run)(type, 4, MODE, __VA_ARGS__); break;                                                            \
    case 5: FN(wl_run)(type, 5, MODE, __VA_ARGS__); break;                                                            \
    case 6: FN(wl_run)(type, 6, MODE, __VA_ARGS__); break;                                                            \
    case 7: FN(wl_run)(type, 7, MODE, __VA_ARGS__); break;                                                            \
    default: FN(wl_run)(type, 8, MODE, __VA_ARGS__); break;                                                           \
  }

INL void FN(mmq_wl)(int type, float *out, const uint8_t *xq, const FN(wl_prep) * p, const uint8_t *w, int nb, int nOut,
                    int batch, int r0, int r1) {
  const size_t rowBytes = (size_t)nb * (type == FT_Q40 ? Q40_BYTES : Q80_BYTES);
  for (int r = r0; r < r1; r += 16) {
    int nv = r1 - r < 16 ? r1 - r : 16;
    const uint8_t *rowp[16];
    int32_t gi[16] __attribute__((aligned(64)));
    for (int i = 0; i < 16; i++) {
      int ii = i < nv ? i : nv - 1; /* lanes past the range repeat its last row, never stored */
      rowp[i] = w + (size_t)(r + ii) * rowBytes;
      gi[i] = (int32_t)((size_t)ii * rowBytes);
    }
    __m512i gidx = _mm512_load_si512(gi);
    __mmask16 mask = nv == 16 ? (__mmask16)0xffff : (__mmask16)((1u << nv) - 1);
    if (batch <= WL_BT) {
      WL_RUN(batch, 0, out, xq, p, rowp, gidx, mask, nb, nOut, r, 0, 0, nb, 1)
      continue;
    }
    for (int kc = 0; kc < nb; kc += WL_KC) {
      int kn = nb - kc < WL_KC ? nb - kc : WL_KC;
      for (int b0 = 0; b0 < batch; b0 += WL_BT) {
        int bn = batch - b0 < WL_BT ? batch - b0 : WL_BT;
        if (b0 == 0) {
          WL_RUN(bn, 1, out, xq, p, rowp, gidx, mask, nb, nOut, r, b0, kc, kn, kc == 0)
        } else {
          WL_RUN(bn, 2, out, xq, p, rowp, gidx, mask, nb, nOut, r, b0, kc, kn, kc == 0)
        }
      }
    }
  }
}
#undef WL_RUN

INL void FN(mmq)(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                 kscratch *s) {
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  FN(wl_prep) p;
  if (!FN(wl_prepare)(s, type, xq, nb, batch, &p)) return;
  FN(mmq_wl)(type, out, xq, &p, w, nb, nOut, batch, r0, r1);
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
