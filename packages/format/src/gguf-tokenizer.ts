import { InvalidValueError, UnsupportedModelError } from './errors.js';
import { GgufMetadataReader, type GgufHeader } from './gguf.js';
import { GgufTokenType } from './export-gguf.js';
import type { HfTokenizerSidecar } from './hf-sidecar.js';
import { gpt2TextToBytes, spmPieceToBytes } from './hf-tokenizer.js';
import { parseTokenizer, writeTokenizer, type TokenizerData } from './tokenizer-file.js';

/**
 * A Hugging Face tokenizer.json rebuilt from GGUF tokenizer metadata, so that a GGUF model
 * (converted to `.m`, or later run in place) encodes prompts as the original Hugging Face
 * tokenizer does.
 *
 * GGUF keeps tokens, token types, merges (byte-level) or scores (SentencePiece), the special
 * ids and `tokenizer.ggml.pre`, llama.cpp's name for the pre-tokenizer of the model family.
 * Each name maps to the pre-tokenizer (and normalizer) that family's tokenizer.json uses.
 */

/** Llama 3's split: contractions, letter runs, digit groups of at most 3, punctuation, newlines, spaces. */
export const LLAMA3_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** Qwen2/2.5/3's: the same with single digits. */
export const QWEN2_SPLIT_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** How a byte-level family splits text before BPE, as tokenizer.json spells it. */
interface ByteLevelFamily {
  readonly regex: string | undefined;
  readonly nfc: boolean;
  /** A pre-token that is a whole token is taken as is (Llama 3's `ignore_merges`). */
  readonly ignoreMerges: boolean;
  /** llama.cpp's default for add_bos when the metadata does not say. */
  readonly addBos: boolean;
}

const LLAMA3: ByteLevelFamily = { regex: LLAMA3_SPLIT_REGEX, nfc: false, ignoreMerges: true, addBos: true };
const QWEN2: ByteLevelFamily = { regex: QWEN2_SPLIT_REGEX, nfc: true, ignoreMerges: false, addBos: false };
/** GPT-2's own regex inside the ByteLevel pre-tokenizer (`use_regex`). */
const GPT2: ByteLevelFamily = { regex: undefined, nfc: false, ignoreMerges: false, addBos: false };

/**
 * `tokenizer.ggml.pre` names (as llama.cpp's llama-vocab.cpp groups them) whose Hugging Face
 * pre-tokenizer we reproduce. "default" (no pre-tokenizer recorded) is read as a plain
 * byte-level BPE, which splits with GPT-2's regex in Hugging Face's tokenizers.
 */
export const GGUF_PRE_TOKENIZERS: Readonly<Record<string, ByteLevelFamily>> = Object.freeze({
  llama3: LLAMA3,
  'llama-v3': LLAMA3,
  'llama-bpe': LLAMA3,
  falcon3: LLAMA3,
  qwen2: QWEN2,
  'deepseek-r1-qwen': QWEN2,
  default: GPT2,
  'gpt-2': GPT2,
});

/** The `tokenizer.ggml.pre` name for a tokenizer.json pre-tokenizer, if it is one of ours. */
export function ggufPreNameOf(preTokenizer: unknown): 'llama-bpe' | 'qwen2' | 'gpt-2' | undefined {
  const json = JSON.stringify(preTokenizer ?? null);
  if (json.includes(JSON.stringify(LLAMA3_SPLIT_REGEX))) return 'llama-bpe';
  if (json.includes(JSON.stringify(QWEN2_SPLIT_REGEX))) return 'qwen2';
  const p = preTokenizer as { type?: unknown; use_regex?: unknown } | null;
  if (p?.type === 'ByteLevel' && p.use_regex !== false) return 'gpt-2';
  return undefined;
}

interface AddedToken {
  id: number;
  content: string;
  single_word: false;
  lstrip: false;
  rstrip: false;
  normalized: false;
  special: boolean;
}

