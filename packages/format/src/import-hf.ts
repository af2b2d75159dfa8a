import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FloatType } from './dtypes.js';
import { fileError, FormatError, InvalidValueError, MissingTensorError, TensorMismatchError, UnsupportedModelError } from './errors.js';
import { exists, readSmallFile, writeFileAtomic } from './fs-util.js';
import { ArchType, HeaderKey, HiddenAct, RopeType, type HeaderValues } from './header.js';
import { encodeHfSidecar, hfSidecarConfig, hfSidecarPath, type HfTokenizerSidecar } from './hf-sidecar.js';
import { convertHfTokenizer, type HfTokenizerStyle } from './hf-tokenizer.js';
import type { ModelLayout, TensorInfo } from './layout.js';
import { ModelFileWriter, type ProgressCallback } from './model-writer.js';
import { SafetensorsFile, type SafetensorsTensor } from './safetensors.js';
import { writeTokenizer, type TokenizerData } from './tokenizer-file.js';

/** HF `model_type` values the converter accepts, and the `.m` architecture each becomes. */
export const HF_MODEL_TYPES: Readonly<Record<string, ArchType>> = Object.freeze({
  llama: ArchType.LLAMA,
  mistral: ArchType.LLAMA,
  qwen3: ArchType.QWEN3,
  qwen3_moe: ArchType.QWEN3_MOE,
});

/** Key order of dllama's convert-hf.py (FORMAT.md §a.2); absent optional keys are skipped. */
export const CONVERT_HF_KEY_ORDER: readonly HeaderKey[] = [
  HeaderKey.Version,
  HeaderKey.ArchType,
  HeaderKey.HiddenAct,
  HeaderKey.Dim,
  HeaderKey.HiddenDim,
  HeaderKey.NLayers,
  HeaderKey.NHeads,
  HeaderKey.NKvHeads,
  HeaderKey.WeightsFloatType,
  HeaderKey.MaxSeqLen,
  HeaderKey.VocabSize,
  HeaderKey.NExperts,
  HeaderKey.NActiveExperts,
  HeaderKey.RopeTheta,
  HeaderKey.RopeScalingFactor,
  HeaderKey.RopeScalingLowFreqFactor,
  HeaderKey.RopeScalingHighFreqFactor,
  HeaderKey.RopeScalingOrigMaxSeqLen,
  HeaderKey.RopeType,
  HeaderKey.HeadDim,
  HeaderKey.NormEpsilon,
  HeaderKey.MoeHiddenDim,
];

/** Size bounds for the JSON files of a checkpoint (they are read whole). */
export const HF_JSON_LIMITS = Object.freeze({
  configBytes: 16 << 20,
  tokenizerBytes: 256 << 20,
  indexBytes: 64 << 20,
});

