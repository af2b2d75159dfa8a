import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ScenarioError } from './errors.js';
import type { ChildMessage, Job, JobResult } from './protocol.js';
import type { WorkDir } from './workdir.js';

/** dist/child.js, also when this module is loaded from src/ (vitest). */
function childScript(): string {
  const p = fileURLToPath(new URL('./child.js', import.meta.url));
  if (existsSync(p)) return p;
  const dist = p.replace(`${sep}src${sep}child.js`, `${sep}dist${sep}child.js`);
  if (existsSync(dist)) return dist;
  throw new ScenarioError('child', `child script not found at ${dist}: build the package first (npx tsc -b)`);
}

const STDERR_TAIL = 4000;

export interface ChildOptions {
  readonly workdir?: WorkDir;
  /** Kill the child after this long (default 30 min). */
  readonly timeoutMs?: number;
  readonly onLog?: (line: string) => void;
  /** Pass the child's stdout/stderr through (default: keep only a tail for error messages). */
  readonly verbose?: boolean;
}

/** Run one job in a fresh Node process and resolve with its result. */
export function runChild<R extends JobResult>(job: Job, o: ChildOptions = {}): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    const child = fork(childScript(), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      // No inherited --inspect / loaders: the child measures plain Node.
      execArgv: [],
    });
    o.workdir?.adopt(child);
    let tail = '';
    const keep = (chunk: Buffer, stream: NodeJS.WriteStream): void => {
      if (o.verbose) stream.write(chunk);
      tail = (tail + chunk.toString('utf8')).slice(-STDERR_TAIL);
    };
    child.stdout!.on('data', (c: Buffer) => keep(c, process.stderr));
    child.stderr!.on('data', (c: Buffer) => keep(c, process.stderr));
    let result: R | undefined;
    let failure: Error | undefined;
    const timer = setTimeout(() => {
      failure = new ScenarioError(job.label, `timed out after ${((o.timeoutMs ?? 0) / 1000).toFixed(0)} s`);
      child.kill('SIGKILL');
    }, o.timeoutMs ?? 30 * 60_000);
    child.on('message', (m: ChildMessage) => {
      if (m.type === 'log') o.onLog?.(m.line);
      else if (m.type === 'result') result = m.result as R;
      else failure = new ScenarioError(job.label, m.message + (m.stack ? `\n${m.stack}` : ''));
    });
    child.on('error', (e) => (failure ??= new ScenarioError(job.label, e.message, { cause: e })));
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (result !== undefined && code === 0) return resolve(result);
      reject(failure ?? new ScenarioError(job.label, `child exited with ${signal ?? `code ${code}`}${tail ? `; its output ended with:\n${tail.trim()}` : ''}`));
    });
    child.send(job);
  });
}
