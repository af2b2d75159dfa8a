/**
 * Exact float arithmetic the reference backend needs to reproduce Distributed-Llama (dllama) bit
 * for bit: fused multiply-adds, and the single-precision `expf`, `sinf` and `cosf` of the C
 * library dllama is built against.
 *
 * JavaScript has neither an FMA nor float32 transcendental functions. `Math.fround(Math.exp(x))`
 * is the correctly rounded exp almost always, but glibc's `expf`, `sinf` and `cosf` are not
 * correctly rounded (up to 0.502 / 0.56 ulp): on about 1 % of rope angles `cosf` differs from
 * the correctly rounded cosine, and under Q80 casts one such last bit can move an activation
 * across a rounding boundary. So the algorithms glibc 2.28+ uses (as built for x86-64 CPUs with
 * FMA, the variant its ifunc picks there) are written out here in double arithmetic with exact
 * FMAs. The native backend carries the same algorithms in C (native/dllama.c); the tests hold
 * both to each other and, on glibc, to the C library itself (every float32 input was checked
 * when this was written).
 */

const fround = Math.fround;

const f64 = new Float64Array(1);
const u32 = new Uint32Array(f64.buffer); // little-endian: [low word, high word]
const f32 = new Float32Array(1);
const f32u = new Uint32Array(f32.buffer);

function fromBits(hi: number, lo: number): number {
  u32[0] = lo;
  u32[1] = hi;
  return f64[0]!;
}

/** The rounding error of a + b (Knuth's TwoSum): a + b = s + twoSumErr(a, b, s) exactly. */
function twoSumErr(a: number, b: number, s: number): number {
  const bb = s - a;
  return a - (s - bb) + (b - bb);
}

/**
 * a + b rounded to odd: the nearest double if exact, otherwise the neighbour whose last bit is 1.
 * Rounding a value first to odd at 53 bits and then to nearest at p <= 51 bits gives the value
 * rounded to nearest at p bits (Boldo and Melquiond), which is what makes the FMAs below exact.
 */
function addRoundToOdd(a: number, b: number): number {
  const s = a + b;
  const err = twoSumErr(a, b, s);
  if (err === 0 || !Number.isFinite(s)) return s;
  f64[0] = s;
  if ((u32[0]! & 1) === 1) return s;
  // Step one unit in the last place toward the error, which makes the last bit 1.
  if (err > 0 === s > 0) {
    u32[0] = u32[0]! + 1; // the low word is even, so this cannot carry
  } else if (u32[0] === 0) {
    u32[0] = 0xffffffff;
    u32[1] = u32[1]! - 1;
  } else {
    u32[0] = u32[0]! - 1;
  }
  return f64[0]!;
}

/** fmaf(a, b, c) for float32 operands: a·b is exact in double, then one correct rounding to float32. */
export function fmaf(a: number, b: number, c: number): number {
  const s = a * b + c;
  const r = fround(s);
  // Rounding a·b + c first to double and then to float32 can only go wrong when the double lands
  // exactly halfway between two floats; then 2s − r (exact) is the float on the other side.
  if (r === s || !Number.isFinite(s)) return r;
  const m = 2 * s - r;
  if (fround(m) !== m) return r;
  return fround(addRoundToOdd(a * b, c));
}

const SPLIT = 134217729; // 2^27 + 1 (Veltkamp)

/**
 * fma(a, b, c) for doubles, correctly rounded (Boldo and Melquiond's emulation: exact product,
 * TwoSum with c, the two low parts added rounded to odd). Valid away from overflow and
 * underflow, which is where the callers below use it.
 */
export function fma64(a: number, b: number, c: number): number {
  const ph = a * b;
  let t = SPLIT * a;
  const ah = t - (t - a);
  const al = a - ah;
  t = SPLIT * b;
  const bh = t - (t - b);
  const bl = b - bh;
  const pl = ah * bh - ph + ah * bl + al * bh + al * bl;
  const sh = c + ph;
  const sl = twoSumErr(c, ph, sh);
  return sh + addRoundToOdd(sl, pl);
}

// ---- expf ------------------------------------------------------------------------------------

/* 2^(i/32) as doubles, each minus i << 47 in its bit pattern (so adding k << 47 to the pattern of
 * entry k % 32 gives 2^(k/32)); the high and low 32-bit words. */
