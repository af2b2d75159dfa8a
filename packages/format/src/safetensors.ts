import { open, type FileHandle } from 'node:fs/promises';
import { f16Table32 } from './f16.js';
import { fileError, FormatError, InvalidValueError, SizeOverflowError, TruncatedError, UnsupportedModelError } from './errors.js';
import { HOST_LE, readRange } from './file-range.js';

/**
 * safetensors: u64 little-endian header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data;
 * offsets are relative to the first byte after the header.
 *
 * Every file is untrusted. The limits below bound what is allocated before anything is checked
 * against the file itself; then each tensor's byte range must lie inside the file and match
 * its dtype × shape exactly.
 */
export const SAFETENSORS_LIMITS = Object.freeze({
  /** The reference implementation's own limit (safetensors MAX_HEADER_SIZE = 100 MB). */
  maxHeaderBytes: 100_000_000,
  maxTensors: 1 << 20,
  maxRank: 8,
  maxNameLength: 1 << 12,
});

/** Element sizes of every dtype the safetensors spec defines (needed to check byte ranges). */
export const SAFETENSORS_DTYPE_BYTES: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
});

/** The dtypes the converter reads as weights. */
export const SAFETENSORS_FLOAT_DTYPES = ['F32', 'F16', 'BF16'] as const;
export type SafetensorsFloatDtype = (typeof SAFETENSORS_FLOAT_DTYPES)[number];

export interface SafetensorsTensor {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute byte offset of the tensor's first byte in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface SafetensorsHeader {
  /** Bytes before the data: 8 + N. */
  readonly dataOffset: number;
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
  readonly metadata: Readonly<Record<string, string>>;
}

function bad(reason: string, field: string, offset: number | undefined, expected?: string | number, actual?: string | number): never {
  throw new InvalidValueError(reason, { field, offset, expected, actual });
}

/** Header length from the first 8 bytes, checked against the limit and the file size. */
export function safetensorsHeaderLength(first8: Uint8Array, fileSize: number): number {
  if (first8.length < 8 || fileSize < 8) {
    throw new TruncatedError('file too short for a safetensors header', { field: 'header length', offset: 0, expected: '8 bytes', actual: Math.min(first8.length, fileSize) });
  }
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n < 2n || n > BigInt(SAFETENSORS_LIMITS.maxHeaderBytes)) {
    bad('safetensors header length out of range', 'header length', 0, `2..${SAFETENSORS_LIMITS.maxHeaderBytes}`, n.toString());
  }
  const len = Number(n);
  if (8 + len > fileSize) {
    throw new TruncatedError('safetensors header runs past the end of the file', { field: 'header length', offset: 0, expected: `${8 + len} bytes`, actual: fileSize });
  }
  return len;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function safeInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parse a safetensors header. `bytes` holds at least the first 8 + N bytes of a file of
 * `fileSize` bytes. Tensor offsets in the result are absolute file offsets.
 */
export function parseSafetensorsHeader(bytes: Uint8Array, fileSize: number): SafetensorsHeader {
  const len = safetensorsHeaderLength(bytes.subarray(0, 8), fileSize);
  if (bytes.length < 8 + len) {
    throw new TruncatedError('safetensors header is cut short', { field: 'header', offset: bytes.length, expected: `${8 + len} bytes`, actual: bytes.length });
  }
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + len)));
  } catch (e) {
    bad(`safetensors header is not valid UTF-8 JSON (${(e as Error).message})`, 'header', 8);
  }
  if (!isPlainObject(json)) bad('safetensors header must be a JSON object', 'header', 8);
  const dataOffset = 8 + len;
  const dataBytes = fileSize - dataOffset;
  const entries = Object.entries(json);
  if (entries.length > SAFETENSORS_LIMITS.maxTensors + 1) {
    bad('too many tensors', 'header', 8, `≤ ${SAFETENSORS_LIMITS.maxTensors}`, entries.length);
  }
  const tensors = new Map<string, SafetensorsTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of entries) {
    // JSON gives no byte positions per entry; errors name the tensor and the header start.
    if (name === '__metadata__') {
      if (!isPlainObject(v)) bad('__metadata__ must be an object of strings', '__metadata__', 8);
      for (const [k, s] of Object.entries(v)) if (typeof s !== 'string') bad('__metadata__ values must be strings', `__metadata__.${k}`, 8);
      metadata = v as Record<string, string>;
      continue;
    }
    if (name.length === 0 || name.length > SAFETENSORS_LIMITS.maxNameLength) bad('tensor name length out of range', 'tensor name', 8, `1..${SAFETENSORS_LIMITS.maxNameLength}`, name.length);
    if (!isPlainObject(v)) bad('tensor entry must be an object', name, 8);
    const { dtype, shape, data_offsets: offs } = v;
    if (typeof dtype !== 'string' || !(dtype in SAFETENSORS_DTYPE_BYTES)) {
      bad('unknown safetensors dtype', `${name}.dtype`, 8, Object.keys(SAFETENSORS_DTYPE_BYTES).join(', '), String(dtype));
    }
    if (!Array.isArray(shape) || shape.length > SAFETENSORS_LIMITS.maxRank || !shape.every(safeInt)) {
      bad('shape must be a list of non-negative integers', `${name}.shape`, 8, `≤ ${SAFETENSORS_LIMITS.maxRank} dims`, JSON.stringify(shape)?.slice(0, 80));
    }
    if (!Array.isArray(offs) || offs.length !== 2 || !safeInt(offs[0]) || !safeInt(offs[1]) || offs[0] > offs[1]) {
      bad('data_offsets must be [begin, end] with begin ≤ end', `${name}.data_offsets`, 8, undefined, JSON.stringify(offs)?.slice(0, 80));
    }
    const [begin, end] = offs as [number, number];
    let elements = 1;
    for (const d of shape as number[]) {
      elements *= d;
      if (!Number.isSafeInteger(elements)) throw new SizeOverflowError('element count exceeds 2^53', { field: `${name}.shape`, offset: 8 });
    }
    const size = elements * SAFETENSORS_DTYPE_BYTES[dtype]!;
    if (!Number.isSafeInteger(size)) throw new SizeOverflowError('byte size exceeds 2^53', { field: `${name}.shape`, offset: 8 });
    if (end - begin !== size) {
      bad('data_offsets do not span dtype × shape bytes', `${name}.data_offsets`, dataOffset + begin, size, end - begin);
    }
    if (end > dataBytes) {
      throw new TruncatedError('tensor data runs past the end of the file', { field: name, offset: dataOffset + begin, expected: `end ≤ ${dataBytes}`, actual: end });
    }
    tensors.set(name, Object.freeze({ name, dtype, shape: Object.freeze([...(shape as number[])]), offset: dataOffset + begin, byteLength: size }));
  }
  return Object.freeze({ dataOffset, tensors, metadata: Object.freeze({ ...metadata }) });
}

