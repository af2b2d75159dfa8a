import { join } from 'node:path';
import { copyFileSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { dequantizeQ80, quantizeQ80, readModelFile } from '@airllm/format';
import { decodeRows, encodeRows } from '../src/activations.js';
import { ProtocolError, SplitError } from '../src/errors.js';
import { differingRegions, fingerprintRegions, modelFingerprint, sameFingerprint } from '../src/fingerprint.js';
import { activationsHeaderBytes, checkActivations, decodeMessage, encodeMessage, MessageType, rowBytes, type ActivationsMessage, type Message } from '../src/protocol.js';
import { parseSplit, planByBytes } from '../src/split.js';
import { parseAddress } from '../src/transport.js';
import { negateFloats, STORIES, tempDir } from './helpers.js';

const SAMPLES: Message[] = [
  {
    type: MessageType.Assign,
    id: 7,
    fingerprint: { fileSize: 2 ** 40 + 3, hash: new Uint8Array(32).map((_, i) => i * 7), regions: Uint32Array.from([0, 0xffffffff, 0x12345678]) },
    layerStart: 3,
    layerEnd: 9,
    activations: 'q80',
    wire: 'f32',
    maxSeqLen: 4096,
    batchSize: 128,
    slots: 4,
    sessionId: new Uint8Array(16).fill(0xab),
    next: '[::1]:9100',
  },
  { type: MessageType.Ready, id: 1 },
  { type: MessageType.SetNext, id: 2, next: '' },
  { type: MessageType.Activations, id: 0xffffffff, wire: 'f32', runs: [{ slot: 1, pos: 9, rows: 2 }, { slot: 0, pos: 0, rows: 1 }], payload: new Uint8Array(3 * 8 * 4).map((_, i) => i) },
  { type: MessageType.Error, id: 3, code: 1, text: 'bad — ünïcode' },
  { type: MessageType.Ping, id: 4 },
  { type: MessageType.Pong, id: 4 },
  { type: MessageType.Stats, id: 5 },
  { type: MessageType.StatsReply, id: 5, stats: { bytesSent: 1e12, bytesReceived: 5, messagesSent: 6, messagesReceived: 7, activationBytesSent: 8 } },
  { type: MessageType.Calibrate, id: 6, rows: 1, steps: 5 },
  { type: MessageType.Calibrated, id: 6, msPerLayer: 0.125 },
];

/** Plain objects with plain arrays, for deep comparison. */
function plain(m: unknown): unknown {
  if (ArrayBuffer.isView(m)) return Array.from(m as Uint8Array);
  if (Array.isArray(m)) return m.map(plain);
  if (m !== null && typeof m === 'object') return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, plain(v)]));
  return m;
}

describe('messages', () => {
  it('every type round-trips through its bytes', () => {
    for (const m of SAMPLES) expect(plain(decodeMessage(encodeMessage(m))), `type ${m.type}`).toEqual(plain(m));
  });

  it('an Activations message costs 9 + 12·runs bytes besides its rows', () => {
    const m = SAMPLES[3] as ActivationsMessage;
    expect(encodeMessage(m).length).toBe(activationsHeaderBytes(2) + m.payload.length);
    expect(activationsHeaderBytes(1)).toBe(21);
  });

  it('every truncation of every message is rejected as malformed, never thrown', () => {
    for (const m of SAMPLES) {
      const b = encodeMessage(m);
      for (let n = 0; n < b.length; n++) {
        const d = decodeMessage(b.subarray(0, n));
        // An Activations message cut inside its payload still parses: the receiver checks
        // the payload length against the model (checkActivations).
        if (m.type === MessageType.Activations && n >= activationsHeaderBytes(2)) continue;
        expect(d.type, `type ${m.type} cut at ${n}`).toBe('malformed');
      }
      expect(decodeMessage(Buffer.concat([b, Buffer.from([0])])).type).toBe(m.type === MessageType.Activations ? MessageType.Activations : 'malformed');
    }
  });

  it('random bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const d = decodeMessage(bytes);
        if (d.type === 'malformed') expect(d.error).toBeInstanceOf(ProtocolError);
      }),
      { numRuns: 2000 },
    );
  });

  it('checkActivations enforces rows ≤ batch, slot < slots, positions < context, exact payload', () => {
    const limits = { wire: 'f32' as const, dim: 8, batchSize: 4, slots: 2, maxSeqLen: 16 };
    const msg = (runs: { slot: number; pos: number; rows: number }[], extra = 0): ActivationsMessage => ({
      type: MessageType.Activations,
      id: 1,
      wire: 'f32',
      runs,
      payload: new Uint8Array(runs.reduce((n, r) => n + r.rows, 0) * 32 + extra),
    });
    expect(checkActivations(msg([{ slot: 0, pos: 14, rows: 2 }, { slot: 1, pos: 0, rows: 2 }]), limits)).toBe(4);
    const cases: [ActivationsMessage, string][] = [
      [msg([{ slot: 0, pos: 0, rows: 5 }]), 'rows'],
      [msg([{ slot: 2, pos: 0, rows: 1 }]), 'runs[0].slot'],
      [msg([{ slot: 0, pos: 15, rows: 2 }]), 'runs[0].pos'],
      [{ ...msg([]), runs: [{ slot: 0, pos: 0xffffffff, rows: 0xffffffff }] }, 'runs[0].pos'],
      [msg([{ slot: 0, pos: 0, rows: 0 }]), 'runs[0].rows'],
      [msg([{ slot: 1, pos: 0, rows: 1 }, { slot: 1, pos: 1, rows: 1 }]), 'runs[1].slot'],
      [msg([{ slot: 0, pos: 0, rows: 1 }], 1), 'payload'],
      [msg([{ slot: 0, pos: 0, rows: 1 }], -1), 'payload'],
      [{ ...msg([{ slot: 0, pos: 0, rows: 1 }]), wire: 'q80' }, 'wire'],
    ];
    for (const [m, field] of cases) {
      expect(() => checkActivations(m, limits), field).toThrow(ProtocolError);
      try {
        checkActivations(m, limits);
      } catch (e) {
        expect((e as ProtocolError).field).toBe(field);
      }
    }
  });
});

