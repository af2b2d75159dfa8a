/**
 * The vocabulary's byte pieces sorted in byte order, each with the length of the prefix it
 * shares with the one before: walking them in order is a walk of the vocabulary's byte trie
 * (a shared prefix is stepped through once, a dead prefix skips every token under it) that
 * needs two typed arrays instead of a node per byte. "Plain" tokens, whose bytes are whole
 * characters that a JSON string holds as they are, are kept apart: inside a string they are all
 * allowed at once, and only the others are walked.
 */
import type { Tokenizer } from '../tokenizer.js';

/** Tokens in byte order: ids and the prefix length each shares with the previous one. */
export interface SortedPieces {
  readonly ids: Int32Array;
  readonly lcp: Uint16Array;
}

export class VocabIndex {
  /** Every token with bytes, in byte order. */
  readonly all: SortedPieces;
  /** The tokens that are not plain, in byte order. */
  readonly special: SortedPieces;
  /** Tokens made only of whole characters ≥ U+0020 other than `"` and `\`. */
  readonly plain: Int32Array;
  readonly pieces: readonly Uint8Array[];

  static readonly #cache = new WeakMap<Tokenizer, VocabIndex>();

  /** The index of a tokenizer's vocabulary (built once per tokenizer). */
  static of(tokenizer: Tokenizer): VocabIndex {
    let v = VocabIndex.#cache.get(tokenizer);
    if (!v) {
      v = new VocabIndex(tokenizer.pieces);
      VocabIndex.#cache.set(tokenizer, v);
    }
    return v;
  }

  constructor(pieces: readonly Uint8Array[]) {
    this.pieces = pieces;
    const ids: number[] = [];
    pieces.forEach((p, id) => {
      if (p.length > 0) ids.push(id);
    });
    const buf = (id: number): Buffer => Buffer.from(pieces[id]!.buffer, pieces[id]!.byteOffset, pieces[id]!.length);
    ids.sort((a, b) => Buffer.compare(buf(a), buf(b)) || a - b);
    const plain = ids.filter((id) => isPlain(pieces[id]!));
    this.all = sorted(ids, pieces);
    this.special = sorted(
      ids.filter((id) => !isPlain(pieces[id]!)),
      pieces,
    );
    this.plain = Int32Array.from(plain);
  }
}

function sorted(ids: readonly number[], pieces: readonly Uint8Array[]): SortedPieces {
  const lcp = new Uint16Array(ids.length);
  for (let k = 1; k < ids.length; k++) {
    const a = pieces[ids[k - 1]!]!;
    const b = pieces[ids[k]!]!;
    let n = 0;
    const max = Math.min(a.length, b.length, 0xffff);
    while (n < max && a[n] === b[n]) n++;
    lcp[k] = n;
  }
  return { ids: Int32Array.from(ids), lcp };
}

/** Whole UTF-8 characters, none of them a control character, `"` or `\`. */
function isPlain(p: Uint8Array): boolean {
  for (let i = 0; i < p.length; ) {
    const b = p[i]!;
    let n: number;
    if (b < 0x20 || b === 0x22 || b === 0x5c) return false;
    else if (b < 0x80) n = 0;
    else if (b >= 0xc2 && b <= 0xdf) n = 1;
    else if (b >= 0xe0 && b <= 0xef) n = 2;
    else if (b >= 0xf0 && b <= 0xf4) n = 3;
    else return false;
    for (let k = 1; k <= n; k++) if ((p[i + k]! & 0xc0) !== 0x80 || i + k >= p.length) return false;
    i += n + 1;
  }
  return true;
}
