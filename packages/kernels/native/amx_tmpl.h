/*
 * The AMX row loop and its parts (see amx.c), included twice by amx.c: BF = 0 for int8 tiles
 * (tdpbssd; Q40 or Q80 weights, Q80 input) and BF = 1 for bf16 tiles (tdpbf16ps; Q40 weights,
 * F32 input as three bf16 pieces), with TGT the target attribute and FN(name) the function names
 * of the instance. Only the tile product, the number of activation pieces, the unpack's block
 * conversion and the epilogue's term differ between the two.
 */
#if BF
#define AMX_DP_(c, a, b) _tile_dpbf16ps(c, a, b)
#else
#define AMX_DP_(c, a, b) _tile_dpbssd(c, a, b)
#endif

/*
 * The unpacked weights of a group of 32 rows: abuf[row][k][32 weight integers] (int8, or bf16
 * when BF; row stride AROW(KP, BF) bytes, KP = blocks rounded up to UB), so the A tile of block k
 * for rows 16h..16h+15 is at abuf + 16h AROW(KP, BF) + k ABLK(BF) with stride AROW(KP, BF); the
 * scales as floats in dws[k / UB][row][k % UB], so the scales of one block are 64 bytes apart, a
 * constant offset from one pointer in the epilogue (with dws[row][k], a stride of KP floats, the
 * compiler kept sixteen row addresses in vector registers and moved one out per row: 0.92-1.04
 * of the time, median 0.97, side by side over ten runs). Rows past the range are zero.
 *
 * Unit u is chunk c = u % nch of row u / nch: units in order walk the group's memory linearly,
 * one sequential stream, unpacked a few at a time between tile steps so the weights stream in
 * while the tile unit and the epilogue work.
 * - int8, Q40: blocks k and k + 1 in one register as [q_k, q_k, q_k+1, q_k+1], the upper copies
 *   shifted right by 4, and one vpermb through the table of nibble - 8 (vpermb reads 6 index
 *   bits, the 2 above the nibble are noise, hence 4 copies); Q80: the 32 bytes as they are.
 * - bf16, Q40: the 16 payload bytes spread to 32 words (byte i of the payload in words i and
 *   16 + i), the second half shifted right by 4, and one vpermw through the table of bf16(q - 8)
 *   (vpermw reads 5 index bits: bit 4 of a low nibble's word is noise, hence the table twice);
 *   Q80: the 32 bytes sign-extended and converted to floats, then to bf16 (exact: |q| <= 128).
 */
static inline TGT void FN(amx_unpack)(int type, const uint8_t *w, size_t rowBytes, int nb, int nch, int g, int R,
                                      int u0, int u1, int8_t *abuf, float *dws) {
  const int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  const size_t KP = (size_t)nch * UB;
#if BF
  static const uint8_t spread[64] __attribute__((aligned(64))) = {
      0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10, 0, 11, 0, 12, 0, 13, 0, 14, 0, 15, 0,
      0, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8, 0, 9, 0, 10, 0, 11, 0, 12, 0, 13, 0, 14, 0, 15, 0};
  static const uint16_t tabw[32] __attribute__((aligned(64))) = {
      0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80, 0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0,
      0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80, 0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};
  const __m512i sp = _mm512_load_si512(spread), tab = _mm512_load_si512(tabw);
  const __m512i sh = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0x40004, 0x40004, 0x40004, 0x40004, 0x40004, 0x40004,
                                       0x40004, 0x40004);
#else
  const __m512i tab = _mm512_broadcast_i32x4(_mm_setr_epi8(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
  const __m512i sh = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
#endif
  for (int u = u0; u < u1; u++) {
    int r = u / nch, c = u % nch;
    int kc = c * UB, m = nb - kc < UB ? nb - kc : UB;
    int8_t *a = abuf + (size_t)r * AROW(KP, BF) + (size_t)kc * ABLK(BF);
    float *d = dws + amx_dw_index(r, kc);
    if (r >= R) {
      for (int o = 0; o < m * ABLK(BF); o += 64) _mm512_store_si512((void *)(a + o), _mm512_setzero_si512());
      _mm512_store_ps(d, _mm512_setzero_ps());
      continue;
    }
    const uint8_t *blk = w + (size_t)(g + r) * rowBytes + (size_t)kc * bb;
    for (int o = 0; o < UB * bb; o += 64) _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES + o), _MM_HINT_T0);
    _mm512_store_ps(d, type == FT_Q40 && m == UB ? amx_q40_scales16(blk) : amx_scales(blk, bb, m));
#if BF
    if (type == FT_Q40) {
      for (int kk = 0; kk < m; kk++, blk += Q40_BYTES) {
        __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + 2)));
        q = _mm512_maskz_permutexvar_epi8(0x5555555555555555ull, sp, q);
        _mm512_store_si512((void *)(a + kk * 64), _mm512_permutexvar_epi16(_mm512_srlv_epi16(q, sh), tab));
      }
    } else {
      for (int kk = 0; kk < m; kk++, blk += Q80_BYTES) {
        __m512 lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 2))));
        __m512 hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(blk + 18))));
        _mm512_store_si512((void *)(a + kk * 64), (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      }
    }
