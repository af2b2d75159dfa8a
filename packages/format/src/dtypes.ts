import { InvalidValueError, SizeOverflowError } from './errors.js';
import { f16Table32, f32ToF16 } from './f16.js';
import {
  dequantizeBF16,
  dequantizeQ4K,
  dequantizeQ5K,
  dequantizeQ6K,
  Q4_K_BLOCK_BYTES,
  Q5_K_BLOCK_BYTES,
  Q6_K_BLOCK_BYTES,
  QK_K,
  quantizeBF16,
  quantizeQ4K,
  quantizeQ5K,
  quantizeQ6K,
} from './kquants.js';

/**
 * Float types. 0..3 are the values of a `.m` file's `weights_float_type` (FORMAT.md §a.5);
 * BF16 and the K-quants are internal (GGUF tensors run in place): a `.m` header refuses them
 * (see `isModelFileFloatType`).
 */
export enum FloatType {
  F32 = 0,
  F16 = 1,
  Q40 = 2,
  Q80 = 3,
  BF16 = 4,
  Q4_K = 5,
  Q5_K = 6,
  Q6_K = 7,
}

/** The float types a `.m` file may declare (dllama's format knows only these). */
export const MODEL_FILE_FLOAT_TYPES: readonly FloatType[] = Object.freeze([FloatType.F32, FloatType.F16, FloatType.Q40, FloatType.Q80]);

export function isModelFileFloatType(t: number): t is FloatType {
  return (MODEL_FILE_FLOAT_TYPES as readonly number[]).includes(t);
}

/**
 * One row per float type: its block geometry and its reference codecs. Everything that sizes
 * or converts tensor bytes goes through this table, so adding a type is adding a row.
 *
 * `quantize` reads `src.length` floats (a multiple of `blockSize`) and writes
 * `src.length / blockSize * bytesPerBlock` bytes at `dst`; `dequantize` is the inverse.
 */
export interface DTypeInfo {
  readonly type: FloatType;
  readonly name: 'F32' | 'F16' | 'Q40' | 'Q80' | 'BF16' | 'Q4_K' | 'Q5_K' | 'Q6_K';
  readonly blockSize: number;
  readonly bytesPerBlock: number;
  readonly quantize: (src: Float32Array, dst: Uint8Array) => void;
  readonly dequantize: (src: Uint8Array, dst: Float32Array) => void;
}

export const Q_BLOCK = 32;
export const Q40_BLOCK_BYTES = 18;
export const Q80_BLOCK_BYTES = 34;

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Typed arrays use host byte order; the files are little-endian. */
const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function quantizeF32(src: Float32Array, dst: Uint8Array): void {
  if (HOST_LE) {
    dst.set(new Uint8Array(src.buffer, src.byteOffset, src.length * 4));
    return;
  }
  const v = view(dst);
  for (let i = 0; i < src.length; i++) v.setFloat32(i * 4, src[i]!, true);
}
function dequantizeF32(src: Uint8Array, dst: Float32Array): void {
  if (HOST_LE) {
    // Byte copy: `src` need not be 4-byte aligned (tensors in a .m file are not).
    new Uint8Array(dst.buffer, dst.byteOffset, dst.length * 4).set(src.subarray(0, dst.length * 4));
    return;
  }
  const v = view(src);
  for (let i = 0; i < dst.length; i++) dst[i] = v.getFloat32(i * 4, true);
}
function quantizeF16(src: Float32Array, dst: Uint8Array): void {
  const v = view(dst);
  for (let i = 0; i < src.length; i++) v.setUint16(i * 2, f32ToF16(src[i]!), true);
}
function dequantizeF16(src: Uint8Array, dst: Float32Array): void {
  const v = view(src);
  const t = f16Table32();
  for (let i = 0; i < dst.length; i++) dst[i] = t[v.getUint16(i * 2, true)]!;
}

const fround = Math.fround;

/**
 * Q40, the converter's recipe (FORMAT.md §c.1) in float32 arithmetic step by step, as numpy
 * does it on float32 arrays: the extreme value m is the block max unless −min is strictly
 * larger (so exact ties pick the positive one); d = m / −8; id = 1/d; nibble = trunc(x·id + 8.5)
 * clamped to [0, 15].
 */
