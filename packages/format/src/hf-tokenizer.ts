import { InvalidValueError, UnsupportedModelError } from './errors.js';
import { parseTokenizer, TOKENIZER_LIMITS, writeTokenizer, type TokenizerData } from './tokenizer-file.js';

/**
 * GPT-2's byte ↔ unicode table (openai/gpt-2 encoder.py `bytes_to_unicode`): printable bytes
 * map to themselves, the other 68 to U+0100 onwards in byte order. Byte-level BPE vocabularies
 * (GPT-2, Llama 3, Qwen) spell their tokens in these characters.
 */
export const GPT2_BYTE_TO_CHAR: readonly string[] = (() => {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable(b) ? b : 256 + n++));
  return Object.freeze(out);
})();

const CHAR_TO_BYTE = new Map<string, number>(GPT2_BYTE_TO_CHAR.map((c, b) => [c, b]));
const utf8 = new TextEncoder();

/**
 * A byte-level token's text → its raw bytes. Characters outside the table are kept as UTF-8,
 * as dllama's convert-tokenizer-hf.py does.
 */
export function gpt2TextToBytes(text: string): Uint8Array {
  const out: number[] = [];
  for (const ch of text) {
    const b = CHAR_TO_BYTE.get(ch);
    if (b !== undefined) out.push(b);
    else for (const u of utf8.encode(ch)) out.push(u);
  }
  return Uint8Array.from(out);
}

export function bytesToGpt2Text(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += GPT2_BYTE_TO_CHAR[b]!;
  return s;
}

/** SentencePiece's whitespace mark. */
export const SPM_SPACE = '\u2581';
export const SPM_BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** A SentencePiece piece → bytes: `<0xNN>` (when `isByte`) is the raw byte, "▁" is a space. */
export function spmPieceToBytes(piece: string, isByte: boolean): Uint8Array {
  const m = isByte ? SPM_BYTE_PIECE.exec(piece) : null;
  if (m) return Uint8Array.of(parseInt(m[1]!, 16));
  return utf8.encode(piece.replaceAll(SPM_SPACE, ' '));
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Does any node of the JSON tree have `type: "ByteLevel"` (pre-tokenizer or decoder)? */
function mentionsByteLevel(v: unknown, depth = 0): boolean {
  if (depth > 16 || v === null || typeof v !== 'object') return false;
  if (Array.isArray(v)) return v.some((x) => mentionsByteLevel(x, depth + 1));
  if ((v as Record<string, unknown>).type === 'ByteLevel') return true;
  return Object.values(v).some((x) => mentionsByteLevel(x, depth + 1));
}

/** Which vocabulary family a tokenizer.json holds. */
export type HfTokenizerStyle = 'bytelevel' | 'sentencepiece';

export interface HfTokenizerInput {
  /** Parsed tokenizer.json. */
  tokenizer: unknown;
  /** Parsed tokenizer_config.json, if present. */
  tokenizerConfig?: unknown;
  /** Parsed config.json (fallback for bos_token_id / eos_token_id). */
  config?: unknown;
  /** Chat template from a separate chat_template.jinja, used when tokenizer_config has none. */
  chatTemplateFile?: string;
}

export interface HfTokenizerResult {
  readonly style: HfTokenizerStyle;
  readonly data: TokenizerData;
}

function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

function pickChatTemplate(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.filter(isObject);
    const t = named.find((x) => x.name === 'default') ?? named[0];
    return typeof t?.template === 'string' ? t.template : undefined;
  }
  return undefined;
}

/** A tokenizer.json's tokens as `.t` pieces (raw bytes), by id, with what convertHfTokenizer needs besides. */
export interface HfVocab {
  readonly style: HfTokenizerStyle;
  /** Bytes of every id; ids the tokenizer leaves unused get a `<|unused_N|>` placeholder. */
  readonly vocab: Uint8Array[];
  /** Unigram scores, else −id. */
  readonly scores: Float32Array;
  /** Token text → id (an added token wins over a model token of the same text). */
  readonly idOf: Map<string, number>;
  readonly added: readonly Record<string, unknown>[];
}

/**
 * The vocabulary of a parsed tokenizer.json, each token as the bytes it stands for:
 * - byte-level BPE (a `ByteLevel` pre-tokenizer or decoder): GPT-2's unicode spelling mapped
 *   back to raw bytes;
 * - SentencePiece-style (BPE with byte fallback, or Unigram): "▁" → space, `<0xNN>` → the byte;
 * - added tokens as their UTF-8 text.
 */
