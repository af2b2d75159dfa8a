/*
 * Intel AMX (AMX-TILE + AMX-INT8) kernel for the batched Q40xQ80 and Q80xQ80 matmul: the
 * "avx512amx" path (avx512.c) sends batches of K_AMX_MIN_BATCH_Q40 / _Q80 rows and more here and
 * everything else to the avx512vnni kernels. The same row loop (amx_tmpl.h, compiled once per
 * kernel) also serves the AMX-BF16 kernel for Q40 and Q80 weights with F32 input (k_amx_mmf,
 * described further down).
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
 * FMAs). Why this shape: vector work that loads or stores does not overlap with tile stores (a
 * tile store and the float epilogue add up), while register-only vector work hides behind every
 * tile instruction (native/check/amx_overlap.c). So what costs is the number of vector memory
 * operations per output, and this order (one tile load per C tile, accumulators in L1, two blocks
 * per epilogue pass) has the fewest among the layouts measured; the others, and the figures, are
 * in docs/benchmarks/2026-11-26-amx-batch.md.
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
/* the bf16 kernel's: the same plus AVX512-BF16 and AMX-BF16 (only where k_amx_bf16_available()) */
#define AMXF_TGT                                                                                                      \
  __attribute__((target(                                                                                              \
      "avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,avx2,fma,f16c,amx-tile,amx-int8,amx-bf16")))

#define UB 16       /* blocks per unpack unit */
#define TOK 256     /* batch rows per pass, Q80 input (16 tiles) */
#define TOKF 64     /* batch rows per pass, F32 input (4 tiles): 3 KiB of B tiles per 16 rows and block */
#define B_TILE 128  /* int32 words of one B tile: 8 rows x 16 (Q80 input) */
#define PIECES 3    /* bf16 pieces of one float32: 8 + 8 + 8 significant bits */
#define BF_TILE (PIECES * 256) /* int32 words of the B tiles of one block, F32 input: 3 x 16 rows x 16 */
/* Most blocks per chunk of a row, F32 input (rows are cut into even chunks as equal as can be):
 * a chunk's B tiles (2 x 3 KiB per block for 32 batch rows) and A buffers (2 x 32 rows x 64 bytes
 * per block) stay in L2; a longer row would read them from L3 for every group of weight rows.
 * 128 measured fastest of 64, 128 and 176 (docs/benchmarks/2026-11-26-amx-batch.md). */
#ifndef KCF
#define KCF 128
#endif
/* A bytes per block: 32 int8, or 32 bf16 (bf = 1) */
#define ABLK(bf) ((bf) ? 64 : 32)
/* abuf row stride: padded so the 16 rows of an A tile do not share one L1 set */
#define AROW(KP, bf) ((KP) * ABLK(bf) + 64)

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

int k_amx_bf16_available(void) {
  unsigned a, b, c, d;
  if (!k_amx_available()) return 0;
  __cpuid_count(7, 0, a, b, c, d);
  if (!(d & (1u << 22))) return 0; /* AMX-BF16 */
  if (a < 1) return 0;             /* no sub-leaf 1 */
  __cpuid_count(7, 1, a, b, c, d);
  return (a & (1u << 5)) != 0; /* AVX512-BF16 (vcvtne2ps2bf16) */
}

/* Activations of batch rows b0..b0+nrows-1 as NJ B tiles per block, [j][k]: xB holds the VNNI
 * layout (zero past the last row), dxB the 16 f16 scales as floats. The 16 rows' quants of a block
 * are staged in L1 and each tile row gathered from there, so the tile is written in whole lines
 * (a dword at a time, every store fell in another line of the L2-sized xB). */