export interface HfModelPlan {
  readonly modelType: string;
  readonly arch: ArchType;
  readonly values: HeaderValues;
  /** The classifier is the embedding (no lm_head.weight, or tie_word_embeddings). */
  readonly tiedEmbeddings: boolean;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * config.json → header values, as convert-hf.py derives them: int() of rope_theta and the
 * rope-scaling numbers (only rope_type "llama3" exists in `.m`), norm_epsilon only 1e-5 or 1e-6,
 * head_dim when config.json has it, moe_hidden_dim for Qwen3-MoE. What dllama's graph cannot
 * compute (another activation, biases, partial dense layers in a MoE, unnormalized top-k) is
 * refused rather than converted into a model that silently computes something else.
 */
export function hfConfigToHeader(config: unknown, dtype: FloatType): HfModelPlan {
  if (!isObject(config)) throw new InvalidValueError('config.json must be a JSON object', { field: 'config.json' });
  const field = (k: string): string => `config.json ${k}`;
  const modelType = config.model_type;
  const arch = typeof modelType === 'string' ? HF_MODEL_TYPES[modelType] : undefined;
  if (arch === undefined) {
    throw new UnsupportedModelError('unsupported model_type', { field: field('model_type'), expected: Object.keys(HF_MODEL_TYPES).join(', '), actual: String(modelType) });
  }
  const int = (k: string, required: boolean, min = 1): number | undefined => {
    const v = config[k];
    if (v === undefined || v === null) {
      if (required) throw new InvalidValueError('required setting is missing', { field: field(k), expected: 'an integer' });
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > 0x7fffffff) {
      throw new InvalidValueError('setting must be an integer', { field: field(k), expected: `${min}..2^31-1`, actual: String(v) });
    }
    return v;
  };
  const num = (v: unknown, k: string): number => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new InvalidValueError('setting must be a number', { field: field(k), actual: String(v) });
    return v;
  };
  const act = config.hidden_act ?? config.hidden_activation ?? 'silu';
  if (act !== 'silu') {
    // dllama reads hidden_act but its graph always uses SiLU: a GELU model would be wrong.
    throw new UnsupportedModelError('unsupported activation (the graph computes SiLU only)', { field: field('hidden_act'), expected: 'silu', actual: String(act) });
  }
  for (const k of ['attention_bias', 'mlp_bias']) {
    if (config[k] === true) throw new UnsupportedModelError('bias terms are not part of the .m format', { field: field(k), expected: 'false', actual: 'true' });
  }
  const K = HeaderKey;
  const values: HeaderValues = {
    [K.Version]: 0,
    [K.ArchType]: arch,
    [K.HiddenAct]: HiddenAct.SILU,
    [K.Dim]: int('hidden_size', true),
    [K.HiddenDim]: int('intermediate_size', arch !== ArchType.QWEN3_MOE) ?? 0,
    [K.NLayers]: int('num_hidden_layers', true),
    [K.NHeads]: int('num_attention_heads', true),
    [K.NKvHeads]: int('num_key_value_heads', false) ?? int('num_attention_heads', true),
    [K.WeightsFloatType]: dtype,
    [K.MaxSeqLen]: int('max_position_embeddings', true),
    [K.VocabSize]: int('vocab_size', true),
    [K.NExperts]: 0,
    [K.NActiveExperts]: 0,
  };
  if (arch === ArchType.QWEN3_MOE) {
    values[K.NExperts] = int('num_experts', true);
    values[K.NActiveExperts] = int('num_experts_per_tok', true);
    values[K.MoeHiddenDim] = int('moe_intermediate_size', true);
    if (config.norm_topk_prob === false) {
      throw new UnsupportedModelError('the MoE graph always renormalizes the top-k weights', { field: field('norm_topk_prob'), expected: 'true', actual: 'false' });
    }
    const step = config.decoder_sparse_step;
    const dense = config.mlp_only_layers;
    if ((step !== undefined && step !== 1) || (Array.isArray(dense) && dense.length > 0)) {
      throw new UnsupportedModelError('every layer must be a MoE layer', { field: field(Array.isArray(dense) && dense.length > 0 ? 'mlp_only_layers' : 'decoder_sparse_step'), expected: 'decoder_sparse_step 1, mlp_only_layers []' });
    }
  } else {
    for (const k of ['num_local_experts', 'num_experts']) {
      if (typeof config[k] === 'number' && config[k] > 0) throw new UnsupportedModelError('experts are only supported for qwen3_moe', { field: field(k), expected: 0, actual: String(config[k]) });
    }
  }
  if (config.rope_theta !== undefined && config.rope_theta !== null) values[K.RopeTheta] = Math.trunc(num(config.rope_theta, 'rope_theta'));
  const rs = config.rope_scaling;
  if (rs !== undefined && rs !== null) {
    if (!isObject(rs)) throw new InvalidValueError('rope_scaling must be an object', { field: field('rope_scaling') });
    const type = rs.rope_type ?? rs.type;
    if (type !== 'llama3') {
      throw new UnsupportedModelError('unsupported RoPE scaling', { field: field('rope_scaling.rope_type'), expected: 'llama3', actual: String(type) });
    }
    values[K.RopeScalingFactor] = Math.trunc(num(rs.factor, 'rope_scaling.factor'));
    values[K.RopeScalingLowFreqFactor] = Math.trunc(num(rs.low_freq_factor, 'rope_scaling.low_freq_factor'));
    values[K.RopeScalingHighFreqFactor] = Math.trunc(num(rs.high_freq_factor, 'rope_scaling.high_freq_factor'));
    values[K.RopeScalingOrigMaxSeqLen] = Math.trunc(num(rs.original_max_position_embeddings, 'rope_scaling.original_max_position_embeddings'));
    values[K.RopeType] = RopeType.LLAMA3_1;
  }
  const headDim = int('head_dim', false);
  if (headDim !== undefined) values[K.HeadDim] = headDim;
  const eps = config.rms_norm_eps;
  if (eps !== undefined && eps !== null) {
    if (eps === 1e-5) values[K.NormEpsilon] = 5;
    else if (eps === 1e-6) values[K.NormEpsilon] = 6;
    else throw new UnsupportedModelError('unsupported RMSNorm epsilon', { field: field('rms_norm_eps'), expected: '1e-5 or 1e-6', actual: String(eps) });
  }
  return { modelType: modelType as string, arch, values, tiedEmbeddings: config.tie_word_embeddings === true };
}

