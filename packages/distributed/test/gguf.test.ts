/** A GGUF run in place by a root and two worker processes: each node maps the same GGUF. */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportGguf } from '@airllm/format/convert';
import { CLI, FIXTURES, startWorker, STORIES, STORIES_TOKENIZER, tempDir, type WorkerProcess } from './helpers.js';

const run = promisify(execFile);
const EXPECTED = (JSON.parse(readFileSync(join(FIXTURES, 'reference_llama2c_stories260k.json'), 'utf8')) as { bos_only: { generated_tokens: number[] } }).bos_only.generated_tokens;
const TOKEN = 'gguf-secret';

const tmp = tempDir('airllm-distributed-gguf-');
const gguf = join(tmp.dir, 'stories260K.gguf');
const workers: WorkerProcess[] = [];
beforeAll(async () => {
  await exportGguf(STORIES, gguf, { tokenizerPath: STORIES_TOKENIZER });
  workers.push(await startWorker(gguf, ['--token', TOKEN]), await startWorker(gguf, ['--token', TOKEN]));
}, 60_000);
afterAll(async () => {
  await Promise.all(workers.splice(0).map((w) => w.stop()));
  tmp.cleanup();
});

describe('airllm generate -m model.gguf --workers', () => {
  it('gives llama2.c’s greedy tokens through two workers holding the same GGUF (tokenizer from its metadata)', async () => {
    const r = await run(process.execPath, [CLI, 'generate', '-m', gguf, '--threads', '1', '--workers', workers.map((w) => w.address).join(','), '--split', '1-2,3-4', '-n', '64', '--json'], {
      env: { ...process.env, AIRLLM_TOKEN: TOKEN },
      timeout: 60_000,
    });
    expect((JSON.parse(r.stdout) as { tokens: number[] }).tokens).toEqual(EXPECTED.slice(0, 64));
    expect(workers[0]!.stderr()).toContain('assigned layers 1-2');
    expect(workers[1]!.stderr()).toContain('assigned layers 3-4');
  }, 60_000);
});
