import { DTYPES, FloatType, floatTypeName } from './dtypes.js';
import { FormatError, InvalidValueError, MissingTensorError, TensorMismatchError, UnsupportedModelError } from './errors.js';
import { writeFileAtomic } from './fs-util.js';
import { ArchType, HeaderKey, HiddenAct, RopeType, type HeaderValues } from './header.js';
import { CONVERT_HF_KEY_ORDER } from './import-hf.js';
import type { ModelLayout } from './layout.js';
import { ModelFileWriter, type ProgressCallback } from './model-writer.js';
import { GgufFile, GgufMetadataReader, ggmlTypeName, GgmlType, type GgufHeader, type GgufTensorInfo } from './gguf.js';
import { GGUF_ARCHS, GGML_TO_FLOAT, ggufDimsOf, ggufSourceOf, inPlaceDtypeOf, llama3RopeFactors } from './gguf-arch.js';
import { ggufToHfTokenizer, ggufTokenizerToData } from './gguf-tokenizer.js';
import { encodeHfSidecar, hfSidecarPath, type HfTokenizerSidecar } from './hf-sidecar.js';
import { writeTokenizer, type TokenizerData } from './tokenizer-file.js';

export interface GgufModelPlan {
  readonly arch: ArchType;
  readonly archName: string;
  readonly values: HeaderValues;
  /** The weight type chosen for the `.m` (from the GGUF's attn_q unless given). */
  readonly dtype: FloatType;
  /** No output.weight: the classifier is a copy of token_embd. */
  readonly tiedEmbeddings: boolean;
}

/**
 * Recover the integer Llama-3.1 scaling parameters from a `rope_freqs.weight` tensor
 * (llama.cpp keeps only the per-frequency factors). dllama stores the parameters as integers,
 * so the search is over integer values; the match must reproduce every factor.
 */
export function fitLlama3RopeScaling(factors: Float32Array, headDim: number, theta: number): { factor: number; low: number; high: number; origCtx: number } | undefined {
  let max = 0;
  for (const f of factors) max = Math.max(max, f);
  const factor = Math.round(max);
  if (factor < 1 || Math.abs(max - factor) > 1e-3 * factor) return undefined;
  // Several parameter sets can give identical factors (when few frequencies fall in the blend
  // band); any of them computes the same RoPE. Llama 3.1/3.2's low 1, high 4 are tried first,
  // then other small integers; original contexts are powers of two (8192 in Llama 3.x).
  const pairs: [number, number][] = [[1, 4]];
  for (let low = 1; low <= 8; low++) for (let high = low + 1; high <= 32; high++) if (low !== 1 || high !== 4) pairs.push([low, high]);
  for (const [low, high] of pairs) {
    for (let origCtx = 16; origCtx <= 1 << 20; origCtx *= 2) {
      const f = llama3RopeFactors(headDim, theta, factor, low, high, origCtx);
      if (f.every((v, j) => Math.abs(v - factors[j]!) <= 1e-4 * Math.max(1, v))) return { factor, low, high, origCtx };
    }
  }
  return undefined;
}

const EPS_CODES: readonly [number, number][] = [
  [5, Math.fround(1e-5)],
  [6, Math.fround(1e-6)],
];

/**
 * The `.m` weight type for a GGUF whose attn_q has ggml type `type`: the same type when a `.m`
 * can hold it (nothing re-quantized), else the nearest Distributed-Llama type: Q40 for Q4_K and
 * Q5_K, Q80 for Q6_K and BF16.
 */
export function defaultModelDtype(type: number, field: string, path?: string): FloatType {
  const same = GGML_TO_FLOAT[type as GgmlType];
  if (same !== undefined) return same;
  const src = inPlaceDtypeOf(type, field, path);
  return src === FloatType.Q4_K || src === FloatType.Q5_K ? FloatType.Q40 : FloatType.Q80;
}

