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
 * Work order: groups of 16 weight rows; per group, chunks of KC blocks; per chunk every 16-row
 * activation tile runs against the group's unpacked A tiles with its 16 accumulator registers,
 * in steps of 4 blocks (C tiles 0-3). Measured on the Emerald Rapids VM: tile work and 512-bit
 * vector work do not overlap on one core (their times add), a tile store placed between two
 * tdpbssd overlaps with them (6.9 against 10.6 ns per C tile with the stores grouped), and the
 * float epilogue (3 vector instructions per C row) costs more than the tile work. So each step
 * stores the previous step's C tiles between its own products and then runs that step's
 * epilogue (two halves of cbuf). The next group is unpacked into a second buffer a little after
 * each step, as one linear walk over its rows (one stream for the hardware prefetcher, plus
 * software prefetch), so the weights stream in while the tiles and the epilogue work.
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

#define KC 16       /* blocks per compute chunk (a multiple of 4) */
#define UB 16       /* blocks per unpack unit */
#define TOK 256     /* batch rows per pass (16 tiles) */
#define B_TILE 128  /* int32 words of one B tile: 8 rows x 16 */

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
 * The unpacked weights of a group of 16 rows: abuf[row][k][32] (row stride KP * 32 bytes, KP =
 * blocks rounded up to UB), so the A tile of block k is at abuf + 32k with stride 32 KP; dws[row][k]
 * the scales as floats. Rows past the range are zero.
 *
 * Unit u is chunk c = u % nch of row u / nch: units in order walk the group's memory linearly,
 * one sequential stream, unpacked a few at a time between tile steps so the weights stream in
 * while the tile unit and the epilogue work. Q40: blocks k and k + 1 in one register as
 * [q_k, q_k, q_k+1, q_k+1], the upper copies shifted right by 4, and one vpermb through the table
 * of nibble - 8 (vpermb reads 6 index bits, the 2 above the nibble are noise, hence 4 copies).
 */
static inline AMX_TGT void amx_unpack(int type, const uint8_t *w, size_t rowBytes, int nb, int nch, int g, int R,
                                      int u0, int u1, int8_t *abuf, float *dws) {
  const int bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  const size_t KP = (size_t)nch * UB;
  const __m512i tab = _mm512_broadcast_i32x4(_mm_setr_epi8(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7));
  const __m512i sh = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
  for (int u = u0; u < u1; u++) {
    int r = u / nch, c = u % nch;
    int kc = c * UB, m = nb - kc < UB ? nb - kc : UB;
    int8_t *a = abuf + ((size_t)r * KP + kc) * 32;
    float *d = dws + (size_t)r * KP + kc;
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

/* acc[r] = fma(float(C row r), dw[r][k] * dx, acc[r]) for the 16 rows of one stored C tile;
 * dw points at the scale of row 0 and block k, rows KP apart. */
static inline __attribute__((always_inline)) AMX_TGT void amx_epi(__m512 *acc, const int32_t *c, const float *dw,
                                                                   size_t KP, const float *dx) {
  __m512 dxv = _mm512_load_ps(dx);
  for (int r = 0; r < 16; r++)
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512((const void *)(c + r * 16))),
                             _mm512_mul_ps(_mm512_set1_ps(dw[r * KP]), dxv), acc[r]);
}

/*
 * Tile products of 4 consecutive blocks (A at a, B at xb) into C tiles 0..3, interleaved with
 * storing the previous step's C tiles (to prev; NULL for none): a tile store between two
 * tdpbssd overlaps with them (measured 6.9 ns per C tile against 10.6 ns with the four stores
 * after the four products).
 */
