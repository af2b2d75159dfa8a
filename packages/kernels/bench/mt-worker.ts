/** Benchmark worker: one thread's share of a matvec or of the memory read probe. */
import { parentPort, workerData } from 'node:worker_threads';
import { FloatType } from '@airllm/format';
import { nativeBackend, readSum, type NativePath } from '../dist/native.js';
import { splitRange } from '../dist/split.js';
import { CTRL, type WorkerData } from './shared.js';

const d = workerData as WorkerData;
const be = nativeBackend(d.path as NativePath);
const ctrl = new Int32Array(d.control);
const [r0, r1] = splitRange(d.nOut, d.threads, d.index, 4);
const pool = new Uint8Array(d.pool);
const probeSlice = pool.subarray(
  Math.floor((pool.length / d.threads) * d.index),
  Math.floor((pool.length / d.threads) * (d.index + 1)),
);
let sink = 0;
let seen = 0;
parentPort!.postMessage('ready');
for (;;) {
  // wait for the next generation (the main thread bumps it and notifies)
  Atomics.wait(ctrl, CTRL.GENERATION, seen);
  const gen = Atomics.load(ctrl, CTRL.GENERATION);
  if (gen < 0) break;
  seen = gen;
  const kind = Atomics.load(ctrl, CTRL.KIND);
  if (kind === 1 || kind === 2) {
    sink += readSum(probeSlice, kind === 2 ? 4 : 1);
  } else {
    const copy = Atomics.load(ctrl, CTRL.COPY);
    const w = pool.subarray(copy * d.copyBytes, (copy + 1) * d.copyBytes);
    be.matmulQ80(FloatType.Q40, d.out, d.xq, w, d.nIn, d.nOut, kind === 3 ? 32 : 1, r0, r1);
  }
  Atomics.add(ctrl, CTRL.DONE, 1);
  Atomics.notify(ctrl, CTRL.DONE);
}
parentPort!.postMessage({ sink });
