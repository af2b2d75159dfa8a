import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { Barrier } from './barrier.js';
import { CTRL, FAILED_FOLLOWER, readReport, reportDoubles, writeTask } from './channel.js';
import { EngineStateError } from './errors.js';
import type { ComputeWorkerData, StepTask, ThreadReport } from './shared.js';
import type { ServeTask } from './worker.js';

/**
 * The compute threads: piscina starts them, each runs one long `serve` task, and steps go
 * through the step channel (channel.ts) with the barrier reset before each. A thread that fails
 * a step ends its serve task with the error; `run` rejects with it and restarts the threads, so
 * the next step runs on a fresh set.
 */
export class ComputePool {
  readonly #data: ComputeWorkerData;
  readonly #pool: Piscina;
  readonly #ctrl: Int32Array;
  readonly #threads: number;
  #serving: { settled: boolean; promise: Promise<void> }[] = [];

  private constructor(data: ComputeWorkerData) {
    this.#data = data;
    this.#threads = data.config.threads;
    this.#pool = new Piscina({
      filename: fileURLToPath(new URL('./worker.js', import.meta.url)),
      workerData: data,
      minThreads: this.#threads,
      maxThreads: this.#threads,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER,
    });
    this.#ctrl = new Int32Array(data.buffers.control);
  }

  /** Start the threads and run one empty step on each, so a broken setup fails here, not mid-generation. */
  static async start(data: ComputeWorkerData): Promise<ComputePool> {
    const pool = new ComputePool(data);
    pool.#startServing();
    try {
      const first = data.config.layers.start;
      await pool.run({ rows: 0, seqs: [], layers: { start: first, end: first }, logitRows: [] });
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  /** Start (or restart, after a failed step) every compute thread's serve loop. */
  #startServing(): void {
    const ctrl = this.#ctrl;
    const seq = Atomics.load(ctrl, CTRL.SEQ);
    this.#serving = Array.from({ length: this.#threads }, (_, thread) => {
      const p = this.#pool.run({ thread, seq } satisfies ServeTask) as Promise<void>;
      const tracked = { settled: false, promise: p };
      p.then(
        () => (tracked.settled = true),
        () => (tracked.settled = true),
      );
      return tracked;
    });
  }

  /** Run one step on every compute thread; returns each thread's timings. */
  async run(spec: Omit<StepTask, 'thread'>): Promise<ThreadReport[]> {
    const buffers = this.#data.buffers;
    const ctrl = this.#ctrl;
    if (this.#serving.some((s) => s.settled)) throw new EngineStateError('a compute thread has stopped');
    writeTask(new Int32Array(buffers.task), spec);
    Barrier.reset(new Int32Array(buffers.barrier));
    Atomics.store(ctrl, CTRL.DONE, 0);
    Atomics.store(ctrl, CTRL.FAILED, 0);
    Atomics.add(ctrl, CTRL.SEQ, 1);
    Atomics.notify(ctrl, CTRL.SEQ);
    for (;;) {
      const done = Atomics.load(ctrl, CTRL.DONE);
      if (done >= this.#threads) break;
      // A thread that died without counting itself done (worker crash) must not hang us.
      if (this.#serving.some((s) => s.settled) && Atomics.load(ctrl, CTRL.FAILED) === 0) {
        Atomics.store(ctrl, CTRL.FAILED, FAILED_FOLLOWER);
        break;
      }
      const w = Atomics.waitAsync(ctrl, CTRL.DONE, done, 1000);
      if (w.async) await w.value;
    }
    const failed = Atomics.load(ctrl, CTRL.FAILED);
    if (failed !== 0) {
      // Failed threads end their serve tasks with the error; the others see the barrier abort.
      new Barrier(new Int32Array(buffers.barrier), this.#threads, 0).abort();
      const results = await Promise.allSettled(this.#serving.map((s) => s.promise));
      this.#shutdownServing();
      // Threads that were still waiting ended their loops on shutdown; start fresh ones.
      Atomics.store(ctrl, CTRL.SHUTDOWN, 0);
      this.#startServing();
      // The root cause: the error of the thread that failed first on its own (not the others'
      // "another compute thread failed", whose class the thread boundary erased).
      const root = failed > 0 ? results[failed - 1] : undefined;
      if (root?.status === 'rejected') throw root.reason;
      const any = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      throw any ? any.reason : new EngineStateError('a compute thread failed');
    }
    const reports = new Float64Array(buffers.reports);
    const { start, end } = this.#data.config.layers;
    const stride = reportDoubles(end - start + 1);
    return Array.from({ length: this.#threads }, (_, t) => readReport(reports, t, stride));
  }

  /** Ask every serve loop to return (they wake on the step counter). */
  #shutdownServing(): void {
    const ctrl = this.#ctrl;
    Atomics.store(ctrl, CTRL.SHUTDOWN, 1);
    Atomics.add(ctrl, CTRL.SEQ, 1);
    Atomics.notify(ctrl, CTRL.SEQ);
  }

  /** Stop the threads. */
  async close(): Promise<void> {
    this.#shutdownServing();
    await Promise.allSettled(this.#serving.map((s) => s.promise));
    await this.#pool.destroy();
  }
}
