import { readFileSync } from 'node:fs';
import type { ModelLayout } from '@airllm/format';

/** Where a segment's first byte is: the file mapping itself, or a slot it was read into. */
export interface SegmentLocation {
  readonly buffer: SharedArrayBuffer | ArrayBuffer;
  readonly byteOffset: number;
}

/** Worker side: segments are layers 0..n−1 and the head (final norm + classifier) = n. */
export interface WorkerWeightSource {
  acquire(segment: number): SegmentLocation;
  release(segment: number): void;
}

/** Main side. */
export interface WeightSource {
  /** Structured-clonable descriptor the compute workers attach to. */
  readonly descriptor: unknown;
  /** Copy embedding row `token` (F32) into dst at dstOffset. */
  embeddingRow(token: number, dst: Float32Array, dstOffset: number): void;
  close(): Promise<void>;
}

interface WholeFileDescriptor {
  kind: 'whole-file';
  buffer: SharedArrayBuffer;
  offsets: number[];
}

/** Interim source: the whole file read into one SharedArrayBuffer. */
export function openWholeFile(path: string, layout: ModelLayout): WeightSource {
  const bytes = readFileSync(path);
  const buffer = new SharedArrayBuffer(bytes.length);
  new Uint8Array(buffer).set(bytes);
  const offsets = [...layout.layers.map((l) => l.offset), layout.finalNorm.offset];
  const emb = layout.embedding;
  const dim = layout.header.dim;
  const view = new DataView(buffer);
  return {
    descriptor: { kind: 'whole-file', buffer, offsets } satisfies WholeFileDescriptor,
    embeddingRow(token, dst, dstOffset) {
      const o = emb.offset + token * dim * 4;
      for (let i = 0; i < dim; i++) dst[dstOffset + i] = view.getFloat32(o + 4 * i, true);
    },
    async close() {},
  };
}

export function attachWeightSource(descriptor: unknown): WorkerWeightSource {
  const d = descriptor as WholeFileDescriptor;
  return {
    acquire: (segment) => ({ buffer: d.buffer, byteOffset: d.offsets[segment]! }),
    release: () => {},
  };
}
