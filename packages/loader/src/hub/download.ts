/**
 * One remote file into the cache, verified, resumable:
 *
 *   <file>.lock          held while we work on the file (lock.ts)
 *   <file>.partial       the bytes received so far, appended in order
 *   <file>.partial.json  the remote version they belong to (commit, size, checksum)
 *   <file>               appears only by renaming a partial whose size and checksum match
 *   <file>.pull.json     where the file came from, written after the rename
 *
 * A download continues a partial with `Range: bytes=<its size>-` when the partial belongs to the
 * same remote content; it starts over when the server ignores the Range (200 instead of 206) or
 * the remote file changed. A dropped or stalled connection is retried (with backoff) from what
 * arrived; after the last retry the partial stays for the next pull. The checksum covers the
 * whole file: the partial's bytes are hashed once from disk, the rest as it streams, so memory
 * stays at one write buffer whatever the file size.
 */
import { createHash, type Hash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readFile, rename, stat, statfs, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileError } from '@airllm/format';
import { writeFileAtomic } from '@airllm/format/convert';
import { AirllmError, ChecksumMismatchError, DiskFullError, DownloadSizeError, HubHttpError } from '../errors.js';
import { isTransient, remoteName, retryDelay, sleep, Watchdog, type HubClient, type RemoteFile } from './client.js';
import { acquireLock } from './lock.js';

/** What a pull reports while it works (the CLI draws bars and notes from these). */
export type PullEvent =
  | { type: 'file'; file: string; dest: string; size: number; status: 'cached' | 'download' | 'resume'; from: number }
  | { type: 'progress'; file: string; done: number; total: number }
  /** `at`: bytes on disk when a download is retried; absent for a metadata request. */
  | { type: 'retry'; file: string; attempt: number; retries: number; at?: number; reason: string; delayMs: number }
  | { type: 'restart'; file: string; reason: string }
  | { type: 'wait'; file: string; lock: string; holder: string }
  | { type: 'done'; file: string; dest: string; size: number; status: 'cached' | 'downloaded' }
  | { type: 'convert'; done: number; total: number };

export interface DownloadOptions {
  /** Tries after a dropped or stalled connection or a 5xx/408/429, each resuming. Default 5. */
  retries?: number;
  /** First wait before a retry, doubled each time up to 30 s. Default 1000 ms. */
  retryDelayMs?: number;
  onEvent?: (e: PullEvent) => void;
  signal?: AbortSignal;
  /** A lock untouched this long is taken over. Default 60 s. */
  lockStaleMs?: number;
}

export interface DownloadResult {
  readonly dest: string;
  readonly status: 'cached' | 'downloaded';
  /** Bytes taken over from an earlier partial download (0 when none). */
  readonly resumedFrom: number;
  /** Bytes received over the network in this call. */
  readonly received: number;
}

/** What `<file>.pull.json` and `<file>.partial.json` hold. */
export interface PullRecord {
  readonly source: 'hf';
  readonly endpoint: string;
  readonly repo: string;
  readonly revision: string;
  readonly commit: string;
  readonly path: string;
  readonly size: number;
  readonly checksum: RemoteFile['checksum'];
  readonly pulledAt?: string;
  /** For a `.m` model: its tokenizer file, relative to the model's folder. */
  readonly tokenizer?: string;
}

export const RECORD_SUFFIX = '.pull.json';
export const PARTIAL_SUFFIX = '.partial';
const PARTIAL_META_SUFFIX = '.partial.json';
const LOCK_SUFFIX = '.lock';
/** Bytes gathered before one write to disk. */
const WRITE_BUFFER_BYTES = 4 << 20;
/** Bytes read at a time when hashing a file already on disk. */
const HASH_READ_BYTES = 4 << 20;

async function removeQuietly(path: string): Promise<void> {
  await unlink(path).catch(() => undefined);
}

