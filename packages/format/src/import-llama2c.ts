import { open, type FileHandle } from 'node:fs/promises';
import { checkedAdd, checkedMul, FloatType } from './dtypes.js';
import { BadMagicError, fileError, FileSizeMismatchError, FormatError, InvalidValueError, TruncatedError } from './errors.js';
import { readSmallFile, writeFileAtomic } from './fs-util.js';
import { ArchType, CONVERT_LLAMA_KEY_ORDER, HeaderKey, LIMITS, type HeaderValues } from './header.js';
import type { ModelLayout } from './layout.js';
import { ModelFileWriter, type ProgressCallback } from './model-writer.js';
import { parseTokenizer, TOKENIZER_LIMITS, writeTokenizer, type TokenizerData } from './tokenizer-file.js';

/** Magic of llama2.c's versioned exports ("ak42" as a little-endian u32). */
export const LLAMA2C_MAGIC = 0x616b3432;
/** Header bytes of the versioned exports (magic, version, 7 × i32, flags, zero padding). */
export const LLAMA2C_V1_HEADER_BYTES = 256;
/** Header bytes of the legacy (version 0) export: 7 × i32. */
export const LLAMA2C_V0_HEADER_BYTES = 28;

/**
 * The Llama-2 chat template that convert-tokenizer-llama2.py writes (815 bytes, taken from the
 * official fixture `dllama_tokenizer_stories260k.t`). dllama never runs it; it only looks for
 * the `[INST]` marker to pick its llama2 chat formatter.
 */
export const LLAMA2_CHAT_TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

/** A llama2.c checkpoint's header, validated against the file size. */
export interface Llama2cCheckpoint {
  /** 0 = legacy export (no magic), 1 = "ak42" float32, 2 = "ak42" int8 Q8_0 groups. */
  readonly version: 0 | 1 | 2;
  readonly dim: number;
  readonly hiddenDim: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly nKvHeads: number;
  readonly vocabSize: number;
  readonly seqLen: number;
  readonly headDim: number;
  readonly kvDim: number;
  readonly sharedClassifier: boolean;
  /** Quantization group size (version 2 only, else 0). */
  readonly groupSize: number;
  readonly headerBytes: number;
  /** The exact file size the header implies (equal to the real one). */
  readonly fileSize: number;
  /** Byte offset of each tensor group (layer `l` of a per-layer tensor follows at a stride). */
  readonly offsets: Readonly<Record<Llama2cTensor, number>>;
}

/** Tensor groups of a llama2.c checkpoint (per-layer ones are stored all layers together). */
export type Llama2cTensor = 'embedding' | 'rms_att' | 'wq' | 'wk' | 'wv' | 'wo' | 'rms_ffn' | 'w1' | 'w2' | 'w3' | 'rms_final' | 'wcls';

const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function i32(bytes: Uint8Array, offset: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getInt32(offset, true);
}

/**
 * Parse and validate a llama2.c checkpoint header from the file's first bytes (at least 256,
 * or the whole file if shorter) and its real size. Every claimed dimension is range-checked and
 * the implied size must equal `fileSize` exactly (the checkpoint is untrusted input).
 */