/** GGUF metadata → `.m` header values (same keys and order as the HF converter writes). */
export function ggufToHeader(
  header: GgufHeader,
  options: { dtype?: FloatType; ropeFreqs?: Float32Array; path?: string; archs?: Readonly<Record<string, ArchType>> } = {},
): GgufModelPlan {
  const archs = options.archs ?? GGUF_ARCHS;
  const md = new GgufMetadataReader(header, options.path);
  const archName = md.string('general.architecture');
  const arch = archName !== undefined ? archs[archName] : undefined;
  if (arch === undefined) {
    throw new UnsupportedModelError('unsupported GGUF architecture', { path: options.path, field: 'general.architecture', offset: md.entry('general.architecture')?.offset, expected: Object.keys(archs).join(', '), actual: String(archName) });
  }
  const a = archName!;
  const need = (k: string): number => {
    const v = md.int(`${a}.${k}`);
    if (v === undefined) throw new InvalidValueError('required metadata key is missing', { path: options.path, field: `${a}.${k}`, expected: 'an integer' });
    return v;
  };
  const K = HeaderKey;
  const embd = header.tensorByName.get('token_embd.weight');
  if (embd === undefined || embd.dims.length !== 2) {
    throw new MissingTensorError('token_embd.weight (2-D) is required', { path: options.path, field: 'token_embd.weight' });
  }
  const nHeads = need('attention.head_count');
  const dim = need('embedding_length');
  let dtype = options.dtype;
  if (dtype === undefined) {
    const q = header.tensorByName.get('blk.0.attn_q.weight');
    if (q === undefined) throw new MissingTensorError('tensor not found', { path: options.path, field: 'blk.0.attn_q.weight' });
    dtype = defaultModelDtype(q.type, q.name, options.path);
  }
  const values: HeaderValues = {
    [K.Version]: 0,
    [K.ArchType]: arch,
    [K.HiddenAct]: HiddenAct.SILU,
    [K.Dim]: dim,
    [K.HiddenDim]: md.int(`${a}.feed_forward_length`) ?? 0,
    [K.NLayers]: need('block_count'),
    [K.NHeads]: nHeads,
    [K.NKvHeads]: md.int(`${a}.attention.head_count_kv`) ?? nHeads,
    [K.WeightsFloatType]: dtype,
    [K.MaxSeqLen]: need('context_length'),
    [K.VocabSize]: embd.dims[1]!,
    [K.NExperts]: 0,
    [K.NActiveExperts]: 0,
  };
  if (arch === ArchType.QWEN3_MOE) {
    values[K.NExperts] = need('expert_count');
    values[K.NActiveExperts] = need('expert_used_count');
    values[K.MoeHiddenDim] = need('expert_feed_forward_length');
  }
  const theta = md.float(`${a}.rope.freq_base`);
  if (theta !== undefined) values[K.RopeTheta] = Math.trunc(theta);
  const scalingType = md.string(`${a}.rope.scaling.type`);
  if (scalingType !== undefined && scalingType !== 'none') {
    throw new UnsupportedModelError('unsupported RoPE scaling', { path: options.path, field: `${a}.rope.scaling.type`, expected: 'none (Llama-3.1 scaling comes as rope_freqs.weight)', actual: scalingType });
  }
  const keyLen = md.int(`${a}.attention.key_length`);
  const valLen = md.int(`${a}.attention.value_length`);
  if (keyLen !== undefined && valLen !== undefined && keyLen !== valLen) {
    throw new UnsupportedModelError('key and value head widths differ', { path: options.path, field: `${a}.attention.value_length`, expected: keyLen, actual: valLen });
  }
  const headDim = keyLen ?? valLen ?? dim / nHeads;
  if (keyLen !== undefined || valLen !== undefined) values[K.HeadDim] = headDim;
  const rot = md.int(`${a}.rope.dimension_count`);
  if (rot !== undefined && rot !== headDim) {
    throw new UnsupportedModelError('partial RoPE (rope.dimension_count < head width) is not supported', { path: options.path, field: `${a}.rope.dimension_count`, expected: headDim, actual: rot });
  }
  const eps = md.float(`${a}.attention.layer_norm_rms_epsilon`);
  if (eps !== undefined) {
    // Stored as f32: 1e-5 arrives as 9.99999974738e-6.
    const code = EPS_CODES.find(([, v]) => Math.fround(eps) === v)?.[0];
    if (code === undefined) throw new UnsupportedModelError('unsupported RMSNorm epsilon', { path: options.path, field: `${a}.attention.layer_norm_rms_epsilon`, expected: '1e-5 or 1e-6', actual: eps });
    values[K.NormEpsilon] = code;
  }
  if (options.ropeFreqs !== undefined && options.ropeFreqs.some((f) => f !== 1)) {
    if (arch !== ArchType.LLAMA) throw new UnsupportedModelError('rope_freqs.weight is only supported for llama', { path: options.path, field: 'rope_freqs.weight' });
    const fit = fitLlama3RopeScaling(options.ropeFreqs, headDim, theta ?? 10000);
    if (fit === undefined) {
      throw new UnsupportedModelError('rope_freqs.weight does not match Llama-3.1 scaling with integer parameters', { path: options.path, field: 'rope_freqs.weight' });
    }
    values[K.RopeScalingFactor] = fit.factor;
    values[K.RopeScalingLowFreqFactor] = fit.low;
    values[K.RopeScalingHighFreqFactor] = fit.high;
    values[K.RopeScalingOrigMaxSeqLen] = fit.origCtx;
    values[K.RopeType] = RopeType.LLAMA3_1;
  }
  return { arch, archName: a, values, dtype, tiedEmbeddings: !header.tensorByName.has('output.weight') };
}

