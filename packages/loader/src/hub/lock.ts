/**
 * A lock file per cached file, so two pulls of the same file (two terminals, a `generate -m hf:…`
 * beside an `airllm pull`) do not write one `.partial` file at once: the second waits, then finds
 * the file done.
 *
 * The lock is created with O_EXCL and holds `{ pid, host, id }`. Its holder touches it every few
 * seconds; a lock whose holder is gone (same host and the pid is dead, or not touched for
 * `staleMs`) is broken. Breaking renames the lock aside first and checks that what it moved is
 * the lock it judged stale, so two waiters breaking the same stale lock cannot remove the fresh
 * lock one of them has just taken.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { open, readFile, rename, stat, unlink, utimes } from 'node:fs/promises';
import { fileError } from '@airllm/format';
import { sleep } from './client.js';

export interface LockOptions {
  /** A lock not touched for this long counts as abandoned. Default 60 s. */
  staleMs?: number;
  /** Called once when the lock is held by someone else and we start waiting. */
  onWait?: (holder: string) => void;
  signal?: AbortSignal;
}

interface LockContent {
  pid: number;
  host: string;
  id: string;
}

export interface HeldLock {
  readonly path: string;
  release(): Promise<void>;
}

const POLL_MS = 200;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: the process exists but belongs to another user.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readLock(path: string): Promise<{ content: LockContent | undefined; mtimeMs: number } | undefined> {
  try {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    let content: LockContent | undefined;
    try {
      const j = JSON.parse(text) as Partial<LockContent>;
      if (typeof j.pid === 'number' && typeof j.host === 'string' && typeof j.id === 'string') content = j as LockContent;
    } catch {
      // Written but not yet filled, or garbage: judged by its age alone.
    }
    return { content, mtimeMs: st.mtimeMs };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fileError(e, path, 'read the lock file');
  }
}

async function tryCreate(path: string, content: LockContent): Promise<boolean> {
  try {
    const fh = await open(path, 'wx');
    try {
      await fh.writeFile(JSON.stringify(content));
    } finally {
      await fh.close();
    }
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw fileError(e, path, 'create the lock file');
  }
}

/** Break a stale lock; true when it was removed (or had gone already). */
async function breakStale(path: string, judged: LockContent | undefined): Promise<boolean> {
  const aside = `${path}.stale-${randomBytes(6).toString('hex')}`;
  try {
    await rename(path, aside);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT';
  }
  const moved = await readLock(aside);
  if (judged !== undefined && moved?.content?.id !== judged.id) {
    // Someone took a fresh lock between our look and the rename: put it back.
    await rename(aside, path).catch(() => undefined);
    return false;
  }
  await unlink(aside).catch(() => undefined);
  return true;
}

export async function acquireLock(path: string, options: LockOptions = {}): Promise<HeldLock> {
  const staleMs = options.staleMs ?? 60_000;
  const mine: LockContent = { pid: process.pid, host: hostname(), id: randomBytes(12).toString('hex') };
  let waiting = false;
  for (;;) {
    if (options.signal?.aborted) throw options.signal.reason;
    if (await tryCreate(path, mine)) break;
    const held = await readLock(path);
    if (held === undefined) continue;
    const c = held.content;
    const dead = c !== undefined && c.host === mine.host && !alive(c.pid);
    if (dead || Date.now() - held.mtimeMs > staleMs) {
      if (await breakStale(path, c)) continue;
    }
    if (!waiting) {
      waiting = true;
      options.onWait?.(c === undefined ? 'another process' : `pid ${c.pid} on ${c.host}`);
    }
    await sleep(POLL_MS, options.signal);
  }
  // Keep the lock fresh while we hold it (unref: it must not keep the process alive).
  const heartbeat = setInterval(() => {
    const now = new Date();
    utimes(path, now, now).catch(() => undefined);
  }, Math.max(1000, Math.floor(staleMs / 4)));
  heartbeat.unref();
  return {
    path,
    async release() {
      clearInterval(heartbeat);
      const held = await readLock(path).catch(() => undefined);
      if (held?.content?.id === mine.id) await unlink(path).catch(() => undefined);
    },
  };
}
