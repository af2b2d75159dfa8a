import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FloatType, readAnyModelFile, UnsupportedModelError } from '@airllm/format';
import { exportGguf } from '@airllm/format/convert';
import { GT, ggufBytes, type GgufKv } from '@airllm/format/testing';
import { LayerWiseInferenceEngine, type EngineOptions } from '@airllm/engine';
import { nativeBackend } from '@airllm/kernels';
import { F32_MODEL, FIXTURE_TOKENIZER, FIXTURES, tempDir } from './helpers.js';
import { writeKQuantGguf } from './kquant-gguf.js';

const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[]; text: string };
};
const EXPECTED = reference.bos_only.generated_tokens;

const tmp = tempDir('airllm-gguf-');
let gguf = '';

beforeAll(async () => {
  // The official stories260K `.m` exported as llama.cpp reads it (F32), its `.t` embedded.
  gguf = join(tmp.dir, 'stories260K.gguf');
  await exportGguf(F32_MODEL, gguf, { tokenizerPath: FIXTURE_TOKENIZER });
});
afterAll(() => tmp.cleanup());

async function greedy(model: string, options: EngineOptions): Promise<{ tokens: number[]; text: string; engine: LayerWiseInferenceEngine }> {
  const engine = new LayerWiseInferenceEngine(model, options);
  await engine.initialize();
  try {
    const tokens: number[] = [];
    let text = '';
    for await (const t of engine.generate([1], { maxTokens: EXPECTED.length, temperature: 0, stopAtEos: false })) {
      tokens.push(t.token);
      text += t.text;
    }
    return { tokens, text, engine };
  } finally {
    await engine.cleanup();
  }
}

describe('a GGUF runs in place', () => {
  it('reads the layout from the GGUF tensor infos: every tensor at its GGUF offset, no conversion', () => {
    const info = readAnyModelFile(gguf);
    expect(info.format).toBe('gguf');
    const m = readAnyModelFile(F32_MODEL);
    expect(info.layout.config).toEqual(m.layout.config);
    // Same tensors and shapes as the `.m`, different offsets (GGUF's own, 32-aligned).
    expect(info.layout.tensors.map((t) => [t.name, t.shape])).toEqual(m.layout.tensors.map((t) => [t.name, t.shape]));
    for (const t of info.layout.tensors) expect(t.offset % 32).toBe(0);
    // The GGUF's bytes of a tensor are the `.m`'s bytes of it (F32 both).
    const gb = readFileSync(gguf);
    const mb = readFileSync(F32_MODEL);
    for (const name of ['embedding', 'layers.3.w2', 'final_norm']) {
      const a = info.layout.tensors.find((t) => t.name === name)!;
      const b = m.layout.tensors.find((t) => t.name === name)!;
      expect(Buffer.compare(gb.subarray(a.offset, a.offset + a.byteLength), mb.subarray(b.offset, b.offset + b.byteLength))).toBe(0);
    }
  });

  for (const [mode, threads] of [['resident', 1], ['resident', 2], ['stream', 2], ['sequential', 1]] as const) {
    it(`stories260K exported to GGUF F32 gives llama2.c's greedy ids (${mode}, ${threads} thread(s)), tokenizer from the GGUF metadata`, async () => {
      const layerBytes = readAnyModelFile(gguf).layout.layerBytes;
      const options: EngineOptions = { mode, threads, ...(mode === 'stream' ? { maxMemory: 2 * layerBytes + (64 << 10) } : {}) };
      const { tokens, text, engine } = await greedy(gguf, options);
      expect(tokens).toEqual(EXPECTED);
      expect(text).toBe(reference.bos_only.text.replace(/\n$/, ''));
      expect(engine.tokenizer.source).toBe(gguf);
    });
  }
});

describe('a K-quant GGUF streams from the file under a budget smaller than the file', () => {
  it('stream mode pins what fits, streams the rest, and computes the resident numbers bit for bit', async () => {
    const path = join(tmp.dir, 'kq.gguf');
    writeKQuantGguf(path, { arch: 'llama', dim: 256, ff: 768, layers: 6, heads: 4, kvHeads: 2, headDim: 64, vocab: 512, context: 64 }, 31);
    const info = readAnyModelFile(path);
    const fileSize = info.actualSize;
    const run = async (o: EngineOptions): Promise<{ logits: Float32Array[]; stats: ReturnType<LayerWiseInferenceEngine['residencyStats']> }> => {
      const engine = new LayerWiseInferenceEngine(path, { threads: 2, maxSeqLen: 16, ...o });
      await engine.initialize();
      try {
        const logits: Float32Array[] = [];
        for (let p = 0; p < 8; p++) logits.push(await engine.forward([3 + 61 * p], p));
        return { logits, stats: engine.residencyStats() };
      } finally {
        await engine.cleanup();
      }
    };
    const resident = await run({ mode: 'resident' });
    const budget = Math.floor(fileSize / 2);
    const stream = await run({ mode: 'stream', maxMemory: budget });
    expect(stream.stats.segments).toBe(info.layout.layers.length + 1);
    expect(stream.stats.pinnedSegments).toBeLessThan(stream.stats.segments);
    expect(stream.stats.plannedBytes).toBeLessThanOrEqual(budget);
    // Streamed segments were read again on later passes: more bytes loaded than the file holds in tensors.
    expect(stream.stats.bytesLoaded).toBeGreaterThan(info.layout.layers.reduce((a, l) => a + l.size, 0));
    for (let p = 0; p < 8; p++) expect(Array.from(stream.logits[p]!)).toEqual(Array.from(resident.logits[p]!));
  }, 60_000);
});

