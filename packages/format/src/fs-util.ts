import { randomBytes } from 'node:crypto';
import { constants, readFileSync, unlinkSync } from 'node:fs';
import { access, link, open, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
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

/** Suffix of the lock that names the process writing a partial file (`<path>.partial.lock`). */
export const LOCK_SUFFIX = '.lock';

/** Who writes a partial file: the lock's content. */
interface WriterLock {
  pid: number;
  host: string;
  /** The process's start time (Linux /proc/<pid>/stat), so a reused pid is not taken for it. */
  start: string | undefined;
  id: string;
}

/** Partial files this process is writing, by path, with the id of the lock it holds. */
const livePartials = new Map<string, string>();

/** A lock that was never filled in is taken for abandoned after this long. */
const UNFILLED_LOCK_MS = 10_000;

function processStart(pid: number): string | undefined {
  try {
    // Field 22 (starttime), counted after the command name, which may contain spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote a lock still runs (on another host: assumed so). */
function writerAlive(w: WriterLock): boolean {
  if (w.host !== hostname()) return true;
  try {
    process.kill(w.pid, 0);
  } catch (e) {
    // EPERM: it exists, under another user.
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const start = processStart(w.pid);
  return w.start === undefined || start === undefined || start === w.start;
}

async function readWriterLock(path: string): Promise<{ lock: WriterLock | undefined; mtimeMs: number } | undefined> {
  try {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    let lock: WriterLock | undefined;
    try {
      const j = JSON.parse(text) as Partial<WriterLock>;
      if (typeof j.pid === 'number' && typeof j.host === 'string' && typeof j.id === 'string') lock = { pid: j.pid, host: j.host, start: j.start, id: j.id };
    } catch {
      // Not filled in yet, or garbage: judged by its age.
    }
    return { lock, mtimeMs: st.mtimeMs };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fileError(e, path, 'read the lock file');
  }
}

/**
 * Take `<partial>.lock` (O_EXCL) for this process. A lock whose writer is gone (killed: its pid no
 * longer runs on this host) is broken: renamed aside first and checked to be the lock judged
 * stale, so two processes breaking it at once cannot remove a fresh lock one of them just took.
 * A lock whose writer still runs is refused, naming it.
 */
async function takeWriterLock(partialPath: string): Promise<string> {
  const lockPath = partialPath + LOCK_SUFFIX;
  const mine: WriterLock = { pid: process.pid, host: hostname(), start: processStart(process.pid), id: randomBytes(12).toString('hex') };
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const fh = await open(lockPath, 'wx');
      try {
        await fh.writeFile(JSON.stringify(mine));
      } finally {
        await fh.close();
      }
      return mine.id;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw fileError(e, lockPath, 'create the lock file');
    }
    const held = await readWriterLock(lockPath);
    if (held === undefined) continue;
    const w = held.lock;
    const stale = w === undefined ? Date.now() - held.mtimeMs > UNFILLED_LOCK_MS : !writerAlive(w);
    if (!stale) {
      const who = w === undefined ? 'another process' : `process ${w.pid}${w.host === mine.host ? '' : ` on ${w.host}`}`;
      throw new FileAccessError(`${who} is writing this file (remove ${lockPath} if it is not running)`, { path: partialPath });
    }
    const aside = `${lockPath}.stale-${randomBytes(6).toString('hex')}`;
    try {
      await rename(lockPath, aside);
    } catch {
      continue;
    }
    const moved = await readWriterLock(aside).catch(() => undefined);
    if (w !== undefined && moved?.lock?.id !== w.id) {
      // A fresh lock was taken between the look and the rename: put it back.
      await rename(aside, lockPath).catch(() => undefined);
      continue;
    }
    await unlink(aside).catch(() => undefined);
  }
  throw new FileAccessError('could not take the lock file (other processes keep taking it)', { path: lockPath });
}

async function releaseWriterLock(partialPath: string): Promise<void> {
  const id = livePartials.get(partialPath);
  if (id === undefined) return;
  livePartials.delete(partialPath);
  const held = await readWriterLock(partialPath + LOCK_SUFFIX).catch(() => undefined);
  if (held?.lock?.id === id) await unlink(partialPath + LOCK_SUFFIX).catch(() => undefined);
}

/**
 * Open `<path>.partial` for writing. Without `overwrite` an existing destination is refused up
 * front. The partial file belongs to the process holding `<path>.partial.lock`: while that
 * process runs, another writer is refused (two writers sharing one partial file would interleave
 * into a file of the right size but wrong content); a partial file left by a process that is gone
 * (killed, crashed) is replaced.
 */
export async function openPartial(path: string, overwrite: boolean): Promise<{ fh: FileHandle; partialPath: string }> {
  const partialPath = path + PARTIAL_SUFFIX;
  if (!overwrite && (await exists(path))) {
    throw new FileAccessError('output file exists (pass overwrite to replace it)', { path });
  }
  const id = await takeWriterLock(partialPath);
  livePartials.set(partialPath, id);
  try {
    const fh = await open(partialPath, 'w');
    return { fh, partialPath };
  } catch (e) {
    await releaseWriterLock(partialPath);
    throw fileError(e, partialPath, 'create the output file');
  }
}

/**
 * Remove every partial file this process is writing, and its lock, at once: for a signal handler
 * (Ctrl-C during a conversion) that ends the process right after. Returns the removed paths.
 */
export function removePartialFilesSync(): string[] {
  const removed: string[] = [];
  for (const [partialPath, id] of livePartials) {
    try {
      unlinkSync(partialPath);
      removed.push(partialPath);
    } catch {
      // Renamed into place or removed already.
    }
    try {
      const lock = JSON.parse(readFileSync(partialPath + LOCK_SUFFIX, 'utf8')) as { id?: string };
      if (lock.id === id) unlinkSync(partialPath + LOCK_SUFFIX);
    } catch {
      // Gone already.
    }
  }
  livePartials.clear();
  return removed;
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
    await releaseWriterLock(partialPath);
    return;
  }
  try {
    await link(partialPath, path);
    await unlink(partialPath);
    await releaseWriterLock(partialPath);
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
  await releaseWriterLock(partialPath);
}

/** Remove a file, ignoring "already gone"; for a partial file of this process, its lock too. */
export async function removeQuietly(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch {
    // Already removed or never created; nothing else to clean up.
  }
  await releaseWriterLock(path);
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
