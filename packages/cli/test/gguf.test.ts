import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportGguf } from '@airllm/format/convert';
import { BIN, FIXTURES } from './helpers.js';

const llama2c = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as { bos_only: { generated_tokens: number[] }; encodings: Record<string, number[]> };

function airllm(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const dir = mkdtempSync(join(tmpdir(), 'airllm-cli-gguf-'));
const gguf = join(dir, 'stories260K.gguf');
beforeAll(async () => {
  // No .t beside it: the tokenizer comes from the GGUF's metadata.
  await exportGguf(join(FIXTURES, 'dllama_model_stories260k_hidden192_f32.m'), gguf, { tokenizerPath: join(FIXTURES, 'dllama_tokenizer_stories260k.t') });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('airllm on a GGUF, in place', () => {
  for (const extra of [[], ['--mode', 'stream', '--max-memory', '500KiB']]) {
    it(`generate -m model.gguf ${extra.join(' ')}: llama2.c's greedy tokens, tokenizer from the GGUF`, () => {
      const r = airllm(['generate', '-m', gguf, '--prompt', '', '--steps', '40', '--json', ...extra]);
      expect(r.code, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout) as { promptTokens: number[]; tokens: number[]; text: string };
      expect(j.promptTokens).toEqual([1]);
      expect(j.tokens).toEqual(llama2c.bos_only.generated_tokens.slice(0, 40));
      expect(j.text.startsWith('Once upon a time')).toBe(true);
    });
  }

  it("tokenize -m model.gguf: llama2.c's ids, from the GGUF's own tokenizer metadata", () => {
    const [text, ids] = Object.entries(llama2c.encodings)[0]!;
    const r = airllm(['tokenize', '-m', gguf, text]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(ids.join(' '));
  });

  it('inspect model.gguf --json: the in-place layout, every layer as file ranges', () => {
    const r = airllm(['inspect', gguf, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { format: string; arch: string; dtypes: Record<string, { tensors: number }>; layers: { extents: { offset: number; size: number }[] }[]; fileSize: { ok: boolean } };
    expect(j.format).toBe('gguf');
    expect(j.arch).toBe('LLAMA');
    expect(Object.keys(j.dtypes)).toEqual(['F32']);
    expect(j.layers).toHaveLength(5);
    for (const l of j.layers) expect(l.extents.length).toBeGreaterThan(0);
    expect(j.fileSize.ok).toBe(true);
  });
});
