/*
 * N-API glue. A context-aware module (NAPI_MODULE_INIT): every worker thread that loads it gets
 * its own exports and its own scratch (instance data), and nothing is shared between threads
 * except the read-only path tables.
 *
 * Each op validates its arguments in O(1) (types, ranges, that every array is long enough for
 * the requested rows) and throws a TypeError/RangeError with code AIRLLM_KERNELS_ARG instead
 * of touching memory it was not given. Typed arrays are used in place through
 * napi_get_typedarray_info (ArrayBuffer or SharedArrayBuffer); no op copies or allocates, apart
 * from growing the per-thread scratch the first time a larger size is seen.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

#define ARG_CODE "AIRLLM_KERNELS_ARG"
#define MAX_ARGS 12

typedef struct {
  napi_env env;
  int ok;
} ctx_t;

static kscratch *scratch_of(napi_env env) {
  void *d = NULL;
  napi_get_instance_data(env, &d);
  return (kscratch *)d;
}

static void fail_type(ctx_t *c, const char *op, const char *what) {
  if (!c->ok) return;
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", op, what);
  napi_throw_type_error(c->env, ARG_CODE, msg);
  c->ok = 0;
}

static void fail_range(ctx_t *c, const char *op, const char *what) {
  if (!c->ok) return;
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", op, what);
  napi_throw_range_error(c->env, ARG_CODE, msg);
  c->ok = 0;
}

static void *typed(ctx_t *c, const char *op, napi_value v, napi_typedarray_type want, const char *name, size_t *len) {
  *len = 0;
  if (!c->ok) return NULL;
  bool is = false;
  if (napi_is_typedarray(c->env, v, &is) != napi_ok || !is) {
    char m[96];
    snprintf(m, sizeof m, "%s must be a typed array", name);
    fail_type(c, op, m);
    return NULL;
  }
  napi_typedarray_type t;
  void *data = NULL;
  if (napi_get_typedarray_info(c->env, v, &t, len, &data, NULL, NULL) != napi_ok || t != want) {
    static const char *names[] = {"Int8Array",    "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                  "Uint16Array",  "Int32Array",   "Uint32Array",       "Float32Array",
                                  "Float64Array", "BigInt64Array", "BigUint64Array"};
    char m[96];
    snprintf(m, sizeof m, "%s must be a %s", name, want <= 10 ? names[want] : "typed array");
    fail_type(c, op, m);
    return NULL;
  }
  return data;
}

/* An integer argument in [lo, hi]. */
static int64_t integer(ctx_t *c, const char *op, napi_value v, const char *name, int64_t lo, int64_t hi) {
  if (!c->ok) return 0;
  double d;
  if (napi_get_value_double(c->env, v, &d) != napi_ok) {
    char m[96];
    snprintf(m, sizeof m, "%s must be a number", name);
    fail_type(c, op, m);
    return 0;
  }
  if (!(d >= (double)lo && d <= (double)hi) || d != floor(d)) {
    char m[160];
    snprintf(m, sizeof m, "%s must be an integer in [%lld, %lld], got %g", name, (long long)lo, (long long)hi, d);
    fail_range(c, op, m);
    return 0;
  }
  return (int64_t)d;
}

static double number(ctx_t *c, const char *op, napi_value v, const char *name) {
  if (!c->ok) return 0;
  double d;
  if (napi_get_value_double(c->env, v, &d) != napi_ok) {
    char m[96];
    snprintf(m, sizeof m, "%s must be a number", name);
    fail_type(c, op, m);
    return 0;
  }
  return d;
}

static void need(ctx_t *c, const char *op, const char *name, uint64_t have, uint64_t want) {
  if (!c->ok || have >= want) return;
  char m[192];
  snprintf(m, sizeof m, "%s is too short for the requested range: %llu elements, need %llu", name,
           (unsigned long long)have, (unsigned long long)want);
  fail_range(c, op, m);
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv, const kpath **path,
                    const char *op) {
  size_t argc = MAX_ARGS;
  void *data = NULL;
  napi_get_cb_info(env, info, &argc, argv, NULL, &data);
  *path = (const kpath *)data;
  if (argc < want) {
    char m[96];
    snprintf(m, sizeof m, "%s: expected %zu arguments, got %zu", op, want, argc);
    napi_throw_type_error(env, ARG_CODE, m);
    return 0;
  }
  return 1;
}

static void check_scratch(napi_env env, kscratch *s, const char *op) {
  if (s->failed) {
    s->failed = 0;
    char m[96];
    snprintf(m, sizeof m, "%s: could not allocate per-thread scratch", op);
    napi_throw_error(env, "AIRLLM_KERNELS_NOMEM", m);
  }
}

#define INT_LIMIT 0x3fffffff /* sizes and indices stay far from int overflow in the kernels */

