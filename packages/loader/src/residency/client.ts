import type { TensorInfo } from '@airllm/format';
import { ClosedError, FileChangedError, IoError, OutOfRangeError, SlotsExhaustedError, StateError, type AirllmError } from '../errors.js';
import { nativeAddon, type NativeAddon } from '../native.js';
import { tensorOffsetIn, tensorViewAt, type TensorView } from '../views.js';
import { checkUnchanged, readRowsAt } from '../weights.js';
import {
  C,
  ErrorCode,
  G,
  GT,
  S,
  SEG_COUNTERS,
  SEG_TIMES,
  segWord,
  slotWord,
  State,
  WAIT_SLICE_MS,
  type ResidencyShared,
  type SegmentInfo,
  type SegmentLocation,
} from './protocol.js';

/** One step of an acquire: the segment is ours, or wait for ctrl[index] to leave `value`. */
type Step = { readonly ready: true } | { readonly ready: false; readonly index: number; readonly value: number };

/**
 * The part of the residency every thread runs: acquire/release over the shared control words.
 * `ResidencyClient` (compute workers, blocking) and `LayerResidency` (main thread, async) are
 * thin wrappers around it.
 */
export class ResidencyCore {
  readonly shared: ResidencyShared;
  readonly ctrl: Int32Array;
  readonly counters: BigInt64Array;
  readonly times: Float64Array;
  readonly #addon: NativeAddon | undefined;
  readonly #mapped: (readonly number[] | undefined)[] = [];

  constructor(shared: ResidencyShared) {
    if (shared.version !== 1) throw new StateError('residency descriptor of an unknown version', { expected: 1, actual: shared.version });
    this.shared = shared;
    this.ctrl = new Int32Array(shared.ctrl);
    this.counters = new BigInt64Array(shared.counters);
    this.times = new Float64Array(shared.times);
    this.#addon = shared.backend === 'mmap' ? nativeAddon() : undefined;
    if (shared.backend === 'mmap' && this.#addon === undefined) {
      throw new StateError('the mmap residency needs the native addon in this thread too', { path: shared.path });
    }
  }

  get segments(): readonly SegmentInfo[] {
    return this.shared.segments;
  }

  /** The segment holding `layer`'s tensors. */
  segmentOfLayer(layer: number): number {
    const { start, end } = this.shared.layers;
    if (!Number.isInteger(layer) || layer < start || layer >= end) {
      throw new OutOfRangeError('layer outside this residency', { path: this.shared.path, field: 'layer', expected: `[${start}, ${end})`, actual: layer });
    }
    return layer - start;
  }

  /** The head's segment (final_norm + wcls). */
  segmentOfHead(): number {
    const seg = this.shared.headSegment;
    if (seg < 0) throw new OutOfRangeError('this residency does not serve the head (final norm + classifier)', { path: this.shared.path, field: 'head' });
    return seg;
  }

  checkSegment(seg: number): SegmentInfo {
    const info = this.shared.segments[seg];
    if (!Number.isInteger(seg) || info === undefined) {
      throw new OutOfRangeError('no such segment', { path: this.shared.path, field: 'segment', expected: `0..${this.shared.segments.length - 1}`, actual: seg });
    }
    return info;
  }

