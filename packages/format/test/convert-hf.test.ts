import fc from 'fast-check';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ArchType,
  DTYPES,
  FloatType,
  FormatError,
  HeaderKey,
  InvalidValueError,
  MissingTensorError,
  parseTokenizer,
  readModelFile,
  RopeType,
  TensorMismatchError,
  UnsupportedModelError,
  type ModelLayout,
  type TensorInfo,
} from '../src/index.js';
import { convertHfTokenizer, importHf, importHfModel } from '../src/convert.js';
import { parseSafetensorsHeader } from '../src/safetensors.js';
import { safetensorsBytes, tinyHfCheckpoint, writeHfDir, type TinyHfCheckpoint } from '../src/testing/index.js';
import { tempDir } from './helpers.js';

const K = HeaderKey;
let tmp: { dir: string; cleanup: () => void };
beforeAll(() => {
  tmp = tempDir();
});
afterAll(() => tmp.cleanup());

let n = 0;
const fresh = (): string => join(tmp.dir, `case${n++}`);

/**
 * The q/k row order the `.m` LLAMA arch needs, computed from the definition (FORMAT.md §b.4)
 * without reusing the converter: new row r of head h = r / hd comes from old row
 * h·hd + (r mod 2)·hd/2 + floor((r mod hd) / 2).
 */
function expectedPermuted(src: Float32Array, rows: number, cols: number, hd: number): Float32Array {
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) {
    const h = Math.floor(r / hd);
    const w = r % hd;
    const from = h * hd + (w % 2) * (hd / 2) + Math.floor(w / 2);
    for (let c = 0; c < cols; c++) out[r * cols + c] = src[from * cols + c]!;
  }
  return out;
}

/** Where each `.m` tensor's values come from in the HF checkpoint. */
function hfName(t: TensorInfo, tied: boolean): string {
  const p = `model.layers.${t.layer}.`;
  const e = t.expert >= 0 ? `${p}mlp.experts.${t.expert}.` : `${p}mlp.`;
  const names: Record<string, string> = {
    embedding: 'model.embed_tokens.weight',
    q: `${p}self_attn.q_proj.weight`,
    k: `${p}self_attn.k_proj.weight`,
    v: `${p}self_attn.v_proj.weight`,
    wo: `${p}self_attn.o_proj.weight`,
    w1: `${e}gate_proj.weight`,
    w2: `${e}down_proj.weight`,
    w3: `${e}up_proj.weight`,
    moe_gate: `${p}mlp.gate.weight`,
    q_norm: `${p}self_attn.q_norm.weight`,
    k_norm: `${p}self_attn.k_norm.weight`,
    att_norm: `${p}input_layernorm.weight`,
    ffn_norm: `${p}post_attention_layernorm.weight`,
    final_norm: 'model.norm.weight',
    wcls: tied ? 'model.embed_tokens.weight' : 'lm_head.weight',
  };
  return names[t.kind]!;
}

/** Check every tensor of the converted file against the checkpoint's arrays, byte for byte. */
function checkTensors(path: string, layout: ModelLayout, ck: TinyHfCheckpoint, permute: boolean): void {
  const file = readFileSync(path);
  const byName = new Map(ck.tensors.map((t) => [t.name, t]));
  const tied = !byName.has('lm_head.weight');
  const h = layout.header;
  expect(file.length).toBe(layout.fileSize);
  for (const t of layout.tensors) {
    const src = byName.get(hfName(t, tied))!;
    expect(src, t.name).toBeDefined();
    let x = src.data;
    if (permute && (t.kind === 'q' || t.kind === 'k')) x = expectedPermuted(x, t.shape[0]!, t.shape[1]!, h.headDim);
    const want = new Uint8Array(t.byteLength);
    DTYPES[t.dtype].quantize(x, want);
    const got = new Uint8Array(file.buffer, file.byteOffset + t.offset, t.byteLength);
    expect(Buffer.compare(Buffer.from(got), Buffer.from(want)), t.name).toBe(0);
  }
}

