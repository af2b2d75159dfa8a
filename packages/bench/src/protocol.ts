/**
 * What the harness sends to a scenario's child process and what comes back (over the fork IPC
 * channel, structured-clone serialization). One child per scenario: each gets a clean peak-RSS
 * counter (VmHWM), its own /proc/self/io, and leaves no mapping behind when it exits.
 */
import type { TraceEvent } from '@airllm/engine';

/** `auto`: the engine's automatic memory plan (with `maxMemory`, that budget instead of the machine's memory). */
export type MemoryMode = 'auto' | 'resident' | 'stream' | 'sequential';

export interface EngineSpec {
  readonly mode: MemoryMode;
  /** Weight budget in bytes (stream / sequential). */
  readonly maxMemory?: number;
  readonly threads: number;
  readonly maxSeqLen: number;
  readonly batchSize: number;
  readonly maxSequences: number;
  /** q80: Q8_0 activations into the Q4_0 matmuls, as llama.cpp computes; f32: the engine's default. */
  readonly activations: 'f32' | 'q80';
  readonly trace: boolean;
}

/**
 * Single-sequence generation, `runs` times, each from a fresh random prompt (no KV prefix
 * reuse). A first, untimed run calibrates: if the planned runs would take longer than
 * `budgetSeconds`, the prompt and decode lengths shrink (never below `minTokens`) and so does the
 * number of runs (never below 2). The counts actually used come back in the result, and the
 * llama.cpp peer is then run with the same counts.
 */
export interface GenerateTask {
  readonly kind: 'generate';
  readonly runs: number;
  readonly promptTokens: number;
  readonly decodeTokens: number;
  readonly budgetSeconds: number;
  readonly minTokens: number;
  /** Keep the trace of the last run (for the timeline). */
  readonly traceLast: boolean;
  /**
   * Session: after the calibration, report the counts ('ready') and then run once per 'run'
   * command from the parent until 'finish' (so that llama.cpp can run in between, run by run).
   */
  readonly session: boolean;
}

/** Several sequences decoded together (generateBatch), `runs` times per batch size. */
export interface BatchTask {
  readonly kind: 'batch';
  readonly sequences: readonly number[];
  readonly promptTokens: number;
  readonly decodeTokens: number;
  readonly runs: number;
  readonly budgetSeconds: number;
}

/**
 * Forward steps one by one (a prompt step, then one token per step, greedy), each timed on its
 * own with the disk bytes it read. With `dropCache`, the model file is evicted from the page
 * cache before every step (untimed): on this machine the file fits in RAM, and without the drop
 * every pass after the first would be served from the page cache instead of the disk, which is
 * not what a model larger than RAM sees. Pinned layers stay (their pages are mapped).
 */
export interface StepsTask {
  readonly kind: 'steps';
  readonly promptTokens: number;
  readonly decodeSteps: number;
  /** Stop adding decode steps after this long (at least `minSteps` are run). */
  readonly budgetSeconds: number;
  readonly minSteps: number;
  readonly dropCache: boolean;
  /** Keep the trace of the first decode steps (for the timeline). */
  readonly traceSteps: number;
}

/** Time the kernels alone on one layer's matrices (1 thread), to split a layer's compute time. */
export interface KernelProbeTask {
  readonly kind: 'kernel-probe';
  readonly rows: readonly number[];
}

/**
 * What speculative decoding rests on: one pass over the model verifying `rows` rows (the last
 * token and rows − 1 drafted ones, every row's logits) against a pass of 1 row, at the same
 * position, alternating which comes first, `repeats` times each, the model file evicted from the
 * page cache before every pass (untimed) as in a StepsTask.
 */
export interface VerifyTask {
  readonly kind: 'verify';
  readonly rows: number;
  readonly repeats: number;
  readonly dropCache: boolean;
}

export type AirllmTask = GenerateTask | BatchTask | StepsTask | KernelProbeTask | VerifyTask;

export interface AirllmJob {
  readonly kind: 'airllm';
  readonly label: string;
  readonly modelPath: string;
  readonly engine: EngineSpec;
  /** Load pinned layers before measuring (initialize({ warmup })). */
  readonly warmup: boolean;
  /** Evict the model file from the page cache right after initialize (before any warmup). */
  readonly coldStart: boolean;
  readonly seed: number;
  readonly tasks: readonly AirllmTask[];
}

export interface PeerJob {
  readonly kind: 'llamacpp';
  readonly label: string;
  readonly ggufPath: string;
  /** Folder holding node_modules/node-llama-cpp. */
  readonly peerDir: string;
  readonly variant: PeerVariant;
  readonly threads: number;
  readonly runs: number;
  readonly promptTokens: number;
  readonly decodeTokens: number;
  readonly vocabSize: number;
  readonly seed: number;
  /** Session: after loading, run once per 'run' command until 'finish' (see GenerateTask). */
  readonly session: boolean;
}

/**
 * `default`: node-llama-cpp's defaults (mmap, and llama.cpp repacks Q4_0 into its own anonymous
 * buffers on AVX2/AVX-512: the weights end up in memory twice, mapped and repacked).
 * `lazy`: its `lazyMode` (tensors read on demand from the mapping). `nommap`: `useMmap: false`
 * (weights read into anonymous memory). node-llama-cpp 3.22 has no switch for llama.cpp's
 * `--no-repack`; whether a variant copied the weights shows in RssAnon after load.
 */
export type PeerVariant = 'default' | 'lazy' | 'nommap';
export const PEER_VARIANTS: readonly PeerVariant[] = ['default', 'lazy', 'nommap'];