  /** Advance an acquire as far as possible without waiting. */
  step(seg: number): Step {
    const ctrl = this.ctrl;
    for (;;) {
      if (Atomics.load(ctrl, G.CLOSED) !== 0) throw this.#closed();
      const broken = Atomics.load(ctrl, G.BROKEN);
      if (broken !== ErrorCode.NONE) throw this.error(broken, seg);
      const at = segWord(seg, S.STATE);
      const st = Atomics.load(ctrl, at);
      switch (st) {
        case State.IN_USE:
          return { ready: true };
        case State.READY:
          if (Atomics.compareExchange(ctrl, at, State.READY, State.IN_USE) === State.READY) return { ready: true };
          continue;
        case State.RELEASING:
          // Acquired again before the prefetcher evicted it: cancel the release, keep the slot.
          if (Atomics.compareExchange(ctrl, at, State.RELEASING, State.IN_USE) === State.RELEASING) return { ready: true };
          continue;
        case State.EMPTY:
          Atomics.store(ctrl, segWord(seg, S.WANT), 1);
          this.ring();
          return { ready: false, index: at, value: st };
        case State.LOADING:
          // Say so: a prefetch waiting for room gets it from segments nobody waits for.
          if (Atomics.load(ctrl, segWord(seg, S.WANT)) === 0) {
            Atomics.store(ctrl, segWord(seg, S.WANT), 1);
            this.ring();
          }
          return { ready: false, index: at, value: st };
        case State.EVICTING:
          return { ready: false, index: at, value: st };
        case State.FAILED:
          throw this.error(Atomics.load(ctrl, segWord(seg, S.ERROR)), seg);
        default:
          throw this.#closed();
      }
    }
  }

