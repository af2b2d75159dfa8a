import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gguf as hfGguf } from '@huggingface/gguf';
import { ArchType, FloatType, HeaderKey, parseTokenizer, readModelFile } from '@airllm/format';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = dirname(fileURLToPath(import.meta.url));
const BIN = resolve(here, '../bin/airllm.js');
const SHARED = resolve(here, '../../..', '../shared');
const STORIES = join(SHARED, 'models', 'stories260K.bin');
const TOK512 = join(SHARED, 'models', 'tok512.bin');
const Q40_FIXTURE = join(SHARED, 'fixtures', 'dllama_model_stories260k_hidden192_q40.m');
const F32_FIXTURE = join(SHARED, 'fixtures', 'dllama_model_stories260k_hidden192_f32.m');
const reference = JSON.parse(readFileSync(join(SHARED, 'fixtures', 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[] };
};

function airllm(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(r: ReturnType<typeof airllm>): string {
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout;
}

function oneLineError(r: ReturnType<typeof airllm>, pattern: RegExp): void {
  expect(r.code).not.toBe(0);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^airllm: /);
  expect(lines[0]).toMatch(pattern);
}

/** Data section (after the header) of a .m file. */
function tensorData(path: string): Buffer {
  const { header } = readModelFile(path);
  return readFileSync(path).subarray(header.headerSize);
}

async function greedy(model: string, tokenizer: string, steps: number): Promise<number[]> {
  const engine = new LayerWiseInferenceEngine(model, { tokenizerPath: tokenizer, threads: 1 });
  await engine.initialize();
  try {
    const out: number[] = [];
    for await (const t of engine.generate([1], { maxTokens: steps, temperature: 0, stopAtEos: false })) out.push(t.token);
    return out;
  } finally {
    await engine.cleanup();
  }
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'airllm-cli-convert-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('airllm convert llama2c / export gguf / convert gguf on stories260K', () => {
  it('convert llama2c gives the official converter’s model bytes (Q40 and F32)', () => {
    for (const [dtype, fixture] of [['q40', Q40_FIXTURE], ['f32', F32_FIXTURE]] as const) {
      const m = join(dir, `stories-${dtype}.m`);
      const out = JSON.parse(ok(airllm('convert', 'llama2c', STORIES, TOK512, '-o', m, '--dtype', dtype, '--json'))) as { model: { bytes: number; weightType: string }; tokenizer: { path: string; vocabSize: number } };
      expect(out.model.weightType).toBe(dtype.toUpperCase());
      expect(out.tokenizer).toMatchObject({ path: join(dir, `stories-${dtype}.t`), vocabSize: 512 });
      expect(Buffer.compare(readFileSync(m), readFileSync(fixture))).toBe(0);
    }
  });

  for (const dtype of ['q40', 'f32'] as const) {
    it(`${dtype}: export gguf → convert gguf keeps every tensor byte, and the engine generates the same greedy tokens`, async () => {
      const m = join(dir, `stories-${dtype}.m`);
      const t = join(dir, `stories-${dtype}.t`);
      const g = join(dir, `stories-${dtype}.gguf`);
      const summary = JSON.parse(ok(airllm('export', 'gguf', m, '--out', g, '--tokenizer', t, '--json'))) as { tensors: number; tokenizer: string; bytes: number };
      expect(summary).toMatchObject({ tensors: 48, tokenizer: 'sentencepiece' });
      expect(readFileSync(g).length).toBe(summary.bytes);
      const parsed = await hfGguf(g, { allowLocalFile: true });
      expect(parsed.tensorInfos.find((i) => i.name === 'blk.4.ffn_down.weight')!.shape.map(Number)).toEqual([192, 64]);

      const back = join(dir, `back-${dtype}.m`);
      const text = ok(airllm('convert', 'gguf', g, '-o', back));
      expect(text).toMatch(/^wrote .*back-.*\.m: LLAMA /);
      expect(text).not.toMatch(/re-encoded/);
      expect(Buffer.compare(tensorData(back), tensorData(m))).toBe(0);
      const backT = back.replace(/\.m$/, '.t');
      expect(Buffer.compare(readFileSync(backT), readFileSync(t))).toBe(0);

      const steps = 64;
      const original = await greedy(m, t, steps);
      const roundTripped = await greedy(back, backT, steps);
      expect(roundTripped).toEqual(original);
      // F32 is llama2.c's own arithmetic: the round-tripped model still matches llama2.c.
      if (dtype === 'f32') expect(roundTripped).toEqual(reference.bos_only.generated_tokens.slice(0, steps));
    });
  }

  it('errors are one line: not a GGUF, existing output, bad --dtype', () => {
    oneLineError(airllm('convert', 'gguf', Q40_FIXTURE, '-o', join(dir, 'x.m')), /not a GGUF file/);
    oneLineError(airllm('convert', 'llama2c', STORIES, TOK512, '-o', join(dir, 'stories-q40.m')), /exists/);
    oneLineError(airllm('convert', 'hf', dir, '-o', join(dir, 'y.m'), '--dtype', 'q4'), /--dtype must be q40, q80, f16 or f32/);
    oneLineError(airllm('export', 'gguf', join(dir, 'missing.m'), '-o', join(dir, 'z.gguf')), /missing\.m/);
  });
});

