/**
 * Compute worker. Piscina starts the threads; each runs one long `serve` task that executes
 * steps as the main thread posts them through the step channel (channel.ts), until shutdown.
 */
import { workerData } from 'piscina';
import { loadBackend } from '@airllm/kernels';
import { BarrierAbortedError } from './barrier.js';
import { CTRL, FAILED_FOLLOWER, readTask, reportDoubles, writeReport } from './channel.js';
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
      claimFailure(index, e instanceof BarrierAbortedError);
      done();
      // Ends this serve task: the main thread gets the error itself and starts a new one.
      throw e;
    }
    done();
  }
}

/**
 * Record this step's failure. The thread whose own work failed first is the root cause; one
 * stopped by the barrier abort only follows it, and may get here first (the failing thread
 * aborts the barrier before it reaches this), so a follower never takes the place of a cause.
 * Errors lose their class crossing to the main thread, which is why the index is recorded here.
 */
function claimFailure(index: number, follower: boolean): void {
  if (follower) {
    Atomics.compareExchange(ctrl, CTRL.FAILED, 0, FAILED_FOLLOWER);
    return;
  }
  if (Atomics.compareExchange(ctrl, CTRL.FAILED, 0, index + 1) === FAILED_FOLLOWER) Atomics.compareExchange(ctrl, CTRL.FAILED, FAILED_FOLLOWER, index + 1);
}

function done(): void {
  Atomics.add(ctrl, CTRL.DONE, 1);
  Atomics.notify(ctrl, CTRL.DONE);
}