describe('every tensor type a GGUF runs in place with, in one file', () => {
  it('F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K matrices: native kernels give the TypeScript reference kernels\' logits', async () => {
    const path = join(tmp.dir, 'mix.gguf');
    const mix: Record<string, FloatType> = {
      'attn_q.weight': FloatType.Q5_K,
      'attn_k.weight': FloatType.BF16,
      'attn_v.weight': FloatType.F16,
      'attn_output.weight': FloatType.Q40,
      'ffn_gate.weight': FloatType.Q80,
      'ffn_up.weight': FloatType.F32,
      'ffn_down.weight': FloatType.Q6_K,
    };
    const { types } = writeKQuantGguf(path, { arch: 'qwen3', dim: 256, ff: 512, layers: 2, heads: 4, kvHeads: 2, headDim: 64, vocab: 512, context: 32 }, 41, (name) =>
      name === 'token_embd.weight' ? FloatType.Q4_K : name === 'output.weight' ? FloatType.Q6_K : mix[name.replace(/^blk\.\d+\./, '')]!,
    );
    expect(Object.keys(types).sort()).toEqual(['BF16', 'F16', 'F32', 'Q40', 'Q4_K', 'Q5_K', 'Q6_K', 'Q80']);
    const logits = async (kernels: 'native' | 'reference'): Promise<Float32Array[]> => {
      const engine = new LayerWiseInferenceEngine(path, { threads: 2, maxSeqLen: 8, kernels });
      await engine.initialize();
      try {
        const out: Float32Array[] = [];
        for (let p = 0; p < 4; p++) out.push(await engine.forward([5 + 101 * p], p));
        return out;
      } finally {
        await engine.cleanup();
      }
    };
    // The native addon must load here, or this would compare the reference with itself.
    expect(nativeBackend().name).toBe('native');
    const native = await logits('native');
    const reference = await logits('reference');
    let max = 0;
    let spread = 0;
    native.forEach((a, p) => a.forEach((v, i) => {
      max = Math.max(max, Math.abs(v - reference[p]![i]!));
      spread = Math.max(spread, Math.abs(reference[p]![i]!));
    }));
    // Float matmuls differ only in summation order between the backends; K-quant × Q8_K is bit-identical.
    expect(max).toBeLessThan(1e-4 * spread);
  }, 60_000);
});

describe('a GGUF that cannot run in place is refused with a typed error', () => {
  const kv = (arch: string): GgufKv[] => [
    ['general.architecture', GT.STR, arch],
    [`${arch}.block_count`, GT.U32, 1],
    [`${arch}.context_length`, GT.U32, 64],
    [`${arch}.embedding_length`, GT.U32, 256],
    [`${arch}.feed_forward_length`, GT.U32, 256],
    [`${arch}.attention.head_count`, GT.U32, 4],
  ];
  const f32 = (n: number): Uint8Array => new Uint8Array(n * 4);
  const tensors = (qType: number, qBytes: number) => [
    { name: 'token_embd.weight', type: 0, dims: [256, 8], data: f32(256 * 8) },
    { name: 'blk.0.attn_q.weight', type: qType, dims: [256, 256], data: new Uint8Array(qBytes) },
  ];

  it('an architecture it does not compute, naming it and the supported ones', async () => {
    const path = join(tmp.dir, 'gpt2.gguf');
    writeFileSync(path, ggufBytes(kv('gpt2'), tensors(0, 256 * 256 * 4)));
    const engine = new LayerWiseInferenceEngine(path);
    const e = await engine.initialize().then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(UnsupportedModelError);
    expect((e as UnsupportedModelError).code).toBe('AIRLLM_UNSUPPORTED_MODEL');
    expect((e as Error).message).toContain('gpt2');
    expect((e as Error).message).toContain('llama, qwen3, qwen3moe, qwen2');
    expect((e as Error).message).toContain(path);
  });

  it('a tensor type it does not decode (Q2_K), naming the tensor, the supported types and `airllm convert`', async () => {
    const path = join(tmp.dir, 'q2k.gguf');
    // Q2_K: 84 bytes per 256 values.
    writeFileSync(path, ggufBytes(kv('llama'), tensors(10, 256 * 84)));
    const e = (() => {
      try {
        readAnyModelFile(path);
      } catch (x) {
        return x;
      }
    })();
    expect(e).toBeInstanceOf(UnsupportedModelError);
    const msg = (e as Error).message;
    expect(msg).toContain('blk.0.attn_q.weight');
    expect(msg).toContain('Q2_K');
    expect(msg).toContain('F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, Q6_K');
    expect(msg).toContain('airllm convert');
  });
});