#else
    int kk = 0;
    if (type == FT_Q40) {
      for (; kk + 2 <= m; kk += 2, blk += 2 * Q40_BYTES) {
        __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + 2)));
        q = _mm512_mask_broadcast_i32x4(q, 0xff00, _mm_loadu_si128((const __m128i *)(blk + 2 + Q40_BYTES)));
        _mm512_store_si512((void *)(a + kk * 32), _mm512_permutexvar_epi8(_mm512_srlv_epi64(q, sh), tab));
      }
      if (kk < m) {
        __m512i q = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(blk + 2)));
        _mm256_store_si256((__m256i *)(a + kk * 32),
                           _mm512_castsi512_si256(_mm512_permutexvar_epi8(_mm512_srlv_epi64(q, sh), tab)));
      }
    } else {
      for (; kk < m; kk++, blk += Q80_BYTES)
        _mm256_store_si256((__m256i *)(a + kk * 32), _mm256_loadu_si256((const __m256i *)(blk + 2)));
    }
#endif
  }
}

/*
 * One block k of 32 weight rows (A tiles a0, a1) against 32 batch rows (B tiles b0, b1; b1 unused
 * when !two): C0 = a0.b0, C1 = a0.b1, C2 = a1.b0, C3 = a1.b1, each tile loaded once for two
 * products. The previous step's C tiles are stored to prev (NULL for none) between the products.
 * BF = 1: tdpbf16ps over the three pieces of the activations (b0, b1 the hi tiles; mid and lo
 * follow, 256 words apart), each piece's tile loaded once for two products too.
 */
static inline __attribute__((always_inline)) TGT void FN(amx_step)(const int8_t *a0, const int8_t *a1, size_t as,
                                                                    const int32_t *b0, const int32_t *b1, int32_t *prev,
                                                                    int two) {
  _tile_loadd(4, a0, as);
  _tile_loadd(6, b0, 64);
  if (prev) _tile_stored(0, prev, 64);
  _tile_zero(0);
  AMX_DP_(0, 4, 6);
  if (two) {
    _tile_loadd(7, b1, 64);
    if (prev) _tile_stored(1, prev + 256, 64);
    _tile_zero(1);
    AMX_DP_(1, 4, 7);
  }
  _tile_loadd(5, a1, as);
  if (prev) _tile_stored(2, prev + 512, 64);
  _tile_zero(2);
  AMX_DP_(2, 5, 6);
  if (two) {
    if (prev) _tile_stored(3, prev + 768, 64);
    _tile_zero(3);
    AMX_DP_(3, 5, 7);
  }
#if BF
  for (int p = 1; p < PIECES; p++) {
    _tile_loadd(6, b0 + p * 256, 64);
    AMX_DP_(0, 4, 6);
    AMX_DP_(2, 5, 6);
    if (two) {
      _tile_loadd(7, b1 + p * 256, 64);
      AMX_DP_(1, 4, 7);
      AMX_DP_(3, 5, 7);
    }
  }
#endif
}

/* After each tile step of the group: unpack the next group's units up to the same fraction of
 * the group's steps. */
static inline TGT void FN(amx_advance)(amx_next *nx) {
  if (nx->Rn <= 0) return;
  /* Bresenham: units done after step s = floor(units * s / steps) without a division */
  nx->acc += nx->units;
  int upto = nx->done;
  while (nx->acc >= nx->steps) {
    nx->acc -= nx->steps;
    upto++;
  }
  if (upto > nx->done) {
    FN(amx_unpack)(nx->type, nx->w, nx->rowBytes, nx->nb, nx->nch, nx->gn, nx->Rn, nx->done, upto, nx->abuf, nx->dws);
    nx->done = upto;
  }
}

/* One block's term of an accumulator row: float(C row) * (dw * dx), or with bf16 tiles, where C
 * holds float sums and the activations carry no scale, C row * dw. */