/** An open safetensors file: its parsed header and ranged reads of its tensors. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly fh: FileHandle,
    readonly size: number,
    readonly header: SafetensorsHeader,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw fileError(e, path, 'open the safetensors file');
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new FormatError('not a regular file', { path });
      const first = await readRange(fh, path, 0, Math.min(8, st.size), 'header length');
      const len = safetensorsHeaderLength(first, st.size);
      const head = new Uint8Array(8 + len);
      head.set(first);
      await readRange(fh, path, 8, len, 'header', head.subarray(8));
      return new SafetensorsFile(path, fh, st.size, parseSafetensorsHeader(head, st.size));
    } catch (e) {
      await fh.close();
      throw e instanceof FormatError ? e.withPath(path) : fileError(e, path, 'read');
    }
  }

  tensor(name: string): SafetensorsTensor | undefined {
    return this.header.tensors.get(name);
  }

  /**
   * Rows `[row0, row0 + rows)` of a tensor whose first dimension is rows (a vector counts as
   * one row), converted to float32. F32/F16/BF16 only.
   */
  async readRowsF32(t: SafetensorsTensor, row0: number, rows: number): Promise<Float32Array> {
    const elem = SAFETENSORS_DTYPE_BYTES[t.dtype]!;
    if (!(SAFETENSORS_FLOAT_DTYPES as readonly string[]).includes(t.dtype)) {
      throw new UnsupportedModelError('unsupported tensor dtype', { path: this.path, field: t.name, offset: t.offset, expected: SAFETENSORS_FLOAT_DTYPES.join(', '), actual: t.dtype });
    }
    const rowElems = t.shape.length <= 1 ? (t.shape[0] ?? 1) : t.shape.slice(1).reduce((a, b) => a * b, 1);
    const n = rows * rowElems;
    const raw = await readRange(this.fh, this.path, t.offset + row0 * rowElems * elem, n * elem, t.name);
    return decodeFloats(raw, t.dtype as SafetensorsFloatDtype, n);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** Little-endian F32/F16/BF16 bytes → float32 (all exact). */
export function decodeFloats(raw: Uint8Array, dtype: SafetensorsFloatDtype, n: number): Float32Array {
  const out = new Float32Array(n);
  if (dtype === 'F32') {
    if (HOST_LE) new Uint8Array(out.buffer).set(raw.subarray(0, 4 * n));
    else {
      const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
      for (let i = 0; i < n; i++) out[i] = v.getFloat32(4 * i, true);
    }
  } else if (dtype === 'F16') {
    const t = f16Table32();
    for (let i = 0; i < n; i++) out[i] = t[raw[2 * i]! | (raw[2 * i + 1]! << 8)]!;
  } else {
    const u = new Uint32Array(out.buffer);
    // bfloat16 is the top half of a float32 (both views use host order, so this is portable).
    for (let i = 0; i < n; i++) u[i] = ((raw[2 * i]! | (raw[2 * i + 1]! << 8)) << 16) >>> 0;
  }
  return out;
}
