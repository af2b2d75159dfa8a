import { open, type FileHandle } from 'node:fs/promises';
import { fileError, FormatError, InvalidValueError } from './errors.js';
import { commitPartial, openPartial, readSmallFile, removeQuietly } from './fs-util.js';
import { readRange } from './file-range.js';
import { ArchType, RopeType, type ModelHeader } from './header.js';
import { bytesToGpt2Text } from './hf-tokenizer.js';
import type { ModelLayout, TensorInfo } from './layout.js';
import { readModelFile } from './model-file.js';
import type { ProgressCallback } from './model-writer.js';
import { encodeGgufHeader, GgmlType, GgufValueType, type GgufWriteTensor, type GgufWriteValue } from './gguf.js';
import { FLOAT_TO_FILE_TYPE, FLOAT_TO_GGML, ggufArchName, ggufDimsOf, ggufSourceOf, llama3RopeFactors } from './gguf-arch.js';
import { parseTokenizer, TOKENIZER_MAX_FILE_BYTES, type TokenizerData } from './tokenizer-file.js';
import { checkHfSidecarVocab, HF_SIDECAR_MAX_BYTES, hfSidecarPath, parseHfSidecar, type HfTokenizerSidecar } from './hf-sidecar.js';
import { ggufPreNameOf } from './gguf-tokenizer.js';
import { exists } from './fs-util.js';

/** llama.cpp token types (`llama_token_type` / gguf TokenType). */
export enum GgufTokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

const utf8 = new TextEncoder();
/** A byte string as a Map key (latin1 is one char per byte, so the key is exact). */
const bkey = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.length).toString('latin1');
const hex2 = (b: number): string => b.toString(16).toUpperCase().padStart(2, '0');

/** Where the 256 byte pieces of a SentencePiece-style `.t` start (raw byte or `<0xNN>`), or -1 (the engine's rule). */
export function findBytePieces(vocab: readonly Uint8Array[]): number {
  const isByte = (id: number, b: number): boolean => {
    const p = vocab[id];
    if (p === undefined) return false;
    if (p.length === 1 && p[0] === b) return true;
    return p.length === 6 && String.fromCharCode(...p) === `<0x${hex2(b)}>`;
  };
  for (const start of [3, 0, 1, 2, 4]) {
    let ok = true;
    for (let b = 0; b < 256 && ok; b++) ok = isByte(start + b, b);
    if (ok) return start;
  }
  return -1;
}

/** "a b" → bytes with every space (0x20) replaced by SentencePiece's "▁" (E2 96 81). */
function spacesToSpm(p: Uint8Array): Uint8Array {
  let n = 0;
  for (const b of p) if (b === 0x20) n++;
  if (n === 0) return p;
  const out = new Uint8Array(p.length + 2 * n);
  let o = 0;
  for (const b of p) {
    if (b === 0x20) {
      out[o++] = 0xe2;
      out[o++] = 0x96;
      out[o++] = 0x81;
    } else out[o++] = b;
  }
  return out;
}

export interface GgufTokenizerMetadata {
  readonly style: 'sentencepiece' | 'bytelevel';
  readonly entries: [string, GgufWriteValue][];
  /** Merges could only be derived (byte-level): how many. */
  readonly derivedMerges: number;
  /** Byte-level merges taken from the HF tokenizer sidecar: how many. */
  readonly hfMerges: number;
}