static inline __attribute__((always_inline)) TGT __m512 FN(amx_term)(__m512 a, const int32_t *c, float dw,
                                                                      __m512 dx) {
  if (BF) return _mm512_fmadd_ps(_mm512_load_ps((const float *)(const void *)c), _mm512_set1_ps(dw), a);
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)c)), _mm512_mul_ps(_mm512_set1_ps(dw), dx),
                         a);
}

/*
 * acc[r] = fma(float(C row r), dw[r][k] * dx, acc[r]) for the 16 rows of the C tile c0 of block k,
 * then the same with c1 for block k + 1 when nblk is 2: one load and one store of each
 * accumulator for both FMAs, which run in block order, so one or two blocks give the same bits.
 * dw points at the scale of row 0 and block k (rows UB floats apart, block k + 1's next to it),
 * dx at block k's 16 activation scales (block k + 1's follow; unused when BF).
 */
static inline __attribute__((always_inline)) TGT void FN(amx_epi)(float *acc, const int32_t *c0, const int32_t *c1,
                                                                   const float *dw, const float *dx, int nblk) {
  const __m512 da = BF ? _mm512_setzero_ps() : _mm512_load_ps(dx);
  const __m512 db = BF || nblk != 2 ? da : _mm512_load_ps(dx + 16);
  for (int r = 0; r < 16; r++) {
    __m512 a = _mm512_load_ps(acc + r * 16);
    a = FN(amx_term)(a, c0 + r * 16, dw[r * UB], da);
    if (nblk == 2) a = FN(amx_term)(a, c1 + r * 16, dw[r * UB + 1], db);
    _mm512_store_ps(acc + r * 16, a);
  }
}

/* Epilogue of the steps of block k (C tiles at ca) and, when nblk is 2, of block k + 1 (at cb; k is
 * even then, so both scales sit in the same UB chunk of dws); accumulators acc (4 x 256 floats, in
 * the C tiles' order). */
static inline __attribute__((always_inline)) TGT void FN(amx_epi_step)(float *acc, const int32_t *ca,
                                                                        const int32_t *cb, const float *D, int k,
                                                                        const float *dx0, const float *dx1, int two,
                                                                        int nblk) {
  const float *d0 = D + amx_dw_index(0, k), *d16 = D + amx_dw_index(16, k);
  const float *e0 = BF ? NULL : dx0 + k * 16, *e1 = BF ? NULL : dx1 + k * 16;
  FN(amx_epi)(acc, ca, cb, d0, e0, nblk);
  if (two) FN(amx_epi)(acc + 256, ca + 256, cb + 256, d0, e1, nblk);
  FN(amx_epi)(acc + 512, ca + 512, cb + 512, d16, e0, nblk);
  if (two) FN(amx_epi)(acc + 768, ca + 768, cb + 768, d16, e1, nblk);
}

/*
 * accb[q][r][n] (q = 2 * row half + tile) to out[batch row][weight row] (store), or back (the
 * chunk before left the rows' sums there), for tiles j0, j0 + 1 and rows g .. g + R - 1.
 */
static inline TGT void FN(amx_acc_io)(float *accb, float *out, int j0, int NJ, int nrows, int g, int R, int nOut,
                                      int store) {
  for (int q = 0; q < 4; q++) {
    int jj = j0 + (q & 1), rb = (q >> 1) * 16;
    if (jj >= NJ) continue;
    int nn = nrows - jj * 16 < 16 ? nrows - jj * 16 : 16;
    int rr = R - rb < 16 ? R - rb : 16;
    float *t = accb + q * 256;
    for (int n = 0; n < nn; n++) {
      float *o = out + (size_t)(jj * 16 + n) * nOut + g + rb;
      for (int r = 0; r < rr; r++) {
        if (store) o[r] = t[r * 16 + n];
        else t[r * 16 + n] = o[r];
      }
    }
  }
}

/*
 * Rows [r0, r1) against NJ activation tiles (nrows batch rows); out points at batch row 0 of the
 * pass. Groups of 32 rows in two buffers: while group g runs (per pair of activation tiles, block
 * after block), group g + 32 is unpacked into the other buffer a little after each step. xB holds
 * the B tiles of tile j and block k at (j * nbAll + k) * BS words (BS = B_TILE, or BF_TILE when
 * BF), dxB the activation scales (NULL when BF).
 *
 * The call covers blocks kb0 .. kb0 + nb - 1 of rows of nbAll blocks (w points at block kb0 of
 * row 0): a caller may cut long rows into chunks so that one chunk's B tiles and A buffers stay
 * in L2. A chunk after the first starts its accumulators from out, where the chunk before left
 * them, so the FMAs run in the same order as in one call and give the same bits.
 */
