import { describe, expect, it } from 'vitest';
import {
  ArchType,
  buildModelLayout,
  dequantizeQ40,
  DTYPES,
  f16ToF32,
  FloatType,
  InvalidValueError,
  LayerOffsetCalculator,
  layerTensor,
  parseModelHeader,
  quantizeQ40,
  readModelFile,
  RopeType,
} from '../src/index.js';
import { CONVERT_LLAMA_KEY_ORDER } from '../src/header.js';
import { F32_FIXTURE, Q40_FIXTURE, readBytes } from './helpers.js';

describe('official fixtures', () => {
  const f32 = readModelFile(F32_FIXTURE);
  const q40 = readModelFile(Q40_FIXTURE);

  it('parse, with the converter header (11 pairs, 96 bytes, convert-llama.py key order)', () => {
    for (const { header: h } of [f32, q40]) {
      expect(h.headerSize).toBe(96);
      expect(h.pairs.map(([k]) => k)).toEqual(CONVERT_LLAMA_KEY_ORDER);
      expect([h.dim, h.hiddenDim, h.nLayers, h.nHeads, h.nKvHeads, h.vocabSize, h.maxSeqLen]).toEqual([64, 192, 5, 8, 4, 512, 512]);
      expect(h.archType).toBe(ArchType.LLAMA);
      expect([h.headDim, h.qDim, h.kvDim, h.ffDim]).toEqual([8, 64, 32, 192]);
      expect([h.ropeTheta, h.ropeType, h.normEpsilon, h.nExperts]).toEqual([10000, RopeType.LLAMA, 1e-5, 0]);
    }
    expect(f32.header.weightType).toBe(FloatType.F32);
    expect(q40.header.weightType).toBe(FloatType.Q40);
  });

  it('computed file size equals the real size', () => {
    expect(f32.layout.fileSize).toBe(readBytes(F32_FIXTURE).length);
    expect(q40.layout.fileSize).toBe(readBytes(Q40_FIXTURE).length);
  });

  it("FORMAT.md §b.3's worked numbers hold", () => {
    const L = q40.layout;
    expect(L.embedding.byteLength).toBe(131072);
    const attn = ['q', 'k', 'v', 'wo'].map((k) => layerTensor(L, 0, k as 'q').byteLength);
    expect(attn).toEqual([2304, 1152, 1152, 2304]);
    expect(['w1', 'w2', 'w3'].map((k) => layerTensor(L, 0, k as 'w1').byteLength)).toEqual([6912, 6912, 6912]);
    expect(L.layerBytes).toBe(28160);
    expect(L.finalNorm.offset).toBe(271968);
    expect(L.wcls.offset).toBe(272224);
    expect(L.fileSize).toBe(290656);
    expect(f32.layout.layerBytes).toBe(197120);
    expect(f32.layout.fileSize).toBe(1248096);
    // Tensors are back to back: each starts where the previous ends.
    for (const { layout } of [f32, q40]) {
      layout.tensors.forEach((t, i) => {
        const prev = layout.tensors[i - 1];
        expect(t.offset).toBe(prev ? prev.offset + prev.byteLength : 96);
      });
    }
  });

  it('LayerOffsetCalculator (the seed API) answers per-layer ranges and checks explicit dims', () => {
    const calc = new LayerOffsetCalculator(Q40_FIXTURE);
    calc.calculateOffsets({ nLayers: 5, dim: 64, hiddenDim: 192 });
    expect(calc.getLayerOffset(0)).toEqual({ offset: 96 + 131072, size: 28160 });
    expect(calc.getLayerOffset(4)).toEqual({ offset: 96 + 131072 + 4 * 28160, size: 28160 });
    expect(() => calc.getLayerOffset(5)).toThrow(RangeError);
    const err = (() => {
      try {
        new LayerOffsetCalculator(Q40_FIXTURE).calculateOffsets({ nLayers: 32, dim: 4096, hiddenDim: 11008 });
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidValueError);
    expect((err as InvalidValueError).field).toBe('n_layers');
  });

  it("FORMAT.md §c.1's worked example: first block of layer 0 q at 131168", () => {
    const bytes = readBytes(Q40_FIXTURE);
    const q = layerTensor(q40.layout, 0, 'q');
    expect(q.offset).toBe(131168);
    expect(Array.from(bytes.subarray(131168, 131168 + 18), (b) => b.toString(16).padStart(2, '0')).join(' ')).toBe(
      'ce 28 69 2a 78 59 59 b7 89 b8 82 80 37 08 7b 7b a4 49',
    );
    expect(f16ToF32(0x28ce)).toBe(0.03753662109375);
    const out = new Float32Array(32);
    dequantizeQ40(bytes.subarray(131168, 131168 + 18), out);
    expect(out[0]).toBe(0.03753662109375);
    expect(out[16]).toBe(-2 * 0.03753662109375);
    // The same weights in the F32 fixture start 0.04439279, 0.07974771, −0.00892535.
    const fv = new DataView(readBytes(F32_FIXTURE).buffer);
    const f0 = layerTensor(f32.layout, 0, 'q').offset;
    expect(fv.getFloat32(f0, true)).toBeCloseTo(0.04439279, 7);
    expect(fv.getFloat32(f0 + 4, true)).toBeCloseTo(0.07974771, 7);
    expect(fv.getFloat32(f0 + 8, true)).toBeCloseTo(-0.00892535, 7);
    expect([out[0], out[1], out[2]].map((x) => Number(x!.toFixed(4)))).toEqual([0.0375, 0.0751, 0]);
  });

  it('our Q40 quantizer, fed the F32 fixture, reproduces every Q40 tensor byte exactly', () => {
    const fb = readBytes(F32_FIXTURE);
    const qb = readBytes(Q40_FIXTURE);
    let compared = 0;
    for (const t32 of f32.layout.tensors) {
      const t40 = q40.layout.tensor(t32.name);
      const floats = new Float32Array(t32.byteLength / 4);
      DTYPES[FloatType.F32].dequantize(fb.subarray(t32.offset, t32.offset + t32.byteLength), floats);
      const mine = new Uint8Array(t40.byteLength);
      (t40.dtype === FloatType.Q40 ? quantizeQ40 : DTYPES[FloatType.F32].quantize)(floats, mine);
      const theirs = qb.subarray(t40.offset, t40.offset + t40.byteLength);
      expect(Buffer.from(mine).equals(Buffer.from(theirs)), t32.name).toBe(true);
      compared += mine.length;
    }
    // Every byte after the header was compared.
    expect(compared).toBe(qb.length - 96);
  });

  it('the layout of a parsed header is the same object model as buildModelLayout', () => {
    const again = buildModelLayout(parseModelHeader(readBytes(Q40_FIXTURE).subarray(0, 96)));
    expect(again.tensors.map((t) => [t.name, t.offset, t.byteLength])).toEqual(q40.layout.tensors.map((t) => [t.name, t.offset, t.byteLength]));
  });
});
