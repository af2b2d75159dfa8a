import type { AvailableMemory } from '@airllm/loader';
import type { EngineConfig } from './config.js';
import { q80Bytes } from './state.js';

/**
 * The automatic memory plan (`mode: 'auto'`, the default): keep the model resident when it fits,
 * else stream it, pinning what memory allows.
 *
 * Memory needed besides the weights: the KV cache (every slot at the full context, F32), the
 * working memory (activations, each thread's scratch, and a fixed allowance for the runtime:
 * {@link RUNTIME_BYTES} plus {@link THREAD_BYTES} per thread for V8 isolates and addons), and a
 * headroom left to the rest of the machine: {@link HEADROOM_FRACTION} of the available memory,
 * at least {@link HEADROOM_MIN_BYTES}.
 */
export const HEADROOM_FRACTION = 0.1;
export const HEADROOM_MIN_BYTES = 512 * 2 ** 20;
export const RUNTIME_BYTES = 128 * 2 ** 20;
export const THREAD_BYTES = 32 * 2 ** 20;

export interface MemoryPlanInput {
  /** Bytes of the weights this engine serves (its layers, and the head if it serves it). */
  readonly weightBytes: number;
  readonly kvBytes: number;
  readonly workingBytes: number;
  /** What the machine has available (see @airllm/loader's availableMemory); undefined if unknown. */
  readonly available: AvailableMemory | undefined;
  /** A weight budget the caller set (`maxMemory`): it replaces the machine's figure. */
  readonly maxMemory?: number;
  /** `stream` (mode stream with no budget given): stream even when the model would fit, with the budget the machine allows. */
  readonly force?: 'stream';
}

export interface MemoryPlan {
  readonly mode: 'resident' | 'stream';
  /** The weight budget in stream mode. */
  readonly budgetBytes: number | undefined;
  readonly weightBytes: number;
  readonly kvBytes: number;
  readonly workingBytes: number;
  readonly headroomBytes: number;
  /** The memory the plan was made against, and where that figure came from. */
  readonly availableBytes: number | undefined;
  readonly source: string;
  /** Why, in a few words with sizes in GB. */
  readonly reason: string;
}

/** Bytes in GB: two decimals, or three significant digits below 0.1 GB (small models). */
const gb = (n: number): string => `${n >= 1e8 || n === 0 ? (n / 1e9).toFixed(2) : Number((n / 1e9).toPrecision(3))} GB`;

/** Decide resident or stream, and the weight budget when streaming. Pure. */
export function planMemory(i: MemoryPlanInput): MemoryPlan {
  const base = { weightBytes: i.weightBytes, kvBytes: i.kvBytes, workingBytes: i.workingBytes };
  if (i.maxMemory !== undefined && Number.isFinite(i.maxMemory)) {
    const fits = i.weightBytes <= i.maxMemory;
    return {
      ...base,
      mode: fits ? 'resident' : 'stream',
      budgetBytes: fits ? undefined : i.maxMemory,
      headroomBytes: 0,
      availableBytes: i.maxMemory,
      source: 'maxMemory',
      reason: `model ${gb(i.weightBytes)} ${fits ? '≤' : '>'} the weight budget ${gb(i.maxMemory)} given`,
    };
  }
  if (i.available === undefined) {
    if (i.force) {
      // No figure to plan with: the residency refuses a stream mode without a budget (typed).
      return { ...base, mode: 'stream', budgetBytes: undefined, headroomBytes: 0, availableBytes: undefined, source: 'unknown', reason: 'available memory unknown on this system: give maxMemory' };
    }
    return { ...base, mode: 'resident', budgetBytes: undefined, headroomBytes: 0, availableBytes: undefined, source: 'unknown', reason: 'available memory unknown on this system' };
  }
  const avail = i.available.bytes;
  const headroomBytes = Math.max(HEADROOM_MIN_BYTES, Math.floor(avail * HEADROOM_FRACTION));
  const other = i.kvBytes + i.workingBytes + headroomBytes;
  const need = i.weightBytes + other;
  const sum = `model ${gb(i.weightBytes)} + KV cache ${gb(i.kvBytes)} + working ${gb(i.workingBytes)} + headroom ${gb(headroomBytes)} = ${gb(need)}`;
  const against = `${gb(avail)} available (${i.available.source})`;
  if (need <= avail && i.force === undefined) {
    return { ...base, mode: 'resident', budgetBytes: undefined, headroomBytes, availableBytes: avail, source: i.available.source, reason: `${sum} fits in ${against}` };
  }
  const budgetBytes = Math.max(0, avail - other);
  return {
    ...base,
    mode: 'stream',
    budgetBytes,
    headroomBytes,
    availableBytes: avail,
    source: i.available.source,
    reason: `${sum} ${need <= avail ? 'fits in' : 'exceeds'} ${against}${i.force ? ', stream mode asked for' : ''}; weight budget ${gb(budgetBytes)}`,
  };
}

/** KV cache bytes of a configuration: keys and values, F32, every served layer, every slot, full context. */
export function kvCacheBytes(c: EngineConfig): number {
  return 2 * 4 * c.maxSequences * (c.layers.end - c.layers.start) * c.seqLen * c.model.kvDim;
}

/** Working memory of a configuration: shared activations, each thread's scratch, the runtime. */
export function workingBytes(c: EngineConfig): number {
  const m = c.model;
  const R = c.batchSize;
  const q80 = c.activations === 'q80';
  const moe = m.nExperts > 0;
  const shared = 4 * R * (2 * m.dim + 2 * m.qDim + 2 * m.kvDim + 2 * m.ffDim + m.vocabSize) + (q80 ? q80Bytes(R * m.ffDim) : 0);
  const perThread =
    4 * R * m.dim * (moe ? 3 : 1) +
    4 * c.seqLen +
    (q80 ? q80Bytes(R * m.dim) * (moe ? 2 : 1) + 4 * R * m.qDim + q80Bytes(R * m.qDim) + q80Bytes(R * Math.max(m.dim, m.ffDim)) : 0) +
    (moe && q80 ? 4 * R * m.nActiveExperts * m.dim : 0);
  return shared + c.threads * (perThread + THREAD_BYTES) + RUNTIME_BYTES;
}

/** The one stderr line of an automatic plan; `pinnedBytes` when streaming. */
export function describeMemoryPlan(p: MemoryPlan, pinnedBytes?: number): string {
  const what = p.mode === 'resident' ? 'resident' : `stream, ${gb(pinnedBytes ?? 0)} of the weights pinned, the rest read from disk each pass`;
  return `airllm: memory plan: ${what} (${p.reason})`;
}
