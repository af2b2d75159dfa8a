import type { TokenizerData } from '@airllm/format';
import { TokenizerError } from './errors.js';

/**
 * Text ↔ token ids for the two vocabulary families found in `.t` files.
 *
 * - SentencePiece-style (Llama 2, TinyStories: bos_id 1, 256 byte-fallback pieces right after
 *   the control tokens, stored either as the text `<0xNN>` or as the raw byte): llama2.c's
 *   algorithm — dummy-prefix space, one piece per UTF-8 character with byte fallback, then
 *   greedy merging of the best-scoring adjacent pair. Control tokens (`<unk>`, BOS, EOS) and
 *   byte pieces are never matched against text. dllama treats every id ≥ bos_id as special on
 *   such vocabularies and so never merges (FORMAT.md §d.2); this is what it should have done.
 * - Byte-level BPE (Llama 3, Qwen: regular ids below bos_id, specials from bos_id): dllama's
 *   algorithm exactly, so token ids match dllama's.
 */
export type TokenizerKind = 'sentencepiece' | 'bytelevel';

const enc = new TextEncoder();

/** Byte-wise comparison, the order both dllama and llama2.c sort their vocabularies in. */
function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** Key for Map lookups of byte strings (latin1: one char per byte, reversible). */
function key(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

function hex2(b: number): string {
  return b.toString(16).toUpperCase().padStart(2, '0');
}

/** Where the 256 byte-fallback pieces start (the text `<0xNN>` or the raw byte), or -1. */
function findBytePieces(vocab: readonly Uint8Array[]): number {
  const isByte = (id: number, b: number): boolean => {
    const p = vocab[id];
    if (p === undefined) return false;
    if (p.length === 1 && p[0] === b) return true;
    return p.length === 6 && key(p) === `<0x${hex2(b)}>`;
  };
  for (const start of [3, 0, 1, 2, 4]) {
    let ok = true;
    for (let b = 0; b < 256 && ok; b++) ok = isByte(start + b, b);
    if (ok) return start;
  }
  return -1;
}

export class Tokenizer {
  readonly kind: TokenizerKind;
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosIds: readonly number[];
  readonly addBos: boolean;
  readonly chatTemplate: string | undefined;
  /** Bytes each token decodes to (byte pieces as the raw byte, control tokens empty). */
  readonly pieces: readonly Uint8Array[];
  readonly #vocab: readonly Uint8Array[];
  readonly #scores: Float32Array;
  /** Lookup of mergeable/matchable pieces → id (first id wins on duplicates). */
  readonly #lookup = new Map<string, number>();
  readonly #byteBase: number;
  /** Byte-level mode: special tokens (ids ≥ bos) in id order, for first-match scanning. */
  readonly #specials: { id: number; bytes: Uint8Array }[] = [];

  /** `kind` forces an algorithm (default: detected from the vocabulary). */
  constructor(data: TokenizerData, kind?: TokenizerKind) {
    this.#vocab = data.vocab;
    this.#scores = data.scores;
    this.vocabSize = data.vocab.length;
    this.bosId = data.bosId;
    this.eosIds = data.eosIds;
    this.addBos = data.addBos;
    this.chatTemplate = data.chatTemplate;
    this.#byteBase = findBytePieces(data.vocab);
    const looksSentencePiece = this.#byteBase >= 0 && data.bosId >= 0 && data.bosId < this.#byteBase;
    this.kind = kind ?? (looksSentencePiece ? 'sentencepiece' : 'bytelevel');
    if (this.kind === 'sentencepiece' && this.#byteBase < 0) {
      throw new TokenizerError('a SentencePiece tokenizer needs the 256 byte-fallback pieces <0x00>…<0xFF>');
    }
    const control = new Set<number>([...this.eosIds, ...(this.bosId >= 0 ? [this.bosId] : [])]);
    if (this.kind === 'sentencepiece') {
      // Ids below the byte pieces are control tokens (<unk>, <s>, </s>).
      for (let id = 0; id < this.#byteBase; id++) control.add(id);
      this.pieces = data.vocab.map((p, id) =>
        control.has(id) ? new Uint8Array(0) : this.#isBytePiece(id) ? Uint8Array.of(id - this.#byteBase) : p,
      );
      data.vocab.forEach((p, id) => {
        if (control.has(id) || this.#isBytePiece(id)) return;
        const k = key(p);
        if (!this.#lookup.has(k)) this.#lookup.set(k, id);
      });
    } else {
      const regularEnd = this.bosId >= 0 ? this.bosId : this.vocabSize;
      this.pieces = data.vocab.map((p, id) => (id === this.bosId ? new Uint8Array(0) : p));
      // dllama binary-searches the byte-wise sorted regular vocabulary; with duplicates the
      // result is the first id in sorted order, which is the smallest id for a stable sort.
      const order = [...Array(regularEnd).keys()].sort((a, b) => compareBytes(data.vocab[a]!, data.vocab[b]!) || a - b);
      for (const id of order) {
        const k = key(data.vocab[id]!);
        if (!this.#lookup.has(k)) this.#lookup.set(k, id);
      }
      for (let id = regularEnd; id < this.vocabSize; id++) this.#specials.push({ id, bytes: data.vocab[id]! });
    }
  }

  #isBytePiece(id: number): boolean {
    return this.#byteBase >= 0 && id >= this.#byteBase && id < this.#byteBase + 256;
  }

  isControl(id: number): boolean {
    return this.pieces[id]?.length === 0;
  }

  isEos(id: number): boolean {
    return this.eosIds.includes(id);
  }

  /**
   * Encode text. `bos` (default: the tokenizer's add_bos) prepends BOS. With `specials`
   * (byte-level vocabularies only, default true) special-token texts such as `<|im_start|>` in
   * the input become their ids, as in dllama; SentencePiece control tokens never do.
   */
  encode(text: string, options: { bos?: boolean; specials?: boolean } = {}): number[] {
    const bos = options.bos ?? this.addBos;
    const out: number[] = [];
    if (bos && this.bosId >= 0) out.push(this.bosId);
    const bytes = enc.encode(text);
    const body = this.kind === 'sentencepiece' ? this.#encodeSentencePiece(bytes) : this.#encodeByteLevel(bytes, options.specials ?? true);
    for (const id of body) out.push(id);
    return out;
  }

  /** llama2.c's `encode` (without BOS/EOS), with byte pieces and control tokens unmatchable. */
  #encodeSentencePiece(text: Uint8Array): number[] {
    const tokens: number[] = [];
    if (text.length > 0) {
      const space = this.#lookup.get(' ');
      if (space !== undefined) tokens.push(space);
    }
    for (let i = 0; i < text.length; ) {
      // One UTF-8 character: a lead byte plus up to 3 continuation bytes.
      let end = i + 1;
      while (end < text.length && (text[end]! & 0xc0) === 0x80 && end - i < 4) end++;
      const ch = text.subarray(i, end);
      const id = this.#lookup.get(key(ch));
      if (id !== undefined) tokens.push(id);
      else for (const b of ch) tokens.push(this.#byteBase + b);
      i = end;
    }
    return this.#mergePairs(tokens, (id) => (this.#isBytePiece(id) ? undefined : key(this.#vocab[id]!)));
  }

  /** dllama's Tokenizer::encode body (FORMAT.md §d.2 steps 3–4). */
  #encodeByteLevel(text: Uint8Array, specials: boolean): number[] {
    const tokens: number[] = [];
    let pending: number[] = [];
    outer: for (let i = 0; i < text.length; ) {
      if (specials) {
        for (const s of this.#specials) {
          const n = s.bytes.length;
          if (n > 0 && i + n <= text.length && compareBytes(text.subarray(i, i + n), s.bytes) === 0) {
            if (pending.length > 0) throw this.#noMatch(pending, i);
            tokens.push(s.id);
            i += n;
            continue outer;
          }
        }
      }
      pending.push(text[i]!);
      i++;
      const id = this.#lookup.get(String.fromCharCode(...pending));
      if (id !== undefined) {
        tokens.push(id);
        pending = [];
      }
    }
    if (pending.length > 0) throw this.#noMatch(pending, text.length);
    return this.#mergePairs(tokens, (id) => (id < (this.bosId >= 0 ? this.bosId : this.vocabSize) ? key(this.#vocab[id]!) : undefined));
  }

  #noMatch(pending: number[], offset: number): TokenizerError {
    return new TokenizerError(
      `bytes ${pending.map((b) => `0x${hex2(b)}`).join(' ')} before byte ${offset} of the prompt match no token of this vocabulary`,
    );
  }

  /**
   * Repeatedly merge the adjacent pair whose concatenation is a token with the highest score
   * (strictly greater wins, so the leftmost pair wins ties). `text(id)` gives the string a
   * token contributes to a merge, or undefined when it never merges.
   */
  #mergePairs(tokens: number[], text: (id: number) => string | undefined): number[] {
    const strs = tokens.map(text);
    for (;;) {
      let bestScore = -Infinity;
      let bestId = -1;
      let bestIdx = -1;
      for (let i = 0; i + 1 < tokens.length; i++) {
        const a = strs[i];
        const b = strs[i + 1];
        if (a === undefined || b === undefined) continue;
        const id = this.#lookup.get(a + b);
        if (id !== undefined && this.#scores[id]! > bestScore) {
          bestScore = this.#scores[id]!;
          bestId = id;
          bestIdx = i;
        }
      }
      if (bestIdx < 0) return tokens;
      tokens.splice(bestIdx, 2, bestId);
      strs.splice(bestIdx, 2, text(bestId));
    }
  }

  /** A streaming decoder that only ever emits complete UTF-8. */
  decoder(): TokenDecoder {
    return new TokenDecoder(this);
  }

  /** Decode a whole sequence (after BOS the leading space of SentencePiece pieces is dropped). */
  decode(ids: readonly number[]): string {
    const d = this.decoder();
    let s = '';
    for (const id of ids) s += d.push(id);
    return s + d.flush();
  }
}

/**
 * Turns a token stream into text, holding back incomplete UTF-8 sequences until they complete
 * (a multi-byte character can be split across byte-fallback tokens). Invalid bytes become
 * U+FFFD.
 */
export class TokenDecoder {
  #pending: number[] = [];
  #prev = -1;
  readonly #utf8 = new TextDecoder('utf-8', { fatal: false });

  constructor(private readonly tok: Tokenizer) {}

  push(id: number): string {
    const prev = this.#prev;
    this.#prev = id;
    let piece = this.tok.pieces[id];
    if (piece === undefined) return '';
    // SentencePiece's decoder strips the dummy-prefix space of the first piece after BOS.
    if (this.tok.kind === 'sentencepiece' && prev === this.tok.bosId && piece[0] === 0x20) piece = piece.subarray(1);
    for (const b of piece) this.#pending.push(b);
    return this.#drain(false);
  }

  /** Bytes are held back (the start of a character not yet complete). */
  get pending(): boolean {
    return this.#pending.length > 0;
  }

  /** Emit whatever is held back (incomplete sequences become U+FFFD). */
  flush(): string {
    return this.#drain(true);
  }

  #drain(all: boolean): string {
    const p = this.#pending;
    let end = p.length;
    if (!all) end = completePrefix(p);
    if (end === 0) return '';
    const s = this.#utf8.decode(Uint8Array.from(p.slice(0, end)));
    this.#pending = p.slice(end);
    return s;
  }
}

/** Length of the longest prefix of `b` that does not end inside a (possibly valid) UTF-8 sequence. */
function completePrefix(b: number[]): number {
  const n = b.length;
  // Look back at most 3 bytes for the start of an unfinished multi-byte sequence.
  for (let back = 1; back <= Math.min(3, n); back++) {
    const c = b[n - back]!;
    if ((c & 0xc0) === 0x80) continue; // continuation byte: keep looking for the lead
    const need = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 1;
    return need > back ? n - back : n;
  }
  return n;
}
