import { UnsupportedModelError } from './errors.js';
import { FloatType } from './dtypes.js';
import { ArchType } from './header.js';
import type { TensorInfo } from './layout.js';
import { GgmlType, ggmlTypeName } from './gguf.js';

/**
 * What `.m` and llama.cpp's GGUF share: architecture names, tensor names and the type mapping.
 *
 * RoPE and the q/k rows: dllama's LLAMA RoPE rotates adjacent pairs (2j, 2j+1) inside each
 * head, and so does llama.cpp's LLM_ARCH_LLAMA ("NORM" rope type). convert_hf_to_gguf.py
 * reorders HF q/k rows for llama with exactly the permutation dllama's convert-hf.py uses
 * (`reshape(n_head, 2, hd/2, in).swapaxes(1, 2)`: new row 2j ← j, 2j+1 ← j + hd/2), so a
 * GGUF llama q/k is already in `.m` LLAMA order and is copied unchanged in both directions.
 * Qwen3 uses half-split ("NEOX" in llama.cpp, FALCON in dllama) and is permuted by neither.
 */
export const GGUF_ARCHS: Readonly<Record<string, ArchType>> = Object.freeze({
  llama: ArchType.LLAMA,
  qwen3: ArchType.QWEN3,
  qwen3moe: ArchType.QWEN3_MOE,
});

/**
 * The architectures a GGUF runs in place: GGUF_ARCHS plus qwen2 (Qwen2/2.5), which is llama's
 * graph with q/k/v biases and half-split ("NEOX") rope. A `.m` has no place for the biases, so
 * `convert` does not take qwen2.
 */
export const IN_PLACE_ARCHS: Readonly<Record<string, ArchType>> = Object.freeze({ ...GGUF_ARCHS, qwen2: ArchType.LLAMA });

export function ggufArchName(arch: ArchType): string {
  switch (arch) {
    case ArchType.LLAMA: return 'llama';
    case ArchType.QWEN3: return 'qwen3';
    case ArchType.QWEN3_MOE: return 'qwen3moe';
  }
}

/** ggml types the converters read and write; each is byte-identical to a `.m` float type (FORMAT.md §c.3). */
export const GGML_TO_FLOAT: Readonly<Partial<Record<GgmlType, FloatType>>> = Object.freeze({
  [GgmlType.F32]: FloatType.F32,
  [GgmlType.F16]: FloatType.F16,
  [GgmlType.Q4_0]: FloatType.Q40,
  [GgmlType.Q8_0]: FloatType.Q80,
});

export const FLOAT_TO_GGML: Readonly<Record<FloatType, GgmlType>> = Object.freeze({
  [FloatType.F32]: GgmlType.F32,
  [FloatType.F16]: GgmlType.F16,
  [FloatType.Q40]: GgmlType.Q4_0,
  [FloatType.Q80]: GgmlType.Q8_0,
  [FloatType.BF16]: GgmlType.BF16,
  [FloatType.Q4_K]: GgmlType.Q4_K,
  [FloatType.Q5_K]: GgmlType.Q5_K,
  [FloatType.Q6_K]: GgmlType.Q6_K,
});

export const SUPPORTED_GGML_TYPES = 'F32, F16, Q4_0, Q8_0';

/** llama.cpp `llama_ftype` for `general.file_type`. */
export const FLOAT_TO_FILE_TYPE: Readonly<Record<FloatType, number>> = Object.freeze({
  [FloatType.F32]: 0, // LLAMA_FTYPE_ALL_F32
  [FloatType.F16]: 1, // LLAMA_FTYPE_MOSTLY_F16
  [FloatType.Q40]: 2, // LLAMA_FTYPE_MOSTLY_Q4_0
  [FloatType.Q80]: 7, // LLAMA_FTYPE_MOSTLY_Q8_0
  [FloatType.BF16]: 32, // LLAMA_FTYPE_MOSTLY_BF16
  [FloatType.Q4_K]: 15, // LLAMA_FTYPE_MOSTLY_Q4_K_M
  [FloatType.Q5_K]: 17, // LLAMA_FTYPE_MOSTLY_Q5_K_M
  [FloatType.Q6_K]: 18, // LLAMA_FTYPE_MOSTLY_Q6_K
});

export function floatTypeOfGgml(type: number, field: string, path?: string): FloatType {
  const f = GGML_TO_FLOAT[type as GgmlType];
  if (f === undefined) {
    throw new UnsupportedModelError('unsupported tensor type', { path, field, expected: SUPPORTED_GGML_TYPES, actual: ggmlTypeName(type) });
  }
  return f;
}

