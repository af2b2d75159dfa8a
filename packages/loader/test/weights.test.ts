import { closeSync, mkdirSync, openSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BadMagicError, FileSizeMismatchError, FloatType, layerTensor, type ModelLayout } from '@airllm/format';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ClosedError,
  EmptyFileError,
  FileAccessError,
  FileChangedError,
  fileError,
  MissingFileError,
  NotRegularFileError,
  OutOfRangeError,
  PermissionError,
} from '../src/errors.js';
import { MemoryMappedWeights } from '../src/weights.js';
import { patternByte, writeAt, writeSyntheticModel } from '../src/testing/model-file.js';
import { BACKENDS, GiB, tempDir } from './helpers.js';

const dir = tempDir('weights');

/**
 * A sparse F32 model of 6.24 GiB (7 layers of 809 MB): only the header and a few marked spots
 * are written; everything else is a hole that reads as zeros.
 */
describe('a sparse 6 GiB model: offsets above 4 GiB', () => {
  const path = join(dir, 'big.m');
  let layout: ModelLayout;
  const marks: { offset: number; bytes: Uint8Array }[] = [];

  beforeAll(() => {
    layout = writeSyntheticModel(path, { dim: 4096, hiddenDim: 11008, nLayers: 7, nHeads: 32, nKvHeads: 32, vocabSize: 32000 }, 'sparse');
    expect(layout.fileSize).toBeGreaterThan(6 * GiB);
    const mark = (offset: number, length: number): void => {
      const bytes = new Uint8Array(length);
      for (let i = 0; i < length; i++) bytes[i] = patternByte(offset + i) | 1; // never 0: distinct from a hole
      writeAt(path, offset, bytes);
      marks.push({ offset, bytes });
    };
    mark(4 * GiB, 64); // exactly 4 GiB: a 32-bit offset would wrap to 0
    mark(4 * GiB + 12_345, 5000); // unaligned, crosses a page boundary
    mark(layout.layers[6]!.extents[0]!.offset, 4096 + 3); // a layer start above 4 GiB
    mark(layerTensor(layout, 6, 'w2').offset, 16); // a tensor above 4 GiB
    mark(layout.fileSize - 777, 777); // the file's last bytes (end of wcls)
  });

  for (const backend of BACKENDS) {
    it(`loadLayerWeights returns the right bytes at and above 4 GiB (${backend})`, async () => {
      const w = await new MemoryMappedWeights(path, { backend }).open();
      try {
        expect(w.backend).toBe(backend);
        for (const m of marks) {
          // Exact range, and a range with 3 bytes of hole on each side.
          expect(w.loadLayerWeights(m.offset, m.bytes.length)).toEqual(m.bytes);
          const wider = w.loadLayerWeights(m.offset - 3, m.bytes.length + (m.offset + m.bytes.length + 3 <= layout.fileSize ? 6 : 3));
          expect(Array.from(wider.subarray(0, 3))).toEqual([0, 0, 0]);
          expect(wider.subarray(3, 3 + m.bytes.length)).toEqual(m.bytes);
        }
        // Unaligned sub-ranges of a mark, at every offset of a 13-byte window.
        const m = marks[1]!;
        for (let d = 0; d < 13; d++) expect(w.loadLayerWeights(m.offset + 4090 + d, 11)).toEqual(m.bytes.subarray(4090 + d, 4101 + d));
        // The tensor view above 4 GiB decodes the marked F32 values.
        const w2 = layerTensor(layout, 6, 'w2');
        const f = w.tensorView(w2) as Float32Array;
        expect(f).toBeInstanceOf(Float32Array);
        expect(f.length).toBe(4096 * 11008);
        const expected = new Float32Array(marks[3]!.bytes.slice().buffer);
        expect(Array.from(f.subarray(0, 4))).toEqual(Array.from(expected));
        // readRows of the last wcls row ends at the file's last byte.
        const row = new Float32Array(4096);
        w.readRows(layout.wcls, 31999, 1, row);
        expect(new Uint8Array(row.buffer).subarray(16384 - 777)).toEqual(marks[4]!.bytes);
      } finally {
        w.close();
      }
    });
  }

  it('mmap: a whole 809 MB layer above 4 GiB is one zero-copy view of the single mapping', async () => {
    const w = await new MemoryMappedWeights(path, { backend: 'mmap' }).open();
    try {
      expect(w.mapping!.byteLength).toBe(layout.fileSize);
      const l6 = layout.layers[6]!;
      const views = w.layerWeights(6);
      expect(views.length).toBe(1);
      const v = views[0]!;
      expect(v.buffer).toBe(w.mapping);
      expect(v.byteOffset).toBe(l6.extents[0]!.offset);
      expect(v.length).toBe(l6.size);
      expect(v.subarray(0, 4099)).toEqual(marks[2]!.bytes);
    } finally {
      w.close();
    }
  });
});

