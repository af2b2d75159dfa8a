import { open, type FileHandle } from 'node:fs/promises';
import { FormatError, InvalidValueError, BadMagicError, SizeOverflowError, TruncatedError, OldFormatError, fileError } from './errors.js';
import { readRange } from './file-range.js';

/**
 * GGUF (llama.cpp's container), versions 2 and 3: "GGUF", u32 version, u64 tensor count, u64
 * metadata count, the metadata key/values, the tensor infos, padding to `general.alignment`
 * (default 32), then the tensor data; each tensor's offset is relative to the data start.
 * Readers below are pure functions over the header bytes; the file is only touched by
 * {@link readGgufFile}, which grows the prefix it reads until the header fits.
 */
export const GGUF_MAGIC = 0x46554747; // "GGUF" as a little-endian u32
export const GGUF_DEFAULT_ALIGNMENT = 32;

/**
 * Limits on untrusted GGUF headers. Real files stay far below them (a Llama-3 GGUF's header,
 * with its 128k tokens and 280k merges, is ~8 MiB; models have a few thousand tensors).
 * Every count is also checked against the bytes that remain before anything is allocated.
 */
export const GGUF_LIMITS = Object.freeze({
  maxHeaderBytes: 256 << 20,
  maxTensors: 1 << 20,
  maxMetadata: 1 << 16,
  maxStringBytes: 1 << 26,
  maxArrayLength: 1 << 24,
  /** GGML_MAX_DIMS. */
  maxDims: 4,
  maxAlignment: 1 << 16,
});

export enum GgufValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor types (ggml.h `enum ggml_type`); the converters handle F32, F16, Q4_0 and Q8_0. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
}

/** [elements per block, bytes per block] for the types whose byte size we check. */
const GGML_BLOCKS: Partial<Record<GgmlType, readonly [number, number]>> = {
  [GgmlType.F32]: [1, 4],
  [GgmlType.F16]: [1, 2],
  [GgmlType.BF16]: [1, 2],
  [GgmlType.F64]: [1, 8],
  [GgmlType.I8]: [1, 1],
  [GgmlType.I16]: [1, 2],
  [GgmlType.I32]: [1, 4],
  [GgmlType.I64]: [1, 8],
  [GgmlType.Q4_0]: [32, 18],
  [GgmlType.Q4_1]: [32, 20],
  [GgmlType.Q5_0]: [32, 22],
  [GgmlType.Q5_1]: [32, 24],
  [GgmlType.Q8_0]: [32, 34],
  [GgmlType.Q8_1]: [32, 36],
  [GgmlType.Q2_K]: [256, 84],
  [GgmlType.Q3_K]: [256, 110],
  [GgmlType.Q4_K]: [256, 144],
  [GgmlType.Q5_K]: [256, 176],
  [GgmlType.Q6_K]: [256, 210],
  [GgmlType.Q8_K]: [256, 292],
};

export function ggmlTypeName(t: number): string {
  return GgmlType[t] ?? `type ${t}`;
}

/** Bytes of `elements` values of type `t`, or undefined when the type's block size is not known here. */
export function ggmlByteSize(t: number, elements: number): number | undefined {
  const b = GGML_BLOCKS[t as GgmlType];
  if (b === undefined || elements % b[0] !== 0) return undefined;
  return (elements / b[0]) * b[1];
}

export type GgufScalar = number | bigint | boolean | string;

export interface GgufArray {
  readonly itemType: GgufValueType;
  /** Numbers for all numeric types except UINT64/INT64 (bigint); strings decoded as UTF-8. */
  readonly items: readonly GgufScalar[];
  /** For STRING arrays: each item's raw bytes (tokens need not be valid UTF-8). */
  readonly raw?: readonly Uint8Array[];
}

export interface GgufEntry {
  readonly type: GgufValueType;
  readonly value: GgufScalar | GgufArray;
  /** Byte offset of the key in the file. */
  readonly offset: number;
}

