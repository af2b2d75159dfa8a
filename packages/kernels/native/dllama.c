/*
 * Distributed-Llama's arithmetic (`--activations q80`; src/dllama.ts is the reference and says
 * what dllama computes and why). Two implementations with the same bits: portable C (scalar and
 * NEON paths) and AVX2 (every x86 SIMD path), written the way dllama's own AVX2 code runs: 8 FMA
 * lanes summed as ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), its polynomial exp on full groups of
 * 8, glibc's expf for the rest. The file is built with -ffp-contract=off like the others, so the
 * only fused operations are the explicit fmaf / _mm256_fmadd_ps calls, placed where dllama's
 * compiler fused.
 *
 * expf, sinf and cosf are not taken from the C library: they are glibc's algorithms (2.28+, as
 * built for x86-64 with FMA) written out here, so results do not depend on the platform's libm
 * and match src/libm.ts on every machine. On glibc they equal the library's functions for every
 * float32 input (checked exhaustively when written; the tests compare them again).
 */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"

static inline uint32_t as_u32(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
static inline uint64_t as_u64(double d) {
  uint64_t u;
  memcpy(&u, &d, 8);
  return u;
}
static inline double as_f64(uint64_t u) {
  double d;
  memcpy(&d, &u, 8);
  return d;
}

/* ---- glibc's expf ---- */

/* 2^(i/32), each minus i << 47 in its bit pattern (adding k << 47 to entry k % 32 gives 2^(k/32)) */
static const uint64_t EXP2_TAB[32] = {
    0x3ff0000000000000, 0x3fefd9b0d3158574, 0x3fefb5586cf9890f, 0x3fef9301d0125b51, 0x3fef72b83c7d517b,
    0x3fef54873168b9aa, 0x3fef387a6e756238, 0x3fef1e9df51fdee1, 0x3fef06fe0a31b715, 0x3feef1a7373aa9cb,
    0x3feedea64c123422, 0x3feece086061892d, 0x3feebfdad5362a27, 0x3feeb42b569d4f82, 0x3feeab07dd485429,
    0x3feea47eb03a5585, 0x3feea09e667f3bcd, 0x3fee9f75e8ec5f74, 0x3feea11473eb0187, 0x3feea589994cce13,
    0x3feeace5422aa0db, 0x3feeb737b0cdc5e5, 0x3feec49182a3f090, 0x3feed503b23e255d, 0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47, 0x3fef199bdd85529c, 0x3fef3720dcef9069, 0x3fef5818dcfba487, 0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da, 0x3fefd0765b6e4540};

float k_dl_expf(float x) {
  uint32_t ux = as_u32(x), abstop = (ux >> 20) & 0x7ff;
  if (abstop >= 0x42b) {
    if (ux == 0xff800000u) return 0.0f;
    if (abstop >= 0x7f8) return x + x;
    if (x > 0x1.62e42ep6f) return INFINITY;
    if (x < -0x1.9fe368p6f) return 0.0f;
    if (x < -0x1.9d1d9ep6f) return 0x1p-149f;
  }
  /* x * 32/ln2 = k + r, |r| <= 1/2; 2^(k/32) from the table, 2^(r/32) from a cubic */
  const double invln2n = 0x1.71547652b82fep+5, shift = 0x1.8p+52;
  double xd = x;
  double kd = fma(invln2n, xd, shift);
  uint64_t ki = as_u64(kd);
  kd -= shift;
  double r = fma(invln2n, xd, -kd);
  double s = as_f64(EXP2_TAB[ki % 32] + (ki << 47));
  double z = fma(0x1.c6af84b912394p-20, r, 0x1.ebfce50fac4f3p-13);
  double r2 = r * r;
  double y = fma(0x1.62e42ff0c52d6p-6, r, 1.0);
  y = fma(z, r2, y);
  return (float)(y * s);
}

/* ---- glibc's sinf and cosf ---- */

/* quadrant signs of sin, 2/pi * 2^24, pi/2, then c0, c1, s1, c2, s2, c3, s3, c4; the second set
 * has the signs of quadrants 2 and 3 folded into the coefficients */
static const double SC[2][14] = {
    {1, -1, -1, 1, 0x1.45f306dc9c883p+23, 0x1.921fb54442d18p+0, 0x1p+0, -0x1.ffffffd0c621cp-2, -0x1.555545995a603p-3,
     0x1.55553e1068f19p-5, 0x1.1107605230bc4p-7, -0x1.6c087e89a359dp-10, -0x1.994eb3774cf24p-13, 0x1.99343027bf8c3p-16},
    {1, -1, -1, 1, 0x1.45f306dc9c883p+23, 0x1.921fb54442d18p+0, -0x1p+0, 0x1.ffffffd0c621cp-2, -0x1.555545995a603p-3,
     -0x1.55553e1068f19p-5, 0x1.1107605230bc4p-7, 0x1.6c087e89a359dp-10, -0x1.994eb3774cf24p-13, -0x1.99343027bf8c3p-16}};
enum { SC_HPI_INV = 4, SC_HPI, SC_C0, SC_C1, SC_S1, SC_C2, SC_S2, SC_C3, SC_S3, SC_C4 };

/* 4/pi in 32-bit words */
static const uint32_t INV_PIO4[24] = {
    0x000000a2, 0x0000a2f9, 0x00a2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529,
    0x441529fc, 0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0,
    0x34ddc0db, 0xddc0db62, 0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041};

/* sine (n even) or cosine (n odd) polynomial of the reduced argument x, x2 = x * x */
static float sincos_poly(double x, double x2, const double *p, int n) {
  if ((n & 1) == 0) {
    double x3 = x * x2;
    double s1 = fma(x2, p[SC_S3], p[SC_S2]);
    double x7 = x3 * x2;
    double s = fma(x3, p[SC_S1], x);
    return (float)fma(s1, x7, s);
  }
  double x4 = x2 * x2;
  double c2 = fma(x2, p[SC_C4], p[SC_C3]);
  double c1 = fma(x2, p[SC_C1], p[SC_C0]);
  double x6 = x4 * x2;
  double c = fma(x4, p[SC_C2], c1);
  return (float)fma(c2, x6, c);
}

/* |x| >= 120: x mod pi/2 from 96 bits of 4/pi in 64-bit integer arithmetic */
static double reduce_large(uint32_t xi, int *np) {
  const uint32_t *arr = &INV_PIO4[(xi >> 26) & 15];
  int shift = (xi >> 23) & 7;
  uint32_t m = ((xi & 0xffffff) | 0x800000) << shift;
  uint64_t res0 = (uint64_t)(uint32_t)(m * arr[0]) << 32;
  uint64_t res1 = (uint64_t)m * arr[4];
  uint64_t res2 = (uint64_t)m * arr[8];
  res0 = ((res2 >> 32) | res0) + res1;
  uint64_t n = (res0 + (1ULL << 61)) >> 62;
  res0 -= n << 62;
  *np = (int)n;
  return (double)(int64_t)res0 * 0x1.921fb54442d18p-62;
}

static float sincos1(float y, int cos) {
  uint32_t xi = as_u32(y), abstop = (xi >> 20) & 0x7ff;
  const double *p = SC[0];
  double x = y;
  int n;
  if (abstop <= 0x3f3) {
    if (abstop <= 0x397) return cos ? 1.0f : y; /* |y| < 2^-12 */
    return sincos_poly(x, x * x, p, cos);
  }
  if (abstop <= 0x42e) { /* |y| < 120: one fused multiply-subtract with pi/2 is accurate enough */
    double r = x * p[SC_HPI_INV];
    n = ((int32_t)r + 0x800000) >> 24;
    x = fma(-(double)n, p[SC_HPI], x);
    double s = p[n & 3];
    if (n & 2) p = SC[1];
    return sincos_poly(x * s, x * x, p, cos ? n ^ 1 : n);
  }
  if (abstop <= 0x7f7) {
    int sign = (int)(xi >> 31);
    x = reduce_large(xi, &n);
    double s = p[(n + sign) & 3];
    if ((n + sign) & 2) p = SC[1];
    return sincos_poly(x * s, x * x, p, cos ? n ^ 1 : n);
  }
  return (y - y) / (y - y);
}

float k_dl_sinf(float x) { return sincos1(x, 0); }
float k_dl_cosf(float x) { return sincos1(x, 1); }

/* ---- portable implementation ---- */

static float hsum8(const float *l) {
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

/* sum of a[i] * b[i]: 8 FMA lanes, their horizontal sum, then the tail one FMA each */
static float dot8(const float *a, const float *b, int n) {
  float l[8] = {0};
  int n8 = n - n % 8;
  for (int i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; j++) l[j] = fmaf(a[i + j], b[i + j], l[j]);
  float s = hsum8(l);
  for (int i = n8; i < n; i++) s = fmaf(a[i], b[i], s);
  return s;
}

/* dllama's AVX2 exp before its last multiplication: returns p, *scale = 2^n */
static float exp_poly(float x, float *scale) {
  x = x > -88.0f ? x : -88.0f;
  x = x < 88.0f ? x : 88.0f;
  float y = x * 1.4426950408889634f;
  float n = nearbyintf(y); /* round to nearest even, as cvtps2dq in the default mode */
  int ni = (int)n;
  float f = y - n;
  float p = fmaf(0.009618129107628477f, f, 0.05550410866482158f);
  p = fmaf(p, f, 0.2402265069591007f);
  p = fmaf(p, f, 0.6931471805599453f);
  p = fmaf(f, p, 1.0f);
  uint32_t bits = (uint32_t)(ni + 127) << 23;
  memcpy(scale, &bits, 4);
  return p;
}

static void softmax_row(float *x, int n) {
  if (n == 0) return;
  int n8 = n - n % 8, i;
  float max;
  if (n8 >= 8) {
    float l[8];
    for (int j = 0; j < 8; j++) l[j] = x[j];
    for (i = 8; i < n8; i += 8)
      for (int j = 0; j < 8; j++) l[j] = l[j] > x[i + j] ? l[j] : x[i + j];
    max = l[0];
    for (int j = 1; j < 8; j++) max = l[j] > max ? l[j] : max;
  } else {
    max = x[0];
    i = 1;
  }
  for (; i < n; i++)
    if (x[i] > max) max = x[i];
  float l[8] = {0};
  for (i = 0; i < n8; i += 8)
    for (int j = 0; j < 8; j++) {
      float sc, p = exp_poly(x[i + j] - max, &sc);
      float e = p * sc;
      x[i + j] = e;
      l[j] = l[j] + e;
    }
  float sum = hsum8(l);
  for (; i < n; i++) {
    float e = k_dl_expf(x[i] - max);
    x[i] = e;
    sum = sum + e;
  }
  if (sum == 0.0f) sum = 0.000001f;
  float inv = 1.0f / sum;
  for (i = 0; i < n; i++) x[i] = x[i] * inv;
}

static void softmax_p(float *x, int n) { softmax_row(x, n); }

static void rmsnorm_p(float *out, const float *x, const float *w, int n, float eps) {
  float ss = dot8(x, x, n);
  ss = ss / (float)n;
  ss = ss + eps;
  float inv = 1.0f / sqrtf(ss);
  for (int i = 0; i < n; i++) out[i] = (x[i] * inv) * w[i];
}

static void axpy_fma_p(float *y, const float *v, float a, int n) {
  for (int i = 0; i < n; i++) y[i] = fmaf(a, v[i], y[i]);
}

static void silu_mul_p(float *out, const float *g, const float *u, size_t n) {
  size_t n8 = n - n % 8, i = 0;
  for (; i < n8; i++) {
    float gi = g[i], sc, p = exp_poly(0.0f - gi, &sc);
    out[i] = (gi / fmaf(p, sc, 1.0f)) * u[i];
  }
  for (; i < n; i++) {
    float gi = g[i];
    out[i] = (gi / (1.0f + k_dl_expf(-gi))) * u[i];
  }
}

/* x[i] = fma(q_i, d, x[i]) over one Q80 block */
static void merge_q80_p(float *x, const uint8_t *blk) {
  float d = k_f16_to_f32(k_rd16(blk));
  for (int i = 0; i < QK; i++) x[i] = fmaf((float)(int8_t)blk[2 + i], d, x[i]);
}

static const kdl_ops PORTABLE = {
    .dot = dot8, .softmax = softmax_p, .rmsnorm = rmsnorm_p, .axpy = axpy_fma_p, .silu_mul = silu_mul_p,
    .merge_q80 = merge_q80_p,
};

/* ---- AVX2 implementation ---- */

#if defined(AIRLLM_X86)
#include <immintrin.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

INL float hsum8_avx2(__m256 v) {
  __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

INL float hmax8_avx2(__m256 v) {
  __m128 r = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_max_ps(r, _mm_movehl_ps(r, r));
  r = _mm_max_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

INL __m256 exp_poly8(__m256 x, __m256 *scale) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.0f));
  x = _mm256_min_ps(x, _mm256_set1_ps(88.0f));
  __m256 y = _mm256_mul_ps(x, _mm256_set1_ps(1.4426950408889634f));
  __m256i n = _mm256_cvtps_epi32(y);
  __m256 f = _mm256_sub_ps(y, _mm256_cvtepi32_ps(n));
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(0.009618129107628477f), f, _mm256_set1_ps(0.05550410866482158f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.2402265069591007f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.6931471805599453f));
  p = _mm256_fmadd_ps(f, p, _mm256_set1_ps(1.0f));
  *scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
  return p;
}

