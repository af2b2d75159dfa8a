import { availableParallelism } from 'node:os';
import { readAnyModelFile, type ModelConfig, type ModelFileFormat, type ModelHeader, type WeightsLayout } from '@airllm/format';
import { loadBackend, type BackendPreference, type NativeBackend } from '@airllm/kernels';
import { availableMemory, diskReadBytes, readSystemMemory, type ResidencyStats } from '@airllm/loader';
import { resolveConfig, withMemoryMode, type EngineConfig, type EngineOptions } from './config.js';
import { EngineStateError, OptionError } from './errors.js';
import {
  beginSequence,
  generateSequences,
  packStep,
  type BeginSequenceOptions,
  type Counters,
  type GenerateOptions,
  type GenerationResult,
} from './generation.js';
import { KvHistory } from './history.js';
import { describeMemoryPlan, kvCacheBytes, planMemory, workingBytes, type MemoryPlan } from './memory-plan.js';
import { ComputePool } from './pool.js';
import { LayerRunner, type ModelForward } from './runner.js';
import { checkDraftModel, ModelDrafter } from './draft-model.js';
import type { ForwardItem, GeneratedToken, Sequence, SequenceOptions } from './sequence.js';
import { NgramDrafter, type Drafter } from './speculative.js';
import type { ActivationMode, ComputeWorkerData } from './shared.js';
import { createRunState } from './state.js';
import type { Tokenizer } from './tokenizer.js';
import { defaultTokenizerPath, loadTokenizer } from './tokenizer-load.js';
import { Trace } from './trace.js';
import { WeightSource } from './weights.js';

export type { EngineOptions, MemoryMode } from './config.js';
export type { MemoryPlan } from './memory-plan.js';
export type { BeginSequenceOptions, GenerateOptions, GenerationResult, GenerationStats } from './generation.js';
export type { FinishReason, GeneratedToken } from './sequence.js';

export interface InitializeOptions {
  /** Load every pinned layer now (all of them in resident mode) instead of on first use. */
  warmup?: boolean;
  /** Progress of that load, in bytes. */
  onProgress?: (loadedBytes: number, totalBytes: number) => void;
}

const BARRIER_SPIN = 4000;

/** What initialize() builds; cleanup() takes it apart. */
interface Running {
  readonly format: ModelFileFormat;
  readonly header: ModelHeader;
  readonly layout: WeightsLayout;
  readonly config: EngineConfig;
  /** What the automatic memory plan chose (mode 'auto', or 'stream' without maxMemory). */
  readonly memoryPlan: MemoryPlan | undefined;
  readonly tokenizer: Tokenizer | undefined;
  readonly weights: WeightSource;
  pool: ComputePool | undefined;
  runner: LayerRunner | undefined;
  readonly history: KvHistory;
}

/**
 * Runs a model file layer by layer. `initialize()` reads the header, opens the weights and
 * starts the compute threads; `forward()` runs tokens through the model; `generate()` streams
 * tokens; `cleanup()` stops threads and releases the mapping.
 *
 * The parts, each with its own lifetime: the configuration (config.ts), the weights
 * (weights.ts), the run state (state.ts), the compute threads (pool.ts) and the layers that run
 * on them (runner.ts); generation and sequences (generation.ts) drive them through this facade.
 */
export class LayerWiseInferenceEngine {
  readonly modelPath: string;
  readonly options: EngineOptions;
  #run: Running | undefined;
  #model: ModelForward | undefined;
  #busy: Promise<void> = Promise.resolve();
  /** Draft engines already checked against this one (a vocabulary compare per request would cost). */
  readonly #checkedDrafts = new WeakSet<LayerWiseInferenceEngine>();
  #closed = false;
  readonly trace = new Trace();
  /** The result of the last finished generate() (also the generator's return value). */
  lastGeneration: GenerationResult | undefined;

  constructor(modelPath: string, options: EngineOptions = {}) {
    this.modelPath = modelPath;
    this.options = options;
  }

