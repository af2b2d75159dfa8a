/**
 * @airllm/loader: a model file's weights in memory that every thread reads with no copy, a
 * residency cache that keeps them within a byte budget, and a prefetch worker.
 *
 * ## Weights
 *
 *   const w = await new MemoryMappedWeights(path).open();   // header, layout, mapping
 *   const bytes = w.loadLayerWeights(offset, size);          // zero-copy Uint8Array (mmap)
 *   const wq = w.tensorView(layerTensor(w.layout, 3, 'q'));  // typed view per tensor
 *   w.readRows(w.layout.embedding, tokenId, 1, row);         // embedding rows (pread)
 *   w.close();
 *
 * The layout (format's WeightsLayout) is the only description of where tensors are: a `.m`
 * file's by default, or one given with `{ layout }` for another format. A layer (and the head)
 * is a list of extents, file ranges in file order.
 *
 * Backends: `mmap` (native addon: the file mapped into one SharedArrayBuffer) or `read` (pure
 * JS pread into SharedArrayBuffers), picked automatically with one stderr line when the addon is
 * missing; force one with `{ backend }` or AIRLLM_LOADER_BACKEND=mmap|read. The engine streams
 * with `read` (`backendForMode`): its loads go through `SegmentReader`, several preads in flight
 * from the addon's threads, O_DIRECT for block-aligned parts, into page-aligned buffers.
 *
 * ## Residency, as the engine uses it
 *
 * Segments are the units of residency: one per layer of the served range [start, end), then one
 * head segment (final_norm + wcls) when the range ends at the last layer. The engine visits them
 * cyclically: 0, 1, …, n−1, 0, … (one pass per forward step).
 *
 * Main thread:
 *
 *   const r = await LayerResidency.create(w, { mode: 'stream', budgetBytes, layers: { start, end } });
 *   await r.warmup((done, total) => …);        // optional: load pinned segments now
 *   for (const worker of computeWorkers) worker.postMessage({ residency: r.shared });
 *   …
 *   r.stats();                                  // bytes read from disk, waits, loads per segment
 *   await r.close();                            // stops the prefetcher, drops the pages
 *
 * Inside each compute worker (blocking calls; never on the main thread):
 *
 *   const client = attachResidency(shared);
 *   for (each step) for (let layer = start; layer < end; layer++) {
 *     const loc = client.acquireLayer(layer);   // waits until resident
 *     const wq = tensorViewAt(loc.buffer, tensorOffsetIn(extents, loc.extentOffsets, q), q);
 *     …compute this thread's rows…
 *     barrier();                                // the engine's own
 *     if (thread === 0) client.releaseLayer(layer); // once per use, after every thread is done
 *   }                                           // then acquireHead() / releaseHead()
 *
 * `acquire(seg)` (and acquireLayer / acquireHead) is idempotent across threads (all compute
 * threads acquire the same segment); it returns where each of the segment's extents lives (the
 * file mapping itself in mmap mode; in the read fallback a slot buffer with the extents packed
 * in file order, each at its file offset's alignment modulo 4096) and tells the prefetcher to
 * start on the next segment of the cyclic order. The main thread uses `acquireAsync`
 * (Atomics.waitAsync) instead. `release(seg)` gives the segment back: pinned segments stay,
 * streamed ones are dropped (MADV_DONTNEED) and their slot reused.
 *
 * Modes: `resident` (everything pinned), `stream` (pin what fits in budgetBytes, stream the
 * rest through 2 slots: the one computing and the one prefetched; a budget below what the
 * slots need is refused with BudgetTooSmallError), `sequential` (no prefetch: load, then
 * compute; for comparison). More streamed segments held at once than slots is an error
 * (SlotsExhaustedError after `stallMs`), not a hang.
 *
 * The file is fstat'ed at open, before each load and on each acquire: a size change is a
 * FileChangedError. A page faulting past a truncated end of file reads as zeros instead of
 * killing the process with SIGBUS (mmap backend), and the next check reports it.
 *
 * ## Models from a hub
 *
 *   const { modelPath, tokenizerPath } = await resolveHubModel('hf:owner/repo/model.gguf');
 *   const r = await pullModel('hf:owner/repo', { dtype: FloatType.Q40, onEvent });  // safetensors → .m + .t
 *
 * Downloads from a Hugging Face-style hub into a user-visible cache, resumable (`.partial` +
 * Range), checked against the hub's sha256 / git sha1 before the file takes its name; see
 * README.md for the cache layout and the hub contract.
 */
export { MemoryMappedWeights, ALIGN_MIRROR, type WeightsOptions } from './weights.js';
export { tensorViewAt, tensorBytesAt, tensorOffsetIn, MAX_VIEW_ELEMENTS, type TensorView } from './views.js';
export { LayerResidency, type ResidencyOptions, type ResidencyStats, type SegmentStats } from './residency/residency.js';
export { attachResidency, ResidencyClient } from './residency/client.js';
export { planResidency, type ResidencyPlan } from './residency/plan.js';
export type {
  ResidencyMode,
  ResidencyShared,
  SegmentInfo,
  SegmentLocation,
  SegmentLoadEvent,
} from './residency/protocol.js';
export { simulateCyclicScan, type CacheSimulation } from './policy.js';
export { BACKEND_ENV, backendForMode, resolveBackend, type BackendChoice, type BackendKind } from './backend.js';
export { nativeAddon, type Advice, type NativeAddon } from './native.js';
export { diskReadBytes, memoryStatus, resetPeakRss, type MemoryStatus } from './proc.js';
export { dropFileCache, pageCacheBytes } from './cache.js';
export { SegmentReader, allocateReadBuffer, DIRECT_READS, BUFFERED_READS, READ_CHUNK, type ReadPathInfo } from './reader.js';
export { readSystemMemory, availableMemory, parseMeminfo, cgroupRoom, type SystemMemory, type CgroupMemory, type AvailableMemory } from './memory.js';
export * from './errors.js';
export {
  HUB_SPEC_PREFIX,
  DEFAULT_REVISION,
  type HubSpec,
  isHubSpec,
  parseHubSpec,
  formatHubSpec,
  defaultCacheDir,
  repoCacheDir,
  cachedFilePath,
  convertedModelPath,
} from './hub/spec.js';
export { DEFAULT_ENDPOINT, HUB_LIMITS, HubClient, defaultEndpoint, type HubClientOptions, type RemoteFile, type ChecksumAlgorithm } from './hub/client.js';
export { downloadFile, readPullRecord, type DownloadOptions, type DownloadResult, type PullEvent, type PullRecord } from './hub/download.js';
export { pullModel, resolveHubModel, cachedModel, type PullOptions, type PullResult, type PulledFile, type ConvertedRecord } from './hub/pull.js';