export interface GgufImportOptions {
  /** Weight type of the `.m` (default: the GGUF's attn_q type, so nothing is re-quantized). */
  dtype?: FloatType;
  overwrite?: boolean;
  onProgress?: ProgressCallback;
  fsync?: boolean;
  /** Source bytes read per step (default 8 MiB); rounded to whole rows. */
  chunkBytes?: number;
}

export interface GgufImportResult {
  readonly plan: GgufModelPlan;
  readonly layout: ModelLayout;
  readonly tokenizer?: TokenizerData;
  /** Where the HF tokenizer sidecar was written (Hugging Face-exact prompts), when it could be rebuilt. */
  readonly sidecarPath?: string;
  /** Why no sidecar was written (e.g. a pre-tokenizer that is not known here); the `.t` still is. */
  readonly sidecarError?: string;
  /** Tensors whose GGUF type differs from their `.m` type (decoded and re-encoded, lossy when quantizing). */
  readonly reencoded: readonly string[];
  /** The error of re-encoding against the GGUF's decoded values, over every re-encoded tensor (absent when none was). */
  readonly requantization?: RequantizationError;
}

/** How far re-encoded weights are from the values the GGUF holds. */
export interface RequantizationError {
  /** Values re-encoded. */
  readonly values: number;
  /** √(mean (re-encoded − source)²) over all of them. */
  readonly rms: number;
  /** rms ÷ √(mean source²): the error relative to the weights' own size. */
  readonly relativeRms: number;
  /** The tensor with the largest relative RMS error, and that error. */
  readonly worst: { readonly tensor: string; readonly relativeRms: number };
}

const CHUNK_BYTES = 8 << 20;

/**
 * Convert a GGUF (llama, qwen3, qwen3moe; F32/F16/BF16/Q4_0/Q8_0/Q4_K/Q5_K/Q6_K tensors) to
 * `.m`. Tensors whose GGUF type is the `.m` type are copied byte for byte (Q4_0 = Q40, Q8_0 =
 * Q80); others are decoded to float32 and encoded with the `.m` type, and the error of that
 * re-encoding against the decoded source is measured (`requantization`). llama q/k need no reordering (see
 * gguf-arch.ts). Streams tensor by tensor in chunks of whole rows.
 */
