/*
 * Intel AMX (AMX-TILE + AMX-INT8) kernel for the batched Q40xQ80 and Q80xQ80 matmul: the
 * "avx512amx" path (avx512.c) sends batches of K_AMX_MIN_BATCH_Q40 / _Q80 rows and more here and
 * everything else to the avx512vnni kernels.
 *
 * One tdpbssd multiplies a tile A of 16 weight rows x 32 int8 (one block of each row, signed:
 * Q40 nibble - 8, or the Q80 byte) by a tile B holding the same block of 16 activation rows in
 * the VNNI layout (8 rows of 16 dwords: dword n of row t is bytes 4t..4t+3 of batch row n), into
 * a tile C of 16 x 16 exact int32 block dots. K is one block only: every block has its own pair
 * of scales, so two blocks can never share an integer sum (and a tdpbssd costs the same with
 * K = 32 as with 64 here). C is stored and each of its rows (one weight row, 16 batch rows) is
 * converted and accumulated with AVX-512 as
 *     acc = fma(float(isum), f16(dw) * f16(dx), acc)
 * block after block: the operations of the VNNI lanes kernel (avx512_tmpl.h), so both give
 * bit-identical results. An output's accumulation depends on nothing but its own weight row and
 * batch row, never on which tile or sub-range [r0, r1) it falls in.
 *
 * Work order: groups of 32 weight rows (two A tiles per block) against pairs of 16-row activation
 * tiles (two B tiles), block after block: each step loads the four tiles of one block once and
 * runs four tdpbssd (C0 = A0.B0, C1 = A0.B1, C2 = A1.B0, C3 = A1.B1), so a C tile costs one tile
 * load instead of two. The accumulators of the 32 x 32 outputs live in memory (accb, 4 KiB, in
 * L1), so a whole row of blocks runs without chunking. Each step stores the previous step's C tiles
 * (block k - 1, into slot (k - 1) & 1 of cbuf, 2 x 4 KiB) between its own products, a tile store
 * between two tdpbssd overlapping with them; after every second step the epilogue takes the two
 * blocks in the slots at once (amx_epi: one load and one store of each accumulator for two
 * FMAs). Measured on the Emerald Rapids VM: tile work and 512-bit vector work hardly overlap on
 * one core while the host's other tenant is busy (a tile store and the float epilogue add up
 * exactly), and this order took a batch of 32 of 11008x4096 from 6.6-7.8 to 5.8-6.5 ms against
 * the 16-row order with the accumulators in registers (0.82-0.97 of its time side by side; 0.67
 * when the other tenant shares the core); the two-block epilogue took 0.87-1.03 of the time of
 * one block per step (mostly 0.94-1.0). Measured slower: epilogue pieces between the products,
 * the epilogue a step behind or over four blocks (four cbuf slots: the L1 footprint counts), its
 * two halves on alternate steps (three slots), one position's accumulators in registers (spills),
 * a GFNI nibble unpack (no faster than vpermb here), bf16 tiles (exact, but twice the tile bytes:
 * 1.26-1.53x) and unpacking each block just ahead into an L1 ring (see the package README).
 *
 * The next group is unpacked into a second buffer a little after each step, as one linear walk
 * over its rows (one stream for the hardware prefetcher, plus software prefetch), so the weights
 * stream in while the tiles and the epilogue work.
 *
 * Tile state: the configuration is loaded at the start of every call and released at its end
 * (per thread, so worker threads each have their own; no global state). The OS permission
 * (arch_prctl) is requested once per process at detection, in k_amx_available.
 */
#include "kernels.h"

#if defined(AIRLLM_X86)
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <cpuid.h>

#define AMX_TGT                                                                                                       \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx2,fma,f16c,amx-tile,amx-int8")))

#define UB 16       /* blocks per unpack unit */
#define TOK 256     /* batch rows per pass (16 tiles) */
#define B_TILE 128  /* int32 words of one B tile: 8 rows x 16 */
#define AROW(KP) ((KP) * 32 + 64) /* abuf row stride: padded so the 16 rows of an A tile do not share one L1 set */

