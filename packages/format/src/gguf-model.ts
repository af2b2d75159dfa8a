import { closeSync } from 'node:fs';
import { DTYPES, FloatType, isModelFileFloatType } from './dtypes.js';
import { FileSizeMismatchError, FormatError, MissingTensorError, TensorMismatchError, UnsupportedModelError } from './errors.js';
import { HeaderKey, parseModelHeader, RopeType, writeModelHeader, type ModelHeader } from './header.js';
import { buildModelLayout, configFromHeader, layoutFromTensors, type ModelConfig, type TensorInfo, type WeightsLayout } from './layout.js';
import { GgmlType, ggmlTypeName, GGUF_MAGIC, readGgufHeaderSync, type GgufHeader } from './gguf.js';
import { ggufDimsOf, ggufSourceOf, GGML_IN_PLACE, IN_PLACE_ARCHS, inPlaceDtypeOf } from './gguf-arch.js';
import { ggufToHeader } from './import-gguf.js';
import { openForRead, readAt, readModelFile, type ModelFileInfo } from './model-file.js';

/** What a model file is, by its first four bytes. */
export type ModelFileFormat = 'm' | 'gguf';

/** A GGUF model opened in place: its tensors where the file has them, nothing converted. */
export interface GgufModelInfo {
  readonly format: 'gguf';
  readonly path: string;
  readonly actualSize: number;
  /**
   * The `.m` header this model would convert to (its hyper-parameters as the rest of airllm
   * reads them). Its weight type is attn_q's when a `.m` can hold it, else F32: every tensor's
   * own type is in the layout.
   */
  readonly header: ModelHeader;
  readonly layout: WeightsLayout;
  readonly gguf: GgufHeader;
}

/**
 * The layout of a GGUF model, read in place: the tensors a `.m` of the same model would have
 * (same names, kinds, shapes; plus qwen2's q/k/v biases), each at its GGUF offset with its GGUF
 * type. MoE experts are
 * slices of llama.cpp's merged [in, out, E] tensors; with no output.weight the classifier is
 * token_embd's bytes. Layers are grouped as the layout does for any format, with alignment
 * padding between a layer's tensors read along (maxGap = the file's alignment).
 */
export function ggufModelLayout(gguf: GgufHeader, fileSize: number, options: { path?: string; ropeFreqs?: Float32Array } = {}): { header: ModelHeader; layout: WeightsLayout } {
  const path = options.path;
  const q = gguf.tensorByName.get('blk.0.attn_q.weight');
  const qType = q !== undefined ? GGML_IN_PLACE[q.type as GgmlType] : undefined;
  const dtype = qType !== undefined && isModelFileFloatType(qType) ? qType : FloatType.F32;
  const plan = ggufToHeader(gguf, { dtype, ropeFreqs: options.ropeFreqs, path, archs: IN_PLACE_ARCHS });
  // qwen2: llama's graph with half-split rope and q/k/v biases.
  const qwen2 = plan.archName === 'qwen2';
  if (qwen2) plan.values[HeaderKey.RopeType] = RopeType.FALCON;
  let header: ModelHeader;
  try {
    header = parseModelHeader(writeModelHeader(plan.values));
  } catch (e) {
    throw e instanceof FormatError ? e.withPath(path ?? '') : e;
  }
  const config: ModelConfig = Object.freeze({ ...configFromHeader(header), qkvBias: qwen2, tiedEmbeddings: plan.tiedEmbeddings });
  const wanted: TensorInfo[] = buildModelLayout(header).tensors.slice();
  if (qwen2) {
    for (let l = 0; l < header.nLayers; l++) {
      for (const [kind, n] of [['bq', header.qDim], ['bk', header.kvDim], ['bv', header.kvDim]] as const) {
        wanted.push({ name: `layers.${l}.${kind}`, kind, layer: l, expert: -1, dtype: FloatType.F32, shape: [n], offset: 0, byteLength: 4 * n });
      }
    }
  }
  const tensors: TensorInfo[] = [];
  let end = gguf.dataOffset;
  for (const t of wanted) {
    let src = ggufSourceOf(t);
    if (t.kind === 'wcls' && plan.tiedEmbeddings) src = { name: 'token_embd.weight', slice: -1 };
    const g = gguf.tensorByName.get(src.name);
    const want = ggufDimsOf(t);
    if (src.slice >= 0) want.push(header.nExperts);
    if (g === undefined) throw new MissingTensorError('tensor not found in the GGUF file', { path, field: src.name, expected: `[${want.join(', ')}]` });
    if (g.dims.length !== want.length || g.dims.some((d, i) => d !== want[i])) {
      throw new TensorMismatchError('tensor shape does not match the metadata', { path, field: g.name, offset: g.infoOffset, expected: `[${want.join(', ')}]`, actual: `[${g.dims.join(', ')}]` });
    }
    const type = inPlaceDtypeOf(g.type, g.name, path);
    if (t.shape.length === 1 && type !== FloatType.F32) {
      throw new UnsupportedModelError('norm vectors must be F32 to run in place', { path, field: g.name, offset: g.infoOffset, expected: 'F32', actual: ggmlTypeName(g.type) });
    }
    const info = DTYPES[type];
    const cols = want[0]!;
    if (cols % info.blockSize !== 0) {
      throw new TensorMismatchError(`rows are not whole ${ggmlTypeName(g.type)} blocks`, { path, field: g.name, offset: g.infoOffset, expected: `a multiple of ${info.blockSize}`, actual: cols });
    }
    const rows = t.shape.length === 1 ? 1 : t.shape[0]!;
    const byteLength = rows * (cols / info.blockSize) * info.bytesPerBlock;
    const offset = g.offset + Math.max(0, src.slice) * byteLength;
    if (offset + byteLength > fileSize) {
      throw new FileSizeMismatchError('tensor runs past the end of the file (truncated?)', { path, field: g.name, offset, expected: `≥ ${offset + byteLength} bytes`, actual: fileSize });
    }
    end = Math.max(end, offset + byteLength);
    tensors.push(Object.freeze({ ...t, dtype: type, offset, byteLength }));
  }
  const layout = layoutFromTensors(config, tensors, { dataOffset: gguf.dataOffset, fileSize: end, maxGap: gguf.alignment });
  return { header, layout };
}

