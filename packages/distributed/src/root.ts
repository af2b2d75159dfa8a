/**
 * The root of a pipeline: an engine whose model is a Pipeline (pipeline.ts) instead of its own
 * layers alone. The pipeline embeds the tokens, runs the root's layer range on the engine's
 * layer runner, sends the hidden states through the workers' ranges over the RPC session
 * (session.ts: root → w1 → w2 → … → root, one hop per node), and runs the head. Generation
 * (sampling, stop strings, streaming, KV prefix reuse) is the engine's, unchanged.
 *
 * Faults: when a worker is lost (its stream breaks, it reports an engine failure, or it neither
 * answers a step nor a ping), the root prints one warning line naming it, takes its layers over
 * from its own copy of the model, recomputes those layers' KV cache from every sequence's tokens
 * so far (the engine's KV history), and repeats the step that was interrupted. Results are
 * exact: a row's numbers do not depend on which node computed it or on how rows were grouped, so
 * the continuation is the one a single process would have produced.
 */
import { LayerWiseInferenceEngine, OptionError, type EngineOptions } from '@airllm/engine';
import { SplitError, WorkerLostError, WorkerSetupError } from './errors.js';
import { modelFingerprint } from './fingerprint.js';
import { activationsHeaderBytes, MAX_WIRE_ROWS, MessageType, newCounters, type TransportCounters, type WireType } from './protocol.js';
import { NOT_SET_UP, Pipeline, type PipelineStats } from './pipeline.js';
import { RootSession } from './session.js';
import { parseSplit, planByBytes, type LayerRange } from './split.js';
import { parseAddress, type ClientTls } from './transport.js';
import { calibrate } from './worker.js';

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

export class DistributedEngine extends LayerWiseInferenceEngine {
  readonly distributed: DistributedOptions;
  /** What this process's transport sent and received. */
  readonly counters: TransportCounters = newCounters();
  /**
   * Work of the pipeline: forward steps, micro-batches, the most activation messages out at
   * workers at once (≥ 2 means nodes computed at the same time), and recoveries after a loss.
   */
  readonly pipelineStats: PipelineStats = { steps: 0, microBatches: 0, maxInFlight: 0, recoveries: 0 };
  #session: RootSession | undefined;
  #settingUp = false;

  constructor(modelPath: string, options: EngineOptions, distributed: DistributedOptions) {
    super(modelPath, options);
    this.distributed = distributed;
  }

  /** The nodes and their layers, root first. */
  get plan(): PipelineNode[] {
    const s = this.#session;
    if (!s) return [{ node: 'root', layers: { start: 0, end: 0 }, alive: true }];
    return [{ node: 'root', layers: { ...s.rootRange }, alive: true }, ...s.links.map((l) => ({ node: l.address, layers: { ...l.range }, alive: l.alive }))];
  }

  override async initialize(): Promise<void> {
    await super.initialize();
    if (this.#settingUp || this.#session) return;
    this.#settingUp = true;
    // Never a silent single-process fallback: until the pipeline is up, forward steps refuse.
    this.model = NOT_SET_UP;
    let session: RootSession | undefined;
    try {
      session = this.#newSession();
      session.setup = true;
      await session.open();
      const pipeline = new Pipeline(
        { nLayers: this.config.nLayers, dim: this.config.dim, wire: this.#wire(), wireBatch: this.#wireBatch(), maxSequences: this.maxSequences, maxSeqLen: this.maxSeqLen },
        session,
        this.runner,
        this.history,
        this.pipelineStats,
      );
      await this.#assign(session);
      // A worker lost between requests rejected none of them; set-up must not end with it.
      const dead = session.links.find((l) => !l.alive);
      if (dead) throw new WorkerSetupError(dead.address, dead.loss?.reason ?? 'lost during set-up');
      session.setup = false;
      this.#session = session;
      this.model = pipeline;
    } catch (e) {
      session?.close(false);
      if (e instanceof WorkerLostError) throw new WorkerSetupError(e.node, e.reason);
      throw e;
    } finally {
      this.#settingUp = false;
    }
  }

  #wire(): WireType {
    return this.distributed.wire ?? this.activations;
  }

  #wireBatch(): number {
    return Math.min(this.batchSize, MAX_WIRE_ROWS);
  }