typedef struct {
  uint8_t palette;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} amx_cfg;

static uint64_t xgetbv0(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

int k_amx_available(void) {
#if defined(__linux__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
  if (__get_cpuid_max(0, NULL) < 7) return 0;
  __cpuid_count(7, 0, a, b, c, d);
  if (!(d & (1u << 24)) || !(d & (1u << 25))) return 0; /* AMX-TILE, AMX-INT8 */
  if (!(c & (1u << 1))) return 0;                        /* AVX512-VBMI (vpermb) */
  if ((xgetbv0() & (3u << 17)) != (3u << 17)) return 0;  /* XTILECFG, XTILEDATA enabled by the OS */
  /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): process-wide, idempotent */
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) return 0;
  return 1;
#else
  return 0;
#endif
}

/* Activations of batch rows b0..b0+nrows-1 as NJ B tiles per block, [j][k]: xB holds the VNNI
 * layout (zero past the last row), dxB the 16 f16 scales as floats. */
static void amx_prep_x(const uint8_t *xq, int nb, int b0, int nrows, int NJ, int32_t *xB, float *dxB) {
  for (int j = 0; j < NJ; j++)
    for (int n = 0; n < 16; n++) {
      int b = j * 16 + n;
      for (int k = 0; k < nb; k++) {
        int32_t *dst = xB + ((size_t)j * nb + k) * B_TILE + n;
        float *dx = dxB + ((size_t)j * nb + k) * 16 + n;
        if (b < nrows) {
          const uint8_t *blk = xq + ((size_t)(b0 + b) * nb + k) * Q80_BYTES;
          for (int t = 0; t < 8; t++) {
            int32_t v;
            memcpy(&v, blk + 2 + 4 * t, 4);
            dst[t * 16] = v;
          }
          *dx = k_f16_to_f32(k_rd16(blk));
        } else {
          for (int t = 0; t < 8; t++) dst[t * 16] = 0;
          *dx = 0.0f;
        }
      }
    }
}

/* as gather_d16 in avx512_tmpl.h (see kernels.h) */
#define K_AMX_SCALES_DECL static inline AMX_TGT __m512 amx_scales
K_DEFINE_GATHER_D16(K_AMX_SCALES_DECL)
#undef K_AMX_SCALES_DECL

/* as q40_scales16 in avx512_tmpl.h (see kernels.h) */
#define K_AMX_SCALES16_DECL static inline AMX_TGT __m512 amx_q40_scales16
K_DEFINE_Q40_SCALES16(K_AMX_SCALES16_DECL)
#undef K_AMX_SCALES16_DECL

/*
 * The unpacked weights of a group of 32 rows: abuf[row][k][32] (row stride AROW(KP) bytes, KP =
 * blocks rounded up to UB), so the A tile of block k for rows 16h..16h+15 is at
 * abuf + 16h AROW(KP) + 32k with stride AROW(KP); the scales as floats in dws[k / UB][row][k % UB],
 * so the scales of one block are 64 bytes apart, a constant offset from one pointer in the
 * epilogue (with dws[row][k], a stride of KP floats, the compiler kept sixteen row addresses in
 * vector registers and moved one out per row: 0.92-1.04 of the time, median 0.97, side by side
 * over ten runs). Rows past the range are zero.
 *
 * Unit u is chunk c = u % nch of row u / nch: units in order walk the group's memory linearly,
 * one sequential stream, unpacked a few at a time between tile steps so the weights stream in
 * while the tile unit and the epilogue work. Q40: blocks k and k + 1 in one register as
 * [q_k, q_k, q_k+1, q_k+1], the upper copies shifted right by 4, and one vpermb through the table
 * of nibble - 8 (vpermb reads 6 index bits, the 2 above the nibble are noise, hence 4 copies).
 */
/* Index in dws of the scale of row r (of the group's 32) and block k. */
static inline size_t amx_dw_index(int r, int k) { return ((size_t)(k / UB) * 32 + r) * UB + k % UB; }

