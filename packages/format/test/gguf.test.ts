import { gguf as hfGguf } from '@huggingface/gguf';
import fc from 'fast-check';
import { readFileSync, writeFileSync } from 'node:fs';
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
  TruncatedError,
  UnsupportedModelError,
  writeTokenizer,
} from '../src/index.js';
import { convertHfTokenizer, exportGguf, importGguf, importGgufModel, importHfModel, importLlama2c } from '../src/convert.js';
import { encodeGgufHeader, GgmlType, GgufFile, parseGgufHeader } from '../src/gguf.js';
import { ggufTokenizerMetadata } from '../src/export-gguf.js';
import { ggufTokenizerToData } from '../src/gguf-tokenizer.js';
import { llama3RopeFactors } from '../src/gguf-arch.js';
import {
  GT,
  ggufBytes,
  Rng,
  tinyHfCheckpoint,
  TINY_LLAMA31,
  TINY_QWEN3,
  TINY_QWEN3_MOE,
  withDtype,
  writeHfDir,
  writeTinyModel,
  type GgufKv,
  type GgufTensorSpec,
} from '../src/testing/index.js';
import { STORIES_BIN, tempDir, TOK512_BIN } from './helpers.js';

const K = HeaderKey;
let tmp: { dir: string; cleanup: () => void };
beforeAll(() => {
  tmp = tempDir();
});
afterAll(() => tmp.cleanup());
let n = 0;
const fresh = (ext: string): string => join(tmp.dir, `f${n++}${ext}`);

/** Encode floats with a reference codec. */
function enc(type: FloatType, x: Float32Array): Uint8Array {
  const info = DTYPES[type];
  const out = new Uint8Array((x.length / info.blockSize) * info.bytesPerBlock);
  info.quantize(x, out);
  return out;
}
function dec(type: FloatType, b: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  DTYPES[type].dequantize(b, out);
  return out;
}
function randn(n: number, seed: number, scale = 0.2): Float32Array {
  const r = new Rng(seed);
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = scale * r.nextNormal();
  return x;
}
const GGML_OF: Partial<Record<FloatType, number>> = { [FloatType.F32]: 0, [FloatType.F16]: 1, [FloatType.Q40]: 2, [FloatType.Q80]: 8 };

/** SentencePiece-like tokenizer metadata for V tokens: <unk>, <s>, </s>, 256 bytes, then words. */
function spmKvs(V: number): GgufKv[] {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [2, 3, 3];
  for (let b = 0; b < 256 && tokens.length < V; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
  }
  while (tokens.length < V) {
    tokens.push(`▁w${tokens.length}`);
    types.push(1);
  }
  return [
    ['tokenizer.ggml.model', GT.STR, 'llama'],
    ['tokenizer.ggml.tokens', GT.ARR, [GT.STR, tokens]],
    ['tokenizer.ggml.scores', GT.ARR, [GT.F32, tokens.map((_, i) => -i)]],
    ['tokenizer.ggml.token_type', GT.ARR, [GT.I32, types]],
    ['tokenizer.ggml.bos_token_id', GT.U32, 1],
    ['tokenizer.ggml.eos_token_id', GT.U32, 2],
    ['tokenizer.ggml.add_bos_token', GT.BOOL, true],
    ['tokenizer.chat_template', GT.STR, '[INST]'],
  ];
}

interface TinyGguf {
  kvs: GgufKv[];
  tensors: GgufTensorSpec[];
  /** Float values of each tensor (as the GGUF decodes), by GGUF name. */
  values: Map<string, Float32Array>;
}

