import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { AirllmError } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
/** ../shared next to the repository root (CI has it at the same place). */
export const SHARED = resolve(here, '../../..', '../shared');
export const FIXTURES = join(SHARED, 'fixtures');
export const F32_FIXTURE = join(FIXTURES, 'dllama_model_stories260k_hidden192_f32.m');
export const Q40_FIXTURE = join(FIXTURES, 'dllama_model_stories260k_hidden192_q40.m');
export const TOKENIZER_FIXTURE = join(FIXTURES, 'dllama_tokenizer_stories260k.t');
export const STORIES_BIN = join(SHARED, 'models', 'stories260K.bin');
export const TOK512_BIN = join(SHARED, 'models', 'tok512.bin');

export function readBytes(path: string): Uint8Array {
  const b = readFileSync(path);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** A fresh temp directory, removed by the returned cleanup. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'airllm-format-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Run fn, expect an AirllmError of the given class, and return it for field/offset checks. */
export function expectFormatError<T extends AirllmError>(fn: () => unknown, cls: new (...a: never[]) => T): T {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected an error').toBeInstanceOf(cls);
  return caught as T;
}

export async function expectFormatRejection<T extends AirllmError>(p: Promise<unknown>, cls: new (...a: never[]) => T): Promise<T> {
  let caught: unknown;
  try {
    await p;
  } catch (e) {
    caught = e;
  }
  expect(caught, 'expected a rejection').toBeInstanceOf(cls);
  return caught as T;
}
