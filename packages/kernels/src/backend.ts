import type { FloatType } from '@airllm/format';

/**
 * Every numeric op of the forward pass. The TypeScript reference backend (`reference.ts`) is
 * the oracle; the native backend exports the same names and is tested against it.
 *
 * Conventions, shared by all ops:
 * - Output first: `op(out, inputs..., sizes..., range)`.
 * - Activations are row-major batches: row b of an activation with width n lives at
 *   `[b * n, (b + 1) * n)`. Weights are row-major `[nOut][nIn]` in their file dtype; Q40/Q80 rows
 *   are whole 32-element blocks.
 * - Ranges `[start, end)` select the part of the work a thread does (output rows of a matmul,
 *   heads of rope/attention, batch rows of row-wise ops), so several threads share one op
 *   without overlapping writes. See `splitRange`.
 * - Nothing allocates per call (scratch comes from the caller), and views may be on
 *   SharedArrayBuffers (weights mapped from disk, activations shared between workers).
 */
export interface KernelBackend {
  readonly name: 'reference' | 'native';
  /** CPU features the backend chose at load (e.g. ['avx2', 'fma', 'f16c', 'avx512f']). */
  readonly features: readonly string[];

  /**
   * out[b][r] = Σ_i W[r][i] · x[b][i] for output rows r ∈ [r0, r1) and b < batch, with F32
   * input activations and weights of any dtype (F32, F16, Q40, Q80).
   */
  matmul(
    wType: FloatType,
    out: Float32Array,
    x: Float32Array,
    w: Uint8Array,
    nIn: number,
    nOut: number,
    batch: number,
    r0: number,
    r1: number,
  ): void;

  /**
   * Same product with Q80-quantized input rows (`xq`: batch rows of nIn/32 blocks of 34 bytes)
   * and Q40 or Q80 weights, in dllama's exact arithmetic: per output, blocks in order,
   * acc = fma(float(exact integer dot of the block's 32 pairs), f16(d_w)·f16(d_x), acc) from
   * acc = 0. Every path and every batch size gives these bits.
   */
  matmulQ80(
    wType: FloatType,
    out: Float32Array,
    xq: Uint8Array,
    w: Uint8Array,
    nIn: number,
    nOut: number,
    batch: number,
    r0: number,
    r1: number,
  ): void;

  /** Quantize rows [r0, r1) of n floats (n a multiple of 32) to Q80 (round half to even). */
  quantizeQ80(out: Uint8Array, x: Float32Array, n: number, r0: number, r1: number): void;
  /** Decode rows [r0, r1) of Q80 blocks back to floats. */
  dequantizeQ80(out: Float32Array, xq: Uint8Array, n: number, r0: number, r1: number): void;

