/**
 * How busy the machine is with other work. The benchmark shares its machine (2 cores here) with
 * whatever else runs; a timed run that overlaps someone else's compile or test suite measures
 * that, not the engines. Before each timed run the harness samples the CPUs' busy time while its
 * own processes are idle, and waits (up to a limit) until the machine is quiet.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

function cpuTimes(): { busy: number; total: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal …; iowait counts as idle.
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - idle, total };
  } catch {
    return undefined;
  }
}

/** Fraction (0..1) of all CPUs busy over the next `ms` (undefined where /proc/stat is missing). */
export async function cpuBusy(ms: number): Promise<number | undefined> {
  const a = cpuTimes();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuTimes();
  if (!a || !b || b.total === a.total) return undefined;
  return (b.busy - a.busy) / (b.total - a.total);
}

export interface QuietResult {
  /** Busy fraction of the last sample (others' work: our own processes are idle meanwhile). */
  readonly busy: number | undefined;
  readonly waitedMs: number;
  /** False when the limit ran out before the machine was quiet. */
  readonly quiet: boolean;
}

/**
 * Wait until the CPUs are at most `threshold` busy over a `sampleMs` sample (one core's worth of
 * someone else's work on 2 cores is 0.5), for at most `maxWaitMs`.
 */
export async function waitForQuiet(o: { threshold: number; sampleMs: number; maxWaitMs: number }): Promise<QuietResult> {
  const t0 = performance.now();
  for (;;) {
    const busy = await cpuBusy(o.sampleMs);
    const waitedMs = performance.now() - t0;
    if (busy === undefined || busy <= o.threshold) return { busy, waitedMs, quiet: true };
    if (waitedMs >= o.maxWaitMs) return { busy, waitedMs, quiet: false };
  }
}

export const CORES = cpus().length;
