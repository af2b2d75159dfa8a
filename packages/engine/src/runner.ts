import type { LayerRange } from '@airllm/format';
import { servesWholeModel, type EngineConfig } from './config.js';
import { ContextOverflowError, EngineStateError, OptionError } from './errors.js';
import type { ComputePool } from './pool.js';
import type { ForwardItem } from './sequence.js';
import { SpanKind, type SequenceRows, type SharedBuffers, type ThreadReport } from './shared.js';
import type { Trace } from './trace.js';
import type { WeightSource } from './weights.js';

/**
 * What runs the model for generation: tokens in, the logits of each item's last token out
 * (copies), each slot's KV cache updated. The engine's own layers by default; a pipeline over
 * several machines (@airllm/distributed) is another.
 */
export interface ModelForward {
  forward(items: readonly ForwardItem[]): Promise<Float32Array[]>;
  /**
   * True when forward() honours `allLogits` (the logits of every row of such an item, n × vocab),
   * which verifying drafted tokens needs; a model without it cannot decode speculatively.
   */
  readonly rowLogits?: boolean;
}

/** Rows one sequence contributes to a step: tokens (embedded here) or hidden states (n × dim). */
interface Rows {
  readonly slot: number;
  readonly pos: number;
  readonly n: number;
  readonly tokens?: readonly number[];
  readonly hidden?: Float32Array;
  /** Logits of every row (n × vocab), not just the last. */
  readonly allLogits?: boolean;
}

/**
 * The engine's layers as a runner: rows of several sequences through a range of the served
 * layers (and the head), packed into steps of at most batchSize rows so one read of each
 * layer serves every sequence in the step. It holds no lock: the caller runs one call at a
 * time (the steps share the run state's buffers).
 */
export class LayerRunner implements ModelForward {
  readonly rowLogits = true;
  readonly #c: EngineConfig;
  readonly #weights: WeightSource;
  readonly #pool: ComputePool;
  readonly #trace: Trace;
  readonly #x: Float32Array;
  readonly #logits: Float32Array;
  /** Thread 0's time waiting for layers / computing, summed over every step. */
  waitMs = 0;
  computeMs = 0;
  /** Steps run, each one pass over the layers it covers. */
  passes = 0;

  constructor(config: EngineConfig, weights: WeightSource, buffers: SharedBuffers, pool: ComputePool, trace: Trace) {
    this.#c = config;
    this.#weights = weights;
    this.#pool = pool;
    this.#trace = trace;
    this.#x = new Float32Array(buffers.x);
    this.#logits = new Float32Array(buffers.logits);
  }

  get config(): EngineConfig {
    return this.#c;
  }

  /**
   * The whole model, tokens to logits (an engine that serves part of it refuses): each item's
   * last row, or every row (n × vocab) for an item with `allLogits`.
   */
  async forward(items: readonly ForwardItem[]): Promise<Float32Array[]> {
    const c = this.#c;
    if (!servesWholeModel(c)) {
      throw new EngineStateError(`this engine serves layers ${c.layers.start}..${c.layers.end}${c.head ? ' and the head' : ''}, not the whole model`);
    }
    const rows = items.map((it) => ({ slot: it.slot, pos: it.pos, tokens: it.tokens, n: it.tokens.length, allLogits: it.allLogits }));
    return (await this.run(rows, c.layers, true)).logits;
  }

  /**
   * Hidden states (n × dim each, at positions pos.. of their slots) through `layers`, updating
   * the KV cache of those layers; with `logits`, the head too: each item's last row, or every
   * row (n × vocab) of an item with `allLogits`.
   */
  async runHidden(
    items: readonly { slot: number; pos: number; hidden: Float32Array; allLogits?: boolean }[],
    layers: LayerRange,
    logits: boolean,
  ): Promise<{ hidden: Float32Array[]; logits: Float32Array[] }> {
    const D = this.#c.model.dim;
    for (const it of items) {
      if (it.hidden.length === 0 || it.hidden.length % D !== 0) {
        throw new OptionError('hidden', `length ${it.hidden.length} is not a positive multiple of dim ${D}`);
      }
    }
    return await this.run(
      items.map((it) => ({ slot: it.slot, pos: it.pos, hidden: it.hidden, n: it.hidden.length / D, allLogits: it.allLogits })),
      layers,
      logits,
      true,
    );
  }

