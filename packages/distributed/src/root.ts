/**
 * The root of a pipeline: an engine whose forward pass embeds the tokens, runs its own layer
 * range, sends the hidden states through the workers' ranges (root → w1 → w2 → … → root, one
 * hop per node), and runs the head (final norm + classifier). Generation (sampling, stop
 * strings, streaming, KV prefix reuse) is the engine's, unchanged.
 *
 * Faults: when a worker is lost (its stream breaks, it reports an engine failure, or it neither
 * answers a step nor a ping), the root prints one warning line naming it, takes its layers over
 * from its own copy of the model, recomputes those layers' KV cache from every sequence's tokens
 * so far, and repeats the step that was interrupted. Results are exact: a row's numbers do not
 * depend on which node computed it or on how rows were grouped, so the continuation is the one
 * a single process would have produced.
 */
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ContextOverflowError, EngineStateError, LayerWiseInferenceEngine, OptionError, type EngineOptions } from '@airllm/engine';
import { decodeRows, encodeRows } from './activations.js';
import { DistributedError, FingerprintMismatchError, RemoteError, SplitError, WorkerLostError, WorkerSetupError } from './errors.js';
import { modelFingerprint } from './fingerprint.js';
import {
  activationsHeaderBytes,
  checkActivations,
  ErrorCode,
  MAX_WIRE_ROWS,
  MessageType,
  newCounters,
  type ActivationsMessage,
  type Message,
  type ModelFingerprint,
  type RowRun,
  type TransportCounters,
  type WireType,
} from './protocol.js';
import { parseSplit, planByBytes, type LayerRange } from './split.js';
import { channelOptions, closeClientStream, countingCodec, newClient, openStream, parseAddress, requestMetadata, SESSION_PATH, type ClientStream, type ClientTls, type Decoded } from './transport.js';
import { calibrate, layerLabel } from './worker.js';

export interface DistributedOptions {
  /** Worker addresses ("host:port"), in pipeline order. */
  workers: readonly string[];
  /**
   * `auto` (default): by layer bytes; `speed`: by layer bytes weighted by each node's measured
   * speed; or inclusive ranges "a-b,c-d" (one per worker, or one more for the root first).
   */
  split?: string;
  /** Shared secret the workers require. */
  token?: string;
  /** TLS to the workers: their CA, and this node's certificate for workers that require one. */
  tls?: ClientTls;
  /** Activation encoding between nodes (default: the engine's activations; q80 is lossy). */
  wire?: WireType;
  /** Time to reach each worker when the pipeline is set up (default 10 s). */
  connectTimeoutMs?: number;
  /**
   * A request not answered within this time makes the root ping the nodes it went through;
   * a node that does not answer the ping within `pingTimeoutMs` is lost (defaults 30 s, 5 s).
   */
  stepTimeoutMs?: number;
  pingTimeoutMs?: number;
  /** gRPC keepalive: a vanished machine is noticed within time + timeout (defaults 10 s, 5 s). */
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** One line per lost worker (default: written to stderr). */
  onWarning?: (line: string) => void;
}

/** One node's part of the pipeline, as `plan` reports it. */
export interface PipelineNode {
  /** "root" or the worker's address. */
  node: string;
  layers: LayerRange;
  /** False once a worker was lost (the root then runs its layers). */
  alive: boolean;
}

export interface TransportStats {
  root: TransportCounters;
  workers: { node: string; alive: boolean; counters: TransportCounters | undefined }[];
  /** Bytes sent by every node that answered (each byte sent is received once). */
  totalBytesSent: number;
}

interface WorkerLink {
  readonly address: string;
  readonly index: number;
  range: LayerRange;
  client: grpc.Client | undefined;
  call: ClientStream | undefined;
  alive: boolean;
  /** The next hop it was told ("" = back to the root). */
  next: string;
  loss: WorkerLostError | undefined;
}

interface Pending {
  resolve(m: Message): void;
  reject(e: Error): void;
  /** The link the answer must come from. */
  from: WorkerLink;
  /** Links the request passes through (pinged when it is late). */
  via: readonly WorkerLink[];
  runs?: readonly RowRun[];
  /** For an assignment or next-hop change: the address the worker is to connect to. */
  relayTarget?: string;
  timer: NodeJS.Timeout | undefined;
}

type Segment = { kind: 'local'; start: number; end: number; head: boolean } | { kind: 'remote'; links: WorkerLink[]; start: number; end: number };

