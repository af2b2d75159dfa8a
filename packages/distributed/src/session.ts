/**
 * The root's side of the RPC sessions: one gRPC stream per worker, requests matched to answers
 * by id, late answers turned into pings, and the one place a worker is declared lost (its stream
 * breaks, it reports an engine failure, it answers out of turn, or it neither answers a request
 * nor a ping). Losses are reported to `onLost`; what to do about them is the pipeline's business.
 */
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { DistributedError, FingerprintMismatchError, RemoteError, WorkerLostError, WorkerSetupError } from './errors.js';
import {
  checkActivations,
  ErrorCode,
  MessageType,
  type Message,
  type ModelFingerprint,
  type RowRun,
  type TransportCounters,
  type WireType,
} from './protocol.js';
import type { LayerRange } from './split.js';
import { channelOptions, closeClientStream, countingCodec, newClient, openStream, parseAddress, requestMetadata, SESSION_PATH, type ClientStream, type ClientTls, type Codec, type Decoded } from './transport.js';
import { layerLabel } from './worker.js';

export interface WorkerLink {
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

/** What the session checks activations against, and how it is set up. */
export interface SessionSettings {
  readonly workers: readonly string[];
  readonly token: string | undefined;
  /** TLS to the workers (undefined: plaintext). */
  readonly tls: ClientTls | undefined;
  readonly wire: WireType;
  readonly dim: number;
  readonly batchSize: number;
  readonly slots: number;
  readonly maxSeqLen: number;
  readonly maxMessageBytes: number;
  readonly connectTimeoutMs: number;
  readonly stepTimeoutMs: number;
  readonly pingTimeoutMs: number;
  readonly keepaliveTimeMs: number;
  readonly keepaliveTimeoutMs: number;
  /** The model file, named in the warning a loss prints. */
  readonly modelPath: string;
  readonly onWarning: (line: string) => void;
}

export class RootSession {
  readonly links: WorkerLink[];
  /** The root's own layers of the assignment. */
  rootRange: LayerRange = { start: 0, end: 0 };
  /** True while the pipeline is being set up: a loss fails the set-up instead of being recovered. */
  setup = false;
  /** Called once per lost worker, after its pending requests are rejected. */
  onLost: (link: WorkerLink) => void = () => {};
  readonly #s: SessionSettings;
  readonly #codec: Codec;
  readonly #sessionId = randomBytes(16);
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  #closing = false;

  constructor(settings: SessionSettings, counters: TransportCounters) {
    this.#s = settings;
    this.#codec = countingCodec(counters);
    this.links = settings.workers.map((w, index) => ({
      address: parseAddress(w).address,
      index,
      range: { start: 0, end: 0 },
      client: undefined,
      call: undefined,
      alive: true,
      next: '',
      loss: undefined,
    }));
  }

  get sessionId(): Uint8Array {
    return this.#sessionId;
  }

  /** Open a session stream to every worker (all attempts settle before a failure is reported). */
  async open(): Promise<void> {
    const s = this.#s;
    const opts = channelOptions(s.maxMessageBytes, { keepaliveTimeMs: s.keepaliveTimeMs, keepaliveTimeoutMs: s.keepaliveTimeoutMs });
    const opened = await Promise.allSettled(
      this.links.map(async (link) => {
        const client = newClient(link.address, s.tls, opts);
        link.client = client;
        try {
          link.call = await openStream(client, SESSION_PATH, this.#codec, requestMetadata(s.token, this.#sessionId), s.connectTimeoutMs);
        } catch (e) {
          throw new WorkerSetupError(link.address, `cannot open a session: ${e instanceof Error ? e.message : String(e)}`);
        }
        const call = link.call;
        call.on('data', (m: Decoded) => this.#onData(link, m));
        call.on('error', (e: grpc.ServiceError) => this.lost(link, `connection lost (${grpc.status[e.code] ?? e.code}: ${e.details || e.message})`));
        call.on('end', () => this.lost(link, 'session ended by the worker'));
      }),
    );
    // Every attempt has settled, so no stream opens after the links are closed on failure.
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Where a live worker sends its output: the next worker if it is alive, else the root. */
  nextHop(link: WorkerLink): string {
    const next = this.links[link.index + 1];
    return next && next.alive ? next.address : '';
  }

  id(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xffffffff ? 1 : this.#nextId + 1;
    return id;
  }

  // ---- messages from workers ----

  #onData(link: WorkerLink, m: Decoded): void {
    if (!link.alive) return;
    if (m.type === 'malformed') return this.lost(link, `malformed message (${m.error.message})`);
    if (m.type === MessageType.Error) return this.#onError(link, m.id, m.code, m.text);
    const p = this.#pending.get(m.id);
    // An answer to a step that was abandoned after a loss: ignore.
    if (!p) return;
    if (p.from !== link) return this.lost(link, `answer to request ${m.id}, which was not its to answer`);
    if (p.runs !== undefined || m.type === MessageType.Activations) {
      try {
        if (p.runs === undefined || m.type !== MessageType.Activations) throw new DistributedError(`message type ${m.type} does not answer request ${m.id}`);
        const s = this.#s;
        checkActivations(m, { wire: s.wire, dim: s.dim, batchSize: s.batchSize, slots: s.slots, maxSeqLen: s.maxSeqLen });
        const runs = p.runs ?? [];
        if (m.runs.length !== runs.length || m.runs.some((r, i) => r.slot !== runs[i]!.slot || r.pos !== runs[i]!.pos || r.rows !== runs[i]!.rows)) {
          throw new DistributedError('rows differ from the ones sent');
        }
      } catch (e) {
        return this.lost(link, `bad activations for request ${m.id} (${e instanceof Error ? e.message : String(e)})`);
      }
    }
    this.#settle(m.id)?.resolve(m);
  }

  #onError(link: WorkerLink, id: number, code: number, text: string): void {
    switch (code) {
      case ErrorCode.Engine:
        return this.lost(link, `engine error (${text})`);
      case ErrorCode.RelayFailed: {
        // The worker is fine; the hop it sends to is not (the one it was just told, when the
        // error answers an assignment or a next-hop change). Already lost: nothing to add.
        if (this.setup) break;
        const target = this.#pending.get(id)?.relayTarget ?? link.next;
        const next = this.links.find((l) => l.address === target);
        if (next?.alive) return this.lost(next, `unreachable from ${link.address} (${text})`);
        if (this.#pending.has(id)) break;
        return;
      }
    }
    const p = this.#settle(id);
    const err =
      code === ErrorCode.Fingerprint
        ? new FingerprintMismatchError(link.address, text)
        : this.setup
          ? new WorkerSetupError(link.address, text)
          : new RemoteError(link.address, code, text);
    if (p) p.reject(err);
    else this.#s.onWarning(`airllm: warning: worker ${link.address}: ${text}`);
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    clearTimeout(p.timer);
    return p;
  }

  /** A worker is gone: say so once, close its stream, reject the requests that needed it. */
  lost(link: WorkerLink, reason: string): void {
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
    if (!this.setup) {
      this.#s.onWarning(`airllm: warning: worker ${link.address} (layers ${layers}) failed: ${reason}; the root runs layers ${layers} from ${this.#s.modelPath} and continues`);
    }
    this.onLost(link);
    for (const [id, p] of [...this.#pending]) {
      if (this.setup && p.from !== link && !p.via.includes(link)) continue;
      this.#settle(id);
      p.reject(link.loss);
    }
  }

  // ---- requests ----

  /**
   * Send `m` to `to` and wait for the answer with the same id from `from` (default: `to`). A
   * late answer makes the root ping every node on the way; the ones that stay silent are lost.
   */
  call(to: WorkerLink, m: Message, from: WorkerLink = to, via: readonly WorkerLink[] = [to], runs?: readonly RowRun[]): Promise<Message> {
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
        }, this.#s.stepTimeoutMs);
      };
      this.#pending.set(m.id, p);
      arm();
      try {
        to.call!.write(m);
      } catch (e) {
        this.lost(to, `write failed (${e instanceof Error ? e.message : String(e)})`);
      }
    });
  }