describe('airllm convert hf', () => {
  it('qwen3 checkpoint with tokenizer files → .m with the converter header keys and a .t', () => {
    const hf = join(dir, 'qwen3-hf');
    const ck = tinyHfCheckpoint({ modelType: 'qwen3', headDim: 32, tied: true, vocab: 12, dtype: () => 'BF16' });
    writeHfDir(hf, ck, {
      shards: 2,
      files: {
        'tokenizer.json': {
          model: { type: 'BPE', vocab: { a: 0, b: 1, 'Ġ': 2, 'Ġa': 3, ab: 4, 'Ċ': 5, c: 6 } },
          added_tokens: [
            { id: 7, content: '<|endoftext|>', special: true },
            { id: 8, content: '<|im_start|>', special: true },
            { id: 9, content: '<|im_end|>', special: true },
          ],
          decoder: { type: 'ByteLevel' },
        },
        'tokenizer_config.json': { eos_token: '<|im_end|>', chat_template: '<|im_start|>' },
      },
    });
    const m = join(dir, 'qwen3.m');
    const out = JSON.parse(ok(airllm('convert', 'hf', hf, '-o', m, '--dtype', 'f16', '--json'))) as { model: { arch: string; weightType: string }; tokenizer: { vocabSize: number; bosId: number; eosIds: number[] }; tokenizerStyle: string };
    expect(out.model).toMatchObject({ arch: 'QWEN3', weightType: 'F16' });
    expect(out.tokenizer).toMatchObject({ vocabSize: 10, bosId: 1, eosIds: [9, 2] });
    expect(out.tokenizerStyle).toBe('bytelevel');
    const { header } = readModelFile(m);
    expect(header.pairs.map(([k]) => k)).toEqual([
      HeaderKey.Version, HeaderKey.ArchType, HeaderKey.HiddenAct, HeaderKey.Dim, HeaderKey.HiddenDim, HeaderKey.NLayers, HeaderKey.NHeads, HeaderKey.NKvHeads,
      HeaderKey.WeightsFloatType, HeaderKey.MaxSeqLen, HeaderKey.VocabSize, HeaderKey.NExperts, HeaderKey.NActiveExperts, HeaderKey.RopeTheta, HeaderKey.HeadDim, HeaderKey.NormEpsilon,
    ]);
    expect([header.archType, header.weightType, header.headDim]).toEqual([ArchType.QWEN3, FloatType.F16, 32]);
    const tok = parseTokenizer(new Uint8Array(readFileSync(join(dir, 'qwen3.t'))));
    expect(tok.chatTemplate).toBe('<|im_start|>');
  });

  it('an unsupported model_type is one line naming the supported ones', () => {
    const hf = join(dir, 'gemma-hf');
    writeHfDir(hf, tinyHfCheckpoint({ modelType: 'llama', extraConfig: { model_type: 'gemma' } }));
    writeFileSync(join(hf, 'tokenizer.json'), '{}');
    oneLineError(airllm('convert', 'hf', hf, '-o', join(dir, 'g.m')), /unsupported model_type.*llama, mistral, qwen3, qwen3_moe.*gemma/);
  });
});

/**
 * A float64 forward pass with Hugging Face's semantics (modeling_llama / modeling_qwen3 /
 * modeling_qwen3_moe): rotate_half RoPE on the checkpoint's own q/k rows (Llama-3 frequency
 * scaling as transformers computes it), per-head q/k RMSNorm for Qwen3, GQA, SwiGLU, top-k
 * routing with renormalized weights. Independent of the converter and the engine: if the
 * converter permuted q/k wrongly, or wrote a header key the engine reads differently, the
 * engine's logits on the converted file would not match.
 */