describe('tensor views follow the layout table', () => {
  const q40 = join(dir, 'q40.m');
  const q40Layout = writeSyntheticModel(q40, { dim: 96, hiddenDim: 160, nLayers: 2, nHeads: 3, nKvHeads: 1, vocabSize: 37, weightType: FloatType.Q40 }, 'pattern');
  // F16 with odd dim and hidden_dim: w1/w2/w3 have an odd element count (2 mod 4 bytes), so the
  // F32 norms after them are not 4-byte aligned.
  const f16 = join(dir, 'f16.m');
  const f16Layout = writeSyntheticModel(f16, { dim: 5, hiddenDim: 7, headDim: 2, nLayers: 2, nHeads: 1, nKvHeads: 1, vocabSize: 11, weightType: FloatType.F16 }, 'pattern');

  for (const backend of BACKENDS) for (const [path, layout] of [[q40, q40Layout], [f16, f16Layout]] as const) {
    it(`every tensor's view holds its bytes, typed by dtype (${backend}, ${path.endsWith('f16.m') ? 'F16' : 'Q40'})`, async () => {
      const w = await new MemoryMappedWeights(path, { backend }).open();
      try {
        let unaligned = 0;
        for (const t of layout.tensors) {
          const v = w.tensorView(t);
          const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
          expect(bytes.length).toBe(t.byteLength);
          for (const i of [0, 1, t.byteLength >> 1, t.byteLength - 1]) expect(bytes[i]).toBe(patternByte(t.offset + i));
          if (t.dtype === FloatType.F32) {
            expect(v).toBeInstanceOf(Float32Array);
            if (t.offset % 4 !== 0) unaligned++;
          } else if (t.dtype === FloatType.F16) expect(v).toBeInstanceOf(Uint16Array);
          else expect(v).toBeInstanceOf(Uint8Array);
        }
        // The F16 layout really has unaligned F32 tensors (copied), so that path ran.
        if (layout === f16Layout) expect(unaligned).toBeGreaterThan(0);
        const D = layout.header.dim;
        const rows = new Float32Array(2 * D);
        w.readRows(layout.embedding, 5, 2, rows);
        const rb = new Uint8Array(rows.buffer);
        for (let i = 0; i < rb.length; i++) expect(rb[i]).toBe(patternByte(layout.embedding.offset + 5 * D * 4 + i));
      } finally {
        w.close();
      }
    });
  }
});

