import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ArchType, DTYPES, f16ToF32, FloatType, HeaderKey, readModelFile, type HeaderValues, type TensorInfo } from '../src/index.js';
import { generateSyntheticModel } from '../src/convert.js';
import { TINY_LLAMA31, TINY_QWEN3, TINY_QWEN3_MOE, withDtype, writeTinyModel } from '../src/testing/index.js';
import { tempDir } from './helpers.js';

let dir: string;
let cleanup: () => void;
beforeEach(() => ({ dir, cleanup } = tempDir()));
afterEach(() => cleanup());

const K = HeaderKey;
const DTS = [FloatType.F32, FloatType.F16, FloatType.Q40, FloatType.Q80];

function decode(bytes: Uint8Array, t: TensorInfo): Float32Array {
  const out = new Float32Array(t.shape.length === 1 ? t.shape[0]! : t.shape[0]! * t.shape[1]!);
  DTYPES[t.dtype].dequantize(bytes.subarray(t.offset, t.offset + t.byteLength), out);
  return out;
}

describe('generateSyntheticModel', () => {
  it('writes a valid file for every architecture and weight type', async () => {
    for (const base of [TINY_LLAMA31, TINY_QWEN3, TINY_QWEN3_MOE]) {
      for (const dt of DTS) {
        const path = join(dir, `m-${base[K.ArchType]}-${dt}.m`);
        let last = 0;
        const layout = await generateSyntheticModel(path, withDtype(base, dt), { seed: 7, onProgress: (a) => (last = a) });
        const info = readModelFile(path);
        expect(info.actualSize).toBe(layout.fileSize);
        expect(last).toBe(layout.fileSize);
        const bytes = new Uint8Array(readFileSync(path));
        for (const t of layout.tensors) {
          const x = decode(bytes, t);
          expect(x.every(Number.isFinite), t.name).toBe(true);
          if (t.kind.endsWith('norm')) expect(x.every((v) => v >= 0.9 && v <= 1.1)).toBe(true);
        }
      }
    }
  });

  it('is deterministic in the seed, and the seed matters', async () => {
    const v = withDtype(TINY_QWEN3, FloatType.Q40);
    await generateSyntheticModel(join(dir, 'a.m'), v, { seed: 1 });
    await generateSyntheticModel(join(dir, 'b.m'), v, { seed: 1 });
    await generateSyntheticModel(join(dir, 'c.m'), v, { seed: 2 });
    const [a, b, c] = ['a', 'b', 'c'].map((n) => readFileSync(join(dir, `${n}.m`)));
    expect(a!.equals(b!)).toBe(true);
    expect(a!.equals(c!)).toBe(false);
  });

  it('Q40 scales have both signs and varied magnitude; Q80 scales are positive and no value is −128', async () => {
    const shape: HeaderValues = { [K.ArchType]: ArchType.LLAMA, [K.Dim]: 256, [K.HiddenDim]: 512, [K.NLayers]: 1, [K.NHeads]: 4, [K.NKvHeads]: 4, [K.VocabSize]: 256, [K.MaxSeqLen]: 64 };
    for (const dt of [FloatType.Q40, FloatType.Q80]) {
      const path = join(dir, `q${dt}.m`);
      const layout = await generateSyntheticModel(path, { ...shape, [K.WeightsFloatType]: dt });
      const bytes = new Uint8Array(readFileSync(path));
      const t = layout.tensor('layers.0.w1');
      const bpb = DTYPES[dt].bytesPerBlock;
      const scales: number[] = [];
      let minus128 = 0;
      for (let o = t.offset; o < t.offset + t.byteLength; o += bpb) {
        scales.push(f16ToF32(bytes[o]! | (bytes[o + 1]! << 8)));
        if (dt === FloatType.Q80) for (let k = 2; k < bpb; k++) minus128 += bytes[o + k] === 0x80 ? 1 : 0;
      }
      expect(minus128).toBe(0);
      const mags = scales.map(Math.abs).sort((a, b) => a - b);
      // Four octaves around the base: the spread between the 5th and 95th percentiles is large.
      expect(mags[Math.floor(mags.length * 0.95)]! / mags[Math.floor(mags.length * 0.05)]!).toBeGreaterThan(8);
      const neg = scales.filter((s) => s < 0).length / scales.length;
      if (dt === FloatType.Q40) expect(neg).toBeGreaterThan(0.4);
      else expect(neg).toBe(0);
      expect(neg).toBeLessThan(0.6);
      // Decoded rows have a standard deviation near 1/√in (activations stay O(1)).
      const x = decode(bytes, t);
      const std = Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
      expect(std * Math.sqrt(256)).toBeGreaterThan(0.5);
      expect(std * Math.sqrt(256)).toBeLessThan(3);
    }
  });

  it('writeTinyModel returns the values the file decodes to', async () => {
    for (const dt of DTS) {
      const path = join(dir, `tiny-${dt}.m`);
      const { layout, weights } = await writeTinyModel(path, withDtype(TINY_QWEN3_MOE, dt), { seed: 3 });
      const bytes = new Uint8Array(readFileSync(path));
      expect(weights.size).toBe(layout.tensors.length);
      for (const t of layout.tensors) expect(Buffer.from(decode(bytes, t).buffer).equals(Buffer.from(weights.get(t.name)!.buffer)), t.name).toBe(true);
      const w1 = weights.get('layers.0.experts.1.w1')!;
      const std = Math.sqrt(w1.reduce((s, v) => s + v * v, 0) / w1.length);
      expect(std).toBeGreaterThan(0.08);
      expect(std).toBeLessThan(0.2);
    }
  });
});
