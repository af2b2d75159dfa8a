/**
 * Entry of a scenario's child process (forked by spawn.ts with an IPC channel): receives one
 * job, runs it, sends the result and exits, so every scenario starts from a fresh process (its
 * own peak RSS, no mapping or page left over from the previous one). Session jobs also take
 * 'run' commands between set-up and 'finish', so that two engines can alternate run by run.
 */
import type { ChildMessage, Job, JobResult, ParentMessage, SessionInfo, SessionRun } from './protocol.js';

function send(msg: ChildMessage): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(msg, undefined, {}, () => resolve());
  });
}

/** What a session job uses to talk to the parent. */
export interface SessionControl {
  ready(info: SessionInfo): void;
  /** Waits for the parent: 'run' (do one more) or 'finish'. */
  next(): Promise<'run' | 'finish'>;
  ran(run: SessionRun): void;
}

const commands: ('run' | 'finish')[] = [];
let wake: (() => void) | undefined;
const control: SessionControl = {
  ready: (info) => void send({ type: 'ready', info }),
  ran: (run) => void send({ type: 'run', run }),
  next: async () => {
    while (commands.length === 0) await new Promise<void>((r) => (wake = r));
    return commands.shift()!;
  },
};

let started = false;
process.on('message', (m: ParentMessage) => {
  if (m.type === 'run' || m.type === 'finish') {
    commands.push(m.type);
    wake?.();
    return;
  }
  if (started) return;
  started = true;
  const job: Job = m.job;
  const log = (line: string): void => void send({ type: 'log', line });
  void (async () => {
    try {
      let result: JobResult;
      if (job.kind === 'airllm') result = await (await import('./child-airllm.js')).runAirllmJob(job, log, control);
      else result = await (await import('./child-peer.js')).runPeerJob(job, log, control);
      await send({ type: 'result', result });
      process.exit(0);
    } catch (e) {
      const err = e instanceof Error ? e : new Error(String(e));
      await send({ type: 'error', message: err.message, stack: err.stack });
      process.exit(1);
    }
  })();
});
