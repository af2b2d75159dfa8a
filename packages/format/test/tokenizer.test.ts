import { closeSync, mkdtempSync, openSync, rmSync, ftruncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BadMagicError,
  FileAccessError,
  FormatError,
  InvalidValueError,
  OldFormatError,
  parseTokenizer,
  readTokenizerFile,
  TOKENIZER_MAX_FILE_BYTES,
  TruncatedError,
  UnknownKeyError,
  writeTokenizer,
} from '../src/index.js';
import { TokenizerKey } from '../src/tokenizer-file.js';
import { concatBytes, legacyTokenizerBytes } from '../src/testing/index.js';
import { expectFormatError, readBytes, TOKENIZER_FIXTURE } from './helpers.js';

const fixture = readBytes(TOKENIZER_FIXTURE);
const enc = new TextEncoder();

/** A .t header from raw pairs followed by raw body bytes (no validation). */
function rawTokenizer(pairs: [number, number][], body: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(8 + 8 * pairs.length + body.length);
  const v = new DataView(out.buffer);
  v.setInt32(0, 0x567124, true);
  v.setInt32(4, 8 + 8 * pairs.length, true);
  pairs.forEach(([k, x], i) => {
    v.setInt32(8 + 8 * i, k, true);
    v.setInt32(12 + 8 * i, x, true);
  });
  out.set(body, 8 + 8 * pairs.length);
  return out;
}
/** One vocabulary entry. */
function entry(score: number, piece: Uint8Array | string, len?: number): Uint8Array {
  const p = typeof piece === 'string' ? enc.encode(piece) : piece;
  const out = new Uint8Array(8 + p.length);
  const v = new DataView(out.buffer);
  v.setFloat32(0, score, true);
  v.setUint32(4, len ?? p.length, true);
  out.set(p, 8);
  return out;
}

