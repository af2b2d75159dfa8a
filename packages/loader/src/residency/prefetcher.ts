import { performance } from 'node:perf_hooks';
import { FileChangedError } from '../errors.js';
import { nativeAddon, type NativeAddon } from '../native.js';
import type { Extent } from '@airllm/format';
import { SegmentReader } from '../reader.js';
import { checkUnchanged } from '../weights.js';
import {
  C,
  ErrorCode,
  G,
  GC_BYTES_LOADED,
  GC_LOCKED,
  GC_STREAMED,
  GT,
  S,
  SEG_COUNTERS,
  SEG_TIMES,
  segWord,
  slotWord,
  State,
  T,
  WAIT_SLICE_MS,
  type PrefetchMessage,
  type ResidencyShared,
  type SegmentLoadEvent,
} from './protocol.js';

/**
 * The prefetch loop, run on its own worker thread (dist/prefetch-worker.js). It is the only
 * thread that moves segments out of EMPTY (so the only one assigning slots) and the only one
 * evicting. Priorities per turn: releases, then demands (a client is waiting), then warmup,
 * then the next segment after the cursor (prefetch). It does one load per turn so a demand never
 * waits behind more than the load in progress. With nothing to do it sleeps on the doorbell.
 *
 * Streamed segments also share a byte allowance (`streamBytes`): the prefetcher charges a
 * streamed segment's bytes chunk by chunk as it makes them resident and uncharges them when it
 * evicts the segment. A prefetch that runs out of allowance waits for a release (evicting
 * released segments itself meanwhile), and gives way to a demand for another segment.
 */
export class Prefetcher {
  readonly #s: ResidencyShared;
  readonly #ctrl: Int32Array;
  readonly #counters: BigInt64Array;
  readonly #times: Float64Array;
  readonly #addon: NativeAddon | undefined;
  /** The read backend's explicit reads (several in flight, O_DIRECT where the file system allows). */
  readonly #reader: SegmentReader | undefined;
  readonly #post: (m: PrefetchMessage) => void;
  readonly #n: number;
  /** Bytes charged per streamed segment, and their sum (only this thread changes them). */
  readonly #charged: Float64Array;
  #streamed = 0;
  /** Set when a prefetch gave up waiting for room; cleared by the next eviction. */
  #stalled = false;
  /** Set once an mlock failed: nothing more is tried. */
  #lockFailed = false;

