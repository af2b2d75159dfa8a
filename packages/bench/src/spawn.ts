import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ScenarioError } from './errors.js';
import type { ChildMessage, Job, JobResult, ParentMessage, SessionInfo, SessionRun } from './protocol.js';
import type { WorkDir } from './workdir.js';

/** dist/child.js, also when this module is loaded from src/ (vitest). */
function childScript(): string {
  const p = fileURLToPath(new URL('./child.js', import.meta.url));
  if (existsSync(p)) return p;
  const dist = p.replace(`${sep}src${sep}child.js`, `${sep}dist${sep}child.js`);
  if (existsSync(dist)) return dist;
  throw new ScenarioError('child', `child script not found at ${dist}: build the package first (npx tsc -b)`);
}

const OUTPUT_TAIL = 4000;

export interface ChildOptions {
  readonly workdir?: WorkDir;
  /** Kill the child after this long (default 30 min). */
  readonly timeoutMs?: number;
  readonly onLog?: (line: string) => void;
  /** Pass the child's stdout/stderr through (default: keep only a tail for error messages). */
  readonly verbose?: boolean;
}

type Waiter = { resolve: (m: ChildMessage) => void; reject: (e: Error) => void };

/**
 * One job in a fresh Node process. Messages other than logs are delivered in order to whoever
 * waits next; the process's exit (or a timeout) fails every wait with its output's tail.
 */
export class ChildSession<R extends JobResult = JobResult> {
  readonly #child: ChildProcess;
  readonly #label: string;
  readonly #queue: ChildMessage[] = [];
  readonly #waiters: Waiter[] = [];
  #tail = '';
  #ended: Error | undefined;
  #exit: Promise<void>;

  constructor(job: Job, o: ChildOptions = {}) {
    this.#label = job.label;
    const child = fork(childScript(), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      // No inherited --inspect / loaders: the child measures plain Node.
      execArgv: [],
    });
    this.#child = child;
    o.workdir?.adopt(child);
    const keep = (chunk: Buffer): void => {
      if (o.verbose) process.stderr.write(chunk);
      this.#tail = (this.#tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const timer = setTimeout(() => {
      this.#fail(new ScenarioError(job.label, `timed out after ${((o.timeoutMs ?? 30 * 60_000) / 1000).toFixed(0)} s`));
      child.kill('SIGKILL');
    }, o.timeoutMs ?? 30 * 60_000);
    child.on('message', (m: ChildMessage) => {
      if (m.type === 'log') return o.onLog?.(m.line);
      if (m.type === 'error') return this.#fail(new ScenarioError(job.label, m.message + (m.stack ? `\n${m.stack}` : '')));
      const w = this.#waiters.shift();
      if (w) w.resolve(m);
      else this.#queue.push(m);
    });
    child.on('error', (e) => this.#fail(new ScenarioError(job.label, e.message, { cause: e })));
    this.#exit = new Promise<void>((resolve) => {
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        this.#fail(new ScenarioError(job.label, `child exited with ${signal ?? `code ${code}`}${this.#tail ? `; its output ended with:\n${this.#tail.trim()}` : ''}`));
        resolve();
      });
    });
    this.#send({ type: 'job', job });
  }

  #fail(e: Error): void {
    this.#ended ??= e;
    for (const w of this.#waiters.splice(0)) w.reject(this.#ended);
  }

  #send(m: ParentMessage): void {
    if (this.#ended === undefined && this.#child.connected) this.#child.send(m);
  }

  #next(): Promise<ChildMessage> {
    const m = this.#queue.shift();
    if (m) return Promise.resolve(m);
    if (this.#ended) return Promise.reject(this.#ended);
    return new Promise((resolve, reject) => this.#waiters.push({ resolve, reject }));
  }

  async #expect<T extends ChildMessage['type']>(type: T): Promise<Extract<ChildMessage, { type: T }>> {
    const m = await this.#next();
    if (m.type !== type) throw new ScenarioError(this.#label, `expected a '${type}' message, got '${m.type}'`);
    return m as Extract<ChildMessage, { type: T }>;
  }

  /** A session job's set-up is done (model loaded, counts calibrated). */
  async ready(): Promise<SessionInfo> {
    return (await this.#expect('ready')).info;
  }

  /** One more measured run (session jobs). */
  async run(): Promise<SessionRun> {
    this.#send({ type: 'run' });
    return (await this.#expect('run')).run;
  }

  /** End the session (if any) and wait for the job's result and the process's exit. */
  async result(finish = true): Promise<R> {
    if (finish) this.#send({ type: 'finish' });
    const m = await this.#expect('result');
    await this.#exit;
    return m.result as R;
  }

  kill(): void {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL');
  }
}

/** Run one job in a fresh Node process and resolve with its result. */
export async function runChild<R extends JobResult>(job: Job, o: ChildOptions = {}): Promise<R> {
  return await new ChildSession<R>(job, o).result(false);
}
