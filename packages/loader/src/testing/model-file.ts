/**
 * Test-only builders (not exported from index.ts): synthetic `.m` files written straight to
 * disk. Content is either a hole (sparse: no disk writes, reads as zeros) or a deterministic
 * pattern of the absolute file offset, so any byte can be checked independently of the loader.
 */
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';
import { buildModelLayout, FloatType, HeaderKey, parseModelHeader, writeModelHeader, type HeaderValues, type ModelLayout } from '@airllm/format';

export interface ModelShape {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  weightType?: FloatType;
  seqLen?: number;
  /** Explicit head_dim (else dim / nHeads). */
  headDim?: number;
}

export function headerValuesFor(shape: ModelShape): HeaderValues {
  return {
    [HeaderKey.Version]: 0,
    [HeaderKey.ArchType]: 0xabcd00,
    [HeaderKey.Dim]: shape.dim,
    [HeaderKey.HiddenDim]: shape.hiddenDim,
    [HeaderKey.NLayers]: shape.nLayers,
    [HeaderKey.NHeads]: shape.nHeads,
    [HeaderKey.NKvHeads]: shape.nKvHeads,
    [HeaderKey.VocabSize]: shape.vocabSize,
    [HeaderKey.MaxSeqLen]: shape.seqLen ?? 256,
    [HeaderKey.WeightsFloatType]: shape.weightType ?? FloatType.F32,
    ...(shape.headDim !== undefined ? { [HeaderKey.HeadDim]: shape.headDim } : {}),
  };
}

/**
 * The pattern byte at absolute offset `o`: a hash of both 32-bit halves, so a loader that
 * dropped the high half (4 GiB truncation) reads different bytes.
 */
export function patternByte(o: number): number {
  const lo = o >>> 0;
  const hi = Math.floor(o / 2 ** 32);
  let h = Math.imul(lo ^ Math.imul(hi + 1, 0x45d9f3b), 0x27d4eb2d);
  h ^= h >>> 15;
  return (Math.imul(h, 0x2c1b3c6d) >>> 24) & 0xff;
}

export function fillPattern(dst: Uint8Array, offset: number): void {
  for (let i = 0; i < dst.length; i++) dst[i] = patternByte(offset + i);
}

export type Fill = 'sparse' | 'pattern';

/** Write a model file: header, then `fill` for every tensor byte. Returns its layout. */
export function writeSyntheticModel(path: string, shape: ModelShape, fill: Fill): ModelLayout {
  const header = writeModelHeader(headerValuesFor(shape));
  const layout = buildModelLayout(parseModelHeader(header));
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, header, 0, header.length, 0);
    if (fill === 'sparse') {
      ftruncateSync(fd, layout.fileSize);
    } else {
      const chunk = new Uint8Array(8 << 20);
      for (let o = header.length; o < layout.fileSize; o += chunk.length) {
        const part = chunk.subarray(0, Math.min(chunk.length, layout.fileSize - o));
        fillPattern(part, o);
        writeSync(fd, part, 0, part.length, o);
      }
    }
  } finally {
    closeSync(fd);
  }
  return layout;
}

/** Overwrite bytes at `offset` of an existing file (for marking a sparse file). */
export function writeAt(path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}
