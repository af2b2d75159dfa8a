import { describe, expect, it } from 'vitest';
import { BudgetTooSmallError } from '../src/errors.js';
import { planResidency } from '../src/residency/plan.js';

const L = 1000;
const layers = (n: number, head?: number): number[] => [...Array<number>(n).fill(L), ...(head === undefined ? [] : [head])];

describe('planResidency', () => {
  it('resident pins everything, whatever the budget', () => {
    const p = planResidency(layers(4, 300), 'resident', undefined, 2);
    expect(p.pinned).toEqual([true, true, true, true, true]);
    expect(p.slots).toBe(0);
    expect(p.plannedBytes).toBe(4300);
  });

  it('a budget of exactly two layers streams everything through two slots', () => {
    const p = planResidency(layers(20, 300), 'stream', 2 * L, 2);
    expect(p.pinned.every((x) => !x)).toBe(true);
    expect(p).toMatchObject({ slots: 2, slotBytes: L, pinnedBytes: 0, plannedBytes: 2 * L });
  });

  it('pins what fits after the slots, spread evenly over the scan', () => {
    // 10 layers, budget 6 layers: 2 slots + 4 pinned at positions floor((j+0.5)·10/4) = 1, 3, 6, 8.
    const p = planResidency(layers(10), 'stream', 6 * L, 2);
    expect(p.pinned.map((x, i) => (x ? i : -1)).filter((i) => i >= 0)).toEqual([1, 3, 6, 8]);
    expect(p.plannedBytes).toBe(6 * L);
  });

  it('pins a head larger than a layer when that lets slots be layer-sized', () => {
    // Head 1500 > layer: streaming it needs 2×1500 slots; pinning it needs 2×1000 + 1500.
    const p = planResidency(layers(6, 1500), 'stream', 3500, 2);
    expect(p.pinned).toEqual([false, false, false, false, false, false, true]);
    expect(p.slotBytes).toBe(L);
    expect(p.plannedBytes).toBe(3500);
  });

  it('a budget holding the whole model pins all and needs no slots', () => {
    const p = planResidency(layers(3, 10), 'stream', 3010, 2);
    expect(p.pinned.every(Boolean)).toBe(true);
    expect(p.slots).toBe(0);
  });

  it('sequential with one slot needs one layer', () => {
    const p = planResidency(layers(5), 'sequential', L, 1);
    expect(p).toMatchObject({ slots: 1, slotBytes: L, pinnedBytes: 0 });
  });

  it('with a window, streaming needs one layer + the window, and the rest of the budget pins', () => {
    // 10 layers, budget 6.5 layers: 2 slots pin 4 (6.5 − 2 = 4.5); one layer + a window of 0.2 pins 5.
    const slots = planResidency(layers(10), 'stream', 6.5 * L, 2);
    const win = planResidency(layers(10), 'stream', 6.5 * L, 2, 0.2 * L);
    expect(slots.pinnedBytes).toBe(4 * L);
    expect(win.pinnedBytes).toBe(5 * L);
    // Streaming gets what the pins leave (1.5 layers), never more than the slots would hold.
    expect(win.streamBytes).toBe(1.5 * L);
    expect(win.plannedBytes).toBe(6.5 * L);
    expect(planResidency(layers(10), 'stream', 9 * L, 2, 0.2 * L).streamBytes).toBe(2 * L);
    // The minimum budget drops from two layers to one layer + the window.
    expect(planResidency(layers(10, 300), 'stream', 1.2 * L, 2, 0.2 * L)).toMatchObject({ pinnedBytes: 0, streamBytes: 1.2 * L });
    expect(() => planResidency(layers(10, 300), 'stream', 1.2 * L - 1, 2, 0.2 * L)).toThrow(BudgetTooSmallError);
    // A window larger than a layer is the two-slot plan.
    expect(planResidency(layers(10), 'stream', 6.5 * L, 2, 5 * L)).toMatchObject({ pinnedBytes: 4 * L, streamBytes: 2 * L });
  });

  it('refuses a budget below what the slots need, naming the minimum', () => {
    const err = (() => {
      try {
        planResidency(layers(20, 300), 'stream', 2 * L - 1, 2);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(BudgetTooSmallError);
    expect((err as BudgetTooSmallError).expected).toBe(`≥ ${2 * L}`);
    expect((err as BudgetTooSmallError).actual).toBe(2 * L - 1);
    expect(() => planResidency(layers(3), 'stream', undefined, 2)).toThrow(BudgetTooSmallError);
  });
});
