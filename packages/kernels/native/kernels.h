/*
 * Native kernels: one table of function pointers per CPU path (scalar, avx2, avx512,
 * avx512vnni, neon), chosen at load by CPU detection. The N-API glue (addon.c) validates
 * arguments and calls through a table; nothing here knows about JavaScript.
 *
 * Conventions follow src/backend.ts: output first, batch-major activation rows, weights
 * row-major [nOut][nIn] in their file dtype, work restricted to output rows [r0, r1).
 * Weight pointers may be unaligned (tensors in a .m file are packed back to back).
 */
#ifndef AIRLLM_KERNELS_H
#define AIRLLM_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define QK 32            /* values per Q40/Q80 block */
#define Q40_BYTES 18     /* f16 d + 16 bytes of nibbles */
#define Q80_BYTES 34     /* f16 d + 32 int8 */

enum { FT_F32 = 0, FT_F16 = 1, FT_Q40 = 2, FT_Q80 = 3 };

/*
 * Per-thread scratch (one per N-API environment, i.e. per worker thread), grown on demand and
 * reused: after the first call of a given size no kernel allocates. 64-byte aligned.
 */
typedef struct kscratch {
  void *buf;
  size_t cap;
  int failed; /* set when a grow failed; the caller reports it */
} kscratch;

void *kscratch_get(kscratch *s, size_t bytes);

typedef void (*mm_fn)(float *out, const void *x, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
                      kscratch *s);

typedef struct kpath {
  const char *name;
  const char *features; /* comma-separated CPU features the path uses */
  /* F32 input, weights by FloatType */
  mm_fn matmul[4];
  /* Q80 input; only [FT_Q40] and [FT_Q80] are set */
  mm_fn matmulq[4];
  void (*quantize_q80)(uint8_t *out, const float *x, size_t nBlocks);
  void (*dequantize_q80)(float *out, const uint8_t *xq, size_t nBlocks);
  float (*dot)(const float *a, const float *b, int n);
  /* y[i] += x[i] * a, multiply then add (two roundings, like the reference) */
  void (*axpy)(float *y, const float *x, float a, size_t n);
  void (*add)(float *y, const float *x, size_t n);
  float (*sumsq)(const float *x, int n);
  /* out[i] = w[i] * (s * x[i]) */
  void (*rmsscale)(float *out, const float *x, const float *w, float s, int n);
  void (*softmax)(float *x, int n);
  void (*swiglu)(float *out, const float *g, const float *u, size_t n);
  void (*vexp)(float *out, const float *x, size_t n);
} kpath;

const kpath *kpath_scalar(void);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define AIRLLM_X86 1
const kpath *kpath_avx2(void);
const kpath *kpath_avx512(void);
const kpath *kpath_avx512vnni(void);
/* avx512vnni plus Intel AMX for batched matmuls (amx.c): tile + int8 for Q80 input, and tile + bf16
 * for Q40 and Q80 weights with F32 input where the CPU has AMX-BF16. */
const kpath *kpath_avx512amx(void);
/* 1 when the CPU has AMX-TILE, AMX-INT8 and AVX512-VBMI, the OS enables the tile state and (on
 * Linux) grants this process the tile data permission, which this call requests. */
int k_amx_available(void);
/* The AMX Q40/Q80-weight x Q80-input matmul (matmulq signature); only when k_amx_available(). */
void k_amx_mmq(int type, float *out, const void *x, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
               kscratch *s);
/* Smallest batches the avx512amx path sends to k_amx_mmq (smaller ones run the avx512vnni
 * kernels): where AMX measured faster on 11008x4096 than the VNNI kernels of that time (rows
 * kernels, up to 4); not measured again against the weight-lanes kernel (no AMX machine since). */
#define K_AMX_MIN_BATCH_Q40 5
#define K_AMX_MIN_BATCH_Q80 5
/* 1 when k_amx_available() and the CPU also has AMX-BF16 and AVX512-BF16. */
int k_amx_bf16_available(void);
/* The AMX-BF16 Q40- or Q80-weight x F32-input matmul (matmul signature with the weight type
 * first); only when k_amx_bf16_available(). Returns 0, having done nothing, when an input is
 * non-finite or below 2^-96 in magnitude (the tile unit flushes bf16/fp32 subnormals), so the
 * caller runs its own kernel instead. */
int k_amx_mmf(int type, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int batch, int r0, int r1,
              kscratch *s);
/* Smallest F32-input batch that k_amx_mmf gets: at 4 the kernel beats the rows kernel per call
 * but decoding 4 sequences end to end was slower with it (docs/benchmarks/2026-11-26-amx-batch.md). */
