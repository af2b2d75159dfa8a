/*
 * AVX-512 paths: "avx512" (F, BW, VL, DQ) and "avx512vnni" (the same plus vpdpbusd for the
 * Q40xQ80 / Q80xQ80 integer dots). Both are instantiated from avx512_tmpl.h with their own
 * target attribute, so one binary carries both and the CPU check picks one at load.
 */
#include "kernels.h"

#if defined(AIRLLM_X86)
#include <immintrin.h>

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define VNNI 0
#define FN(name) name##_avx512
#include "avx512_tmpl.h"
#undef TGT
#undef VNNI
#undef FN

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
#define VNNI 1
#define FN(name) name##_vnni
#include "avx512_tmpl.h"
#undef TGT
#undef VNNI
#undef FN

static const kpath AVX512 = {
    .name = "avx512",
    .features = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq",
    .matmul = {mm_f32_avx512, mm_f16_avx512, mm_q40_avx512, mm_q80_avx512},
    .matmulq = {NULL, NULL, mmq_q40_avx512, mmq_q80_avx512},
    K_AVX2_VECTOR_OPS,
    .kq = &k_kq_avx512,
};

static const kpath AVX512VNNI = {
    .name = "avx512vnni",
    .features = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni",
    .matmul = {mm_f32_vnni, mm_f16_vnni, mm_q40_vnni, mm_q80_vnni},
    .matmulq = {NULL, NULL, mmq_q40_vnni, mmq_q80_vnni},
    K_AVX2_VECTOR_OPS,
    .kq = &k_kq_avx512vnni,
};

/* avx512amx: avx512vnni with the batched Q80-input matmuls on AMX tiles (amx.c) from
 * K_AMX_MIN_BATCH_* rows, and (with AMX-BF16) the Q40/Q80 x F32 matmuls from K_AMX_MIN_BATCH_F32;
 * which kernel runs depends on the batch and the input values only, never on [r0, r1). */
static void mmq_q40_amx(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                        kscratch *s) {
  if (B >= K_AMX_MIN_BATCH_Q40) k_amx_mmq(FT_Q40, o, x, w, nIn, nOut, B, r0, r1, s);
  else mmq_q40_vnni(o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mmq_q80_amx(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                        kscratch *s) {
  if (B >= K_AMX_MIN_BATCH_Q80) k_amx_mmq(FT_Q80, o, x, w, nIn, nOut, B, r0, r1, s);
  else mmq_q80_vnni(o, x, w, nIn, nOut, B, r0, r1, s);
}

static void mm_q40_amx(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                       kscratch *s) {
  if (B >= K_AMX_MIN_BATCH_F32 && k_amx_mmf(FT_Q40, o, (const float *)x, w, nIn, nOut, B, r0, r1, s)) return;
  mm_q40_vnni(o, x, w, nIn, nOut, B, r0, r1, s);
}
static void mm_q80_amx(float *o, const void *x, const uint8_t *w, int nIn, int nOut, int B, int r0, int r1,
                       kscratch *s) {
  if (B >= K_AMX_MIN_BATCH_F32 && k_amx_mmf(FT_Q80, o, (const float *)x, w, nIn, nOut, B, r0, r1, s)) return;
  mm_q80_vnni(o, x, w, nIn, nOut, B, r0, r1, s);
}

static const kpath AVX512AMX = {
    .name = "avx512amx",
    .features = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,amx-tile,amx-int8",
    .matmul = {mm_f32_vnni, mm_f16_vnni, mm_q40_vnni, mm_q80_vnni},
    .matmulq = {NULL, NULL, mmq_q40_amx, mmq_q80_amx},
    K_AVX2_VECTOR_OPS,
    .kq = &k_kq_avx512vnni,
};

/* The same where the CPU has AMX-BF16: Q40 and Q80 weights with F32 input on bf16 tiles too. */
static const kpath AVX512AMX_BF16 = {
    .name = "avx512amx",
    .features = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,avx512bf16,amx-tile,amx-int8,"
                "amx-bf16",
    .matmul = {mm_f32_vnni, mm_f16_vnni, mm_q40_amx, mm_q80_amx},
    .matmulq = {NULL, NULL, mmq_q40_amx, mmq_q80_amx},
    K_AVX2_VECTOR_OPS,
    .kq = &k_kq_avx512vnni,
};

const kpath *kpath_avx512(void) { return &AVX512; }
const kpath *kpath_avx512amx(void) { return k_amx_bf16_available() ? &AVX512AMX_BF16 : &AVX512AMX; }
const kpath *kpath_avx512vnni(void) { return &AVX512VNNI; }

#endif