export function parseLlama2cHeader(bytes: Uint8Array, fileSize: number): Llama2cCheckpoint {
  if (bytes.length < 8) {
    throw new TruncatedError('file too short for a llama2.c checkpoint header', { field: 'header', offset: 0, expected: `≥ ${LLAMA2C_V0_HEADER_BYTES} bytes`, actual: bytes.length });
  }
  let version: 0 | 1 | 2 = 0;
  let base = 0;
  if ((i32(bytes, 0) >>> 0) === LLAMA2C_MAGIC) {
    const v = i32(bytes, 4);
    if (v !== 1 && v !== 2) {
      throw new InvalidValueError('unsupported llama2.c export version', { field: 'version', offset: 4, expected: '1 or 2', actual: v });
    }
    version = v;
    base = 8;
    if (bytes.length < LLAMA2C_V1_HEADER_BYTES) {
      throw new TruncatedError('llama2.c header is cut short', { field: 'header', offset: bytes.length, expected: `${LLAMA2C_V1_HEADER_BYTES} bytes`, actual: bytes.length });
    }
  } else if (bytes.length < LLAMA2C_V0_HEADER_BYTES) {
    throw new TruncatedError('file too short for a llama2.c checkpoint header', { field: 'header', offset: bytes.length, expected: `${LLAMA2C_V0_HEADER_BYTES} bytes`, actual: bytes.length });
  }
  const names = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'] as const;
  const raw = names.map((_, i) => i32(bytes, base + 4 * i));
  const field = (i: number, min: number, max: number): number => {
    const v = i === 5 && version === 0 ? Math.abs(raw[i]!) : raw[i]!;
    if (v < min || v > max) {
      // A legacy file has no magic: if its "dim" is absurd, it probably is not a checkpoint.
      const Ctor = version === 0 && i === 0 ? BadMagicError : InvalidValueError;
      throw new Ctor(version === 0 && i === 0 ? 'not a llama2.c checkpoint (dim out of range)' : 'value out of range', {
        field: names[i],
        offset: base + 4 * i,
        expected: `${min}..${max}`,
        actual: raw[i]!,
      });
    }
    return v;
  };
  const dim = field(0, 1, LIMITS.maxDim);
  const hiddenDim = field(1, 1, LIMITS.maxHiddenDim);
  const nLayers = field(2, 1, LIMITS.maxLayers);
  const nHeads = field(3, 1, LIMITS.maxHeads);
  const nKvHeads = field(4, 1, LIMITS.maxHeads);
  const vocabSize = field(5, 1, LIMITS.maxVocab);
  const seqLen = field(6, 1, LIMITS.maxSeqLen);
  if (nHeads % nKvHeads !== 0) {
    throw new InvalidValueError('n_heads must be a multiple of n_kv_heads', { field: 'n_kv_heads', offset: base + 16, expected: `a divisor of ${nHeads}`, actual: nKvHeads });
  }
  if (dim % nHeads !== 0 || (dim / nHeads) % 2 !== 0) {
    throw new InvalidValueError('dim / n_heads must be an even integer (head size)', { field: 'n_heads', offset: base + 12, expected: `a divisor of ${dim} giving an even head size`, actual: nHeads });
  }
  const headDim = dim / nHeads;
  const kvDim = headDim * nKvHeads;

  let sharedClassifier: boolean;
  let groupSize = 0;
  if (version === 0) {
    // Legacy export: the sign of vocab_size is the shared-classifier flag.
    sharedClassifier = raw[5]! > 0;
  } else {
    const flag = bytes[36]!;
    if (flag > 1) throw new InvalidValueError('shared_classifier flag must be 0 or 1', { field: 'shared_classifier', offset: 36, expected: '0 or 1', actual: flag });
    sharedClassifier = flag === 1;
    if (version === 2) {
      // Written by a separate struct.pack('i') right after the flag byte: unaligned, offset 37.
      groupSize = i32(bytes, 37);
      // export.py halves the group size until it divides dim; every quantized tensor has dim
      // as a factor of its size, so it is then a whole number of groups.
      if (groupSize < 1 || groupSize > dim || dim % groupSize !== 0) {
        throw new InvalidValueError('group size must divide dim', { field: 'group_size', offset: 37, expected: `a divisor of ${dim}`, actual: groupSize });
      }
    }
  }

  // Sizes in bytes of one tensor of each group (one layer's slice for per-layer groups).
  const mul = (a: number, b: number, what: string): number => checkedMul(a, b, what);
  const f32 = (n: number, what: string): number => mul(n, 4, what);
  // Version 2 stores int8 values followed by one f32 scale per group.
  const q8 = (n: number, what: string): number => checkedAdd(n, mul(n / groupSize, 4, what), what);
  const mat = version === 2 ? q8 : f32;
  const size: Record<Llama2cTensor, number> = {
    embedding: mat(mul(vocabSize, dim, 'embedding'), 'embedding'),
    rms_att: f32(dim, 'rms_att'),
    wq: mat(mul(dim, dim, 'wq'), 'wq'),
    wk: mat(mul(kvDim, dim, 'wk'), 'wk'),
    wv: mat(mul(kvDim, dim, 'wv'), 'wv'),
    wo: mat(mul(dim, dim, 'wo'), 'wo'),
    rms_ffn: f32(dim, 'rms_ffn'),
    w1: mat(mul(hiddenDim, dim, 'w1'), 'w1'),
    w2: mat(mul(dim, hiddenDim, 'w2'), 'w2'),
    w3: mat(mul(hiddenDim, dim, 'w3'), 'w3'),
    rms_final: f32(dim, 'rms_final'),
    wcls: sharedClassifier ? 0 : mat(mul(vocabSize, dim, 'wcls'), 'wcls'),
  };
  const perLayer = new Set<Llama2cTensor>(['rms_att', 'wq', 'wk', 'wv', 'wo', 'rms_ffn', 'w1', 'w2', 'w3']);
  // export.py: legacy_export writes the embedding, then each group for all layers, the final
  // norm and the RoPE tables; version1/2_export write the norms first (float32 in both).
  const order: Llama2cTensor[] =
    version === 0
      ? ['embedding', 'rms_att', 'wq', 'wk', 'wv', 'wo', 'rms_ffn', 'w1', 'w2', 'w3', 'rms_final']
      : ['rms_att', 'rms_ffn', 'rms_final', 'embedding', 'wq', 'wk', 'wv', 'wo', 'w1', 'w2', 'w3'];
  const headerBytes = version === 0 ? LLAMA2C_V0_HEADER_BYTES : LLAMA2C_V1_HEADER_BYTES;
  const offsets = {} as Record<Llama2cTensor, number>;
  let o = headerBytes;
  for (const t of order) {
    offsets[t] = o;
    o = checkedAdd(o, perLayer.has(t) ? mul(size[t], nLayers, t) : size[t], t);
  }
  if (version === 0) {
    // freq_cis_real and freq_cis_imag: seq_len × head_size/2 floats each, unused.
    o = checkedAdd(o, f32(mul(seqLen, headDim, 'freq_cis'), 'freq_cis'), 'freq_cis');
  }
  offsets.wcls = sharedClassifier ? offsets.embedding : o;
  o = checkedAdd(o, size.wcls, 'wcls');
  if (o !== fileSize) {
    throw new FileSizeMismatchError(
      o > fileSize ? 'checkpoint is shorter than its header implies (truncated, or not a llama2.c file)' : 'checkpoint has bytes after the last tensor',
      { field: 'file size', offset: Math.min(o, fileSize), expected: o, actual: fileSize },
    );
  }
  return Object.freeze({
    version,
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize,
    seqLen,
    headDim,
    kvDim,
    sharedClassifier,
    groupSize,
    headerBytes,
    fileSize: o,
    offsets: Object.freeze(offsets),
  });
}

