/**
 * The CLI speaks its own flags: errors name flags and sizes (not library option names and byte
 * counts), --json is one line and makes errors JSON too, the defaults a user expects (output
 * next to the input, the tokenizer found beside the model under dllama's names too), and help
 * texts that state each default once.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, FIXTURES, MODEL, TOKENIZER } from './helpers.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function airllm(...args: string[]): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The one `airllm: …` line on stderr of a failed run. */
function errorLine(r: Run): string {
  expect(r.code, r.stdout).not.toBe(0);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^airllm: /);
  return lines[0]!.slice('airllm: '.length);
}

const reference = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as {
  bos_only: { generated_tokens: number[] };
};
const F32_FIXTURE = join(FIXTURES, 'dllama_model_stories260k_hidden192_f32.m');

const dir = mkdtempSync(join(tmpdir(), 'airllm-cli-flags-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh folder holding copies of `files` (source path → name there). */
function folder(name: string, files: Record<string, string>): string {
  const d = join(dir, name);
  mkdirSync(d);
  for (const [name, src] of Object.entries(files)) copyFileSync(src, join(d, name));
  return d;
}

describe('errors name the flags a user types', () => {
  it('--max-memory too small: the flag and sizes, not budgetBytes and byte counts', () => {
    const m = errorLine(airllm('generate', 'hi', '--mode', 'stream', '--max-memory', '1000'));
    expect(m).toMatch(/^--max-memory: budget cannot hold .* \(expected ≥ [\d.]+ KiB, got 1000 B\)$/);
    expect(m).not.toMatch(/budgetBytes|\d{5,}/); // no raw byte counts like 394240
  });

  it('an engine option out of range names its flag', () => {
    expect(errorLine(airllm('generate', 'hi', '--max-seq-len', '100000'))).toMatch(/^--max-seq-len: must be 1\.\.512 \(the model's context\), got 100000$/);
  });

  it('an existing output file: pass --overwrite', () => {
    const d = folder('exists', { 'stories260K.bin': join(FIXTURES, 'stories260K.bin'), 'tok512.bin': join(FIXTURES, 'tok512.bin'), 'stories260K.m': MODEL });
    const m = errorLine(airllm('convert', 'llama2c', join(d, 'stories260K.bin'), join(d, 'tok512.bin')));
    expect(m).toMatch(/stories260K\.m: output file exists \(pass --overwrite to replace it\)$/);
  });

  it('no tokenizer beside the model: where it looked, and -t/--tokenizer; nothing on stdout', () => {
    const d = folder('lonely', { 'story.m': MODEL });
    const r = airllm('generate', '-m', join(d, 'story.m'), 'Once upon a time');
    expect(errorLine(r)).toBe(`no tokenizer for ${join(d, 'story.m')}: looked for ${join(d, 'story.t')}; pass -t/--tokenizer`);
    expect(r.stdout).toBe('');
  });
});

describe('the tokenizer beside the model', () => {
  it("dllama's names: dllama_model_X_f32.m finds dllama_tokenizer_X.t, and generates llama2.c's tokens", () => {
    // The repository's fixtures are named as dllama's converter names them.
    const r = airllm('generate', '-m', F32_FIXTURE, '--prompt', '', '-n', '40', '--json');
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { tokens: number[] };
    expect(out.tokens).toEqual(reference.bos_only.generated_tokens.slice(0, 40));
  });

  it('dllama_model_X.m → dllama_tokenizer_X.t exactly, and model.t first when both exist', () => {
    const d = folder('dllama', { 'dllama_model_story_q40.m': MODEL, 'dllama_tokenizer_story_q40.t': TOKENIZER });
    const r = airllm('export', 'gguf', join(d, 'dllama_model_story_q40.m'), '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ tokenizerPath: join(d, 'dllama_tokenizer_story_q40.t'), tokenizer: 'sentencepiece' });
    const both = folder('both', { 'dllama_model_a.m': MODEL, 'dllama_model_a.t': TOKENIZER, 'dllama_tokenizer_a.t': TOKENIZER });
    const r2 = airllm('export', 'gguf', join(both, 'dllama_model_a.m'), '--json');
    expect(JSON.parse(r2.stdout)).toMatchObject({ tokenizerPath: join(both, 'dllama_model_a.t') });
  });
});

describe('--json', () => {
  it('is one compact line', () => {
    const r = airllm('inspect', F32_FIXTURE, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.endsWith('\n')).toBe(true);
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ arch: 'LLAMA', weightType: 'F32' });
  });

  it('an error is a JSON object on stdout too, with the same exit code and message', () => {
    const cases: [string[], string, number][] = [
      [['generate', 'hi', '--mode', 'stream', '--max-memory', '1000'], 'AIRLLM_BUDGET_TOO_SMALL', 1],
      [['generate', 'hi', '--threads', '0'], 'AIRLLM_USAGE', 2],
      [['inspect', join(dir, 'missing.m')], 'AIRLLM_MISSING_FILE', 1],
      [['inspect', F32_FIXTURE, '--bogus'], 'AIRLLM_USAGE', 1],
      [['export', 'gguf', MODEL, '-t', join(dir, 'missing.t')], 'AIRLLM_CLI', 1],
    ];
    for (const [args, code, exit] of cases) {
      const plain = airllm(...args);
      const json = airllm(...args, '--json');
      expect(plain.code, plain.stderr).toBe(exit);
      expect(json.code, json.stderr).toBe(exit);
      expect(json.stdout.trimEnd().split('\n'), json.stdout).toHaveLength(1);
      expect(JSON.parse(json.stdout)).toEqual({ error: { code, message: errorLine(plain) } });
      expect(json.stderr).toBe(plain.stderr);
    }
  });
});

describe('defaults', () => {
  it('convert llama2c writes next to its input: the official converter’s bytes and a .t', () => {
    const d = folder('next', { 'stories260K.bin': join(FIXTURES, 'stories260K.bin'), 'tok512.bin': join(FIXTURES, 'tok512.bin') });
    const r = airllm('convert', 'llama2c', join(d, 'stories260K.bin'), join(d, 'tok512.bin'), '--dtype', 'f32', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ model: { path: join(d, 'stories260K.m') }, tokenizer: { path: join(d, 'stories260K.t') } });
    expect(Buffer.compare(readFileSync(join(d, 'stories260K.m')), readFileSync(F32_FIXTURE))).toBe(0);
  });

  it('convert hf writes <folder>.m beside the checkpoint folder (a dot in its name is no extension)', () => {
    const hf = join(dir, 'Tiny-0.5B');
    writeHfDir(hf, tinyHfCheckpoint({ modelType: 'llama' }));
    const r = airllm('convert', 'hf', `${hf}/`, '--no-tokenizer', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ model: { path: `${hf}.m` }, tokenizer: null });
    expect(existsSync(`${hf}.m`)).toBe(true);
  });

  it('export gguf writes model.gguf with the tokenizer found as the other commands find it', () => {
    const d = folder('export', { 'story.m': MODEL, 'story.t': TOKENIZER });
    const r = airllm('export', 'gguf', join(d, 'story.m'));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^wrote ${join(d, 'story.gguf')}: 48 tensors, .*, tokenizer ${join(d, 'story.t')}\\n$`));
  });

  it('export gguf without a tokenizer fails and writes nothing (llama.cpp would refuse the file)', () => {
    const d = folder('export-lonely', { 'story.m': MODEL });
    const r = airllm('export', 'gguf', join(d, 'story.m'));
    expect(errorLine(r)).toMatch(/^no tokenizer for .*story\.m: looked for .*story\.t; pass -t\/--tokenizer$/);
    expect(existsSync(join(d, 'story.gguf'))).toBe(false);
  });
});

describe('help', () => {
  /** Every command path: generate, chat, …, convert hf, convert gguf, export gguf. */
  function commands(prefix: string[] = []): string[][] {
    const help = airllm(...prefix, '--help').stdout;
    const section = help.split(/^Commands:$/m)[1] ?? '';
    const names = [...section.matchAll(/^ {2}([a-z][\w-]*)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
    return names.flatMap((n) => {
      const sub = commands([...prefix, n]);
      return sub.length > 0 ? sub : [[...prefix, n]];
    });
  }

  it('every option of every command states its default at most once', () => {
    const all = commands();
    expect(all.map((c) => c.join(' '))).toEqual(expect.arrayContaining(['generate', 'chat', 'serve', 'bench', 'worker', 'inspect', 'convert hf', 'convert gguf', 'convert llama2c', 'export gguf']));
    for (const cmd of all) {
      const help = airllm(...cmd, '--help').stdout;
      const options = help.split(/^Options:$/m)[1]!;
      // One entry per option: a line starting with the flag, then its wrapped continuation lines.
      const entries = options.split(/\n(?= {2}-)/);
      expect(entries.length).toBeGreaterThan(1);
      for (const entry of entries) {
        const defaults = entry.match(/default/gi)?.length ?? 0;
        expect(defaults, `airllm ${cmd.join(' ')} --help: ${entry.trim()}`).toBeLessThanOrEqual(1);
      }
    }
  });
});