  /** The model's `.m` header (for a GGUF: the header it would convert to; see GgufModelInfo). */
  get header(): ModelHeader {
    return this.#need().header;
  }
  /** Where every tensor is in the model file. */
  get layout(): WeightsLayout {
    return this.#need().layout;
  }
  /** The model file's format: `.m`, or a GGUF run in place. */
  get format(): ModelFileFormat {
    return this.#need().format;
  }
  /** The model's hyper-parameters, whatever its file format. */
  get config(): ModelConfig {
    return this.#need().config.model;
  }
  get tokenizer(): Tokenizer {
    const t = this.#run?.tokenizer;
    if (!t) throw new EngineStateError(`no tokenizer: pass tokenizerPath (looked for ${this.#defaultTokenizerPath()})`);
    return t;
  }
  get hasTokenizer(): boolean {
    return this.#run?.tokenizer !== undefined;
  }
  /** Context length (KV cache rows). */
  get maxSeqLen(): number {
    return this.#need().config.seqLen;
  }
  get threads(): number {
    return this.#need().config.threads;
  }
  /** Rows per forward step (resolved batchSize). */
  get batchSize(): number {
    return this.#need().config.batchSize;
  }
  /** KV cache slots (resolved maxSequences). */
  get maxSequences(): number {
    return this.#need().config.maxSequences;
  }
  /** Activation numerics (resolved activations). */
  get activations(): ActivationMode {
    return this.#need().config.activations;
  }

