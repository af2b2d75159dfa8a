import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CONVERT_LLAMA_KEY_ORDER, headerValues } from '../src/header.js';
import {
  DTYPES,
  FileAccessError,
  FloatType,
  FormatError,
  InvalidValueError,
  readModelFile,
  TensorMismatchError,
  type ModelLayout,
} from '../src/index.js';
import { ModelFileWriter, removePartialFilesSync } from '../src/convert.js';
import { TINY_QWEN3_MOE, withDtype } from '../src/testing/index.js';
import { expectFormatRejection, F32_FIXTURE, Q40_FIXTURE, readBytes, tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

const f32 = readModelFile(F32_FIXTURE);
const f32Bytes = readBytes(F32_FIXTURE);
/** The F32 fixture's tensor as floats. */
function floatsOf(layout: ModelLayout, name: string): Float32Array {
  const t = layout.tensor(name);
  const out = new Float32Array(t.byteLength / 4);
  DTYPES[FloatType.F32].dequantize(f32Bytes.subarray(t.offset, t.offset + t.byteLength), out);
  return out;
}

describe('ModelFileWriter', () => {
  it('writes the official fixtures byte for byte from the F32 weights (floats encoded through the dtype table)', async () => {
    for (const [dtype, fixture] of [
      [FloatType.F32, F32_FIXTURE],
      [FloatType.Q40, Q40_FIXTURE],
    ] as const) {
      const path = join(dir, `out-${dtype}.m`);
      const values = { ...headerValues(f32.header), 13: dtype };
      const progress: [number, number][] = [];
      const w = await ModelFileWriter.open(path, values, { keyOrder: CONVERT_LLAMA_KEY_ORDER, onProgress: (a, b) => progress.push([a, b]), bufferBytes: 4096 });
      for (const t of f32.layout.tensors) await w.writeTensor(floatsOf(f32.layout, t.name), t.name);
      const layout = await w.close();
      expect(Buffer.from(readBytes(path)).equals(Buffer.from(readBytes(fixture)))).toBe(true);
      expect(layout.fileSize).toBe(readBytes(fixture).length);
      // Progress is monotonic and ends at the total.
      expect(progress.length).toBeGreaterThan(10);
      progress.forEach(([a, b], i) => {
        expect(b).toBe(layout.fileSize);
        if (i > 0) expect(a).toBeGreaterThan(progress[i - 1]![0]);
      });
      expect(progress.at(-1)).toEqual([layout.fileSize, layout.fileSize]);
      expect(existsSync(path + '.partial')).toBe(false);
    }
  });

  it('chunked writes, encoded bytes and tiny buffers give the same file', async () => {
    const q40 = readModelFile(Q40_FIXTURE);
    const q40Bytes = readBytes(Q40_FIXTURE);
    for (const bufferBytes of [68, 100, 1000, 65536]) {
      const path = join(dir, `chunk-${bufferBytes}.m`);
      const w = await ModelFileWriter.open(path, headerValues(q40.header), { keyOrder: CONVERT_LLAMA_KEY_ORDER, bufferBytes });
      for (const t of q40.layout.tensors) {
        if (t.layer % 2 === 0) {
          // Encoded bytes in uneven pieces of whole blocks.
          const bpb = DTYPES[t.dtype].bytesPerBlock;
          const raw = q40Bytes.subarray(t.offset, t.offset + t.byteLength);
          for (let o = 0, k = 1; o < raw.length; k++) {
            const n = Math.min(raw.length - o, bpb * k * 3);
            await w.writeTensorChunk(raw.subarray(o, o + n));
            o += n;
          }
        } else {
          // Floats in pieces of whole blocks.
          const x = floatsOf(f32.layout, t.name);
          const step = DTYPES[t.dtype].blockSize * 5;
          for (let o = 0; o < x.length; o += step) await w.writeTensorChunk(x.subarray(o, Math.min(x.length, o + step)), t.name);
        }
      }
      await w.close();
      expect(Buffer.from(readBytes(path)).equals(Buffer.from(q40Bytes)), `buffer ${bufferBytes}`).toBe(true);
    }
  });

  async function openTiny(name = 'tiny.m') {
    const path = join(dir, name);
    const w = await ModelFileWriter.open(path, withDtype(TINY_QWEN3_MOE, FloatType.Q40), { bufferBytes: 256 });
    return { path, w };
  }
  /** After a failure: no file under the real name, no partial file, and the writer refuses more. */
  async function expectNothingLeft(path: string, w: ModelFileWriter) {
    expect(existsSync(path)).toBe(false);
    expect(existsSync(path + '.partial')).toBe(false);
    await expect(w.writeTensor(new Uint8Array(0))).rejects.toBeInstanceOf(FormatError);
    await expect(w.close()).rejects.toBeInstanceOf(FormatError);
  }

  it('refuses a tensor out of layout order, of the wrong size or type, or past the end, and removes the partial file', async () => {
    const cases: [string, (w: ModelFileWriter) => Promise<unknown>, string, number | undefined][] = [
      ['wrong name', (w) => w.writeTensor(new Float32Array(128 * 64), 'layers.0.q'), 'layers.0.q', 8 + 8 * 17],
      ['wrong float count', (w) => w.writeTensor(new Float32Array(100), 'embedding'), 'embedding', 8 + 8 * 17],
      ['wrong byte length', (w) => w.writeTensor(new Uint8Array(100)), 'embedding', 8 + 8 * 17],
      ['wrong type', (w) => w.writeTensor(new Float64Array(128 * 64) as unknown as Float32Array), 'embedding', 8 + 8 * 17],
      ['chunk past the end', (w) => w.writeTensorChunk(new Float32Array(128 * 64 + 1)), 'embedding', 8 + 8 * 17],
    ];
    for (const [what, act, field, offset] of cases) {
      const { path, w } = await openTiny();
      const e = await expectFormatRejection(act(w), TensorMismatchError);
      expect([e.field, e.offset], what).toEqual([field, offset]);
      await expectNothingLeft(path, w);
    }
    // A quantized chunk that is not whole blocks.
    const { path, w } = await openTiny();
    await w.writeTensor(new Float32Array(128 * 64));
    const e = await expectFormatRejection(w.writeTensorChunk(new Float32Array(33)), TensorMismatchError);
    expect(e.field).toBe('layers.0.q');
    await expectNothingLeft(path, w);
  });

  it('close() on an incomplete model fails and leaves nothing; writes after the last tensor fail', async () => {
    const { path, w } = await openTiny();
    await w.writeTensor(new Float32Array(128 * 64));
    await w.writeTensorChunk(new Float32Array(64));
    const e = await expectFormatRejection(w.close(), TensorMismatchError);
    expect(e.field).toBe('layers.0.q');
    expect(e.offset).toBe(w.layout.tensor('layers.0.q').offset + 36);
    await expectNothingLeft(path, w);

    const { path: p2, w: w2 } = await openTiny('full.m');
    for (const t of w2.layout.tensors) await w2.writeTensor(new Uint8Array(t.byteLength));
    await expectFormatRejection(w2.writeTensor(new Uint8Array(4)), TensorMismatchError);
    await expectNothingLeft(p2, w2);
  });

  it('abort() removes the partial file; overlapping calls are refused', async () => {
    const { path, w } = await openTiny();
    expect(existsSync(path + '.partial')).toBe(true);
    const first = w.writeTensor(new Float32Array(128 * 64));
    await expect(w.writeTensor(new Float32Array(128 * 64))).rejects.toThrow(/previous write/);
    await first;
    await w.abort();
    await expectNothingLeft(path, w);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('never overwrites an existing file unless asked', async () => {
    const path = join(dir, 'precious.m');
    writeFileSync(path, 'keep me');
    const e = await expectFormatRejection(ModelFileWriter.open(path, TINY_QWEN3_MOE), FileAccessError);
    expect(e.path).toBe(path);
    expect(readFileSync(path, 'utf8')).toBe('keep me');

    // A file that appears at the destination during the write is not replaced either.
    const p2 = join(dir, 'race.m');
    const w = await ModelFileWriter.open(p2, TINY_QWEN3_MOE);
    for (const t of w.layout.tensors) await w.writeTensor(new Uint8Array(t.byteLength));
    writeFileSync(p2, 'appeared');
    await expectFormatRejection(w.close(), FileAccessError);
    expect(readFileSync(p2, 'utf8')).toBe('appeared');
    expect(existsSync(p2 + '.partial')).toBe(false);

    // With overwrite the file is replaced.
    const w3 = await ModelFileWriter.open(path, TINY_QWEN3_MOE, { overwrite: true });
    for (const t of w3.layout.tensors) await w3.writeTensor(new Uint8Array(t.byteLength));
    await w3.close();
    expect(readModelFile(path).layout.fileSize).toBe(w3.layout.fileSize);

  });

  it('a partial file whose writer is gone (killed) is replaced; one whose writer runs is refused, naming it', async () => {
    const model = async (path: string): Promise<void> => {
      const w = await ModelFileWriter.open(path, TINY_QWEN3_MOE);
      for (const t of w.layout.tensors) await w.writeTensor(new Uint8Array(t.byteLength));
      await w.close();
    };
    // Left by a crash before the lock existed, or with its lock removed: nobody owns it.
    const p1 = join(dir, 'orphan.m');
    writeFileSync(p1 + '.partial', 'half');
    await model(p1);
    expect(readModelFile(p1).layout.fileSize).toBeGreaterThan(4);
    expect(readdirSync(dir).filter((f) => f.startsWith('orphan'))).toEqual(['orphan.m']);

    // Left by a process that was killed: its lock names a pid that no longer runs.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const p2 = join(dir, 'killed.m');
    writeFileSync(p2 + '.partial', 'half');
    writeFileSync(p2 + '.partial.lock', JSON.stringify({ pid: Number(dead.stdout), host: hostname(), id: 'x' }));
    await model(p2);
    expect(readdirSync(dir).filter((f) => f.startsWith('killed'))).toEqual(['killed.m']);

    // A running writer (another process here) keeps its partial file, with or without overwrite.
    const live = spawn('sleep', ['30']);
    try {
      const p3 = join(dir, 'busy.m');
      writeFileSync(p3 + '.partial', 'half');
      writeFileSync(p3 + '.partial.lock', JSON.stringify({ pid: live.pid, host: hostname(), id: 'y' }));
      for (const overwrite of [false, true]) {
        const e = await expectFormatRejection(ModelFileWriter.open(p3, TINY_QWEN3_MOE, { overwrite }), FileAccessError);
        expect(e.message).toBe(`${p3}.partial: process ${live.pid} is writing this file (remove ${p3}.partial.lock if it is not running)`);
      }
      expect(readFileSync(p3 + '.partial', 'utf8')).toBe('half');
    } finally {
      live.kill('SIGKILL');
    }

    // Two writers of one file in this process: the second is refused while the first writes.
    const p4 = join(dir, 'twice.m');
    const first = await ModelFileWriter.open(p4, TINY_QWEN3_MOE);
    await expectFormatRejection(ModelFileWriter.open(p4, TINY_QWEN3_MOE), FileAccessError);
    await first.abort();
    expect(readdirSync(dir).filter((f) => f.startsWith('twice'))).toEqual([]);
    await model(p4);
  });

  it('removePartialFilesSync removes the partial files and locks of the writers still open (for a signal handler)', async () => {
    const a = await ModelFileWriter.open(join(dir, 'a.m'), TINY_QWEN3_MOE);
    const b = await ModelFileWriter.open(join(dir, 'b.m'), TINY_QWEN3_MOE);
    await b.abort();
    expect(readdirSync(dir).sort()).toEqual(['a.m.partial', 'a.m.partial.lock']);
    expect(removePartialFilesSync()).toEqual([join(dir, 'a.m.partial')]);
    expect(readdirSync(dir)).toEqual([]);
    await a.abort();
  });

  it('rejects invalid headers before creating any file, and missing directories as FileAccessError', async () => {
    const path = join(dir, 'bad.m');
    const e = await expectFormatRejection(ModelFileWriter.open(path, { ...TINY_QWEN3_MOE, 6: 3 }), InvalidValueError);
    expect(e.path).toBe(path);
    await expectFormatRejection(ModelFileWriter.open(path, TINY_QWEN3_MOE, { bufferBytes: 10 }), InvalidValueError);
    expect(readdirSync(dir)).toEqual([]);
    await expectFormatRejection(ModelFileWriter.open(join(dir, 'no', 'such', 'dir.m'), TINY_QWEN3_MOE), FileAccessError);
  });
});