/* matmul(wType, out, x, w, nIn, nOut, batch, r0, r1) and matmulQ80(...) share the checks. */
static napi_value do_matmul(napi_env env, napi_callback_info info, int q80) {
  const char *op = q80 ? "matmulQ80" : "matmul";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 9, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  int wType = (int)integer(&c, op, a[0], "wType", 0, 3);
  size_t outLen, xLen, wLen;
  float *out = typed(&c, op, a[1], napi_float32_array, "out", &outLen);
  void *x = q80 ? typed(&c, op, a[2], napi_uint8_array, "xq", &xLen)
                : typed(&c, op, a[2], napi_float32_array, "x", &xLen);
  uint8_t *w = typed(&c, op, a[3], napi_uint8_array, "w", &wLen);
  int64_t nIn = integer(&c, op, a[4], "nIn", 1, INT_LIMIT);
  int64_t nOut = integer(&c, op, a[5], "nOut", 0, INT_LIMIT);
  int64_t batch = integer(&c, op, a[6], "batch", 0, INT_LIMIT);
  int64_t r0 = integer(&c, op, a[7], "r0", 0, INT_LIMIT);
  int64_t r1 = integer(&c, op, a[8], "r1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (q80 && wType != FT_Q40 && wType != FT_Q80) fail_range(&c, op, "wType must be Q40 (2) or Q80 (3)");
  if ((q80 || wType == FT_Q40 || wType == FT_Q80) && nIn % QK != 0)
    fail_range(&c, op, "nIn must be a multiple of 32 for quantized operands");
  if (r0 > r1 || r1 > nOut) fail_range(&c, op, "need 0 <= r0 <= r1 <= nOut");
  if (!c.ok) return NULL;
  if (batch == 0 || r0 == r1) return NULL;
  uint64_t xNeed = q80 ? (uint64_t)batch * (uint64_t)(nIn / QK) * Q80_BYTES : (uint64_t)batch * (uint64_t)nIn;
  need(&c, op, q80 ? "xq" : "x", xLen, xNeed);
  need(&c, op, "out", outLen, (uint64_t)(batch - 1) * (uint64_t)nOut + (uint64_t)r1);
  need(&c, op, "w", wLen, (uint64_t)r1 * k_row_bytes(wType, (size_t)nIn));
  if (!c.ok) return NULL;
  mm_fn fn = q80 ? p->matmulq[wType] : p->matmul[wType];
  kscratch *s = scratch_of(env);
  fn(out, x, w, (int)nIn, (int)nOut, (int)batch, (int)r0, (int)r1, s);
  check_scratch(env, s, op);
  return NULL;
}

static napi_value js_matmul(napi_env env, napi_callback_info info) { return do_matmul(env, info, 0); }
static napi_value js_matmulq(napi_env env, napi_callback_info info) { return do_matmul(env, info, 1); }

/* Row ops over rows [r0, r1) of width n: common checks. */
static int rows(ctx_t *c, const char *op, napi_value *a, int64_t *n, int64_t *r0, int64_t *r1, int64_t nMin) {
  *n = integer(c, op, a[0], "n", nMin, INT_LIMIT);
  *r0 = integer(c, op, a[1], "r0", 0, INT_LIMIT);
  *r1 = integer(c, op, a[2], "r1", 0, INT_LIMIT);
  if (c->ok && *r0 > *r1) fail_range(c, op, "need r0 <= r1");
  return c->ok;
}

/* quantizeQ80(out, x, n, r0, r1) */
static napi_value js_quantize(napi_env env, napi_callback_info info) {
  const char *op = "quantizeQ80";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 5, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, xLen;
  uint8_t *out = typed(&c, op, a[0], napi_uint8_array, "out", &oLen);
  float *x = typed(&c, op, a[1], napi_float32_array, "x", &xLen);
  int64_t n, r0, r1;
  if (!rows(&c, op, a + 2, &n, &r0, &r1, 0)) return NULL;
  if (n % QK != 0) fail_range(&c, op, "n must be a multiple of 32");
  uint64_t rowBytes = (uint64_t)(n / QK) * Q80_BYTES;
  need(&c, op, "x", xLen, (uint64_t)r1 * (uint64_t)n);
  need(&c, op, "out", oLen, (uint64_t)r1 * rowBytes);
  if (!c.ok || r0 == r1 || n == 0) return NULL;
  p->quantize_q80(out + (size_t)r0 * rowBytes, x + (size_t)r0 * n, (size_t)(r1 - r0) * (size_t)(n / QK));
  return NULL;
}

/* dequantizeQ80(out, xq, n, r0, r1) */
static napi_value js_dequantize(napi_env env, napi_callback_info info) {
  const char *op = "dequantizeQ80";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 5, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, xLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  uint8_t *xq = typed(&c, op, a[1], napi_uint8_array, "xq", &xLen);
  int64_t n, r0, r1;
  if (!rows(&c, op, a + 2, &n, &r0, &r1, 0)) return NULL;
  if (n % QK != 0) fail_range(&c, op, "n must be a multiple of 32");
  uint64_t rowBytes = (uint64_t)(n / QK) * Q80_BYTES;
  need(&c, op, "out", oLen, (uint64_t)r1 * (uint64_t)n);
  need(&c, op, "xq", xLen, (uint64_t)r1 * rowBytes);
  if (!c.ok || r0 == r1 || n == 0) return NULL;
  p->dequantize_q80(out + (size_t)r0 * n, xq + (size_t)r0 * rowBytes, (size_t)(r1 - r0) * (size_t)(n / QK));
  return NULL;
}

/* rmsnorm(out, x, weight, n, eps, r0, r1) */
static napi_value js_rmsnorm(napi_env env, napi_callback_info info) {
  const char *op = "rmsnorm";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 7, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, xLen, wLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  float *x = typed(&c, op, a[1], napi_float32_array, "x", &xLen);
  float *w = typed(&c, op, a[2], napi_float32_array, "weight", &wLen);
  int64_t n = integer(&c, op, a[3], "n", 1, INT_LIMIT);
  double eps = number(&c, op, a[4], "eps");
  int64_t r0 = integer(&c, op, a[5], "r0", 0, INT_LIMIT);
  int64_t r1 = integer(&c, op, a[6], "r1", 0, INT_LIMIT);
  if (c.ok && r0 > r1) fail_range(&c, op, "need r0 <= r1");
  need(&c, op, "weight", wLen, (uint64_t)n);
  need(&c, op, "x", xLen, (uint64_t)r1 * (uint64_t)n);
  need(&c, op, "out", oLen, (uint64_t)r1 * (uint64_t)n);
  if (!c.ok) return NULL;
  k_rmsnorm(p, out, x, w, (int)n, (float)eps, (int)r0, (int)r1);
  return NULL;
}

/* rope(x, nHeads, headDim, pos0, batch, freqs, halfSplit, h0, h1) */
static napi_value js_rope(napi_env env, napi_callback_info info) {
  const char *op = "rope";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 9, a, &p, op)) return NULL;
  (void)p;
  ctx_t c = {env, 1};
  size_t xLen, fLen;
  float *x = typed(&c, op, a[0], napi_float32_array, "x", &xLen);
  int64_t nHeads = integer(&c, op, a[1], "nHeads", 0, INT_LIMIT);
  int64_t headDim = integer(&c, op, a[2], "headDim", 2, 1 << 16);
  int64_t pos0 = integer(&c, op, a[3], "pos0", 0, 1 << 24);
  int64_t batch = integer(&c, op, a[4], "batch", 0, INT_LIMIT);
  float *freqs = typed(&c, op, a[5], napi_float32_array, "freqs", &fLen);
  bool halfSplit = false;
  if (c.ok && napi_get_value_bool(env, a[6], &halfSplit) != napi_ok) fail_type(&c, op, "halfSplit must be a boolean");
  int64_t h0 = integer(&c, op, a[7], "h0", 0, INT_LIMIT);
  int64_t h1 = integer(&c, op, a[8], "h1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (headDim % 2 != 0) fail_range(&c, op, "headDim must be even");
  if (h0 > h1 || h1 > nHeads) fail_range(&c, op, "need 0 <= h0 <= h1 <= nHeads");
  if (pos0 + batch > (1 << 24)) fail_range(&c, op, "positions must stay below 2^24 (exact in float32)");
  need(&c, op, "freqs", fLen, (uint64_t)headDim / 2);
  need(&c, op, "x", xLen, (uint64_t)batch * (uint64_t)nHeads * (uint64_t)headDim);
  if (!c.ok) return NULL;
  k_rope(x, (int)nHeads, (int)headDim, (int)pos0, (int)batch, freqs, halfSplit, (int)h0, (int)h1);
  return NULL;
}