export async function importGgufModel(path: string, outPath: string, options: GgufImportOptions = {}): Promise<Omit<GgufImportResult, 'tokenizer'>> {
  const f = await GgufFile.open(path);
  try {
    const h = f.header;
    let ropeFreqs: Float32Array | undefined;
    const rf = h.tensorByName.get('rope_freqs.weight');
    if (rf !== undefined) {
      if (rf.type !== GgmlType.F32 || rf.dims.length !== 1 || rf.dims[0]! > 1 << 16) {
        throw new UnsupportedModelError('rope_freqs.weight must be a 1-D F32 tensor', { path, field: rf.name, offset: rf.infoOffset, actual: `${ggmlTypeName(rf.type)} [${rf.dims.join(', ')}]` });
      }
      const raw = await f.read(rf.offset, rf.byteLength!, rf.name);
      ropeFreqs = new Float32Array(raw.buffer, raw.byteOffset, rf.elements);
    }
    const plan = ggufToHeader(h, { dtype: options.dtype, ropeFreqs, path });
    const writer = await ModelFileWriter.open(outPath, plan.values, { keyOrder: CONVERT_HF_KEY_ORDER, overwrite: options.overwrite, onProgress: options.onProgress, fsync: options.fsync });
    const reencoded: string[] = [];
    const err = { values: 0, sqErr: 0, sqSrc: 0, worst: { tensor: '', relativeRms: 0 } };
    try {
      for (const t of writer.layout.tensors) {
        let src = ggufSourceOf(t);
        if (t.kind === 'wcls' && plan.tiedEmbeddings) src = { name: 'token_embd.weight', slice: -1 };
        const g: GgufTensorInfo | undefined = h.tensorByName.get(src.name);
        if (g === undefined) throw new MissingTensorError('tensor not found in the GGUF file', { path, field: src.name, expected: `[${ggufDimsOf(t).join(', ')}]` });
        // Experts are slices of one [in, out, E] tensor.
        const want = ggufDimsOf(t);
        if (src.slice >= 0) want.push(writer.header.nExperts);
        if (g.dims.length !== want.length || g.dims.some((d, i) => d !== want[i])) {
          throw new TensorMismatchError('tensor shape does not match the metadata', { path, field: g.name, offset: g.infoOffset, expected: `[${want.join(', ')}]`, actual: `[${g.dims.join(', ')}]` });
        }
        const srcType = inPlaceDtypeOf(g.type, g.name, path);
        const info = DTYPES[srcType];
        const cols = want[0]!;
        const rows = t.shape.length === 1 ? 1 : t.shape[0]!;
        if (cols % info.blockSize !== 0) {
          throw new TensorMismatchError(`rows are not whole ${ggmlTypeName(g.type)} blocks`, { path, field: g.name, offset: g.infoOffset, expected: `a multiple of ${info.blockSize}`, actual: cols });
        }
        const rowBytes = (cols / info.blockSize) * info.bytesPerBlock;
        const base = g.offset + (src.slice >= 0 ? src.slice * rows * rowBytes : 0);
        const same = srcType === t.dtype;
        if (!same) reencoded.push(`${g.name} ${ggmlTypeName(g.type)}→${floatTypeName(t.dtype)}`);
        const step = Math.max(1, Math.floor((options.chunkBytes ?? CHUNK_BYTES) / rowBytes));
        const out = DTYPES[t.dtype];
        let tSqErr = 0;
        let tSqSrc = 0;
        for (let r = 0; r < rows; r += step) {
          const n = Math.min(step, rows - r);
          const raw = await f.read(base + r * rowBytes, n * rowBytes, g.name);
          if (same) await writer.writeTensorChunk(raw, t.name);
          else {
            // Decode, encode with the `.m` type, decode that again to measure what was lost.
            const floats = new Float32Array(n * cols);
            info.dequantize(raw, floats);
            const encoded = new Uint8Array((floats.length / out.blockSize) * out.bytesPerBlock);
            out.quantize(floats, encoded);
            const back = new Float32Array(floats.length);
            out.dequantize(encoded, back);
            for (let i = 0; i < floats.length; i++) {
              tSqErr += (back[i]! - floats[i]!) ** 2;
              tSqSrc += floats[i]! ** 2;
            }
            await writer.writeTensorChunk(encoded, t.name);
          }
        }
        // Decoding to F32 (embedding, norms) is exact: only lossy encodings count.
        if (!same && t.dtype !== FloatType.F32) {
          err.values += rows * cols;
          err.sqErr += tSqErr;
          err.sqSrc += tSqSrc;
          const rel = tSqSrc > 0 ? Math.sqrt(tSqErr / tSqSrc) : 0;
          if (rel >= err.worst.relativeRms) err.worst = { tensor: g.name, relativeRms: rel };
        }
      }
      const layout = await writer.close();
      const requantization: RequantizationError | undefined =
        err.values === 0 ? undefined : { values: err.values, rms: Math.sqrt(err.sqErr / err.values), relativeRms: err.sqSrc > 0 ? Math.sqrt(err.sqErr / err.sqSrc) : 0, worst: err.worst };
      return { plan, layout, reencoded, requantization };
    } catch (e) {
      await writer.abort();
      throw e instanceof FormatError ? e.withPath(path) : e;
    }
  } finally {
    await f.close();
  }
}

/**
 * GGUF → `.m` and (when `tokenizerOut` is given) `.t` from the GGUF's tokenizer metadata, with the
 * HF tokenizer sidecar rebuilt from the same metadata (ggufToHfTokenizer) beside the `.t`.
 */
export async function importGguf(paths: { gguf: string; model: string; tokenizerOut?: string }, options: GgufImportOptions = {}): Promise<GgufImportResult> {
  let tokenizer: TokenizerData | undefined;
  let sidecar: HfTokenizerSidecar | undefined;
  let sidecarError: string | undefined;
  if (paths.tokenizerOut !== undefined) {
    // Tokenizer first: cheap, and a failure should not cost a long model write.
    const f = await GgufFile.open(paths.gguf);
    try {
      tokenizer = ggufTokenizerToData(f.header, paths.gguf);
      try {
        sidecar = ggufToHfTokenizer(f.header, paths.gguf);
      } catch (e) {
        if (!(e instanceof FormatError)) throw e;
        sidecarError = e.message;
      }
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(paths.gguf) : e;
    } finally {
      await f.close();
    }
  }
  const result = await importGgufModel(paths.gguf, paths.model, options);
  if (tokenizer === undefined || paths.tokenizerOut === undefined) return result;
  let sidecarPath: string | undefined;
  if (sidecar !== undefined) {
    sidecarPath = hfSidecarPath(paths.tokenizerOut);
    await writeFileAtomic(sidecarPath, encodeHfSidecar(sidecar), { overwrite: options.overwrite });
  }
  await writeFileAtomic(paths.tokenizerOut, writeTokenizer(tokenizer), { overwrite: options.overwrite });
  return { ...result, tokenizer, sidecarPath, sidecarError };
}