static TGT float dot8_avx2(const float *a, const float *b, int n) {
  __m256 u = _mm256_setzero_ps();
  int n8 = n - n % 8;
  for (int i = 0; i < n8; i += 8) u = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), u);
  float s = hsum8_avx2(u);
  for (int i = n8; i < n; i++) s = fmaf(a[i], b[i], s);
  return s;
}

static TGT void softmax_avx2(float *x, int n) {
  if (n == 0) return;
  int n8 = n - n % 8, i;
  float max;
  if (n8 >= 8) {
    __m256 m = _mm256_loadu_ps(x);
    for (i = 8; i < n8; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    max = hmax8_avx2(m);
  } else {
    max = x[0];
    i = 1;
  }
  for (; i < n; i++)
    if (x[i] > max) max = x[i];
  __m256 mv = _mm256_set1_ps(max), sv = _mm256_setzero_ps();
  for (i = 0; i < n8; i += 8) {
    __m256 sc, p = exp_poly8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), &sc);
    __m256 e = _mm256_mul_ps(p, sc);
    _mm256_storeu_ps(x + i, e);
    sv = _mm256_add_ps(sv, e);
  }
  float sum = hsum8_avx2(sv);
  for (; i < n; i++) {
    float e = k_dl_expf(x[i] - max);
    x[i] = e;
    sum = sum + e;
  }
  if (sum == 0.0f) sum = 0.000001f;
  float inv = 1.0f / sum;
  __m256 iv = _mm256_set1_ps(inv);
  for (i = 0; i < n8; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), iv));
  for (; i < n; i++) x[i] = x[i] * inv;
}