/* attention(out, q, kCache, vCache, att, nHeads, nKvHeads, headDim, pos0, batch, h0, h1) */
static napi_value js_attention(napi_env env, napi_callback_info info) {
  const char *op = "attention";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 12, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, qLen, kLen, vLen, attLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  float *q = typed(&c, op, a[1], napi_float32_array, "q", &qLen);
  float *kc = typed(&c, op, a[2], napi_float32_array, "kCache", &kLen);
  float *vc = typed(&c, op, a[3], napi_float32_array, "vCache", &vLen);
  float *att = typed(&c, op, a[4], napi_float32_array, "att", &attLen);
  int64_t nHeads = integer(&c, op, a[5], "nHeads", 1, INT_LIMIT);
  int64_t nKv = integer(&c, op, a[6], "nKvHeads", 1, INT_LIMIT);
  int64_t hd = integer(&c, op, a[7], "headDim", 1, 1 << 16);
  int64_t pos0 = integer(&c, op, a[8], "pos0", 0, INT_LIMIT);
  int64_t batch = integer(&c, op, a[9], "batch", 0, INT_LIMIT);
  int64_t h0 = integer(&c, op, a[10], "h0", 0, INT_LIMIT);
  int64_t h1 = integer(&c, op, a[11], "h1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (nHeads % nKv != 0) fail_range(&c, op, "nHeads must be a multiple of nKvHeads");
  if (h0 > h1 || h1 > nHeads) fail_range(&c, op, "need 0 <= h0 <= h1 <= nHeads");
  if (pos0 + batch > INT_LIMIT) fail_range(&c, op, "pos0 + batch too large");
  if (!c.ok || batch == 0 || h0 == h1) return NULL;
  uint64_t qDim = (uint64_t)nHeads * hd, kvDim = (uint64_t)nKv * hd;
  need(&c, op, "q", qLen, (uint64_t)batch * qDim);
  need(&c, op, "out", oLen, (uint64_t)batch * qDim);
  need(&c, op, "kCache", kLen, (uint64_t)(pos0 + batch) * kvDim);
  need(&c, op, "vCache", vLen, (uint64_t)(pos0 + batch) * kvDim);
  need(&c, op, "att", attLen, (uint64_t)(pos0 + batch));
  if (!c.ok) return NULL;
  k_attention(p, out, q, kc, vc, att, (int)nHeads, (int)nKv, (int)hd, (int)pos0, (int)batch, (int)h0, (int)h1);
  return NULL;
}

/* softmax(x, n, r0, r1) */
static napi_value js_softmax(napi_env env, napi_callback_info info) {
  const char *op = "softmax";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 4, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t xLen;
  float *x = typed(&c, op, a[0], napi_float32_array, "x", &xLen);
  int64_t n, r0, r1;
  if (!rows(&c, op, a + 1, &n, &r0, &r1, 0)) return NULL;
  need(&c, op, "x", xLen, (uint64_t)r1 * (uint64_t)n);
  if (!c.ok || n == 0) return NULL;
  for (int64_t r = r0; r < r1; r++) p->softmax(x + (size_t)r * n, (int)n);
  return NULL;
}

/* Element ranges [i0, i1) */
static int elems(ctx_t *c, const char *op, napi_value v0, napi_value v1, int64_t *i0, int64_t *i1) {
  *i0 = integer(c, op, v0, "i0", 0, INT64_C(1) << 50);
  *i1 = integer(c, op, v1, "i1", 0, INT64_C(1) << 50);
  if (c->ok && *i0 > *i1) fail_range(c, op, "need i0 <= i1");
  return c->ok;
}

/* swiglu(out, gate, up, i0, i1) */
static napi_value js_swiglu(napi_env env, napi_callback_info info) {
  const char *op = "swiglu";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 5, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, gLen, uLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  float *g = typed(&c, op, a[1], napi_float32_array, "gate", &gLen);
  float *u = typed(&c, op, a[2], napi_float32_array, "up", &uLen);
  int64_t i0, i1;
  if (!elems(&c, op, a[3], a[4], &i0, &i1)) return NULL;
  need(&c, op, "out", oLen, (uint64_t)i1);
  need(&c, op, "gate", gLen, (uint64_t)i1);
  need(&c, op, "up", uLen, (uint64_t)i1);
  if (!c.ok) return NULL;
  p->swiglu(out + i0, g + i0, u + i0, (size_t)(i1 - i0));
  return NULL;
}

/* addScaled(out, x, scale, i0, i1): the scale is rounded to float32 first. */
static napi_value js_add_scaled(napi_env env, napi_callback_info info) {
  const char *op = "addScaled";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 5, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, xLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  float *x = typed(&c, op, a[1], napi_float32_array, "x", &xLen);
  double scale = number(&c, op, a[2], "scale");
  int64_t i0, i1;
  if (!elems(&c, op, a[3], a[4], &i0, &i1)) return NULL;
  need(&c, op, "out", oLen, (uint64_t)i1);
  need(&c, op, "x", xLen, (uint64_t)i1);
  if (!c.ok) return NULL;
  float s = (float)scale;
  if (s == 1.0f) p->add(out + i0, x + i0, (size_t)(i1 - i0));
  else p->axpy(out + i0, x + i0, s, (size_t)(i1 - i0));
  return NULL;
}

/* argmax(x, n) */
static napi_value js_argmax(napi_env env, napi_callback_info info) {
  const char *op = "argmax";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 2, a, &p, op)) return NULL;
  (void)p;
  ctx_t c = {env, 1};
  size_t xLen;
  float *x = typed(&c, op, a[0], napi_float32_array, "x", &xLen);
  int64_t n = integer(&c, op, a[1], "n", 1, INT_LIMIT);
  need(&c, op, "x", xLen, (uint64_t)n);
  if (!c.ok) return NULL;
  napi_value r;
  napi_create_int32(env, k_argmax(x, (int)n), &r);
  return r;
}