/** A tiny llama-family GGUF from known arrays; `typeOf` picks each tensor's type. */
function tinyGguf(arch: 'llama' | 'qwen3' | 'qwen3moe', typeOf: (name: string) => FloatType, opts: { tied?: boolean; V?: number } = {}): TinyGguf {
  const D = 64;
  const FF = 96;
  const L = 2;
  const nh = 4;
  const nkv = 2;
  const hd = arch === 'qwen3' ? 32 : 16;
  const V = opts.V ?? 300;
  const E = 4;
  const MFF = 32;
  const kvs: GgufKv[] = [
    ['general.architecture', GT.STR, arch],
    [`${arch}.context_length`, GT.U32, 256],
    [`${arch}.embedding_length`, GT.U32, D],
    [`${arch}.block_count`, GT.U32, L],
    [`${arch}.feed_forward_length`, GT.U32, FF],
    [`${arch}.attention.head_count`, GT.U32, nh],
    [`${arch}.attention.head_count_kv`, GT.U32, nkv],
    [`${arch}.attention.layer_norm_rms_epsilon`, GT.F32, arch === 'llama' ? 1e-5 : 1e-6],
    [`${arch}.rope.freq_base`, GT.F32, arch === 'llama' ? 10000 : 1000000],
    [`${arch}.rope.dimension_count`, GT.U32, hd],
    ...spmKvs(V),
  ];
  if (arch !== 'llama') kvs.push([`${arch}.attention.key_length`, GT.U32, hd], [`${arch}.attention.value_length`, GT.U32, hd]);
  if (arch === 'qwen3moe') kvs.push([`${arch}.expert_count`, GT.U32, E], [`${arch}.expert_used_count`, GT.U32, 2], [`${arch}.expert_feed_forward_length`, GT.U32, MFF]);
  const tensors: GgufTensorSpec[] = [];
  const values = new Map<string, Float32Array>();
  let seed = 1;
  const add = (name: string, dims: number[], norm = false): void => {
    const type = norm ? FloatType.F32 : typeOf(name);
    const count = dims.reduce((a, b) => a * b, 1);
    const x = randn(count, seed++);
    if (norm) for (let i = 0; i < count; i++) x[i] = 1 + x[i]!;
    const data = enc(type, x);
    tensors.push({ name, type: GGML_OF[type]!, dims, data });
    values.set(name, dec(type, data, count));
  };
  add('token_embd.weight', [D, V]);
  for (let l = 0; l < L; l++) {
    const b = `blk.${l}.`;
    add(`${b}attn_norm.weight`, [D], true);
    add(`${b}attn_q.weight`, [D, nh * hd]);
    add(`${b}attn_k.weight`, [D, nkv * hd]);
    add(`${b}attn_v.weight`, [D, nkv * hd]);
    add(`${b}attn_output.weight`, [nh * hd, D]);
    if (arch !== 'llama') {
      add(`${b}attn_q_norm.weight`, [hd], true);
      add(`${b}attn_k_norm.weight`, [hd], true);
    }
    add(`${b}ffn_norm.weight`, [D], true);
    if (arch === 'qwen3moe') {
      add(`${b}ffn_gate_inp.weight`, [D, E], true);
      add(`${b}ffn_gate_exps.weight`, [D, MFF, E]);
      add(`${b}ffn_down_exps.weight`, [MFF, D, E]);
      add(`${b}ffn_up_exps.weight`, [D, MFF, E]);
    } else {
      add(`${b}ffn_gate.weight`, [D, FF]);
      add(`${b}ffn_down.weight`, [FF, D]);
      add(`${b}ffn_up.weight`, [D, FF]);
    }
  }
  add('output_norm.weight', [D], true);
  if (!(opts.tied ?? false)) add('output.weight', [D, V]);
  return { kvs, tensors, values };
}

/** The GGUF tensor (and expert slice) each .m tensor must come from, by our reading of llama.cpp's names. */
function sourceOf(name: string, tied: boolean): { g: string; slice: number } {
  if (name === 'embedding') return { g: 'token_embd.weight', slice: -1 };
  if (name === 'final_norm') return { g: 'output_norm.weight', slice: -1 };
  if (name === 'wcls') return { g: tied ? 'token_embd.weight' : 'output.weight', slice: -1 };
  const m = /^layers\.(\d+)\.(?:experts\.(\d+)\.)?(\w+)$/.exec(name)!;
  const kind = m[3]!;
  const map: Record<string, string> = { q: 'attn_q', k: 'attn_k', v: 'attn_v', wo: 'attn_output', w1: 'ffn_gate', w2: 'ffn_down', w3: 'ffn_up', moe_gate: 'ffn_gate_inp', q_norm: 'attn_q_norm', k_norm: 'attn_k_norm', att_norm: 'attn_norm', ffn_norm: 'ffn_norm' };
  const expert = m[2] !== undefined;
  return { g: `blk.${m[1]}.${map[kind]}${expert ? '_exps' : ''}.weight`, slice: expert ? Number(m[2]) : -1 };
}

