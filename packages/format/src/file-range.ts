import type { FileHandle } from 'node:fs/promises';
import { fileError, TruncatedError } from './errors.js';

/**
 * Read exactly `length` bytes at `position`. Callers have already checked the range against
 * the file size, so a short read means the file changed underneath us.
 */
export async function readRange(fh: FileHandle, path: string, position: number, length: number, field: string, into?: Uint8Array): Promise<Uint8Array> {
  const out = into !== undefined && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
  let done = 0;
  while (done < length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(out, done, length - done, position + done));
    } catch (e) {
      throw fileError(e, path, 'read');
    }
    if (bytesRead === 0) {
      throw new TruncatedError('file ended early (changed while reading?)', { path, field, offset: position + done, expected: `${length} bytes` });
    }
    done += bytesRead;
  }
  return out;
}

/** Typed arrays use host byte order; every format here is little-endian. */
export const HOST_LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