const EXP2_TAB_HI = new Uint32Array([
  0x3ff00000, 0x3fefd9b0, 0x3fefb558, 0x3fef9301, 0x3fef72b8, 0x3fef5487, 0x3fef387a, 0x3fef1e9d, 0x3fef06fe,
  0x3feef1a7, 0x3feedea6, 0x3feece08, 0x3feebfda, 0x3feeb42b, 0x3feeab07, 0x3feea47e, 0x3feea09e, 0x3fee9f75,
  0x3feea114, 0x3feea589, 0x3feeace5, 0x3feeb737, 0x3feec491, 0x3feed503, 0x3feee89f, 0x3feeff76, 0x3fef199b,
  0x3fef3720, 0x3fef5818, 0x3fef7c97, 0x3fefa4af, 0x3fefd076,
]);
const EXP2_TAB_LO = new Uint32Array([
  0x00000000, 0xd3158574, 0x6cf9890f, 0xd0125b51, 0x3c7d517b, 0x3168b9aa, 0x6e756238, 0xf51fdee1, 0x0a31b715,
  0x373aa9cb, 0x4c123422, 0x6061892d, 0xd5362a27, 0x569d4f82, 0xdd485429, 0xb03a5585, 0x667f3bcd, 0xe8ec5f74,
  0x73eb0187, 0x994cce13, 0x422aa0db, 0xb0cdc5e5, 0x82a3f090, 0xb23e255d, 0x995ad3ad, 0xf2fb5e47, 0xdd85529c,
  0xdcef9069, 0xdcfba487, 0x337b9b5f, 0xa2a490da, 0x5b6e4540,
]);
const INV_LN2_N = fromBits(0x40471547, 0x652b82fe); // 32 / ln 2
const SHIFT = 0x18 * 2 ** 48; // 1.5 * 2^52: adding it rounds to an integer
const EC0 = fromBits(0x3ebc6af8, 0x4b912394);
const EC1 = fromBits(0x3f2ebfce, 0x50fac4f3);
const EC2 = fromBits(0x3f962e42, 0xff0c52d6);
const EXP_OVERFLOW = fround(88.72283172607421875); // 0x1.62e42ep6
const EXP_UNDERFLOW = fround(-103.972076416015625); // -0x1.9fe368p6
const EXP_MAY_UNDERFLOW = fround(-103.27892303466796875); // -0x1.9d1d9ep6

/**
 * glibc's expf: x·32/ln2 = k + r with an integer k and |r| <= 1/2, 2^(k/32) from the table,
 * 2^(r/32) from a cubic, one rounding to float32 at the end.
 */
export function expf(x: number): number {
  f32[0] = x;
  const ux = f32u[0]!;
  const abstop = (ux >>> 20) & 0x7ff;
  if (abstop >= 0x42b) {
    if (ux === 0xff800000) return 0;
    if (abstop >= 0x7f8) return x + x;
    if (x > EXP_OVERFLOW) return Infinity;
    if (x < EXP_UNDERFLOW) return 0;
    if (x < EXP_MAY_UNDERFLOW) return 2 ** -149;
  }
  let kd = fma64(INV_LN2_N, x, SHIFT);
  const k = kd - SHIFT; // an integer, |k| < 2^13
  kd = k;
  const r = fma64(INV_LN2_N, x, -kd);
  const i = k & 31;
  const s = fromBits((EXP2_TAB_HI[i]! + (k << 15)) >>> 0, EXP2_TAB_LO[i]!);
  const z = fma64(EC0, r, EC1);
  const r2 = r * r;
  let y = fma64(EC2, r, 1);
  y = fma64(z, r2, y);
  return fround(y * s);
}

// ---- sinf, cosf ------------------------------------------------------------------------------

/* Two coefficient sets (the second has sin and cos of the quadrants 2 and 3 folded in):
 * quadrant signs of sin, 2/π·2^24, π/2, then the cosine (c0..c4) and sine (s1..s3) polynomials. */
const SC = [
  [
    1, -1, -1, 1, fromBits(0x41645f30, 0x6dc9c883), fromBits(0x3ff921fb, 0x54442d18), 1, fromBits(0xbfdfffff, 0xfd0c621c),
    fromBits(0xbfc55554, 0x5995a603), fromBits(0x3fa55553, 0xe1068f19), fromBits(0x3f811076, 0x05230bc4),
    fromBits(0xbf56c087, 0xe89a359d), fromBits(0xbf2994eb, 0x3774cf24), fromBits(0x3ef99343, 0x027bf8c3),
  ],
  [
    1, -1, -1, 1, fromBits(0x41645f30, 0x6dc9c883), fromBits(0x3ff921fb, 0x54442d18), -1, fromBits(0x3fdfffff, 0xfd0c621c),
    fromBits(0xbfc55554, 0x5995a603), fromBits(0xbfa55553, 0xe1068f19), fromBits(0x3f811076, 0x05230bc4),
    fromBits(0x3f56c087, 0xe89a359d), fromBits(0xbf2994eb, 0x3774cf24), fromBits(0xbef99343, 0x027bf8c3),
  ],
] as const;
const HPI_INV = 4;
const HPI = 5;
const C0 = 6;
const C1 = 7;
const S1 = 8;
const C2 = 9;
const S2 = 10;
const C3 = 11;
const S3 = 12;
const C4 = 13;