/* moeRoute(experts, weights, logits, nExperts, k, r0, r1) */
static napi_value js_moe_route(napi_env env, napi_callback_info info) {
  const char *op = "moeRoute";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 7, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t eLen, wLen, lLen;
  int32_t *experts = typed(&c, op, a[0], napi_int32_array, "experts", &eLen);
  float *weights = typed(&c, op, a[1], napi_float32_array, "weights", &wLen);
  float *logits = typed(&c, op, a[2], napi_float32_array, "logits", &lLen);
  int64_t nE = integer(&c, op, a[3], "nExperts", 1, 1 << 20);
  int64_t k = integer(&c, op, a[4], "k", 1, 1 << 20);
  int64_t r0 = integer(&c, op, a[5], "r0", 0, INT_LIMIT);
  int64_t r1 = integer(&c, op, a[6], "r1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (k > nE) fail_range(&c, op, "need k <= nExperts");
  if (r0 > r1) fail_range(&c, op, "need r0 <= r1");
  need(&c, op, "logits", lLen, (uint64_t)r1 * (uint64_t)nE);
  need(&c, op, "experts", eLen, (uint64_t)r1 * (uint64_t)k);
  need(&c, op, "weights", wLen, (uint64_t)r1 * (uint64_t)k);
  if (!c.ok) return NULL;
  k_moe_route(p, experts, weights, logits, (int)nE, (int)k, (int)r0, (int)r1);
  return NULL;
}

/* vexp(out, x, n): the path's exp, exposed so tests can measure its error. */
static napi_value js_vexp(napi_env env, napi_callback_info info) {
  const char *op = "vexp";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 3, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, xLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  float *x = typed(&c, op, a[1], napi_float32_array, "x", &xLen);
  int64_t n = integer(&c, op, a[2], "n", 0, INT_LIMIT);
  need(&c, op, "out", oLen, (uint64_t)n);
  need(&c, op, "x", xLen, (uint64_t)n);
  if (!c.ok) return NULL;
  p->vexp(out, x, (size_t)n);
  return NULL;
}

/* ---- dllama's numerics (dllama.c) ---- */

/* rmsnormDllama(out, x, weight, n, eps, r0, r1); rmsnormQ80(out, outq, x, weight, n, eps, r0, r1) */
static napi_value do_rmsnorm_dl(napi_env env, napi_callback_info info, int q80) {
  const char *op = q80 ? "rmsnormQ80" : "rmsnormDllama";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, q80 ? 8 : 7, a, &p, op)) return NULL;
  napi_value *r = a + (q80 ? 1 : 0);
  ctx_t c = {env, 1};
  size_t oLen, qLen = 0, xLen, wLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  uint8_t *outq = q80 ? typed(&c, op, a[1], napi_uint8_array, "outq", &qLen) : NULL;
  float *x = typed(&c, op, r[1], napi_float32_array, "x", &xLen);
  float *w = typed(&c, op, r[2], napi_float32_array, "weight", &wLen);
  int64_t n = integer(&c, op, r[3], "n", 1, INT_LIMIT);
  double eps = number(&c, op, r[4], "eps");
  int64_t r0 = integer(&c, op, r[5], "r0", 0, INT_LIMIT);
  int64_t r1 = integer(&c, op, r[6], "r1", 0, INT_LIMIT);
  if (c.ok && r0 > r1) fail_range(&c, op, "need r0 <= r1");
  if (c.ok && q80 && n % QK != 0) fail_range(&c, op, "n must be a multiple of 32");
  need(&c, op, "weight", wLen, (uint64_t)n);
  need(&c, op, "x", xLen, (uint64_t)r1 * (uint64_t)n);
  need(&c, op, "out", oLen, (uint64_t)r1 * (uint64_t)n);
  if (q80) need(&c, op, "outq", qLen, (uint64_t)r1 * (uint64_t)(n / QK) * Q80_BYTES);
  if (!c.ok) return NULL;
  k_dl_rmsnorm(k_dl_ops(p), out, x, w, (int)n, (float)eps, (int)r0, (int)r1);
  if (q80 && r1 > r0)
    p->quantize_q80(outq + (size_t)r0 * (size_t)(n / QK) * Q80_BYTES, out + (size_t)r0 * n,
                    (size_t)(r1 - r0) * (size_t)(n / QK));
  return NULL;
}
static napi_value js_rmsnorm_dl(napi_env env, napi_callback_info info) { return do_rmsnorm_dl(env, info, 0); }
static napi_value js_rmsnorm_q80(napi_env env, napi_callback_info info) { return do_rmsnorm_dl(env, info, 1); }

