/**
 * A timeline of the layer pipeline in Chrome trace-event format (open the JSON in Perfetto or
 * chrome://tracing). Times are absolute milliseconds (performance.timeOrigin based) so events
 * from every thread — compute workers, the prefetch worker, the main thread — line up.
 */
export interface TraceEvent {
  name: string;
  cat: string;
  ph: 'X' | 'i' | 'M';
  /** Microseconds. */
  ts: number;
  dur?: number;
  pid: number;
  tid: number | string;
  args?: Record<string, unknown>;
}

export class Trace {
  readonly events: TraceEvent[] = [];
  /** Upper bound on stored events, so a long run cannot grow memory without limit. */
  static readonly MAX_EVENTS = 1_000_000;

  span(name: string, cat: string, tid: number | string, startMs: number, endMs: number, args?: Record<string, unknown>): void {
    if (this.events.length >= Trace.MAX_EVENTS) return;
    const e: TraceEvent = { name, cat, ph: 'X', ts: startMs * 1000, dur: Math.max(0, (endMs - startMs) * 1000), pid: 1, tid };
    if (args) e.args = args;
    this.events.push(e);
  }

  clear(): void {
    this.events.length = 0;
  }

  toJSON(): { traceEvents: TraceEvent[]; displayTimeUnit: 'ms' } {
    const names = new Set(this.events.map((e) => e.tid));
    const meta: TraceEvent[] = [...names].map((tid) => ({
      name: 'thread_name',
      cat: '__metadata',
      ph: 'M',
      ts: 0,
      pid: 1,
      tid,
      args: { name: typeof tid === 'number' ? `compute ${tid}` : tid },
    }));
    return { traceEvents: [...meta, ...this.events], displayTimeUnit: 'ms' };
  }
}