/** The HF tensor name(s) a `.m` tensor comes from, first match wins. */
export function hfTensorNames(t: TensorInfo): string[] {
  const p = `model.layers.${t.layer}.`;
  const e = t.expert >= 0 ? `${p}mlp.experts.${t.expert}.` : `${p}mlp.`;
  switch (t.kind) {
    case 'embedding': return ['model.embed_tokens.weight'];
    case 'q': return [`${p}self_attn.q_proj.weight`];
    case 'k': return [`${p}self_attn.k_proj.weight`];
    case 'v': return [`${p}self_attn.v_proj.weight`];
    case 'bq': return [`${p}self_attn.q_proj.bias`];
    case 'bk': return [`${p}self_attn.k_proj.bias`];
    case 'bv': return [`${p}self_attn.v_proj.bias`];
    case 'wo': return [`${p}self_attn.o_proj.weight`];
    case 'w1': return [`${e}gate_proj.weight`];
    case 'w2': return [`${e}down_proj.weight`];
    case 'w3': return [`${e}up_proj.weight`];
    case 'moe_gate': return [`${p}mlp.gate.weight`];
    case 'q_norm': return [`${p}self_attn.q_norm.weight`];
    case 'k_norm': return [`${p}self_attn.k_norm.weight`];
    case 'att_norm': return [`${p}input_layernorm.weight`];
    case 'ffn_norm': return [`${p}post_attention_layernorm.weight`];
    case 'final_norm': return ['model.norm.weight'];
    case 'wcls': return ['lm_head.weight', 'model.embed_tokens.weight'];
  }
}

/**
 * FORMAT.md §b.4: HF q/k rows are laid out for rotate-half RoPE; the `.m` LLAMA RoPE rotates
 * adjacent pairs. Inside each head of width hd: new row 2j ← old row j, new row 2j+1 ← old row
 * j + hd/2. `src` holds whole heads (rows × cols).
 */
export function permuteRowsForLlama(src: Float32Array, cols: number, headDim: number): Float32Array {
  const rows = src.length / cols;
  const out = new Float32Array(src.length);
  const half = headDim / 2;
  for (let h = 0; h < rows / headDim; h++) {
    const base = h * headDim;
    for (let j = 0; j < half; j++) {
      out.set(src.subarray((base + j) * cols, (base + j + 1) * cols), (base + 2 * j) * cols);
      out.set(src.subarray((base + half + j) * cols, (base + half + j + 1) * cols), (base + 2 * j + 1) * cols);
    }
  }
  return out;
}

/** Parse a bounded JSON file with typed errors. */
export async function readJsonFile(path: string, maxBytes: number): Promise<unknown> {
  const bytes = await readSmallFile(path, maxBytes);
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new InvalidValueError(`not valid UTF-8 JSON (${(e as Error).message})`, { path, field: 'json' });
  }
}

/** Bytes of float32 per conversion chunk (whole rows, or whole heads for permuted tensors). */
const CHUNK_BYTES = 16 << 20;

