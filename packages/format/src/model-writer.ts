import type { FileHandle } from 'node:fs/promises';
import { dtypeInfo, floatTypeName, type DTypeInfo } from './dtypes.js';
import { fileError, FileSizeMismatchError, FormatError, InvalidValueError, TensorMismatchError } from './errors.js';
import { commitPartial, openPartial, removeQuietly } from './fs-util.js';
import { parseModelHeader, writeModelHeader, type HeaderKey, type HeaderValues, type ModelHeader } from './header.js';
import { buildModelLayout, type ModelLayout, type TensorInfo } from './layout.js';

/** `(bytesWritten, totalBytes)`, both counting the header; totalBytes = layout.fileSize. */
export type ProgressCallback = (bytesWritten: number, totalBytes: number) => void;

export interface ModelWriterOptions {
  /** Header key order, e.g. `CONVERT_LLAMA_KEY_ORDER`; keys not listed follow in ascending id order. */
  keyOrder?: readonly HeaderKey[];
  /** Replace an existing file at the path (and a stale `<path>.partial`). Default false. */
  overwrite?: boolean;
  /** Called each time a buffer has reached the file, and once at the end. */
  onProgress?: ProgressCallback;
  /** Bytes per write buffer; two are used so encoding overlaps the previous write. Default 8 MiB. */
  bufferBytes?: number;
  /** fsync before renaming into place, so a crash cannot leave a renamed but empty file. Default true. */
  fsync?: boolean;
}

const DEFAULT_BUFFER = 8 << 20;

function elementCount(t: TensorInfo): number {
  return t.shape.length === 1 ? t.shape[0]! : t.shape[0]! * t.shape[1]!;
}

/**
 * Streams a `.m` file to disk: the header, then each tensor strictly in layout order, through
 * two fixed buffers (the model is never held in memory). Tensors can be given whole
 * (`writeTensor`) or in pieces of whole blocks (`writeTensorChunk`), as floats to encode with
 * the dtype table or as bytes already in the tensor's dtype.
 *
 * The bytes go to `<path>.partial`, which `close()` renames to `path` only after checking that
 * every tensor was written and the size equals `layout.fileSize`. Any failure (a mismatching
 * tensor, an I/O error, an incomplete model at close) removes the partial file, and every later
 * call rejects with the first error. Calls must not overlap (await each one).
 */
export class ModelFileWriter {
  readonly path: string;
  readonly partialPath: string;
  readonly header: ModelHeader;
  readonly layout: ModelLayout;

  readonly #fh: FileHandle;
  readonly #overwrite: boolean;
  readonly #fsync: boolean;
  readonly #onProgress: ProgressCallback | undefined;
  readonly #bufs: [Uint8Array, Uint8Array];
  #cur = 0;
  /** Bytes used in the current buffer. */
  #fill = 0;
  /** File position of the current buffer's first byte. */
  #bufStart = 0;
  /** Bytes that have reached the file. */
  #flushed = 0;
  #pending: Promise<void> | undefined;

  #tensorIndex = 0;
  /** Bytes of the current tensor already accepted. */
  #tensorDone = 0;
  #busy = false;
  #state: 'open' | 'closed' | 'failed' = 'open';
  #failure: unknown;

  private constructor(path: string, partialPath: string, fh: FileHandle, header: ModelHeader, layout: ModelLayout, options: ModelWriterOptions) {
    this.path = path;
    this.partialPath = partialPath;
    this.header = header;
    this.layout = layout;
    this.#fh = fh;
    this.#overwrite = options.overwrite ?? false;
    this.#fsync = options.fsync ?? true;
    this.#onProgress = options.onProgress;
    const size = options.bufferBytes ?? DEFAULT_BUFFER;
    this.#bufs = [new Uint8Array(size), new Uint8Array(size)];
  }

  /**
   * Validate the header values, build the layout and create `<path>.partial`. Rejects with a
   * typed error before touching the file system when the header is invalid.
   */
  static async open(path: string, values: HeaderValues, options: ModelWriterOptions = {}): Promise<ModelFileWriter> {
    const bufferBytes = options.bufferBytes ?? DEFAULT_BUFFER;
    // 68 = lcm-friendly minimum: one Q80 block (34 bytes) twice, so any dtype's block fits.
    if (!Number.isSafeInteger(bufferBytes) || bufferBytes < 68 || bufferBytes > 1 << 30) {
      throw new InvalidValueError('write buffer size out of range', { field: 'bufferBytes', expected: '68..2^30', actual: bufferBytes });
    }
    let headerBytes: Uint8Array;
    let header: ModelHeader;
    let layout: ModelLayout;
    try {
      headerBytes = writeModelHeader(values, options.keyOrder);
      header = parseModelHeader(headerBytes);
      layout = buildModelLayout(header);
    } catch (e) {
      throw e instanceof FormatError ? e.withPath(path) : e;
    }
    const { fh, partialPath } = await openPartial(path, options.overwrite ?? false);
    const w = new ModelFileWriter(path, partialPath, fh, header, layout, options);
    await w.#guard(async () => w.#append(headerBytes));
    return w;
  }

