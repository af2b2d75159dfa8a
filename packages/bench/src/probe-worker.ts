/**
 * A memory-read worker for the DRAM probe: waits on a start word, reads its slice of a shared
 * buffer, reports when it started and finished. `native`: the kernels addon's widest-load sum;
 * `memcmp`: Buffer.equals of the slice's two identical halves (libc memcmp reads both to the end).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readSum } from '@airllm/kernels';

interface ProbeWorkerData {
  readonly buffer: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
  readonly start: number;
  readonly length: number;
  readonly method: 'native' | 'memcmp';
}

const d = workerData as ProbeWorkerData;
const ctrl = new Int32Array(d.control);
const half = d.length / 2;
const a = Buffer.from(d.buffer, d.start, half);
const b = Buffer.from(d.buffer, d.start + half, half);
const all = new Uint8Array(d.buffer, d.start, d.length);
let sink = 0;

for (let round = 1; ; round++) {
  // ctrl[0] = round to run (0 = stop), bumped by the parent.
  Atomics.wait(ctrl, 0, round - 1);
  if (Atomics.load(ctrl, 0) < 0) break;
  const t0 = performance.timeOrigin + performance.now();
  if (d.method === 'native') sink += readSum(all);
  else sink += a.equals(b) ? 1 : 0;
  const t1 = performance.timeOrigin + performance.now();
  parentPort!.postMessage({ round, t0, t1, sink });
}