/** Reads one tensor (one layer's slice) of a checkpoint as float32, by offset. */
class CheckpointReader {
  constructor(
    readonly fh: FileHandle,
    readonly path: string,
    readonly ck: Llama2cCheckpoint,
  ) {}

  async #read(position: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(out, done, length - done, position + done);
      if (bytesRead === 0) {
        throw new TruncatedError('checkpoint ended early (changed while reading?)', { path: this.path, offset: position + done, expected: `${length} bytes` });
      }
      done += bytesRead;
    }
    return out;
  }

  /** Elements of `count` floats of group `t`, layer `layer` (0 for global tensors). */
  async tensor(t: Llama2cTensor, count: number, layer = 0): Promise<Float32Array> {
    const { ck } = this;
    const quantized = ck.version === 2 && t !== 'rms_att' && t !== 'rms_ffn' && t !== 'rms_final';
    const bytesPer = quantized ? count + (count / ck.groupSize) * 4 : count * 4;
    const raw = await this.#read(ck.offsets[t] + layer * bytesPer, bytesPer);
    const view = new DataView(raw.buffer);
    if (!quantized) {
      if (HOST_LE) return new Float32Array(raw.buffer, 0, count);
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      return out;
    }
    const out = new Float32Array(count);
    // Version 2 (runq.c): int8 values, then one f32 scale per group; x = q · s in float32.
    const gs = ck.groupSize;
    for (let g = 0; g < count / gs; g++) {
      const s = view.getFloat32(count + 4 * g, true);
      for (let i = g * gs; i < (g + 1) * gs; i++) out[i] = Math.fround(((raw[i]! << 24) >> 24) * s);
    }
    return out;
  }
}

