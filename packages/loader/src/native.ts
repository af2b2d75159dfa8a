import { createRequire } from 'node:module';

/** The advice names `advise` accepts (`populate` = MADV_POPULATE_READ, Linux ≥ 5.14). */
export type Advice = 'willneed' | 'dontneed' | 'sequential' | 'random' | 'normal' | 'populate';

/**
 * The native addon (native/mmap.cc). Every call that takes a SharedArrayBuffer accepts only one
 * returned by `map` (it throws `ERR_NOT_MAPPED` otherwise: DONTNEED on ordinary memory would
 * zero it). Offsets and lengths are byte counts, any alignment, exact up to 2^53.
 */
export interface NativeAddon {
  /** Map the whole regular file open on `fd` read-only; throws code ENOTREG / EEMPTY / errno. */
  map(fd: number): SharedArrayBuffer;
  advise(map: SharedArrayBuffer, offset: number, length: number, advice: Advice): void;
  /** mlock (`on`, default) or munlock the range; throws with the errno code (EPERM, ENOMEM…). */
  lock(map: SharedArrayBuffer, offset: number, length: number, on?: boolean): void;
  /** Read one byte per page of the range (faulting it in); returns their sum. */
  touch(map: SharedArrayBuffer, offset: number, length: number): number;
  /** Bytes of the range present in the page cache (mincore). */
  residentBytes(map: SharedArrayBuffer, offset: number, length: number): number;
  /** MADV_DONTNEED the whole mapping and refuse further calls; unmapped at GC. Idempotent. */
  close(map: SharedArrayBuffer): void;
  /** SIGBUS faults absorbed in this mapping (reads past a truncated end of file). */
  busFaults(map: SharedArrayBuffer): number;
  isMapping(value: unknown): boolean;
  /** fdatasync + posix_fadvise(DONTNEED) on the file's range (length 0 = to the end). */
  dropFileCache(path: string, offset?: number, length?: number): void;
  /**
   * pread file bytes [fileOffset, fileOffset + length) of `fd` into `target` at `targetOffset`
   * with `threads` reads in flight (the caller's thread and threads − 1 of the addon's own),
   * `chunkBytes` per read, the 4096-aligned parts through `directFd` (the file opened with
   * O_DIRECT; −1: none). Blocks. Throws ERR_SHORT_READ if the file ends first, else errno codes.
   */
  readInto(fd: number, target: SharedArrayBuffer, targetOffset: number, fileOffset: number, length: number, threads: number, chunkBytes: number, directFd: number): number;
  /** A SharedArrayBuffer over fresh page-aligned anonymous memory. */
  allocate(bytes: number): SharedArrayBuffer;
  readonly pageSize: number;
}

let cached: { addon: NativeAddon } | { error: Error } | undefined;

/**
 * Load the addon once per thread (each worker has its own module registry). The path is the
 * same from `src/` (tests) and `dist/` (everything else): `../build/Release`.
 */
export function loadNative(): { addon: NativeAddon } | { error: Error } {
  if (cached) return cached;
  if (process.env.AIRLLM_LOADER_NATIVE_PATH === '') {
    // Test hook: behave as if the addon were not built.
    cached = { error: new Error('disabled by AIRLLM_LOADER_NATIVE_PATH=""') };
    return cached;
  }
  try {
    const require = createRequire(import.meta.url);
    const addon = require(process.env.AIRLLM_LOADER_NATIVE_PATH ?? '../build/Release/airllm_loader.node') as NativeAddon;
    cached = { addon };
  } catch (e) {
    cached = { error: e as Error };
  }
  return cached;
}

/** The addon, or undefined when it cannot be loaded. */
export function nativeAddon(): NativeAddon | undefined {
  const r = loadNative();
  return 'addon' in r ? r.addon : undefined;
}