  constructor(shared: ResidencyShared, post: (m: PrefetchMessage) => void) {
    this.#s = shared;
    this.#ctrl = new Int32Array(shared.ctrl);
    this.#counters = new BigInt64Array(shared.counters);
    this.#times = new Float64Array(shared.times);
    this.#addon = shared.backend === 'mmap' ? nativeAddon() : undefined;
    if (shared.backend === 'mmap' && this.#addon === undefined) throw new Error('prefetch worker cannot load the native addon');
    this.#reader = shared.backend === 'read' ? new SegmentReader(shared.path, shared.fd, shared.fileSize) : undefined;
    this.#post = post;
    this.#n = shared.segments.length;
    this.#charged = new Float64Array(this.#n);
  }

  run(): void {
    try {
      this.#loop();
    } finally {
      this.#reader?.close();
    }
  }

  #loop(): void {
    const ctrl = this.#ctrl;
    for (;;) {
      const bell = Atomics.load(ctrl, G.DOORBELL);
      if (Atomics.load(ctrl, G.CLOSED) !== 0) return;
      if (this.#turn()) continue;
      // Sleep until someone rings (the slice only bounds a lost wake-up; there is no polling work).
      Atomics.wait(ctrl, G.DOORBELL, bell, WAIT_SLICE_MS * 4);
    }
  }

  #state(seg: number): number {
    return Atomics.load(this.#ctrl, segWord(seg, S.STATE));
  }

  #setState(seg: number, from: number, to: number): boolean {
    const at = segWord(seg, S.STATE);
    const ok = Atomics.compareExchange(this.#ctrl, at, from, to) === from;
    Atomics.notify(this.#ctrl, at);
    return ok;
  }

  #turn(): boolean {
    const n = this.#n;
    const s = this.#s;
    const ctrl = this.#ctrl;
    if (Atomics.load(ctrl, G.BROKEN) !== 0) return false;

    if (this.#evictReleased()) return true;

    for (let seg = 0; seg < n; seg++) {
      if (Atomics.load(ctrl, segWord(seg, S.WANT)) === 0 || this.#state(seg) !== State.EMPTY) continue;
      if (s.segments[seg]!.pinned) return this.#load(seg, -1, 'demand');
      const slot = this.#freeSlot() ?? this.#evictForDemand();
      if (slot === undefined) continue; // every slot is in use: served after the next release
      // A demand is loaded whole without waiting: make room by dropping prefetched segments
      // nobody waits for, else serve it after the next release.
      while (!this.#fits(s.segments[seg]!.size) && this.#evictForDemand() !== undefined);
      if (!this.#fits(s.segments[seg]!.size)) continue;
      return this.#load(seg, slot, 'demand');
    }

    // Warmup before prefetch: a prefetch may wait for a release, which comes only once the
    // engine runs, after warmup.
    if (Atomics.load(ctrl, G.WARMUP) !== 0) {
      for (let seg = 0; seg < n; seg++) {
        if (s.segments[seg]!.pinned && this.#state(seg) === State.EMPTY) return this.#load(seg, -1, 'warmup');
      }
      Atomics.store(ctrl, G.WARMUP, 0);
    }

    // A demand still pending here waits for a release; prefetching meanwhile would only be
    // abandoned again (#reserve gives way to demands), so sleep until the release rings.
    if (s.prefetch && !this.#stalled && !this.#demandPending()) {
      const cursor = Atomics.load(ctrl, G.CURSOR);
      for (let i = 1; i < n; i++) {
        const seg = (cursor + i) % n;
        const st = this.#state(seg);
        if (st === State.READY || st === State.IN_USE || st === State.LOADING) continue;
        if (st !== State.EMPTY) break;
        if (s.segments[seg]!.pinned) return this.#load(seg, -1, 'prefetch');
        // A prefetch may start behind segments prefetched ahead and not acquired yet, and wait
        // in #reserve for room; if a client then waits for it instead (it skipped them), or they
        // come after it, #reserve drops them.
        const slot = this.#freeSlot();
        if (slot === undefined || !this.#fits(Math.min(s.chunkBytes, s.segments[seg]!.size))) break;
        return this.#load(seg, slot, 'prefetch');
      }
    }

    return false;
  }

  /** mlock a pinned segment's (resident) pages; on the first failure, say why and stop trying. */
  #lock(extents: readonly Extent[]): void {
    for (const e of extents) {
      if (this.#lockFailed) return;
      try {
        this.#addon!.lock(this.#s.map!, e.offset, e.size);
        Atomics.add(this.#counters, this.#n * SEG_COUNTERS + GC_LOCKED, BigInt(e.size));
      } catch (err) {
        this.#lockFailed = true;
        const code = (err as { code?: string }).code ?? '';
        this.#post({ type: 'lock-failed', message: `mlock of pinned weights failed (${code}: ${(err as Error).message}); they stay mapped but unlocked, so the kernel may reclaim them` });
      }
    }
  }

  /** Evict every segment a client released; whether there was one. */
  #evictReleased(): boolean {
    let evicted = false;
    for (let seg = 0; seg < this.#n; seg++) {
      if (this.#state(seg) === State.RELEASING && this.#setState(seg, State.RELEASING, State.EVICTING)) {
        this.#evict(seg);
        evicted = true;
      }
    }
    return evicted;
  }

  #demandPending(except = -1): boolean {
    for (let i = 0; i < this.#n; i++) {
      if (i !== except && Atomics.load(this.#ctrl, segWord(i, S.WANT)) !== 0 && this.#state(i) === State.EMPTY) return true;
    }
    return false;
  }

  #warmupPending(): boolean {
    if (Atomics.load(this.#ctrl, G.WARMUP) === 0) return false;
    for (let i = 0; i < this.#n; i++) if (this.#s.segments[i]!.pinned && this.#state(i) === State.EMPTY) return true;
    return false;
  }

  #fits(bytes: number): boolean {
    return this.#streamed + bytes <= this.#s.streamBytes;
  }

  #charge(seg: number, bytes: number): void {
    this.#charged[seg]! += bytes;
    this.#streamed += bytes;
    Atomics.store(this.#counters, this.#n * SEG_COUNTERS + GC_STREAMED, BigInt(this.#streamed));
  }

  #uncharge(seg: number): void {
    this.#streamed -= this.#charged[seg]!;
    this.#charged[seg] = 0;
    Atomics.store(this.#counters, this.#n * SEG_COUNTERS + GC_STREAMED, BigInt(this.#streamed));
  }

  /**
   * Charge `bytes` more of streamed segment `seg` (being loaded), waiting for releases while the
   * allowance is full and evicting them here (this thread is the one that evicts). False when
   * the load should stop instead: closing, broken, or a client waits for another segment (a
   * prefetch never holds up a demand).
   */
  #reserve(seg: number, bytes: number): boolean {
    const ctrl = this.#ctrl;
    let since: number | undefined;
    for (;;) {
      const bell = Atomics.load(ctrl, G.DOORBELL);
      if (this.#fits(bytes)) {
        this.#charge(seg, bytes);
        return true;
      }
      if (Atomics.load(ctrl, G.CLOSED) !== 0 || Atomics.load(ctrl, G.BROKEN) !== 0) return false;
      if (this.#evictReleased()) continue;
      if (this.#demandPending(seg) || this.#warmupPending()) return false;
      // Prefetched segments nobody waits for make way: those needed after this one always, and
      // all of them once a client waits for this one (it skipped them; it would otherwise wait
      // for room only their release could make, and it never acquires them).
      const wanted = Atomics.load(ctrl, segWord(seg, S.WANT)) !== 0;
      if (this.#evictForDemand(wanted ? undefined : seg) !== undefined) continue;
      // Waited stallMs and nothing was released: a client may hold the segments in the way while
      // it waits for this one. Give the load up (and prefetch nothing until a release), so that
      // its acquire sees EMPTY and fails with SlotsExhaustedError instead of hanging.
      since ??= performance.now();
      if (performance.now() - since >= this.#s.stallMs) {
        this.#stalled = true;
        return false;
      }
      Atomics.wait(ctrl, G.DOORBELL, bell, WAIT_SLICE_MS);
    }
  }

  #freeSlot(): number | undefined {
    for (let k = 0; k < this.#s.slots; k++) {
      if (Atomics.load(this.#ctrl, slotWord(this.#n, k)) < 0) return k;
    }
    return undefined;
  }

  /**
   * Free a slot held by a prefetched segment nobody uses yet, the one needed last; with `after`,
   * only one needed after that segment (further from the cursor).
   */
  #evictForDemand(after?: number): number | undefined {
    const cursor = Atomics.load(this.#ctrl, G.CURSOR);
    let victim = -1;
    let distance = after === undefined ? -1 : (after - cursor + this.#n) % this.#n;
    for (let k = 0; k < this.#s.slots; k++) {
      const owner = Atomics.load(this.#ctrl, slotWord(this.#n, k));
      if (owner < 0 || this.#state(owner) !== State.READY || Atomics.load(this.#ctrl, segWord(owner, S.WANT)) !== 0) continue;
      const d = (owner - cursor + this.#n) % this.#n;
      if (d > distance) {
        victim = owner;
        distance = d;
      }
    }
    if (victim < 0 || !this.#setState(victim, State.READY, State.EVICTING)) return undefined;
    const slot = Atomics.load(this.#ctrl, segWord(victim, S.SLOT));
    this.#evict(victim);
    return slot;
  }

  #evict(seg: number): void {
    this.#drop(seg, State.EVICTING);
  }

  /** Drop a streamed segment's pages and bookkeeping (slot, charge) and move it from `from` to EMPTY. */
  #drop(seg: number, from: number): void {
    if (from === State.EVICTING) this.#stalled = false;
    const info = this.#s.segments[seg]!;
    if (this.#addon !== undefined && this.#s.map !== null) {
      try {
        for (const e of info.extents) this.#addon.advise(this.#s.map, e.offset, e.size, 'dontneed');
      } catch {
        // The mapping was closed under us (weights closed): nothing left to drop.
      }
    }
    this.#freeSlotOf(seg);
    this.#setState(seg, from, State.EMPTY);
  }

  /** Give back what a streamed segment holds of the allowance, and its slot. */
  #freeSlotOf(seg: number): void {
    this.#uncharge(seg);
    const slot = Atomics.load(this.#ctrl, segWord(seg, S.SLOT));
    if (slot >= 0) Atomics.store(this.#ctrl, slotWord(this.#n, slot), -1);
    Atomics.store(this.#ctrl, segWord(seg, S.SLOT), -1);
  }

  #load(seg: number, slot: number, reason: SegmentLoadEvent['reason']): boolean {
    const s = this.#s;
    const info = s.segments[seg]!;
    const ctrl = this.#ctrl;
    // Clear the demand first: a client that sees LOADING sets WANT again to say it waits for
    // this load (see #reserve), and that must not be lost.
    Atomics.store(ctrl, segWord(seg, S.WANT), 0);
    if (!this.#setState(seg, State.EMPTY, State.LOADING)) return true;
    if (slot >= 0) {
      Atomics.store(ctrl, slotWord(this.#n, slot), seg);
      Atomics.store(ctrl, segWord(seg, S.SLOT), slot);
    }
    const startMs = performance.timeOrigin + performance.now();
    const t0 = process.hrtime.bigint();
    try {
      // Refuse to touch pages past a new end of file: that is what would raise SIGBUS.
      checkUnchanged(s.fd, s.fileSize, s.path);
      if (s.map !== null) {
        if (!this.#makeResident(seg, s.map, info.extents, this.#upNext(seg), slot >= 0)) {
          this.#abandon(seg);
          return true;
        }
        if (slot < 0 && s.lockPinned) this.#lock(info.extents);
      } else {
        if (slot >= 0) this.#charge(seg, info.size);
        const buf = slot >= 0 ? s.slotBuffers[slot]! : s.pinnedBuffers[seg]!;
        // Extents in file order: sequential reads.
        info.extents.forEach((e, i) => this.#reader!.read(buf, info.packed[i]!, e.offset, e.size));
      }
      checkUnchanged(s.fd, s.fileSize, s.path, s.map ?? undefined, this.#addon);
    } catch (e) {
      this.#fail(seg, e);
      return true;
    }
    const ns = process.hrtime.bigint() - t0;
    const endMs = performance.timeOrigin + performance.now();
    const c = seg * SEG_COUNTERS;
    Atomics.add(this.#counters, c + C.LOADS, 1n);
    Atomics.add(this.#counters, c + C.LOAD_NS, ns);
    Atomics.add(this.#counters, this.#n * SEG_COUNTERS + GC_BYTES_LOADED, BigInt(info.size));
    this.#times[seg * SEG_TIMES + T.LOAD_START] = startMs;
    this.#times[seg * SEG_TIMES + T.LOAD_END] = endMs;
    this.#setState(seg, State.LOADING, State.READY);
    if (s.trace) this.#post({ type: 'load', event: { segment: seg, kind: info.kind, layer: info.layer, bytes: info.size, startMs, endMs, reason } });
    return true;
  }

  /**
   * The segment this thread will most likely load after `seg`: the next one in cyclic order if
   * it is not resident (prefetch mode only; sequential mode must not overlap anything).
   */
  #upNext(seg: number): readonly Extent[] | undefined {
    if (!this.#s.prefetch || this.#n < 2) return undefined;
    const next = (seg + 1) % this.#n;
    return this.#state(next) === State.EMPTY ? this.#s.segments[next]!.extents : undefined;
  }

  /**
   * MADV_WILLNEED a few chunks ahead (the kernel queues their reads), then fault in the
   * current chunk: one byte per page, or MADV_POPULATE_READ. The device always has the next
   * chunks queued while this thread waits on the current one. Near the end of the segment the
   * read-ahead runs on into the first chunks of the segment expected next, so the device does
   * not go idle between two loads. WILLNEED only fills the page cache, not this process's
   * page tables, so it costs no budget: the next segment's pages are mapped (RSS) only when
   * its own load touches them, after a slot is free. Chunks run over the extents in file order.
   */
  #makeResident(seg: number, map: SharedArrayBuffer, extents: readonly Extent[], next: readonly Extent[] | undefined, streamed: boolean): boolean {
    const addon = this.#addon!;
    const ahead = this.#s.readaheadChunks;
    const mine = chunksOf(extents, this.#s.chunkBytes);
    const theirs = next === undefined ? [] : chunksOf(next, this.#s.chunkBytes);
    const advise = (k: number): void => {
      const c = k < mine.length ? mine[k] : theirs[k - mine.length];
      if (c !== undefined) addon.advise(map, c.offset, c.size, 'willneed');
    };
    // Chunks up to `ahead` were already advised by the previous load's run-on (harmless twice).
    for (let k = 0; k < ahead; k++) advise(k);
    for (let k = 0; k < mine.length; k++) {
      advise(k + ahead);
      const { offset, size } = mine[k]!;
      if (streamed && !this.#reserve(seg, size)) return Atomics.load(this.#ctrl, G.CLOSED) !== 0;
      if (this.#s.populate) addon.advise(map, offset, size, 'populate');
      else addon.touch(map, offset, size);
      if (Atomics.load(this.#ctrl, G.CLOSED) !== 0) return true;
    }
    return true;
  }

  /** Stop loading a streamed segment part way: drop what was touched and make it EMPTY again. */
  #abandon(seg: number): void {
    this.#drop(seg, State.LOADING);
    // A client may have started waiting for it meanwhile: let it ask again.
    this.#ring();
  }

  #ring(): void {
    Atomics.add(this.#ctrl, G.DOORBELL, 1);
    Atomics.notify(this.#ctrl, G.DOORBELL);
  }

  #fail(seg: number, e: unknown): void {
    const ctrl = this.#ctrl;
    const changed = e instanceof FileChangedError;
    const code = changed ? ErrorCode.FILE_CHANGED : ErrorCode.IO;
    if (changed) {
      const g = this.#n * SEG_TIMES;
      this.#times[g + GT.ERR_EXPECTED] = Number(e.expected ?? this.#s.fileSize);
      this.#times[g + GT.ERR_ACTUAL] = Number(e.actual ?? NaN);
    }
    this.#freeSlotOf(seg);
    Atomics.store(ctrl, segWord(seg, S.ERROR), code);
    this.#setState(seg, State.LOADING, State.FAILED);
    this.#post({ type: 'error', segment: seg, message: e instanceof Error ? e.message : String(e) });
    if (changed) {
      // The file is no longer the one we planned for: fail everything, wake every waiter.
      Atomics.store(ctrl, G.BROKEN, code);
      for (let i = 0; i < this.#n; i++) Atomics.notify(ctrl, segWord(i, S.STATE));
    }
  }
}

/** `extents` cut into pieces of at most `chunk` bytes, in order. */
function chunksOf(extents: readonly Extent[], chunk: number): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    for (let o = 0; o < e.size; o += chunk) out.push({ offset: e.offset + o, size: Math.min(chunk, e.size - o) });
  }
  return out;
}