/**
 * `.t` → llama.cpp tokenizer metadata.
 *
 * SentencePiece-style (`tokenizer.ggml.model` "llama"): pieces spelled as llama.cpp expects
 * them, spaces as "▁", byte pieces as `<0xNN>` (type BYTE), ids below the byte pieces as
 * control tokens (`<unk>` as UNKNOWN), the `.t` scores (llama.cpp's SPM tokenizer merges by
 * score, as the engine does).
 *
 * Byte-level (`"gpt2"`): regular tokens (ids below bos_id) in GPT-2's unicode spelling,
 * specials as their text (CONTROL). With the HF tokenizer sidecar (`hf`), its merges, its
 * added tokens' special flags (USER_DEFINED when not special) and `tokenizer.ggml.pre` named
 * from its pre-tokenizer are written, so the GGUF tokenizes as the original does. Without it:
 * a `.t` keeps no merge list, so one is derived from the
 * tokens: every split of a regular token into two regular tokens is a merge, ranked by the
 * merged token's score (−id in converted files). That is dllama's own encoding rule, so
 * llama.cpp then merges the same way, except that it also splits the text with its
 * pre-tokenizer regex first; prompts may therefore tokenize differently from the original
 * Hugging Face tokenizer (generation from the same ids is unaffected).
 *
 * The token list is padded with `[PAD<id>]` (UNUSED) up to the model's vocab_size, as
 * convert_hf_to_gguf.py does: llama.cpp requires one token per embedding row.
 */