static TGT void rmsnorm_avx2(float *out, const float *x, const float *w, int n, float eps) {
  float ss = dot8_avx2(x, x, n);
  ss = ss / (float)n;
  ss = ss + eps;
  float inv = 1.0f / sqrtf(ss);
  __m256 iv = _mm256_set1_ps(inv);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), iv), _mm256_loadu_ps(w + i)));
  for (; i < n; i++) out[i] = (x[i] * inv) * w[i];
}

static TGT void axpy_fma_avx2(float *y, const float *v, float a, int n) {
  __m256 av = _mm256_set1_ps(a);
  int i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(v + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] = fmaf(a, v[i], y[i]);
}

static TGT void silu_mul_avx2(float *out, const float *g, const float *u, size_t n) {
  size_t n8 = n - n % 8, i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i < n8; i += 8) {
    __m256 gv = _mm256_loadu_ps(g + i);
    __m256 sc, p = exp_poly8(_mm256_sub_ps(_mm256_setzero_ps(), gv), &sc);
    __m256 silu = _mm256_div_ps(gv, _mm256_fmadd_ps(p, sc, one));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
  }
  for (; i < n; i++) {
    float gi = g[i];
    out[i] = (gi / (1.0f + k_dl_expf(-gi))) * u[i];
  }
}

