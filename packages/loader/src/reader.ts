import { closeSync, constants, fstatSync, openSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { FileChangedError, fileError } from './errors.js';
import { nativeAddon, type NativeAddon } from './native.js';
import { preadFully } from './weights.js';

/**
 * The explicit read path for bytes that do not stay mapped: `pread` into reused buffers, with
 * several reads in flight from the native addon's own threads, and `O_DIRECT` (no page cache,
 * no copy: the device writes into the buffer) for the block-aligned parts when the file system
 * accepts it. Without the addon it falls back to one JavaScript pread at a time.
 *
 * Threads: an O_DIRECT read sleeps while the device works, so {@link DIRECT_READS} of them are
 * in flight; a buffered pread copies from the page cache on the CPU, so at most as many run as
 * there are cores (and no more than {@link BUFFERED_READS}).
 *
 * Environment overrides (for measurements): `AIRLLM_READ_DIRECT=0|1`, `AIRLLM_READ_THREADS=n`.
 */
export const DIRECT_READS = 4;
export const BUFFERED_READS = 2;
/** Bytes per read request. */
export const READ_CHUNK = 8 << 20;

export interface ReadPathInfo {
  readonly native: boolean;
  readonly direct: boolean;
  readonly threads: number;
}

/** A buffer to read into: page-aligned anonymous memory (O_DIRECT can fill it) when the addon is there. */
export function allocateReadBuffer(bytes: number): SharedArrayBuffer {
  const addon = nativeAddon();
  return addon !== undefined && typeof addon.allocate === 'function' ? addon.allocate(bytes) : new SharedArrayBuffer(bytes);
}

/** Reads file ranges into SharedArrayBuffers on the calling thread (it blocks: a worker's job). */
export class SegmentReader {
  readonly #path: string;
  readonly #fd: number;
  readonly #size: number;
  readonly #addon: NativeAddon | undefined;
  readonly #directFd: number;
  readonly threads: number;

  /** Read from `fd` (open on `path`, `size` bytes when planned); opens its own O_DIRECT descriptor. */
  constructor(path: string, fd: number, size: number) {
    this.#path = path;
    this.#fd = fd;
    this.#size = size;
    const addon = nativeAddon();
    this.#addon = addon !== undefined && typeof addon.readInto === 'function' ? addon : undefined;
    const wantDirect = process.env.AIRLLM_READ_DIRECT !== '0';
    let directFd = -1;
    if (this.#addon !== undefined && wantDirect && constants.O_DIRECT !== undefined) {
      try {
        directFd = openSync(path, constants.O_RDONLY | constants.O_DIRECT);
      } catch {
        // tmpfs and some other file systems refuse O_DIRECT: buffered reads only.
      }
    }
    this.#directFd = directFd;
    const env = Number(process.env.AIRLLM_READ_THREADS);
    const fallback = directFd >= 0 ? DIRECT_READS : Math.min(BUFFERED_READS, availableParallelism());
    this.threads = Number.isInteger(env) && env >= 1 && env <= 16 ? env : fallback;
  }

  get info(): ReadPathInfo {
    return { native: this.#addon !== undefined, direct: this.#directFd >= 0, threads: this.#addon !== undefined ? this.threads : 1 };
  }

  /**
   * Read file bytes [fileOffset, fileOffset + length) into `dst` at `dstOffset`. A file that ends
   * early is a FileChangedError naming the offset; other failures are the loader's file errors.
   */
  read(dst: SharedArrayBuffer, dstOffset: number, fileOffset: number, length: number): void {
    if (this.#addon === undefined) {
      preadFully(this.#fd, new Uint8Array(dst, dstOffset, length), fileOffset, this.#path, this.#size);
      return;
    }
    try {
      this.#addon.readInto(this.#fd, dst, dstOffset, fileOffset, length, this.threads, READ_CHUNK, this.#directFd);
    } catch (e) {
      if ((e as { code?: string }).code === 'ERR_SHORT_READ') {
        throw new FileChangedError('file ended early: it was truncated after it was opened', {
          path: this.#path,
          offset: fileOffset,
          expected: this.#size,
          actual: fstatSync(this.#fd).size,
        });
      }
      throw fileError(e, this.#path);
    }
  }

  close(): void {
    if (this.#directFd >= 0) closeSync(this.#directFd);
  }
}
