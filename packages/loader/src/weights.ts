import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import {
  buildModelLayout,
  checkFileSize,
  FormatError,
  MAX_MODEL_HEADER_BYTES,
  parseModelHeader,
  readAt,
  type ModelHeader,
  type ModelLayout,
  type TensorInfo,
  type WeightsLayout,
} from '@airllm/format';
import { resolveBackend, type BackendChoice, type BackendKind } from './backend.js';
import {
  ClosedError,
  EmptyFileError,
  FileChangedError,
  fileError,
  NotRegularFileError,
  OutOfRangeError,
} from './errors.js';
import type { Advice, NativeAddon } from './native.js';
import { MAX_VIEW_ELEMENTS, tensorViewAt, type TensorView } from './views.js';

/** Both backends put a byte at the same address modulo this as its file offset (see views.ts). */
export const ALIGN_MIRROR = 4096;

/** Largest single pread; Node refuses lengths ≥ 2^31. */
const MAX_READ = 1 << 30;

export interface WeightsOptions {
  /** `auto` (default; or env AIRLLM_LOADER_BACKEND) uses mmap when the addon loads. */
  backend?: BackendChoice;
  /**
   * Where the file's tensors are, when it is not a `.m` file (a layout another reader built
   * from the same file). Default: parse the file as `.m` and build its layout.
   */
  layout?: WeightsLayout;
}

/** What the residency and its workers need from an open weights object. Not public API. */
export interface WeightsInternals {
  readonly path: string;
  readonly fd: number;
  readonly size: number;
  readonly kind: BackendKind;
  readonly map: SharedArrayBuffer | undefined;
  readonly addon: NativeAddon | undefined;
  /** Called by close() so residencies on these weights shut down first. */
  readonly onClose: Set<() => void>;
}

const internals = new WeakMap<MemoryMappedWeights, WeightsInternals>();

export function weightsInternals(w: MemoryMappedWeights): WeightsInternals {
  const i = internals.get(w);
  if (i === undefined) throw new ClosedError('weights are not open', { path: w.path });
  return i;
}

/** pread exactly `dst.length` bytes at `position`; a short read means the file shrank. */
export function preadFully(fd: number, dst: Uint8Array, position: number, path: string, expectedSize: number): void {
  let done = 0;
  while (done < dst.length) {
    const n = readSync(fd, dst, done, Math.min(dst.length - done, MAX_READ), position + done);
    if (n === 0) {
      const actual = fstatSync(fd).size;
      throw new FileChangedError('file ended early: it was truncated after it was opened', {
        path,
        offset: position + done,
        expected: expectedSize,
        actual,
      });
    }
    done += n;
  }
}

/** Check that the file still has the size it had at open (and, mapped, that no read faulted). */
export function checkUnchanged(fd: number, size: number, path: string, map?: SharedArrayBuffer, addon?: NativeAddon): void {
  const actual = fstatSync(fd).size;
  if (actual !== size) {
    throw new FileChangedError('file size changed after it was opened (truncated while mapped?)', {
      path,
      field: 'file size',
      expected: size,
      actual,
    });
  }
  if (map !== undefined && addon !== undefined && addon.busFaults(map) > 0) {
    throw new FileChangedError('a read past the end of the file faulted (file shrank while mapped; those bytes read as 0)', {
      path,
      expected: size,
    });
  }
}

/**
 * A model file's weights, readable with no copy. The seed's API (`open`, `loadLayerWeights`,
 * `close`) plus typed per-tensor views from the layout table.
 *
 * With the `mmap` backend every view points into one read-only SharedArrayBuffer over the file;
 * the kernel pages bytes in on first access. With the `read` fallback, `loadLayerWeights` and
 * `tensorView` read the bytes into a fresh SharedArrayBuffer (a copy; use `LayerResidency` to
 * keep memory bounded).
 *
 * After `close()`, do not use views obtained earlier: in mmap mode they stay readable (the
 * pages are dropped and re-read from the file on access; the address range is unmapped only
 * when the last SharedArrayBuffer referring to it is garbage-collected), so a stale view is
 * slow, never a crash, unless the file is also truncated.
 */
export class MemoryMappedWeights {
  readonly path: string;
  readonly #options: WeightsOptions;
  #layout: WeightsLayout | undefined;
  #header: ModelHeader | undefined;
  #closed = false;