static inline AMX_TGT void amx_unpack(int type, const uint8_t *w, size_t rowBytes, int nb, int nch, int g, int R,
                                      int u0, int u1, int8_t *abuf, float *dws) {
  const int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  const size_t KP = (size_t)nch * UB;
  const __m512i tab = _mm512_broadcast_i32x4(_mm_setr_epi8(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
  const __m512i sh = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
  for (int u = u0; u < u1; u++) {
    int r = u / nch, c = u % nch;
    int kc = c * UB, m = nb - kc < UB ? nb - kc : UB;
    int8_t *a = abuf + (size_t)r * AROW(KP) + (size_t)kc * 32;
    float *d = dws + amx_dw_index(r, kc);
    if (r >= R) {
      for (int kk = 0; kk < m; kk += 2) _mm512_store_si512((void *)(a + kk * 32), _mm512_setzero_si512());
      _mm512_store_ps(d, _mm512_setzero_ps());
      continue;
    }
    const uint8_t *blk = w + (size_t)(g + r) * rowBytes + (size_t)kc * bb;
    for (int o = 0; o < UB * bb; o += 64) _mm_prefetch((const char *)(blk + K_PREFETCH_BYTES + o), _MM_HINT_T0);
    _mm512_store_ps(d, type == FT_Q40 && m == UB ? amx_q40_scales16(blk) : amx_scales(blk, bb, m));
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
  }
}

/*
 * One block k of 32 weight rows (A tiles a0, a1) against 32 batch rows (B tiles b0, b1; b1 unused
 * when !two): C0 = a0.b0, C1 = a0.b1, C2 = a1.b0, C3 = a1.b1, each tile loaded once for two
 * products. The previous step's C tiles are stored to prev (NULL for none) between the products.
 */
static inline __attribute__((always_inline)) AMX_TGT void amx_step(const int8_t *a0, const int8_t *a1, size_t as,
                                                                    const int32_t *b0, const int32_t *b1, int32_t *prev,
                                                                    int two) {
  _tile_loadd(4, a0, as);
  _tile_loadd(6, b0, 64);
  if (prev) _tile_stored(0, prev, 64);
  _tile_zero(0);
  _tile_dpbssd(0, 4, 6);
  if (two) {
    _tile_loadd(7, b1, 64);
    if (prev) _tile_stored(1, prev + 256, 64);
    _tile_zero(1);
    _tile_dpbssd(1, 4, 7);
  }
  _tile_loadd(5, a1, as);
  if (prev) _tile_stored(2, prev + 512, 64);
  _tile_zero(2);
  _tile_dpbssd(2, 5, 6);
  if (two) {
    if (prev) _tile_stored(3, prev + 768, 64);
    _tile_zero(3);
    _tile_dpbssd(3, 5, 7);
  }
}

/* Per-group state of amx_rows: where the next group's unpacking stands. */
typedef struct {
  int type, nb, nch, gn, Rn, units, done;
  long steps, acc;
  size_t rowBytes;
  const uint8_t *w;
  int8_t *abuf;
  float *dws;
} amx_next;

/* After each tile step of the group: unpack the next group's units up to the same fraction of
 * the group's steps. */
static inline AMX_TGT void amx_advance(amx_next *nx) {
  if (nx->Rn <= 0) return;
  /* Bresenham: units done after step s = floor(units * s / steps) without a division */
  nx->acc += nx->units;
  int upto = nx->done;
  while (nx->acc >= nx->steps) {
    nx->acc -= nx->steps;
    upto++;
  }
  if (upto > nx->done) {
    amx_unpack(nx->type, nx->w, nx->rowBytes, nx->nb, nx->nch, nx->gn, nx->Rn, nx->done, upto, nx->abuf, nx->dws);
    nx->done = upto;
  }
}

/*
 * acc[r] = fma(float(C row r), dw[r][k] * dx, acc[r]) for the 16 rows of the C tile c0 of block k,
 * then the same with c1 for block k + 1 when nblk is 2: one load and one store of each
 * accumulator for both FMAs, which run in block order, so one or two blocks give the same bits.
 * dw points at the scale of row 0 and block k (rows UB floats apart, block k + 1's next to it),
 * dx at block k's 16 activation scales (block k + 1's follow).
 */
static inline __attribute__((always_inline)) AMX_TGT void amx_epi(float *acc, const int32_t *c0, const int32_t *c1,
                                                                   const float *dw, const float *dx, int nblk) {
  const __m512 da = _mm512_load_ps(dx);
  const __m512 db = nblk == 2 ? _mm512_load_ps(dx + 16) : da;
  for (int r = 0; r < 16; r++) {
    __m512 a = _mm512_load_ps(acc + r * 16);
    a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)(c0 + r * 16))),
                        _mm512_mul_ps(_mm512_set1_ps(dw[r * UB]), da), a);
    if (nblk == 2)
      a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)(c1 + r * 16))),
                          _mm512_mul_ps(_mm512_set1_ps(dw[r * UB + 1]), db), a);
    _mm512_store_ps(acc + r * 16, a);
  }
}