  /** The tensor the next write must provide, or undefined once all are written. */
  get nextTensor(): TensorInfo | undefined {
    return this.layout.tensors[this.#tensorIndex];
  }

  /** Bytes accepted so far (header included), whether or not they have reached the file yet. */
  get bytesAccepted(): number {
    return this.#bufStart + this.#fill;
  }

  /**
   * Write the whole next tensor: a Float32Array of exactly its element count (encoded to its
   * dtype), or a Uint8Array of exactly its byte length (already encoded). `name`, when given,
   * must be the next tensor's name (a cheap check that the caller's order matches the layout).
   */
  async writeTensor(data: Float32Array | Uint8Array, name?: string): Promise<void> {
    return this.#guard(async () => {
      const t = this.#expectTensor(name);
      if (this.#tensorDone !== 0) {
        throw new TensorMismatchError('tensor is partly written; continue it with writeTensorChunk', {
          field: t.name,
          offset: t.offset + this.#tensorDone,
        });
      }
      if (data instanceof Float32Array) {
        const n = elementCount(t);
        if (data.length !== n) {
          throw new TensorMismatchError('wrong number of elements', { field: t.name, offset: t.offset, expected: `${n} floats [${t.shape.join(', ')}]`, actual: data.length });
        }
      } else if (data instanceof Uint8Array) {
        if (data.byteLength !== t.byteLength) {
          throw new TensorMismatchError(`wrong byte length for ${floatTypeName(t.dtype)} data`, { field: t.name, offset: t.offset, expected: t.byteLength, actual: data.byteLength });
        }
      }
      await this.#writePiece(t, data);
    });
  }

  /**
   * Write the next piece of the current tensor: a whole number of its dtype's blocks, as floats
   * or encoded bytes. The tensor is complete once all its bytes have been given.
   */
  async writeTensorChunk(data: Float32Array | Uint8Array, name?: string): Promise<void> {
    return this.#guard(async () => {
      const t = this.#expectTensor(name);
      await this.#writePiece(t, data);
    });
  }

  /**
   * Flush, verify that every tensor was written and the file has exactly `layout.fileSize`
   * bytes, and rename `<path>.partial` to `path`. Resolves with the layout.
   */
  async close(): Promise<ModelLayout> {
    await this.#guard(async () => {
      const t = this.nextTensor;
      if (t !== undefined) {
        throw new TensorMismatchError('model is incomplete: tensor not (fully) written', {
          path: this.path,
          field: t.name,
          offset: t.offset + this.#tensorDone,
          expected: `${this.layout.fileSize} bytes in all`,
          actual: this.bytesAccepted,
        });
      }
      await this.#flush();
      await this.#drain();
      const { size } = await this.#fh.stat();
      if (size !== this.layout.fileSize) {
        throw new FileSizeMismatchError('written file does not have the layout size', {
          path: this.partialPath,
          field: 'file size',
          offset: Math.min(size, this.layout.fileSize),
          expected: this.layout.fileSize,
          actual: size,
        });
      }
      if (this.#fsync) await this.#fh.sync();
      this.#state = 'closed';
      await this.#fh.close();
      await commitPartial(this.partialPath, this.path, this.#overwrite);
    });
    return this.layout;
  }

  /** Stop writing and remove the partial file. Safe to call at any time, also after a failure. */
  async abort(): Promise<void> {
    if (this.#state === 'closed') return;
    await this.#fail(new FormatError('write aborted', { path: this.path }));
  }

  // ---------------------------------------------------------------------------------------

  async #guard<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#state === 'failed') throw this.#failure;
    if (this.#state === 'closed') throw new FormatError('writer is closed', { path: this.path });
    if (this.#busy) {
      // Interleaved calls would interleave tensor bytes; refuse without disturbing the write.
      throw new FormatError('previous write has not finished (await each call)', { path: this.path });
    }
    this.#busy = true;
    try {
      return await fn();
    } catch (e) {
      const err = e instanceof FormatError ? e : fileError(e, this.partialPath, 'write the model');
      await this.#fail(err);
      throw err;
    } finally {
      this.#busy = false;
    }
  }

  async #fail(err: unknown): Promise<void> {
    if (this.#state === 'failed') return;
    const wasOpen = this.#state === 'open';
    this.#state = 'failed';
    this.#failure = err;
    if (this.#pending !== undefined) await this.#pending.catch(() => undefined);
    if (wasOpen) await this.#fh.close().catch(() => undefined);
    await removeQuietly(this.partialPath);
  }

  #expectTensor(name: string | undefined): TensorInfo {
    const t = this.nextTensor;
    if (t === undefined) {
      throw new TensorMismatchError('all tensors are already written', { field: name ?? 'tensor', offset: this.layout.fileSize, path: this.path });
    }
    if (name !== undefined && name !== t.name) {
      throw new TensorMismatchError('tensors must be written in layout order', { field: name, offset: t.offset, expected: t.name, actual: name });
    }
    return t;
  }

  async #writePiece(t: TensorInfo, data: Float32Array | Uint8Array): Promise<void> {
    const info = dtypeInfo(t.dtype);
    const left = t.byteLength - this.#tensorDone;
    const at = t.offset + this.#tensorDone;
    let bytes: number;
    if (data instanceof Float32Array) {
      if (data.length % info.blockSize !== 0) {
        throw new TensorMismatchError(`chunk is not a whole number of ${info.name} blocks`, { field: t.name, offset: at, expected: `a multiple of ${info.blockSize} floats`, actual: data.length });
      }
      bytes = (data.length / info.blockSize) * info.bytesPerBlock;
    } else if (data instanceof Uint8Array) {
      if (data.byteLength % info.bytesPerBlock !== 0) {
        throw new TensorMismatchError(`chunk is not a whole number of ${info.name} blocks`, { field: t.name, offset: at, expected: `a multiple of ${info.bytesPerBlock} bytes`, actual: data.byteLength });
      }
      bytes = data.byteLength;
    } else {
      throw new TensorMismatchError('tensor data must be a Float32Array or a Uint8Array', { field: t.name, offset: at, actual: Object.prototype.toString.call(data) });
    }
    if (bytes > left) {
      throw new TensorMismatchError('data runs past the end of the tensor', { field: t.name, offset: at, expected: `≤ ${left} bytes`, actual: bytes });
    }
    if (data instanceof Float32Array) await this.#encode(info, data);
    else await this.#append(data);
    this.#tensorDone += bytes;
    if (this.#tensorDone === t.byteLength) {
      this.#tensorIndex++;
      this.#tensorDone = 0;
    }
  }

  /** Encode floats straight into the write buffer, a buffer-full of whole blocks at a time. */
  async #encode(info: DTypeInfo, src: Float32Array): Promise<void> {
    let i = 0;
    while (i < src.length) {
      let space = this.#bufs[this.#cur].length - this.#fill;
      if (space < info.bytesPerBlock) {
        await this.#flush();
        space = this.#bufs[this.#cur].length;
      }
      const blocks = Math.min(Math.floor(space / info.bytesPerBlock), (src.length - i) / info.blockSize);
      const n = blocks * info.blockSize;
      const nb = blocks * info.bytesPerBlock;
      info.quantize(src.subarray(i, i + n), this.#bufs[this.#cur].subarray(this.#fill, this.#fill + nb));
      this.#fill += nb;
      i += n;
    }
  }

  async #append(src: Uint8Array): Promise<void> {
    let i = 0;
    while (i < src.length) {
      const buf = this.#bufs[this.#cur];
      if (this.#fill === buf.length) await this.#flush();
      const n = Math.min(buf.length - this.#fill, src.length - i);
      this.#bufs[this.#cur].set(src.subarray(i, i + n), this.#fill);
      this.#fill += n;
      i += n;
    }
  }

  /**
   * Hand the current buffer to the file and switch to the other one. The write runs while the
   * caller fills the other buffer; before reusing a buffer its earlier write must be done,
   * which waiting for the single pending write guarantees (buffers alternate).
   */
  async #flush(): Promise<void> {
    if (this.#fill === 0) return;
    await this.#drain();
    const buf = this.#bufs[this.#cur];
    const n = this.#fill;
    const pos = this.#bufStart;
    const p = this.#writeAll(buf, n, pos);
    // Mark handled now: the rejection is re-raised when the next flush or close awaits it, and
    // the caller may be busy encoding (no await) when the write fails.
    p.catch(() => undefined);
    this.#pending = p;
    this.#cur ^= 1;
    this.#bufStart += n;
    this.#fill = 0;
  }

  async #drain(): Promise<void> {
    const p = this.#pending;
    if (p === undefined) return;
    this.#pending = undefined;
    await p;
  }

  async #writeAll(buf: Uint8Array, n: number, pos: number): Promise<void> {
    let done = 0;
    while (done < n) {
      const { bytesWritten } = await this.#fh.write(buf, done, n - done, pos + done);
      if (bytesWritten === 0) throw new FormatError('write made no progress', { path: this.partialPath, offset: pos + done });
      done += bytesWritten;
    }
    this.#flushed += n;
    this.#onProgress?.(this.#flushed, this.layout.fileSize);
  }
}
