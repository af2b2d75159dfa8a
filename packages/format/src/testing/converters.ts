import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { f16ToF32, f32ToF16 } from '../f16.js';
import { Rng } from '../rng.js';

/**
 * Test-only builders for the converters: safetensors files, Hugging Face checkpoint
 * directories and GGUF files made from known arrays. They are written independently of the
 * readers and writers they test (plain DataView code following the format specs).
 */

export type StDtype = 'F32' | 'F16' | 'BF16';

export interface StTensor {
  readonly name: string;
  readonly dtype: StDtype;
  readonly shape: readonly number[];
  /** Values; for F16/BF16 they should be exactly representable (see roundTo). */
  readonly data: Float32Array;
}

/** Round values to what a dtype stores (F16: nearest even; BF16: truncation), so decoding is exact. */
export function roundTo(dtype: StDtype, x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  if (dtype === 'F32') out.set(x);
  else if (dtype === 'F16') for (let i = 0; i < x.length; i++) out[i] = f16ToF32(f32ToF16(x[i]!));
  else {
    const u = new Uint32Array(out.buffer);
    const src = new Uint32Array(Float32Array.from(x).buffer);
    for (let i = 0; i < x.length; i++) u[i] = src[i]! & 0xffff0000;
  }
  return out;
}

function encodeValues(dtype: StDtype, x: Float32Array): Uint8Array {
  const elem = dtype === 'F32' ? 4 : 2;
  const out = new Uint8Array(x.length * elem);
  const v = new DataView(out.buffer);
  for (let i = 0; i < x.length; i++) {
    if (dtype === 'F32') v.setFloat32(4 * i, x[i]!, true);
    else if (dtype === 'F16') v.setUint16(2 * i, f32ToF16(x[i]!), true);
    else {
      const w = new DataView(new ArrayBuffer(4));
      w.setFloat32(0, x[i]!, true);
      v.setUint16(2 * i, w.getUint16(2, true), true);
    }
  }
  return out;
}

/** A safetensors file: u64 header length, JSON header (space-padded to 8 bytes), data back to back. */
export function safetensorsBytes(tensors: readonly StTensor[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  const blobs: Uint8Array[] = [];
  let o = 0;
  for (const t of tensors) {
    const b = encodeValues(t.dtype, t.data);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [o, o + b.length] };
    blobs.push(b);
    o += b.length;
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const jb = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + jb.length + o);
  new DataView(out.buffer).setBigUint64(0, BigInt(jb.length), true);
  out.set(jb, 8);
  let p = 8 + jb.length;
  for (const b of blobs) {
    out.set(b, p);
    p += b.length;
  }
  return out;
}

/** A tiny HF checkpoint: config values and the tensors (name → values, with their dtype). */
export interface TinyHfCheckpoint {
  readonly config: Record<string, unknown>;
  readonly tensors: readonly StTensor[];
}

export interface TinyHfOptions {
  modelType: 'llama' | 'mistral' | 'qwen3' | 'qwen3_moe';
  dim?: number;
  hidden?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  headDim?: number;
  vocab?: number;
  experts?: number;
  activeExperts?: number;
  moeHidden?: number;
  tied?: boolean;
  /** dtype per tensor (default F32); a function of the tensor name. */
  dtype?: (name: string) => StDtype;
  seed?: number;
  extraConfig?: Record<string, unknown>;
}

/** Tensors and config.json of a tiny HF model with pseudo-random, dtype-exact values. */
export function tinyHfCheckpoint(o: TinyHfOptions): TinyHfCheckpoint {
  const D = o.dim ?? 64;
  const H = o.hidden ?? 96;
  const L = o.layers ?? 2;
  const nh = o.heads ?? 4;
  const nkv = o.kvHeads ?? 2;
  const hd = o.headDim ?? D / nh;
  const V = o.vocab ?? 40;
  const qwen = o.modelType === 'qwen3' || o.modelType === 'qwen3_moe';
  const moe = o.modelType === 'qwen3_moe';
  const E = o.experts ?? 4;
  const moeH = o.moeHidden ?? 32;
  const config: Record<string, unknown> = {
    model_type: o.modelType,
    architectures: ['X'],
    hidden_act: 'silu',
    hidden_size: D,
    intermediate_size: H,
    num_hidden_layers: L,
    num_attention_heads: nh,
    num_key_value_heads: nkv,
    max_position_embeddings: 128,
    vocab_size: V,
    rms_norm_eps: qwen ? 1e-6 : 1e-5,
    rope_theta: qwen ? 1000000.0 : 10000.0,
    tie_word_embeddings: o.tied ?? false,
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'bfloat16',
  };
  if (o.headDim !== undefined || qwen) config.head_dim = hd;
  if (moe) Object.assign(config, { num_experts: E, num_experts_per_tok: o.activeExperts ?? 2, moe_intermediate_size: moeH, norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [] });
  Object.assign(config, o.extraConfig ?? {});
  const tensors: StTensor[] = [];
  let stream = 0;
  const add = (name: string, shape: number[], norm = false): void => {
    const rng = new Rng(o.seed ?? 7, stream++);
    const n = shape.reduce((a, b) => a * b, 1);
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = norm ? 1 + 0.1 * rng.nextNormal() : 0.2 * rng.nextNormal();
    const dtype = o.dtype?.(name) ?? 'F32';
    tensors.push({ name, dtype, shape, data: roundTo(dtype, x) });
  };
  add('model.embed_tokens.weight', [V, D]);
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    add(`${p}self_attn.q_proj.weight`, [nh * hd, D]);
    add(`${p}self_attn.k_proj.weight`, [nkv * hd, D]);
    add(`${p}self_attn.v_proj.weight`, [nkv * hd, D]);
    add(`${p}self_attn.o_proj.weight`, [D, nh * hd]);
    if (qwen) {
      add(`${p}self_attn.q_norm.weight`, [hd], true);
      add(`${p}self_attn.k_norm.weight`, [hd], true);
    }
    if (moe) {
      add(`${p}mlp.gate.weight`, [E, D]);
      for (let e = 0; e < E; e++) {
        add(`${p}mlp.experts.${e}.gate_proj.weight`, [moeH, D]);
        add(`${p}mlp.experts.${e}.up_proj.weight`, [moeH, D]);
        add(`${p}mlp.experts.${e}.down_proj.weight`, [D, moeH]);
      }
    } else {
      add(`${p}mlp.gate_proj.weight`, [H, D]);
      add(`${p}mlp.up_proj.weight`, [H, D]);
      add(`${p}mlp.down_proj.weight`, [D, H]);
    }
    add(`${p}input_layernorm.weight`, [D], true);
    add(`${p}post_attention_layernorm.weight`, [D], true);
  }
  add('model.norm.weight', [D], true);
  if (!(o.tied ?? false)) add('lm_head.weight', [V, D]);
  return { config, tensors };
}

