/**
 * A pipeline worker: a gRPC server that, once a root assigns it layers [a, b), runs activation
 * batches through them with its own engine (its own copy of the model file, its own KV cache for
 * those layers) and passes the result on: to the next worker over a Relay stream, or back to the
 * root on the root's Session stream.
 *
 * Order of work: messages from every stream go through one queue and are handled one at a
 * time, in arrival order, so the rows of one sequence always reach the engine in position order
 * (a micro-batch never overtakes the one before it). Pings and statistics are answered at once,
 * outside the queue, so a worker that is busy computing is not mistaken for a dead one.
 */
import { timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { readAnyModelFile, type ModelHeader, type WeightsLayout } from '@airllm/format';
import { LayerWiseInferenceEngine, type EngineOptions } from '@airllm/engine';
import { decodeRows, encodeRows } from './activations.js';
import { ProtocolError } from './errors.js';
import { describeFingerprint, differingRegions, fingerprintRegions, modelFingerprint, sameFingerprint, type FingerprintOptions } from './fingerprint.js';
import {
  activationsHeaderBytes,
  checkActivations,
  ErrorCode,
  MAX_WIRE_ROWS,
  MessageType,
  newCounters,
  type ActivationsMessage,
  type AssignMessage,
  type CalibrateMessage,
  type Message,
  type ModelFingerprint,
  type TransportCounters,
} from './protocol.js';
import {
  ACCEPTED_HEADER,
  channelOptions,
  closeClientStream,
  countingCodec,
  openStream,
  newClient,
  RELAY_PATH,
  requestMetadata,
  serverCredentials,
  serviceDefinition,
  SESSION_HEADER,
  tokenMatches,
  type ClientStream,
  type ClientTls,
  type Codec,
  type Decoded,
  type ServerStream,
  type ServerTls,
} from './transport.js';

export interface WorkerOptions {
  /** The worker's own copy of the model (must be the root's file: size and hash are compared). */
  modelPath: string;
  /** Interface to listen on (default 127.0.0.1: only this machine). */
  host?: string;
  /** Port (default 0: any free port; see `port` after start). */
  port?: number;
  /** Shared secret every peer must send; without it anyone who can connect is served. */
  token?: string;
  /**
   * Serve over TLS (`clientCa`: require client certificates signed by it). The relay to the next
   * worker then uses TLS too: it checks the next worker's certificate against `peerCa` (default
   * `clientCa`, else the system's CAs) and presents this worker's certificate as its own.
   */
  tls?: ServerTls & { peerCa?: string | Buffer };
  /** Engine options of this machine (threads, memory mode, kernels); the root decides the rest. */
  engineOptions?: EngineOptions;
  /** Where progress lines go (default: nowhere). */
  log?: (line: string) => void;
  /** Time to reach the next hop (default 10 s). */
  connectTimeoutMs?: number;
  keepaliveTimeMs?: number;
  keepaliveTimeoutMs?: number;
  /** Where the model's region sums are cached (fingerprint.ts; null: none). */
  checksumCacheDir?: string | null;
}

interface Assignment {
  layerStart: number;
  layerEnd: number;
  wire: AssignMessage['wire'];
  maxSeqLen: number;
  batchSize: number;
  slots: number;
  sessionId: Uint8Array;
}

interface NextHop {
  address: string;
  client: grpc.Client;
  call: ClientStream;
}

/** Layers as people count them: "3-5" for [3, 6). */
export function layerLabel(start: number, end: number): string {
  return end - start === 0 ? 'none' : end - start === 1 ? `${start}` : `${start}-${end - 1}`;
}

export class PipelineWorker {
  readonly modelPath: string;
  readonly host: string;
  readonly counters: TransportCounters = newCounters();
  #port = 0;
  readonly #options: WorkerOptions;
  readonly #header: ModelHeader;
  readonly #layout: WeightsLayout;
  #fingerprint!: ModelFingerprint;
  readonly #codec: Codec;
  readonly #server: grpc.Server;
  readonly #log: (line: string) => void;
  #session: WorkerSession | undefined;
  #engine: { key: string; engine: LayerWiseInferenceEngine } | undefined;
  #closed = false;

  private constructor(options: WorkerOptions) {
    this.#options = options;
    this.modelPath = options.modelPath;
    this.host = options.host ?? '127.0.0.1';
    this.#log = options.log ?? (() => {});
    const file = readAnyModelFile(options.modelPath);
    this.#header = file.header;
    this.#layout = file.layout;
    this.#codec = countingCodec(this.counters);
    // The largest message a root may send: MAX_WIRE_ROWS rows of F32 plus one run per row.
    const maxBytes = activationsHeaderBytes(MAX_WIRE_ROWS) + MAX_WIRE_ROWS * this.#header.dim * 4;
    this.#server = new grpc.Server(channelOptions(maxBytes, this.#keepalive()));
    this.#server.addService(serviceDefinition(this.#codec), {
      Session: (call: ServerStream) => this.#onSession(call),
      Relay: (call: ServerStream) => this.#onRelay(call),
    });
  }

  /** Read the model header, hash the file, and listen. Rejects with a typed error on a bad model. */
  static async start(options: WorkerOptions): Promise<PipelineWorker> {
    const w = new PipelineWorker(options);
    const fp: FingerprintOptions = {
      cacheDir: options.checksumCacheDir,
      onRead: (bytes) => w.#log(`reading ${options.modelPath} once to checksum it (${(bytes / 2 ** 30).toFixed(1)} GiB; the sums are cached)`),
    };
    w.#fingerprint = await modelFingerprint(options.modelPath, fp);
    const host = w.host.includes(':') && !w.host.startsWith('[') ? `[${w.host}]` : w.host;
    w.#port = await new Promise<number>((resolve, reject) => {
      w.#server.bindAsync(`${host}:${options.port ?? 0}`, serverCredentials(options.tls), (err, port) => (err ? reject(err) : resolve(port)));
    });
    return w;
  }

  get port(): number {
    return this.#port;
  }

  get maxMessageBytes(): number {
    return activationsHeaderBytes(MAX_WIRE_ROWS) + MAX_WIRE_ROWS * this.#header.dim * 4;
  }

  #keepalive(): { keepaliveTimeMs: number; keepaliveTimeoutMs: number } {
    return { keepaliveTimeMs: this.#options.keepaliveTimeMs ?? 10_000, keepaliveTimeoutMs: this.#options.keepaliveTimeoutMs ?? 5_000 };
  }

  #refuse(call: ServerStream, code: grpc.status, details: string): void {
    this.#log(`refused ${call.getPeer()}: ${details}`);
    call.on('data', () => {});
    call.emit('error', { code, details } satisfies Partial<grpc.StatusObject>);
  }

  #accept(call: ServerStream): void {
    const md = new grpc.Metadata();
    md.set(ACCEPTED_HEADER, '1');
    call.sendMetadata(md);
  }

  #onSession(call: ServerStream): void {
    if (!tokenMatches(this.#options.token, call.metadata)) return this.#refuse(call, grpc.status.UNAUTHENTICATED, 'missing or wrong token');
    if (this.#closed) return this.#refuse(call, grpc.status.UNAVAILABLE, 'worker is shutting down');
    if (this.#session) return this.#refuse(call, grpc.status.RESOURCE_EXHAUSTED, 'already serving another root');
    this.#accept(call);
    const session = new WorkerSession(this, call);
    this.#session = session;
    this.#log(`root ${call.getPeer()} connected`);
    const end = (why: string): void => {
      if (this.#session !== session) return;
      this.#session = undefined;
      session.close();
      this.#log(`root ${call.getPeer()} ${why}`);
    };
    call.on('data', (m: Decoded) => session.fromRoot(m));
    call.on('end', () => {
      end('disconnected');
      call.end();
    });
    call.on('error', (e) => end(`stream failed: ${e.message}`));
    call.on('cancelled', () => end('cancelled the session'));
    call.on('close', () => end('disconnected'));
  }

  #onRelay(call: ServerStream): void {
    if (!tokenMatches(this.#options.token, call.metadata)) return this.#refuse(call, grpc.status.UNAUTHENTICATED, 'missing or wrong token');
    const session = this.#session;
    const id = session?.assignment?.sessionId;
    const got = Buffer.from(String(call.metadata.get(SESSION_HEADER)[0] ?? ''), 'hex');
    if (!session || !id || got.length !== id.length || !timingSafeEqual(got, Buffer.from(id))) {
      return this.#refuse(call, grpc.status.FAILED_PRECONDITION, 'relay for a session this worker does not serve');
    }
    this.#accept(call);
    session.addRelay(call);
  }

  /**
   * The engine for an assignment: only its layers (weights loaded and KV cache kept for those
   * alone, no head), with the root's context, batch, slots and numerics. Kept while the next
   * assignment asks for the same.
   */
  async engineFor(a: AssignMessage): Promise<LayerWiseInferenceEngine> {
    const key = JSON.stringify([a.layerStart, a.layerEnd, a.maxSeqLen, a.batchSize, a.slots, a.activations]);
    if (this.#engine?.key === key) return this.#engine.engine;
    const old = this.#engine;
    this.#engine = undefined;
    await old?.engine.cleanup();
    const engine = new LayerWiseInferenceEngine(this.modelPath, {
      ...this.#options.engineOptions,
      layers: { start: a.layerStart, end: a.layerEnd, head: false },
      maxSeqLen: a.maxSeqLen,
      batchSize: a.batchSize,
      maxSequences: a.slots,
      activations: a.activations,
    });
    try {
      await engine.initialize();
    } catch (e) {
      await engine.cleanup();
      throw e;
    }
    this.#engine = { key, engine };
    return engine;
  }

  get header(): ModelHeader {
    return this.#header;
  }
  get fingerprint(): ModelFingerprint {
    return this.#fingerprint;
  }
  get layout(): WeightsLayout {
    return this.#layout;
  }
  get codec(): Codec {
    return this.#codec;
  }
  get log(): (line: string) => void {
    return this.#log;
  }
  get connectTimeoutMs(): number {
    return this.#options.connectTimeoutMs ?? 10_000;
  }
  get token(): string | undefined {
    return this.#options.token;
  }
  /** TLS of the relay to the next worker (undefined: plaintext, like this worker's server). */
  get relayTls(): ClientTls | undefined {
    const t = this.#options.tls;
    return t && { ca: t.peerCa ?? t.clientCa, cert: t.cert, key: t.key };
  }
  relayChannelOptions(): grpc.ChannelOptions {
    return channelOptions(this.maxMessageBytes, this.#keepalive());
  }

  /** Stop serving: end the session and every stream, stop the engine. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#session?.close();
    this.#session = undefined;
    this.#server.forceShutdown();
    await this.#engine?.engine.cleanup();
    this.#engine = undefined;
  }
}

/** One root's session on a worker: its assignment, next hop, incoming relays and work queue. */
class WorkerSession {
  assignment: Assignment | undefined;
  #engine: LayerWiseInferenceEngine | undefined;
  /** Where output goes: "" = back to the root, else the next worker (via #next). */
  #nextAddress = '';
  #next: NextHop | undefined;
  readonly #relays = new Set<ServerStream>();
  #queue: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(
    readonly worker: PipelineWorker,
    readonly root: ServerStream,
  ) {}

  #send(to: ServerStream | ClientStream, m: Message): void {
    if (this.#closed) return;
    try {
      to.write(m);
    } catch {
      // The stream already ended; its own 'error'/'end' handler reports that.
    }
  }

  #error(to: ServerStream | ClientStream, id: number, code: number, text: string): void {
    this.#send(to, { type: MessageType.Error, id, code, text });
  }

  #enqueue(task: () => Promise<void>): void {
    this.#queue = this.#queue.then(task).catch((e: unknown) => {
      this.#error(this.root, 0, ErrorCode.Engine, e instanceof Error ? e.message : String(e));
    });
  }

  fromRoot(m: Decoded): void {
    if (m.type === 'malformed') {
      this.worker.log(`rejected a message from the root: ${m.error.message}`);
      return this.#error(this.root, m.id, ErrorCode.BadMessage, m.error.message);
    }
    switch (m.type) {
      case MessageType.Ping:
        return this.#send(this.root, { type: MessageType.Pong, id: m.id });
      case MessageType.Stats:
        return this.#send(this.root, { type: MessageType.StatsReply, id: m.id, stats: { ...this.worker.counters } });
      case MessageType.Assign:
        return this.#enqueue(() => this.#assign(m));
      case MessageType.SetNext:
        return this.#enqueue(() => {
          this.worker.log(`next hop is now ${m.next || 'the root'}`);
          return this.#setNext(m.id, m.next);
        });
      case MessageType.Activations:
        return this.#enqueue(() => this.#activations(m, this.root));
      case MessageType.Calibrate:
        return this.#enqueue(() => this.#calibrate(m));
      default:
        return this.#error(this.root, m.id, ErrorCode.BadMessage, `a root does not send message type ${m.type}`);
    }
  }

  addRelay(call: ServerStream): void {
    this.#relays.add(call);
    const drop = (): void => {
      this.#relays.delete(call);
    };
    call.on('data', (m: Decoded) => {
      if (m.type === 'malformed') {
        this.worker.log(`rejected a message from ${call.getPeer()}: ${m.error.message}`);
        return this.#error(call, m.id, ErrorCode.BadMessage, m.error.message);
      }
      if (m.type !== MessageType.Activations) return this.#error(call, m.id, ErrorCode.BadMessage, 'a relay carries activations only');
      this.#enqueue(() => this.#activations(m, call));
    });
    call.on('end', () => {
      drop();
      call.end();
    });
    call.on('error', drop);
    call.on('close', drop);
  }

  async #assign(m: AssignMessage): Promise<void> {
    const h = this.worker.header;
    if (!sameFingerprint(m.fingerprint, this.worker.fingerprint)) {
      const where = differingRegions(m.fingerprint, this.worker.fingerprint, fingerprintRegions(this.worker.layout));
      return this.#error(
        this.root,
        m.id,
        ErrorCode.Fingerprint,
        `model file differs${where ? ` in ${where}` : ''}: the root's is ${describeFingerprint(m.fingerprint)}, this worker's (${this.worker.modelPath}) is ${describeFingerprint(this.worker.fingerprint)}`,
      );
    }
    const bad = (field: string, reason: string, expected: string | number, actual: string | number): void =>
      this.#error(this.root, m.id, ErrorCode.BadAssignment, new ProtocolError(field, reason, expected, actual).message);
    if (!(m.layerStart < m.layerEnd && m.layerEnd <= h.nLayers)) return bad('layers', 'range outside the model', `a < b ≤ ${h.nLayers}`, `${m.layerStart}..${m.layerEnd}`);
    if (!(m.batchSize >= 1 && m.batchSize <= MAX_WIRE_ROWS)) return bad('batchSize', 'out of range', `1..${MAX_WIRE_ROWS}`, m.batchSize);
    if (!(m.slots >= 1 && m.slots <= m.batchSize)) return bad('slots', 'out of range', `1..${m.batchSize}`, m.slots);
    if (!(m.maxSeqLen >= 1 && m.maxSeqLen <= h.maxSeqLen)) return bad('maxSeqLen', 'out of range', `1..${h.maxSeqLen}`, m.maxSeqLen);
    if (m.wire === 'q80' && h.dim % 32 !== 0) return bad('wire', 'q80 needs dim to be a multiple of 32', 'f32', 'q80');
    try {
      this.#engine = await this.worker.engineFor(m);
    } catch (e) {
      return this.#error(this.root, m.id, ErrorCode.BadAssignment, `cannot start the engine: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.assignment = {
      layerStart: m.layerStart,
      layerEnd: m.layerEnd,
      wire: m.wire,
      maxSeqLen: m.maxSeqLen,
      batchSize: m.batchSize,
      slots: m.slots,
      sessionId: m.sessionId,
    };
    this.worker.log(`assigned layers ${layerLabel(m.layerStart, m.layerEnd)}, ${m.wire} activations, next ${m.next || 'the root'}`);
    await this.#setNext(m.id, m.next);
  }

  async #setNext(id: number, next: string): Promise<void> {
    const old = this.#next;
    this.#next = undefined;
    this.#nextAddress = next;
    if (old) {
      closeClientStream(old.call);
      old.client.close();
    }
    if (next !== '') {
      const client = newClient(next, this.worker.relayTls, this.worker.relayChannelOptions(), 'relay');
      let call: ClientStream;
      try {
        call = await openStream(client, RELAY_PATH, this.worker.codec, requestMetadata(this.worker.token, this.assignment?.sessionId), this.worker.connectTimeoutMs);
      } catch (e) {
        client.close();
        return this.#error(this.root, id, ErrorCode.RelayFailed, `cannot reach the next hop ${next}: ${e instanceof Error ? e.message : String(e)}`);
      }
      const hop: NextHop = { address: next, client, call };
      this.#next = hop;
      const lost = (why: string): void => {
        if (this.#next !== hop) return;
        this.#next = undefined;
        closeClientStream(call);
        client.close();
        this.#error(this.root, 0, ErrorCode.RelayFailed, `lost the next hop ${next}: ${why}`);
      };
      call.on('data', (m: Decoded) => {
        // The next hop only ever answers with errors; pass them to the root, who decides.
        if (m.type === MessageType.Error) this.#error(this.root, m.id, m.code, `next hop ${next}: ${m.text}`);
      });
      call.on('error', (e: grpc.ServiceError) => lost(`${grpc.status[e.code] ?? e.code} ${e.details}`));
      call.on('end', () => lost('stream ended'));
    }
    if (this.#closed) return;
    this.#send(this.root, { type: MessageType.Ready, id });
  }

  async #activations(m: ActivationsMessage, from: ServerStream): Promise<void> {
    const a = this.assignment;
    const engine = this.#engine;
    if (!a || !engine) return this.#error(from, m.id, ErrorCode.NotAssigned, 'activations before an assignment');
    const dim = this.worker.header.dim;
    try {
      checkActivations(m, { wire: a.wire, dim, batchSize: a.batchSize, slots: a.slots, maxSeqLen: a.maxSeqLen });
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.worker.log(`rejected message ${m.id}: ${e.message}`);
      return this.#error(from, m.id, ErrorCode.BadMessage, e.message);
    }
    const hidden = decodeRows(m.payload, m.runs.map((r) => r.rows), a.wire, dim);
    let out: Float32Array[];
    try {
      out = (await engine.runLayers(m.runs.map((r, i) => ({ slot: r.slot, pos: r.pos, hidden: hidden[i]! })), a.layerStart, a.layerEnd)).hidden;
    } catch (e) {
      return this.#error(this.root, m.id, ErrorCode.Engine, `layers ${layerLabel(a.layerStart, a.layerEnd)}: ${e instanceof Error ? e.message : String(e)}`);
    }
    const reply: ActivationsMessage = { type: MessageType.Activations, id: m.id, wire: a.wire, runs: m.runs, payload: encodeRows(out, a.wire, dim) };
    if (this.#nextAddress === '') return this.#send(this.root, reply);
    // With the next hop lost (already reported), the output has nowhere to go until the root
    // names a new one; sending it to the root instead would look like an answer out of turn.
    if (this.#next) this.#send(this.#next.call, reply);
    else this.worker.log(`dropped message ${m.id}: the next hop ${this.#nextAddress} is lost`);
  }

  async #calibrate(m: CalibrateMessage): Promise<void> {
    const a = this.assignment;
    const engine = this.#engine;
    if (!a || !engine) return this.#error(this.root, m.id, ErrorCode.NotAssigned, 'calibration before an assignment');
    const msPerLayer = await calibrate(engine, a.layerStart, Math.min(m.rows, a.batchSize), Math.min(m.steps, 64));
    this.#send(this.root, { type: MessageType.Calibrated, id: m.id, msPerLayer });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const next = this.#next;
    this.#next = undefined;
    if (next) {
      closeClientStream(next.call);
      next.client.close();
    }
    for (const r of this.#relays) r.end();
    this.#relays.clear();
    try {
      this.root.end();
    } catch {
      // already ended
    }
  }
}

/**
 * Median time to run `rows` rows through one layer (the measured speed that weights the split).
 * Writes KV positions 0..rows−1 of slot 0, which any later generation overwrites first.
 */
export async function calibrate(
  engine: { header: { dim: number }; runLayers(items: { slot: number; pos: number; hidden: Float32Array }[], a: number, b: number): Promise<unknown> },
  layer: number,
  rows: number,
  steps: number,
): Promise<number> {
  // Values of the size a residual stream has; what they are does not change the time.
  const hidden = new Float32Array(Math.max(1, rows) * engine.header.dim).map((_, i) => Math.sin(i) * 0.5);
  const times: number[] = [];
  for (let s = 0; s < Math.max(1, steps); s++) {
    const t0 = performance.now();
    await engine.runLayers([{ slot: 0, pos: 0, hidden }], layer, layer + 1);
    times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  return times[times.length >> 1]!;
}
