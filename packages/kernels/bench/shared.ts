/**
 * Layout of the control SharedArrayBuffer between the benchmark and its worker threads (Int32
 * indices). The main thread publishes a job and bumps GENERATION; each worker waits on
 * GENERATION (Atomics.wait, no spinning), runs its rows, adds 1 to DONE and notifies it.
 */
export const CTRL = {
  /** Incremented by the main thread to start a job; -1 stops the workers. */
  GENERATION: 0,
  /** Workers that finished the current job. */
  DONE: 1,
  /** Job kind: 0 = matvec Q40xQ80, 1 = memory read probe, 2 = the same with 4 streams per thread, 3 = Q40xQ80 batch of 32. */
  KIND: 2,
  /** Index of the weight copy (matvec) to use. */
  COPY: 3,
  SIZE: 4,
} as const;

export interface WorkerData {
  readonly path: string;
  readonly index: number;
  readonly threads: number;
  readonly control: SharedArrayBuffer;
  readonly pool: SharedArrayBuffer;
  readonly copyBytes: number;
  readonly xq: Uint8Array;
  readonly out: Float32Array;
  readonly nIn: number;
  readonly nOut: number;
}
