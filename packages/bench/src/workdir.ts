import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskSpaceError } from './errors.js';

/** Head room left free on the temp file system beyond the files themselves. */
const SPARE_BYTES = 1 << 30;

/** Free bytes for an unprivileged writer on the file system holding `dir`. */
export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

/**
 * A scratch directory for the synthetic models, removed on close, on process exit and on
 * Ctrl-C / SIGTERM (children the harness started are killed first, so none keeps a file open
 * or a big mapping alive after the harness is gone).
 */
export class WorkDir {
  readonly path: string;
  readonly #children = new Set<ChildProcess>();
  #closed = false;
  readonly #onExit = (): void => this.close();
  readonly #onSignal = (sig: NodeJS.Signals): void => {
    this.close();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };

  private constructor(path: string) {
    this.path = path;
    process.on('exit', this.#onExit);
    process.on('SIGINT', this.#onSignal);
    process.on('SIGTERM', this.#onSignal);
  }

  /** Create it under `parent` (default os.tmpdir()) after checking that `neededBytes` fit. */
  static create(neededBytes: number, parent = tmpdir()): WorkDir {
    const free = freeBytes(parent);
    if (free < neededBytes + SPARE_BYTES) throw new DiskSpaceError(parent, neededBytes + SPARE_BYTES, free);
    return new WorkDir(mkdtempSync(join(parent, 'airllm-bench-')));
  }

  file(name: string): string {
    return join(this.path, name);
  }

  /** Track a child process so that close() (and Ctrl-C) kills it. */
  adopt(child: ChildProcess): void {
    this.#children.add(child);
    child.once('exit', () => this.#children.delete(child));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    this.#children.clear();
    rmSync(this.path, { recursive: true, force: true });
    process.off('exit', this.#onExit);
    process.off('SIGINT', this.#onSignal);
    process.off('SIGTERM', this.#onSignal);
  }
}