export interface Llama2cImportOptions {
  /** Weight type of the big matrices (embedding and norms stay F32). */
  dtype: FloatType;
  /**
   * FFN width in the output: hidden_dim is zero-padded (extra zero rows of w1/w3, zero columns
   * of w2; exact, since silu(0)·0 = 0) up to the next multiple of `hiddenDimMultiple`
   * (default 32: Q40/Q80 rows are whole blocks, dllama's F32 kernels want multiples of 8).
   * Use 1 to keep the width as is.
   */
  hiddenDimMultiple?: number;
  /** Explicit padded FFN width (≥ the checkpoint's); overrides `hiddenDimMultiple`. */
  hiddenDim?: number;
  overwrite?: boolean;
  onProgress?: ProgressCallback;
  /** fsync the output before renaming it into place (default true). */
  fsync?: boolean;
}

/** Read a checkpoint's header (first 256 bytes) and validate it against the file size. */
export async function readLlama2cCheckpoint(path: string): Promise<Llama2cCheckpoint> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw fileError(e, path, 'open the checkpoint');
  }
  try {
    return await readHeader(fh, path);
  } finally {
    await fh.close();
  }
}

async function readHeader(fh: FileHandle, path: string): Promise<Llama2cCheckpoint> {
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new FormatError('not a regular file', { path });
    const head = new Uint8Array(Math.min(st.size, LLAMA2C_V1_HEADER_BYTES));
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    return parseLlama2cHeader(head.subarray(0, bytesRead), st.size);
  } catch (e) {
    if (e instanceof FormatError) throw e.withPath(path);
    throw fileError(e, path, 'read the checkpoint');
  }
}

function paddedHiddenDim(ck: Llama2cCheckpoint, options: Llama2cImportOptions): number {
  if (options.hiddenDim !== undefined) {
    const h = options.hiddenDim;
    if (!Number.isSafeInteger(h) || h < ck.hiddenDim || h > LIMITS.maxHiddenDim) {
      throw new InvalidValueError('padded hidden_dim must be at least the checkpoint’s', { field: 'hiddenDim', expected: `${ck.hiddenDim}..${LIMITS.maxHiddenDim}`, actual: h });
    }
    return h;
  }
  const m = options.hiddenDimMultiple ?? 32;
  if (!Number.isSafeInteger(m) || m < 1 || m > 4096) {
    throw new InvalidValueError('hidden_dim multiple out of range', { field: 'hiddenDimMultiple', expected: '1..4096', actual: m });
  }
  return Math.ceil(ck.hiddenDim / m) * m;
}

/** Zero-pad a row-major [rows][cols] matrix to [rowsP][colsP]. */
function pad(src: Float32Array, rows: number, cols: number, rowsP: number, colsP: number): Float32Array {
  if (rows === rowsP && cols === colsP) return src;
  const out = new Float32Array(rowsP * colsP);
  for (let r = 0; r < rows; r++) out.set(src.subarray(r * cols, (r + 1) * cols), r * colsP);
  return out;
}

/**
 * Convert a llama2.c checkpoint (legacy version 0, or "ak42" version 1/2) to a `.m` file, one
 * tensor at a time (memory ≈ one tensor). The header is written in convert-llama.py's key
 * order with the same keys, and the classifier is stored as its own tensor (a copy of the
 * embedding when shared), so the output is what the official converter makes from the same
 * weights.
 */