async function readRecord(path: string): Promise<PullRecord | undefined> {
  try {
    const j = JSON.parse(await readFile(path, 'utf8')) as PullRecord;
    return typeof j === 'object' && j !== null && typeof j.size === 'number' && typeof j.checksum?.hex === 'string' ? j : undefined;
  } catch {
    return undefined;
  }
}

export async function readPullRecord(file: string): Promise<PullRecord | undefined> {
  return readRecord(file + RECORD_SUFFIX);
}

export async function writePullRecord(file: string, record: PullRecord): Promise<void> {
  await writeRecordAt(file + RECORD_SUFFIX, record);
}

async function writeRecordAt(path: string, record: PullRecord): Promise<void> {
  try {
    await writeFileAtomic(path, new TextEncoder().encode(`${JSON.stringify(record, null, 2)}\n`), { overwrite: true });
  } catch (e) {
    throw (e as NodeJS.ErrnoException).code === 'ENOSPC' ? writeError(e, path) : e;
  }
}

function sameContent(a: Pick<PullRecord, 'size' | 'checksum'>, b: Pick<RemoteFile, 'size' | 'checksum'>): boolean {
  return a.size === b.size && a.checksum.algorithm === b.checksum.algorithm && a.checksum.hex === b.checksum.hex;
}

function newHash(remote: RemoteFile): Hash {
  if (remote.checksum.algorithm === 'sha256') return createHash('sha256');
  // git's blob id: sha1 over "blob <size>\0" and the content.
  return createHash('sha1').update(`blob ${remote.size}\0`);
}

/** Hash the first `bytes` bytes of a file into `hash`. */
async function hashFile(path: string, bytes: number, hash: Hash, signal?: AbortSignal): Promise<void> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(Math.min(HASH_READ_BYTES, Math.max(1, bytes)));
    let pos = 0;
    while (pos < bytes) {
      if (signal?.aborted) throw signal.reason;
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, bytes - pos), pos);
      if (bytesRead === 0) throw new DownloadSizeError('file is shorter than expected while hashing it', { path, expected: bytes, actual: pos });
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
}

