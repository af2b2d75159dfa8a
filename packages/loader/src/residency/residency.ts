import { existsSync } from 'node:fs';
import { sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { LayerRange, TensorGroup, TensorInfo } from '@airllm/format';
import type { BackendKind } from '../backend.js';
import { ClosedError, OutOfRangeError, StateError } from '../errors.js';
import { allocateReadBuffer } from '../reader.js';
import { diskReadBytes, memoryStatus, type MemoryStatus } from '../proc.js';
import type { TensorView } from '../views.js';
import { ALIGN_MIRROR, weightsInternals, type MemoryMappedWeights, type WeightsInternals } from '../weights.js';
import { ResidencyCore } from './client.js';
import { planResidency, type ResidencyPlan } from './plan.js';
import {
  C,
  ctrlWords,
  ErrorCode,
  G,
  GC_BYTES_LOADED,
  GC_LOCKED,
  GC_STREAMED,
  GLOBAL_COUNTERS,
  GLOBAL_TIMES,
  S,
  SEG_COUNTERS,
  SEG_TIMES,
  segWord,
  slotWord,
  State,
  T,
  WAIT_SLICE_MS,
  type PrefetchMessage,
  type ResidencyMode,
  type ResidencyShared,
  type SegmentInfo,
  type SegmentLoadEvent,
  type SegmentLocation,
} from './protocol.js';

export interface ResidencyOptions {
  /**
   * `resident`: every segment pinned (budget ignored). `stream`: pin what fits in
   * `budgetBytes`, stream the rest through `slots` slots with prefetch. `sequential`: like
   * stream but load-then-compute (no prefetch; 1 slot by default), for comparison.
   */
  mode: ResidencyMode;
  /** Bytes of weights this residency may hold at once (stream, sequential). */
  budgetBytes?: number;
  /** Streaming slots: 2 by default in stream mode (computing + prefetching), 1 in sequential. */
  slots?: number;
  /** Layers served, [start, end) (default all): distributed nodes serve a contiguous range. */
  layers?: LayerRange;
  /** Serve the head segment (final_norm + wcls); default: when the range ends at the last layer. */
  head?: boolean;
  /** Prefetch granularity in bytes (default 8 MiB). */
  chunkBytes?: number;
  /** Chunks MADV_WILLNEED runs ahead of the touch (default 6: 48 MiB queued; 2 left the disk
   *  short of work, 0.99 against 1.06 of a plain read in the loader bench). */
  readaheadChunks?: number;
  /**
   * mmap stream mode: how far the prefetcher may run into the next streamed segment while a
   * whole one is held (default 2 chunks, 16 MiB). The budget then needs one streamed segment
   * plus this window rather than two segments, and pins what that saves.
   */
  windowBytes?: number;
  /**
   * mlock pinned segments (mmap backend), so that streaming's page-cache pressure cannot make the
   * kernel reclaim them and read them again. Default: in stream and sequential modes (where the
   * budget says what fits), not in resident mode (a model larger than RAM must still page).
   * Without CAP_IPC_LOCK a lock beyond RLIMIT_MEMLOCK fails: then nothing more is locked,
   * `lockError` says why, and pinned segments are kept as plain mapped pages.
   */
  lockPinned?: boolean;
  /** Fault pages in with MADV_POPULATE_READ instead of touching each page (default false). */
  populate?: boolean;
  /** acquire gives up after waiting this long while every slot is held (default 10 s). */
  stallMs?: number;
  /** Called on the owner's thread once per segment load (for traces). */
  onLoad?: (event: SegmentLoadEvent) => void;
}

export interface SegmentStats {
  readonly segment: number;
  readonly kind: SegmentInfo['kind'];
  /** The model layer (kind 'layer'); -1 for the head. */
  readonly layer: number;
  readonly pinned: boolean;
  readonly state: keyof typeof State;
  readonly acquires: number;
  /** Acquires that had to wait, and the total nanoseconds they waited (prefetch wait). */
  readonly waits: number;
  readonly waitNs: number;
  readonly loads: number;
  readonly loadNs: number;
  /** Epoch milliseconds (performance.timeOrigin-based) of the last load. */
  readonly lastLoadStartMs: number;
  readonly lastLoadEndMs: number;
}

export interface ResidencyStats {
  readonly mode: ResidencyMode;
  readonly backend: BackendKind;
  readonly segments: number;
  readonly pinnedSegments: number;
  readonly pinnedBytes: number;
  readonly slots: number;
  readonly slotBytes: number;
  /** Bytes streamed segments may hold at once (see ResidencyOptions.windowBytes). */
  readonly streamBytes: number;
  readonly budgetBytes: number | undefined;
  /** Most bytes the plan holds at once: pinned + streamBytes. */
  readonly plannedBytes: number;
  /** Bytes resident right now by the residency's own accounting: loaded pinned segments plus the
   *  pages of streamed segments the prefetcher made resident and has not dropped yet. */
  readonly residentBytes: number;
  readonly loads: number;
  readonly bytesLoaded: number;
  readonly waitNs: number;
  /** Bytes of pinned segments locked in memory (see ResidencyOptions.lockPinned). */
  readonly lockedBytes: number;
  /** Why locking stopped, if it failed. */
  readonly lockError: string | undefined;
  /** Bytes of streamed segments resident right now (part of residentBytes). */
  readonly streamedBytes: number;
  /** Bytes this process read from storage since create (/proc/self/io read_bytes), if known. */
  readonly diskReadBytes: number | undefined;
  /** Process RSS figures now (/proc/self/status), if known. */
  readonly memory: MemoryStatus | undefined;
  readonly perSegment: readonly SegmentStats[];
}

const DEFAULT_CHUNK = 8 << 20;
const STATE_NAMES = Object.fromEntries(Object.entries(State).map(([k, v]) => [v, k])) as Record<number, keyof typeof State>;

interface WaitAsyncResult {
  async: boolean;
  value: Promise<'ok' | 'timed-out'> | 'not-equal' | 'timed-out' | 'ok';
}
// ES2024 API, present in Node 20; our lib setting (ES2022) does not declare it.
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, t: number): WaitAsyncResult }).waitAsync;