#define K_AMX_MIN_BATCH_F32 5
/* AVX2 functions the AVX-512 tables reuse for ops where 512-bit brings nothing. */
float k_avx2_dot(const float *a, const float *b, int n);
void k_avx2_axpy(float *y, const float *x, float a, size_t n);
void k_avx2_add(float *y, const float *x, size_t n);
float k_avx2_sumsq(const float *x, int n);
void k_avx2_rmsscale(float *out, const float *x, const float *w, float s, int n);
void k_avx2_softmax(float *x, int n);
void k_avx2_swiglu(float *out, const float *g, const float *u, size_t n);
void k_avx2_vexp(float *out, const float *x, size_t n);
void k_avx2_quantize_q80(uint8_t *out, const float *x, size_t nBlocks);
void k_avx2_dequantize_q80(float *out, const uint8_t *xq, size_t nBlocks);
/* The vector ops every x86 path takes from AVX2 (a kpath initializer fragment). */
#define K_AVX2_VECTOR_OPS                                                                                             \
  .quantize_q80 = k_avx2_quantize_q80, .dequantize_q80 = k_avx2_dequantize_q80, .dot = k_avx2_dot,                 \
  .axpy = k_avx2_axpy, .add = k_avx2_add, .sumsq = k_avx2_sumsq, .rmsscale = k_avx2_rmsscale,                      \
  .softmax = k_avx2_softmax, .swiglu = k_avx2_swiglu, .vexp = k_avx2_vexp

/* The f16 scales of n <= 16 consecutive blocks (stride bytes apart) as floats, lanes >= n zero,
 * defined per target (the AVX-512 template and amx.c). */
#define K_DEFINE_GATHER_D16(decl)                                                                                     \
  decl(const uint8_t *blk0, int stride, int n) {                                                                      \
    __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),         \
                                     _mm512_set1_epi32(stride));                                                      \
    __mmask16 m = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);                                                      \
    __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, blk0, 1);                                 \
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(g));                                                                 \
  }

/* The 16 f16 scales of a full group of 16 Q40 blocks (288 bytes from g), as floats, defined per
 * target (the AVX-512 template and amx.c). Scale j is the 16-bit word at byte 18j. Four loads at
 * bytes 0, 70, 140, 210 (all inside the group) see scales 4q..4q+3 of load q at words q, 9 + q,
 * 18 + q, 27 + q, so they merge into one register by word masks and a single vpermw puts them in
 * order: far cheaper than a 16-lane gather. */
#define K_DEFINE_Q40_SCALES16(decl)                                                                                   \
  decl(const uint8_t *g) {                                                                                            \
    static const uint16_t order[32] __attribute__((aligned(64))) = {0, 9,  18, 27, 1, 10, 19, 28,                      \
                                                                    2, 11, 20, 29, 3, 12, 21, 30};                    \
    const __mmask32 m = (1u << 1) | (1u << 10) | (1u << 19) | (1u << 28);                                            \
    __m512i v = _mm512_loadu_si512(g);                                                                                \
    v = _mm512_mask_loadu_epi16(v, m, g + 70);                                                                        \
    v = _mm512_mask_loadu_epi16(v, m << 1, g + 140);                                                                  \
    v = _mm512_mask_loadu_epi16(v, m << 2, g + 210);                                                                  \
    return _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(_mm512_load_si512(order), v)));           \
  }
#endif
#if defined(__aarch64__)
#define AIRLLM_NEON 1
const kpath *kpath_neon(void);
#endif

/* ---- scalar helpers shared by every path ---- */

/* IEEE binary16 -> binary32, exact (subnormals, inf, nan). */
static inline float k_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      /* subnormal: normalise */
      int e = -1;
      do {
        e++;
        mant <<= 1;
      } while ((mant & 0x400) == 0);
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* binary32 -> binary16, round to nearest even (same algorithm as @airllm/format f32ToF16). */
static inline uint16_t k_f32_to_f16(float value) {
  uint32_t x;
  memcpy(&x, &value, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t exp = (x >> 23) & 0xff;
  uint32_t mant = x & 0x7fffff;
  if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (mant != 0 ? 0x200 | (mant >> 13) : 0));
  int e = (int)exp - 112;
  if (e >= 0x1f) return (uint16_t)(sign | 0x7c00);
  if (e <= 0) {
    int shift = 14 - e;
    if (shift > 24) return (uint16_t)sign;
    uint32_t m = mant | 0x800000;
    uint32_t half = 1u << (shift - 1);
    return (uint16_t)(sign | ((m + half - 1 + ((m >> shift) & 1)) >> shift));
  }
  return (uint16_t)(sign | (((uint32_t)e << 10) + ((mant + 0xfff + ((mant >> 13) & 1)) >> 13)));
}

static inline uint16_t k_rd16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static inline float k_rdf32(const uint8_t *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}

/*
 * Q80 scale of one block, exactly as FORMAT.md §c.2 and @airllm/format quantizeQ80: float32
 * d = amax / 127, id = 1/d (0 when d == 0); the stored scale is f16(d) rounded to nearest even.
 */
static inline void k_q80_scale(float amax, float *id, uint16_t *d16) {
  float d = amax / 127.0f;
  *id = d != 0.0f ? 1.0f / d : 0.0f;
  *d16 = k_f32_to_f16(d);
}

/*
 * Round half to even without depending on the FPU rounding mode. NaN and infinities give 0, as
 * the reference's `roundHalfEven(v) & 0xff` does (they arise only from non-finite inputs).
 */
