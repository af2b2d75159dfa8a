import { dtypeInfo, FloatType } from '../dtypes.js';
import { ArchType, HeaderKey, RopeType, type HeaderValues } from '../header.js';
import type { ModelLayout, TensorInfo } from '../layout.js';
import { ModelFileWriter } from '../model-writer.js';
import { Rng } from '../rng.js';

const K = HeaderKey;

/**
 * Llama with Llama-3.1 RoPE scaling (rope_type 2, factor 8, low 1, high 4, original context
 * 32), GQA 4:2, rope_theta 500000. Rows are multiples of 32, so every dtype works.
 */
export const TINY_LLAMA31: Readonly<HeaderValues> = Object.freeze({
  [K.ArchType]: ArchType.LLAMA,
  [K.Dim]: 64,
  [K.HiddenDim]: 96,
  [K.NLayers]: 2,
  [K.NHeads]: 4,
  [K.NKvHeads]: 2,
  [K.VocabSize]: 128,
  [K.MaxSeqLen]: 64,
  [K.RopeTheta]: 500000,
  [K.RopeType]: RopeType.LLAMA3_1,
  [K.RopeScalingFactor]: 8,
  [K.RopeScalingLowFreqFactor]: 1,
  [K.RopeScalingHighFreqFactor]: 4,
  [K.RopeScalingOrigMaxSeqLen]: 32,
  [K.WeightsFloatType]: FloatType.F32,
});

/** Qwen3: q/k norms, head_dim 32 with 4 heads so qDim (128) ≠ dim (64), epsilon 1e-6. */
export const TINY_QWEN3: Readonly<HeaderValues> = Object.freeze({
  [K.Version]: 0,
  [K.ArchType]: ArchType.QWEN3,
  [K.HiddenAct]: 1,
  [K.Dim]: 64,
  [K.HiddenDim]: 96,
  [K.NLayers]: 2,
  [K.NHeads]: 4,
  [K.NKvHeads]: 2,
  [K.WeightsFloatType]: FloatType.F32,
  [K.MaxSeqLen]: 64,
  [K.VocabSize]: 128,
  [K.NExperts]: 0,
  [K.NActiveExperts]: 0,
  [K.RopeTheta]: 1000000,
  [K.HeadDim]: 32,
  [K.NormEpsilon]: 6,
});

/** Qwen3-MoE: 4 experts, top-2, expert width 32 (hidden_dim 96 is written but unused). */
export const TINY_QWEN3_MOE: Readonly<HeaderValues> = Object.freeze({
  [K.Version]: 0,
  [K.ArchType]: ArchType.QWEN3_MOE,
  [K.HiddenAct]: 1,
  [K.Dim]: 64,
  [K.HiddenDim]: 96,
  [K.NLayers]: 2,
  [K.NHeads]: 4,
  [K.NKvHeads]: 2,
  [K.WeightsFloatType]: FloatType.F32,
  [K.MaxSeqLen]: 64,
  [K.VocabSize]: 128,
  [K.NExperts]: 4,
  [K.NActiveExperts]: 2,
  [K.RopeTheta]: 1000000,
  [K.HeadDim]: 16,
  [K.NormEpsilon]: 6,
  [K.MoeHiddenDim]: 32,
});

/** Header values with a different weight type (and optionally other overrides). */
export function withDtype(values: Readonly<HeaderValues>, dtype: FloatType, overrides: HeaderValues = {}): HeaderValues {
  return { ...values, [K.WeightsFloatType]: dtype, ...overrides };
}

export interface TinyModel {
  readonly layout: ModelLayout;
  /**
   * Every tensor's values as the file decodes them (after quantization for Q40/Q80/F16), by
   * layout name (`embedding`, `layers.0.q`, `layers.1.experts.3.w2`, `wcls`, ...).
   */
  readonly weights: ReadonlyMap<string, Float32Array>;
}

/** Float values for one tensor: Xavier-like matrices, embedding N(0, 1), norms near 1. */
export function tinyTensorValues(t: TensorInfo, rng: Rng): Float32Array {
  const n = t.shape.length === 1 ? t.shape[0]! : t.shape[0]! * t.shape[1]!;
  const out = new Float32Array(n);
  switch (t.kind) {
    case 'att_norm':
    case 'ffn_norm':
    case 'q_norm':
    case 'k_norm':
    case 'final_norm':
      for (let i = 0; i < n; i++) out[i] = 1 + 0.1 * rng.nextNormal();
      break;
    case 'embedding':
      for (let i = 0; i < n; i++) out[i] = rng.nextNormal();
      break;
    default: {
      const std = 1 / Math.sqrt(t.shape[1]!);
      for (let i = 0; i < n; i++) out[i] = std * rng.nextNormal();
    }
  }
  return out;
}

/**
 * Write a small model with real float weights (pseudo-random, deterministic in `seed`) and
 * return the values the file decodes to, so engine tests can compute a reference forward pass.
 */
export async function writeTinyModel(
  path: string,
  values: Readonly<HeaderValues>,
  options: { seed?: number; overwrite?: boolean } = {},
): Promise<TinyModel> {
  const writer = await ModelFileWriter.open(path, values, { overwrite: options.overwrite, fsync: false });
  const weights = new Map<string, Float32Array>();
  try {
    for (let i = 0; i < writer.layout.tensors.length; i++) {
      const t = writer.layout.tensors[i]!;
      const x = tinyTensorValues(t, new Rng(options.seed ?? 0, i));
      const info = dtypeInfo(t.dtype);
      const bytes = new Uint8Array(t.byteLength);
      info.quantize(x, bytes);
      const decoded = new Float32Array(x.length);
      info.dequantize(bytes, decoded);
      weights.set(t.name, decoded);
      await writer.writeTensor(bytes, t.name);
    }
    return { layout: await writer.close(), weights };
  } catch (e) {
    await writer.abort();
    throw e;
  }
}