/** A chunk of one item: rows of one sequence at consecutive positions. */
interface Chunk {
  item: number;
  slot: number;
  pos: number;
  tokens: readonly number[];
  last: boolean;
}

/** A micro-batch that was overtaken by a loss (the step is repeated from the start). */
class Superseded extends Error {}

export class DistributedEngine extends LayerWiseInferenceEngine {
  readonly distributed: DistributedOptions;
  /** What this process's transport sent and received. */
  readonly counters: TransportCounters = newCounters();
  /**
   * Work of the pipeline: forward steps, micro-batches, the most activation messages out at
   * workers at once (≥ 2 means nodes computed at the same time), and recoveries after a loss.
   */
  readonly pipelineStats = { steps: 0, microBatches: 0, maxInFlight: 0, recoveries: 0 };
  #inFlight = 0;
  readonly #codec = countingCodec(this.counters);
  readonly #sessionId = randomBytes(16);
  #links: WorkerLink[] = [];
  #rootRange: LayerRange = { start: 0, end: 0 };
  #wire: WireType = 'f32';
  #wireBatch = 1;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #localQueue: Promise<unknown> = Promise.resolve();
  /** Bumped on every loss: work started before it is abandoned. */
  #epoch = 0;
  /** Layers [0, #dirtyUntil) need their KV recomputed before the next step (0 = none). */
  #dirtyUntil = 0;
  /** Tokens whose KV cache is valid, per slot (the engine keeps the same list privately). */
  #slotTokens: number[][] = [];
  #setup = false;
  #closing = false;
  #fingerprint: ModelFingerprint | undefined;

  constructor(modelPath: string, options: EngineOptions, distributed: DistributedOptions) {
    super(modelPath, options);
    this.distributed = distributed;
  }