export async function importLlama2cModel(checkpointPath: string, outPath: string, options: Llama2cImportOptions): Promise<ModelLayout> {
  let fh: FileHandle;
  try {
    fh = await open(checkpointPath, 'r');
  } catch (e) {
    throw fileError(e, checkpointPath, 'open the checkpoint');
  }
  try {
    const ck = await readHeader(fh, checkpointPath);
    const hp = paddedHiddenDim(ck, options);
    const values: HeaderValues = {
      [HeaderKey.Dim]: ck.dim,
      [HeaderKey.NLayers]: ck.nLayers,
      [HeaderKey.NHeads]: ck.nHeads,
      [HeaderKey.NKvHeads]: ck.nKvHeads,
      [HeaderKey.VocabSize]: ck.vocabSize,
      [HeaderKey.MaxSeqLen]: ck.seqLen,
      [HeaderKey.ArchType]: ArchType.LLAMA,
      [HeaderKey.NExperts]: 0,
      [HeaderKey.NActiveExperts]: 0,
      [HeaderKey.WeightsFloatType]: options.dtype,
      [HeaderKey.HiddenDim]: hp,
    };
    const writer = await ModelFileWriter.open(outPath, values, {
      keyOrder: CONVERT_LLAMA_KEY_ORDER,
      overwrite: options.overwrite,
      onProgress: options.onProgress,
      fsync: options.fsync,
    });
    try {
      const r = new CheckpointReader(fh, checkpointPath, ck);
      const { dim: D, kvDim, hiddenDim: H, vocabSize: V } = ck;
      await writer.writeTensor(await r.tensor('embedding', V * D), 'embedding');
      for (let l = 0; l < ck.nLayers; l++) {
        const p = `layers.${l}.`;
        await writer.writeTensor(await r.tensor('wq', D * D, l), p + 'q');
        await writer.writeTensor(await r.tensor('wk', kvDim * D, l), p + 'k');
        await writer.writeTensor(await r.tensor('wv', kvDim * D, l), p + 'v');
        await writer.writeTensor(await r.tensor('wo', D * D, l), p + 'wo');
        await writer.writeTensor(pad(await r.tensor('w1', H * D, l), H, D, hp, D), p + 'w1');
        await writer.writeTensor(pad(await r.tensor('w2', D * H, l), D, H, D, hp), p + 'w2');
        await writer.writeTensor(pad(await r.tensor('w3', H * D, l), H, D, hp, D), p + 'w3');
        await writer.writeTensor(await r.tensor('rms_att', D, l), p + 'att_norm');
        await writer.writeTensor(await r.tensor('rms_ffn', D, l), p + 'ffn_norm');
      }
      await writer.writeTensor(await r.tensor('rms_final', D), 'final_norm');
      // Shared classifier: 'wcls' points at the embedding, read again rather than kept in memory.
      await writer.writeTensor(await r.tensor('wcls', V * D), 'wcls');
      return await writer.close();
    } catch (e) {
      await writer.abort();
      throw e instanceof FormatError ? e.withPath(checkpointPath) : fileError(e, checkpointPath, 'read the checkpoint');
    }
  } finally {
    await fh.close();
  }
}

/** SentencePiece control pieces that llama2.c's tokenizer.bin spells "<unk>", "\n<s>\n", "\n</s>\n". */
const CONTROL_PIECES = ['<unk>', '<s>', '</s>'];
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * Convert llama2.c's tokenizer.bin (i32 max_token_length, then per token: f32 score, i32
 * length, bytes) to `.t` data: `<0xNN>` byte-fallback pieces become the raw byte, ids 0/1/2 the
 * SentencePiece control pieces `<unk>`, `<s>`, `</s>`; scores are kept; BOS 1, EOS [2],
 * add_bos, and the Llama-2 chat template (as convert-tokenizer-llama2.py intends). The file has
 * no entry count: it must hold exactly `vocabSize` entries.
 */
