/**
 * Compute worker (a piscina worker). It attaches to the shared buffers and the weight source
 * once, when the thread starts, and then runs one forward step per task.
 */
import { workerData } from 'piscina';
import { loadBackend } from '@airllm/kernels';
import { ComputeThread } from './compute.js';
import type { ComputeWorkerData, StepTask, ThreadReport } from './shared.js';
import { attachWeightSource } from './weights.js';

const data = workerData as ComputeWorkerData;
// The main thread already resolved the backend (and said so once if it fell back).
const thread = new ComputeThread(data, loadBackend(data.kernels), attachWeightSource(data.weights));

export default function run(task: StepTask): ThreadReport {
  return thread.run(task);
}