/**
 * Write a checkpoint directory: config.json, and the tensors in one model.safetensors or in
 * `shards` files with a model.safetensors.index.json.
 */
export function writeHfDir(dir: string, ck: TinyHfCheckpoint, options: { shards?: number; files?: Record<string, unknown> } = {}): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(ck.config, null, 2));
  const shards = options.shards ?? 1;
  if (shards <= 1) {
    writeFileSync(join(dir, 'model.safetensors'), safetensorsBytes(ck.tensors, { format: 'pt' }));
  } else {
    const weightMap: Record<string, string> = {};
    const per = Math.ceil(ck.tensors.length / shards);
    for (let s = 0; s < shards; s++) {
      const name = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part = ck.tensors.slice(s * per, (s + 1) * per);
      for (const t of part) weightMap[t.name] = name;
      writeFileSync(join(dir, name), safetensorsBytes(part, { format: 'pt' }));
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  }
  for (const [name, value] of Object.entries(options.files ?? {})) {
    writeFileSync(join(dir, name), typeof value === 'string' ? value : JSON.stringify(value));
  }
}

// ------------------------------------------------------------------------------------------
// GGUF

/** GGUF value type ids (gguf spec). */
export const GT = Object.freeze({ U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STR: 8, ARR: 9, U64: 10, I64: 11, F64: 12 });

/** [key, type, value]; arrays are [key, GT.ARR, [itemType, items]]. */
export type GgufKv = readonly [string, number, unknown];

export interface GgufTensorSpec {
  readonly name: string;
  /** ggml type id. */
  readonly type: number;
  /** ne0 first. */
  readonly dims: readonly number[];
  readonly data: Uint8Array;
}

/** A GGUF file (v3 unless told), tensors aligned and padded like gguf-py writes them. */
export function ggufBytes(kvs: readonly GgufKv[], tensors: readonly GgufTensorSpec[], options: { alignment?: number; version?: number } = {}): Uint8Array {
  const align = options.alignment ?? 32;
  const parts: number[] = [];
  const push = (bytes: ArrayLike<number>): void => {
    for (let i = 0; i < bytes.length; i++) parts.push(bytes[i]!);
  };
  const scalar = (type: number, v: unknown): void => {
    const b = new DataView(new ArrayBuffer(8));
    const n = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8][type]!;
    switch (type) {
      case GT.U8: b.setUint8(0, v as number); break;
      case GT.I8: b.setInt8(0, v as number); break;
      case GT.U16: b.setUint16(0, v as number, true); break;
      case GT.I16: b.setInt16(0, v as number, true); break;
      case GT.U32: b.setUint32(0, v as number, true); break;
      case GT.I32: b.setInt32(0, v as number, true); break;
      case GT.F32: b.setFloat32(0, v as number, true); break;
      case GT.BOOL: b.setUint8(0, v ? 1 : 0); break;
      case GT.U64: b.setBigUint64(0, BigInt(v as number), true); break;
      case GT.I64: b.setBigInt64(0, BigInt(v as number), true); break;
      case GT.F64: b.setFloat64(0, v as number, true); break;
      case GT.STR: {
        const s = typeof v === 'string' ? new TextEncoder().encode(v) : (v as Uint8Array);
        scalar(GT.U64, s.length);
        push(s);
        return;
      }
      default: throw new Error(`bad type ${type}`);
    }
    push(new Uint8Array(b.buffer, 0, n));
  };
  scalar(GT.U32, 0x46554747);
  scalar(GT.U32, options.version ?? 3);
  scalar(GT.U64, tensors.length);
  scalar(GT.U64, kvs.length);
  for (const [key, type, value] of kvs) {
    scalar(GT.STR, key);
    scalar(GT.U32, type);
    if (type === GT.ARR) {
      const [itemType, items] = value as [number, ArrayLike<unknown>];
      scalar(GT.U32, itemType);
      scalar(GT.U64, items.length);
      for (let i = 0; i < items.length; i++) scalar(itemType, items[i]);
    } else scalar(type, value);
  }
  let off = 0;
  const offsets: number[] = [];
  for (const t of tensors) {
    scalar(GT.STR, t.name);
    scalar(GT.U32, t.dims.length);
    for (const d of t.dims) scalar(GT.U64, d);
    scalar(GT.U32, t.type);
    scalar(GT.U64, off);
    offsets.push(off);
    off += Math.ceil(t.data.length / align) * align;
  }
  while (parts.length % align !== 0) parts.push(0);
  const start = parts.length;
  const out = new Uint8Array(start + off);
  out.set(parts);
  tensors.forEach((t, i) => out.set(t.data, start + offsets[i]!));
  return out;
}