/* softmaxDllama(x, n, r0, r1) */
static napi_value js_softmax_dl(napi_env env, napi_callback_info info) {
  const char *op = "softmaxDllama";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 4, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t xLen;
  float *x = typed(&c, op, a[0], napi_float32_array, "x", &xLen);
  int64_t n, r0, r1;
  if (!rows(&c, op, a + 1, &n, &r0, &r1, 0)) return NULL;
  need(&c, op, "x", xLen, (uint64_t)r1 * (uint64_t)n);
  if (!c.ok || n == 0) return NULL;
  const kdl_ops *d = k_dl_ops(p);
  for (int64_t r = r0; r < r1; r++) d->softmax(x + (size_t)r * n, (int)n);
  return NULL;
}

/* attentionDllama: the arguments of attention */
static napi_value js_attention_dl(napi_env env, napi_callback_info info) {
  const char *op = "attentionDllama";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 12, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t oLen, qLen, kLen, vLen, attLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  float *q = typed(&c, op, a[1], napi_float32_array, "q", &qLen);
  float *kc = typed(&c, op, a[2], napi_float32_array, "kCache", &kLen);
  float *vc = typed(&c, op, a[3], napi_float32_array, "vCache", &vLen);
  float *att = typed(&c, op, a[4], napi_float32_array, "att", &attLen);
  int64_t nHeads = integer(&c, op, a[5], "nHeads", 1, INT_LIMIT);
  int64_t nKv = integer(&c, op, a[6], "nKvHeads", 1, INT_LIMIT);
  int64_t hd = integer(&c, op, a[7], "headDim", 1, 1 << 16);
  int64_t pos0 = integer(&c, op, a[8], "pos0", 0, INT_LIMIT);
  int64_t batch = integer(&c, op, a[9], "batch", 0, INT_LIMIT);
  int64_t h0 = integer(&c, op, a[10], "h0", 0, INT_LIMIT);
  int64_t h1 = integer(&c, op, a[11], "h1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (nHeads % nKv != 0) fail_range(&c, op, "nHeads must be a multiple of nKvHeads");
  if (h0 > h1 || h1 > nHeads) fail_range(&c, op, "need 0 <= h0 <= h1 <= nHeads");
  if (pos0 + batch > INT_LIMIT) fail_range(&c, op, "pos0 + batch too large");
  if (!c.ok || batch == 0 || h0 == h1) return NULL;
  uint64_t qDim = (uint64_t)nHeads * hd, kvDim = (uint64_t)nKv * hd;
  need(&c, op, "q", qLen, (uint64_t)batch * qDim);
  need(&c, op, "out", oLen, (uint64_t)batch * qDim);
  need(&c, op, "kCache", kLen, (uint64_t)(pos0 + batch) * kvDim);
  need(&c, op, "vCache", vLen, (uint64_t)(pos0 + batch) * kvDim);
  need(&c, op, "att", attLen, (uint64_t)(pos0 + batch));
  if (!c.ok) return NULL;
  k_dl_attention(k_dl_ops(p), out, q, kc, vc, att, (int)nHeads, (int)nKv, (int)hd, (int)pos0, (int)batch, (int)h0,
                 (int)h1);
  return NULL;
}

/* swigluDllama(out, gate, up, i0, i1); swigluQ80(out, outq, gate, up, i0, i1) */
static napi_value do_swiglu_dl(napi_env env, napi_callback_info info, int q80) {
  const char *op = q80 ? "swigluQ80" : "swigluDllama";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, q80 ? 6 : 5, a, &p, op)) return NULL;
  napi_value *r = a + (q80 ? 1 : 0);
  ctx_t c = {env, 1};
  size_t oLen, qLen = 0, gLen, uLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &oLen);
  uint8_t *outq = q80 ? typed(&c, op, a[1], napi_uint8_array, "outq", &qLen) : NULL;
  float *g = typed(&c, op, r[1], napi_float32_array, "gate", &gLen);
  float *u = typed(&c, op, r[2], napi_float32_array, "up", &uLen);
  int64_t i0, i1;
  if (!elems(&c, op, r[3], r[4], &i0, &i1)) return NULL;
  if (q80 && (i0 % QK != 0 || i1 % QK != 0)) fail_range(&c, op, "i0 and i1 must be multiples of 32");
  need(&c, op, "out", oLen, (uint64_t)i1);
  need(&c, op, "gate", gLen, (uint64_t)i1);
  need(&c, op, "up", uLen, (uint64_t)i1);
  if (q80) need(&c, op, "outq", qLen, (uint64_t)(i1 / QK) * Q80_BYTES);
  if (!c.ok) return NULL;
  k_dl_ops(p)->silu_mul(out + i0, g + i0, u + i0, (size_t)(i1 - i0));
  if (q80 && i1 > i0) p->quantize_q80(outq + (size_t)(i0 / QK) * Q80_BYTES, out + i0, (size_t)((i1 - i0) / QK));
  return NULL;
}
static napi_value js_swiglu_dl(napi_env env, napi_callback_info info) { return do_swiglu_dl(env, info, 0); }
static napi_value js_swiglu_q80(napi_env env, napi_callback_info info) { return do_swiglu_dl(env, info, 1); }

