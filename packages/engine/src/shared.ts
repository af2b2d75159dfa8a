import type { FloatType, LayerRange } from '@airllm/format';
import type { BackendPreference } from '@airllm/kernels';
import type { EngineConfig } from './config.js';
import type { WeightsDescriptor } from './weights.js';

/** Activation numerics: plain float32, or dllama's Q80 casts at its seven points (FORMAT.md §e). */
export type ActivationMode = 'f32' | 'q80';

/**
 * The buffers every compute thread shares (SharedArrayBuffers allocated once by the engine),
 * with their shapes. Rows are batch rows (prompt tokens or sequences decoded together).
 */
export interface SharedBuffers {
  /** (maxRows, dim) residual stream; the engine writes embeddings here before a step. */
  readonly x: SharedArrayBuffer;
  /** (maxRows, qDim) queries. */
  readonly q: SharedArrayBuffer;
  /** (maxRows, kvDim) keys / values of a step whose rows belong to several sequences. */
  readonly kTmp: SharedArrayBuffer;
  readonly vTmp: SharedArrayBuffer;
  /** (maxRows, qDim) attention output. */
  readonly z: SharedArrayBuffer;
  /** (maxRows, dim) output of wo, of w2 and of the MoE sum, before the residual add. */
  readonly o: SharedArrayBuffer;
  /** (maxRows, ff) gate → SwiGLU product, and (maxRows, ff) up projection. */
  readonly hb: SharedArrayBuffer;
  readonly hb2: SharedArrayBuffer;
  /** (maxRows, ff/32 · 34 bytes) Q80 SwiGLU product (q80 mode). */
  readonly hq: SharedArrayBuffer;
  /** (maxRows, vocab) logits of the rows asked for. */
  readonly logits: SharedArrayBuffer;
  /** Barrier state (Int32Array). */
  readonly barrier: SharedArrayBuffer;
  /** Step channel: control words, the step's description, per-thread reports (channel.ts). */
  readonly control: SharedArrayBuffer;
  readonly task: SharedArrayBuffer;
  readonly reports: SharedArrayBuffer;
  /** KV cache: [slot][layer − firstLayer] → (seqLen, kvDim) keys and values. */
  readonly kv: readonly (readonly { readonly k: SharedArrayBuffer; readonly v: SharedArrayBuffer }[])[];
}

/** Everything a compute worker needs, sent once as piscina workerData. */
export interface ComputeWorkerData {
  /** The model's hyper-parameters and the resolved options (threads, rows, context, layers). */
  readonly config: EngineConfig;
  /** The kernel backend the main thread resolved: 'reference' or a native CPU path. */
  readonly kernels: BackendPreference;
  /** Spin iterations before sleeping at a barrier (0 when threads > cores). */
  readonly spin: number;
  readonly buffers: SharedBuffers;
  /** How to attach to the weights, with the layout (see weights.ts). */
  readonly weights: WeightsDescriptor;
}

/** One run of rows belonging to one sequence, at consecutive positions. */
export interface SequenceRows {
  readonly slot: number;
  readonly pos0: number;
  readonly row0: number;
  readonly rows: number;
}

/** What one step computes: the task each compute thread receives. */
export interface StepTask {
  readonly thread: number;
  readonly rows: number;
  readonly seqs: readonly SequenceRows[];
  /** Layers to run, [start, end) (empty for none). */
  readonly layers: LayerRange;
  /** Rows of x to turn into logits (final norm + classifier, after the layers); empty for none. */
  readonly logitRows: readonly number[];
}

/** What a span of a thread report covers. */
export const SpanKind = { LAYER: 0, HEAD: 1 } as const;

/** Per-thread timings of one step, in ms since the Unix epoch (performance.timeOrigin based). */
export interface ThreadReport {
  readonly thread: number;
  /** [SpanKind, layer (0 for the head), waitStart, waitEnd, computeEnd] per layer and head. */
  readonly spans: number[];
}

export type { FloatType };
