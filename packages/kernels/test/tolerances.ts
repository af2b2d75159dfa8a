/**
 * Named tolerances, each with the reason it is what it is. `U` is the unit roundoff of float32.
 *
 * Sums: a sum of n float32 terms computed in any order is within n·U of the exact sum relative
 * to Σ|terms| (the recursive-summation bound; pairwise/SIMD-lane orders are inside it too), so
 * two float32 implementations that add in different orders differ by at most 2n·U·Σ|terms|, and
 * a float32 result differs from the float64 formula by at most (n + c)·U·Σ|terms| where c
 * counts the other roundings on the way. Every tolerance below is such a bound evaluated for the
 * case at hand, never a fudge factor; deterministic inputs make each test pass or fail the same
 * way every run.
 */
export const U = 2 ** -24;

/** Matmul / dot with F32 accumulation over n products, two different summation orders. */
export const F32_SUM_REL = (n: number): number => 2 * (n + 2) * U;

/** Float32 result vs the float64 formula for a sum of n rounded products. */
export const F64_SUM_REL = (n: number): number => (n + 2) * U;

/**
 * Vectorised exp (Cephes-style polynomial, see native/avx2.c): maximum relative error measured
 * over [-87, 88] is asserted by the exp test itself; this is the bound other ops rely on.
 */
export const EXP_REL = 4 * U;

/**
 * dllama's float32 exp polynomial (src/dllama.ts, used by its softmax and SiLU on full groups of
 * 8): maximum relative error measured over [-87, 88] at 2·10^7 points, 5.93e-5.
 */
export const DLLAMA_EXP_REL = 6e-5;

/** Softmax over n values: each exp (EXP_REL each side), the sum (n terms), one division. */
export const SOFTMAX_REL = (n: number): number => 2 * EXP_REL + 2 * (n + 3) * U;

/** silu(g)·u = g / (1 + e^-g) · u: one exp, an add, a division, two products. */
export const SWIGLU_REL = 2 * EXP_REL + 10 * U;

/** RMSNorm: the mean of squares (n terms) enters through a square root (halving its error). */
export const RMSNORM_REL = (n: number): number => (n + 8) * U;

/** Rope: cos/sin rounded once each, two products and a sum per output (absolute, per |v0|+|v1|). */
export const ROPE_REL = 4 * U;