describe('bad input gets typed errors', () => {
  const good = join(dir, 'small.m');
  const layout = writeSyntheticModel(good, { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 2, nKvHeads: 2, vocabSize: 16 }, 'pattern');

  it('missing file, directory, device, empty file, not a model, truncated before open', async () => {
    await expect(new MemoryMappedWeights(join(dir, 'nope.m')).open()).rejects.toBeInstanceOf(MissingFileError);
    const sub = join(dir, 'adir');
    mkdirSync(sub);
    await expect(new MemoryMappedWeights(sub).open()).rejects.toBeInstanceOf(NotRegularFileError);
    await expect(new MemoryMappedWeights('/dev/null').open()).rejects.toBeInstanceOf(NotRegularFileError);
    const empty = join(dir, 'empty.m');
    closeSync(openSync(empty, 'w'));
    const e = await new MemoryMappedWeights(empty).open().catch((x: unknown) => x);
    expect(e).toBeInstanceOf(EmptyFileError);
    expect(e).toBeInstanceOf(FileAccessError);
    expect((e as EmptyFileError).path).toBe(empty);
    const junk = join(dir, 'junk.m');
    writeFileSync(junk, new Uint8Array(4096).fill(0x41));
    await expect(new MemoryMappedWeights(junk).open()).rejects.toBeInstanceOf(BadMagicError);
    const short = join(dir, 'short.m');
    writeSyntheticModel(short, { dim: 64, hiddenDim: 128, nLayers: 2, nHeads: 2, nKvHeads: 2, vocabSize: 16 }, 'sparse');
    truncateSync(short, layout.fileSize - 100);
    await expect(new MemoryMappedWeights(short).open()).rejects.toBeInstanceOf(FileSizeMismatchError);
  });

  it('errno codes map to typed errors (permission cannot be provoked as root)', () => {
    const err = (code: string): unknown => fileError(Object.assign(new Error(code), { code }), '/x');
    expect(err('EACCES')).toBeInstanceOf(PermissionError);
    expect(err('EPERM')).toBeInstanceOf(PermissionError);
    expect(err('ENOENT')).toBeInstanceOf(MissingFileError);
    expect(err('EEMPTY')).toBeInstanceOf(EmptyFileError);
    expect(err('ENOTREG')).toBeInstanceOf(NotRegularFileError);
  });

  for (const backend of BACKENDS) {
    it(`out-of-range requests and use after close (${backend})`, async () => {
      const w = await new MemoryMappedWeights(good, { backend }).open();
      const size = layout.fileSize;
      for (const [o, n] of [
        [size, 1],
        [size - 1, 2],
        [-1, 1],
        [0, -1],
        [0.5, 1],
        [2 ** 53, 1],
        [Number.NaN, 1],
      ] as const) {
        expect(() => w.loadLayerWeights(o, n)).toThrow(OutOfRangeError);
      }
      expect(w.loadLayerWeights(size - 1, 1).length).toBe(1);
      expect(w.loadLayerWeights(size, 0).length).toBe(0);
      expect(() => w.layerWeights(2)).toThrow(OutOfRangeError);
      expect(() => w.readRows(layout.embedding, 15, 2, new Float32Array(128))).toThrow(OutOfRangeError);
      expect(() => w.readRows(layout.embedding, 0, 2, new Float32Array(127))).toThrow(OutOfRangeError);
      w.close();
      w.close();
      expect(() => w.loadLayerWeights(0, 1)).toThrow(ClosedError);
      await expect(w.open()).rejects.toBeInstanceOf(ClosedError);
    });

    it(`a file truncated after open is a FileChangedError (${backend})`, async () => {
      const path = join(dir, `trunc-${backend}.m`);
      const l = writeSyntheticModel(path, { dim: 64, hiddenDim: 128, nLayers: 4, nHeads: 2, nKvHeads: 2, vocabSize: 16 }, 'pattern');
      const w = await new MemoryMappedWeights(path, { backend }).open();
      try {
        const last = l.layers[3]!.extents[0]!;
        const before = w.loadLayerWeights(last.offset, last.size);
        truncateSync(path, l.layers[2]!.extents[0]!.offset);
        const err = (() => {
          try {
            w.loadLayerWeights(last.offset, last.size);
          } catch (e) {
            return e;
          }
          return undefined;
        })();
        expect(err).toBeInstanceOf(FileChangedError);
        expect((err as FileChangedError).expected).toBe(l.fileSize);
        expect((err as FileChangedError).actual).toBe(l.layers[2]!.extents[0]!.offset);
        expect(() => w.checkFile()).toThrow(FileChangedError);
        if (backend === 'mmap') {
          // A view taken before the truncation now points past the end of the file. Reading it
          // would be SIGBUS; the addon turns the fault into zero pages and counts it.
          let sum = 0;
          for (let i = 0; i < before.length; i += 512) sum += before[i]!;
          expect(sum).toBe(0);
        }
      } finally {
        w.close();
      }
    });
  }
});

afterAll(() => undefined);