  /**
   * This engine's own layers (and head), for a subclass that composes them into a pipeline.
   * It runs without the engine's lock: use it only from `model.forward` (generation holds the
   * lock then) or while holding no generation.
   */
  protected get runner(): LayerRunner {
    const r = this.#need().runner;
    if (!r) throw new EngineStateError('call initialize() first');
    return r;
  }
  /** Which tokens each KV cache slot holds (the prefix reuse of every generation). */
  protected get history(): KvHistory {
    return this.#need().history;
  }
  /** What generation and forward() run the model with: this engine's layers unless a subclass sets a pipeline. */
  protected get model(): ModelForward {
    this.#need();
    if (!this.#model) throw new EngineStateError('call initialize() first');
    return this.#model;
  }
  protected set model(m: ModelForward) {
    this.#model = m;
  }

  #need(): Running {
    if (this.#closed) throw new EngineStateError('engine was cleaned up');
    if (this.#run === undefined) throw new EngineStateError('call initialize() first');
    return this.#run;
  }

  #defaultTokenizerPath(): string {
    return defaultTokenizerPath(this.modelPath);
  }

  async initialize(init: InitializeOptions = {}): Promise<void> {
    if (this.#closed) throw new EngineStateError('engine was cleaned up');
    if (this.#run?.pool) return;
    const file = this.#run ?? readAnyModelFile(this.modelPath);
    const { format, header, layout } = file;
    let config = this.#run?.config ?? resolveConfig(layout.config, this.options);
    if (!this.#run) {
      // auto, and stream with no budget given, take the budget from the machine's memory.
      const planned = config.mode === 'auto' || (config.mode === 'stream' && this.options.maxMemory === undefined);
      const memoryPlan = planned ? this.#planMemory(config, layout) : undefined;
      if (memoryPlan) config = withMemoryMode(config, memoryPlan.mode, memoryPlan.budgetBytes);
      const gguf = 'gguf' in file ? file.gguf : undefined;
      const tokenizer = loadTokenizer(this.modelPath, { tokenizerPath: this.options.tokenizerPath, modelVocabSize: config.model.vocabSize, gguf });
      const weights = await WeightSource.open(this.modelPath, {
        layout: format === 'gguf' ? layout : undefined,
        mode: config.mode === 'auto' ? 'resident' : config.mode,
        budgetBytes: config.mode === 'resident' ? undefined : Number.isFinite(config.maxMemory) ? config.maxMemory : undefined,
        layers: config.layers,
        head: config.head,
        onLoad: config.trace ? (e) => this.trace.span(`load ${e.kind === 'head' ? 'head' : `layer ${e.layer}`}`, `load-${e.reason}`, 'prefetch', e.startMs, e.endMs, { bytes: e.bytes }) : undefined,
      });
      if (memoryPlan) {
        const line = describeMemoryPlan(memoryPlan, weights.stats().pinnedBytes);
        if (this.options.onMemoryPlan) this.options.onMemoryPlan(line, memoryPlan);
        // A non-terminal stderr hears of the plan only when it streams (the case to know about).
        else if (process.stderr.isTTY || memoryPlan.mode === 'stream') process.stderr.write(`${line}\n`);
      }
      this.#run = { format, header, layout, config, memoryPlan, tokenizer, weights, pool: undefined, runner: undefined, history: new KvHistory(config.maxSequences) };
    }
    const run = this.#run;
    const buffers = createRunState(config);
    const workerData: ComputeWorkerData = {
      config,
      kernels: resolveKernels(config.kernels),
      spin: config.threads <= availableParallelism() ? BARRIER_SPIN : 0,
      buffers,
      weights: run.weights.descriptor,
    };
    run.pool = await ComputePool.start(workerData);
    run.runner = new LayerRunner(config, run.weights, buffers, run.pool, this.trace);
    this.#model ??= run.runner;
    if (init.warmup) await run.weights.warmup(init.onProgress);
  }

  /** The automatic plan for `config` (mode auto, or stream without a budget): the served weights against the available memory. */
  #planMemory(config: EngineConfig, layout: WeightsLayout): MemoryPlan {
    let weightBytes = 0;
    for (let l = config.layers.start; l < config.layers.end; l++) weightBytes += layout.layers[l]!.size;
    if (config.head) weightBytes += layout.head.size;
    return planMemory({
      weightBytes,
      kvBytes: kvCacheBytes(config),
      workingBytes: workingBytes(config),
      available: this.options.availableMemory ?? availableMemory(readSystemMemory()),
      maxMemory: this.options.maxMemory,
      force: config.mode === 'stream' ? 'stream' : undefined,
    });
  }

  /** What the automatic memory plan chose: with mode 'auto' (the default), or 'stream' without maxMemory. */
  get memoryPlan(): MemoryPlan | undefined {
    return this.#need().memoryPlan;
  }
  /** The memory mode in use (auto resolved). */
  get memoryMode(): 'resident' | 'stream' | 'sequential' {
    return this.#need().config.mode as 'resident' | 'stream' | 'sequential';
  }

  /** Load every pinned layer now (all of them when resident), as `initialize({ warmup })` does. */
  async warmup(onProgress?: (loadedBytes: number, totalBytes: number) => void): Promise<void> {
    await this.#need().weights.warmup(onProgress);
  }

  /** Wait for the compute threads to be free; returns the function that frees them again. */
  async #lock(): Promise<() => void> {
    const prev = this.#busy;
    let release!: () => void;
    this.#busy = new Promise<void>((r) => (release = r));
    await prev;
    return release;
  }

  /**
   * Run `tokens` at positions pos, pos+1, … of sequence slot `slot` and return the logits of the
   * last token (a copy). Prompt tokens go through each layer together, `batchSize` at a time.
   */
  async forward(tokens: readonly number[], pos: number, slot = 0): Promise<Float32Array> {
    return (await this.forwardBatch([{ slot, pos, tokens }]))[0]!;
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

  /** The model's forward pass, remembering which tokens each slot's KV cache now holds. */
  async #forwardTokens(items: readonly ForwardItem[]): Promise<Float32Array[]> {
    const history = this.#need().history;
    for (const it of items) history.truncate(it.slot, it.pos);
    const logits = await this.model.forward(items);
    for (const it of items) history.append(it.slot, it.tokens);
    return logits;
  }

  /** Embedding rows (F32, n × dim) of tokens, as the first layer receives them. */
  embed(tokens: readonly number[]): Float32Array {
    return this.runner.embed(tokens);
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
      return await this.runner.runHidden(items, { start: layerStart, end: layerEnd }, logits);
    } finally {
      release();
    }
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
        const { token, text, logprob } = r.value;
        yield logprob ? { token, text, logprob } : { token, text };
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
      const c = this.#need().config;
      if (prompts.length < 1 || prompts.length > c.maxSequences) {
        throw new OptionError('prompts', `need 1..${c.maxSequences} prompts (maxSequences), got ${prompts.length}`);
      }
      const seqs = prompts.map((prompt, index) => this.#begin(prompt, { ...options, slot: index }, `prompt ${index}`));
      const results = yield* generateSequences(seqs, (s) => this.#forwardSequences(s, Number.POSITIVE_INFINITY), () => this.#counters(), options.signal);
      this.lastGeneration = results[0];
      return results;
    } finally {
      release();
    }
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
    const run = this.#need();
    return beginSequence(
      {
        config: run.config,
        tokenizer: run.tokenizer,
        history: run.history,
        encode: (p, bos) => this.encode(p, bos),
        checkTokens: (t) => this.runner.checkTokens(t),
        drafter: (draft) => this.#drafter(draft),
      },
      prompt,
      options,
      what,
    );
  }

  /** The drafter for a sequence's `draft` option, checked against this engine and its model. */
  #drafter(draft: SequenceOptions['draft']): Drafter | undefined {
    if (draft === undefined) return undefined;
    if (!this.model.rowLogits) throw new OptionError('draft', "this engine's model (a ModelForward without rowLogits) cannot return every row's logits, which verifying drafted tokens needs");
    if (draft === 'ngram') return new NgramDrafter();
    if (!(draft instanceof LayerWiseInferenceEngine)) throw new OptionError('draft', `must be 'ngram' or an initialized engine with the draft model, got ${String(draft)}`);
    if (draft === this) throw new OptionError('draft', 'the draft model must be another engine (its KV cache slots would collide)');
    if (!this.#checkedDrafts.has(draft)) {
      checkDraftModel(this, draft);
      this.#checkedDrafts.add(draft);
    }
    return new ModelDrafter(draft);
  }

