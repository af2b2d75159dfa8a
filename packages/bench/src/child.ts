/**
 * Entry of a scenario's child process (forked by spawn.ts with an IPC channel): receives one
 * job, runs it, sends the result and exits, so every scenario starts from a fresh process (its
 * own peak RSS, no mapping or page left over from the previous one).
 */
import type { ChildMessage, Job, JobResult } from './protocol.js';

function send(msg: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(msg, undefined, {}, () => resolve());
  });
}

process.once('message', (job: Job) => {
  const log = (line: string): void => void send({ type: 'log', line });
  void (async () => {
    try {
      let result: JobResult;
      if (job.kind === 'airllm') result = await (await import('./child-airllm.js')).runAirllmJob(job, log);
      else result = await (await import('./child-peer.js')).runPeerJob(job, log);
      await send({ type: 'result', result });
      process.exit(0);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      await send({ type: 'error', message: err.message, stack: err.stack });
      process.exit(1);
    }
  })();
});
