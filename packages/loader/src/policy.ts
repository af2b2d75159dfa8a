/**
 * Why the residency pins instead of using LRU, as a measurement anyone can rerun: simulate a
 * cache of `capacity` segments under the engine's access pattern, a cyclic scan over
 * `segments` segments repeated `passes` times.
 *
 * LRU evicts the least recently used segment, which in a cyclic scan larger than the cache is
 * always the one needed soonest after the current one comes back round: once warm it misses on
 * every access. Pinning keeps `capacity − slots` segments for good and streams the rest through
 * `slots` slots: it hits on every pinned segment.
 */
export interface CacheSimulation {
  readonly policy: 'lru' | 'pin';
  readonly accesses: number;
  readonly hits: number;
  readonly misses: number;
  /** Misses per pass after the first (warm) pass. */
  readonly warmMissesPerPass: number;
}

export function simulateCyclicScan(policy: 'lru' | 'pin', segments: number, capacity: number, passes: number, slots = 2): CacheSimulation {
  if (!(Number.isInteger(segments) && segments > 0 && Number.isInteger(capacity) && capacity > 0 && Number.isInteger(passes) && passes > 0)) {
    throw new RangeError('segments, capacity and passes must be positive integers');
  }
  let hits = 0;
  let misses = 0;
  let warmMisses = 0;
  const count = (hit: boolean, pass: number): void => {
    if (hit) hits++;
    else {
      misses++;
      if (pass > 0) warmMisses++;
    }
  };
  if (policy === 'lru') {
    // Map iteration order is insertion order: delete + set moves a key to most recent.
    const cache = new Map<number, true>();
    for (let p = 0; p < passes; p++) {
      for (let s = 0; s < segments; s++) {
        const hit = cache.delete(s);
        cache.set(s, true);
        if (!hit && cache.size > capacity) cache.delete(cache.keys().next().value!);
        count(hit, p);
      }
    }
  } else {
    const pinnedCount = Math.max(0, Math.min(segments, capacity - (capacity >= segments ? 0 : slots)));
    const pinned = new Set<number>();
    const loaded = new Set<number>();
    for (let j = 0; j < pinnedCount; j++) pinned.add(Math.floor(((j + 0.5) * segments) / pinnedCount));
    for (let p = 0; p < passes; p++) {
      for (let s = 0; s < segments; s++) {
        const hit = loaded.has(s);
        if (pinned.has(s)) loaded.add(s);
        count(hit, p);
      }
    }
  }
  const accesses = segments * passes;
  return { policy, accesses, hits, misses, warmMissesPerPass: passes > 1 ? warmMisses / (passes - 1) : misses };
}