  /**
   * How many leading tokens of `tokens` the KV cache of `slot` already holds (what a new
   * sequence there would not recompute). A scheduler picks the free slot where this is largest.
   */
  cachedPrefix(slot: number, tokens: readonly number[]): number {
    return this.#need().history.cachedPrefix(slot, tokens);
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
    for (const s of seqs) await s.prepareDraft();
    const run = packStep(seqs, maxRows);
    if (run.length === 0) return 0;
    const logits = await this.#forwardTokens(run.map((r) => r.item));
    const history = this.#need().history;
    run.forEach((r, i) => {
      // Rows after a rejected draft token hold KV entries of tokens that are not in the text.
      const kept = r.s.accept(r.item, logits[i]!);
      if (kept < r.item.tokens.length) history.truncate(r.item.slot, r.item.pos + kept);
    });
    return run.length;
  }

  /** The weight cache's figures: mode, pinned bytes, loads, waits, disk bytes, RSS. */
  residencyStats(): ResidencyStats {
    return this.#need().weights.stats();
  }

  #counters(): Counters {
    const r = this.runner;
    return { waitMs: r.waitMs, computeMs: r.computeMs, diskBytes: diskReadBytes() ?? 0, passes: r.passes };
  }

  /** Stop the compute threads and release the weights. Safe to call twice. */
  async cleanup(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const run = this.#run;
    if (!run) return;
    const pool = run.pool;
    run.pool = undefined;
    await pool?.close();
    await run.weights.close();
    await run.tokenizer?.close();
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