/**
 * Where a `.m` tensor lives in a GGUF: the tensor name and, for MoE experts (llama.cpp merges
 * every expert of a layer into one 3-D tensor), which slice along the last dimension.
 */
export interface GgufSource {
  readonly name: string;
  /** Expert slice index, or -1 for a whole tensor. */
  readonly slice: number;
}

export function ggufSourceOf(t: TensorInfo): GgufSource {
  const b = `blk.${t.layer}.`;
  const whole = (name: string): GgufSource => ({ name, slice: -1 });
  const expert = t.expert >= 0;
  switch (t.kind) {
    case 'embedding': return whole('token_embd.weight');
    case 'q': return whole(`${b}attn_q.weight`);
    case 'k': return whole(`${b}attn_k.weight`);
    case 'v': return whole(`${b}attn_v.weight`);
    case 'bq': return whole(`${b}attn_q.bias`);
    case 'bk': return whole(`${b}attn_k.bias`);
    case 'bv': return whole(`${b}attn_v.bias`);
    case 'wo': return whole(`${b}attn_output.weight`);
    case 'w1': return expert ? { name: `${b}ffn_gate_exps.weight`, slice: t.expert } : whole(`${b}ffn_gate.weight`);
    case 'w2': return expert ? { name: `${b}ffn_down_exps.weight`, slice: t.expert } : whole(`${b}ffn_down.weight`);
    case 'w3': return expert ? { name: `${b}ffn_up_exps.weight`, slice: t.expert } : whole(`${b}ffn_up.weight`);
    case 'moe_gate': return whole(`${b}ffn_gate_inp.weight`);
    case 'q_norm': return whole(`${b}attn_q_norm.weight`);
    case 'k_norm': return whole(`${b}attn_k_norm.weight`);
    case 'att_norm': return whole(`${b}attn_norm.weight`);
    case 'ffn_norm': return whole(`${b}ffn_norm.weight`);
    case 'final_norm': return whole('output_norm.weight');
    case 'wcls': return whole('output.weight');
  }
}

/** GGUF dims (ne0 first) of a `.m` tensor: a matrix [out][in] is [in, out]. */
export function ggufDimsOf(t: TensorInfo): number[] {
  return t.shape.length === 1 ? [t.shape[0]!] : [t.shape[1]!, t.shape[0]!];
}

/**
 * Llama-3.1 RoPE frequency factors as convert_hf_to_gguf.py computes them for `rope_freqs.weight`
 * (llama.cpp divides each frequency by its factor): 1 for short wavelengths, `factor` for long
 * ones, a smooth blend between. Frequencies as torch makes them (float32 powers).
 */
export function llama3RopeFactors(headDim: number, theta: number, factor: number, low: number, high: number, origCtx: number): Float32Array {
  const out = new Float32Array(headDim / 2);
  const lowWavelen = origCtx / low;
  const highWavelen = origCtx / high;
  for (let j = 0; j < headDim / 2; j++) {
    const freq = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * j) / headDim))));
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[j] = 1;
    else if (wavelen > lowWavelen) out[j] = factor;
    else {
      const smooth = (origCtx / wavelen - low) / (high - low);
      out[j] = 1 / ((1 - smooth) / factor + smooth);
    }
  }
  return out;
}

/** The ggml tensor types a GGUF can hold to run in place, and the dtype each one is. */
export const GGML_IN_PLACE: Readonly<Partial<Record<GgmlType, FloatType>>> = Object.freeze({
  [GgmlType.F32]: FloatType.F32,
  [GgmlType.F16]: FloatType.F16,
  [GgmlType.BF16]: FloatType.BF16,
  [GgmlType.Q4_0]: FloatType.Q40,
  [GgmlType.Q8_0]: FloatType.Q80,
  [GgmlType.Q4_K]: FloatType.Q4_K,
  [GgmlType.Q5_K]: FloatType.Q5_K,
  [GgmlType.Q6_K]: FloatType.Q6_K,
});

/** The names of GGML_IN_PLACE's types, for messages. */
export const IN_PLACE_GGML_TYPES = 'F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K';

/** The GGUF ggml type → dtype, or a typed error naming the tensor and listing what is supported. */
export function inPlaceDtypeOf(type: number, field: string, path?: string): FloatType {
  const f = GGML_IN_PLACE[type as GgmlType];
  if (f === undefined) {
    throw new UnsupportedModelError(`tensor type ${ggmlTypeName(type)} cannot run in place; re-quantize the GGUF to one of ${IN_PLACE_GGML_TYPES} (llama.cpp's llama-quantize), or convert it with \`airllm convert gguf\``, {
      path,
      field,
      expected: IN_PLACE_GGML_TYPES,
      actual: ggmlTypeName(type),
    });
  }
  return f;
}
