import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FloatType, quantizeQ80, Q80_BLOCK_BYTES, Q_BLOCK, type TensorInfo, type WeightsLayout } from '@airllm/format';
import { Rng, scatteredLayout } from '@airllm/format/testing';
import { LayerResidency, MemoryMappedWeights } from '@airllm/loader';
import { afterAll, describe, expect, it } from 'vitest';
import { headWeights, layerWeights, WeightSource, type Matrix } from '../src/weights.js';
import { tempDir } from './helpers.js';

/*
 * The engine's side of the weights seam on a GGUF-like layout (layers of several extents, mixed
 * dtypes, unaligned F32 vectors, a tied Q80 head): every named view must be the bytes at its
 * tensor's offset in the file, decoded here with a DataView, independently of the loader.
 */
const { dir, cleanup } = tempDir('airllm-engine-weights-');
afterAll(cleanup);

const layout = scatteredLayout({ embedding: FloatType.Q80 });
const path = join(dir, 'scattered.bin');
const file = new Uint8Array(layout.fileSize);
const rng = new Rng(11, 2);
for (let i = 0; i < file.length; i++) file[i] = rng.nextU32() & 0xff;
// F32 vectors hold finite floats (random bytes could be NaN, which never compares equal).
for (const t of layout.tensors) {
  if (t.dtype !== FloatType.F32) continue;
  const dv = new DataView(file.buffer, t.offset, t.byteLength);
  for (let i = 0; i < t.byteLength / 4; i++) dv.setFloat32(i * 4, Math.sin(t.offset + i), true);
}
// The Q80 embedding holds real rows: what embeddingRow must give back, up to Q80 rounding.
const { dim: D, vocabSize: V } = layout.config;
const rowValue = (token: number, i: number): number => Math.sin(token * 0.37 + i * 0.11) * (1 + (token % 5));
const rowBytes = (D / Q_BLOCK) * Q80_BLOCK_BYTES;
for (let token = 0; token < V; token++) {
  const row = Float32Array.from({ length: D }, (_, i) => rowValue(token, i));
  const q = new Uint8Array(rowBytes);
  quantizeQ80(row, q);
  file.set(q, layout.embedding.offset + token * rowBytes);
}
writeFileSync(path, file);

function expectMatrix(m: Matrix, t: TensorInfo): void {
  expect([m.dtype, m.rows, m.cols], t.name).toEqual([t.dtype, t.shape[0], t.shape[1]]);
  expect(Buffer.compare(m.bytes, file.subarray(t.offset, t.offset + t.byteLength)), t.name).toBe(0);
}

function expectVector(v: Float32Array | undefined, t: TensorInfo): void {
  const dv = new DataView(file.buffer, t.offset, t.byteLength);
  expect(v, t.name).toBeDefined();
  expect(Array.from(v!), t.name).toEqual(Array.from({ length: t.byteLength / 4 }, (_, i) => dv.getFloat32(i * 4, true)));
}

function tensor(l: WeightsLayout, name: string): TensorInfo {
  return l.tensors.find((t) => t.name === name)!;
}

describe('typed layer and head views from a layout of scattered extents', () => {
  for (const backend of ['mmap', 'read'] as const) {
    for (const mode of ['resident', 'sequential'] as const) {
      it(`${mode}, ${backend}`, async () => {
        const w = await new MemoryMappedWeights(path, { backend, layout }).open();
        const budgetBytes = Math.max(...layout.layers.map((x) => x.size), layout.head.size);
        const r = await LayerResidency.create(w, { mode, budgetBytes: mode === 'resident' ? undefined : budgetBytes });
        try {
          for (const segment of r.segments) {
            const location = await r.acquireAsync(segment.index);
            if (segment.kind === 'layer') {
              const l = segment.layer;
              const p = `layers.${l}.`;
              const { w: lw } = layerWeights(layout, l, { segment, location });
              for (const k of ['q', 'k', 'v', 'wo', 'w1', 'w2', 'w3'] as const) expectMatrix(lw[k]!, tensor(layout, p + k));
              for (const k of ['bq', 'bk', 'bv'] as const) expectVector(lw[k], tensor(layout, p + k));
              expectVector(lw.attNorm, tensor(layout, p + 'att_norm'));
              expectVector(lw.ffnNorm, tensor(layout, p + 'ffn_norm'));
              expect([lw.router, lw.qNorm, lw.kNorm, lw.experts.length]).toEqual([undefined, undefined, undefined, 0]);
              // A GGUF layer mixes dtypes: each matrix keeps its own.
              expect(new Set(['q', 'v', 'w2'].map((k) => lw[k as 'q'].dtype))).toEqual(new Set([FloatType.Q40, FloatType.Q80, FloatType.F16]));
            } else {
              const { w: hw } = headWeights(layout, { segment, location });
              expectVector(hw.finalNorm, layout.finalNorm);
              // Tied: the classifier is the embedding's bytes.
              expectMatrix(hw.wcls, layout.embedding);
            }
            r.release(segment.index);
          }
        } finally {
          await r.close();
          w.close();
        }
      });
    }
  }

  it('embedding rows of a Q80 embedding are its rows, decoded', async () => {
    const source = await WeightSource.open(path, { mode: 'resident', layers: { start: 0, end: layout.config.nLayers }, head: true, layout });
    try {
      const out = new Float32Array(3 * D);
      for (const token of [0, 1, 77, V - 1]) {
        source.embeddingRow(token, out, D);
        expect(out.subarray(0, D).every((x) => x === 0)).toBe(true);
        expect(out.subarray(2 * D).every((x) => x === 0)).toBe(true);
        const want = Float32Array.from({ length: D }, (_, i) => rowValue(token, i));
        // Q80: within half a step (block max / 127) of the original, plus the step's own rounding
        // to F16 (relative 2^-11, times up to 127 steps: 0.062 of a step).
        const tol = (Math.max(...want.map(Math.abs)) / 127) * 0.57;
        for (let i = 0; i < D; i++) expect(Math.abs(out[D + i]! - want[i]!)).toBeLessThanOrEqual(tol);
      }
    } finally {
      await source.close();
    }
  });
});
