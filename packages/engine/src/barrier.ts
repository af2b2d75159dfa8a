import { EngineError } from './errors.js';

/** Indices into the barrier's Int32Array (a SharedArrayBuffer shared by all compute threads). */
export const BARRIER_ARRIVED = 0;
export const BARRIER_GENERATION = 1;
/** Set to 1 by a thread that failed, so the others stop waiting instead of hanging. */
export const BARRIER_ABORT = 2;
export const BARRIER_INTS = 4;

/** How often a waiting thread re-checks the abort flag. */
const ABORT_POLL_MS = 200;

export class BarrierAbortedError extends EngineError {
  static override readonly code = 'AIRLLM_BARRIER_ABORTED';
}

/**
 * A reusable generation barrier for `parties` threads on one Int32Array. The last thread to
 * arrive resets the count and bumps the generation, waking the others. Waiters spin briefly
 * (only when there are no more threads than cores, so spinning never steals a core from the
 * thread being waited for) and then sleep in `Atomics.wait`.
 */
export class Barrier {
  constructor(
    readonly state: Int32Array,
    readonly parties: number,
    readonly spin: number,
  ) {}

  static createState(): Int32Array {
    return new Int32Array(new SharedArrayBuffer(BARRIER_INTS * 4));
  }

  wait(): void {
    if (this.parties === 1) return;
    const s = this.state;
    const gen = Atomics.load(s, BARRIER_GENERATION);
    if (Atomics.add(s, BARRIER_ARRIVED, 1) === this.parties - 1) {
      Atomics.store(s, BARRIER_ARRIVED, 0);
      Atomics.add(s, BARRIER_GENERATION, 1);
      Atomics.notify(s, BARRIER_GENERATION);
      return;
    }
    for (let i = 0; i < this.spin; i++) {
      if (Atomics.load(s, BARRIER_GENERATION) !== gen) return;
    }
    while (Atomics.load(s, BARRIER_GENERATION) === gen) {
      if (Atomics.load(s, BARRIER_ABORT) !== 0) throw new BarrierAbortedError('another compute thread failed');
      Atomics.wait(s, BARRIER_GENERATION, gen, ABORT_POLL_MS);
    }
  }

  /** Called by a failing thread: wakes everyone, who then throw instead of waiting forever. */
  abort(): void {
    Atomics.store(this.state, BARRIER_ABORT, 1);
    Atomics.notify(this.state, BARRIER_GENERATION);
  }

  /** Before a new step: clear a previous abort and any partial arrival count. */
  static reset(state: Int32Array): void {
    Atomics.store(state, BARRIER_ARRIVED, 0);
    Atomics.store(state, BARRIER_ABORT, 0);
  }
}