  /** Bookkeeping after an acquire succeeded: stats, prefetch hint, file check. */
  acquired(seg: number, waitedNs: bigint | undefined): SegmentLocation {
    // A thread that saw EMPTY may have set WANT after the prefetcher took the demand; left
    // set, it would reload the segment after its release. Whoever gets the segment clears it.
    Atomics.store(this.ctrl, segWord(seg, S.WANT), 0);
    const base = seg * SEG_COUNTERS;
    Atomics.add(this.counters, base + C.ACQUIRES, 1n);
    if (waitedNs !== undefined) {
      Atomics.add(this.counters, base + C.WAITS, 1n);
      Atomics.add(this.counters, base + C.WAIT_NS, waitedNs);
    }
    // Several threads acquire the same segment: only the first moves the cursor and rings.
    // Ringing wakes the prefetch thread, which on a machine with as many compute threads as
    // cores preempts one of them and stalls the others at their next barrier; so ring only
    // when a segment still has to be loaded (never, once a resident model is warm).
    if (this.shared.prefetch && Atomics.exchange(this.ctrl, G.CURSOR, seg) !== seg && this.#loadPending()) this.ring();
    // The prefetcher made the pages present, but the kernel may drop clean file pages under
    // pressure; re-reading them past a new end of file would fault. Check before each use.
    const s = this.shared;
    checkUnchanged(s.fd, s.fileSize, s.path, s.map ?? undefined, this.#addon);
    return this.location(seg);
  }

  /** Whether some segment is not resident (so the prefetcher may have work). */
  #loadPending(): boolean {
    const n = this.shared.segments.length;
    for (let i = 0; i < n; i++) {
      const st = Atomics.load(this.ctrl, segWord(i, S.STATE));
      if (st !== State.READY && st !== State.IN_USE) return true;
    }
    return false;
  }

  /** Where the segment's bytes are (valid while the segment is acquired). */
  location(seg: number): SegmentLocation {
    const s = this.shared;
    const info = this.checkSegment(seg);
    if (s.map !== null) return { buffer: s.map, extentOffsets: this.#fileOffsets(seg) };
    const own = s.pinnedBuffers[seg];
    if (own) return { buffer: own, extentOffsets: info.packed };
    const slot = Atomics.load(this.ctrl, segWord(seg, S.SLOT));
    if (slot < 0) throw new StateError('segment is not resident', { path: s.path, field: 'segment', actual: seg });
    return { buffer: s.slotBuffers[slot]!, extentOffsets: info.packed };
  }

  /** In a mapping each extent is at its file offset (one array per segment, made once). */
  #fileOffsets(seg: number): readonly number[] {
    return (this.#mapped[seg] ??= Object.freeze(this.shared.segments[seg]!.extents.map((e) => e.offset)));
  }

  /** Throws SlotsExhaustedError when `seg` has waited `waitedMs` for a slot that cannot free up. */
  checkStall(seg: number, waitedMs: number): void {
    const s = this.shared;
    if (waitedMs < s.stallMs || s.segments[seg]!.pinned) return;
    if (Atomics.load(this.ctrl, segWord(seg, S.STATE)) !== State.EMPTY) return;
    // Stuck only if every slot owner is acquired and either no slot is free or the streaming
    // allowance cannot take this segment next to the ones held.
    const holders: number[] = [];
    let held = 0;
    let free = false;
    for (let k = 0; k < s.slots; k++) {
      const owner = Atomics.load(this.ctrl, slotWord(s.segments.length, k));
      if (owner < 0) {
        free = true;
        continue;
      }
      if (Atomics.load(this.ctrl, segWord(owner, S.STATE)) !== State.IN_USE) return;
      holders.push(owner);
      held += s.segments[owner]!.size;
    }
    if (free && held + s.segments[seg]!.size <= s.streamBytes) return;
    Atomics.compareExchange(this.ctrl, segWord(seg, S.WANT), 1, 0);
    throw new SlotsExhaustedError('the streamed segments held leave no room for this one; release one before acquiring another', {
      path: s.path,
      field: 'segment',
      expected: `streamed segments acquired at once: ≤ ${s.slots} and ≤ ${s.streamBytes} bytes`,
      actual: `segment ${seg} (${s.segments[seg]!.size} bytes) wanted while ${holders.join(', ')} (${held} bytes) are held`,
    });
  }

  release(seg: number): void {
    const info = this.checkSegment(seg);
    const at = segWord(seg, S.STATE);
    const next = info.pinned ? State.READY : State.RELEASING;
    const prev = Atomics.compareExchange(this.ctrl, at, State.IN_USE, next);
    if (prev !== State.IN_USE) {
      if (Atomics.load(this.ctrl, G.CLOSED) !== 0 || prev === State.CLOSED) return; // closing: nothing to give back
      throw new StateError('release of a segment that is not acquired (release once per use, after every thread is done)', {
        path: this.shared.path,
        field: 'segment',
        expected: 'acquired',
        actual: `segment ${seg} in state ${prev}`,
      });
    }
    if (!info.pinned) this.ring();
  }

  /**
   * A view of one tensor whose segment is acquired (or pinned and loaded). A streamed segment
   * that is merely prefetched may be evicted at any moment, so it does not count.
   */
  tensorView(t: TensorInfo): TensorView {
    const seg = this.segmentOfTensor(t);
    const st = Atomics.load(this.ctrl, segWord(seg, S.STATE));
    if (st !== State.IN_USE && !(st === State.READY && this.shared.segments[seg]!.pinned)) {
      throw new StateError('tensor view of a segment that is not acquired', { path: this.shared.path, field: t.name, actual: `state ${st}` });
    }
    const loc = this.location(seg);
    return tensorViewAt(loc.buffer, tensorOffsetIn(this.shared.segments[seg]!.extents, loc.extentOffsets, t), t);
  }

  /** The segment holding `t`: its layer's, or the head's when the head's ranges contain it. */
  segmentOfTensor(t: TensorInfo): number {
    const s = this.shared;
    if (t.layer >= 0) return this.segmentOfLayer(t.layer);
    const head = s.segments[s.headSegment];
    if (head !== undefined && head.extents.some((e) => t.offset >= e.offset && t.offset + t.byteLength <= e.offset + e.size)) return s.headSegment;
    throw new OutOfRangeError('tensor is not in any segment of this residency (the embedding is read with readRows)', { path: s.path, field: t.name });
  }

  readRows(t: TensorInfo, firstRow: number, count: number, dst: ArrayBufferView): void {
    if (Atomics.load(this.ctrl, G.CLOSED) !== 0) throw this.#closed();
    readRowsAt(this.shared.fd, this.shared.fileSize, this.shared.path, t, firstRow, count, dst);
  }

  ring(): void {
    Atomics.add(this.ctrl, G.DOORBELL, 1);
    Atomics.notify(this.ctrl, G.DOORBELL);
  }

  /** The typed error for an ErrorCode stored by the prefetcher. */
  error(code: number, seg: number): AirllmError {
    const s = this.shared;
    const t = this.times;
    const base = s.segments.length * SEG_TIMES;
    switch (code) {
      case ErrorCode.FILE_CHANGED:
        return new FileChangedError('file size changed after it was opened (truncated while mapped?)', {
          path: s.path,
          field: 'file size',
          expected: t[base + GT.ERR_EXPECTED],
          actual: t[base + GT.ERR_ACTUAL],
        });
      case ErrorCode.CLOSED:
        return this.#closed();
      default:
        return new IoError('the prefetch worker failed to load the segment (its message went to the residency owner)', {
          path: s.path,
          field: 'segment',
          actual: seg,
        });
    }
  }

  #closed(): ClosedError {
    return new ClosedError('the residency was closed', { path: this.shared.path });
  }
}

/**
 * A compute worker's handle on a residency: `attachResidency(shared)` with the descriptor the
 * owner posted. `acquire` blocks the calling thread (Atomics.wait), so call it from workers,
 * never from the main thread (use `LayerResidency.acquireAsync` there).
 */
export class ResidencyClient {
  readonly #core: ResidencyCore;