function templateProcessing(bos: string | undefined, bosId: number | undefined, eos: string | undefined, eosId: number | undefined): Record<string, unknown> | null {
  const single: unknown[] = [];
  const pair: unknown[] = [];
  const specials: Record<string, unknown> = {};
  if (bos !== undefined && bosId !== undefined) {
    single.push({ SpecialToken: { id: bos, type_id: 0 } });
    pair.push({ SpecialToken: { id: bos, type_id: 0 } });
    specials[bos] = { id: bos, ids: [bosId], tokens: [bos] };
  }
  single.push({ Sequence: { id: 'A', type_id: 0 } });
  pair.push({ Sequence: { id: 'A', type_id: 0 } });
  if (eos !== undefined && eosId !== undefined) {
    single.push({ SpecialToken: { id: eos, type_id: 0 } });
    pair.push({ SpecialToken: { id: eos, type_id: 0 } });
    specials[eos] = { id: eos, ids: [eosId], tokens: [eos] };
  }
  pair.push({ Sequence: { id: 'B', type_id: 1 } });
  if (Object.keys(specials).length === 0) return null;
  return { type: 'TemplateProcessing', single, pair, special_tokens: specials };
}

/**
 * Merges of a SentencePiece BPE vocabulary that has scores but no merge list, as Hugging Face
 * derives them (transformers' GGUF and SentencePiece converters): every split of a piece into
 * two pieces (by characters) is a merge; splits of one piece are ordered by their halves'
 * scores, highest first, and all merges by the merged piece's score, highest first (stable).
 */
export function mergesFromScores(tokens: readonly string[], scores: ArrayLike<number>): [string, string][] {
  const score = new Map<string, number>();
  tokens.forEach((t, i) => score.set(t, scores[i]!));
  const merges: { l: string; r: string; s: number; order: number }[] = [];
  for (const [piece, s] of score) {
    const chars = Array.from(piece);
    const local: { l: string; r: string; sl: number; sr: number }[] = [];
    for (let k = 1; k < chars.length; k++) {
      const l = chars.slice(0, k).join('');
      const r = chars.slice(k).join('');
      const sl = score.get(l);
      const sr = score.get(r);
      if (sl !== undefined && sr !== undefined) local.push({ l, r, sl, sr });
    }
    local.sort((a, b) => b.sl - a.sl || b.sr - a.sr);
    for (const m of local) merges.push({ l: m.l, r: m.r, s, order: merges.length });
  }
  merges.sort((a, b) => b.s - a.s || a.order - b.order);
  return merges.map((m) => [m.l, m.r]);
}

/**
 * GGUF tokenizer metadata → a Hugging Face tokenizer (tokenizer.json + config).
 * - "gpt2" (byte-level BPE): vocab and merges as stored, control and user-defined tokens as
 *   added tokens, the pre-tokenizer of `tokenizer.ggml.pre` (GGUF_PRE_TOKENIZERS; another name
 *   is refused rather than approximated).
 * - "llama" (SentencePiece BPE): vocab with byte fallback, merges derived from the scores
 *   (mergesFromScores), the "▁" dummy prefix as Llama 2's and Mistral's tokenizer.json write it
 *   (`tokenizer.ggml.add_space_prefix`, default true).
 * BOS/EOS are added as `tokenizer.ggml.add_bos_token` / `add_eos_token` say (llama.cpp's
 * defaults otherwise); the chat template and special-token texts go to the config.
 */