static TGT void FN(amx_rows)(int type, float *out, const int32_t *xB, const float *dxB, int NJ, int nrows,
                             const uint8_t *w, int kb0, int nb, int nbAll, int nOut, int r0, int r1, uint8_t *work) {
  const size_t BS = BF ? BF_TILE : B_TILE;
  const size_t rowBytes = k_row_bytes(type, (size_t)nbAll * QK);
  const int nch = (nb + UB - 1) / UB; /* unpack units per row */
  const size_t KP = (size_t)nch * UB, AS = AROW(KP, BF);
  const size_t aB = 32 * AS, dB = 32 * KP * 4;
  int8_t *abuf[2] = {(int8_t *)work, (int8_t *)(work + aB)};
  float *dws[2] = {(float *)(void *)(work + 2 * aB), (float *)(void *)(work + 2 * aB + dB)};
  int32_t *cbuf = (int32_t *)(void *)(work + 2 * aB + 2 * dB); /* 2 slots of the 4 C tiles of a step */
  float *accb = (float *)(void *)((uint8_t *)cbuf + 8 * 1024);  /* 4 x 16 x 16 */
  const int NP = (NJ + 1) / 2;
  const long steps = (long)NP * nb;
  amx_next nx = {type, nb, nch, 0, 0, 32 * nch, 0, steps, 0, rowBytes, w, NULL, NULL};
  if (r0 < r1) {
    int R0 = r1 - r0 < 32 ? r1 - r0 : 32;
    FN(amx_unpack)(type, w, rowBytes, nb, nch, r0, R0, 0, 32 * nch, abuf[0], dws[0]);
  }
  int cur = 0;
  for (int g = r0; g < r1; g += 32, cur ^= 1) {
    int R = r1 - g < 32 ? r1 - g : 32;
    nx.gn = g + 32;
    nx.Rn = r1 - nx.gn < 32 ? r1 - nx.gn : 32; /* <= 0: no next group */
    nx.done = 0;
    nx.acc = 0;
    nx.abuf = abuf[cur ^ 1];
    nx.dws = dws[cur ^ 1];
    const int8_t *A0 = abuf[cur], *A1 = abuf[cur] + 16 * AS;
    const float *D = dws[cur];
    for (int p = 0; p < NP; p++) {
      int j0 = 2 * p, two = j0 + 1 < NJ;
      const int32_t *xb0 = xB + ((size_t)j0 * nbAll + kb0) * BS, *xb1 = xb0 + (size_t)nbAll * BS;
      const float *dx0 = BF ? NULL : dxB + ((size_t)j0 * nbAll + kb0) * 16;
      const float *dx1 = BF ? NULL : dx0 + (size_t)nbAll * 16;
      for (int i = 0; i < 1024; i += 16) _mm512_store_ps(accb + i, _mm512_setzero_ps());
      if (kb0 > 0) FN(amx_acc_io)(accb, out, j0, NJ, nrows, g, R, nOut, 0);
      for (int k = 0; k < nb; k++) {
        FN(amx_step)(A0 + (size_t)k * ABLK(BF), A1 + (size_t)k * ABLK(BF), AS, xb0 + (size_t)k * BS,
                 xb1 + (size_t)k * BS, k > 0 ? cbuf + ((k - 1) & 1) * 1024 : NULL, two);
        /* blocks k - 2 and k - 1, stored by the previous step and this one */
        if (k >= 2 && (k & 1) == 0) FN(amx_epi_step)(accb, cbuf, cbuf + 1024, D, k - 2, dx0, dx1, two, 2);
        FN(amx_advance)(&nx);
      }
      int32_t *last = cbuf + ((nb - 1) & 1) * 1024;
      _tile_stored(0, last, 64);
      _tile_stored(2, last + 512, 64);
      if (two) {
        _tile_stored(1, last + 256, 64);
        _tile_stored(3, last + 768, 64);
      }
      /* what the loop left: block nb - 1 alone (nb odd) or blocks nb - 2 and nb - 1 */
      if (nb & 1) FN(amx_epi_step)(accb, last, last, D, nb - 1, dx0, dx1, two, 1);
      else FN(amx_epi_step)(accb, cbuf, last, D, nb - 2, dx0, dx1, two, 2);
      FN(amx_acc_io)(accb, out, j0, NJ, nrows, g, R, nOut, 1);
    }
    if (nx.Rn > 0 && nx.done < nx.units) {
      FN(amx_unpack)(type, w, rowBytes, nb, nch, nx.gn, nx.Rn, nx.done, nx.units, nx.abuf, nx.dws);
    }
  }
}

#undef AMX_DP_