static inline int k_round_half_even(float r) {
  if (!(r >= -1e9f && r <= 1e9f)) return 0;
  float f = __builtin_floorf(r);
  float diff = r - f; /* exact for |r| < 2^23 */
  int i = (int)f;
  if (diff > 0.5f) return i + 1;
  if (diff < 0.5f) return i;
  return (i & 1) ? i + 1 : i;
}

/*
 * Software prefetch distance for weight streams (and the read probe). The hardware prefetcher
 * alone leaves a single-thread stream short of DRAM bandwidth on the machines measured (a
 * Q40xQ80 matvec from DRAM went from 3.5 to 2.4 ms with it); the read probe prefetches the same
 * way, so kernel/probe ratios compare like with like.
 */
#define K_PREFETCH_BYTES 4096
/* The same for the AVX-512 Q40 rows kernels, which walk 2-4 distant rows at once: 2 KiB ahead on
 * each stream measured best there (4 KiB slightly worse, 1 KiB too). */
#define K_PREFETCH_Q40 2048

/* Bytes of one weight row of nIn values. */
static inline size_t k_row_bytes(int type, size_t nIn) {
  switch (type) {
    case FT_F32: return nIn * 4;
    case FT_F16: return nIn * 2;
    case FT_Q40: return nIn / QK * Q40_BYTES;
    case FT_Q80: return nIn / QK * Q80_BYTES;
    default: return 0;
  }
}

/* Generic ops built from a path's primitives (ops.c). */
void k_rmsnorm(const kpath *p, float *out, const float *x, const float *w, int n, float eps, int r0, int r1);
void k_rope(float *x, int nHeads, int headDim, int pos0, int batch, const float *freqs, int halfSplit, int h0,
            int h1);
void k_attention(const kpath *p, float *out, const float *q, const float *kc, const float *vc, float *att, int nHeads,
                 int nKvHeads, int headDim, int pos0, int batch, int h0, int h1);
int k_argmax(const float *x, int n);
void k_moe_route(const kpath *p, int32_t *experts, float *weights, float *logits, int nExperts, int k, int r0, int r1);

/*
 * F32 activations prepared once per call (per thread) for the "lanes" kernels (many batch rows,
 * SIMD lanes along the batch), so the SIMD kernels read x with plain aligned loads while each
 * weight row streams through once.
 */
static inline size_t k_align64(size_t n) { return (n + 63) & ~(size_t)63; }
/* F32 lanes layout: xT[i * NL + lane] = x[(b0 + lane) * nIn + i], zero past the last row. */
void k_prep_f32_lanes(const float *x, int nIn, int b0, int nrows, int NL, float *xT);

/* Scalar exp used by the scalar path: expf evaluated in double and rounded once, as the
 * reference's fround(Math.exp(x)) does. */
float k_scalar_exp(float x);

/*
 * Distributed-Llama's numerics (dllama.c, `--activations q80`): the ops whose arithmetic differs
 * from the reference's, in two implementations with the same bits (portable C; AVX2 for every x86
 * SIMD path), chosen per path by k_dl_ops.
 */
typedef struct kdl_ops {
  /* sum of a[i] * b[i] in 8 FMA lanes, dllama's horizontal sum, then the tail one FMA each */
  float (*dot)(const float *a, const float *b, int n);
  void (*softmax)(float *x, int n);
  void (*rmsnorm)(float *out, const float *x, const float *w, int n, float eps);
  /* y[i] = fma(a, v[i], y[i]) */
  void (*axpy)(float *y, const float *v, float a, int n);
  /* out[i] = (g / (1 + e^-g)) * u with dllama's exp: groups of 8 from the start, expf after */
  void (*silu_mul)(float *out, const float *g, const float *u, size_t n);
  /* x[i] = fma(q_i, f16(d), x[i]) over one Q80 block */
  void (*merge_q80)(float *x, const uint8_t *blk);
} kdl_ops;
const kdl_ops *k_dl_ops(const kpath *p);
float k_dl_expf(float x);
float k_dl_sinf(float x);
float k_dl_cosf(float x);
void k_dl_rmsnorm(const kdl_ops *d, float *out, const float *x, const float *w, int n, float eps, int r0, int r1);
void k_dl_attention(const kdl_ops *d, float *out, const float *q, const float *kc, const float *vc, float *att,
                    int nHeads, int nKvHeads, int headDim, int pos0, int batch, int h0, int h1);
void k_dl_rope(float *x, int nHeads, int headDim, int pos0, int batch, const float *freqs, int halfSplit, int h0,
               int h1);
void k_dl_moe_route(const kdl_ops *d, int32_t *experts, float *weights, float *logits, int nExperts, int k, int r0,
                    int r1);
void k_dl_matmul_f32(const kdl_ops *d, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int batch,
                     int r0, int r1, kscratch *s);
/* x += Q80 cast of o, merged with FMA, over nBlocks blocks of 32 */
void k_dl_residual_q80(const kpath *p, const kdl_ops *d, float *x, const float *o, size_t nBlocks);

#endif
