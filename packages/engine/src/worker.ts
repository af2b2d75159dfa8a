/**
 * Compute worker. Piscina starts the threads; each runs one long `serve` task that executes
 * steps as the main thread posts them through the step channel (channel.ts), until shutdown.
 */
import { workerData } from 'piscina';
import { loadBackend } from '@airllm/kernels';
import { CTRL, readTask, reportDoubles, writeReport } from './channel.js';
import { ComputeThread } from './compute.js';
import type { ComputeWorkerData } from './shared.js';

const data = workerData as ComputeWorkerData;
// The main thread already resolved the backend (and said so once if it fell back).
const thread = new ComputeThread(data, loadBackend(data.kernels));
const ctrl = new Int32Array(data.buffers.control);
const task = new Int32Array(data.buffers.task);
const reports = new Float64Array(data.buffers.reports);
const stride = reportDoubles(data.config.layers.end - data.config.layers.start + 1);

export interface ServeTask {
  readonly thread: number;
  /** The step counter's value when the task was started: the next step is the one after it. */
  readonly seq: number;
}

export default function serve({ thread: index, seq }: ServeTask): void {
  let seen = seq;
  for (;;) {
    // Waiting for the next step: the thread sleeps in the kernel, using no CPU.
    while (Atomics.load(ctrl, CTRL.SEQ) === seen) Atomics.wait(ctrl, CTRL.SEQ, seen);
    seen = Atomics.load(ctrl, CTRL.SEQ);
    if (Atomics.load(ctrl, CTRL.SHUTDOWN) !== 0) return;
    try {
      const report = thread.run(readTask(task, index));
      writeReport(reports, index, stride, report.spans);
    } catch (e) {
      Atomics.store(ctrl, CTRL.FAILED, 1);
      done();
      // Ends this serve task: the main thread gets the error itself and starts a new one.
      throw e;
    }
    done();
  }
}

function done(): void {
  Atomics.add(ctrl, CTRL.DONE, 1);
  Atomics.notify(ctrl, CTRL.DONE);
}