export function ggufToHfTokenizer(header: GgufHeader, path?: string): HfTokenizerSidecar {
  const md = new GgufMetadataReader(header, path);
  const model = tokenizerModel(md, path);
  const tokensArr = md.array('tokenizer.ggml.tokens');
  if (tokensArr === undefined || tokensArr.items.some((t) => typeof t !== 'string')) {
    throw new InvalidValueError('tokenizer.ggml.tokens must be a string array', { path, field: 'tokenizer.ggml.tokens' });
  }
  const n = tokensArr.items.length;
  const tokens = (tokensArr.items as string[]).map((t, id) => (t === '' ? `[EMPTY_${id}]` : t));
  const numArray = (key: string): readonly number[] | undefined => perTokenNumbers(md, key, n, path);
  const types = numArray('tokenizer.ggml.token_type') ?? tokens.map(() => GgufTokenType.NORMAL);
  const id = (key: string): number | undefined => tokenIdOf(md, key, n, path);
  const bosId = id('tokenizer.ggml.bos_token_id');
  const eosId = id('tokenizer.ggml.eos_token_id');
  const unkId = id('tokenizer.ggml.unknown_token_id');

  const vocab: Record<string, number> = {};
  const added: AddedToken[] = [];
  const asAdded = (i: number, special: boolean): void => {
    added.push({ id: i, content: tokens[i]!, single_word: false, lstrip: false, rstrip: false, normalized: false, special });
  };
  let tokenizer: Record<string, unknown>;
  let addBos: boolean;
  if (model === 'gpt2') {
    const pre = md.string('tokenizer.ggml.pre') ?? 'default';
    const family = GGUF_PRE_TOKENIZERS[pre];
    if (family === undefined) {
      throw new UnsupportedModelError('unsupported GGUF pre-tokenizer (its Hugging Face split is not known here)', { path, field: 'tokenizer.ggml.pre', offset: md.entry('tokenizer.ggml.pre')?.offset, expected: Object.keys(GGUF_PRE_TOKENIZERS).join(', '), actual: pre });
    }
    tokens.forEach((t, i) => {
      const type = types[i];
      if (type === GgufTokenType.CONTROL || type === GgufTokenType.UNKNOWN) asAdded(i, true);
      else if (type === GgufTokenType.USER_DEFINED) asAdded(i, false);
      else vocab[t] = i;
    });
    const mergesArr = md.array('tokenizer.ggml.merges');
    if (mergesArr === undefined || mergesArr.items.some((m) => typeof m !== 'string')) {
      throw new InvalidValueError('a gpt2 tokenizer needs tokenizer.ggml.merges (a string array)', { path, field: 'tokenizer.ggml.merges' });
    }
    const merges = (mergesArr.items as string[]).map((m, i) => {
      const sp = m.indexOf(' ');
      if (sp <= 0 || sp === m.length - 1 || m.indexOf(' ', sp + 1) >= 0) {
        throw new InvalidValueError('a merge must be two tokens separated by one space', { path, field: `tokenizer.ggml.merges[${i}]`, actual: JSON.stringify(m).slice(0, 40) });
      }
      return [m.slice(0, sp), m.slice(sp + 1)];
    });
    const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: family.regex === undefined };
    addBos = md.bool('tokenizer.ggml.add_bos_token') ?? family.addBos;
    tokenizer = {
      normalizer: family.nfc ? { type: 'NFC' } : null,
      pre_tokenizer: family.regex === undefined ? byteLevel : { type: 'Sequence', pretokenizers: [{ type: 'Split', pattern: { Regex: family.regex }, behavior: 'Isolated', invert: false }, byteLevel] },
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: family.ignoreMerges, vocab, merges },
    };
  } else {
    const scores = numArray('tokenizer.ggml.scores');
    if (scores === undefined) throw new InvalidValueError('a llama (SentencePiece) tokenizer needs tokenizer.ggml.scores', { path, field: 'tokenizer.ggml.scores' });
    tokens.forEach((t, i) => {
      vocab[t] = i;
      const type = types[i];
      if (type === GgufTokenType.CONTROL || type === GgufTokenType.UNKNOWN) asAdded(i, true);
      else if (type === GgufTokenType.USER_DEFINED) asAdded(i, false);
    });
    const spacePrefix = md.bool('tokenizer.ggml.add_space_prefix') ?? true;
    const replaceSpaces = { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' };
    addBos = md.bool('tokenizer.ggml.add_bos_token') ?? true;
    tokenizer = {
      normalizer: spacePrefix ? { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: '\u2581' }, replaceSpaces] } : replaceSpaces,
      pre_tokenizer: null,
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          ...(spacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: unkId !== undefined ? tokens[unkId] : null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        vocab,
        merges: mergesFromScores(tokens, scores),
      },
    };
  }
  const addEos = md.bool('tokenizer.ggml.add_eos_token') ?? false;
  const bos = bosId !== undefined ? tokens[bosId] : undefined;
  const eos = eosId !== undefined ? tokens[eosId] : undefined;
  const template = md.string('tokenizer.chat_template');
  tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    ...tokenizer,
    post_processor: templateProcessing(addBos ? bos : undefined, bosId, addEos ? eos : undefined, eosId),
  };
  const config: Record<string, unknown> = {
    bos_token: bos ?? null,
    eos_token: eos ?? null,
    unk_token: unkId !== undefined ? tokens[unkId] : null,
    add_bos_token: addBos,
    add_eos_token: addEos,
    clean_up_tokenization_spaces: false,
  };
  if (template !== undefined && template !== '') config.chat_template = template;
  return { tokenizer, config };
}

/**
 * GGUF tokenizer metadata → `.t` data.
 * - "llama" (SentencePiece): BYTE tokens `<0xNN>` → the raw byte, control/unknown tokens kept
 *   as text, "▁" → space elsewhere; scores kept.
 * - "gpt2" (byte-level BPE): normal tokens mapped from GPT-2's unicode spelling to raw bytes;
 *   control and user-defined tokens (stored as plain text by convert_hf_to_gguf.py) as UTF-8;
 *   score = −id, as dllama's converter does.
 * EOS: eos_token_id, then eot/eom ids when present.
 */
