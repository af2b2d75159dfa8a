import { FloatType, type Extent, type TensorInfo } from '@airllm/format';
import { OutOfRangeError } from './errors.js';

/** What a tensor view is: F32 → Float32Array, F16 → Uint16Array (raw halves), Q40/Q80 → raw block bytes. */
export type TensorView = Float32Array | Uint16Array | Uint8Array;

/** Largest typed array V8 on Node 20 allows, in elements (measured: 2^32). */
export const MAX_VIEW_ELEMENTS = 2 ** 32;

function elements(t: TensorInfo): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

/**
 * A typed view of tensor `t` whose first byte is at `byteOffset` in `buffer`.
 *
 * Quantized tensors are byte arrays, always zero-copy. F32 (F16) tensors become Float32Array
 * (Uint16Array) views when their offset is 4- (2-) byte aligned. Almost every `.m` tensor is,
 * but not all: an F16 matrix with an odd number of elements (odd dim and odd hidden_dim) shifts
 * the F32 norms after it by 2 bytes, and a typed array cannot start at an unaligned offset, so
 * those are copied into a fresh aligned array. Both
 * backends place bytes at the same address modulo 4096 as the file offset, so the alignment of
 * every tensor, and thus which ones copy, is the same in either backend.
 */
export function tensorViewAt(buffer: ArrayBufferLike, byteOffset: number, t: TensorInfo): TensorView {
  const n = elements(t);
  if (t.dtype === FloatType.F32 || t.dtype === FloatType.F16) {
    const size = t.dtype === FloatType.F32 ? 4 : 2;
    if (n > MAX_VIEW_ELEMENTS) throw tooLarge(t);
    if (byteOffset % size === 0) {
      return size === 4 ? new Float32Array(buffer, byteOffset, n) : new Uint16Array(buffer, byteOffset, n);
    }
    const copy = new Uint8Array(t.byteLength);
    copy.set(new Uint8Array(buffer, byteOffset, t.byteLength));
    return size === 4 ? new Float32Array(copy.buffer) : new Uint16Array(copy.buffer);
  }
  if (t.byteLength > MAX_VIEW_ELEMENTS) throw tooLarge(t);
  return new Uint8Array(buffer, byteOffset, t.byteLength);
}

/**
 * The raw bytes of tensor `t` at `byteOffset` in `buffer`, whatever its dtype: always zero-copy
 * (what the kernels take for a weight matrix, which they decode row by row).
 */
export function tensorBytesAt(buffer: ArrayBufferLike, byteOffset: number, t: TensorInfo): Uint8Array {
  if (t.byteLength > MAX_VIEW_ELEMENTS) throw tooLarge(t);
  return new Uint8Array(buffer, byteOffset, t.byteLength);
}

function tooLarge(t: TensorInfo): OutOfRangeError {
  return new OutOfRangeError('tensor is larger than one typed array can address on this Node', {
    field: t.name,
    offset: t.offset,
    expected: `≤ ${MAX_VIEW_ELEMENTS} elements`,
    actual: t.byteLength,
  });
}

/**
 * Where tensor `t` starts in a buffer holding `extents` (file ranges) at `extentOffsets`: the
 * extent that contains the tensor, shifted. Throws when no single extent holds the whole tensor.
 */
export function tensorOffsetIn(extents: readonly Extent[], extentOffsets: readonly number[], t: TensorInfo): number {
  for (let i = 0; i < extents.length; i++) {
    const e = extents[i]!;
    if (t.offset >= e.offset && t.offset + t.byteLength <= e.offset + e.size) return extentOffsets[i]! + (t.offset - e.offset);
  }
  throw new OutOfRangeError('tensor is not inside the byte ranges of this segment', {
    field: t.name,
    offset: t.offset,
    expected: extents.map((e) => `${e.offset}+${e.size}`).join(', '),
    actual: `${t.offset}+${t.byteLength}`,
  });
}