  constructor(path: string, options: WeightsOptions = {}) {
    this.path = path;
    this.#options = options;
  }

  /** Open the file, parse its header and layout, check its size, map it (mmap backend). */
  async open(): Promise<this> {
    if (this.#closed) throw new ClosedError('weights were closed; make a new MemoryMappedWeights', { path: this.path });
    if (internals.has(this)) return this;
    const path = this.path;
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (e) {
      throw fileError(e, path);
    }
    try {
      const st = fstatSync(fd);
      if (st.isDirectory()) throw new NotRegularFileError('is a directory, not a model file', { path });
      if (!st.isFile()) throw new NotRegularFileError('not a regular file', { path });
      if (st.size === 0) throw new EmptyFileError('file is empty', { path, expected: '> 0 bytes', actual: 0 });
      if (this.#options.layout !== undefined) {
        this.#layout = this.#options.layout;
        if (this.#layout.fileSize > st.size) {
          throw new OutOfRangeError('the layout describes bytes past the end of the file', { path, field: 'file size', expected: `≥ ${this.#layout.fileSize}`, actual: st.size });
        }
      } else {
        let layout: ModelLayout;
        try {
          layout = buildModelLayout(parseModelHeader(readAt(fd, 0, Math.min(st.size, MAX_MODEL_HEADER_BYTES))));
        } catch (e) {
          throw e instanceof FormatError ? e.withPath(path) : e;
        }
        checkFileSize(layout, st.size, path);
        this.#layout = layout;
        this.#header = layout.header;
      }
      const backend = resolveBackend(this.#options.backend);
      let map: SharedArrayBuffer | undefined;
      if (backend.kind === 'mmap') {
        try {
          map = backend.addon!.map(fd);
        } catch (e) {
          throw fileError(e, path);
        }
      }
      internals.set(this, { path, fd, size: st.size, kind: backend.kind, map, addon: backend.addon, onClose: new Set() });
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    return this;
  }

  get isOpen(): boolean {
    return internals.has(this);
  }
  get layout(): WeightsLayout {
    if (this.#layout === undefined || !this.isOpen) throw this.#closedError();
    return this.#layout;
  }
  /** The `.m` header (undefined when the layout was given: another format). */
  get header(): ModelHeader | undefined {
    if (!this.isOpen) throw this.#closedError();
    return this.#header;
  }
  get backend(): BackendKind {
    return this.#internals().kind;
  }
  get fileSize(): number {
    return this.#internals().size;
  }
  /** The SharedArrayBuffer over the whole file (mmap backend), to post to workers. */
  get mapping(): SharedArrayBuffer | undefined {
    return this.#internals().map;
  }

  /**
   * Bytes [offset, offset+size) of the file: a zero-copy view of the mapping (mmap), or a copy
   * read into a new SharedArrayBuffer (read fallback). Any alignment; offsets beyond 4 GiB
   * work. One view can span at most 2^32 bytes (V8's typed array limit on Node 20).
   */
  loadLayerWeights(offset: number, size: number): Uint8Array {
    const i = this.#internals();
    this.#checkRange(offset, size, i.size);
    if (size > MAX_VIEW_ELEMENTS) {
      throw new OutOfRangeError('one view can span at most 2^32 bytes', { path: i.path, offset, expected: `≤ ${MAX_VIEW_ELEMENTS}`, actual: size });
    }
    checkUnchanged(i.fd, i.size, i.path, i.map, i.addon);
    if (i.map !== undefined) return new Uint8Array(i.map, offset, size);
    return this.#readCopy(i, offset, size);
  }

  /** Layer `l`'s bytes, one array per extent (a `.m` layer has one), as `loadLayerWeights` returns them. */
  layerWeights(layer: number): Uint8Array[] {
    const info = this.layout.layers[layer];
    if (!Number.isInteger(layer) || info === undefined) {
      throw new OutOfRangeError('no such layer', { path: this.path, field: 'layer', expected: `0..${this.layout.layers.length - 1}`, actual: layer });
    }
    return info.extents.map((e) => this.loadLayerWeights(e.offset, e.size));
  }

  /** A typed view of one tensor of the layout (see `tensorViewAt` for dtypes and alignment). */
  tensorView(t: TensorInfo): TensorView {
    const i = this.#internals();
    this.#checkRange(t.offset, t.byteLength, i.size);
    checkUnchanged(i.fd, i.size, i.path, i.map, i.addon);
    if (i.map !== undefined) return tensorViewAt(i.map, t.offset, t);
    const bytes = this.#readCopy(i, t.offset, t.byteLength);
    return tensorViewAt(bytes.buffer, bytes.byteOffset, t);
  }

  /**
   * Copy rows [firstRow, firstRow+count) of a matrix tensor (e.g. the embedding) into `dst`.
   * Always a pread, in both backends: a few rows per token through the mapping would leave the
   * touched pages of a large embedding resident for good, outside any budget.
   */
  readRows(t: TensorInfo, firstRow: number, count: number, dst: ArrayBufferView): void {
    const i = this.#internals();
    readRowsAt(i.fd, i.size, i.path, t, firstRow, count, dst);
  }

  /** madvise a byte range of the mapping (no-op in the read fallback). */
  advise(offset: number, length: number, advice: Advice): void {
    const i = this.#internals();
    this.#checkRange(offset, length, i.size);
    if (i.map !== undefined) i.addon!.advise(i.map, offset, length, advice);
  }

  /** Bytes of the range in the page cache (mincore; mmap backend only, else undefined). */
  residentBytes(offset = 0, length?: number): number | undefined {
    const i = this.#internals();
    const len = length ?? i.size - offset;
    this.#checkRange(offset, len, i.size);
    return i.map !== undefined ? i.addon!.residentBytes(i.map, offset, len) : undefined;
  }

  /** Throws FileChangedError if the file's size changed since open (or a mapped read faulted). */
  checkFile(): void {
    const i = this.#internals();
    checkUnchanged(i.fd, i.size, i.path, i.map, i.addon);
  }

  /**
   * Shut down residencies on these weights, drop the mapping's resident pages, close the fd.
   * Idempotent. See the class comment for what happens to views obtained earlier.
   */
  close(): void {
    const i = internals.get(this);
    this.#closed = true;
    if (i === undefined) return;
    for (const fn of [...i.onClose]) fn();
    internals.delete(this);
    if (i.map !== undefined) i.addon!.close(i.map);
    closeSync(i.fd);
  }

  #internals(): WeightsInternals {
    const i = internals.get(this);
    if (i === undefined) throw this.#closedError();
    return i;
  }

  #closedError(): ClosedError {
    return new ClosedError(this.#closed ? 'weights were closed' : 'weights are not open (call open() first)', { path: this.path });
  }

  #checkRange(offset: number, size: number, fileSize: number): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(size) || offset < 0 || size < 0 || offset + size > fileSize) {
      throw new OutOfRangeError('byte range outside the file', {
        path: this.path,
        offset,
        expected: `0 ≤ offset, offset + size ≤ ${fileSize}`,
        actual: `${offset}+${size}`,
      });
    }
  }

  #readCopy(i: WeightsInternals, offset: number, size: number): Uint8Array {
    const pad = offset % ALIGN_MIRROR;
    const out = new Uint8Array(new SharedArrayBuffer(pad + size), pad, size);
    preadFully(i.fd, out, offset, i.path, i.size);
    return out;
  }
}