function hfReferenceLogits(ck: ReturnType<typeof tinyHfCheckpoint>, tokens: readonly number[]): Float64Array {
  const c = ck.config as Record<string, number | boolean | string | Record<string, number | string> | undefined>;
  const W = new Map(ck.tensors.map((t) => [t.name, t.data]));
  const w = (name: string): Float32Array => {
    const x = W.get(name);
    if (x === undefined) throw new Error(`no ${name}`);
    return x;
  };
  const D = c.hidden_size as number;
  const nh = c.num_attention_heads as number;
  const nkv = c.num_key_value_heads as number;
  const hd = (c.head_dim as number | undefined) ?? D / nh;
  const eps = c.rms_norm_eps as number;
  const theta = c.rope_theta as number;
  const qwen = c.model_type === 'qwen3' || c.model_type === 'qwen3_moe';
  const moe = c.model_type === 'qwen3_moe';
  const V = c.vocab_size as number;
  const matvec = (m: Float32Array, x: Float64Array, rows: number): Float64Array => {
    const cols = x.length;
    const out = new Float64Array(rows);
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let i = 0; i < cols; i++) s += m[r * cols + i]! * x[i]!;
      out[r] = s;
    }
    return out;
  };
  const rms = (x: Float64Array, g: Float32Array, off = 0, n = x.length): void => {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[off + i]! ** 2;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) x[off + i] = x[off + i]! * inv * g[i]!;
  };
  const invFreq = Array.from({ length: hd / 2 }, (_, j) => 1 / Math.pow(theta, (2 * j) / hd));
  const rs = c.rope_scaling as Record<string, number> | undefined;
  if (rs !== undefined) {
    const { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: L0 } = rs as Record<string, number>;
    for (let j = 0; j < invFreq.length; j++) {
      const f = invFreq[j]!;
      const wl = (2 * Math.PI) / f;
      if (wl < L0! / high!) continue;
      if (wl > L0! / low!) invFreq[j] = f / factor!;
      else {
        const s = (L0! / wl - low!) / (high! - low!);
        invFreq[j] = (1 - s) * (f / factor!) + s * f;
      }
    }
  }
  const rope = (x: Float64Array, heads: number, pos: number): void => {
    for (let h = 0; h < heads; h++) {
      for (let j = 0; j < hd / 2; j++) {
        const a = pos * invFreq[j]!;
        const i1 = h * hd + j;
        const i2 = i1 + hd / 2;
        const x1 = x[i1]!;
        const x2 = x[i2]!;
        x[i1] = x1 * Math.cos(a) - x2 * Math.sin(a);
        x[i2] = x2 * Math.cos(a) + x1 * Math.sin(a);
      }
    }
  };
  const silu = (v: number): number => v / (1 + Math.exp(-v));
  const mlp = (h: Float64Array, p: string, ff: number): Float64Array => {
    const g = matvec(w(`${p}gate_proj.weight`), h, ff);
    const u = matvec(w(`${p}up_proj.weight`), h, ff);
    const a = g.map((v, i) => silu(v) * u[i]!);
    return matvec(w(`${p}down_proj.weight`), a, D);
  };
  const L = c.num_hidden_layers as number;
  const kcache: Float64Array[][] = Array.from({ length: L }, () => []);
  const vcache: Float64Array[][] = Array.from({ length: L }, () => []);
  let x = new Float64Array(D);
  const emb = w('model.embed_tokens.weight');
  tokens.forEach((tok, pos) => {
    x = Float64Array.from(emb.subarray(tok * D, (tok + 1) * D));
    for (let l = 0; l < L; l++) {
      const p = `model.layers.${l}.`;
      const h = x.slice();
      rms(h, w(`${p}input_layernorm.weight`));
      const q = matvec(w(`${p}self_attn.q_proj.weight`), h, nh * hd);
      const k = matvec(w(`${p}self_attn.k_proj.weight`), h, nkv * hd);
      const v = matvec(w(`${p}self_attn.v_proj.weight`), h, nkv * hd);
      if (qwen) {
        for (let i = 0; i < nh; i++) rms(q, w(`${p}self_attn.q_norm.weight`), i * hd, hd);
        for (let i = 0; i < nkv; i++) rms(k, w(`${p}self_attn.k_norm.weight`), i * hd, hd);
      }
      rope(q, nh, pos);
      rope(k, nkv, pos);
      kcache[l]!.push(k);
      vcache[l]!.push(v);
      const att = new Float64Array(nh * hd);
      for (let i = 0; i < nh; i++) {
        const kv = Math.floor(i / (nh / nkv));
        const scores = kcache[l]!.map((kt) => {
          let s = 0;
          for (let d = 0; d < hd; d++) s += q[i * hd + d]! * kt[kv * hd + d]!;
          return s / Math.sqrt(hd);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((ei, t) => {
          for (let d = 0; d < hd; d++) att[i * hd + d] = att[i * hd + d]! + (ei / z) * vcache[l]![t]![kv * hd + d]!;
        });
      }
      const o = matvec(w(`${p}self_attn.o_proj.weight`), att, D);
      for (let i = 0; i < D; i++) x[i] = x[i]! + o[i]!;
      const h2 = x.slice();
      rms(h2, w(`${p}post_attention_layernorm.weight`));
      let f: Float64Array;
      if (moe) {
        const E = c.num_experts as number;
        const logits = matvec(w(`${p}mlp.gate.weight`), h2, E);
        const m = Math.max(...logits);
        const pr = Array.from(logits, (g) => Math.exp(g - m));
        const z = pr.reduce((a, b) => a + b, 0);
        const top = [...pr.keys()].sort((a, b) => pr[b]! - pr[a]!).slice(0, c.num_experts_per_tok as number);
        const zt = top.reduce((a, e) => a + pr[e]! / z, 0);
        f = new Float64Array(D);
        for (const e of top) {
          const out = mlp(h2, `${p}mlp.experts.${e}.`, c.moe_intermediate_size as number);
          for (let i = 0; i < D; i++) f[i] = f[i]! + (pr[e]! / z / zt) * out[i]!;
        }
      } else f = mlp(h2, `${p}mlp.`, c.intermediate_size as number);
      for (let i = 0; i < D; i++) x[i] = x[i]! + f[i]!;
    }
  });
  rms(x, w('model.norm.weight'));
  return matvec(W.get('lm_head.weight') ?? emb, x, V);
}

describe('convert hf → engine logits = Hugging Face semantics (float64 reference)', () => {
  const cases: [string, Parameters<typeof tinyHfCheckpoint>[0]][] = [
    ['llama (q/k permuted)', { modelType: 'llama', vocab: 64, seed: 11 }],
    [
      'llama with llama3 rope scaling',
      { modelType: 'llama', vocab: 64, headDim: 16, seed: 12, extraConfig: { rope_theta: 10000.0, rope_scaling: { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 32 } } },
    ],
    ['qwen3 (head_dim 32 ≠ dim/heads, q/k norms, tied)', { modelType: 'qwen3', vocab: 64, headDim: 32, tied: true, seed: 13 }],
    ['qwen3_moe (4 experts, top 2)', { modelType: 'qwen3_moe', vocab: 64, headDim: 16, seed: 14 }],
  ];
  for (const [label, opts] of cases) {
    it(label, async () => {
      const ck = tinyHfCheckpoint({ ...opts, dtype: () => 'BF16' });
      const hf = join(dir, `engine-${opts.seed}`);
      writeHfDir(hf, ck);
      const m = join(dir, `engine-${opts.seed}.m`);
      ok(airllm('convert', 'hf', hf, '-o', m, '--dtype', 'f32', '--no-tokenizer'));
      const tokens = [1, 17, 5, 42, 9, 33];
      const want = hfReferenceLogits(ck, tokens);
      const engine = new LayerWiseInferenceEngine(m, { threads: 1 });
      await engine.initialize();
      let got: Float32Array;
      try {
        got = await engine.forward(tokens, 0);
      } finally {
        await engine.cleanup();
      }
      const scale = Math.max(...Array.from(want, Math.abs));
      let maxDiff = 0;
      for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got[i]! - want[i]!));
      expect(maxDiff / scale, `max |Δ| ${maxDiff} at logit scale ${scale}`).toBeLessThan(1e-4);
    });
  }

  it('without the permutation (or the rope scaling) the logits would differ: the checks can fail', () => {
    const ck = tinyHfCheckpoint({ modelType: 'llama', vocab: 64, seed: 11, dtype: () => 'BF16' });
    // Feed the reference the rows in .m order instead: a wrong converter would look like this.
    const permuted = {
      ...ck,
      tensors: ck.tensors.map((t) => {
        if (!/self_attn\.[qk]_proj/.test(t.name)) return t;
        const rows = t.shape[0]!;
        const cols = t.shape[1]!;
        const out = new Float32Array(t.data.length);
        for (let r = 0; r < rows; r++) {
          const h = Math.floor(r / 16);
          const j = r % 16;
          out.set(t.data.subarray((h * 16 + (j % 2) * 8 + Math.floor(j / 2)) * cols, (h * 16 + (j % 2) * 8 + Math.floor(j / 2) + 1) * cols), r * cols);
        }
        return { ...t, data: out };
      }),
    };
    const a = hfReferenceLogits(ck, [1, 17, 5, 42, 9, 33]);
    const b = hfReferenceLogits(permuted, [1, 17, 5, 42, 9, 33]);
    let maxDiff = 0;
    for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    expect(maxDiff).toBeGreaterThan(1e-3);
    // Likewise the Llama-3 scaling case: at these positions the scaled frequencies matter.
    const scaled = tinyHfCheckpoint({ ...cases[1]![1], dtype: () => 'BF16' });
    const plain = { ...scaled, config: { ...scaled.config, rope_scaling: undefined } };
    const c = hfReferenceLogits(scaled, [1, 17, 5, 42, 9, 33]);
    const d = hfReferenceLogits(plain, [1, 17, 5, 42, 9, 33]);
    let diff2 = 0;
    for (let i = 0; i < c.length; i++) diff2 = Math.max(diff2, Math.abs(c[i]! - d[i]!));
    expect(diff2).toBeGreaterThan(1e-3);
  });
});

