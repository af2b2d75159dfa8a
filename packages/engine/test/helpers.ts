import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root and its fixtures (fixtures/README.md says what each file is). */
export const REPO = resolve(here, '../../..');
export const FIXTURES = join(REPO, 'fixtures');
export const F32_MODEL = join(FIXTURES, 'dllama_model_stories260k_hidden192_f32.m');
export const Q40_MODEL = join(FIXTURES, 'dllama_model_stories260k_hidden192_q40.m');
export const FIXTURE_TOKENIZER = join(FIXTURES, 'dllama_tokenizer_stories260k.t');
export const LLAMA2C_MODEL = join(FIXTURES, 'stories260K.bin');
export const LLAMA2C_TOKENIZER = join(FIXTURES, 'tok512.bin');

/** A fresh temporary directory and its cleanup. */
export function tempDir(prefix = 'airllm-engine-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
