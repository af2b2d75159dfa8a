import { OptionError } from './errors.js';

export interface SamplingOptions {
  /** 0 (default) = greedy: the first maximal logit. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 or absent: all). */
  topK?: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability exceeds p (0 or ≥ 1: off). */
  topP?: number;
  /** Seed of the xorshift generator; runs with the same seed reproduce. Default: time-based. */
  seed?: number | bigint;
}

const MASK64 = (1n << 64n) - 1n;

/**
 * llama2.c's sampler: xorshift64* random numbers, temperature, top-p by sorting the tokens above
 * a cutoff, multinomial otherwise; plus top-k. `probs` scratch is owned per sampler, so
 * sampling allocates nothing per token beyond the index sort.
 */
export class Sampler {
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  #state: bigint;
  #probs: Float32Array;
  #index: Int32Array;

  constructor(
    readonly vocabSize: number,
    options: SamplingOptions = {},
  ) {
    this.temperature = options.temperature ?? 0;
    this.topK = options.topK ?? 0;
    this.topP = options.topP ?? 0;
    if (!(this.temperature >= 0) || !Number.isFinite(this.temperature)) throw new OptionError('temperature', `must be ≥ 0, got ${options.temperature}`);
    if (!Number.isInteger(this.topK) || this.topK < 0) throw new OptionError('topK', `must be a whole number ≥ 0, got ${options.topK}`);
    if (!(this.topP >= 0 && this.topP <= 1)) throw new OptionError('topP', `must be in [0, 1], got ${options.topP}`);
    const seed = BigInt(options.seed ?? Date.now()) & MASK64;
    // xorshift must not start at 0 (it would stay 0).
    this.#state = seed === 0n ? 0x9e3779b97f4a7c15n : seed;
    this.#probs = new Float32Array(vocabSize);
    this.#index = new Int32Array(vocabSize);
  }

  /** xorshift64*: state ^= state>>12; ^= state<<25; ^= state>>27; (state·0x2545F4914F6CDD1D)>>32. */
  nextU32(): number {
    let s = this.#state;
    s ^= s >> 12n;
    s ^= (s << 25n) & MASK64;
    s ^= s >> 27n;
    this.#state = s;
    return Number(((s * 0x2545f4914f6cdd1dn) & MASK64) >> 32n);
  }

  /** A float in [0, 1) with 24 random bits. */
  nextF32(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }

  /** Choose the next token from logits (only the first vocabSize entries are considered). */
  sample(logits: Float32Array): number {
    const n = this.vocabSize;
    if (this.temperature === 0) {
      let best = 0;
      for (let i = 1; i < n; i++) if (logits[i]! > logits[best]!) best = i;
      return best;
    }
    this.#fillProbs(logits);
    const coin = this.nextF32();
    return this.topP > 0 && this.topP < 1 ? this.#sampleTopP(coin) : this.#sampleMultinomial(coin);
  }

  /**
   * The distribution sample() draws from, as full-vocabulary probabilities in `out`:
   * temperature, top-k and the top-p nucleus applied (tokens outside it get 0). Greedy
   * (temperature 0) is one-hot at the first maximal logit. Speculative decoding's acceptance rule
   * works on these.
   */
  distribution(logits: Float32Array, out: Float32Array = new Float32Array(this.vocabSize)): Float32Array {
    const n = this.vocabSize;
    out.fill(0);
    if (this.temperature === 0) {
      let best = 0;
      for (let i = 1; i < n; i++) if (logits[i]! > logits[best]!) best = i;
      out[best] = 1;
      return out;
    }
    this.#fillProbs(logits);
    const p = this.#probs;
    if (!(this.topP > 0 && this.topP < 1)) {
      out.set(p.subarray(0, n));
      return out;
    }
    const { idx, last, cumulative } = this.#nucleus();
    for (let i = 0; i <= last; i++) out[idx[i]!] = p[idx[i]!]! / cumulative;
    return out;
  }

  /** Draw a token from probabilities over the vocabulary (summing to `total`, default 1) with this sampler's generator. */
  pick(probs: Float32Array, total = 1): number {
    const r = this.nextF32() * total;
    let cdf = 0;
    let last = 0;
    for (let i = 0; i < this.vocabSize; i++) {
      if (probs[i]! <= 0) continue;
      cdf += probs[i]!;
      last = i;
      if (r < cdf) return i;
    }
    return last;
  }

  /** Softmax of logits ÷ temperature, top-k applied, into #probs. */
  #fillProbs(logits: Float32Array): void {
    const n = this.vocabSize;
    const p = this.#probs;
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      p[i] = Math.fround(logits[i]! / this.temperature);
      if (p[i]! > max) max = p[i]!;
    }
    if (this.topK > 0 && this.topK < n) {
      // Mask everything below the k-th largest value (ties at the threshold are kept).
      const sorted = Float32Array.from(p.subarray(0, n)).sort();
      const threshold = sorted[n - this.topK]!;
      for (let i = 0; i < n; i++) if (p[i]! < threshold) p[i] = -Infinity;
    }
    let sum = 0;
    for (let i = 0; i < n; i++) {
      p[i] = Math.fround(Math.exp(p[i]! - max));
      sum += p[i]!;
    }
    for (let i = 0; i < n; i++) p[i] = Math.fround(p[i]! / sum);
  }

  #sampleMultinomial(coin: number): number {
    const p = this.#probs;
    let cdf = 0;
    for (let i = 0; i < this.vocabSize; i++) {
      cdf += p[i]!;
      if (coin < cdf) return i;
    }
    return this.vocabSize - 1;
  }

  /** The top-p nucleus of #probs: token ids by falling probability, the last one kept, and their total. */
  #nucleus(): { idx: Int32Array; last: number; cumulative: number } {
    const p = this.#probs;
    const n = this.vocabSize;
    // Tokens below this cutoff cannot be part of the nucleus (llama2.c's pre-filter).
    const cutoff = (1 - this.topP) / (n - 1);
    let m = 0;
    for (let i = 0; i < n; i++) if (p[i]! >= cutoff) this.#index[m++] = i;
    const idx = this.#index.subarray(0, m).sort((a, b) => p[b]! - p[a]! || a - b);
    let cumulative = 0;
    let last = m - 1;
    for (let i = 0; i < m; i++) {
      cumulative += p[idx[i]!]!;
      if (cumulative > this.topP) {
        last = i;
        break;
      }
    }
    return { idx, last, cumulative };
  }

  #sampleTopP(coin: number): number {
    const p = this.#probs;
    const { idx, last, cumulative } = this.#nucleus();
    const r = coin * cumulative;
    let cdf = 0;
    for (let i = 0; i <= last; i++) {
      cdf += p[idx[i]!]!;
      if (r < cdf) return idx[i]!;
    }
    return idx[last]!;
  }
}
