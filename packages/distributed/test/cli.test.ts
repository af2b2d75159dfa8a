/** The `airllm` binary as a root (`generate --workers`) and as workers, all real processes. */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI, FIXTURES, startWorker, STORIES, STORIES_TOKENIZER, type WorkerProcess } from './helpers.js';

const run = promisify(execFile);
const EXPECTED = (JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as { bos_only: { generated_tokens: number[] } }).bos_only.generated_tokens;
const TOKEN = 'cli-secret';

async function airllm(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof err.code === 'number' ? err.code : -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

describe('airllm generate --workers', () => {
  const workers: WorkerProcess[] = [];
  beforeEach(async () => {
    workers.push(await startWorker(STORIES, ['--token', TOKEN]), await startWorker(STORIES, ['--token', TOKEN]));
  });
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((w) => w.stop()));
  });

  it('generates llama2.c’s 256 tokens through two worker processes (token from $AIRLLM_TOKEN)', async () => {
    const r = await airllm(
      ['generate', '-m', STORIES, '-t', STORIES_TOKENIZER, '--threads', '1', '--workers', workers.map((w) => w.address).join(','), '--split', '1-2,3-4', '-n', '256', '--json'],
      { AIRLLM_TOKEN: TOKEN },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual(EXPECTED);
    expect(workers[0]!.stderr()).toContain('assigned layers 1-2, f32 activations, next ' + workers[1]!.address);
    expect(workers[1]!.stderr()).toContain('assigned layers 3-4, f32 activations, next the root');
  });

  it('a wrong token, a bad split and a bad address are one-line errors naming what is wrong', async () => {
    const addrs = workers.map((w) => w.address).join(',');
    const base = ['generate', '-m', STORIES, '-t', STORIES_TOKENIZER, '--threads', '1', '-n', '4'];
    const wrong = await airllm([...base, '--workers', addrs, '--worker-token', 'nope']);
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(new RegExp(`^airllm: worker ${workers[0]!.address}: cannot open a session: UNAUTHENTICATED: missing or wrong token\\n$`));
    const split = await airllm([...base, '--workers', addrs, '--worker-token', TOKEN, '--split', '1-2,4-4']);
    expect(split.stderr).toMatch(/^airllm: --split "1-2,4-4": ranges must be contiguous \(layer 3 is followed by 4\)\n$/);
    const addr = await airllm([...base, '--workers', 'localhost', '--worker-token', TOKEN]);
    expect(addr.stderr).toMatch(/^airllm: worker address "localhost": expected host:port/);
  });
});
