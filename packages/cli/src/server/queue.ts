/**
 * A first-in first-out admission queue in front of the one engine: at most `maxRunning`
 * requests hold the engine, at most `maxWaiting` wait behind them, and a waiter whose client
 * goes away leaves the queue at once (its place goes to the next one).
 */
import { AirllmError } from '@airllm/format';

/** Every waiting place is taken (the server answers 429 with Retry-After). */
export class QueueFullError extends AirllmError {
  static override readonly code = 'AIRLLM_QUEUE_FULL';
  constructor(readonly retryAfterSeconds: number) {
    super('the server is busy: the request queue is full', { retryAfterSeconds });
  }
}

/** The queue was closed (the server is shutting down). */
export class QueueClosedError extends AirllmError {
  static override readonly code = 'AIRLLM_QUEUE_CLOSED';
  constructor() {
    super('the server is shutting down');
  }
}

/** The waiter's signal aborted before its turn came. */
export class WaitCancelledError extends AirllmError {
  static override readonly code = 'AIRLLM_WAIT_CANCELLED';
  constructor() {
    super('cancelled while waiting in the queue');
  }
}

interface Waiter {
  grant: (release: () => void) => void;
  fail: (e: Error) => void;
}

export class FairQueue {
  #running = 0;
  readonly #waiting: Waiter[] = [];
  #closed = false;
  /** Recent service times (ms), for Retry-After. */
  readonly #durations: number[] = [];

  constructor(
    readonly maxRunning: number,
    readonly maxWaiting: number,
  ) {}

  get running(): number {
    return this.#running;
  }
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * Wait for a turn; resolves with the function that ends it. Rejects at once with
   * QueueFullError when every waiting place is taken, and with WaitCancelledError when `signal`
   * aborts first.
   */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.#closed) return Promise.reject(new QueueClosedError());
    if (signal?.aborted) return Promise.reject(new WaitCancelledError());
    if (this.#running < this.maxRunning && this.#waiting.length === 0) return Promise.resolve(this.#start());
    if (this.#waiting.length >= this.maxWaiting) return Promise.reject(new QueueFullError(this.retryAfterSeconds()));
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.#waiting.indexOf(waiter);
        if (i >= 0) this.#waiting.splice(i, 1);
        reject(new WaitCancelledError());
      };
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
        fail: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  #start(): () => void {
    this.#running++;
    const t0 = performance.now();
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#durations.push(performance.now() - t0);
      if (this.#durations.length > 16) this.#durations.shift();
      this.#running--;
      this.#next();
    };
  }

  #next(): void {
    while (this.#running < this.maxRunning && this.#waiting.length > 0) this.#waiting.shift()!.grant(this.#start());
  }

  /** Seconds until a place is likely free: the waiting line times the median service time. */
  retryAfterSeconds(): number {
    const d = [...this.#durations].sort((a, b) => a - b);
    const median = d.length > 0 ? d[d.length >> 1]! : 1000;
    const ahead = (this.#waiting.length + 1) / Math.max(1, this.maxRunning);
    return Math.min(3600, Math.max(1, Math.ceil((ahead * median) / 1000)));
  }

  /** Refuse new requests and fail every waiter with QueueClosedError. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiting.splice(0)) w.fail(new QueueClosedError());
  }
}