/* ropeDllama: the arguments of rope */
static napi_value js_rope_dl(napi_env env, napi_callback_info info) {
  const char *op = "ropeDllama";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 9, a, &p, op)) return NULL;
  (void)p;
  ctx_t c = {env, 1};
  size_t xLen, fLen;
  float *x = typed(&c, op, a[0], napi_float32_array, "x", &xLen);
  int64_t nHeads = integer(&c, op, a[1], "nHeads", 0, INT_LIMIT);
  int64_t headDim = integer(&c, op, a[2], "headDim", 2, 1 << 16);
  int64_t pos0 = integer(&c, op, a[3], "pos0", 0, 1 << 24);
  int64_t batch = integer(&c, op, a[4], "batch", 0, INT_LIMIT);
  float *freqs = typed(&c, op, a[5], napi_float32_array, "freqs", &fLen);
  bool halfSplit = false;
  if (c.ok && napi_get_value_bool(env, a[6], &halfSplit) != napi_ok) fail_type(&c, op, "halfSplit must be a boolean");
  int64_t h0 = integer(&c, op, a[7], "h0", 0, INT_LIMIT);
  int64_t h1 = integer(&c, op, a[8], "h1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (headDim % 2 != 0) fail_range(&c, op, "headDim must be even");
  if (h0 > h1 || h1 > nHeads) fail_range(&c, op, "need 0 <= h0 <= h1 <= nHeads");
  if (pos0 + batch > (1 << 24)) fail_range(&c, op, "positions must stay below 2^24 (exact in float32)");
  need(&c, op, "freqs", fLen, (uint64_t)headDim / 2);
  need(&c, op, "x", xLen, (uint64_t)batch * (uint64_t)nHeads * (uint64_t)headDim);
  if (!c.ok) return NULL;
  k_dl_rope(x, (int)nHeads, (int)headDim, (int)pos0, (int)batch, freqs, halfSplit, (int)h0, (int)h1);
  return NULL;
}