export function convertLlama2cTokenizer(bytes: Uint8Array, vocabSize: number): TokenizerData {
  if (!Number.isSafeInteger(vocabSize) || vocabSize < 3 || vocabSize > TOKENIZER_LIMITS.maxVocab) {
    throw new InvalidValueError('vocabulary size out of range', { field: 'vocab_size', expected: `3..${TOKENIZER_LIMITS.maxVocab}`, actual: vocabSize });
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (at: number, n: number, field: string): void => {
    if (at + n > bytes.length) {
      throw new TruncatedError('tokenizer.bin is cut short', { field, offset: at, expected: `${n} more bytes`, actual: Math.max(0, bytes.length - at) });
    }
  };
  need(0, 4, 'max_token_length');
  const maxLen = view.getInt32(0, true);
  if (maxLen < 1 || maxLen > TOKENIZER_LIMITS.maxTokenLength) {
    throw new InvalidValueError('value out of range', { field: 'max_token_length', offset: 0, expected: `1..${TOKENIZER_LIMITS.maxTokenLength}`, actual: maxLen });
  }
  // Each entry takes at least 9 bytes: refuse before allocating anything sized by vocabSize.
  if (vocabSize * 9 > bytes.length - 4) {
    throw new TruncatedError('tokenizer.bin has fewer entries than the model’s vocab_size', { field: 'vocab_size', offset: bytes.length, expected: `≥ ${vocabSize * 9 + 4} bytes`, actual: bytes.length });
  }
  const vocab: Uint8Array[] = [];
  const scores = new Float32Array(vocabSize);
  let o = 4;
  for (let i = 0; i < vocabSize; i++) {
    need(o, 8, `vocab[${i}]`);
    scores[i] = view.getFloat32(o, true);
    const len = view.getInt32(o + 4, true);
    if (len < 1 || len > maxLen) {
      throw new InvalidValueError('token length out of range', { field: `vocab[${i}].length`, offset: o + 4, expected: `1..${maxLen} (max_token_length)`, actual: len });
    }
    need(o + 8, len, `vocab[${i}].bytes`);
    let piece = bytes.slice(o + 8, o + 8 + len);
    o += 8 + len;
    if (i < CONTROL_PIECES.length) {
      piece = new TextEncoder().encode(CONTROL_PIECES[i]);
    } else if (len === 6 && piece[0] === 0x3c /* < */) {
      const m = BYTE_PIECE.exec(String.fromCharCode(...piece));
      if (m) piece = Uint8Array.of(parseInt(m[1]!, 16));
    }
    vocab.push(piece);
  }
  if (o !== bytes.length) {
    throw new InvalidValueError('tokenizer.bin has more entries than the model’s vocab_size', { field: 'vocab_size', offset: o, expected: `end of file at ${o}`, actual: bytes.length });
  }
  const data = { vocab, scores, bosId: 1, eosIds: [2], addBos: true, chatTemplate: LLAMA2_CHAT_TEMPLATE };
  // Round-trip through our own parser's rules so the result is always a valid .t.
  const parsed = parseTokenizer(writeTokenizer(data));
  return parsed;
}

export interface Llama2cImportResult {
  readonly checkpoint: Llama2cCheckpoint;
  readonly layout: ModelLayout;
  readonly tokenizer: TokenizerData;
}

/**
 * Import a llama2.c model: checkpoint + tokenizer.bin → `.m` + `.t`. The tokenizer is
 * converted first (small, and its failure should not cost a long model write).
 */
export async function importLlama2c(
  paths: { checkpoint: string; tokenizer: string; model: string; tokenizerOut: string },
  options: Llama2cImportOptions,
): Promise<Llama2cImportResult> {
  const ck = await readLlama2cCheckpoint(paths.checkpoint);
  // Bounded by the format: 4 + vocab × (8 + longest allowed token).
  const tokBytes = await readSmallFile(paths.tokenizer, 4 + ck.vocabSize * (8 + TOKENIZER_LIMITS.maxTokenLength));
  let tokenizer: TokenizerData;
  try {
    tokenizer = convertLlama2cTokenizer(tokBytes, ck.vocabSize);
  } catch (e) {
    throw e instanceof FormatError ? e.withPath(paths.tokenizer) : e;
  }
  const layout = await importLlama2cModel(paths.checkpoint, paths.model, options);
  await writeFileAtomic(paths.tokenizerOut, writeTokenizer(tokenizer), { overwrite: options.overwrite });
  return { checkpoint: ck, layout, tokenizer };
}
