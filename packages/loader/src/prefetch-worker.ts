/**
 * Entry point of the prefetch worker thread (runs as dist/prefetch-worker.js). It receives the
 * residency descriptor as workerData and runs the prefetch loop until the residency closes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { PrefetchMessage, ResidencyShared } from './residency/protocol.js';
import { Prefetcher } from './residency/prefetcher.js';

const post = (m: PrefetchMessage): void => parentPort!.postMessage(m);
new Prefetcher(workerData as ResidencyShared, post).run();