describe('.t tokenizer files', () => {
  const tok = parseTokenizer(fixture);

  it('parses the official fixture (tok512 entries, bos 1, eos [2], add_bos, 815-byte template)', () => {
    expect(tok.vocab.length).toBe(512);
    expect([tok.bosId, tok.eosIds, tok.addBos, tok.maxTokenLength, tok.legacy]).toEqual([1, [2], true, 7, false]);
    expect(enc.encode(tok.chatTemplate!).length).toBe(815);
    expect(new TextDecoder().decode(tok.vocab[1])).toBe('\n<s>\n');
    expect(new TextDecoder().decode(tok.vocab[3])).toBe('<0x00>');
    expect(tok.scores[300]).toBe(-(300 - 259));
  });

  it('writes the fixture back byte for byte (official writer key order)', () => {
    expect(Buffer.from(writeTokenizer(tok)).equals(Buffer.from(fixture))).toBe(true);
  });

  it('reads the legacy magic with the same vocabulary', () => {
    const legacy = legacyTokenizerBytes({ vocab: tok.vocab, scores: tok.scores, maxTokenLength: 7, bosId: 1, eosId: 2 });
    const t = parseTokenizer(legacy);
    expect(t.legacy).toBe(true);
    expect([t.bosId, t.eosIds, t.maxTokenLength, t.chatTemplate]).toEqual([1, [2], 7, undefined]);
    expect(t.vocab).toEqual(tok.vocab);
    expect(t.scores).toEqual(tok.scores);
    // Legacy → current format keeps every piece and score.
    const again = parseTokenizer(writeTokenizer(t));
    expect([again.vocab, again.scores, again.bosId, again.eosIds]).toEqual([tok.vocab, tok.scores, 1, [2]]);
  });

  it('round-trips random vocabularies (any bytes, scores, ids, templates)', () => {
    const data = fc
      .record({
        vocab: fc.array(fc.uint8Array({ minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 40 }),
        template: fc.option(fc.string({ minLength: 1, maxLength: 50 }), { nil: undefined }),
        addBos: fc.boolean(),
        seed: fc.nat(),
      })
      .map(({ vocab, template, addBos, seed }) => ({
        vocab,
        scores: Float32Array.from(vocab, (_, i) => Math.fround((i * 7919 + seed) % 1000) / -7),
        bosId: seed % vocab.length,
        eosIds: [seed % vocab.length, (seed >> 3) % vocab.length],
        addBos,
        chatTemplate: template,
      }));
    fc.assert(
      fc.property(data, (d) => {
        const t = parseTokenizer(writeTokenizer(d));
        expect(t.vocab).toEqual(d.vocab);
        expect(t.scores).toEqual(d.scores);
        expect([t.bosId, t.eosIds, t.addBos]).toEqual([d.bosId, d.eosIds, d.addBos]);
        // Unpaired surrogates are replaced by UTF-8 encoding; otherwise the template survives.
        expect(t.chatTemplate).toBe(d.chatTemplate === undefined || d.chatTemplate === '' ? undefined : new TextDecoder().decode(enc.encode(d.chatTemplate)));
      }),
      { numRuns: 200 },
    );
  });

  it('every truncation of the fixture (and of the legacy form) is a typed TruncatedError', () => {
    const legacy = legacyTokenizerBytes({ vocab: tok.vocab, scores: tok.scores, maxTokenLength: 7, bosId: 1, eosId: 2 });
    for (const bytes of [fixture, legacy]) {
      for (let n = 0; n < bytes.length; n++) {
        let err: unknown;
        try {
          parseTokenizer(bytes.subarray(0, n));
        } catch (e) {
          err = e;
        }
        if (!(err instanceof TruncatedError)) expect([n, String(err)]).toEqual([n, 'TruncatedError']);
      }
    }
  });

  it('the same bytes split out of a larger buffer at every offset parse identically', () => {
    const junk = new Uint8Array(37).fill(0xa5);
    for (let k = 0; k < 37; k++) {
      const whole = concatBytes(junk.subarray(0, k), fixture, junk);
      const view = whole.subarray(k, k + fixture.length);
      const t = parseTokenizer(view);
      expect(t.vocab.length).toBe(512);
      expect(t.scores).toEqual(tok.scores);
      expect(t.chatTemplate).toBe(tok.chatTemplate);
    }
  });

  describe('bad input: typed errors with field and offset', () => {
    const K = TokenizerKey;
    const okPairs: [number, number][] = [
      [K.BosId, 0],
      [K.Version, 1],
      [K.VocabSize, 2],
      [K.MaxTokenLength, 4],
      [K.NEosTokens, 0],
      [K.AddBos, 1],
    ];
    const body = concatBytes(entry(0, 'a'), entry(-1, 'bc'));

    it('the minimal hand-built file parses', () => {
      expect(parseTokenizer(rawTokenizer(okPairs, body)).vocab.map((p) => new TextDecoder().decode(p))).toEqual(['a', 'bc']);
    });

    it('wrong magic', () => {
      const e = expectFormatError(() => parseTokenizer(readBytes(TOKENIZER_FIXTURE).slice().fill(0, 0, 4)), BadMagicError);
      expect([e.field, e.offset]).toEqual(['magic', 0]);
    });

    it('version other than 1', () => {
      const pairs = okPairs.map(([k, v]) => [k, k === K.Version ? 0 : v] as [number, number]);
      const e = expectFormatError(() => parseTokenizer(rawTokenizer(pairs, body)), OldFormatError);
      expect([e.field, e.offset]).toEqual(['version', 8 + 8 + 4]);
    });

    it('unknown key and bad header size', () => {
      let e: FormatError = expectFormatError(() => parseTokenizer(rawTokenizer([...okPairs, [11, 0]], body)), UnknownKeyError);
      expect([e.field, e.offset]).toEqual(['key 11', 8 + 8 * okPairs.length]);
      const b = rawTokenizer(okPairs, body);
      new DataView(b.buffer).setInt32(4, 2 ** 31 - 1, true);
      e = expectFormatError(() => parseTokenizer(b), InvalidValueError);
      expect([e.field, e.offset]).toEqual(['headerSize', 4]);
    });

    it('absurd claimed sizes are refused before allocation', () => {
      for (const [key, value, field] of [
        [K.VocabSize, 2 ** 31 - 1, 'vocab_size'],
        [K.VocabSize, 0, 'vocab_size'],
        [K.MaxTokenLength, 0, 'max_token_length'],
        [K.MaxTokenLength, 2 ** 30, 'max_token_length'],
        [K.ChatTemplate, 2 ** 30, 'chat_template'],
        [K.NEosTokens, 2 ** 30, 'n_eos_tokens'],
      ] as const) {
        const pairs = okPairs.map(([k, v]) => [k, k === key ? value : v] as [number, number]);
        if (!pairs.some(([k]) => k === key)) pairs.push([key, value]);
        const e = expectFormatError(() => parseTokenizer(rawTokenizer(pairs, body)), InvalidValueError);
        expect([e.field, e.offset]).toEqual([field, 8 + 8 * pairs.findIndex(([k]) => k === key) + 4]);
      }
      // A vocabulary larger than the file can hold (1000 entries in a few bytes).
      const pairs = okPairs.map(([k, v]) => [k, k === K.VocabSize ? 1000 : v] as [number, number]);
      const e = expectFormatError(() => parseTokenizer(rawTokenizer(pairs, body)), TruncatedError);
      expect(e.field).toBe('vocab_size');
    });

    it('token lengths of 0 or beyond max_token_length, trailing bytes, ids outside the vocabulary', () => {
      let e: FormatError = expectFormatError(() => parseTokenizer(rawTokenizer(okPairs, concatBytes(entry(0, 'a'), entry(0, 'bcdef')))), InvalidValueError);
      expect([e.field, e.offset]).toEqual(['vocab[1].length', 8 + 8 * okPairs.length + 9 + 4]);
      e = expectFormatError(() => parseTokenizer(rawTokenizer(okPairs, concatBytes(entry(0, ''), entry(0, 'b'), new Uint8Array(20)))), InvalidValueError);
      expect(e.field).toBe('vocab[0].length');
      e = expectFormatError(() => parseTokenizer(rawTokenizer(okPairs, concatBytes(body, new Uint8Array(3)))), InvalidValueError);
      expect([e.field, e.offset]).toEqual(['vocabulary', 8 + 8 * okPairs.length + body.length]);
      const badBos = okPairs.map(([k, v]) => [k, k === K.BosId ? 5 : v] as [number, number]);
      e = expectFormatError(() => parseTokenizer(rawTokenizer(badBos, body)), InvalidValueError);
      expect(e.field).toBe('bos_id');
      const eos = okPairs.map(([k, v]) => [k, k === K.NEosTokens ? 1 : v] as [number, number]);
      const eosBytes = new Uint8Array(4);
      new DataView(eosBytes.buffer).setInt32(0, 9, true);
      e = expectFormatError(() => parseTokenizer(rawTokenizer(eos, concatBytes(eosBytes, body))), InvalidValueError);
      expect(e.field).toBe('eos_ids');
    });

    it('the writer refuses data its parser would refuse', () => {
      const base = { vocab: [enc.encode('a')], scores: new Float32Array(1), bosId: 0, eosIds: [0], addBos: true, chatTemplate: undefined };
      expectFormatError(() => writeTokenizer({ ...base, vocab: [new Uint8Array(0)] }), InvalidValueError);
      expectFormatError(() => writeTokenizer({ ...base, eosIds: [3] }), InvalidValueError);
      expectFormatError(() => writeTokenizer({ ...base, scores: new Float32Array(2) }), InvalidValueError);
      expectFormatError(() => writeTokenizer({ ...base, maxTokenLength: 0 }), InvalidValueError);
      // A large vocabulary does not overflow the call stack when computing max_token_length.
      const big = Array.from({ length: 200_000 }, (_, i) => enc.encode(String(i)));
      expect(parseTokenizer(writeTokenizer({ ...base, vocab: big, scores: new Float32Array(big.length) })).maxTokenLength).toBe(6);
    });
  });
});

describe('readTokenizerFile', () => {
  it('reads the fixture as parseTokenizer does', () => {
    expect(readTokenizerFile(TOKENIZER_FIXTURE)).toEqual(parseTokenizer(fixture));
  });

  it('refuses a device, a directory and an oversized file before reading, naming the path', () => {
    // /dev/zero never ends: reading it whole allocated without bound (issue #24 D2).
    const zero = expectFormatError(() => readTokenizerFile('/dev/zero'), FileAccessError);
    expect(zero.message).toBe('/dev/zero: not a regular file (a device, pipe or socket), not a tokenizer file');
    const dir = mkdtempSync(join(tmpdir(), 'airllm-tok-'));
    try {
      expect(expectFormatError(() => readTokenizerFile(dir), FileAccessError).message).toBe(`${dir}: is a directory, not a tokenizer file`);
      // Sparse: takes no disk space.
      const big = join(dir, 'big.t');
      const fd = openSync(big, 'w');
      ftruncateSync(fd, TOKENIZER_MAX_FILE_BYTES + 1);
      closeSync(fd);
      const e = expectFormatError(() => readTokenizerFile(big), InvalidValueError);
      expect(e.path).toBe(big);
      expect(e.message).toMatch(/file is larger than a tokenizer can be/);
      expect(expectFormatError(() => readTokenizerFile(join(dir, 'none.t')), FileAccessError).message).toBe(`${join(dir, 'none.t')}: cannot open the tokenizer: no such file`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a malformed file: the parse error names the file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'airllm-tok-'));
    try {
      const bad = join(dir, 'bad.t');
      writeFileSync(bad, 'garbage!');
      const e = expectFormatError(() => readTokenizerFile(bad), BadMagicError);
      expect(e.path).toBe(bad);
      expect(e.message).toMatch(new RegExp(`^${bad}, field magic, byte offset 0: not a Distributed-Llama tokenizer file`));
      writeFileSync(bad, fixture.subarray(0, fixture.length - 3));
      expect(expectFormatError(() => readTokenizerFile(bad), TruncatedError).message).toMatch(new RegExp(`^${bad}, field vocab`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
