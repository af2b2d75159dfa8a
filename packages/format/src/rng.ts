/**
 * Small deterministic PRNG for synthetic weights: Marsaglia's xorshift128 (fast, 32-bit ops
 * only), seeded through splitmix32 from (seed, stream) so every tensor gets an independent,
 * reproducible stream whatever order or chunk size it is generated in. Not for cryptography.
 */
export class Rng {
  #x: number;
  #y: number;
  #z: number;
  #w: number;

  constructor(seed: number, stream = 0) {
    let s = (Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(stream | 0, 0x85ebca77) ^ 0x2545f491) | 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) | 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) | 0;
    };
    this.#x = next();
    this.#y = next();
    this.#z = next();
    this.#w = next() | 1; // never the all-zero state
  }

  /** Uniform 32-bit unsigned integer. */
  nextU32(): number {
    const t = this.#x ^ (this.#x << 11);
    this.#x = this.#y;
    this.#y = this.#z;
    this.#z = this.#w;
    this.#w = this.#w ^ (this.#w >>> 19) ^ (t ^ (t >>> 8));
    return this.#w >>> 0;
  }

  /** Uniform in [0, 1). */
  nextFloat(): number {
    return this.nextU32() / 4294967296;
  }

  /** Fill with uniform 32-bit words (same sequence as repeated nextU32). */
  fillU32(out: Uint32Array): void {
    // State in locals: this loop produces gigabytes for the synthetic 7B model.
    let x = this.#x;
    let y = this.#y;
    let z = this.#z;
    let w = this.#w;
    for (let i = 0; i < out.length; i++) {
      const t = x ^ (x << 11);
      x = y;
      y = z;
      z = w;
      w = w ^ (w >>> 19) ^ (t ^ (t >>> 8));
      out[i] = w;
    }
    this.#x = x;
    this.#y = y;
    this.#z = z;
    this.#w = w;
  }

  /** Approximately normal (sum of four uniforms, variance-corrected), mean 0, std 1. */
  nextNormal(): number {
    const s = this.nextFloat() + this.nextFloat() + this.nextFloat() + this.nextFloat() - 2;
    return s * Math.sqrt(3); // each uniform has variance 1/12; four sum to 1/3
  }
}
