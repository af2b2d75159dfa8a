import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseTokenizer, type TokenizerData } from '@airllm/format';
import { Tokenizer, TokenizerError } from '@airllm/engine';
import { FIXTURE_TOKENIZER, FIXTURES, LLAMA2C_TOKENIZER } from './helpers.js';
import { convertLlama2cTokenizer } from '@airllm/format/convert';

const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[]; text: string };
  encodings: Record<string, number[]>;
};
const official = new Tokenizer(parseTokenizer(readFileSync(FIXTURE_TOKENIZER)));
const ours = new Tokenizer(convertLlama2cTokenizer(readFileSync(LLAMA2C_TOKENIZER), 512));
const enc = new TextEncoder();

describe('SentencePiece-style vocabulary (stories260K)', () => {
  for (const [name, tok] of [['official .t (pieces <0xNN> as text)', official], ['our .t (raw byte pieces, <s> control tokens)', ours]] as const) {
    it(`${name}: encodes as llama2.c does`, () => {
      expect(tok.kind).toBe('sentencepiece');
      for (const [text, ids] of Object.entries(reference.encodings)) expect(tok.encode(text)).toEqual(ids);
    });
    it(`${name}: decodes llama2.c's generated ids to its printed text`, () => {
      expect(tok.decode([1, ...reference.bos_only.generated_tokens])).toBe(reference.bos_only.text.replace(/\n$/, ''));
    });
    it(`${name}: round-trips text with multi-byte characters through byte fallback`, () => {
      const text = 'héllo wörld, 日本 🎉\nok';
      const ids = tok.encode(text);
      // Characters missing from the 512-token vocabulary become their UTF-8 bytes (ids 3..258).
      expect(ids.filter((i) => i >= 3 && i < 259).length).toBeGreaterThan(8);
      expect(tok.decode(ids)).toBe(text);
    });
    it(`${name}: streams only complete UTF-8`, () => {
      const d = tok.decoder();
      const parts = tok.encode('🎉é').map((id) => d.push(id));
      // 🎉 is four byte-fallback tokens: nothing is emitted until the last one arrives.
      expect(parts.filter((p) => p.length > 0).every((p) => !p.includes('\uFFFD'))).toBe(true);
      expect(parts.join('') + d.flush()).toBe('🎉é');
    });
  }

  it('never matches control tokens inside text', () => {
    const ids = ours.encode('<unk><s></s>', { bos: false });
    expect(ids).not.toContain(0);
    expect(ids).not.toContain(1);
    expect(ids).not.toContain(2);
    // (without BOS the dummy-prefix space stays, as in llama2.c's decoder)
    expect(ours.decode(ids)).toBe(' <unk><s></s>');
  });

  it('reports EOS and BOS', () => {
    expect(official.isEos(2)).toBe(true);
    expect(official.bosId).toBe(1);
    expect(official.encode('')).toEqual([1]);
  });
});

describe("dllama's algorithm for byte-level vocabularies", () => {
  it('reproduces what dllama does on the stories260K vocabulary (FORMAT fixtures README)', () => {
    const forced = new Tokenizer(parseTokenizer(readFileSync(FIXTURE_TOKENIZER)), 'bytelevel');
    expect(forced.encode('Once upon a time')).toEqual([1, 441, 416, 331, 318, 427, 289, 261, 259, 288, 411]);
  });

  /** A hand-made vocabulary: regular ids 0..7, specials from bos_id 8. */
  function vocab(): TokenizerData {
    const pieces = ['a', 'b', 'c', ' ', 'ab', 'bc', 'abc', ' a', '<|bos|>', '<|eos|>', '<|im_start|>', '<|im'];
    return {
      vocab: pieces.map((p) => enc.encode(p)),
      // score = −id, as convert-tokenizer-hf.py writes them
      scores: Float32Array.from(pieces.map((_, i) => -i)),
      maxTokenLength: 12,
      bosId: 8,
      eosIds: [9],
      addBos: true,
      chatTemplate: undefined,
      legacy: false,
    };
  }

  it('merges the highest-scoring pair first (ties: leftmost)', () => {
    const t = new Tokenizer(vocab());
    expect(t.kind).toBe('bytelevel');
    // a b c → "ab" (id 4, score −4) beats "bc" (id 5, −5) → ab c → "abc" (6)
    expect(t.encode('abc', { bos: false })).toEqual([6]);
    // b c a → "bc" (5) → bc a; "bca" is no token
    expect(t.encode('bca', { bos: false })).toEqual([5, 0]);
    // " a" (7) and "ab" (4): ab scores higher → " ", ab
    expect(t.encode(' ab', { bos: false })).toEqual([3, 4]);
  });

  it('matches special tokens by first match in id order, not longest', () => {
    const t = new Tokenizer(vocab());
    expect(t.encode('<|im_start|>ab')).toEqual([8, 10, 4]);
  });

  it('refuses bytes no token matches with a typed error naming the offset', () => {
    const t = new Tokenizer(vocab());
    expect(() => t.encode('abz')).toThrow(TokenizerError);
    expect(() => t.encode('abz')).toThrow(/0x7A before byte 3/);
  });
});