  /** Embedding rows (F32, n × dim) of tokens, as the first layer receives them. */
  embed(tokens: readonly number[]): Float32Array {
    const D = this.#c.model.dim;
    const out = new Float32Array(tokens.length * D);
    this.checkTokens(tokens);
    tokens.forEach((t, i) => this.#weights.embeddingRow(t, out, i * D));
    return out;
  }

  checkTokens(tokens: readonly number[]): void {
    const V = this.#c.model.vocabSize;
    for (const t of tokens) {
      if (!Number.isInteger(t) || t < 0 || t >= V) throw new OptionError('tokens', `token ${t} is outside the vocabulary 0..${V - 1}`);
    }
  }

  /** Run items' rows through `layers` (then the head, with `wantLogits`), in as few steps as batchSize allows. */
  async run(items: readonly Rows[], layers: LayerRange, wantLogits: boolean, wantHidden = false): Promise<{ hidden: Float32Array[]; logits: Float32Array[] }> {
    const c = this.#c;
    const D = c.model.dim;
    const V = c.model.vocabSize;
    const x = this.#x;
    const { start, end } = layers;
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < c.layers.start || end > c.layers.end || start > end) {
      throw new OptionError('layers', `range ${start}..${end} is not inside the served layers ${c.layers.start}..${c.layers.end}`);
    }
    if (wantLogits && !c.head) throw new OptionError('logits', 'this engine does not serve the head (final norm + classifier)');
    for (const it of items) {
      if (it.n === 0) throw new OptionError('tokens', 'need at least one token');
      if (!Number.isInteger(it.slot) || it.slot < 0 || it.slot >= c.maxSequences) throw new OptionError('slot', `must be 0..${c.maxSequences - 1}, got ${it.slot}`);
      if (!Number.isInteger(it.pos) || it.pos < 0) throw new OptionError('pos', `must be a whole number ≥ 0, got ${it.pos}`);
      if (it.pos + it.n > c.seqLen) {
        throw new ContextOverflowError(`${it.pos + it.n} positions do not fit the context of ${c.seqLen} tokens`, it.pos + it.n, c.seqLen);
      }
      if (it.tokens) this.checkTokens(it.tokens);
    }
    const logits: Float32Array[] = new Array(items.length);
    const hidden = wantHidden ? items.map((it) => new Float32Array(it.n * D)) : [];
    const done = items.map(() => 0);
    let next = 0;
    while (next < items.length) {
      let rows = 0;
      const seqs: SequenceRows[] = [];
      const logitRows: number[] = [];
      /** Items whose last row is in this step: where its logits are. */
      const finishing: { i: number; at: number }[] = [];
      /** Items whose every row gets logits: where their rows start in this step's logits, and in the item. */
      const spans: { i: number; from: number; n: number; at: number }[] = [];
      const chunks: { i: number; from: number; n: number; row0: number }[] = [];
      for (let i = next; i < items.length && rows < c.batchSize; i++) {
        const it = items[i]!;
        const from = done[i]!;
        const n = Math.min(it.n - from, c.batchSize - rows);
        if (it.tokens) it.tokens.slice(from, from + n).forEach((t, j) => this.#weights.embeddingRow(t, x, (rows + j) * D));
        else x.set(it.hidden!.subarray(from * D, (from + n) * D), rows * D);
        seqs.push({ slot: it.slot, pos0: it.pos + from, row0: rows, rows: n });
        chunks.push({ i, from, n, row0: rows });
        done[i] = from + n;
        rows += n;
        if (it.allLogits && wantLogits) {
          spans.push({ i, from, n, at: logitRows.length });
          for (let r = rows - n; r < rows; r++) logitRows.push(r);
          logits[i] ??= new Float32Array(it.n * V);
        } else if (done[i] === it.n && wantLogits) {
          finishing.push({ i, at: logitRows.length });
          logitRows.push(rows - 1);
        }
      }
      const reports = await this.#pool.run({ rows, seqs, layers, logitRows });
      this.passes++;
      for (const r of reports) this.#account(r, rows);
      for (const f of finishing) logits[f.i] = this.#logits.slice(f.at * V, (f.at + 1) * V);
      for (const sp of spans) logits[sp.i]!.set(this.#logits.subarray(sp.at * V, (sp.at + sp.n) * V), sp.from * V);
      if (wantHidden) for (const ch of chunks) hidden[ch.i]!.set(x.subarray(ch.row0 * D, (ch.row0 + ch.n) * D), ch.from * D);
      while (next < items.length && done[next] === items[next]!.n) next++;
    }
    return { hidden, logits };
  }

  #account(rep: ThreadReport, rows: number): void {
    const trace = this.#c.trace;
    for (let i = 0; i < rep.spans.length; i += 5) {
      const [kind, layer, waitStart, waitEnd, computeEnd] = rep.spans.slice(i, i + 5) as [number, number, number, number, number];
      if (rep.thread === 0) {
        this.waitMs += waitEnd - waitStart;
        this.computeMs += computeEnd - waitEnd;
      }
      if (trace) {
        const name = kind === SpanKind.HEAD ? 'head' : `layer ${layer}`;
        // Trace consumers (the bench's timeline) know the head as segment nLayers.
        const segment = kind === SpanKind.HEAD ? this.#c.model.nLayers : layer;
        if (waitEnd - waitStart > 0.001) this.#trace.span(`wait ${name}`, 'load-wait', rep.thread, waitStart, waitEnd, { segment });
        this.#trace.span(name, 'compute', rep.thread, waitEnd, computeEnd, { segment, rows });
      }
    }
  }
}