export type Job = AirllmJob | PeerJob;

// --- results -----------------------------------------------------------------------------

export interface Memory {
  /** VmHWM since the child reset it (just before creating the engine / loading the model). */
  readonly peakRss: number;
  /** VmRSS right before the engine was created (Node itself, the modules). */
  readonly baselineRss: number;
  /** RssFile / RssAnon after load (llama.cpp: whether the weights were copied). */
  readonly rssFileAfterLoad?: number;
  readonly rssAnonAfterLoad?: number;
}

export interface GenerateRun {
  readonly promptTokens: number;
  readonly generatedTokens: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  readonly loadWaitMs: number;
  readonly computeMs: number;
  readonly diskBytesRead: number;
}

export interface GenerateResult {
  readonly kind: 'generate';
  readonly promptTokens: number;
  readonly decodeTokens: number;
  readonly runs: readonly GenerateRun[];
  /** How the counts were chosen (calibration), for the report. */
  readonly note: string;
}

export interface BatchResult {
  readonly kind: 'batch';
  readonly promptTokens: number;
  readonly decodeTokens: number;
  /** Per batch size: aggregate decode tokens/s of each run. */
  readonly bySequences: readonly { readonly sequences: number; readonly decodeTokensPerSecond: readonly number[]; readonly prefillTokensPerSecond: readonly number[] }[];
}

export interface StepRecord {
  readonly tokens: number;
  readonly ms: number;
  readonly diskBytes: number;
  /** Thread 0's load waits and compute during the step (engine counters, ms). */
  readonly loadWaitMs: number;
  readonly computeMs: number;
  /** Bytes of the pinned layers in the page cache when the step started (after the harness's eviction). */
  readonly pinnedCachedBytes: number | undefined;
}

export interface StepsResult {
  readonly kind: 'steps';
  readonly prompt: StepRecord;
  /** Milliseconds from the child process's start until the prompt step's logits (the first token). */
  readonly promptEndAtMs: number;
  readonly decode: readonly StepRecord[];
  /** Bytes pinned by the residency plan, and the plan's total (pinned + slots). */
  readonly pinnedBytes: number;
  readonly plannedBytes: number;
  readonly slotBytes: number;
  readonly slots: number;
  /** Bytes streamed segments may hold at once (the rest of the budget after the pins). */
  readonly streamBytes: number;
  /** Disk bytes read by initialize + warmup (before the first step). */
  readonly warmupDiskBytes: number;
  /** Total time spent evicting the file from the page cache between steps (not in any step's ms). */
  readonly dropCacheMs: number;
}

export interface KernelProbeResult {
  readonly kind: 'kernel-probe';
  /** Per backend name (native path or 'reference'), per batch rows: ms for one layer's matmuls on 1 thread. */
  readonly layerMatmulMs: readonly { readonly backend: string; readonly rows: number; readonly ms: number }[];
  readonly headMatmulMs: readonly { readonly backend: string; readonly rows: number; readonly ms: number }[];
  /** The backend loadBackend() picks (what the engine asks for with kernels: 'native'). */
  readonly preferred: string;
}

export interface VerifyResult {
  readonly kind: 'verify';
  readonly rows: number;
  /** ms of each pass of `rows` rows, and of each pass of 1 row. */
  readonly manyMs: readonly number[];
  readonly oneMs: readonly number[];
}

export type TaskResult = GenerateResult | BatchResult | StepsResult | KernelProbeResult | VerifyResult;

export interface AirllmResult {
  readonly kind: 'airllm';
  readonly label: string;
  /** initialize(), without loading the pinned layers. */
  readonly initMs: number;
  /** Loading the pinned layers (job.warmup), after initMs. */
  readonly warmupMs: number;
  /** Milliseconds from the child process's start until the engine was ready (warmup done). */
  readonly readyAtMs: number;
  /** The mode the engine runs in (auto resolved) and the automatic plan's line, if it made one. */
  readonly mode: string;
  readonly memoryPlan: string | undefined;
  readonly memory: Memory;
  readonly tasks: readonly TaskResult[];
  /** Trace events kept by the tasks (Chrome trace format, absolute µs). */
  readonly trace: readonly TraceEvent[];
}

export interface PeerRun {
  readonly prefillTokensPerSecond: number;
  readonly decodeTokensPerSecond: number;
  readonly prefillMs: number;
  readonly decodeMs: number;
}

export interface PeerResult {
  readonly kind: 'llamacpp';
  readonly label: string;
  readonly variant: PeerVariant;
  readonly version: string;
  readonly loadMs: number;
  readonly memory: Memory;
  readonly runs: readonly PeerRun[];
  /** Anything llama.cpp said about repacking while loading (its log lines). */
  readonly repackLines: number;
}

export type JobResult = AirllmResult | PeerResult;

/** What a session job reports when it is ready for runs: the counts every run uses. */
export interface SessionInfo {
  readonly promptTokens: number;
  readonly decodeTokens: number;
  readonly note: string;
}

export type SessionRun = GenerateRun | PeerRun;

/** Parent → child messages. */
export type ParentMessage = { type: 'job'; job: Job } | { type: 'run' } | { type: 'finish' };

/** Child → parent messages. */
export type ChildMessage =
  | { type: 'log'; line: string }
  | { type: 'ready'; info: SessionInfo }
  | { type: 'run'; run: SessionRun }
  | { type: 'result'; result: JobResult }
  | { type: 'error'; message: string; stack?: string };