/* Epilogue of the steps of block k (C tiles at ca) and, when nblk is 2, of block k + 1 (at cb; k is
 * even then, so both scales sit in the same UB chunk of dws); accumulators acc (4 x 256 floats, in
 * the C tiles' order). */
static inline __attribute__((always_inline)) AMX_TGT void amx_epi_step(float *acc, const int32_t *ca, const int32_t *cb,
                                                                        const float *D, int k, const float *dx0,
                                                                        const float *dx1, int two, int nblk) {
  const float *d0 = D + amx_dw_index(0, k), *d16 = D + amx_dw_index(16, k);
  amx_epi(acc, ca, cb, d0, dx0 + k * 16, nblk);
  if (two) amx_epi(acc + 256, ca + 256, cb + 256, d0, dx1 + k * 16, nblk);
  amx_epi(acc + 512, ca + 512, cb + 512, d16, dx0 + k * 16, nblk);
  if (two) amx_epi(acc + 768, ca + 768, cb + 768, d16, dx1 + k * 16, nblk);
}

/* Bytes of the per-call work area of amx_rows. */
static size_t amx_work_bytes(int nb) {
  size_t KP = (size_t)(nb + UB - 1) / UB * UB;
  return 2 * (32 * AROW(KP) + 32 * KP * 4) + 8 * 1024 + 4 * 1024;
}

/*
 * Rows [r0, r1) against NJ activation tiles (nrows batch rows); out points at batch row 0 of the
 * pass. Groups of 32 rows in two buffers: while group g runs (per pair of activation tiles, block
 * after block), group g + 32 is unpacked into the other buffer a little after each step.
 */