/* moeRouteDllama: the arguments of moeRoute */
static napi_value js_moe_route_dl(napi_env env, napi_callback_info info) {
  const char *op = "moeRouteDllama";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 7, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t eLen, wLen, lLen;
  int32_t *experts = typed(&c, op, a[0], napi_int32_array, "experts", &eLen);
  float *weights = typed(&c, op, a[1], napi_float32_array, "weights", &wLen);
  float *logits = typed(&c, op, a[2], napi_float32_array, "logits", &lLen);
  int64_t nE = integer(&c, op, a[3], "nExperts", 1, 1 << 20);
  int64_t k = integer(&c, op, a[4], "k", 1, 1 << 20);
  int64_t r0 = integer(&c, op, a[5], "r0", 0, INT_LIMIT);
  int64_t r1 = integer(&c, op, a[6], "r1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (k > nE) fail_range(&c, op, "need k <= nExperts");
  if (r0 > r1) fail_range(&c, op, "need r0 <= r1");
  need(&c, op, "logits", lLen, (uint64_t)r1 * (uint64_t)nE);
  need(&c, op, "experts", eLen, (uint64_t)r1 * (uint64_t)k);
  need(&c, op, "weights", wLen, (uint64_t)r1 * (uint64_t)k);
  if (!c.ok) return NULL;
  k_dl_moe_route(k_dl_ops(p), experts, weights, logits, (int)nE, (int)k, (int)r0, (int)r1);
  return NULL;
}

/* matmulF32Dllama(out, x, w, nIn, nOut, batch, r0, r1) */
static napi_value js_matmul_f32_dl(napi_env env, napi_callback_info info) {
  const char *op = "matmulF32Dllama";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 8, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t outLen, xLen, wLen;
  float *out = typed(&c, op, a[0], napi_float32_array, "out", &outLen);
  float *x = typed(&c, op, a[1], napi_float32_array, "x", &xLen);
  uint8_t *w = typed(&c, op, a[2], napi_uint8_array, "w", &wLen);
  int64_t nIn = integer(&c, op, a[3], "nIn", 1, INT_LIMIT);
  int64_t nOut = integer(&c, op, a[4], "nOut", 0, INT_LIMIT);
  int64_t batch = integer(&c, op, a[5], "batch", 0, INT_LIMIT);
  int64_t r0 = integer(&c, op, a[6], "r0", 0, INT_LIMIT);
  int64_t r1 = integer(&c, op, a[7], "r1", 0, INT_LIMIT);
  if (!c.ok) return NULL;
  if (r0 > r1 || r1 > nOut) fail_range(&c, op, "need 0 <= r0 <= r1 <= nOut");
  if (!c.ok || batch == 0 || r0 == r1) return NULL;
  need(&c, op, "x", xLen, (uint64_t)batch * (uint64_t)nIn);
  need(&c, op, "out", outLen, (uint64_t)(batch - 1) * (uint64_t)nOut + (uint64_t)r1);
  need(&c, op, "w", wLen, (uint64_t)r1 * (uint64_t)nIn * 4);
  if (!c.ok) return NULL;
  kscratch *s = scratch_of(env);
  k_dl_matmul_f32(k_dl_ops(p), out, x, w, (int)nIn, (int)nOut, (int)batch, (int)r0, (int)r1, s);
  check_scratch(env, s, op);
  return NULL;
}

/* residualQ80(x, o, i0, i1) */
static napi_value js_residual_q80(napi_env env, napi_callback_info info) {
  const char *op = "residualQ80";
  napi_value a[MAX_ARGS];
  const kpath *p;
  if (!get_args(env, info, 4, a, &p, op)) return NULL;
  ctx_t c = {env, 1};
  size_t xLen, oLen;
  float *x = typed(&c, op, a[0], napi_float32_array, "x", &xLen);
  float *o = typed(&c, op, a[1], napi_float32_array, "o", &oLen);
  int64_t i0, i1;
  if (!elems(&c, op, a[2], a[3], &i0, &i1)) return NULL;
  if (i0 % QK != 0 || i1 % QK != 0) fail_range(&c, op, "i0 and i1 must be multiples of 32");
  need(&c, op, "x", xLen, (uint64_t)i1);
  need(&c, op, "o", oLen, (uint64_t)i1);
  if (!c.ok) return NULL;
  k_dl_residual_q80(p, k_dl_ops(p), x + i0, o + i0, (size_t)((i1 - i0) / QK));
  return NULL;
}

/* mathf(kind, out, x, libm): test hook, expf (0), sinf (1) or cosf (2) of each x, from the C
 * library when libm is true, else from dllama.c's versions of glibc's algorithms. */
static napi_value js_mathf(napi_env env, napi_callback_info info) {
  const char *op = "mathf";
  size_t argc = 4;
  napi_value a[4];
  napi_get_cb_info(env, info, &argc, a, NULL, NULL);
  ctx_t c = {env, 1};
  if (argc < 4) {
    fail_type(&c, op, "expected 4 arguments");
    return NULL;
  }
  int kind = (int)integer(&c, op, a[0], "kind", 0, 2);
  size_t oLen, xLen;
  float *out = typed(&c, op, a[1], napi_float32_array, "out", &oLen);
  float *x = typed(&c, op, a[2], napi_float32_array, "x", &xLen);
  bool libm = false;
  if (c.ok && napi_get_value_bool(env, a[3], &libm) != napi_ok) fail_type(&c, op, "libm must be a boolean");
  need(&c, op, "out", oLen, xLen);
  if (!c.ok) return NULL;
  for (size_t i = 0; i < xLen; i++) {
    float v = x[i];
    if (kind == 0) out[i] = libm ? expf(v) : k_dl_expf(v);
    else if (kind == 1) out[i] = libm ? sinf(v) : k_dl_sinf(v);
    else out[i] = libm ? cosf(v) : k_dl_cosf(v);
  }
  return NULL;
}

/* ---- CPU detection and path tables ---- */

#define MAX_PATHS 6
static const kpath *available_paths(const kpath **list) {
  /* Best first. __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 state. */
  int n = 0;
#if defined(AIRLLM_X86)
  __builtin_cpu_init();
  int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  int avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  int vnni = avx512 && __builtin_cpu_supports("avx512vnni");
  /* AIRLLM_KERNELS_NO_AMX=1 hides the AMX path (A/B comparisons; AIRLLM_KERNELS=avx512vnni too) */
  const char *noAmx = getenv("AIRLLM_KERNELS_NO_AMX");
  int amx = vnni && !(noAmx != NULL && noAmx[0] != '\0' && strcmp(noAmx, "0") != 0) && k_amx_available();
  if (amx) list[n++] = kpath_avx512amx();
  if (vnni) list[n++] = kpath_avx512vnni();
  if (avx512) list[n++] = kpath_avx512();
  if (avx2) list[n++] = kpath_avx2();
#elif defined(AIRLLM_NEON)
  list[n++] = kpath_neon();
#endif
  list[n++] = kpath_scalar();
  list[n] = NULL;
  return list[0];
}

typedef struct {
  const char *name;
  napi_callback fn;
} opdef;

static const opdef OPS[] = {
    {"matmul", js_matmul},       {"matmulQ80", js_matmulq},   {"quantizeQ80", js_quantize},
    {"dequantizeQ80", js_dequantize}, {"rmsnorm", js_rmsnorm}, {"rope", js_rope},
    {"attention", js_attention}, {"softmax", js_softmax},     {"swiglu", js_swiglu},
    {"addScaled", js_add_scaled}, {"argmax", js_argmax},      {"moeRoute", js_moe_route},
    {"vexp", js_vexp},
    {"rmsnormDllama", js_rmsnorm_dl}, {"softmaxDllama", js_softmax_dl}, {"attentionDllama", js_attention_dl},
    {"swigluDllama", js_swiglu_dl},   {"ropeDllama", js_rope_dl},       {"moeRouteDllama", js_moe_route_dl},
    {"matmulF32Dllama", js_matmul_f32_dl}, {"residualQ80", js_residual_q80}, {"rmsnormQ80", js_rmsnorm_q80},
    {"swigluQ80", js_swiglu_q80},
};

static napi_value str(napi_env env, const char *s) {
  napi_value v;
  napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  return v;
}

/* features string "a,b,c" -> JS array */
static napi_value features_array(napi_env env, const char *f) {
  napi_value arr;
  napi_create_array(env, &arr);
  uint32_t i = 0;
  const char *s = f;
  while (*s) {
    const char *e = strchr(s, ',');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    napi_value v;
    napi_create_string_utf8(env, s, len, &v);
    napi_set_element(env, arr, i++, v);
    s += len;
    if (*s == ',') s++;
  }
  return arr;
}

/* create(pathName): an object holding every op bound to that path, plus `path` and `features`. */
static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  char name[32] = {0};
  size_t len = 0;
  if (argc < 1 || napi_get_value_string_utf8(env, argv[0], name, sizeof name, &len) != napi_ok) {
    napi_throw_type_error(env, ARG_CODE, "create: path name must be a string");
    return NULL;
  }
  const kpath *list[MAX_PATHS + 1];
  available_paths(list);
  const kpath *p = NULL;
  for (int i = 0; list[i]; i++)
    if (strcmp(list[i]->name, name) == 0) p = list[i];
  if (p == NULL) {
    char m[128];
    snprintf(m, sizeof m, "create: kernel path '%s' is not available on this CPU", name);
    napi_throw_error(env, "AIRLLM_KERNELS_PATH", m);
    return NULL;
  }
  napi_value obj;
  napi_create_object(env, &obj);
  for (size_t i = 0; i < sizeof OPS / sizeof OPS[0]; i++) {
    napi_value fn;
    napi_create_function(env, OPS[i].name, NAPI_AUTO_LENGTH, OPS[i].fn, (void *)p, &fn);
    napi_set_named_property(env, obj, OPS[i].name, fn);
  }
  napi_set_named_property(env, obj, "path", str(env, p->name));
  napi_set_named_property(env, obj, "features", features_array(env, p->features));
  return obj;
}

