import { closeSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import {
  MAX_MODEL_HEADER_BYTES,
  openForRead,
  Q80_BLOCK_BYTES,
  Q_BLOCK,
  readAt,
  readModelFile,
  type ModelHeader,
  type ModelLayout,
} from '@airllm/format';
import { Barrier } from './barrier.js';
import { ContextOverflowError, EngineStateError, OptionError, UnsupportedModelError } from './errors.js';
import { Sampler } from './sampler.js';
import { Sequence, type FinishReason, type ForwardItem, type GeneratedToken, type SequenceOptions } from './sequence.js';
import type { ActivationMode, ComputeWorkerData, SequenceRows, SharedBuffers, StepTask, ThreadReport } from './shared.js';
import type { Tokenizer } from './tokenizer.js';
import { defaultTokenizerPath, loadTokenizer } from './tokenizer-load.js';
import { Trace } from './trace.js';
import { CTRL, CTRL_INTS, readReport, reportDoubles, taskInts, writeTask } from './channel.js';
import type { ServeTask } from './worker.js';
import { WeightSource } from './weights.js';
import { diskReadBytes, type ResidencyStats } from '@airllm/loader';
import { loadBackend, type BackendPreference, type NativeBackend } from '@airllm/kernels';

export type MemoryMode = 'resident' | 'stream' | 'sequential';

export interface EngineOptions {
  /** `.t` file; default: the model path with `.t` instead of `.m`, when it exists. */
  tokenizerPath?: string;
  /** resident (default): keep every layer; stream: keep what fits maxMemory; sequential: load, then compute. */
  mode?: MemoryMode;
  /** Byte budget for weights in stream mode. */
  maxMemory?: number;
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

export interface InitializeOptions {
  /** Load every pinned layer now (all of them in resident mode) instead of on first use. */
  warmup?: boolean;
  /** Progress of that load, in bytes. */
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
}

export interface GenerateOptions extends SequenceOptions {
  /** Cancel between tokens. */
  signal?: AbortSignal;
}

export type { FinishReason, GeneratedToken } from './sequence.js';

/** Options of beginSequence: a sequence's own sampling, length and stop rules, and its slot. */
export interface BeginSequenceOptions extends SequenceOptions {
  /** KV cache slot, 0..maxSequences-1 (default 0). */
  slot?: number;
}

export interface GenerationStats {
  promptTokens: number;
  /** Prompt tokens whose KV cache was reused from the previous generation. */
  cachedPromptTokens: number;
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  /** Time compute threads waited for layers to become resident. */
  loadWaitMs: number;
  computeMs: number;
  /** Bytes the process read from disk during the generation (/proc/self/io). */
  diskBytesRead: number;
  peakRssBytes: number;
}

export interface GenerationResult {
  promptTokens: number[];
  tokens: number[];
  text: string;
  finishReason: FinishReason;
  stats: GenerationStats;
}

const DEFAULT_MAX_SEQ_LEN = 4096;
const DEFAULT_BATCH = 128;
const BARRIER_SPIN = 4000;

interface ResolvedOptions {
  mode: MemoryMode;
  maxMemory: number;
  threads: number;
  activations: ActivationMode;
  kernels: 'native' | 'reference';
  seqLen: number;
  batchSize: number;
  maxSequences: number;
  trace: boolean;
  firstLayer: number;
  endLayer: number;
  head: boolean;
}

/**
 * Runs a Distributed-Llama `.m` model layer by layer. `initialize()` reads the header, opens the
 * weights and starts the compute threads; `forward()` runs tokens through the model;
 * `generate()` streams tokens; `cleanup()` stops threads and releases the mapping.
 */
export class LayerWiseInferenceEngine {
  readonly modelPath: string;
  readonly options: EngineOptions;
  #header: ModelHeader | undefined;
  #layout: ModelLayout | undefined;
  #tokenizer: Tokenizer | undefined;
  #opts: ResolvedOptions | undefined;
  #weights: WeightSource | undefined;
  #pool: Piscina | undefined;
  #buffers: SharedBuffers | undefined;
  #x: Float32Array | undefined;
  #logits: Float32Array | undefined;
  #history: number[][] = [];
  #busy: Promise<void> = Promise.resolve();
  #ctrl: Int32Array | undefined;
  #serving: { settled: boolean; promise: Promise<void> }[] = [];
  #closed = false;
  readonly trace = new Trace();
  #stepWaitMs = 0;
  #stepComputeMs = 0;
  /** The result of the last finished generate() (also the generator's return value). */
  lastGeneration: GenerationResult | undefined;

  constructor(modelPath: string, options: EngineOptions = {}) {
    this.modelPath = modelPath;
    this.options = options;
  }

  get header(): ModelHeader {
    return this.#need(this.#header);
  }
  get layout(): ModelLayout {
    return this.#need(this.#layout);
  }
  get tokenizer(): Tokenizer {
    if (!this.#tokenizer) throw new EngineStateError(`no tokenizer: pass tokenizerPath (looked for ${this.#defaultTokenizerPath()})`);
    return this.#tokenizer;
  }
  get hasTokenizer(): boolean {
    return this.#tokenizer !== undefined;
  }
  /** Context length (KV cache rows). */
  get maxSeqLen(): number {
    return this.#need(this.#opts).seqLen;
  }
  get threads(): number {
    return this.#need(this.#opts).threads;
  }
  /** Rows per forward step (resolved batchSize). */
  get batchSize(): number {
    return this.#need(this.#opts).batchSize;
  }
  /** KV cache slots (resolved maxSequences). */
  get maxSequences(): number {
    return this.#need(this.#opts).maxSequences;
  }
  /** Activation numerics (resolved activations). */
  get activations(): ActivationMode {
    return this.#need(this.#opts).activations;
  }

  #need<T>(v: T | undefined): T {
    if (this.#closed) throw new EngineStateError('engine was cleaned up');
    if (v === undefined) throw new EngineStateError('call initialize() first');
    return v;
  }

  #defaultTokenizerPath(): string {
    return defaultTokenizerPath(this.modelPath);
  }

  async initialize(init: InitializeOptions = {}): Promise<void> {
    if (this.#closed) throw new EngineStateError('engine was cleaned up');
    if (this.#pool) return;
    const { header, layout } = readModelFile(this.modelPath);
    const opts = this.#resolve(header);
    this.#tokenizer = loadTokenizer(this.modelPath, { tokenizerPath: this.options.tokenizerPath, modelVocabSize: header.vocabSize });
    this.#header = header;
    this.#layout = layout;
    this.#opts = opts;
    this.#weights = await WeightSource.open(this.modelPath, {
      mode: opts.mode,
      budgetBytes: opts.mode === 'resident' ? undefined : Number.isFinite(opts.maxMemory) ? opts.maxMemory : undefined,
      firstLayer: opts.firstLayer,
      endLayer: opts.endLayer,
      includeHead: opts.head,
      onLoad: opts.trace ? (e) => this.trace.span(`load ${e.layer < 0 ? 'head' : `layer ${e.layer}`}`, `load-${e.reason}`, 'prefetch', e.startMs, e.endMs, { bytes: e.bytes }) : undefined,
    });
    this.#buffers = this.#allocate(header, opts);
    this.#x = new Float32Array(this.#buffers.x);
    this.#logits = new Float32Array(this.#buffers.logits);
    this.#history = Array.from({ length: opts.maxSequences }, () => []);
    // Only the header bytes (the workers rebuild the layout from them): reading the whole file
    // fails past 2 GiB, and a subarray sent as workerData clones its whole backing buffer into
    // every compute worker.
    const headerBytes = readHeaderBytes(this.modelPath, Math.min(MAX_MODEL_HEADER_BYTES, header.headerSize));
    const workerData: ComputeWorkerData = {
      headerBytes,
      threads: opts.threads,
      maxRows: opts.batchSize,
      seqLen: opts.seqLen,
      firstLayer: opts.firstLayer,
      lastLayer: opts.endLayer,
      activations: opts.activations,
      kernels: resolveKernels(opts.kernels),
      spin: opts.threads <= availableParallelism() ? BARRIER_SPIN : 0,
      buffers: this.#buffers,
      weights: this.#weights.descriptor,
    };
    this.#pool = new Piscina({
      filename: fileURLToPath(new URL('./worker.js', import.meta.url)),
      workerData,
      minThreads: opts.threads,
      maxThreads: opts.threads,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.MAX_SAFE_INTEGER,
    });
    this.#ctrl = new Int32Array(this.#buffers.control);
    this.#startServing();
    // Every thread runs one empty step, so a broken setup fails here, not mid-generation.
    await this.#run({ rows: 0, seqs: [], layerStart: opts.firstLayer, layerEnd: opts.firstLayer, logitRows: [] });
    if (init.warmup) await this.#weights.warmup(init.onProgress);
  }

  #resolve(h: ModelHeader): ResolvedOptions {
    const o = this.options;
    const mode = o.mode ?? 'resident';
    if (!['resident', 'stream', 'sequential'].includes(mode)) throw new OptionError('mode', `must be resident, stream or sequential, got ${mode}`);
    const threads = o.threads ?? availableParallelism();
    if (!Number.isInteger(threads) || threads < 1 || threads > 256) throw new OptionError('threads', `must be 1..256, got ${o.threads}`);
    const activations = o.activations ?? 'f32';
    if (activations !== 'f32' && activations !== 'q80') throw new OptionError('activations', `must be f32 or q80, got ${activations}`);
    if (activations === 'q80') {
      for (const [name, n] of [['dim', h.dim], ['qDim', h.qDim], ['FFN width', h.ffDim]] as const) {
        if (n % Q_BLOCK !== 0) throw new UnsupportedModelError(`q80 activations need ${name} (${n}) to be a multiple of ${Q_BLOCK}`);
      }
    }
    const seqLen = o.maxSeqLen ?? Math.min(h.maxSeqLen, DEFAULT_MAX_SEQ_LEN);
    if (!Number.isInteger(seqLen) || seqLen < 1 || seqLen > h.maxSeqLen) throw new OptionError('maxSeqLen', `must be 1..${h.maxSeqLen} (the model's context), got ${o.maxSeqLen}`);
    const batchSize = o.batchSize ?? Math.min(DEFAULT_BATCH, seqLen);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 4096) throw new OptionError('batchSize', `must be 1..4096, got ${o.batchSize}`);
    const maxSequences = o.maxSequences ?? 1;
    if (!Number.isInteger(maxSequences) || maxSequences < 1 || maxSequences > batchSize) throw new OptionError('maxSequences', `must be 1..batchSize (${batchSize}), got ${o.maxSequences}`);
    const maxMemory = o.maxMemory ?? Number.POSITIVE_INFINITY;
    if (mode === 'stream' && !(maxMemory > 0)) throw new OptionError('maxMemory', `stream mode needs a positive byte budget, got ${o.maxMemory}`);
    const kernels = o.kernels ?? 'native';
    const firstLayer = o.layers?.start ?? 0;
    const endLayer = o.layers?.end ?? h.nLayers;
    if (!Number.isInteger(firstLayer) || !Number.isInteger(endLayer) || firstLayer < 0 || endLayer > h.nLayers || firstLayer >= endLayer) {
      throw new OptionError('layers', `range ${firstLayer}..${endLayer} must be a non-empty part of 0..${h.nLayers}`);
    }
    const head = o.layers?.head ?? endLayer === h.nLayers;
    return { mode, maxMemory, threads, activations, kernels, seqLen, batchSize, maxSequences, trace: o.trace ?? false, firstLayer, endLayer, head };
  }

  #allocate(h: ModelHeader, o: ResolvedOptions): SharedBuffers {
    const R = o.batchSize;
    const f = (n: number): SharedArrayBuffer => new SharedArrayBuffer(n * 4);
    // KV memory is committed by the OS only as positions are written.
    const kv = Array.from({ length: o.maxSequences }, () =>
      Array.from({ length: o.endLayer - o.firstLayer }, () => ({ k: f(o.seqLen * h.kvDim), v: f(o.seqLen * h.kvDim) })),
    );
    return {
      x: f(R * h.dim),
      q: f(R * h.qDim),
      kTmp: f(R * h.kvDim),
      vTmp: f(R * h.kvDim),
      z: f(R * h.qDim),
      o: f(R * h.dim),
      hb: f(R * h.ffDim),
      hb2: f(R * h.ffDim),
      hq: new SharedArrayBuffer(o.activations === 'q80' ? (R * h.ffDim / Q_BLOCK) * Q80_BLOCK_BYTES : 0),
      logits: f(R * h.vocabSize),
      barrier: Barrier.createState().buffer as SharedArrayBuffer,
      control: new SharedArrayBuffer(CTRL_INTS * 4),
      task: new SharedArrayBuffer(taskInts(R) * 4),
      reports: new SharedArrayBuffer(o.threads * reportDoubles(h.nLayers + 1) * 8),
      kv,
    };
  }

  /** Wait for the compute threads to be free; returns the function that frees them again. */
  async #lock(): Promise<() => void> {
    const prev = this.#busy;
    let release!: () => void;
    this.#busy = new Promise<void>((r) => (release = r));
    await prev;
    return release;
  }

  /** Start (or restart, after a failed step) every compute thread's serve loop. */
  #startServing(): void {
    const pool = this.#need(this.#pool);
    const ctrl = this.#ctrl!;
    const seq = Atomics.load(ctrl, CTRL.SEQ);
    this.#serving = Array.from({ length: this.#need(this.#opts).threads }, (_, thread) => {
      const p = pool.run({ thread, seq } satisfies ServeTask) as Promise<void>;
      const tracked = { settled: false, promise: p };
      p.then(
        () => (tracked.settled = true),
        () => (tracked.settled = true),
      );
      return tracked;
    });
  }

  /** Run one step on every compute thread (see channel.ts). */
  async #run(spec: Omit<StepTask, 'thread'>): Promise<void> {
    const opts = this.#need(this.#opts);
    const buffers = this.#need(this.#buffers);
    const ctrl = this.#ctrl!;
    if (this.#serving.some((s) => s.settled)) throw new EngineStateError('a compute thread has stopped');
    writeTask(new Int32Array(buffers.task), spec);
    Barrier.reset(new Int32Array(buffers.barrier));
    Atomics.store(ctrl, CTRL.DONE, 0);
    Atomics.store(ctrl, CTRL.FAILED, 0);
    Atomics.add(ctrl, CTRL.SEQ, 1);
    Atomics.notify(ctrl, CTRL.SEQ);
    for (;;) {
      const done = Atomics.load(ctrl, CTRL.DONE);
      if (done >= opts.threads) break;
      // A thread that died without counting itself done (worker crash) must not hang us.
      if (this.#serving.some((s) => s.settled) && Atomics.load(ctrl, CTRL.FAILED) === 0) {
        Atomics.store(ctrl, CTRL.FAILED, 1);
        break;
      }
      const w = Atomics.waitAsync(ctrl, CTRL.DONE, done, 1000);
      if (w.async) await w.value;
    }
    if (Atomics.load(ctrl, CTRL.FAILED) !== 0) {
      // Failed threads end their serve tasks with the error; the others see the barrier abort.
      new Barrier(new Int32Array(buffers.barrier), opts.threads, 0).abort();
      const results = await Promise.allSettled(this.#serving.map((s) => s.promise));
      this.#shutdownServing();
      const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
      // Threads that were still waiting ended their loops on shutdown; start fresh ones.
      Atomics.store(ctrl, CTRL.SHUTDOWN, 0);
      this.#startServing();
      // Prefer the root cause over the other threads' "another compute thread failed".
      throw failures.find((e) => !(e instanceof Error && e.name === 'BarrierAbortedError')) ?? failures[0] ?? new EngineStateError('a compute thread failed');
    }
    const reports = new Float64Array(buffers.reports);
    const stride = reportDoubles(this.header.nLayers + 1);
    for (let t = 0; t < opts.threads; t++) this.#account(readReport(reports, t, stride), spec.rows);
  }

  /** Ask every serve loop to return (they wake on the step counter). */
  #shutdownServing(): void {
    const ctrl = this.#ctrl;
    if (!ctrl) return;
    Atomics.store(ctrl, CTRL.SHUTDOWN, 1);
    Atomics.add(ctrl, CTRL.SEQ, 1);
    Atomics.notify(ctrl, CTRL.SEQ);
  }

  #account(rep: ThreadReport, rows: number): void {
    const trace = this.#need(this.#opts).trace;
    for (let i = 0; i < rep.spans.length; i += 4) {
      const [seg, waitStart, waitEnd, computeEnd] = rep.spans.slice(i, i + 4) as [number, number, number, number];
      if (rep.thread === 0) {
        this.#stepWaitMs += waitEnd - waitStart;
        this.#stepComputeMs += computeEnd - waitEnd;
      }
      if (trace) {
        const name = seg === this.header.nLayers ? 'head' : `layer ${seg}`;
        if (waitEnd - waitStart > 0.001) this.trace.span(`wait ${name}`, 'load-wait', rep.thread, waitStart, waitEnd, { segment: seg });
        this.trace.span(name, 'compute', rep.thread, waitEnd, computeEnd, { segment: seg, rows });
      }
    }
  }

  /**
   * Run `tokens` at positions pos, pos+1, … of sequence slot `slot` and return the logits of the
   * last token (a copy). Prompt tokens go through each layer together, `batchSize` at a time.
   */
  async forward(tokens: readonly number[], pos: number, slot = 0): Promise<Float32Array> {
    return (await this.forwardBatch([{ slot, pos, tokens }]))[0]!;
  }

  /**
   * The model from tokens to logits for several sequences at once: the logits of each item's
   * last token. Generation calls this for every step; a pipeline over several machines
   * (@airllm/distributed) overrides it to send the hidden state through remote layer ranges.
   */
  protected async forwardItems(items: readonly { slot: number; pos: number; tokens: readonly number[] }[]): Promise<Float32Array[]> {
    const o = this.#need(this.#opts);
    if (o.firstLayer !== 0 || o.endLayer !== this.header.nLayers || !o.head) {
      throw new EngineStateError(`this engine serves layers ${o.firstLayer}..${o.endLayer}${o.head ? ' and the head' : ''}, not the whole model`);
    }
    const { logits } = await this.#step(
      items.map((it) => ({ slot: it.slot, pos: it.pos, tokens: it.tokens, n: it.tokens.length })),
      0,
      this.header.nLayers,
      true,
    );
    return logits;
  }

  /** forwardItems, remembering which tokens each slot's KV cache now holds (for prefix reuse). */
  async #forwardTokens(items: readonly { slot: number; pos: number; tokens: readonly number[] }[]): Promise<Float32Array[]> {
    for (const it of items) {
      // Until the step succeeds, only the positions before it are known to be valid.
      const hist = this.#history[it.slot];
      if (hist) hist.length = Math.min(hist.length, it.pos);
    }
    const logits = await this.forwardItems(items);
    for (const it of items) this.#history[it.slot]!.push(...it.tokens);
    return logits;
  }

  /** Embedding rows (F32, n × dim) of tokens, as the first layer receives them. */
  embed(tokens: readonly number[]): Float32Array {
    const h = this.header;
    const out = new Float32Array(tokens.length * h.dim);
    this.#checkTokens(tokens);
    tokens.forEach((t, i) => this.#weightsSource().embeddingRow(t, out, i * h.dim));
    return out;
  }

  /**
   * Low-level, for pipelines: run hidden states (n × dim each, at positions pos.. of their
   * slots) through layers [layerStart, layerEnd), updating this engine's KV cache for those
   * layers. Returns the new hidden states and, with `logits`, each item's last-row logits
   * (final norm + classifier). Callers must hold no other generation on this engine.
   */
  async runLayers(
    items: readonly { slot: number; pos: number; hidden: Float32Array }[],
    layerStart: number,
    layerEnd: number,
    logits = false,
  ): Promise<{ hidden: Float32Array[]; logits: Float32Array[] }> {
    const release = await this.#lock();
    try {
      return await this.runLayersUnlocked(items, layerStart, layerEnd, logits);
    } finally {
      release();
    }
  }

  /**
   * runLayers for a subclass that already holds the engine: forwardItems runs inside
   * generate()'s hold, and runLayers would wait for that hold to end (a deadlock). The caller
   * must not run two of these at once (they share the step buffers).
   */
  protected async runLayersUnlocked(
    items: readonly { slot: number; pos: number; hidden: Float32Array }[],
    layerStart: number,
    layerEnd: number,
    logits = false,
  ): Promise<{ hidden: Float32Array[]; logits: Float32Array[] }> {
    const h = this.header;
    for (const it of items) {
      if (it.hidden.length === 0 || it.hidden.length % h.dim !== 0) {
        throw new OptionError('hidden', `length ${it.hidden.length} is not a positive multiple of dim ${h.dim}`);
      }
    }
    return await this.#step(
      items.map((it) => ({ slot: it.slot, pos: it.pos, hidden: it.hidden, n: it.hidden.length / h.dim })),
      layerStart,
      layerEnd,
      logits,
      true,
    );
  }

  #checkTokens(tokens: readonly number[]): void {
    const V = this.header.vocabSize;
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t >= V) throw new OptionError('tokens', `token ${t} is outside the vocabulary 0..${V - 1}`);
    }
  }

  /**
   * Run several sequences' rows through layers [layerStart, layerEnd), packing them into steps
   * of at most batchSize rows so one read of each layer serves every sequence in the step.
   * Rows come from tokens (embedded here) or from hidden states.
   */
  async #step(
    items: readonly { slot: number; pos: number; n: number; tokens?: readonly number[]; hidden?: Float32Array }[],
    layerStart: number,
    layerEnd: number,
    wantLogits: boolean,
    wantHidden = false,
  ): Promise<{ hidden: Float32Array[]; logits: Float32Array[] }> {
    const opts = this.#need(this.#opts);
    const h = this.header;
    const D = h.dim;
    const x = this.#need(this.#x);
    const logitsBuf = this.#need(this.#logits);
    if (!Number.isInteger(layerStart) || !Number.isInteger(layerEnd) || layerStart < opts.firstLayer || layerEnd > opts.endLayer || layerStart > layerEnd) {
      throw new OptionError('layers', `range ${layerStart}..${layerEnd} is not inside the served layers ${opts.firstLayer}..${opts.endLayer}`);
    }
    if (wantLogits && !opts.head) throw new OptionError('logits', 'this engine does not serve the head (final norm + classifier)');
    for (const it of items) {
      if (it.n === 0) throw new OptionError('tokens', 'need at least one token');
      if (!Number.isInteger(it.slot) || it.slot < 0 || it.slot >= opts.maxSequences) throw new OptionError('slot', `must be 0..${opts.maxSequences - 1}, got ${it.slot}`);
      if (!Number.isInteger(it.pos) || it.pos < 0) throw new OptionError('pos', `must be a whole number ≥ 0, got ${it.pos}`);
      if (it.pos + it.n > opts.seqLen) {
        throw new ContextOverflowError(`${it.pos + it.n} positions do not fit the context of ${opts.seqLen} tokens`, it.pos + it.n, opts.seqLen);
      }
      if (it.tokens) this.#checkTokens(it.tokens);
    }
    const logits: Float32Array[] = new Array(items.length);
    const hidden = wantHidden ? items.map((it) => new Float32Array(it.n * D)) : [];
    const done = items.map(() => 0);
    let next = 0;
    while (next < items.length) {
      let rows = 0;
      const seqs: SequenceRows[] = [];
      const logitRows: number[] = [];
      const finishing: number[] = [];
      const chunks: { i: number; from: number; n: number; row0: number }[] = [];
      for (let i = next; i < items.length && rows < opts.batchSize; i++) {
        const it = items[i]!;
        const from = done[i]!;
        const n = Math.min(it.n - from, opts.batchSize - rows);
        if (it.tokens) it.tokens.slice(from, from + n).forEach((t, j) => this.#weightsSource().embeddingRow(t, x, (rows + j) * D));
        else x.set(it.hidden!.subarray(from * D, (from + n) * D), rows * D);
        seqs.push({ slot: it.slot, pos0: it.pos + from, row0: rows, rows: n });
        chunks.push({ i, from, n, row0: rows });
        done[i] = from + n;
        rows += n;
        if (done[i] === it.n && wantLogits) {
          logitRows.push(rows - 1);
          finishing.push(i);
        }
      }
      await this.#run({ rows, seqs, layerStart, layerEnd, logitRows });
      finishing.forEach((i, j) => (logits[i] = logitsBuf.slice(j * h.vocabSize, (j + 1) * h.vocabSize)));
      if (wantHidden) for (const c of chunks) hidden[c.i]!.set(x.subarray(c.row0 * D, (c.row0 + c.n) * D), c.from * D);
      while (next < items.length && done[next] === items[next]!.n) next++;
    }
    return { hidden, logits };
  }

  #weightsSource(): WeightSource {
    return this.#need(this.#weights);
  }

  /** Encode a prompt (string or token ids). */
  encode(prompt: string | readonly number[], bos?: boolean): number[] {
    if (typeof prompt !== 'string') return [...prompt];
    return this.tokenizer.encode(prompt, bos === undefined ? {} : { bos });
  }

  /**
   * Generate text for a prompt, yielding each token with the text it completes; the texts add up
   * to the result's text, including what was held back as a possible stop string when the answer
   * ends otherwise. The KV cache of the previous generation is reused for the longest common
   * prefix of tokens (chat turns only process the new message). The generator's return value is
   * the GenerationResult.
   */
  async *generate(prompt: string | readonly number[], options: GenerateOptions = {}): AsyncGenerator<GeneratedToken, GenerationResult> {
    const gen = this.generateBatch([prompt], options);
    try {
      for (;;) {
        const r = await gen.next();
        if (r.done) return r.value[0]!;
        yield { token: r.value.token, text: r.value.text };
      }
    } finally {
      // A caller that stops early (break, return()) must also end the inner generator, which
      // holds the engine's lock until it finishes.
      await gen.return([]);
    }
  }

  /**
   * Decode several prompts together: each gets its own KV cache slot (maxSequences of them),
   * their prompts are processed in shared steps, and every decode step computes one token for
   * each unfinished sequence with a single pass over the layers.
   */
  async *generateBatch(
    prompts: readonly (string | readonly number[])[],
    options: GenerateOptions = {},
  ): AsyncGenerator<GeneratedToken & { index: number }, GenerationResult[]> {
    const release = await this.#lock();
    try {
      return yield* this.#generateBatch(prompts, options);
    } finally {
      release();
    }
  }

  async *#generateBatch(prompts: readonly (string | readonly number[])[], options: GenerateOptions): AsyncGenerator<GeneratedToken & { index: number }, GenerationResult[]> {
    const opts = this.#need(this.#opts);
    if (prompts.length < 1 || prompts.length > opts.maxSequences) {
      throw new OptionError('prompts', `need 1..${opts.maxSequences} prompts (maxSequences), got ${prompts.length}`);
    }
    const seqs = prompts.map((prompt, index) => this.#begin(prompt, { ...options, slot: index }, `prompt ${index}`));

    const before = this.#counters();
    const t0 = performance.now();
    await this.#forwardSequences(seqs, Number.POSITIVE_INFINITY);
    const t1 = performance.now();

    // A token after which text is held back (the possible start of a stop string, half a
    // character) is yielded once the next token arrives, or with that text if the sequence ends
    // without another token (EOS, cancelled): the yielded texts always add up to result.text.
    const waiting = new Map<number, GeneratedToken>();
    for (;;) {
      for (const s of seqs) {
        const t = s.advance(options.signal?.aborted ?? false);
        const w = waiting.get(s.slot);
        if (w && (t || s.finished)) {
          waiting.delete(s.slot);
          yield { index: s.slot, token: w.token, text: t ? w.text : w.text + s.takeTail() };
        }
        if (!t) continue;
        if (!s.finished && s.holding) waiting.set(s.slot, t);
        else yield { index: s.slot, token: t.token, text: t.text };
      }
      if (seqs.every((s) => s.finished)) break;
      await this.#forwardSequences(seqs, Number.POSITIVE_INFINITY);
    }
    const t2 = performance.now();
    const after = this.#counters();
    const generated = seqs.reduce((n, s) => n + s.tokens.length, 0);
    const results = seqs.map((s): GenerationResult =>
      s.result({
        promptTokens: s.promptTokens.length,
        cachedPromptTokens: s.cached,
        generatedTokens: s.tokens.length,
        prefillMs: t1 - t0,
        decodeMs: t2 - t1,
        prefillTokensPerSecond: seqs.reduce((n, q) => n + q.promptTokens.length - q.cached, 0) / ((t1 - t0) / 1000),
        // Every step after the first sample produces one token per running sequence.
        decodeTokensPerSecond: generated > seqs.length ? (generated - seqs.length) / ((t2 - t1) / 1000) : 0,
        loadWaitMs: after.waitMs - before.waitMs,
        computeMs: after.computeMs - before.computeMs,
        diskBytesRead: after.diskBytes - before.diskBytes,
        peakRssBytes: process.resourceUsage().maxRSS * 1024,
      }),
    );
    this.lastGeneration = results[0];
    return results;
  }

  /**
   * Start a sequence in a KV cache slot, for a caller that schedules its own steps (a server
   * whose requests join and leave a running batch): encodes the prompt, checks it fits the
   * context, and reuses the slot's cached KV rows for the longest common prefix (the last
   * prompt token is always recomputed for its logits). Drive it with forwardSequences() and
   * Sequence.advance(). The caller owns the slots: while it drives sequences, nothing else
   * (generate(), forward()) may use their slots.
   */
  beginSequence(prompt: string | readonly number[], options: BeginSequenceOptions = {}): Sequence {
    return this.#begin(prompt, options, 'prompt');
  }

  #begin(prompt: string | readonly number[], options: BeginSequenceOptions, what: string): Sequence {
    const opts = this.#need(this.#opts);
    const slot = options.slot ?? 0;
    if (!Number.isInteger(slot) || slot < 0 || slot >= opts.maxSequences) throw new OptionError('slot', `must be 0..${opts.maxSequences - 1}, got ${options.slot}`);
    const maxTokens = options.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new OptionError('maxTokens', `must be a whole number ≥ 0, got ${options.maxTokens}`);
    const promptTokens = this.encode(prompt, options.bos);
    if (promptTokens.length === 0) throw new OptionError('prompt', `${what} encodes to no tokens (empty prompt without BOS)`);
    if (promptTokens.length >= opts.seqLen) {
      throw new ContextOverflowError(
        `${what} has ${promptTokens.length} tokens but the context holds ${opts.seqLen} (one more is needed to generate)`,
        promptTokens.length + 1,
        opts.seqLen,
      );
    }
    this.#checkTokens(promptTokens);
    const vocabSize = this.#tokenizer?.vocabSize ?? this.header.vocabSize;
    return new Sequence(
      {
        slot,
        promptTokens,
        cached: Math.min(this.cachedPrefix(slot, promptTokens), promptTokens.length - 1),
        seqLen: opts.seqLen,
        vocabSize,
        decoder: this.#tokenizer?.decoder(),
        isEos: (t) => this.#tokenizer?.isEos(t) ?? false,
        endsOnBos: this.#tokenizer?.endsOnBos === true ? this.#tokenizer.bosId : undefined,
        options,
      },
      new Sampler(vocabSize, options),
    );
  }

  /**
   * How many leading tokens of `tokens` the KV cache of `slot` already holds (what a new
   * sequence there would not recompute). A scheduler picks the free slot where this is largest.
   */
  cachedPrefix(slot: number, tokens: readonly number[]): number {
    const hist = this.#history[slot] ?? [];
    let n = 0;
    while (n < hist.length && n < tokens.length && hist[n] === tokens[n]) n++;
    return n;
  }

  /**
   * One forward step for several sequences: each unfinished one runs its next rows (one
   * sampled token, or a chunk of its prompt) and keeps the logits for advance(). Every layer is
   * read once for all of them. `maxRows` (default batchSize) caps the step: tokens to decode
   * come first, prompt chunks share what is left (a prompt that gets no room waits a step).
   * Returns the number of sequences that ran.
   */
  async forwardSequences(seqs: readonly Sequence[], options: { maxRows?: number } = {}): Promise<number> {
    const maxRows = options.maxRows ?? this.batchSize;
    if (!Number.isInteger(maxRows) || maxRows < 1) throw new OptionError('maxRows', `must be a whole number ≥ 1, got ${options.maxRows}`);
    const slots = new Set<number>();
    for (const s of seqs) {
      if (slots.has(s.slot)) throw new OptionError('slot', `two sequences use slot ${s.slot}`);
      slots.add(s.slot);
    }
    const release = await this.#lock();
    try {
      return await this.#forwardSequences(seqs, maxRows);
    } finally {
      release();
    }
  }

  async #forwardSequences(seqs: readonly Sequence[], maxRows: number): Promise<number> {
    const run: { s: Sequence; item: ForwardItem }[] = [];
    let rows = 0;
    for (const s of seqs) {
      const item = s.prefilled ? s.nextItem() : undefined;
      if (item) {
        run.push({ s, item });
        rows += item.tokens.length;
      }
    }
    for (const s of seqs) {
      const item = s.prefilled ? undefined : s.nextItem(maxRows - rows);
      if (item) {
        run.push({ s, item });
        rows += item.tokens.length;
      }
    }
    if (run.length === 0) return 0;
    const logits = await this.#forwardTokens(run.map((r) => r.item));
    run.forEach((r, i) => r.s.accept(r.item, logits[i]!));
    return run.length;
  }

  /**
   * The model from tokens to logits for several sequences: the logits of each item's last
   * token (copies), with each slot's KV cache updated, all in as few layer passes as batchSize
   * allows. The low-level step under forwardSequences.
   */
  async forwardBatch(items: readonly ForwardItem[]): Promise<Float32Array[]> {
    const release = await this.#lock();
    try {
      return await this.#forwardTokens(items);
    } finally {
      release();
    }
  }

  /** The weight cache's figures: mode, pinned bytes, loads, waits, disk bytes, RSS. */
  residencyStats(): ResidencyStats {
    return this.#need(this.#weights).stats();
  }

  #counters(): { waitMs: number; computeMs: number; diskBytes: number } {
    return { waitMs: this.#stepWaitMs, computeMs: this.#stepComputeMs, diskBytes: diskReadBytes() ?? 0 };
  }

  /** Stop the compute threads and release the weights. Safe to call twice. */
  async cleanup(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const pool = this.#pool;
    this.#pool = undefined;
    this.#shutdownServing();
    await Promise.allSettled(this.#serving.map((s) => s.promise));
    await pool?.destroy();
    await this.#weights?.close();
    this.#weights = undefined;
    await this.#tokenizer?.close();
  }
}

/**
 * Pick the kernel backend once, on the main thread (a fallback to the reference backend is
 * reported here, once), and hand the workers the exact choice.
 */
function resolveKernels(pref: 'native' | 'reference'): BackendPreference {
  const k = loadBackend(pref);
  return k.name === 'native' ? (k as NativeBackend).path : 'reference';
}

/** The first `n` bytes of a file, in a buffer of their own. */
function readHeaderBytes(path: string, n: number): Uint8Array {
  const { fd } = openForRead(path);
  try {
    return readAt(fd, 0, n);
  } finally {
    closeSync(fd);
  }
}
