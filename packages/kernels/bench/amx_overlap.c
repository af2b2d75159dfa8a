/*
 * Developer micro-benchmark, outside the npm build: which AMX instructions overlap with AVX-512
 * work on this core. Everything stays in L1, so what it shows is the core, not memory. The tile
 * shapes are those of the int8 kernel (amx.c): A 16 rows x 32 bytes, B 8 rows x 64 bytes,
 * C 16 x 16 int32.
 *
 *   gcc -O2 -ffp-contract=off bench/amx_overlap.c -o /tmp/amx_overlap && /tmp/amx_overlap
 *
 * Prints ns per loop iteration for each part alone and for pairs of parts. Where a pair takes
 * about the larger of its two parts, they overlap; where it takes their sum, they do not. The host
 * shares this core with other tenants, so compare the figures within one line only.
 *
 * Linux only: the tile data permission comes from arch_prctl.
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define TGT __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vbmi")))

typedef struct {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
} tilecfg;

static uint8_t tiles[8][1024] __attribute__((aligned(64)));
static int32_t cslot[2][1024] __attribute__((aligned(64)));
static float acc[1024] __attribute__((aligned(64)));
static float dw[32] __attribute__((aligned(64))), dx[32] __attribute__((aligned(64)));
static float other[2][512] __attribute__((aligned(64))); /* memory no tile instruction touches */

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

/* the int8 kernel's tile loads, products and stores of one step (32 weight rows x 32 batch rows) */
#define LOADS                                                                                                         \
  _tile_loadd(4, tiles[4], 32);                                                                                       \
  _tile_loadd(6, tiles[6], 64);                                                                                       \
  _tile_loadd(7, tiles[7], 64);                                                                                       \
  _tile_loadd(5, tiles[5], 32);
#define PRODUCTS                                                                                                      \
  _tile_dpbssd(0, 4, 6);                                                                                              \
  _tile_dpbssd(1, 4, 7);                                                                                              \
  _tile_dpbssd(2, 5, 6);                                                                                              \
  _tile_dpbssd(3, 5, 7);
#define STORES(s)                                                                                                     \
  _tile_stored(0, (s), 64);                                                                                           \
  _tile_stored(1, (s) + 256, 64);                                                                                     \
  _tile_stored(2, (s) + 512, 64);                                                                                     \
  _tile_stored(3, (s) + 768, 64);
/* 32 independent 512-bit FMAs on registers only: no memory access at all */
#define FMA8                                                                                                          \
  z0 = _mm512_fmadd_ps(z0, zk, zk);                                                                                   \
  z1 = _mm512_fmadd_ps(z1, zk, zk);                                                                                   \
  z2 = _mm512_fmadd_ps(z2, zk, zk);                                                                                   \
  z3 = _mm512_fmadd_ps(z3, zk, zk);                                                                                   \
  z4 = _mm512_fmadd_ps(z4, zk, zk);                                                                                   \
  z5 = _mm512_fmadd_ps(z5, zk, zk);                                                                                   \
  z6 = _mm512_fmadd_ps(z6, zk, zk);                                                                                   \
  z7 = _mm512_fmadd_ps(z7, zk, zk);
#define FMAS FMA8 FMA8 FMA8 FMA8

/* 32 FMAs with a load and a store each, on memory no tile instruction touches */
#define MEMFMAS                                                                                                       \
  for (int r = 0; r < 32; r++)                                                                                        \
    _mm512_store_ps(other[1] + (r & 31) * 16, _mm512_fmadd_ps(_mm512_load_ps(other[0] + (r & 31) * 16), zk, zk));

/* the kernel's float epilogue of one block's four C tiles: acc = fma(float(C row), dw * dx, acc) */
static inline __attribute__((always_inline)) TGT void epilogue(const int32_t *c) {
  for (int q = 0; q < 4; q++) {
    __m512 d = _mm512_load_ps(dx + (q & 1) * 16);
    for (int r = 0; r < 16; r++) {
      float *a = acc + q * 256 + r * 16;
      __m512 v = _mm512_cvtepi32_ps(_mm512_load_si512(c + q * 256 + r * 16));
      _mm512_store_ps(a, _mm512_fmadd_ps(v, _mm512_mul_ps(_mm512_set1_ps(dw[(q >> 1) * 16 + r]), d), _mm512_load_ps(a)));
    }
  }
}

TGT int main(void) {
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
    puts("no AMX tile data permission (not Linux, or no AMX)");
    return 1;
  }
  /* C tiles 0-3, A tiles 4-5 (16 rows x 32 bytes), B tiles 6-7 (8 rows x 64 bytes) */
  const tilecfg cfg = {.palette = 1,
                       .colsb = {64, 64, 64, 64, 32, 32, 64, 64},
                       .rows = {16, 16, 16, 16, 16, 16, 8, 8}};
  _tile_loadconfig(&cfg);
  memset(tiles, 1, sizeof tiles);
  for (int i = 0; i < 32; i++) dw[i] = dx[i] = 1e-3f;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  LOADS
  __m512 zk = _mm512_set1_ps(0.999f), z0 = zk, z1 = zk, z2 = zk, z3 = zk, z4 = zk, z5 = zk, z6 = zk, z7 = zk;
  const int N = 100000;
  for (int round = 0; round < 3; round++) {
    double t[24];
    const char *name[24];
    int n = 0;
#define TIME(label, body)                                                                                             \
  {                                                                                                                   \
    name[n] = label;                                                                                                  \
    double t0 = now_ns();                                                                                             \
    for (int i = 0; i < N; i++) {                                                                                     \
      body                                                                                                            \
    }                                                                                                                 \
    t[n++] = (now_ns() - t0) / N;                                                                                     \
  }
    TIME("products", PRODUCTS)
    TIME("fmas", FMAS)
    TIME("products+fmas", PRODUCTS FMAS)
    TIME("loads", LOADS)
    TIME("loads+fmas", LOADS FMAS)
    TIME("stores", STORES(cslot[i & 1]))
    TIME("stores+fmas", STORES(cslot[i & 1]) FMAS)
    TIME("memfmas", MEMFMAS)
    TIME("products+memfmas", PRODUCTS MEMFMAS)
    TIME("stores+memfmas", STORES(cslot[i & 1]) MEMFMAS)
    TIME("step", LOADS PRODUCTS STORES(cslot[i & 1]))
    TIME("epilogue", epilogue(cslot[0]);)
    TIME("step+epilogue", LOADS PRODUCTS STORES(cslot[i & 1]) epilogue(cslot[i & 1]);)
    for (int i = 0; i < n; i++) printf("%s %.1f%s", name[i], t[i], i + 1 < n ? " | " : "\n");
  }
  float s = acc[7] + other[1][5];
  __m512 zs = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(z0, z1), _mm512_add_ps(z2, z3)),
                            _mm512_add_ps(_mm512_add_ps(z4, z5), _mm512_add_ps(z6, z7)));
  s += _mm512_reduce_add_ps(zs);
  _tile_release();
  return s == 12345.0f; /* keeps the work observable */
}
