import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  BadMagicError,
  DTYPES,
  f16ToF32,
  FileAccessError,
  FileSizeMismatchError,
  FloatType,
  FormatError,
  InvalidValueError,
  parseTokenizer,
  readModelFile,
  TruncatedError,
  type ModelLayout,
  type TensorInfo,
} from '../src/index.js';
import { convertLlama2cTokenizer, importLlama2c, importLlama2cModel, LLAMA2_CHAT_TEMPLATE, readLlama2cCheckpoint } from '../src/convert.js';
import { concatBytes, readLegacyLlama2c, writeVersionedLlama2c } from '../src/testing/index.js';
import { expectFormatError, expectFormatRejection, F32_FIXTURE, Q40_FIXTURE, readBytes, STORIES_BIN, tempDir, TOK512_BIN, TOKENIZER_FIXTURE } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

const same = (a: string, b: string) => Buffer.from(readBytes(a)).equals(Buffer.from(readBytes(b)));
const f32Fixture = readModelFile(F32_FIXTURE);
const f32FixtureBytes = readBytes(F32_FIXTURE);
function decode(bytes: Uint8Array, t: TensorInfo): Float32Array {
  const out = new Float32Array(t.shape.length === 1 ? t.shape[0]! : t.shape[0]! * t.shape[1]!);
  DTYPES[t.dtype].dequantize(bytes.subarray(t.offset, t.offset + t.byteLength), out);
  return out;
}
/** Both layouts' tensors decoded side by side. */
function pairs(layout: ModelLayout, bytes: Uint8Array): [TensorInfo, Float32Array, Float32Array][] {
  return layout.tensors.map((t) => [t, decode(bytes, t), decode(f32FixtureBytes, f32Fixture.layout.tensor(t.name))]);
}

