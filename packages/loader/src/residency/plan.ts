import { BudgetTooSmallError } from '../errors.js';
import type { ResidencyMode } from './protocol.js';

export interface ResidencyPlan {
  readonly pinned: readonly boolean[];
  readonly slots: number;
  /** Size of one streaming slot: the largest streamed segment (0 when nothing streams). */
  readonly slotBytes: number;
  readonly pinnedBytes: number;
  /**
   * Bytes streamed segments may hold at once (pages touched by the prefetcher and not yet
   * released): slots · slotBytes, or with a window (mmap) what the budget leaves after the pins.
   */
  readonly streamBytes: number;
  /** pinnedBytes + streamBytes: what the plan holds at most. */
  readonly plannedBytes: number;
}

/**
 * Decide which segments stay pinned and how large the streaming slots are.
 *
 * Why pin and not LRU: the engine scans the segments cyclically (0, 1, …, n−1, 0, …). An LRU
 * cache smaller than the scan evicts each segment just before it is needed again and misses
 * every time (see policy.ts); a fixed pinned set hits on every pinned segment, so disk bytes per
 * pass are (model − pinned).
 *
 * Slots hold streamed segments, so a slot is as large as the largest streamed segment. A
 * segment larger than the chosen slot size must be pinned; we try every candidate slot size
 * (each distinct segment size) and keep the plan that pins the most bytes.
 *
 * Pinned segments are spread evenly over the scan rather than packed at the front: while a
 * pinned segment computes, the prefetcher fetches the next streamed one, so spreading them
 * gives every streamed load some compute to hide behind.
 *
 * With `windowBytes` (mmap streaming, where a "slot" is only an allowance of mapped pages) the
 * streamed segments need one segment plus a window instead of `slots` whole segments: the
 * prefetcher fetches the next segment chunk by chunk as the previous one's pages are released,
 * with at most `windowBytes` of it ahead while a whole segment is held. Decode from disk is
 * I/O bound, so a window of a few chunks keeps the disk busy, and the budget this frees (up to
 * a segment less a window) pins more layers, which is what cuts disk bytes per token. Whatever
 * the pins leave of the budget goes to streaming (up to `slots` segments).
 */
export function planResidency(
  sizes: readonly number[],
  mode: ResidencyMode,
  budgetBytes: number | undefined,
  slots: number,
  windowBytes?: number,
): ResidencyPlan {
  const n = sizes.length;
  const total = sizes.reduce((a, b) => a + b, 0);
  const all = (): ResidencyPlan => ({ pinned: sizes.map(() => true), slots: 0, slotBytes: 0, pinnedBytes: total, streamBytes: 0, plannedBytes: total });
  if (mode === 'resident') return all();
  if (budgetBytes === undefined || !Number.isFinite(budgetBytes) || budgetBytes < 0) {
    throw new BudgetTooSmallError(`mode '${mode}' needs budgetBytes`, { field: 'budgetBytes', expected: 'a byte count ≥ 0', actual: String(budgetBytes) });
  }
  if (budgetBytes >= total) return all();

  let best: ResidencyPlan | undefined;
  let minNeed = Infinity;
  const candidates = [...new Set(sizes)].sort((a, b) => a - b);
  // A window replaces the second and later slots (mmap); with one slot there is nothing to replace.
  const windowed = windowBytes !== undefined && slots >= 2;
  for (const slotBytes of candidates) {
    const forced = sizes.map((s) => s > slotBytes);
    const forcedBytes = sizes.reduce((a, s, i) => a + (forced[i] ? s : 0), 0);
    const streamNeed = windowed ? slotBytes + Math.min(windowBytes, slotBytes) : slots * slotBytes;
    const need = streamNeed + forcedBytes;
    minNeed = Math.min(minNeed, need);
    if (need > budgetBytes) continue;
    const free = sizes.map((_, i) => i).filter((i) => !forced[i]);
    const avail = budgetBytes - need;
    const chosen = choosePins(free, sizes, avail);
    const pinned = forced.slice();
    for (const i of chosen) pinned[i] = true;
    const pinnedBytes = sizes.reduce((a, s, i) => a + (pinned[i] ? s : 0), 0);
    // Every segment pinned: no slot needed at all.
    const streaming = pinned.some((p) => !p);
    const streamBytes = !streaming ? 0 : windowBytes === undefined ? streamNeed : Math.min(slots * slotBytes, budgetBytes - pinnedBytes);
    const plan: ResidencyPlan = {
      pinned,
      slots: streaming ? slots : 0,
      slotBytes: streaming ? slotBytes : 0,
      pinnedBytes,
      streamBytes,
      plannedBytes: pinnedBytes + streamBytes,
    };
    if (best === undefined || plan.pinnedBytes > best.pinnedBytes) best = plan;
  }
  if (best === undefined) {
    const what = windowed ? 'one streamed segment and its prefetch window:' : `${slots} streaming slot(s) of`;
    throw new BudgetTooSmallError(`budget cannot hold ${what} ${n > 0 ? Math.min(...candidates) : 0}+ bytes`, {
      field: 'budgetBytes',
      expected: `≥ ${minNeed}`,
      actual: budgetBytes,
    });
  }
  return best;
}

/** Pick as many of `free` (segment indices in scan order) as fit in `avail`, evenly spread. */
function choosePins(free: readonly number[], sizes: readonly number[], avail: number): number[] {
  const bySize = free.slice().sort((a, b) => sizes[a]! - sizes[b]!);
  let count = 0;
  let sum = 0;
  while (count < bySize.length && sum + sizes[bySize[count]!]! <= avail) sum += sizes[bySize[count++]!]!;
  if (count === 0) return [];
  const m = free.length;
  const spread: number[] = [];
  for (let j = 0; j < count; j++) spread.push(free[Math.floor(((j + 0.5) * m) / count)]!);
  const spreadBytes = spread.reduce((a, i) => a + sizes[i]!, 0);
  return spreadBytes <= avail ? spread : bySize.slice(0, count);
}