static TGT void merge_q80_avx2(float *x, const uint8_t *blk) {
  __m256 d = _mm256_set1_ps(_cvtsh_ss(k_rd16(blk)));
  for (int j = 0; j < QK; j += 8) {
    __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(blk + 2 + j))));
    _mm256_storeu_ps(x + j, _mm256_fmadd_ps(q, d, _mm256_loadu_ps(x + j)));
  }
}

static const kdl_ops AVX2 = {
    .dot = dot8_avx2, .softmax = softmax_avx2, .rmsnorm = rmsnorm_avx2, .axpy = axpy_fma_avx2, .silu_mul = silu_mul_avx2,
    .merge_q80 = merge_q80_avx2,
};
#endif

const kdl_ops *k_dl_ops(const kpath *p) {
#if defined(AIRLLM_X86)
  if (strcmp(p->name, "scalar") != 0) return &AVX2;
#endif
  (void)p;
  return &PORTABLE;
}

/* ---- ops over ranges, shared by both implementations ---- */

void k_dl_rmsnorm(const kdl_ops *d, float *out, const float *x, const float *w, int n, float eps, int r0, int r1) {
  for (int r = r0; r < r1; r++) d->rmsnorm(out + (size_t)r * n, x + (size_t)r * n, w, n, eps);
}