describe('convert hf: header and tensors', () => {
  it('llama, sharded, F32/F16/BF16 sources → F32 .m: header as convert-hf.py writes it, q/k permuted', async () => {
    const dtypes = ['F32', 'F16', 'BF16'] as const;
    const ck = tinyHfCheckpoint({ modelType: 'llama', dtype: (name) => dtypes[name.length % 3]! });
    expect(new Set(ck.tensors.map((t) => t.dtype)).size).toBe(3);
    const dir = fresh();
    writeHfDir(dir, ck, { shards: 3 });
    const out = join(dir, 'out.m');
    const progress: number[] = [];
    const r = await importHfModel(dir, out, { dtype: FloatType.F32, fsync: false, onProgress: (w) => progress.push(w) });
    // Tiny chunks (one head of q/k, two rows otherwise) must give the same file.
    const small = join(dir, 'small-chunks.m');
    await importHfModel(dir, small, { dtype: FloatType.F32, fsync: false, chunkBytes: 700 });
    expect(Buffer.compare(readFileSync(small), readFileSync(out))).toBe(0);
    const { header, layout } = readModelFile(out);
    expect(header.pairs).toEqual([
      [K.Version, 0],
      [K.ArchType, ArchType.LLAMA],
      [K.HiddenAct, 1],
      [K.Dim, 64],
      [K.HiddenDim, 96],
      [K.NLayers, 2],
      [K.NHeads, 4],
      [K.NKvHeads, 2],
      [K.WeightsFloatType, FloatType.F32],
      [K.MaxSeqLen, 128],
      [K.VocabSize, 40],
      [K.NExperts, 0],
      [K.NActiveExperts, 0],
      [K.RopeTheta, 10000],
      [K.NormEpsilon, 5],
    ]);
    checkTensors(out, layout, ck, true);
    expect(r.unusedTensors).toEqual([]);
    expect(progress.at(-1)).toBe(layout.fileSize);
  });

  it('the permutation really moves rows (not the identity on this data)', () => {
    const ck = tinyHfCheckpoint({ modelType: 'llama' });
    const q = ck.tensors.find((t) => t.name.endsWith('0.self_attn.q_proj.weight'))!;
    const p = expectedPermuted(q.data, 64, 64, 16);
    // Row 1 of head 0 comes from row 8 (hd/2), row 2 from row 1.
    expect(Array.from(p.subarray(64, 128))).toEqual(Array.from(q.data.subarray(8 * 64, 9 * 64)));
    expect(Array.from(p.subarray(128, 192))).toEqual(Array.from(q.data.subarray(64, 128)));
  });

  it('llama with llama3 rope scaling and head_dim → Q40 and Q80, classifier from lm_head', async () => {
    for (const dtype of [FloatType.Q40, FloatType.Q80]) {
      const ck = tinyHfCheckpoint({
        modelType: 'llama',
        headDim: 16,
        extraConfig: { rope_theta: 500000.0, rope_scaling: { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 } },
      });
      const dir = fresh();
      writeHfDir(dir, ck);
      const out = join(dir, 'out.m');
      await importHfModel(dir, out, { dtype, fsync: false });
      const { header, layout } = readModelFile(out);
      expect(header.weightType).toBe(dtype);
      expect(header.pairs.slice(13)).toEqual([
        [K.RopeTheta, 500000],
        [K.RopeScalingFactor, 8],
        [K.RopeScalingLowFreqFactor, 1],
        [K.RopeScalingHighFreqFactor, 4],
        [K.RopeScalingOrigMaxSeqLen, 8192],
        [K.RopeType, RopeType.LLAMA3_1],
        [K.HeadDim, 16],
        [K.NormEpsilon, 5],
      ]);
      checkTensors(out, layout, ck, true);
    }
  });

  it('qwen3, tied embeddings, BF16 → F16: classifier = copy of the embedding, q/k norms, no permutation', async () => {
    const ck = tinyHfCheckpoint({ modelType: 'qwen3', headDim: 32, tied: true, dtype: () => 'BF16' });
    const dir = fresh();
    writeHfDir(dir, ck);
    const out = join(dir, 'out.m');
    await importHfModel(dir, out, { dtype: FloatType.F16, fsync: false });
    const { header, layout } = readModelFile(out);
    expect(header.archType).toBe(ArchType.QWEN3);
    expect(header.qDim).toBe(128);
    expect(header.normEpsilonCode).toBe(6);
    expect(header.ropeTheta).toBe(1000000);
    expect(layout.tensor('layers.0.q_norm').shape).toEqual([32]);
    checkTensors(out, layout, ck, false);
  });

  it('qwen3_moe: router and experts in .m order (w1 gate, w2 down, w3 up per expert)', async () => {
    const ck = tinyHfCheckpoint({ modelType: 'qwen3_moe', headDim: 16 });
    const dir = fresh();
    writeHfDir(dir, ck, { shards: 2 });
    const out = join(dir, 'out.m');
    await importHfModel(dir, out, { dtype: FloatType.Q80, fsync: false });
    const { header, layout } = readModelFile(out);
    expect(header.archType).toBe(ArchType.QWEN3_MOE);
    expect([header.nExperts, header.nActiveExperts, header.moeHiddenDim, header.hiddenDim]).toEqual([4, 2, 32, 96]);
    expect(header.pairs.at(-1)).toEqual([K.MoeHiddenDim, 32]);
    checkTensors(out, layout, ck, false);
  });

  it('mistral maps to LLAMA and is permuted', async () => {
    const ck = tinyHfCheckpoint({ modelType: 'mistral', extraConfig: { sliding_window: null } });
    const dir = fresh();
    writeHfDir(dir, ck);
    const out = join(dir, 'out.m');
    await importHfModel(dir, out, { dtype: FloatType.F32, fsync: false });
    const { layout } = readModelFile(out);
    expect(layout.header.archType).toBe(ArchType.LLAMA);
    checkTensors(out, layout, ck, true);
  });
});