static AMX_TGT void amx_prep_x(const uint8_t *xq, int nb, int b0, int nrows, int NJ, int32_t *xB, float *dxB) {
  /* dword t of row n at n * 8 + t: gathered by t into the tile's row t */
  const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(8));
  int32_t stage[16][8] __attribute__((aligned(64)));
  for (int j = 0; j < NJ; j++)
    for (int k = 0; k < nb; k++) {
      float *dx = dxB + ((size_t)j * nb + k) * 16;
      for (int n = 0; n < 16; n++) {
        int b = j * 16 + n;
        if (b < nrows) {
          const uint8_t *blk = xq + ((size_t)(b0 + b) * nb + k) * Q80_BYTES;
          _mm256_store_si256((__m256i *)stage[n], _mm256_loadu_si256((const __m256i *)(blk + 2)));
          dx[n] = k_f16_to_f32(k_rd16(blk));
        } else {
          _mm256_store_si256((__m256i *)stage[n], _mm256_setzero_si256());
          dx[n] = 0.0f;
        }
      }
      int32_t *dst = xB + ((size_t)j * nb + k) * B_TILE;
      for (int t = 0; t < 8; t++) _mm512_store_si512((void *)(dst + t * 16), _mm512_i32gather_epi32(gidx, &stage[0][t], 4));
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

/* Index in dws of the scale of row r (of the group's 32) and block k. */
static inline size_t amx_dw_index(int r, int k) { return ((size_t)(k / UB) * 32 + r) * UB + k % UB; }

/*
 * ---- Q40 and Q80 weights x F32 input on AMX-BF16 tiles (k_amx_mmf) ----
 *
 * The work order of the Q80-input kernel (amx_tmpl.h with BF = 1) on tdpbf16ps: A tiles hold the
 * weight integers of one block of 16 weight rows as bf16 (q - 8 for Q40, q for Q80: exact, small
 * integers), and every float32 activation is split exactly into three bf16 pieces (hi + mid + lo,
 * 8 significant bits each), so one C tile per block gets three tdpbf16ps (one per piece) and
 * holds the block's dot of the exact products q * x, summed in float32 by the tile unit. The
 * epilogue is then one FMA per 16 outputs and block: acc = fma(C, dw, acc), the same products as
 * the reference's dequantized weight times x (dw * q is exact in float32), added in another
 * order: within F32_SUM_REL of it like every other kernel.
 *
 * The tile unit flushes bf16 and float32 subnormals to zero, so inputs with a nonzero magnitude
 * below 2^-96 (whose lo piece or partial sums could be subnormal) or non-finite ones are left to
 * the caller's kernel (k_amx_mmf returns 0): the check costs one pass over x.
 *
 * What bounds it: a tile load costs about as much as a tdp and the two do not overlap, so the 8
 * tile loads and 12 tdpbf16ps per step (against 4 loads, two of them 8 rows, and 4 tdpbssd for
 * Q80 input) set its speed, about twice the avx512vnni lanes kernel's. Three pieces are the
 * fewest that carry float32's 24 bits exactly (figures: docs/benchmarks/2026-11-26-amx-batch.md).
 */

/*
 * Activations of batch rows b0..b0+nrows-1 as B tiles [j][k][piece]: each float32 x is split
 * exactly into three bf16 values hi + mid + lo (hi = x truncated to 8 significant bits, mid the
 * next 8 of the remainder, lo what is left, at most 8 bits), so the tile products of the three
 * pieces add up the exact products w * x. Tile row t holds the pairs (x[2t], x[2t + 1]) of the 16
 * batch rows (the VNNI layout of tdpbf16ps). Rows past nrows are zero.
 */
static AMXF_TGT void amxf_prep_x(const float *x, int nIn, int b0, int nrows, int NJ, int32_t *xB) {
  const int nb = nIn / QK;
  const __m512i himask = _mm512_set1_epi32((int)0xffff0000u);
  /* dword (row n, pair t) of a piece at n * 16 + t: gathered by t into the tile's row t */
  const __m512i gidx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                          _mm512_set1_epi32(16));
  uint32_t stage[PIECES][16][16] __attribute__((aligned(64)));
  for (int j = 0; j < NJ; j++)
    for (int k = 0; k < nb; k++) {
      for (int n = 0; n < 16; n++) {
        int b = j * 16 + n;
        if (b >= nrows) {
          for (int p = 0; p < PIECES; p++) _mm512_store_si512((void *)stage[p][n], _mm512_setzero_si512());
          continue;
        }
        const float *xs = x + (size_t)(b0 + b) * nIn + (size_t)k * QK;
        __m512 v0 = _mm512_loadu_ps(xs), v1 = _mm512_loadu_ps(xs + 16);
        __m512 h0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v0), himask));
        __m512 h1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v1), himask));
        __m512 r0 = _mm512_sub_ps(v0, h0), r1 = _mm512_sub_ps(v1, h1);
        __m512 m0 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(r0), himask));
        __m512 m1 = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(r1), himask));
        __m512 l0 = _mm512_sub_ps(r0, m0), l1 = _mm512_sub_ps(r1, m1);
        /* every piece is a bf16 value, so the round-to-nearest conversion is exact */
        _mm512_store_si512((void *)stage[0][n], (__m512i)_mm512_cvtne2ps_pbh(h1, h0));
        _mm512_store_si512((void *)stage[1][n], (__m512i)_mm512_cvtne2ps_pbh(m1, m0));
        _mm512_store_si512((void *)stage[2][n], (__m512i)_mm512_cvtne2ps_pbh(l1, l0));
      }
      int32_t *dst = xB + ((size_t)j * nb + k) * BF_TILE;
      for (int p = 0; p < PIECES; p++)
        for (int t = 0; t < 16; t++)
          _mm512_store_si512((void *)(dst + p * 256 + t * 16), _mm512_i32gather_epi32(gidx, &stage[p][0][t], 4));
    }
}

/* 1 when every x is zero or of magnitude in [2^-96, FLT_MAX]: then the pieces and all partial
 * sums stay clear of the bf16/fp32 subnormals the tile unit flushes to zero. n is a multiple of
 * 32 (whole blocks). */