  /** The nodes and their layers, root first. */
  get plan(): PipelineNode[] {
    return [{ node: 'root', layers: { ...this.#rootRange }, alive: true }, ...this.#links.map((l) => ({ node: l.address, layers: { ...l.range }, alive: l.alive }))];
  }

  get #stepTimeoutMs(): number {
    return this.distributed.stepTimeoutMs ?? 30_000;
  }
  get #pingTimeoutMs(): number {
    return this.distributed.pingTimeoutMs ?? 5_000;
  }

  override async initialize(): Promise<void> {
    await super.initialize();
    if (this.#setup || this.#links.length > 0) return;
    this.#setup = true;
    try {
      await this.#connectAndAssign();
    } catch (e) {
      this.#closeLinks(true);
      if (e instanceof WorkerLostError) throw new WorkerSetupError(e.node, e.reason);
      throw e;
    } finally {
      this.#setup = false;
    }
  }

  async #connectAndAssign(): Promise<void> {
    const d = this.distributed;
    const h = this.header;
    if (d.workers.length === 0) throw new SplitError('--workers: need at least one worker address');
    const addresses = d.workers.map((w) => parseAddress(w).address);
    const dup = addresses.find((a, i) => addresses.indexOf(a) !== i);
    if (dup) throw new SplitError(`--workers: ${dup} is listed twice`);
    this.#wire = d.wire ?? this.activations;
    if (this.#wire === 'q80' && h.dim % 32 !== 0) throw new OptionError('wire', `q80 activations on the wire need dim (${h.dim}) to be a multiple of 32`);
    this.#wireBatch = Math.min(this.batchSize, MAX_WIRE_ROWS);
    if (this.maxSequences > this.#wireBatch) throw new OptionError('maxSequences', `at most ${this.#wireBatch} with workers, got ${this.maxSequences}`);
    this.#slotTokens = Array.from({ length: this.maxSequences }, () => []);

    const maxBytes = activationsHeaderBytes(this.#wireBatch) + this.#wireBatch * h.dim * 4;
    const opts = channelOptions(maxBytes, { keepaliveTimeMs: d.keepaliveTimeMs ?? 10_000, keepaliveTimeoutMs: d.keepaliveTimeoutMs ?? 5_000 });
    this.#links = addresses.map((address, index) => ({ address, index, range: { start: 0, end: 0 }, client: undefined, call: undefined, alive: true, next: '', loss: undefined }));
    const opened = await Promise.allSettled(
      this.#links.map(async (link) => {
        const client = newClient(link.address, d.tls, opts);
        link.client = client;
        try {
          link.call = await openStream(client, SESSION_PATH, this.#codec, requestMetadata(d.token, this.#sessionId), d.connectTimeoutMs ?? 10_000);
        } catch (e) {
          throw new WorkerSetupError(link.address, `cannot open a session: ${e instanceof Error ? e.message : String(e)}`);
        }
        const call = link.call;
        call.on('data', (m: Decoded) => this.#onData(link, m));
        call.on('error', (e: grpc.ServiceError) => this.#lost(link, `connection lost (${grpc.status[e.code] ?? e.code}: ${e.details || e.message})`));
        call.on('end', () => this.#lost(link, 'session ended by the worker'));
      }),
    );
    // Every attempt has settled, so no stream opens after the links are closed on failure.
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;

    const layout = this.layout;
    const model = { nLayers: h.nLayers, layerBytes: layout.layerBytes, headBytes: layout.finalNorm.byteLength + layout.wcls.byteLength };
    const split = d.split ?? 'auto';
    let ranges = split === 'auto' || split === 'speed' ? planByBytes(model, this.#links.length + 1) : parseSplit(split, h.nLayers, this.#links.length);
    await this.#assign(ranges);
    if (split === 'speed') {
      // Time one layer on every node with the rows of a decode step, then split again.
      const steps = 5;
      // One node at a time: nodes sharing a machine would otherwise slow each other down.
      const rootMs = await calibrate(this, 0, 1, steps);
      const workerMs: number[] = [];
      for (const l of this.#links) {
        const r = await this.#call(l, { type: MessageType.Calibrate, id: this.#id(), rows: 1, steps });
        if (r.type !== MessageType.Calibrated) throw new WorkerSetupError(l.address, `unexpected answer ${r.type} to a calibration`);
        workerMs.push(r.msPerLayer);
      }
      const speeds = [rootMs, ...workerMs].map((ms) => 1 / Math.max(ms, 1e-3));
      const planned = planByBytes(model, this.#links.length + 1, speeds);
      if (planned.some((r, i) => r.start !== ranges[i]!.start || r.end !== ranges[i]!.end)) {
        ranges = planned;
        await this.#assign(ranges);
      }
    }
    // A worker lost between requests rejected none of them; set-up must not end with it.
    const dead = this.#links.find((l) => !l.alive);
    if (dead) throw new WorkerSetupError(dead.address, dead.loss?.reason ?? 'lost during set-up');
  }

  /** Send every worker its range; the last first, so each next hop is ready when its predecessor connects. */
  async #assign(ranges: readonly LayerRange[]): Promise<void> {
    this.#rootRange = ranges[0]!;
    this.#links.forEach((l, i) => (l.range = ranges[i + 1]!));
    this.#fingerprint ??= await modelFingerprint(this.modelPath);
    const fingerprint = this.#fingerprint;
    for (let i = this.#links.length - 1; i >= 0; i--) {
      const link = this.#links[i]!;
      const next = this.#nextHop(link);
      const r = await this.#call(link, {
        type: MessageType.Assign,
        id: this.#id(),
        fingerprint,
        layerStart: link.range.start,
        layerEnd: link.range.end,
        activations: this.activations,
        wire: this.#wire,
        maxSeqLen: this.maxSeqLen,
        batchSize: this.#wireBatch,
        slots: this.maxSequences,
        sessionId: this.#sessionId,
        next,
      });
      if (r.type !== MessageType.Ready) throw new WorkerSetupError(link.address, `unexpected answer ${r.type} to an assignment`);
      link.next = next;
    }
  }

  /** Where a live worker sends its output: the next worker if it is alive, else the root. */
  #nextHop(link: WorkerLink): string {
    const next = this.#links[link.index + 1];
    return next && next.alive ? next.address : '';
  }

  #id(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    return id;
  }

  /** The pipeline as it stands: local ranges (root's own and taken over) and chains of live workers. */
  #segments(): Segment[] {
    const segs: Segment[] = [];
    const push = (local: boolean, r: LayerRange, link?: WorkerLink): void => {
      if (r.end === r.start) return;
      const last = segs[segs.length - 1];
      if (local && last?.kind === 'local') last.end = r.end;
      else if (!local && last?.kind === 'remote') {
        last.links.push(link!);
        last.end = r.end;
      } else if (local) segs.push({ kind: 'local', start: r.start, end: r.end, head: false });
      else segs.push({ kind: 'remote', links: [link!], start: r.start, end: r.end });
    };
    push(true, this.#rootRange);
    for (const l of this.#links) push(!l.alive, l.range, l);
    const last = segs[segs.length - 1];
    if (last?.kind === 'local') last.head = true;
    else segs.push({ kind: 'local', start: this.header.nLayers, end: this.header.nLayers, head: true });
    return segs;
  }

  // ---- messages from workers ----

  #onData(link: WorkerLink, m: Decoded): void {
    if (!link.alive) return;
    if (m.type === 'malformed') return this.#lost(link, `malformed message (${m.error.message})`);
    if (m.type === MessageType.Error) return this.#onError(link, m.id, m.code, m.text);
    const p = this.#pending.get(m.id);
    // An answer to a step that was abandoned after a loss: ignore.
    if (!p) return;
    if (p.from !== link) return this.#lost(link, `answer to request ${m.id}, which was not its to answer`);
    if (p.runs !== undefined || m.type === MessageType.Activations) {
      try {
        if (p.runs === undefined || m.type !== MessageType.Activations) throw new DistributedError(`message type ${m.type} does not answer request ${m.id}`);
        checkActivations(m, { wire: this.#wire, dim: this.header.dim, batchSize: this.#wireBatch, slots: this.maxSequences, maxSeqLen: this.maxSeqLen });
        const runs = p.runs ?? [];
        if (m.runs.length !== runs.length || m.runs.some((r, i) => r.slot !== runs[i]!.slot || r.pos !== runs[i]!.pos || r.rows !== runs[i]!.rows)) {
          throw new DistributedError('rows differ from the ones sent');
        }
      } catch (e) {
        return this.#lost(link, `bad activations for request ${m.id} (${e instanceof Error ? e.message : String(e)})`);
      }
    }
    this.#settle(m.id)?.resolve(m);
  }

  #onError(link: WorkerLink, id: number, code: number, text: string): void {
    switch (code) {
      case ErrorCode.Engine:
        return this.#lost(link, `engine error (${text})`);
      case ErrorCode.RelayFailed: {
        // The worker is fine; the hop it sends to is not (the one it was just told, when the
        // error answers an assignment or a next-hop change). Already lost: nothing to add.
        if (this.#setup) break;
        const target = this.#pending.get(id)?.relayTarget ?? link.next;
        const next = this.#links.find((l) => l.address === target);
        if (next?.alive) return this.#lost(next, `unreachable from ${link.address} (${text})`);
        if (this.#pending.has(id)) break;
        return;
      }
    }
    const p = this.#settle(id);
    const err =
      code === ErrorCode.Fingerprint
        ? new FingerprintMismatchError(link.address, text)
        : this.#setup
          ? new WorkerSetupError(link.address, text)
          : new RemoteError(link.address, code, text);
    if (p) p.reject(err);
    else this.#warn(`airllm: warning: worker ${link.address}: ${text}`);
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    return p;
  }

  #warn(line: string): void {
    const w = this.distributed.onWarning;
    if (w) w(line);
    else process.stderr.write(`${line}\n`);
  }

  /** A worker is gone: say so once, give its layers to the root, abandon the work in flight. */
  #lost(link: WorkerLink, reason: string): void {
    if (!link.alive || this.#closing) return;
    link.alive = false;
    const layers = layerLabel(link.range.start, link.range.end);
    link.loss = new WorkerLostError(link.address, layers, reason);
    const c = link.call;
    const client = link.client;
    link.call = undefined;
    link.client = undefined;
    closeClientStream(c);
    client?.close();
    this.#epoch++;
    if (!this.#setup) {
      this.#dirtyUntil = Math.max(this.#dirtyUntil, link.range.end);
      this.#warn(`airllm: warning: worker ${link.address} (layers ${layers}) failed: ${reason}; the root runs layers ${layers} from ${this.modelPath} and continues`);
    }
    for (const [id, p] of [...this.#pending]) {
      if (this.#setup && p.from !== link && !p.via.includes(link)) continue;
      this.#settle(id);
      p.reject(link.loss);
    }
  }

  // ---- requests ----

  /**
   * Send `m` to `to` and wait for the answer with the same id from `from` (default: `to`). A
   * late answer makes the root ping every node on the way; the ones that stay silent are lost.
   */
  #call(to: WorkerLink, m: Message, from: WorkerLink = to, via: readonly WorkerLink[] = [to], runs?: readonly RowRun[]): Promise<Message> {
    return new Promise<Message>((resolve, reject) => {
      const dead = via.find((l) => !l.alive);
      if (dead) return reject(dead.loss ?? new WorkerLostError(dead.address, layerLabel(dead.range.start, dead.range.end), 'lost'));
      const relayTarget = m.type === MessageType.Assign || m.type === MessageType.SetNext ? m.next : undefined;
      const p: Pending = { resolve, reject, from, via, runs, relayTarget, timer: undefined };
      const arm = (): void => {
        p.timer = setTimeout(() => {
          void this.#probe(via, m.id).then((allAlive) => {
            if (allAlive && this.#pending.get(m.id) === p) arm();
          });
        }, this.#stepTimeoutMs);
      };
      this.#pending.set(m.id, p);
      arm();
      try {
        to.call!.write(m);
      } catch (e) {
        this.#lost(to, `write failed (${e instanceof Error ? e.message : String(e)})`);
      }
    });
  }

  /** Ping each link; lose the ones that do not answer in time. Resolves whether all answered. */
  async #probe(links: readonly WorkerLink[], late: number): Promise<boolean> {
    const results = await Promise.all(
      links.map(async (l) => {
        if (!l.alive) return false;
        const id = this.#id();
        const ok = await new Promise<boolean>((resolve) => {
          const p: Pending = { resolve: () => resolve(true), reject: () => resolve(false), from: l, via: [l], timer: undefined };
          p.timer = setTimeout(() => {
            this.#settle(id);
            resolve(false);
          }, this.#pingTimeoutMs);
          this.#pending.set(id, p);
          try {
            l.call!.write({ type: MessageType.Ping, id });
          } catch {
            this.#settle(id);
            resolve(false);
          }
        });
        if (!ok) this.#lost(l, `timed out (no answer to request ${late} within ${this.#stepTimeoutMs} ms, nor to a ping within ${this.#pingTimeoutMs} ms)`);
        return ok;
      }),
    );
    return results.every(Boolean);
  }

  /** Tell live workers whose next hop changed (after a loss) where to send their output now. */
  async #reconfigure(): Promise<void> {
    for (let i = this.#links.length - 1; i >= 0; i--) {
      const link = this.#links[i]!;
      if (!link.alive) continue;
      const next = this.#nextHop(link);
      if (next === link.next) continue;
      const r = await this.#call(link, { type: MessageType.SetNext, id: this.#id(), next });
      if (r.type !== MessageType.Ready) throw new RemoteError(link.address, 0, `unexpected answer ${r.type} to a next-hop change`);
      link.next = next;
    }
  }

  // ---- the forward pass ----

  protected override async forwardItems(items: readonly { slot: number; pos: number; tokens: readonly number[] }[]): Promise<Float32Array[]> {
    // Never a silent single-process fallback: the pipeline was asked for.
    if (this.#links.length === 0) throw new EngineStateError('the pipeline is not set up: call initialize() (it failed or was not called)');
    if (items.length === 0) return [];
    for (const it of items) {
      if (it.tokens.length === 0) throw new OptionError('tokens', 'need at least one token');
      if (!Number.isInteger(it.slot) || it.slot < 0 || it.slot >= this.maxSequences) throw new OptionError('slot', `must be 0..${this.maxSequences - 1}, got ${it.slot}`);
      if (!Number.isInteger(it.pos) || it.pos < 0 || it.pos > this.#slotTokens[it.slot]!.length) {
        throw new OptionError('pos', `must be 0..${this.#slotTokens[it.slot]!.length} (the tokens this slot holds), got ${it.pos}`);
      }
      if (it.pos + it.tokens.length > this.maxSeqLen) {
        throw new ContextOverflowError(`${it.pos + it.tokens.length} positions do not fit the context of ${this.maxSeqLen} tokens`, it.pos + it.tokens.length, this.maxSeqLen);
      }
      this.#slotTokens[it.slot]!.length = it.pos;
    }
    // Each attempt that fails loses a worker, so this ends after at most workers + 1 attempts.
    for (;;) {
      try {
        if (this.#dirtyUntil > 0) await this.#resync();
        const logits = await this.#pipeline(items, true, this.header.nLayers);
        for (const it of items) this.#slotTokens[it.slot]!.push(...it.tokens);
        return logits;
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
    this.pipelineStats.recoveries++;
    await this.#reconfigure();
    const until = this.#dirtyUntil;
    const items = this.#slotTokens.flatMap((tokens, slot) => (tokens.length > 0 ? [{ slot, pos: 0, tokens }] : []));
    if (items.length > 0) await this.#pipeline(items, false, until);
    this.#dirtyUntil = 0;
  }

  /**
   * Run items through the pipeline up to layer `until` (with the head when `wantLogits`), in
   * micro-batches so that nodes work at the same time: while worker 1 runs micro-batch 1 the
   * root runs micro-batch 2 through its own range.
   */
  async #pipeline(items: readonly { slot: number; pos: number; tokens: readonly number[] }[], wantLogits: boolean, until: number): Promise<Float32Array[]> {
    const epoch = this.#epoch;
    let segs = this.#segments();
    if (!wantLogits) {
      segs = segs.filter((s) => s.start < until).map((s) => (s.kind === 'local' ? { ...s, head: false } : s));
    }
    const nodes = segs.reduce((n, s) => n + (s.kind === 'remote' ? s.links.length : 1), 0);
    const totalRows = items.reduce((n, it) => n + it.tokens.length, 0);
    const mbRows = Math.min(this.#wireBatch, Math.max(1, Math.ceil(totalRows / nodes)));
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
        cur.push({ item, slot: it.slot, pos: it.pos + from, tokens: it.tokens.slice(from, from + n), last: from + n === it.tokens.length });
        rows += n;
        from += n;
      }
    });
    if (cur.length > 0) batches.push(cur);
    this.pipelineStats.steps++;
    this.pipelineStats.microBatches += batches.length;
    const logits: Float32Array[] = new Array(items.length);
    await Promise.all(batches.map((mb) => this.#microBatch(mb, segs, wantLogits, epoch, logits)));
    return logits;
  }

  async #microBatch(mb: readonly Chunk[], segs: readonly Segment[], wantLogits: boolean, epoch: number, logits: Float32Array[]): Promise<void> {
    const D = this.header.dim;
    let hidden = mb.map((c) => this.embed(c.tokens));
    for (const seg of segs) {
      if (epoch !== this.#epoch) throw new Superseded();
      if (seg.kind === 'local') {
        const head = seg.head && wantLogits && mb.some((c) => c.last);
        if (seg.start === seg.end && !head) continue;
        const input = hidden;
        const r = await this.#local(epoch, () => this.runLayersUnlocked(mb.map((c, i) => ({ slot: c.slot, pos: c.pos, hidden: input[i]! })), seg.start, seg.end, head));
        hidden = r.hidden;
        if (head) mb.forEach((c, i) => c.last && (logits[c.item] = r.logits[i]!));
      } else {
        const runs = mb.map((c) => ({ slot: c.slot, pos: c.pos, rows: c.tokens.length }));
        const msg: ActivationsMessage = { type: MessageType.Activations, id: this.#id(), wire: this.#wire, runs, payload: encodeRows(hidden, this.#wire, D) };
        this.pipelineStats.maxInFlight = Math.max(this.pipelineStats.maxInFlight, ++this.#inFlight);
        let reply: ActivationsMessage;
        try {
          reply = (await this.#call(seg.links[0]!, msg, seg.links[seg.links.length - 1]!, seg.links, runs)) as ActivationsMessage;
        } finally {
          this.#inFlight--;
        }
        hidden = decodeRows(reply.payload, runs.map((r) => r.rows), this.#wire, D);
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

  /** Transport figures of the root and of every live worker (asked over the session). */
  async transportStats(): Promise<TransportStats> {
    const root = { ...this.counters };
    const workers = await Promise.all(
      this.#links.map(async (l) => {
        if (!l.alive) return { node: l.address, alive: false, counters: undefined };
        const r = await this.#call(l, { type: MessageType.Stats, id: this.#id() });
        return { node: l.address, alive: true, counters: r.type === MessageType.StatsReply ? r.stats : undefined };
      }),
    );
    return { root, workers, totalBytesSent: root.bytesSent + workers.reduce((n, w) => n + (w.counters?.bytesSent ?? 0), 0) };
  }

  /** Close every link; `forget` after a failed setup, so that initialize() may be called again. */
  #closeLinks(forget = false): void {
    for (const [id, p] of [...this.#pending]) {
      this.#settle(id);
      p.reject(new DistributedError('the engine was cleaned up'));
    }
    for (const l of this.#links) {
      closeClientStream(l.call);
      l.client?.close();
      l.call = undefined;
      l.client = undefined;
    }
    if (forget) this.#links = [];
  }

  /** Close every stream and channel to the workers, then the engine itself. */
  override async cleanup(): Promise<void> {
    this.#closing = true;
    this.#closeLinks();
    await super.cleanup();
  }
}
