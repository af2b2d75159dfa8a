/**
 * The pipelined forward pass of a root: embed the tokens, run the root's own layers, send the
 * hidden states through the workers' ranges (root → w1 → w2 → … → root, one hop per node), and
 * run the head. Rows go in micro-batches so that nodes work at the same time.
 *
 * Recovery: when the session loses a worker, the root takes its layers over (they become local
 * segments), recomputes those layers' KV cache from every slot's tokens so far (the engine's KV
 * history), and repeats the step that was interrupted. Results are exact: a row's numbers do not
 * depend on which node computed it or on how rows were grouped.
 */
import { ContextOverflowError, EngineStateError, OptionError, type ForwardItem, type KvHistory, type LayerRunner, type ModelForward } from '@airllm/engine';
import { decodeRows, encodeRows } from './activations.js';
import { WorkerLostError } from './errors.js';
import { MessageType, type ActivationsMessage, type WireType } from './protocol.js';
import type { RootSession, WorkerLink } from './session.js';

type Segment = { kind: 'local'; start: number; end: number; head: boolean } | { kind: 'remote'; links: WorkerLink[]; start: number; end: number };

/** A chunk of one item: rows of one sequence at consecutive positions. */
interface Chunk {
  item: number;
  slot: number;
  pos: number;
  tokens: readonly number[];
  last: boolean;
  /** Where the chunk starts in its item, of how many rows, and whether the item wants every row's logits (drafted tokens to verify). */
  from: number;
  itemRows: number;
  allLogits: boolean;
}

/** A micro-batch that was overtaken by a loss (the step is repeated from the start). */
class Superseded extends Error {}

/** Work of the pipeline: forward steps, micro-batches, the most activation messages out at once, recoveries. */
export interface PipelineStats {
  steps: number;
  microBatches: number;
  maxInFlight: number;
  recoveries: number;
}

export interface PipelineSettings {
  readonly nLayers: number;
  readonly dim: number;
  readonly wire: WireType;
  /** Rows per message (and per micro-batch at most). */
  readonly wireBatch: number;
  readonly maxSequences: number;
  readonly maxSeqLen: number;
}

export class Pipeline implements ModelForward {
  /** Items with allLogits get every row's logits (the head runs on the root), so drafts can be verified. */
  readonly rowLogits = true;
  readonly #s: PipelineSettings;
  readonly #session: RootSession;
  readonly #runner: LayerRunner;
  readonly #history: KvHistory;
  readonly #stats: PipelineStats;
  #inFlight = 0;
  #localQueue: Promise<unknown> = Promise.resolve();
  /** Bumped on every loss: work started before it is abandoned. */
  #epoch = 0;
  /** Layers [0, #dirtyUntil) need their KV recomputed before the next step (0 = none). */
  #dirtyUntil = 0;

  /**
   * `runner` is the root engine's own layers (they run without the engine's lock: the engine
   * calls forward() while it holds it), `history` its record of each slot's tokens.
   */
  constructor(settings: PipelineSettings, session: RootSession, runner: LayerRunner, history: KvHistory, stats: PipelineStats) {
    this.#s = settings;
    this.#session = session;
    this.#runner = runner;
    this.#history = history;
    this.#stats = stats;
    session.onLost = (link) => {
      this.#epoch++;
      if (!session.setup) this.#dirtyUntil = Math.max(this.#dirtyUntil, link.range.end);
    };
  }

  async forward(items: readonly ForwardItem[]): Promise<Float32Array[]> {
    const s = this.#s;
    if (items.length === 0) return [];
    for (const it of items) {
      if (it.tokens.length === 0) throw new OptionError('tokens', 'need at least one token');
      if (!Number.isInteger(it.slot) || it.slot < 0 || it.slot >= s.maxSequences) throw new OptionError('slot', `must be 0..${s.maxSequences - 1}, got ${it.slot}`);
      // The engine has cut the slot's history to pos: recovery can only recompute what it holds.
      const held = this.#history.tokens(it.slot).length;
      if (!Number.isInteger(it.pos) || it.pos < 0 || it.pos > held) {
        throw new OptionError('pos', `must be 0..${held} (the tokens this slot holds), got ${it.pos}`);
      }
      if (it.pos + it.tokens.length > s.maxSeqLen) {
        throw new ContextOverflowError(`${it.pos + it.tokens.length} positions do not fit the context of ${s.maxSeqLen} tokens`, it.pos + it.tokens.length, s.maxSeqLen);
      }
    }
    // Each attempt that fails loses a worker, so this ends after at most workers + 1 attempts.
    for (;;) {
      try {
        if (this.#dirtyUntil > 0) await this.#resync();
        return await this.#run(items, true, s.nLayers);
      } catch (e) {
        if (!(e instanceof WorkerLostError || e instanceof Superseded)) throw e;
      }
    }
  }

  /**
   * After a loss: point live workers at their new next hop and recompute the KV cache of the
   * layers the root took over (and every layer before them, which is idempotent) from each
   * slot's tokens, as a prefill.
   */
  async #resync(): Promise<void> {
    this.#stats.recoveries++;
    await this.#session.reconfigure();
    const until = this.#dirtyUntil;
    const items: ForwardItem[] = [];
    for (let slot = 0; slot < this.#s.maxSequences; slot++) {
      const tokens = this.#history.tokens(slot);
      if (tokens.length > 0) items.push({ slot, pos: 0, tokens: [...tokens] });
    }
    if (items.length > 0) await this.#run(items, false, until);
    this.#dirtyUntil = 0;
  }