/* 4/π in 32-bit words, for the exact reduction of large arguments. */
const INV_PIO4 = [
  0x000000a2, 0x0000a2f9, 0x00a2f983, 0xa2f9836e, 0xf9836e4e, 0x836e4e44, 0x6e4e4415, 0x4e441529, 0x441529fc,
  0x1529fc27, 0x29fc2757, 0xfc2757d1, 0x2757d1f5, 0x57d1f534, 0xd1f534dd, 0xf534ddc0, 0x34ddc0db, 0xddc0db62,
  0xc0db6295, 0xdb629599, 0x6295993c, 0x95993c43, 0x993c4390, 0x3c439041,
].map(BigInt);
const PI63 = fromBits(0x3c1921fb, 0x54442d18); // π · 2^-62

/** Sine (n even) or cosine (n odd) polynomial of the reduced argument x (x2 = x·x). */
function sincosPoly(x: number, x2: number, p: readonly number[], n: number): number {
  if ((n & 1) === 0) {
    const x3 = x * x2;
    const s1 = fma64(x2, p[S3]!, p[S2]!);
    const x7 = x3 * x2;
    const s = fma64(x3, p[S1]!, x);
    return fround(fma64(s1, x7, s));
  }
  const x4 = x2 * x2;
  const c2 = fma64(x2, p[C4]!, p[C3]!);
  const c1 = fma64(x2, p[C1]!, p[C0]!);
  const x6 = x4 * x2;
  const c = fma64(x4, p[C2]!, c1);
  return fround(fma64(c2, x6, c));
}

const M64 = (1n << 64n) - 1n;

/** |x| >= 120: x mod π/2 from 4/π with 96 significant bits, in 64-bit integer arithmetic. */
function reduceLarge(xi: number): { x: number; n: number } {
  const a = (xi >>> 26) & 15;
  const shift = BigInt((xi >>> 23) & 7);
  const m = BigInt(((xi & 0xffffff) | 0x800000) >>> 0) << shift; // < 2^31
  const res0lo = (m * INV_PIO4[a]!) & 0xffffffffn;
  const res1 = m * INV_PIO4[a + 4]!;
  const res2 = m * INV_PIO4[a + 8]!;
  let res = ((res2 >> 32n) | (res0lo << 32n)) + res1;
  res &= M64;
  const n = ((res + (1n << 61n)) & M64) >> 62n;
  res = (res - (n << 62n)) & M64;
  const signed = res >= 1n << 63n ? res - (1n << 64n) : res;
  return { x: Number(signed) * PI63, n: Number(n) };
}

function sincos(y: number, cos: boolean): number {
  f32[0] = y;
  const xi = f32u[0]!;
  const abstop = (xi >>> 20) & 0x7ff;
  let p: readonly number[] = SC[0];
  if (abstop <= 0x3f3) {
    if (abstop <= 0x397) return cos ? 1 : y; // |y| < 2^-12
    return sincosPoly(y, y * y, p, cos ? 1 : 0);
  }
  if (abstop <= 0x42e) {
    // |y| < 120: one fused multiply-subtract with π/2 is accurate enough
    const r = y * p[HPI_INV]!;
    const n = ((Math.trunc(r) | 0) + 0x800000) >> 24;
    const x = fma64(-n, p[HPI]!, y);
    const s = p[n & 3]!;
    if (n & 2) p = SC[1];
    return sincosPoly(x * s, x * x, p, cos ? n ^ 1 : n);
  }
  if (abstop <= 0x7f7) {
    const sign = xi >>> 31;
    const { x, n } = reduceLarge(xi);
    const s = p[(n + sign) & 3]!;
    if ((n + sign) & 2) p = SC[1];
    return sincosPoly(x * s, x * x, p, cos ? n ^ 1 : n);
  }
  return NaN;
}

/** glibc's sinf. */
export function sinf(x: number): number {
  return sincos(fround(x), false);
}

/** glibc's cosf. */
export function cosf(x: number): number {
  return sincos(fround(x), true);
}
