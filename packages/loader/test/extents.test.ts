import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FloatType, type TensorInfo } from '@airllm/format';
import { scatteredLayout } from '@airllm/format/testing';
import { describe, expect, it } from 'vitest';
import { LayerResidency, type ResidencyOptions } from '../src/residency/residency.js';
import { attachResidency } from '../src/residency/client.js';
import { fillPattern, patternByte } from '../src/testing/model-file.js';
import type { TensorView } from '../src/views.js';
import { ALIGN_MIRROR, MemoryMappedWeights } from '../src/weights.js';
import { BACKENDS, tempDir } from './helpers.js';

/*
 * The seam between a layout and the bytes a reader sees, for layouts `.m` never produces (GGUF
 * ones): layers of several extents interleaved with other layers', mixed dtypes, unaligned F32
 * vectors, and a tied head whose classifier is the embedding's bytes. The file is the pattern
 * of its absolute offsets, so every view is checked against the bytes at its tensor's offset.
 */
const dir = tempDir('extents');
const layout = scatteredLayout();
const path = join(dir, 'scattered.bin');
const fileBytes = new Uint8Array(layout.fileSize);
fillPattern(fileBytes, 0);
writeFileSync(path, fileBytes);

function expectFileBytes(v: TensorView, t: TensorInfo): void {
  const got = new Uint8Array(v.buffer, v.byteOffset, t.byteLength);
  const want = fileBytes.subarray(t.offset, t.offset + t.byteLength);
  expect(Buffer.compare(got, want), t.name).toBe(0);
  expect(got[0]).toBe(patternByte(t.offset));
}

/** F32 / F16 tensors a Float32Array / Uint16Array cannot start at: views of them are copies. */
const unaligned = (t: TensorInfo): boolean => (t.dtype === FloatType.F32 && t.offset % 4 !== 0) || (t.dtype === FloatType.F16 && t.offset % 2 !== 0);

describe('the scattered layout itself', () => {
  it('has several extents per layer, a tied head of two extents, mixed dtypes and unaligned vectors', () => {
    for (const l of layout.layers) {
      expect(l.extents.length).toBeGreaterThanOrEqual(3);
      expect(l.size).toBe(l.extents.reduce((a, e) => a + e.size, 0));
      const ext = l.extents.map((e) => [e.offset, e.offset + e.size] as const);
      // In file order, apart, each tensor inside exactly one extent.
      for (let i = 1; i < ext.length; i++) expect(ext[i]![0]).toBeGreaterThan(ext[i - 1]![1]);
      for (const t of l.tensors) expect(ext.filter(([a, b]) => t.offset >= a && t.offset + t.byteLength <= b).length).toBe(1);
      expect(new Set(l.tensors.map((t) => t.dtype)).size).toBe(4);
    }
    expect(layout.config.tiedEmbeddings).toBe(true);
    expect(layout.wcls.offset).toBe(layout.embedding.offset);
    expect(layout.head.tensors.map((t) => t.kind)).toEqual(['final_norm', 'wcls']);
    expect(layout.head.extents.length).toBe(2);
    expect(layout.tensors.filter(unaligned).length).toBeGreaterThan(3);
  });

  it('survives a structured clone (what a compute worker receives)', () => {
    expect(structuredClone(layout)).toEqual(layout);
  });
});

describe('scattered extents read through both backends give the bytes at each tensor offset', () => {
  const sizes = [...layout.layers.map((l) => l.size), layout.head.size];
  const modes: [string, ResidencyOptions][] = [
    ['resident', { mode: 'resident' }],
    ['stream, every segment through 2 slots', { mode: 'stream', budgetBytes: 2 * Math.max(...sizes) + 3 }],
    ['sequential, 1 slot', { mode: 'sequential', budgetBytes: Math.max(...sizes) }],
  ];
  for (const backend of BACKENDS) {
    it(`MemoryMappedWeights.tensorView (${backend})`, async () => {
      const w = await new MemoryMappedWeights(path, { backend, layout }).open();
      try {
        expect(w.header).toBeUndefined();
        for (const t of layout.tensors) expectFileBytes(w.tensorView(t), t);
        const views = w.layerWeights(1);
        expect(views.length).toBe(layout.layers[1]!.extents.length);
        views.forEach((v, i) => expect(v[0]).toBe(patternByte(layout.layers[1]!.extents[i]!.offset)));
      } finally {
        w.close();
      }
    });

    for (const [name, options] of modes) {
      it(`residency ${name}: every tensor of every segment, twice (${backend})`, async () => {
        const w = await new MemoryMappedWeights(path, { backend, layout }).open();
        const r = await LayerResidency.create(w, options);
        try {
          expect(r.segments.map((s) => s.kind)).toEqual(['layer', 'layer', 'head']);
          if (options.mode !== 'resident') expect(r.segments.every((s) => !s.pinned)).toBe(true);
          const client = attachResidency(r.shared); // main thread: only non-blocking calls on it
          for (let pass = 0; pass < 2; pass++) {
            for (const seg of r.segments) {
              const loc = await r.acquireAsync(seg.index);
              const group = seg.kind === 'head' ? layout.head : layout.layers[seg.layer]!;
              expect(seg.extents).toEqual(group.extents);
              // Each extent keeps its file offset's alignment (read backend: packed, in order).
              seg.extents.forEach((e, i) => {
                expect(loc.extentOffsets[i]! % ALIGN_MIRROR).toBe(e.offset % ALIGN_MIRROR);
                if (i > 0) expect(loc.extentOffsets[i]!).toBeGreaterThanOrEqual(loc.extentOffsets[i - 1]! + seg.extents[i - 1]!.size);
              });
              for (const t of group.tensors) {
                const v = client.tensorView(t);
                expectFileBytes(v, t);
                // Zero-copy, except where the typed array cannot start (then a copy).
                expect(v.buffer === loc.buffer, t.name).toBe(!unaligned(t));
              }
              if (seg.kind === 'head') expectFileBytes(client.tensorView(layout.embedding), layout.embedding);
              r.release(seg.index);
            }
          }
          const st = r.stats();
          if (options.mode === 'resident') expect(st.loads).toBe(3);
          else expect(st.loads).toBeGreaterThanOrEqual(6);
          expect(st.bytesLoaded).toBeGreaterThanOrEqual(sizes.reduce((a, b) => a + b, 0));
        } finally {
          await r.close();
          w.close();
        }
      });
    }
  }
});