/** dist/prefetch-worker.js, also when this module runs from src/ under vitest. */
function prefetchWorkerUrl(): URL {
  const here = new URL('../prefetch-worker.js', import.meta.url);
  const p = fileURLToPath(here);
  if (existsSync(p)) return here;
  const dist = p.replace(`${sep}src${sep}prefetch-worker.js`, `${sep}dist${sep}prefetch-worker.js`);
  if (existsSync(dist)) return pathToFileURL(dist);
  throw new StateError('prefetch worker script not found: build the package first (npx tsc -b)', { path: dist });
}

/**
 * Which segments of a model are resident, under a byte budget, shared by every thread.
 * See src/index.ts for how the engine uses it.
 */
export class LayerResidency {
  readonly shared: ResidencyShared;
  readonly plan: ResidencyPlan;
  readonly #core: ResidencyCore;
  readonly #worker: Worker;
  readonly #weights: WeightsInternals;
  readonly #budget: number | undefined;
  readonly #diskBase: number | undefined;
  readonly #shutdown: () => void;
  readonly #exited: Promise<void>;
  #closing: Promise<void> | undefined;
  /** The last failure message from the prefetch worker, if any. */
  lastError: string | undefined;
  /** Why mlock of a pinned segment failed (then no more are locked), if it did. */
  lockError: string | undefined;

