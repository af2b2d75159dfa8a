/**
 * Reading the engine's trace (Chrome trace events: per compute thread a 'load-wait' span and a
 * 'compute' span per segment, per load a 'load-prefetch' / 'load-demand' span on the prefetch
 * thread) into steps, and splitting a step's time.
 */
import type { TraceEvent } from '@airllm/engine';
import { median } from './stats.js';

export interface TraceStep {
  /** µs, absolute (trace clock). */
  readonly start: number;
  readonly end: number;
  readonly rows: number;
  /** Thread 0, ms. */
  readonly layerComputeMs: number;
  readonly headComputeMs: number;
  readonly loadWaitMs: number;
  readonly layers: number;
}

const segmentOf = (e: TraceEvent): number => Number((e.args as { segment?: number } | undefined)?.segment ?? -1);
const rowsOf = (e: TraceEvent): number => Number((e.args as { rows?: number } | undefined)?.rows ?? 0);

/**
 * Thread 0's spans cut into forward steps. A step ends with the head's compute span when it
 * computes logits; for steps without one (pipeline nodes) the layer index wrapping ends it.
 */
export function traceSteps(events: readonly TraceEvent[], nLayers: number): TraceStep[] {
  const t0 = events.filter((e) => e.tid === 0 && (e.cat === 'compute' || e.cat === 'load-wait')).sort((a, b) => a.ts - b.ts);
  const steps: TraceStep[] = [];
  let cur: { start: number; end: number; rows: number; layer: number; head: number; wait: number; layers: number; last: number } | undefined;
  const close = (): void => {
    if (cur && cur.layers + (cur.head > 0 ? 1 : 0) > 0) {
      steps.push({ start: cur.start, end: cur.end, rows: cur.rows, layerComputeMs: cur.layer / 1000, headComputeMs: cur.head / 1000, loadWaitMs: cur.wait / 1000, layers: cur.layers });
    }
    cur = undefined;
  };
  for (const e of t0) {
    const seg = segmentOf(e);
    if (cur && e.cat === 'compute' && seg !== nLayers && seg <= cur.last) close();
    cur ??= { start: e.ts, end: e.ts, rows: 0, layer: 0, head: 0, wait: 0, layers: 0, last: -1 };
    const dur = e.dur ?? 0;
    cur.end = Math.max(cur.end, e.ts + dur);
    if (e.cat === 'load-wait') cur.wait += dur;
    else if (seg === nLayers) {
      cur.head += dur;
      cur.rows = rowsOf(e);
      close();
    } else {
      cur.layer += dur;
      cur.layers++;
      cur.last = seg;
      cur.rows = rowsOf(e);
    }
  }
  close();
  return steps;
}

export interface StepBreakdown {
  readonly steps: number;
  /** Median time from one decode step's start to the next one's (the per-token period). */
  readonly stepMs: number;
  readonly layerComputeMs: number;
  readonly perLayerComputeMs: number;
  readonly headComputeMs: number;
  readonly loadWaitMs: number;
  /** Period minus the step itself: pool dispatch, sampling, embedding, generator overhead. */
  readonly outsideMs: number;
}

/** Medians over the single-row (decode) steps of a trace. */
export function decodeBreakdown(events: readonly TraceEvent[], nLayers: number): StepBreakdown | undefined {
  const steps = traceSteps(events, nLayers).filter((s) => s.rows === 1 && s.headComputeMs > 0);
  if (steps.length < 2) return undefined;
  const periods: number[] = [];
  for (let i = 1; i < steps.length; i++) periods.push((steps[i]!.start - steps[i - 1]!.start) / 1000);
  const walls = steps.map((s) => (s.end - s.start) / 1000);
  const stepMs = median(periods);
  const layerComputeMs = median(steps.map((s) => s.layerComputeMs));
  return {
    steps: steps.length,
    stepMs,
    layerComputeMs,
    perLayerComputeMs: layerComputeMs / Math.max(1, steps[0]!.layers),
    headComputeMs: median(steps.map((s) => s.headComputeMs)),
    loadWaitMs: median(steps.map((s) => s.loadWaitMs)),
    outsideMs: stepMs - median(walls),
  };
}

/** The time window (µs) of the last `k` steps that match `filter`, for a timeline. */
export function lastStepsWindow(events: readonly TraceEvent[], nLayers: number, k: number, filter: (s: TraceStep) => boolean = () => true): { start: number; end: number } | undefined {
  const steps = traceSteps(events, nLayers).filter(filter);
  if (steps.length === 0) return undefined;
  const chosen = steps.slice(-k);
  return { start: chosen[0]!.start, end: chosen.at(-1)!.end };
}

export interface IoBreakdown {
  /** Loads seen in the window (prefetch + demand). */
  readonly loads: number;
  readonly bytes: number;
  /** Time the I/O thread spent loading (union of its spans), ms. */
  readonly busyMs: number;
  readonly windowMs: number;
  /** bytes ÷ busy time: how fast the prefetcher brings weights in while it works. */
  readonly bytesPerSecond: number;
}

/**
 * The prefetch thread's loads, clipped to the given windows (µs; default: from the first load's
 * start to the last one's end). Bytes count each load in proportion to the part of it inside.
 */
export function ioBreakdown(events: readonly TraceEvent[], windows?: readonly { start: number; end: number }[]): IoBreakdown | undefined {
  const loads = events.filter((e) => e.cat === 'load-prefetch' || e.cat === 'load-demand').sort((a, b) => a.ts - b.ts);
  if (loads.length === 0) return undefined;
  const wins = windows ?? [{ start: loads[0]!.ts, end: Math.max(...loads.map((e) => e.ts + (e.dur ?? 0))) }];
  let bytes = 0;
  let busy = 0;
  let count = 0;
  for (const w of wins) {
    let coveredTo = w.start;
    for (const e of loads) {
      const s0 = Math.max(e.ts, w.start);
      const f = Math.min(e.ts + (e.dur ?? 0), w.end);
      if (f <= s0) continue;
      count++;
      const dur = e.dur ?? 0;
      bytes += Number((e.args as { bytes?: number } | undefined)?.bytes ?? 0) * (dur > 0 ? (f - s0) / dur : 1);
      const s = Math.max(s0, coveredTo);
      if (f > s) busy += f - s;
      coveredTo = Math.max(coveredTo, f);
    }
  }
  const windowUs = wins.reduce((a, w) => a + (w.end - w.start), 0);
  return { loads: count, bytes, busyMs: busy / 1000, windowMs: windowUs / 1000, bytesPerSecond: bytes / (busy / 1e6) };
}