export interface GgufTensorInfo {
  readonly name: string;
  /** ggml order: dims[0] = ne0 (the contiguous one, a matrix's in-features). */
  readonly dims: readonly number[];
  readonly type: number;
  readonly elements: number;
  /** Byte size when the type is known, else undefined. */
  readonly byteLength: number | undefined;
  /** Absolute file offset of the data. */
  readonly offset: number;
  /** Offset of the info record in the header (for messages). */
  readonly infoOffset: number;
}

export interface GgufHeader {
  readonly version: number;
  readonly alignment: number;
  readonly metadata: ReadonlyMap<string, GgufEntry>;
  readonly tensors: readonly GgufTensorInfo[];
  readonly tensorByName: ReadonlyMap<string, GgufTensorInfo>;
  /** Absolute offset of the tensor data section. */
  readonly dataOffset: number;
  /** Header bytes parsed (before the alignment padding). */
  readonly headerBytes: number;
}

/** Thrown inside the parser when `bytes` is a prefix of a larger file; never escapes readGgufFile. */
class NeedMoreBytes extends Error {
  constructor(readonly end: number) {
    super('need more bytes');
  }
}

// ignoreBOM: a string that starts with U+FEFF (a token can be exactly that) keeps it.
const decoder = new TextDecoder('utf-8', { ignoreBOM: true });

