import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { tinyHfCheckpoint, writeHfDir } from '@airllm/format/testing';
import { FakeHub, type FakeHubFile } from '@airllm/loader/testing';
import { BIN, FIXTURES, MODEL, TOKENIZER } from './helpers.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'airllm-cli-pull-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let hub: FakeHub | undefined;
afterEach(async () => {
  await hub?.close();
  hub = undefined;
});

let n = 0;
/** A fresh $AIRLLM_HOME per call. */
function home(): string {
  return join(dir, `home-${n++}`);
}

/**
 * The CLI as a child process, asynchronously: the fake hub answers from this process, so the
 * event loop must stay free while the child runs. `onStderr` sees stderr as it arrives.
 */
function airllm(args: string[], env: Record<string, string> = {}, onStderr?: (text: string) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, HF_TOKEN: '', AIRLLM_HUB: '', HF_ENDPOINT: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      onStderr?.(stderr);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function oneLineError(r: Run, pattern: RegExp): void {
  expect(r.code).not.toBe(0);
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^airllm: /);
  expect(lines[0]).toMatch(pattern);
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function pattern(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

interface PullJson {
  spec: string;
  commit: string;
  model: string;
  tokenizer: string | null;
  converted: { dtype: string } | null;
  files: { path: string; dest: string; size: number; status: string; resumedFrom: number; checksum: { algorithm: string; hex: string } }[];
}

const SIZE = 2 * (1 << 20) + 4444;

describe('airllm pull', () => {
  it('resumes after the connection dropped at 50 %: first run fails with --retries 0 and keeps the partial, the second continues it', async () => {
    const content = pattern(SIZE, 3);
    hub = await FakeHub.start({ repos: [{ id: 'acme/tiny', files: [{ path: 'w.gguf', content }] }], cdn: 'separate' });
    hub.fault({ path: 'w.gguf', kind: 'drop', at: SIZE / 2 });
    const cache = join(dir, 'cache-resume');
    const first = await airllm(['pull', 'hf:acme/tiny/w.gguf', '--hub', hub.url, '--cache-dir', cache, '--retries', '0']);
    oneLineError(first, new RegExp(`w\\.gguf\\.partial, field hf:acme/tiny/w\\.gguf: download cut off at ${SIZE / 2} of ${SIZE} bytes .*run the pull again to resume`));
    const dest = join(cache, 'acme', 'tiny', 'w.gguf');
    expect(existsSync(dest)).toBe(false);
    expect(statSync(`${dest}.partial`).size).toBe(SIZE / 2);

    const second = await airllm(['pull', 'hf:acme/tiny/w.gguf', '--hub', hub.url, '--cache-dir', cache, '--json']);
    expect(second.code).toBe(0);
    const j = JSON.parse(second.stdout) as PullJson;
    expect(j).toMatchObject({ spec: 'hf:acme/tiny/w.gguf', commit: hub.commit('acme/tiny'), model: dest, tokenizer: null, converted: null });
    expect(j.files).toEqual([{ path: 'w.gguf', dest, size: SIZE, checksum: { algorithm: 'sha256', hex: sha256(content) }, status: 'downloaded', resumedFrom: SIZE / 2 }]);
    expect(Buffer.compare(readFileSync(dest), content)).toBe(0);
    expect(hub.contentRequests('w.gguf').map((r) => [r.range, r.status])).toEqual([[undefined, 200], [`bytes=${SIZE / 2}-`, 206]]);
    expect(readdirSync(join(cache, 'acme', 'tiny')).sort()).toEqual(['w.gguf', 'w.gguf.pull.json']);

    // Pulling again: up to date, nothing downloaded.
    const third = await airllm(['pull', 'hf:acme/tiny/w.gguf', '--hub', hub.url, '--cache-dir', cache]);
    expect(third.code).toBe(0);
    expect(third.stdout).toMatch(/^w\.gguf: up to date, 2\.00 MiB, sha256 ok/);
    expect(hub.contentRequests('w.gguf')).toHaveLength(2);
  });

  it('within one run, a dropped connection is retried from where it broke (a note on stderr)', async () => {
    const content = pattern(SIZE, 5);
    hub = await FakeHub.start({ repos: [{ id: 'acme/tiny', files: [{ path: 'w.gguf', content }] }] });
    hub.fault({ path: 'w.gguf', kind: 'drop', at: SIZE / 2 });
    const h = home();
    const r = await airllm(['pull', 'hf:acme/tiny/w.gguf', '--json'], { AIRLLM_HOME: h, AIRLLM_HUB: hub.url });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`^airllm pull: w\\.gguf: connection lost \\(.*\\) at 1\\.00 MiB; retrying in 1\\.0 s \\(1/5\\)\\n$`));
    const j = JSON.parse(r.stdout) as PullJson;
    expect(j.model).toBe(join(h, 'models', 'acme', 'tiny', 'w.gguf'));
    expect(Buffer.compare(readFileSync(j.model), content)).toBe(0);
    expect(hub.bytesServed('w.gguf')).toBe(SIZE);
  });

  it('refuses a file whose checksum is wrong: one line naming the file and both sums, and no file in the cache', async () => {
    const content = pattern(SIZE, 7);
    hub = await FakeHub.start({ repos: [{ id: 'acme/tiny', files: [{ path: 'w.gguf', content }] }] });
    hub.fault({ path: 'w.gguf', kind: 'corrupt', at: 12345 });
    const bad = Uint8Array.from(content);
    bad[12345] = bad[12345]! ^ 0xff;
    const cache = join(dir, 'cache-checksum');
    const r = await airllm(['pull', 'hf:acme/tiny/w.gguf', '--hub', hub.url, '--cache-dir', cache]);
    oneLineError(r, new RegExp(`acme/tiny/w\\.gguf, field hf:acme/tiny/w\\.gguf: downloaded bytes do not match the hub's sha256; they were discarded \\(expected ${sha256(content)}, got ${sha256(bad)}\\)`));
    expect(readdirSync(join(cache, 'acme', 'tiny'))).toEqual([]);
  });

  it('two pulls of one file in two processes: one downloads, the other waits for its lock', async () => {
    const content = pattern(SIZE, 9);
    hub = await FakeHub.start({ repos: [{ id: 'acme/tiny', files: [{ path: 'w.gguf', content }] }] });
    hub.fault({ path: 'w.gguf', kind: 'hold', at: 1 << 20 });
    const cache = join(dir, 'cache-concurrent');
    const args = ['pull', 'hf:acme/tiny/w.gguf', '--hub', hub.url, '--cache-dir', cache, '--json'];
    const a = airllm(args);
    while (hub.contentRequests('w.gguf').length === 0) await new Promise((r) => setTimeout(r, 20));
    // The holder is stopped at 1 MiB; release it once the second process says it waits.
    const b = airllm(args, {}, (text) => {
      if (/waiting for another pull of w\.gguf/.test(text)) hub!.release();
    });
    const [ra, rb] = await Promise.all([a, b]);
    expect([ra.code, rb.code]).toEqual([0, 0]);
    expect(rb.stderr).toMatch(/^airllm pull: waiting for another pull of w\.gguf \(pid \d+ on .*; lock .*w\.gguf\.lock\)\n$/);
    expect([(JSON.parse(ra.stdout) as PullJson).files[0]!.status, (JSON.parse(rb.stdout) as PullJson).files[0]!.status]).toEqual(['downloaded', 'cached']);
    expect(hub.bytesServed('w.gguf')).toBe(SIZE);
    expect(Buffer.compare(readFileSync(join(cache, 'acme', 'tiny', 'w.gguf')), content)).toBe(0);
  });

  it('bad specs, missing files and refused access are one-line errors', async () => {
    hub = await FakeHub.start({ repos: [{ id: 'acme/tiny', files: [{ path: 'w.gguf', content: pattern(10, 1) }] }, { id: 'acme/secret', files: [{ path: 'w.gguf', content: pattern(10, 2) }], private: true }], token: 'tok' });
    const cache = join(dir, 'cache-errors');
    oneLineError(await airllm(['pull', 'hf:acme--x/tiny', '--hub', hub.url, '--cache-dir', cache]), /owner may only hold .* in model spec "hf:acme--x\/tiny"/);
    oneLineError(await airllm(['pull', 'hf:acme/tiny/../../x', '--hub', hub.url, '--cache-dir', cache]), /file path segments must be plain names/);
    oneLineError(await airllm(['pull', 'hf:acme/tiny/nope.gguf', '--hub', hub.url, '--cache-dir', cache]), new RegExp(`hf:acme/tiny/nope\\.gguf: no such file in the repository on the hub.*${hub.url}/acme/tiny/resolve/main/nope\\.gguf`));
    oneLineError(await airllm(['pull', 'hf:acme/secret/w.gguf', '--hub', hub.url, '--cache-dir', cache]), /hf:acme\/secret\/w\.gguf: the repository is private or does not exist: set HF_TOKEN/);
    expect((await airllm(['pull', 'hf:acme/secret/w.gguf', '--hub', hub.url, '--cache-dir', cache], { HF_TOKEN: 'tok' })).code).toBe(0);
    oneLineError(await airllm(['pull', 'hf:acme/tiny/w.gguf', '--hub', 'ftp://x', '--cache-dir', cache]), /hub endpoint must be http or https/);
    oneLineError(await airllm(['generate', '-m', 'hf:acme', '--json']), /no repository name in model spec "hf:acme"/);
  });
});

