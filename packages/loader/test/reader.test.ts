import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, constants, openSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { allocateReadBuffer, FileChangedError, READ_CHUNK, SegmentReader } from '@airllm/loader';
import { addon, MiB, tempDir } from './helpers.js';

const dir = tempDir('reader');
/** 3 read chunks and a ragged tail: pieces, aligned middles and unaligned edges all occur. */
const SIZE = 3 * READ_CHUNK + 12345;
const path = join(dir, 'data.bin');
const bytes = randomFillSync(Buffer.alloc(SIZE));
writeFileSync(path, bytes);

function directWorks(): boolean {
  if (constants.O_DIRECT === undefined) return false;
  try {
    closeSync(openSync(path, constants.O_RDONLY | constants.O_DIRECT));
    return true;
  } catch {
    return false;
  }
}

const saved = { direct: process.env.AIRLLM_READ_DIRECT, threads: process.env.AIRLLM_READ_THREADS };
afterEach(() => {
  for (const [k, v] of [['AIRLLM_READ_DIRECT', saved.direct], ['AIRLLM_READ_THREADS', saved.threads]] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

/** Ranges: whole file, unaligned start and length, one byte, a range inside one chunk, chunk-crossing. */
const RANGES: [number, number][] = [
  [0, SIZE],
  [4095, SIZE - 4095],
  [1, 2 * READ_CHUNK + 7],
  [SIZE - 1, 1],
  [8192, 4096],
  [READ_CHUNK - 100, 200],
  [0, 0],
];

describe('SegmentReader: explicit reads into SharedArrayBuffers', () => {
  for (const [direct, threads] of [['1', '4'], ['1', '1'], ['0', '2'], ['0', '1']] as const) {
    it(`bytes read equal the file's (O_DIRECT ${direct === '1' ? 'allowed' : 'off'}, ${threads} in flight)`, () => {
      addon();
      process.env.AIRLLM_READ_DIRECT = direct;
      process.env.AIRLLM_READ_THREADS = threads;
      const fd = openSync(path, 'r');
      const r = new SegmentReader(path, fd, SIZE);
      try {
        expect(r.info).toMatchObject({ native: true, threads: Number(threads) });
        // O_DIRECT is used exactly when allowed and the file system takes it.
        expect(r.info.direct).toBe(direct === '1' && directWorks());
        for (const [off, len] of RANGES) {
          // Destination congruent to the file offset modulo 4096 (how the residency packs
          // segments, so O_DIRECT applies), and at an odd place (it must not).
          for (const at of [off % 4096, 4096 + (off % 4096) + 3]) {
            const dst = allocateReadBuffer(at + len + 4096);
            const view = new Uint8Array(dst);
            view.fill(0xa5);
            r.read(dst, at, off, len);
            expect(Buffer.from(view.subarray(at, at + len)).equals(bytes.subarray(off, off + len)), `range ${off}+${len} at ${at}`).toBe(true);
            // Nothing outside the range was written.
            expect(view.subarray(0, at).every((b) => b === 0xa5)).toBe(true);
            expect(view.subarray(at + len).every((b) => b === 0xa5)).toBe(true);
          }
        }
      } finally {
        r.close();
        closeSync(fd);
      }
    });
  }

  it('a range past the end, or a file truncated after open, is a FileChangedError naming the file', () => {
    const p = join(dir, 'short.bin');
    writeFileSync(p, bytes);
    const fd = openSync(p, 'r');
    const r = new SegmentReader(p, fd, SIZE);
    try {
      const dst = allocateReadBuffer(SIZE + MiB);
      expect(() => r.read(dst, 0, SIZE - 10, 20)).toThrow(FileChangedError);
      truncateSync(p, 2 * MiB + 5);
      let err: unknown;
      try {
        r.read(dst, 0, 0, SIZE);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FileChangedError);
      expect((err as FileChangedError).code).toBe('AIRLLM_FILE_CHANGED');
      expect((err as FileChangedError).message).toContain(p);
      expect((err as FileChangedError).details).toMatchObject({ path: p, expected: SIZE, actual: 2 * MiB + 5 });
    } finally {
      r.close();
      closeSync(fd);
    }
  });

  it('the native call checks its arguments (a typed error, not a crash)', () => {
    const a = addon();
    const fd = openSync(path, 'r');
    try {
      const small = new SharedArrayBuffer(16);
      expect(() => a.readInto(fd, small, 8, 0, 16, 1, READ_CHUNK, -1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      expect(() => a.readInto(fd, small, 0, 0, 16, 0, READ_CHUNK, -1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
      expect(() => a.readInto(fd, small, 0, 0, 16, 1, 1000, -1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
      expect(() => a.readInto(-5 as number, small, 0, 0, 16, 1, READ_CHUNK, -1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
      expect(() => a.readInto(9999, small, 0, 0, 16, 1, READ_CHUNK, -1)).toThrow(expect.objectContaining({ code: 'EBADF' }));
    } finally {
      closeSync(fd);
    }
  });

  it('without the addon, the JavaScript fallback reads the same bytes', () => {
    const script = `
      import { openSync, readFileSync } from 'node:fs';
      import { SegmentReader, allocateReadBuffer } from '@airllm/loader';
      const r = new SegmentReader(${JSON.stringify(path)}, openSync(${JSON.stringify(path)}, 'r'), ${SIZE});
      const dst = allocateReadBuffer(${SIZE});
      r.read(dst, 0, 0, ${SIZE});
      const same = Buffer.from(new Uint8Array(dst)).equals(readFileSync(${JSON.stringify(path)}));
      console.log(JSON.stringify({ info: r.info, same }));`;
    const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: join(__dirname, '..'),
      env: { ...process.env, AIRLLM_LOADER_NATIVE_PATH: '' },
      encoding: 'utf8',
    });
    expect(res.status, res.stderr).toBe(0);
    expect(JSON.parse(res.stdout)).toEqual({ info: { native: false, direct: false, threads: 1 }, same: true });
  });
});
