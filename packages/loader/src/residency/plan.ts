import { BudgetTooSmallError } from '../errors.js';
import type { ResidencyMode } from './protocol.js';

export interface ResidencyPlan {
  readonly pinned: readonly boolean[];
  readonly slots: number;
  /** Size of one streaming slot: the largest streamed segment (0 when nothing streams). */
  readonly slotBytes: number;
  readonly pinnedBytes: number;
  /** pinnedBytes + slots · slotBytes: what the plan holds at most. */
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
 */
export function planResidency(sizes: readonly number[], mode: ResidencyMode, budgetBytes: number | undefined, slots: number): ResidencyPlan {
  const n = sizes.length;
  const total = sizes.reduce((a, b) => a + b, 0);
  const all = (): ResidencyPlan => ({ pinned: sizes.map(() => true), slots: 0, slotBytes: 0, pinnedBytes: total, plannedBytes: total });
  if (mode === 'resident') return all();
  if (budgetBytes === undefined || !Number.isFinite(budgetBytes) || budgetBytes < 0) {
    throw new BudgetTooSmallError(`mode '${mode}' needs budgetBytes`, { field: 'budgetBytes', expected: 'a byte count ≥ 0', actual: String(budgetBytes) });
  }
  if (budgetBytes >= total) return all();

  let best: ResidencyPlan | undefined;
  let minNeed = Infinity;
  const candidates = [...new Set(sizes)].sort((a, b) => a - b);
  for (const slotBytes of candidates) {
    const forced = sizes.map((s) => s > slotBytes);
    const forcedBytes = sizes.reduce((a, s, i) => a + (forced[i] ? s : 0), 0);
    const need = slots * slotBytes + forcedBytes;
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
    const plan: ResidencyPlan = {
      pinned,
      slots: streaming ? slots : 0,
      slotBytes: streaming ? slotBytes : 0,
      pinnedBytes,
      plannedBytes: pinnedBytes + (streaming ? slots * slotBytes : 0),
    };
    if (best === undefined || plan.pinnedBytes > best.pinnedBytes) best = plan;
  }
  if (best === undefined) {
    throw new BudgetTooSmallError(`budget cannot hold ${slots} streaming slot(s) of ${n > 0 ? Math.min(...candidates) : 0}+ bytes`, {
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