function writeError(e: unknown, path: string): AirllmError {
  if (e instanceof AirllmError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new DiskFullError('no space left on the device while writing the download (the partial file is kept for a resume)', { path });
  return fileError(e, path, 'write the download');
}

/** Refuse up front when the folder's filesystem cannot hold what is still to come. */
async function checkFreeSpace(dir: string, needed: number, path: string): Promise<void> {
  let free: number;
  try {
    const s = await statfs(dir);
    free = s.bavail * s.bsize;
  } catch {
    return; // Not every filesystem reports it; ENOSPC while writing is still caught.
  }
  if (needed > free) throw new DiskFullError('not enough free space for the download', { path, expected: `${needed} bytes free`, actual: free });
}

/** Outcome of one GET: finished, or cut off (to be retried from `written`). */
type Attempt = { done: true } | { done: false; reason: string };

class PartialWriter {
  readonly #fh: FileHandle;
  readonly #path: string;
  readonly #buf = Buffer.allocUnsafe(WRITE_BUFFER_BYTES);
  #fill = 0;
  /** Bytes on disk plus bytes buffered: where the next received byte goes. */
  written: number;

  private constructor(fh: FileHandle, path: string, written: number) {
    this.#fh = fh;
    this.#path = path;
    this.written = written;
  }

  static async open(path: string, from: number): Promise<PartialWriter> {
    try {
      // Truncating to `from` drops whatever a crash may have left past the last counted byte.
      const fh = await open(path, fsConstants.O_WRONLY | fsConstants.O_CREAT);
      await fh.truncate(from);
      return new PartialWriter(fh, path, from);
    } catch (e) {
      throw writeError(e, path);
    }
  }

  async append(chunk: Uint8Array): Promise<void> {
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(chunk.length - off, this.#buf.length - this.#fill);
      this.#buf.set(chunk.subarray(off, off + n), this.#fill);
      this.#fill += n;
      off += n;
      this.written += n;
      if (this.#fill === this.#buf.length) await this.flush();
    }
  }

  async flush(): Promise<void> {
    let done = 0;
    const pos = this.written - this.#fill;
    try {
      while (done < this.#fill) {
        const { bytesWritten } = await this.#fh.write(this.#buf, done, this.#fill - done, pos + done);
        done += bytesWritten;
      }
    } catch (e) {
      // Count only what reached the file, so a resume continues from there.
      this.written = pos + done;
      this.#fill = 0;
      throw writeError(e, this.#path);
    }
    this.#fill = 0;
  }

  async restart(): Promise<void> {
    this.#fill = 0;
    this.written = 0;
    try {
      await this.#fh.truncate(0);
    } catch (e) {
      throw writeError(e, this.#path);
    }
  }

  async sync(): Promise<void> {
    await this.flush();
    try {
      await this.#fh.sync();
    } catch (e) {
      throw writeError(e, this.#path);
    }
  }

  async close(): Promise<void> {
    await this.#fh.close().catch(() => undefined);
  }
}

/** `bytes 100-199/1000` → its numbers. */
function parseContentRange(v: string | null): { start: number; end: number; total: number | undefined } | undefined {
  const m = v === null ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v.trim());
  if (m === null) return undefined;
  return { start: Number(m[1]), end: Number(m[2]), total: m[3] === '*' ? undefined : Number(m[3]) };
}

/**
 * Bring `remote` to `dest`, verified. Resolves when `dest` holds exactly the bytes the hub's
 * metadata describes; rejects with a typed error otherwise, and `dest` is then untouched.
 */
export async function downloadFile(client: HubClient, remote: RemoteFile, dest: string, options: DownloadOptions = {}): Promise<DownloadResult> {
  const file = remote.path;
  const emit = options.onEvent ?? (() => undefined);
  try {
    await mkdir(dirname(dest), { recursive: true });
  } catch (e) {
    throw fileError(e, dirname(dest), 'create the cache folder');
  }
  const lock = await acquireLock(dest + LOCK_SUFFIX, {
    staleMs: options.lockStaleMs,
    signal: options.signal,
    onWait: (holder) => emit({ type: 'wait', file, lock: dest + LOCK_SUFFIX, holder }),
  });
  try {
    if (await isCurrent(client.endpoint, remote, dest, options.signal)) {
      emit({ type: 'file', file, dest, size: remote.size, status: 'cached', from: remote.size });
      emit({ type: 'done', file, dest, size: remote.size, status: 'cached' });
      return { dest, status: 'cached', resumedFrom: 0, received: 0 };
    }
    return await fetchToPartial(client, remote, dest, options);
  } finally {
    await lock.release();
  }
}

/** True when `dest` already holds the remote content (by its record, else by hashing it). */
async function isCurrent(endpoint: string, remote: RemoteFile, dest: string, signal?: AbortSignal): Promise<boolean> {
  let size: number;
  try {
    size = (await stat(dest)).size;
  } catch {
    return false;
  }
  if (size !== remote.size) return false;
  const record = await readPullRecord(dest);
  if (record !== undefined) return sameContent(record, remote);
  // No record (e.g. a crash right after the rename): the bytes decide.
  const hash = newHash(remote);
  await hashFile(dest, size, hash, signal);
  if (hash.digest('hex') !== remote.checksum.hex) return false;
  await writePullRecord(dest, recordOf(endpoint, remote));
  return true;
}

function recordOf(endpoint: string, remote: RemoteFile): PullRecord {
  return { source: 'hf', endpoint, repo: remote.repo, revision: remote.revision, commit: remote.commit, path: remote.path, size: remote.size, checksum: remote.checksum, pulledAt: new Date().toISOString() };
}

async function fetchToPartial(client: HubClient, remote: RemoteFile, dest: string, options: DownloadOptions): Promise<DownloadResult> {
  const file = remote.path;
  const emit = options.onEvent ?? (() => undefined);
  const partial = dest + PARTIAL_SUFFIX;
  const metaPath = dest + PARTIAL_META_SUFFIX;
  const retries = options.retries ?? 5;

  // A partial continues only if it holds a prefix of this very content.
  let from = 0;
  const meta = await readRecord(metaPath);
  if (meta !== undefined && sameContent(meta, remote)) {
    from = await stat(partial).then((st) => Math.min(st.size, remote.size), () => 0);
  } else if (meta !== undefined) {
    emit({ type: 'restart', file, reason: `the partial download was of another version (commit ${meta.commit.slice(0, 12)})` });
  }
  if (from === 0) await writeRecordAt(metaPath, recordOf(client.endpoint, remote));
  await checkFreeSpace(dirname(dest), remote.size - from, partial);

  const t = new Transfer(client, remote, await PartialWriter.open(partial, from), options);
  let freshStartLeft = true;
  try {
    if (from > 0) await hashFile(partial, from, t.hash, options.signal);
    emit({ type: 'file', file, dest, size: remote.size, status: from > 0 ? 'resume' : 'download', from });
    let attempt = 0;
    for (;;) {
      const result = t.writer.written === remote.size ? ({ done: true } as const) : await t.attempt();
      if (!result.done) {
        attempt++;
        if (attempt > retries) {
          await t.writer.sync().catch(() => undefined);
          throw new HubHttpError(`download cut off at ${t.writer.written} of ${remote.size} bytes after ${retries} retries (${result.reason}); run the pull again to resume`, { field: t.what, path: partial });
        }
        const delayMs = retryDelay(options.retryDelayMs ?? 1000, attempt);
        emit({ type: 'retry', file, attempt, retries, at: t.writer.written, reason: result.reason, delayMs });
        await t.writer.flush();
        await sleep(delayMs, options.signal);
        continue;
      }
      await t.writer.sync();
      const actual = t.hash.digest('hex');
      if (actual === remote.checksum.hex) break;
      // Bytes from several responses (or an earlier run) may be the old bytes' fault: one
      // download from zero before giving up.
      if (t.pieces > 1 && freshStartLeft) {
        freshStartLeft = false;
        attempt = 0;
        await t.restart('the checksum did not match after a resume; downloading the whole file again');
        continue;
      }
      await t.writer.close();
      await removeQuietly(partial);
      await removeQuietly(metaPath);
      throw new ChecksumMismatchError(`downloaded bytes do not match the hub's ${remote.checksum.algorithm}; they were discarded`, { path: dest, field: t.what, expected: remote.checksum.hex, actual });
    }
  } catch (e) {
    await t.writer.flush().catch(() => undefined);
    await t.writer.close();
    if (e instanceof DownloadSizeError) {
      // The server contradicts the hub's metadata: its bytes cannot be trusted for a resume.
      await removeQuietly(partial);
      await removeQuietly(metaPath);
    }
    throw e;
  }
  await t.writer.close();
  // The record of an older version must not describe the new bytes, even for an instant.
  await removeQuietly(dest + RECORD_SUFFIX);
  try {
    await rename(partial, dest);
  } catch (e) {
    throw fileError(e, dest, 'move the verified download into place');
  }
  await writePullRecord(dest, recordOf(client.endpoint, remote));
  await removeQuietly(metaPath);
  emit({ type: 'done', file, dest, size: remote.size, status: 'downloaded' });
  return { dest, status: 'downloaded', resumedFrom: from, received: t.received };
}

/**
 * One file's bytes on their way into its partial: the writer, the running hash of everything
 * written, and how many responses (or runs) those bytes came from.
 */
class Transfer {
  readonly what: string;
  hash: Hash;
  pieces: number;
  received = 0;

  constructor(
    readonly client: HubClient,
    readonly remote: RemoteFile,
    readonly writer: PartialWriter,
    readonly options: DownloadOptions,
  ) {
    this.what = remoteName(remote.repo, remote.revision, remote.path);
    this.hash = newHash(remote);
    this.pieces = writer.written > 0 ? 1 : 0;
  }

  async restart(reason: string): Promise<void> {
    this.options.onEvent?.({ type: 'restart', file: this.remote.path, reason });
    await this.writer.restart();
    this.hash = newHash(this.remote);
    this.pieces = 0;
  }

  /**
   * One GET from `writer.written` to the end. `{ done: false }` when the connection was cut or
   * stalled or the server failed transiently (to be retried); throws on what a retry cannot fix
   * (4xx, sizes that contradict the metadata, disk errors).
   */
  async attempt(): Promise<Attempt> {
    const { client, remote, writer, what, options } = this;
    const from = writer.written;
    const dog = new Watchdog(client.stallTimeoutMs, options.signal);
    try {
      let res: Response;
      try {
        res = await client.request(remote.url, { signal: dog.signal, what, headers: from > 0 ? { range: `bytes=${from}-` } : {} });
      } catch (e) {
        if (options.signal?.aborted) throw options.signal.reason;
        if (dog.stalled) return { done: false, reason: `no answer for ${client.stallTimeoutMs} ms` };
        if (isTransient(e)) return { done: false, reason: (e as Error).message };
        throw e;
      }
      if (res.status >= 300) {
        const err = await client.statusError(res, what, remote.url);
        if (res.status === 416) {
          throw new DownloadSizeError(`the server cannot send bytes from ${from} on (HTTP 416): its file is shorter than the hub's metadata says`, { field: what, expected: remote.size, actual: `< ${from + 1}` });
        }
        if (isTransient(err)) return { done: false, reason: err.message };
        throw err;
      }
      let expectBody = remote.size - from;
      if (res.status === 206) {
        const range = parseContentRange(res.headers.get('content-range'));
        if (range !== undefined && range.total !== undefined && range.total !== remote.size) {
          await res.body?.cancel().catch(() => undefined);
          throw new DownloadSizeError('the server has a file of another size than the hub announced', { field: what, expected: remote.size, actual: range.total });
        }
        if (range === undefined || range.start !== from) {
          await res.body?.cancel().catch(() => undefined);
          await this.restart(`the server answered the range request with ${res.headers.get('content-range') ?? 'no Content-Range'}; starting over`);
          return { done: false, reason: 'unexpected Content-Range' };
        }
        expectBody = range.end + 1 - from;
      } else if (from > 0) {
        await this.restart('the server ignored the range request; starting over');
        expectBody = remote.size;
      }
      const lengthText = res.headers.get('content-length');
      if (lengthText !== null && Number(lengthText) !== expectBody) {
        await res.body?.cancel().catch(() => undefined);
        throw new DownloadSizeError(`the server announced ${Number(lengthText) > expectBody ? 'more' : 'fewer'} bytes than the hub's metadata (Content-Length ${lengthText})`, { field: what, expected: expectBody, actual: lengthText });
      }
      this.pieces++;
      try {
        for await (const c of res.body ?? []) {
          const chunk = c as Uint8Array;
          dog.touch();
          if (writer.written + chunk.length > remote.size) {
            throw new DownloadSizeError('the server sent more bytes than the hub announced', { field: what, expected: remote.size, actual: `> ${remote.size}` });
          }
          this.hash.update(chunk);
          await writer.append(chunk);
          this.received += chunk.length;
          options.onEvent?.({ type: 'progress', file: remote.path, done: writer.written, total: remote.size });
        }
      } catch (e) {
        if (e instanceof AirllmError) throw e;
        if (options.signal?.aborted) throw options.signal.reason;
        if (dog.stalled) return { done: false, reason: `nothing received for ${client.stallTimeoutMs} ms` };
        return { done: false, reason: `connection lost (${(e as Error).message})` };
      }
      if (writer.written < remote.size) {
        // A clean end before the announced size, with no length to hold it to.
        if (lengthText === null) throw new DownloadSizeError('the server sent fewer bytes than the hub announced', { field: what, expected: remote.size, actual: writer.written });
        return { done: false, reason: `the response ended at ${writer.written} of ${remote.size} bytes` };
      }
      return { done: true };
    } finally {
      dog.stop();
    }
  }
}