  /** out[r] = weight ⊙ (x[r] / sqrt(mean(x[r]²) + eps)) for rows r ∈ [r0, r1) of width n. */
  rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, n: number, eps: number, r0: number, r1: number): void;

  /**
   * Rotary embedding in place on `batch` rows of `nHeads · headDim` values; row b is at
   * position pos0 + b. Rotates heads [h0, h1). `freqs` (headDim/2 values) comes from
   * `ropeFrequencies`. `halfSplit` false: adjacent pairs (2j, 2j+1) (LLAMA); true: pairs
   * (j, j + headDim/2) (FALCON / NeoX).
   */
  rope(
    x: Float32Array,
    nHeads: number,
    headDim: number,
    pos0: number,
    batch: number,
    freqs: Float32Array,
    halfSplit: boolean,
    h0: number,
    h1: number,
  ): void;

  /**
   * Causal multi-head attention with grouped KV heads over a KV cache. For batch row b
   * (position p = pos0 + b) and query head h ∈ [h0, h1): kv head g = h / (nHeads / nKvHeads),
   * score_t = q·k_t / sqrt(headDim) for t ≤ p, softmax, out = Σ_t a_t v_t. `kCache` and
   * `vCache` hold rows of kvDim = nKvHeads · headDim, one per position; rows up to
   * pos0 + batch − 1 must already be written. `att` is scratch of at least pos0 + batch floats.
   */
  attention(
    out: Float32Array,
    q: Float32Array,
    kCache: Float32Array,
    vCache: Float32Array,
    att: Float32Array,
    nHeads: number,
    nKvHeads: number,
    headDim: number,
    pos0: number,
    batch: number,
    h0: number,
    h1: number,
  ): void;

  /** In-place softmax of rows [r0, r1) of width n. */
  softmax(x: Float32Array, n: number, r0: number, r1: number): void;

  /** out[i] = silu(gate[i]) · up[i] = gate/(1 + e^−gate) · up, for i ∈ [i0, i1). out may be gate. */
  swiglu(out: Float32Array, gate: Float32Array, up: Float32Array, i0: number, i1: number): void;

  /**
   * out[i] += x[i] · scale for i ∈ [i0, i1) (residual add with scale 1; MoE weighted sum). The
   * scale is rounded to float32 first; the product and the sum are each rounded to float32.
   */
  addScaled(out: Float32Array, x: Float32Array, scale: number, i0: number, i1: number): void;

  /** Index of the first maximum of x[0..n). */
  argmax(x: Float32Array, n: number): number;

  /**
   * MoE routing for rows [r0, r1): softmax over the row's nExperts router logits, take the k
   * largest probabilities (descending; on equal probability the lower expert index first), and
   * renormalise them to sum to 1. Writes k expert ids to `experts[r·k ..]` and k weights to
   * `weights[r·k ..]`. `logits` is overwritten with the probabilities.
   */
  moeRoute(
    experts: Int32Array,
    weights: Float32Array,
    logits: Float32Array,
    nExperts: number,
    k: number,
    r0: number,
    r1: number,
  ): void;

  // ---- dllama's numerics (`--activations q80`, see dllama.ts): variants and fused Q80 ops ----

  /** rmsnorm with the sum of squares in 8 FMA lanes (dllama's order). */
  rmsnormDllama(out: Float32Array, x: Float32Array, weight: Float32Array, n: number, eps: number, r0: number, r1: number): void;

  /** softmax with dllama's polynomial exp over full groups of 8, expf for the rest, 8-lane sum. */
  softmaxDllama(x: Float32Array, n: number, r0: number, r1: number): void;

  /** attention with 8-lane FMA scores, softmaxDllama, outputs accumulated by FMA. */
  attentionDllama(
    out: Float32Array,
    q: Float32Array,
    kCache: Float32Array,
    vCache: Float32Array,
    att: Float32Array,
    nHeads: number,
    nKvHeads: number,
    headDim: number,
    pos0: number,
    batch: number,
    h0: number,
    h1: number,
  ): void;

  /** out[i] = (gate/(1 + e^−gate)) · up with dllama's exp (groups of 8 from i0) and its division. */
  swigluDllama(out: Float32Array, gate: Float32Array, up: Float32Array, i0: number, i1: number): void;

  /** rope with glibc's cosf/sinf; the half-split (FALCON) rotation with FMAs, as dllama. */
  ropeDllama(
    x: Float32Array,
    nHeads: number,
    headDim: number,
    pos0: number,
    batch: number,
    freqs: Float32Array,
    halfSplit: boolean,
    h0: number,
    h1: number,
  ): void;

  /** moeRoute over softmaxDllama probabilities. */
  moeRouteDllama(
    experts: Int32Array,
    weights: Float32Array,
    logits: Float32Array,
    nExperts: number,
    k: number,
    r0: number,
    r1: number,
  ): void;

  /** matmul with F32 weights, each output summed in 8 FMA lanes (dllama's F32 matmul). */
  matmulF32Dllama(out: Float32Array, x: Float32Array, w: Uint8Array, nIn: number, nOut: number, batch: number, r0: number, r1: number): void;

  /**
   * x[i] = fma(q_i, f16(d), x[i]) for i ∈ [i0, i1) (multiples of 32), (d, q) being the Q80 block
   * of `o` that holds i: dllama's Q80 cast of a partial result merged into the residual, fused.
   */
  residualQ80(x: Float32Array, o: Float32Array, i0: number, i1: number): void;

  /** rmsnormDllama of rows [r0, r1) into `out`, and those rows as Q80 into `outq` (fused cast). */
  rmsnormQ80(out: Float32Array, outq: Uint8Array, x: Float32Array, weight: Float32Array, n: number, eps: number, r0: number, r1: number): void;

  /** swigluDllama on [i0, i1) (multiples of 32) into `out`, and those blocks as Q80 into `outq`. */
  swigluQ80(out: Float32Array, outq: Uint8Array, gate: Float32Array, up: Float32Array, i0: number, i1: number): void;
}