class Cursor {
  readonly view: DataView;
  pos = 0;
  constructor(
    readonly bytes: Uint8Array,
    readonly fileSize: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  need(n: number, field: string): void {
    const end = this.pos + n;
    if (end <= this.bytes.length) return;
    if (end > this.fileSize) {
      throw new TruncatedError('GGUF header runs past the end of the file', { field, offset: this.pos, expected: `${n} more bytes`, actual: Math.max(0, this.fileSize - this.pos) });
    }
    throw new NeedMoreBytes(end);
  }
  /** Bytes left in the file after the cursor (the physical bound for any claimed count). */
  get remaining(): number {
    return this.fileSize - this.pos;
  }
  u8(f: string): number {
    this.need(1, f);
    return this.view.getUint8(this.pos++);
  }
  u32(f: string): number {
    this.need(4, f);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  /** A u64 that must fit in 2^53 (counts, lengths, offsets). */
  u64n(f: string): number {
    this.need(8, f);
    const at = this.pos;
    const v = this.view.getBigUint64(at, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new SizeOverflowError('value exceeds 2^53', { field: f, offset: at, actual: v.toString() });
    return Number(v);
  }
  bytesOf(n: number, f: string): Uint8Array {
    this.need(n, f);
    const out = this.bytes.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  stringBytes(f: string): Uint8Array {
    const at = this.pos;
    const n = this.u64n(f);
    if (n > GGUF_LIMITS.maxStringBytes) throw new InvalidValueError('string too long', { field: f, offset: at, expected: `≤ ${GGUF_LIMITS.maxStringBytes} bytes`, actual: n });
    return this.bytesOf(n, f);
  }
  string(f: string): string {
    return decoder.decode(this.stringBytes(f));
  }
}

const SCALAR_BYTES: Partial<Record<GgufValueType, number>> = {
  [GgufValueType.UINT8]: 1,
  [GgufValueType.INT8]: 1,
  [GgufValueType.UINT16]: 2,
  [GgufValueType.INT16]: 2,
  [GgufValueType.UINT32]: 4,
  [GgufValueType.INT32]: 4,
  [GgufValueType.FLOAT32]: 4,
  [GgufValueType.BOOL]: 1,
  [GgufValueType.UINT64]: 8,
  [GgufValueType.INT64]: 8,
  [GgufValueType.FLOAT64]: 8,
};

function readScalar(c: Cursor, type: GgufValueType, f: string): GgufScalar {
  if (type === GgufValueType.STRING) return c.string(f);
  const n = SCALAR_BYTES[type];
  if (n === undefined) throw new InvalidValueError('unknown metadata value type', { field: f, offset: c.pos, expected: '0..12', actual: type });
  c.need(n, f);
  const v = c.view;
  const p = c.pos;
  c.pos += n;
  switch (type) {
    case GgufValueType.UINT8: return v.getUint8(p);
    case GgufValueType.INT8: return v.getInt8(p);
    case GgufValueType.UINT16: return v.getUint16(p, true);
    case GgufValueType.INT16: return v.getInt16(p, true);
    case GgufValueType.UINT32: return v.getUint32(p, true);
    case GgufValueType.INT32: return v.getInt32(p, true);
    case GgufValueType.FLOAT32: return v.getFloat32(p, true);
    case GgufValueType.BOOL: {
      const b = v.getUint8(p);
      if (b > 1) throw new InvalidValueError('bool must be 0 or 1', { field: f, offset: p, actual: b });
      return b === 1;
    }
    case GgufValueType.UINT64: return v.getBigUint64(p, true);
    case GgufValueType.INT64: return v.getBigInt64(p, true);
    default: return v.getFloat64(p, true);
  }
}

function readValue(c: Cursor, type: number, f: string): GgufScalar | GgufArray {
  if (type !== GgufValueType.ARRAY) return readScalar(c, type, f);
  const at = c.pos;
  const itemType = c.u32(`${f} item type`);
  if (itemType === GgufValueType.ARRAY) throw new InvalidValueError('nested arrays are not supported', { field: f, offset: at });
  if (!(itemType in GgufValueType)) throw new InvalidValueError('unknown array item type', { field: f, offset: at, expected: '0..12', actual: itemType });
  const n = c.u64n(`${f} length`);
  // The smallest encoding of one item bounds how many the rest of the file can hold.
  const minItem = itemType === GgufValueType.STRING ? 8 : SCALAR_BYTES[itemType as GgufValueType]!;
  if (n > GGUF_LIMITS.maxArrayLength || n * minItem > c.remaining) {
    throw new InvalidValueError('array length out of range', { field: f, offset: at + 4, expected: `≤ ${Math.min(GGUF_LIMITS.maxArrayLength, Math.floor(c.remaining / minItem))}`, actual: n });
  }
  const items: GgufScalar[] = new Array<GgufScalar>(n);
  if (itemType === GgufValueType.STRING) {
    const raw: Uint8Array[] = new Array<Uint8Array>(n);
    for (let i = 0; i < n; i++) {
      raw[i] = c.stringBytes(`${f}[${i}]`);
      items[i] = decoder.decode(raw[i]);
    }
    return { itemType, items, raw };
  }
  for (let i = 0; i < n; i++) items[i] = readScalar(c, itemType, f);
  return { itemType, items };
}

/**
 * Parse a GGUF header from the first bytes of a file of `fileSize` bytes. Throws an internal
 * signal when `bytes` is a prefix too short for the header (readGgufFile then reads more);
 * every other problem is a typed FormatError naming the field and its offset.
 */
function parse(bytes: Uint8Array, fileSize: number): GgufHeader {
  const c = new Cursor(bytes, fileSize);
  const magic = c.u32('magic');
  if (magic !== GGUF_MAGIC) {
    throw new BadMagicError('not a GGUF file', { field: 'magic', offset: 0, expected: '"GGUF"', actual: `0x${magic.toString(16)}` });
  }
  const version = c.u32('version');
  if (version === 1) throw new OldFormatError('GGUF version 1 is not supported (32-bit counts); reconvert with a current llama.cpp', { field: 'version', offset: 4, actual: 1 });
  if (version !== 2 && version !== 3) throw new InvalidValueError('unsupported GGUF version', { field: 'version', offset: 4, expected: '2 or 3', actual: version });
  const nTensors = c.u64n('tensor_count');
  if (nTensors > GGUF_LIMITS.maxTensors) throw new InvalidValueError('too many tensors', { field: 'tensor_count', offset: 8, expected: `≤ ${GGUF_LIMITS.maxTensors}`, actual: nTensors });
  const nKv = c.u64n('metadata_kv_count');
  if (nKv > GGUF_LIMITS.maxMetadata) throw new InvalidValueError('too many metadata entries', { field: 'metadata_kv_count', offset: 16, expected: `≤ ${GGUF_LIMITS.maxMetadata}`, actual: nKv });
  // Each key/value takes at least 8 + 4 + 1 bytes, each tensor info at least 8 + 4 + 8 + 4 + 8.
  if (nKv * 13 + nTensors * 32 > c.remaining) {
    throw new TruncatedError('counts promise more entries than the file holds', { field: 'metadata_kv_count', offset: 16, expected: `≥ ${nKv * 13 + nTensors * 32} bytes`, actual: c.remaining });
  }
  const metadata = new Map<string, GgufEntry>();
  for (let i = 0; i < nKv; i++) {
    const at = c.pos;
    const key = c.string(`metadata[${i}].key`);
    if (metadata.has(key)) throw new InvalidValueError('duplicate metadata key', { field: key, offset: at });
    const type = c.u32(`${key} type`);
    if (!(type in GgufValueType)) throw new InvalidValueError('unknown metadata value type', { field: key, offset: c.pos - 4, expected: '0..12', actual: type });
    metadata.set(key, { type, value: readValue(c, type, key), offset: at });
  }
  let alignment = GGUF_DEFAULT_ALIGNMENT;
  const al = metadata.get('general.alignment');
  if (al !== undefined) {
    const v = al.value;
    if (al.type !== GgufValueType.UINT32 || typeof v !== 'number' || v < 1 || v > GGUF_LIMITS.maxAlignment || (v & (v - 1)) !== 0) {
      throw new InvalidValueError('general.alignment must be a u32 power of two', { field: 'general.alignment', offset: al.offset, expected: `1..${GGUF_LIMITS.maxAlignment}`, actual: String(v) });
    }
    alignment = v;
  }
  const raw: { name: string; dims: number[]; type: number; rel: number; at: number; elements: number }[] = [];
  const names = new Set<string>();
  for (let i = 0; i < nTensors; i++) {
    const at = c.pos;
    const name = c.string(`tensor[${i}].name`);
    if (names.has(name)) throw new InvalidValueError('duplicate tensor name', { field: name, offset: at });
    names.add(name);
    const nd = c.u32(`${name} n_dims`);
    if (nd < 1 || nd > GGUF_LIMITS.maxDims) throw new InvalidValueError('tensor rank out of range', { field: `${name} n_dims`, offset: c.pos - 4, expected: `1..${GGUF_LIMITS.maxDims}`, actual: nd });
    const dims: number[] = [];
    let elements = 1;
    for (let d = 0; d < nd; d++) {
      const dAt = c.pos;
      const v = c.u64n(`${name} dims[${d}]`);
      if (v < 1) throw new InvalidValueError('tensor dimension must be ≥ 1', { field: `${name} dims[${d}]`, offset: dAt, actual: v });
      elements *= v;
      if (!Number.isSafeInteger(elements)) throw new SizeOverflowError('tensor element count exceeds 2^53', { field: name, offset: dAt });
      dims.push(v);
    }
    const type = c.u32(`${name} type`);
    const relAt = c.pos;
    const rel = c.u64n(`${name} offset`);
    if (rel % alignment !== 0) throw new InvalidValueError('tensor offset is not aligned', { field: `${name} offset`, offset: relAt, expected: `a multiple of ${alignment}`, actual: rel });
    raw.push({ name, dims, type, rel, at, elements });
  }
  const headerBytes = c.pos;
  const dataOffset = Math.ceil(headerBytes / alignment) * alignment;
  if (dataOffset > fileSize) {
    throw new TruncatedError('file ends inside the alignment padding before the tensor data', { field: 'data', offset: headerBytes, expected: `${dataOffset} bytes`, actual: fileSize });
  }
  const tensors: GgufTensorInfo[] = raw.map((t) => {
    const byteLength = ggmlByteSize(t.type, t.elements);
    const offset = dataOffset + t.rel;
    if (GGML_BLOCKS[t.type as GgmlType] !== undefined && byteLength === undefined) {
      throw new InvalidValueError(`element count is not a whole number of ${ggmlTypeName(t.type)} blocks`, { field: t.name, offset: t.at, actual: t.elements });
    }
    if (!Number.isSafeInteger(offset) || offset + (byteLength ?? 0) > fileSize) {
      throw new TruncatedError('tensor data runs past the end of the file', { field: t.name, offset: t.at, expected: `end ≤ ${fileSize}`, actual: offset + (byteLength ?? 0) });
    }
    return Object.freeze({ name: t.name, dims: Object.freeze(t.dims), type: t.type, elements: t.elements, byteLength, offset, infoOffset: t.at });
  });
  return Object.freeze({
    version,
    alignment,
    metadata,
    tensors: Object.freeze(tensors),
    tensorByName: new Map(tensors.map((t) => [t.name, t])),
    dataOffset,
    headerBytes,
  });
}

/**
 * Parse a GGUF header held entirely in `bytes` (`fileSize` defaults to its length, i.e. the
 * bytes are the whole file or at least everything up to the tensor data).
 */
export function parseGgufHeader(bytes: Uint8Array, fileSize = bytes.length): GgufHeader {
  try {
    return parse(bytes, fileSize);
  } catch (e) {
    if (e instanceof NeedMoreBytes) {
      throw new TruncatedError('GGUF header is longer than the bytes given', { field: 'header', offset: bytes.length, expected: `≥ ${e.end} bytes` });
    }
    throw e;
  }
}

/** Read a GGUF file's header, reading a growing prefix (bounded by GGUF_LIMITS.maxHeaderBytes). */
export async function readGgufHeader(fh: FileHandle, path: string, fileSize: number): Promise<GgufHeader> {
  let want = Math.min(fileSize, 1 << 20);
  for (;;) {
    const prefix = await readRange(fh, path, 0, want, 'header');
    try {
      return parse(prefix, fileSize);
    } catch (e) {
      if (!(e instanceof NeedMoreBytes)) throw e instanceof FormatError ? e.withPath(path) : e;
      if (e.end > GGUF_LIMITS.maxHeaderBytes) {
        throw new InvalidValueError('GGUF header is larger than the limit', { path, field: 'header', offset: 0, expected: `≤ ${GGUF_LIMITS.maxHeaderBytes} bytes`, actual: `≥ ${e.end}` });
      }
      want = Math.min(fileSize, GGUF_LIMITS.maxHeaderBytes, Math.max(want * 4, e.end + (1 << 20)));
    }
  }
}

/**
 * readGgufHeader on a file descriptor, synchronously: what opening a model in place needs
 * (the `.m` reader is synchronous too). `readAt(position, length)` returns up to `length` bytes.
 */
export function readGgufHeaderSync(readAt: (position: number, length: number) => Uint8Array, path: string, fileSize: number): GgufHeader {
  let want = Math.min(fileSize, 1 << 20);
  for (;;) {
    try {
      return parse(readAt(0, want), fileSize);
    } catch (e) {
      if (!(e instanceof NeedMoreBytes)) throw e instanceof FormatError ? e.withPath(path) : e;
      if (e.end > GGUF_LIMITS.maxHeaderBytes) {
        throw new InvalidValueError('GGUF header is larger than the limit', { path, field: 'header', offset: 0, expected: `≤ ${GGUF_LIMITS.maxHeaderBytes} bytes`, actual: `≥ ${e.end}` });
      }
      want = Math.min(fileSize, GGUF_LIMITS.maxHeaderBytes, Math.max(want * 4, e.end + (1 << 20)));
    }
  }
}

/** An open GGUF file: the parsed header and ranged reads of tensor data. */
export class GgufFile {
  private constructor(
    readonly path: string,
    readonly fh: FileHandle,
    readonly size: number,
    readonly header: GgufHeader,
  ) {}

  static async open(path: string): Promise<GgufFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw fileError(e, path, 'open the GGUF file');
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new FormatError('not a regular file', { path });
      return new GgufFile(path, fh, st.size, await readGgufHeader(fh, path, st.size));
    } catch (e) {
      await fh.close();
      throw e instanceof FormatError ? e.withPath(path) : fileError(e, path, 'read');
    }
  }

  read(position: number, length: number, field: string): Promise<Uint8Array> {
    return readRange(this.fh, this.path, position, length, field);
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}

// ------------------------------------------------------------------------------------------
// Writing

/** A metadata value to write; the type says how (numbers are ambiguous). */
export type GgufWriteValue =
  | { type: Exclude<GgufValueType, GgufValueType.ARRAY | GgufValueType.STRING | GgufValueType.BOOL | GgufValueType.UINT64 | GgufValueType.INT64>; value: number }
  | { type: GgufValueType.UINT64 | GgufValueType.INT64; value: bigint | number }
  | { type: GgufValueType.BOOL; value: boolean }
  | { type: GgufValueType.STRING; value: string | Uint8Array }
  | { type: GgufValueType.ARRAY; itemType: GgufValueType; items: readonly (number | bigint | boolean | string | Uint8Array)[] | ArrayLike<number> };

export interface GgufWriteTensor {
  readonly name: string;
  readonly type: GgmlType;
  /** ggml order (ne0 first). */
  readonly dims: readonly number[];
  readonly byteLength: number;
}

export interface GgufLayout {
  /** Header bytes including the padding up to the data section. */
  readonly header: Uint8Array;
  /** Absolute offset of each tensor's data, in the order given. */
  readonly offsets: readonly number[];
  /** Total file size, with every tensor (the last one too) padded to the alignment, as gguf-py writes it. */
  readonly fileSize: number;
}

class Sink {
  chunks: Uint8Array[] = [];
  length = 0;
  push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  num(type: GgufValueType, v: number | bigint | boolean): void {
    const n = type === GgufValueType.STRING || type === GgufValueType.ARRAY ? 0 : SCALAR_BYTES[type]!;
    const b = new Uint8Array(n);
    const d = new DataView(b.buffer);
    switch (type) {
      case GgufValueType.UINT8: d.setUint8(0, Number(v)); break;
      case GgufValueType.INT8: d.setInt8(0, Number(v)); break;
      case GgufValueType.UINT16: d.setUint16(0, Number(v), true); break;
      case GgufValueType.INT16: d.setInt16(0, Number(v), true); break;
      case GgufValueType.UINT32: d.setUint32(0, Number(v), true); break;
      case GgufValueType.INT32: d.setInt32(0, Number(v), true); break;
      case GgufValueType.FLOAT32: d.setFloat32(0, Number(v), true); break;
      case GgufValueType.BOOL: d.setUint8(0, v ? 1 : 0); break;
      case GgufValueType.UINT64: d.setBigUint64(0, BigInt(v), true); break;
      case GgufValueType.INT64: d.setBigInt64(0, BigInt(v), true); break;
      case GgufValueType.FLOAT64: d.setFloat64(0, Number(v), true); break;
      default: throw new InvalidValueError('not a scalar type', { field: 'type', actual: type });
    }
    this.push(b);
  }
  u32(v: number): void {
    this.num(GgufValueType.UINT32, v);
  }
  u64(v: number): void {
    this.num(GgufValueType.UINT64, v);
  }
  str(s: string | Uint8Array): void {
    const b = typeof s === 'string' ? new TextEncoder().encode(s) : s;
    this.u64(b.length);
    this.push(b);
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }
}

/**
 * Serialize a GGUF v3 header: metadata (in the order given), tensor infos with offsets laid out
 * back to back in the order given, each padded to `alignment` (llama.cpp's loader requires
 * exactly this layout), and padding up to the data section.
 */
export function encodeGgufHeader(metadata: readonly (readonly [string, GgufWriteValue])[], tensors: readonly GgufWriteTensor[], alignment = GGUF_DEFAULT_ALIGNMENT): GgufLayout {
  const s = new Sink();
  s.u32(GGUF_MAGIC);
  s.u32(3);
  s.u64(tensors.length);
  s.u64(metadata.length);
  for (const [key, v] of metadata) {
    s.str(key);
    s.u32(v.type);
    if (v.type === GgufValueType.ARRAY) {
      s.u32(v.itemType);
      s.u64(v.items.length);
      for (let i = 0; i < v.items.length; i++) {
        const it = (v.items as ArrayLike<unknown>)[i];
        if (v.itemType === GgufValueType.STRING) s.str(it as string | Uint8Array);
        else s.num(v.itemType, it as number);
      }
    } else if (v.type === GgufValueType.STRING) s.str(v.value);
    else s.num(v.type, v.value);
  }
  const rel: number[] = [];
  let o = 0;
  for (const t of tensors) {
    s.str(t.name);
    s.u32(t.dims.length);
    for (const d of t.dims) s.u64(d);
    s.u32(t.type);
    s.u64(o);
    rel.push(o);
    o += Math.ceil(t.byteLength / alignment) * alignment;
  }
  const pad = (alignment - (s.length % alignment)) % alignment;
  s.push(new Uint8Array(pad));
  const header = s.bytes();
  return { header, offsets: rel.map((r) => header.length + r), fileSize: header.length + o };
}

/** Convenience getters over parsed metadata, with typed errors naming the key. */
export class GgufMetadataReader {
  constructor(
    readonly header: GgufHeader,
    readonly path?: string,
  ) {}

  entry(key: string): GgufEntry | undefined {
    return this.header.metadata.get(key);
  }

  has(key: string): boolean {
    return this.header.metadata.has(key);
  }

  #bad(key: string, reason: string, expected: string, actual: unknown): never {
    throw new InvalidValueError(reason, { path: this.path, field: key, offset: this.entry(key)?.offset, expected, actual: String(actual) });
  }

  string(key: string): string | undefined {
    const e = this.entry(key);
    if (e === undefined) return undefined;
    if (typeof e.value !== 'string') this.#bad(key, 'metadata value has the wrong type', 'a string', GgufValueType[e.type]);
    return e.value;
  }

  /** An integer value of any integer type (a float is accepted only when it is integral). */
  int(key: string): number | undefined {
    const e = this.entry(key);
    if (e === undefined) return undefined;
    const v = typeof e.value === 'bigint' ? Number(e.value) : e.value;
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.#bad(key, 'metadata value must be an integer', 'an integer', typeof v === 'object' ? 'array' : v);
    return v;
  }

  float(key: string): number | undefined {
    const e = this.entry(key);
    if (e === undefined) return undefined;
    const v = typeof e.value === 'bigint' ? Number(e.value) : e.value;
    if (typeof v !== 'number') this.#bad(key, 'metadata value must be a number', 'a number', typeof v === 'object' ? 'array' : v);
    return v;
  }

  bool(key: string): boolean | undefined {
    const e = this.entry(key);
    if (e === undefined) return undefined;
    if (typeof e.value !== 'boolean') this.#bad(key, 'metadata value must be a bool', 'a bool', GgufValueType[e.type]);
    return e.value;
  }

  array(key: string): GgufArray | undefined {
    const e = this.entry(key);
    if (e === undefined) return undefined;
    if (typeof e.value !== 'object') this.#bad(key, 'metadata value must be an array', 'an array', GgufValueType[e.type]);
    return e.value;
  }
}
