/**
 * The shared-memory protocol between the residency's owner (main thread), its compute-worker
 * clients and the prefetch worker. Everything lives in SharedArrayBuffers named in
 * {@link ResidencyShared}; this file is the single place that says which word means what.
 *
 * Ownership of transitions (so that no two threads race on one word without a CAS):
 *
 *   EMPTY ──prefetcher──▶ LOADING ──prefetcher──▶ READY ◀──client release (pinned)──┐
 *                                                   │                              │
 *                                       client acquire (CAS)                        │
 *                                                   ▼                              │
 *                                                 IN_USE ──────────────────────────┘
 *                                                   │ client release (streamed)
 *                                                   ▼
 *       EMPTY ◀──prefetcher── EVICTING ◀──prefetcher (CAS)── RELEASING
 *                                                   │ client acquire (CAS: cancels release)
 *                                                   ▼
 *                                                 IN_USE
 *
 * Only the prefetcher leaves EMPTY, so only it assigns slots; clients ask for a segment by
 * setting its WANT word and ringing the doorbell (also while it is LOADING: a prefetch waiting
 * for room then knows a client waits for it). Every wait is an `Atomics.wait` on the word
 * that will change (a segment's STATE, or the DOORBELL for the prefetcher), with a time slice so
 * that a missed wake-up costs a slice, never a hang. Nobody spins.
 */

import type { Extent, LayerRange } from '@airllm/format';
import type { BackendKind } from '../backend.js';

export const State = {
  EMPTY: 0,
  LOADING: 1,
  READY: 2,
  IN_USE: 3,
  RELEASING: 4,
  EVICTING: 5,
  FAILED: 6,
  CLOSED: 7,
} as const;
export type StateValue = (typeof State)[keyof typeof State];

/** Global words of the control Int32Array. */
export const G = {
  /** 1 once close() began: every wait returns and throws ClosedError. */
  CLOSED: 0,
  /** Incremented (and notified) whenever the prefetcher has something to look at. */
  DOORBELL: 1,
  /** The segment most recently acquired: the prefetcher works on the one after it. */
  CURSOR: 2,
  /** Non-zero ErrorCode when the whole residency failed (e.g. the file changed). */
  BROKEN: 3,
  /** 1 while warmup() asks the prefetcher to load every pinned segment. */
  WARMUP: 4,
} as const;
export const GLOBAL_WORDS = 8;

/** Per-segment words of the control Int32Array, at GLOBAL_WORDS + seg * SEG_WORDS. */
export const S = {
  STATE: 0,
  /** 1 when a client waits for this segment (demand, served before any prefetch). */
  WANT: 1,
  /** The slot holding this streamed segment, or -1. */
  SLOT: 2,
  /** ErrorCode when STATE is FAILED. */
  ERROR: 3,
} as const;
export const SEG_WORDS = 4;

export function segWord(seg: number, field: number): number {
  return GLOBAL_WORDS + seg * SEG_WORDS + field;
}
/** Word holding the segment that occupies slot k, or -1. */
export function slotWord(nSegments: number, k: number): number {
  return GLOBAL_WORDS + nSegments * SEG_WORDS + k;
}
export function ctrlWords(nSegments: number, slots: number): number {
  return GLOBAL_WORDS + nSegments * SEG_WORDS + slots;
}

export const ErrorCode = {
  NONE: 0,
  FILE_CHANGED: 1,
  IO: 2,
  CLOSED: 3,
  INTERNAL: 4,
} as const;

/** BigInt64 counters per segment, at seg * SEG_COUNTERS; then the global ones. */
export const C = { ACQUIRES: 0, WAITS: 1, WAIT_NS: 2, LOADS: 3, LOAD_NS: 4 } as const;
export const SEG_COUNTERS = 5;
export const GC_BYTES_LOADED = 0;
/** Bytes of streamed segments' pages the prefetcher has made resident and not yet dropped. */
export const GC_STREAMED = 1;
/** Bytes of pinned segments locked in memory (mlock). */
export const GC_LOCKED = 2;
export const GLOBAL_COUNTERS = 3;

/** Float64 values per segment (epoch milliseconds: performance.timeOrigin + performance.now()). */
export const T = { LOAD_START: 0, LOAD_END: 1 } as const;
export const SEG_TIMES = 2;
/** Global Float64 values describing the last failure (FileChangedError fields). */
export const GT = { ERR_EXPECTED: 0, ERR_ACTUAL: 1, ERR_OFFSET: 2 } as const;
export const GLOBAL_TIMES = 4;

export type ResidencyMode = 'resident' | 'stream' | 'sequential';

