import { spawnSync } from 'node:child_process';
import { closeSync, openSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dropFileCache, pageCacheBytes } from '../src/cache.js';
import { memoryStatus } from '../src/proc.js';
import { writeSyntheticModel } from '../src/testing/model-file.js';
import { addon, BACKENDS, MiB, tempDir } from './helpers.js';

const dir = tempDir('native');
/** The addon's own tests need it; only a run that forces the pread fallback goes without. */
const NO_MMAP = !BACKENDS.includes('mmap');
if (NO_MMAP) console.warn('native addon tests skipped: AIRLLM_LOADER_BACKEND=read forces the pread fallback');

describe('native addon', () => {
  it('is built (the suite fails rather than silently testing only the fallback)', () => {
    if (BACKENDS.includes('mmap')) expect(addon().pageSize).toBeGreaterThan(0);
    else expect(process.env.AIRLLM_LOADER_BACKEND).toBe('read');
  });

  it.skipIf(NO_MMAP)('maps read-only, advises any byte range, and reports page-cache residency', () => {
    const a = addon();
    const path = join(dir, 'plain.bin');
    const bytes = new Uint8Array(8 * MiB + 123);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
    writeFileSync(path, bytes);
    dropFileCache(path);
    expect(pageCacheBytes(path)).toBe(0);
    const fd = openSync(path, 'r');
    try {
      const map = a.map(fd);
      expect(map).toBeInstanceOf(SharedArrayBuffer);
      expect(map.byteLength).toBe(bytes.length);
      expect(a.isMapping(map)).toBe(true);
      expect(a.isMapping(new SharedArrayBuffer(16))).toBe(false);
      expect(a.residentBytes(map, 0, map.byteLength)).toBe(0);
      // Unaligned WILLNEED + touch of 1 MiB at byte 4097: those bytes (at least) become resident.
      a.advise(map, 4097, MiB, 'willneed');
      a.touch(map, 4097, MiB);
      expect(a.residentBytes(map, 4097, MiB)).toBe(MiB);
      // Values read through the mapping are the file's bytes, at an unaligned offset too.
      const u8 = new Uint8Array(map);
      expect(u8[4097]).toBe((4097 * 7) & 0xff);
      expect(u8[bytes.length - 1]).toBe(((bytes.length - 1) * 7) & 0xff);
      for (const adv of ['sequential', 'random', 'normal', 'dontneed', 'willneed'] as const) a.advise(map, 1, 3 * 4096 + 5, adv);
      expect(() => a.advise(map, 0, 1, 'bogus' as 'normal')).toThrow(/unknown advice/);
      expect(() => a.advise(map, map.byteLength, 1, 'willneed')).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      // DONTNEED on ordinary memory would zero it: refused.
      expect(() => a.advise(new SharedArrayBuffer(8192), 0, 8192, 'dontneed')).toThrow(expect.objectContaining({ code: 'ERR_NOT_MAPPED' }));
      a.close(map);
      expect(() => a.touch(map, 0, 1)).toThrow(expect.objectContaining({ code: 'ERR_CLOSED' }));
      // Use after close re-reads the file rather than crashing (the range stays mapped until GC).
      expect(u8[4097]).toBe((4097 * 7) & 0xff);
    } finally {
      closeSync(fd);
    }
  });

  it.skipIf(NO_MMAP)('dontneed drops the pages from this process (RssFile falls), rounding inward', () => {
    const a = addon();
    const path = join(dir, 'rss.bin');
    writeFileSync(path, new Uint8Array(64 * MiB).fill(3));
    const fd = openSync(path, 'r');
    try {
      const map = a.map(fd);
      const before = memoryStatus()!.rssFile;
      a.touch(map, 0, map.byteLength);
      const touched = memoryStatus()!.rssFile;
      expect(touched - before).toBeGreaterThan(60 * MiB);
      // Unaligned range: the partial first and last pages stay mapped.
      a.advise(map, 100, map.byteLength - 200, 'dontneed');
      const dropped = memoryStatus()!.rssFile;
      expect(touched - dropped).toBeGreaterThan(60 * MiB);
      a.close(map);
    } finally {
      closeSync(fd);
    }
  });

  it.skipIf(NO_MMAP)('a read past a truncated end of file is absorbed (zeros, counted), not a fatal SIGBUS', () => {
    // In a child process, so that a regression kills the child, not the test runner.
    const script = `
      const { openSync, truncateSync, writeFileSync } = require('node:fs');
      const a = require(${JSON.stringify(resolve(import.meta.dirname, '../build/Release/airllm_loader.node'))});
      const p = ${JSON.stringify(join(dir, 'bus.bin'))};
      writeFileSync(p, Buffer.alloc(1 << 20, 9));
      const map = a.map(openSync(p, 'r'));
      const u8 = new Uint8Array(map);
      const early = u8[100];
      truncateSync(p, 8192);
      process.stdout.write(JSON.stringify({ early, kept: u8[8191], gone: u8[500000], last: u8[(1 << 20) - 1], faults: a.busFaults(map) }));
    `;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ early: 9, kept: 9, gone: 0, last: 0, faults: 1 });
  });
});

describe('backend selection', () => {
  const path = join(dir, 'sel.m');
  writeSyntheticModel(path, { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 2, nKvHeads: 2, vocabSize: 16 }, 'pattern');
  const entry = resolve(import.meta.dirname, '../dist/index.js');

  function run(code: string, env: Record<string, string>): { stdout: string; stderr: string; status: number | null } {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env: { ...process.env, ...env } });
    return { stdout: r.stdout, stderr: r.stderr, status: r.status };
  }

  it('without the addon, auto falls back to pread with exactly one stderr line', () => {
    const r = run(
      `import { MemoryMappedWeights } from ${JSON.stringify(entry)};
       const a = await new MemoryMappedWeights(${JSON.stringify(path)}).open();
       const b = await new MemoryMappedWeights(${JSON.stringify(path)}).open();
       console.log(a.backend, b.backend, a.loadLayerWeights(0, 4).join(','));
       a.close(); b.close();`,
      { AIRLLM_LOADER_NATIVE_PATH: '', AIRLLM_LOADER_BACKEND: '' },
    );
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('read read 205,171,0,10');
    const lines = r.stderr.split('\n').filter((l) => l.length > 0);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^@airllm\/loader: native mmap addon unavailable .*pread fallback/);
  });

  it('asking for mmap without the addon is a NativeAddonError; the env var picks the backend', () => {
    const r = run(
      `import { MemoryMappedWeights } from ${JSON.stringify(entry)};
       const e = await new MemoryMappedWeights(${JSON.stringify(path)}, { backend: 'mmap' }).open().catch((x) => x);
       console.log(e.name);`,
      { AIRLLM_LOADER_NATIVE_PATH: '' },
    );
    expect(r.stdout.trim()).toBe('NativeAddonError');
    const env = run(
      `import { MemoryMappedWeights } from ${JSON.stringify(entry)};
       const w = await new MemoryMappedWeights(${JSON.stringify(path)}).open();
       console.log(w.backend); w.close();`,
      { AIRLLM_LOADER_BACKEND: 'read' },
    );
    expect(env.stdout.trim()).toBe('read');
    expect(env.stderr).toBe('');
  });
});