  private constructor(shared: ResidencyShared, plan: ResidencyPlan, weights: WeightsInternals, budget: number | undefined, onLoad: ResidencyOptions['onLoad']) {
    this.shared = shared;
    this.plan = plan;
    this.#core = new ResidencyCore(shared);
    this.#weights = weights;
    this.#budget = budget;
    this.#diskBase = diskReadBytes();
    // A worker inherits the parent's execArgv; `--input-type` (node -e with ESM) is refused
    // for a file entry point, so it is dropped.
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'));
    this.#worker = new Worker(prefetchWorkerUrl(), { workerData: shared, execArgv });
    // A forgotten close() must not keep the process alive: the worker sleeps in Atomics.wait.
    this.#worker.unref();
    this.#exited = new Promise<void>((resolve) => this.#worker.once('exit', () => resolve()));
    this.#worker.on('message', (m: PrefetchMessage) => {
      if (m.type === 'load') onLoad?.(m.event);
      else if (m.type === 'lock-failed') this.lockError = m.message;
      else this.lastError = `segment ${m.segment}: ${m.message}`;
    });
    this.#worker.on('error', (e) => {
      this.lastError = `prefetch worker crashed: ${e.message}`;
      this.#breakAll(ErrorCode.INTERNAL);
    });
    this.#shutdown = () => void this.close();
    weights.onClose.add(this.#shutdown);
  }

  /** Plan the residency of `weights` (must be open) and start its prefetch worker. */
  static async create(weights: MemoryMappedWeights, options: ResidencyOptions): Promise<LayerResidency> {
    const w = weightsInternals(weights);
    const layout = weights.layout;
    const nLayers = layout.layers.length;
    const mode = options.mode;
    if (mode !== 'resident' && mode !== 'stream' && mode !== 'sequential') {
      throw new OutOfRangeError('unknown residency mode', { field: 'mode', expected: 'resident | stream | sequential', actual: String(mode) });
    }
    const start = options.layers?.start ?? 0;
    const end = options.layers?.end ?? nLayers;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > nLayers || start >= end) {
      throw new OutOfRangeError('layer range outside the model', { path: w.path, field: 'layers', expected: `[start, end) within [0, ${nLayers})`, actual: `[${start}, ${end})` });
    }
    const includeHead = options.head ?? end === nLayers;
    const slots = options.slots ?? (mode === 'sequential' ? 1 : 2);
    if (!Number.isInteger(slots) || slots < 1 || slots > 64) {
      throw new OutOfRangeError('slots must be 1..64', { field: 'slots', expected: '1..64', actual: slots });
    }
    const chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK;
    const readaheadChunks = options.readaheadChunks ?? 6;
    if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 4096 || !Number.isInteger(readaheadChunks) || readaheadChunks < 0) {
      throw new OutOfRangeError('chunkBytes must be ≥ 4096 and readaheadChunks ≥ 0', { field: 'chunkBytes', actual: chunkBytes });
    }

    const groups: { kind: SegmentInfo['kind']; layer: number; group: TensorGroup }[] = [];
    for (let l = start; l < end; l++) groups.push({ kind: 'layer', layer: l, group: layout.layers[l]! });
    if (includeHead) groups.push({ kind: 'head', layer: -1, group: layout.head });
    const windowBytes = options.windowBytes ?? 2 * chunkBytes;
    if (!Number.isSafeInteger(windowBytes) || windowBytes < 0) {
      throw new OutOfRangeError('windowBytes must be a byte count ≥ 0', { field: 'windowBytes', actual: windowBytes });
    }
    // Only mapped pages can be taken chunk by chunk; the read backend's slots are whole buffers.
    const plan = planResidency(
      groups.map((g) => g.group.size),
      mode,
      options.budgetBytes,
      slots,
      w.kind === 'mmap' && mode === 'stream' ? windowBytes : undefined,
    );
    const segments: SegmentInfo[] = groups.map(({ kind, layer, group }, index) => {
      const { packed, packedBytes } = packExtents(group.extents);
      return Object.freeze({ index, kind, layer, extents: group.extents, size: group.size, packed, packedBytes, pinned: plan.pinned[index]! });
    });
    const n = segments.length;

    const ctrl = new SharedArrayBuffer(ctrlWords(n, plan.slots) * 4);
    const c = new Int32Array(ctrl);
    for (let s = 0; s < n; s++) c[segWord(s, S.SLOT)] = -1;
    for (let k = 0; k < plan.slots; k++) c[slotWord(n, k)] = -1;
    // The prefetcher starts on the segment after the cursor: segment 0.
    c[G.CURSOR] = n - 1;

    const read = w.kind === 'read';
    const shared: ResidencyShared = {
      version: 1,
      path: w.path,
      fd: w.fd,
      fileSize: w.size,
      backend: w.kind,
      mode,
      prefetch: mode !== 'sequential',
      map: w.map ?? null,
      segments,
      layers: Object.freeze({ start, end }),
      headSegment: includeHead ? n - 1 : -1,
      slots: plan.slots,
      slotBytes: plan.slotBytes,
      streamBytes: plan.streamBytes,
      slotBuffers: read ? Array.from({ length: plan.slots }, () => allocateReadBuffer(slotBufferBytes(segments, plan.slotBytes))) : [],
      pinnedBuffers: segments.map((s) => (read && s.pinned ? allocateReadBuffer(s.packedBytes) : null)),
      ctrl,
      counters: new SharedArrayBuffer((n * SEG_COUNTERS + GLOBAL_COUNTERS) * 8),
      times: new SharedArrayBuffer((n * SEG_TIMES + GLOBAL_TIMES) * 8),
      chunkBytes,
      readaheadChunks,
      populate: options.populate ?? false,
      lockPinned: w.kind === 'mmap' && (options.lockPinned ?? mode !== 'resident'),
      stallMs: options.stallMs ?? 10_000,
      trace: options.onLoad !== undefined,
    };
    return new LayerResidency(shared, plan, w, options.budgetBytes, options.onLoad);
  }

  get segments(): readonly SegmentInfo[] {
    return this.shared.segments;
  }
  /** Index of the head segment (final_norm + wcls), or -1. */
  get headSegment(): number {
    return this.shared.headSegment;
  }
  segmentOfLayer(layer: number): number {
    return this.#core.segmentOfLayer(layer);
  }

  /** acquire() for the main thread: waits with Atomics.waitAsync, never blocking the event loop. */
  async acquireAsync(seg: number): Promise<SegmentLocation> {
    const core = this.#core;
    core.checkSegment(seg);
    let start: bigint | undefined;
    for (;;) {
      const step = core.step(seg);
      if (step.ready) break;
      start ??= process.hrtime.bigint();
      const r = waitAsync(core.ctrl, step.index, step.value, WAIT_SLICE_MS);
      if (r.async) await r.value;
      core.checkStall(seg, Number(process.hrtime.bigint() - start) / 1e6);
    }
    return core.acquired(seg, start === undefined ? undefined : process.hrtime.bigint() - start);
  }

  release(seg: number): void {
    this.#core.release(seg);
  }

  location(seg: number): SegmentLocation {
    return this.#core.location(seg);
  }

  tensorView(t: TensorInfo): TensorView {
    return this.#core.tensorView(t);
  }

  /** Load every pinned segment now (in scan order), reporting bytes loaded so far. */
  async warmup(onProgress?: (loadedBytes: number, totalBytes: number) => void): Promise<void> {
    const core = this.#core;
    const ctrl = core.ctrl;
    const pinned = this.segments.filter((s) => s.pinned);
    const total = pinned.reduce((a, s) => a + s.size, 0);
    Atomics.store(ctrl, G.WARMUP, 1);
    core.ring();
    let loaded = 0;
    for (const s of pinned) {
      const at = segWord(s.index, S.STATE);
      for (;;) {
        if (Atomics.load(ctrl, G.CLOSED) !== 0) throw new ClosedError('the residency was closed', { path: this.shared.path });
        const broken = Atomics.load(ctrl, G.BROKEN);
        if (broken !== 0) throw core.error(broken, s.index);
        const st = Atomics.load(ctrl, at);
        if (st === State.READY || st === State.IN_USE || st === State.RELEASING) break;
        if (st === State.FAILED) throw core.error(Atomics.load(ctrl, segWord(s.index, S.ERROR)), s.index);
        const r = waitAsync(ctrl, at, st, WAIT_SLICE_MS);
        if (r.async) await r.value;
      }
      loaded += s.size;
      onProgress?.(loaded, total);
    }
  }

  stats(): ResidencyStats {
    const core = this.#core;
    const n = this.segments.length;
    const num = (i: number): number => Number(Atomics.load(core.counters, i));
    let residentBytes = 0;
    let waitNs = 0;
    let loads = 0;
    const perSegment = this.segments.map((s): SegmentStats => {
      const st = Atomics.load(core.ctrl, segWord(s.index, S.STATE));
      if (s.pinned && st !== State.EMPTY && st !== State.FAILED && st !== State.CLOSED) residentBytes += s.size;
      const b = s.index * SEG_COUNTERS;
      waitNs += num(b + C.WAIT_NS);
      loads += num(b + C.LOADS);
      return {
        segment: s.index,
        kind: s.kind,
        layer: s.layer,
        pinned: s.pinned,
        state: STATE_NAMES[st]!,
        acquires: num(b + C.ACQUIRES),
        waits: num(b + C.WAITS),
        waitNs: num(b + C.WAIT_NS),
        loads: num(b + C.LOADS),
        loadNs: num(b + C.LOAD_NS),
        lastLoadStartMs: core.times[s.index * SEG_TIMES + T.LOAD_START]!,
        lastLoadEndMs: core.times[s.index * SEG_TIMES + T.LOAD_END]!,
      };
    });
    const disk = diskReadBytes();
    return {
      mode: this.shared.mode,
      backend: this.shared.backend,
      segments: n,
      pinnedSegments: this.segments.filter((s) => s.pinned).length,
      pinnedBytes: this.plan.pinnedBytes,
      slots: this.plan.slots,
      slotBytes: this.plan.slotBytes,
      streamBytes: this.plan.streamBytes,
      budgetBytes: this.#budget,
      plannedBytes: this.plan.plannedBytes,
      residentBytes: residentBytes + num(n * SEG_COUNTERS + GC_STREAMED),
      loads,
      bytesLoaded: num(n * SEG_COUNTERS + GC_BYTES_LOADED),
      waitNs,
      streamedBytes: num(n * SEG_COUNTERS + GC_STREAMED),
      lockedBytes: num(n * SEG_COUNTERS + GC_LOCKED),
      lockError: this.lockError,
      diskReadBytes: disk !== undefined && this.#diskBase !== undefined ? disk - this.#diskBase : undefined,
      memory: memoryStatus(),
      perSegment,
    };
  }

  /**
   * Stop the prefetch worker, drop every page this residency made resident, and fail any
   * acquire still waiting (ClosedError). Descriptors held by workers become unusable.
   * Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const core = this.#core;
    const ctrl = core.ctrl;
    this.#weights.onClose.delete(this.#shutdown);
    Atomics.store(ctrl, G.CLOSED, 1);
    core.ring();
    // The worker finishes the chunk it is on (it checks CLOSED per chunk), then returns.
    const timer = setTimeout(() => void this.#worker.terminate(), 10_000);
    await this.#exited;
    clearTimeout(timer);
    const { map, addon } = this.#weights;
    for (const s of this.segments) {
      const at = segWord(s.index, S.STATE);
      const st = Atomics.exchange(ctrl, at, State.CLOSED);
      Atomics.notify(ctrl, at);
      if (map !== undefined && addon !== undefined && st !== State.EMPTY && st !== State.CLOSED && addon.isMapping(map)) {
        // Locked pages refuse MADV_DONTNEED.
        for (const e of s.extents) {
          if (s.pinned && this.shared.lockPinned) {
            try {
              addon.lock(map, e.offset, e.size, false);
            } catch {
              // Not locked (the lock had failed): nothing to undo.
            }
          }
          addon.advise(map, e.offset, e.size, 'dontneed');
        }
      }
    }
  }

  #breakAll(code: number): void {
    const ctrl = this.#core.ctrl;
    Atomics.store(ctrl, G.BROKEN, code);
    for (let s = 0; s < this.segments.length; s++) Atomics.notify(ctrl, segWord(s, S.STATE));
  }
}

/**
 * The read backend's buffer layout for a segment: its extents in file order, each at the first
 * address after the previous one that is congruent to its file offset modulo ALIGN_MIRROR.
 */
export function packExtents(extents: readonly { offset: number; size: number }[]): { packed: readonly number[]; packedBytes: number } {
  const packed: number[] = [];
  let at = 0;
  for (const e of extents) {
    at += (((e.offset - at) % ALIGN_MIRROR) + ALIGN_MIRROR) % ALIGN_MIRROR;
    packed.push(at);
    at += e.size;
  }
  return { packed: Object.freeze(packed), packedBytes: at };
}

/** A slot holds any streamed segment: the largest packed size among segments that fit a slot. */
function slotBufferBytes(segments: readonly SegmentInfo[], slotBytes: number): number {
  return segments.reduce((m, s) => (!s.pinned && s.size <= slotBytes ? Math.max(m, s.packedBytes) : m), 0);
}
