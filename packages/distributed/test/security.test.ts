/**
 * A worker process facing peers that are not a well-behaved root: no token, a wrong token, a
 * relay for a session it does not serve, malformed and oversized messages, another model.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FloatType } from '@airllm/format';
import { LayerWiseInferenceEngine } from '@airllm/engine';
import { DistributedEngine, FingerprintMismatchError, WorkerSetupError } from '../src/index.js';
import { decodeRows, encodeRows } from '../src/activations.js';
import { modelFingerprint } from '../src/fingerprint.js';
import { decodeMessage, encodeMessage, ErrorCode, MessageType, PROTOCOL_VERSION, type Message } from '../src/protocol.js';
import { RELAY_PATH, SESSION_PATH, TOKEN_HEADER, SESSION_HEADER, type Decoded } from '../src/transport.js';
import { negateFloats, startWorker, STORIES, syntheticValues, tempDir, writeSynthetic, type WorkerProcess } from './helpers.js';

const TOKEN = 'the-shared-secret';

/** A raw client: sends bytes as given, so it can send what our encoder never would. */
class RawPeer {
  readonly client: grpc.Client;
  readonly call: grpc.ClientDuplexStream<Buffer, Decoded>;
  readonly received: Decoded[] = [];
  status: Promise<grpc.StatusObject>;
  #waiters: (() => void)[] = [];