/** One unit of residency: a layer's tensors, or the head's (final_norm + wcls). */
export interface SegmentInfo {
  readonly index: number;
  readonly kind: 'layer' | 'head';
  /** The model layer (kind 'layer'); -1 for the head. */
  readonly layer: number;
  /** The file ranges holding the segment's tensors, in file order (see format's TensorGroup). */
  readonly extents: readonly Extent[];
  /** Bytes of all the extents. */
  readonly size: number;
  /**
   * read backend: where each extent starts in the segment's buffer (slot or pinned buffer). The
   * extents are packed in file order, each at an address congruent to its file offset modulo
   * 4096, so every tensor has the alignment it has in the file (and in the mapping).
   */
  readonly packed: readonly number[];
  /** read backend: bytes of a buffer that holds the packed extents. */
  readonly packedBytes: number;
  /** Kept resident once loaded; otherwise streamed through a slot and released after use. */
  readonly pinned: boolean;
}
/**
 * Everything a thread needs to use the residency: SharedArrayBuffers and plain numbers only,
 * so it survives `postMessage` (structured clone) and the buffers are shared, not copied.
 */
export interface ResidencyShared {
  readonly version: 1;
  readonly path: string;
  /** The owner's file descriptor (process-wide): fstat checks, pread fallback, readRows. */
  readonly fd: number;
  readonly fileSize: number;
  readonly backend: BackendKind;
  readonly mode: ResidencyMode;
  /** Whether acquiring a segment starts prefetching the next one (false in `sequential`). */
  readonly prefetch: boolean;
  /** mmap backend: the mapping of the whole file. */
  readonly map: SharedArrayBuffer | null;
  readonly segments: readonly SegmentInfo[];
  /** The layers served, [start, end): segments 0..end−start−1, in order. */
  readonly layers: LayerRange;
  /** Index of the head segment (the last one), or -1 when the head is not served. */
  readonly headSegment: number;
  readonly slots: number;
  readonly slotBytes: number;
  /**
   * Bytes streamed segments may hold at once: the prefetcher makes a streamed segment resident
   * chunk by chunk only while this allowance has room (see plan.ts, windowBytes).
   */
  readonly streamBytes: number;
  /** read backend: one buffer per slot (a streamed segment's extents at their `packed` offsets). */
  readonly slotBuffers: readonly SharedArrayBuffer[];
  /** read backend: per segment, its own buffer if pinned, else null. */
  readonly pinnedBuffers: readonly (SharedArrayBuffer | null)[];
  readonly ctrl: SharedArrayBuffer;
  readonly counters: SharedArrayBuffer;
  readonly times: SharedArrayBuffer;
  /** Prefetch granularity: MADV_WILLNEED and touch in chunks of this many bytes. */
  readonly chunkBytes: number;
  /** How many chunks ahead of the touch MADV_WILLNEED runs. */
  readonly readaheadChunks: number;
  /** mlock pinned segments once loaded, so the kernel cannot reclaim them under streaming's
   *  page-cache pressure (mmap backend). */
  readonly lockPinned: boolean;
  /** Make pages present with MADV_POPULATE_READ (one call per chunk) instead of touching each page. */
  readonly populate: boolean;
  /** acquire() gives up with SlotsExhaustedError after waiting this long with all slots in use. */
  readonly stallMs: number;
  /** Post a load event per segment load to the owner (for onLoad / traces). */
  readonly trace: boolean;
}

/** Where a resident segment's bytes are. */
export interface SegmentLocation {
  readonly buffer: SharedArrayBuffer;
  /** Where each extent of the segment starts in `buffer` (the file offset itself in a mapping). */
  readonly extentOffsets: readonly number[];
}

/** One segment load, timestamps in epoch milliseconds (performance.timeOrigin-based). */
export interface SegmentLoadEvent {
  readonly segment: number;
  readonly kind: SegmentInfo['kind'];
  /** The model layer (kind 'layer'); -1 for the head. */
  readonly layer: number;
  readonly bytes: number;
  readonly startMs: number;
  readonly endMs: number;
  /** Why it was loaded: a client waited for it, the prefetcher ran ahead, or warmup. */
  readonly reason: 'demand' | 'prefetch' | 'warmup';
}

/** Messages from the prefetch worker to the owner. */
export type PrefetchMessage =
  | { readonly type: 'load'; readonly event: SegmentLoadEvent }
  | { readonly type: 'error'; readonly segment: number; readonly message: string }
  | { readonly type: 'lock-failed'; readonly message: string };

/** Timeouts of every Atomics.wait: a lost wake-up costs at most this, never a hang. */
export const WAIT_SLICE_MS = 250;