  /** The pipeline as it stands: local ranges (root's own and taken over) and chains of live workers. */
  #segments(): Segment[] {
    const segs: Segment[] = [];
    const push = (local: boolean, r: { start: number; end: number }, link?: WorkerLink): void => {
      if (r.end === r.start) return;
      const last = segs[segs.length - 1];
      if (local && last?.kind === 'local') last.end = r.end;
      else if (!local && last?.kind === 'remote') {
        last.links.push(link!);
        last.end = r.end;
      } else if (local) segs.push({ kind: 'local', start: r.start, end: r.end, head: false });
      else segs.push({ kind: 'remote', links: [link!], start: r.start, end: r.end });
    };
    push(true, this.#session.rootRange);
    for (const l of this.#session.links) push(!l.alive, l.range, l);
    const last = segs[segs.length - 1];
    if (last?.kind === 'local') last.head = true;
    else segs.push({ kind: 'local', start: this.#s.nLayers, end: this.#s.nLayers, head: true });
    return segs;
  }

  /**
   * Run items through the pipeline up to layer `until` (with the head when `wantLogits`), in
   * micro-batches so that nodes work at the same time: while worker 1 runs micro-batch 1 the
   * root runs micro-batch 2 through its own range.
   */
  async #run(items: readonly ForwardItem[], wantLogits: boolean, until: number): Promise<Float32Array[]> {
    const epoch = this.#epoch;
    let segs = this.#segments();
    if (!wantLogits) {
      segs = segs.filter((s) => s.start < until).map((s) => (s.kind === 'local' ? { ...s, head: false } : s));
    }
    const nodes = segs.reduce((n, s) => n + (s.kind === 'remote' ? s.links.length : 1), 0);
    const totalRows = items.reduce((n, it) => n + it.tokens.length, 0);
    const mbRows = Math.min(this.#s.wireBatch, Math.max(1, Math.ceil(totalRows / nodes)));
    const batches: Chunk[][] = [];
    let cur: Chunk[] = [];
    let rows = 0;
    items.forEach((it, item) => {
      for (let from = 0; from < it.tokens.length; ) {
        if (rows === mbRows || cur.some((c) => c.slot === it.slot)) {
          batches.push(cur);
          cur = [];
          rows = 0;
        }
        const n = Math.min(it.tokens.length - from, mbRows - rows);
        cur.push({ item, slot: it.slot, pos: it.pos + from, tokens: it.tokens.slice(from, from + n), last: from + n === it.tokens.length, from, itemRows: it.tokens.length, allLogits: it.allLogits === true });
        rows += n;
        from += n;
      }
    });
    if (cur.length > 0) batches.push(cur);
    this.#stats.steps++;
    this.#stats.microBatches += batches.length;
    const logits: Float32Array[] = new Array(items.length);
    await Promise.all(batches.map((mb) => this.#microBatch(mb, segs, wantLogits, epoch, logits)));
    return logits;
  }

  async #microBatch(mb: readonly Chunk[], segs: readonly Segment[], wantLogits: boolean, epoch: number, logits: Float32Array[]): Promise<void> {
    const { dim: D, wire } = this.#s;
    let hidden = mb.map((c) => this.#runner.embed(c.tokens));
    for (const seg of segs) {
      if (epoch !== this.#epoch) throw new Superseded();
      if (seg.kind === 'local') {
        const head = seg.head && wantLogits && mb.some((c) => c.last || c.allLogits);
        if (seg.start === seg.end && !head) continue;
        const input = hidden;
        const r = await this.#local(epoch, () =>
          this.#runner.runHidden(
            mb.map((c, i) => ({ slot: c.slot, pos: c.pos, hidden: input[i]!, allLogits: c.allLogits })),
            { start: seg.start, end: seg.end },
            head,
          ),
        );
        hidden = r.hidden;
        if (head) mb.forEach((c, i) => keepLogits(c, r.logits[i]!, logits));
      } else {
        const session = this.#session;
        const runs = mb.map((c) => ({ slot: c.slot, pos: c.pos, rows: c.tokens.length }));
        const msg: ActivationsMessage = { type: MessageType.Activations, id: session.id(), wire, runs, payload: encodeRows(hidden, wire, D) };
        this.#stats.maxInFlight = Math.max(this.#stats.maxInFlight, ++this.#inFlight);
        let reply: ActivationsMessage;
        try {
          reply = (await session.call(seg.links[0]!, msg, seg.links[seg.links.length - 1]!, seg.links, runs)) as ActivationsMessage;
        } finally {
          this.#inFlight--;
        }
        hidden = decodeRows(reply.payload, runs.map((r) => r.rows), wire, D);
      }
    }
  }

  /** Run root-side compute one call at a time, in request order (the engine's step buffers are shared). */
  #local<T>(epoch: number, fn: () => Promise<T>): Promise<T> {
    const run = this.#localQueue.then(() => {
      if (epoch !== this.#epoch) throw new Superseded();
      return fn();
    });
    this.#localQueue = run.catch(() => {});
    return run;
  }
}

/** A chunk's logits into its item's: the last row's, or its rows' place among every row's (n × vocab). */
function keepLogits(c: Chunk, rows: Float32Array, logits: Float32Array[]): void {
  if (!c.allLogits) {
    if (c.last) logits[c.item] = rows;
    return;
  }
  const V = rows.length / c.tokens.length;
  logits[c.item] ??= new Float32Array(c.itemRows * V);
  logits[c.item]!.set(rows, c.from * V);
}

/** A pipeline that is not set up refuses: never a silent single-process fallback. */
export const NOT_SET_UP: ModelForward = {
  forward: () => Promise.reject(new EngineStateError('the pipeline is not set up: call initialize() (it failed or was not called)')),
};