const llama2c = JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as { bos_only: { generated_tokens: number[] } };

describe('-m hf:…', () => {
  it('generate -m hf:<repo>/<model>.m pulls the model and its tokenizer (through a dropped connection), then gives llama2.c’s greedy tokens', async () => {
    const m = readFileSync(MODEL);
    hub = await FakeHub.start({
      repos: [{ id: 'acme/stories', files: [{ path: 'dllama_model_stories260k_f32.m', content: m }, { path: 'dllama_tokenizer_stories260k.t', content: readFileSync(TOKENIZER) }] }],
      cdn: 'separate',
    });
    hub.fault({ path: 'dllama_model_stories260k_f32.m', kind: 'drop', at: m.length >> 1 });
    const env = { AIRLLM_HOME: home(), HF_ENDPOINT: hub.url };
    const args = ['generate', '-m', 'hf:acme/stories/dllama_model_stories260k_f32.m', '--prompt', '', '--steps', '40', '--json', '--threads', '1', '--kernels', 'reference'];
    const r = await airllm(args, env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/retrying/);
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual(llama2c.bos_only.generated_tokens.slice(0, 40));
    expect(hub.contentRequests('dllama_model_stories260k_f32.m').map((q) => q.range)).toEqual([undefined, `bytes=${m.length >> 1}-`]);
    // The second run takes the cached model and does not ask the hub anything.
    const before = hub.requests.length;
    const again = await airllm(args, env);
    expect(again.code).toBe(0);
    expect(again.stderr).toBe('');
    expect(hub.requests.length).toBe(before);
  });

  it('generate -m hf:<safetensors repo> converts on arrival and answers as the same checkpoint converted locally', async () => {
    const src = join(dir, 'qwen-src');
    writeHfDir(src, tinyHfCheckpoint({ modelType: 'qwen3', vocab: 12, tied: true, dtype: () => 'BF16' }), {
      shards: 2,
      files: {
        'tokenizer.json': {
          model: { type: 'BPE', vocab: { a: 0, b: 1, 'Ġ': 2, 'Ġa': 3, ab: 4, 'Ċ': 5, c: 6 }, merges: ['a b'] },
          added_tokens: [
            { id: 7, content: '<|endoftext|>', special: true },
            { id: 8, content: '<|im_start|>', special: true },
            { id: 9, content: '<|im_end|>', special: true },
          ],
          pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, use_regex: true },
          decoder: { type: 'ByteLevel' },
        },
        'tokenizer_config.json': { eos_token: '<|im_end|>' },
      },
    });
    const files: FakeHubFile[] = readdirSync(src).map((f) => ({ path: f, content: readFileSync(join(src, f)) }));
    hub = await FakeHub.start({ repos: [{ id: 'acme/qwen', files }] });
    const local = join(dir, 'qwen-local.m');
    expect((await airllm(['convert', 'hf', src, '-o', local])).code).toBe(0);
    const gen = ['generate', 'ab a', '--steps', '12', '--json', '--threads', '1', '--kernels', 'reference', '--no-bos'];
    const expected = await airllm([...gen, '-m', local]);
    expect(expected.code, expected.stderr).toBe(0);
    const h = home();
    const r = await airllm([...gen, '-m', 'hf:acme/qwen'], { AIRLLM_HOME: h, AIRLLM_HUB: hub.url });
    expect(r.code, r.stderr).toBe(0);
    const pick = (s: string): unknown => {
      const j = JSON.parse(s) as { promptTokens: number[]; tokens: number[]; text: string };
      return { promptTokens: j.promptTokens, tokens: j.tokens, text: j.text };
    };
    expect(pick(r.stdout)).toEqual(pick(expected.stdout));
    expect((pick(r.stdout) as { tokens: number[] }).tokens.length).toBeGreaterThan(0);
    expect(Buffer.compare(readFileSync(join(h, 'models', 'acme', 'qwen.m')), readFileSync(local))).toBe(0);
  });
});
