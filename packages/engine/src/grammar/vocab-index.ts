/**
 * The vocabulary's byte pieces as a trie in typed arrays (first child, next sibling, edge byte,
 * the token ending at each node): a walk beside the grammar steps each shared prefix once and
 * never enters the subtree of a prefix the grammar refuses. "Plain" tokens, whose bytes are
 * whole characters that a JSON string holds as they are, get a trie of their own kept apart:
 * inside a string they are all allowed at once, and only the other tokens are walked.
 */
import type { Tokenizer } from '../tokenizer.js';

/** A byte trie: node 0 is the root; -1 ends a list. */
export interface ByteTrie {
  readonly firstChild: Int32Array;
  readonly nextSibling: Int32Array;
  readonly byte: Uint8Array;
  /** The first token whose bytes end at the node, or -1; more in `sameNext`. */
  readonly token: Int32Array;
  /** The next token with the same bytes (by id), or -1. */
  readonly sameNext: Int32Array;
}

export class VocabIndex {
  /** Every token with bytes. */
  readonly all: ByteTrie;
  /** The tokens that are not plain. */
  readonly special: ByteTrie;
  /** Tokens made only of whole characters ≥ U+0020 other than `"` and `\`. */
  readonly plain: Int32Array;
  /** 1 at each plain token's id. */
  readonly plainMask: Uint8Array;
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
    // One character per byte: string order is byte order.
    const keys = pieces.map((p) => Buffer.from(p.buffer, p.byteOffset, p.length).toString('latin1'));
    const ids: number[] = [];
    pieces.forEach((p, id) => {
      if (p.length > 0) ids.push(id);
    });
    ids.sort((a, b) => (keys[a]! < keys[b]! ? -1 : keys[a]! > keys[b]! ? 1 : a - b));
    const plain = ids.filter((id) => isPlain(pieces[id]!));
    this.all = buildTrie(ids, pieces);
    this.special = buildTrie(
      ids.filter((id) => !isPlain(pieces[id]!)),
      pieces,
    );
    this.plain = Int32Array.from(plain);
    this.plainMask = new Uint8Array(pieces.length);
    for (const id of plain) this.plainMask[id] = 1;
  }
}

/** The trie of `ids` (sorted by their bytes), built along the sorted order. */
function buildTrie(ids: readonly number[], pieces: readonly Uint8Array[]): ByteTrie {
  const firstChild = [-1];
  const nextSibling = [-1];
  const lastChild = [-1];
  const byte = [0];
  const token = [-1];
  const sameNext = new Int32Array(pieces.length).fill(-1);
  const lastSame = new Map<number, number>();
  // path[d]: the node of the previous token's first d bytes.
  const path = [0];
  let prev: Uint8Array | undefined;
  for (const id of ids) {
    const p = pieces[id]!;
    let l = 0;
    if (prev) while (l < p.length && l < prev.length && p[l] === prev[l]) l++;
    for (let d = l; d < p.length; d++) {
      const parent = path[d]!;
      const n = byte.length;
      firstChild.push(-1);
      nextSibling.push(-1);
      lastChild.push(-1);
      byte.push(p[d]!);
      token.push(-1);
      // Sorted order: children arrive in increasing byte order, each after the last one.
      if (lastChild[parent] === -1) firstChild[parent] = n;
      else nextSibling[lastChild[parent]!] = n;
      lastChild[parent] = n;
      path[d + 1] = n;
    }
    const node = path[p.length]!;
    if (token[node] === -1) token[node] = id;
    else sameNext[lastSame.get(node)!] = id;
    lastSame.set(node, id);
    prev = p;
  }
  return { firstChild: Int32Array.from(firstChild), nextSibling: Int32Array.from(nextSibling), byte: Uint8Array.from(byte), token: Int32Array.from(token), sameNext };
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
    for (let k = 1; k <= n; k++) if (i + k >= p.length || (p[i + k]! & 0xc0) !== 0x80) return false;
    i += n + 1;
  }
  return true;
}
