const fround = Math.fround;

/** FORMAT.md §c.2 written out independently: float32 d = amax/127, id = 1/d, q = round half to
 * even of x·id, d stored as f16 (round to nearest even) computed here by arithmetic. */
export function recipeQ80(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 34);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]!));
    const d = fround(amax / 127);
    const id = d === 0 ? 0 : fround(1 / d);
    const h = f16Bits(d);
    out[b * 34] = h & 0xff;
    out[b * 34 + 1] = h >> 8;
    for (let i = 0; i < 32; i++) {
      const v = fround(x[b * 32 + i]! * id);
      const f = Math.floor(v);
      const diff = v - f;
      const q = diff > 0.5 ? f + 1 : diff < 0.5 ? f : f % 2 === 0 ? f : f + 1;
      out[b * 34 + 2 + i] = q & 0xff;
    }
  }
  return out;
}

function roundEven(v: number): number {
  const f = Math.floor(v);
  const diff = v - f;
  return diff > 0.5 ? f + 1 : diff < 0.5 ? f : f % 2 === 0 ? f : f + 1;
}

/** Non-negative finite d to binary16 bits, round to nearest even. */
function f16Bits(d: number): number {
  if (d === 0) return 0;
  let e = Math.floor(Math.log2(d));
  if (2 ** e > d) e--;
  if (2 ** (e + 1) <= d) e++;
  if (e < -14) return roundEven(d / 2 ** -24); // subnormal (1024 rounds up into the first normal)
  let m = roundEven((d / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  return e > 15 ? 0x7c00 : ((e + 15) << 10) | m;
}

