/*
 * Ops written once on top of a path's primitives (dot, axpy, softmax, ...): rmsnorm, rope,
 * attention, argmax and MoE routing. Their cost is dominated by those primitives, or is small
 * next to the matmuls (rope, routing), so one implementation serves every path.
 */
#include <math.h>
#include <stdlib.h>

#include "kernels.h"

void *kscratch_get(kscratch *s, size_t bytes) {
  if (bytes <= s->cap) return s->buf;
  size_t cap = s->cap > 0 ? s->cap : 4096;
  while (cap < bytes) cap *= 2;
  void *p = NULL;
  if (posix_memalign(&p, 64, cap) != 0) {
    s->failed = 1;
    return NULL;
  }
  free(s->buf);
  s->buf = p;
  s->cap = cap;
  return p;
}

void k_rmsnorm(const kpath *p, float *out, const float *x, const float *w, int n, float eps, int r0, int r1) {
  for (int r = r0; r < r1; r++) {
    const float *xr = x + (size_t)r * n;
    float ss = p->sumsq(xr, n);
    ss = ss / (float)n;
    ss = ss + eps;
    float inv = 1.0f / sqrtf(ss);
    p->rmsscale(out + (size_t)r * n, xr, w, inv, n);
  }
}

/*
 * cos/sin are evaluated in double and rounded once, as the reference's fround(Math.cos(v))
 * does; one evaluation per (position, pair) serves every head of the range.
 */
void k_rope(float *x, int nHeads, int headDim, int pos0, int batch, const float *freqs, int halfSplit, int h0,
            int h1) {
  int half = headDim / 2;
  size_t width = (size_t)nHeads * headDim;
  for (int b = 0; b < batch; b++) {
    float pos = (float)(pos0 + b);
    float *row = x + (size_t)b * width;
    for (int j = 0; j < half; j++) {
      float val = pos * freqs[j];
      float fcr = (float)cos((double)val);
      float fci = (float)sin((double)val);
      for (int h = h0; h < h1; h++) {
        float *hp = row + (size_t)h * headDim;
        int i0 = halfSplit ? j : 2 * j;
        int i1 = halfSplit ? j + half : 2 * j + 1;
        float v0 = hp[i0];
        float v1 = hp[i1];
        hp[i0] = v0 * fcr - v1 * fci;
        hp[i1] = v0 * fci + v1 * fcr;
      }
    }
  }
}

void k_attention(const kpath *p, float *out, const float *q, const float *kc, const float *vc, float *att, int nHeads,
                 int nKvHeads, int headDim, int pos0, int batch, int h0, int h1) {
  size_t kvDim = (size_t)nKvHeads * headDim;
  size_t qDim = (size_t)nHeads * headDim;
  int group = nHeads / nKvHeads;
  float scale = sqrtf((float)headDim);
  for (int b = 0; b < batch; b++) {
    int pos = pos0 + b;
    for (int h = h0; h < h1; h++) {
      const float *qh = q + (size_t)b * qDim + (size_t)h * headDim;
      size_t kvo = (size_t)(h / group) * headDim;
      for (int t = 0; t <= pos; t++) att[t] = p->dot(qh, kc + (size_t)t * kvDim + kvo, headDim) / scale;
      p->softmax(att, pos + 1);
      /* out may alias q: q's head h has been fully read above. */
      float *oh = out + (size_t)b * qDim + (size_t)h * headDim;
      memset(oh, 0, (size_t)headDim * sizeof(float));
      for (int t = 0; t <= pos; t++) p->axpy(oh, vc + (size_t)t * kvDim + kvo, att[t], (size_t)headDim);
    }
  }
}

int k_argmax(const float *x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

void k_moe_route(const kpath *p, int32_t *experts, float *weights, float *logits, int nExperts, int k, int r0,
                 int r1) {
  for (int r = r0; r < r1; r++) {
    float *lr = logits + (size_t)r * nExperts;
    int32_t *er = experts + (size_t)r * k;
    float *wr = weights + (size_t)r * k;
    p->softmax(lr, nExperts);
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

void k_prep_f32_lanes(const float *x, int nIn, int b0, int nrows, int NL, float *xT) {
  for (int lane = 0; lane < NL; lane++) {
    if (lane < nrows) {
      const float *xr = x + (size_t)(b0 + lane) * nIn;
      for (int i = 0; i < nIn; i++) xT[(size_t)i * NL + lane] = xr[i];
    } else {
      for (int i = 0; i < nIn; i++) xT[(size_t)i * NL + lane] = 0.0f;
    }
  }
}