export function readHfVocab(tj: unknown): HfVocab {
  if (!isObject(tj) || !isObject(tj.model)) {
    throw new InvalidValueError('tokenizer.json has no "model" object', { field: 'model' });
  }
  const model = tj.model;
  const type = typeof model.type === 'string' ? model.type : 'BPE';
  const added = Array.isArray(tj.added_tokens) ? tj.added_tokens.filter(isObject) : [];
  const texts: (string | undefined)[] = [];
  const scoresIn: (number | undefined)[] = [];
  const isAdded = new Set<number>();
  const setToken = (id: unknown, text: unknown, field: string): void => {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0 || id >= TOKENIZER_LIMITS.maxVocab) {
      throw new InvalidValueError('token id out of range', { field, expected: `0..${TOKENIZER_LIMITS.maxVocab - 1}`, actual: String(id) });
    }
    if (typeof text !== 'string') throw new InvalidValueError('token text must be a string', { field, actual: typeof text });
    texts[id] = text;
  };

  let style: HfTokenizerStyle;
  if (type === 'BPE') {
    if (!isObject(model.vocab)) throw new InvalidValueError('BPE model has no vocab object', { field: 'model.vocab' });
    for (const [text, id] of Object.entries(model.vocab)) setToken(id, text, `model.vocab[${JSON.stringify(text).slice(0, 40)}]`);
    style = mentionsByteLevel(tj.pre_tokenizer) || mentionsByteLevel(tj.decoder) ? 'bytelevel' : 'sentencepiece';
  } else if (type === 'Unigram') {
    if (!Array.isArray(model.vocab)) throw new InvalidValueError('Unigram model has no vocab list', { field: 'model.vocab' });
    if (model.vocab.length > TOKENIZER_LIMITS.maxVocab) {
      throw new InvalidValueError('vocabulary too large', { field: 'model.vocab', expected: `≤ ${TOKENIZER_LIMITS.maxVocab}`, actual: model.vocab.length });
    }
    model.vocab.forEach((e: unknown, id: number) => {
      if (!Array.isArray(e) || typeof e[1] !== 'number') throw new InvalidValueError('Unigram entry must be [piece, score]', { field: `model.vocab[${id}]` });
      setToken(id, e[0], `model.vocab[${id}]`);
      scoresIn[id] = e[1];
    });
    style = 'sentencepiece';
  } else {
    throw new UnsupportedModelError('unsupported tokenizer.json model type', { field: 'model.type', expected: 'BPE or Unigram', actual: type });
  }
  for (const [i, a] of added.entries()) {
    setToken(a.id, a.content, `added_tokens[${i}]`);
    isAdded.add(a.id as number);
  }

  const size = texts.length;
  if (size === 0) throw new InvalidValueError('tokenizer has no tokens', { field: 'model.vocab' });
  const idOf = new Map<string, number>();
  texts.forEach((t, id) => {
    if (t !== undefined && (!idOf.has(t) || isAdded.has(id))) idOf.set(t, id);
  });

  const vocab: Uint8Array[] = [];
  const scores = new Float32Array(size);
  for (let id = 0; id < size; id++) {
    const t = texts[id];
    let bytes: Uint8Array;
    if (t === undefined || t.length === 0) {
      // Ids the tokenizer leaves unused: a placeholder keeps every later id in place.
      bytes = utf8.encode(`<|unused_${id}|>`);
    } else if (isAdded.has(id)) {
      bytes = utf8.encode(t);
    } else if (style === 'bytelevel') {
      bytes = gpt2TextToBytes(t);
    } else {
      bytes = spmPieceToBytes(t, true);
    }
    vocab.push(bytes);
    scores[id] = scoresIn[id] ?? -id;
  }
  return { style, vocab, scores, idOf, added };
}

/**
 * tokenizer.json (+ tokenizer_config.json, config.json) → `.t` data, as dllama's
 * convert-tokenizer-hf.py does it:
 * - byte-level BPE (a `ByteLevel` pre-tokenizer or decoder): tokens mapped from GPT-2's
 *   unicode spelling back to raw bytes, added tokens as their UTF-8 text, score = −id;
 * - SentencePiece-style (BPE with byte fallback, or Unigram): "▁" → space, `<0xNN>` → the raw
 *   byte, control/added tokens as their text; Unigram keeps its scores, BPE gets score = −id
 *   (SentencePiece numbers BPE pieces in merge order, so the order is the same).
 * BOS/EOS come from tokenizer_config.json, else config.json; several EOS ids are kept.
 * add_bos follows `add_bos_token`; when it is absent, BOS is added only if the tokenizer
 * declares a BOS token (Qwen declares none and must not get one prepended).
 */
export function convertHfTokenizer(input: HfTokenizerInput): HfTokenizerResult {
  const { style, vocab, scores, idOf, added } = readHfVocab(input.tokenizer);
  const size = vocab.length;

  const tc = isObject(input.tokenizerConfig) ? input.tokenizerConfig : {};
  const cfg = isObject(input.config) ? input.config : {};
  const lookup = (v: unknown): number | undefined => {
    const t = tokenText(v);
    return t === undefined ? undefined : idOf.get(t);
  };
  const validId = (v: unknown): number | undefined => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v < size ? v : undefined);

  const declaredBos = lookup(tc.bos_token);
  let bosId = declaredBos ?? validId(cfg.bos_token_id);
  if (bosId === undefined && style === 'bytelevel') {
    // The .t format needs a BOS id (it also marks where special tokens start): take the first
    // special added token.
    const specials = added.filter((a) => a.special === true).map((a) => a.id as number);
    if (specials.length > 0) bosId = Math.min(...specials);
  }
  if (bosId === undefined) {
    throw new InvalidValueError('cannot resolve the BOS token', { field: 'bos_token', expected: 'tokenizer_config.json bos_token or config.json bos_token_id' });
  }
  const eosIds: number[] = [];
  const addEos = (id: number | undefined): void => {
    if (id !== undefined && !eosIds.includes(id)) eosIds.push(id);
  };
  addEos(lookup(tc.eos_token));
  const cfgEos = cfg.eos_token_id;
  if (Array.isArray(cfgEos)) cfgEos.forEach((e) => addEos(validId(e)));
  else addEos(validId(cfgEos));

  const addBos = typeof tc.add_bos_token === 'boolean' ? tc.add_bos_token : declaredBos !== undefined || (style === 'sentencepiece' && tc.bos_token === undefined);
  const chatTemplate = pickChatTemplate(tc.chat_template) ?? input.chatTemplateFile;
  const data = parseTokenizer(writeTokenizer({ vocab, scores, bosId, eosIds, addBos, chatTemplate }));
  return { style, data };
}
