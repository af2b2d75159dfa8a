import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseTokenizer, writeTokenizer, type TokenizerData } from '@airllm/format';
import { LayerWiseInferenceEngine, loadTokenizer, Tokenizer, TokenizerError } from '@airllm/engine';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES, LLAMA2C_TOKENIZER, tempDir } from './helpers.js';
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

describe('merging in O(n log n) gives the references\' merges', () => {
  /** FORMAT.md §d.2 step 4 as written: rescan every pair after each merge (quadratic). */
  function naiveMerge(tokens: number[], text: (id: number) => string | undefined, lookup: Map<string, number>, scores: Float32Array): number[] {
    const t = [...tokens];
    for (;;) {
      let best = -Infinity;
      let at = -1;
      let id = -1;
      for (let i = 0; i + 1 < t.length; i++) {
        const a = text(t[i]!);
        const b = text(t[i + 1]!);
        if (a === undefined || b === undefined) continue;
        const m = lookup.get(a + b);
        if (m !== undefined && scores[m]! > best) {
          best = scores[m]!;
          at = i;
          id = m;
        }
      }
      if (at < 0) return t;
      t.splice(at, 2, id);
    }
  }

  it('on random texts over the stories260K vocabulary, both algorithms (dllama byte-level and llama2.c)', () => {
    const data = parseTokenizer(readFileSync(FIXTURE_TOKENIZER));
    const latin1 = (b: Uint8Array): string => String.fromCharCode(...b);
    // Regular pieces of the byte-level reading: every id below bos_id, i.e. only id 0 here, so
    // force a vocabulary where all 512 pieces merge: bos_id at the end.
    const forced = new Tokenizer({ ...data, bosId: 511, eosIds: [] }, 'bytelevel');
    const lookup = new Map<string, number>();
    [...Array(511).keys()].sort((a, b) => (latin1(data.vocab[a]!) < latin1(data.vocab[b]!) ? -1 : latin1(data.vocab[a]!) > latin1(data.vocab[b]!) ? 1 : a - b)).forEach((id) => {
      if (!lookup.has(latin1(data.vocab[id]!))) lookup.set(latin1(data.vocab[id]!), id);
    });
    // Characters that are pieces by themselves, so dllama's first step gives one token per byte.
    const alphabet = [...'Once upon a time there was Lily, the happy sun.\n'].filter((ch) => lookup.has(ch));
    expect(alphabet.length).toBeGreaterThan(15);
    let seed = 12345;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let k = 0; k < 200; k++) {
      let text = '';
      const n = 1 + rand(120);
      for (let i = 0; i < n; i++) text += alphabet[rand(alphabet.length)];
      // The byte-level start: one token per byte run (every single byte is a piece here).
      const start = [...new TextEncoder().encode(text)].map((b) => lookup.get(String.fromCharCode(b))!);
      const want = naiveMerge(start, (id) => latin1(data.vocab[id]!), lookup, data.scores);
      expect(forced.encode(text, { bos: false })).toEqual(want);
      // llama2.c's SentencePiece path against llama2.c itself is covered by the fixtures; here
      // only that a long text still encodes and decodes back.
      expect(official.decode(official.encode(text))).toBe(text);
    }
  });

  it('a 200 KB text encodes, and in time linear enough for a test on a loaded machine', () => {
    const text = 'Once upon a time, there was a little girl named Lily. '.repeat(4000);
    const ids = official.encode(text);
    expect(official.decode(ids)).toBe(text);
  });
});

describe('minTokens and encodeAsync', () => {
  it('minTokens never exceeds the real count', () => {
    for (const text of ['', 'a', 'Once upon a time', '日本 🎉 '.repeat(50), 'x'.repeat(1000)]) {
      expect(official.minTokens(text)).toBeLessThanOrEqual(official.encode(text, { bos: false }).length);
    }
  });
  it('encodeAsync gives encode\'s ids, long texts on a worker thread', async () => {
    const long = 'Lily and Tom played in the park. '.repeat(300);
    const tok = new Tokenizer(parseTokenizer(readFileSync(FIXTURE_TOKENIZER)));
    try {
      expect(await tok.encodeAsync(long)).toEqual(tok.encode(long));
      expect(await tok.encodeAsync('short')).toEqual(tok.encode('short'));
      await expect(Promise.all([tok.encodeAsync(long + 'a'), tok.encodeAsync(long + 'b')])).resolves.toEqual([tok.encode(long + 'a'), tok.encode(long + 'b')]);
    } finally {
      await tok.close();
    }
  });
});

describe('vocabulary checks', () => {
  it('bos_id -5 is refused; -1 means none', () => {
    const data = parseTokenizer(readFileSync(FIXTURE_TOKENIZER));
    expect(() => parseTokenizer(writeTokenizer({ ...data, bosId: -5 }))).toThrow(/bos_id outside the vocabulary/);
    expect(parseTokenizer(writeTokenizer({ ...data, bosId: -1 })).bosId).toBe(-1);
    expect(() => writeTokenizer({ ...data, eosIds: [512] })).toThrow(/EOS id outside the vocabulary/);
  });
  it('a tokenizer larger than the model is refused at load; a smaller one loads and bounds sampling', async () => {
    const { dir, cleanup } = tempDir();
    try {
      const data = parseTokenizer(readFileSync(FIXTURE_TOKENIZER));
      const big = join(dir, 'big.t');
      const extra = Array.from({ length: 8 }, (_, i) => new TextEncoder().encode(`<extra_${i}>`));
      writeFileSync(big, writeTokenizer({ ...data, maxTokenLength: undefined, vocab: [...data.vocab, ...extra], scores: Float32Array.from([...data.scores, ...extra.map(() => 0)]) }));
      expect(() => loadTokenizer(F32_MODEL, { tokenizerPath: big, modelVocabSize: 512 })).toThrow(/has 520 tokens but the model .* has 512/);
      const engine = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: big, threads: 1 });
      await expect(engine.initialize()).rejects.toThrow(/has 520 tokens/);
      await engine.cleanup();
      // 300 tokens for a 512-row model: the sampler only ever picks ids below 300.
      const small = join(dir, 'small.t');
      writeFileSync(small, writeTokenizer({ ...data, vocab: data.vocab.slice(0, 300), scores: data.scores.slice(0, 300) }));
      const e2 = new LayerWiseInferenceEngine(F32_MODEL, { tokenizerPath: small, threads: 1 });
      await e2.initialize();
      try {
        const gen = e2.generate([1], { maxTokens: 200, temperature: 1, seed: 3, stopAtEos: false });
        let r = await gen.next();
        const ids: number[] = [];
        while (!r.done) {
          ids.push(r.value.token);
          r = await gen.next();
        }
        expect(ids.length).toBeGreaterThan(0);
        expect(Math.max(...ids)).toBeLessThan(300);
      } finally {
        await e2.cleanup();
      }
    } finally {
      cleanup();
    }
  });
});