describe('llama2.c import', () => {
  it('stories260K.bin padded to 192 gives FILES byte-identical to both official fixtures', async () => {
    for (const [dtype, fixture] of [
      [FloatType.F32, F32_FIXTURE],
      [FloatType.Q40, Q40_FIXTURE],
    ] as const) {
      const a = join(dir, `default-${dtype}.m`);
      const b = join(dir, `explicit-${dtype}.m`);
      await importLlama2cModel(STORIES_BIN, a, { dtype }); // default: next multiple of 32
      await importLlama2cModel(STORIES_BIN, b, { dtype, hiddenDim: 192 });
      expect(same(a, fixture)).toBe(true);
      expect(same(b, fixture)).toBe(true);
    }
  });

  it('reads the checkpoint header (legacy version 0, shared classifier)', async () => {
    const ck = await readLlama2cCheckpoint(STORIES_BIN);
    expect(ck).toMatchObject({ version: 0, dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512, headDim: 8, kvDim: 32, sharedClassifier: true, fileSize: 1056540 });
  });

  it('accepts llama2.c "ak42" version 1 (float32): same files as from version 0', async () => {
    const weights = readLegacyLlama2c(readBytes(STORIES_BIN));
    const v1 = join(dir, 'v1.bin');
    writeFileSync(v1, writeVersionedLlama2c(weights, 1));
    expect((await readLlama2cCheckpoint(v1)).version).toBe(1);
    for (const [dtype, fixture] of [
      [FloatType.F32, F32_FIXTURE],
      [FloatType.Q40, Q40_FIXTURE],
    ] as const) {
      const out = join(dir, `v1-${dtype}.m`);
      await importLlama2cModel(v1, out, { dtype });
      expect(same(out, fixture)).toBe(true);
    }
    // An unshared classifier is read from the end of the file.
    const unshared = { ...weights, output: weights.tokEmbeddings.map((x) => -x) };
    writeFileSync(join(dir, 'v1u.bin'), writeVersionedLlama2c(unshared, 1));
    const layout = await importLlama2cModel(join(dir, 'v1u.bin'), join(dir, 'v1u.m'), { dtype: FloatType.F32 });
    const bytes = readBytes(join(dir, 'v1u.m'));
    expect(decode(bytes, layout.wcls)).toEqual(unshared.output);
    expect(decode(bytes, layout.embedding)).toEqual(weights.tokEmbeddings);
  });

  it('accepts llama2.c "ak42" version 2 (int8 groups): weights within half a quantization step', async () => {
    const weights = readLegacyLlama2c(readBytes(STORIES_BIN));
    const v2 = join(dir, 'v2.bin');
    writeFileSync(v2, writeVersionedLlama2c(weights, 2, 64));
    const ck = await readLlama2cCheckpoint(v2);
    expect([ck.version, ck.groupSize]).toEqual([2, 64]);
    const layout = await importLlama2cModel(v2, join(dir, 'v2.m'), { dtype: FloatType.F32 });
    let differs = 0;
    for (const [t, mine, ref] of pairs(layout, readBytes(join(dir, 'v2.m')))) {
      if (t.kind.endsWith('norm')) {
        expect(mine).toEqual(ref); // norms stay float32 in version 2
        continue;
      }
      // Groups of 64 of the unpadded tensor: scale = max|w|/127 ≤ tensor max / 127.
      const amax = ref.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
      let worst = 0;
      for (let i = 0; i < ref.length; i++) {
        worst = Math.max(worst, Math.abs(mine[i]! - ref[i]!));
        if (mine[i] !== ref[i]) differs++;
      }
      expect(worst, t.name).toBeLessThanOrEqual((amax / 127 / 2) * 1.001);
    }
    expect(differs).toBeGreaterThan(1000);
  });

  it('F16 and Q80 imports decode to the F32 weights within the dtype bounds', async () => {
    for (const dtype of [FloatType.F16, FloatType.Q80]) {
      const out = join(dir, `m-${dtype}.m`);
      const layout = await importLlama2cModel(STORIES_BIN, out, { dtype });
      expect(readModelFile(out).header.weightType).toBe(dtype);
      const bytes = readBytes(out);
      for (const [t, mine, ref] of pairs(layout, bytes)) {
        // Count elements outside the stated bound (one assertion per tensor keeps this fast).
        let outside = 0;
        if (t.dtype === FloatType.F32) {
          expect(mine).toEqual(ref);
        } else if (dtype === FloatType.F16) {
          for (let i = 0; i < ref.length; i++) if (Math.abs(mine[i]! - ref[i]!) > Math.max(Math.abs(ref[i]!) * 2 ** -11, 2 ** -25)) outside++;
        } else {
          for (let b = 0; b < ref.length / 32; b++) {
            const d16 = f16ToF32(bytes[t.offset + 34 * b]! | (bytes[t.offset + 34 * b + 1]! << 8));
            let amax = 0;
            for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(ref[32 * b + i]!));
            const d = Math.fround(amax / 127);
            const bound = d / 2 + d * 2 ** -16 + 127 * Math.abs(d16 - d);
            for (let i = 0; i < 32; i++) if (Math.abs(mine[32 * b + i]! - ref[32 * b + i]!) > bound) outside++;
          }
        }
        expect(outside, t.name).toBe(0);
      }
    }
  });

  it('pads hidden_dim as asked: zero rows of w1/w3, zero columns of w2', async () => {
    const weights = readLegacyLlama2c(readBytes(STORIES_BIN));
    const none = await importLlama2cModel(STORIES_BIN, join(dir, 'none.m'), { dtype: FloatType.F32, hiddenDimMultiple: 1 });
    expect(none.header.hiddenDim).toBe(172);
    const nb = readBytes(join(dir, 'none.m'));
    expect(decode(nb, none.tensor('layers.3.w2'))).toEqual(weights.w2[3]);
    const wide = await importLlama2cModel(STORIES_BIN, join(dir, 'wide.m'), { dtype: FloatType.F32, hiddenDim: 256 });
    const wb = readBytes(join(dir, 'wide.m'));
    const w1 = decode(wb, wide.tensor('layers.2.w1'));
    expect(w1.subarray(0, 172 * 64)).toEqual(weights.w1[2]);
    expect(w1.subarray(172 * 64).every((x) => x === 0)).toBe(true);
    const w2 = decode(wb, wide.tensor('layers.2.w2'));
    for (let r = 0; r < 64; r++) {
      expect(w2.subarray(r * 256, r * 256 + 172)).toEqual(weights.w2[2]!.subarray(r * 172, (r + 1) * 172));
      expect(w2.subarray(r * 256 + 172, (r + 1) * 256).every((x) => x === 0)).toBe(true);
    }
    // Q40 rows must be whole blocks: no padding is a typed error, and no file is left.
    const e = await expectFormatRejection(importLlama2cModel(STORIES_BIN, join(dir, 'q.m'), { dtype: FloatType.Q40, hiddenDimMultiple: 1 }), InvalidValueError);
    expect(e.field).toBe('hidden_dim');
    await expectFormatRejection(importLlama2cModel(STORIES_BIN, join(dir, 'q.m'), { dtype: FloatType.F32, hiddenDim: 100 }), InvalidValueError);
    expect(readdirSync(dir).sort()).toEqual(['none.m', 'wide.m']);
  });

  describe('the checkpoint is untrusted: typed errors naming field and offset, no output', () => {
    const ck = readBytes(STORIES_BIN);
    const withHeader = (i: number, v: number, base = ck) => {
      const b = base.slice();
      new DataView(b.buffer).setInt32(4 * i, v, true);
      return b;
    };
    async function rejectsWith(bytes: Uint8Array, cls: new (...a: never[]) => FormatError) {
      const p = join(dir, 'ck.bin');
      writeFileSync(p, bytes);
      const e = await expectFormatRejection(importLlama2cModel(p, join(dir, 'out.m'), { dtype: FloatType.F32 }), cls);
      expect(e.path).toBe(p);
      expect(existsSync(join(dir, 'out.m'))).toBe(false);
      expect(existsSync(join(dir, 'out.m.partial'))).toBe(false);
      return e;
    }

    it('truncated or extended file', async () => {
      let e = await rejectsWith(ck.subarray(0, ck.length - 4), FileSizeMismatchError);
      expect([e.field, e.expected, e.actual]).toEqual(['file size', 1056540, 1056536]);
      e = await rejectsWith(concatBytes(ck, new Uint8Array(8)), FileSizeMismatchError);
      expect(e.offset).toBe(1056540);
      e = await rejectsWith(ck.subarray(0, 20), TruncatedError);
      expect(e.offset).toBe(20);
    });

    it('zero, negative, absurd or inconsistent dimensions', async () => {
      const cases: [number, number, string, new (...a: never[]) => FormatError][] = [
        [0, 0, 'dim', BadMagicError],
        [0, 2 ** 30, 'dim', BadMagicError],
        [1, 0, 'hidden_dim', InvalidValueError],
        [2, -5, 'n_layers', InvalidValueError],
        [3, 0, 'n_heads', InvalidValueError],
        [4, 3, 'n_kv_heads', InvalidValueError],
        [3, 12, 'n_heads', InvalidValueError], // 12 | kv 4 but dim 64 is not a multiple of 12
        [6, 0, 'seq_len', InvalidValueError],
        [5, 2 ** 31 - 1, 'vocab_size', InvalidValueError],
      ];
      for (const [i, v, field, cls] of cases) {
        const e = await rejectsWith(withHeader(i, v), cls);
        expect([e.field, e.offset], `${field}=${v}`).toEqual([field, 4 * i]);
      }
      // A plausible header whose implied size is not the file's: the unshared classifier is missing.
      const e = await rejectsWith(withHeader(5, -512), FileSizeMismatchError);
      expect(e.expected).toBe(1056540 + 512 * 64 * 4);
    });

    it('"ak42" exports: unknown version, bad flag, bad group size', async () => {
      const v2 = writeVersionedLlama2c(readLegacyLlama2c(ck), 2, 64);
      let e = await rejectsWith(withHeader(1, 3, v2), InvalidValueError);
      expect([e.field, e.offset]).toEqual(['version', 4]);
      const flag = v2.slice();
      flag[36] = 7;
      e = await rejectsWith(flag, InvalidValueError);
      expect([e.field, e.offset]).toEqual(['shared_classifier', 36]);
      for (const gs of [0, 7, 128, -64]) {
        const g = v2.slice();
        new DataView(g.buffer).setInt32(37, gs, true);
        e = await rejectsWith(g, InvalidValueError);
        expect([e.field, e.offset]).toEqual(['group_size', 37]);
      }
    });

    it('files that are not checkpoints, missing paths, directories', async () => {
      await rejectsWith(readBytes(TOK512_BIN), FormatError);
      await rejectsWith(readBytes(Q40_FIXTURE), FormatError);
      await rejectsWith(new Uint8Array(0), TruncatedError);
      await expectFormatRejection(importLlama2cModel(join(dir, 'missing.bin'), join(dir, 'o.m'), { dtype: 0 }), FileAccessError);
      mkdirSync(join(dir, 'sub'));
      await expectFormatRejection(importLlama2cModel(join(dir, 'sub'), join(dir, 'o.m'), { dtype: 0 }), FormatError);
      expect(readdirSync(dir).sort()).toEqual(['ck.bin', 'sub']);
    });
  });

  describe('tokenizer.bin → .t', () => {
    const fixture = parseTokenizer(readBytes(TOKENIZER_FIXTURE));
    const tok = convertLlama2cTokenizer(readBytes(TOK512_BIN), 512);
    const dec = (b: Uint8Array) => Buffer.from(b).toString('latin1');

    it('keeps scores and order; <0xNN> become raw bytes; ids 0/1/2 the SentencePiece control pieces', () => {
      expect(tok.vocab.length).toBe(512);
      expect(tok.scores).toEqual(fixture.scores);
      expect(tok.vocab.slice(0, 3).map(dec)).toEqual(['<unk>', '<s>', '</s>']);
      for (let id = 3; id < 259; id++) expect(Array.from(tok.vocab[id]!)).toEqual([id - 3]);
      for (let id = 259; id < 512; id++) expect(tok.vocab[id]).toEqual(fixture.vocab[id]);
      expect([tok.bosId, tok.eosIds, tok.addBos]).toEqual([1, [2], true]);
      expect(tok.chatTemplate).toBe(fixture.chatTemplate);
      expect(new TextEncoder().encode(LLAMA2_CHAT_TEMPLATE).length).toBe(815);
      expect(tok.maxTokenLength).toBe(Math.max(...tok.vocab.map((p) => p.length)));
    });

    it('bad tokenizer.bin: too few or too many entries, bad lengths', () => {
      const raw = readBytes(TOK512_BIN);
      let e: FormatError = expectFormatError(() => convertLlama2cTokenizer(raw.subarray(0, raw.length - 3), 512), TruncatedError);
      expect(e.field).toBe('vocab[511].bytes');
      e = expectFormatError(() => convertLlama2cTokenizer(raw, 511), InvalidValueError);
      expect(e.field).toBe('vocab_size');
      e = expectFormatError(() => convertLlama2cTokenizer(raw, 100_000), TruncatedError);
      expect(e.field).toBe('vocab_size');
      const zero = raw.slice();
      new DataView(zero.buffer).setInt32(4 + 4, 0, true); // entry 0's length
      e = expectFormatError(() => convertLlama2cTokenizer(zero, 512), InvalidValueError);
      expect([e.field, e.offset]).toEqual(['vocab[0].length', 8]);
      const big = raw.slice();
      new DataView(big.buffer).setInt32(0, -7, true);
      e = expectFormatError(() => convertLlama2cTokenizer(big, 512), InvalidValueError);
      expect([e.field, e.offset]).toEqual(['max_token_length', 0]);
    });
  });

  it('importLlama2c writes both files, refuses to overwrite unless asked, and writes no model when the tokenizer is bad', async () => {
    const paths = { checkpoint: STORIES_BIN, tokenizer: TOK512_BIN, model: join(dir, 'm.m'), tokenizerOut: join(dir, 't.t') };
    const r = await importLlama2c(paths, { dtype: FloatType.Q40 });
    expect(same(paths.model, Q40_FIXTURE)).toBe(true);
    expect(parseTokenizer(readBytes(paths.tokenizerOut)).vocab).toEqual(r.tokenizer.vocab);
    const before = readFileSync(paths.model);
    await expectFormatRejection(importLlama2c(paths, { dtype: FloatType.F32 }), FileAccessError);
    expect(readFileSync(paths.model).equals(before)).toBe(true);
    await importLlama2c(paths, { dtype: FloatType.F32, overwrite: true });
    expect(same(paths.model, F32_FIXTURE)).toBe(true);

    const badTok = join(dir, 'bad.bin');
    writeFileSync(badTok, readBytes(TOK512_BIN).subarray(0, 1000));
    const e = await expectFormatRejection(importLlama2c({ ...paths, tokenizer: badTok, model: join(dir, 'x.m'), tokenizerOut: join(dir, 'x.t') }, { dtype: 0 }), TruncatedError);
    expect(e.path).toBe(badTok);
    expect(existsSync(join(dir, 'x.m'))).toBe(false);
    expect(existsSync(join(dir, 'x.t'))).toBe(false);
  });
});
