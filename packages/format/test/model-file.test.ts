import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BadMagicError, FileAccessError, FileSizeMismatchError, FormatError, LayerOffsetCalculator, readModelFile, TruncatedError } from '../src/index.js';
import { concatBytes } from '../src/testing/index.js';
import { expectFormatError, Q40_FIXTURE, readBytes, tempDir, TOKENIZER_FIXTURE } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

describe('readModelFile', () => {
  const q40 = readBytes(Q40_FIXTURE);
  const write = (name: string, bytes: Uint8Array) => {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    return p;
  };

  it('a file shorter than its layout: typed error with path, field, offset; still readable for inspection', () => {
    const p = write('short.m', q40.subarray(0, 200000));
    const e = expectFormatError(() => readModelFile(p), FileSizeMismatchError);
    expect([e.path, e.field, e.offset, e.expected, e.actual]).toEqual([p, 'file size', 200000, 290656, 200000]);
    expect(e.message).toContain('90656 bytes shorter');
    const info = readModelFile(p, { allowSizeMismatch: true });
    expect([info.actualSize, info.layout.fileSize]).toEqual([200000, 290656]);
    expectFormatError(() => new LayerOffsetCalculator(p).calculateOffsets(), FileSizeMismatchError);
  });

  it('a file longer than its layout', () => {
    const p = write('long.m', concatBytes(q40, new Uint8Array(5)));
    const e = expectFormatError(() => readModelFile(p), FileSizeMismatchError);
    expect([e.offset, e.expected, e.actual]).toEqual([290656, 290656, 290661]);
    expect(e.message).toContain('5 bytes after the last tensor');
  });

  it('a truncated header, a non-model, a missing path, a directory', () => {
    let e: FormatError = expectFormatError(() => readModelFile(write('h.m', q40.subarray(0, 50))), TruncatedError);
    expect([e.field, e.offset]).toEqual(['headerSize', 50]);
    e = expectFormatError(() => readModelFile(write('t.m', readBytes(TOKENIZER_FIXTURE))), BadMagicError);
    expect([e.field, e.offset, e.path]).toEqual(['magic', 0, join(dir, 't.m')]);
    expectFormatError(() => readModelFile(write('empty.m', new Uint8Array(0))), TruncatedError);
    e = expectFormatError(() => readModelFile(join(dir, 'nope.m')), FileAccessError);
    expect(e.message).toContain('no such file');
    mkdirSync(join(dir, 'd.m'));
    e = expectFormatError(() => readModelFile(join(dir, 'd.m')), FileAccessError);
    expect(e.message).toContain('directory');
  });
});