/* Memory read-bandwidth probe: sums a buffer with the widest loads available. */
#if defined(AIRLLM_X86)
uint64_t k_avx2_readsum(const uint8_t *p, size_t n, int streams);
#endif
static uint64_t readsum_scalar(const uint8_t *p, size_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    uint64_t w[4];
    memcpy(w, p + i, 32);
    a += w[0];
    b += w[1];
    c += w[2];
    d += w[3];
  }
  for (; i < n; i++) a += p[i];
  return a + b + c + d;
}

/* readSum(buffer, streams = 1): see k_avx2_readsum; the scalar fallback ignores streams. */
static napi_value js_readsum(napi_env env, napi_callback_info info) {
  const char *op = "readSum";
  size_t argc = 2;
  napi_value argv[2];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  ctx_t c = {env, 1};
  size_t len = 0;
  uint8_t *buf = argc >= 1 ? typed(&c, op, argv[0], napi_uint8_array, "buffer", &len) : NULL;
  if (argc < 1) fail_type(&c, op, "expected a Uint8Array");
  napi_valuetype t2 = napi_undefined;
  if (argc >= 2) napi_typeof(env, argv[1], &t2);
  int streams = t2 == napi_undefined ? 1 : (int)integer(&c, op, argv[1], "streams", 1, 16);
  if (!c.ok) return NULL;
  uint64_t s;
#if defined(AIRLLM_X86)
  if (__builtin_cpu_supports("avx2")) s = k_avx2_readsum(buf, len, streams);
  else
#endif
    s = readsum_scalar(buf, len);
  napi_value r;
  napi_create_double(env, (double)(s & ((UINT64_C(1) << 53) - 1)), &r);
  return r;
}

static void free_scratch(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  kscratch *s = (kscratch *)data;
  free(s->buf);
  free(s);
}

NAPI_MODULE_INIT() {
  kscratch *s = (kscratch *)calloc(1, sizeof(kscratch));
  if (s == NULL || napi_set_instance_data(env, s, free_scratch, NULL) != napi_ok) {
    free(s);
    napi_throw_error(env, NULL, "airllm kernels: cannot set instance data");
    return NULL;
  }
  const kpath *list[MAX_PATHS + 1];
  available_paths(list);
  napi_value avail;
  napi_create_array(env, &avail);
  for (uint32_t i = 0; list[i]; i++) napi_set_element(env, avail, i, str(env, list[i]->name));
  napi_set_named_property(env, exports, "available", avail);
  napi_value fn;
  napi_create_function(env, "create", NAPI_AUTO_LENGTH, js_create, NULL, &fn);
  napi_set_named_property(env, exports, "create", fn);
  napi_create_function(env, "readSum", NAPI_AUTO_LENGTH, js_readsum, NULL, &fn);
  napi_set_named_property(env, exports, "readSum", fn);
  napi_create_function(env, "mathf", NAPI_AUTO_LENGTH, js_mathf, NULL, &fn);
  napi_set_named_property(env, exports, "mathf", fn);
  return exports;
}