/** Safetensors shards of a checkpoint directory: from model.safetensors.index.json, else every *.safetensors file. */
export async function listSafetensorsShards(dir: string): Promise<string[]> {
  const indexPath = join(dir, 'model.safetensors.index.json');
  if (await exists(indexPath)) {
    const index = await readJsonFile(indexPath, HF_JSON_LIMITS.indexBytes);
    if (!isObject(index) || !isObject(index.weight_map)) {
      throw new InvalidValueError('index has no weight_map object', { path: indexPath, field: 'weight_map' });
    }
    const files = new Set<string>();
    for (const [name, f] of Object.entries(index.weight_map)) {
      // Shard names come from an untrusted file: plain names inside the directory only.
      if (typeof f !== 'string' || f.length === 0 || f.includes('/') || f.includes('\\') || f === '.' || f === '..') {
        throw new InvalidValueError('weight_map entries must be file names in the model directory', { path: indexPath, field: `weight_map.${name}`, actual: String(f) });
      }
      files.add(f);
    }
    return [...files].sort().map((f) => join(dir, f));
  }
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (e) {
    throw fileError(e, dir, 'list the model directory');
  }
  const files = names.filter((n) => n.endsWith('.safetensors') && !n.startsWith('.')).sort();
  if (files.length === 0) throw new MissingTensorError('no *.safetensors files in the model directory', { path: dir });
  return files.map((f) => join(dir, f));
}

export interface HfImportOptions {
  dtype: FloatType;
  overwrite?: boolean;
  onProgress?: ProgressCallback;
  fsync?: boolean;
  /** Float32 bytes converted per step (default 16 MiB); rounded to whole rows / whole heads. */
  chunkBytes?: number;
}

export interface HfImportResult {
  readonly plan: HfModelPlan;
  readonly layout: ModelLayout;
  readonly tokenizer?: ConvertedHfTokenizer & { readonly sidecarPath: string };
  /** HF tensors present in the files that the `.m` model does not use. */
  readonly unusedTensors: readonly string[];
}

/** A checkpoint's tokenizer: the `.t` data and the HF tokenizer sidecar that goes beside it. */
export interface ConvertedHfTokenizer {
  readonly style: HfTokenizerStyle;
  readonly data: TokenizerData;
  readonly sidecar: HfTokenizerSidecar;
}

/** Convert the HF tokenizer files of `dir` (tokenizer.json, tokenizer_config.json, config.json, chat_template.jinja). */
export async function convertHfTokenizerDir(dir: string): Promise<ConvertedHfTokenizer> {
  const tokPath = join(dir, 'tokenizer.json');
  if (!(await exists(tokPath))) {
    throw new UnsupportedModelError('no tokenizer.json (tokenizer.model alone is not supported)', { path: dir, field: 'tokenizer.json' });
  }
  const tokenizer = await readJsonFile(tokPath, HF_JSON_LIMITS.tokenizerBytes);
  const tcPath = join(dir, 'tokenizer_config.json');
  const tokenizerConfig = (await exists(tcPath)) ? await readJsonFile(tcPath, HF_JSON_LIMITS.configBytes) : undefined;
  const cfgPath = join(dir, 'config.json');
  const config = (await exists(cfgPath)) ? await readJsonFile(cfgPath, HF_JSON_LIMITS.configBytes) : undefined;
  const jinja = join(dir, 'chat_template.jinja');
  const chatTemplateFile = (await exists(jinja)) ? new TextDecoder().decode(await readSmallFile(jinja, HF_JSON_LIMITS.configBytes)) : undefined;
  try {
    const { style, data } = convertHfTokenizer({ tokenizer, tokenizerConfig, config, chatTemplateFile });
    return { style, data, sidecar: { tokenizer: tokenizer as Record<string, unknown>, config: hfSidecarConfig(tokenizerConfig, chatTemplateFile) } };
  } catch (e) {
    throw e instanceof FormatError ? e.withPath(tokPath) : e;
  }
}

/**
 * Convert a Hugging Face checkpoint directory (config.json + safetensors shards) to a `.m` file,
 * tensor by tensor in `.m` order: each tensor is read by its byte range in chunks of whole rows
 * (whole heads for the permuted q/k), converted to float32, permuted when the LLAMA arch needs
 * it, and encoded by the writer, so memory stays at about one chunk plus the write buffers.
 */
