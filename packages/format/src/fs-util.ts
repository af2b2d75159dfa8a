import { constants } from 'node:fs';
import { access, link, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { FileAccessError, fileError, InvalidValueError, NotRegularFileError } from './errors.js';

/** Suffix of the file a writer fills before renaming it to its real name. */
export const PARTIAL_SUFFIX = '.partial';

export async function exists(path: string): Promise<boolean> {
  try {
    await access(path, constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Open `<path>.partial` for writing. Without `overwrite` an existing destination is refused up
 * front, and an existing partial file too ('wx'): it belongs to an interrupted or concurrent
 * write, and two writers sharing one partial file would interleave into a file of the right
 * size but wrong content.
 */
export async function openPartial(path: string, overwrite: boolean): Promise<{ fh: FileHandle; partialPath: string }> {
  const partialPath = path + PARTIAL_SUFFIX;
  if (!overwrite && (await exists(path))) {
    throw new FileAccessError('output file exists (pass overwrite to replace it)', { path });
  }
  try {
    const fh = await open(partialPath, overwrite ? 'w' : 'wx');
    return { fh, partialPath };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new FileAccessError('a partial file from an interrupted or concurrent write exists; remove it or pass overwrite', {
        path: partialPath,
      });
    }
    throw fileError(e, partialPath, 'create the output file');
  }
}

/**
 * Move a finished partial file to its real name. Without `overwrite`, a hard link is the atomic
 * "create only if absent" (a file that appeared at `path` meanwhile is never replaced); on
 * filesystems without hard links it falls back to check-then-rename.
 */
export async function commitPartial(partialPath: string, path: string, overwrite: boolean): Promise<void> {
  if (overwrite) {
    try {
      await rename(partialPath, path);
    } catch (e) {
      throw fileError(e, path, 'rename the finished file into place');
    }
    return;
  }
  try {
    await link(partialPath, path);
    await unlink(partialPath);
    return;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new FileAccessError('output file appeared during the write (pass overwrite to replace it)', { path });
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EXDEV' && code !== 'ENOSYS') {
      throw fileError(e, path, 'move the finished file into place');
    }
  }
  if (await exists(path)) throw new FileAccessError('output file appeared during the write (pass overwrite to replace it)', { path });
  try {
    await rename(partialPath, path);
  } catch (e) {
    throw fileError(e, path, 'rename the finished file into place');
  }
}

/** Remove a file, ignoring "already gone". */
export async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch {
    // Already removed or never created; nothing else to clean up.
  }
}

/** Write a small file through `<path>.partial` + rename, so a failure leaves no half file. */
export async function writeFileAtomic(path: string, bytes: Uint8Array, options: { overwrite?: boolean } = {}): Promise<void> {
  const overwrite = options.overwrite ?? false;
  const { fh, partialPath } = await openPartial(path, overwrite);
  try {
    try {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await fh.write(bytes, done, bytes.length - done, done);
        done += bytesWritten;
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await commitPartial(partialPath, path, overwrite);
  } catch (e) {
    await removeQuietly(partialPath);
    throw fileError(e, path, 'write');
  }
}

/**
 * Read a whole file that the format bounds (tokenizers, headers), refusing one larger than
 * `maxBytes` before allocating for it.
 */
export async function readSmallFile(path: string, maxBytes: number): Promise<Uint8Array> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw fileError(e, path, 'open');
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new NotRegularFileError(st.isDirectory() ? 'is a directory, not a file' : 'not a regular file', { path });
    if (st.size > maxBytes) {
      throw new InvalidValueError('file is larger than the format allows', { path, field: 'file size', expected: `≤ ${maxBytes} bytes`, actual: st.size });
    }
    const out = new Uint8Array(st.size);
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await fh.read(out, done, out.length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === out.length ? out : out.subarray(0, done);
  } catch (e) {
    throw fileError(e, path, 'read');
  } finally {
    await fh.close();
  }
}