export function quantizeQ40(src: Float32Array, dst: Uint8Array): void {
  const nb = src.length / Q_BLOCK;
  for (let b = 0; b < nb; b++) {
    const x0 = b * Q_BLOCK;
    let max = -Infinity;
    let min = Infinity;
    for (let i = 0; i < Q_BLOCK; i++) {
      const x = src[x0 + i]!;
      if (x > max) max = x;
      if (x < min) min = x;
    }
    const m = -min > max ? min : max;
    const d = fround(m / -8);
    const id = d !== 0 ? fround(1 / d) : 0;
    const o = b * Q40_BLOCK_BYTES;
    const h = f32ToF16(d);
    dst[o] = h & 0xff;
    dst[o + 1] = h >>> 8;
    for (let k = 0; k < 16; k++) {
      const lo = Math.min(15, Math.max(0, Math.trunc(fround(fround(src[x0 + k]! * id) + 8.5))));
      const hi = Math.min(15, Math.max(0, Math.trunc(fround(fround(src[x0 + k + 16]! * id) + 8.5))));
      dst[o + 2 + k] = lo | (hi << 4);
    }
  }
}

export function dequantizeQ40(src: Uint8Array, dst: Float32Array): void {
  const t = f16Table32();
  const nb = dst.length / Q_BLOCK;
  for (let b = 0; b < nb; b++) {
    const o = b * Q40_BLOCK_BYTES;
    const d = t[src[o]! | (src[o + 1]! << 8)]!;
    const x0 = b * Q_BLOCK;
    for (let k = 0; k < 16; k++) {
      const q = src[o + 2 + k]!;
      dst[x0 + k] = ((q & 0x0f) - 8) * d;
      dst[x0 + k + 16] = ((q >>> 4) - 8) * d;
    }
  }
}

/** Round half to even (numpy `round`, AVX2 `_MM_ROUND_NEAREST`). */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; step back to the even neighbour on exact ties.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Q80 (FORMAT.md §c.2): d = max|x| / 127 in float32, q = round_half_even(x · (1/d)) using the
 * unrounded float32 d; the stored scale is d rounded to f16.
 */
export function quantizeQ80(src: Float32Array, dst: Uint8Array): void {
  const nb = src.length / Q_BLOCK;
  for (let b = 0; b < nb; b++) {
    const x0 = b * Q_BLOCK;
    let amax = 0;
    for (let i = 0; i < Q_BLOCK; i++) {
      const a = Math.abs(src[x0 + i]!);
      if (a > amax) amax = a;
    }
    const d = fround(amax / 127);
    const id = d !== 0 ? fround(1 / d) : 0;
    const o = b * Q80_BLOCK_BYTES;
    const h = f32ToF16(d);
    dst[o] = h & 0xff;
    dst[o + 1] = h >>> 8;
    for (let i = 0; i < Q_BLOCK; i++) {
      dst[o + 2 + i] = roundHalfEven(fround(src[x0 + i]! * id)) & 0xff;
    }
  }
}

export function dequantizeQ80(src: Uint8Array, dst: Float32Array): void {
  const t = f16Table32();
  const nb = dst.length / Q_BLOCK;
  for (let b = 0; b < nb; b++) {
    const o = b * Q80_BLOCK_BYTES;
    const d = t[src[o]! | (src[o + 1]! << 8)]!;
    const x0 = b * Q_BLOCK;
    for (let i = 0; i < Q_BLOCK; i++) dst[x0 + i] = ((src[o + 2 + i]! << 24) >> 24) * d;
  }
}