describe('GGUF → .m', () => {
  it('llama Q4_0 (tied, Q8_0 embedding): Q4_0 blocks copied byte for byte, embedding dequantized exactly, header', async () => {
    const g = tinyGguf('llama', (name) => (name === 'token_embd.weight' ? FloatType.Q80 : FloatType.Q40), { tied: true });
    const path = fresh('.gguf');
    writeFileSync(path, ggufBytes(g.kvs, g.tensors));
    const out = fresh('.m');
    const r = await importGgufModel(path, out, { fsync: false });
    // One row per read must give the same file.
    const rowByRow = fresh('.m');
    await importGgufModel(path, rowByRow, { fsync: false, chunkBytes: 1 });
    expect(Buffer.compare(readFileSync(rowByRow), readFileSync(out))).toBe(0);
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
      [K.WeightsFloatType, FloatType.Q40],
      [K.MaxSeqLen, 256],
      [K.VocabSize, 300],
      [K.NExperts, 0],
      [K.NActiveExperts, 0],
      [K.RopeTheta, 10000],
      [K.NormEpsilon, 5],
    ]);
    const file = readFileSync(out);
    const raw = new Map(g.tensors.map((t) => [t.name, t]));
    for (const t of layout.tensors) {
      const { g: name } = sourceOf(t.name, true);
      const src = raw.get(name)!;
      const got = file.subarray(t.offset, t.offset + t.byteLength);
      // Same type: the GGUF bytes themselves. Different type: decode, then the reference encoder.
      const want = src.type === GGML_OF[t.dtype] ? src.data : enc(t.dtype, g.values.get(name)!);
      expect(Buffer.compare(got, Buffer.from(want)), t.name).toBe(0);
    }
    expect(r.reencoded).toEqual(['token_embd.weight Q8_0→F32', 'token_embd.weight Q8_0→Q40']);
  });

  it('qwen3 F16 → F16 .m copies bytes; --dtype f32 decodes exactly', async () => {
    const g = tinyGguf('qwen3', () => FloatType.F16);
    const path = fresh('.gguf');
    writeFileSync(path, ggufBytes(g.kvs, g.tensors, { alignment: 64 }));
    for (const dtype of [undefined, FloatType.F32]) {
      const out = fresh('.m');
      await importGgufModel(path, out, { dtype, fsync: false });
      const { header, layout } = readModelFile(out);
      expect(header.archType).toBe(ArchType.QWEN3);
      expect([header.headDim, header.qDim, header.normEpsilonCode, header.ropeTheta]).toEqual([32, 128, 6, 1000000]);
      expect(header.weightType).toBe(dtype ?? FloatType.F16);
      const file = readFileSync(out);
      for (const t of layout.tensors) {
        const want = enc(t.dtype, g.values.get(sourceOf(t.name, false).g)!);
        expect(Buffer.compare(file.subarray(t.offset, t.offset + t.byteLength), Buffer.from(want)), t.name).toBe(0);
      }
    }
  });

  it('qwen3moe: experts are slices of the merged [in, out, E] tensors, router F32', async () => {
    const g = tinyGguf('qwen3moe', () => FloatType.Q80);
    const path = fresh('.gguf');
    writeFileSync(path, ggufBytes(g.kvs, g.tensors));
    const out = fresh('.m');
    await importGgufModel(path, out, { fsync: false });
    const { header, layout } = readModelFile(out);
    expect([header.archType, header.nExperts, header.nActiveExperts, header.moeHiddenDim]).toEqual([ArchType.QWEN3_MOE, 4, 2, 32]);
    const file = readFileSync(out);
    const raw = new Map(g.tensors.map((t) => [t.name, t]));
    for (const t of layout.tensors) {
      const { g: name, slice } = sourceOf(t.name, false);
      const src = raw.get(name)!;
      const per = src.data.length / (slice >= 0 ? src.dims[2]! : 1);
      const count = t.shape.reduce((x, y) => x * y, 1);
      const want =
        src.type !== GGML_OF[t.dtype]
          ? enc(t.dtype, g.values.get(name)!) // embedding: Q8_0 in the GGUF, F32 in .m
          : slice >= 0
            ? src.data.subarray(slice * per, (slice + 1) * per)
            : src.data;
      expect(want.length === t.byteLength || count === 0).toBe(true);
      expect(Buffer.compare(file.subarray(t.offset, t.offset + t.byteLength), Buffer.from(want)), t.name).toBe(0);
    }
  });

  it('the tokenizer metadata becomes a .t (byte tokens → raw bytes, ▁ → space)', async () => {
    const g = tinyGguf('llama', () => FloatType.F32);
    const path = fresh('.gguf');
    writeFileSync(path, ggufBytes(g.kvs, g.tensors));
    const r = await importGguf({ gguf: path, model: fresh('.m'), tokenizerOut: fresh('.t') }, { fsync: false });
    const t = r.tokenizer!;
    expect(t.vocab.length).toBe(300);
    expect(new TextDecoder().decode(t.vocab[0])).toBe('<unk>');
    expect(Array.from(t.vocab[3 + 0x41]!)).toEqual([0x41]);
    expect(new TextDecoder().decode(t.vocab[299])).toBe(' w299');
    expect([t.bosId, t.eosIds, t.addBos, t.chatTemplate, t.scores[299]]).toEqual([1, [2], true, '[INST]', -299]);
  });

  it('unsupported types, architectures, missing and misshapen tensors: typed errors', async () => {
    const base = tinyGguf('llama', () => FloatType.Q40);
    const tryImport = async (kvs: GgufKv[], tensors: GgufTensorSpec[]): Promise<FormatError> => {
      const path = fresh('.gguf');
      writeFileSync(path, ggufBytes(kvs, tensors));
      const out = fresh('.m');
      const e = await importGgufModel(path, out, { fsync: false }).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e).toBeInstanceOf(FormatError);
      expect(() => readFileSync(out + '.partial')).toThrow();
      return e as FormatError;
    };
    // A Q4_K tensor (144 bytes per 256 values) where a Q4_0 one is expected.
    const k4 = base.tensors.map((t) => (t.name === 'blk.1.ffn_down.weight' ? { ...t, type: GgmlType.Q4_K, dims: [256, 24], data: new Uint8Array(144 * 24) } : t));
    const e1 = await tryImport(base.kvs, k4);
    expect(e1).toBeInstanceOf(TensorMismatchError); // shape first: [256, 24] is not [96, 64]
    // K-quants convert (rows must be whole 256-value super-blocks: 64 is not).
    const k4b = base.tensors.map((t) => (t.name === 'blk.1.attn_output.weight' ? { ...t, type: GgmlType.Q4_K, dims: [64, 64], data: new Uint8Array((4096 / 256) * 144) } : t));
    const e2 = await tryImport(base.kvs, k4b);
    expect(e2).toBeInstanceOf(TensorMismatchError);
    expect(e2.message).toContain('whole Q4_K blocks');
    // A type neither path decodes (Q2_K: 84 bytes per 256 values).
    const q2 = base.tensors.map((t) => (t.name === 'blk.1.attn_output.weight' ? { ...t, type: GgmlType.Q2_K, dims: [64, 64], data: new Uint8Array((4096 / 256) * 84) } : t));
    const e3 = await tryImport(base.kvs, q2);
    expect(e3).toBeInstanceOf(UnsupportedModelError);
    expect(e3.message).toContain('F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K');
    expect(e3.message).toContain('Q2_K');
    expect(e3.field).toBe('blk.1.attn_output.weight');

    const gemma = await tryImport(base.kvs.map((kv) => (kv[0] === 'general.architecture' ? (['general.architecture', GT.STR, 'gemma'] as GgufKv) : kv)), base.tensors);
    expect(gemma).toBeInstanceOf(UnsupportedModelError);
    expect(gemma.message).toContain('llama, qwen3, qwen3moe');

    const missing = await tryImport(base.kvs, base.tensors.filter((t) => t.name !== 'blk.1.ffn_up.weight'));
    expect(missing).toBeInstanceOf(MissingTensorError);
    expect(missing.field).toBe('blk.1.ffn_up.weight');

    const eps = await tryImport(base.kvs.map((kv) => (kv[0] === 'llama.attention.layer_norm_rms_epsilon' ? (['llama.attention.layer_norm_rms_epsilon', GT.F32, 1e-4] as GgufKv) : kv)), base.tensors);
    expect(eps).toBeInstanceOf(UnsupportedModelError);
  });
});