  constructor(shared: ResidencyShared) {
    this.#core = new ResidencyCore(shared);
  }

  get shared(): ResidencyShared {
    return this.#core.shared;
  }
  get segments(): readonly SegmentInfo[] {
    return this.#core.segments;
  }
  /** Index of the head segment (final_norm + wcls), or -1 when this range has none. */
  get headSegment(): number {
    return this.#core.shared.headSegment;
  }
  segmentOfLayer(layer: number): number {
    return this.#core.segmentOfLayer(layer);
  }

  /** acquire() of layer `layer`'s segment. */
  acquireLayer(layer: number): SegmentLocation {
    return this.acquire(this.#core.segmentOfLayer(layer));
  }
  releaseLayer(layer: number): void {
    this.#core.release(this.#core.segmentOfLayer(layer));
  }
  /** acquire() of the head's segment (OutOfRangeError when the head is not served). */
  acquireHead(): SegmentLocation {
    return this.acquire(this.#core.segmentOfHead());
  }
  releaseHead(): void {
    this.#core.release(this.#core.segmentOfHead());
  }

  /**
   * Block until `seg` is resident and mark it in use; returns where its bytes are.
   * Idempotent across threads: every compute thread may acquire the same segment; one of them
   * releases it once all are done. Acquiring also tells the prefetcher to start on the next
   * segment of the cyclic order.
   */
  acquire(seg: number): SegmentLocation {
    const core = this.#core;
    core.checkSegment(seg);
    let start: bigint | undefined;
    for (;;) {
      const step = core.step(seg);
      if (step.ready) break;
      start ??= process.hrtime.bigint();
      Atomics.wait(core.ctrl, step.index, step.value, WAIT_SLICE_MS);
      core.checkStall(seg, Number(process.hrtime.bigint() - start) / 1e6);
    }
    return core.acquired(seg, start === undefined ? undefined : process.hrtime.bigint() - start);
  }

  /** Give the segment back (once per use, by one thread, after every thread is done with it). */
  release(seg: number): void {
    this.#core.release(seg);
  }

  /** Where an acquired segment's bytes are. */
  location(seg: number): SegmentLocation {
    return this.#core.location(seg);
  }

  /** Typed view of a tensor whose segment is acquired (final_norm/wcls: the head segment). */
  tensorView(t: TensorInfo): TensorView {
    return this.#core.tensorView(t);
  }

  /** Embedding rows (pread; see MemoryMappedWeights.readRows). */
  readRows(t: TensorInfo, firstRow: number, count: number, dst: ArrayBufferView): void {
    this.#core.readRows(t, firstRow, count, dst);
  }
}

/** Attach to a residency from any thread, given the owner's `residency.shared`. */
export function attachResidency(shared: ResidencyShared): ResidencyClient {
  return new ResidencyClient(shared);
}