static AMX_TGT void amx_rows(int type, float *out, const int32_t *xB, const float *dxB, int NJ, int nrows,
                             const uint8_t *w, int nb, int nOut, int r0, int r1, uint8_t *work) {
  const size_t rowBytes = k_row_bytes(type, (size_t)nb * QK);
  const int nch = (nb + UB - 1) / UB; /* unpack units per row */
  const size_t KP = (size_t)nch * UB, AS = AROW(KP);
  const size_t aB = 32 * AS, dB = 32 * KP * 4;
  int8_t *abuf[2] = {(int8_t *)work, (int8_t *)(work + aB)};
  float *dws[2] = {(float *)(void *)(work + 2 * aB), (float *)(void *)(work + 2 * aB + dB)};
  int32_t *cbuf = (int32_t *)(void *)(work + 2 * aB + 2 * dB); /* 2 slots of the 4 C tiles of a step */
  float *accb = (float *)(void *)((uint8_t *)cbuf + 8 * 1024);  /* 4 x 16 x 16 */
  const int NP = (NJ + 1) / 2;
  const long steps = (long)NP * nb;
  amx_next nx = {type, nb, nch, 0, 0, 32 * nch, 0, steps, 0, rowBytes, w, NULL, NULL};
  if (r0 < r1) amx_unpack(type, w, rowBytes, nb, nch, r0, r1 - r0 < 32 ? r1 - r0 : 32, 0, 32 * nch, abuf[0], dws[0]);
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
      const int32_t *xb0 = xB + (size_t)j0 * nb * B_TILE, *xb1 = xb0 + (size_t)nb * B_TILE;
      const float *dx0 = dxB + (size_t)j0 * nb * 16, *dx1 = dx0 + (size_t)nb * 16;
      for (int i = 0; i < 1024; i += 16) _mm512_store_ps(accb + i, _mm512_setzero_ps());
      for (int k = 0; k < nb; k++) {
        amx_step(A0 + (size_t)k * 32, A1 + (size_t)k * 32, AS, xb0 + (size_t)k * B_TILE, xb1 + (size_t)k * B_TILE,
                 k > 0 ? cbuf + ((k - 1) & 1) * 1024 : NULL, two);
        /* blocks k - 2 and k - 1, stored by the previous step and this one */
        if (k >= 2 && (k & 1) == 0) amx_epi_step(accb, cbuf, cbuf + 1024, D, k - 2, dx0, dx1, two, 2);
        amx_advance(&nx);
      }
      int32_t *last = cbuf + ((nb - 1) & 1) * 1024;
      _tile_stored(0, last, 64);
      _tile_stored(2, last + 512, 64);
      if (two) {
        _tile_stored(1, last + 256, 64);
        _tile_stored(3, last + 768, 64);
      }
      /* what the loop left: block nb - 1 alone (nb odd) or blocks nb - 2 and nb - 1 */
      if (nb & 1) amx_epi_step(accb, last, last, D, nb - 1, dx0, dx1, two, 1);
      else amx_epi_step(accb, cbuf, last, D, nb - 2, dx0, dx1, two, 2);
      /* accb[q][r][n] (q = 2 * row half + tile) to out[batch row][weight row] */
      for (int q = 0; q < 4; q++) {
        int jj = j0 + (q & 1), rb = (q >> 1) * 16;
        if (jj >= NJ) continue;
        int nn = nrows - jj * 16 < 16 ? nrows - jj * 16 : 16;
        int rr = R - rb < 16 ? R - rb : 16;
        const float *t = accb + q * 256;
        for (int n = 0; n < nn; n++) {
          float *o = out + (size_t)(jj * 16 + n) * nOut + g + rb;
          for (int r = 0; r < rr; r++) o[r] = t[r * 16 + n];
        }
      }
    }
    if (nx.Rn > 0 && nx.done < nx.units)
      amx_unpack(type, w, rowBytes, nb, nch, nx.gn, nx.Rn, nx.done, nx.units, nx.abuf, nx.dws);
  }
}

AMX_TGT void k_amx_mmq(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
               kscratch *s) {
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  int maxJ = ((batch < TOK ? batch : TOK) + 15) / 16;
  size_t xB = k_align64((size_t)maxJ * nb * B_TILE * 4), dB = k_align64((size_t)maxJ * nb * 16 * 4);
  size_t workB = amx_work_bytes(nb);
  uint8_t *mem = (uint8_t *)kscratch_get(s, xB + dB + workB);
  if (mem == NULL) return;
  int32_t *xT = (int32_t *)(void *)mem;
  float *dxT = (float *)(void *)(mem + xB);
  uint8_t *work = mem + xB + dB;
  amx_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 4; t++) { /* C: 16 rows x 16 int32 */
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  for (int t = 4; t < 6; t++) { /* A: 16 rows x 32 int8 */
    cfg.rows[t] = 16;
    cfg.colsb[t] = 32;
  }
  for (int t = 6; t < 8; t++) { /* B: 8 rows x 16 dwords */
    cfg.rows[t] = 8;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  for (int b0 = 0; b0 < batch; b0 += TOK) {
    int nrows = batch - b0 < TOK ? batch - b0 : TOK;
    int NJ = (nrows + 15) / 16;
    amx_prep_x(xq, nb, b0, nrows, NJ, xT, dxT);
    amx_rows(type, out + (size_t)b0 * nOut, xT, dxT, NJ, nrows, w, nb, nOut, r0, r1, work);
  }
  _tile_release();
}

#endif