describe('convert hf: refusals are typed and say what is supported', () => {
  const convert = async (ck: TinyHfCheckpoint, tweak?: (dir: string) => void): Promise<unknown> => {
    const dir = fresh();
    writeHfDir(dir, ck);
    tweak?.(dir);
    try {
      await importHfModel(dir, join(dir, 'out.m'), { dtype: FloatType.F32, fsync: false });
    } catch (e) {
      return e;
    }
    return undefined;
  };

  it('unknown model_type lists the supported ones', async () => {
    const e = await convert(tinyHfCheckpoint({ modelType: 'llama', extraConfig: { model_type: 'gemma2' } }));
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect((e as FormatError).message).toContain('llama, mistral, qwen3, qwen3_moe');
    expect((e as FormatError).message).toContain('gemma2');
    expect((e as FormatError).path).toMatch(/config\.json$/);
  });

  it('unsupported rope scaling, epsilon, activation', async () => {
    const yarn = await convert(tinyHfCheckpoint({ modelType: 'llama', extraConfig: { rope_scaling: { rope_type: 'yarn', factor: 4 } } }));
    expect(yarn).toBeInstanceOf(UnsupportedModelError);
    expect((yarn as FormatError).field).toBe('config.json rope_scaling.rope_type');
    const eps = await convert(tinyHfCheckpoint({ modelType: 'llama', extraConfig: { rms_norm_eps: 1e-4 } }));
    expect(eps).toBeInstanceOf(UnsupportedModelError);
    const gelu = await convert(tinyHfCheckpoint({ modelType: 'llama', extraConfig: { hidden_act: 'gelu' } }));
    expect(gelu).toBeInstanceOf(UnsupportedModelError);
  });

  it('missing tensor, wrong shape, unsupported dtype, no partial file left', async () => {
    const ck = tinyHfCheckpoint({ modelType: 'llama' });
    const missing = await convert({ ...ck, tensors: ck.tensors.filter((t) => !t.name.includes('1.mlp.up_proj')) });
    expect(missing).toBeInstanceOf(MissingTensorError);
    expect((missing as FormatError).field).toBe('model.layers.1.mlp.up_proj.weight');

    const wrong = await convert({ ...ck, config: { ...ck.config, intermediate_size: 128 } });
    expect(wrong).toBeInstanceOf(TensorMismatchError);

    let dirSeen = '';
    const badDtype = await convert(ck, (dir) => {
      dirSeen = dir;
      // Relabel one F32 tensor as I32 (same byte size) in a hand-made shard.
      const t = ck.tensors.map((x) => (x.name === 'model.norm.weight' ? { ...x } : x));
      const bytes = safetensorsBytes(t);
      const s = new TextDecoder().decode(bytes.subarray(8, 8 + Number(new DataView(bytes.buffer).getBigUint64(0, true))));
      const header = JSON.parse(s) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
      header['model.norm.weight']!.dtype = 'I32';
      let json = JSON.stringify(header);
      while (json.length < s.length) json += ' ';
      writeFileSync(join(dir, 'model.safetensors'), Buffer.concat([bytes.subarray(0, 8), Buffer.from(json), bytes.subarray(8 + s.length)]));
    });
    expect(badDtype).toBeInstanceOf(UnsupportedModelError);
    expect((badDtype as FormatError).message).toMatch(/model\.norm\.weight/);
    expect(readdirNames(dirSeen).some((f) => f.endsWith('.partial'))).toBe(false);
  });

  it('weight_map entries that leave the directory are refused', async () => {
    const e = await convert(tinyHfCheckpoint({ modelType: 'llama' }), (dir) => {
      writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': '../x.safetensors' } }));
    });
    expect(e).toBeInstanceOf(InvalidValueError);
    expect((e as FormatError).field).toBe('weight_map.model.norm.weight');
  });
});