/**
 * llama.cpp's convert_hf_to_gguf.py LlamaModel.permute, written as the numpy it is:
 * w.reshape(n_head, 2, rows / n_head / 2, cols).swapaxes(1, 2).reshape(rows, cols).
 */
function llamaCppPermute(w: Float32Array, rows: number, cols: number, nHead: number): Float32Array {
  const A = nHead;
  const B = 2;
  const C = rows / nHead / 2;
  const out = new Float32Array(w.length);
  // out index [a][c][b][col] (shape A, C, B, cols) = in index [a][b][c][col] (shape A, B, C, cols).
  for (let a = 0; a < A; a++)
    for (let c = 0; c < C; c++)
      for (let b = 0; b < B; b++)
        for (let col = 0; col < cols; col++) out[((a * C + c) * B + b) * cols + col] = w[((a * B + b) * C + c) * cols + col]!;
  return out;
}

describe('q/k order: HF → .m and HF → (llama.cpp) GGUF → .m agree', () => {
  it('llama: a GGUF made the way llama.cpp converts HF converts to the same .m as the HF checkpoint', async () => {
    const ck = tinyHfCheckpoint({ modelType: 'llama', vocab: 300 });
    const dir = join(tmp.dir, 'hf-perm');
    writeHfDir(dir, ck);
    const fromHf = join(dir, 'hf.m');
    await importHfModel(dir, fromHf, { dtype: FloatType.F32, fsync: false });

    const T = new Map(ck.tensors.map((t) => [t.name, t]));
    const f32 = (name: string, dims: number[], x?: Float32Array): GgufTensorSpec => ({ name, type: GgmlType.F32, dims, data: new Uint8Array((x ?? T.get(name)!.data).buffer.slice(0)) });
    const kvs = tinyGguf('llama', () => FloatType.F32).kvs.map((kv) => (kv[0] === 'llama.context_length' ? (['llama.context_length', GT.U32, 128] as GgufKv) : kv));
    const tensors: GgufTensorSpec[] = [f32('token_embd.weight', [64, 300], T.get('model.embed_tokens.weight')!.data)];
    for (let l = 0; l < 2; l++) {
      const p = `model.layers.${l}.`;
      const b = `blk.${l}.`;
      tensors.push(
        f32(`${b}attn_norm.weight`, [64], T.get(`${p}input_layernorm.weight`)!.data),
        f32(`${b}attn_q.weight`, [64, 64], llamaCppPermute(T.get(`${p}self_attn.q_proj.weight`)!.data, 64, 64, 4)),
        f32(`${b}attn_k.weight`, [64, 32], llamaCppPermute(T.get(`${p}self_attn.k_proj.weight`)!.data, 32, 64, 2)),
        f32(`${b}attn_v.weight`, [64, 32], T.get(`${p}self_attn.v_proj.weight`)!.data),
        f32(`${b}attn_output.weight`, [64, 64], T.get(`${p}self_attn.o_proj.weight`)!.data),
        f32(`${b}ffn_norm.weight`, [64], T.get(`${p}post_attention_layernorm.weight`)!.data),
        f32(`${b}ffn_gate.weight`, [64, 96], T.get(`${p}mlp.gate_proj.weight`)!.data),
        f32(`${b}ffn_down.weight`, [96, 64], T.get(`${p}mlp.down_proj.weight`)!.data),
        f32(`${b}ffn_up.weight`, [64, 96], T.get(`${p}mlp.up_proj.weight`)!.data),
      );
    }
    tensors.push(f32('output_norm.weight', [64], T.get('model.norm.weight')!.data), f32('output.weight', [64, 300], T.get('lm_head.weight')!.data));
    const path = join(dir, 'llamacpp.gguf');
    writeFileSync(path, ggufBytes(kvs, tensors));
    const fromGguf = join(dir, 'gguf.m');
    await importGgufModel(path, fromGguf, { fsync: false });
    const a = readModelFile(fromHf);
    const b = readModelFile(fromGguf);
    const A = readFileSync(fromHf).subarray(a.header.headerSize);
    const B = readFileSync(fromGguf).subarray(b.header.headerSize);
    expect(Buffer.compare(A, B)).toBe(0);
    // And the permutation is not the identity on this data.
    const q = T.get('model.layers.0.self_attn.q_proj.weight')!.data;
    expect(Buffer.compare(Buffer.from(llamaCppPermute(q, 64, 64, 4).buffer), Buffer.from(q.buffer))).not.toBe(0);
  });

  it('math: adjacent-pair RoPE on permuted rows = permuted half-split RoPE on HF rows (so q·k scores are equal)', () => {
    const hd = 16;
    const theta = 10000;
    const rng = new Rng(3);
    const rotHalf = (x: number[], pos: number): number[] => {
      const y = x.slice();
      for (let j = 0; j < hd / 2; j++) {
        const a = pos * Math.pow(theta, (-2 * j) / hd);
        y[j] = x[j]! * Math.cos(a) - x[j + hd / 2]! * Math.sin(a);
        y[j + hd / 2] = x[j]! * Math.sin(a) + x[j + hd / 2]! * Math.cos(a);
      }
      return y;
    };
    const rotAdjacent = (x: number[], pos: number): number[] => {
      const y = x.slice();
      for (let j = 0; j < hd / 2; j++) {
        const a = pos * Math.pow(theta, (-2 * j) / hd);
        y[2 * j] = x[2 * j]! * Math.cos(a) - x[2 * j + 1]! * Math.sin(a);
        y[2 * j + 1] = x[2 * j]! * Math.sin(a) + x[2 * j + 1]! * Math.cos(a);
      }
      return y;
    };
    // One head's q (as 1-column rows) through llama.cpp's permutation.
    // One head as hd rows of one column; values are float32 so the Float32Array is exact.
    const perm = (x: number[]): number[] => Array.from(llamaCppPermute(Float32Array.from(x), hd, 1, 1));
    for (let t = 0; t < 20; t++) {
      const q = Array.from({ length: hd }, () => Math.fround(rng.nextNormal()));
      const k = Array.from({ length: hd }, () => Math.fround(rng.nextNormal()));
      const pq = 1 + (t % 7);
      const pk = t % 5;
      const hfScore = rotHalf(q, pq).reduce((s, v, i) => s + v * rotHalf(k, pk)[i]!, 0);
      const mScore = rotAdjacent(perm(q), pq).reduce((s, v, i) => s + v * rotAdjacent(perm(k), pk)[i]!, 0);
      expect(mScore).toBeCloseTo(hfScore, 10);
      // Element-wise: rotating the permuted vector = permuting the rotated vector.
      const lhs = rotAdjacent(perm(q), pq);
      const rhs = perm(rotHalf(q, pq).map(Math.fround));
      lhs.forEach((v, i) => expect(v).toBeCloseTo(rhs[i]!, 5));
    }
  });
});