/** Whether `bytes` (a file's first bytes) start with the GGUF magic. */
export function isGgufMagic(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === GGUF_MAGIC;
}

/** Read a GGUF model's header and build its in-place layout (see ggufModelLayout). */
export function readGgufModel(path: string): GgufModelInfo {
  const { fd, size } = openForRead(path);
  try {
    const gguf = readGgufHeaderSync((position, length) => readAt(fd, position, length), path, size);
    let ropeFreqs: Float32Array | undefined;
    const rf = gguf.tensorByName.get('rope_freqs.weight');
    if (rf !== undefined) {
      if (rf.type !== GgmlType.F32 || rf.dims.length !== 1 || rf.dims[0]! > 1 << 16 || rf.offset + rf.dims[0]! * 4 > size) {
        throw new UnsupportedModelError('rope_freqs.weight must be a 1-D F32 tensor', { path, field: rf.name, offset: rf.infoOffset, actual: `${ggmlTypeName(rf.type)} [${rf.dims.join(', ')}]` });
      }
      const raw = readAt(fd, rf.offset, rf.dims[0]! * 4);
      ropeFreqs = new Float32Array(raw.slice().buffer);
    }
    try {
      const { header, layout } = ggufModelLayout(gguf, size, { path, ropeFreqs });
      return { format: 'gguf', path, actualSize: size, header, layout, gguf };
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(path) : e;
    }
  } finally {
    closeSync(fd);
  }
}

/** A model file of either format: `.m` (with its ModelLayout) or GGUF run in place. */
export type AnyModelInfo = (ModelFileInfo & { readonly format: 'm' }) | GgufModelInfo;

/** The format of a model file, by its magic (anything that is not GGUF is read as `.m`). */
export function modelFileFormat(path: string): ModelFileFormat {
  const { fd } = openForRead(path);
  try {
    return isGgufMagic(readAt(fd, 0, 4)) ? 'gguf' : 'm';
  } finally {
    closeSync(fd);
  }
}

/**
 * Read a model file's header and layout, whatever its format: a GGUF (detected by its magic)
 * through readGgufModel, anything else as `.m` through readModelFile.
 */
export function readAnyModelFile(path: string, options: { allowSizeMismatch?: boolean } = {}): AnyModelInfo {
  if (modelFileFormat(path) === 'gguf') return readGgufModel(path);
  return { format: 'm', ...readModelFile(path, options) };
}