function readdirNames(dir: string): string[] {
  expect(dir).not.toBe('');
  return readdirSync(dir);
}

describe('safetensors header parsing', () => {
  const good = safetensorsBytes([
    { name: 'a', dtype: 'F32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    { name: 'b', dtype: 'BF16', shape: [4], data: new Float32Array([1, -2, 0.5, 3]) },
  ]);

  it('reads names, dtypes, shapes and absolute offsets', () => {
    const h = parseSafetensorsHeader(good, good.length);
    const a = h.tensors.get('a')!;
    expect([a.dtype, a.shape, a.offset - h.dataOffset, a.byteLength]).toEqual(['F32', [2, 3], 0, 24]);
    expect(h.tensors.get('b')!.byteLength).toBe(8);
  });

  it('refuses an absurd header length before allocating', () => {
    const b = good.slice();
    new DataView(b.buffer).setBigUint64(0, 1n << 40n, true);
    expect(() => parseSafetensorsHeader(b, b.length)).toThrow(InvalidValueError);
  });

  it('random corruptions give only typed errors', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.nat(good.length), (edits, cut) => {
        const b = good.slice(0, Math.max(cut, 1));
        for (const [i, v] of edits) if (i < b.length) b[i] = v;
        try {
          parseSafetensorsHeader(b, b.length);
        } catch (e) {
          if (!(e instanceof FormatError)) throw e;
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('HF tokenizers → .t', () => {
  const byteLevel = {
    model: {
      type: 'BPE',
      vocab: { a: 0, b: 1, 'Ġ': 2, 'Ġa': 3, ab: 4, 'Ċ': 5, 'Ã©': 6 },
      merges: ['Ġ a', 'a b'],
    },
    added_tokens: [
      { id: 7, content: '<|endoftext|>', special: true },
      { id: 8, content: '<|im_start|>', special: true },
      { id: 9, content: '<|im_end|>', special: true },
    ],
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'Split' }, { type: 'ByteLevel', add_prefix_space: false }] },
    decoder: { type: 'ByteLevel' },
  };

  it('byte-level: GPT-2 unicode → raw bytes, score −id, specials as text, BOS from config, EOS list', () => {
    const { style, data } = convertHfTokenizer({
      tokenizer: byteLevel,
      tokenizerConfig: { bos_token: null, eos_token: '<|im_end|>', chat_template: "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}" },
      config: { bos_token_id: 7, eos_token_id: [9, 7] },
    });
    expect(style).toBe('bytelevel');
    const text = data.vocab.map((v) => Buffer.from(v).toString('latin1'));
    expect(text).toEqual(['a', 'b', ' ', ' a', 'ab', '\n', '\xc3\xa9', '<|endoftext|>', '<|im_start|>', '<|im_end|>']);
    expect(Array.from(data.scores)).toEqual([-0, -1, -2, -3, -4, -5, -6, -7, -8, -9]); // -float(id), as dllama writes it
    expect(data.bosId).toBe(7);
    expect(data.eosIds).toEqual([9, 7]);
    // No BOS token declared by the tokenizer (Qwen): none is prepended.
    expect(data.addBos).toBe(false);
    expect(data.chatTemplate).toContain('<|im_start|>');
  });

  it('SentencePiece-style (byte fallback): ▁ → space, <0xNN> → byte, controls as text, add_bos', () => {
    const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
    for (let b = 0; b < 256; b++) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = 3 + b;
    vocab['▁t'] = 259;
    vocab['he'] = 260;
    vocab['▁the'] = 261;
    const { style, data } = convertHfTokenizer({
      tokenizer: {
        model: { type: 'BPE', vocab, merges: ['h e', '▁t he'], byte_fallback: true },
        added_tokens: [0, 1, 2].map((id) => ({ id, content: ['<unk>', '<s>', '</s>'][id], special: true })),
        decoder: { type: 'Sequence', decoders: [{ type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' }] },
      },
      tokenizerConfig: { bos_token: '<s>', eos_token: { content: '</s>' }, add_bos_token: true, chat_template: [{ name: 'default', template: '[INST]' }] },
    });
    expect(style).toBe('sentencepiece');
    expect(new TextDecoder().decode(data.vocab[1])).toBe('<s>');
    expect(Array.from(data.vocab[3 + 0x0a]!)).toEqual([0x0a]);
    expect(new TextDecoder().decode(data.vocab[261])).toBe(' the');
    expect([data.bosId, data.eosIds, data.addBos, data.chatTemplate]).toEqual([1, [2], true, '[INST]']);
  });

  it('importHf writes .t next to .m (chat_template.jinja when tokenizer_config has none)', async () => {
    const ck = tinyHfCheckpoint({ modelType: 'qwen3', vocab: 12, tied: true });
    const dir = fresh();
    writeHfDir(dir, ck, { files: { 'tokenizer.json': byteLevel, 'tokenizer_config.json': { eos_token: '<|im_end|>' }, 'chat_template.jinja': '<|im_start|>x' } });
    const r = await importHf({ dir, model: join(dir, 'm.m'), tokenizerOut: join(dir, 't.t') }, { dtype: FloatType.F32, fsync: false });
    const t = parseTokenizer(new Uint8Array(readFileSync(join(dir, 't.t'))));
    expect(t.vocab.length).toBe(10);
    expect(t.chatTemplate).toBe('<|im_start|>x');
    expect(t.eosIds).toEqual([9, 2]);
    expect(r.tokenizer?.style).toBe('bytelevel');
  });

  it('a directory without tokenizer.json fails with a typed error naming it', async () => {
    const dir = fresh();
    mkdirSync(dir);
    writeHfDir(dir, tinyHfCheckpoint({ modelType: 'llama' }));
    await expect(importHf({ dir, model: join(dir, 'm.m'), tokenizerOut: join(dir, 't.t') }, { dtype: FloatType.F32 })).rejects.toBeInstanceOf(UnsupportedModelError);
  });
});