  /** Ping each link; lose the ones that do not answer in time. Resolves whether all answered. */
  async #probe(links: readonly WorkerLink[], late: number): Promise<boolean> {
    const results = await Promise.all(
      links.map(async (l) => {
        if (!l.alive) return false;
        const id = this.id();
        const ok = await new Promise<boolean>((resolve) => {
          const p: Pending = { resolve: () => resolve(true), reject: () => resolve(false), from: l, via: [l], timer: undefined };
          p.timer = setTimeout(() => {
            this.#settle(id);
            resolve(false);
          }, this.#s.pingTimeoutMs);
          this.#pending.set(id, p);
          try {
            l.call!.write({ type: MessageType.Ping, id });
          } catch {
            this.#settle(id);
            resolve(false);
          }
        });
        if (!ok) this.lost(l, `timed out (no answer to request ${late} within ${this.#s.stepTimeoutMs} ms, nor to a ping within ${this.#s.pingTimeoutMs} ms)`);
        return ok;
      }),
    );
    return results.every(Boolean);
  }

  /** Send every worker its range; the last first, so each next hop is ready when its predecessor connects. */
  async assign(ranges: readonly LayerRange[], assignment: { fingerprint: ModelFingerprint; activations: WireType }): Promise<void> {
    const s = this.#s;
    this.rootRange = ranges[0]!;
    this.links.forEach((l, i) => (l.range = ranges[i + 1]!));
    for (let i = this.links.length - 1; i >= 0; i--) {
      const link = this.links[i]!;
      const next = this.nextHop(link);
      const r = await this.call(link, {
        type: MessageType.Assign,
        id: this.id(),
        fingerprint: assignment.fingerprint,
        layerStart: link.range.start,
        layerEnd: link.range.end,
        activations: assignment.activations,
        wire: s.wire,
        maxSeqLen: s.maxSeqLen,
        batchSize: s.batchSize,
        slots: s.slots,
        sessionId: this.#sessionId,
        next,
      });
      if (r.type !== MessageType.Ready) throw new WorkerSetupError(link.address, `unexpected answer ${r.type} to an assignment`);
      link.next = next;
    }
  }

  /** Tell live workers whose next hop changed (after a loss) where to send their output now. */
  async reconfigure(): Promise<void> {
    for (let i = this.links.length - 1; i >= 0; i--) {
      const link = this.links[i]!;
      if (!link.alive) continue;
      const next = this.nextHop(link);
      if (next === link.next) continue;
      const r = await this.call(link, { type: MessageType.SetNext, id: this.id(), next });
      if (r.type !== MessageType.Ready) throw new RemoteError(link.address, 0, `unexpected answer ${r.type} to a next-hop change`);
      link.next = next;
    }
  }

  /** Close every stream and channel; pending requests fail. */
  close(closing: boolean): void {
    if (closing) this.#closing = true;
    for (const [id, p] of [...this.#pending]) {
      this.#settle(id);
      p.reject(new DistributedError('the engine was cleaned up'));
    }
    for (const l of this.links) {
      closeClientStream(l.call);
      l.client?.close();
      l.call = undefined;
      l.client = undefined;
    }
  }
}
