import { closeSync, openSync } from 'node:fs';
import { fileError, NativeAddonError } from './errors.js';
import { nativeAddon, type NativeAddon } from './native.js';

function requireAddon(what: string): NativeAddon {
  const addon = nativeAddon();
  if (addon === undefined) throw new NativeAddonError(`${what} needs the native addon`, { expected: 'built addon' });
  return addon;
}

/**
 * Evict a file's pages from the page cache (fdatasync, then posix_fadvise DONTNEED), for
 * cold-cache measurements. Pages that some process still maps stay cached. Length 0 or absent:
 * to the end of the file.
 */
export function dropFileCache(path: string, offset = 0, length = 0): void {
  const addon = requireAddon('dropFileCache');
  try {
    addon.dropFileCache(path, offset, length);
  } catch (e) {
    throw fileError(e, path);
  }
}

/** Bytes of a file currently in the page cache (mincore over a temporary mapping). */
export function pageCacheBytes(path: string): number {
  const addon = requireAddon('pageCacheBytes');
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw fileError(e, path);
  }
  try {
    const map = addon.map(fd);
    const bytes = addon.residentBytes(map, 0, map.byteLength);
    addon.close(map);
    return bytes;
  } catch (e) {
    throw fileError(e, path);
  } finally {
    closeSync(fd);
  }
}