void k_dl_attention(const kdl_ops *d, float *out, const float *q, const float *kc, const float *vc, float *att,
                    int nHeads, int nKvHeads, int headDim, int pos0, int batch, int h0, int h1) {
  size_t kvDim = (size_t)nKvHeads * headDim, qDim = (size_t)nHeads * headDim;
  int group = nHeads / nKvHeads;
  float root = sqrtf((float)headDim);
  for (int b = 0; b < batch; b++) {
    int pos = pos0 + b;
    for (int h = h0; h < h1; h++) {
      const float *qh = q + (size_t)b * qDim + (size_t)h * headDim;
      size_t kvo = (size_t)(h / group) * headDim;
      for (int t = 0; t <= pos; t++) att[t] = d->dot(qh, kc + (size_t)t * kvDim + kvo, headDim) / root;
      d->softmax(att, pos + 1);
      /* out may alias q: q's head h has been fully read above */
      float *oh = out + (size_t)b * qDim + (size_t)h * headDim;
      memset(oh, 0, (size_t)headDim * sizeof(float));
      for (int t = 0; t <= pos; t++) d->axpy(oh, vc + (size_t)t * kvDim + kvo, att[t], headDim);
    }
  }
}

void k_dl_rope(float *x, int nHeads, int headDim, int pos0, int batch, const float *freqs, int halfSplit, int h0,
               int h1) {
  int half = headDim / 2;
  size_t width = (size_t)nHeads * headDim;
  for (int b = 0; b < batch; b++) {
    float pos = (float)(pos0 + b);
    float *row = x + (size_t)b * width;
    for (int j = 0; j < half; j++) {
      float val = pos * freqs[j];
      float fcr = k_dl_cosf(val), fci = k_dl_sinf(val);
      for (int h = h0; h < h1; h++) {
        float *hp = row + (size_t)h * headDim;
        if (halfSplit) {
          float v0 = hp[j], v1 = hp[j + half];
          hp[j] = fmaf(v0, fcr, -(v1 * fci));
          hp[j + half] = fmaf(v0, fci, v1 * fcr);
        } else {
          float v0 = hp[2 * j], v1 = hp[2 * j + 1];
          hp[2 * j] = v0 * fcr - v1 * fci;
          hp[2 * j + 1] = v0 * fci + v1 * fcr;
        }
      }
    }
  }
}

void k_dl_moe_route(const kdl_ops *d, int32_t *experts, float *weights, float *logits, int nExperts, int k, int r0,
                    int r1) {
  for (int r = r0; r < r1; r++) {
    float *lr = logits + (size_t)r * nExperts;
    int32_t *er = experts + (size_t)r * k;
    float *wr = weights + (size_t)r * k;
    d->softmax(lr, nExperts);
    /* Repeated maximum: on equal probability the lower expert index comes first. */
    float total = 0.0f;
    for (int j = 0; j < k; j++) {
      int best = -1;
      for (int e = 0; e < nExperts; e++) {
        int taken = 0;
        for (int i = 0; i < j; i++)
          if (er[i] == e) taken = 1;
        if (!taken && (best < 0 || lr[e] > lr[best])) best = e;
      }
      er[j] = best;
      wr[j] = lr[best];
      total = total + lr[best];
    }
    for (int j = 0; j < k; j++) wr[j] = wr[j] / total;
  }
}

/* F32 weights (any byte offset): rows copied to aligned scratch only when unaligned */
void k_dl_matmul_f32(const kdl_ops *d, float *out, const float *x, const uint8_t *w, int nIn, int nOut, int batch,
                     int r0, int r1, kscratch *s) {
  float *tmp = NULL;
  if (((uintptr_t)w & 3) != 0) {
    tmp = (float *)kscratch_get(s, (size_t)nIn * sizeof(float));
    if (tmp == NULL) return;
  }
  for (int r = r0; r < r1; r++) {
    const uint8_t *rowp = w + (size_t)r * nIn * 4;
    const float *row = (const float *)(const void *)rowp;
    if (tmp != NULL) {
      memcpy(tmp, rowp, (size_t)nIn * 4);
      row = tmp;
    }
    for (int b = 0; b < batch; b++) out[(size_t)b * nOut + r] = d->dot(x + (size_t)b * nIn, row, nIn);
  }
}

void k_dl_residual_q80(const kpath *p, const kdl_ops *d, float *x, const float *o, size_t nBlocks) {
  uint8_t blk[Q80_BYTES];
  for (size_t b = 0; b < nBlocks; b++) {
    p->quantize_q80(blk, o + b * QK, 1);
    d->merge_q80(x + b * QK, blk);
  }
}