export function ggufTokenizerMetadata(tok: TokenizerData, modelVocab: number, arch: ArchType, hf?: HfTokenizerSidecar): GgufTokenizerMetadata {
  const n = tok.vocab.length;
  if (n > modelVocab) {
    throw new InvalidValueError('tokenizer has more tokens than the model has embedding rows', { field: 'vocab_size', expected: `≤ ${modelVocab}`, actual: n });
  }
  const byteBase = findBytePieces(tok.vocab);
  const spm = byteBase >= 0 && tok.bosId >= 0 && tok.bosId < byteBase;
  const tokens: Uint8Array[] = [];
  const types: number[] = [];
  const scores: number[] = [];
  const control = new Set<number>([...tok.eosIds, ...(tok.bosId >= 0 ? [tok.bosId] : [])]);
  const hfAdded = Array.isArray(hf?.tokenizer.added_tokens) ? (hf.tokenizer.added_tokens as { id?: unknown; special?: unknown }[]) : [];
  const hfUserDefined = new Set(hfAdded.filter((a) => a.special === false && typeof a.id === 'number').map((a) => a.id as number));
  const spmScores = spm && hf !== undefined ? scoresFromMerges(hf, n) : undefined;
  // With the HF tokenizer, its added tokens are the specials (a `.t` only knows "from bos_id on").
  const hfAddedIds = hf !== undefined ? new Set(hfAdded.filter((a) => typeof a.id === 'number').map((a) => a.id as number)) : undefined;
  let unkId = -1;
  for (let id = 0; id < n; id++) {
    const p = tok.vocab[id]!;
    if (spm) {
      if (id >= byteBase && id < byteBase + 256) {
        tokens.push(utf8.encode(`<0x${hex2(id - byteBase)}>`));
        types.push(GgufTokenType.BYTE);
      } else if (id < byteBase || control.has(id)) {
        const text = new TextDecoder().decode(p);
        if (text === '<unk>' && unkId < 0) {
          unkId = id;
          types.push(GgufTokenType.UNKNOWN);
        } else types.push(GgufTokenType.CONTROL);
        tokens.push(p);
      } else {
        tokens.push(spacesToSpm(p));
        types.push(GgufTokenType.NORMAL);
      }
    } else if (hfAddedIds !== undefined ? !hfAddedIds.has(id) : id < tok.bosId || tok.bosId < 0) {
      tokens.push(utf8.encode(bytesToGpt2Text(p)));
      types.push(control.has(id) ? GgufTokenType.CONTROL : GgufTokenType.NORMAL);
    } else {
      tokens.push(p);
      types.push(hfUserDefined.has(id) ? GgufTokenType.USER_DEFINED : GgufTokenType.CONTROL);
    }
    scores.push(spmScores?.[id] ?? tok.scores[id]!);
  }
  for (let id = n; id < modelVocab; id++) {
    tokens.push(utf8.encode(`[PAD${id}]`));
    types.push(GgufTokenType.UNUSED);
    scores.push(0);
  }
  // llama.cpp maps token text → id and aborts when two ids share a text.
  const seen = new Map<string, number>();
  tokens.forEach((t, id) => {
    const k = bkey(t);
    const prev = seen.get(k);
    if (prev !== undefined) {
      throw new InvalidValueError('two tokens have the same text in GGUF spelling (llama.cpp refuses duplicate tokens)', { field: `vocab[${id}]`, expected: 'unique tokens', actual: `same as vocab[${prev}]` });
    }
    seen.set(k, id);
  });

  const entries: [string, GgufWriteValue][] = [];
  let derivedMerges = 0;
  const hfModel = hf?.tokenizer.model as { merges?: unknown } | undefined;
  const hfMergeList = !spm && Array.isArray(hfModel?.merges) ? hfModel.merges.map((m: unknown) => (Array.isArray(m) ? m.join(' ') : String(m))) : undefined;
  if (spm) {
    entries.push(['tokenizer.ggml.model', { type: GgufValueType.STRING, value: 'llama' }]);
  } else {
    const guess = arch === ArchType.QWEN3 || arch === ArchType.QWEN3_MOE ? 'qwen2' : tok.bosId === 128000 ? 'llama-bpe' : 'default';
    const pre = (hf !== undefined ? ggufPreNameOf(hf.tokenizer.pre_tokenizer) : undefined) ?? guess;
    entries.push(['tokenizer.ggml.model', { type: GgufValueType.STRING, value: 'gpt2' }]);
    entries.push(['tokenizer.ggml.pre', { type: GgufValueType.STRING, value: pre }]);
  }
  entries.push(['tokenizer.ggml.tokens', { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, items: tokens }]);
  if (spm) entries.push(['tokenizer.ggml.scores', { type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, items: scores }]);
  entries.push(['tokenizer.ggml.token_type', { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, items: types }]);
  if (hfMergeList !== undefined) {
    entries.push(['tokenizer.ggml.merges', { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, items: hfMergeList }]);
  } else if (!spm) {
    const merges = deriveMerges(tok);
    derivedMerges = merges.length;
    entries.push(['tokenizer.ggml.merges', { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, items: merges }]);
  }
  if (tok.bosId >= 0) entries.push(['tokenizer.ggml.bos_token_id', { type: GgufValueType.UINT32, value: tok.bosId }]);
  if (tok.eosIds.length > 0) entries.push(['tokenizer.ggml.eos_token_id', { type: GgufValueType.UINT32, value: tok.eosIds[0]! }]);
  if (tok.eosIds.length > 1) entries.push(['tokenizer.ggml.eot_token_id', { type: GgufValueType.UINT32, value: tok.eosIds[1]! }]);
  if (unkId >= 0) entries.push(['tokenizer.ggml.unknown_token_id', { type: GgufValueType.UINT32, value: unkId }]);
  entries.push(['tokenizer.ggml.add_bos_token', { type: GgufValueType.BOOL, value: tok.addBos }]);
  entries.push(['tokenizer.ggml.add_eos_token', { type: GgufValueType.BOOL, value: false }]);
  // The SentencePiece "dummy prefix" space; the engine's SentencePiece encoder adds it too.
  if (spm) entries.push(['tokenizer.ggml.add_space_prefix', { type: GgufValueType.BOOL, value: true }]);
  if (tok.chatTemplate !== undefined) entries.push(['tokenizer.chat_template', { type: GgufValueType.STRING, value: tok.chatTemplate }]);
  return { style: spm ? 'sentencepiece' : 'bytelevel', entries, derivedMerges, hfMerges: hfMergeList?.length ?? 0 };
}

/**
 * SentencePiece scores that give back the HF tokenizer's merge order: a `.t` converted from a
 * tokenizer.json has score −id, which is not the order of its merges (Llama 2's and Mistral's
 * runs of "▁" merge late, though their ids are low). A piece scores −(rank of the first merge
 * that makes it); pieces no merge makes score below all of them. llama.cpp merges by these
 * scores, and Hugging Face's converter derives the same merge order back from them
 * (mergesFromScores).
 */