export async function importHfModel(dir: string, outPath: string, options: HfImportOptions): Promise<Omit<HfImportResult, 'tokenizer'>> {
  const cfgPath = join(dir, 'config.json');
  let plan: HfModelPlan;
  try {
    plan = hfConfigToHeader(await readJsonFile(cfgPath, HF_JSON_LIMITS.configBytes), options.dtype);
  } catch (e) {
    throw e instanceof FormatError ? e.withPath(cfgPath) : e;
  }
  const shards = await listSafetensorsShards(dir);
  const files: SafetensorsFile[] = [];
  try {
    const where = new Map<string, { file: SafetensorsFile; t: SafetensorsTensor }>();
    for (const path of shards) {
      const f = await SafetensorsFile.open(path);
      files.push(f);
      for (const t of f.header.tensors.values()) {
        if (where.has(t.name)) throw new InvalidValueError('tensor appears in two shards', { path, field: t.name, offset: t.offset });
        where.set(t.name, { file: f, t });
      }
    }
    const used = new Set<string>();
    const writer = await ModelFileWriter.open(outPath, plan.values, {
      keyOrder: CONVERT_HF_KEY_ORDER,
      overwrite: options.overwrite,
      onProgress: options.onProgress,
      fsync: options.fsync,
    });
    try {
      const h = writer.header;
      for (const t of writer.layout.tensors) {
        const names = t.kind === 'wcls' && plan.tiedEmbeddings ? ['model.embed_tokens.weight'] : hfTensorNames(t);
        const src = names.map((n) => where.get(n)).find((x) => x !== undefined);
        if (src === undefined) throw new MissingTensorError('tensor not found in the safetensors files', { path: dir, field: names[0], expected: `[${t.shape.join(', ')}]` });
        used.add(src.t.name);
        const shape = src.t.shape;
        if (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i])) {
          throw new TensorMismatchError('tensor shape does not match config.json', { path: src.file.path, field: src.t.name, offset: src.t.offset, expected: `[${t.shape.join(', ')}]`, actual: `[${shape.join(', ')}]` });
        }
        const rows = t.shape.length === 1 ? 1 : t.shape[0]!;
        const cols = t.shape.length === 1 ? t.shape[0]! : t.shape[1]!;
        const permute = h.archType === ArchType.LLAMA && (t.kind === 'q' || t.kind === 'k');
        const group = permute ? h.headDim : 1;
        const chunkFloats = (options.chunkBytes ?? CHUNK_BYTES) / 4;
        const step = Math.max(group, Math.floor(chunkFloats / cols / group) * group);
        for (let r = 0; r < rows; r += step) {
          const n = Math.min(step, rows - r);
          let data = await src.file.readRowsF32(src.t, r, n);
          if (permute) data = permuteRowsForLlama(data, cols, h.headDim);
          await writer.writeTensorChunk(data, t.name);
        }
      }
      const layout = await writer.close();
      const unusedTensors = [...where.keys()].filter((n) => !used.has(n) && !n.endsWith('rotary_emb.inv_freq'));
      return { plan, layout, unusedTensors };
    } catch (e) {
      await writer.abort();
      throw e;
    }
  } finally {
    for (const f of files) await f.close();
  }
}

/**
 * Convert a Hugging Face checkpoint directory to `.m` and (when `tokenizerOut` is given) `.t`,
 * with the HF tokenizer sidecar beside the `.t` (hfSidecarPath). The tokenizer is converted
 * first: it is small and its failure should not cost a long write.
 */
export async function importHf(paths: { dir: string; model: string; tokenizerOut?: string }, options: HfImportOptions): Promise<HfImportResult> {
  let tokenizer: ConvertedHfTokenizer | undefined;
  if (paths.tokenizerOut !== undefined) {
    // config.json first, so a directory that is not a checkpoint is reported as such.
    const cfgPath = join(paths.dir, 'config.json');
    try {
      hfConfigToHeader(await readJsonFile(cfgPath, HF_JSON_LIMITS.configBytes), options.dtype);
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(cfgPath) : e;
    }
    tokenizer = await convertHfTokenizerDir(paths.dir);
  }
  const result = await importHfModel(paths.dir, paths.model, options);
  if (tokenizer !== undefined && paths.tokenizerOut !== undefined) {
    const sidecarPath = hfSidecarPath(paths.tokenizerOut);
    await writeFileAtomic(sidecarPath, encodeHfSidecar(tokenizer.sidecar), { overwrite: options.overwrite });
    await writeFileAtomic(paths.tokenizerOut, writeTokenizer(tokenizer.data), { overwrite: options.overwrite });
    return { ...result, tokenizer: { ...tokenizer, sidecarPath } };
  }
  return result;
}