  constructor(address: string, path: string, metadata: Record<string, string>) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    this.call = this.client.makeBidiStreamRequest(path, (b: Buffer) => b, (b: Buffer) => decodeMessage(b), md, {});
    this.call.on('data', (m: Decoded) => {
      this.received.push(m);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.status = new Promise((resolve) => {
      this.call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, details: e.details, metadata: e.metadata }));
      this.call.on('status', (s: grpc.StatusObject) => resolve(s));
    });
  }

  send(m: Message | Buffer): void {
    this.call.write(Buffer.isBuffer(m) ? m : encodeMessage(m));
  }

  /** The next message with this id (waits up to 10 s). */
  async answer(id: number): Promise<Decoded> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const i = this.received.findIndex((m) => m.id === id);
      if (i >= 0) return this.received.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error(`no answer to ${id}; got ${JSON.stringify(this.received.map((m) => m.type))}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 200);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  close(): void {
    this.call.on('error', () => {});
    this.call.cancel();
    this.client.close();
  }
}

describe('a worker with --token', () => {
  let worker: WorkerProcess;
  const tmp = tempDir();
  beforeEach(async () => {
    worker = await startWorker(STORIES, ['--token', TOKEN]);
  });
  afterEach(async () => {
    await worker.stop();
  });
  afterAll(() => tmp.cleanup());

  it('refuses a session without the token or with a wrong one (UNAUTHENTICATED)', async () => {
    for (const md of [{} as Record<string, string>, { [TOKEN_HEADER]: 'wrong' }, { [TOKEN_HEADER]: `${TOKEN}x` }, { [TOKEN_HEADER]: TOKEN.slice(0, -1) }]) {
      const peer = new RawPeer(worker.address, SESSION_PATH, md);
      peer.send({ type: MessageType.Ping, id: 1 });
      const s = await peer.status;
      expect(s.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(peer.received).toEqual([]);
      peer.close();
    }
  });

  it('a root with the wrong token fails to set up, naming the worker', async () => {
    const engine = new DistributedEngine(STORIES, { threads: 1 }, { workers: [worker.address], token: 'nope' });
    await expect(engine.initialize()).rejects.toThrow(WorkerSetupError);
    await expect(engine.initialize()).rejects.toThrow(new RegExp(`worker ${worker.address}.*UNAUTHENTICATED`));
    // No silent fallback to running the whole model in this process.
    await expect(engine.forward([1], 0)).rejects.toThrow(/pipeline is not set up/);
    await engine.cleanup();
  });

  it('refuses a relay for a session it does not serve (FAILED_PRECONDITION)', async () => {
    const peer = new RawPeer(worker.address, RELAY_PATH, { [TOKEN_HEADER]: TOKEN, [SESSION_HEADER]: '00'.repeat(16) });
    peer.send({ type: MessageType.Ping, id: 1 });
    expect((await peer.status).code).toBe(grpc.status.FAILED_PRECONDITION);
    peer.close();
  });

  it('refuses a root whose model file differs (size and hash), with a typed error', async () => {
    const other = await writeSynthetic(join(tmp.dir, 'other.m'), syntheticValues(FloatType.F32, 4));
    const engine = new DistributedEngine(other, { threads: 1 }, { workers: [worker.address], token: TOKEN });
    const err = await engine.initialize().then(
      () => undefined,
      (e: unknown) => e,
    );
    await engine.cleanup();
    expect(err).toBeInstanceOf(FingerprintMismatchError);
    expect((err as FingerprintMismatchError).node).toBe(worker.address);
    expect((err as Error).message).toMatch(/model file differs/);
  });

  it('refuses a worker whose copy differs only inside a layer (same size, header and ends), naming the layer', async () => {
    // The reproduction: 4096 floats negated at byte 585408 of a copy, inside layers.2.w1.
    const copy = join(tmp.dir, 'altered.m');
    copyFileSync(STORIES, copy);
    negateFloats(copy, 585408, 4096);
    const altered = await startWorker(copy, ['--token', TOKEN]);
    try {
      const engine = new DistributedEngine(STORIES, { threads: 1 }, { workers: [altered.address], token: TOKEN });
      const err = await engine.initialize().then(
        () => undefined,
        (e: unknown) => e,
      );
      await engine.cleanup();
      expect(err).toBeInstanceOf(FingerprintMismatchError);
      expect((err as Error).message).toMatch(new RegExp(`^worker ${altered.address}: model file differs in layer 2: the root's is 1248096 bytes, [0-9a-f]{16}…, this worker's \\(${copy}\\) is 1248096 bytes, [0-9a-f]{16}…$`));
    } finally {
      await altered.stop();
    }
  });

  it('rejects malformed messages with a typed error and keeps serving: the next valid batch equals a local engine', async () => {
    const peer = new RawPeer(worker.address, SESSION_PATH, { [TOKEN_HEADER]: TOKEN });
    const local = new LayerWiseInferenceEngine(STORIES, { threads: 1, maxSeqLen: 32, batchSize: 4, maxSequences: 2 });
    try {
      await local.initialize();
      const dim = local.header.dim;
      peer.send({
        type: MessageType.Assign,
        id: 1,
        fingerprint: await modelFingerprint(STORIES),
        layerStart: 1,
        layerEnd: 3,
        activations: 'f32',
        wire: 'f32',
        maxSeqLen: 32,
        batchSize: 4,
        slots: 2,
        sessionId: new Uint8Array(16).fill(7),
        next: '',
      });
      expect((await peer.answer(1)).type).toBe(MessageType.Ready);

      const hidden = local.embed([1, 403]);
      const good = encodeRows([hidden], 'f32', dim);
      const act = (id: number, runs: { slot: number; pos: number; rows: number }[], payload: Uint8Array): Message => ({ type: MessageType.Activations, id, wire: 'f32', runs, payload });
      const bad: [string, Message | Buffer][] = [
        ['payload', act(2, [{ slot: 0, pos: 0, rows: 2 }], good.subarray(0, good.length - 1))],
        ['payload', act(3, [{ slot: 0, pos: 0, rows: 2 }], new Uint8Array(good.length + 4))],
        ['rows', act(4, [{ slot: 0, pos: 0, rows: 5 }], new Uint8Array(5 * dim * 4))],
        ['runs[0].slot', act(5, [{ slot: 2, pos: 0, rows: 2 }], good)],
        ['runs[0].pos', act(6, [{ slot: 0, pos: 31, rows: 2 }], good)],
        ['runs[1].slot', act(7, [{ slot: 0, pos: 0, rows: 1 }, { slot: 0, pos: 1, rows: 1 }], good)],
        ['wire', encodeMessage({ type: MessageType.Activations, id: 8, wire: 'q80', runs: [{ slot: 0, pos: 0, rows: 2 }], payload: new Uint8Array(2 * 68) })],
        ['type', Buffer.from([99, PROTOCOL_VERSION, 9, 0, 0, 0])],
        ['version', Buffer.from([MessageType.Ping, PROTOCOL_VERSION + 1, 10, 0, 0, 0])],
        ['id', Buffer.from([MessageType.Ping, PROTOCOL_VERSION, 11])],
      ];
      for (const [field, m] of bad) {
        const id = Buffer.isBuffer(m) ? (m.length >= 6 ? m.readUInt32LE(2) : 0) : m.id;
        peer.send(m);
        const e = await peer.answer(id);
        expect(e.type, field).toBe(MessageType.Error);
        if (e.type !== MessageType.Error) continue;
        expect(e.code, field).toBe(ErrorCode.BadMessage);
        expect(e.text, field).toContain(`field ${field}`);
      }
      // Still serving, on the same stream: pings, and a valid batch.
      peer.send({ type: MessageType.Ping, id: 20 });
      expect((await peer.answer(20)).type).toBe(MessageType.Pong);
      peer.send(act(21, [{ slot: 0, pos: 0, rows: 2 }], good));
      const r = await peer.answer(21);
      expect(r.type).toBe(MessageType.Activations);
      if (r.type !== MessageType.Activations) return;
      const [got] = decodeRows(r.payload, [2], 'f32', dim);
      const want = (await local.runLayers([{ slot: 0, pos: 0, hidden }], 1, 3)).hidden[0]!;
      expect(Array.from(got!)).toEqual(Array.from(want));
      expect(worker.stderr()).toMatch(/rejected message 2: malformed message, field payload/);
    } finally {
      peer.close();
      await local.cleanup();
    }
  });

  it('ends a stream whose message exceeds the size bound (RESOURCE_EXHAUSTED) and still serves the next root', async () => {
    const peer = new RawPeer(worker.address, SESSION_PATH, { [TOKEN_HEADER]: TOKEN });
    peer.send(Buffer.alloc(4 << 20, 1));
    expect((await peer.status).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    peer.close();
    // The session slot is free again once the worker has seen the stream end.
    const deadline = Date.now() + 10_000;
    for (;;) {
      const next = new RawPeer(worker.address, SESSION_PATH, { [TOKEN_HEADER]: TOKEN });
      next.send({ type: MessageType.Ping, id: 1 });
      const ok = await Promise.race([next.answer(1).then(() => true), next.status.then(() => false)]);
      next.close();
      if (ok) break;
      if (Date.now() > deadline) throw new Error('worker did not serve a new session');
      await new Promise((r) => setTimeout(r, 200));
    }
  });
});