function scoresFromMerges(hf: HfTokenizerSidecar, n: number): Float32Array | undefined {
  const model = hf.tokenizer.model as { vocab?: unknown; merges?: unknown } | undefined;
  if (typeof model?.vocab !== 'object' || model.vocab === null || !Array.isArray(model.merges)) return undefined;
  const vocab = model.vocab as Record<string, number>;
  const merges = model.merges as unknown[];
  const scores = new Float32Array(n);
  const rank = new Map<number, number>();
  merges.forEach((m, r) => {
    const [a, b] = Array.isArray(m) ? (m as string[]) : String(m).split(' ');
    const id = vocab[`${a}${b}`];
    if (id !== undefined && !rank.has(id)) rank.set(id, r);
  });
  for (let id = 0; id < n; id++) scores[id] = -(rank.get(id) ?? merges.length + id);
  return scores;
}

/** Every split of a regular token into two regular tokens, ranked by the merged token's score (desc), then id. */
function deriveMerges(tok: TokenizerData): string[] {
  const regularEnd = tok.bosId >= 0 ? tok.bosId : tok.vocab.length;
  const key = bkey;
  const ids = new Map<string, number>();
  for (let id = 0; id < regularEnd; id++) {
    const k = key(tok.vocab[id]!);
    if (!ids.has(k)) ids.set(k, id);
  }
  const order = [...Array(regularEnd).keys()].filter((id) => tok.vocab[id]!.length > 1);
  order.sort((a, b) => tok.scores[b]! - tok.scores[a]! || a - b);
  const merges: string[] = [];
  for (const id of order) {
    const p = tok.vocab[id]!;
    for (let k = 1; k < p.length; k++) {
      const l = p.subarray(0, k);
      const r = p.subarray(k);
      if (ids.has(key(l)) && ids.has(key(r))) merges.push(`${bytesToGpt2Text(l)} ${bytesToGpt2Text(r)}`);
    }
  }
  return merges;
}

/** llama.cpp architecture metadata for a `.m` header. */
export function ggufModelMetadata(h: ModelHeader, name?: string): [string, GgufWriteValue][] {
  const a = ggufArchName(h.archType);
  const u32 = (v: number): GgufWriteValue => ({ type: GgufValueType.UINT32, value: v });
  const f32 = (v: number): GgufWriteValue => ({ type: GgufValueType.FLOAT32, value: v });
  const md: [string, GgufWriteValue][] = [
    ['general.architecture', { type: GgufValueType.STRING, value: a }],
    ['general.name', { type: GgufValueType.STRING, value: name ?? 'airllm export' }],
    ['general.file_type', u32(FLOAT_TO_FILE_TYPE[h.weightType])],
    [`${a}.vocab_size`, u32(h.vocabSize)],
    [`${a}.context_length`, u32(h.maxSeqLen)],
    [`${a}.embedding_length`, u32(h.dim)],
    [`${a}.block_count`, u32(h.nLayers)],
    [`${a}.attention.head_count`, u32(h.nHeads)],
    [`${a}.attention.head_count_kv`, u32(h.nKvHeads)],
    [`${a}.attention.layer_norm_rms_epsilon`, f32(h.normEpsilon)],
    [`${a}.rope.freq_base`, f32(h.ropeTheta)],
    [`${a}.rope.dimension_count`, u32(h.headDim)],
  ];
  if (h.hiddenDim > 0) md.push([`${a}.feed_forward_length`, u32(h.hiddenDim)]);
  if (h.headDim * h.nHeads !== h.dim || h.archType !== ArchType.LLAMA) {
    md.push([`${a}.attention.key_length`, u32(h.headDim)], [`${a}.attention.value_length`, u32(h.headDim)]);
  }
  if (h.archType === ArchType.QWEN3_MOE) {
    md.push([`${a}.expert_count`, u32(h.nExperts)], [`${a}.expert_used_count`, u32(h.nActiveExperts)], [`${a}.expert_feed_forward_length`, u32(h.moeHiddenDim)]);
  }
  return md;
}

