/**
 * Test-only worker (dist/testing/scan-worker.js). Jobs:
 * - `sum`: sum every byte of a range of a shared mapping (reads it without copying).
 * - `scan`: attach to a residency and run `passes` cyclic scans with the other scan workers,
 *   meeting at a barrier after each segment; thread 0 releases. For every segment it checks this
 *   thread's half of the bytes against the file pattern and reports mismatches.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { attachResidency } from '../residency/client.js';
import type { ResidencyShared } from '../residency/protocol.js';
import { patternByte } from './model-file.js';

export type ScanJob =
  | { kind: 'sum'; map: SharedArrayBuffer; offset: number; length: number }
  | { kind: 'scan'; shared: ResidencyShared; thread: number; threads: number; passes: number; barrier: SharedArrayBuffer; computeMs: number; pattern: boolean };

function barrierWait(b: Int32Array, threads: number): void {
  // b[0] = arrived, b[1] = generation.
  const gen = Atomics.load(b, 1);
  if (Atomics.add(b, 0, 1) === threads - 1) {
    Atomics.store(b, 0, 0);
    Atomics.add(b, 1, 1);
    Atomics.notify(b, 1);
  } else {
    while (Atomics.load(b, 1) === gen) Atomics.wait(b, 1, gen, 1000);
  }
}

const job = workerData as ScanJob;
if (job.kind === 'sum') {
  const u8 = new Uint8Array(job.map, job.offset, job.length);
  let sum = 0;
  for (let i = 0; i < u8.length; i++) sum += u8[i]!;
  parentPort!.postMessage({ sum });
} else {
  const client = attachResidency(job.shared);
  const b = new Int32Array(job.barrier);
  let mismatches = 0;
  let checked = 0;
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  try {
    for (let p = 0; p < job.passes; p++) {
      for (let seg = 0; seg < client.segments.length; seg++) {
        const info = client.segments[seg]!;
        const loc = client.acquire(seg);
        info.extents.forEach((e, x) => {
          const u8 = new Uint8Array(loc.buffer, loc.extentOffsets[x]!, e.size);
          if (!job.pattern) return;
          // Each thread checks an interleaved quarter-page stride of each extent.
          for (let i = job.thread * 1024; i < u8.length; i += 1024 * job.threads) {
            checked++;
            if (u8[i] !== patternByte(e.offset + i)) mismatches++;
          }
        });
        if (job.computeMs > 0) Atomics.wait(sleeper, 0, 0, job.computeMs);
        barrierWait(b, job.threads);
        if (job.thread === 0) client.release(seg);
        barrierWait(b, job.threads);
      }
    }
    parentPort!.postMessage({ mismatches, checked });
  } catch (e) {
    parentPort!.postMessage({ error: { name: (e as Error).name, message: (e as Error).message } });
  }
}