describe('.m → GGUF → .m', () => {
  const stories = async (dtype: FloatType): Promise<{ m: string; t: string }> => {
    const m = fresh('.m');
    const t = fresh('.t');
    await importLlama2c({ checkpoint: STORIES_BIN, tokenizer: TOK512_BIN, model: m, tokenizerOut: t }, { dtype, fsync: false });
    return { m, t };
  };

  for (const [label, dtype, ggmlType] of [
    ['Q40', FloatType.Q40, GgmlType.Q4_0],
    ['F32', FloatType.F32, GgmlType.F32],
  ] as const) {
    it(`stories260K ${label}: @huggingface/gguf reads names, shapes, types, metadata; round trip is byte-identical`, async () => {
      const { m, t } = await stories(dtype);
      const out = fresh('.gguf');
      const r = await exportGguf(m, out, { tokenizerPath: t, fsync: false });
      expect(r.tokenizerStyle).toBe('sentencepiece');
      const parsed = await hfGguf(out, { allowLocalFile: true });
      const infos = parsed.tensorInfos;
      expect(infos.length).toBe(1 + 5 * 9 + 2);
      const byName = new Map(infos.map((i) => [i.name, i]));
      const expectTensor = (name: string, shape: number[], type: number): void => {
        const i = byName.get(name);
        expect(i, name).toBeDefined();
        expect(i!.shape.map(Number), name).toEqual(shape);
        expect(i!.dtype, name).toBe(type);
      };
      expectTensor('token_embd.weight', [64, 512], GgmlType.F32);
      for (let l = 0; l < 5; l++) {
        expectTensor(`blk.${l}.attn_norm.weight`, [64], GgmlType.F32);
        expectTensor(`blk.${l}.attn_q.weight`, [64, 64], ggmlType);
        expectTensor(`blk.${l}.attn_k.weight`, [64, 32], ggmlType);
        expectTensor(`blk.${l}.attn_v.weight`, [64, 32], ggmlType);
        expectTensor(`blk.${l}.attn_output.weight`, [64, 64], ggmlType);
        expectTensor(`blk.${l}.ffn_norm.weight`, [64], GgmlType.F32);
        expectTensor(`blk.${l}.ffn_gate.weight`, [64, 192], ggmlType);
        expectTensor(`blk.${l}.ffn_down.weight`, [192, 64], ggmlType);
        expectTensor(`blk.${l}.ffn_up.weight`, [64, 192], ggmlType);
      }
      expectTensor('output_norm.weight', [64], GgmlType.F32);
      expectTensor('output.weight', [64, 512], ggmlType);
      const md = parsed.metadata as Record<string, unknown>;
      expect(md['general.architecture']).toBe('llama');
      expect(md['general.file_type']).toBe(dtype === FloatType.Q40 ? 2 : 0);
      expect(md['llama.context_length']).toBe(512);
      expect(md['llama.embedding_length']).toBe(64);
      expect(md['llama.block_count']).toBe(5);
      expect(md['llama.feed_forward_length']).toBe(192);
      expect(md['llama.attention.head_count']).toBe(8);
      expect(md['llama.attention.head_count_kv']).toBe(4);
      expect(md['llama.attention.layer_norm_rms_epsilon']).toBe(Math.fround(1e-5));
      expect(md['llama.rope.freq_base']).toBe(10000);
      expect(md['llama.rope.dimension_count']).toBe(8);
      expect(md['llama.attention.key_length']).toBeUndefined();
      expect(md['tokenizer.ggml.model']).toBe('llama');
      const tokens = md['tokenizer.ggml.tokens'] as string[];
      const types = md['tokenizer.ggml.token_type'] as number[];
      expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
      expect(types.slice(0, 4)).toEqual([2, 3, 3, 6]);
      expect(tokens[3 + 10]).toBe('<0x0A>');
      // llama2.c pieces carry spaces; GGUF spells them with ▁.
      expect(tokens.filter((s) => s.includes(' '))).toEqual([]);
      expect(tokens.filter((s) => s.startsWith('▁')).length).toBeGreaterThan(50);
      expect([md['tokenizer.ggml.bos_token_id'], md['tokenizer.ggml.eos_token_id'], md['tokenizer.ggml.unknown_token_id'], md['tokenizer.ggml.add_bos_token']]).toEqual([1, 2, 0, true]);

      // Tensor bytes in the GGUF are the .m bytes.
      const mf = readModelFile(m);
      const mb = readFileSync(m);
      const gb = readFileSync(out);
      const dataStart = Number(parsed.tensorDataOffset);
      for (const [name, mName] of [['blk.3.attn_k.weight', 'layers.3.k'], ['output.weight', 'wcls'], ['token_embd.weight', 'embedding']] as const) {
        const ti = byName.get(name)!;
        const mt = mf.layout.tensor(mName);
        const off = dataStart + Number(ti.offset);
        expect(Buffer.compare(gb.subarray(off, off + mt.byteLength), mb.subarray(mt.offset, mt.offset + mt.byteLength)), name).toBe(0);
      }

      const small = fresh('.gguf');
      await exportGguf(m, small, { tokenizerPath: t, fsync: false, chunkBytes: 77 });
      expect(Buffer.compare(readFileSync(small), gb)).toBe(0);

      const back = fresh('.m');
      const backT = fresh('.t');
      const rr = await importGguf({ gguf: out, model: back, tokenizerOut: backT }, { fsync: false });
      expect(rr.reencoded).toEqual([]);
      const b = readModelFile(back);
      expect(Buffer.compare(readFileSync(back).subarray(b.header.headerSize), mb.subarray(mf.header.headerSize))).toBe(0);
      for (const k of ['dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'vocabSize', 'maxSeqLen', 'ropeTheta', 'ropeType', 'normEpsilon', 'headDim', 'weightType', 'archType'] as const) {
        expect(b.header[k], k).toBe(mf.header[k]);
      }
      expect(Buffer.compare(readFileSync(backT), readFileSync(t))).toBe(0);
    });
  }

  it('Llama-3.1 scaling travels as rope_freqs.weight and comes back as the same header keys', async () => {
    for (const dtype of [FloatType.F32, FloatType.Q40]) {
      const m = fresh('.m');
      await writeTinyModel(m, withDtype(TINY_LLAMA31, dtype));
      const out = fresh('.gguf');
      const r = await exportGguf(m, out, { fsync: false });
      const rf = r.tensors.find((t) => t.name === 'rope_freqs.weight')!;
      const factors = new Float32Array(rf.data!.buffer.slice(0));
      // head_dim 16, theta 500000, factor 8, low 1, high 4, original context 32: long wavelengths get 8.
      expect(factors.length).toBe(8);
      expect(factors[0]).toBe(1);
      expect(factors[7]).toBe(8);
      const back = fresh('.m');
      await importGgufModel(out, back, { fsync: false });
      const a = readModelFile(m).header;
      const b = readModelFile(back).header;
      expect([b.ropeType, b.ropeScalingFactor, b.ropeScalingLowFreqFactor, b.ropeScalingHighFreqFactor, b.ropeScalingOrigMaxSeqLen]).toEqual([RopeType.LLAMA3_1, 8, 1, 4, 32]);
      expect(Array.from(llama3RopeFactors(b.headDim, b.ropeTheta, b.ropeScalingFactor, b.ropeScalingLowFreqFactor, b.ropeScalingHighFreqFactor, b.ropeScalingOrigMaxSeqLen))).toEqual(Array.from(factors));
      expect(Buffer.compare(readFileSync(back).subarray(b.headerSize), readFileSync(m).subarray(a.headerSize))).toBe(0);
    }
  });

  it('qwen3 and qwen3moe (experts merged into 3-D tensors and split again) round-trip byte for byte', async () => {
    for (const values of [withDtype(TINY_QWEN3, FloatType.Q40), withDtype(TINY_QWEN3_MOE, FloatType.Q80), TINY_QWEN3_MOE]) {
      const m = fresh('.m');
      await writeTinyModel(m, values);
      const out = fresh('.gguf');
      await exportGguf(m, out, { fsync: false });
      const parsed = await hfGguf(out, { allowLocalFile: true });
      const md = parsed.metadata as Record<string, unknown>;
      const arch = md['general.architecture'] as string;
      expect(arch).toBe(values[K.ArchType] === ArchType.QWEN3 ? 'qwen3' : 'qwen3moe');
      expect(md[`${arch}.attention.key_length`]).toBe(values[K.HeadDim]);
      if (arch === 'qwen3moe') {
        const gate = parsed.tensorInfos.find((t) => t.name === 'blk.1.ffn_gate_exps.weight')!;
        expect(gate.shape.map(Number)).toEqual([64, 32, 4]);
        expect(parsed.tensorInfos.find((t) => t.name === 'blk.1.ffn_down_exps.weight')!.shape.map(Number)).toEqual([32, 64, 4]);
        expect(md['qwen3moe.expert_count']).toBe(4);
        expect(md['qwen3moe.expert_feed_forward_length']).toBe(32);
      }
      const back = fresh('.m');
      await importGgufModel(out, back, { fsync: false });
      const a = readModelFile(m).header;
      const b = readModelFile(back).header;
      expect(Buffer.compare(readFileSync(back).subarray(b.headerSize), readFileSync(m).subarray(a.headerSize))).toBe(0);
      expect([b.archType, b.headDim, b.normEpsilonCode, b.ropeTheta, b.nExperts, b.moeHiddenDim]).toEqual([a.archType, a.headDim, a.normEpsilonCode, a.ropeTheta, a.nExperts, a.moeHiddenDim]);
    }
  });
});

describe('byte-level tokenizers in GGUF', () => {
  it('.t → gpt2 metadata (unicode spelling, derived merges, PAD up to the model vocab) → the same .t', () => {
    const { data } = convertHfTokenizer({
      tokenizer: {
        model: { type: 'BPE', vocab: { a: 0, b: 1, 'Ġ': 2, 'Ġa': 3, ab: 4, 'Ġab': 5, 'Ċ': 6 } },
        added_tokens: [
          { id: 7, content: '<|endoftext|>', special: true },
          { id: 8, content: '<|im_end|>', special: true },
        ],
        decoder: { type: 'ByteLevel' },
      },
      tokenizerConfig: { eos_token: '<|im_end|>' },
      config: { bos_token_id: 7 },
    });
    const meta = ggufTokenizerMetadata(data, 12, ArchType.QWEN3);
    expect(meta.style).toBe('bytelevel');
    const header = parseGgufHeader(encodeGgufHeader(meta.entries, []).header);
    const toks = header.metadata.get('tokenizer.ggml.tokens')!.value as { items: readonly string[] };
    expect(toks.items).toEqual(['a', 'b', 'Ġ', 'Ġa', 'ab', 'Ġab', 'Ċ', '<|endoftext|>', '<|im_end|>', '[PAD9]', '[PAD10]', '[PAD11]']);
    const merges = (header.metadata.get('tokenizer.ggml.merges')!.value as { items: readonly string[] }).items;
    // Ranked by the merged token's id: Ġa (3), ab (4), then both splits of Ġab (5).
    expect(merges).toEqual(['Ġ a', 'a b', 'Ġ ab', 'Ġa b']);
    expect(header.metadata.get('tokenizer.ggml.pre')!.value).toBe('qwen2');
    const back = ggufTokenizerToData(header);
    expect(back.vocab.slice(0, 9).map((v) => Buffer.from(v).toString('latin1'))).toEqual(data.vocab.map((v) => Buffer.from(v).toString('latin1')));
    expect([back.bosId, back.eosIds]).toEqual([7, [8]]);
    expect(Array.from(back.scores.subarray(0, 9))).toEqual(Array.from(data.scores));
  });

  it('duplicate token texts are refused (llama.cpp aborts on them)', () => {
    const vocab = [new Uint8Array([0x61]), new Uint8Array([0x61]), new TextEncoder().encode('<s>')];
    const tok = parseTokenizer(writeTokenizer({ vocab, scores: new Float32Array(3), bosId: 2, eosIds: [2], addBos: false, chatTemplate: undefined }));
    expect(() => ggufTokenizerMetadata(tok, 3, ArchType.LLAMA)).toThrow(InvalidValueError);
  });
});

describe('GGUF headers are untrusted', () => {
  const small = ((): Uint8Array => {
    const g = tinyGguf('llama', () => FloatType.Q40, { V: 270 });
    // Keep it small: a few tensors are enough for the header paths.
    return ggufBytes(g.kvs, g.tensors.slice(0, 6));
  })();

  it('parses our small file, and @huggingface/gguf agrees on tensor offsets', async () => {
    const h = parseGgufHeader(small);
    const path = fresh('.gguf');
    writeFileSync(path, small);
    const ref = await hfGguf(path, { allowLocalFile: true });
    expect(h.tensors.map((t) => [t.name, t.offset, t.dims])).toEqual(ref.tensorInfos.map((t) => [t.name, Number(ref.tensorDataOffset) + Number(t.offset), t.shape.map(Number)]));
  });

  it('reads version 2 the same as 3, refuses version 1 and other magics', () => {
    const v3 = parseGgufHeader(small);
    const v2bytes = small.slice();
    new DataView(v2bytes.buffer).setUint32(4, 2, true);
    const v2 = parseGgufHeader(v2bytes);
    expect(v2.version).toBe(2);
    expect(v2.tensors).toEqual(v3.tensors);
    const v1 = small.slice();
    new DataView(v1.buffer).setUint32(4, 1, true);
    expect(() => parseGgufHeader(v1)).toThrow(/version 1/);
    const bad = small.slice();
    bad[0] = 0x47 ^ 0xff;
    expect(() => parseGgufHeader(bad)).toThrow(/not a GGUF file/);
  });

  it('absurd counts and lengths are refused before allocation', () => {
    const b = small.slice();
    const v = new DataView(b.buffer);
    v.setBigUint64(8, 1n << 50n, true);
    expect(() => parseGgufHeader(b)).toThrow(InvalidValueError);
    const c = small.slice();
    new DataView(c.buffer).setBigUint64(16, 1000000n, true);
    expect(() => parseGgufHeader(c)).toThrow(InvalidValueError);
    // First key's string length → past the end of the file.
    const d = small.slice();
    new DataView(d.buffer).setBigUint64(24, 1n << 40n, true);
    expect(() => parseGgufHeader(d)).toThrow(FormatError);
    expect(() => parseGgufHeader(small.subarray(0, 100))).toThrow(TruncatedError);
  });

  it('random corruptions and truncations give only typed errors, never a hang', () => {
    const header = parseGgufHeader(small).headerBytes;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(header + 64), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(small.length), { nil: undefined }),
        (edits, cut) => {
          const b = small.slice(0, cut ?? small.length);
          for (const [i, x] of edits) if (i < b.length) b[i] = x;
          try {
            parseGgufHeader(b);
          } catch (e) {
            if (!(e instanceof FormatError)) throw e;
            expect(e.field).toBeDefined();
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('a header larger than the first read is read in growing pieces', async () => {
    // ~3 MiB of metadata (a big string array), then one tensor.
    const words = Array.from({ length: 200000 }, (_, i) => `token-${i}-xxxx`);
    const bytes = ggufBytes([['general.architecture', GT.STR, 'llama'], ['big', GT.ARR, [GT.STR, words]]], [{ name: 't', type: GgmlType.F32, dims: [8], data: new Uint8Array(32) }]);
    expect(bytes.length).toBeGreaterThan(3 << 20);
    const path = fresh('.gguf');
    writeFileSync(path, bytes);
    const f = await GgufFile.open(path);
    try {
      expect((f.header.metadata.get('big')!.value as { items: readonly string[] }).items[199999]).toBe('token-199999-xxxx');
      expect(f.header.tensors[0]!.offset).toBe(bytes.length - 32);
    } finally {
      await f.close();
    }
  });
});
