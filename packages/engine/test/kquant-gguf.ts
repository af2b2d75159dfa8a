import { writeFileSync } from 'node:fs';
import { DTYPES, FloatType } from '@airllm/format';
import { GT, ggufBytes, Rng, type GgufKv, type GgufTensorSpec } from '@airllm/format/testing';

/** ggml type ids (ggml.h) of the tensors these files hold. */
const GGML = { F32: 0 } as const;
const GGML_OF: Readonly<Record<FloatType, number>> = {
  [FloatType.F32]: 0,
  [FloatType.F16]: 1,
  [FloatType.Q40]: 2,
  [FloatType.Q80]: 8,
  [FloatType.Q4_K]: 12,
  [FloatType.Q5_K]: 13,
  [FloatType.Q6_K]: 14,
  [FloatType.BF16]: 30,
};

export interface KQuantModelShape {
  readonly arch: 'llama' | 'qwen3' | 'qwen2';
  readonly dim: number;
  readonly ff: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
  readonly context: number;
}

/**
 * llama.cpp's Q4_K_M choice per tensor (llama_tensor_get_type): Q6_K for output.weight, and for
 * attn_v / ffn_down in the layers where it "uses more bits" (the first and last eighth, and
 * every third one between); Q4_K elsewhere.
 */
export function q4kmType(name: string, layer: number, nLayers: number): FloatType {
  if (name === 'output.weight') return FloatType.Q6_K;
  const moreBits = layer < nLayers / 8 || layer >= (7 * nLayers) / 8 || (layer - nLayers / 8) % 3 === 2;
  if ((name.endsWith('attn_v.weight') || name.endsWith('ffn_down.weight')) && moreBits) return FloatType.Q6_K;
  return FloatType.Q4_K;
}

/**
 * A random-weight GGUF of `shape` as a Q4_K_M file mixes its types, written with ggml's block
 * layouts (the format package's reference quantizers); qwen2 adds q/k/v biases (N(0, 0.5²)). Weights are Gaussian with standard
 * deviation 1/√(in-features) (embedding 1, classifier 2/√dim, norms 1 ± 0.1), so activations stay
 * O(1) through depth and the logits spread over a few units, as a trained model's do. The
 * tokenizer is a SentencePiece-style vocabulary (unk, bos, eos, 256 byte tokens, then pieces)
 * that llama.cpp loads; the test feeds token ids, never text.
 */