static AMXF_TGT int amxf_x_ok(const float *x, size_t n) {
  const __m512i absm = _mm512_set1_epi32(0x7fffffff);
  const __m512i tiny = _mm512_set1_epi32(0x0f800000); /* 2^-96 */
  const __m512i inf = _mm512_set1_epi32(0x7f800000);
  __mmask16 bad = 0;
  for (size_t i = 0; i < n; i += 16) {
    __m512i a = _mm512_and_si512(_mm512_loadu_si512(x + i), absm);
    bad |= _mm512_mask_cmplt_epi32_mask(_mm512_test_epi32_mask(a, a), a, tiny) | _mm512_cmpge_epi32_mask(a, inf);
  }
  return bad == 0;
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

/* Bytes of the per-call work area of amx_rows. */
static size_t amx_work_bytes(int nb, int bf) {
  size_t KP = (size_t)(nb + UB - 1) / UB * UB;
  return 2 * (32 * AROW(KP, bf) + 32 * KP * 4) + 8 * 1024 + 4 * 1024;
}

/* The row loop and its parts, once per kernel: amx_tmpl.h with BF = 0 (int8 tiles, Q80 input) and
 * BF = 1 (bf16 tiles, F32 input), each under its own target so the int8 kernel is compiled as
 * before the bf16 one existed (with the bf16 features in its target too it took 1.05-1.06 of the
 * time side by side, where two copies of the same code differ by up to 1.03). */
#define TGT AMX_TGT
#define BF 0
#define FN(name) name##_i8
#include "amx_tmpl.h"
#undef TGT
#undef BF
#undef FN
#define TGT AMXF_TGT
#define BF 1
#define FN(name) name##_bf16
#include "amx_tmpl.h"
#undef TGT
#undef BF
#undef FN

/*
 * The tile shapes of a call: C (tiles 0-3) 16 rows x 16 int32 or floats; A (4, 5) 16 weight rows x
 * one block, 32 int8 or (bf) 32 bf16; B (6, 7) one block of 16 batch rows, 8 rows of 16 int8
 * quads or (bf) 16 rows of 16 bf16 pairs.
 */
static AMX_TGT void amx_load_config(int bf) {
  amx_cfg cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; t++) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  if (!bf) {
    cfg.colsb[4] = cfg.colsb[5] = 32;
    cfg.rows[6] = cfg.rows[7] = 8;
  }
  _tile_loadconfig(&cfg);
}

AMX_TGT void k_amx_mmq(int type, float *out, const void *xv, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
               kscratch *s) {
  const uint8_t *xq = (const uint8_t *)xv;
  int nb = nIn / QK;
  int maxJ = ((batch < TOK ? batch : TOK) + 15) / 16;
  size_t xB = k_align64((size_t)maxJ * nb * B_TILE * 4), dB = k_align64((size_t)maxJ * nb * 16 * 4);
  size_t workB = amx_work_bytes(nb, 0);
  uint8_t *mem = (uint8_t *)kscratch_get(s, xB + dB + workB);
  if (mem == NULL) return;
  int32_t *xT = (int32_t *)(void *)mem;
  float *dxT = (float *)(void *)(mem + xB);
  uint8_t *work = mem + xB + dB;
  amx_load_config(0);
  for (int b0 = 0; b0 < batch; b0 += TOK) {
    int nrows = batch - b0 < TOK ? batch - b0 : TOK;
    int NJ = (nrows + 15) / 16;
    amx_prep_x(xq, nb, b0, nrows, NJ, xT, dxT);
    amx_rows_i8(type, out + (size_t)b0 * nOut, xT, dxT, NJ, nrows, w, 0, nb, nb, nOut, r0, r1, work);
  }
  _tile_release();
}

AMXF_TGT int k_amx_mmf(int type, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int batch, int r0,
                       int r1, kscratch *s) {
  if (!amxf_x_ok(x, (size_t)batch * nIn)) return 0;
  int nb = nIn / QK, bb = type == FT_Q40 ? Q40_BYTES : Q80_BYTES;
  int nck = (nb + KCF - 1) / KCF, kc = ((nb + nck - 1) / nck + 1) & ~1; /* even chunks, as equal as can be */
  int maxJ = ((batch < TOKF ? batch : TOKF) + 15) / 16;
  size_t xB = k_align64((size_t)maxJ * nb * BF_TILE * 4);
  uint8_t *mem = (uint8_t *)kscratch_get(s, xB + amx_work_bytes(kc, 1));
  if (mem == NULL) return 1;
  int32_t *xT = (int32_t *)(void *)mem;
  uint8_t *work = mem + xB;
  amx_load_config(1);
  for (int b0 = 0; b0 < batch; b0 += TOKF) {
    int nrows = batch - b0 < TOKF ? batch - b0 : TOKF;
    int NJ = (nrows + 15) / 16;
    amxf_prep_x(x, nIn, b0, nrows, NJ, xT);
    for (int kb0 = 0; kb0 < nb; kb0 += kc)
      amx_rows_bf16(type, out + (size_t)b0 * nOut, xT, NULL, NJ, nrows, w + (size_t)kb0 * bb, kb0,
                    nb - kb0 < kc ? nb - kb0 : kc, nb, nOut, r0, r1, work);
  }
  _tile_release();
  return 1;
}

#endif