export const DTYPES: Readonly<Record<FloatType, DTypeInfo>> = Object.freeze({
  [FloatType.F32]: Object.freeze({
    type: FloatType.F32,
    name: 'F32',
    blockSize: 1,
    bytesPerBlock: 4,
    quantize: quantizeF32,
    dequantize: dequantizeF32,
  }),
  [FloatType.F16]: Object.freeze({
    type: FloatType.F16,
    name: 'F16',
    blockSize: 1,
    bytesPerBlock: 2,
    quantize: quantizeF16,
    dequantize: dequantizeF16,
  }),
  [FloatType.Q40]: Object.freeze({
    type: FloatType.Q40,
    name: 'Q40',
    blockSize: Q_BLOCK,
    bytesPerBlock: Q40_BLOCK_BYTES,
    quantize: quantizeQ40,
    dequantize: dequantizeQ40,
  }),
  [FloatType.Q80]: Object.freeze({
    type: FloatType.Q80,
    name: 'Q80',
    blockSize: Q_BLOCK,
    bytesPerBlock: Q80_BLOCK_BYTES,
    quantize: quantizeQ80,
    dequantize: dequantizeQ80,
  }),
  [FloatType.BF16]: Object.freeze({
    type: FloatType.BF16,
    name: 'BF16',
    blockSize: 1,
    bytesPerBlock: 2,
    quantize: quantizeBF16,
    dequantize: dequantizeBF16,
  }),
  [FloatType.Q4_K]: Object.freeze({
    type: FloatType.Q4_K,
    name: 'Q4_K',
    blockSize: QK_K,
    bytesPerBlock: Q4_K_BLOCK_BYTES,
    quantize: quantizeQ4K,
    dequantize: dequantizeQ4K,
  }),
  [FloatType.Q5_K]: Object.freeze({
    type: FloatType.Q5_K,
    name: 'Q5_K',
    blockSize: QK_K,
    bytesPerBlock: Q5_K_BLOCK_BYTES,
    quantize: quantizeQ5K,
    dequantize: dequantizeQ5K,
  }),
  [FloatType.Q6_K]: Object.freeze({
    type: FloatType.Q6_K,
    name: 'Q6_K',
    blockSize: QK_K,
    bytesPerBlock: Q6_K_BLOCK_BYTES,
    quantize: quantizeQ6K,
    dequantize: dequantizeQ6K,
  }),
});

export function dtypeInfo(type: FloatType): DTypeInfo {
  const info = DTYPES[type];
  if (info === undefined) {
    throw new InvalidValueError('unknown float type', {
      field: 'weights_float_type',
      expected: '0 (F32), 1 (F16), 2 (Q40), 3 (Q80), 4 (BF16), 5 (Q4_K), 6 (Q5_K) or 7 (Q6_K)',
      actual: type,
    });
  }
  return info;
}

export function floatTypeName(type: FloatType): string {
  return DTYPES[type]?.name ?? `unknown(${type})`;
}

/** Parse a `.m` weight type: 'f32' | 'f16' | 'q40' | 'q80' (any case); the internal types are refused. */
export function parseFloatType(name: string): FloatType {
  const t = (['F32', 'F16', 'Q40', 'Q80'] as const).indexOf(name.toUpperCase() as 'F32');
  if (t < 0) {
    throw new InvalidValueError('unknown float type name', {
      field: 'dtype',
      expected: 'f32, f16, q40 or q80',
      actual: name,
    });
  }
  return t as FloatType;
}

/** a·b, refusing results that are not exact in a double (> 2^53). */
export function checkedMul(a: number, b: number, field: string): number {
  const r = a * b;
  if (!Number.isSafeInteger(r)) {
    throw new SizeOverflowError('size arithmetic exceeds 2^53', { field, actual: `${a} * ${b}` });
  }
  return r;
}

export function checkedAdd(a: number, b: number, field: string): number {
  const r = a + b;
  if (!Number.isSafeInteger(r)) {
    throw new SizeOverflowError('size arithmetic exceeds 2^53', { field, actual: `${a} + ${b}` });
  }
  return r;
}

/** Bytes for `n` elements of `type` (FORMAT.md §a.5); n must be whole blocks. */
export function byteSize(type: FloatType, n: number, field = 'tensor'): number {
  const info = dtypeInfo(type);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new SizeOverflowError('element count is not a safe integer', { field, actual: n });
  }
  if (n % info.blockSize !== 0) {
    throw new InvalidValueError(`element count is not a whole number of ${info.name} blocks`, {
      field,
      expected: `a multiple of ${info.blockSize}`,
      actual: n,
    });
  }
  return checkedMul(n / info.blockSize, info.bytesPerBlock, field);
}