static inline __attribute__((always_inline)) AMX_TGT void amx_dp4(const int8_t *a, size_t as, const int32_t *xb,
                                                                   int32_t *prev) {
  if (prev) _tile_stored(0, prev, 64);
  _tile_loadd(4, a, as);
  _tile_loadd(6, xb, 64);
  _tile_zero(0);
  _tile_dpbssd(0, 4, 6);
  if (prev) _tile_stored(1, prev + 256, 64);
  _tile_loadd(5, a + 32, as);
  _tile_loadd(7, xb + B_TILE, 64);
  _tile_zero(1);
  _tile_dpbssd(1, 5, 7);
  if (prev) _tile_stored(2, prev + 512, 64);
  _tile_loadd(4, a + 64, as);
  _tile_loadd(6, xb + 2 * B_TILE, 64);
  _tile_zero(2);
  _tile_dpbssd(2, 4, 6);
  if (prev) _tile_stored(3, prev + 768, 64);
  _tile_loadd(5, a + 96, as);
  _tile_loadd(7, xb + 3 * B_TILE, 64);
  _tile_zero(3);
  _tile_dpbssd(3, 5, 7);
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

/* One activation tile (16 batch rows) against blocks kc..kc+m-1 of the group, in steps of 4
 * blocks, software-pipelined: step s computes its tile products while storing those of step
 * s - 1 into one half of cbuf, then the epilogue of step s - 1 reads that half. */
static inline AMX_TGT void amx_tile_chunk(__m512 *acc, const int8_t *A, const float *D, size_t KP, int kc, int m,
                                          const int32_t *xb, const float *dx, int32_t *cbuf, amx_next *nx) {
  const size_t as = KP * 32;
  int n4 = m / 4;
  for (int s = 0; s < n4; s++) {
    int k = kc + 4 * s;
    int32_t *cb = cbuf + ((s - 1) & 1) * 1024;
    amx_dp4(A + (size_t)k * 32, as, xb + (size_t)4 * s * B_TILE, s > 0 ? cb : NULL);
    if (s > 0)
      for (int i = 0; i < 4; i++) amx_epi(acc, cb + i * 256, D + k - 4 + i, KP, dx + (4 * s - 4 + i) * 16);
    amx_advance(nx);
  }
  if (n4 > 0) {
    int32_t *cb = cbuf + ((n4 - 1) & 1) * 1024;
    _tile_stored(0, cb, 64);
    _tile_stored(1, cb + 256, 64);
    _tile_stored(2, cb + 512, 64);
    _tile_stored(3, cb + 768, 64);
    for (int i = 0; i < 4; i++) amx_epi(acc, cb + i * 256, D + kc + 4 * n4 - 4 + i, KP, dx + (4 * n4 - 4 + i) * 16);
  }
  for (int kk = 4 * n4; kk < m; kk++) {
    _tile_loadd(4, A + (size_t)(kc + kk) * 32, as);
    _tile_loadd(6, xb + (size_t)kk * B_TILE, 64);
    _tile_zero(0);
    _tile_dpbssd(0, 4, 6);
    _tile_stored(0, cbuf, 64);
    amx_epi(acc, cbuf, D + kc + kk, KP, dx + kk * 16);
    amx_advance(nx);
  }
}

/* Bytes of the per-call work area of amx_rows. */
static size_t amx_work_bytes(int nb, int NJ) {
  size_t KP = (size_t)(nb + UB - 1) / UB * UB;
  return 2 * (16 * KP * 32 + 16 * KP * 4) + 8 * 1024 + (size_t)NJ * 1024;
}

/*
 * Rows [r0, r1) against NJ activation tiles (nrows batch rows); out points at batch row 0 of the
 * pass. Groups of 16 rows in two buffers: while group g runs (chunk by chunk, every activation
 * tile per chunk), group g + 16 is unpacked into the other buffer a little after each tile step.
 */
static AMX_TGT void amx_rows(int type, float *out, const int32_t *xB, const float *dxB, int NJ, int nrows,
                             const uint8_t *w, int nb, int nOut, int r0, int r1, uint8_t *work) {
  const size_t rowBytes = k_row_bytes(type, (size_t)nb * QK);
  const int nch = (nb + UB - 1) / UB, ncc = (nb + KC - 1) / KC; /* unpack units, compute chunks per row */
  const size_t KP = (size_t)nch * UB;
  const size_t aB = 16 * KP * 32, dB = 16 * KP * 4;
  int8_t *abuf[2] = {(int8_t *)work, (int8_t *)(work + aB)};
  float *dws[2] = {(float *)(void *)(work + 2 * aB), (float *)(void *)(work + 2 * aB + dB)};
  int32_t *cbuf = (int32_t *)(void *)(work + 2 * aB + 2 * dB); /* 2 x 4 C tiles */
  float *accb = (float *)(void *)((uint8_t *)cbuf + 8 * 1024);  /* NJ x 16 x 16 */
  const long steps = (long)NJ * (nb / 4 + nb % 4);
  amx_next nx = {type, nb, nch, 0, 0, 16 * nch, 0, steps, 0, rowBytes, w, NULL, NULL};
  if (r0 < r1) amx_unpack(type, w, rowBytes, nb, nch, r0, r1 - r0 < 16 ? r1 - r0 : 16, 0, 16 * nch, abuf[0], dws[0]);
  int cur = 0;
  for (int g = r0; g < r1; g += 16, cur ^= 1) {
    int R = r1 - g < 16 ? r1 - g : 16;
    nx.gn = g + 16;
    nx.Rn = r1 - nx.gn < 16 ? r1 - nx.gn : 16; /* <= 0: no next group */
    nx.done = 0;
    nx.acc = 0;
    nx.abuf = abuf[cur ^ 1];
    nx.dws = dws[cur ^ 1];
    const int8_t *A = abuf[cur];
    const float *D = dws[cur];
    for (int c = 0; c < ncc; c++) {
      int kc = c * KC;
      int m = nb - kc < KC ? nb - kc : KC;
      for (int j = 0; j < NJ; j++) {
        __m512 acc[16];
        float *ab = accb + (size_t)j * 256;
        for (int r = 0; r < 16; r++) acc[r] = c == 0 ? _mm512_setzero_ps() : _mm512_load_ps(ab + r * 16);
        amx_tile_chunk(acc, A, D, KP, kc, m, xB + ((size_t)j * nb + kc) * B_TILE, dxB + ((size_t)j * nb + kc) * 16, cbuf,
                       &nx);
        if (c + 1 < ncc) {
          for (int r = 0; r < 16; r++) _mm512_store_ps(ab + r * 16, acc[r]);
        } else {
          float t[16][16] __attribute__((aligned(64)));
          for (int r = 0; r < 16; r++) _mm512_store_ps(t[r], acc[r]);
          int nn = nrows - j * 16 < 16 ? nrows - j * 16 : 16;
          for (int n = 0; n < nn; n++) {
            float *o = out + (size_t)(j * 16 + n) * nOut + g;
            for (int r = 0; r < R; r++) o[r] = t[r][n];
          }
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
  size_t workB = amx_work_bytes(nb, maxJ);
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