/** Llama-3.1 scaling in effect (FORMAT.md §a.4: whenever the factor is not 1, for the LLAMA rope types). */
function ropeScaled(h: ModelHeader): boolean {
  return h.ropeType !== RopeType.FALCON && h.ropeScalingFactor !== 1;
}

export interface GgufExportTensor extends GgufWriteTensor {
  /** Byte ranges of the `.m` file to copy, in order (several for merged expert tensors). */
  readonly ranges: readonly { offset: number; length: number }[];
  /** Data that is not in the `.m` file (rope_freqs). */
  readonly data?: Uint8Array;
}

/** The GGUF tensor list for a `.m` layout (llama.cpp's names, ggml dims, same bytes). */
export function ggufTensorsFor(layout: ModelLayout): GgufExportTensor[] {
  const h = layout.header;
  const out: GgufExportTensor[] = [];
  if (ropeScaled(h)) {
    const f = llama3RopeFactors(h.headDim, h.ropeTheta, h.ropeScalingFactor, h.ropeScalingLowFreqFactor, h.ropeScalingHighFreqFactor, h.ropeScalingOrigMaxSeqLen);
    const data = new Uint8Array(f.buffer.slice(0));
    out.push({ name: 'rope_freqs.weight', type: GgmlType.F32, dims: [f.length], byteLength: data.length, ranges: [], data });
  }
  const merged = new Map<string, { first: TensorInfo; ranges: { offset: number; length: number }[] }>();
  for (const t of layout.tensors) {
    const src = ggufSourceOf(t);
    const type = FLOAT_TO_GGML[t.dtype];
    if (src.slice < 0) {
      out.push({ name: src.name, type, dims: ggufDimsOf(t), byteLength: t.byteLength, ranges: [{ offset: t.offset, length: t.byteLength }] });
      continue;
    }
    // Experts: gather expert e's bytes of this kind into one [in, out, E] tensor, placed where
    // expert 0 appears (the .m interleaves w1/w2/w3 per expert).
    let m = merged.get(src.name);
    if (m === undefined) {
      m = { first: t, ranges: [] };
      merged.set(src.name, m);
      out.push({ name: src.name, type, dims: [...ggufDimsOf(t), h.nExperts], byteLength: t.byteLength * h.nExperts, ranges: m.ranges });
    }
    m.ranges.push({ offset: t.offset, length: t.byteLength });
  }
  return out;
}

export interface GgufExportOptions {
  /** `.t` file whose vocabulary becomes the GGUF tokenizer metadata (llama.cpp needs one to load); its HF tokenizer sidecar is used when present. */
  tokenizerPath?: string;
  tokenizer?: TokenizerData;
  /** The HF tokenizer of `tokenizer` (default: the sidecar beside `tokenizerPath`, if any). */
  hfTokenizer?: HfTokenizerSidecar;
  name?: string;
  overwrite?: boolean;
  onProgress?: ProgressCallback;
  fsync?: boolean;
  /** Bytes copied per step (default 8 MiB). */
  chunkBytes?: number;
}

export interface GgufExportResult {
  readonly fileSize: number;
  readonly tensors: readonly GgufExportTensor[];
  readonly tokenizerStyle?: 'sentencepiece' | 'bytelevel';
  readonly derivedMerges: number;
  /** Merges taken from the HF tokenizer sidecar. */
  readonly hfMerges: number;
}

const COPY_CHUNK = 8 << 20;

