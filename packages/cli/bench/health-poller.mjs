/**
 * A thread that asks a server's /health every `everyMs` until told to stop (any message), and
 * posts `{ at, ms, status, health?, error? }` per check: when it was sent (ms since the epoch),
 * how long the answer took, its status and body. On a thread of its own, so the work of the
 * thread that started it (sending large bodies, running clients) does not delay the checks.
 * Used by the soak and serve-long-prompt benches and by test/serve-process.test.ts.
 *
 *   new Worker(new URL('./health-poller.mjs', import.meta.url), { workerData: { url, everyMs: 20 } })
 */
import { parentPort, workerData } from 'node:worker_threads';

const { url, everyMs } = workerData;
let stop = false;
parentPort.on('message', () => (stop = true));
while (!stop) {
  const t0 = performance.now();
  const at = performance.timeOrigin + t0;
  try {
    const r = await fetch(`${url}/health`);
    const health = await r.json();
    parentPort.postMessage({ at, ms: performance.now() - t0, status: r.status, health });
  } catch (e) {
    parentPort.postMessage({ at, ms: performance.now() - t0, status: 0, error: String(e) });
  }
  await new Promise((r) => setTimeout(r, everyMs));
}
parentPort.close();