/**
 * A legacy (version 0) llama2.c checkpoint of ~218 MiB with vocabulary 512 (tok512.bin's), so a
 * conversion to Q40 runs long enough to be interrupted while it writes.
 */
function writeLargeLlama2c(path: string): void {
  const [dim, hidden, layers, heads, vocab, seqLen] = [768, 2048, 8, 12, 512, 256];
  const floats = vocab * dim + layers * (2 * dim + 4 * dim * dim + 3 * hidden * dim) + dim + seqLen * (dim / heads);
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, new Uint8Array(new Int32Array([dim, hidden, layers, heads, heads, vocab, seqLen]).buffer));
    const chunk = new Float32Array(1 << 20).map((_, i) => Math.sin(i * 0.37) * 0.05);
    for (let left = floats; left > 0; left -= chunk.length) writeSync(fd, new Uint8Array(chunk.buffer, 0, Math.min(left, chunk.length) * 4));
  } finally {
    closeSync(fd);
  }
}

/** Start `airllm convert llama2c` on `checkpoint` → `out`; resolves once `out.partial` exists. */
async function convertUntilPartial(checkpoint: string, out: string): Promise<{ proc: ChildProcess; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> }> {
  const proc = spawn(process.execPath, [BIN, 'convert', 'llama2c', checkpoint, TOK512, '-o', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((r) => proc.once('exit', (code, signal) => r({ code, signal, stderr })));
  const deadline = Date.now() + 30_000;
  while (!existsSync(`${out}.partial`)) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`no partial file appeared: ${stderr}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return { proc, exit };
}

describe('an interrupted convert (issue #24 D7)', () => {
  let big: string;
  beforeAll(() => {
    big = join(dir, 'large.bin');
    writeLargeLlama2c(big);
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} while writing removes out.m.partial and its lock, and the process ends by the signal`, async () => {
      const out = join(dir, `interrupted-${signal}.m`);
      const { proc, exit } = await convertUntilPartial(big, out);
      proc.kill(signal);
      const r = await exit;
      expect(r.signal, r.stderr).toBe(signal);
      expect(r.stderr).toBe(`airllm: ${signal}: stopped, removed ${out}.partial\n`);
      // Stopped part-way (no model written) and nothing left behind.
      expect(readdirSync(dir).filter((f) => f.startsWith(`interrupted-${signal}`))).toEqual([]);
    });
  }

  it('after a kill -9 the stale partial file does not block the next convert; a running convert does', async () => {
    const out = join(dir, 'killed.m');
    const first = await convertUntilPartial(big, out);
    first.proc.kill('SIGKILL');
    expect((await first.exit).signal).toBe('SIGKILL');
    expect(readdirSync(dir).filter((f) => f.startsWith('killed')).sort()).toEqual(['killed.m.partial', 'killed.m.partial.lock']);

    const running = await convertUntilPartial(big, join(dir, 'busy.m'));
    try {
      const refused = airllm('convert', 'llama2c', big, TOK512, '-o', join(dir, 'busy.m'), '--overwrite');
      expect(refused.code).not.toBe(0);
      expect(refused.stderr).toBe(`airllm: ${join(dir, 'busy.m')}.partial: process ${running.proc.pid} is writing this file (remove ${join(dir, 'busy.m')}.partial.lock if it is not running)\n`);
    } finally {
      running.proc.kill('SIGTERM');
      await running.exit;
    }

    const again = airllm('convert', 'llama2c', big, TOK512, '-o', out, '--json');
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    expect(readModelFile(out).header.nLayers).toBe(8);
    expect(readdirSync(dir).filter((f) => f.startsWith('killed')).sort()).toEqual(['killed.m', 'killed.t']);
  });
});
