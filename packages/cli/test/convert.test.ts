import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
