/**
 * How the main thread hands a step to the compute threads and learns it is done, without a
 * message per step: each compute thread runs one long piscina task (`serve`) that sleeps in
 * Atomics.wait on the step counter; the main thread writes the step into shared memory, bumps
 * the counter and waits with Atomics.waitAsync (its event loop stays free) until every thread
 * has counted itself done. A step costs two futex wake-ups instead of 2·threads messages.
 *
 * The atomic write of SEQ (main) and of DONE (workers) order the plain reads and writes of the
 * step's data around them (x, logits, reports).
 */
import type { SequenceRows, StepTask, ThreadReport } from './shared.js';

/** Control words (Int32Array). */
export const CTRL = Object.freeze({
  /** Step counter: bumped by the main thread for each step. */
  SEQ: 0,
  /** Threads done with the current step. */
  DONE: 1,
  /** 1: serve loops return at the next wake-up. */
  SHUTDOWN: 2,
  /**
   * Nonzero: a thread failed this step (its serve task rejects with the error). `t + 1`: thread
   * t's own step failed first (the root cause); FAILED_FOLLOWER: so far only threads stopped by
   * the barrier abort that a failing thread raises (or a thread that died).
   */
  FAILED: 3,
});
/** CTRL.FAILED while no thread has claimed to be the root cause. */
export const FAILED_FOLLOWER = -1;
export const CTRL_INTS = 4;

/** Task words: rows, layers.start, layers.end, nSeqs, nLogitRows, then 4 per sequence, then the logit rows. */
const TASK_HEAD = 5;

export function taskInts(maxRows: number): number {
  return TASK_HEAD + 4 * maxRows + maxRows;
}

/** Doubles per span of a report: [SpanKind, layer, waitStart, waitEnd, computeEnd]. */
export const SPAN_DOUBLES = 5;

/** Report doubles per thread: count, then SPAN_DOUBLES per span (a layer or the head). */
export function reportDoubles(spans: number): number {
  return 1 + SPAN_DOUBLES * spans;
}

export function writeTask(ints: Int32Array, task: Omit<StepTask, 'thread'>): void {
  ints[0] = task.rows;
  ints[1] = task.layers.start;
  ints[2] = task.layers.end;
  ints[3] = task.seqs.length;
  ints[4] = task.logitRows.length;
  let o = TASK_HEAD;
  for (const s of task.seqs) {
    ints[o++] = s.slot;
    ints[o++] = s.pos0;
    ints[o++] = s.row0;
    ints[o++] = s.rows;
  }
  for (const r of task.logitRows) ints[o++] = r;
}

export function readTask(ints: Int32Array, thread: number): StepTask {
  const nSeqs = ints[3]!;
  const nLogit = ints[4]!;
  const seqs: SequenceRows[] = [];
  let o = TASK_HEAD;
  for (let i = 0; i < nSeqs; i++, o += 4) seqs.push({ slot: ints[o]!, pos0: ints[o + 1]!, row0: ints[o + 2]!, rows: ints[o + 3]! });
  const logitRows = Array.from(ints.subarray(o, o + nLogit));
  return { thread, rows: ints[0]!, layers: { start: ints[1]!, end: ints[2]! }, seqs, logitRows };
}

export function writeReport(doubles: Float64Array, thread: number, stride: number, spans: readonly number[]): void {
  const base = thread * stride;
  doubles[base] = spans.length / SPAN_DOUBLES;
  for (let i = 0; i < spans.length; i++) doubles[base + 1 + i] = spans[i]!;
}

export function readReport(doubles: Float64Array, thread: number, stride: number): ThreadReport {
  const base = thread * stride;
  const n = doubles[base]!;
  return { thread, spans: Array.from(doubles.subarray(base + 1, base + 1 + SPAN_DOUBLES * n)) };
}