describe('activation rows', () => {
  const dim = 64;
  const rows = [new Float32Array(2 * dim).map((_, i) => Math.sin(i) * 3), new Float32Array(dim).map((_, i) => (i % 5) - 2.5e-3)];

  it('f32 carries the exact bits, also from an unaligned buffer', () => {
    const payload = encodeRows(rows, 'f32', dim);
    expect(payload.length).toBe(3 * rowBytes('f32', dim));
    const shifted = new Uint8Array(payload.length + 1).subarray(1);
    shifted.set(payload);
    const back = decodeRows(shifted, [2, 1], 'f32', dim);
    expect(back.map((b) => Array.from(b))).toEqual(rows.map((r) => Array.from(r)));
  });

  it('q80 is 34 bytes per 32 values and decodes as the format reference does', () => {
    const payload = encodeRows(rows, 'q80', dim);
    expect(payload.length).toBe(3 * (dim / 32) * 34);
    const back = decodeRows(payload, [2, 1], 'q80', dim);
    rows.forEach((r, i) => {
      const q = new Uint8Array((r.length / 32) * 34);
      quantizeQ80(r, q);
      const want = new Float32Array(r.length);
      dequantizeQ80(q, want);
      expect(Array.from(back[i]!)).toEqual(Array.from(want));
    });
  });
});

describe('split', () => {
  it('auto split by bytes: the root carries the head, every worker at least one layer', () => {
    // stories260K: 5 layers of 197120 bytes, head 131328 bytes.
    expect(planByBytes({ nLayers: 5, layerBytes: 197120, headBytes: 131328 }, 3)).toEqual([
      { start: 0, end: 1 },
      { start: 1, end: 3 },
      { start: 3, end: 5 },
    ]);
    expect(planByBytes({ nLayers: 32, layerBytes: 100, headBytes: 0 }, 4)).toEqual([
      { start: 0, end: 8 },
      { start: 8, end: 16 },
      { start: 16, end: 24 },
      { start: 24, end: 32 },
    ]);
    // A head bigger than a node's share: the root keeps no layers.
    expect(planByBytes({ nLayers: 2, layerBytes: 10, headBytes: 100 }, 3)).toEqual([
      { start: 0, end: 0 },
      { start: 0, end: 1 },
      { start: 1, end: 2 },
    ]);
    expect(() => planByBytes({ nLayers: 1, layerBytes: 10, headBytes: 0 }, 3)).toThrow(SplitError);
  });

  it('weighted by speed: a node twice as fast gets twice the layers', () => {
    expect(planByBytes({ nLayers: 30, layerBytes: 100, headBytes: 0 }, 3, [1, 2, 3])).toEqual([
      { start: 0, end: 5 },
      { start: 5, end: 15 },
      { start: 15, end: 30 },
    ]);
    // Ranges stay contiguous and cover every layer for any positive speeds.
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 80 }), fc.array(fc.double({ min: 0.01, max: 100, noNaN: true }), { minLength: 2, maxLength: 6 }), fc.integer({ min: 0, max: 1000 }), (n, speeds, head) => {
        fc.pre(n >= speeds.length - 1);
        const r = planByBytes({ nLayers: n, layerBytes: 100, headBytes: head }, speeds.length, speeds);
        expect(r[0]!.start).toBe(0);
        expect(r[r.length - 1]!.end).toBe(n);
        r.forEach((x, i) => {
          if (i > 0) expect(x.start).toBe(r[i - 1]!.end);
          expect(x.end - x.start).toBeGreaterThanOrEqual(i === 0 ? 0 : 1);
        });
      }),
    );
  });

  it('explicit ranges are inclusive, contiguous, and the root takes the layers before the first', () => {
    expect(parseSplit('2-5,6-11', 12, 2)).toEqual([
      { start: 0, end: 2 },
      { start: 2, end: 6 },
      { start: 6, end: 12 },
    ]);
    expect(parseSplit('0-3, 4-10, 11', 12, 2)).toEqual([
      { start: 0, end: 4 },
      { start: 4, end: 11 },
      { start: 11, end: 12 },
    ]);
    for (const bad of ['2-5,7-11', '2-5,6-10', '1-3', '1-3,4-11,12', '5-2,6-11', 'x,6-11', '0-11']) expect(() => parseSplit(bad, 12, 2), bad).toThrow(SplitError);
  });

  it('worker addresses', () => {
    expect(parseAddress('10.0.0.2:9100').address).toBe('10.0.0.2:9100');
    expect(parseAddress('[::1]:80').address).toBe('[::1]:80');
    expect(parseAddress(' node-b.local:1 ').host).toBe('node-b.local');
    for (const bad of ['nohost', 'h:0', 'h:65536', 'h:-1', ':9', 'a b:9']) expect(() => parseAddress(bad), bad).toThrow(SplitError);
  });
});

/** CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) bit by bit: the reference for zlib's. */
function crc32Reference(bytes: Uint8Array, crc = 0): number {
  let c = ~crc >>> 0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

describe('model fingerprint', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());
  const noCache = { cacheDir: null };

  it('the regions cover the file exactly, in order: header, embedding, each layer, final_norm, wcls', () => {
    const { layout } = readModelFile(STORIES);
    const regions = fingerprintRegions(layout);
    expect(regions.map((r) => r.name)).toEqual(['header', 'embedding', ...layout.layers.map((l) => `layer ${l.layer}`), 'final_norm', 'wcls']);
    let at = 0;
    for (const e of regions.flatMap((r) => r.extents)) {
      expect(e.offset).toBe(at);
      at += e.length;
    }
    expect(at).toBe(statSync(STORIES).size);
  });

  it("each region's sum is the CRC-32 of its bytes (a bitwise reference implementation)", async () => {
    const bytes = readFileSync(STORIES);
    const regions = fingerprintRegions(readModelFile(STORIES).layout);
    const f = await modelFingerprint(STORIES, noCache);
    expect(f.fileSize).toBe(bytes.length);
    expect(Array.from(f.regions)).toEqual(regions.map((r) => r.extents.reduce((c, e) => crc32Reference(bytes.subarray(e.offset, e.offset + e.length), c), 0)));
  });

  it('equal for a copy; a change inside one layer (same size and header) differs, and is named', async () => {
    const copy = join(tmp.dir, 'copy.m');
    copyFileSync(STORIES, copy);
    const a = await modelFingerprint(STORIES, noCache);
    expect(sameFingerprint(a, await modelFingerprint(copy, noCache))).toBe(true);
    // The reproduction: 4096 floats negated at byte 585408 (inside layers.2.w1), far
    // from both ends of the file.
    negateFloats(copy, 585408, 4096);
    const b = await modelFingerprint(copy, noCache);
    expect(b.fileSize).toBe(a.fileSize);
    expect(sameFingerprint(a, b)).toBe(false);
    expect(differingRegions(a, b, fingerprintRegions(readModelFile(copy).layout))).toBe('layer 2');
  });

  it('the sums are cached by device, inode, size and mtime: read once, read again after a change', async () => {
    const cacheDir = join(tmp.dir, 'cache');
    const file = join(tmp.dir, 'cached.m');
    copyFileSync(STORIES, file);
    let reads = 0;
    const opts = { cacheDir, onRead: () => reads++ };
    const first = await modelFingerprint(file, opts);
    expect(reads).toBe(1);
    expect(readdirSync(cacheDir)).toHaveLength(1);
    expect(sameFingerprint(await modelFingerprint(file, opts), first)).toBe(true);
    expect(reads).toBe(1);
    // Changed in place (same size, same inode): the mtime moves on, so the file is read again.
    negateFloats(file, 585408, 16);
    const changed = await modelFingerprint(file, opts);
    expect(reads).toBe(2);
    expect(sameFingerprint(changed, first)).toBe(false);
    // A damaged cache file is not trusted.
    const entry = join(cacheDir, readdirSync(cacheDir)[0]!);
    writeFileSync(entry, '{"version":1,');
    expect(sameFingerprint(await modelFingerprint(file, opts), changed)).toBe(true);
    expect(reads).toBe(3);
  });
});