  #newSession(): RootSession {
    const d = this.distributed;
    const dim = this.config.dim;
    if (d.workers.length === 0) throw new SplitError('--workers: need at least one worker address');
    const addresses = d.workers.map((w) => parseAddress(w).address);
    const dup = addresses.find((a, i) => addresses.indexOf(a) !== i);
    if (dup) throw new SplitError(`--workers: ${dup} is listed twice`);
    const wire = this.#wire();
    if (wire === 'q80' && dim % 32 !== 0) throw new OptionError('wire', `q80 activations on the wire need dim (${dim}) to be a multiple of 32`);
    const wireBatch = this.#wireBatch();
    if (this.maxSequences > wireBatch) throw new OptionError('maxSequences', `at most ${wireBatch} with workers, got ${this.maxSequences}`);
    return new RootSession(
      {
        workers: d.workers,
        token: d.token,
        tls: d.tls,
        wire,
        dim,
        batchSize: wireBatch,
        slots: this.maxSequences,
        maxSeqLen: this.maxSeqLen,
        maxMessageBytes: activationsHeaderBytes(wireBatch) + wireBatch * dim * 4,
        connectTimeoutMs: d.connectTimeoutMs ?? 10_000,
        stepTimeoutMs: d.stepTimeoutMs ?? 30_000,
        pingTimeoutMs: d.pingTimeoutMs ?? 5_000,
        keepaliveTimeMs: d.keepaliveTimeMs ?? 10_000,
        keepaliveTimeoutMs: d.keepaliveTimeoutMs ?? 5_000,
        modelPath: this.modelPath,
        onWarning: d.onWarning ?? ((line) => process.stderr.write(`${line}\n`)),
      },
      this.counters,
    );
  }

  /** Split the layers (by bytes, by measured speed, or as given) and send every worker its range. */
  async #assign(session: RootSession): Promise<void> {
    const d = this.distributed;
    const layout = this.layout;
    const nLayers = this.config.nLayers;
    const assignment = { fingerprint: await modelFingerprint(this.modelPath), activations: this.activations };
    const model = { nLayers, layerBytes: layout.layerBytes, headBytes: layout.head.size };
    const split = d.split ?? 'auto';
    let ranges: LayerRange[] = split === 'auto' || split === 'speed' ? planByBytes(model, session.links.length + 1) : parseSplit(split, nLayers, session.links.length);
    await session.assign(ranges, assignment);
    if (split === 'speed') {
      // Time one layer on every node with the rows of a decode step, then split again.
      const steps = 5;
      // One node at a time: nodes sharing a machine would otherwise slow each other down.
      const rootMs = await calibrate(this, 0, 1, steps);
      const workerMs: number[] = [];
      for (const l of session.links) {
        const r = await session.call(l, { type: MessageType.Calibrate, id: session.id(), rows: 1, steps });
        if (r.type !== MessageType.Calibrated) throw new WorkerSetupError(l.address, `unexpected answer ${r.type} to a calibration`);
        workerMs.push(r.msPerLayer);
      }
      const speeds = [rootMs, ...workerMs].map((ms) => 1 / Math.max(ms, 1e-3));
      const planned = planByBytes(model, session.links.length + 1, speeds);
      if (planned.some((r, i) => r.start !== ranges[i]!.start || r.end !== ranges[i]!.end)) {
        ranges = planned;
        await session.assign(ranges, assignment);
      }
    }
  }

  /** Transport figures of the root and of every live worker (asked over the session). */
  async transportStats(): Promise<TransportStats> {
    const root = { ...this.counters };
    const session = this.#session;
    const workers = await Promise.all(
      (session?.links ?? []).map(async (l) => {
        if (!l.alive) return { node: l.address, alive: false, counters: undefined };
        const r = await session!.call(l, { type: MessageType.Stats, id: session!.id() });
        return { node: l.address, alive: true, counters: r.type === MessageType.StatsReply ? r.stats : undefined };
      }),
    );
    return { root, workers, totalBytesSent: root.bytesSent + workers.reduce((n, w) => n + (w.counters?.bytesSent ?? 0), 0) };
  }

  /** Close every stream and channel to the workers, then the engine itself. */
  override async cleanup(): Promise<void> {
    this.#session?.close(true);
    await super.cleanup();
  }
}
