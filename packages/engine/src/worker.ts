/**
 * Compute worker (a piscina worker). It attaches to the shared buffers and the weight source
 * once, when the thread starts, and then runs one forward step per task.
 */
import { workerData } from 'piscina';
import { referenceBackend } from '@airllm/kernels';
import { ComputeThread } from './compute.js';
import type { ComputeWorkerData, StepTask, ThreadReport } from './shared.js';
import { attachWeightSource } from './weights.js';

const data = workerData as ComputeWorkerData;
const thread = new ComputeThread(data, referenceBackend, attachWeightSource(data.weights));

export default function run(task: StepTask): ThreadReport {
  return thread.run(task);
}
