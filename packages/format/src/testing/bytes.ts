import { MODEL_MAGIC } from '../header.js';
import { TOKENIZER_MAGIC_LEGACY } from '../tokenizer-file.js';

/**
 * A `.m` header built from raw pairs with no validation at all, for bad-input tests: any magic,
 * any claimed header size, duplicate or unknown keys, out-of-range values.
 */
export function rawModelHeader(pairs: readonly (readonly [number, number])[], options: { magic?: number; headerSize?: number } = {}): Uint8Array {
  const out = new Uint8Array(8 + 8 * pairs.length);
  const v = new DataView(out.buffer);
  v.setInt32(0, options.magic ?? MODEL_MAGIC, true);
  v.setInt32(4, options.headerSize ?? out.length, true);
  pairs.forEach(([k, val], i) => {
    v.setInt32(8 + 8 * i, k, true);
    v.setInt32(12 + 8 * i, val, true);
  });
  return out;
}

/** A legacy-magic `.t` file (fixed header {vocab_size, max_token_length, bos, eos, pad}, then the vocabulary). */
export function legacyTokenizerBytes(data: {
  vocab: readonly Uint8Array[];
  scores: Float32Array;
  maxTokenLength: number;
  bosId: number;
  eosId: number;
  padId?: number;
}): Uint8Array {
  let total = 24;
  for (const p of data.vocab) total += 8 + p.length;
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  v.setInt32(0, TOKENIZER_MAGIC_LEGACY, true);
  v.setUint32(4, data.vocab.length, true);
  v.setUint32(8, data.maxTokenLength, true);
  v.setInt32(12, data.bosId, true);
  v.setInt32(16, data.eosId, true);
  v.setInt32(20, data.padId ?? -1, true);
  let o = 24;
  data.vocab.forEach((p, i) => {
    v.setFloat32(o, data.scores[i]!, true);
    v.setUint32(o + 4, p.length, true);
    out.set(p, o + 8);
    o += 8 + p.length;
  });
  return out;
}

/** Concatenate byte arrays. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