/**
 * `.m` (+ `.t`) → GGUF v3 that llama.cpp loads: its metadata for the architecture, tensors
 * under llama.cpp's names with the same bytes (F32/F16/Q40/Q80 = F32/F16/Q4_0/Q8_0), the
 * Llama-3.1 rope factors as `rope_freqs.weight` when scaling applies, and the tokenizer.
 * Streams: each tensor is copied from the `.m` file in chunks.
 */
export async function exportGguf(modelPath: string, outPath: string, options: GgufExportOptions = {}): Promise<GgufExportResult> {
  const { layout } = readModelFile(modelPath);
  const h = layout.header;
  let tok = options.tokenizer;
  if (tok === undefined && options.tokenizerPath !== undefined) {
    const bytes = await readSmallFile(options.tokenizerPath, TOKENIZER_MAX_FILE_BYTES);
    try {
      tok = parseTokenizer(bytes);
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(options.tokenizerPath) : e;
    }
  }
  let hf = options.hfTokenizer;
  if (hf === undefined && tok !== undefined && options.tokenizerPath !== undefined && (await exists(hfSidecarPath(options.tokenizerPath)))) {
    const sidecarPath = hfSidecarPath(options.tokenizerPath);
    try {
      hf = parseHfSidecar(await readSmallFile(sidecarPath, HF_SIDECAR_MAX_BYTES), sidecarPath);
      checkHfSidecarVocab(hf, tok, sidecarPath);
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(sidecarPath) : e;
    }
  }
  const md = ggufModelMetadata(h, options.name);
  let tokMeta: GgufTokenizerMetadata | undefined;
  if (tok !== undefined) {
    try {
      tokMeta = ggufTokenizerMetadata(tok, h.vocabSize, h.archType, hf);
    } catch (e) {
      throw e instanceof FormatError && options.tokenizerPath !== undefined ? e.withPath(options.tokenizerPath) : e;
    }
    md.push(...tokMeta.entries);
  }
  const tensors = ggufTensorsFor(layout);
  const enc = encodeGgufHeader(md, tensors);

  let src: FileHandle;
  try {
    src = await open(modelPath, 'r');
  } catch (e) {
    throw fileError(e, modelPath, 'open the model');
  }
  const { fh, partialPath } = await openPartial(outPath, options.overwrite ?? false).catch(async (e: unknown) => {
    await src.close();
    throw e;
  });
  try {
    let pos = 0;
    const write = async (b: Uint8Array): Promise<void> => {
      let done = 0;
      while (done < b.length) {
        const { bytesWritten } = await fh.write(b, done, b.length - done, pos + done);
        done += bytesWritten;
      }
      pos += b.length;
      options.onProgress?.(pos, enc.fileSize);
    };
    await write(enc.header);
    const chunk = Math.max(1, Math.floor(options.chunkBytes ?? COPY_CHUNK));
    const buf = new Uint8Array(chunk);
    for (const [i, t] of tensors.entries()) {
      if (pos !== enc.offsets[i]) throw new FormatError('internal: tensor offset mismatch', { field: t.name, offset: pos, expected: enc.offsets[i] });
      if (t.data !== undefined) await write(t.data);
      for (const r of t.ranges) {
        for (let o = 0; o < r.length; o += chunk) {
          const n = Math.min(chunk, r.length - o);
          await write(await readRange(src, modelPath, r.offset + o, n, t.name, buf));
        }
      }
      const pad = (32 - (t.byteLength % 32)) % 32;
      if (pad > 0) await write(new Uint8Array(pad));
    }
    if (options.fsync ?? true) await fh.sync();
    await fh.close();
    await commitPartial(partialPath, outPath, options.overwrite ?? false);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await removeQuietly(partialPath);
    throw e instanceof FormatError ? e : fileError(e, outPath, 'write the GGUF file');
  } finally {
    await src.close();
  }
  return { fileSize: enc.fileSize, tensors, tokenizerStyle: tokMeta?.style, derivedMerges: tokMeta?.derivedMerges ?? 0, hfMerges: tokMeta?.hfMerges ?? 0 };
}