export function ggufTokenizerToData(header: GgufHeader, path?: string): TokenizerData {
  const md = new GgufMetadataReader(header, path);
  const model = tokenizerModel(md, path);
  const tokens = md.array('tokenizer.ggml.tokens');
  if (tokens === undefined || tokens.raw === undefined) throw new InvalidValueError('tokenizer.ggml.tokens must be a string array', { path, field: 'tokenizer.ggml.tokens' });
  const n = tokens.items.length;
  const numArray = (key: string): readonly number[] | undefined => perTokenNumbers(md, key, n, path);
  const types = numArray('tokenizer.ggml.token_type');
  const scoresIn = numArray('tokenizer.ggml.scores');
  const vocab: Uint8Array[] = [];
  const scores = new Float32Array(n);
  for (let id = 0; id < n; id++) {
    const raw = tokens.raw[id]!;
    const text = tokens.items[id] as string;
    const type = types?.[id] ?? GgufTokenType.NORMAL;
    let bytes: Uint8Array;
    if (type === GgufTokenType.CONTROL || type === GgufTokenType.UNKNOWN || type === GgufTokenType.USER_DEFINED || type === GgufTokenType.UNUSED) bytes = raw;
    else if (model === 'llama') bytes = spmPieceToBytes(text, type === GgufTokenType.BYTE);
    else bytes = gpt2TextToBytes(text);
    // `.t` tokens are never empty; llama.cpp itself renames empty tokens.
    vocab.push(bytes.length > 0 ? bytes : new TextEncoder().encode(`[EMPTY_${id}]`));
    scores[id] = model === 'llama' ? (scoresIn?.[id] ?? 0) : -id;
  }
  const id = (key: string): number | undefined => tokenIdOf(md, key, n, path);
  let bosId = id('tokenizer.ggml.bos_token_id');
  if (bosId === undefined && types !== undefined) {
    const first = types.findIndex((t) => t === GgufTokenType.CONTROL);
    if (first >= 0) bosId = first;
  }
  if (bosId === undefined) throw new InvalidValueError('cannot resolve the BOS token', { path, field: 'tokenizer.ggml.bos_token_id', expected: 'present' });
  const eosIds: number[] = [];
  for (const k of ['tokenizer.ggml.eos_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.eom_token_id']) {
    const v = id(k);
    if (v !== undefined && !eosIds.includes(v)) eosIds.push(v);
  }
  const addBos = md.bool('tokenizer.ggml.add_bos_token') ?? model === 'llama';
  const chatTemplate = md.string('tokenizer.chat_template');
  return parseTokenizer(writeTokenizer({ vocab, scores, bosId, eosIds, addBos, chatTemplate: chatTemplate === '' ? undefined : chatTemplate }));
}

/** `tokenizer.ggml.model`: "llama" (SentencePiece) or "gpt2" (byte-level BPE); anything else is refused. */
function tokenizerModel(md: GgufMetadataReader, path: string | undefined): 'llama' | 'gpt2' {
  const model = md.string('tokenizer.ggml.model');
  if (model !== 'llama' && model !== 'gpt2') {
    throw new UnsupportedModelError('unsupported GGUF tokenizer model', { path, field: 'tokenizer.ggml.model', offset: md.entry('tokenizer.ggml.model')?.offset, expected: 'llama or gpt2', actual: String(model) });
  }
  return model;
}

/** A metadata array of one number per token (`n` tokens), or undefined when absent. */
function perTokenNumbers(md: GgufMetadataReader, key: string, n: number, path: string | undefined): readonly number[] | undefined {
  const arr = md.array(key);
  if (arr === undefined) return undefined;
  if (arr.items.length !== n || arr.items.some((x) => typeof x !== 'number')) {
    throw new InvalidValueError('array must hold one number per token', { path, field: key, offset: md.entry(key)?.offset, expected: n, actual: arr.items.length });
  }
  return arr.items as number[];
}

/** A token id from the metadata, checked against the vocabulary of `n` tokens; undefined when absent. */
function tokenIdOf(md: GgufMetadataReader, key: string, n: number, path: string | undefined): number | undefined {
  const v = md.int(key);
  if (v === undefined) return undefined;
  if (v < 0 || v >= n) throw new InvalidValueError('token id outside the vocabulary', { path, field: key, offset: md.entry(key)?.offset, expected: `0..${n - 1}`, actual: v });
  return v;
}
