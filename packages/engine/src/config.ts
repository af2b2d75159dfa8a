import { availableParallelism } from 'node:os';
import { Q_BLOCK, type LayerRange, type ModelConfig } from '@airllm/format';
import { OptionError, UnsupportedModelError } from './errors.js';
import type { AvailableMemory } from '@airllm/loader';
import type { MemoryPlan } from './memory-plan.js';
import type { ActivationMode } from './shared.js';

/** How weights are kept in memory; `auto` picks resident or stream (see memory-plan.ts). */
export type MemoryMode = 'auto' | 'resident' | 'stream' | 'sequential';

export interface EngineOptions {
  /** `.t` file; default: the model path with `.t` instead of `.m`, when it exists. */
  tokenizerPath?: string;
  /**
   * auto (default): resident when the model, KV cache and working memory fit in the available
   * memory with headroom, else stream with what memory allows (one line says which and why;
   * see `onMemoryPlan`); resident: keep every layer; stream: keep what fits maxMemory;
   * sequential: load, then compute.
   */
  mode?: MemoryMode;
  /**
   * Byte budget for weights in stream mode (default: what the machine's available memory allows,
   * as auto mode computes it); in auto mode, the budget instead of the machine's memory.
   */
  maxMemory?: number;
  /** auto mode: the memory to plan against instead of MemAvailable / the cgroup limit. */
  availableMemory?: AvailableMemory;
  /**
   * auto mode: receives the plan and its one-line description. Default: the line goes to stderr
   * when stderr is a terminal or the plan streams.
   */
  onMemoryPlan?: (line: string, plan: MemoryPlan) => void;
  /** Compute threads (default: the number of cores). */
  threads?: number;
  /** f32 (default) or q80 (dllama's numerics for Q40 models). */
  activations?: ActivationMode;
  /** Kernel backend: native (default, falls back to reference) or reference. */
  kernels?: 'native' | 'reference';
  /** Context length: KV cache rows (default: the model's, capped at 4096). */
  maxSeqLen?: number;
  /** Tokens per forward step (prompt chunk; default 128). */
  batchSize?: number;
  /** Sequences that can be decoded together (KV cache slots; default 1). */
  maxSequences?: number;
  /** Record a per-layer timeline (see `trace`). */
  trace?: boolean;
  /**
   * Serve only layers [start, end) (a node of a pipeline), with the head (final norm +
   * classifier) when `head` (default: when end is the last layer). KV cache and weights are
   * only kept for these.
   */
  layers?: { start: number; end: number; head?: boolean };
}

const DEFAULT_MAX_SEQ_LEN = 4096;
const DEFAULT_BATCH = 128;

/**
 * An engine's configuration: the model's hyper-parameters and the options resolved against
 * them (every default applied, every value checked).
 */
export interface EngineConfig {
  readonly model: ModelConfig;
  readonly mode: MemoryMode;
  readonly maxMemory: number;
  readonly threads: number;
  readonly activations: ActivationMode;
  readonly kernels: 'native' | 'reference';
  /** Context length: KV cache rows per slot. */
  readonly seqLen: number;
  /** Rows per forward step. */
  readonly batchSize: number;
  /** KV cache slots. */
  readonly maxSequences: number;
  readonly trace: boolean;
  /** The layers this engine serves, and whether it serves the head. */
  readonly layers: LayerRange;
  readonly head: boolean;
}

/** Resolve `o` against the model; throws OptionError / UnsupportedModelError naming the option. */
export function resolveConfig(m: ModelConfig, o: EngineOptions): EngineConfig {
  const mode = o.mode ?? 'auto';
  if (!['auto', 'resident', 'stream', 'sequential'].includes(mode)) throw new OptionError('mode', `must be auto, resident, stream or sequential, got ${mode}`);
  const threads = o.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new OptionError('threads', `must be 1..256, got ${o.threads}`);
  const activations = o.activations ?? 'f32';
  if (activations !== 'f32' && activations !== 'q80') throw new OptionError('activations', `must be f32 or q80, got ${activations}`);
  if (activations === 'q80') {
    for (const [name, n] of [['dim', m.dim], ['qDim', m.qDim], ['FFN width', m.ffDim]] as const) {
      if (n % Q_BLOCK !== 0) throw new UnsupportedModelError(`q80 activations need ${name} (${n}) to be a multiple of ${Q_BLOCK}`);
    }
  }
  const seqLen = o.maxSeqLen ?? Math.min(m.maxSeqLen, DEFAULT_MAX_SEQ_LEN);
  if (!Number.isInteger(seqLen) || seqLen < 1 || seqLen > m.maxSeqLen) throw new OptionError('maxSeqLen', `must be 1..${m.maxSeqLen} (the model's context), got ${o.maxSeqLen}`);
  const batchSize = o.batchSize ?? Math.min(DEFAULT_BATCH, seqLen);
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 4096) throw new OptionError('batchSize', `must be 1..4096, got ${o.batchSize}`);
  const maxSequences = o.maxSequences ?? 1;
  if (!Number.isInteger(maxSequences) || maxSequences < 1 || maxSequences > batchSize) throw new OptionError('maxSequences', `must be 1..batchSize (${batchSize}), got ${o.maxSequences}`);
  const maxMemory = o.maxMemory ?? Number.POSITIVE_INFINITY;
  if ((mode === 'stream' || (mode === 'auto' && o.maxMemory !== undefined)) && !(maxMemory > 0)) throw new OptionError('maxMemory', `stream mode needs a positive byte budget, got ${o.maxMemory}`);
  const kernels = o.kernels ?? 'native';
  const start = o.layers?.start ?? 0;
  const end = o.layers?.end ?? m.nLayers;
  if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > m.nLayers || start >= end) {
    throw new OptionError('layers', `range ${start}..${end} must be a non-empty part of 0..${m.nLayers}`);
  }
  const head = o.layers?.head ?? end === m.nLayers;
  return Object.freeze({
    model: m,
    mode,
    maxMemory,
    threads,
    activations,
    kernels,
    seqLen,
    batchSize,
    maxSequences,
    trace: o.trace ?? false,
    layers: Object.freeze({ start, end }),
    head,
  });
}

/** `c` with an automatic memory plan's choice in place of `auto`. */
export function withMemoryMode(c: EngineConfig, mode: 'resident' | 'stream', budget: number | undefined): EngineConfig {
  return Object.freeze({ ...c, mode, maxMemory: budget ?? Number.POSITIVE_INFINITY });
}

/** Whether the engine serves the whole model (every layer and the head). */
export function servesWholeModel(c: EngineConfig): boolean {
  return c.layers.start === 0 && c.layers.end === c.model.nLayers && c.head;
}