export function writeKQuantGguf(path: string, shape: KQuantModelShape, seed: number, typeOf: (name: string, layer: number, nLayers: number) => FloatType = q4kmType): { types: Record<string, number> } {
  const rng = new Rng(seed, 1);
  const gauss = (): number => {
    const u = Math.max(rng.nextU32() / 2 ** 32, 1e-12);
    const v = rng.nextU32() / 2 ** 32;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  const { arch, dim, ff, layers, heads, kvHeads, headDim, vocab, context } = shape;
  const qDim = heads * headDim;
  const kvDim = kvHeads * headDim;
  const tensors: GgufTensorSpec[] = [];
  const types: Record<string, number> = {};
  const matrix = (name: string, rows: number, cols: number, dtype: FloatType, std: number): void => {
    const f = new Float32Array(rows * cols);
    for (let i = 0; i < f.length; i++) f[i] = gauss() * std;
    const info = DTYPES[dtype];
    const data = new Uint8Array((f.length / info.blockSize) * info.bytesPerBlock);
    info.quantize(f, data);
    tensors.push({ name, type: GGML_OF[dtype], dims: [cols, rows], data });
    types[info.name] = (types[info.name] ?? 0) + 1;
  };
  const vector = (name: string, n: number, mean = 1, std = 0.1): void => {
    const f = new Float32Array(n);
    for (let i = 0; i < n; i++) f[i] = mean + std * gauss();
    tensors.push({ name, type: GGML.F32, dims: [n], data: new Uint8Array(f.buffer) });
  };
  matrix('token_embd.weight', vocab, dim, typeOf('token_embd.weight', -1, layers), 1);
  for (let l = 0; l < layers; l++) {
    const b = `blk.${l}.`;
    const t = (n: string): FloatType => typeOf(b + n, l, layers);
    vector(`${b}attn_norm.weight`, dim);
    matrix(`${b}attn_q.weight`, qDim, dim, t('attn_q.weight'), 1 / Math.sqrt(dim));
    matrix(`${b}attn_k.weight`, kvDim, dim, t('attn_k.weight'), 1 / Math.sqrt(dim));
    matrix(`${b}attn_v.weight`, kvDim, dim, t('attn_v.weight'), 1 / Math.sqrt(dim));
    if (arch === 'qwen2') {
      vector(`${b}attn_q.bias`, qDim, 0, 0.5);
      vector(`${b}attn_k.bias`, kvDim, 0, 0.5);
      vector(`${b}attn_v.bias`, kvDim, 0, 0.5);
    }
    if (arch === 'qwen3') {
      vector(`${b}attn_q_norm.weight`, headDim);
      vector(`${b}attn_k_norm.weight`, headDim);
    }
    matrix(`${b}attn_output.weight`, dim, qDim, t('attn_output.weight'), 1 / Math.sqrt(qDim));
    vector(`${b}ffn_norm.weight`, dim);
    matrix(`${b}ffn_gate.weight`, ff, dim, t('ffn_gate.weight'), 1 / Math.sqrt(dim));
    matrix(`${b}ffn_up.weight`, ff, dim, t('ffn_up.weight'), 1 / Math.sqrt(dim));
    matrix(`${b}ffn_down.weight`, dim, ff, t('ffn_down.weight'), 1 / Math.sqrt(ff));
  }
  vector('output_norm.weight', dim);
  matrix('output.weight', vocab, dim, typeOf('output.weight', -1, layers), 2 / Math.sqrt(dim));

  const tokens = ['<unk>', '<s>', '</s>'];
  const tokenTypes = [2, 3, 3]; // UNKNOWN, CONTROL, CONTROL
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    tokenTypes.push(6); // BYTE
  }
  while (tokens.length < vocab) {
    tokens.push(`▁p${tokens.length}`);
    tokenTypes.push(1); // NORMAL
  }
  const a = arch;
  const kv: GgufKv[] = [
    ['general.architecture', GT.STR, a],
    ['general.name', GT.STR, `random ${a} Q4_K_M-like`],
    ['general.file_type', GT.U32, 15],
    [`${a}.block_count`, GT.U32, layers],
    [`${a}.context_length`, GT.U32, context],
    [`${a}.embedding_length`, GT.U32, dim],
    [`${a}.feed_forward_length`, GT.U32, ff],
    [`${a}.attention.head_count`, GT.U32, heads],
    [`${a}.attention.head_count_kv`, GT.U32, kvHeads],
    [`${a}.attention.key_length`, GT.U32, headDim],
    [`${a}.attention.value_length`, GT.U32, headDim],
    [`${a}.rope.dimension_count`, GT.U32, headDim],
    [`${a}.rope.freq_base`, GT.F32, a === 'llama' ? 10000 : 1000000],
    [`${a}.attention.layer_norm_rms_epsilon`, GT.F32, a === 'llama' ? 1e-5 : 1e-6],
    ['tokenizer.ggml.model', GT.STR, 'llama'],
    ['tokenizer.ggml.tokens', GT.ARR, [GT.STR, tokens]],
    ['tokenizer.ggml.scores', GT.ARR, [GT.F32, tokens.map((_, i) => -i)]],
    ['tokenizer.ggml.token_type', GT.ARR, [GT.I32, tokenTypes]],
    ['tokenizer.ggml.unknown_token_id', GT.U32, 0],
    ['tokenizer.ggml.bos_token_id', GT.U32, 1],
    ['tokenizer.ggml.eos_token_id', GT.U32, 2],
  ];
  writeFileSync(path, ggufBytes(kv, tensors));
  return { types };
}