/** readRows for any thread that has the fd (also used by ResidencyClient). */
export function readRowsAt(fd: number, fileSize: number, path: string, t: TensorInfo, firstRow: number, count: number, dst: ArrayBufferView): void {
  const rows = t.shape.length === 2 ? t.shape[0]! : 1;
  const rowBytes = t.byteLength / rows;
  if (!Number.isInteger(firstRow) || !Number.isInteger(count) || firstRow < 0 || count < 0 || firstRow + count > rows) {
    throw new OutOfRangeError('rows outside the tensor', { path, field: t.name, expected: `rows within 0..${rows}`, actual: `${firstRow}+${count}` });
  }
  const bytes = count * rowBytes;
  if (dst.byteLength < bytes) {
    throw new OutOfRangeError('destination too small for the rows', { path, field: t.name, expected: `≥ ${bytes} bytes`, actual: dst.byteLength });
  }
  if (t.offset + t.byteLength > fileSize) {
    throw new OutOfRangeError('tensor outside the file', { path, field: t.name, offset: t.offset, expected: `≤ ${fileSize}`, actual: t.offset + t.byteLength });
  }
  preadFully(fd, new Uint8Array(dst.buffer, dst.byteOffset, bytes), t.offset + firstRow * rowBytes, path, fileSize);
}
